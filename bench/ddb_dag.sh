#!/bin/sh
# bench/ddb_dag.sh - what DynamoDB status costs a large run: the 2000-task layered DAG of
# dag_bench.sh (bench/gen_layered.py) run by dagy-agent with DAGY_STATUS_BACKEND=dynamodb against
# moto on loopback, against the same run with local status. Prints the makespan ratio (goal
# <= 1.1), UpdateItem requests per task (goal <= 2, counted by a pass-through proxy in
# bench/ddb_moto.py on one checked run) and checks that every item ends right (all task items
# and the run item SUCCEEDED). Figures only: exit 0 unless something could not run, or a
# checked run ended wrong (--strict: also exit 1 when a goal is missed).
#
# Usage: bench/ddb_dag.sh [--strict]
# Environment: DAGY_AGENT (default build/dagy-agent), RUNS (3), LAYERS (20), WIDTH (100),
#              JOBS (2), KEEP=1 keeps the work directory.
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "${1:-}" = --strict ] && STRICT=1
RUNS=${RUNS:-3}
LAYERS=${LAYERS:-20}
WIDTH=${WIDTH:-100}
JOBS=${JOBS:-2}
TASKS=$((LAYERS * WIDTH))

need_agent
python3 -c 'import moto, boto3' 2>/dev/null || die "python3 with moto and boto3 is needed"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dagy-ddb-bench.XXXXXX")
HELPER=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$HELPER" ]; then
        kill "$HELPER" 2>/dev/null || true
        wait "$HELPER" 2>/dev/null || true
    fi
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 "$BENCH_DIR/gen_layered.py" "$WORK/flow" --layers "$LAYERS" --width "$WIDTH" \
    --max-parallel "$JOBS" >&2

# moto + the counting proxy, stopped by pid on exit (the helper stops moto by its pid).
python3 "$BENCH_DIR/ddb_moto.py" serve "$WORK" 2>"$WORK/moto.log" &
HELPER=$!
i=0
until [ -s "$WORK/endpoints" ]; do
    i=$((i + 1))
    kill -0 "$HELPER" 2>/dev/null || die "moto did not start: $(tail -n 5 "$WORK/moto.log")"
    [ $i -lt 600 ] || die "moto did not start within 60 s"
    sleep 0.1
done
read -r MOTO_URL PROXY_URL <"$WORK/endpoints"

