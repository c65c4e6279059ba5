#!/bin/sh
# test.sh - the whole test suite: installs what is missing, then builds and runs every test
# twice, once normally (-Werror) and once under AddressSanitizer + UBSan.
# Usage: scripts/test.sh [ctest arguments, e.g. -R unit]
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh --test

jobs=$(nproc 2>/dev/null || echo 2)
for variant in release asan; do
    dir="build-test-$variant"
    flags="-DDAGY_WERROR=ON"
    [ "$variant" = asan ] && flags="$flags -DDAGY_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"
    echo "== $variant build ($dir)"
    cmake -S . -B "$dir" -G Ninja $flags >/dev/null
    cmake --build "$dir" -j "$jobs"
    echo "== $variant tests"
    # detect_leaks: the agent frees what it allocates; halt_on_error keeps failures loud.
    ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@"
done
