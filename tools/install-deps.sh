#!/usr/bin/env bash
# Installs the Debian packages ditattn builds and tests with, when missing.
# Run by both README commands and by CI; a no-op when everything is present.
set -euo pipefail

packages=(
  cmake pkg-config gcc g++ make       # build
  libcmocka-dev                       # unit tests
  libopenblas-dev                     # CPU backend GEMMs
  libopenmpi-dev openmpi-bin          # dist/ (MPI)
  libzip-dev                          # RoPeSLR weights (.npz)
  python3-numpy                       # CLI tests and the independent NumPy oracle
  clang clang-format libclang-rt-14-dev # fuzzers (libFuzzer) and the format check
  hipcc libamdhip64-dev               # HIP backend (compiled for gfx90a/gfx940)
)
# Optional groups may be skipped: DITATTN_SKIP_HIP=1 for a quicker set-up.
if [ "${DITATTN_SKIP_HIP:-0}" = 1 ]; then
  packages=("${packages[@]/hipcc/}")
  packages=("${packages[@]/libamdhip64-dev/}")
fi

missing=()
for p in "${packages[@]}"; do
  [ -n "$p" ] || continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all Debian packages present" >&2
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) for apt-get" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