# No profile or config file may leak in; signatures are not checked by this moto.
for v in $(env | sed -n 's/^\(AWS_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=AKIDBENCH AWS_SECRET_ACCESS_KEY=bench-secret
AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
DAGY_WORK_DIR=$WORK/work
export AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_CONFIG_FILE \
    AWS_SHARED_CREDENTIALS_FILE AWS_EC2_METADATA_DISABLED DAGY_WORK_DIR
unset DAGY_RUN_ID DAGY_TRACES_BUCKET 2>/dev/null || true

# Same command for both; only the status backend (and endpoint) differ. No --run-id: each timed
# run gets a fresh UUID, so the DynamoDB runs never land on an earlier run's items.
base="$AGENT --flow $WORK/flow --max-parallel $JOBS --log-format json --state-dir $WORK/state"
local_cmd="env DAGY_STATUS_BACKEND=local $base"
ddb_cmd="env DAGY_STATUS_BACKEND=dynamodb AWS_ENDPOINT_URL=$MOTO_URL $base"

# Checked runs first: a failing run must not be timed as a fast one. The DynamoDB one goes
# through the counting proxy. DEBUG adds the run_phase lines that date the end of the flush.
rm -rf "$WORK/state" "$WORK/work"
DAGY_LOG_LEVEL=DEBUG $local_cmd >"$WORK/local.log" 2>&1 ||
    die "local run failed (exit $?): $(tail -n 3 "$WORK/local.log")"
python3 "$BENCH_DIR/ddb_moto.py" counts "$PROXY_URL" >/dev/null # reset
rm -rf "$WORK/work"
# shellcheck disable=SC2086 # $base is a command line: split on purpose
env DAGY_LOG_LEVEL=DEBUG DAGY_STATUS_BACKEND=dynamodb AWS_ENDPOINT_URL="$PROXY_URL" \
    $base --run-id bench-checked \
    >"$WORK/ddb.log" 2>&1 || die "DynamoDB run failed (exit $?): $(tail -n 3 "$WORK/ddb.log")"
counts=$(python3 "$BENCH_DIR/ddb_moto.py" counts "$PROXY_URL")
items_ok=yes
check=$(python3 "$BENCH_DIR/ddb_moto.py" verify "$MOTO_URL" bench-checked "$TASKS") || items_ok=NO
failed_lines=$(grep -c '"status_write_failed"' "$WORK/ddb.log" || true)
# Where the time goes in the checked runs: the DAG (run_start to run_end) and the tail after
# run_end (the final status flush: every write still queued must land before the agent exits).
phases() {
    python3 -c 'import datetime, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
ts = lambda l: datetime.datetime.strptime(l["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
start = [l for l in lines if l["event_type"] == "run_start"][0]
end = [l for l in lines if l["event_type"] == "run_end"][0]
last = max(ts(l) for l in lines)
print("dag %.3f s, flush %.3f s" % (ts(end) - ts(start), last - ts(end)))' "$1"
}
local_phases=$(phases "$WORK/local.log")
ddb_phases=$(phases "$WORK/ddb.log")

# What moto itself sustains (a Python server: on loopback it, not the agent, bounds the flush).
rate=$(python3 "$BENCH_DIR/ddb_moto.py" capacity "$MOTO_URL" 1000)

measure local "$RUNS" "rm -rf $WORK/state $WORK/work" "$local_cmd"
measure ddb "$RUNS" "rm -rf $WORK/state $WORK/work" "$ddb_cmd"
local_s=$(figure local median)
ddb_s=$(figure ddb median)
ratio=$(python3 -c 'import sys; print("%.3f" % (float(sys.argv[1]) / float(sys.argv[2])))' \
    "$ddb_s" "$local_s")
read -r total task_w run_w <<EOF
$(python3 -c 'import json, sys
c = json.loads(sys.argv[1])
print(c.get("op:UpdateItem", 0), c.get("UpdateItem:" + sys.argv[2], 0), c.get("UpdateItem:" + sys.argv[3], 0))' \
    "$counts" "${DAGY_TASK_RUNS_TABLE:-DAGY_TASK_RUNS}" "${DAGY_RUNS_TABLE:-DAGY_RUNS}")
EOF
per_task=$(python3 -c 'import sys; print("%.2f" % (int(sys.argv[1]) / int(sys.argv[2])))' "$total" "$TASKS")
task_per_task=$(python3 -c 'import sys; print("%.2f" % (int(sys.argv[1]) / int(sys.argv[2])))' "$task_w" "$TASKS")

echo
echo "ddb_dag: $TASKS tasks ($LAYERS layers x $WIDTH, 2 upstreams each), -j $JOBS, median of $RUNS runs"
printf '  %-34s %10.3f s\n' "local status" "$local_s"
printf '  %-34s %10.3f s\n' "DynamoDB status (moto, loopback)" "$ddb_s"
verdict "$ratio" 1.1
printf '  %-34s %10s     goal <= 1.1   %s\n' "makespan ratio ddb/local" "$ratio" "$VERDICT"
verdict "$per_task" 2
printf '  %-34s %10s     goal <= 2     %s\n' "UpdateItem requests per task" "$per_task" "$VERDICT"
printf '  %-34s %10s     (%s task-item + %s run-item writes; all requests: %s)\n' \
    "  task-item writes per task" "$task_per_task" "$task_w" "$run_w" "$counts"
printf '  %-34s local: %s; DynamoDB (via the proxy): %s\n' "checked runs" "$local_phases" \
    "$ddb_phases"
agent_rate=$(python3 -c 'import sys; print("%.0f" % (int(sys.argv[1]) / float(sys.argv[2])))' "$total" "$ddb_s")
printf '  %-34s %10s/s   (a 16-thread boto3 client gets %s/s from the same moto)\n' \
    "UpdateItem rate the agent got" "$agent_rate" "$rate"
printf '  %-34s %10s     %s\n' "every item right (checked run)" "$items_ok" "$check"
printf '  %-34s %10s\n' "status_write_failed lines" "$failed_lines"
[ "$items_ok" = yes ] || exit 1
finish
