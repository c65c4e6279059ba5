"""The per-task ECS executor with dynamic fan-out (issue 15 items 1 and 2 together): a map of 50
elements with max_parallel 8 whose children each run as their own ECS task, played by the test
as in test_ecs_exec_moto (moto without signature checks here: its checker refuses the S3 key of
a map child's result, results/ORG/RUN/sq%5B7%5D.json)."""

import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_ecs_exec_moto import ORG, RESULTS, EcsExecBase  # noqa: E402


class EcsMapTest(EcsExecBase):
    AUTH = False

    def test_a_map_of_50_on_ecs_with_max_parallel_8(self):
        n = 50
        tasks = [
            {"name": "list", "command": ["sh", "-c", "echo '%s' > \"$DAGY_TASK_OUTPUT\""
                                         % json.dumps(list(range(n)))]},
            {"name": "sq", "upstream": ["list"], "map": {"over": "list", "max_parallel": 8},
             "executor": {"type": "ecs", "profile": "small"},
             "command": ["sh", "-c", "echo $(({{ item }} * $DAGY_MAP_ITEM)) > "
                         "\"$DAGY_TASK_OUTPUT\""]},
            {"name": "total", "upstream": ["sq"],
             "command": ["sh", "-c", "cat \"$DAGY_TASK_INPUTS\" > \"$DAGY_TASK_OUTPUT\""]},
        ]
        run_id = "ecs-map-1"
        env = self.parent_env(run_id, self.artifact(tasks))
        lock, live = threading.Lock(), [0, 0]  # running now, most at once

        def run_counted(test, arn, body):
            with lock:
                live[0] += 1
                live[1] = max(live[1], live[0])
            try:
                test.run_child(arn, body)
            finally:
                with lock:
                    live[0] -= 1
                test.stop_task(arn)

        res, player = self.run_parent(env, run_counted, timeout=240)
        self.assertEqual(res.code, 0, [e for e in res.lines if e["level"] == "ERROR"][:3])
        self.assertEqual(len(player.started), n)
        self.assertLessEqual(live[1], 8)
        names = sorted({e["name"]: e["value"] for e in b["overrides"]["containerOverrides"][0]
                        ["environment"]}["DAGY_ONLY_TASK"] for _, b in player.started)
        self.assertEqual(names, sorted("sq[%d]" % k for k in range(n)))
        self.assertEqual(len({b["clientToken"] for _, b in player.started}), n)
        for _, _, p in self.children:
            self.assertEqual(p.returncode, 0, p.stdout[-2000:])
        k7 = self.get(run_id, "sq[7]")
        self.assertEqual(k7["status"], "SUCCEEDED")
        self.assertIn(k7["external_id"], [arn for arn, _ in player.started])
        stored = self.s3.get_object(Bucket=RESULTS, Key="results/%s/%s/total.json" % (ORG, run_id))
        self.assertEqual(json.loads(stored["Body"].read()), {"sq": [k * k for k in range(n)]})



if __name__ == "__main__":
    unittest.main()
