#!/bin/sh
# Strong-scaling benchmark of dist/ (dense and LLSA forward, CPU backend, one
# thread per rank): builds build/distbench in Release (no GPU backends) and
# times groups of 1, 2, 4, ... ranks of one launch.
# Usage: dist/run_bench.sh [ranks] [out_dir] [extra bench options...]
set -e
P=${1:-4}
OUT_DIR=${2:-.}
shift 2 2>/dev/null || shift $#
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cmake -S "$ROOT" -B "$ROOT/build/distbench" -DCMAKE_BUILD_TYPE=Release -DDITATTN_WITH_CUDA=OFF \
  -DDITATTN_WITH_HIP=OFF -DBUILD_TESTING=OFF >/dev/null
cmake --build "$ROOT/build/distbench" -j"$(nproc)" --target ditattn_cli >/dev/null 2>&1
lscpu | grep -E '^Model name|^CPU\(s\)' || true
uptime
BIN="$ROOT/build/distbench/bin/ditattn"
for input in random smooth; do
  mpiexec --allow-run-as-root --oversubscribe -n "$P" "$BIN" bench --dist --input "$input" \
    --json "$OUT_DIR/dist_bench_$input.json" "$@" | tee "$OUT_DIR/dist_bench_$input.txt"
done
