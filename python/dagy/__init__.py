"""dagy - write dagy flows in Python.

    from dagy import DAG, task

    @task(retries=3)
    def transform(data):
        return [r for r in data if r]

    with DAG("etl", version="1.0.0") as dag:
        transform(data=extract(source="{{ parameters.source }}"))

`dagy build flows/etl.py` turns the file into a flow artifact (flow_spec.json, metadata.json and
the sources). Inside `with DAG(...)` calling a task records it and returns a reference to its
result; outside, a task is its plain function, which is how dagy's runner calls it. Standard
library only, Python 3.9+. See docs/flow-spec.md, "Authoring in Python".
"""

from ._dag import (DAG, DagyError, Task, TaskCallError, TaskRef, command, current_dag, task,
                   unmapped)

__version__ = "0.1.0"
__all__ = ["DAG", "DagyError", "Task", "TaskCallError", "TaskRef", "command", "current_dag",
           "task", "unmapped", "__version__"]
