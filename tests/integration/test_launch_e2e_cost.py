"""End to end, the cost of a launched run: `dagy-launch run --profile xlarge` on (moto's) ECS,
then dagy-agent in container mode with exactly the launched container's environment and a
loopback task metadata endpoint answering the profile's Limits (as Fargate would): `dagy-launch
status` shows estimated_cost_usd at the Fargate price of the documented table (docs/operations.md
section 9), to the cent and to the millionth.

Spot cannot be launched on moto (its RunTask with a capacityProviderStrategy wants EC2 container
instances: HTTP 500): that the launcher passes DAGY_CAPACITY_PROVIDER is tested in
tests/unit/test_launch.c, and that the agent prices it in test_agent_metrics.py."""

import json
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import launchenv  # noqa: E402
from launchenv import ORG, container_env  # noqa: E402
from test_agent_metrics import Metadata, task_metadata  # noqa: E402

AGENT_READY = os.path.exists(launchenv.AGENT) and os.environ.get("DAGY_SKIP_AGENT_E2E") != "1"
FARGATE_X86 = (0.04048, 0.004445)  # per vCPU-hour, per GB-hour (docs/operations.md)


@unittest.skipUnless(AGENT_READY and os.uname().machine == "x86_64",
                     "needs the dagy-agent binary on x86_64 (the test prices x86)")
class LaunchedRunCostTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()

    @classmethod
    def tearDownClass(cls):
        cls.L.stop()

    def test_launched_run_records_the_profile_price(self):
        L = self.L
        self.assertEqual(L.launch("init-tables").returncode, 0)
        r, _ = L.register("costed_flow", "1.0.0", tasks=[{"name": "t", "command": ["true"]}])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = L.launch("run", "--flow", "costed_flow", "--org", ORG, "--profile", "xlarge")
        self.assertEqual(r.returncode, 0, r.stderr)
        env = container_env(L.describe_task(r.json["task_arn"]))
        self.assertNotIn("DAGY_CAPACITY_PROVIDER", env)  # launch type FARGATE
        # xlarge = 4096 CPU units / 8192 MiB: Fargate reports 4 vCPUs.
        with Metadata(task_metadata(cpu=4, memory=8192, reserved_mib=20496)) as meta, \
                launchenv.tempfile.TemporaryDirectory(prefix="dagy-e2e-cost-") as work:
            agent_env = L.moto.env(**env)
            agent_env.update({"DAGY_WORK_DIR": work,
                              "ECS_CONTAINER_METADATA_URI_V4": meta.endpoint + "/v4/x"})
            a = awsenv.run([launchenv.AGENT], env=agent_env, timeout=120, cwd=work)
        self.assertEqual(a.returncode, 0, a.stdout[-3000:] + a.stderr[-2000:])
        st = L.launch("status", r.json["run_id"])
        self.assertEqual(st.returncode, 0, st.stderr)
        billed = max(60, math.ceil(st.json["duration_seconds"]))
        want = round((4 * FARGATE_X86[0] + 8 * FARGATE_X86[1]) * billed / 3600, 6)
        self.assertEqual(round(st.json["estimated_cost_usd"], 2), round(want, 2))
        self.assertAlmostEqual(st.json["estimated_cost_usd"], want, places=6)
        end = json.loads(a.stdout.splitlines()[-1])
        self.assertEqual(end["estimated_cost_usd"], st.json["estimated_cost_usd"])


if __name__ == "__main__":
    unittest.main()
