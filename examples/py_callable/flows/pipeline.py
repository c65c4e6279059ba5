"""Callables of the py_callable example: extract -> transform -> load, passing data between tasks
as JSON results (each return value becomes the task's result; {"upstream": "NAME"} in kwargs
brings an upstream task's result in)."""

import json
import os


def extract(count, run_id):
    """Produces `count` synthetic rows (the result is a JSON list)."""
    rows = [{"id": i, "value": i * i, "run_id": run_id} for i in range(1, int(count) + 1)]
    print("extract: %d rows" % len(rows))
    return rows


def transform(data, factor):
    """Scales every row's value by `factor`; `data` is extract's result."""
    if not isinstance(data, list):
        raise TypeError("transform expected a list from extract, got %s" % type(data).__name__)
    factor = float(factor)
    out = [dict(row, value=row["value"] * factor) for row in data]
    print("transform: scaled %d rows by %g" % (len(out), factor))
    return out


def load(rows, path):
    """Writes the rows as JSON lines to `path` (atomically) and returns where and how many."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(tmp, path)
    total = sum(row["value"] for row in rows)
    print("load: wrote %d rows to %s" % (len(rows), path))
    return {"path": path, "rows": len(rows), "total": total}
