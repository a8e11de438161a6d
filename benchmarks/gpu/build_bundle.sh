#!/usr/bin/env bash
# Builds, on a machine with nvcc but no GPU, everything the GPU check runs, into one folder
# that is copied to the GPU machine (DESIGN.md section 5): the GPU test binary and the CUDA
# benchmark for sm_90 (CUDA runtime linked statically), the shared libraries they need that
# the GPU machine lacks (it has PyTorch's NVIDIA libraries but no Debian -dev packages), the
# PyTorch peer script, and a record of what was built. benchmarks/gpu/check.sh runs it there.
# Usage: benchmarks/gpu/build_bundle.sh [OUT_DIR]   (default gpu-dist, ignored by git)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-gpu-dist}"
jobs="${MCD_BUILD_JOBS:-2}"

if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "build_bundle: nvcc not found (PATH or /usr/local/cuda/bin); cannot build the CUDA code" >&2
  exit 1
fi
targets=(test_cuda_kernels bench_fused_loss_cuda bench_mcdistil_step bench_conv_layout_cuda mcdistil_train)
nice -n 10 cmake --preset cuda >/dev/null
nice -n 10 cmake --build --preset cuda -j"$jobs" --target "${targets[@]}"

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp build/cuda/tests/test_cuda_kernels build/cuda/benchmarks/bench_fused_loss_cuda \
  build/cuda/benchmarks/bench_mcdistil_step build/cuda/benchmarks/bench_conv_layout_cuda \
  build/cuda/apps/mcdistil_train "$out/bin/"
cp benchmarks/torch_fused_loss_peer.py benchmarks/torch_mcdistil_peer.py benchmarks/torch_cpu_peer.py \
  benchmarks/gpu/summarize.py benchmarks/gpu/kernel_times.py "$out/"
# A Fashion-MNIST subset (6,000 + 1,000 images, 3 MB) for the app's end-to-end run on the GPU
# machine (app_smoke.sh), which has no dataset package.
fm=/usr/share/datasets/fashion-mnist
if [ -f "$fm/train-images-idx3-ubyte.gz" ]; then
  python3 benchmarks/gpu/make_data_subset.py "$fm" "$out/data"
else
  echo "build_bundle.sh: $fm is missing (apt-get install dataset-fashion-mnist); the GPU check's" \
    "app step will fail" >&2
fi

# Libraries every Linux machine has, and those PyTorch's NVIDIA wheels provide, stay out;
# anything else a binary needs (libfmt, libgomp, ...) is copied next to it.
system_re='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s)\.so'
provided_re='^(libcuda|libcudart|libcublas|libcublasLt|libcudnn|libnccl|libnvJitLink)'
missing=0
for bin in "$out"/bin/*; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    [[ "$name" =~ $system_re || "$name" =~ $provided_re ]] && continue
    if [ "$path" = "not" ] || [ ! -e "$path" ]; then
      echo "build_bundle: $bin needs $name, which is not found here" >&2
      missing=1
      continue
    fi
    cp -L "$path" "$out/lib/$name"
  done < <(ldd "$bin")
done
[ "$missing" -eq 0 ] || exit 1

{
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "nvcc: $( (command -v nvcc >/dev/null && nvcc --version || /usr/local/cuda/bin/nvcc --version) | tail -1)"
  echo "architectures: $(grep -E '^CMAKE_CUDA_ARCHITECTURES' build/cuda/CMakeCache.txt | cut -d= -f2)"
  for bin in "$out"/bin/*; do
    echo "--- ldd $(basename "$bin")"
    ldd "$bin"
  done
} >"$out/BUILD_INFO.txt"

echo "build_bundle: $out ($(du -sh "$out" | cut -f1)):"
find "$out" -type f | sort
