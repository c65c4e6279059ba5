"""End to end, durable runs as staging sees them: dagy-launch launches on (moto's) ECS, dagy-agent
runs in container mode with exactly the environment of the launched task's container overrides;
then `retry` resumes a failed run (the finished tasks are reused, proven by a side-effect file),
`status` shows the chain and `result` the stored results, `cancel` ends a running run CANCELLED
without a relaunch, and a SIGTERM nobody asked for is relaunched by `reconcile` as a resume.

ECS does not run containers here: the test plays ECS's part for the agent (starts it with the
task's environment, sends it SIGTERM where StopTask would) and shapes DescribeTasks answers with
the stop codes ECS would report. Needs an agent with --resume-from (the durable-runs agent)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import launchenv  # noqa: E402
import recproxy  # noqa: E402
from launchenv import ORG, container_env  # noqa: E402


def agent_resumes():
    if not os.path.exists(launchenv.AGENT) or os.environ.get("DAGY_SKIP_AGENT_E2E") == "1":
        return False
    r = subprocess.run([launchenv.AGENT, "--help"], capture_output=True, text=True, timeout=30)
    return "--resume-from" in r.stdout + r.stderr


@unittest.skipUnless(agent_resumes(), "dagy-agent without --resume-from (the durable-runs agent)")
class LaunchAgentDurableTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        cls.work = tempfile.TemporaryDirectory(prefix="dagy-e2e-durable-")
        try:
            r = cls.L.launch("init-tables")
            assert r.returncode == 0, r.stderr
            side = os.path.join(cls.work.name, "side-effects.txt")
            tasks = [
                {"name": "a", "command": ["sh", "-c", "echo a >> %s; echo '{\"n\": 1}' > \"$DAGY_TASK_OUTPUT\"" % side]},
                {"name": "b", "command": ["sh", "-c", "echo b >> %s; echo '{\"n\": 2}' > \"$DAGY_TASK_OUTPUT\"" % side],
                 "upstream": ["a"]},
                {"name": "c", "command": ["sh", "-c", "test \"{{ parameters.mode }}\" = ok"], "upstream": ["b"]},
            ]
            r, _ = cls.L.register("durable_flow", "1.0.0", tasks=tasks)
            assert r.returncode == 0, r.stderr
            r, _ = cls.L.register("slow_flow", "1.0.0", tasks=[
                {"name": "first", "command": ["sh", "-c", "echo '{}' > \"$DAGY_TASK_OUTPUT\""]},
                {"name": "sleepy", "command": ["sleep", "30"], "upstream": ["first"]}])
            assert r.returncode == 0, r.stderr
            cls.side = side
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.L.stop()
        cls.work.cleanup()

    def tearDown(self):
        self.L.proxy.rewrite = None
        for op in ("RunTask", "DescribeTasks", "StopTask"):
            for b in self.L.proxy.calls(op):
                recproxy.validate_ecs_request(op, b)

    def agent_env(self, task_arn):
        env = self.L.moto.env(**container_env(self.L.describe_task(task_arn)))
        env["DAGY_WORK_DIR"] = tempfile.mkdtemp(dir=self.work.name)
        env["DAGY_HEARTBEAT_SECONDS"] = "1"
        env["DAGY_DRAIN_SECONDS"] = "1"
        return env

    def run_agent(self, task_arn):
        env = self.agent_env(task_arn)
        return awsenv.run([launchenv.AGENT], env=env, timeout=120, cwd=env["DAGY_WORK_DIR"])

    def start_agent(self, task_arn):
        env = self.agent_env(task_arn)
        return subprocess.Popen([launchenv.AGENT], env=env, cwd=env["DAGY_WORK_DIR"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def wait_task_running(self, run_id, task, timeout=60):
        ddb = self.L.moto.client("dynamodb")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            it = ddb.get_item(TableName="DAGY_TASK_RUNS", ConsistentRead=True,
                              Key={"run_id": {"S": run_id}, "task_name": {"S": task}}).get("Item")
            if it and it.get("status", {}).get("S") == "RUNNING":
                return
            time.sleep(0.1)
        self.fail("task %s of %s never RUNNING" % (task, run_id))

    def sigterm(self, p):
        """SIGTERM to the agent, as ECS's StopTask would send; its exit code."""
        os.kill(p.pid, signal.SIGTERM)
        return p.wait(timeout=60)

    def stop_agent(self, p):
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)

    def shape_stop(self, arn, code, reason, exit_code):
        def rewrite(op, req, resp):
            if op == "DescribeTasks":
                for t in resp.get("tasks", []):
                    if t["taskArn"] == arn:
                        t["lastStatus"], t["stopCode"], t["stoppedReason"] = "STOPPED", code, reason
                        t["containers"][0]["exitCode"] = exit_code
            return None if op != "DescribeTasks" else resp
        self.L.proxy.rewrite = rewrite

    def test_failed_run_retried_resumes_and_status_shows_the_chain(self):
        L = self.L
        r = L.launch("run", "--flow", "durable_flow", "--org", ORG, "--param", "mode=broken", "--run-id", "e2d-1")
        self.assertEqual(r.returncode, 0, r.stderr)
        a = self.run_agent(r.json["task_arn"])
        self.assertEqual(a.returncode, 1, a.stdout[-3000:])
        with open(self.side) as f:
            self.assertEqual(f.read().split(), ["a", "b"])
        self.assertEqual(L.run_item("e2d-1")["status"], "FAILED")
        # Nothing fixed: the retry reuses a and b (not run again), runs c again.
        r = L.launch("retry", "e2d-1", "--run-id", "e2d-2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(container_env(L.describe_task(r.json["task_arn"]))["DAGY_RESUME_FROM"], "e2d-1")
        a = self.run_agent(r.json["task_arn"])
        self.assertEqual(a.returncode, 1, a.stdout[-3000:])
        with open(self.side) as f:
            self.assertEqual(f.read().split(), ["a", "b"])
        st = L.launch("status", "e2d-2")
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertEqual(st.json["retry_chain"], [{"run_id": "e2d-1", "status": "FAILED"}])
        self.assertEqual(st.json["tasks_reused"], 2)
        tasks = {t["task_name"]: t for t in st.json["tasks"]}
        self.assertEqual(tasks["a"]["reused_from"], "e2d-1")
        self.assertTrue(tasks["a"]["result_s3_uri"].startswith("s3://%s/results/" % launchenv.TRACES))
        res = subprocess.run([launchenv.LAUNCH, "result", "e2d-1", "b"], env=L.env(), capture_output=True,
                             timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(json.loads(res.stdout), {"n": 2})

    def test_cancel_ends_cancelled_and_reconcile_does_not_relaunch(self):
        L = self.L
        r = L.launch("run", "--flow", "slow_flow", "--org", ORG, "--run-id", "e2d-cx")
        self.assertEqual(r.returncode, 0, r.stderr)
        arn = r.json["task_arn"]
        p = self.start_agent(arn)
        try:
            self.wait_task_running("e2d-cx", "sleepy")
            c = L.launch("cancel", "e2d-cx", "--reason", "operator said so")
            self.assertEqual(c.returncode, 0, c.stderr)
            self.assertEqual(L.proxy.calls("StopTask")[-1]["task"], arn)
            self.assertEqual(self.sigterm(p), 143)
        finally:
            self.stop_agent(p)
        it = L.run_item("e2d-cx")
        self.assertEqual((it["status"], it["stop_reason"]), ("CANCELLED", "UserInitiated: operator said so"))
        self.shape_stop(arn, "UserInitiated", "operator said so", 143)
        rec = L.launch("reconcile", "--stale-seconds", "0")
        self.assertEqual(rec.returncode, 0, rec.stderr)
        self.assertEqual(rec.json["relaunched"], 0)
        self.assertIsNone(L.run_item("e2d-cx-infra1"))
        self.assertEqual(L.run_item("e2d-cx")["status"], "CANCELLED")

    def test_unrequested_sigterm_is_relaunched_as_a_resume(self):
        L = self.L
        r = L.launch("run", "--flow", "slow_flow", "--org", ORG, "--run-id", "e2d-st")
        self.assertEqual(r.returncode, 0, r.stderr)
        arn = r.json["task_arn"]
        p = self.start_agent(arn)
        try:
            self.wait_task_running("e2d-st", "sleepy")
            self.assertEqual(self.sigterm(p), 143)
        finally:
            self.stop_agent(p)
        it = L.run_item("e2d-st")
        self.assertEqual(it["status"], "FAILED")
        L.moto.client("ecs").stop_task(cluster=L.cluster, task=arn, reason="Your Spot Task was interrupted.")
        self.shape_stop(arn, "SpotInterruption", "Your Spot Task was interrupted.", 143)
        rec = L.launch("reconcile", "--stale-seconds", "0")
        self.assertEqual(rec.returncode, 0, rec.stderr)
        self.assertEqual(rec.json["relaunched"], 1)
        new = L.run_item("e2d-st-infra1")
        self.assertEqual((new["retry_of"], new["resume_from"], new["infra_retries"]), ("e2d-st", "e2d-st", 1))
        self.assertEqual(L.run_item("e2d-st")["relaunched_as"], "e2d-st-infra1")
        rec = L.launch("reconcile", "--stale-seconds", "0")
        self.assertEqual(rec.json["relaunched"], 0)


if __name__ == "__main__":
    unittest.main()
