#!/bin/sh
# Strong-scaling benchmark of dist/ (dense and LLSA forward, CPU backend):
# builds build/distbench in Release (no GPU backends) and times groups of
# 1, 2, 4, ... ranks of one launch. Usage: dist/run_bench.sh [ranks] [out_dir]
set -e
P=${1:-4}
OUT_DIR=${2:-.}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cmake -S "$ROOT" -B "$ROOT/build/distbench" -DCMAKE_BUILD_TYPE=Release -DDITATTN_WITH_CUDA=OFF \
  -DDITATTN_WITH_HIP=OFF -DBUILD_TESTING=OFF >/dev/null
cmake --build "$ROOT/build/distbench" -j"$(nproc)" --target ditattn_cli >/dev/null
lscpu | grep -E '^Model name|^CPU\(s\)' || true
uptime
mpiexec --allow-run-as-root --oversubscribe -n "$P" "$ROOT/build/distbench/bin/ditattn" bench --dist \
  --json "$OUT_DIR/dist_bench.json" | tee "$OUT_DIR/dist_bench.txt"
