#!/bin/sh
# bench/dag_bench.sh - scheduling overhead of dagy-agent against ninja on the same 2000-task
# layered DAG (20 layers x 100 tasks of `sh -c true`, each depending on 2 tasks of the layer
# before), both limited to 2 tasks at a time. Goals: agent/ninja median time <= 1.0, agent peak
# RSS <= 16 MiB.
#
# Usage: bench/dag_bench.sh [--strict]     (--strict: exit 1 when a goal is missed)
# Environment: DAGY_AGENT (default build/dagy-agent), RUNS (5), LAYERS (20), WIDTH (100),
#              JOBS (2), KEEP=1 keeps the work directory.
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "${1:-}" = --strict ] && STRICT=1
RUNS=${RUNS:-5}
LAYERS=${LAYERS:-20}
WIDTH=${WIDTH:-100}
JOBS=${JOBS:-2}

need_agent
command -v ninja >/dev/null 2>&1 || die "ninja not found (apt-get install ninja-build)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dagy-bench.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

python3 "$BENCH_DIR/gen_layered.py" "$WORK/flow" --layers "$LAYERS" --width "$WIDTH" \
    --max-parallel "$JOBS" >&2
# Local status only: a stray DAGY_STATUS_BACKEND=dynamodb must not send this to AWS.
# Run directories (results, inputs) go to the work dir, removed with it.
DAGY_STATUS_BACKEND=local
DAGY_WORK_DIR=$WORK/work
export DAGY_STATUS_BACKEND DAGY_WORK_DIR

agent_cmd="$AGENT --flow $WORK/flow --max-parallel $JOBS --log-format json --state-dir $WORK/state"
ninja_cmd="ninja -C $WORK/flow -j $JOBS"

# One checked run of each first: a failing run must not be timed as a fast one.
rm -rf "$WORK/state" "$WORK/work"
$agent_cmd >"$WORK/agent.log" 2>&1 || die "agent run failed (exit $?); log: $(tail -n 5 "$WORK/agent.log")"
$ninja_cmd >/dev/null || die "ninja run failed"

# No cleanup between agent runs: each run has its own run id (its own files), and deleting
# thousands of files right before a run makes ext4 slow to allocate the next run's inodes
# (recently_deleted() in the inode allocator), which would measure the disk, not the agent.
measure agent "$RUNS" "true" "$agent_cmd"
measure ninja "$RUNS" "rm -f $WORK/flow/.ninja_log $WORK/flow/.ninja_deps" "$ninja_cmd"
agent_s=$(figure agent median)
ninja_s=$(figure ninja median)
# CPU time (user + system, the runner and its tasks) is steadier than wall time on a shared
# machine; shown for context, the goal is on wall time.
agent_cpu=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))' "$(figure agent user)" "$(figure agent system)")
ninja_cpu=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))' "$(figure ninja user)" "$(figure ninja system)")
rm -rf "$WORK/state" "$WORK/work"
rss_kib=$(peak_rss_kib "$AGENT" --flow "$WORK/flow" --max-parallel "$JOBS" --log-format json \
    --state-dir "$WORK/state")

ratio=$(python3 -c 'import sys; print("%.3f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$agent_s" "$ninja_s")
rss_mib=$(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1024))' "$rss_kib")

echo
echo "dag_bench: $((LAYERS * WIDTH)) tasks ($LAYERS layers x $WIDTH, 2 upstreams each), -j $JOBS, median of $RUNS runs"
printf '  %-28s %10.3f s   (cpu %.3f s)\n' "dagy-agent" "$agent_s" "$agent_cpu"
printf '  %-28s %10.3f s   (cpu %.3f s)\n' "ninja" "$ninja_s" "$ninja_cpu"
verdict "$ratio" 1.0
printf '  %-28s %10s    goal <= 1.0   %s\n' "ratio agent/ninja" "$ratio" "$VERDICT"
verdict "$rss_mib" 16
printf '  %-28s %10s MiB goal <= 16   %s\n' "agent peak RSS" "$rss_mib" "$VERDICT"
finish
