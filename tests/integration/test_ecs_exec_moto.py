"""The per-task ECS executor (issue 15 item 1) against moto with signatures enforced. moto's
RunTask starts nothing, so the test plays ECS: it watches the RunTask requests (recording proxy),
runs dagy-agent with exactly the request's override environment as the child container would
(plus moto's endpoint and keys, its own work directory and a task metadata endpoint that names
the child's task ARN), then marks the task STOPPED (moto's StopTask). moto reports no container
exit code for a stopped Fargate task, so the child's task-run item is the outcome whenever it
recorded one (docs/agent.md: the item's end wins, ECS's exit code only when the child died
without writing). Every RunTask, DescribeTasks and StopTask body is validated with botocore."""

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402
import awsenv  # noqa: E402
import faultproxy  # noqa: E402
import recproxy  # noqa: E402
import test_agent_aws as base  # noqa: E402  (helpers only)

RUNS, TASK_RUNS, ARTIFACTS, TRACES, ORG = (base.RUNS, base.TASK_RUNS, base.ARTIFACTS, base.TRACES,
                                           base.ORG)
RESULTS = "dagy-results"
PARENT_ARN = base.TASK_ARN
LAUNCH = os.environ.get("DAGY_LAUNCH") or os.path.join(os.path.dirname(base.AGENT), "dagy-launch")


