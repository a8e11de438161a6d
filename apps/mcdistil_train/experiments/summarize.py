#!/usr/bin/env python3
"""Summarises fashion_mnist.sh runs: mean and standard deviation over seeds of each student's
test accuracy (at its best-validation epoch, and at the last epoch) per method and C-Net
variant, MC-Distil's gain over KD and CE, time per epoch and peak memory. Standard library
only. Usage: summarize.py OUT_DIR"""
import json
import pathlib
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def fmt(values):
    if not values:
        return "-"
    m = statistics.mean(values) * 100
    s = statistics.stdev(values) * 100 if len(values) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f}" if len(values) > 1 else f"{m:.2f}"


def main():
    out = pathlib.Path(sys.argv[1])
    acc = {}   # (variant, arch) -> {"best": [...], "last": [...]}
    teacher = []
    cost = {}  # variant -> {"s": [...], "peak": [...]}
    seeds = sorted(p for p in out.glob("seed*") if p.is_dir())
    for seed in seeds:
        for sub, rename in (("main", {"mcdistil": "mcdistil (image, sigmoid)"}),
                            ("students", {"mcdistil": "mcdistil (image+students, sigmoid)"}),
                            ("official", {"mcdistil": "mcdistil (image, official)"})):
            path = seed / sub / "summary.json"
            if not path.exists():
                continue
            s = load(path)
            for m in s["models"]:
                if m["role"] == "teacher":
                    if sub == "main":
                        teacher.append(m["test_acc_best"])
                    continue
                variant = rename.get(m["method"], m["method"])
                e = acc.setdefault((variant, m["arch"]), {"best": [], "last": []})
                e["best"].append(m["test_acc_best"])
                e["last"].append(m["test_acc_last"])
            for method, st in s.get("stages", {}).items():
                if method == "warmstart":
                    continue
                c = cost.setdefault(rename.get(method, method), {"s": [], "peak": []})
                c["s"].append(st["seconds_per_epoch"])
                c["peak"].append(st["peak_bytes"])
    variants = []
    for (v, _a) in acc:
        if v not in variants:
            variants.append(v)
    archs = []
    for (_v, a) in acc:
        if a not in archs:
            archs.append(a)
    print(f"Seeds: {len(seeds)}. Teacher test accuracy: {fmt(teacher)} %\n")
    print("Test accuracy (%) at the best-validation epoch, mean ± std over seeds (last epoch in brackets):\n")
    print("| student | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for a in archs:
        cells = [f"{fmt(acc.get((v, a), {}).get('best', []))} ({fmt(acc.get((v, a), {}).get('last', []))})"
                 for v in variants]
        print(f"| {a} | " + " | ".join(cells) + " |")
    base = "mcdistil (image, sigmoid)"
    print("\nMC-Distil (image, sigmoid) gain in points, mean over seeds:\n")
    print("| student | over KD | over CE |")
    print("|---|---|---|")
    for a in archs:
        def mean(v):
            xs = acc.get((v, a), {}).get("best", [])
            return statistics.mean(xs) * 100 if xs else float("nan")
        print(f"| {a} | {mean(base) - mean('kd'):+.2f} | {mean(base) - mean('ce'):+.2f} |")
    print("\nCost per method (seconds per epoch, peak host memory):\n")
    print("| method | s/epoch | peak MiB |")
    print("|---|---|---|")
    for v, c in cost.items():
        print(f"| {v} | {statistics.mean(c['s']):.1f} | {statistics.mean(c['peak']) / 2**20:.0f} |")
    if "kd" in cost and base in cost:
        r = statistics.mean(cost[base]["s"]) / statistics.mean(cost["kd"]["s"])
        print(f"\nMC-Distil time per epoch over KD time per epoch: {r:.2f}")


if __name__ == "__main__":
    main()
