#!/usr/bin/env bash
# The GPU check, run ON THE GPU MACHINE from the repository root with the bundle built by
# build_bundle.sh carried along: the GPU tests (CPU/CUDA parity), one MC-Distil iteration
# (reference configuration) timed for us and for the PyTorch peer, the fused-loss benchmark
# and its PyTorch peer, then compute-sanitizer memcheck and racecheck on test subsets. Each step has
# its own time limit, capped by the whole check's budget ($MCD_DEADLINE seconds, default 540,
# under the 600 s a command may run), and a failing step does not stop the others; the JSON
# results are rewritten after every step (so a run cut short still leaves them) and a table is
# printed last. Without a GPU answering, it stops after the environment. Exit status: 0 when
# every step passed or was skipped (77), 1 when one failed or timed out, 3 without a GPU.
# MCD_CHECK_WITHOUT_GPU=1 runs every step anyway (to try the script itself on a machine
# without a GPU, where the binaries exit 77).
# Usage: benchmarks/gpu/check.sh OUT_DIR      (bundle folder: $MCD_GPU_DIST, default gpu-dist)
set -uo pipefail
deadline=$(($(date +%s) + ${MCD_DEADLINE:-540}))
out="${1:?usage: benchmarks/gpu/check.sh OUT_DIR}"
dist="$(cd "${MCD_GPU_DIST:-gpu-dist}" 2>/dev/null && pwd)" || {
  echo "check: bundle folder ${MCD_GPU_DIST:-gpu-dist} not found (build it with build_bundle.sh and carry it)" >&2
  exit 2
}
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "$0")/../.."  # the scripts run from the tree
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
# The bundle's own libraries are found through its binaries' RUNPATH, so this path holds only
# PyTorch's NVIDIA libraries (the cuDNN and cuBLAS our binaries use), which Python loads anyway.
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

