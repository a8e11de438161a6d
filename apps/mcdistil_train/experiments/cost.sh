#!/usr/bin/env bash
# The cost of MC-Distil against KD on a quiet machine: one epoch of each on the same
# 12,800-image subset (100 iterations of 128, so 5 meta steps at L = 20), the same teacher and
# warm-started students, measured back to back in one invocation, then MC-Distil with a single
# meta step. Prints seconds per epoch, peak host memory and their ratios.
# Usage: cost.sh BUILD_DIR TEACHER_CHECKPOINT STUDENT_CHECKPOINT_DIR OUT_DIR
set -euo pipefail
app="$1/apps/mcdistil_train" teacher=$2 students=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$out"
for method in kd mcdistil; do
  "$app" --no-progress --config "$here/fashion_mnist.toml" --run-dir "$out/$method" --method "$method" \
    --set "teacher.checkpoint=$teacher" --set "students.checkpoint_dir=$students" \
    --set data.limit_train=12800 --set distill.epochs=1 > "$out.$method.log" 2>&1
done
# The same with a single meta step (at iteration 0): the cost of the C-Net's per-step weights
# alone, which separates it from the meta steps'.
"$app" --no-progress --config "$here/fashion_mnist.toml" --run-dir "$out/weights_only" --method mcdistil \
  --set "teacher.checkpoint=$teacher" --set "students.checkpoint_dir=$students" \
  --set data.limit_train=12800 --set distill.epochs=1 --set distill.meta_interval=1000000 \
  > "$out.weights_only.log" 2>&1
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
s = {m: json.load(open(f"{out}/{m}/summary.json"))["stages"][m] for m in ("kd", "mcdistil")}
w = json.load(open(f"{out}/weights_only/summary.json"))["stages"]["mcdistil"]
for m, v in list(s.items()) + [("mcdistil, 1 meta step", w)]:
    print(f"{m:22s} {v['seconds_per_epoch']:7.2f} s/epoch  peak {v['peak_bytes'] / 2**20:6.0f} MiB")
print(f"MC-Distil / KD: time {s['mcdistil']['seconds_per_epoch'] / s['kd']['seconds_per_epoch']:.2f}, "
      f"peak memory {s['mcdistil']['peak_bytes'] / s['kd']['peak_bytes']:.2f}")
PY
