"""deploy/dagy.yaml without an emulator: every resource becomes the API requests CloudFormation
makes for it (CreateTable + UpdateContinuousBackups, CreateBucket + PutBucketVersioning + ...,
CreateCluster, RegisterTaskDefinition, CreateFunction, PutRule + PutTargets, AddPermission,
CreateRole + PutRolePolicy, CreateLogGroup + PutRetentionPolicy) and each is validated against
botocore's service model - the check for what moto accepts but ignores (point-in-time recovery,
versioning, public access blocks, lifecycle rules, ownership, capacity providers, the task
definition's Fargate settings and roles, the functions' package type). Then the production
properties themselves, and every IAM action against the operations of its service."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cfnlocal  # noqa: E402
import recproxy  # noqa: E402

PARAMS = {"WorkerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dagy-worker:1.2.3",
          "Subnets": ["subnet-0a", "subnet-0b"], "SecurityGroups": ["sg-01"]}
TABLE_KEYS = {"RunsTable": ("run_id", None), "TaskRunsTable": ("run_id", "task_name"),
              "FlowsTable": ("flow_name", "flow_version"),
              "DeploymentsTable": ("deployment_name", None), "DepPackagesTable": ("slug", None)}


def camel(node, keep=()):
    """PascalCase keys to the ECS API's camelCase, recursively; keys of `keep` maps verbatim."""
    if isinstance(node, list):
        return [camel(x, keep) for x in node]
    if not isinstance(node, dict):
        return node
    return {k[0].lower() + k[1:]: (v if k in keep else camel(v, keep)) for k, v in node.items()}


def _take(props, *names):
    """Pops the named properties; the caller proves it consumed all (no property unchecked)."""
    return [props.pop(n) for n in names]


def table_calls(p):
    pitr = p.pop("PointInTimeRecoverySpecification")
    return [("dynamodb", "CreateTable", p),
            ("dynamodb", "UpdateContinuousBackups",
             {"TableName": p["TableName"], "PointInTimeRecoverySpecification": pitr})]


def _lifecycle_rule(r):
    out = {"ID": r.pop("Id"), "Status": r.pop("Status"), "Filter": {"Prefix": r.pop("Prefix", "")}}
    if "ExpirationInDays" in r:
        out["Expiration"] = {"Days": int(r.pop("ExpirationInDays"))}
    if "NoncurrentVersionExpiration" in r:
        out["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(r.pop("NoncurrentVersionExpiration").pop("NoncurrentDays"))}
    if "AbortIncompleteMultipartUpload" in r:
        out["AbortIncompleteMultipartUpload"] = r.pop("AbortIncompleteMultipartUpload")
    assert not r, "lifecycle rule properties without a conversion: %s" % sorted(r)
    return out


def bucket_calls(p):
    b = p.pop("BucketName")
    ver, enc, pab, own, life = _take(p, "VersioningConfiguration", "BucketEncryption",
                                     "PublicAccessBlockConfiguration", "OwnershipControls",
                                     "LifecycleConfiguration")
    rules = [{"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"]}
             for r in enc["ServerSideEncryptionConfiguration"]]
    return [("s3", "CreateBucket", {"Bucket": b}),
            ("s3", "PutBucketVersioning", {"Bucket": b, "VersioningConfiguration": ver}),
            ("s3", "PutBucketEncryption",
             {"Bucket": b, "ServerSideEncryptionConfiguration": {"Rules": rules}}),
            ("s3", "PutPublicAccessBlock", {"Bucket": b, "PublicAccessBlockConfiguration": pab}),
            ("s3", "PutBucketOwnershipControls", {"Bucket": b, "OwnershipControls": own}),
            ("s3", "PutBucketLifecycleConfiguration",
             {"Bucket": b, "LifecycleConfiguration": {
                 "Rules": [_lifecycle_rule(dict(r)) for r in life["Rules"]]}})]


def log_group_calls(p):
    name, days = _take(p, "LogGroupName", "RetentionInDays")
    return [("logs", "CreateLogGroup", {"logGroupName": name}),
            ("logs", "PutRetentionPolicy", {"logGroupName": name, "retentionInDays": int(days)})]


def role_calls(p):
    name, trust, policies = _take(p, "RoleName", "AssumeRolePolicyDocument", "Policies")
    calls = [("iam", "CreateRole", dict(p, RoleName=name,
                                         AssumeRolePolicyDocument=json.dumps(trust)))]
    p.clear()
    for pol in policies:
        calls.append(("iam", "PutRolePolicy", {
            "RoleName": name, "PolicyName": pol["PolicyName"],
            "PolicyDocument": json.dumps(pol["PolicyDocument"])}))
    return calls


def function_calls(p):
    p["MemorySize"], p["Timeout"] = int(p["MemorySize"]), int(p["Timeout"])
    return [("lambda", "CreateFunction", p)]


def rule_calls(p):
    targets = p.pop("Targets")
    if "EventPattern" in p:
        p["EventPattern"] = json.dumps(p["EventPattern"])
    return [("events", "PutRule", p),
            ("events", "PutTargets", {"Rule": p["Name"], "Targets": targets})]


