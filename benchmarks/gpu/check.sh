#!/usr/bin/env bash
# The GPU check, run ON THE GPU MACHINE from the repository root with the bundle built by
# build_bundle.sh carried along: the GPU tests (CPU/CUDA parity), one MC-Distil iteration
# (reference configuration) timed for us and for the PyTorch peer, the fused-loss benchmark
# and its PyTorch peer, then compute-sanitizer memcheck and racecheck on test subsets. Each step has
# its own time limit and a failing step does not stop the others; the JSON results are
# rewritten after every step (so a run cut short still leaves them) and a table is printed last.
# Usage: benchmarks/gpu/check.sh OUT_DIR      (bundle folder: $MCD_GPU_DIST, default gpu-dist)
set -uo pipefail
out="${1:?usage: benchmarks/gpu/check.sh OUT_DIR}"
dist="$(cd "${MCD_GPU_DIST:-gpu-dist}" 2>/dev/null && pwd)" || {
  echo "check: bundle folder ${MCD_GPU_DIST:-gpu-dist} not found (build it with build_bundle.sh and carry it)" >&2
  exit 2
}
mkdir -p "$out"
out="$(cd "$out" && pwd)"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# PyTorch's Python (its NVIDIA wheels hold the CUDA libraries), else whatever python3 is there.
py="${PYTHON:-}"
[ -n "$py" ] || { [ -x /opt/torch/.venv/bin/python3 ] && py=/opt/torch/.venv/bin/python3; } || true
[ -n "$py" ] || py="$(command -v python3)"
nvidia_libs="$("$py" - <<'PY' 2>/dev/null
import glob, os
dirs = []
try:
    import nvidia
    for root in nvidia.__path__:
        dirs += sorted(glob.glob(os.path.join(root, "*", "lib")))
except Exception:
    pass
print(":".join(dirs))
PY
)"
if [ -z "$nvidia_libs" ]; then
  nvidia_libs="$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null | paste -sd:)"
fi
export LD_LIBRARY_PATH="$dist/lib${nvidia_libs:+:$nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