sanitizer=""
for c in "$(command -v compute-sanitizer 2>/dev/null)" /usr/local/cuda/bin/compute-sanitizer \
  /usr/local/cuda/compute-sanitizer/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
  "$(dirname "$py")"/../lib/python3*/site-packages/nvidia/*/bin/compute-sanitizer; do
  if [ -n "$c" ] && [ -x "$c" ]; then sanitizer="$c"; break; fi
done

summarize() { "$py" benchmarks/gpu/summarize.py "$logs" "$out" "$@"; }

# step NAME LIMIT_SECONDS COMMAND...: output to $logs/NAME.log, "NAME rc milliseconds limit" to
# $logs/steps.txt. The limit is cut to what the check's budget has left; a step that would get
# less than 20 s does not start (rc 125).
failures=0
step() {
  local name="$1" limit="$2"
  shift 2
  local t0 t1 rc left=$((deadline - $(date +%s) - 10))
  if [ "$left" -lt 20 ]; then
    echo "== $name: not run, the check's time budget is spent"
    echo "$name 125 0 $limit" >>"$logs/steps.txt"
    case "$name" in *_tf32) ;; *) failures=$((failures + 1)) ;; esac  # only those are optional
    summarize --quiet || true
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*"
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  echo "$name $rc $(((t1 - t0) / 1000000)) $limit" >>"$logs/steps.txt"
  echo "   rc=$rc"
  [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ] || failures=$((failures + 1))
  summarize --quiet || true
}

# The bundle must be built from the sources of this tree, or the run tests other code.
tree_hash="$(bash benchmarks/gpu/source_hash.sh 2>/dev/null || echo unknown)"
bundle_hash="$(cat "$dist/SOURCE_HASH" 2>/dev/null || echo missing)"
if [ "$tree_hash" = "$bundle_hash" ]; then
  echo "same sources as this tree: $tree_hash" >"$logs/bundle.txt"
else
  echo "differs: the bundle was built from sources $bundle_hash, this tree has $tree_hash" \
    >"$logs/bundle.txt"
  echo "WARNING: $(cat "$logs/bundle.txt"); rebuild it with build_bundle.sh" >&2
fi

echo "== environment"
{
  timeout 20 nvidia-smi -L
  timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  echo "python: $py"
  echo "LD_LIBRARY_PATH: $LD_LIBRARY_PATH"
  echo "compute-sanitizer: ${sanitizer:-not found}"
  cat "$logs/bundle.txt"
  cat "$dist/BUILD_INFO.txt"
} >"$logs/env.log" 2>&1
if ! timeout 20 nvidia-smi -L && [ "${MCD_CHECK_WITHOUT_GPU:-0}" != 1 ]; then
  echo "check: no GPU answers (nvidia-smi -L failed); nothing to check" >&2
  summarize
  exit 3
fi

tests="$dist/bin/test_cuda_kernels"
# NCCL's tests run apart (tests_nccl, below): the library comes from PyTorch's environment, and a
# problem there must not cost the other tests' results.
step tests "${MCD_T_TESTS:-150}" "$tests" "~[nccl]" -r junit -o "$logs/tests.xml"
if grep -q "^tests 77 " "$logs/steps.txt" && [ "${MCD_CHECK_WITHOUT_GPU:-0}" != 1 ]; then
  echo "check: the tests found no usable CUDA device; the rest is skipped" >&2
  summarize
  exit 3
fi
# The same tests with every block the caching allocator hands out filled with NaN first
# (MCD_POISON_ALLOCATIONS=1): a kernel that reads memory it never wrote, or a stream that still
# reads a block after it went to a new owner, then fails a comparison instead of passing on
# stale values (in a replayed graph, the previous replay's).
step tests_poisoned "${MCD_T_TESTS_POISONED:-150}" env MCD_POISON_ALLOCATIONS=1 "$tests" "~[nccl]"
# Data parallelism through NCCL on this one GPU: one replica's averages, eager and inside the
# trainer's graphs (NCCL comes from PyTorch's environment here: missing, it fails the step).
step tests_nccl "${MCD_T_TESTS_NCCL:-60}" env MCD_REQUIRE_NCCL=1 "$tests" "[nccl]"
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
# Five schedules in the same run: students on streams of their own with repeated steps replayed
# as CUDA graphs (the default, first: the top-level numbers), lanes alone, graphs alone, one
# stream without graphs, and the students on two streams with graphs (the memory middle way).
step mcdistil_ours "${MCD_T_MCD:-150}" bash -c 'first_line_to "$@"' _ "$logs/mcdistil_ours.json" \
  "$dist/bin/bench_mcdistil_step" --device cuda --schedules lanes+graphs lanes graphs serial \
  lanes2+graphs
# The peer in IEEE float32 as ours (PyTorch's default lets cuDNN use TF32), on the GPU (never a
# silent fall back to the CPU).
step mcdistil_torch "${MCD_T_MCD_TORCH:-120}" bash -c 'first_line_to "$@"' _ \
  "$logs/mcdistil_torch.json" "$py" benchmarks/torch_mcdistil_peer.py --device cuda --tf32 off
# Where our step's device time goes: Nsight Compute times every kernel of about two KD
# iterations of the reference configuration, summed per kernel name: the benchmark opens the
# profiler's range around its timed iterations only (after the warm-up and the algorithm search).
ncu_bin="$(command -v ncu 2>/dev/null || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)"
if [ -n "$ncu_bin" ]; then
  step profile "${MCD_T_PROFILE:-90}" bash -c '"$0" --csv --page raw --metrics gpu__time_duration.sum \
    --profile-from-start off --launch-count "${MCD_PROFILE_COUNT:-2500}" \
    "$1" --device cuda --schedules serial --iterations 4 >"$2.csv" 2>"$2.err"; rc=$?; \
    "$3" "$4" sgd_step_kernel <"$2.csv" >"$2.all"; head -1 "$2.all" >"$2"; cat "$2.all"; \
    tail -5 "$2.err"; exit $rc' \
    "$ncu_bin" "$dist/bin/bench_mcdistil_step" "$logs/profile.json" "$py" benchmarks/gpu/kernel_times.py
else
  echo "== ncu not found: the kernel profile is skipped"
fi
# The app end to end on CUDA: a Fashion-MNIST subset, interrupted and resumed (app_smoke.sh).
step app "${MCD_T_APP:-180}" bash -c 'first_line_to "$@"' _ "$logs/app.json" \
  env PYTHON="$py" bash benchmarks/gpu/app_smoke.sh "$dist" "$logs/app_runs"
# The layout choice: cuDNN's convolutions of one plain step in NCHW and in NHWC.
step conv_layout "${MCD_T_LAYOUT:-120}" "$dist/bin/bench_conv_layout_cuda" --json "$logs/conv_layout.json"
step bench_cuda "${MCD_T_BENCH:-90}" "$dist/bin/bench_fused_loss_cuda" --json "$logs/bench_cuda.json"
step bench_torch "${MCD_T_TORCH:-120}" "$py" benchmarks/torch_fused_loss_peer.py --json "$logs/bench_torch.json"
if [ -n "$sanitizer" ]; then
  # memcheck: every kernel (the random allocator test only repeats memsets, so it is left out).
  # API errors are not counted: the tests provoke some on purpose (an invalid device index).
  step memcheck "${MCD_T_MEMCHECK:-120}" "$sanitizer" --tool memcheck --report-api-errors no --error-exitcode 99 \
    --print-limit 20 "$tests" "[distill_loss],[optim],[runtime],[batch_norm],CUDA teacher mixture matches the CPU*"
  # racecheck: shared-memory hazards of the block reductions and the row cache.
  step racecheck "${MCD_T_RACECHECK:-90}" "$sanitizer" --tool racecheck --report-api-errors no --error-exitcode 99 \
    --print-limit 20 "$tests" "CUDA distill loss forward matches the CPU kernel" \
    "CUDA distill loss JVP matches the CPU kernel" "CUDA batch_norm matches the CPU*" \
    "CUDA teacher mixture matches the CPU*"
else
  echo "== compute-sanitizer not found: memcheck and racecheck skipped"
fi
# With the time left: the same MC-Distil comparison with TF32 on both sides (PyTorch's default
# for cuDNN convolutions), one schedule of ours.
step mcdistil_ours_tf32 "${MCD_T_MCD:-150}" bash -c 'first_line_to "$@"' _ \
  "$logs/mcdistil_ours_tf32.json" "$dist/bin/bench_mcdistil_step" --device cuda --tf32
step mcdistil_torch_tf32 "${MCD_T_MCD_TORCH:-120}" bash -c 'first_line_to "$@"' _ \
  "$logs/mcdistil_torch_tf32.json" "$py" benchmarks/torch_mcdistil_peer.py --device cuda --tf32 on
summarize
[ "$failures" -eq 0 ] || exit 1
