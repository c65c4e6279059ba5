"""cfnlocal - deploy/dagy.yaml for the tests, without AWS: loads the template (its short-form
tags as the long form), resolves the intrinsic functions it uses for a given set of parameters,
deploys it into a moto server with the AWS CLI, and maps stack outputs to DAGY_* names.

    t = cfnlocal.load()
    r = cfnlocal.Resolver(t, {"WorkerImage": "...", "Subnets": ["subnet-1"], ...})
    props = r.properties("RunsTable")          # plain JSON, no intrinsics left
    cfnlocal.output_var("DagyEcsClusterArn")   # -> "DAGY_ECS_CLUSTER_ARN"
"""

import json
import os
import re
import shutil
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "deploy", "dagy.yaml")
ENV_SCRIPT = os.path.join(ROOT, "scripts", "dagy-env-from-stack.sh")
ACCOUNT = "123456789012"
REGION = awsenv.REGION


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader, suffix, node):
    """!Ref X -> {"Ref": X}; !GetAtt A.B -> {"Fn::GetAtt": [A, B]}; !Name v -> {"Fn::Name": v}."""
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


_Loader.add_multi_constructor("!", _tag)


def load(path=TEMPLATE):
    """The template as plain data, intrinsics in their long form."""
    with open(path) as f:
        return yaml.load(f, Loader=_Loader)


def output_var(key):
    """The DAGY_* variable an output key stands for: DagyEcsClusterArn -> DAGY_ECS_CLUSTER_ARN."""
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).upper()


# type -> (the property Ref gives, the Arn attribute as a format of that value)
_FAKE = {
    "AWS::ECS::Cluster": ("ClusterName", "arn:aws:ecs:{r}:{a}:cluster/{v}"),
    "AWS::DynamoDB::Table": ("TableName", "arn:aws:dynamodb:{r}:{a}:table/{v}"),
    "AWS::S3::Bucket": ("BucketName", "arn:aws:s3:::{v}"),
    "AWS::Logs::LogGroup": ("LogGroupName", "arn:aws:logs:{r}:{a}:log-group:{v}:*"),
    "AWS::IAM::Role": ("RoleName", "arn:aws:iam::{a}:role/{v}"),
    "AWS::Lambda::Function": ("FunctionName", "arn:aws:lambda:{r}:{a}:function:{v}"),
    "AWS::Events::Rule": ("Name", "arn:aws:events:{r}:{a}:rule/{v}"),
}


def fake_attr(logical, rtype, attr, props):
    """What AWS answers for Ref / Fn::GetAtt Arn of a resource of the types the template uses
    (a task definition's Ref is its ARN with revision 1)."""
    if rtype == "AWS::ECS::TaskDefinition":
        return "arn:aws:ecs:%s:%s:task-definition/%s:1" % (REGION, ACCOUNT, props["Family"])
    if rtype not in _FAKE or attr not in (None, "Arn"):
        raise KeyError("no fake %s of %s (%s)" % (attr or "Ref", logical, rtype))
    prop, arn = _FAKE[rtype]
    v = props[prop]
    return arn.format(r=REGION, a=ACCOUNT, v=v) if attr == "Arn" else v