CONVERT = {
    "AWS::DynamoDB::Table": table_calls,
    "AWS::S3::Bucket": bucket_calls,
    "AWS::Logs::LogGroup": log_group_calls,
    "AWS::IAM::Role": role_calls,
    "AWS::ECS::Cluster": lambda p: [("ecs", "CreateCluster", camel(p))],
    "AWS::ECS::TaskDefinition": lambda p: [("ecs", "RegisterTaskDefinition",
                                            camel(p, keep=("Options",)))],
    "AWS::Lambda::Function": function_calls,
    "AWS::Events::Rule": rule_calls,
    "AWS::Lambda::Permission": lambda p: [("lambda", "AddPermission",
                                           dict(p, StatementId="events"))],
}


def api_calls(resolver, logical):
    rtype = resolver.t["Resources"][logical]["Type"]
    return CONVERT[rtype](json.loads(json.dumps(resolver.properties(logical))))


class TemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = cfnlocal.load()
        cls.r = cfnlocal.Resolver(cls.t, PARAMS)

    def props(self, logical):
        return self.r.properties(logical)

    def resources(self, rtype):
        return [k for k, v in self.t["Resources"].items() if v["Type"] == rtype]

    def test_every_resource_is_a_valid_api_request_for_botocore(self):
        import botocore.exceptions
        n = 0
        for logical, res in self.t["Resources"].items():
            self.assertIn(res["Type"], CONVERT, "%s: no validation for %s" % (logical, res["Type"]))
            for service, op, params in api_calls(self.r, logical):
                try:
                    recproxy.validate_request(service, op, params)
                except botocore.exceptions.ParamValidationError as e:
                    self.fail("%s -> %s %s: %s" % (logical, service, op, e))
                n += 1
        self.assertGreaterEqual(n, 40)

    def test_a_bad_property_is_refused_by_the_validation(self):
        import botocore.exceptions
        bad = json.loads(json.dumps(self.props("WorkerTaskDefinition")))
        bad["ContainerDefinitions"][0]["MemoryReservation"] = "512 MiB"
        with self.assertRaises(botocore.exceptions.ParamValidationError):
            recproxy.validate_request(*CONVERT["AWS::ECS::TaskDefinition"](bad)[0])
        bad = dict(self.props("RunsTable"), BillingMode="ON_DEMAND", Typo=1)
        with self.assertRaises(botocore.exceptions.ParamValidationError):
            recproxy.validate_request(*table_calls(bad)[0])

    def test_tables_are_on_demand_with_point_in_time_recovery_and_the_active_runs_index(self):
        self.assertEqual(set(self.resources("AWS::DynamoDB::Table")), set(TABLE_KEYS))
        for logical, (hash_key, range_key) in TABLE_KEYS.items():
            p = self.props(logical)
            self.assertEqual(p["BillingMode"], "PAY_PER_REQUEST")
            self.assertEqual(p["PointInTimeRecoverySpecification"],
                             {"PointInTimeRecoveryEnabled": True})
            want = [{"AttributeName": hash_key, "KeyType": "HASH"}]
            if range_key:
                want.append({"AttributeName": range_key, "KeyType": "RANGE"})
            self.assertEqual(p["KeySchema"], want, logical)
            self.assertEqual(self.t["Resources"][logical]["DeletionPolicy"], "Retain")
        self.assertEqual(self.props("RunsTable")["GlobalSecondaryIndexes"], [{
            "IndexName": "active_runs",
            "KeySchema": [{"AttributeName": "active_shard", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "ALL"}}])

    def test_buckets_are_versioned_encrypted_and_never_public(self):
        for logical in ("ArtifactBucket", "TracesBucket"):
            p = self.props(logical)
            self.assertEqual(p["VersioningConfiguration"], {"Status": "Enabled"})
            self.assertEqual(p["PublicAccessBlockConfiguration"], {
                "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True})
            algo = p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            self.assertEqual(algo["ServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256")
        rules = {r["Id"]: r for r in self.props("TracesBucket")["LifecycleConfiguration"]["Rules"]}
        self.assertEqual((rules["traces"]["Prefix"], rules["traces"]["ExpirationInDays"]),
                         ("exceptions/", 90))
        self.assertEqual((rules["results"]["Prefix"], rules["results"]["ExpirationInDays"]),
                         ("results/", 180))

    def test_worker_image_must_be_a_full_uri_with_a_fixed_tag_or_digest(self):
        import re
        # CloudFormation matches the whole value (Java's Pattern.matches): fullmatch here.
        rx = re.compile(self.t["Parameters"]["WorkerImage"]["AllowedPattern"])
        ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/"
        for good in (ecr + "dagy-worker:1.2.3", ecr + "team/dagy-worker:v1_2",
                     ecr + "dagy-worker@sha256:" + "ab" * 32, "registry:5000/dagy:0.1.0"):
            self.assertTrue(rx.fullmatch(good), good)
        for bad in ("dagy-worker", ecr + "dagy-worker", ecr + "dagy-worker:latest",
                    "registry:5000/dagy", ecr + "dagy worker:1", ecr + "dagy-worker:",
                    ecr + "dagy-worker@sha256:abc", ecr + "dagy:1\n"):
            self.assertFalse(rx.fullmatch(bad), bad)

    def test_cluster_has_both_fargate_capacity_providers(self):
        p = self.props("Cluster")
        self.assertEqual(p["CapacityProviders"], ["FARGATE", "FARGATE_SPOT"])
        self.assertEqual(p["DefaultCapacityProviderStrategy"],
                         [{"CapacityProvider": "FARGATE", "Weight": 1}])

    def test_worker_task_definition_is_fargate_with_the_roles_and_the_log_group(self):
        p = self.props("WorkerTaskDefinition")
        self.assertEqual((p["RequiresCompatibilities"], p["NetworkMode"]), (["FARGATE"], "awsvpc"))
        self.assertEqual(p["TaskRoleArn"], "arn:aws:iam::123456789012:role/dagy-worker-task")
        self.assertEqual(p["ExecutionRoleArn"],
                         "arn:aws:iam::123456789012:role/dagy-worker-execution")
        (c,) = p["ContainerDefinitions"]
        self.assertEqual((c["Name"], c["Image"], c["Essential"]),
                         ("dagy-worker", PARAMS["WorkerImage"], True))
        self.assertNotIn("Memory", c)  # a hard limit would cap every run's memory override
        self.assertEqual(c["LogConfiguration"]["Options"]["awslogs-group"], "/ecs/dagy-worker")
        self.assertNotIn("Environment", c)
        on = cfnlocal.Resolver(self.t, dict(PARAMS, RunLogStreams="true"))
        env = on.properties("WorkerTaskDefinition")["ContainerDefinitions"][0]["Environment"]
        self.assertEqual(env, [{"Name": "DAGY_LOG_GROUP", "Value": "/ecs/dagy-worker"}])

    def test_functions_are_the_worker_image_and_arm64_follows_the_parameter(self):
        for logical in self.resources("AWS::Lambda::Function"):
            p = self.props(logical)
            self.assertEqual((p["PackageType"], p["Code"]), ("Image",
                                                              {"ImageUri": PARAMS["WorkerImage"]}))
            self.assertEqual(p["Architectures"], ["x86_64"])
        arm = cfnlocal.Resolver(self.t, dict(PARAMS, Architecture="arm64"))
        self.assertEqual(arm.properties("LauncherFunction")["Architectures"], ["arm64"])
        self.assertEqual(arm.properties("WorkerTaskDefinition")["RuntimePlatform"]
                         ["CpuArchitecture"], "ARM64")

    def test_function_environment_is_the_outputs(self):
        for flag in ("false", "true"):
            r = cfnlocal.Resolver(self.t, dict(PARAMS, RunLogStreams=flag))
            outs = {cfnlocal.output_var(k): str(v) for k, v in r.outputs().items()}
            self.assertEqual("DAGY_LOG_GROUP" in outs, flag == "true")
            for logical in self.resources("AWS::Lambda::Function"):
                self.assertEqual(r.properties(logical)["Environment"]["Variables"], outs, logical)

    def test_every_policy_action_is_an_operation_of_its_service(self):
        import botocore.session
        s = botocore.session.get_session()
        # IAM actions that are not API operations of the same name.
        not_ops = {"iam:PassRole"}
        prefix = {"logs": "logs", "dynamodb": "dynamodb", "s3": "s3", "ecs": "ecs", "ecr": "ecr",
                  "iam": "iam", "sts": "sts"}
        n = 0
        for logical in self.resources("AWS::IAM::Role"):
            p = self.props(logical)
            docs = [p["AssumeRolePolicyDocument"]] + [x["PolicyDocument"] for x in p["Policies"]]
            for doc in docs:
                for st in doc["Statement"]:
                    acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
                    for a in acts:
                        svc, _, op = a.partition(":")
                        if a in not_ops:
                            continue
                        model = s.get_service_model(prefix[svc])
                        self.assertIn(op, model.operation_names, "%s: %s" % (logical, a))
                        n += 1
        self.assertGreater(n, 20)

    def test_policies_name_only_this_stack_resources(self):
        arns = set()
        for logical in self.resources("AWS::IAM::Role"):
            for pol in self.props(logical)["Policies"]:
                for st in pol["PolicyDocument"]["Statement"]:
                    res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                    arns.update((logical, st["Sid"], r) for r in res)
        stars = {(lg, sid) for lg, sid, r in arns if r == "*"}
        # ECR's GetAuthorizationToken has no resource; the pull is bounded by the repository.
        # ListTasks names no task (its resource is a container instance, none on Fargate): it is
        # bounded by its ecs:cluster condition.
        self.assertEqual(stars, {("ExecutionRole", "PullWorkerImage"),
                                 ("ControlRole", "FindOrphanedTaskAttempts")})
        for _, sid, r in arns:
            if r != "*":
                self.assertRegex(r, r"(dagy|DAGY)", sid)


if __name__ == "__main__":
    unittest.main()
