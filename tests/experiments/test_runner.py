#!/usr/bin/env python3
"""Tests of the experiment runner, the result tables and the plots
(apps/mcdistil_train/experiments). The runner drives a fake app, a small script that logs its
arguments and writes a run directory the way mcdistil_train does, so that skipping, resuming,
teacher sharing and failures are checked in seconds. The tables are checked against numbers
computed by hand from the committed fixture/ tree (2 seeds, 2 students, 5 methods).
Run: python3 tests/experiments/test_runner.py  (the plot test needs python3-matplotlib)"""
import importlib.util
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "apps" / "mcdistil_train" / "experiments"
FIXTURE = pathlib.Path(__file__).resolve().parent / "fixture"
sys.path.insert(0, str(EXPERIMENTS))
import results  # noqa: E402
import run_experiment as rx  # noqa: E402

# Logs its argv (one JSON line per call), then behaves like mcdistil_train on a run directory:
# config.json and config.toml first, then the teacher checkpoint and its stage record (unless
# a teacher checkpoint is given, which must exist), metrics.jsonl and summary.json.
# FAKE_FAIL=<substring of the run dir>: exit 1 at once; FAKE_DIE=<substring>: SIGKILL itself
# after writing the configuration, as a crash midway would.
FAKE_APP = '''#!{python}
import json, os, pathlib, signal, sys, tomllib
argv = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(argv) + "\\n")
def option(name):
    return argv[argv.index(name) + 1] if name in argv else None
sets = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
run = pathlib.Path(option("--run-dir"))
if "--resume" in argv:
    config = json.loads((run / "config.json").read_text())
else:
    if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in str(run):
        sys.exit(1)
    with open(option("--config"), "rb") as f:
        base = tomllib.load(f)
    config = {{"teacher": {{"arch": base["teacher"]["arch"],
                          "checkpoint": json.loads(sets.get("teacher.checkpoint", '""'))}},
              "run": {{"seed": int(option("--seed")), "methods": json.loads(sets["run.methods"])}}}}
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "config.toml").write_text("# fake\\n")
    if os.environ.get("FAKE_DIE") and os.environ["FAKE_DIE"] in str(run):
        os.kill(os.getpid(), signal.SIGKILL)
teacher = config["teacher"]
if teacher["checkpoint"]:
    if not pathlib.Path(teacher["checkpoint"]).is_file():
        sys.exit("error: teacher.checkpoint " + teacher["checkpoint"] + " does not exist")
else:
    (run / ("teacher_0_" + teacher["arch"] + "_best.safetensors")).write_text("weights")
    (run / "teacher_done.json").write_text("{{}}")
seed = config["run"]["seed"]
models = [{{"role": "teacher", "arch": teacher["arch"], "best_val_acc": 0.9, "test_acc_best": 0.9,
           "test_acc_last": 0.9, "epochs": 1, "best_epoch": 1}}]
with open(run / "metrics.jsonl", "a") as f:
    for i, method in enumerate(config["run"]["methods"]):
        acc = 0.5 + 0.1 * i + 0.01 * seed
        models.append({{"role": "student", "arch": "resnet10_xxxs", "method": method,
                       "best_val_acc": acc, "test_acc_best": acc, "test_acc_last": acc,
                       "epochs": 1, "best_epoch": 1}})
        f.write(json.dumps({{"stage": method, "method": method, "role": "student",
                            "arch": "resnet10_xxxs", "student": 0, "epoch": 1, "val_acc": acc,
                            "test_acc": acc, "alpha_mean": 0.5, "alpha_std": 0.1,
                            "beta_mean": 0.5, "beta_std": 0.1}}) + "\\n")
summary = {{"dataset": "fashion-mnist", "method": ",".join(config["run"]["methods"]),
           "wall_seconds": 1.0, "models": models,
           "stages": {{m: {{"seconds_per_epoch": 1.0, "peak_bytes": 1}} for m in config["run"]["methods"]}}}}
(run / "summary.json").write_text(json.dumps(summary))
'''

