#!/usr/bin/env python3
"""Runs an experiment of mcdistil_train: one run per (dataset, grid point, seed), then the
result tables (results.py). Finished runs are skipped and interrupted ones resumed, so the same
command continues an experiment after a crash, a Ctrl-C or a new seed in the file.

Usage:
  run_experiment.py EXPERIMENT.toml --out DIR [--app PATH] [--jobs N] [--dry-run]
                    [--set section.key=value ...] [--summarize-only]

Experiment file (TOML):

  [experiment]
  name = "fashion-mnist-3seeds"      # a label for the tables
  config = "fashion_mnist.toml"      # the app's base configuration, relative to this file
  seeds = [0, 1, 2]                  # default [0]
  methods = ["ce", "kd", "takd", "dgkd", "mcdistil"]   # run.methods; default: the base config's
  share_teacher = true               # default true: see below
  set = {"distill.epochs" = 3}       # optional overrides for every run

  [[dataset]]                        # one or more
  name = "fashion-mnist"             # the app's data.dataset (also the folder name)
  path = "/usr/share/datasets/fashion-mnist"   # data.path, relative to the current directory
  set = {"data.batch_size" = 256}    # optional overrides for this dataset

  [grid]                             # optional; the runs are the cartesian product
  "distill.tau" = [2, 4]
  "cnet.lr" = [1e-3, 1e-4]

Values are TOML values and reach the app in TOML syntax (--set key=value). Later overrides
win: [experiment].set, then [[dataset]].set, then the grid point, then --set on this command
line. Keys the runner sets itself (run.seed, run.dir, run.methods, data.dataset, data.path)
are rejected in the file.

Layout: OUT/<dataset>/<grid tag>/seed<k>/ is the app's run directory (summary.json,
metrics.jsonl, checkpoints), OUT/<dataset>/<grid tag>/seed<k>.log its output. The grid tag
is "default" without a grid, otherwise e.g. "tau=2,cnet.lr=0.001" (a key is shortened to its
name where that name is unambiguous). OUT/results.json and OUT/results.md hold the tables.

Teacher sharing: the teacher does not depend on the students, the distillation or the seed's
role in the comparison, so it is trained once, by the first run of each dataset and each
setting of the grid's [data] and [teacher] keys, and the other runs load its best checkpoint
(--set teacher.checkpoint=...); they start as soon as that run's teacher stage is done.
No sharing when the configuration already names a teacher.checkpoint.

Skip and resume: a run whose directory holds summary.json is skipped; one whose directory
holds config.toml but no summary.json is continued with the app's --resume (with the
configuration it started with). A run that fails is reported with the end of its log and the
others go on; the runner then exits with status 1."""
import argparse
import itertools
import json
import math
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import results  # noqa: E402  (next to this file)

REPO = HERE.parents[2]
DEFAULT_APP = REPO / "build" / "cpu" / "apps" / "mcdistil_train"
RESERVED = {"run.seed", "run.dir", "run.methods", "data.dataset", "data.path"}
# Keys of these sections change the teacher; the others (students, distill, cnet) do not.
TEACHER_SECTIONS = ("data", "teacher")
# Key names the app uses in more than one section (mcdistil_train --keys): a grid tag keeps
# their section so that "lr=0.1" never leaves the reader guessing whose learning rate it is.
SHARED_NAMES = {"lr", "momentum", "weight_decay", "nesterov", "schedule", "step_size", "gamma",
                "epochs"}
EXPERIMENT_KEYS = {"name", "config", "seeds", "methods", "share_teacher", "set"}
DATASET_KEYS = {"name", "path", "set"}


class ExperimentError(Exception):
    pass


# ---- values in TOML syntax

