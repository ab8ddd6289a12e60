#!/bin/sh
# CPU backend benchmark, one run (~10 minutes on a 2-core machine):
#   bench/run_cpu.sh [BUILD_DIR]      (default: build/cpurel, built here in Release)
# Prints every table, writes bench/results/cpu_scaling.{csv,svg} and bench/out/cpu_run.txt.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build/cpurel}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDITATTN_WITH_CUDA=OFF \
  -DDITATTN_WITH_HIP=OFF -DDITATTN_WITH_MPI=OFF -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j2 --target bench_cpu >/dev/null
BIN=$(find "$BUILD" -name bench_cpu -type f -perm -u+x | head -n 1)
{
  echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm)"
  echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
  echo "# load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# command: bench/run_cpu.sh ($BIN all --csv $OUT/cpu_scaling.csv)"
  "$BIN" all --csv "$OUT/cpu_scaling.csv"
  echo
  echo "## (5) peak memory at N = 262144, D = 64, one head (separate processes; target < 1 GiB)"
  "$BIN" memory llsa 262144
  "$BIN" memory dense 262144
  echo "# load after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$OUT/cpu_run.txt"
python3 "$ROOT/bench/plot_scaling.py" "$OUT/cpu_scaling.csv" "$OUT/cpu_scaling.svg"
echo "plot: $OUT/cpu_scaling.svg"
