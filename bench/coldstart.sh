#!/bin/sh
# bench/coldstart.sh - end-to-end cold start of dagy-agent on a one-task flow (`true`): parse,
# plan, spawn, record local status, exit; compared with the start-up of a Python AWS worker
# (`python3 -c "import boto3"`) in the same run. Goals (issue 12 part 4): agent median <= 5 ms,
# and agent / boto3-import <= 0.05.
#
# The state and work directories are fresh for every run, on TMPDIR (the last run's are moved
# away untimed, not deleted: see below, and bench/dag_bench.sh); a second agent line repeats the runs on a tmpfs (/dev/shm) when there is one, because
# the run creates about 15 inodes (the state directory's items, the run's work directory) and
# their cost depends on the file system: on an ext4 without a journal, ext4 skips every inode
# freed in the last seconds when it allocates one (recently_deleted), ~0.3 ms an inode on a
# machine whose tests churn files, which is the difference between the two lines.
#
# Usage: bench/coldstart.sh [--strict]     (--strict: exit 1 when a goal is missed)
# Environment: DAGY_AGENT (default build/dagy-agent), RUNS (20), PYTHON (python3).
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "${1:-}" = --strict ] && STRICT=1
RUNS=${RUNS:-20}
PYTHON=${PYTHON:-python3}

need_agent
"$PYTHON" -c "import boto3" 2>/dev/null || die "$PYTHON cannot import boto3 (pip install boto3)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dagy-coldstart.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/flow"
cat >"$WORK/flow/flow_spec.json" <<'JSON'
{"spec_version": 1, "name": "coldstart", "version": "1.0.0",
 "tasks": [{"name": "noop", "command": ["true"]}]}
JSON
# Run directories (results, inputs) go to the work dir, removed with it.
DAGY_STATUS_BACKEND=local
DAGY_WORK_DIR=$WORK/work
export DAGY_STATUS_BACKEND DAGY_WORK_DIR

# agent_on DIR: the agent command with its state directory under DIR (its DAGY_WORK_DIR, DIR/work,
# goes in the environment, not through env(1), whose exec would be timed too).
agent_on() {
    echo "$AGENT --flow $WORK/flow --log-format json --state-dir $1/state"
}
# The file system type of DIR ("ext4", "tmpfs").
fstype() {
    df -PT "$1" 2>/dev/null | awk 'NR == 2 { print $2 }'
}

cmd=$(agent_on "$WORK") && DAGY_WORK_DIR=$WORK/work
$cmd >"$WORK/agent.log" 2>&1 || die "agent run failed (exit $?); log: $(tail -n 5 "$WORK/agent.log")"
rm -rf "$WORK/state" "$WORK/work"

# fresh DIR: the untimed preparation of a run: DIR's state and work directories moved to DIR/trash.
fresh() {
    echo "mkdir -p $1/trash && for d in $1/state $1/work; do if [ -e \$d ]; then mv \$d $1/trash/\$\$.\${d##*/}; fi; done"
}
measure agent "$RUNS" "$(fresh "$WORK")" "$cmd"
SHM=
if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(fstype /dev/shm)" = tmpfs ]; then
    SHM=$(mktemp -d /dev/shm/dagy-coldstart.XXXXXX)
    [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK" "$SHM"' EXIT
    cmd=$(agent_on "$SHM") && DAGY_WORK_DIR=$SHM/work
    measure agent_tmpfs "$RUNS" "$(fresh "$SHM")" "$cmd"
fi
measure boto3 "$RUNS" "true" "$PYTHON -c 'import boto3'"
agent_s=$(figure agent median)
boto_s=$(figure boto3 median)
ratio=$(python3 -c 'import sys; print("%.4f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$agent_s" "$boto_s")
ms() {
    python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) * 1000))" "$1"
}
# cpu NAME: "cpu X ms", the mean user + system time of a run (the command and its children): on
# a busy machine the steadier figure.
cpu() {
    echo "cpu $(python3 -c "import sys; print('%.2f' % ((float(sys.argv[1]) + float(sys.argv[2])) * 1000))" "$(figure "$1" user)" "$(figure "$1" system)") ms"
}

echo
echo "coldstart: one-task flow end to end vs python3 -c 'import boto3', median of $RUNS runs"
verdict "$(ms "$agent_s")" 5
printf '  %-44s %9s ms   goal <= 5 ms   %s   (%s)\n' "dagy-agent --flow (1 task), on $(fstype "$WORK")" "$(ms "$agent_s")" "$VERDICT" "$(cpu agent)"
if [ -n "$SHM" ]; then
    shm_s=$(figure agent_tmpfs median)
    verdict "$(ms "$shm_s")" 5
    printf '  %-44s %9s ms   goal <= 5 ms   %s   (%s)\n' "dagy-agent --flow (1 task), on tmpfs" "$(ms "$shm_s")" "$VERDICT" "$(cpu agent_tmpfs)"
fi
printf '  %-44s %9s ms                         (%s)\n' "python3 -c 'import boto3'" "$(ms "$boto_s")" "$(cpu boto3)"
verdict "$ratio" 0.05
printf '  %-44s %9s      goal <= 0.05   %s\n' "ratio (first line / boto3)" "$ratio" "$VERDICT"
finish
