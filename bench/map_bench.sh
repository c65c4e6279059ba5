#!/bin/sh
# bench/map_bench.sh - the cost of dynamic fan-out: a map of N children running `true` (src
# writes [0..N-1], the map runs once per element, join reads the map's result) against a static
# DAG of the same N `true` tasks (src, N tasks each depending on src, join depending on all N),
# both with the same max_parallel, run by the same agent binary, paired and alternating
# (bench/paired.py) so load on a shared machine hits both alike. Goal: map/static median wall and
# CPU (user + sys, tasks included) <= 1.10.
#
# Usage: bench/map_bench.sh [--strict]     (--strict: exit 1 when a goal is missed)
# Environment: DAGY_AGENT (default build/dagy-agent), RUNS (5), N (1000), JOBS (2),
#              KEEP=1 keeps the work directory.
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "${1:-}" = --strict ] && STRICT=1
RUNS=${RUNS:-5}
N=${N:-1000}
JOBS=${JOBS:-2}

need_agent
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dagy-map-bench.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# The two flows. src writes the same array in both, join reads its inputs in both.
python3 - "$WORK" "$N" "$JOBS" <<'EOF'
import json, os, sys
work, n, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
src = {"name": "src", "command": ["sh", "-c", "seq -s, 0 %d | sed 's/.*/[&]/' > \"$DAGY_TASK_OUTPUT\"" % (n - 1)]}
join = ["sh", "-c", "wc -c < \"$DAGY_TASK_INPUTS\""]
flows = {
    "map": [src, {"name": "m", "command": ["true"], "upstream": ["src"], "map": {"over": "src"}},
            {"name": "join", "command": join, "upstream": ["m"]}],
    "static": [src] + [{"name": "t%04d" % k, "command": ["true"], "upstream": ["src"]}
                       for k in range(n)]
              + [{"name": "join", "command": join, "upstream": ["t%04d" % k for k in range(n)]}],
}
for name, tasks in flows.items():
    os.makedirs(os.path.join(work, name))
    with open(os.path.join(work, name, "flow_spec.json"), "w") as f:
        json.dump({"spec_version": 1, "name": "bench_" + name, "max_parallel": jobs,
                   "tasks": tasks}, f)
EOF

# Local status only; run directories in the work directory, removed with it. A fresh state
# directory per run, moved away untimed (deleting thousands of files right before a run makes
# ext4 slow to allocate the next run's inodes: that would measure the disk, not the agent).
DAGY_STATUS_BACKEND=local
DAGY_WORK_DIR=$WORK/work
DAGY_KEEP_RUNS=0
export DAGY_STATUS_BACKEND DAGY_WORK_DIR DAGY_KEEP_RUNS
mkdir -p "$WORK/trash"
opts="--max-parallel $JOBS --log-format json"
map_cmd="$AGENT --flow $WORK/map $opts --state-dir $WORK/mstate"
static_cmd="$AGENT --flow $WORK/static $opts --state-dir $WORK/sstate"
fresh() { echo "if [ -d $WORK/$1 ]; then mv $WORK/$1 $WORK/trash/\$\$; fi; rm -rf $WORK/work"; }

# One checked run of each first: a failing run must not be timed as a fast one, and both must
# do the same work (N children / tasks that ran).
check_run() { # NAME CMD...
    _name=$1
    shift
    "$@" >"$WORK/$_name.log" 2>&1 || die "$_name run failed (exit $?); log: $(tail -n 3 "$WORK/$_name.log")"
    echo "$_name: $(grep -c '"event_type":"task_end"' "$WORK/$_name.log" || true) task_end lines" >&2
}
# shellcheck disable=SC2086 # the command lines are split into their words on purpose
check_run map $map_cmd
# shellcheck disable=SC2086
check_run static $static_cmd

python3 "$BENCH_DIR/paired.py" --runs "$RUNS" --warmup 1 \
    map "$(fresh mstate)" "$map_cmd" \
    static "$(fresh sstate)" "$static_cmd" \
    >"$WORK/paired.json" || die "timing failed"
fig() {
    python3 -c 'import json, sys; print("%.6f" % json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])' \
        "$WORK/paired.json" "$1" "$2"
}
ratio() {
    python3 -c 'import sys; print("%.3f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"
}
wall=$(ratio "$(fig map median)" "$(fig static median)")
cpu=$(ratio "$(fig map cpu_median)" "$(fig static cpu_median)")

echo
echo "map_bench: $N children of \`true\` vs a static DAG of $N \`true\` tasks, -j $JOBS, median of $RUNS paired runs"
for n in map static; do
    printf '  %-28s wall %8.3f s (min %.3f, max %.3f)   cpu %8.3f s\n' "$n" "$(fig $n median)" \
        "$(fig $n min)" "$(fig $n max)" "$(fig $n cpu_median)"
done
verdict "$wall" 1.10
printf '  %-28s %10s    goal <= 1.10   %s\n' "wall map/static" "$wall" "$VERDICT"
verdict "$cpu" 1.10
printf '  %-28s %10s    goal <= 1.10   %s\n' "cpu map/static" "$cpu" "$VERDICT"
finish
