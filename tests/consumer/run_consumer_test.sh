#!/usr/bin/env bash
# Installs the built engine into a scratch prefix, then builds and runs tests/consumer both
# with find_package(mcdistil) and with add_subdirectory(<source tree>).
# Usage: run_consumer_test.sh <source dir> <build dir> <scratch dir>
set -euo pipefail
src=$1 build=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$src/tests/consumer" -B "$work/package" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/package-configure.log"
cmake --build "$work/package" > "$work/package-build.log"
"$work/package/consumer"
cmake -S "$src/tests/consumer" -B "$work/subdirectory" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DMCD_CONSUMER_MODE=subdirectory -DMCD_SOURCE_DIR="$src" > "$work/subdirectory-configure.log"
cmake --build "$work/subdirectory" --target consumer > "$work/subdirectory-build.log"
"$work/subdirectory/consumer"
rm -rf "$work"
