"""deploy/dagy.yaml deployed into moto with the AWS CLI (create-stack, CREATE_COMPLETE), its
outputs exported with scripts/dagy-env-from-stack.sh, and a run launched with them: dagy-launch
starts the stack's task definition on the stack's cluster, the agent runs the flow (with a
dependency package of a deployment) in container mode, the run ends SUCCEEDED in the stack's
tables. Every request the launcher and the agent made is then checked against the policy the
stack gave their role (the Lambda control role and the worker task role): moto itself only
evaluates S3 resources, so the roles' DynamoDB, ECS and IAM statements are evaluated here.
What moto stores of the rest (functions, rules, permissions) is compared with the template;
what it ignores is validated against botocore's models in test_deploy_template.py."""

import ast
import json
import os
import re
import sys
import time
import unittest
import urllib.parse
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import cfnlocal  # noqa: E402
import launchenv  # noqa: E402
import recproxy  # noqa: E402

STACK = "dagy"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dagy-worker:1.2.3"
ORG = "acme"
READY = cfnlocal.aws_cli() is not None and os.path.exists(launchenv.LAUNCH) and \
    os.path.exists(launchenv.AGENT)


# Variables dagy-launch reads that are no deployment setting: a debugging switch, and the
# tuning knobs of `dagy-launch lambda` (issue 14.1; their defaults suit the template).
NOT_CONFIGURATION = {"DAGY_LAUNCH_DEBUG", "DAGY_LAMBDA_MARGIN_MS", "DAGY_LAMBDA_RELAUNCH_INFRA"}
# Outputs only when a parameter turns them on (the test deploys with the defaults): the agent's
# DAGY_LOG_GROUP, which dagy-launch passes on to the worker (issue 14.2) and `logs` reads.
CONDITIONAL = {"DAGY_LOG_GROUP": "RunLogStreams"}


def launcher_variables():
    """The DAGY_* variables dagy-launch reads from its environment (getenv / env_or_null in
    launcher/*.c), less NOT_CONFIGURATION."""
    names = set()
    src_dir = os.path.join(cfnlocal.ROOT, "launcher")
    for name in sorted(os.listdir(src_dir)):
        if name.endswith(".c"):
            with open(os.path.join(src_dir, name)) as f:
                names.update(re.findall(r'(?:getenv|env_or_null)\("(DAGY_[A-Z0-9_]+)"\)', f.read()))
    return names - NOT_CONFIGURATION


# ---- IAM: the requests recorded by the proxy as (action, resource, context), and a policy
# evaluator for the statements the template writes (Allow only; Action and Resource with
# wildcards; StringEquals / ArnEquals / StringLike / ArnLike conditions). ----

def _wild(pattern, value, case=False):
    rx = "^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$"
    return re.match(rx, value, re.IGNORECASE if case else 0) is not None


def _as_list(v):
    return v if isinstance(v, list) else [v]


def allowed(policies, action, resource, context):
    """True when one statement of `policies` allows action on resource in context."""
    for doc in policies:
        for st in _as_list(doc["Statement"]):
            if st["Effect"] != "Allow":
                continue
            if not any(_wild(a, action, case=True) for a in _as_list(st["Action"])):
                continue
            if not any(_wild(r, resource) for r in _as_list(st["Resource"])):
                continue
            ok = True
            for op, conds in st.get("Condition", {}).items():
                for key, want in conds.items():
                    have = context.get(key)
                    like = op.endswith("Like")
                    if have is None or not any(
                            _wild(w, have) if like else w == have for w in _as_list(want)):
                        ok = False
            if ok:
                return True
    return False


