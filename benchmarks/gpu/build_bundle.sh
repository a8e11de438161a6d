#!/usr/bin/env bash
# Builds, on a machine with nvcc but no GPU, everything the GPU check runs, into one folder
# that is copied to the GPU machine with the tree (DESIGN.md section 5): the GPU test binary,
# the app and the CUDA benchmarks for sm_90 (CUDA runtime linked statically, stripped), the
# shared libraries they need that the GPU machine lacks (it has PyTorch's NVIDIA libraries but
# no Debian -dev packages; the binaries find them through their RUNPATH, $ORIGIN/../lib, so
# nothing else on that machine sees them), a Fashion-MNIST subset, a record of what was built
# and the hash of the sources (source_hash.sh; check.sh warns when the tree it runs in differs).
# The scripts (peers, summary) run from the tree. benchmarks/gpu/check.sh runs it all there.
# Usage: benchmarks/gpu/build_bundle.sh [OUT_DIR]   (default gpu-dist, ignored by git)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-gpu-dist}"
jobs="${MCD_BUILD_JOBS:-2}"

if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "build_bundle: nvcc not found (PATH or /usr/local/cuda/bin); cannot build the CUDA code" >&2
  exit 1
fi
# A failed build must not leave an older bundle behind to be carried by mistake.
rm -rf "$out"
targets=(test_cuda_kernels bench_fused_loss_cuda bench_mcdistil_step bench_conv_layout_cuda mcdistil_train)
# The hash of the sources as the build starts (an edit during the build would make a later hash
# name sources the binaries were not built from).
hash="$(bash benchmarks/gpu/source_hash.sh)"
nice -n 10 cmake --preset cuda -DCMAKE_BUILD_RPATH='$ORIGIN/../lib' >/dev/null
nice -n 10 cmake --build --preset cuda -j"$jobs" --target "${targets[@]}"

mkdir -p "$out/bin" "$out/lib"
cp build/cuda/tests/test_cuda_kernels build/cuda/benchmarks/bench_fused_loss_cuda \
  build/cuda/benchmarks/bench_mcdistil_step build/cuda/benchmarks/bench_conv_layout_cuda \
  build/cuda/apps/mcdistil_train "$out/bin/"
strip --strip-unneeded "$out"/bin/*
echo "$hash" >"$out/SOURCE_HASH"
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
    # Found in the bundle already (the RUNPATH points there once another binary brought it).
    [ "$(readlink -f "$path")" = "$(readlink -f "$out/lib/$name" 2>/dev/null)" ] && continue
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