EXPERIMENT = '''
[experiment]
name = "fake"
config = "base.toml"
seeds = {seeds}
methods = ["ce", "kd"]
share_teacher = {share}
set = {{"distill.epochs" = 1}}

[[dataset]]
name = "fashion-mnist"
path = "/data/fm"

[grid]
{grid}
'''


class GridTest(unittest.TestCase):
    def test_expansion_is_the_cartesian_product_in_file_order(self):
        points = rx.expand_grid({"distill.tau": [2, 4], "cnet.lr": [0.001, 0.01]})
        self.assertEqual(points, [[("distill.tau", 2), ("cnet.lr", 0.001)],
                                  [("distill.tau", 2), ("cnet.lr", 0.01)],
                                  [("distill.tau", 4), ("cnet.lr", 0.001)],
                                  [("distill.tau", 4), ("cnet.lr", 0.01)]])
        self.assertEqual(rx.expand_grid({}), [[]])

    def test_tags(self):
        self.assertEqual(rx.grid_tag([]), "default")
        self.assertEqual(rx.grid_tag([("distill.tau", 2), ("cnet.lr", 0.001)]), "tau=2,cnet.lr=0.001")
        self.assertEqual(rx.grid_tag([("students.weight_decay", 1e-05), ("students.momentum", 0.65)]),
                         "students.weight_decay=1e-05,students.momentum=0.65")
        self.assertEqual(rx.grid_tag([("distill.tau", 2.0), ("other.tau", 3)]), "distill.tau=2.0,other.tau=3")
        self.assertEqual(rx.grid_tag([("students.archs", ["resnet10_xs", "resnet10_s"]),
                                      ("teacher.checkpoint", "a/b.safetensors"), ("data.flip", False)]),
                         "archs=resnet10_xs+resnet10_s,checkpoint=a_b.safetensors,flip=false")

    def test_values_reach_the_app_in_toml_syntax(self):
        self.assertEqual(rx.toml_value(1e-05), "1e-05")
        self.assertEqual(rx.toml_value(2.0), "2.0")
        self.assertEqual(rx.toml_value(3), "3")
        self.assertEqual(rx.toml_value(True), "true")
        self.assertEqual(rx.toml_value('a"b'), '"a\\"b"')
        self.assertEqual(rx.toml_value(["ce", "kd"]), '["ce", "kd"]')

    def write(self, text):
        d = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, d)
        (d / "base.toml").write_text('[teacher]\narch = "resnet10_s"\n')
        (d / "e.toml").write_text(textwrap.dedent(text))
        return d / "e.toml"

    def test_dotted_and_quoted_keys_read_alike(self):
        exp = rx.load_experiment(self.write('''
            [experiment]
            name = "x"
            config = "base.toml"
            set = {distill.epochs = 2}
            [[dataset]]
            name = "fashion-mnist"
            path = "p"
            [grid]
            distill.tau = [2, 4]
            "cnet.lr" = [0.1]
            '''))
        self.assertEqual(exp["set"], {"distill.epochs": 2})
        self.assertEqual(exp["grid"], {"distill.tau": [2, 4], "cnet.lr": [0.1]})
        self.assertEqual(exp["seeds"], [0])

    def test_bad_files_are_rejected_with_the_key(self):
        cases = {
            'set = {"run.seed" = 3}': "run.seed",
            'colour = "red"': "colour",
            "seeds = [1, 1]": "seeds",
            'set = {"teacher.arch" = 1979-05-27}': "teacher.arch",
            "set = 3": "set",
        }
        for line, word in cases.items():
            path = self.write(f'[experiment]\nname = "x"\nconfig = "base.toml"\n{line}\n'
                              '[[dataset]]\nname = "d"\npath = "p"\n')
            with self.assertRaises(rx.ExperimentError) as e:
                rx.load_experiment(path)
            self.assertIn(word, str(e.exception))
        path = self.write('[experiment]\nname = "x"\nconfig = "base.toml"\n'
                          '[[dataset]]\nname = "d"\npath = "p"\n[grid]\n"distill.tau" = []\n')
        with self.assertRaisesRegex(rx.ExperimentError, "distill.tau"):
            rx.load_experiment(path)


class RunnerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp)
        self.app = self.tmp / "fake_app"
        self.app.write_text(FAKE_APP.format(python=sys.executable))
        self.app.chmod(0o755)
        (self.tmp / "base.toml").write_text('[teacher]\narch = "resnet10_s"\n')
        self.log = self.tmp / "calls.jsonl"
        self.out = self.tmp / "out"

    def experiment(self, seeds="[0, 1]", grid='"distill.tau" = [2, 4]', share="true"):
        path = self.tmp / "e.toml"
        path.write_text(EXPERIMENT.format(seeds=seeds, grid=grid, share=share))
        return path

    def runner(self, experiment, *args, **env):
        self.log.write_text("")
        cmd = [sys.executable, str(EXPERIMENTS / "run_experiment.py"), str(experiment),
               "--app", str(self.app), "--out", str(self.out), *args]
        full_env = dict(os.environ, FAKE_LOG=str(self.log), **env)
        return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=60)

    def calls(self):
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    @staticmethod
    def sets(argv):
        return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")

    @staticmethod
    def run_dir(argv):
        return pathlib.Path(argv[argv.index("--run-dir") + 1])

    def test_runs_every_run_once_then_skips_them(self):
        exp = self.experiment()
        first = self.runner(exp)
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        calls = self.calls()
        expected = [self.out / "fashion-mnist" / tag / f"seed{s}"
                    for tag in ("tau=2", "tau=4") for s in (0, 1)]
        self.assertEqual([self.run_dir(c) for c in calls], expected)
        for d in expected:
            self.assertTrue((d / "summary.json").is_file())
        argv = calls[3]
        self.assertEqual(argv[:4], ["--no-progress", "--config", str(self.tmp / "base.toml"), "--set"])
        self.assertEqual(argv[argv.index("--seed") + 1], "1")
        sets = self.sets(argv)
        self.assertEqual(sets["data.dataset"], '"fashion-mnist"')
        self.assertEqual(sets["data.path"], '"/data/fm"')
        self.assertEqual(sets["run.methods"], '["ce", "kd"]')
        self.assertEqual(sets["distill.epochs"], "1")
        self.assertEqual(sets["distill.tau"], "4")
        res = json.loads((self.out / "results.json").read_text())
        self.assertEqual([g["grid"] for g in res["groups"]], ["tau=2", "tau=4"])
        self.assertEqual(res["experiment"], "fake")
        self.assertIn("| resnet10_xxxs | 50.50 ± 0.71 | 60.50 ± 0.71 |",
                      (self.out / "results.md").read_text())

        second = self.runner(exp)
        self.assertEqual(second.returncode, 0, second.stdout + second.stderr)
        self.assertEqual(self.calls(), [])
        self.assertIn("4 finished", second.stdout)

    def test_the_first_run_trains_the_teacher_and_the_others_load_it(self):
        self.assertEqual(self.runner(self.experiment()).returncode, 0)
        calls = self.calls()
        self.assertNotIn("teacher.checkpoint", self.sets(calls[0]))
        # tau is not a teacher setting, so the other grid point shares the teacher too.
        shared = json.dumps(str(self.out / "fashion-mnist" / "tau=2" / "seed0"
                                / "teacher_0_resnet10_s_best.safetensors"))
        for argv in calls[1:]:
            self.assertEqual(self.sets(argv)["teacher.checkpoint"], shared)

    def test_a_teacher_setting_in_the_grid_gets_a_teacher_per_point(self):
        exp = self.experiment(grid='"teacher.epochs" = [1, 2]')
        self.assertEqual(self.runner(exp, "--jobs", "3").returncode, 0)
        by_dir = {self.run_dir(c).relative_to(self.out).as_posix(): self.sets(c) for c in self.calls()}
        self.assertEqual(sorted(by_dir), [f"fashion-mnist/teacher.epochs={e}/seed{s}"
                                          for e in (1, 2) for s in (0, 1)])
        for tag in ("teacher.epochs=1", "teacher.epochs=2"):
            self.assertNotIn("teacher.checkpoint", by_dir[f"fashion-mnist/{tag}/seed0"])
            self.assertIn(f"{tag}/seed0/teacher_0",
                          by_dir[f"fashion-mnist/{tag}/seed1"]["teacher.checkpoint"])

    def test_no_sharing_when_switched_off(self):
        self.assertEqual(self.runner(self.experiment(share="false")).returncode, 0)
        for argv in self.calls():
            self.assertNotIn("teacher.checkpoint", self.sets(argv))

    def test_a_run_killed_midway_is_resumed(self):
        exp = self.experiment(seeds="[0, 1, 2]", grid="")
        killed = self.runner(exp, FAKE_DIE="seed1")
        self.assertNotEqual(killed.returncode, 0)
        self.assertIn("seed1", killed.stderr)
        seed1 = self.out / "fashion-mnist" / "default" / "seed1"
        self.assertTrue((seed1 / "config.toml").is_file())
        self.assertFalse((seed1 / "summary.json").exists())
        self.assertTrue((seed1.parent / "seed2" / "summary.json").is_file())

        again = self.runner(exp)
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertEqual(self.calls(), [["--no-progress", "--run-dir", str(seed1), "--resume"]])
        self.assertTrue((seed1 / "summary.json").is_file())

    def test_a_failed_run_is_reported_and_the_others_go_on(self):
        result = self.runner(self.experiment(), FAKE_FAIL="tau=4/seed0")
        self.assertEqual(result.returncode, 1)
        self.assertIn("tau=4/seed0", result.stderr)
        self.assertEqual(len(self.calls()), 4)
        done = sorted(p.parent.relative_to(self.out).as_posix()
                      for p in self.out.glob("*/*/seed*/summary.json"))
        self.assertEqual(done, ["fashion-mnist/tau=2/seed0", "fashion-mnist/tau=2/seed1",
                                "fashion-mnist/tau=4/seed1"])
        self.assertTrue((self.out / "results.md").is_file())

    def test_runs_waiting_for_a_failed_teacher_are_not_started(self):
        result = self.runner(self.experiment(grid=""), FAKE_FAIL="seed0")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(self.calls()), 1)
        self.assertIn("teacher run fashion-mnist/default/seed0 failed", result.stderr)

    def test_dry_run_prints_the_commands_and_runs_nothing(self):
        result = self.runner(self.experiment(), "--dry-run")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.calls(), [])
        self.assertFalse(self.out.exists())
        commands = [line for line in result.stdout.splitlines() if line.startswith(str(self.app.resolve()))]
        self.assertEqual(len(commands), 4)
        self.assertIn("teacher_0_resnet10_s_best.safetensors", commands[1])


