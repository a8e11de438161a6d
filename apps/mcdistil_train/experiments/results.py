#!/usr/bin/env python3
"""Result tables of an experiment run by run_experiment.py: reads every
OUT/<dataset>/<grid tag>/seed<k>/summary.json and writes OUT/results.json and OUT/results.md.
Standard library only. Usage: results.py OUT_DIR

Per dataset and grid point: mean and sample standard deviation (n - 1) over seeds of each
student's test accuracy at its best-validation epoch and at the last epoch, per method; the
teacher's test accuracy; MC-Distil's gain over KD and over CE per student (the per-seed paired
difference at the best-validation epoch, its mean and standard deviation over the seeds that
have both); seconds per epoch and peak host memory per method, mean over seeds.

results.json holds accuracies and gains in percent (points), like the tables. A statistic is
{"mean", "std", "n", "values"}; "std" is null below two values."""
import json
import pathlib
import statistics
import sys
import tomllib

METHOD_ORDER = ["ce", "kd", "takd", "dgkd", "mcdistil"]
GAIN_BASELINES = ["kd", "ce"]


def stat(values):
    values = list(values)
    return {"mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values),
            "values": values}


def ordered_methods(names):
    known = [m for m in METHOD_ORDER if m in names]
    return known + [m for m in names if m not in METHOD_ORDER]


def seed_of(name):
    """seed<k> -> k, anything else -> None."""
    if not name.startswith("seed"):
        return None
    try:
        return int(name[4:])
    except ValueError:
        return None


def run_dirs(out):
    """(dataset, tag, seed, path) of every run directory, by dataset, tag ("default" first), seed."""
    found = []
    for path in pathlib.Path(out).glob("*/*/seed*"):
        seed = seed_of(path.name)
        if path.is_dir() and seed is not None:
            found.append((path.parent.parent.name, path.parent.name, seed, path))
    return sorted(found, key=lambda r: (r[0], r[1] != "default", r[1], r[2]))


def load_json(path):
    with open(path) as f:
        return json.load(f)


def group_runs(out):
    """{(dataset, tag): [(seed, summary)]} of the finished runs, and the unfinished ones."""
    groups, unfinished = {}, []
    for dataset, tag, seed, path in run_dirs(out):
        summary = path / "summary.json"
        if not summary.is_file():
            unfinished.append(f"{dataset}/{tag}/seed{seed}")
            continue
        groups.setdefault((dataset, tag), []).append((seed, load_json(summary)))
    return groups, unfinished


def summarize_group(dataset, tag, runs):
    """The statistics of one dataset and grid point; `runs` is [(seed, summary)]."""
    acc = {}  # (arch, method) -> {seed: model entry}
    archs, methods, teacher = [], [], {"arch": None, "by_seed": {}}
    stages = {}  # stage -> {"seconds_per_epoch": [...], "peak_bytes": [...]}
    for seed, summary in runs:
        for m in summary.get("models", []):
            if m.get("role") == "teacher":
                teacher["arch"] = teacher["arch"] or m.get("arch")
                teacher["by_seed"][seed] = m["test_acc_best"]
                continue
            arch, method = m["arch"], m["method"]
            if arch not in archs:
                archs.append(arch)
            if method not in methods:
                methods.append(method)
            acc.setdefault((arch, method), {})[seed] = m
        for stage, s in summary.get("stages", {}).items():
            slot = stages.setdefault(stage, {"seconds_per_epoch": [], "peak_bytes": []})
            slot["seconds_per_epoch"].append(s.get("seconds_per_epoch", 0.0))
            slot["peak_bytes"].append(s.get("peak_bytes", 0))
    methods = ordered_methods(methods)

    students = []
    for arch in archs:
        entry = {"arch": arch, "test_acc_best": {}, "test_acc_last": {}}
        for method in methods:
            by_seed = acc.get((arch, method), {})
            for field in ("test_acc_best", "test_acc_last"):
                entry[field][method] = stat(100 * by_seed[s][field] for s in sorted(by_seed))
        mc = acc.get((arch, "mcdistil"), {})
        for base in GAIN_BASELINES:
            other = acc.get((arch, base), {})
            paired = sorted(set(mc) & set(other))
            entry[f"gain_over_{base}"] = (
                stat(100 * (mc[s]["test_acc_best"] - other[s]["test_acc_best"]) for s in paired)
                if mc and other else None)
        students.append(entry)

    cost = {stage: {"seconds_per_epoch": statistics.mean(v["seconds_per_epoch"]),
                    "peak_bytes": statistics.mean(v["peak_bytes"])}
            for stage, v in stages.items()}
    return {"dataset": dataset, "grid": tag,
            "seeds": [seed for seed, _ in runs],
            "teacher": {"arch": teacher["arch"],
                        "test_acc": stat(100 * v for _, v in sorted(teacher["by_seed"].items()))},
            "methods": methods,
            "students": students,
            "cost": cost}


