#!/usr/bin/env bash
# dist on GPU contexts, on the GPU machine, in ONE call (run from the repo root):
#   bash dist/device/run.sh
# 1. configures a Release build with CUDA + MPI on, HIP off, BUILD_TESTING=OFF
#    (the GPU machine has no CMocka: this also proves dist builds without tests),
#    and builds ditattn_dist_gpu_check and the ditattn CLI;
# 2. runs the check (device-memory dist dense, LLSA and RoPeSLR vs the
#    single-process op on the GPU and on the CPU, random seeded cases) with
#    P = 1, 2, 4 (ranks may share a GPU; at P = 4 also as two pretend hosts)
#    and P = the GPU count when above 4 (one rank per GPU), each rank on its
#    node-local rank modulo the device count;
# 3. times `ditattn bench --dist --backend cuda --op dense` at N = 131072
#    (B = 1, H = 4, D = 64 and 128, bf16 and f32) with groups of 1, 2, 4, ...
#    ranks up to the GPU count, then --op llsa and --op ropeslr (bf16) up to
#    DITATTN_BENCH_RANKS ranks (default the GPU count) at each N of
#    DITATTN_BENCH_SPARSE_NS (default 131072; e.g. "131072 262144");
# 4. times the per-rank compute of the LLSA/RoPeSLR GPU route on one GPU
#    (ditattn_dist_gpu_rows: rank r of P = 1..8's rows; DITATTN_RUN_ROWS=0 skips),
#    with the gather's overlapped k/v copies at an emulated link of
#    DITATTN_RUN_LINK_GBS GB/s (default 450, NVLink 4 per direction; 0: copies
#    from this GPU's own memory instead);
# 5. prints a short table last. Logs go under $OUT (or build/gpu-dist/out).
# Exit status 0 only if every check and every timed run passed.
set -euo pipefail

export NCCL_NVLS_ENABLE=0
# Containers often forbid the cross-memory-attach single copy Open MPI's
# shared-memory transport tries first; plain copies always work.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# Set for the bench runs below (every rank's time split); the checks run without.
export DITATTN_BENCH_STATS=0

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${DITATTN_RUN_BUILD_DIR:-$ROOT/build/gpu-dist}
OUT=${OUT:-$BUILD/out}
mkdir -p "$OUT"
LOG=$OUT/run.log
CHECK_CASES=${DITATTN_CHECK_CASES:-24}
SEED=${DITATTN_TEST_SEED:-$(date +%s)}
N=${DITATTN_BENCH_N:-131072}
LINK_GBS=${DITATTN_RUN_LINK_GBS:-450}
HEADS=${DITATTN_BENCH_HEADS:-4}
# Self-test of this script without a GPU: DITATTN_RUN_BACKEND=cpu runs the same
# steps on CPU contexts through the device path's test hook (f32 only).
BACKEND=${DITATTN_RUN_BACKEND:-cuda}
DTYPES="bf16 f32"
if [ "$BACKEND" != cuda ]; then
  export DITATTN_DIST_DEVICE_PATH=1
  DTYPES=f32
fi

