#!/bin/sh
# bench/resume.sh - what durable runs cost and save (issue 10): (1) a 200-task flow SIGTERMed at
# 50 % and then resumed (--resume-from): the resumed run's wall time against a full run's (goal
# <= 55 %); (2) the 2000-task layered DAG with every result stored in S3 on moto
# (DAGY_RESULTS_BUCKET) against the same DAG with results kept in the run directory (goal <= 1.3x;
# uploads overlap the DAG). Local status in both. Figures only: exit 0 unless something could not
# run (--strict: also exit 1 when a goal is missed).
#
# Usage: bench/resume.sh [--strict]
# Environment: DAGY_AGENT (default build/dagy-agent), RUNS (3), LAYERS (20), WIDTH (100) for the
#              2000-task DAG, KEEP=1 keeps the work directory.
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "${1:-}" = --strict ] && STRICT=1
RUNS=${RUNS:-3}
need_agent
python3 -c 'import moto, boto3' 2>/dev/null || die "python3 with moto and boto3 is needed"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dagy-resume-bench.XXXXXX")
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

out=$(python3 "$BENCH_DIR/resume_bench.py" "$WORK" "$AGENT" --runs "$RUNS" | tail -n 1) ||
    die "the benchmark could not run"
fig() { python3 -c 'import json, sys
d = json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    d = d[k]
print(d if not isinstance(d, float) else "%.3f" % d)' "$out" "$1"; }

echo
echo "resume: 200 tasks (20 layers x 10, sleep 0.05 each), -j 2, median of $RUNS"
printf '  %-44s %8s s\n' "full run" "$(fig resume.full_s)"
printf '  %-44s %8s s   (%s tasks had SUCCEEDED at the SIGTERM; %s reused)\n' \
    "resumed run (after SIGTERM at 50 %)" "$(fig resume.resumed_s)" \
    "$(fig resume.succeeded_at_sigterm)" "$(fig resume.reused_last)"
verdict "$(fig resume.ratio)" 0.55
r1=$VERDICT
echo "durable results: $(fig results.tasks) tasks (2 upstreams each), -j 2, median of $RUNS"
printf '  %-44s %8s s   (agent + tasks CPU %s s)\n' "results in the run directory (local)" \
    "$(fig results.local_s)" "$(fig results.local_cpu_s)"
printf '  %-44s %8s s   (agent + tasks CPU %s s; moto CPU %s s; %s items with result_s3_uri)\n' \
    "results in S3 (moto, loopback)" "$(fig results.s3_s)" "$(fig results.s3_cpu_s)" \
    "$(fig results.moto_cpu_s)" "$(fig results.stored)"
verdict "$(fig results.ratio)" 1.3
r2=$VERDICT
echo
printf '  %-44s %-22s %s\n' "figure" "value" "goal"
printf '  %-44s %-22s %s\n' "resumed / full wall time" "$(fig resume.ratio)" "<= 0.55  $r1"
printf '  %-44s %-22s %s\n' "S3 results / local makespan" "$(fig results.ratio)" "<= 1.3   $r2"
printf '  %-44s %-22s %s\n' "  same, agent + tasks CPU time" "$(fig results.cpu_ratio)" \
    "(moto runs on the same $(fig results.ncpu) CPUs)"
finish
