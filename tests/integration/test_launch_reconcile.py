"""dagy-launch reconcile against moto: stopped tasks close their runs with docs/launch.md's
mapping, conditionally (a run the agent finished is never overwritten, even when it finishes
between the query and the write), idempotently, and DescribeTasks goes out in batches of 100.
(Relaunching is off here, --relaunch-infra 0: test_launch_durable covers it.)

moto reports no stopCode and exit code 0 for every stopped task; the recording proxy adds what
ECS reports after StopTask or an OOM kill, so each branch of the mapping is exercised."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launchenv  # noqa: E402
import recproxy  # noqa: E402
from launchenv import ORG  # noqa: E402

OLD = "2020-01-01T00:00:00.000Z"
FINAL_SEQ = 1000000000000


class ReconcileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        try:
            cls.env = cls.L.env(DAGY_RUNS_TABLE="RECON_RUNS", DAGY_TASK_RUNS_TABLE="RECON_TASK_RUNS")
            for args in (("init-tables",), ("init-tables",)):
                r = cls.L.launch(*args, env=cls.env)
                assert r.returncode == 0, r.stderr
            r, _ = cls.L.register("etl", "1.0.0", env=cls.env)
            assert r.returncode == 0, r.stderr
        except BaseException:
            cls.L.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.L.stop()

    def launch(self, *args, env=None):
        return self.L.launch(*args, env=env or self.env)

    def item(self, run_id, table="RECON_RUNS"):
        return self.L.run_item(run_id, table=table)

    def put(self, table, **attrs):
        self.L.moto.client("dynamodb").put_item(
            TableName=table,
            Item={k: ({"N": str(v)} if isinstance(v, int) else {"S": v}) for k, v in attrs.items()},
        )

    def test_reconcile_mapping_conditional_and_idempotent(self):
        ddb, ecs = self.L.moto.client("dynamodb"), self.L.moto.client("ecs")
        arns = {}
        for name in "ABCDEH":
            r = self.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "rec-" + name)
            self.assertEqual(r.returncode, 0, r.stderr)
            arns[name] = r.json["task_arn"]
            self.assertEqual(r.json["task_arn"], self.item("rec-" + name)["external_id"])
        # The runs table names reached the worker too.
        env = launchenv.container_env(self.L.describe_task(arns["A"]))
        self.assertEqual((env["DAGY_RUNS_TABLE"], env["DAGY_TASK_RUNS_TABLE"]), ("RECON_RUNS", "RECON_TASK_RUNS"))

        # Nothing is stale yet.
        r = self.launch("reconcile", "--stale-seconds", "3600", "--relaunch-infra", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.json, {"checked": 0, "updated": 0, "skipped": 0, "relaunched": 0})

        # The agent took over E (RUNNING, seq 3) and finished D (SUCCEEDED).
        def agent_write(run_id, status, seq):
            ddb.update_item(
                TableName="RECON_RUNS", Key={"run_id": {"S": run_id}},
                UpdateExpression="SET #s = :s, status_seq = :q, last_heartbeat_at = :t",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status}, ":q": {"N": str(seq)}, ":t": {"S": OLD}},
            )
        agent_write("rec-E", "RUNNING", 3)
        agent_write("rec-D", "SUCCEEDED", 9)
        # F: a task ECS no longer knows; G: a launch that died before RunTask answered.
        self.put("RECON_RUNS", run_id="rec-F", status="RUNNING", executor="ecs", status_seq=4, updated_at=OLD,
                 active_shard="1",
                 external_id="arn:aws:ecs:us-east-1:123456789012:task/dagy/0000000000000000deadbeef")
        self.put("RECON_RUNS", run_id="rec-G", status="QUEUED", executor="ecs", status_seq=0, updated_at=OLD,
                 active_shard="1")
        # A local run is never the reconciler's business.
        self.put("RECON_RUNS", run_id="rec-L", status="RUNNING", executor="local", status_seq=1, updated_at=OLD,
                 active_shard="1")
        # A is cancelled through dagy-launch cancel (recorded; its StopTask follows below).
        ddb.update_item(TableName="RECON_RUNS", Key={"run_id": {"S": "rec-A"}},
                        UpdateExpression="SET cancel_requested_at = :t, cancel_reason = :r",
                        ExpressionAttributeValues={":t": {"S": OLD}, ":r": {"S": "not needed today"}})
        for name in "ABCDH":
            ecs.stop_task(cluster=self.L.cluster, task=arns[name], reason="stopped by test " + name)

        def ecs_semantics(op, req, resp):
            """What ECS reports that moto does not; H's agent finishes between scan and write."""
            if op != "DescribeTasks":
                return None
            for t in resp.get("tasks", []):
                c = t["containers"][0]
                if t["taskArn"] == arns["A"]:
                    t["stopCode"], c["exitCode"] = "UserInitiated", 143
                elif t["taskArn"] == arns["B"]:
                    t["stopCode"], t["stoppedReason"] = "EssentialContainerExited", "Essential container in task exited"
                    c["exitCode"], c["reason"] = 137, "OutOfMemoryError: Container killed due to memory usage"
                elif t["taskArn"] == arns["H"]:
                    agent_write("rec-H", "SUCCEEDED", 7)
                t["stoppedAt"] = 1700000000.5
            return resp

        self.L.proxy.rewrite = ecs_semantics
        try:
            before_d = self.item("rec-D")
            r = self.launch("reconcile", "--stale-seconds", "0", "--relaunch-infra", "0")
        finally:
            self.L.proxy.rewrite = None
        self.assertEqual(r.returncode, 0, r.stderr)
        # checked: A B C D E F G H; updated: A B C F G, and D leaves the index; skipped: E
        # (running), H (the agent won the race).
        self.assertEqual(r.json, {"checked": 8, "updated": 6, "skipped": 2, "relaunched": 0})

        a = self.item("rec-A")
        self.assertEqual(a["status"], "CANCELLED")
        self.assertEqual(a["stop_reason"], "UserInitiated: not needed today")
        self.assertNotIn("active_shard", a)
        self.assertEqual(a["status_seq"], FINAL_SEQ)
        self.assertEqual(a["completed_at"], "2023-11-14T22:13:20.500Z")
        b = self.item("rec-B")
        self.assertEqual(b["status"], "FAILED")
        self.assertEqual(
            b["error_message"],
            "Reconciled: Essential container in task exited (exit code 137: OutOfMemoryError: "
            "Container killed due to memory usage)",
        )
        self.assertEqual(b["stop_reason"], "EssentialContainerExited: Essential container in task exited")
        c = self.item("rec-C")
        self.assertEqual(c["status"], "SUCCEEDED")  # moto: exit code 0
        f = self.item("rec-F")
        self.assertEqual((f["status"], f["error_message"]), ("FAILED", "Reconciled: ECS task not found"))
        g = self.item("rec-G")
        self.assertEqual(g["status"], "FAILED")
        self.assertIn("no ECS task was recorded", g["error_message"])
        self.assertTrue(g["stop_reason"].startswith("TaskFailedToStart: "), g)
        # Finished by the agent: only out of the index.
        d = self.item("rec-D")
        self.assertNotIn("active_shard", d)
        self.assertEqual(d, {k: v for k, v in before_d.items() if k != "active_shard"})
        self.assertEqual(self.item("rec-E")["status"], "RUNNING")
        h = self.item("rec-H")
        self.assertEqual((h["status"], h["status_seq"]), ("SUCCEEDED", 7))
        self.assertNotIn("stop_reason", h)
        self.assertEqual(self.item("rec-L")["status"], "RUNNING")

        # Again: H (finished by its agent) leaves the index; then nothing changes any more.
        r = self.launch("reconcile", "--stale-seconds", "0", "--relaunch-infra", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.json, {"checked": 2, "updated": 1, "skipped": 1, "relaunched": 0})
        self.assertEqual(self.item("rec-H")["status"], "SUCCEEDED")
        snapshot = {n: self.item("rec-" + n) for n in "ABCDEFGHL"}
        r = self.launch("reconcile", "--stale-seconds", "0", "--relaunch-infra", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.json, {"checked": 1, "updated": 0, "skipped": 1, "relaunched": 0})
        self.assertEqual({n: self.item("rec-" + n) for n in "ABCDEFGHL"}, snapshot)
        for body in self.L.proxy.calls("RunTask"):
            recproxy.validate_ecs_request("RunTask", body)
        for body in self.L.proxy.calls("DescribeTasks"):
            recproxy.validate_ecs_request("DescribeTasks", body)

    def test_describe_tasks_in_batches_of_100(self):
        env = self.L.env(DAGY_RUNS_TABLE="RECON2_RUNS")
        r = self.L.launch("init-tables", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("RECON2_RUNS", r.json["created"])
        for i in range(130):
            self.put("RECON2_RUNS", run_id="many-%03d" % i, status="RUNNING", executor="ecs", updated_at=OLD,
                     active_shard="1",
                     external_id="arn:aws:ecs:us-east-1:123456789012:task/dagy/gone%08d" % i)
        before = len(self.L.proxy.calls("DescribeTasks"))
        r = self.L.launch("reconcile", "--stale-seconds", "60", "--max-runs", "500", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.json, {"checked": 130, "updated": 130, "skipped": 0, "relaunched": 0})
        calls = self.L.proxy.calls("DescribeTasks")[before:]
        self.assertEqual(sorted(len(c["tasks"]) for c in calls), [30, 100])
        self.assertEqual(self.item("many-007", table="RECON2_RUNS")["error_message"], "Reconciled: ECS task not found")
        # --max-runs bounds the work.
        for i in range(5):
            self.put("RECON2_RUNS", run_id="more-%d" % i, status="QUEUED", executor="ecs", updated_at=OLD,
                     active_shard="1")
        r = self.L.launch("reconcile", "--stale-seconds", "0", "--max-runs", "2", env=env)
        self.assertEqual(r.json["checked"], 2)


if __name__ == "__main__":
    unittest.main()