class Resolver:
    """Resolves Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::FindInMap, Fn::If and Fn::Equals of the
    template for `params` (defaults filled in). Unknown intrinsics raise KeyError."""

    def __init__(self, template, params):
        self.t = template
        self.params = {}
        for name, slot in template.get("Parameters", {}).items():
            v = params.get(name, slot.get("Default"))
            if v is None:
                raise KeyError("parameter %s has no value and no default" % name)
            self.params[name] = v
        self.pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
                       "AWS::StackName": "dagy", "AWS::NoValue": None}
        self._props = {}

    def condition(self, name):
        return bool(self.resolve(self.t["Conditions"][name]))

    def outputs(self):
        """{output key: resolved value} of the outputs whose condition holds."""
        return {k: self.resolve(o["Value"]) for k, o in self.t["Outputs"].items()
                if "Condition" not in o or self.condition(o["Condition"])}

    def included(self, logical):
        c = self.t["Resources"][logical].get("Condition")
        return c is None or self.condition(c)

    def properties(self, logical):
        if logical not in self._props:
            self._props[logical] = self.resolve(self.t["Resources"][logical].get("Properties", {}))
        return self._props[logical]

    def _ref(self, name, attr=None):
        if attr is None and name in self.params:
            return self.params[name]
        if attr is None and name in self.pseudo:
            return self.pseudo[name]
        res = self.t["Resources"][name]
        return fake_attr(name, res["Type"], attr, self.properties(name))

    def _sub(self, text):
        def one(m):
            name = m.group(1)
            if "." in name:
                return str(self._ref(*name.split(".", 1)))
            return str(self._ref(name))

        return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            out = [self.resolve(x) for x in node]
            return [x for x in out if x is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (k, v), = node.items()
            if k == "Ref":
                return self._ref(v)
            if k == "Fn::GetAtt":
                return self._ref(v[0], v[1])
            if k == "Fn::Sub":
                return self._sub(v)
            if k == "Fn::Join":
                return self.resolve(v[0]).join(str(x) for x in self.resolve(v[1]))
            if k == "Fn::FindInMap":
                m, a, b = (self.resolve(x) for x in v)
                return self.t["Mappings"][m][a][b]
            if k == "Fn::Equals":
                return str(self.resolve(v[0])) == str(self.resolve(v[1]))
            if k == "Fn::If":
                return self.resolve(v[1] if self.condition(v[0]) else v[2])
            if k.startswith("Fn::") or k == "Condition":
                raise KeyError("intrinsic %s is not resolved by cfnlocal" % k)
        out = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not None}


def aws_cli():
    """The AWS CLI to deploy with: DAGY_AWS_CLI, else `aws` on PATH, else Debian's; or None."""
    for c in (os.environ.get("DAGY_AWS_CLI"), shutil.which("aws"), "/usr/bin/aws"):
        if c and os.path.exists(c) and os.access(c, os.X_OK):
            return c
    return None


def cli_env(moto):
    """Environment for the AWS CLI against moto (v1 needs a default region; no pager)."""
    return moto.env(AWS_DEFAULT_REGION=moto.region, AWS_PAGER="")


def deploy(moto, stack, params, timeout=120, template=TEMPLATE):
    """create-stack with the AWS CLI, then describe-stacks until CREATE_COMPLETE (bounded).
    Returns the stack description; raises AssertionError with the failing events otherwise."""
    cli = aws_cli()
    env = cli_env(moto)
    base = [cli, "--endpoint-url", moto.endpoint, "cloudformation"]
    plist = ["ParameterKey=%s,ParameterValue=%s" % (k, v) for k, v in params.items()]
    r = awsenv.run(base + ["create-stack", "--stack-name", stack, "--template-body",
                           "file://" + template, "--capabilities", "CAPABILITY_NAMED_IAM",
                           "--parameters"] + plist, env=env, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("create-stack failed: %s" % r.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = awsenv.run(base + ["describe-stacks", "--stack-name", stack, "--output", "json"],
                       env=env, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError("describe-stacks failed: %s" % r.stderr)
        st = json.loads(r.stdout)["Stacks"][0]
        if st["StackStatus"] == "CREATE_COMPLETE":
            return st
        if not st["StackStatus"].endswith("IN_PROGRESS"):
            ev = awsenv.run(base + ["describe-stack-events", "--stack-name", stack], env=env)
            raise AssertionError("stack %s: %s\n%s" % (stack, st["StackStatus"], ev.stdout[-4000:]))
        time.sleep(0.5)
    raise AssertionError("stack %s not CREATE_COMPLETE within %d s" % (stack, timeout))


def env_from_stack(moto, stack):
    """Runs scripts/dagy-env-from-stack.sh against moto; returns (CompletedProcess, {NAME: value})
    as a POSIX shell sees them after eval-ing its output."""
    env = cli_env(moto)
    env["PATH"] = os.path.dirname(aws_cli()) + os.pathsep + env.get("PATH", "")
    r = awsenv.run([ENV_SCRIPT, stack, "--endpoint-url", moto.endpoint], env=env, timeout=60)
    if r.returncode != 0:
        return r, {}
    # Evaluated by sh itself, so the quoting is checked, not re-implemented here.
    clean = {k: v for k, v in awsenv.clean_env().items() if not k.startswith("DAGY_")}
    shown = awsenv.run(["sh", "-c", r.stdout + "\nenv -0"], env=clean, timeout=30)
    got = {}
    for item in shown.stdout.split("\0"):
        k, _, v = item.partition("=")
        if k.startswith("DAGY_"):
            got[k] = v
    return r, got