def iam_requests(requests, region, account):
    """(action, resource, context) for each recorded request, as IAM authorises it; RunTask also
    implies iam:PassRole of the roles it starts the task with and ecs:TagResource of its tags."""
    arn = "arn:aws:%s:" + region + ":" + account + ":%s"
    out = []
    for method, path, service, op, body in requests:
        if service == "dynamodb":
            res = arn % ("dynamodb", "table/" + body["TableName"])
            if body.get("IndexName"):
                res += "/index/" + body["IndexName"]
            out.append(("dynamodb:" + op, res, {}))
        elif service == "ecs":
            cluster = body.get("cluster", "default")
            if not cluster.startswith("arn:"):
                cluster = arn % ("ecs", "cluster/" + cluster)
            ctx = {"ecs:cluster": cluster}
            cname = cluster.rsplit("/", 1)[-1]
            if op == "RunTask":
                td = body["taskDefinition"]
                if not td.startswith("arn:"):
                    td = arn % ("ecs", "task-definition/" + td)
                out.append(("ecs:RunTask", td, ctx))
                if body.get("tags"):
                    out.append(("ecs:TagResource", arn % ("ecs", "task/%s/new" % cname),
                                {"ecs:CreateAction": "RunTask"}))
                for role in body.get("_roles", []):
                    out.append(("iam:PassRole", role,
                                {"iam:PassedToService": "ecs-tasks.amazonaws.com"}))
            elif op in ("DescribeTasks", "StopTask"):
                for t in _as_list(body.get("tasks") or body.get("task")):
                    out.append(("ecs:" + op, t, ctx))
            else:
                out.append(("ecs:" + op, "*", ctx))
        elif service == "s3":
            u = urllib.parse.urlsplit(path)
            bucket, _, key = u.path.lstrip("/").partition("/")
            key = urllib.parse.unquote(key)
            if not key:
                out.append(("s3:ListBucket", "arn:aws:s3:::" + bucket, {}))
            else:
                action = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject",
                          "POST": "s3:PutObject", "DELETE": "s3:AbortMultipartUpload"
                          if "uploadId" in u.query else "s3:DeleteObject"}[method]
                out.append((action, "arn:aws:s3:::%s/%s" % (bucket, key), {}))
        elif service == "logs":
            group = body.get("logGroupName", "")
            out.append(("logs:" + op, arn % ("logs", "log-group:%s:*" % group), {}))
        else:
            out.append(("%s:%s %s" % (service, op, method), path, {}))
    return out


def package_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("dagy_stack_pkg.py", "VALUE = 'from the package'\n")


