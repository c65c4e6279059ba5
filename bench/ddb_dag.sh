#!/bin/sh
# bench/ddb_dag.sh - what DynamoDB status costs a large run: the 2000-task layered DAG of
# dag_bench.sh (bench/gen_layered.py) run by dagy-agent with DAGY_STATUS_BACKEND=dynamodb against
# dynalite on loopback (DDB_SERVER=moto: against moto, which serves ~100 UpdateItem/s and so
# bounds any makespan), beside the same DAG with local status, in paired alternating runs
# (bench/paired.py: a burst of load on the shared machine hits both alike). Prints both
# makespans and their ratio (goal <= 1.3), both peak RSS (goal <= 16 MiB), writes (UpdateItem +
# PutItem requests) per task (goal <= 1.2; counted by the pass-through proxy of bench/ddb_moto.py
# on one checked run) and checks that every item ends right (all task items and the run item
# SUCCEEDED). Figures only: exit 0 unless something could not run, or the checked run ended
# wrong (--strict: also exit 1 when a goal is missed).
#
# Usage: bench/ddb_dag.sh [--strict]
# Environment: DAGY_AGENT (default build/dagy-agent), RUNS (5), LAYERS (20), WIDTH (100),
#              JOBS (2), DDB_SERVER (dynalite | moto), KEEP=1 keeps the work directory.
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "${1:-}" = --strict ] && STRICT=1
RUNS=${RUNS:-5}
LAYERS=${LAYERS:-20}
WIDTH=${WIDTH:-100}
JOBS=${JOBS:-2}
SERVER=${DDB_SERVER:-dynalite}
TASKS=$((LAYERS * WIDTH))

need_agent
python3 -c 'import boto3' 2>/dev/null || die "python3 with boto3 is needed"
case $SERVER in
moto) python3 -c 'import moto' 2>/dev/null || die "moto is needed (scripts/deps.sh --test)" ;;
dynalite)
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import awsenv
sys.exit(0 if awsenv.dynalite_cli() else 1)' "$ROOT/tests/integration" ||
        die "dynalite is not installed (scripts/deps.sh --test)"
    ;;
*) die "DDB_SERVER must be dynalite or moto, not $SERVER" ;;
esac
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) is needed for the RSS figure (apt-get install time)"
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

# The server + the counting proxy, stopped by pid on exit (the helper stops the server by pid).
python3 "$BENCH_DIR/ddb_moto.py" serve "$WORK" "$SERVER" 2>"$WORK/server.log" &
HELPER=$!
i=0
until [ -s "$WORK/endpoints" ]; do
    i=$((i + 1))
    kill -0 "$HELPER" 2>/dev/null || die "$SERVER did not start: $(tail -n 5 "$WORK/server.log")"
    [ $i -lt 600 ] || die "$SERVER did not start within 60 s"
    sleep 0.1
done
read -r SERVER_URL PROXY_URL SERVER_PID <"$WORK/endpoints"

# CPU seconds the server has used so far (it shares the machine's cores with the DAG's tasks).
server_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / hz }' \
        "/proc/$SERVER_PID/stat"
}

