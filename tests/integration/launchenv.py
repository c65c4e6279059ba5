"""launchenv - fixture for the dagy-launch integration tests: a moto server with signatures
enforced (awsenv.Moto), the ECS/EC2/S3 resources a launch needs, a recording proxy in front of
ECS, and helpers to build flow artifacts and run the binary.

    with launchenv.LaunchEnv() as L:
        L.launch("init-tables")
        L.register("etl", "1.0.0")
        r = L.launch("run", "--flow", "etl", "--org", "acme")
"""

import hashlib
import io
import json
import os
import sys
import tempfile
import urllib.request
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import recproxy  # noqa: E402

LAUNCH = os.environ.get("DAGY_LAUNCH") or os.path.join(
    os.environ.get("DAGY_TEST_BUILD", "build"), "dagy-launch"
)
AGENT = os.environ.get("DAGY_AGENT") or os.path.join(
    os.environ.get("DAGY_TEST_BUILD", "build"), "dagy-agent"
)
ORG = "acme"
BUCKET = "dagy-artifacts"
TRACES = "dagy-traces"
EXEC_ROLE = "arn:aws:iam::123456789012:role/dagy-exec"
TASK_ROLE = "arn:aws:iam::123456789012:role/dagy-task"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dagy-worker:test"
LOG_GROUP = "/ecs/dagy-worker"


def spec(name, version, tasks=None):
    return {
        "spec_version": 1,
        "name": name,
        "version": version,
        "tasks": tasks or [{"name": "hello", "command": ["sh", "-c", "echo hello from {{ run_id }}"]}],
    }


def make_artifact(path, name, version, tasks=None, extra=None):
    """Writes a zip flow artifact with flow_spec.json (and `extra` files); returns its sha256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("flow_spec.json", json.dumps(spec(name, version, tasks)))
        for k, v in (extra or {}).items():
            z.writestr(k, v)
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def manual_ecs_tasks(moto):
    """moto moves a task one state toward STOPPED on every DescribeTasks; keep tasks RUNNING
    until a test stops them, as ECS does."""
    req = urllib.request.Request(
        moto.endpoint + "/moto-api/state-manager/set-transition",
        data=json.dumps(
            {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}}
        ).encode(),
        method="POST",
    )
    urllib.request.urlopen(req, timeout=10).read()


class LaunchEnv:
    """Moto + ECS cluster, VPC subnet and security group, buckets, recording proxy for ECS."""

    def __init__(self):
        self.moto = None
        self.proxy = None
        self.tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="dagy-launch-test-")
        self.moto = awsenv.Moto().start()
        try:
            self._setup()
        except BaseException:
            self.stop()
            raise
        return self

    def _setup(self):
        m = self.moto
        manual_ecs_tasks(m)
        ec2 = m.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        # moto's Fargate RunTask names the task's ENI by DNS name: needs DNS hostnames on.
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        self.subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        self.sg = ec2.create_security_group(GroupName="dagy", Description="dagy", VpcId=vpc)["GroupId"]
        self.cluster = m.client("ecs").create_cluster(clusterName="dagy")["cluster"]["clusterArn"]
        s3 = m.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=TRACES)
        self.proxy = recproxy.RecProxy(m.endpoint).start()

    def stop(self):
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None

    def env(self, drop=(), **extra):
        """The launcher's environment: AWS access to moto (ECS through the proxy) and the full
        dagy configuration; `drop` removes variables, keyword arguments add or replace."""
        e = self.moto.env(
            DAGY_ECS_CLUSTER_ARN=self.cluster,
            DAGY_ECS_SUBNETS=self.subnet,
            DAGY_ECS_SECURITY_GROUPS=self.sg,
            DAGY_ECS_EXECUTION_ROLE_ARN=EXEC_ROLE,
            DAGY_ECS_TASK_ROLE_ARN=TASK_ROLE,
            DAGY_ECS_WORKER_IMAGE=IMAGE,
            DAGY_ECS_LOG_GROUP=LOG_GROUP,
            DAGY_ARTIFACT_BUCKET=BUCKET,
            DAGY_TRACES_BUCKET=TRACES,
            AWS_ENDPOINT_URL_ECS=self.proxy.endpoint,
        )
        for k in drop:
            e.pop(k, None)
        e.update(extra)
        return e

    def launch(self, *args, env=None, timeout=120):
        """Runs dagy-launch; returns CompletedProcess with .json (parsed stdout, or None)."""
        r = awsenv.run([LAUNCH] + list(args), env=env or self.env(), timeout=timeout)
        try:
            r.json = json.loads(r.stdout) if r.stdout.strip() else None
        except ValueError:
            r.json = None
        return r

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def register(self, name, version, tasks=None, env=None):
        """Builds an artifact and registers it; returns (CompletedProcess, sha256)."""
        p = self.path("%s-%s.zip" % (name, version))
        sha = make_artifact(p, name, version, tasks)
        r = self.launch(
            "register-flow", "--artifact", p, "--flow", name, "--flow-version", version,
            "--org", ORG, env=env,
        )
        return r, sha

    def run_item(self, run_id, table="DAGY_RUNS"):
        """The plain run item (or None), read consistently with boto3."""
        from boto3.dynamodb.types import TypeDeserializer

        it = self.moto.client("dynamodb").get_item(
            TableName=table, Key={"run_id": {"S": run_id}}, ConsistentRead=True
        ).get("Item")
        if it is None:
            return None
        d = TypeDeserializer()
        return {k: d.deserialize(v) for k, v in it.items()}

    def describe_task(self, arn):
        ecs = self.moto.client("ecs")
        return ecs.describe_tasks(cluster=self.cluster, tasks=[arn], include=["TAGS"])["tasks"][0]

    def task_count(self):
        ecs = self.moto.client("ecs")
        return len(ecs.list_tasks(cluster=self.cluster)["taskArns"])


def container_env(task):
    """NAME -> value of the worker container's override environment of a described task."""
    for co in task["overrides"]["containerOverrides"]:
        if co["name"] == "dagy-worker":
            return {e["name"]: e["value"] for e in co.get("environment", [])}
    return {}


def tags(task):
    return {t["key"]: t["value"] for t in task.get("tags", [])}
