#!/usr/bin/env python3
"""Sums GPU time per kernel from Nsight Compute's raw CSV (one row per profiled launch, with the
metric gpu__time_duration.sum), to see where a training step's device time goes.

Usage: ncu --csv --page raw --metrics gpu__time_duration.sum ... | kernel_times.py [MARKER]
Prints one JSON line ({"kernels", "total_ms", "per_marker_ms", "top": [...]}) and a table.
MARKER is the name of a kernel launched once per step per model (e.g. sgd_step_kernel): the
time per occurrence of it estimates the device time of one model's step.
Standard library only: the GPU machine has no package registry."""
import csv
import json
import sys


def main():
    marker = sys.argv[1] if len(sys.argv) > 1 else None
    rows = [r for r in csv.reader(sys.stdin) if r]
    header = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if header is None:
        print(json.dumps({"error": "no ncu CSV header found", "lines": len(rows)}))
        return 1
    cols = rows[header]
    name_at, time_at = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum")
    unit = rows[header + 1][time_at] if len(rows) > header + 1 else ""
    scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}.get(unit, 1e-6)
    totals, counts = {}, {}
    for r in rows[header + 1:]:
        try:
            t = float(r[time_at].replace(",", "")) * scale
        except (ValueError, IndexError):
            continue  # the units row, or a malformed line
        name = r[name_at].replace("(anonymous namespace)::", "").replace("void ", "")
        name = name.split("(")[0].split("<")[0].strip()
        totals[name] = totals.get(name, 0.0) + t
        counts[name] = counts.get(name, 0) + 1
    total = sum(totals.values())
    top = sorted(totals, key=totals.get, reverse=True)[:25]
    result = {"kernels": sum(counts.values()), "total_ms": total,
              "per_marker_ms": total / counts[marker] if marker in counts else None,
              "marker": marker,
              "top": [{"kernel": k, "ms": totals[k], "count": counts[k]} for k in top]}
    print(json.dumps(result))
    print(f"{sum(counts.values())} kernels, {total:.2f} ms of device time")
    for k in top:
        print(f"{totals[k]:9.3f} ms {counts[k]:6d}x  {k[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
