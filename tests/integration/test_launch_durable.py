"""dagy-launch's side of durable runs (issue 10) against moto with signatures enforced: reconcile
tells infrastructure failures from the flow's own by ECS stop code and relaunches them as
resuming retries (counted, bounded per chain, never twice), reads only the sparse index of active
runs, and gives up on tasks that never start; retry repeats a launch exactly; cancel records
the request before it stops the task; status shows the chain and the tasks; result prints a
stored result after checking its sha256; init-tables adds the index to an existing table.

ECS goes through launchenv's recording proxy, whose rewrite hook gives DescribeTasks the stop
codes moto does not produce; DynamoDB goes through a fault proxy that injects nothing and
records every body. Every ECS and DynamoDB body is validated against botocore's models."""

import hashlib
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultproxy  # noqa: E402
import launchenv  # noqa: E402
import recproxy  # noqa: E402
from launchenv import ORG, container_env  # noqa: E402

OLD = "2020-01-01T00:00:00.000Z"


def iso(ago):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - ago))


def shape_tasks(shapes):
    """A recproxy rewrite giving DescribeTasks answers the fields of `shapes` (ARN -> dict with
    any of stopCode, stoppedReason, lastStatus, exitCode, reason)."""

    def rewrite(op, req, resp):
        if op != "DescribeTasks":
            return None
        for t in resp.get("tasks", []):
            s = shapes.get(t["taskArn"])
            if s is None:
                continue
            for k in ("stopCode", "stoppedReason", "lastStatus"):
                if k in s:
                    t[k] = s[k]
            c = t["containers"][0]
            for k in ("exitCode", "reason"):
                if k in s and s[k] is None:
                    c.pop(k, None)
                elif k in s:
                    c[k] = s[k]
        return resp

    return rewrite


class DurableTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        try:
            cls.ddbp = faultproxy.FaultProxy(cls.L.moto.endpoint, rates={}, record_bodies=True).start()
            cls.env = cls.L.env(AWS_ENDPOINT_URL_DYNAMODB=cls.ddbp.url)
            r = cls.L.launch("init-tables", env=cls.env)
            assert r.returncode == 0, r.stderr
            r, _ = cls.L.register("etl", "1.0.0", env=cls.env)
            assert r.returncode == 0, r.stderr
            r, _ = cls.L.register("etl2", "1.0.0", env=cls.env)
            assert r.returncode == 0, r.stderr
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "ddbp", None):
            cls.ddbp.stop()
        cls.L.stop()

    def tearDown(self):
        self.L.proxy.rewrite = None
        for method, path, headers, body in self.ddbp.bodies:
            op = headers.get("x-amz-target", "").rsplit(".", 1)[-1]
            if op:
                recproxy.validate_request("dynamodb", op, json.loads(body or b"{}"))
        for op in ("RunTask", "DescribeTasks", "StopTask"):
            for b in self.L.proxy.calls(op):
                recproxy.validate_ecs_request(op, b)

    # -- helpers --

    def launch(self, *args, env=None):
        return self.L.launch(*args, env=env or self.env)

    def run_ok(self, run_id, *extra, flow="etl"):
        r = self.launch("run", "--flow", flow, "--org", ORG, "--run-id", run_id, *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.json["task_arn"]

    def item(self, run_id):
        return self.L.run_item(run_id)

    def update(self, run_id, set_=None, remove=()):
        """SET/REMOVE attributes of a run item directly (as the agent or time would)."""
        set_ = set_ or {}
        parts, vals, names = [], {}, {}
        for i, (k, v) in enumerate(set_.items()):
            names["#a%d" % i] = k
            parts.append("#a%d = :v%d" % (i, i))
            vals[":v%d" % i] = {"N": str(v)} if isinstance(v, int) else {"S": v}
        expr = ("SET " + ", ".join(parts)) if parts else ""
        if remove:
            for i, k in enumerate(remove):
                names["#r%d" % i] = k
            expr += " REMOVE " + ", ".join("#r%d" % i for i in range(len(remove)))
        kw = {"ExpressionAttributeValues": vals} if vals else {}
        self.L.moto.client("dynamodb").update_item(
            TableName="DAGY_RUNS", Key={"run_id": {"S": run_id}}, UpdateExpression=expr,
            ExpressionAttributeNames=names, **kw)

    def agent_running(self, run_id, ago=3600):
        """What the agent's first write leaves: RUNNING, seq 1; `ago` seconds without news."""
        self.update(run_id, {"status": "RUNNING", "status_seq": 1, "updated_at": iso(ago),
                             "last_heartbeat_at": iso(ago), "created_at": iso(ago + 60)})

    def stop(self, arn):
        self.L.moto.client("ecs").stop_task(cluster=self.L.cluster, task=arn, reason="test")

    def runtasks(self, token):
        return [b for b in self.L.proxy.calls("RunTask") if b["clientToken"] == token]

    def reconcile(self, *args):
        r = self.launch("reconcile", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.json

    def assert_relaunch(self, src, new, infra_retries):
        """`new` is a resuming retry of `src`, launched once with the source's request."""
        s, n = self.item(src), self.item(new)
        self.assertEqual(s["status"], "FAILED")
        self.assertEqual(s["relaunched_as"], new)
        self.assertNotIn("active_shard", s)
        self.assertEqual(n["status"], "QUEUED")
        self.assertEqual((n["retry_of"], n["resume_from"], n["infra_retries"]), (src, src, infra_retries))
        self.assertEqual(n["active_shard"], "1")
        self.assertEqual(n["trigger_source"], "reconcile")
        self.assertEqual((n["parameters"], n["flow_version"], n["artifact_s3_uri"]),
                         (s["parameters"], s["flow_version"], s["artifact_s3_uri"]))
        bodies = self.runtasks(new)
        self.assertEqual(len(bodies), 1)
        env = {e["name"]: e["value"] for e in bodies[0]["overrides"]["containerOverrides"][0]["environment"]}
        self.assertEqual(env["DAGY_RESUME_FROM"], src)
        self.assertEqual(env["DAGY_RUN_ID"], new)
        self.assertEqual(env["DAGY_CORRELATION_ID"], s["correlation_id"])
        self.assertEqual(n["external_id"], self.L.describe_task(n["external_id"])["taskArn"])

    # -- reconcile --

    def test_reconcile_stop_codes_relaunch_once_per_failure(self):
        cases = {
            "sc-spot": ({"stopCode": "SpotInterruption", "stoppedReason": "Your Spot Task was interrupted.",
                         "exitCode": 143}, "FAILED", True),
            "sc-oom": ({"stopCode": "EssentialContainerExited", "stoppedReason": "Essential container in task exited",
                        "exitCode": 137, "reason": "OutOfMemoryError: Container killed due to memory usage"},
                       "FAILED", True),
            "sc-nostart": ({"stopCode": "TaskFailedToStart", "stoppedReason": "CannotPullContainerError: denied",
                            "exitCode": None}, "FAILED", True),
            "sc-sigterm": ({"stopCode": "UserInitiated", "stoppedReason": "Task stopped by user", "exitCode": 143},
                           "FAILED", True),
            "sc-fail": ({"stopCode": "EssentialContainerExited", "stoppedReason": "Essential container in task exited",
                         "exitCode": 1}, "FAILED", False),
            "sc-cancel": ({"stopCode": "UserInitiated", "stoppedReason": "nightly freeze", "exitCode": 143},
                          "CANCELLED", False),
            "sc-ok": ({"stopCode": "EssentialContainerExited", "exitCode": 0}, "SUCCEEDED", False),
            "sc-budget": ({"stopCode": "SpotInterruption", "stoppedReason": "interrupted", "exitCode": 143},
                          "FAILED", False),
        }
        shapes, arns = {}, {}
        for rid, (shape, _, _) in cases.items():
            arns[rid] = self.run_ok(rid, "--param", "case=" + rid)
            shapes[arns[rid]] = shape
            self.agent_running(rid)
            self.stop(arns[rid])
        self.update("sc-cancel", {"cancel_requested_at": iso(3700), "cancel_reason": "nightly freeze"})
        self.update("sc-budget", {"infra_retries": 2})
        self.L.proxy.rewrite = shape_tasks(shapes)
        out = self.reconcile("--stale-seconds", "60")
        self.assertEqual(out, {"checked": 8, "updated": 8, "skipped": 0, "relaunched": 4})
        for rid, (shape, status, relaunched) in cases.items():
            it = self.item(rid)
            self.assertEqual(it["status"], status, rid)
            self.assertNotIn("active_shard", it)
            if relaunched:
                self.assert_relaunch(rid, rid + "-infra1", 1)
            else:
                self.assertNotIn("relaunched_as", it, rid)
                self.assertEqual(self.runtasks(rid + "-infra1"), [], rid)
            if status != "SUCCEEDED" and rid != "sc-cancel":
                self.assertEqual(it["stop_reason"], "%s: %s" % (shape["stopCode"], shape["stoppedReason"]))
        self.assertEqual(self.item("sc-cancel")["stop_reason"], "UserInitiated: nightly freeze")
        self.assertIn("exit code 137: OutOfMemoryError", self.item("sc-oom")["error_message"])

        # A second pass: the sources left the index, the retries are young - nothing to do.
        runtasks = len(self.L.proxy.calls("RunTask"))
        out = self.reconcile("--stale-seconds", "60")
        self.assertEqual(out["relaunched"], 0)
        self.assertEqual(out["updated"], 0)
        self.assertEqual(len(self.L.proxy.calls("RunTask")), runtasks)

        # A reconcile that died after the relaunch, before closing the source: run again, it
        # meets its own retry (same run id, same request) and starts no second task.
        self.update("sc-spot", {"status": "RUNNING", "active_shard": "1", "updated_at": iso(3600)},
                    remove=("relaunched_as", "completed_at"))
        out = self.reconcile("--stale-seconds", "60")
        self.assertEqual(out["relaunched"], 1)
        self.assertEqual(len(self.runtasks("sc-spot-infra1")), 1)
        self.assertEqual(len(self.L.proxy.calls("RunTask")), runtasks)
        self.assertEqual(self.item("sc-spot")["relaunched_as"], "sc-spot-infra1")

        # Along the chain: the retry is interrupted too (retry 2), then again (budget spent).
        nxt = "sc-spot-infra1"
        for k, expect in ((2, "sc-spot-infra1-infra2"), (3, None)):
            arn = self.item(nxt)["external_id"]
            self.agent_running(nxt)
            self.stop(arn)
            shapes[arn] = cases["sc-spot"][0]
            out = self.reconcile("--stale-seconds", "60")
            self.assertEqual(self.item(nxt)["status"], "FAILED")
            if expect:
                self.assertEqual(out["relaunched"], 1)
                self.assert_relaunch(nxt, expect, k)
                nxt = expect
            else:
                self.assertEqual(out["relaunched"], 0)
                self.assertNotIn("relaunched_as", self.item(nxt))

    def test_reconcile_runs_the_agent_ended_but_left_in_the_index(self):
        # The agent ended these itself (FAILED) but left the marker: an unrequested SIGTERM (Spot)
        # is relaunched; a task failure, a cancel and a success only leave the index.
        cases = {
            "ag-spot": ("FAILED", "Worker shutdown requested via SIGTERM",
                        {"stopCode": "SpotInterruption", "stoppedReason": "interrupted", "exitCode": 143}),
            "ag-gone": ("FAILED", "Worker shutdown requested via SIGTERM", None),
            "ag-fail": ("FAILED", "task extract failed",
                        {"stopCode": "EssentialContainerExited", "stoppedReason": "exited", "exitCode": 1}),
            "ag-cxl": ("CANCELLED", "Worker shutdown requested via SIGTERM",
                       {"stopCode": "UserInitiated", "stoppedReason": "x", "exitCode": 143}),
            "ag-ok": ("SUCCEEDED", None, {"stopCode": "EssentialContainerExited", "exitCode": 0}),
        }
        shapes = {}
        for rid, (status, msg, shape) in cases.items():
            arn = self.run_ok(rid)
            attrs = {"status": status, "status_seq": 9}
            if msg:
                attrs["error_message"] = msg
            self.update(rid, attrs, remove=() if shape else ("external_id",))
            if shape:
                self.stop(arn)
                shapes[arn] = shape
        self.L.proxy.rewrite = shape_tasks(shapes)
        out = self.reconcile("--stale-seconds", "100000")
        self.assertEqual(out["relaunched"], 2)
        for rid, (status, msg, shape) in cases.items():
            it = self.item(rid)
            self.assertEqual(it["status"], status, rid)
            self.assertNotIn("active_shard", it, rid)
            if rid in ("ag-spot", "ag-gone"):
                self.assertEqual(it["relaunched_as"], rid + "-infra1")
                self.assertEqual(self.item(rid + "-infra1")["resume_from"], rid)
            else:
                self.assertNotIn("relaunched_as", it, rid)
        self.assertEqual(self.item("ag-spot")["stop_reason"], "SpotInterruption: interrupted")
        self.assertEqual(self.reconcile("--stale-seconds", "100000")["relaunched"], 0)

    def test_reconcile_start_timeout_and_launch_grace(self):
        # A task that stays PENDING: stopped, FAILED TaskFailedToStart, relaunched.
        arn = self.run_ok("st-pending")
        self.update("st-pending", {"created_at": iso(3600), "updated_at": iso(3600)})
        # QUEUED without any task, long ago / past the grace / within the grace.
        for rid, ago in (("st-noarn", 3600), ("st-young", 200), ("st-fresh", 30)):
            self.run_ok(rid)
            self.update(rid, {"created_at": iso(ago), "updated_at": iso(ago)}, remove=("external_id",))
        self.L.proxy.rewrite = shape_tasks({arn: {"lastStatus": "PENDING"}})
        stops = len(self.L.proxy.calls("StopTask"))
        self.reconcile("--stale-seconds", "100000")
        p = self.item("st-pending")
        self.assertEqual(p["stop_reason"], "TaskFailedToStart: not RUNNING within 600 s (PENDING)")
        self.assertEqual([b["task"] for b in self.L.proxy.calls("StopTask")[stops:]], [arn])
        self.assert_relaunch("st-pending", "st-pending-infra1", 1)
        self.assertTrue(self.item("st-noarn")["stop_reason"].startswith("TaskFailedToStart: no ECS task"))
        self.assert_relaunch("st-noarn", "st-noarn-infra1", 1)
        self.assertEqual(self.item("st-young")["status"], "QUEUED")  # within --start-timeout
        self.assertEqual(self.item("st-fresh")["status"], "QUEUED")
        # --start-timeout 0 still never touches a launch within the 120 s grace.
        self.reconcile("--stale-seconds", "100000", "--start-timeout", "0")
        self.assert_relaunch("st-young", "st-young-infra1", 1)
        self.assertEqual(self.item("st-fresh")["status"], "QUEUED")

    def test_reconcile_reads_only_the_active_runs(self):
        env = dict(self.env, DAGY_RUNS_TABLE="BIG_RUNS", DAGY_TASK_RUNS_TABLE="BIG_TASK_RUNS")
        self.assertEqual(self.L.launch("init-tables", env=env).returncode, 0)
        ddb = self.L.moto.client("dynamodb")
        items = []
        for i in range(500):
            it = {"run_id": {"S": "hist-%03d" % i}, "executor": {"S": "ecs"}, "updated_at": {"S": OLD},
                  "status": {"S": "SUCCEEDED"}, "flow_name": {"S": "etl"}}
            if i in (7, 250, 499):
                it["status"] = {"S": "RUNNING"}
                it["active_shard"] = {"S": "1"}
                it["external_id"] = {"S": "arn:aws:ecs:us-east-1:123456789012:task/dagy/gone%d" % i}
            items.append({"PutRequest": {"Item": it}})
        for k in range(0, 500, 25):
            ddb.batch_write_item(RequestItems={"BIG_RUNS": items[k:k + 25]})
        seen = []
        with recproxy.RecProxy(self.L.moto.endpoint) as rp:
            rp.rewrite = lambda op, req, resp: seen.append((op, resp.get("ScannedCount"), resp.get("Count")))
            r = self.L.launch("reconcile", "--relaunch-infra", "0",
                              env=dict(env, AWS_ENDPOINT_URL_DYNAMODB=rp.endpoint))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.json["checked"], 3)
        self.assertEqual(r.json["updated"], 3)
        self.assertEqual([op for op, _, _ in seen if op in ("Scan", "Query")], ["Query"])
        self.assertEqual([(s, c) for op, s, c in seen if op == "Query"], [(3, 3)])

    # -- cancel --

    def test_cancel_queued_running_and_ended(self):
        # QUEUED with a task that never started: CANCELLED at once, its task stopped.
        arn = self.run_ok("cx-q")
        r = self.launch("cancel", "cx-q", "--reason", "wrong params")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual((r.json["status"], r.json["task_arn"]), ("CANCELLED", arn))
        it = self.item("cx-q")
        self.assertEqual((it["status"], it["stop_reason"], it["cancel_reason"]),
                         ("CANCELLED", "UserInitiated: wrong params", "wrong params"))
        self.assertIn("cancel_requested_at", it)
        self.assertNotIn("active_shard", it)
        self.assertEqual(self.L.proxy.calls("StopTask")[-1], {"cluster": self.L.cluster, "task": arn,
                                                              "reason": "wrong params"})
        again = self.launch("cancel", "cx-q")
        self.assertEqual(again.returncode, 0)
        self.assertEqual(again.json["message"], "already cancelled")
        # QUEUED without a task (a launch that died before RunTask): CANCELLED, and the same
        # launch run again is refused.
        self.run_ok("cx-n", "--param", "p=1")
        self.update("cx-n", remove=("external_id",))
        stops = len(self.L.proxy.calls("StopTask"))
        r = self.launch("cancel", "cx-n")
        self.assertEqual((r.returncode, r.json["status"]), (0, "CANCELLED"))
        self.assertEqual(len(self.L.proxy.calls("StopTask")), stops)
        self.assertEqual(self.item("cx-n")["stop_reason"], "UserInitiated: cancel requested")
        r = self.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "cx-n", "--param", "p=1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("CANCELLED", r.json["error_message"])
        # RUNNING: the request is recorded, the task stopped; the agent (here: reconcile, as for
        # an agent that died first) ends it CANCELLED, and nothing is relaunched.
        arn = self.run_ok("cx-r")
        self.agent_running("cx-r", ago=0)
        r = self.launch("cancel", "cx-r", "--reason", "maintenance")
        self.assertEqual((r.returncode, r.json["status"]), (0, "RUNNING"))
        it = self.item("cx-r")
        self.assertEqual((it["status"], it["cancel_reason"]), ("RUNNING", "maintenance"))
        self.assertEqual(self.L.proxy.calls("StopTask")[-1]["task"], arn)
        self.L.proxy.rewrite = shape_tasks({arn: {"stopCode": "UserInitiated", "stoppedReason": "maintenance",
                                                  "exitCode": 143}})
        out = self.reconcile("--stale-seconds", "0")
        it = self.item("cx-r")
        self.assertEqual((it["status"], it["stop_reason"]), ("CANCELLED", "UserInitiated: maintenance"))
        self.assertEqual(out["relaunched"], 0)
        self.assertIsNone(self.item("cx-r-infra1"))
        # Ended or unknown runs; a reason ECS would not keep.
        self.update("cx-q", {"status": "SUCCEEDED"})
        r = self.launch("cancel", "cx-q")
        self.assertEqual(r.returncode, 1)
        self.assertIn("already ended", r.stderr)
        self.assertEqual(self.launch("cancel", "cx-nosuch").returncode, 1)
        self.assertEqual(self.launch("cancel", "cx-r", "--reason", "a\nb").returncode, 2)
        self.assertEqual(self.launch("cancel", "..").returncode, 2)
        self.assertEqual(self.launch("cancel").returncode, 2)

    def test_cancel_all_running_of_one_flow(self):
        for rid, flow in (("ka-1", "etl2"), ("ka-2", "etl2"), ("ka-3", "etl")):
            self.run_ok(rid, flow=flow)
            self.agent_running(rid, ago=0)
        r = self.launch("cancel", "--all-running", "--flow", "etl2", "--reason", "kill switch")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(x["run_id"] for x in r.json), ["ka-1", "ka-2"])
        for rid in ("ka-1", "ka-2"):
            self.assertEqual(self.item(rid)["cancel_reason"], "kill switch")
        self.assertNotIn("cancel_requested_at", self.item("ka-3"))

    # -- retry, status, result --

    def test_retry_repeats_the_launch_exactly(self):
        arn = self.run_ok("rt-src", "--param", "day=mon", "--env", "X_FOO=1", "--profile", "medium",
                          "--ephemeral-storage", "30", "--correlation-id", "corr-rt")
        src = self.item("rt-src")
        r = self.launch("retry", "rt-src")
        self.assertEqual(r.returncode, 2)
        self.assertIn("still QUEUED", r.stderr)
        self.update("rt-src", {"status": "FAILED"})
        r, _ = self.L.register("etl", "1.1.0", env=self.env)  # a newer latest: not the retry's
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.launch("retry", "rt-src")
        self.assertEqual(r.returncode, 0, r.stderr)
        new = r.json["run_id"]
        self.assertTrue(r.json["success"])
        self.assertEqual((r.json["flow_version"], r.json["correlation_id"]), ("1.0.0", "corr-rt"))
        it = self.item(new)
        self.assertEqual((it["retry_of"], it["resume_from"], it["infra_retries"]), ("rt-src", "rt-src", 0))
        for k in ("flow_version", "parameters", "extra_env", "artifact_s3_uri", "cpu", "memory",
                  "ephemeral_storage_gib", "org_id"):
            self.assertEqual(it[k], src[k], k)
        task, old = self.L.describe_task(r.json["task_arn"]), self.L.describe_task(arn)
        env, old_env = container_env(task), container_env(old)
        self.assertEqual(env["DAGY_RESUME_FROM"], "rt-src")
        for k in ("DAGY_FLOW_VERSION", "DAGY_ARTIFACT_S3_URI", "DAGY_PARAMETERS", "X_FOO",
                  "DAGY_CORRELATION_ID", "DAGY_RESULTS_BUCKET"):
            self.assertEqual(env[k], old_env[k], k)
        self.assertEqual(env["DAGY_RESULTS_BUCKET"], launchenv.TRACES)
        self.assertEqual((task["overrides"]["cpu"], task["overrides"]["memory"]), ("1024", "2048"))
        self.assertEqual(task["overrides"]["ephemeralStorage"]["sizeInGiB"], 30)
        # --all: everything again; a fixed run id makes it idempotent.
        for _ in range(2):
            r = self.launch("retry", "rt-src", "--all", "--run-id", "rt-all", "--correlation-id", "c2")
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.runtasks("rt-all")), 1)
        it = self.item("rt-all")
        self.assertNotIn("resume_from", it)
        self.assertEqual((it["retry_of"], it["correlation_id"]), ("rt-src", "c2"))
        self.assertNotIn("DAGY_RESUME_FROM", container_env(self.L.describe_task(r.json["task_arn"])))
        # status shows the chain.
        self.update("rt-all", {"status": "FAILED"})
        r = self.launch("retry", "rt-all", "--run-id", "rt-3")
        self.assertEqual(r.returncode, 0, r.stderr)
        st = self.launch("status", "rt-3")
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertEqual(st.json["retry_chain"], [{"run_id": "rt-all", "status": "FAILED"},
                                                  {"run_id": "rt-src", "status": "FAILED"}])
        # A succeeded run is retried only with --all; unknown runs and bad ids are refused.
        self.update("rt-3", {"status": "SUCCEEDED"})
        r = self.launch("retry", "rt-3")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--all", r.stderr)
        self.assertEqual(self.launch("retry", "rt-nosuch").returncode, 1)
        # Another version is a new run (every task_hash covers the artifact): refused.
        r = self.launch("retry", "rt-3", "--all", "--flow-version", "1.1.0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("exact version", r.stderr)
        self.assertEqual(self.launch("retry", "..").returncode, 2)

    def test_status_tasks_and_result_verified(self):
        self.run_ok("res-1")
        s3, ddb = self.L.moto.client("s3"), self.L.moto.client("dynamodb")
        data = b'{"rows": 3, "note": "\xc3\xa9"}'
        good = hashlib.sha256(data).hexdigest()
        for task, key in (("A", "results/acme/res-1/A.json"), ("B", "results/acme/res-1/B.json")):
            s3.put_object(Bucket=launchenv.TRACES, Key=key, Body=data)
        for task, sha, extra in (("A", good, {}), ("B", "0" * 64, {}), ("C", None, {}),
                                 ("D", good, {"reused_from": {"S": "res-0"}})):
            it = {"run_id": {"S": "res-1"}, "task_name": {"S": task}, "status": {"S": "SUCCEEDED"}}
            if sha:
                key = "results/acme/res-1/%s.json" % ("A" if task == "D" else task)
                it["result_s3_uri"] = {"S": "s3://%s/%s" % (launchenv.TRACES, key)}
                it["result_sha256"] = {"S": sha}
            it.update(extra)
            ddb.put_item(TableName="DAGY_TASK_RUNS", Item=it)
        st = self.launch("status", "res-1")
        self.assertEqual(st.returncode, 0, st.stderr)
        tasks = {t["task_name"]: t for t in st.json["tasks"]}
        self.assertEqual(sorted(tasks), ["A", "B", "C", "D"])
        self.assertEqual(tasks["A"]["result_s3_uri"], "s3://dagy-traces/results/acme/res-1/A.json")
        self.assertEqual(st.json["tasks_reused"], 1)
        self.assertEqual(st.json["retry_chain"], [])
        r = launchenv.awsenv.subprocess.run([launchenv.LAUNCH, "result", "res-1", "A"], env=self.env,
                                            capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, data)
        r = self.launch("result", "res-1", "B")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertIn("does not match its result_sha256", r.stderr)
        r = self.launch("result", "res-1", "C")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no stored result", r.stderr)
        self.assertEqual(self.launch("result", "res-1", "Z").returncode, 1)
        self.assertEqual(self.launch("result", "res-1", "..").returncode, 2)
        self.assertEqual(self.launch("result", "res-1").returncode, 2)


class IndexMigrationTest(unittest.TestCase):
    def test_init_tables_adds_the_index_to_an_existing_table(self):
        with launchenv.LaunchEnv() as L:
            L.moto.create_status_tables("OLD_RUNS", "OLD_TASK_RUNS")
            ddb = L.moto.client("dynamodb")
            for rid, st in (("m-run", "RUNNING"), ("m-q", "QUEUED"), ("m-done", "SUCCEEDED")):
                ddb.put_item(TableName="OLD_RUNS", Item={"run_id": {"S": rid}, "status": {"S": st},
                                                         "executor": {"S": "ecs"}, "updated_at": {"S": OLD}})
            env = L.env(DAGY_RUNS_TABLE="OLD_RUNS", DAGY_TASK_RUNS_TABLE="OLD_TASK_RUNS")
            r = L.launch("reconcile", env=env)
            self.assertEqual(r.returncode, 1)
            self.assertIn("run dagy-launch init-tables to add the index active_runs", r.stderr)
            r = L.launch("init-tables", env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("OLD_RUNS", r.json["existing"])
            self.assertEqual(r.json["index_added"], {"table": "OLD_RUNS", "index": "active_runs",
                                                     "active_runs_marked": 2})
            t = ddb.describe_table(TableName="OLD_RUNS")["Table"]
            self.assertEqual([g["IndexName"] for g in t["GlobalSecondaryIndexes"]], ["active_runs"])
            self.assertEqual(L.run_item("m-run", table="OLD_RUNS")["active_shard"], "1")
            self.assertNotIn("active_shard", L.run_item("m-done", table="OLD_RUNS"))
            r = L.launch("init-tables", env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn("index_added", r.json)
            r = L.launch("reconcile", "--relaunch-infra", "0", env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.json["checked"], 2)


if __name__ == "__main__":
    unittest.main()