say() { echo "[run.sh $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
die() {
  say "FAILED: $*"
  exit 1
}
say "repo $ROOT, build $BUILD, logs $OUT, seed $SEED"

# ------------------------------------------------------------------ tools
for tool in cmake mpicc mpirun; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH"
done
NVCC=${CUDACXX:-}
[ -n "$NVCC" ] || NVCC=$(command -v nvcc || true)
[ -n "$NVCC" ] || [ ! -x /usr/local/cuda/bin/nvcc ] || NVCC=/usr/local/cuda/bin/nvcc
[ -n "$NVCC" ] || die "nvcc not found (set CUDACXX or put nvcc on PATH)"
NGPU=0
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L >"$OUT/nvidia-smi.txt" 2>&1 || true
  NGPU=$(grep -c '^GPU ' "$OUT/nvidia-smi.txt" || true)
fi
[ "$NGPU" -ge 1 ] 2>/dev/null || die "no GPU listed by nvidia-smi -L (see $OUT/nvidia-smi.txt)"
NPROC=$(nproc 2>/dev/null || echo 4)
say "nvcc $NVCC; $NGPU GPU(s); $NPROC CPU cores; $(mpirun --version 2>&1 | head -n 1)"

# ------------------------------------------------------------------ build
# sm_90a only (H100/H200): a third of the default gencode's compile time.
say "configure (log: $OUT/configure.log)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DDITATTN_WITH_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" -DDITATTN_WITH_HIP=OFF \
  -DDITATTN_WITH_MPI=ON -DDITATTN_CUDA_GENCODE="arch=compute_90a,code=sm_90a" \
  >"$OUT/configure.log" 2>&1 || { tail -n 30 "$OUT/configure.log" >&2; die "cmake configure"; }
grep -q "CUDA=ON" "$OUT/configure.log" || die "CUDA backend not enabled (see $OUT/configure.log)"
grep -q "MPI=ON" "$OUT/configure.log" || die "MPI not found by cmake (see $OUT/configure.log)"
say "build (log: $OUT/build.log)"
cmake --build "$BUILD" -j "$NPROC" --target ditattn_dist_gpu_check ditattn_dist_gpu_rows ditattn_cli \
  >"$OUT/build.log" 2>&1 || { grep -E "error|Error" -A3 "$OUT/build.log" | head -n 40 >&2; die "build"; }
CHECK=$BUILD/bin/ditattn_dist_gpu_check
ROWS=$BUILD/bin/ditattn_dist_gpu_rows
CLI=$BUILD/bin/ditattn
for bin in "$CHECK" "$ROWS" "$CLI"; do [ -x "$bin" ] || die "$bin was not built"; done

# ------------------------------------------------------------------ runs
# mpi P SECONDS cmd...: P ranks, each with its share of the CPU (OpenMP for
# the CPU reference), killed after SECONDS so a hang cannot eat the budget.
mpi() {
  local p=$1 limit=$2
  shift 2
  local threads=$((NPROC / p))
  [ "$threads" -ge 1 ] || threads=1
  OMP_NUM_THREADS=$threads timeout "$limit" mpirun --allow-run-as-root --oversubscribe \
    --bind-to none -x OMP_NUM_THREADS -x NCCL_NVLS_ENABLE \
    -x OMPI_MCA_btl_vader_single_copy_mechanism -x DITATTN_TEST_SEED -x DITATTN_BENCH_STATS \
    -n "$p" "$@"
}

# P = 4 also where fewer GPUs (ranks share them): its second half runs the
# hierarchical gather with the ranks as two pretend hosts of two.
check_ps=(1 2 4)
[ "$NGPU" -le 4 ] || check_ps+=("$NGPU")
failures=()
summary=()
export DITATTN_TEST_SEED=$SEED
for p in "${check_ps[@]}"; do
  log=$OUT/check_P$p.log
  say "check P=$p ($CHECK_CASES cases per transfer mode; log: $log)"
  if mpi "$p" 240 "$CHECK" --backend "$BACKEND" --cases "$CHECK_CASES" >"$log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  npass=$(grep -c '^PASS' "$log" || true)
  nfail=$(grep -c '^FAIL' "$log" || true)
  aware=$(grep -m1 'CUDA-aware MPI' "$log" | sed 's/^gpu_check: //' || true)
  summary+=("check P=$p: $npass passed, $nfail failed, exit $rc; $aware")
  if [ "$rc" -ne 0 ] || [ "$nfail" -ne 0 ] || [ "$npass" -eq 0 ]; then
    failures+=("check P=$p (exit $rc, $nfail FAIL lines; $log)")
    grep -E '^FAIL|rank [0-9]+:' "$log" | head -n 20 >&2 || tail -n 20 "$log" >&2
  fi
done

# Per-rank compute of the LLSA/RoPeSLR GPU route, on one GPU: rank r of P's
# forward over its rows, for P = 1, 2, 4, 8 (ditattn_dist_gpu_rows), so the
# compute side of scaling is measured even where only one GPU is lent.
rows_lines=()
if [ "$BACKEND" = cuda ] && [ "${DITATTN_RUN_ROWS:-1}" = 1 ]; then
  for d in 64 128; do
    log=$OUT/rows_D$d.log
    say "rows: per-rank compute at N=$N H=$HEADS D=$d bf16 (log: $log)"
    if ! timeout 300 "$ROWS" --n "$N" --heads "$HEADS" --d "$d" --dtype bf16 \
      --link-gbs "$LINK_GBS" >"$log" 2>&1; then
      failures+=("rows D=$d ($log)")
      tail -n 5 "$log" >&2
    fi
    while IFS= read -r row; do rows_lines+=("$row"); done < <(grep '^rows ' "$log" || true)
  done
fi

bench_rows=()
stats_rows=()
# bench_op OP DTYPE D RANKS REPS: one `ditattn bench --dist` launch on RANKS
# ranks (groups of 1, 2, 4, ...), its rows added to the table.
# BENCH_N (default N): the sequence length.
bench_op() {
  local op=$1 dtype=$2 d=$3 ranks=$4 reps=$5 rc n=${BENCH_N:-$N}
  local tag=${op}_${dtype}_D$d
  [ "$n" = "$N" ] || tag=${tag}_N$n
  local log=$OUT/bench_$tag.log
  say "bench $op N=$n H=$HEADS D=$d $dtype, groups up to P=$ranks (log: $log)"
  local dtype_arg=(--dtype "$dtype")
  [ "$BACKEND" = cuda ] || dtype_arg=()
  # Every rank's compute / comm-wait / other split of its last call (stderr).
  export DITATTN_BENCH_STATS=1
  if mpi "$ranks" 150 "$CLI" bench --dist --backend "$BACKEND" --op "$op" --n "$n" \
    --heads "$HEADS" --d "$d" "${dtype_arg[@]}" --reps "$reps" \
    --json "$OUT/bench_$tag.json" >"$log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  if [ "$rc" -ne 0 ] || grep -q FAILED "$log"; then
    failures+=("bench $op $dtype D=$d N=$n (exit $rc; $log)")
    tail -n 15 "$log" >&2
  fi
  while IFS= read -r row; do
    bench_rows+=("$(printf '%-5s D=%-4s N=%-7s %s' "$dtype" "$d" "$n" "$row")")
  done < <(grep -E "^$op[a-z/]* +[0-9]" "$log" || true)
  local xfer
  while IFS= read -r xfer; do
    bench_rows+=("$(printf '%-5s D=%-4s N=%-7s   (%s)' "$dtype" "$d" "$n" "$xfer")")
  done < <(grep 'slices crossed' "$log" | sed 's/^bench --dist: //' || true)
  # The split of each rank at the largest group.
  while IFS= read -r xfer; do
    stats_rows+=("$(printf '%-5s D=%-4s N=%-7s %s' "$dtype" "$d" "$n" "$xfer")")
  done < <(grep -E "P=$ranks rank [0-9]+: wall" "$log" | sed 's/^bench --dist: //' || true)
}

# DITATTN_RUN_BENCH_OPS: which ops to time (default all three). Dense on the
# GPU count; the fp32 (SIMT) path is ~10x slower: one timing.
BENCH_OPS=${DITATTN_RUN_BENCH_OPS:-dense llsa ropeslr}
wants() { case " $BENCH_OPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for dtype in $DTYPES; do
  for d in 128 64; do
    reps=3
    [ "$dtype" = bf16 ] || reps=1
    ! wants dense || bench_op dense "$dtype" "$d" "$NGPU" "$reps"
  done
done
# LLSA and RoPeSLR (device route: q/k/v gathered, local rows computed), 16-bit
# only (tensor-core attention). DITATTN_BENCH_RANKS ranks (default: the GPU
# count; more than that share GPUs, which measures the route's overhead,
# not scaling).
RANKS=${DITATTN_BENCH_RANKS:-$NGPU}
SPARSE_DTYPES=bf16
[ "$BACKEND" = cuda ] || SPARSE_DTYPES=f32
# DITATTN_BENCH_SPARSE_NS: the sequence lengths for these (default N; the
# issue asks for 128K+, e.g. "131072 262144").
for BENCH_N in ${DITATTN_BENCH_SPARSE_NS:-$N}; do
  for dtype in $SPARSE_DTYPES; do
    for d in 64 128; do
      for op in llsa ropeslr; do
        ! wants "$op" || bench_op "$op" "$dtype" "$d" "$RANKS" 3
      done
    done
  done
done
unset BENCH_N

# ------------------------------------------------------------------ table
{
  echo
  echo "=== dist on GPU contexts: backend $BACKEND, $NGPU GPU(s), seed $SEED ==="
  for s in "${summary[@]}"; do echo "$s"; done
  echo "bench: N as shown (dense: $N), B=1, H=$HEADS, best of 3 (dense f32: 1); wall = slowest rank;" \
    "efficiency = T1/(P*TP); groups of 1, 2, 4, ... ranks up to the GPU count"
  echo "dtype D      N         op           P       wall s  efficiency   comm wait   MB sent/rank"
  for r in "${bench_rows[@]}"; do echo "$r" | cut -c1-95; done
  if [ ${#stats_rows[@]} -gt 0 ]; then
    echo "per-rank split at the largest P (DITATTN_BENCH_STATS=1; the last call of the group):"
    for r in "${stats_rows[@]}"; do echo "$r"; done
  fi
  if [ ${#rows_lines[@]} -gt 0 ]; then
    echo "per-rank compute on one GPU (ditattn_dist_gpu_rows; compute eff = T1/(P*slowest)):"
    for r in "${rows_lines[@]}"; do echo "$r"; done
  fi
  if [ ${#failures[@]} -eq 0 ]; then
    echo "RESULT: all checks passed"
  else
    echo "RESULT: ${#failures[@]} failure(s):"
    for f in "${failures[@]}"; do echo "  $f"; done
  fi
} | tee "$OUT/summary.txt"
[ ${#failures[@]} -eq 0 ]