class ResultsTest(unittest.TestCase):
    """Every expected number below is computed by hand from fixture/*/summary.json."""

    def setUp(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp)
        self.out = self.tmp / "out"
        shutil.copytree(FIXTURE, self.out)

    def check(self, s, mean, std, n=2):
        self.assertAlmostEqual(s["mean"], mean, places=9)
        self.assertAlmostEqual(s["std"], std, places=9)
        self.assertEqual(s["n"], n)

    def test_statistics(self):
        res = results.write_results(self.out)
        self.assertEqual(res, json.loads((self.out / "results.json").read_text()))
        self.assertEqual(res["experiment"], "fixture")
        self.assertEqual(res["unfinished"], ["fashion-mnist/default/seed2"])
        [g] = res["groups"]
        self.assertEqual((g["dataset"], g["grid"], g["seeds"]), ("fashion-mnist", "default", [0, 1]))
        self.assertEqual(g["methods"], ["ce", "kd", "takd", "dgkd", "mcdistil"])
        self.assertEqual(g["teacher"]["arch"], "resnet10_m")
        self.check(g["teacher"]["test_acc"], 90.5, math.sqrt(0.5))         # 90, 91
        xxs, xs = g["students"]
        self.assertEqual((xxs["arch"], xs["arch"]), ("resnet10_xxs", "resnet10_xs"))
        self.check(xxs["test_acc_best"]["ce"], 81.0, math.sqrt(2))          # 80, 82
        self.check(xxs["test_acc_best"]["kd"], 83.5, math.sqrt(0.5))        # 83, 84
        self.check(xxs["test_acc_best"]["dgkd"], 82.0, 0.0)                 # 82, 82
        self.check(xxs["test_acc_last"]["kd"], 83.0, math.sqrt(2))          # 82, 84
        self.check(xs["test_acc_best"]["dgkd"], 86.0, math.sqrt(0.5))       # 85.5, 86.5
        self.check(xs["test_acc_last"]["mcdistil"], 87.0, math.sqrt(2))     # 86, 88
        self.check(xxs["gain_over_kd"], 2.5, math.sqrt(0.5))                # 85-83, 87-84
        self.check(xxs["gain_over_ce"], 5.0, 0.0)                           # 85-80, 87-82
        self.check(xs["gain_over_kd"], 1.5, math.sqrt(0.5))                 # 87-86, 88-86
        self.check(xs["gain_over_ce"], 3.0, 0.0)                            # 87-84, 88-85
        self.assertEqual(g["cost"]["mcdistil"]["seconds_per_epoch"], 22.0)  # 20, 24
        self.assertEqual(g["cost"]["dgkd"]["seconds_per_epoch"], 15.0)      # 14, 16
        self.assertEqual(g["cost"]["mcdistil"]["peak_bytes"], 200 * 2**20)

    def test_markdown_rows(self):
        proc = subprocess.run([sys.executable, str(EXPERIMENTS / "results.py"), str(self.out)],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        md = (self.out / "results.md").read_text()
        self.assertEqual(proc.stdout, md)
        for row in [
            "Seeds: 2 (0, 1). Teacher resnet10_m: test accuracy 90.50 ± 0.71 %.",
            "| student | ce | kd | takd | dgkd | mcdistil |",
            "| resnet10_xxs | 81.00 ± 1.41 | 83.50 ± 0.71 | 82.00 ± 1.41 | 82.00 ± 0.00 | 86.00 ± 1.41 |",
            "| resnet10_xs | 84.50 ± 0.71 | 86.00 ± 0.00 | 85.50 ± 0.71 | 86.00 ± 0.71 | 87.50 ± 0.71 |",
            "| resnet10_xxs | 79.50 ± 0.71 | 83.00 ± 1.41 | 81.50 ± 0.71 | 81.00 ± 1.41 | 84.50 ± 0.71 |",
            "| resnet10_xxs | +2.50 ± 0.71 | +5.00 ± 0.00 |",
            "| resnet10_xs | +1.50 ± 0.71 | +3.00 ± 0.00 |",
            "| mcdistil | 22.0 | 200 |",
            "Unfinished runs (no summary.json): fashion-mnist/default/seed2",
        ]:
            self.assertIn(row + "\n", md)


class PlotTest(unittest.TestCase):
    def test_plots_are_png_files(self):
        if importlib.util.find_spec("matplotlib") is None:
            self.fail(f"{sys.executable} has no matplotlib: install python3-matplotlib "
                      "(.ci/install-deps.sh does) or run this test with a Python that has it")
        tmp = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp)
        proc = subprocess.run([sys.executable, str(EXPERIMENTS / "plot.py"), str(FIXTURE),
                               "--out", str(tmp)], capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        for name in ("accuracy.png", "cnet_weights.png"):
            path = tmp / "fashion-mnist" / "default" / name
            data = path.read_bytes()
            self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n", path)
            self.assertGreater(len(data), 1000, path)


if __name__ == "__main__":
    unittest.main()