@unittest.skipUnless(READY, "needs the AWS CLI (scripts/deps.sh --test), dagy-launch, dagy-agent")
class DeployedStackTest(unittest.TestCase):
    AUTH = True  # signatures checked, as for every launch test
    # Names other than the defaults: nothing may lean on "dagy" / "DAGY_RUNS".
    PARAMS = {"NamePrefix": "dgx", "TablePrefix": "STACK", "LogGroupName": "/ecs/dgx-worker"}

    @classmethod
    def setUpClass(cls):
        cls.moto = awsenv.Moto(auth=cls.AUTH).start()
        try:
            cls._deploy()
        except BaseException:
            cls.moto.stop()
            raise

    @classmethod
    def _deploy(cls):
        m = cls.moto
        ec2 = m.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        # moto's Fargate RunTask names the task's ENI by DNS name: needs DNS hostnames on.
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        cls.subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.%d.0/24" % i)["Subnet"]
                       ["SubnetId"] for i in (1, 2)]
        cls.sg = ec2.create_security_group(GroupName="dagy", Description="dagy",
                                           VpcId=vpc)["GroupId"]
        launchenv.manual_ecs_tasks(m)
        cls.params = dict(cls.PARAMS, WorkerImage=IMAGE, Subnets=",".join(cls.subnets),
                          SecurityGroups=cls.sg)
        # The list parameter's comma must reach CloudFormation escaped for the CLI's shorthand.
        cli_params = dict(cls.params, Subnets="\\,".join(cls.subnets))
        cls.stack = cfnlocal.deploy(m, STACK, cli_params)
        cls.outputs = {o["OutputKey"]: o["OutputValue"] for o in cls.stack["Outputs"]}
        cls.template = cfnlocal.load()

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def stack_env(self):
        r, env = cfnlocal.env_from_stack(self.moto, STACK)
        self.assertEqual(r.returncode, 0, r.stderr)
        return env

    def role_policies(self, role_arn):
        iam = self.moto.client("iam")
        name = role_arn.rsplit("/", 1)[-1]
        docs = []
        for p in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            d = iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
            if isinstance(d, str):  # moto keeps a CloudFormation policy as Python's repr
                d = ast.literal_eval(d) if d.startswith("{'") else \
                    json.loads(urllib.parse.unquote(d))
            docs.append(d)
        return docs

    def test_every_resource_of_the_template_is_created(self):
        r = awsenv.run([cfnlocal.aws_cli(), "--endpoint-url", self.moto.endpoint,
                        "cloudformation", "list-stack-resources", "--stack-name", STACK,
                        "--output", "json"], env=cfnlocal.cli_env(self.moto))
        self.assertEqual(r.returncode, 0, r.stderr)
        got = {x["LogicalResourceId"]: x["ResourceStatus"]
               for x in json.loads(r.stdout)["StackResourceSummaries"]}
        self.assertEqual(set(got), set(self.template["Resources"]))
        self.assertEqual(set(got.values()), {"CREATE_COMPLETE"})
        # What moto keeps of them (the rest: test_deploy_template.py, docs/operations.md 7).
        groups = {g["logGroupName"]: g.get("retentionInDays") for g in
                  self.moto.client("logs").describe_log_groups()["logGroups"]
                  if "dgx" in g["logGroupName"]}  # (other tests add stacks of their own)
        self.assertEqual(groups, {"/ecs/dgx-worker": 30, "/aws/lambda/dgx-launcher": 30,
                                  "/aws/lambda/dgx-reconciler": 30})
        td = self.moto.client("ecs").describe_task_definition(
            taskDefinition=self.outputs["DagyEcsTaskDefinition"])["taskDefinition"]
        (c,) = td["containerDefinitions"]
        self.assertEqual((c["name"], c["image"], c["memoryReservation"], c["stopTimeout"]),
                         ("dagy-worker", IMAGE, 512, 30))
        self.assertEqual(c["logConfiguration"]["options"]["awslogs-group"], "/ecs/dgx-worker")
        enc = self.moto.client("s3").get_bucket_encryption(Bucket=self.outputs["DagyTracesBucket"])
        rule = enc["ServerSideEncryptionConfiguration"]["Rules"][0]
        self.assertEqual(rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256")

    def test_outputs_are_exactly_the_variables_dagy_launch_reads(self):
        want = launcher_variables()
        self.assertIn("DAGY_ECS_CLUSTER_ARN", want)  # the source scan found the variables
        names = {cfnlocal.output_var(k): k for k in self.outputs}
        self.assertEqual(set(names), want - set(CONDITIONAL))
        declared = {cfnlocal.output_var(k): o.get("Condition")
                    for k, o in self.template["Outputs"].items()}
        self.assertEqual(set(declared), want | set(CONDITIONAL))
        for var, param in CONDITIONAL.items():
            self.assertEqual(self.template["Conditions"][declared[var]],
                             {"Fn::Equals": [{"Ref": param}, "true"]})
        for o in self.stack["Outputs"]:  # the Description names the variable too
            self.assertTrue(o["Description"].startswith(cfnlocal.output_var(o["OutputKey"]) + " "),
                            o)

    def test_env_script_prints_every_output_as_its_variable(self):
        env = self.stack_env()
        self.assertEqual(env, {cfnlocal.output_var(k): v for k, v in self.outputs.items()})
        self.assertEqual(env["DAGY_ECS_SUBNETS"], ",".join(self.subnets))
        self.assertEqual(env["DAGY_ECS_LOG_GROUP"], "/ecs/dgx-worker")
        self.assertEqual(env["DAGY_RUNS_TABLE"], "STACK_RUNS")
        self.assertTrue(env["DAGY_ECS_CLUSTER_ARN"].endswith(":cluster/dgx"))
        self.assertTrue(env["DAGY_ECS_TASK_DEFINITION"].endswith(":task-definition/dgx-worker:1"))

    def test_env_script_refuses_a_missing_stack_and_bad_use(self):
        env = cfnlocal.cli_env(self.moto)
        env["PATH"] = os.path.dirname(cfnlocal.aws_cli()) + os.pathsep + env["PATH"]
        r = awsenv.run([cfnlocal.ENV_SCRIPT, "nope", "--endpoint-url", self.moto.endpoint],
                       env=env)
        self.assertEqual((r.returncode, r.stdout), (1, ""))
        self.assertIn("cannot describe stack nope", r.stderr)
        r = awsenv.run([cfnlocal.ENV_SCRIPT], env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage:", r.stderr)

    def test_env_script_quotes_every_value_and_ignores_other_outputs(self):
        odd = "it's $(touch /tmp/dagy-pwned) `id` \\ \"q\" ; *"
        path = os.path.join(self.tmp(), "odd.yaml")
        with open(path, "w") as f:
            json.dump({"Resources": {"G": {"Type": "AWS::Logs::LogGroup",
                                           "Properties": {"LogGroupName": "odd"}}},
                       "Outputs": {"DagyOddValue": {"Value": odd}, "Other": {"Value": "x"}}}, f)
        cfnlocal.deploy(self.moto, "odd", {}, template=path)
        r, env = cfnlocal.env_from_stack(self.moto, "odd")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(env, {"DAGY_ODD_VALUE": odd})
        self.assertFalse(os.path.exists("/tmp/dagy-pwned"))

    def test_tables_are_the_ones_init_tables_creates(self):
        m = self.moto
        names = {"DAGY_RUNS_TABLE": "INIT_RUNS", "DAGY_TASK_RUNS_TABLE": "INIT_TASK_RUNS",
                 "DAGY_FLOWS_TABLE": "INIT_FLOWS", "DAGY_DEPLOYMENTS_TABLE": "INIT_DEPLOYMENTS",
                 "DAGY_DEP_PACKAGES_TABLE": "INIT_DEP_PACKAGES"}
        r = awsenv.run([launchenv.LAUNCH, "init-tables"], env=m.env(**names), timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        ddb = m.client("dynamodb")

        def shape(name):
            t = ddb.describe_table(TableName=name)["Table"]
            gsis = sorted((g["IndexName"], json.dumps(g["KeySchema"]), json.dumps(g["Projection"]))
                          for g in t.get("GlobalSecondaryIndexes", []))
            return (sorted(json.dumps(a) for a in t["AttributeDefinitions"]),
                    json.dumps(t["KeySchema"]), gsis,
                    t.get("BillingModeSummary", {}).get("BillingMode"))

        for var, init_name in names.items():
            stack_name = self.outputs["".join(w.capitalize() for w in var.split("_"))]
            self.assertEqual(shape(stack_name), shape(init_name), var)
        runs = ddb.describe_table(TableName=self.outputs["DagyRunsTable"])["Table"]
        self.assertEqual([g["IndexName"] for g in runs["GlobalSecondaryIndexes"]], ["active_runs"])
        # init-tables run against the stack (an operator's habit) finds them all, adds nothing.
        r = awsenv.run([launchenv.LAUNCH, "init-tables"], env=m.env(**self.stack_env()))
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual((out["created"], sorted(out["existing"])),
                         ([], sorted(self.outputs[k] for k in self.outputs if k.endswith("Table"))))
        self.assertNotIn("index_added", out)

    def test_a_run_launched_with_the_outputs_succeeds_within_the_roles_policies(self):
        m = self.moto
        env = self.stack_env()
        admin = m.env(**env)  # registration is an operator's (CI's) job, not the control role's
        p = os.path.join(self.tmp(), "flow.zip")
        tasks = [{"name": "use_pkg", "command": ["python3", "-c",
                  "import dagy_stack_pkg; print(dagy_stack_pkg.VALUE)"]},
                 {"name": "after", "command": ["sh", "-c", "echo done"], "upstream": ["use_pkg"]}]
        launchenv.make_artifact(p, "stack_flow", "1.0.0", tasks)
        for argv in (["register-flow", "--artifact", p, "--flow", "stack_flow", "--flow-version",
                      "1.0.0", "--org", ORG],
                     ["register-package", "--slug", "stackpkg", "--artifact", self.pkg(),
                      "--version", "1", "--org", ORG],
                     ["register-deployment", "--name", "prod", "--environment", "prod",
                      "--packages", "stackpkg"]):
            r = awsenv.run([launchenv.LAUNCH] + argv, env=admin)
            self.assertEqual(r.returncode, 0, r.stderr)

        with recproxy.RecProxy(m.endpoint) as control, recproxy.RecProxy(m.endpoint) as worker:
            r = awsenv.run([launchenv.LAUNCH, "run", "--flow", "stack_flow", "--org", ORG,
                            "--deployment", "prod"], env=m.env(AWS_ENDPOINT_URL=control.endpoint,
                                                                **env))
            self.assertEqual(r.returncode, 0, r.stderr)
            run_id, arn = json.loads(r.stdout)["run_id"], json.loads(r.stdout)["task_arn"]
            task = m.client("ecs").describe_tasks(cluster=env["DAGY_ECS_CLUSTER_ARN"],
                                                  tasks=[arn])["tasks"][0]
            self.assertEqual(task["taskDefinitionArn"], env["DAGY_ECS_TASK_DEFINITION"])
            self.assertEqual(task["clusterArn"], env["DAGY_ECS_CLUSTER_ARN"])
            cenv = launchenv.container_env(task)
            self.assertIn("/dep-packages/stackpkg/", cenv["DAGY_DEP_PACKAGE_URIS"])
            self.assertEqual(cenv["DAGY_RUNS_TABLE"], env["DAGY_RUNS_TABLE"])
            with launchenv.tempfile.TemporaryDirectory(prefix="dagy-stack-") as work:
                aenv = m.env(AWS_ENDPOINT_URL=worker.endpoint, DAGY_WORK_DIR=work, **cenv)
                a = awsenv.run([os.path.abspath(launchenv.AGENT)], env=aenv, timeout=120, cwd=work)
            self.assertEqual(a.returncode, 0, a.stdout[-3000:] + a.stderr[-3000:])
            self.assertIn("from the package", a.stdout)
            st = awsenv.run([launchenv.LAUNCH, "status", run_id],
                            env=m.env(AWS_ENDPOINT_URL=control.endpoint, **env))
            self.assertEqual(st.returncode, 0, st.stderr)
            self.assertEqual(json.loads(st.stdout)["status"], "SUCCEEDED")
            # What else the control plane does: cancel a second run, reconcile a third.
            ctl = m.env(AWS_ENDPOINT_URL=control.endpoint, **env)
            r2 = awsenv.run([launchenv.LAUNCH, "run", "--flow", "stack_flow", "--org", ORG],
                            env=ctl)
            self.assertEqual(r2.returncode, 0, r2.stderr)
            c = awsenv.run([launchenv.LAUNCH, "cancel", json.loads(r2.stdout)["run_id"]], env=ctl)
            self.assertEqual(c.returncode, 0, c.stderr)
            r3 = awsenv.run([launchenv.LAUNCH, "run", "--flow", "stack_flow", "--org", ORG],
                            env=ctl)
            self.assertEqual(r3.returncode, 0, r3.stderr)
            time.sleep(1.1)  # item times have whole seconds: let the third run become stale
            rec = awsenv.run([launchenv.LAUNCH, "reconcile", "--stale-seconds", "0"], env=ctl)
            self.assertEqual(rec.returncode, 0, rec.stderr)
            self.assertEqual(json.loads(rec.stdout)["checked"], 1, rec.stdout)

        # The task was started with the definition's roles plus the same roles as overrides.
        runtask = [b for _, _, _, op, b in control.requests if op == "RunTask"]
        self.assertEqual(len(runtask), 3)
        for body in runtask:
            over = body["overrides"]
            body["_roles"] = [env["DAGY_ECS_TASK_ROLE_ARN"], env["DAGY_ECS_EXECUTION_ROLE_ARN"]] \
                + [over[k] for k in ("taskRoleArn", "executionRoleArn") if k in over]
        self.assert_within(control.requests, "arn:aws:iam::123456789012:role/dgx-control",
                           must_touch={"ecs:RunTask", "ecs:TagResource", "iam:PassRole",
                                       "ecs:StopTask", "ecs:DescribeTasks", "dynamodb:PutItem",
                                       "dynamodb:Query", "dynamodb:UpdateItem"})
        self.assert_within(worker.requests, env["DAGY_ECS_TASK_ROLE_ARN"],
                           must_touch={"s3:GetObject", "dynamodb:UpdateItem"})
        keys = [r for _, r, _ in iam_requests(worker.requests, "us-east-1", "123456789012")]
        self.assertTrue(any("/dep-packages/stackpkg/" in k for k in keys), keys)

    def assert_within(self, requests, role_arn, must_touch):
        """Every recorded request is allowed by the role's deployed policies; `must_touch`
        actions were among them (so the check saw real traffic)."""
        policies = self.role_policies(role_arn)
        seen = set()
        for action, resource, ctx in iam_requests(requests, "us-east-1", "123456789012"):
            seen.add(action)
            self.assertTrue(allowed(policies, action, resource, ctx),
                            "%s denies %s on %s (%s)" % (role_arn, action, resource, ctx))
        self.assertTrue(must_touch <= seen, (must_touch, seen))
        # The evaluator can say no: the role may not write what it only reads.
        self.assertFalse(allowed(policies, "s3:PutObject",
                                 "arn:aws:s3:::%s/flows/x/1/artifact.zip" %
                                 self.outputs["DagyArtifactBucket"], {}))
        self.assertFalse(allowed(policies, "dynamodb:DeleteItem", "arn:aws:dynamodb:us-east-1:"
                                 "123456789012:table/" + self.outputs["DagyRunsTable"], {}))

    def tmp(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="dagy-deploy-test-")
        self.addCleanup(__import__("shutil").rmtree, d, True)
        return d

    def pkg(self):
        p = os.path.join(self.tmp(), "pkg.zip")
        package_zip(p)
        return p


@unittest.skipUnless(READY, "needs the AWS CLI (scripts/deps.sh --test), dagy-launch, dagy-agent")
class DeployedFunctionsTest(unittest.TestCase):
    """The Lambda side, on a moto without signature checks: moto's check refuses every
    signed GET of its Lambda API (ListFunctions, GetFunction...), whatever the keys."""

    AUTH = False
    PARAMS = {}
    setUpClass = DeployedStackTest.__dict__["setUpClass"]
    tearDownClass = DeployedStackTest.__dict__["tearDownClass"]
    _deploy = DeployedStackTest.__dict__["_deploy"]

    def test_lambda_functions_get_the_outputs_as_environment_and_the_rules_reach_them(self):
        m = self.moto
        lam, events = m.client("lambda"), m.client("events")
        env = {cfnlocal.output_var(k): v for k, v in self.outputs.items()}
        arns = {}
        # (moto's signature check refuses GET .../functions/NAME under auth; the list passes)
        funcs = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
        self.assertEqual(set(funcs), {"dagy-launcher", "dagy-reconciler"})
        for fn in ("dagy-launcher", "dagy-reconciler"):
            c = funcs[fn]
            self.assertEqual(c["Environment"]["Variables"], env, fn)
            self.assertEqual(c["Role"], "arn:aws:iam::123456789012:role/dagy-control")
            arns[fn] = c["FunctionArn"]
        sched = events.describe_rule(Name="dagy-reconcile-schedule")
        self.assertEqual(sched["ScheduleExpression"], "rate(5 minutes)")
        t = events.list_targets_by_rule(Rule="dagy-reconcile-schedule")["Targets"]
        self.assertEqual([(x["Arn"], json.loads(x["Input"])) for x in t],
                         [(arns["dagy-reconciler"], {"action": "reconcile"})])
        stopped = events.describe_rule(Name="dagy-task-stopped")
        self.assertEqual(json.loads(stopped["EventPattern"]), {
            "source": ["aws.ecs"], "detail-type": ["ECS Task State Change"],
            "detail": {"lastStatus": ["STOPPED"],
                       "clusterArn": [self.outputs["DagyEcsClusterArn"]]}})
        t = events.list_targets_by_rule(Rule="dagy-task-stopped")["Targets"]
        self.assertEqual([x["Arn"] for x in t], [arns["dagy-reconciler"]])
        # The pattern matches a STOPPED task of this cluster only (moto has no TestEventPattern:
        # its own matcher, the one its rules deliver with, decides).
        from moto.events.models import EventPattern
        pattern = EventPattern.load(stopped["EventPattern"])
        ev = {"source": "aws.ecs", "detail-type": "ECS Task State Change",
              "detail": {"lastStatus": "STOPPED", "clusterArn": self.outputs["DagyEcsClusterArn"]}}
        self.assertTrue(pattern.matches_event(ev))
        for k, v in (("lastStatus", "RUNNING"), ("clusterArn", "arn:aws:ecs:us-east-1:"
                                                              "123456789012:cluster/other")):
            self.assertFalse(pattern.matches_event(dict(ev, detail=dict(ev["detail"], **{k: v}))))
        policy = json.loads(lam.get_policy(FunctionName="dagy-reconciler")["Policy"])
        sources = sorted(s["Condition"]["ArnLike"]["AWS:SourceArn"] for s in policy["Statement"]
                         if s["Principal"] == {"Service": "events.amazonaws.com"})
        self.assertEqual(sources, sorted([sched["Arn"], stopped["Arn"]]))


if __name__ == "__main__":
    unittest.main()