def collect(out):
    out = pathlib.Path(out)
    groups, unfinished = group_runs(out)
    name = out.name
    exp_file = out / "experiment.toml"
    if exp_file.is_file():
        with open(exp_file, "rb") as f:
            name = tomllib.load(f).get("experiment", {}).get("name", name)
    return {"experiment": name,
            "groups": [summarize_group(d, t, runs) for (d, t), runs in groups.items()],
            "unfinished": unfinished}


# ---- markdown

def fmt_acc(s, seeds):
    """'88.06 ± 0.26' ('88.06' for one value, '-' for none), '(n=2)' when seeds are missing."""
    if s is None or s["n"] == 0:
        return "-"
    text = f"{s['mean']:.2f}" if s["std"] is None else f"{s['mean']:.2f} ± {s['std']:.2f}"
    return text if s["n"] == seeds else f"{text} (n={s['n']})"


def fmt_gain(s, seeds):
    if s is None or s["n"] == 0:
        return "-"
    text = f"{s['mean']:+.2f}" if s["std"] is None else f"{s['mean']:+.2f} ± {s['std']:.2f}"
    return text if s["n"] == seeds else f"{text} (n={s['n']})"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def group_markdown(g):
    n = len(g["seeds"])
    lines = [f"## {g['dataset']}, {g['grid']}", ""]
    seeds = ", ".join(str(s) for s in g["seeds"])
    teacher = g["teacher"]
    line = f"Seeds: {n} ({seeds})."
    if teacher["arch"]:
        line += f" Teacher {teacher['arch']}: test accuracy {fmt_acc(teacher['test_acc'], n)} %."
    lines += [line, ""]
    for field, what in (("test_acc_best", "at the best-validation epoch"),
                        ("test_acc_last", "at the last epoch")):
        lines += [f"Test accuracy (%) {what}, mean ± std over seeds:", ""]
        rows = [[s["arch"]] + [fmt_acc(s[field][m], n) for m in g["methods"]]
                for s in g["students"]]
        lines += table(["student"] + g["methods"], rows) + [""]
    if any(s["gain_over_kd"] or s["gain_over_ce"] for s in g["students"]):
        lines += ["MC-Distil gain in points at the best-validation epoch "
                  "(per-seed paired difference, mean ± std over seeds):", ""]
        rows = [[s["arch"], fmt_gain(s["gain_over_kd"], n), fmt_gain(s["gain_over_ce"], n)]
                for s in g["students"]]
        lines += table(["student", "over KD", "over CE"], rows) + [""]
    costed = [m for m in g["methods"] if m in g["cost"]]
    if costed:
        lines += ["Cost per method, mean over seeds:", ""]
        rows = [[m, f"{g['cost'][m]['seconds_per_epoch']:.1f}",
                 f"{g['cost'][m]['peak_bytes'] / 2**20:.0f}"] for m in costed]
        lines += table(["method", "s/epoch", "peak MiB"], rows) + [""]
    return lines


def to_markdown(res):
    lines = [f"# Results: {res['experiment']}", "",
             "Test accuracy in percent, mean ± sample standard deviation over seeds; "
             "(n=k) marks a cell with fewer seeds than its group.", ""]
    for g in res["groups"]:
        lines += group_markdown(g)
    if res["unfinished"]:
        lines += ["Unfinished runs (no summary.json): " + ", ".join(res["unfinished"]), ""]
    return "\n".join(lines)


def write_results(out):
    """Writes OUT/results.json and OUT/results.md; returns the results."""
    out = pathlib.Path(out)
    res = collect(out)
    with open(out / "results.json", "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    with open(out / "results.md", "w") as f:
        f.write(to_markdown(res))
    return res


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) == 2 else 2
    out = pathlib.Path(argv[1])
    if not out.is_dir():
        print(f"error: {out}: not a directory", file=sys.stderr)
        return 2
    write_results(out)
    print((out / "results.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
