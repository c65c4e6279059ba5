"""dagy-launch against moto_server (signatures enforced), with ECS behind a recording proxy so
every RunTask request body is also validated against botocore's ECS service model."""

import hashlib
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launchenv  # noqa: E402
import recproxy  # noqa: E402
from launchenv import ORG, container_env, tags  # noqa: E402

SUBCOMMANDS = ["run", "batch", "status", "reconcile", "init-tables", "register-flow", "retry", "cancel",
               "result"]


class LaunchMotoTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        r = cls.L.launch("init-tables")
        if r.returncode != 0:
            cls.L.stop()
            raise RuntimeError("init-tables failed: " + r.stderr)
        cls.first_init = r.json
        r, cls.etl_sha = cls.L.register("etl", "1.0.0")
        if r.returncode != 0:
            cls.L.stop()
            raise RuntimeError("register-flow failed: " + r.stderr)

    @classmethod
    def tearDownClass(cls):
        cls.L.stop()

    # -- helpers --

    def run_ok(self, *args, env=None):
        r = self.L.launch(*args, env=env)
        self.assertEqual(r.returncode, 0, "%s\nstdout: %s\nstderr: %s" % (args, r.stdout, r.stderr))
        return r.json

    def assert_runtask_bodies_valid(self):
        """Every RunTask body seen so far fits botocore's ECS RunTask input shape."""
        bodies = self.L.proxy.calls("RunTask")
        for b in bodies:
            recproxy.validate_ecs_request("RunTask", b)
        return bodies

    def runtask_count(self):
        return len(self.L.proxy.calls("RunTask"))

    # -- subcommands --

    def test_help_for_every_subcommand(self):
        for cmd in SUBCOMMANDS:
            r = self.L.launch(cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertIn("usage: dagy-launch " + cmd, r.stdout)
        r = self.L.launch("--help")
        self.assertEqual(r.returncode, 0)
        for cmd in SUBCOMMANDS:
            self.assertIn(cmd, r.stdout)
        self.assertEqual(self.L.launch("frobnicate").returncode, 2)
        self.assertEqual(self.L.launch("run", "--no-such-flag").returncode, 2)

    def test_init_tables_twice_is_idempotent(self):
        names = ["DAGY_RUNS", "DAGY_TASK_RUNS", "DAGY_FLOWS", "DAGY_DEPLOYMENTS", "DAGY_DEP_PACKAGES"]
        self.assertEqual(sorted(self.first_init["created"]), sorted(names))
        again = self.run_ok("init-tables")
        self.assertEqual(again["created"], [])
        self.assertEqual(sorted(again["existing"]), sorted(names))
        ddb = self.L.moto.client("dynamodb")
        keys = {
            t: {k["AttributeName"]: k["KeyType"] for k in ddb.describe_table(TableName=t)["Table"]["KeySchema"]}
            for t in names
        }
        self.assertEqual(keys["DAGY_TASK_RUNS"], {"run_id": "HASH", "task_name": "RANGE"})
        self.assertEqual(keys["DAGY_FLOWS"], {"flow_name": "HASH", "flow_version": "RANGE"})
        self.assertEqual(keys["DAGY_DEP_PACKAGES"], {"slug": "HASH"})
        billing = ddb.describe_table(TableName="DAGY_RUNS")["Table"]["BillingModeSummary"]
        self.assertEqual(billing["BillingMode"], "PAY_PER_REQUEST")

    def test_register_three_versions_latest_is_highest_semver(self):
        shas = {}
        for v in ["1.9.3", "1.10.0", "1.2.0"]:
            r, shas[v] = self.L.register("semver_flow", v)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.json["artifact_sha256"], shas[v])
        item = self.L.moto.client("dynamodb").get_item(
            TableName="DAGY_FLOWS", Key={"flow_name": {"S": "semver_flow"}, "flow_version": {"S": "1.10.0"}}
        )["Item"]
        self.assertEqual(item["artifact_sha256"]["S"], shas["1.10.0"])
        self.assertEqual(item["org_id"]["S"], ORG)
        self.assertEqual(json.loads(item["spec"]["S"])["version"], "1.10.0")
        uri = item["artifact_s3_uri"]["S"]
        self.assertEqual(uri, "s3://dagy-artifacts/flows/semver_flow/1.10.0/artifact.zip")
        body = self.L.moto.client("s3").get_object(
            Bucket="dagy-artifacts", Key="flows/semver_flow/1.10.0/artifact.zip"
        )["Body"].read()
        self.assertEqual(hashlib.sha256(body).hexdigest(), shas["1.10.0"])
        res = self.run_ok("run", "--flow", "semver_flow", "--org", ORG)
        self.assertEqual(res["flow_version"], "1.10.0")
        env = container_env(self.L.describe_task(res["task_arn"]))
        self.assertEqual(env["DAGY_ARTIFACT_S3_URI"], uri + "#sha256=" + shas["1.10.0"])
        self.assertEqual(env["DAGY_FLOW_VERSION"], "1.10.0")
        # An explicit version is honoured.
        res = self.run_ok("run", "--flow", "semver_flow", "--org", ORG, "--flow-version", "1.9.3")
        self.assertEqual(self.L.run_item(res["run_id"])["flow_version"], "1.9.3")
        self.assert_runtask_bodies_valid()

    def test_register_flow_is_immutable_and_checks_the_spec(self):
        r, _ = self.L.register("immut", "2.0.0")
        self.assertEqual(r.returncode, 0, r.stderr)
        # Same artifact again: a no-op.
        p = self.L.path("immut-2.0.0.zip")
        again = self.L.launch("register-flow", "--artifact", p, "--flow", "immut", "--flow-version", "2.0.0", "--org", ORG)
        self.assertEqual(again.returncode, 0, again.stderr)
        # Different content under the same version: refused.
        other = self.L.path("immut-other.zip")
        launchenv.make_artifact(other, "immut", "2.0.0", extra={"x.txt": "changed"})
        r = self.L.launch("register-flow", "--artifact", other, "--flow", "immut", "--flow-version", "2.0.0", "--org", ORG)
        self.assertEqual(r.returncode, 2)
        self.assertIn("already registered with a different artifact", r.stderr)
        # The spec's name must match --flow.
        r = self.L.launch("register-flow", "--artifact", other, "--flow", "not_immut", "--flow-version", "2.0.0", "--org", ORG)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--flow not_immut does not match", r.stderr)
        # A broken spec is refused before anything is uploaded.
        bad = self.L.path("bad.zip")
        launchenv.make_artifact(bad, "badspec", "1.0.0", tasks=[{"name": "a", "command": ["x"], "upstream": ["nope"]}])
        r = self.L.launch("register-flow", "--artifact", bad, "--flow", "badspec", "--flow-version", "1.0.0", "--org", ORG)
        self.assertEqual(r.returncode, 2)
        self.assertIn("nope", r.stderr)
        from botocore.exceptions import ClientError
        with self.assertRaises(ClientError):
            self.L.moto.client("s3").head_object(Bucket="dagy-artifacts", Key="flows/badspec/1.0.0/artifact.zip")

    def test_run_request_seen_through_describe_tasks(self):
        res = self.run_ok(
            "run", "--flow", "etl", "--org", ORG, "--param", "date=2024-03-14",
            "--params-json", '{"date": "overridden", "n": 3}', "--env", "DAGY_LOG_LEVEL=DEBUG",
            "--profile", "medium", "--ephemeral-storage", "50", "--environment", "staging",
            "--correlation-id", "req-123", "--trigger-source", "test", "--triggered-by", "unittest",
        )
        self.assertTrue(res["success"])
        self.assertIsNone(res["error_message"])
        self.assertEqual(res["correlation_id"], "req-123")
        task = self.L.describe_task(res["task_arn"])
        ov = task["overrides"]
        self.assertEqual((ov["cpu"], ov["memory"]), ("1024", "2048"))
        self.assertEqual(ov["ephemeralStorage"]["sizeInGiB"], 50)
        env = container_env(task)
        self.assertEqual(env["DAGY_RUN_ID"], res["run_id"])
        self.assertEqual(env["DAGY_FLOW_NAME"], "etl")
        self.assertEqual(env["DAGY_FLOW_VERSION"], "1.0.0")
        self.assertEqual(env["DAGY_ORG_ID"], ORG)
        self.assertEqual(env["DAGY_ENVIRONMENT"], "staging")
        self.assertEqual(env["DAGY_CORRELATION_ID"], "req-123")
        self.assertEqual(env["DAGY_TRACES_BUCKET"], "dagy-traces")
        self.assertEqual(env["DAGY_LOG_LEVEL"], "DEBUG")
        self.assertEqual(json.loads(env["DAGY_PARAMETERS"]), {"date": "2024-03-14", "n": 3})
        self.assertTrue(env["DAGY_ARTIFACT_S3_URI"].endswith("#sha256=" + self.etl_sha))
        self.assertEqual(
            tags(task),
            {"dagy:run_id": res["run_id"], "dagy:flow_name": "etl", "dagy:flow_version": "1.0.0",
             "dagy:org_id": ORG, "dagy:correlation_id": "req-123"},
        )
        self.assertEqual(task["startedBy"], "dagy-launch")
        self.assertEqual(task["launchType"], "FARGATE")
        body = [b for b in self.assert_runtask_bodies_valid() if b["clientToken"] == res["run_id"]]
        self.assertEqual(len(body), 1)
        vpc = body[0]["networkConfiguration"]["awsvpcConfiguration"]
        self.assertEqual((vpc["subnets"], vpc["securityGroups"], vpc["assignPublicIp"]),
                         ([self.L.subnet], [self.L.sg], "DISABLED"))
        item = self.L.run_item(res["run_id"])
        self.assertEqual(item["status"], "QUEUED")
        self.assertEqual(item["status_seq"], 0)
        self.assertEqual(item["executor"], "ecs")
        self.assertEqual(item["external_id"], res["task_arn"])
        self.assertEqual(json.loads(item["parameters"]), {"date": "2024-03-14", "n": 3})
        self.assertEqual((item["trigger_source"], item["triggered_by"]), ("test", "unittest"))
        self.assertEqual(item["environment"], "staging")
        self.assertRegex(item["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        # status prints the same item.
        st = self.run_ok("status", res["run_id"])
        self.assertEqual(st["run_id"], res["run_id"])
        self.assertEqual(st["external_id"], res["task_arn"])

    def test_task_definition_is_registered_once_and_reused(self):
        self.run_ok("run", "--flow", "etl", "--org", ORG)
        self.run_ok("run", "--flow", "etl", "--org", ORG)
        ecs = self.L.moto.client("ecs")
        arns = ecs.list_task_definitions(familyPrefix="dagy-worker")["taskDefinitionArns"]
        self.assertEqual(len(arns), 1, arns)
        td = ecs.describe_task_definition(taskDefinition="dagy-worker")["taskDefinition"]
        cd = td["containerDefinitions"][0]
        self.assertEqual(cd["image"], launchenv.IMAGE)
        self.assertEqual(td["executionRoleArn"], launchenv.EXEC_ROLE)
        self.assertEqual(td["taskRoleArn"], launchenv.TASK_ROLE)
        self.assertEqual(cd["logConfiguration"]["options"]["awslogs-group"], launchenv.LOG_GROUP)
        self.assertGreaterEqual(cd["stopTimeout"], 45)
        # A new image is a different definition: a new revision.
        self.run_ok("run", "--flow", "etl", "--org", ORG, env=self.L.env(DAGY_ECS_WORKER_IMAGE="other:2"))
        arns = ecs.list_task_definitions(familyPrefix="dagy-worker")["taskDefinitionArns"]
        self.assertEqual(len(arns), 2, arns)
        # An operator's task definition is used as given.
        res = self.run_ok("run", "--flow", "etl", "--org", ORG, env=self.L.env(DAGY_ECS_TASK_DEFINITION=arns[0]))
        self.assertEqual(self.L.describe_task(res["task_arn"])["taskDefinitionArn"], arns[0])
        self.assert_runtask_bodies_valid()

    def test_deployment_packages_in_order(self):
        ddb = self.L.moto.client("dynamodb")
        ddb.put_item(TableName="DAGY_DEPLOYMENTS", Item={
            "deployment_name": {"S": "prod"}, "environment": {"S": "production"},
            "dep_package_slugs": {"L": [{"S": "zeta"}, {"S": "alpha"}]}})
        for slug in ["zeta", "alpha"]:
            ddb.put_item(TableName="DAGY_DEP_PACKAGES", Item={
                "slug": {"S": slug}, "package_s3_uri": {"S": "s3://dagy-artifacts/deps/%s.zip" % slug},
                "org_id": {"S": ORG}, "version": {"S": "1.0.0"}})
        res = self.run_ok("run", "--flow", "etl", "--org", ORG, "--deployment", "prod")
        env = container_env(self.L.describe_task(res["task_arn"]))
        self.assertEqual(env["DAGY_DEP_PACKAGE_URIS"],
                         "s3://dagy-artifacts/deps/zeta.zip,s3://dagy-artifacts/deps/alpha.zip")
        self.assertEqual(env["DAGY_ENVIRONMENT"], "production")
        item = self.L.run_item(res["run_id"])
        self.assertEqual((item["deployment_name"], item["environment"]), ("prod", "production"))
        # A deployment naming an unregistered package: invalid, nothing written or launched.
        ddb.put_item(TableName="DAGY_DEPLOYMENTS", Item={
            "deployment_name": {"S": "broken"}, "dep_package_slugs": {"L": [{"S": "ghost"}]}})
        before = self.runtask_count()
        r = self.L.launch("run", "--flow", "etl", "--org", ORG, "--deployment", "broken", "--run-id", "dep-broken")
        self.assertEqual(r.returncode, 2)
        self.assertIn('package "ghost" is not registered', r.stderr)
        self.assertIsNone(self.L.run_item("dep-broken"))
        self.assertEqual(self.runtask_count(), before)
        self.assert_runtask_bodies_valid()

    def test_invalid_size_is_exit_2_and_nothing_happens(self):
        cases = [
            (["--cpu", "256", "--memory", "4096"], "--cpu 256 with --memory 4096"),
            (["--cpu", "300", "--memory", "512"], "--cpu 300 is not a Fargate CPU size"),
            (["--cpu", "1024"], "--cpu and --memory go together"),
            (["--profile", "huge"], '--profile "huge" is unknown'),
            (["--profile", "small", "--cpu", "256", "--memory", "512"], "either --profile"),
            (["--ephemeral-storage", "20"], "--ephemeral-storage \"20\" must be 21-200"),
            (["--ephemeral-storage", "201"], "must be 21-200"),
            (["--env", "DAGY_RUN_ID=x"], "set by dagy-launch"),
            (["--params-json", "[1]"], "expected a JSON object"),
        ]
        before_tasks, before_calls = self.L.task_count(), len(self.L.proxy.records)
        for i, (args, msg) in enumerate(cases):
            rid = "invalid-%d" % i
            r = self.L.launch("run", "--flow", "etl", "--org", ORG, "--run-id", rid, *args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(msg, r.stderr)
            self.assertIsNone(self.L.run_item(rid))
        self.assertEqual(self.L.task_count(), before_tasks)
        self.assertEqual(len(self.L.proxy.records), before_calls)  # not even a lookup

    def test_missing_configuration_is_exit_2_naming_the_variable(self):
        before_tasks, before_calls = self.L.task_count(), len(self.L.proxy.records)
        for var in ["DAGY_ECS_CLUSTER_ARN", "DAGY_ECS_SUBNETS", "DAGY_ECS_SECURITY_GROUPS",
                    "DAGY_ECS_WORKER_IMAGE", "DAGY_ECS_EXECUTION_ROLE_ARN", "DAGY_ECS_TASK_ROLE_ARN",
                    "DAGY_ECS_LOG_GROUP"]:
            rid = "noconf-" + var.lower()
            r = self.L.launch("run", "--flow", "etl", "--org", ORG, "--run-id", rid, env=self.L.env(drop=[var]))
            self.assertEqual(r.returncode, 2, var)
            self.assertIn("missing configuration: %s is not set" % var, r.stderr)
            self.assertFalse(r.json["success"])
            self.assertIsNone(self.L.run_item(rid))
        r = self.L.launch("run", "--flow", "etl", "--org", ORG, env=self.L.env(DAGY_ECS_ASSIGN_PUBLIC_IP="yes"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("DAGY_ECS_ASSIGN_PUBLIC_IP", r.stderr)
        self.assertEqual(self.L.task_count(), before_tasks)
        self.assertEqual(len(self.L.proxy.records), before_calls)
        r = self.L.launch("run", "--org", ORG)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--flow is required", r.stderr)
        r = self.L.launch("register-flow", "--artifact", "x.zip", "--flow", "f", "--flow-version", "1.0.0",
                          "--org", ORG, env=self.L.env(drop=["DAGY_ARTIFACT_BUCKET"]))
        self.assertEqual(r.returncode, 2)
        self.assertIn("DAGY_ARTIFACT_BUCKET is not set", r.stderr)

    def test_unknown_flow_is_exit_2_and_nothing_recorded(self):
        r = self.L.launch("run", "--flow", "nosuch", "--org", ORG, "--run-id", "nosuch-run")
        self.assertEqual(r.returncode, 2)
        self.assertIn('flow "nosuch" is not registered', r.stderr)
        self.assertIsNone(self.L.run_item("nosuch-run"))
        r = self.L.launch("run", "--flow", "etl", "--org", "other-org", "--run-id", "otherorg-run")
        self.assertEqual(r.returncode, 2)
        self.assertIsNone(self.L.run_item("otherorg-run"))
        r = self.L.launch("run", "--flow", "etl", "--flow-version", "9.9.9", "--org", ORG)
        self.assertEqual(r.returncode, 2)
        self.assertIn('version "9.9.9" is not registered', r.stderr)

    def test_relaunch_of_same_run_id_starts_no_second_task(self):
        first = self.run_ok("run", "--flow", "etl", "--org", ORG, "--run-id", "same-run-1")
        tasks, calls = self.L.task_count(), self.runtask_count()
        again = self.run_ok("run", "--flow", "etl", "--org", ORG, "--run-id", "same-run-1")
        self.assertTrue(again["success"])
        self.assertEqual(again["task_arn"], first["task_arn"])
        self.assertIn("already exists", again["message"])
        self.assertEqual(self.L.task_count(), tasks)
        self.assertEqual(self.runtask_count(), calls)
        self.assertEqual(self.L.run_item("same-run-1")["external_id"], first["task_arn"])
        # The RunTask request carried the run id as clientToken (ECS's own idempotency guard).
        tokens = [b["clientToken"] for b in self.L.proxy.calls("RunTask")]
        self.assertEqual(tokens.count("same-run-1"), 1)

    def test_runtask_failure_is_recorded_as_launch_failed(self):
        # An ECS error answer (unknown task definition).
        r = self.L.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "fail-td",
                          env=self.L.env(DAGY_ECS_TASK_DEFINITION="no-such-family"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertFalse(r.json["success"])
        self.assertTrue(r.json["error_message"].startswith("ECS launch failed: "), r.json)
        item = self.L.run_item("fail-td")
        self.assertEqual(item["status"], "FAILED")
        self.assertEqual(item["error_message"], r.json["error_message"])
        self.assertIn("completed_at", item)
        self.assertNotIn("external_id", item)
        # A 200 answer with `failures` (capacity), simulated at the proxy.
        def fail_capacity(op, req, resp):
            if op == "RunTask" and req.get("clientToken") == "fail-capacity":
                return {"tasks": [], "failures": [{"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/x",
                                                   "reason": "RESOURCE:FARGATE", "detail": "no capacity"}]}
            return None
        self.L.proxy.rewrite = fail_capacity
        try:
            r = self.L.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "fail-capacity")
        finally:
            self.L.proxy.rewrite = None
        self.assertEqual(r.returncode, 1)
        self.assertIn("ECS launch failed: RESOURCE:FARGATE (no capacity", r.json["error_message"])
        item = self.L.run_item("fail-capacity")
        self.assertEqual(item["status"], "FAILED")
        self.assertEqual(item["error_message"], r.json["error_message"])
        # The failed run id is not relaunched either.
        r = self.L.launch("run", "--flow", "etl", "--org", ORG, "--run-id", "fail-capacity")
        self.assertEqual(r.returncode, 1)
        self.assertIn("already exists", r.json["error_message"])

    def test_batch_of_several_in_request_order(self):
        reqs = [
            {"flow_name": "etl", "parameters": {"shard": "0"}},
            {"flow_name": "etl", "parameters": {"shard": "1"}, "workload_profile": "large"},
            {"flow_name": "etl", "parameters": {"shard": "2"}, "cpu": 512, "memory": "2048", "run_id": "batch-fixed-id"},
            {"flow_name": "etl", "parameters": {"shard": "3"}, "extra_env_vars": {"X_SHARD": "3"}},
            {"flow_name": "etl", "parameters": {"shard": "4"}, "ephemeral_storage_gib": 30, "metadata": {"k": "v"}},
        ]
        f = self.L.path("batch.json")
        with open(f, "w") as fh:
            json.dump(reqs, fh)
        out = self.run_ok("batch", "--file", f, "--org", ORG, "--correlation-id", "batch-req-1", "--param", "common=yes")
        self.assertEqual(len(out), 5)
        self.assertEqual(out[2]["run_id"], "batch-fixed-id")
        for i, res in enumerate(out):
            self.assertTrue(res["success"], res)
            self.assertEqual(res["correlation_id"], "batch-req-1:%d" % i)
            task = self.L.describe_task(res["task_arn"])
            env = container_env(task)
            self.assertEqual(json.loads(env["DAGY_PARAMETERS"]), {"common": "yes", "shard": str(i)})
            self.assertEqual(tags(task)["dagy:correlation_id"], "batch-req-1:%d" % i)
            self.assertEqual(self.L.run_item(res["run_id"])["correlation_id"], "batch-req-1:%d" % i)
        sizes = [(self.L.describe_task(r["task_arn"])["overrides"]["cpu"],
                  self.L.describe_task(r["task_arn"])["overrides"]["memory"]) for r in out]
        self.assertEqual(sizes[1], ("2048", "4096"))
        self.assertEqual(sizes[2], ("512", "2048"))
        self.assertEqual(container_env(self.L.describe_task(out[3]["task_arn"]))["X_SHARD"], "3")
        self.assertEqual(json.loads(self.L.run_item(out[4]["run_id"])["metadata"]), {"k": "v"})
        self.assert_runtask_bodies_valid()

    def test_batch_with_an_invalid_request_launches_nothing(self):
        f = self.L.path("batch-bad.json")
        with open(f, "w") as fh:
            json.dump([{"flow_name": "etl", "run_id": "bb-0"}, {"flow_name": "etl", "cpu": 256, "memory": 8192}], fh)
        tasks = self.L.task_count()
        r = self.L.launch("batch", "--file", f, "--org", ORG)
        self.assertEqual(r.returncode, 2)
        self.assertIn("request 1: cpu 256 with memory 8192", r.stderr)
        self.assertIsNone(self.L.run_item("bb-0"))
        self.assertEqual(self.L.task_count(), tasks)
        with open(f, "w") as fh:
            json.dump([{"flow_name": "etl", "typo_field": 1}], fh)
        r = self.L.launch("batch", "--file", f, "--org", ORG)
        self.assertEqual(r.returncode, 2)
        self.assertIn('unknown field "typo_field"', r.stderr)

    def test_batch_with_one_unknown_flow_keeps_order_and_exits_1(self):
        f = self.L.path("batch-mixed.json")
        with open(f, "w") as fh:
            json.dump([{"flow_name": "etl"}, {"flow_name": "ghost_flow"}, {"flow_name": "etl"}], fh)
        r = self.L.launch("batch", "--file", f, "--org", ORG, "--correlation-id", "mixed")
        self.assertEqual(r.returncode, 1)
        self.assertEqual([x["success"] for x in r.json], [True, False, True])
        self.assertEqual([x["correlation_id"] for x in r.json], ["mixed:0", "mixed:1", "mixed:2"])
        self.assertIn("ghost_flow", r.json[1]["error_message"])
        self.assertIsNone(self.L.run_item(r.json[1]["run_id"]))

    def test_status_of_unknown_run(self):
        r = self.L.launch("status", "no-such-run")
        self.assertEqual(r.returncode, 1)
        self.assertIn('run "no-such-run" not found', r.stderr)
        self.assertEqual(self.L.launch("status").returncode, 2)

    def test_zz_every_recorded_runtask_body_fits_the_ecs_model(self):
        bodies = self.assert_runtask_bodies_valid()
        self.assertGreater(len(bodies), 10)
        # The validator does catch a malformed body.
        bad = dict(bodies[0], overrides={"cpu": 256})
        with self.assertRaises(Exception):
            recproxy.validate_ecs_request("RunTask", bad)


if __name__ == "__main__":
    unittest.main()