sanitizer=""
for c in "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer \
  /usr/local/cuda/compute-sanitizer/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
  "$(dirname "$py")"/../lib/python3*/site-packages/nvidia/*/bin/compute-sanitizer; do
  if [ -n "$c" ] && [ -x "$c" ]; then sanitizer="$c"; break; fi
done

summarize() { "$py" "$dist/summarize.py" "$logs" "$out" "$@"; }

# step NAME LIMIT_SECONDS COMMAND...: output to $logs/NAME.log, "NAME rc milliseconds limit" to
# $logs/steps.txt.
step() {
  local name="$1" limit="$2"
  shift 2
  local t0 t1 rc
  echo "== $name (limit ${limit}s): $*"
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  echo "$name $rc $(((t1 - t0) / 1000000)) $limit" >>"$logs/steps.txt"
  echo "   rc=$rc"
  summarize --quiet || true
}

echo "== environment"
{
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  echo "python: $py"
  echo "LD_LIBRARY_PATH: $LD_LIBRARY_PATH"
  echo "compute-sanitizer: ${sanitizer:-not found}"
  cat "$dist/BUILD_INFO.txt"
} >"$logs/env.log" 2>&1
nvidia-smi -L

tests="$dist/bin/test_cuda_kernels"
step tests "${MCD_T_TESTS:-150}" "$tests" -r junit -o "$logs/tests.xml"
# The MC-Distil iteration of the reference configuration (teacher resnet10, students xxxs..m,
# C-Net resnet10_s, batch 400, 3x32x32, 100 classes, L = 20): ours, then the peer written as
# the released code does it. Each prints one JSON line first.
# first_line_to JSON COMMAND...: runs COMMAND, keeps its first output line (its JSON) in JSON,
# prints everything, and exits with COMMAND's status.
first_line_to() {
  local json="$1"
  shift
  "$@" >"$json.all"
  local rc=$?
  head -1 "$json.all" >"$json"
  cat "$json.all"
  return $rc
}
export -f first_line_to  # step runs it under timeout, in a child bash
# Four schedules in the same run: students on streams of their own with repeated steps replayed
# as CUDA graphs (the default, first: the top-level numbers), lanes alone, graphs alone, and
# one stream without graphs.
step mcdistil_ours "${MCD_T_MCD:-150}" bash -c 'first_line_to "$@"' _ "$logs/mcdistil_ours.json" \
  "$dist/bin/bench_mcdistil_step" --device cuda --schedules lanes+graphs lanes graphs serial
step mcdistil_torch "${MCD_T_MCD_TORCH:-120}" bash -c 'first_line_to "$@"' _ \
  "$logs/mcdistil_torch.json" "$py" "$dist/torch_mcdistil_peer.py"
# Where our step's device time goes: Nsight Compute times every kernel of about two KD
# iterations of the reference configuration (after the warm-up), summed per kernel name.
ncu_bin="$(command -v ncu 2>/dev/null || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
if [ -n "$ncu_bin" ]; then
  step profile "${MCD_T_PROFILE:-90}" bash -c '"$0" --csv --page raw --metrics gpu__time_duration.sum \
    --launch-skip "${MCD_PROFILE_SKIP:-4000}" --launch-count "${MCD_PROFILE_COUNT:-2500}" \
    "$1" --device cuda --schedules serial --iterations 4 >"$2.csv" 2>"$2.err"; rc=$?; \
    "$3" "$4" sgd_step_kernel <"$2.csv" >"$2.all"; head -1 "$2.all" >"$2"; cat "$2.all"; \
    tail -5 "$2.err"; exit $rc' \
    "$ncu_bin" "$dist/bin/bench_mcdistil_step" "$logs/profile.json" "$py" "$dist/kernel_times.py"
else
  echo "== ncu not found: the kernel profile is skipped"
fi
# The app end to end on CUDA: a Fashion-MNIST subset, interrupted and resumed (app_smoke.sh).
step app "${MCD_T_APP:-180}" bash -c 'first_line_to "$@"' _ "$logs/app.json" \
  env PYTHON="$py" bash benchmarks/gpu/app_smoke.sh "$dist" "$logs/app_runs"
# The layout choice: cuDNN's convolutions of one plain step in NCHW and in NHWC.
step conv_layout "${MCD_T_LAYOUT:-120}" "$dist/bin/bench_conv_layout_cuda" --json "$logs/conv_layout.json"
step bench_cuda "${MCD_T_BENCH:-90}" "$dist/bin/bench_fused_loss_cuda" --json "$logs/bench_cuda.json"
step bench_torch "${MCD_T_TORCH:-120}" "$py" "$dist/torch_fused_loss_peer.py" --json "$logs/bench_torch.json"
if [ -n "$sanitizer" ]; then
  # memcheck: every kernel (the random allocator test only repeats memsets, so it is left out).
  # API errors are not counted: the tests provoke some on purpose (an invalid device index).
  step memcheck "${MCD_T_MEMCHECK:-120}" "$sanitizer" --tool memcheck --report-api-errors no --error-exitcode 99 \
    --print-limit 20 "$tests" "[distill_loss],[optim],[runtime],[batch_norm]"
  # racecheck: shared-memory hazards of the block reductions and the row cache.
  step racecheck "${MCD_T_RACECHECK:-90}" "$sanitizer" --tool racecheck --report-api-errors no --error-exitcode 99 \
    --print-limit 20 "$tests" "CUDA distill loss forward matches the CPU kernel" \
    "CUDA distill loss JVP matches the CPU kernel" "CUDA batch_norm matches the CPU*"
else
  echo "== compute-sanitizer not found: memcheck and racecheck skipped"
fi
summarize
