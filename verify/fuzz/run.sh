#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (ASan + UBSan) and runs each one
# for a bounded time: verify/fuzz/run.sh [seconds per harness, default 60].
#   fuzz_api  public API argument validation, ref and cpu (verify/fuzz/fuzz_api.c)
#   fuzz_npy  .npy reader (tools/npy.c), seeded from verify/fuzz/corpus_npy/
# Build and working corpora live in build/fuzz/ (the seed corpus is never
# modified). Exit status is nonzero if a harness finds a crash; the input is
# kept as build/fuzz/artifacts/crash-* (rerun: build/fuzz/fuzz_X FILE).
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${DITATTN_FUZZ_BUILD:-$root/build/fuzz}"
cc="${CC_FUZZ:-clang}"
mkdir -p "$out/artifacts" "$out/corpus_api" "$out/corpus_npy"
flags=(-std=c11 -g -O1 -DDITATTN_HAVE_CPU=1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -fno-omit-frame-pointer -I"$root/include" -I"$root" -I"$root/tools")
# The library: API layer, ref/ and the CPU backend (single-threaded, own GEMM).
lib=("$root"/backends/*.c "$root"/ref/*.c "$root"/backends/cpu/*.c)

echo "fuzz: building with $cc into $out" >&2
"$cc" "${flags[@]}" "$root/verify/fuzz/fuzz_api.c" "${lib[@]}" -lm -o "$out/fuzz_api"
"$cc" "${flags[@]}" "$root/verify/fuzz/fuzz_npy.c" "$root/tools/npy.c" "${lib[@]}" -lm \
  -o "$out/fuzz_npy"
cp -n "$root"/verify/fuzz/corpus_npy/* "$out/corpus_npy/" 2>/dev/null || true
cp -n "$root"/verify/fuzz/corpus_api/* "$out/corpus_api/" 2>/dev/null || true

status=0
run() { # name, corpus dir
  local name="$1" log="$out/$1.log"
  echo "fuzz: running $name for ${seconds}s" >&2
  if "$out/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -artifact_prefix="$out/artifacts/" -print_final_stats=1 "$2" >"$log" 2>&1; then
    local runs
    runs="$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')"
    echo "fuzz: $name: $runs inputs executed in ${seconds}s, no crash"
  else
    status=1
    echo "fuzz: $name FAILED (log $log):" >&2
    grep -E 'ERROR|SUMMARY|artifact|deadly|==[0-9]+==' "$log" | head -n 20 >&2 || tail -n 30 "$log" >&2
  fi
}
run fuzz_api "$out/corpus_api"
run fuzz_npy "$out/corpus_npy"
exit "$status"