# No profile or config file may leak in; signatures are not checked by the server.
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
ddb_cmd="env DAGY_STATUS_BACKEND=dynamodb AWS_ENDPOINT_URL=$SERVER_URL $base"

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
check=$(python3 "$BENCH_DIR/ddb_moto.py" verify "$SERVER_URL" bench-checked "$TASKS") || items_ok=NO
failed_lines=$(grep -c '"status_write_failed"' "$WORK/ddb.log" || true)
# Where the time goes in the checked runs: the DAG (run_start to the run phase FINISHING, when
# the last task ended) and the final status flush (FINISHING to run_end, the last line: every
# write still queued must land before the agent exits).
phases() {
    python3 -c 'import datetime, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
ts = lambda l: datetime.datetime.strptime(l["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
start = [l for l in lines if l["event_type"] == "run_start"][0]
fin = [l for l in lines if l["event_type"] == "run_phase" and "-> FINISHING" in l["message"]][0]
end = [l for l in lines if l["event_type"] == "run_end"][0]
print("dag %.3f s, flush %.3f s" % (ts(fin) - ts(start), ts(end) - ts(fin)))' "$1"
}
local_phases=$(phases "$WORK/local.log")
ddb_phases=$(phases "$WORK/ddb.log")

# What the server sustains from a 16-thread boto3 client (on loopback it, not the agent, bounds
# the writes).
rate=$(python3 "$BENCH_DIR/ddb_moto.py" capacity "$SERVER_URL" 1000)

# Peak RSS, alternating too: the worst of RUNS runs each.
rss_local=0 rss_ddb=0
for _ in $(seq "$RUNS"); do
    rm -rf "$WORK/state" "$WORK/work"
    # shellcheck disable=SC2086 # a command line: split on purpose
    k=$(peak_rss_kib $local_cmd)
    [ "$k" -gt "$rss_local" ] && rss_local=$k
    rm -rf "$WORK/state" "$WORK/work"
    # shellcheck disable=SC2086
    k=$(peak_rss_kib $ddb_cmd)
    [ "$k" -gt "$rss_ddb" ] && rss_ddb=$k
done

# Makespans: paired alternating runs (local, DynamoDB, local, ...) after one warm-up round.
cpu0=$(server_cpu)
python3 "$BENCH_DIR/paired.py" --runs "$RUNS" --warmup 1 \
    local "rm -rf $WORK/state $WORK/work" "$local_cmd" \
    ddb "rm -rf $WORK/state $WORK/work" "$ddb_cmd" >"$WORK/paired.json" ||
    die "paired runs failed"
cpu1=$(server_cpu)
read -r local_s ddb_s local_cpu ddb_cpu ratio srv_cpu <<EOF
$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
l, r = d["local"], d["ddb"]
srv = (float(sys.argv[3]) - float(sys.argv[2])) / (int(sys.argv[4]) + 1)
print("%.3f %.3f %.3f %.3f %.3f %.3f" % (l["median"], r["median"], l["cpu_median"],
      r["cpu_median"], r["median"] / l["median"], srv))' "$WORK/paired.json" "$cpu0" "$cpu1" "$RUNS")
EOF
read -r total task_w run_w <<EOF
$(python3 -c 'import json, sys
c = json.loads(sys.argv[1])
print(c.get("op:UpdateItem", 0) + c.get("op:PutItem", 0), c.get("UpdateItem:" + sys.argv[2], 0),
      c.get("UpdateItem:" + sys.argv[3], 0))' \
    "$counts" "${DAGY_TASK_RUNS_TABLE:-DAGY_TASK_RUNS}" "${DAGY_RUNS_TABLE:-DAGY_RUNS}")
EOF
per_task=$(python3 -c 'import sys; print("%.3f" % (int(sys.argv[1]) / int(sys.argv[2])))' \
    "$total" "$TASKS")
mib() { python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1024))' "$1"; }
agent_rate=$(python3 -c 'import sys; print("%.0f" % (int(sys.argv[1]) / float(sys.argv[2])))' \
    "$total" "$ddb_s")

echo
echo "ddb_dag: $TASKS tasks ($LAYERS layers x $WIDTH, 2 upstreams each), -j $JOBS," \
    "$SERVER on loopback, median of $RUNS paired runs"
printf '  %-38s %10s %12s\n' "" "local" "DynamoDB"
printf '  %-38s %9.3fs %11.3fs\n' "makespan (wall)" "$local_s" "$ddb_s"
printf '  %-38s %9.3fs %11.3fs   (+ %s s of %s CPU per DynamoDB run)\n' \
    "agent + tasks CPU" "$local_cpu" "$ddb_cpu" "$srv_cpu" "$SERVER"
printf '  %-38s %6s MiB %8s MiB\n' "peak RSS (worst of $RUNS)" "$(mib "$rss_local")" \
    "$(mib "$rss_ddb")"
verdict "$ratio" 1.3
printf '  %-38s %10s     goal <= 1.3   %s\n' "makespan ratio DynamoDB/local" "$ratio" "$VERDICT"
verdict "$rss_ddb" 16384
printf '  %-38s %10s     goal <= 16    %s\n' "peak RSS with DynamoDB status (MiB)" \
    "$(mib "$rss_ddb")" "$VERDICT"
verdict "$per_task" 1.2
printf '  %-38s %10s     goal <= 1.2   %s\n' "writes per task (UpdateItem+PutItem)" \
    "$per_task" "$VERDICT"
printf '  %-38s %10s     (%s task-item + %s run-item; all requests: %s)\n' \
    "  writes in the checked run" "$total" "$task_w" "$run_w" "$counts"
printf '  %-38s local: %s; DynamoDB (via the proxy): %s\n' "checked runs" "$local_phases" \
    "$ddb_phases"
printf '  %-38s %10s/s   (a 16-thread boto3 client gets %s/s from the same %s)\n' \
    "write rate the agent got" "$agent_rate" "$rate" "$SERVER"
printf '  %-38s %10s     %s\n' "every item right (checked run)" "$items_ok" "$check"
printf '  %-38s %10s\n' "status_write_failed lines" "$failed_lines"
[ "$items_ok" = yes ] || exit 1
finish
