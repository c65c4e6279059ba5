"""dagy-launch at the edges (issue 8): exactly-once launch across a lost PutItem answer and a
crash between the QUEUED write and RunTask, register-flow's conditional put likewise, the
reconciler leaving a launch in progress alone, and bounded concurrency of a batch.

DynamoDB goes through tests/integration/faultproxy.py (which can forward a request, let moto
apply it, then drop the connection before the answer); ECS through the recording proxy of
launchenv. Signatures are enforced by moto; every DynamoDB and ECS body the launcher sent is
validated against botocore's service models."""

import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import faultproxy  # noqa: E402
import launchenv  # noqa: E402
import recproxy  # noqa: E402
from launchenv import ORG, container_env  # noqa: E402

PUT = "DynamoDB_20120810.PutItem"


def validate_ddb_bodies(proxy):
    """Every recorded DynamoDB JSON body fits botocore's DynamoDB input shapes."""
    for _method, _path, headers, body in proxy.bodies:
        op = headers.get("x-amz-target", "").rsplit(".", 1)[-1]
        if op:
            recproxy.validate_request("dynamodb", op, json.loads(body or b"{}"))


class OnceMatch:
    """faultproxy match: the first `n` requests with X-Amz-Target `target` once armed."""

    def __init__(self, target, n=1):
        self.target, self.left, self.hits = target, 0, 0
        self.n = n
        self.lock = threading.Lock()

    def arm(self):
        with self.lock:
            self.left = self.n

    def __call__(self, method, path, headers):
        if headers.get("X-Amz-Target") != self.target:
            return False
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            self.hits += 1
            return True


