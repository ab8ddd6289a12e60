#!/usr/bin/env bash
# bench/device.sh — one call on the GPU machine (CUDA 13, no CMocka, no hipcc):
#   1. builds the CUDA backend (Release, sm_90a + sm_90 + PTX) and ditattn_gpu_check,
#   2. checks every CUDA operation against ref/ (bench/gpu_check.c: random shapes,
#      partial blocks, strided layouts, f32/bf16/f16, poisoned outputs),
#   3. times dense forward (ditattn vs PyTorch SDPA: bench/sdpa_time.py) and LLSA
#      forward at the issue's sizes (B=2, H=4, D=64, b=16, L=2, K=8, N = 128², 256², 512²),
#      LLSA on both attention kernels (tensor-core default, DITATTN_GPU_ATTEND=simt)
#      and each LLSA stage alone (pool, select per level, attend) with GB/s, TFLOP/s,
#   4. prints a table,
#   5. checks RoPeSLR forward vs ref/ and times it at N = 102400 vs dense and SDPA
#      (bench/gpu_check_ropeslr.c).
# Logs and raw numbers go to $OUT (the device tool's folder) or build/device-out.
# Usage: bench/device.sh [--sides 128,256,512] [--seed S] [--skip-sdpa]
# Exit status: 0 checks passed, 1 a check failed, 2 build/setup problem.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/build/device-out}
BUILD=${DITATTN_DEVICE_BUILD:-$ROOT/build/device}
SIDES=128,256,512
SEED=${DITATTN_TEST_SEED:-$(date +%s)}
SDPA=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sides) SIDES=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --skip-sdpa) SDPA=0; shift ;;
    *) echo "usage: $0 [--sides 128,256,512] [--seed S] [--skip-sdpa]" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"

log() { printf '[device.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*"; exit 2; }
show_tail() { [ -f "$1" ] && tail -n "${2:-40}" "$1" | sed 's/^/    | /'; }

# ---------------------------------------------------------------- machine
log "repo $ROOT, build $BUILD, logs $OUT, seed $SEED"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
    --format=csv,noheader | tee "$OUT/gpu.txt" || log "nvidia-smi query failed (continuing)"
else
  log "nvidia-smi not found (continuing; the checker reports whether a device is usable)"
fi
NVCC=${CUDACXX:-}
if [ -z "$NVCC" ]; then
  NVCC=$(command -v nvcc || true)
  [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
fi
[ -n "$NVCC" ] || die "nvcc not found (PATH, CUDACXX, /usr/local/cuda/bin)"
"$NVCC" --version | tail -n 2 | tee "$OUT/nvcc.txt"
command -v cmake > /dev/null || die "cmake not found"

# ---------------------------------------------------------------- build
log "configuring (Release, CUDA on, HIP/MPI/tests off)"
if ! cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DDITATTN_WITH_CUDA=ON -DDITATTN_WITH_HIP=OFF \
  -DDITATTN_WITH_MPI=OFF -DBUILD_TESTING=OFF > "$OUT/cmake.log" 2>&1; then
  show_tail "$OUT/cmake.log" 60
  die "cmake configure failed (log: $OUT/cmake.log)"
fi
grep -q "CUDA backend with nvcc" "$OUT/cmake.log" || {
  show_tail "$OUT/cmake.log" 60
  die "the CUDA backend was switched off at configure time (log: $OUT/cmake.log)"
}
log "building ditattn_gpu_check ($(nproc) jobs)"
if ! cmake --build "$BUILD" -j "$(nproc)" --target ditattn_gpu_check ditattn_gpu_check_ropeslr > "$OUT/build.log" 2>&1; then
  show_tail "$OUT/build.log" 80
  die "build failed (log: $OUT/build.log)"
fi
CHECK=$BUILD/bin/ditattn_gpu_check
[ -x "$CHECK" ] || die "built, but $CHECK is missing"

# SASS of the tensor-core kernels: HMMA count per kernel, local memory use
# (LDL/STL) — a check the build machine (no cuobjdump) could not make.
CUOBJDUMP=$(dirname "$NVCC")/cuobjdump
for obj in llsa ropeslr dense; do
  o=$BUILD/backends/cuda/CMakeFiles/ditattn_cuda_kernels.dir/__/gpu/$obj.cu.o
  [ -x "$CUOBJDUMP" ] && [ -f "$o" ] || continue
  "$CUOBJDUMP" -sass "$o" 2> /dev/null | awk -v obj=$obj '
    /Function :/ { f = $3 } /\.target sm_/ { arch = $0 }
    f ~ /mma_kernel/ && /HMMA/ { h[f]++ } f ~ /mma_kernel/ && /(LDL|STL)/ { l[f]++ }
    END { for (k in h) printf "%s %s HMMA=%d LDL/STL=%d\n", obj, k, h[k], l[k] + 0 }' || true
done > "$OUT/sass.txt"
[ -s "$OUT/sass.txt" ] && log "tensor-core kernels in SASS: $(wc -l < "$OUT/sass.txt") (HMMA/LDL/STL counts in $OUT/sass.txt)"

# ---------------------------------------------------------------- correctness
log "checking every CUDA operation against ref/ (seed $SEED)"
set +e
"$CHECK" --backend cuda --seed "$SEED" > "$OUT/check.txt" 2>&1
CHECK_RC=$?
set -e
grep -v '^ok ' "$OUT/check.txt" || true
case $CHECK_RC in
  0) log "checks passed: $(grep -c '^ok ' "$OUT/check.txt") cases" ;;
  1) log "CHECKS FAILED: $(grep -c '^FAIL' "$OUT/check.txt") failing lines (all in $OUT/check.txt)" ;;
  *) show_tail "$OUT/check.txt" 20; die "the checker could not use the CUDA backend (rc $CHECK_RC)" ;;
