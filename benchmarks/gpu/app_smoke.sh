#!/usr/bin/env bash
# The app end to end on CUDA, run on the GPU machine by check.sh: a Fashion-MNIST subset (the
# bundle's data/, made by make_data_subset.py), a teacher, the CE warm start, KD and MC-Distil
# with the defaults (students on streams of their own, repeated steps replayed as CUDA graphs),
# then the same run interrupted after 50 steps and resumed, each process stopping after 60 steps
# of a stage (so the teacher, KD and MC-Distil stages are each interrupted once), to the end.
# Checks: every run exits 0, no graph capture failed, steps and meta steps were replayed, the
# teacher learns
# (test accuracy above 50%), and the two runs' final test accuracies agree to 5 points (not bit
# for bit: cuDNN picks its algorithms by timing, in each process, and a few hundred steps on a
# subset amplify rounding). Prints one JSON line first, then the logs' tails.
# Usage: app_smoke.sh DIST_DIR WORK_DIR
set -u
dist="$1"
work="$2"
app="$dist/bin/mcdistil_train"
mkdir -p "$work"
args=(--data "$dist/data" --no-progress --set run.device=cuda --set teacher.arch=resnet10_xs
  --set teacher.epochs=2 --set 'students.archs=["resnet10_xxxs", "resnet10_xxs"]'
  --set students.warm_start_epochs=1 --set distill.epochs=2 --set distill.meta_interval=5
  --set 'run.methods=["kd", "mcdistil"]')

"$app" "${args[@]}" --run-dir "$work/whole" >"$work/whole.log" 2>&1
whole_rc=$?
"$app" "${args[@]}" --run-dir "$work/resumed" --stop-after-steps 50 >"$work/resumed.log" 2>&1
resumed_rc=$?
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  [ "$resumed_rc" -eq 0 ] && break
  "$app" --run-dir "$work/resumed" --resume --no-progress --stop-after-steps 60 \
    >>"$work/resumed.log" 2>&1
  resumed_rc=$?
done

"${PYTHON:-python3}" - "$work" "$whole_rc" "$resumed_rc" <<'PY'
import json, os, sys
work, whole_rc, resumed_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def summary(run):
    try:
        with open(os.path.join(work, run, "summary.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def replayed(run, key):
    total = 0
    try:
        for line in open(os.path.join(work, run, "metrics.jsonl")):
            total = max(total, json.loads(line).get(key, 0))
    except OSError:
        pass
    return total
def accuracies(s):
    return {f'{m.get("method", m.get("role"))}/{m.get("arch")}': m.get("test_acc_last")
            for m in (s or {}).get("models", [])}
logs = "".join(open(os.path.join(work, f)).read() for f in ("whole.log", "resumed.log")
               if os.path.exists(os.path.join(work, f)))
a, b = accuracies(summary("whole")), accuracies(summary("resumed"))
worst = max((abs(a[k] - b[k]) for k in a if k in b and a[k] is not None and b[k] is not None),
            default=None)
result = {"whole_rc": whole_rc, "resumed_rc": resumed_rc,
          "capture_failed": "as a CUDA graph failed" in logs,
          "replayed_steps": replayed("whole", "graph_replayed_steps"),
          "replayed_meta_steps": replayed("whole", "graph_replayed_meta_steps"),
          "test_acc_whole": a, "test_acc_resumed": b, "largest_difference": worst,
          "device_peak_reserved_bytes": {k: v.get("device_peak_reserved_bytes", 0)
                                         for k, v in (summary("whole") or {}).get("stages", {}).items()}}
teacher = a.get("teacher/resnet10_xs") or 0.0
result["ok"] = (whole_rc == 0 and resumed_rc == 0 and not result["capture_failed"]
                and result["replayed_steps"] > 0 and result["replayed_meta_steps"] > 0
                and teacher > 0.5 and worst is not None
                and all(v > 0 for v in result["device_peak_reserved_bytes"].values())
                and worst <= 0.05)
print(json.dumps(result))
sys.exit(0 if result["ok"] else 1)
PY
rc=$?
tail -5 "$work/whole.log"
tail -5 "$work/resumed.log"
exit $rc
