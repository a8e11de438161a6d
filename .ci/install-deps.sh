#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian bookworm machine (run as root).
# Idempotent: packages already present are left alone.
set -euo pipefail
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
packages=(
  build-essential cmake ninja-build pkg-config
  libeigen3-dev catch2 libfmt-dev nlohmann-json3-dev libcli11-dev libtomlplusplus-dev
  zlib1g-dev libomp-dev libjpeg-dev libpng-dev
  dataset-fashion-mnist python3 python3-matplotlib
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Optional: PyTorch on CPU for the peer benchmarks and the golden-fixture scripts.
if [ "${MCD_WITH_TORCH:-0}" = "1" ]; then
  dpkg-query -W -f='${Status}' python3-torch 2>/dev/null | grep -q "install ok installed" ||
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch
fi