esac

# ---------------------------------------------------------------- timing
log "timing ditattn dense and LLSA forward (sides $SIDES)"
set +e
"$CHECK" --backend cuda --seed "$SEED" --time-only --sides "$SIDES" > "$OUT/time.txt" 2>&1
TIME_RC=$?
set -e
[ $TIME_RC -eq 0 ] || { show_tail "$OUT/time.txt" 20; log "timing run failed (rc $TIME_RC)"; }

: > "$OUT/sdpa.txt"
if [ $SDPA -eq 1 ]; then
  log "timing PyTorch SDPA (bf16; f32 up to N = 65536)"
  set +e
  python3 "$ROOT/bench/sdpa_time.py" sides "$SIDES" > "$OUT/sdpa.txt" 2> "$OUT/sdpa.err"
  SDPA_RC=$?
  set -e
  [ $SDPA_RC -eq 0 ] || { show_tail "$OUT/sdpa.err" 20; log "SDPA timing failed (rc $SDPA_RC)"; }
fi

# ---------------------------------------------------------------- table
echo
echo "== ditattn CUDA: checks $( [ $CHECK_RC -eq 0 ] && echo passed || echo FAILED ) (seed $SEED)"
echo "== forward time, ms (median); B=2 H=4 D=64; LLSA b=16 L=2 K=8,8; TFLOP/s counts spec §6 flops"
awk '
  FNR == 1 { file++ }
  $1 ~ /^[0-9]+$/ && NF >= 5 && $4 ~ /^[0-9.]+$/ {
    key = $1 SUBSEP $3; Ns[$1] = 1; ms[$2, key] = $4; tf[$2, key] = $5
  }
  END {
    printf "%-8s %-5s %10s %8s %10s %8s %10s %8s %10s %8s %9s\n", "N", "dtype", "dense", "TF/s",
           "sdpa", "TF/s", "llsa", "TF/s", "llsa_simt", "TF/s", "sdpa/llsa"
    n = 0; for (N in Ns) list[++n] = N + 0
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (list[j] < list[i]) { t = list[i]; list[i] = list[j]; list[j] = t }
    split("bf16 f32", dts, " ")
    for (i = 1; i <= n; i++) for (d = 1; d <= 2; d++) {
      key = list[i] SUBSEP dts[d]
      if (!(("dense", key) in ms) && !(("llsa", key) in ms) && !(("sdpa", key) in ms)) continue
      dn = (("dense", key) in ms) ? ms["dense", key] : "-"; dnt = (("dense", key) in tf) ? tf["dense", key] : "-"
      sd = (("sdpa", key) in ms) ? ms["sdpa", key] : "-";  sdt = (("sdpa", key) in tf) ? tf["sdpa", key] : "-"
      ll = (("llsa", key) in ms) ? ms["llsa", key] : "-";  llt = (("llsa", key) in tf) ? tf["llsa", key] : "-"
      ls = (("llsa_simt", key) in ms) ? ms["llsa_simt", key] : "-"
      lst = (("llsa_simt", key) in tf) ? tf["llsa_simt", key] : "-"
      ratio = (sd != "-" && ll != "-" && ll > 0) ? sprintf("%.1fx", sd / ll) : "-"
      printf "%-8s %-5s %10s %8s %10s %8s %10s %8s %10s %8s %9s\n", list[i], dts[d], dn, dnt, sd, sdt, ll, llt, ls, lst, ratio
    }
  }' "$OUT/time.txt" "$OUT/sdpa.txt"

echo "== llsa: default kernels (bf16: tensor-core attention); llsa_simt: DITATTN_GPU_ATTEND=simt"
echo "== LLSA stages, each timed alone (median); GB/s = minimum bytes / time vs 3.0 TB/s copy,"
echo "   TFLOP/s vs 798 bf16 GEMM (select: fp64 score flops); attend[mma] vs attend[simt]"
grep '^stage' "$OUT/time.txt" | sed 's/^stage //' || true

# ---------------------------------------------------------------- RoPeSLR (bench/gpu_check_ropeslr.c)
SLR_CHECK=$BUILD/bin/ditattn_gpu_check_ropeslr
log "RoPeSLR forward: checks against ref/, then timing at N = 102400 (16x80x80), b=64 r=64 rho=0.1"
set +e
"$SLR_CHECK" --backend cuda --seed "$SEED" > "$OUT/ropeslr_check.txt" 2>&1
SLR_RC=$?
"$SLR_CHECK" --backend cuda --seed "$SEED" --time-only > "$OUT/ropeslr_time.txt" 2>&1
if [ $SDPA -eq 1 ]; then
  python3 "$ROOT/bench/sdpa_time.py" ropeslr > "$OUT/ropeslr_sdpa.txt" 2>> "$OUT/sdpa.err"
fi
set -e
grep -v '^ok ' "$OUT/ropeslr_check.txt" || true
echo "== RoPeSLR forward: checks $( [ $SLR_RC -eq 0 ] && echo passed || echo FAILED ); ms (median), B=H=1; slr_simt: DITATTN_GPU_ATTEND=simt"
cat "$OUT/ropeslr_time.txt" "$OUT/ropeslr_sdpa.txt" | grep -E '^(N |[0-9])' || true
[ $CHECK_RC -eq 0 ] && [ $SLR_RC -eq 0 ] || exit 1
