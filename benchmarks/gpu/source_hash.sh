#!/usr/bin/env bash
# Prints one hash of the sources the GPU bundle's binaries are built from (the C++/CUDA sources,
# headers and CMake files of the tree), so that check.sh can tell a bundle built from another
# state of the tree than the one it runs in. Needs no git: the GPU machine's copy has none.
# Usage: benchmarks/gpu/source_hash.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
dirs=()
for d in CMakeLists.txt CMakePresets.json cmake engine kernels models data distill apps benchmarks \
  tests; do
  [ -e "$d" ] && dirs+=("$d")
done
find "${dirs[@]}" -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \
  -o -name 'CMakeLists.txt' -o -name 'CMakePresets.json' -o -name '*.cmake' -o -name '*.in' \) |
  LC_ALL=C sort | xargs sha1sum | sha1sum | cut -d' ' -f1
