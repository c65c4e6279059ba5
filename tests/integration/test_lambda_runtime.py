"""dagy-launch lambda against moto (signatures on) through a loopback Runtime API
(lambdaenv.RuntimeAPI): one process serves many invocations; action events answer what the CLI
prints; API Gateway (payload 2.0) launch -> status -> cancel with proper status codes; an
EventBridge schedule launches; an ECS Task State Change STOPPED closes its run in one invocation
with the reconciler's rules (conditional: a run the agent finished is skipped); the deadline is
kept (an error answer, and the process goes on); a bad event gets an error answer."""

import base64
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lambdaenv  # noqa: E402
import launchenv  # noqa: E402
from launchenv import ORG  # noqa: E402

RUNS = "LAMBDA_RUNS"


def http_event(method, path, body=None, b64=False, query=None):
    """An API Gateway HTTP API request, payload format 2.0 (default stage)."""
    ev = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "stage": "$default",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.7"},
        },
        "isBase64Encoded": b64,
    }
    if query:
        ev["queryStringParameters"] = query
    if body is not None:
        text = body if isinstance(body, str) else json.dumps(body)
        ev["body"] = base64.b64encode(text.encode()).decode() if b64 else text
    return ev


def ecs_event(task_arn, run_id=None, stop_code="EssentialContainerExited", exit_code=1,
              reason="Essential container in task exited", last="STOPPED", tags=None):
    """An EventBridge ECS Task State Change event for a dagy worker task."""
    env = [{"name": "DAGY_FLOW_NAME", "value": "etl"}]
    if run_id:
        env.append({"name": "DAGY_RUN_ID", "value": run_id})
    detail = {
        "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/dagy",
        "taskArn": task_arn, "lastStatus": last, "desiredStatus": "STOPPED",
        "group": "family:dagy-worker", "startedBy": "dagy-launch",
        "stopCode": stop_code, "stoppedReason": reason, "stoppedAt": "2026-03-14T09:00:00.123Z",
        "containers": [{"name": "dagy-worker", "exitCode": exit_code, "lastStatus": "STOPPED"}],
        "overrides": {"containerOverrides": [{"name": "dagy-worker", "environment": env}]},
    }
    if tags is not None:
        detail["tags"] = tags
    return {"version": "0", "id": "e1", "detail-type": "ECS Task State Change", "source": "aws.ecs",
            "account": "123456789012", "time": "2026-03-14T09:00:01Z", "region": "us-east-1",
            "resources": [task_arn], "detail": detail}


class LambdaRuntimeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        cls.api = None
        cls.proc = None
        try:
            cls.env = cls.L.env(DAGY_RUNS_TABLE=RUNS, DAGY_TASK_RUNS_TABLE="LAMBDA_TASK_RUNS")
            r = cls.L.launch("init-tables", env=cls.env)
            assert r.returncode == 0, r.stderr
            r, _ = cls.L.register("etl", "1.0.0", env=cls.env)
            assert r.returncode == 0, r.stderr
            cls.api = lambdaenv.RuntimeAPI().start()
            cls.log = cls.L.path("lambda.log")
            cls.proc = cls.api.spawn([launchenv.LAUNCH, "lambda"], cls.env, cls.log)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        log = ""
        if cls.proc is not None:
            cls.api.stop_process(cls.proc)
            log = cls.logtext(cls)
        if cls.api is not None:
            cls.api.stop()
        cls.L.stop()
        # A child that answered and then failed (a sanitizer's leak report) is logged.
        for bad in ("Sanitizer", "runtime error", "process ended with"):
            assert bad not in log, log[-4000:]

    def setUp(self):
        self.assertIsNone(self.proc.poll(), "the runtime process ended: " + self.logtext())

    def logtext(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def invoke(self, event, **kw):
        return self.api.invoke(event, **kw)

    def item(self, run_id):
        return self.L.run_item(run_id, table=RUNS)

    def launch_run(self, run_id):
        r = self.L.launch("run", "--flow", "etl", "--org", ORG, "--run-id", run_id, env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.json["task_arn"]

    def agent_write(self, run_id, status, seq, terminal=False):
        expr = "SET #s = :s, status_seq = :q" + (" REMOVE active_shard" if terminal else "")
        self.L.moto.client("dynamodb").update_item(
            TableName=RUNS, Key={"run_id": {"S": run_id}}, UpdateExpression=expr,
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}, ":q": {"N": str(seq)}})

    # ---- action events ----

    def test_action_events_answer_what_the_cli_prints(self):
        kind, a, _ = self.invoke({"action": "launch", "flow_name": "etl", "org_id": ORG,
                                  "run_id": "lam-act-1", "parameters": {"day": "2026-03-14"},
                                  "workload_profile": "medium", "correlation_id": "req-1"})
        self.assertEqual(kind, "response", a)
        self.assertTrue(a["success"], a)
        self.assertEqual((a["run_id"], a["flow_name"], a["correlation_id"]), ("lam-act-1", "etl", "req-1"))
        it = self.item("lam-act-1")
        self.assertEqual((it["status"], it["external_id"], it["cpu"], it["trigger_source"], it["triggered_by"]),
                         ("QUEUED", a["task_arn"], 1024, "lambda", "dag-launcher"))
        self.assertEqual(json.loads(it["parameters"]), {"day": "2026-03-14"})
        # status answers the CLI's JSON.
        kind, s, _ = self.invoke({"action": "status", "run_id": "lam-act-1"})
        cli = self.L.launch("status", "lam-act-1", env=self.env)
        self.assertEqual(kind, "response")
        self.assertEqual(s, cli.json)
        # batch: defaults under each request, child correlation ids.
        kind, b, _ = self.invoke({"action": "batch", "org_id": ORG, "correlation_id": "batch-9",
                                  "flow_name": "etl", "parameters": {"shared": "x"},
                                  "requests": [{"parameters": {"shard": "0"}, "run_id": "lam-b0"},
                                               {"parameters": {"shard": "1"}, "run_id": "lam-b1"}]})
        self.assertEqual(kind, "response", b)
        self.assertEqual([x["correlation_id"] for x in b], ["batch-9:0", "batch-9:1"])
        self.assertEqual(json.loads(self.item("lam-b1")["parameters"]), {"shared": "x", "shard": "1"})
        # reconcile with the seeds' names.
        kind, rc, _ = self.invoke({"action": "reconcile", "max_runs": 10, "stale_threshold_seconds": 3600})
        self.assertEqual((kind, rc), ("response", {"checked": 0, "updated": 0, "skipped": 0, "relaunched": 0}))

    def test_invalid_and_missing_get_error_answers(self):
        kind, a, h = self.invoke({"action": "launch", "flow_name": "etl"})
        self.assertEqual(kind, "error")
        self.assertEqual(a["errorType"], "Dagy.InvalidRequest")
        self.assertIn("org_id is required", a["errorMessage"])
        self.assertEqual(h.get("Lambda-Runtime-Function-Error-Type"), "Dagy.InvalidRequest")
        kind, a, _ = self.invoke({"action": "status", "run_id": "no-such-run"})
        self.assertEqual((kind, a["errorType"]), ("error", "Dagy.NotFound"))
        kind, a, _ = self.invoke({"action": "explode"})
        self.assertEqual((kind, a["errorType"]), ("error", "Dagy.InvalidRequest"))
        self.assertIn("unknown action", a["errorMessage"])
        kind, a, _ = self.invoke({"action": "launch", "flow_name": "etl", "org_id": ORG, "colour": "red"})
        self.assertEqual(kind, "error")
        self.assertIn('unknown field "colour"', a["errorMessage"])

    def test_retry_action_relaunches_and_refuses_what_the_cli_refuses(self):
        self.launch_run("lam-retry-src")
        self.agent_write("lam-retry-src", "FAILED", 5, terminal=True)
        kind, a, _ = self.invoke({"action": "retry", "run_id": "lam-retry-src", "new_run_id": "bad/id"})
        self.assertEqual((kind, a["errorType"]), ("error", "Dagy.InvalidRequest"), a)
        self.assertIn("new_run_id", a["errorMessage"])
        kind, a, _ = self.invoke({"action": "retry", "run_id": "lam-retry-src", "new_run_id": "lam-retry-1"})
        self.assertEqual(kind, "response", a)
        self.assertTrue(a["success"], a)
        self.assertEqual(self.item("lam-retry-1")["retry_of"], "lam-retry-src")
        # A SUCCEEDED run is resumed from nothing: refused (409), as the CLI refuses it.
        self.launch_run("lam-retry-ok")
        self.agent_write("lam-retry-ok", "SUCCEEDED", 5, terminal=True)
        kind, a, _ = self.invoke({"action": "retry", "run_id": "lam-retry-ok"})
        self.assertEqual((kind, a["errorType"]), ("error", "Dagy.Conflict"), a)
        self.assertIn("SUCCEEDED", a["errorMessage"])
        kind, a, _ = self.invoke({"action": "retry", "run_id": "lam-retry-none"})
        self.assertEqual((kind, a["errorType"]), ("error", "Dagy.NotFound"), a)

    def test_bad_events_get_error_answers_and_the_process_goes_on(self):
        pid = self.proc.pid
        for raw in (b"{not json", b"\xff\xfe\x00", b"[1,2]", b'"text"', b"", b'{"a":"\\u0000"}',
                    b'{"nothing": "here"}', b"{" * 100000):
            kind, a, _ = self.invoke(raw)
            self.assertEqual(kind, "error", raw[:20])
            self.assertEqual(a["errorType"], "Dagy.InvalidEvent", (raw[:20], a))
        # Over Lambda's 6 MB payload limit: answered, not left to time out.
        kind, a, _ = self.invoke(b'{"action": "status", "pad": "' + b"x" * (7 << 20) + b'"}')
        self.assertEqual((kind, a["errorType"]), ("error", "Dagy.InvalidEvent"))
        self.assertIn("larger than", a["errorMessage"])
        self.assertIsNone(self.proc.poll())
        self.assertEqual(self.proc.pid, pid)

    def test_many_invocations_in_one_process(self):
        before = self.api.next_calls
        for i in range(25):
            kind, a, _ = self.invoke({"action": "status", "run_id": "absent-%d" % i})
            self.assertEqual((kind, a["errorType"]), ("error", "Dagy.NotFound"))
        # The 25th answer is followed by the runtime's next long poll; it may still be on its way
        # (the first event was served by a poll counted in `before`): wait for it, bounded.
        deadline = time.time() + 10
        while self.api.next_calls - before < 25 and time.time() < deadline:
            time.sleep(0.02)
        self.assertGreaterEqual(self.api.next_calls - before, 25)
        self.assertIsNone(self.proc.poll())

    # ---- deadline ----

    def test_a_short_deadline_gets_an_error_answer_and_the_next_invocation_is_served(self):
        def slow(op, req, resp):
            if op == "RunTask":
                time.sleep(4)
            return None
        self.L.proxy.rewrite = slow
        try:
            t0 = time.time()
            kind, a, h = self.invoke({"action": "launch", "flow_name": "etl", "org_id": ORG,
                                      "run_id": "lam-deadline"}, deadline_in=1.5)
            took = time.time() - t0
        finally:
            self.L.proxy.rewrite = None
        self.assertEqual(kind, "error", a)
        self.assertEqual(a["errorType"], "Dagy.DeadlineExceeded")
        self.assertEqual(h.get("Lambda-Runtime-Function-Error-Type"), "Dagy.DeadlineExceeded")
        self.assertLess(took, 1.5, "answered after the deadline")
        # A deadline already past: nothing is done at all.
        kind, a, _ = self.invoke({"action": "launch", "flow_name": "etl", "org_id": ORG,
                                  "run_id": "lam-late"}, deadline_in=0.1)
        self.assertEqual((kind, a["errorType"]), ("error", "Dagy.DeadlineExceeded"))
        self.assertIsNone(self.item("lam-late"))
        # The same process serves the next invocation.
        kind, a, _ = self.invoke({"action": "status", "run_id": "lam-deadline"})
        self.assertEqual(kind, "response", a)
        self.assertEqual(a["run_id"], "lam-deadline")

    def test_sigterm_stops_the_invocation_in_progress_too(self):
        api = lambdaenv.RuntimeAPI().start()
        p = None

        def slow(op, req, resp):
            if op == "RunTask":
                time.sleep(3)
            return None
        self.L.proxy.rewrite = slow
        try:
            p = api.spawn([launchenv.LAUNCH, "lambda"], self.env, self.L.path("lambda-term.log"))
            api.pending.put(("term-1", json.dumps({"action": "launch", "flow_name": "etl", "org_id": ORG,
                                                   "run_id": "lam-term"}).encode(),
                             int((time.time() + 60) * 1000)))
            child = None
            for _ in range(200):  # the invocation's child appears once the event is taken
                try:
                    with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                        kids = f.read().split()
                except OSError:
                    kids = []
                if kids:
                    child = int(kids[0])
                    break
                time.sleep(0.02)
            self.assertIsNotNone(child, "no invocation child")
            p.terminate()
            self.assertEqual(p.wait(timeout=10), 143)
            for _ in range(100):
                if not os.path.exists("/proc/%d" % child):
                    break
                with open("/proc/%d/stat" % child) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break  # killed, waiting for its reaper (init)
                time.sleep(0.02)
            else:
                self.fail("the invocation's child %d outlived the runtime" % child)
        finally:
            self.L.proxy.rewrite = None
            api.stop_process(p)
            api.stop()

    # ---- API Gateway ----

    def test_api_gateway_launch_status_cancel(self):
        kind, r, _ = self.invoke(http_event("POST", "/flows/etl/runs",
                                            {"org_id": ORG, "parameters": {"a": "1"}}))
        self.assertEqual(kind, "response", r)
        self.assertEqual(r["statusCode"], 202, r)
        self.assertEqual(r["headers"]["content-type"], "application/json")
        body = json.loads(r["body"])
        self.assertTrue(body["success"], body)
        run_id = body["run_id"]
        it = self.item(run_id)
        self.assertEqual((it["trigger_source"], it["triggered_by"]), ("api", "192.0.2.7"))
        kind, r, _ = self.invoke(http_event("GET", "/runs/" + run_id))
        self.assertEqual(r["statusCode"], 200, r)
        self.assertEqual(json.loads(r["body"])["status"], "QUEUED")
        kind, r, _ = self.invoke(http_event("POST", "/runs/%s/cancel" % run_id, {"reason": "not today"}))
        self.assertEqual(r["statusCode"], 200, r)
        c = json.loads(r["body"])
        self.assertEqual((c["run_id"], c["status"]), (run_id, "CANCELLED"))
        self.assertEqual(self.item(run_id)["stop_reason"], "UserInitiated: not today")
        # Cancelling again: already cancelled is fine; status shows it.
        kind, r, _ = self.invoke(http_event("POST", "/runs/%s/cancel" % run_id))
        self.assertEqual(r["statusCode"], 200, r)
        kind, r, _ = self.invoke(http_event("GET", "/runs/" + run_id))
        self.assertEqual(json.loads(r["body"])["status"], "CANCELLED")

    def test_api_gateway_base64_body_and_query_org(self):
        kind, r, _ = self.invoke(http_event("POST", "/flows/etl/runs", {"parameters": {"b": "2"}},
                                            b64=True, query={"org_id": ORG}))
        self.assertEqual(r["statusCode"], 202, r)
        body = json.loads(r["body"])
        self.assertEqual(json.loads(self.item(body["run_id"])["parameters"]), {"b": "2"})

    def test_api_gateway_unknown_run_is_404_and_bad_input_400(self):
        kind, r, _ = self.invoke(http_event("GET", "/runs/never-launched"))
        self.assertEqual((kind, r["statusCode"]), ("response", 404))
        self.assertIn("not found", json.loads(r["body"])["error"])
        kind, r, _ = self.invoke(http_event("POST", "/runs/never-launched/cancel"))
        self.assertEqual(r["statusCode"], 404, r)
        cases = [
            (http_event("POST", "/flows/etl/runs", "{not json"), "JSON object"),
            (http_event("POST", "/flows/etl/runs", {"parameters": {}}), "org_id is required"),
            (http_event("POST", "/flows/etl/runs", {"org_id": ORG, "workload_profile": "huge"}), "huge"),
            (http_event("POST", "/flows/etl/runs", {"org_id": ORG, "cpu": 256, "memory": 4096}), "4096"),
            (http_event("POST", "/flows/et%2Fl/runs", {"org_id": ORG}), "flowName"),
            (http_event("POST", "/flows/etl/runs", {"org_id": ORG, "flow_name": "other"}), "differs"),
            (http_event("GET", "/runs/..%2F"), "runId"),
            (dict(http_event("POST", "/flows/etl/runs", "!!!notbase64"), isBase64Encoded=True), "base64"),
            (http_event("POST", "/flows/nope/runs", {"org_id": ORG}), "not registered"),
        ]
        for ev, want in cases:
            kind, r, _ = self.invoke(ev)
            self.assertEqual((kind, r["statusCode"]), ("response", 400), (ev.get("body"), r))
            self.assertIn(want, json.loads(r["body"]).get("error", "") +
                          (json.loads(r["body"]).get("error_message") or ""), r)
        kind, r, _ = self.invoke(http_event("DELETE", "/runs/x"))
        self.assertEqual(r["statusCode"], 405, r)
        kind, r, _ = self.invoke(http_event("GET", "/elsewhere"))
        self.assertEqual(r["statusCode"], 404, r)

    # ---- EventBridge ----

    def test_scheduled_event_launches_its_detail(self):
        rule = "arn:aws:events:us-east-1:123456789012:rule/dagy-etl-daily"
        kind, a, _ = self.invoke({"version": "0", "id": "s1", "detail-type": "Scheduled Event",
                                  "source": "aws.events", "resources": [rule],
                                  "detail": {"flow_name": "etl", "org_id": ORG, "run_id": "lam-sched"}})
        self.assertEqual(kind, "response", a)
        self.assertTrue(a["success"], a)
        it = self.item("lam-sched")
        self.assertEqual((it["trigger_source"], it["triggered_by"]), ("schedule", rule))
        # A schedule with an empty detail has nothing to launch.
        kind, a, _ = self.invoke({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events",
                                  "resources": [rule], "detail": {}})
        self.assertEqual((kind, a["errorType"]), ("error", "Dagy.InvalidRequest"))

    def test_ecs_stopped_event_closes_the_run_within_one_invocation(self):
        arn = self.launch_run("lam-ecs-1")
        self.agent_write("lam-ecs-1", "RUNNING", 3)
        kind, a, _ = self.invoke(ecs_event(arn, "lam-ecs-1", stop_code="EssentialContainerExited",
                                           exit_code=2))
        self.assertEqual(kind, "response", a)
        self.assertEqual((a["outcome"], a["updated"], a["status"]), ("closed", 1, "FAILED"), a)
        it = self.item("lam-ecs-1")
        self.assertEqual(it["status"], "FAILED")
        self.assertTrue(it["error_message"].startswith("Reconciled: "), it)
        self.assertEqual(it["stop_reason"], "EssentialContainerExited: Essential container in task exited")
        self.assertEqual(it["completed_at"], "2026-03-14T09:00:00.123Z")
        self.assertNotIn("active_shard", it)
        self.assertGreaterEqual(int(it["status_seq"]), 10**12)
        # Exit code 0, found by the dagy:run_id tag: SUCCEEDED.
        arn2 = self.launch_run("lam-ecs-2")
        kind, a, _ = self.invoke(ecs_event(arn2, None, exit_code=0,
                                           tags=[{"key": "dagy:run_id", "value": "lam-ecs-2"}]))
        self.assertEqual((kind, a["status"], a["updated"]), ("response", "SUCCEEDED", 1), a)
        self.assertEqual(self.item("lam-ecs-2")["status"], "SUCCEEDED")

    def test_ecs_stopped_event_for_a_run_the_agent_finished_is_skipped(self):
        arn = self.launch_run("lam-ecs-done")
        self.agent_write("lam-ecs-done", "SUCCEEDED", 9, terminal=True)
        before = self.item("lam-ecs-done")
        kind, a, _ = self.invoke(ecs_event(arn, "lam-ecs-done", exit_code=137))
        self.assertEqual(kind, "response", a)
        self.assertEqual((a["outcome"], a["updated"], a["skipped"]), ("skipped", 0, 1), a)
        self.assertEqual(self.item("lam-ecs-done"), before)
        self.assertIn("run lam-ecs-done: task %s stopped: skipped" % arn, self.logtext())

    def test_ecs_infra_stop_relaunches_as_reconcile_does(self):
        arn = self.launch_run("lam-ecs-spot")
        self.agent_write("lam-ecs-spot", "RUNNING", 2)
        kind, a, _ = self.invoke(ecs_event(arn, "lam-ecs-spot", stop_code="SpotInterruption",
                                           exit_code=143, reason="Your Spot Task was interrupted."))
        self.assertEqual(kind, "response", a)
        self.assertEqual((a["status"], a["relaunched_as"], a["relaunched"]),
                         ("FAILED", "lam-ecs-spot-infra1", 1), a)
        it = self.item("lam-ecs-spot")
        self.assertEqual((it["status"], it["relaunched_as"]), ("FAILED", "lam-ecs-spot-infra1"))
        retry = self.item("lam-ecs-spot-infra1")
        self.assertEqual((retry["retry_of"], retry["trigger_source"]), ("lam-ecs-spot", "reconcile"))

    def test_ecs_events_of_other_tasks_are_ignored(self):
        arn = self.launch_run("lam-ecs-other")
        foreign = "arn:aws:ecs:us-east-1:123456789012:task/dagy/00000000000000000000000000000bad"
        for ev in (ecs_event(foreign, None),                         # no dagy run id
                   ecs_event(foreign, "lam-ecs-other"),              # not the run's task
                   ecs_event(foreign, "no-such-run"),                # no such run
                   ecs_event(arn, "lam-ecs-other", last="RUNNING"),  # not stopped
                   ecs_event(foreign, "bad/../id")):
            kind, a, _ = self.invoke(ev)
            self.assertEqual(kind, "response", a)
            self.assertIn("ignored", a)
        self.assertEqual(self.item("lam-ecs-other")["status"], "QUEUED")


