#!/usr/bin/env bash
# Builds the release configuration (every backend whose toolchain is found).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
echo "built: build/release/bin/ditattn" >&2
