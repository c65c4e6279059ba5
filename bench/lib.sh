# bench/lib.sh - shared helpers of the bench scripts (sourced, POSIX sh): locating the binaries,
# timing a command (hyperfine when installed, bench/timecmd.py otherwise), peak RSS, verdicts.
# shellcheck shell=sh

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
AGENT=${DAGY_AGENT:-$ROOT/build/dagy-agent}
STRICT=0
MISSED=0

die() {
    echo "$(basename "$0"): $*" >&2
    exit 2
}

# Checks that the agent binary exists and prints which one is measured.
need_agent() {
    [ -x "$AGENT" ] || die "agent binary not found at $AGENT (build it, or set DAGY_AGENT)"
    echo "agent: $AGENT ($("$AGENT" --version 2>/dev/null | head -n 1 || echo 'version unknown'))"
}

# measure NAME RUNS PREPARE CMD: times CMD over RUNS runs (one untimed warm-up run first; PREPARE
# runs untimed before each run; CMD's stdout is discarded) into $WORK/NAME.json; read the figures
# with `figure NAME median|user|system`. The timing tool's own report goes to stderr.
measure() {
    _json=$WORK/$1.json _runs=$2 _prep=$3 _cmd=$4
    if command -v hyperfine >/dev/null 2>&1; then
        # -N: no intermediate shell, so nothing is subtracted for shell start-up.
        hyperfine -N --style basic --runs "$_runs" --warmup 1 --prepare "$_prep" \
            --export-json "$_json" "$_cmd" >&2 || die "hyperfine failed on: $_cmd"
    else
        python3 "$BENCH_DIR/timecmd.py" --runs "$_runs" --warmup 1 --prepare "$_prep" -- "$_cmd" \
            >"$_json" || die "timing failed on: $_cmd"
    fi
}

# figure NAME KEY: a figure in seconds from measure's result: the median wall-clock time, or the
# mean user / system CPU time per run (the command and all its children).
figure() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
d = d["results"][0] if "results" in d else d
print("%.6f" % d[sys.argv[2]])' "$WORK/$1.json" "$2"
}

# peak_rss_kib CMD...: runs CMD once (stdout discarded) and prints the largest resident set size
# among it and its descendants, in KiB (the kernel keeps the maximum, not a sum). GNU time is
# used because the high-water mark survives exec: measured from a fork of python, the child
# would inherit python's own ~13 MiB; time's fork starts at ~1 MiB, below anything measured.
peak_rss_kib() {
    [ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed for the RSS figure (apt-get install time)"
    /usr/bin/time -f %M -o "$WORK/rss" "$@" >/dev/null || die "command failed: $*"
    tail -n 1 "$WORK/rss"
}

# verdict VALUE LIMIT: sets VERDICT to PASS when VALUE <= LIMIT, else MISS (and counts the miss
# for --strict). Not meant for $(...): a subshell would lose the count.
# shellcheck disable=SC2034 # VERDICT is read by the scripts that source this file
verdict() {
    if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$1" "$2"; then
        VERDICT=PASS
    else
        MISSED=$((MISSED + 1))
        VERDICT=MISS
    fi
}

# Exit status of a bench script: 0, or 1 under --strict when a goal was missed.
finish() {
    if [ "$STRICT" = 1 ] && [ "$MISSED" -gt 0 ]; then
        echo "$MISSED goal(s) missed" >&2
        exit 1
    fi
    exit 0
}
