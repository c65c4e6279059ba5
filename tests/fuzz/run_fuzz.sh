#!/bin/sh
# run_fuzz.sh - runs one libFuzzer harness for ctest (label fuzz) and scripts/fuzz.sh:
#   1. replays every kept crashing input in SRC/crashes/NAME/ (a known defect fails the test
#      until it is fixed, after the fuzzing below still ran);
#   2. fuzzes for $DAGY_FUZZ_SECONDS (default 30) from the seeds in SRC/corpus/NAME/, writing
#      new inputs to WORK/corpus/NAME/ and crashing ones to WORK/crashes/NAME/;
#   3. prints "fuzz NAME: N executions in S s, K crashes" and exits non-zero on any crash.
# Usage: run_fuzz.sh HARNESS NAME SRC_DIR WORK_DIR [libFuzzer options...]
set -u
harness=$1 name=$2 src=$3 work=$4
shift 4
secs=${DAGY_FUZZ_SECONDS:-30}
corpus="$work/corpus/$name"
crashes="$work/crashes/$name"
log="$work/$name.log"
mkdir -p "$corpus" "$crashes"
# Leaks are findings; keep the reports readable.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

known_bad=0
for input in $(find "$src/crashes/$name" -type f 2>/dev/null | sort); do
    if ! "$harness" "$@" "$input" >"$log.replay" 2>&1; then
        grep -E "ERROR|SUMMARY|#[0-9]+ .* in .*/(tests|proto|fetch|agent|launcher|sandbox|scheduler)/" \
            "$log.replay" | head -n 12
        echo "fuzz $name: kept crashing input ${input#"$src"/} still crashes"
        known_bad=$((known_bad + 1))
    fi
done

before=$(find "$crashes" -type f | wc -l)
"$harness" "$@" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$crashes/" "$corpus" "$src/corpus/$name" >"$log" 2>&1
rc=$?
after=$(find "$crashes" -type f | wc -l)
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
if [ "$rc" -ne 0 ] || [ "$after" -ne "$before" ]; then
    tail -n 60 "$log"
    echo "fuzz $name: ${execs:-?} executions, $((after - before)) crashes (rc $rc); inputs in $crashes/"
    exit 1
fi
echo "fuzz $name: ${execs:-?} executions in ${took:-$secs} s, 0 new crashes, corpus $(find "$corpus" -type f | wc -l) inputs"
[ "$known_bad" -eq 0 ]