class LambdaInitTest(unittest.TestCase):
    def test_bad_configuration_is_an_init_error(self):
        api = lambdaenv.RuntimeAPI().start()
        log = os.path.join(os.environ.get("TMPDIR", "/tmp"), "dagy-lambda-init-%d.log" % os.getpid())
        p = None
        try:
            env = dict(os.environ, DAGY_LAMBDA_MARGIN_MS="soon", AWS_REGION="us-east-1")
            p = api.spawn([launchenv.LAUNCH, "lambda"], env, log)
            self.assertEqual(p.wait(timeout=30), 2)
            (payload, headers), = api.init_errors
            self.assertEqual(payload["errorType"], "Dagy.InvalidConfiguration")
            self.assertIn("DAGY_LAMBDA_MARGIN_MS", payload["errorMessage"])
            self.assertEqual(headers.get("Lambda-Runtime-Function-Error-Type"), "Runtime.ConfigError")
        finally:
            api.stop_process(p)
            api.stop()
            if os.path.exists(log):
                os.unlink(log)

    def test_the_entrypoint_runs_the_lambda_runtime_when_the_runtime_api_is_set(self):
        src = os.environ.get("DAGY_TEST_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")
        api = lambdaenv.RuntimeAPI().start()
        log = os.path.join(os.environ.get("TMPDIR", "/tmp"), "dagy-lambda-ep-%d.log" % os.getpid())
        p = None
        try:
            env = dict(os.environ, AWS_REGION="us-east-1",
                       DAGY_AGENT_BIN=os.path.join(os.path.dirname(os.path.abspath(launchenv.LAUNCH)),
                                                   "dagy-agent"))
            p = api.spawn(["sh", os.path.join(src, "entrypoint.sh")], env, log)
            kind, a, _ = api.invoke({"action": "explode"}, timeout=30)
            self.assertEqual((kind, a["errorType"]), ("error", "Dagy.InvalidRequest"))
        finally:
            api.stop_process(p)
            api.stop()
            if os.path.exists(log):
                os.unlink(log)


if __name__ == "__main__":
    unittest.main()
