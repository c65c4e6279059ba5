#!/bin/sh
# bench/ecs_poll.sh - what following ECS children costs (issue 15, second benchmark): a parent
# dagy-agent in container mode on moto (signatures enforced) whose map of 100 children runs each
# child as its own ECS task; nobody plays the children, so they stay RUNNING for a window of 60 s
# while the parent polls every 5 s. Counts, through the tests' recording proxy, the DescribeTasks
# calls and ARNs per call, and the item reads of the fast path; then SIGTERMs the parent and
# checks that it StopTask'ed every child and recorded each CANCELLED. Goal: DescribeTasks calls
# per poll <= ceil(children / 100). The peer, a naive poller making one DescribeTasks per child
# per poll (Airflow's EcsRunTaskOperator sensors), is computed from the same polls, not run.
# Figures only: exit 0 unless something could not run or the run went wrong (exit 2; --strict:
# also exit 1 when the goal is missed).
#
# Usage: bench/ecs_poll.sh [--strict]
# Environment: DAGY_AGENT (default build/dagy-agent; dagy-launch next to it), CHILDREN (100),
#              WINDOW (60 s), POLL (5 s: DAGY_ECS_POLL_SECONDS), DAGY_ECS_RUNTASK_BURST
#              (default max(100, CHILDREN): all launched at once).
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "${1:-}" = --strict ] && STRICT=1
CHILDREN=${CHILDREN:-100}
WINDOW=${WINDOW:-60}
POLL=${POLL:-5}
need_agent
python3 -c 'import moto, boto3' 2>/dev/null || die "python3 with moto and boto3 is needed"

DAGY_AGENT=$AGENT
export DAGY_AGENT
rc=0
out=$(python3 "$BENCH_DIR/ecs_poll.py" --children "$CHILDREN" --window "$WINDOW" --poll "$POLL") ||
    rc=$?
out=$(printf '%s\n' "$out" | tail -n 1)
case $out in "{"*) ;; *) die "the benchmark could not run" ;; esac
fig() { python3 -c 'import json, sys
d = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    d = d[k]
print(d if not isinstance(d, float) else "%.3f" % d)' "$out" "$1"; }

echo
echo "ECS children followed by one parent: map of $(fig children) on ECS (moto), poll $(fig poll_s) s"
printf '  %-44s %s (%s RunTask, all answered in %s s; ECS says %s)\n' "children running" \
    "$(fig children)" "$(fig runtasks)" "$(fig launch_s)" "$(fig ecs_states)"
printf '  %-44s %s s\n' "window (from the first poll of all)" "$(fig window_s)"
printf '  %-44s %s (one every %s s; a poll answered in %s s)\n' "polls in the window" \
    "$(fig polls)" "$(fig poll_interval_s)" "$(fig poll_answer_s)"
printf '  %-44s %s\n' "DescribeTasks calls" "$(fig describe_calls)"
printf '  %-44s %s (most in one poll: %s)\n' "DescribeTasks calls per poll" \
    "$(fig calls_per_poll)" "$(fig calls_per_poll_max)"
printf '  %-44s %s\n' "ARNs per DescribeTasks call" "$(fig arns_per_call)"
printf '  %-44s %s\n' "DescribeTasks calls per child-minute" "$(fig calls_per_child_minute)"
printf '  %-44s %s per poll (GetItem %s, Query %s, BatchGetItem %s; %s writes in the window, %s after its first %s s)\n' \
    "item reads, fast path ($(fig read_tables))" "$(fig reads_per_poll)" "$(fig reads.GetItem)" \
    "$(fig reads.Query)" "$(fig reads.BatchGetItem)" "$(fig writes_in_window)" \
    "$(fig writes_after_2_polls)" "$(python3 -c 'import sys; print(2 * float(sys.argv[1]))' "$POLL")"
printf '  %-44s %s calls, %s per child-minute (computed from the polls above, not run)\n' \
    "peer: one DescribeTasks per child per poll" "$(fig naive_calls)" \
    "$(fig naive_per_child_minute)"
printf '  %-44s exit %s; StopTask for %s of %s; %s CANCELLED; %s still RUNNING in ECS\n' \
    "SIGTERM of the parent" "$(fig exit_code)" "$(fig stoptask_arns)" "$(fig children)" \
    "$(fig cancelled)" "$(fig still_running)"
[ "$rc" = 0 ] || die "the run went wrong (see the SIGTERM line above)"
verdict "$(fig calls_per_poll_max)" "$(fig goal_calls_per_poll)"
echo
printf '  %-44s %-22s %s\n' "figure" "value" "goal"
printf '  %-44s %-22s %s\n' "DescribeTasks calls per poll (most)" "$(fig calls_per_poll_max)" \
    "<= $(fig goal_calls_per_poll) (ceil(children / 100))  $VERDICT"
finish
