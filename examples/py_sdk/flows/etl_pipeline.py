"""The execution guide's ETL flow written with the dagy SDK, pandas-free: extract reads a CSV,
transform cleans and enriches the rows, load writes them as JSON and returns a summary, report
(a command task) prints it. Each return value is the task's result; passing a task's result to
another task makes it an upstream. Build: `dagy build flows/etl_pipeline.py` in this directory
(the CMake build writes build/examples/py_sdk.zip); run: `scripts/run-example.sh py_sdk`."""

import csv
import json
import os

from dagy import DAG, command, task


@task
def extract(source_path):
    """Reads the CSV at source_path (relative to the flow directory) into a list of dicts."""
    with open(source_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    print("extract: %d rows from %s" % (len(rows), source_path))
    return rows


@task(retries=3, retry_delay_seconds=5)
def transform(data):
    """Drops rows without an amount, parses amounts and marks every row processed."""
    out = []
    for row in data:
        if not row.get("amount"):
            continue
        out.append(dict(row, amount=round(float(row["amount"]), 2), processed=True))
    print("transform: kept %d of %d rows" % (len(out), len(data)))
    return out


@task
def load(data, destination):
    """Writes the rows to destination as JSON (atomically) and returns what it wrote."""
    tmp = destination + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, destination)
    total = round(sum(row["amount"] for row in data), 2)
    by_region = {}
    for row in data:
        by_region[row["region"]] = round(by_region.get(row["region"], 0) + row["amount"], 2)
    print("load: wrote %d rows to %s" % (len(data), destination))
    return {"path": destination, "rows": len(data), "total": total, "by_region": by_region}


with DAG("etl_pipeline", version="1.0.0", max_parallel=2,
         defaults={"retry_jitter": False, "timeout_seconds": 120},
         metadata={"owner": "data-platform", "tags": ["demo", "sdk"]}) as dag:
    data = extract(source_path="{{ parameters.source }}")
    transformed = transform(data=data)
    loaded = load(transformed, destination="{{ parameters.destination }}")
    command("report", ["sh", "-c", 'echo "report: $(cat "$DAGY_TASK_INPUTS")"'],
            upstream=[loaded])
