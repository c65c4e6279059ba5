#!/bin/sh
# bench/soak.sh - the soak at full length: 200 flows back to back in one warm state and work
# directory (random failures, timeouts, retries, SIGTERMs; tests/integration/test_soak.py), with
# the agent's fds, peak RSS, processes left and disk use printed at the start and the end.
# Goal: all flat (processes left 0; fds and RSS within the test's margins; disk stops growing
# after DAGY_KEEP_RUNS runs). Exit 1 when a goal is missed.
#
# Usage: bench/soak.sh [FLOWS]      Environment: DAGY_AGENT (default build/dagy-agent),
#        DAGY_FAULT_SEED (replay a run), KEEP=1 (keep the per-run JSON report).
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

need_agent
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dagy-soak.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

rc=0
DAGY_SOAK_FLOWS=${1:-200} DAGY_SOAK_REPORT=$WORK/soak.json DAGY_AGENT=$AGENT \
    python3 "$ROOT/tests/integration/test_soak.py" >"$WORK/soak.log" 2>&1 || rc=$?
grep -v '^{' "$WORK/soak.log" | tail -n 40
[ "${KEEP:-0}" = 1 ] && echo "per-run figures: $WORK/soak.json"
python3 - "$WORK/soak.json" <<'PY' || true
import json, sys
d = json.load(open(sys.argv[1]))
r = d["runs"]
def fig(s):
    return "fds %d, peak RSS %.1f MiB, left %d, state %.0f KiB, work %.0f KiB" % (
        s["fds"], s["rss_kb"] / 1024, s["left"], s["disk_state"] / 1024, s["disk_work"] / 1024)
print("soak: %d flows in %.0f s (seed %d)" % (len(r), d["seconds"], d["seed"]))
print("  start (run 1):   " + fig(r[0]))
print("  end (run %d): " % len(r) + fig(r[-1]))
print("  exits: " + ", ".join("%d x%d" % (c, sum(1 for s in r if s["code"] == c))
                              for c in sorted({s["code"] for s in r})))
PY
exit "$rc"
