#!/bin/sh
# bench/launch_batch.sh - `dagy-launch batch` of 100 launches against moto_server vs 100
# sequential `aws ecs run-task` CLI calls to the same moto, in the same run. Goal: >= 10x faster.
#
# Usage: bench/launch_batch.sh [--strict]   (--strict: exit 1 when the goal is missed)
# Environment: DAGY_LAUNCH (default build/dagy-launch), N (100), BATCH_RUNS (3), AWS_CLI (aws).
# Needs python3 with moto[server] and boto3, and the AWS CLI.
set -eu
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
DAGY_LAUNCH=${DAGY_LAUNCH:-$ROOT/build/dagy-launch}
export DAGY_LAUNCH

STRICT=
[ "${1:-}" = --strict ] && STRICT=--strict
[ -x "$DAGY_LAUNCH" ] || { echo "launch_batch.sh: no dagy-launch at $DAGY_LAUNCH (build it, or set DAGY_LAUNCH)" >&2; exit 2; }
python3 -c "import moto, boto3" 2>/dev/null || { echo "launch_batch.sh: python3 needs moto[server] and boto3" >&2; exit 2; }
echo "dagy-launch: $DAGY_LAUNCH"
# shellcheck disable=SC2086 # STRICT is empty or one word
exec python3 "$BENCH_DIR/launch_bench.py" --n "${N:-100}" --batch-runs "${BATCH_RUNS:-3}" $STRICT
