"""Command task of the py_callable example (`python3 -m flows.report`): reads the upstream
results from $DAGY_TASK_INPUTS, checks the loaded file against them and prints a summary."""

import json
import os
import sys


def main():
    with open(os.environ["DAGY_TASK_INPUTS"], encoding="utf-8") as f:
        inputs = json.load(f)
    loaded = inputs.get("load")
    if not loaded:
        print("report: no result from 'load' in %s" % sorted(inputs), file=sys.stderr)
        return 1
    with open(loaded["path"], encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    if len(lines) != loaded["rows"]:
        print("report: %s has %d rows, load reported %d"
              % (loaded["path"], len(lines), loaded["rows"]), file=sys.stderr)
        return 1
    summary = {"run_id": os.environ.get("DAGY_RUN_ID"), "rows": len(lines),
               "total": loaded["total"], "file": loaded["path"]}
    print("report: %s" % json.dumps(summary, sort_keys=True))
    with open(os.environ["DAGY_TASK_OUTPUT"], "w", encoding="utf-8") as f:
        json.dump(summary, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
