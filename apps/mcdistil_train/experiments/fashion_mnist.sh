#!/usr/bin/env bash
# The Fashion-MNIST experiment: per seed, one pipeline run (CE warm start, then CE, KD and
# MC-Distil with the image C-Net input and the sigmoid head), then MC-Distil with the
# image+students input from the same teacher and warm-started students, and (first seed only)
# MC-Distil with the released code's "official" head. The teacher is trained once, by the
# first seed's run, and shared: the comparison is between students. Then a markdown table.
#
# Usage: fashion_mnist.sh BUILD_DIR OUT_DIR [SEED...]        (seeds default to 0 1 2)
# Extra settings for every run can be passed in MCD_EXTRA, e.g. MCD_EXTRA="--set distill.epochs=5".
set -euo pipefail
build=$1 out=$2
shift 2
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
app="$build/apps/mcdistil_train"
here=$(cd "$(dirname "$0")" && pwd)
teacher=resnet10_m
archs=(resnet10_xxs resnet10_xs resnet10_s)
common=(--no-progress --config "$here/fashion_mnist.toml" ${MCD_EXTRA:-})

first="$out/seed${seeds[0]}/main/teacher_0_${teacher}_best.safetensors"
for seed in "${seeds[@]}"; do
  run="$out/seed$seed"
  shared=()
  [ "$seed" = "${seeds[0]}" ] || shared=(--set "teacher.checkpoint=$first")
  [ -f "$run/main/summary.json" ] ||
    "$app" "${common[@]}" --seed "$seed" --run-dir "$run/main" "${shared[@]}"
  mkdir -p "$run/warm"
  for k in "${!archs[@]}"; do
    cp "$run/main/warmstart_${k}_${archs[$k]}_best.safetensors" "$run/warm/student_${archs[$k]}.safetensors"
  done
  reuse=(--set "teacher.checkpoint=$first"
         --set "students.checkpoint_dir=$run/warm" --method mcdistil)
  [ -f "$run/students/summary.json" ] ||
    "$app" "${common[@]}" --seed "$seed" --run-dir "$run/students" "${reuse[@]}" --set cnet.input=image+students
  if [ "$seed" = "${seeds[0]}" ] && [ ! -f "$run/official/summary.json" ]; then
    "$app" "${common[@]}" --seed "$seed" --run-dir "$run/official" "${reuse[@]}" --set cnet.head=official
  fi
done
python3 "$here/summarize.py" "$out"
