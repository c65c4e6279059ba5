"""HTTP concurrency is bounded (issue 8, "also verify"): a flush of 1000 status items under
`ulimit -n 256` queues in the HTTP engine instead of opening a socket per request; no write is
retried because a connect found no descriptor (EMFILE), and every item is written."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402

RUNS = "DAGY_RUNS"
TASK_RUNS = "DAGY_TASK_RUNS"
N = 1000


def probe_path():
    return os.path.join(awsenv.tools_dir(), "status_probe")


class Concurrency(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(probe_path()):
            raise unittest.SkipTest("status_probe not built at %s" % probe_path())
        cls.moto = awsenv.Moto().start()
        try:
            cls.moto.create_status_tables(RUNS, TASK_RUNS)
        except BaseException:
            cls.moto.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def test_flush_of_1000_items_under_256_fds_needs_no_retry(self):
        env = self.moto.env()
        p = awsenv.run(["sh", "-c", 'ulimit -n 256 && exec "$0" "$@"', probe_path(), "run", RUNS,
                        TASK_RUNS, "fd-bound", str(N), "120000"], env=env, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        self.assertNotRegex(p.stderr, r"Sanitizer|runtime error:")
        events = {}
        for line in p.stderr.splitlines():
            try:
                e = json.loads(line)["event_type"]
            except (ValueError, KeyError):
                continue
            events[e] = events.get(e, 0) + 1
        self.assertEqual(events.get("status_write_retry", 0), 0,
                         "writes were retried: %s" % [l for l in p.stderr.splitlines()
                                                      if "status_write_retry" in l][:2])
        self.assertNotIn("Too many open files", p.stderr)
        out = json.loads(p.stdout)
        self.assertFalse(out["failed_run"])
        self.assertEqual(out["n_failed"], 0)
        self.assertEqual(len(out["items"]), N + 1)
        ddb = self.moto.client("dynamodb")
        n = 0
        for page in ddb.get_paginator("query").paginate(
                TableName=TASK_RUNS, KeyConditionExpression="run_id = :r",
                ExpressionAttributeValues={":r": {"S": "fd-bound"}}, Select="COUNT"):
            n += page["Count"]
        self.assertEqual(n, N)


if __name__ == "__main__":
    unittest.main()
