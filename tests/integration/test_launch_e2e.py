"""End to end as staging runs it: dagy-launch registers a flow and launches a run on (moto's)
ECS; then dagy-agent runs in container mode with exactly the environment of the launched task's
container overrides (plus the AWS access a task role would give) against the same moto; then
`dagy-launch status` shows the run SUCCEEDED, on the very item the launcher created QUEUED."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import launchenv  # noqa: E402
import recproxy  # noqa: E402
from launchenv import ORG, container_env  # noqa: E402

AGENT_READY = os.path.exists(launchenv.AGENT) and os.environ.get("DAGY_SKIP_AGENT_E2E") != "1"


@unittest.skipUnless(AGENT_READY, "dagy-agent binary not built (DAGY_AGENT)")
class LaunchThenAgentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()

    @classmethod
    def tearDownClass(cls):
        cls.L.stop()

    def test_launch_then_agent_then_status_succeeded(self):
        L = self.L
        r = L.launch("init-tables")
        self.assertEqual(r.returncode, 0, r.stderr)
        tasks = [
            {"name": "extract", "command": ["sh", "-c", "echo extract {{ parameters.date }} > out.txt"]},
            {"name": "load", "command": ["sh", "-c", "test \"$DAGY_RUN_ID\" = \"{{ run_id }}\""],
             "upstream": ["extract"]},
        ]
        r, sha = L.register("e2e_flow", "1.0.0", tasks=tasks)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = L.launch("run", "--flow", "e2e_flow", "--org", ORG, "--param", "date=2024-03-14",
                     "--correlation-id", "e2e-corr")
        self.assertEqual(r.returncode, 0, r.stderr)
        run_id, arn = r.json["run_id"], r.json["task_arn"]
        self.assertEqual(L.run_item(run_id)["status"], "QUEUED")
        self.assertEqual(L.run_item(run_id).get("active_shard"), "1")

        # The container's environment, as ECS would give it: the overrides, nothing else from
        # the launcher; AWS access and endpoint stand in for the task role and the VPC.
        env = container_env(L.describe_task(arn))
        self.assertEqual(env["DAGY_ARTIFACT_S3_URI"].split("#sha256=")[1], sha)
        with launchenv.tempfile.TemporaryDirectory(prefix="dagy-e2e-") as work:
            agent_env = L.moto.env(**env)
            agent_env["DAGY_WORK_DIR"] = work
            agent_env["DAGY_HEARTBEAT_SECONDS"] = "1"
            a = awsenv.run([launchenv.AGENT], env=agent_env, timeout=120, cwd=work)
        self.assertEqual(a.returncode, 0, "agent failed:\nstdout: %s\nstderr: %s" % (a.stdout[-4000:], a.stderr[-4000:]))
        lines = [json.loads(x) for x in a.stdout.splitlines() if x.startswith("{")]
        self.assertTrue(lines)
        self.assertTrue(all(x.get("correlation_id") == "e2e-corr" for x in lines))
        self.assertTrue(all(x.get("run_id") == run_id for x in lines))

        st = L.launch("status", run_id)
        self.assertEqual(st.returncode, 0, st.stderr)
        self.assertEqual(st.json["status"], "SUCCEEDED", st.json)
        self.assertEqual(st.json["flow_version"], "1.0.0")
        self.assertEqual(st.json["correlation_id"], "e2e-corr")
        self.assertEqual(st.json["executor"], "ecs")  # the launcher's attributes survive
        self.assertEqual(st.json["external_id"], arn)
        self.assertGreater(st.json["status_seq"], 0)
        self.assertEqual(st.json.get("tasks_succeeded"), 2)
        # The agent's terminal write takes the run out of the active-runs index itself.
        self.assertNotIn("active_shard", L.run_item(run_id))

        # The reconciler leaves a finished run alone even after its task stopped.
        L.moto.client("ecs").stop_task(cluster=L.cluster, task=arn, reason="done")
        rec = L.launch("reconcile", "--stale-seconds", "0")
        self.assertEqual(rec.returncode, 0, rec.stderr)
        self.assertEqual(L.launch("status", run_id).json["status"], "SUCCEEDED")
        for body in L.proxy.calls("RunTask"):
            recproxy.validate_ecs_request("RunTask", body)


if __name__ == "__main__":
    unittest.main()
