"""test_agent_dagperf.py - what the per-task path of a big DAG skips (issue 12 part 1), and that
skipping it loses nothing: a task that writes no result gets none recorded, whatever it left in
the agent's results/ directory; one that writes a result still has it hashed and recorded."""
import hashlib
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentenv import Flow  # noqa: E402


def spec(tasks):
    return {"spec_version": 1, "name": "dagperf", "version": "1.0.0", "tasks": tasks}


class DagPerf(unittest.TestCase):
    def flow(self, tasks):
        f = Flow(spec(tasks))
        self.addCleanup(f.cleanup)
        return f

    def test_a_file_a_task_plants_in_results_is_not_recorded_as_its_result(self):
        # The task writes no DAGY_TASK_OUTPUT but a file where the agent keeps validated results
        # (results/TASK.json beside out/): that is not a result the agent read and checked.
        plant = ('d=$(dirname "$DAGY_TASK_OUTPUT")/../results; '
                 'printf \'{"forged": true}\' > "$d/a.json"')
        f = self.flow([{"name": "a", "command": ["sh", "-c", plant]}])
        r = f.run()
        self.assertEqual(r.code, 0, r)
        item = r.task_item("a")
        self.assertEqual(item["status"], "SUCCEEDED")
        for k in ("result_path", "result_sha256", "result_bytes", "result_s3_uri"):
            self.assertNotIn(k, item, item)

    def test_a_result_written_is_still_hashed_and_recorded(self):
        f = self.flow([{"name": "a", "command": ["sh", "-c",
                                                 'echo \'{"k": 1}\' > "$DAGY_TASK_OUTPUT"']},
                       {"name": "b", "command": ["sh", "-c", 'cat "$DAGY_TASK_INPUTS"'],
                        "upstream": ["a"]}])
        r = f.run()
        self.assertEqual(r.code, 0, r)
        item = r.task_item("a")
        with open(item["result_path"], "rb") as fh:
            stored = fh.read()
        self.assertEqual(json.loads(stored), {"k": 1})
        self.assertEqual(item["result_bytes"], len(stored))
        self.assertEqual(item["result_sha256"], hashlib.sha256(stored).hexdigest())
        self.assertNotIn("result_path", r.task_item("b"))
        self.assertIn('"k"', "".join(r.output("b")))


if __name__ == "__main__":
    unittest.main()
