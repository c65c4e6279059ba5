#!/bin/sh
# run-example.sh - builds dagy-agent and runs an example flow locally (no AWS needed).
# Usage: scripts/run-example.sh [etl_shell|py_callable|py_sdk] [extra dagy-agent arguments]
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build
example="${1:-etl_shell}"
[ $# -gt 0 ] && shift
if [ "$example" = py_sdk ]; then
    # The SDK example's parameters: the CSV inside the artifact, the JSON it writes.
    set -- --param source=data/sales.csv --param "destination=$PWD/build/py_sdk-out.json" "$@"
fi
exec ./build/dagy-agent --flow "build/examples/$example.zip" --param date=2024-03-14 \
    --state-dir build/.dagy "$@"