def toml_value(v):
    """v as the app's --set reads it (TOML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        # A JSON string is a TOML basic string as long as non-ASCII stays literal.
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise ExperimentError(f"{v!r}: only strings, numbers, booleans and lists can be passed to the app")


def tag_value(v):
    """v in a folder name: short, no slashes."""
    if isinstance(v, bool):
        text = "true" if v else "false"
    elif isinstance(v, list):
        text = "+".join(tag_value(x) for x in v)
    else:
        text = str(v)
    return text.replace("/", "_").replace(os.sep, "_")


# ---- the experiment file

def flatten(table, prefix="", where=""):
    """{"distill": {"tau": 2}} (dotted keys written bare) and {"distill.tau": 2} alike."""
    if not isinstance(table, dict):
        raise ExperimentError(f"{where}: expected a table of section.key = value")
    out = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_keys(where, table, allowed):
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ExperimentError(f"{where}: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(allowed))})")


def check_overrides(where, overrides):
    for key, value in overrides.items():
        if key.count(".") != 1:
            raise ExperimentError(f"{where}: '{key}' is not a section.key name")
        if key in RESERVED:
            raise ExperimentError(f"{where}: '{key}' is set by the runner; "
                                  "use [experiment] seeds/methods or [[dataset]] name/path")
        try:
            toml_value(value)
        except ExperimentError as e:
            raise ExperimentError(f"{where}: {key}: {e}") from e


def load_experiment(path):
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ExperimentError(f"{path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"{path}: invalid TOML: {e}") from e
    check_keys(path, doc, {"experiment", "dataset", "grid"})
    exp = doc.get("experiment")
    if not isinstance(exp, dict):
        raise ExperimentError(f"{path}: missing the [experiment] table")
    check_keys(f"{path}: [experiment]", exp, EXPERIMENT_KEYS)
    for required in ("name", "config"):
        if not isinstance(exp.get(required), str) or not exp[required]:
            raise ExperimentError(f"{path}: [experiment] {required} must be a non-empty string")
    config = (path.parent / exp["config"]).resolve()
    try:
        with open(config, "rb") as f:
            base_teacher = tomllib.load(f).get("teacher", {})
    except OSError as e:
        raise ExperimentError(f"{path}: [experiment] config: {config}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ExperimentError(f"{path}: [experiment] config: {config}: invalid TOML: {e}") from e
    seeds = exp.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ExperimentError(f"{path}: [experiment] seeds must be a list of distinct integers >= 0")
    methods = exp.get("methods")
    if methods is not None and (not isinstance(methods, list) or not methods
                                or not all(isinstance(m, str) for m in methods)):
        raise ExperimentError(f"{path}: [experiment] methods must be a non-empty list of names")
    share = exp.get("share_teacher", True)
    if not isinstance(share, bool):
        raise ExperimentError(f"{path}: [experiment] share_teacher must be true or false")
    common = flatten(exp.get("set", {}), where=f"{path}: [experiment] set")
    check_overrides(f"{path}: [experiment] set", common)

    datasets = doc.get("dataset")
    if not isinstance(datasets, list) or not datasets:
        raise ExperimentError(f"{path}: no [[dataset]] table")
    seen = set()
    for i, d in enumerate(datasets):
        where = f"{path}: [[dataset]] #{i + 1}"
        check_keys(where, d, DATASET_KEYS)
        for required in ("name", "path"):
            if not isinstance(d.get(required), str) or not d[required]:
                raise ExperimentError(f"{where}: {required} must be a non-empty string")
        if d["name"] in seen:
            raise ExperimentError(f"{where}: dataset '{d['name']}' appears twice")
        seen.add(d["name"])
        d["set"] = flatten(d.get("set", {}), where=f"{where} set")
        check_overrides(f"{where} set", d["set"])

    grid = flatten(doc.get("grid", {}), where=f"{path}: [grid]")
    check_overrides(f"{path}: [grid]", grid)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ExperimentError(f"{path}: [grid] {key} must be a non-empty list of values")
    return {"name": exp["name"], "config": config, "seeds": seeds, "methods": methods,
            "share_teacher": share, "set": common, "datasets": datasets, "grid": grid,
            "path": path, "base_teacher": base_teacher}


def expand_grid(grid):
    """Every grid point as a list of (key, value), in the file's key and value order."""
    keys = list(grid)
    return [list(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_tag(point):
    if not point:
        return "default"
    names = [k.split(".", 1)[1] for k, _ in point]
    parts = []
    for (key, value), name in zip(point, names):
        short = name not in SHARED_NAMES and names.count(name) == 1
        parts.append(f"{name if short else key}={tag_value(value)}")
    return ",".join(parts)


# ---- the runs

class Run:
    def __init__(self, dataset, data_path, tag, seed, directory, overrides, teacher_arch):
        self.dataset = dataset
        self.data_path = data_path
        self.tag = tag
        self.seed = seed
        self.dir = directory
        self.overrides = overrides          # [(key, value)], later wins
        self.teacher_arch = teacher_arch    # as far as the experiment file tells
        self.teacher_from = None            # the Run that trains this run's teacher
        self.state = None                   # skip | resume | fresh, then done | failed
        self.failure = ""
        self.proc = None
        self.started = 0.0
        self.counter = ""                   # "3/15" in the progress lines

    @property
    def name(self):
        return f"{self.dataset}/{self.tag}/seed{self.seed}"

    @property
    def log(self):
        return self.dir.with_name(self.dir.name + ".log")


def plan_runs(exp, out):
    """Every run in order: dataset, grid point, seed; teacher sources assigned."""
    runs = []
    teachers = {}  # (dataset, teacher-relevant grid items) -> first run
    base_checkpoint = exp["base_teacher"].get("checkpoint")
    base_arch = exp["base_teacher"].get("arch")
    for d in exp["datasets"]:
        for point in expand_grid(exp["grid"]):
            tag = grid_tag(point)
            overrides = list(exp["set"].items()) + list(d["set"].items()) + point
            merged = dict(overrides)
            for seed in exp["seeds"]:
                directory = out / d["name"] / tag / f"seed{seed}"
                run = Run(d["name"], os.path.abspath(d["path"]), tag, seed, directory, overrides,
                          merged.get("teacher.arch", base_arch))
                if exp["share_teacher"] and not merged.get("teacher.checkpoint", base_checkpoint):
                    key = (d["name"], tuple((k, toml_value(v)) for k, v in point
                                            if k.split(".")[0] in TEACHER_SECTIONS))
                    source = teachers.setdefault(key, run)
                    run.teacher_from = source if source is not run else None
                runs.append(run)
    return runs


def classify(run):
    if (run.dir / "summary.json").is_file():
        return "skip"
    if (run.dir / "config.toml").is_file():
        return "resume"
    return "fresh"


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def teacher_checkpoint(source):
    """The best teacher checkpoint of the run that trains it (its config.json names the arch,
    or the checkpoint it loaded itself)."""
    config = read_json(source.dir / "config.json") or {}
    teacher = config.get("teacher", {})
    if teacher.get("checkpoint"):
        return teacher["checkpoint"]
    arch = teacher.get("arch") or source.teacher_arch or "<teacher.arch>"
    return str(source.dir / f"teacher_0_{arch}_best.safetensors")


def teacher_ready(run):
    """True when the run may start, False to wait, None when its teacher will never come."""
    source = run.teacher_from
    if source is None or run.state == "resume":
        return True
    if source.state in ("skip", "done") or (source.dir / "teacher_done.json").is_file():
        return True
    if source.state == "failed":
        return None
    return False


def command(run, exp, app, extra):
    if run.state == "resume":
        # The app continues with the configuration saved in the run directory.
        return [str(app), "--no-progress", "--run-dir", str(run.dir), "--resume"]
    cmd = [str(app), "--no-progress", "--config", str(exp["config"]),
           "--set", f"data.dataset={toml_value(run.dataset)}",
           "--set", f"data.path={toml_value(run.data_path)}",
           "--seed", str(run.seed), "--run-dir", str(run.dir)]
    if exp["methods"]:
        cmd += ["--set", f"run.methods={toml_value(exp['methods'])}"]
    for key, value in run.overrides:
        cmd += ["--set", f"{key}={toml_value(value)}"]
    if run.teacher_from is not None:
        cmd += ["--set", f"teacher.checkpoint={toml_value(teacher_checkpoint(run.teacher_from))}"]
    for item in extra:
        cmd += ["--set", item]
    return cmd


# ---- running

def duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def log_tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def start(run, exp, app, extra):
    cmd = command(run, exp, app, extra)
    run.log.parent.mkdir(parents=True, exist_ok=True)
    with open(run.log, "a") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        run.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
    run.started = time.monotonic()
    verb = "resume" if run.state == "resume" else "run   "
    print(f"[{run.counter}] {verb} {run.name}  (log: {run.log})", flush=True)


def finish(run):
    rc = run.proc.returncode
    took = duration(time.monotonic() - run.started)
    run.proc = None
    if rc == 0:
        run.state = "done"
        print(f"[{run.counter}] done   {run.name} in {took}", flush=True)
        return
    run.state = "failed"
    run.failure = f"exit status {rc}"
    print(f"[{run.counter}] FAILED {run.name}: exit status {rc} after {took}; "
          f"end of {run.log}:\n{log_tail(run.log)}", flush=True)


def fail_unstarted(run, why):
    run.state = "failed"
    run.failure = why
    print(f"[-] FAILED {run.name}: {why}", flush=True)


def execute(todo, exp, app, extra, jobs):
    """Runs `todo` at most `jobs` at a time, in order, each once its teacher is ready."""
    pending, running = list(todo), []
    total, started = len(todo), 0
    try:
        while pending or running:
            for run in list(running):
                if run.proc.poll() is not None:
                    running.remove(run)
                    finish(run)
            for run in list(pending):
                if len(running) >= jobs:
                    break
                ready = teacher_ready(run)
                if ready is None:
                    pending.remove(run)
                    fail_unstarted(run, f"not run: its teacher run {run.teacher_from.name} failed")
                elif ready:
                    pending.remove(run)
                    started += 1
                    run.counter = f"{started}/{total}"
                    start(run, exp, app, extra)
                    running.append(run)
            if running:
                # Wake when the oldest run ends, and now and then for a teacher stage to finish.
                try:
                    running[0].proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            elif pending:
                # A teacher run always precedes the runs that wait for it, so this cannot
                # happen; fail loudly rather than spin.
                for run in pending:
                    fail_unstarted(run, "not run: waiting for a teacher that never started")
                pending = []
    except KeyboardInterrupt:
        # The app checkpoints and exits on SIGINT, resumable; a terminal's Ctrl-C has reached
        # it already, a SIGTERM to the runner has not.
        for run in running:
            run.proc.send_signal(signal.SIGINT)
        for run in running:
            run.proc.wait()
        print("\ninterrupted; run the same command again to continue", flush=True)
        raise


def stop_on_sigterm(_signum, _frame):
    raise KeyboardInterrupt


def write_results(out):
    try:
        res = results.write_results(out)
    except OSError as e:
        print(f"results: {e}", file=sys.stderr)
        return
    print(f"results: {out / 'results.md'} and {out / 'results.json'} "
          f"({len(res['groups'])} dataset/grid point group(s))", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Runs an mcdistil_train experiment over datasets, a grid and seeds; "
                    "see the top of this file for the experiment file.")
    p.add_argument("experiment", help="experiment TOML file")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--app", default=str(DEFAULT_APP), help="mcdistil_train (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1; >1 on a GPU machine)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and run nothing")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every new run, passed as is (e.g. a quick smoke run: "
                        "--set data.limit_train=512); not part of the folder names")
    p.add_argument("--summarize-only", action="store_true", help="only write results.json and results.md")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out).resolve()
    try:
        exp = load_experiment(args.experiment)
    except ExperimentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.summarize_only:
        write_results(out)
        return 0
    app = pathlib.Path(args.app).resolve()
    if not args.dry_run and not os.access(app, os.X_OK):
        print(f"error: --app {app}: not an executable (build it, or point --app at mcdistil_train)",
              file=sys.stderr)
        return 2

    runs = plan_runs(exp, out)
    for run in runs:
        run.state = classify(run)
    todo = [r for r in runs if r.state != "skip"]
    points = len(expand_grid(exp["grid"]))
    print(f"experiment {exp['name']}: {len(runs)} runs ({len(exp['datasets'])} dataset(s) x "
          f"{points} grid point(s) x {len(exp['seeds'])} seed(s)); "
          f"{len(runs) - len(todo)} finished, "
          f"{sum(r.state == 'resume' for r in todo)} to resume, "
          f"{sum(r.state == 'fresh' for r in todo)} to start", flush=True)
    if args.dry_run:
        for run in runs:
            if run.state == "skip":
                print(f"# {run.name}: finished, skipped")
            else:
                print(shlex.join(command(run, exp, app, args.extra)))
        return 0

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exp["path"], out / "experiment.toml")
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        execute(todo, exp, app, args.extra, args.jobs)
    except KeyboardInterrupt:
        return 130
    write_results(out)
    failed = [r for r in todo if r.state == "failed"]
    if failed:
        print(f"{len(failed)} of {len(runs)} runs failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r.name}: {r.failure} (log: {r.log})", file=sys.stderr)
        return 1
    print(f"all {len(runs)} runs finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
