#!/bin/sh
# bench/dag_bench.sh - scheduling overhead of dagy-agent against ninja on the same 2000-task
# layered DAG (20 layers x 100 tasks, each depending on 2 tasks of the layer before; one shell
# per task on both sides), both limited to 2 tasks at a time. Goals (agent on the zipped flow,
# fresh state directory): agent/ninja median wall <= 1.0, CPU (user + sys, tasks included)
# <= 1.2x ninja's, agent peak RSS <= 16 MiB.
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

# The flow is run twice: as the directory, and as users ship it, zipped (unpacked by the agent
# in every run) with a fresh state directory per run (moved away untimed, not deleted: deleting
# thousands of files right before a run makes ext4 slow to allocate the next run's inodes,
# recently_deleted() in the inode allocator, which would measure the disk, not the agent).
(cd "$WORK/flow" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z: z.write("flow_spec.json")' "$WORK/flow.zip")
mkdir -p "$WORK/trash"
agent_opts="--max-parallel $JOBS --log-format json"
agent_cmd="$AGENT --flow $WORK/flow $agent_opts --state-dir $WORK/state"
zip_cmd="$AGENT --flow $WORK/flow.zip $agent_opts --state-dir $WORK/zstate"
ninja_cmd="ninja -C $WORK/flow -j $JOBS"
fresh="if [ -d $WORK/zstate ]; then mv $WORK/zstate $WORK/trash/\$\$; fi"

# One checked run of each first: a failing run must not be timed as a fast one.
rm -rf "$WORK/state" "$WORK/work"
$agent_cmd >"$WORK/agent.log" 2>&1 || die "agent run failed (exit $?); log: $(tail -n 5 "$WORK/agent.log")"
$zip_cmd >"$WORK/agent.log" 2>&1 || die "agent run on the zip failed (exit $?); log: $(tail -n 5 "$WORK/agent.log")"
$ninja_cmd >/dev/null || die "ninja run failed"

# Paired, alternating runs (agent, agent on the zip, ninja, agent, ...): load on a shared
# machine hits the three alike. CPU is user + system of the command and all its tasks.
python3 "$BENCH_DIR/paired.py" --runs "$RUNS" --warmup 1 \
    agent true "$agent_cmd" \
    agent_zip "$fresh" "$zip_cmd" \
    ninja "rm -f $WORK/flow/.ninja_log $WORK/flow/.ninja_deps" "$ninja_cmd" \
    >"$WORK/paired.json" || die "timing failed"
fig() {
    python3 -c 'import json, sys; print("%.6f" % json.load(open(sys.argv[1]))[sys.argv[2]][sys.argv[3]])' \
        "$WORK/paired.json" "$1" "$2"
}
rm -rf "$WORK/zstate"
# shellcheck disable=SC2086 # the command line is split into its words on purpose
rss_kib=$(peak_rss_kib $zip_cmd)

tasks=$((LAYERS * WIDTH))
ratio=$(python3 -c 'import sys; print("%.3f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$(fig agent_zip median)" "$(fig ninja median)")
cpu_ratio=$(python3 -c 'import sys; print("%.3f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$(fig agent_zip cpu_median)" "$(fig ninja cpu_median)")
rss_mib=$(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1024))' "$rss_kib")

echo
echo "dag_bench: $tasks tasks ($LAYERS layers x $WIDTH, 2 upstreams each, one shell each), -j $JOBS, median of $RUNS paired runs"
for n in agent agent_zip ninja; do
    printf '  %-28s wall %8.3f s   cpu %8.3f s   cpu/task %6.1f us\n' "$n" "$(fig $n median)" \
        "$(fig $n cpu_median)" "$(python3 -c 'import sys; print(float(sys.argv[1]) * 1e6 / int(sys.argv[2]))' "$(fig $n cpu_median)" "$tasks")"
done
verdict "$ratio" 1.0
printf '  %-28s %10s    goal <= 1.0   %s (wall: noise on a loaded machine)\n' "wall agent_zip/ninja" "$ratio" "$VERDICT"
verdict "$cpu_ratio" 1.2
printf '  %-28s %10s    goal <= 1.2   %s\n' "cpu agent_zip/ninja" "$cpu_ratio" "$VERDICT"
verdict "$rss_mib" 16
printf '  %-28s %10s MiB goal <= 16   %s\n' "agent peak RSS (zip)" "$rss_mib" "$VERDICT"
finish
