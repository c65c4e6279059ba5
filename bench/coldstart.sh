#!/bin/sh
# bench/coldstart.sh - end-to-end cold start of dagy-agent on a one-task flow (`true`): parse,
# plan, spawn, record local status, exit; compared with the start-up of a Python AWS worker
# (`python3 -c "import boto3"`). Goal: agent median / boto3-import median <= 0.05.
#
# Usage: bench/coldstart.sh [--strict]     (--strict: exit 1 when the goal is missed)
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

agent_cmd="$AGENT --flow $WORK/flow --log-format json --state-dir $WORK/state"
rm -rf "$WORK/state" "$WORK/work"
$agent_cmd >"$WORK/agent.log" 2>&1 || die "agent run failed (exit $?); log: $(tail -n 5 "$WORK/agent.log")"

measure agent "$RUNS" "rm -rf $WORK/state $WORK/work" "$agent_cmd"
measure boto3 "$RUNS" "true" "$PYTHON -c 'import boto3'"
agent_s=$(figure agent median)
boto_s=$(figure boto3 median)
ratio=$(python3 -c 'import sys; print("%.4f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$agent_s" "$boto_s")

echo
echo "coldstart: one-task flow end to end vs python3 -c 'import boto3', median of $RUNS runs"
printf '  %-30s %9.2f ms\n' "dagy-agent --flow (1 task)" "$(python3 -c "print($agent_s * 1000)")"
printf '  %-30s %9.2f ms\n' "python3 -c 'import boto3'" "$(python3 -c "print($boto_s * 1000)")"
verdict "$ratio" 0.05
printf '  %-30s %9s    goal <= 0.05   %s\n' "ratio" "$ratio" "$VERDICT"
finish