class PeakProxy(faultproxy.FaultProxy):
    """A fault proxy that also measures the peak number of requests in flight at once."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.inflight = self.peak = 0
        self.plock = threading.Lock()

    def handler_class(self):
        base, outer = super().handler_class(), self

        class Handler(base):
            def _handle(self):
                with outer.plock:
                    outer.inflight += 1
                    outer.peak = max(outer.peak, outer.inflight)
                try:
                    return base._handle(self)
                finally:
                    with outer.plock:
                        outer.inflight -= 1

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        return Handler


class LaunchHardeningTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        try:
            cls.put_once = OnceMatch(PUT)
            cls.fp = faultproxy.FaultProxy(cls.L.moto.endpoint, rates={"reset_after": 1.0},
                                           match=cls.put_once, record_bodies=True).start()
            cls.env = cls.L.env(AWS_ENDPOINT_URL_DYNAMODB=cls.fp.url)
            r = cls.L.launch("init-tables", env=cls.env)
            assert r.returncode == 0, r.stderr
            r, _ = cls.L.register("etl", "1.0.0", env=cls.env)
            assert r.returncode == 0, r.stderr
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "fp", None):
            cls.fp.stop()
        cls.L.stop()

    def launch(self, *args, env=None):
        return self.L.launch(*args, env=env or self.env)

    def runtasks(self, run_id):
        return [b for b in self.L.proxy.calls("RunTask") if b["clientToken"] == run_id]

    def test_put_answer_lost_still_launches_exactly_once(self):
        # moto applies the QUEUED PutItem, the answer is lost, the retry meets the condition.
        self.put_once.arm()
        hits = self.put_once.hits
        r = self.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "blip-1", "--param", "a=1")
        self.assertEqual(self.put_once.hits, hits + 1, "the fault was not injected")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.json["success"], r.json)
        self.assertEqual(len(self.runtasks("blip-1")), 1)
        item = self.L.run_item("blip-1")
        self.assertEqual(item["external_id"], r.json["task_arn"])
        self.assertEqual(item["status"], "QUEUED")
        self.assertRegex(item["launch_request_sha256"], r"^[0-9a-f]{64}$")
        # The same request again: the existing task, nothing new.
        again = self.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "blip-1", "--param", "a=1")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(again.json["task_arn"], r.json["task_arn"])
        self.assertEqual(len(self.runtasks("blip-1")), 1)
        validate_ddb_bodies(self.fp)

    def test_relaunch_after_crash_between_put_and_runtask_continues(self):
        # RunTask is held for 30 s at a second fault proxy; the launcher is killed meanwhile.
        hold = OnceMatch("AmazonEC2ContainerServiceV20141113.RunTask")
        hold.arm()
        slow = faultproxy.FaultProxy(self.L.proxy.endpoint, rates={"delay": 1.0}, delay_s=30,
                                     match=hold).start()
        try:
            env = dict(self.env, AWS_ENDPOINT_URL_ECS=slow.url)
            argv = [launchenv.LAUNCH, "run", "--flow", "etl", "--org", ORG, "--run-id", "crash-1",
                    "--param", "k=v"]
            p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
            try:
                deadline = time.monotonic() + 30
                while self.L.run_item("crash-1") is None or hold.hits == 0:
                    self.assertLess(time.monotonic(), deadline, "the launcher never wrote QUEUED")
                    time.sleep(0.05)
            finally:
                p.kill()
                p.wait(timeout=10)
        finally:
            slow.stop()
        item = self.L.run_item("crash-1")
        self.assertEqual(item["status"], "QUEUED")
        self.assertNotIn("external_id", item)
        # The same launch again: RunTask with the same clientToken, the run item's correlation id.
        r = self.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "crash-1", "--param", "k=v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.json["success"])
        self.assertEqual(r.json["correlation_id"], item["correlation_id"])
        self.assertEqual(self.L.run_item("crash-1")["external_id"], r.json["task_arn"])
        env = container_env(self.L.describe_task(r.json["task_arn"]))
        self.assertEqual(env["DAGY_CORRELATION_ID"], item["correlation_id"])
        for b in self.runtasks("crash-1"):
            recproxy.validate_ecs_request("RunTask", b)

    def test_relaunch_with_a_different_request_is_refused(self):
        r = self.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "diff-1", "--param", "x=1")
        self.assertEqual(r.returncode, 0, r.stderr)
        tasks = len(self.L.proxy.calls("RunTask"))
        for extra in (["--param", "x=2"], ["--profile", "large"], ["--env", "FOO=bar"]):
            r2 = self.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "diff-1", "--param", "x=1", *extra)
            self.assertEqual(r2.returncode, 1, extra)
            self.assertFalse(r2.json["success"])
            self.assertIn("different launch request", r2.json["error_message"])
            self.assertIn("diff-1", r2.stderr)
        self.assertEqual(len(self.L.proxy.calls("RunTask")), tasks)
        self.assertEqual(self.L.run_item("diff-1")["external_id"], r.json["task_arn"])
        # A QUEUED item of someone else's request (no task yet) is not taken over either.
        self.L.moto.client("dynamodb").put_item(TableName="DAGY_RUNS", Item={
            "run_id": {"S": "diff-2"}, "status": {"S": "QUEUED"}, "status_seq": {"N": "0"},
            "launch_request_sha256": {"S": "0" * 64}})
        r3 = self.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "diff-2")
        self.assertEqual(r3.returncode, 1)
        self.assertIn("different launch request", r3.json["error_message"])
        self.assertEqual(self.runtasks("diff-2"), [])

    def test_register_flow_put_answer_lost_is_idempotent(self):
        self.put_once.arm()
        hits = self.put_once.hits
        r, sha = self.L.register("blipflow", "1.0.0", env=self.env)
        self.assertEqual(self.put_once.hits, hits + 1, "the fault was not injected")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.json["artifact_sha256"], sha)
        it = self.L.moto.client("dynamodb").get_item(
            TableName="DAGY_FLOWS", Key={"flow_name": {"S": "blipflow"}, "flow_version": {"S": "1.0.0"}})["Item"]
        self.assertEqual(it["artifact_sha256"]["S"], sha)
        # Registered for another org: refused, even with the same artifact.
        p = self.L.path("blipflow-1.0.0.zip")
        r = self.launch("register-flow", "--artifact", p, "--flow", "blipflow", "--flow-version", "1.0.0",
                        "--org", "other-org")
        self.assertEqual(r.returncode, 2)
        self.assertIn("org", r.stderr)

    def test_reconcile_stale_0_leaves_a_launch_in_progress_alone(self):
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        old = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 3600))
        ddb = self.L.moto.client("dynamodb")
        for rid, created in (("inflight-1", now), ("inflight-old", old)):
            ddb.put_item(TableName="DAGY_RUNS", Item={
                "run_id": {"S": rid}, "status": {"S": "QUEUED"}, "status_seq": {"N": "0"},
                "executor": {"S": "ecs"}, "active_shard": {"S": "1"},
                "created_at": {"S": created}, "updated_at": {"S": created}})
        r = self.launch("reconcile", "--stale-seconds", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.L.run_item("inflight-1")["status"], "QUEUED")
        self.assertEqual(self.L.run_item("inflight-old")["status"], "FAILED")


class BatchConcurrencyTest(unittest.TestCase):
    def test_batch_keeps_requests_in_flight_bounded(self):
        with launchenv.LaunchEnv() as L:
            with PeakProxy(L.moto.endpoint, rates={"delay": 1.0}, delay_s=0.05) as pp:
                env = L.env(AWS_ENDPOINT_URL_DYNAMODB=pp.url)
                self.assertEqual(L.launch("init-tables", env=env).returncode, 0)
                r, _ = L.register("etl", "1.0.0", env=env)
                self.assertEqual(r.returncode, 0, r.stderr)
                f = L.path("many.json")
                with open(f, "w") as fh:
                    json.dump([{"flow_name": "etl", "parameters": {"i": str(i)}} for i in range(60)], fh)
                pp.peak = 0
                r = L.launch("batch", "--file", f, "--org", ORG, env=env, timeout=300)
                self.assertEqual(r.returncode, 0, r.stderr[-2000:])
                self.assertEqual(len(r.json), 60)
                self.assertTrue(all(x["success"] for x in r.json))
                self.assertLessEqual(pp.peak, 16, "DynamoDB requests in flight at once")
                self.assertGreater(pp.peak, 1, "the batch should still run launches concurrently")


if __name__ == "__main__":
    unittest.main()
