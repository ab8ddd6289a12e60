#!/usr/bin/env bash
# Builds and runs every test: format check, -Werror build + ctest, the
# ASan+UBSan build + ctest, and bounded fuzzing. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh

step() { echo; echo "=== $* ===" >&2; }

step "format check (clang-format)"
git ls-files -z '*.c' '*.h' '*.cu' '*.cuh' 2>/dev/null | xargs -0 -r clang-format --dry-run --Werror
echo "format: ok" >&2

step "warnings-as-errors build + tests"
cmake --preset ci >/dev/null
cmake --build --preset ci
ctest --preset ci

step "AddressSanitizer + UBSan build + tests"
cmake --preset asan >/dev/null
cmake --build --preset asan
ctest --preset asan

if [ -x verify/fuzz/run.sh ] || [ -f verify/fuzz/run.sh ]; then
  step "fuzzing (bounded)"
  bash verify/fuzz/run.sh "${DITATTN_FUZZ_SECONDS:-60}"
fi

step "summary"
ctest --preset ci 2>&1 | tail -n 3