class ChildMetadata:
    """ECS task metadata v4 for the children: GET /child/ID/task names task ID's ARN."""

    def start(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                parts = self.path.strip("/").split("/")
                arn = "arn:aws:ecs:us-east-1:123456789012:task/dagy-cluster/" + parts[1]
                body = json.dumps({"Cluster": "dagy-cluster", "TaskARN": arn}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.base = "http://127.0.0.1:%d/child" % self._server.server_address[1]
        return self

    def uri(self, arn):
        return "%s/%s" % (self.base, arn.rsplit("/", 1)[-1])

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class FirstRunTasksThrottled(faultproxy.FaultProxy):
    """Answers the first `n` RunTask calls ThrottlingException (ECS's JSON), forwards the rest."""

    def __init__(self, upstream, n):
        super().__init__(upstream)
        self.throttle_type = "ThrottlingException"
        self.left = n
        self.times = []

    def _choose(self, method, path, headers):
        if "RunTask" in (headers.get("X-Amz-Target") or ""):
            with self._lock:
                self.times.append(time.monotonic())
                if self.left > 0:
                    self.left -= 1
                    return "throttle"
        return None


class EcsPlayer:
    """Plays ECS for the tasks moto 'started': `behave(test, arn, body)` runs in a thread for
    each RunTask answer and decides what the child does."""

    def __init__(self, test, behave):
        self.test, self.behave = test, behave
        self.threads, self.started = [], []
        self._lock = threading.Lock()

    describe_hook = None  # describe_hook(resp) may change a DescribeTasks answer in place

    def rewrite(self, op, req, resp):
        if op == "DescribeTasks" and self.describe_hook is not None:
            self.describe_hook(resp)
            return resp
        if op == "RunTask" and resp.get("tasks"):
            arn = resp["tasks"][0]["taskArn"]
            t = threading.Thread(target=self.behave, args=(self.test, arn, req), daemon=True)
            with self._lock:
                self.started.append((arn, req))
                self.threads.append(t)
            t.start()
        return None

    def join(self):
        for t in list(self.threads):
            t.join(timeout=60)


class EcsExecBase(unittest.TestCase):
    """moto playing ECS, and the helpers (the tests are in the subclasses)."""

    AUTH = True  # moto's signature checker refuses S3 keys with % (a map child NAME[k])

    container_env = base.AgentAwsTest.container_env
    assert_no_secrets = base.AgentAwsTest.assert_no_secrets
    get = base.AgentAwsTest.get
    upload = base.AgentAwsTest.upload

    @classmethod
    def setUpClass(cls):
        import boto3.dynamodb.types

        cls.moto = awsenv.Moto(auth=cls.AUTH).start()
        try:
            m = cls.moto
            req = urllib.request.Request(
                m.endpoint + "/moto-api/state-manager/set-transition",
                data=json.dumps({"model_name": "ecs::task", "transition":
                                 {"progression": "manual", "times": 10**9}}).encode(),
                method="POST")
            urllib.request.urlopen(req, timeout=10).read()
            # The launcher's tables (with the active-runs index reconcile queries).
            r = awsenv.run([LAUNCH, "init-tables"], env=m.env(), timeout=60)
            if r.returncode != 0:
                raise RuntimeError("init-tables failed: " + r.stderr)
            s3 = m.client("s3")
            for b in (ARTIFACTS, TRACES, RESULTS):
                s3.create_bucket(Bucket=b)
            ec2 = m.client("ec2")
            vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
            ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
            cls.subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
            cls.sg = ec2.create_security_group(GroupName="dagy", Description="d",
                                               VpcId=vpc)["GroupId"]
            ecs = m.client("ecs")
            ecs.create_cluster(clusterName="dagy-cluster")
            for _ in range(3):  # base.MetadataServer names dagy-worker:3
                ecs.register_task_definition(
                    family="dagy-worker", requiresCompatibilities=["FARGATE"],
                    networkMode="awsvpc", cpu="256", memory="512",
                    containerDefinitions=[{"name": "dagy-worker", "image": "dagy:1",
                                           "memory": 512, "essential": True}])
        except BaseException:
            cls.moto.stop()
            raise
        cls.deser = boto3.dynamodb.types.TypeDeserializer()

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def setUp(self):
        self.ddb = self.moto.client("dynamodb")
        self.s3 = self.moto.client("s3")
        self.ecs = self.moto.client("ecs")
        self.tmp = tempfile.mkdtemp(prefix="dagy-ecsexec-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.work = os.path.join(self.tmp, "work")
        self.meta = base.MetadataServer().start()
        self.addCleanup(self.meta.stop)
        self.child_meta = ChildMetadata().start()
        self.addCleanup(self.child_meta.stop)
        self.secrets = [self.moto.secret_key]
        self.proxy = recproxy.RecProxy(self.moto.endpoint).start()
        self.addCleanup(self.proxy.stop)
        # The children's DynamoDB requests, to show they never touch the run item.
        self.child_ddb = faultproxy.FaultProxy(self.moto.endpoint, record_bodies=True).start()
        self.addCleanup(self.child_ddb.stop)
        self.children = []  # (arn, env, CompletedProcess)

    def tearDown(self):
        for op in ("RunTask", "DescribeTasks", "StopTask", "ListTasks"):
            for body in self.proxy.calls(op):
                recproxy.validate_ecs_request(op, body)
        # ECS's tag rules (botocore's model does not carry the pattern): 1-128 key, <= 256 value
        # of letters, digits, spaces and _ . : / = + - @.
        for body in self.proxy.calls("RunTask"):
            for t in body.get("tags", []):
                self.assertRegex(t["key"], r"^[A-Za-z0-9 _.:/=+\-@]{1,128}$")
                self.assertRegex(t["value"], r"^[A-Za-z0-9 _.:/=+\-@]{0,256}$")
        for _, _, headers, body in self.child_ddb.bodies:
            if headers.get("x-amz-target", "").endswith("UpdateItem"):
                self.assertNotEqual(json.loads(body)["TableName"], RUNS, "a child wrote the run")

    # -- helpers -------------------------------------------------------------------------------

    def artifact(self, tasks, name="ecs_flow"):
        return self.upload("flows/%s/%f/artifact.zip" % (name, time.time()),
                           base.zip_bytes(base.flow_files(tasks, name=name)))

    def parent_env(self, run_id, art, **extra):
        extra.setdefault("DAGY_RESULTS_BUCKET", RESULTS)
        extra.setdefault("AWS_ENDPOINT_URL_ECS", self.proxy.endpoint)
        extra.setdefault("DAGY_ECS_SUBNETS", self.subnet)
        extra.setdefault("DAGY_ECS_SECURITY_GROUPS", self.sg)
        extra.setdefault("DAGY_ECS_POLL_SECONDS", "0.2")
        extra.setdefault("DAGY_LOG_LEVEL", "INFO")
        return self.container_env(run_id, art, **extra)

    def run_child(self, arn, body, timeout=60):
        """Runs the child as its container would: the override environment, nothing else of
        the parent's (its own work directory, as another container has its own disk)."""
        over = body["overrides"]["containerOverrides"][0]["environment"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DAGY_") and not k.startswith("ECS_")}
        env = self.moto.env(env)
        env.update({e["name"]: e["value"] for e in over})
        env["DAGY_WORK_DIR"] = os.path.join(self.tmp, "child-" + arn.rsplit("/", 1)[-1])
        env["ECS_CONTAINER_METADATA_URI_V4"] = self.child_meta.uri(arn)
        env["AWS_ENDPOINT_URL_DYNAMODB"] = self.child_ddb.url
        p = awsenv.run([base.AGENT, "--log-format", "json"], env=env, timeout=timeout,
                       cwd=self.tmp)
        self.children.append((arn, env, p))
        self.assertNotRegex(p.stderr, r"Sanitizer|runtime error:")
        return p

    def stop_task(self, arn, reason="Essential container in task exited"):
        self.ecs.stop_task(cluster="dagy-cluster", task=arn, reason=reason)

    def start_parent(self, env, behave):
        player = EcsPlayer(self, behave)
        self.proxy.rewrite = player.rewrite
        p = subprocess.Popen([base.AGENT, "--log-format", "json"], env=env, cwd=self.tmp,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.addCleanup(awsenv.stop_process, p)
        return p, player

    def finish_parent(self, p, player, env, timeout=90):
        out, err = p.communicate(timeout=timeout)
        player.join()
        res = base.Result(p.returncode, out, err)
        self.assert_no_secrets(res, env)
        return res

    def run_parent(self, env, behave, timeout=90):
        p, player = self.start_parent(env, behave)
        return self.finish_parent(p, player, env, timeout), player

    @staticmethod
    def run_and_stop(test, arn, body):
        """The usual child: runs to its end, then its task stops."""
        test.run_child(arn, body)
        test.stop_task(arn)


class EcsExecTest(EcsExecBase):
    # -- tests ---------------------------------------------------------------------------------

    def test_middle_task_on_ecs_passes_its_result_downstream(self):
        tasks = [
            {"name": "a", "command": ["sh", "-c", "printf '{\"n\": 41}' > \"$DAGY_TASK_OUTPUT\""]},
            {"name": "b", "upstream": ["a"], "executor": {"type": "ecs", "profile": "xlarge"},
             "command": ["sh", "-c", "printf '{\"b\": %s, \"attempt\": %s}' "
                         "\"$(cat \"$DAGY_TASK_INPUTS\")\" \"$DAGY_ATTEMPT\" > "
                         "\"$DAGY_TASK_OUTPUT\""]},
            {"name": "c", "upstream": ["b"],
             "command": ["sh", "-c", "cat \"$DAGY_TASK_INPUTS\" > \"$DAGY_TASK_OUTPUT\""]},
        ]
        run_id = "ecs-three-1"
        env = self.parent_env(run_id, self.artifact(tasks))
        res, player = self.run_parent(env, self.run_and_stop)
        self.assertEqual(res.code, 0, [e for e in res.lines if e.get("task_name") == "b"])
        self.assertEqual(len(player.started), 1)
        arn, body = player.started[0]
        # The RunTask: the run's own task definition and cluster (task metadata), the profile's
        # size, the network configuration passed on, tags for the reconciler.
        self.assertEqual(body["cluster"], "dagy-cluster")
        self.assertEqual(body["taskDefinition"], "dagy-worker:3")
        self.assertEqual(body["launchType"], "FARGATE")
        self.assertEqual((body["overrides"]["cpu"], body["overrides"]["memory"]), ("4096", "8192"))
        vpc = body["networkConfiguration"]["awsvpcConfiguration"]
        self.assertEqual((vpc["subnets"], vpc["securityGroups"]), ([self.subnet], [self.sg]))
        tags = {t["key"]: t["value"] for t in body["tags"]}
        self.assertEqual((tags["dagy:run_id"], tags["dagy:task"], tags["dagy:attempt"],
                          tags["dagy:parent"]), (run_id, "b", "1", PARENT_ARN))
        self.assertRegex(body["clientToken"], r"^[0-9a-f]{64}$")
        self.assertEqual(body["startedBy"], "dagy-agent")
        over = {e["name"]: e["value"] for e in
                body["overrides"]["containerOverrides"][0]["environment"]}
        self.assertEqual((over["DAGY_ONLY_TASK"], over["DAGY_ATTEMPT"]), ("b", "1"))
        # The child ran exactly b, stored its result, and recorded the attempt.
        child = base.Result(self.children[0][2].returncode, self.children[0][2].stdout, "")
        self.assertEqual(child.code, 0, self.children[0][2].stderr)
        self.assertEqual([e["task_name"] for e in child.lines if e["event_type"] == "task_start"],
                         ["b"])
        b = self.get(run_id, "b")
        self.assertEqual((b["status"], b["attempt"], b["external_id"]), ("SUCCEEDED", 1, arn))
        self.assertEqual(b["result_s3_uri"], "s3://%s/results/%s/%s/b.json" % (RESULTS, ORG, run_id))
        self.assertEqual(b["task_run_id"], over["DAGY_TASK_RUN_ID"])
        c = self.get(run_id, "c")
        stored = self.s3.get_object(Bucket=RESULTS, Key="results/%s/%s/c.json" % (ORG, run_id))
        self.assertEqual(json.loads(stored["Body"].read()), {"b": {"b": {"a": {"n": 41}},
                                                                   "attempt": 1}})
        self.assertEqual(c["status"], "SUCCEEDED")
        run = self.get(run_id)
        self.assertEqual((run["status"], run["tasks_succeeded"]), ("SUCCEEDED", 3))
        # The parent polled the item and ECS; it never ran b itself.
        self.assertFalse([e for e in res.lines if e["event_type"] == "task_output"
                          and e.get("task_name") == "b"])
        self.assertTrue(self.proxy.calls("DescribeTasks"))

    def test_a_taken_over_run_still_hears_its_children(self):
        # An earlier agent of the run died: this one writes above 2^20, and so must its child
        # (it waits for the parent's RUNNING of its attempt before it writes anything).
        tasks = [{"name": "b", "executor": {"type": "ecs"},
                  "command": ["sh", "-c", "echo 7 > \"$DAGY_TASK_OUTPUT\""]}]
        run_id = "ecs-takeover-1"
        self.ddb.put_item(TableName=RUNS, Item={"run_id": {"S": run_id},
                                                "status": {"S": "RUNNING"},
                                                "status_seq": {"N": "5"}})
        env = self.parent_env(run_id, self.artifact(tasks))
        res, player = self.run_parent(env, self.run_and_stop)
        self.assertEqual(res.code, 0, [e for e in res.lines if e.get("task_name") == "b"])
        self.assertTrue([e for e in res.lines if e["event_type"] == "status_takeover"])
        child = base.Result(self.children[0][2].returncode, self.children[0][2].stdout, "")
        self.assertFalse([e for e in child.lines if e["event_type"] == "status_write_failed"])
        b = self.get(run_id, "b")
        self.assertEqual((b["status"], b["external_id"]), ("SUCCEEDED", player.started[0][0]))
        self.assertGreater(b["status_seq"], 2 ** 20)

    def test_a_child_that_exits_1_is_retried_as_a_new_ecs_task(self):
        tasks = [{"name": "b", "retries": 1, "retry_delay_seconds": 0,
                  "executor": {"type": "ecs", "cpu": 512, "memory": 2048},
                  "command": ["sh", "-c", "echo attempt $DAGY_ATTEMPT >&2; "
                              "test \"$DAGY_ATTEMPT\" = 2"]}]
        run_id = "ecs-retry-1"
        env = self.parent_env(run_id, self.artifact(tasks))
        res, player = self.run_parent(env, self.run_and_stop)
        self.assertEqual(res.code, 0, res.err)
        self.assertEqual(len(player.started), 2)
        tokens = [b["clientToken"] for _, b in player.started]
        self.assertNotEqual(tokens[0], tokens[1])
        attempts = [{e["name"]: e["value"] for e in
                     b["overrides"]["containerOverrides"][0]["environment"]}["DAGY_ATTEMPT"]
                    for _, b in player.started]
        self.assertEqual(attempts, ["1", "2"])
        self.assertEqual([p.returncode for _, _, p in self.children], [1, 0])
        retry = [e for e in res.lines if e["event_type"] == "task_retry"]
        self.assertEqual(len(retry), 1)
        self.assertIn("exited with code 1: attempt 1", retry[0]["error"])
        b = self.get(run_id, "b")
        self.assertEqual((b["status"], b["attempt"], b["external_id"]),
                         ("SUCCEEDED", 2, player.started[1][0]))

    def test_a_timeout_stops_the_child_with_stoptask(self):
        # The child never comes up (slow provisioning): the parent's timeout stops its task.
        tasks = [{"name": "b", "timeout_seconds": 1, "executor": {"type": "ecs"},
                  "command": ["true"]},
                 {"name": "c", "upstream": ["b"], "command": ["true"]}]
        run_id = "ecs-timeout-1"
        env = self.parent_env(run_id, self.artifact(tasks))
        res, player = self.run_parent(env, lambda test, arn, body: None)
        self.assertEqual(res.code, 1, res.err)
        stops = self.proxy.calls("StopTask")
        self.assertEqual([s["task"] for s in stops], [player.started[0][0]])
        self.assertIn("timeout", stops[0]["reason"])
        b = self.get(run_id, "b")
        self.assertEqual(b["status"], "FAILED")
        self.assertIn("exceeded timeout of 1 s", b["error_message"])
        self.assertEqual(self.get(run_id, "c")["status"], "SKIPPED")

    def test_sigterm_of_the_parent_stops_its_children_and_records_cancelled(self):
        tasks = [{"name": "b%d" % i, "executor": {"type": "ecs"}, "command": ["sleep", "30"]}
                 for i in range(3)]
        run_id = "ecs-sigterm-1"
        env = self.parent_env(run_id, self.artifact(tasks), DAGY_DRAIN_SECONDS="1")
        p, player = self.start_parent(env, lambda test, arn, body: None)
        self.assertTrue(agentenv.wait_for(lambda: len(player.started) == 3, timeout=30))
        time.sleep(0.5)  # the ARNs are recorded
        os.kill(p.pid, signal.SIGTERM)
        res = self.finish_parent(p, player, env)
        self.assertEqual(res.code, 143, res.err)
        stopped = sorted(s["task"] for s in self.proxy.calls("StopTask"))
        self.assertEqual(stopped, sorted(arn for arn, _ in player.started))
        for i in range(3):
            item = self.get(run_id, "b%d" % i)
            self.assertEqual(item["status"], "CANCELLED", item)
            self.assertIn(item["external_id"], stopped)
        self.assertEqual(self.get(run_id)["status"], "FAILED")
        tasks_left = self.ecs.list_tasks(cluster="dagy-cluster", desiredStatus="RUNNING")
        self.assertFalse(set(tasks_left["taskArns"]) & set(stopped))

    def test_reconcile_stops_the_children_of_a_killed_parent(self):
        tasks = [{"name": "b%d" % i, "executor": {"type": "ecs"}, "command": ["sleep", "30"]}
                 for i in range(2)]
        run_id = "ecs-kill9-1"
        env = self.parent_env(run_id, self.artifact(tasks))
        p, player = self.start_parent(env, lambda test, arn, body: None)
        self.assertTrue(agentenv.wait_for(lambda: len(player.started) == 2, timeout=30))
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
        arns = sorted(arn for arn, _ in player.started)
        running = self.ecs.list_tasks(cluster="dagy-cluster", desiredStatus="RUNNING")["taskArns"]
        self.assertTrue(set(arns) <= set(running))
        lenv = self.moto.env(DAGY_ECS_CLUSTER_ARN="dagy-cluster",
                             AWS_ENDPOINT_URL_ECS=self.proxy.endpoint)
        r = awsenv.run([LAUNCH, "reconcile", "--relaunch-infra", "0"], env=lenv, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["children_stopped"], 2, r.stdout)
        self.assertEqual(sorted(s["task"] for s in self.proxy.calls("StopTask")), arns)
        self.assertTrue(all(s["reason"].startswith("dagy reconcile: parent ")
                            for s in self.proxy.calls("StopTask")))
        running = self.ecs.list_tasks(cluster="dagy-cluster", desiredStatus="RUNNING")["taskArns"]
        self.assertFalse(set(arns) & set(running))
        # Idempotent: nothing left to stop.
        r = awsenv.run([LAUNCH, "reconcile", "--relaunch-infra", "0"], env=lenv, timeout=60)
        self.assertNotIn("children_stopped", json.loads(r.stdout))

    def test_a_child_that_died_without_writing_fails_with_the_ecs_exit_code(self):
        # The container was OOM-killed before it recorded anything: ECS's stop decides.
        tasks = [{"name": "b", "executor": {"type": "ecs"}, "command": ["true"]}]
        run_id = "ecs-died-1"
        env = self.parent_env(run_id, self.artifact(tasks))

        def oom(resp):
            for t in resp.get("tasks", []):
                if t.get("lastStatus") == "STOPPED":
                    t["stopCode"] = "EssentialContainerExited"
                    t["stoppedReason"] = "Essential container in task exited"
                    t["containers"] = [{"name": "dagy-worker", "exitCode": 137,
                                        "reason": "OutOfMemoryError: Container killed"}]

        p, player = self.start_parent(env, lambda test, arn, body: test.stop_task(arn))
        player.describe_hook = oom
        res = self.finish_parent(p, player, env)
        self.assertEqual(res.code, 1, res.err)
        b = self.get(run_id, "b")
        self.assertEqual((b["status"], b["exit_code"]), ("FAILED", 137))
        self.assertIn("stopped without recording attempt 1 (exit code 137; "
                      "EssentialContainerExited: Essential container in task exited)",
                      b["error_message"])

    def test_children_are_launched_at_the_bucket_rate_and_described_in_batches(self):
        # The token bucket at a test's scale (Fargate's is 20/s, bursts of 100): a burst of 4,
        # then 10 a second; DescribeTasks carries every unsettled child in one call.
        n = 16
        tasks = [{"name": "t%02d" % i, "executor": {"type": "ecs"}, "command": ["true"]}
                 for i in range(n)]
        run_id = "ecs-many-1"
        env = self.parent_env(run_id, self.artifact(tasks), DAGY_MAX_PARALLEL=str(n),
                              DAGY_ECS_RUNTASK_RATE="10", DAGY_ECS_RUNTASK_BURST="4")
        times = {}

        def stop_when_all_started(test, arn, body):
            times[arn] = time.monotonic()
            agentenv.wait_for(lambda: len(times) == n, timeout=60)
            time.sleep(0.5)
            test.stop_task(arn)

        res, player = self.run_parent(env, stop_when_all_started, timeout=120)
        self.assertEqual(res.code, 1, res.err)  # nobody recorded anything: all FAILED
        self.assertEqual(len(player.started), n)
        sizes = [len(d["tasks"]) for d in self.proxy.calls("DescribeTasks")]
        self.assertLessEqual(max(sizes), 100)
        self.assertIn(n, sizes)  # one call for all of them, not one per child
        t = sorted(times.values())
        self.assertGreater(t[-1] - t[3], 1.0)  # the 12 after the burst: at least 1.1 s
        self.assertLess(t[3] - t[0], 0.8)  # the burst: at once

    def test_runtask_throttling_is_answered_with_backoff(self):
        tasks = [{"name": "b", "executor": {"type": "ecs"},
                  "command": ["sh", "-c", "echo '[1]' > \"$DAGY_TASK_OUTPUT\""]}]
        run_id = "ecs-throttle-1"
        throttle = FirstRunTasksThrottled(self.proxy.endpoint, 3).start()
        self.addCleanup(throttle.stop)
        env = self.parent_env(run_id, self.artifact(tasks), AWS_ENDPOINT_URL_ECS=throttle.url)
        res, player = self.run_parent(env, self.run_and_stop)
        self.assertEqual(res.code, 0, res.err)
        self.assertEqual(throttle.left, 0)
        self.assertEqual(len(player.started), 1)  # one task: the retries never reached ECS
        self.assertGreaterEqual(len(throttle.times), 4)
        # Backoff: the retries are spread out, not sent back to back.
        self.assertGreater(throttle.times[3] - throttle.times[0], 0.2)
        self.assertEqual(self.get(run_id, "b")["status"], "SUCCEEDED")

    def test_an_ecs_task_needs_container_mode_exit_2(self):
        flow = agentenv.Flow({"spec_version": 1, "name": "f", "tasks": [
            {"name": "b", "executor": {"type": "ecs"}, "command": ["true"]}]})
        self.addCleanup(flow.cleanup)
        r = flow.run()
        self.assertEqual(r.code, 2, r)
        end = [e for e in r.events("run_end")][0]
        self.assertIn('task "b": executor "ecs" runs the task on its own ECS task, which needs',
                      end["error"])

    def test_child_mode_needs_its_attempt_and_task_run(self):
        env = self.parent_env("ecs-child-cfg", "s3://%s/x.zip" % ARTIFACTS, DAGY_ONLY_TASK="b")
        r = awsenv.run([base.AGENT, "--log-format", "json"], env=env, timeout=30, cwd=self.tmp)
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn("DAGY_ONLY_TASK is set, so DAGY_ATTEMPT must be the attempt number",
                      r.stdout + r.stderr)
        env.update(DAGY_ATTEMPT="1", DAGY_TASK_RUN_ID="../etc")
        r = awsenv.run([base.AGENT, "--log-format", "json"], env=env, timeout=30, cwd=self.tmp)
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn("DAGY_TASK_RUN_ID must be the task run's UUID", r.stdout + r.stderr)

    def test_a_stale_child_runs_nothing(self):
        # A child started for a task that already ended (a duplicate, a late start) refuses.
        tasks = [{"name": "b", "executor": {"type": "ecs"}, "command": ["true"]}]
        run_id = "ecs-stale-1"
        env = self.parent_env(run_id, self.artifact(tasks))
        res, player = self.run_parent(env, self.run_and_stop)
        self.assertEqual(res.code, 0, res.err)
        p = self.run_child(player.started[0][0], player.started[0][1])
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("already ended SUCCEEDED", p.stdout)


if __name__ == "__main__":
    unittest.main()
