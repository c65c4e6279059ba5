#!/bin/sh
# fuzz.sh - long fuzzing runs: builds the libFuzzer harnesses (clang, -DDAGY_FUZZ=ON, in
# build-fuzz/) and runs each for SECONDS (default 600), one after the other, keeping the grown
# corpus in build-fuzz/fuzz/corpus/ between runs. New crashing inputs go to
# build-fuzz/fuzz/crashes/HARNESS/; move one to tests/fuzz/crashes/HARNESS/ (never to the seed
# corpus) when it is reported, so every later run replays it.
# Usage: scripts/fuzz.sh [SECONDS] [ctest -R pattern, e.g. unpack]
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh --fuzz
secs=${1:-600}
dir=build-fuzz
cmake -S . -B "$dir" -G Ninja -DCMAKE_C_COMPILER=clang -DDAGY_FUZZ=ON -DDAGY_WERROR=ON >/dev/null
cmake --build "$dir" -j 2
log="$dir/fuzz-run.log"
rc=0
DAGY_FUZZ_SECONDS=$secs ctest --test-dir "$dir" -L fuzz -R "${2:-.}" -V >"$log" 2>&1 || rc=$?
grep -E '^[0-9]+: fuzz |tests passed|tests failed|\(Failed\)|Total Test time' "$log"
exit "$rc"
