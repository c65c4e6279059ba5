#!/bin/sh
# test.sh - the whole test suite: installs what is missing, then builds and runs every test in
# three builds:
#   release (-Werror):        unit, integration, fault, soak (DAGY_SOAK_FLOWS, 40), valgrind
#   asan (ASan + UBSan):      unit, integration, fault
#   fuzz (clang, libFuzzer):  fuzz (DAGY_FUZZ_SECONDS per harness, 30)
# Every build runs even when an earlier one failed; the output ends with each build's ctest
# summary and test.sh exits non-zero if any test failed.
# Usage: scripts/test.sh [ctest arguments, e.g. -R unit]
# Environment: DAGY_TEST_BUILDS (default "release asan fuzz"), DAGY_FUZZ_SECONDS,
#              DAGY_SOAK_FLOWS, DAGY_FAULT_SEED (replay the fault/soak randomness).
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh --test

jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -gt 2 ] || jobs=2
failed=""
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT

for variant in ${DAGY_TEST_BUILDS:-release asan fuzz}; do
    dir="build-test-$variant"
    case $variant in
    release)
        flags="-DDAGY_WERROR=ON"
        labels='^(unit|integration|fault|soak|valgrind)$' ;;
    asan)
        flags="-DDAGY_WERROR=ON -DDAGY_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"
        labels='^(unit|integration|fault)$' ;;
    fuzz)
        flags="-DDAGY_WERROR=ON -DDAGY_FUZZ=ON -DCMAKE_C_COMPILER=clang"
        labels='^fuzz$' ;;
    *)
        echo "test.sh: unknown build $variant" >&2
        exit 2 ;;
    esac
    echo "== $variant build ($dir)"
    # shellcheck disable=SC2086  # flags are separate words
    cmake -S . -B "$dir" -G Ninja $flags >/dev/null
    cmake --build "$dir" -j "$jobs"
    echo "== $variant tests (labels $labels)"
    start=$(date +%s)
    log="$dir/test-run.log"
    rc=0
    # detect_leaks: the agent frees what it allocates; halt_on_error keeps failures loud.
    ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        ctest --test-dir "$dir" --output-on-failure -j "$jobs" -L "$labels" "$@" >"$log" 2>&1 ||
        rc=$?
    cat "$log"
    {
        echo "== $variant: $(($(date +%s) - start)) s"
        sed -n '/tests passed/,$p' "$log"
    } >>"$summary"
    [ "$rc" -eq 0 ] || failed="$failed $variant"
done

echo
[ -z "$failed" ] || echo "test.sh: tests failed in:$failed" >&2
echo "==== summary"
cat "$summary"
[ -z "$failed" ]
