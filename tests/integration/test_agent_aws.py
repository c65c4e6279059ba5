"""dagy-agent in container mode (no --flow, everything from the environment; contract sections 3,
5, 6, 7) against moto with signatures enforced: the artifact and dependency packages come from
S3 (one package with a requirements.txt installed by a stand-in pip), failure traces go to S3,
every run and task-run item is read back through DynamoDB's API, the ECS task ARN comes from a
loopback task-metadata server, credentials from the environment or the ECS container credentials
endpoint; fetch failures (wrong secret, missing object, checksum mismatch) end with the right exit
code and nothing unpacked; S3 and DynamoDB faults (5xx, throttling, resets, delays) are survived;
SIGTERM drains and records the run FAILED; and no run's output ever carries a secret."""

import decimal
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import faultproxy  # noqa: E402

AGENT = os.environ.get("DAGY_AGENT") or os.path.join(
    os.environ.get("DAGY_TEST_BUILD", "build"), "dagy-agent")
RUNS = "DAGY_RUNS"
TASK_RUNS = "DAGY_TASK_RUNS"
ARTIFACTS = "dagy-artifacts"
TRACES = "dagy-traces"
ORG = "org-7"
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/dagy-cluster/0123456789abcdef0123456789abcdef"
ISO_MS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
# Never in any output line, whatever the secret values are (header names and signature params).
FORBIDDEN = ("Authorization", "Signature=", "X-Amz-Signature")

# A stand-in for `python3 -m pip`: PyPI is unreachable from the tests. Called as
# `fakepip.py install -r REQ --target DIR`; writes one module per requirement into DIR.
FAKE_PIP = r'''
import os, sys
args = sys.argv[1:]
assert args[0] == "install", args
req = args[args.index("-r") + 1]
target = args[args.index("--target") + 1]
os.makedirs(target, exist_ok=True)
for line in open(req):
    name = line.split("==")[0].strip()
    if not name or name.startswith("#"):
        continue
    print("Collecting %s" % line.strip())
    with open(os.path.join(target, name + ".py"), "w") as f:
        f.write("VERSION = %r\n" % line.split("==")[1].strip())
    print("fakepip: installed %s into target" % name, file=sys.stderr)
print("Successfully installed requirements")
'''


def plain(v):
    """DynamoDB numbers (Decimal) as int or float, recursively."""
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def zip_bytes(files):
    """A zip archive (bytes) holding {name: text}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def flow_files(tasks, name="aws_flow", extra=None):
    files = {"flow_spec.json": json.dumps({"spec_version": 1, "name": name, "version": "2.1.0",
                                           "max_parallel": 4, "tasks": tasks}),
             "metadata.json": json.dumps({"owner": "tests"})}
    files.update(extra or {})
    return files


class Result:
    """One agent run: exit code, stdout lines (every one must be JSON), stderr."""

    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err
        self.lines = [json.loads(line) for line in out.splitlines()]

    def events(self, event_type, task=None):
        return [ln for ln in self.lines if ln["event_type"] == event_type and
                (task is None or ln.get("task_name") == task)]

    def __repr__(self):
        return "exit %s\nstdout:\n%s\nstderr:\n%s" % (self.code, self.out[-6000:],
                                                        self.err[-2000:])


class MetadataServer:
    """A loopback ECS task metadata endpoint (v4): GET .../task answers {"TaskARN": ...}."""

    def __init__(self, arn=TASK_ARN):
        self.arn = arn
        self.requests = []

    def start(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                if self.path.rstrip("/").endswith("/task"):
                    body = json.dumps({"Cluster": "dagy-cluster", "TaskARN": outer.arn,
                                       "Family": "dagy-worker", "Revision": "3"}).encode()
                    self.send_response(200)
                else:
                    body = b'{"message": "not found"}'
                    self.send_response(404)
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
        self.uri = "http://127.0.0.1:%d/v4/0123abcd-meta" % self._server.server_address[1]
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class AgentAwsTest(unittest.TestCase):
    moto = None

    @classmethod
    def setUpClass(cls):
        import boto3.dynamodb.types

        cls.moto = awsenv.Moto().start()
        try:
            cls.moto.create_status_tables(RUNS, TASK_RUNS)
            s3 = cls.moto.client("s3")
            s3.create_bucket(Bucket=ARTIFACTS)
            s3.create_bucket(Bucket=TRACES)
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
        self.tmp = tempfile.mkdtemp(prefix="dagy-aws-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.work = os.path.join(self.tmp, "work")
        self.meta = MetadataServer().start()
        self.addCleanup(self.meta.stop)
        # Every value that must never appear in any output of any run of this test.
        self.secrets = [self.moto.secret_key]

    # -- helpers -------------------------------------------------------------------------------

    def upload(self, key, data, sha=True, bucket=ARTIFACTS):
        """Puts `data` at s3://bucket/key; returns the URI (with #sha256= when sha)."""
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        uri = "s3://%s/%s" % (bucket, key)
        return uri + "#sha256=" + hashlib.sha256(data).hexdigest() if sha else uri

    def container_env(self, run_id, artifact_uri, deps=(), **extra):
        """Container-mode environment as the launcher passes it (no --flow): the test's own
        environment without any DAGY_* or AWS_* variable, plus moto's endpoint and keys."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("DAGY_")}
        env = self.moto.env(base)  # also drops every inherited AWS_* variable
        env.update({
            "DAGY_RUN_ID": run_id,
            "DAGY_ARTIFACT_S3_URI": artifact_uri,
            "DAGY_DEP_PACKAGE_URIS": ",".join(deps),
            "DAGY_ORG_ID": ORG,
            "DAGY_ENVIRONMENT": "staging",
            "DAGY_CORRELATION_ID": "corr-" + run_id,
            "DAGY_PARAMETERS": json.dumps({"day": "2026-03-14"}),
            "DAGY_TRACES_BUCKET": TRACES,
            "DAGY_WORK_DIR": self.work,
            "DAGY_LOG_LEVEL": "DEBUG",  # the most lines to scan for secrets
            "ECS_CONTAINER_METADATA_URI_V4": self.meta.uri,
        })
        env.update(extra)
        return env

    def run_agent(self, env, timeout=120):
        """Runs the agent in container mode to its end; checks its output carries no secret."""
        p = awsenv.run([AGENT, "--log-format", "json"], env=env, timeout=timeout, cwd=self.tmp)
        res = Result(p.returncode, p.stdout, p.stderr)
        self.assert_no_secrets(res, env)
        return res

    def assert_no_secrets(self, res, env):
        """No secret key, session token, Authorization header or signature in any line of the
        run's stdout or stderr (and, in sanitizer builds, no sanitizer report)."""
        self.assertNotRegex(res.err, r"Sanitizer|runtime error:")
        secrets = list(self.secrets)
        for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
            if env.get(k):
                secrets.append(env[k])
        for stream, text in (("stdout", res.out), ("stderr", res.err)):
            for n, line in enumerate(text.splitlines(), 1):
                for s in secrets:
                    self.assertNotIn(s, line, "a secret in %s line %d: %s" % (stream, n, line[:300]))
                for f in FORBIDDEN:
                    self.assertNotIn(f, line, "%r in %s line %d: %s" % (f, stream, n, line[:300]))

    def get(self, run_id, task=None):
        key = {"run_id": {"S": run_id}}
        if task is not None:
            key["task_name"] = {"S": task}
        item = self.ddb.get_item(TableName=TASK_RUNS if task else RUNS, Key=key,
                                 ConsistentRead=True).get("Item")
        return None if item is None else plain(
            {k: self.deser.deserialize(v) for k, v in item.items()})

    def task_items(self, run_id):
        """Every task-run item of the run, through Query (paginated), by task name."""
        out, start = {}, None
        while True:
            kw = {"TableName": TASK_RUNS, "KeyConditionExpression": "run_id = :r",
                  "ExpressionAttributeValues": {":r": {"S": run_id}}, "ConsistentRead": True}
            if start:
                kw["ExclusiveStartKey"] = start
            page = self.ddb.query(**kw)
            for it in page["Items"]:
                d = plain({k: self.deser.deserialize(v) for k, v in it.items()})
                out[d["task_name"]] = d
            start = page.get("LastEvaluatedKey")
            if not start:
                return out

    def queue(self, run_id):
        """The launcher's QUEUED item (status_seq 0), written before RunTask."""
        self.ddb.put_item(
            TableName=RUNS,
            Item={"run_id": {"S": run_id}, "status": {"S": "QUEUED"}, "status_seq": {"N": "0"},
                  "executor": {"S": "ecs"}, "trigger_source": {"S": "schedule"},
                  "created_at": {"S": "2026-03-14T09:00:00.000Z"}},
            ConditionExpression="attribute_not_exists(run_id)")

    def trace_keys(self, prefix):
        """Keys under `prefix` in the traces bucket. (moto's signature check rejects a Prefix
        holding '/', so list by a plain prefix and filter here.)"""
        keys, token = [], None
        while True:
            kw = {"Bucket": TRACES, "Prefix": "exceptions"}
            if token:
                kw["ContinuationToken"] = token
            page = self.s3.list_objects_v2(**kw)
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].startswith(prefix)]
            token = page.get("NextContinuationToken")
            if not token:
                return sorted(keys)

    def s3_text(self, bucket, key):
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()

    def fake_pip(self):
        path = os.path.join(self.tmp, "fakepip.py")
        with open(path, "w") as f:
            f.write(FAKE_PIP)
        return "%s %s" % (sys.executable, path)

    def check_run_item(self, run_id, res, status, counts):
        """The run item agrees with the run_end line and carries everything section 6 lists."""
        run = self.get(run_id)
        end = res.events("run_end")
        self.assertEqual(len(end), 1, res)
        self.assertEqual(run["status"], status, run)
        self.assertEqual(end[0]["status"], status)
        self.assertEqual(run["executor"], "ecs")
        self.assertEqual(run["external_id"], TASK_ARN)
        self.assertEqual(run["org_id"], ORG)
        self.assertEqual(run["environment"], "staging")
        self.assertEqual(run["correlation_id"], "corr-" + run_id)
        self.assertEqual(json.loads(run["parameters"]), {"day": "2026-03-14"})
        for k in ("started_at", "completed_at", "updated_at", "last_heartbeat_at"):
            self.assertRegex(run[k], ISO_MS, k)
        self.assertLessEqual(run["started_at"], run["completed_at"])
        self.assertGreaterEqual(run["duration_seconds"], 0)
        self.assertGreaterEqual(run["status_seq"], 2)  # RUNNING, then the end at least
        total = sum(counts.values())
        self.assertEqual(run["tasks_total"], total)
        for k in ("succeeded", "failed", "skipped", "cancelled"):
            self.assertEqual(run["tasks_" + k], counts.get(k, 0), k)
            self.assertEqual(end[0]["tasks_" + k], counts.get(k, 0), k)
        if status == "SUCCEEDED":
            self.assertNotIn("error_message", run)
        else:
            self.assertEqual(run["error_message"], end[0]["error"])
        return run

    def check_task_items(self, run_id, res, expect):
        """expect: {task: (status, attempt, max_attempts, exit_code or None)}. Each item (read by
        Query and GetItem) matches it and the task's log lines."""
        items = self.task_items(run_id)
        self.assertEqual(sorted(items), sorted(expect), items)
        for name, (status, attempt, max_attempts, exit_code) in expect.items():
            it = items[name]
            self.assertEqual(it, self.get(run_id, name))
            self.assertEqual((it["status"], it["attempt"], it["max_attempts"]),
                             (status, attempt, max_attempts), it)
            self.assertGreaterEqual(it["status_seq"], 1)
            self.assertRegex(it["updated_at"], ISO_MS)
            self.assertRegex(it["ended_at"], ISO_MS)
            ends = [ln for ln in res.lines if ln.get("task_name") == name and ln["event_type"] in
                    ("task_end", "task_skipped", "task_cancelled")]
            self.assertEqual(len(ends), 1, (name, res))
            self.assertEqual(ends[0]["status"], status)
            self.assertEqual(it["task_run_id"], ends[0]["task_run_id"])
            if status in ("SUCCEEDED", "FAILED"):
                self.assertRegex(it["started_at"], ISO_MS)
                self.assertLessEqual(it["started_at"], it["ended_at"])
                self.assertGreaterEqual(it["duration_seconds"], 0)
                # every started attempt logged task_start with this task_run_id
                starts = res.events("task_start", name)
                self.assertEqual([s["attempt"] for s in starts], list(range(1, attempt + 1)))
            if exit_code is None:
                self.assertNotIn("exit_code", it)
            else:
                self.assertEqual(it["exit_code"], exit_code, it)
            if status == "SUCCEEDED":
                self.assertNotIn("error_message", it)
            else:
                self.assertTrue(it["error_message"], it)
        return items

    # -- 1. dependency packages, requirements -------------------------------------------------

    def test_callable_imports_dependency_packages_and_requirements(self):
        run_id = "aws-deps"
        pkg_a = self.upload("deps/depmod-1.0.zip", zip_bytes({
            "depmod/__init__.py": "GREETING = 'hello from depmod'\n",
            "requirements.txt": "fakereq==4.2\n"}))
        pkg_b = self.upload("deps/othermod.tar.gz", self._targz({
            "othermod.py": "def twice(x):\n    return 2 * x\n"}))
        flow = flow_files([
            {"name": "use_deps", "callable": "flows.job:use_deps", "kwargs": {"n": 21}},
            {"name": "show", "command": ["sh", "-c", "cat \"$DAGY_TASK_INPUTS\"; echo; "
                                         "echo \"PP=$PYTHONPATH\""],
             "upstream": ["use_deps"]},
        ], extra={"flows/__init__.py": "", "flows/job.py": (
            "import depmod, fakereq, othermod\n"
            "def use_deps(n):\n"
            "    return {'greeting': depmod.GREETING, 'req': fakereq.VERSION,\n"
            "            'n': othermod.twice(n), 'req_file': fakereq.__file__}\n")})
        art = self.upload("flows/deps/artifact.zip", zip_bytes(flow))
        env = self.container_env(run_id, art, deps=[pkg_a, pkg_b],
                                 DAGY_PIP_COMMAND=self.fake_pip())
        res = self.run_agent(env)
        self.assertEqual(res.code, 0, res)
        # both packages downloaded and unpacked
        self.assertEqual({ln["uri"] for ln in res.events("download_end")}, {art, pkg_a, pkg_b})
        self.assertEqual({ln["uri"] for ln in res.events("unpack_end")}, {art, pkg_a, pkg_b})
        # the stand-in pip ran once, for the package with requirements.txt; its output is logged
        out = res.events("deps_output")
        self.assertIn("Collecting fakereq==4.2", [ln["message"] for ln in out], res)
        self.assertIn(("stderr", "fakepip: installed fakereq into target"),
                      [(ln["stream"], ln["message"]) for ln in out])
        self.assertTrue(all(ln["uri"] == pkg_a for ln in out))
        inst = res.events("deps_installed")
        self.assertEqual([ln["uri"] for ln in inst], [pkg_a], res)
        self.assertLess(res.lines.index(inst[0]), res.lines.index(res.events("run_start")[0]))
        # the callable imported all three; its result reached the downstream task
        shown = [ln["message"] for ln in res.events("task_output", "show")]
        result = json.loads(shown[0])["use_deps"]
        self.assertEqual(result["greeting"], "hello from depmod")
        self.assertEqual(result["req"], "4.2")
        self.assertEqual(result["n"], 42)
        self.assertTrue(result["req_file"].startswith(os.path.join(self.work, run_id)), result)
        pp = shown[1][len("PP="):].split(":")
        self.assertEqual(pp[0], os.path.join(self.work, run_id, "flow"))  # flow directory first
        self.assertEqual(len([d for d in pp if d.startswith(os.path.join(self.work, run_id))]),
                         4, pp)  # flow, package a, its requirements' target, package b
        self.check_run_item(run_id, res, "SUCCEEDED", {"succeeded": 2})
        self.check_task_items(run_id, res, {"use_deps": ("SUCCEEDED", 1, 1, 0),
                                            "show": ("SUCCEEDED", 1, 1, 0)})

    @staticmethod
    def _targz(files):
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for name, text in files.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def test_failing_requirements_install_is_exit_3_naming_the_package(self):
        run_id = "aws-pip-fails"
        pkg = self.upload("deps/badreq.zip", zip_bytes({"requirements.txt": "nothing==1\n"}))
        art = self.upload("flows/pipfail/artifact.zip",
                          zip_bytes(flow_files([{"name": "t", "command": ["true"]}])))
        script = os.path.join(self.tmp, "failpip.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho 'ERROR: No matching distribution found for nothing==1' >&2\n"
                    "exit 5\n")
        os.chmod(script, 0o755)
        env = self.container_env(run_id, art, deps=[pkg], DAGY_PIP_COMMAND=script)
        res = self.run_agent(env)
        self.assertEqual(res.code, 3, res)
        err = res.events("run_end")[0]["error"]
        self.assertIn(pkg, err)
        self.assertIn("exited with code 5", err)
        self.assertIn("ERROR: No matching distribution found for nothing==1",
                      [ln["message"] for ln in res.events("deps_output")])
        self.assertEqual(res.events("task_start"), [])
        run = self.get(run_id)
        self.assertEqual((run["status"], run["error_message"]), ("FAILED", err))

    # -- 2. failure traces in S3 --------------------------------------------------------------

    def test_failing_flow_with_retries_uploads_traces(self):
        run_id = "aws-traces"
        flow = flow_files([
            {"name": "ok", "command": ["true"]},
            {"name": "bad", "command": ["sh", "-c", "echo 'starting work' >&2; "
                                        "echo \"boom on attempt $DAGY_ATTEMPT\" >&2; exit 7"],
             "retries": 2, "retry_delay_seconds": 0.3, "retry_jitter": False,
             "upstream": ["ok"]},
            {"name": "after", "command": ["true"], "upstream": ["bad"]},
        ])
        art = self.upload("flows/traces/artifact.tar.gz", self._targz(flow))
        res = self.run_agent(self.container_env(run_id, art))
        self.assertEqual(res.code, 1, res)
        prefix = "exceptions/%s/%s/" % (ORG, run_id)
        keys = self.trace_keys(prefix)
        self.assertEqual(keys, [prefix + "bad/1.txt", prefix + "bad/2.txt", prefix + "bad/3.txt",
                                prefix + "traceback.txt"], res)
        for n in (1, 2, 3):
            body = self.s3_text(TRACES, prefix + "bad/%d.txt" % n)
            self.assertIn("starting work\nboom on attempt %d\n" % n, body)
            self.assertIn("attempt %d" % n, body.splitlines()[0])
        self.assertIn("boom on attempt 1\n", self.s3_text(TRACES, prefix + "traceback.txt"))
        self.assertEqual(len(res.events("task_retry", "bad")), 2)
        run = self.check_run_item(run_id, res, "FAILED",
                                  {"succeeded": 1, "failed": 1, "skipped": 1})
        self.assertEqual(run["error_message"],
                         'task "bad" failed: exited with code 7: boom on attempt 3')
        self.assertEqual(run["trace_s3_uri"], "s3://%s/%straceback.txt" % (TRACES, prefix))
        items = self.check_task_items(run_id, res, {"ok": ("SUCCEEDED", 1, 1, 0),
                                                    "bad": ("FAILED", 3, 3, 7),
                                                    "after": ("SKIPPED", 0, 1, None)})
        self.assertEqual(items["bad"]["trace_s3_uri"], "s3://%s/%sbad/3.txt" % (TRACES, prefix))
        self.assertEqual(items["bad"]["error_message"], "exited with code 7: boom on attempt 3")
        self.assertIn('"bad"', items["after"]["error_message"])
        self.assertNotIn("started_at", items["after"])
        self.assertNotIn("trace_s3_uri", items["ok"])

    def test_task_item_keeps_last_attempts_trace_when_uploads_finish_out_of_order(self):
        # Attempt 1's upload is held back 1.5 s by the proxy; attempts 2 and 3 (no retry delay)
        # upload at once. The item must still end pointing at attempt 3's trace.
        run_id = "aws-trace-order"
        art = self.upload("flows/traceorder/artifact.zip", zip_bytes(flow_files([
            {"name": "bad", "command": ["sh", "-c", "echo \"boom $DAGY_ATTEMPT\" >&2; exit 9"],
             "retries": 2, "retry_delay_seconds": 0}])))
        slow_first = lambda method, path, headers: method == "PUT" and path.endswith("/bad/1.txt")
        with faultproxy.FaultProxy(self.moto.endpoint, seed=1, rates={"delay": 1.0}, delay_s=1.5,
                                   match=slow_first) as sp:
            res = self.run_agent(self.container_env(run_id, art, AWS_ENDPOINT_URL_S3=sp.url))
            self.assertEqual(sp.stats["delay"], 1, sp.stats)
        self.assertEqual(res.code, 1, res)
        prefix = "exceptions/%s/%s/" % (ORG, run_id)
        self.assertEqual(self.trace_keys(prefix), [prefix + "bad/%d.txt" % n for n in (1, 2, 3)]
                         + [prefix + "traceback.txt"])
        items = self.check_task_items(run_id, res, {"bad": ("FAILED", 3, 3, 9)})
        self.assertEqual(items["bad"]["trace_s3_uri"], "s3://%s/%sbad/3.txt" % (TRACES, prefix))
        self.assertEqual(self.get(run_id)["trace_s3_uri"],
                         "s3://%s/%straceback.txt" % (TRACES, prefix))
        self.assertIn("boom 1", self.s3_text(TRACES, prefix + "traceback.txt"))

    # -- 3. items, external_id ----------------------------------------------------------------

    def test_items_and_external_id_from_task_metadata(self):
        run_id = "aws-items"
        self.queue(run_id)
        flow = flow_files([
            {"name": "a", "command": ["sh", "-c", "echo '{\"rows\": 3}' > \"$DAGY_TASK_OUTPUT\""]},
            {"name": "b", "command": ["sh", "-c", "test -e marker_b || { touch marker_b; "
                                      "echo transient >&2; exit 4; }"],
             "retries": 1, "retry_delay_seconds": 0, "upstream": ["a"]},
            {"name": "c", "command": ["sh", "-c", "exit 0"], "upstream": ["a"]},
        ])
        art = self.upload("flows/items/artifact.zip", zip_bytes(flow))
        res = self.run_agent(self.container_env(run_id, art))
        self.assertEqual(res.code, 0, res)
        self.assertTrue(any(p.endswith("/v4/0123abcd-meta/task") for p in self.meta.requests),
                        self.meta.requests)
        start = res.events("run_start")
        self.assertEqual(len(start), 1)
        self.assertEqual(start[0]["external_id"], TASK_ARN)
        self.assertEqual(start[0]["executor"], "ecs")
        self.assertEqual(start[0]["metadata"], {"owner": "tests"})
        for ln in res.lines:
            self.assertEqual(ln["run_id"], run_id)
            self.assertEqual(ln["correlation_id"], "corr-" + run_id)
        run = self.check_run_item(run_id, res, "SUCCEEDED", {"succeeded": 3})
        self.assertEqual(run["flow_name"], "aws_flow")
        self.assertEqual(run["flow_version"], "2.1.0")
        # the agent's writes landed on the launcher's QUEUED item and kept what it wrote
        self.assertEqual(run["trigger_source"], "schedule")
        self.assertEqual(run["created_at"], "2026-03-14T09:00:00.000Z")
        items = self.check_task_items(run_id, res, {"a": ("SUCCEEDED", 1, 1, 0),
                                                    "b": ("SUCCEEDED", 2, 2, 0),
                                                    "c": ("SUCCEEDED", 1, 1, 0)})
        # b's first attempt failed: its trace went to S3 and the item kept the pointer; being
        # the run's first failure it is also traceback.txt, named on the run item
        prefix = "exceptions/%s/%s/" % (ORG, run_id)
        self.assertEqual(self.trace_keys(prefix), [prefix + "b/1.txt", prefix + "traceback.txt"])
        self.assertIn("transient", self.s3_text(TRACES, prefix + "b/1.txt"))
        self.assertEqual(items["b"]["trace_s3_uri"], "s3://%s/%sb/1.txt" % (TRACES, prefix))
        self.assertEqual(run["trace_s3_uri"], "s3://%s/%straceback.txt" % (TRACES, prefix))
        for name in ("a", "c"):
            self.assertNotIn("trace_s3_uri", items[name])

    def test_task_sees_only_fds_0_1_2_no_agent_socket(self):
        """Issue 8 defect 2: the agent's pooled S3/DynamoDB connections (and every other fd of
        the agent) never reach a task, nor a daemon it starts: only 0, 1, 2 (and the directory
        ls opens to list /proc/self/fd)."""
        run_id = "aws-fds"
        self.queue(run_id)
        flow = flow_files([
            {"name": "first", "command": ["sh", "-c", "exit 0"]},
            # runs while the agent holds open connections (the artifact GET, status writes)
            {"name": "fds", "command": ["ls", "-l", "/proc/self/fd"], "upstream": ["first"]},
            {"name": "daemon_fds", "command": [
                "sh", "-c", "setsid sh -c 'ls -l /proc/self/fd > daemon_fds.txt' </dev/null "
                "2>/dev/null & wait"], "upstream": ["first"]},
        ])
        art = self.upload("flows/fds/artifact.zip", zip_bytes(flow))
        res = self.run_agent(self.container_env(run_id, art))
        self.assertEqual(res.code, 0, res)
        lines = [ln["message"] for ln in res.events("task_output", "fds")]
        with open(os.path.join(self.work, run_id, "flow", "daemon_fds.txt")) as f:
            daemon = f.read()
        for name, text in (("task", lines), ("daemon", daemon.splitlines())):
            fds = {}
            for line in text:
                if " -> " in line:
                    left, target = line.split(" -> ", 1)
                    fds[int(left.split()[-1])] = target
            self.assertTrue(fds, (name, text))
            for fd, target in fds.items():
                self.assertNotIn("socket:", target, (name, fds))
                self.assertIn(fd, (0, 1, 2, 3), (name, fds))
            self.assertEqual(sorted(fds)[:3], [0, 1, 2], (name, fds))

    # -- 4. fetch failures --------------------------------------------------------------------

    def assert_nothing_unpacked(self, run_id, res):
        run_dir = os.path.join(self.work, run_id)
        self.assertFalse(os.path.exists(os.path.join(run_dir, "flow")), os.listdir(run_dir))
        deps = os.path.join(run_dir, "deps")
        self.assertEqual([d for d in os.listdir(deps) if not d.endswith(".archive")]
                         if os.path.isdir(deps) else [], [])
        self.assertEqual(res.events("unpack_end"), [])
        self.assertEqual(res.events("task_start"), [])

    def test_wrong_secret_is_exit_3_naming_uri_and_signature_mismatch(self):
        run_id = "aws-badsecret"
        art = self.upload("flows/badsecret/artifact.zip",
                          zip_bytes(flow_files([{"name": "t", "command": ["true"]}])))
        bad = "WrongSecret0123456789abcdefghijklmnopqrst"
        self.secrets.append(bad)
        env = self.container_env(run_id, art, AWS_SECRET_ACCESS_KEY=bad)
        res = self.run_agent(env, timeout=120)
        self.assertEqual(res.code, 3, res)
        end = res.events("run_end")
        self.assertEqual(len(end), 1, res)
        # The start gate reads the run item before any download (docs/agent.md): the first
        # refusal is DynamoDB's, named with the run id and the signature error.
        self.assertIn("DynamoDB GetItem", end[0]["error"])
        self.assertIn(run_id, end[0]["error"])
        self.assertRegex(end[0]["error"], "Signature|UnrecognizedClient")
        self.assertEqual(res.events("download_start"), [])
        self.assertFalse(os.path.exists(os.path.join(self.work, run_id)))  # not even created
        self.assertIsNone(self.get(run_id))  # nothing could be written either

    def test_missing_object_is_exit_3_naming_no_such_key(self):
        run_id = "aws-missing"
        uri = "s3://%s/flows/nowhere/artifact.zip" % ARTIFACTS
        res = self.run_agent(self.container_env(run_id, uri))
        self.assertEqual(res.code, 3, res)
        err = res.events("run_end")[0]["error"]
        self.assertIn(uri, err)
        self.assertIn("NoSuchKey", err)
        self.assert_nothing_unpacked(run_id, res)
        run = self.get(run_id)
        self.assertEqual((run["status"], run["error_message"]), ("FAILED", err))
        self.assertEqual(run["executor"], "ecs")
        self.assertEqual(run["external_id"], TASK_ARN)

    def test_checksum_mismatch_is_exit_2_with_nothing_unpacked(self):
        run_id = "aws-badsha"
        data = zip_bytes(flow_files([{"name": "t", "command": ["touch", "ran"]}]))
        uri = self.upload("flows/badsha/artifact.zip", data, sha=False)
        wrong = hashlib.sha256(data + b"x").hexdigest()
        res = self.run_agent(self.container_env(run_id, uri + "#sha256=" + wrong))
        self.assertEqual(res.code, 2, res)
        err = res.events("run_end")[0]["error"]
        self.assertIn(uri, err)
        self.assertIn("sha256", err)
        self.assert_nothing_unpacked(run_id, res)
        self.assertFalse(os.path.exists(os.path.join(self.work, run_id, "artifact")))
        self.assertEqual(self.get(run_id)["status"], "FAILED")

    # -- 4b. unpacked while downloading, visible only once verified --------------------------

    @staticmethod
    def _targz_bytes(files):
        """A tar.gz of {name: bytes} in the given order (fast compression: random data)."""
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as t:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    @staticmethod
    def _stored_zip_bytes(files):
        """A zip (no compression) of {name: bytes} in the given order."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            for name, data in files.items():
                z.writestr(name, data)
        return buf.getvalue()

    def _stalled_stream_run(self, run_id, key, good_sha, fmt="tar.gz"):
        """Runs a flow whose 20 MiB tar.gz (or zip) downloads in parts, every part after the
        first held back 6 s by a proxy (for a zip, not its last 1 MiB either: the agent fetches
        that early, for the central directory). Asserts that meanwhile (well before the held
        parts are let through) the first entry is unpacked into the staging directory while
        nothing is at RUN_DIR/flow; returns the Result."""
        files = {"early.txt": b"first entry\n", "blob.bin": os.urandom(20 << 20)}
        files.update({k: v.encode() for k, v in
                      flow_files([{"name": "t", "command": ["touch", "ran"]}]).items()})
        data = self._stored_zip_bytes(files) if fmt == "zip" else self._targz_bytes(files)
        uri = self.upload(key, data, sha=False)
        sha = hashlib.sha256(data if good_sha else data + b"x").hexdigest()
        unheld = ("bytes=0-", "bytes=%d-" % (len(data) - (1 << 20)) if fmt == "zip" else "bytes=0-")
        later = lambda method, path, headers: (method == "GET" and key in path and not (
            headers.get("Range") or "").startswith(unheld))
        run_dir = os.path.join(self.work, run_id)
        with faultproxy.FaultProxy(self.moto.endpoint, seed=1, rates={"delay": 1.0}, delay_s=6,
                                   match=later) as sp:
            env = self.container_env(run_id, uri + "#sha256=" + sha, AWS_ENDPOINT_URL_S3=sp.url)
            t0 = time.monotonic()
            p, lines = self.start_agent(env)
            early = os.path.join(run_dir, "flow.staging", "early.txt")
            deadline = time.monotonic() + 60
            while not os.path.exists(early) and p.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            self.assertTrue(os.path.exists(early), "".join(lines))
            # out before any held part was let through (6 s after it was asked for)
            self.assertLess(time.monotonic() - t0, 5.0, "".join(lines))
            self.assertFalse(os.path.exists(os.path.join(run_dir, "flow")))
            # the rest is held back: the download has not ended
            self.assertFalse([ln for ln in list(lines) if '"download_end"' in ln], lines)
            code = p.wait(timeout=120)
            p.reader.join(timeout=10)
        res = Result(code, "".join(lines), p.stderr.read())
        self.assertFalse(os.path.exists(os.path.join(run_dir, "flow.staging")), os.listdir(run_dir))
        return res

    def test_targz_unpacks_while_downloading_visible_only_once_verified(self):
        run_id = "aws-stream-ok"
        self.queue(run_id)
        res = self._stalled_stream_run(run_id, "flows/streamok/artifact.tar.gz", True)
        self.assertEqual(res.code, 0, res)
        self.assertEqual(len(res.events("unpack_end")), 1, res)
        self.assertTrue(os.path.exists(os.path.join(self.work, run_id, "flow", "ran")))

    def test_checksum_mismatch_mid_stream_removes_the_staging_directory(self):
        run_id = "aws-stream-badsha"
        self.queue(run_id)
        res = self._stalled_stream_run(run_id, "flows/streambad/artifact.tar.gz", False)
        self.assertEqual(res.code, 2, res)
        self.assertIn("sha256", res.events("run_end")[0]["error"])
        self.assert_nothing_unpacked(run_id, res)

    def test_zip_unpacks_while_downloading_visible_only_once_verified(self):
        run_id = "aws-zipstream-ok"
        self.queue(run_id)
        res = self._stalled_stream_run(run_id, "flows/zipstreamok/artifact.zip", True, "zip")
        self.assertEqual(res.code, 0, res)
        self.assertEqual(len(res.events("unpack_end")), 1, res)
        self.assertEqual(res.events("unpack_end")[0]["format"], "zip")
        self.assertTrue(os.path.exists(os.path.join(self.work, run_id, "flow", "ran")))

    def test_zip_checksum_mismatch_mid_stream_removes_the_staging_directory(self):
        run_id = "aws-zipstream-badsha"
        self.queue(run_id)
        res = self._stalled_stream_run(run_id, "flows/zipstreambad/artifact.zip", False, "zip")
        self.assertEqual(res.code, 2, res)
        self.assertIn("sha256", res.events("run_end")[0]["error"])
        self.assert_nothing_unpacked(run_id, res)

    def test_package_checksum_mismatch_is_exit_2_package_not_unpacked(self):
        run_id = "aws-badsha-pkg"
        art = self.upload("flows/badshapkg/artifact.zip",
                          zip_bytes(flow_files([{"name": "t", "command": ["touch", "ran"]}])))
        pkg_data = zip_bytes({"evil.py": "X = 1\n"})
        pkg = self.upload("deps/evil.zip", pkg_data, sha=False)
        res = self.run_agent(self.container_env(
            run_id, art, deps=[pkg + "#sha256=" + "0" * 64]))
        self.assertEqual(res.code, 2, res)
        self.assertIn(pkg, res.events("run_end")[0]["error"])
        deps = os.path.join(self.work, run_id, "deps")
        self.assertEqual(os.listdir(deps), [])  # neither the archive nor an unpacked package
        self.assertEqual(res.events("task_start"), [])
        self.assertFalse(os.path.exists(os.path.join(self.work, run_id, "flow", "ran")))

    # -- 5. ECS container credentials ---------------------------------------------------------

    def test_credentials_from_container_endpoint(self):
        run_id = "aws-ecscreds"
        creds = self.moto.assume_role_creds()
        self.secrets += [creds["secret"], creds["token"]]
        art = self.upload("flows/ecscreds/artifact.zip", zip_bytes(flow_files([
            {"name": "fail_once", "command": ["sh", "-c", "test -e m || { touch m; "
                                              "echo first >&2; exit 1; }"],
             "retries": 1, "retry_delay_seconds": 0}])))
        with awsenv.CredsServer(creds) as cs:
            env = self.container_env(run_id, art, **cs.env())
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
                env.pop(k, None)
            res = self.run_agent(env)
            self.assertGreaterEqual(cs.requests, 1)
            self.assertEqual(cs.rejected, 0)
        self.assertEqual(res.code, 0, res)
        self.check_run_item(run_id, res, "SUCCEEDED", {"succeeded": 1})
        items = self.check_task_items(run_id, res, {"fail_once": ("SUCCEEDED", 2, 2, 0)})
        # the trace upload was signed with the session credentials too
        key = "exceptions/%s/%s/fail_once/1.txt" % (ORG, run_id)
        self.assertIn("first", self.s3_text(TRACES, key))
        self.assertEqual(items["fail_once"]["trace_s3_uri"], "s3://%s/%s" % (TRACES, key))

    # -- 6. faults between the agent and both services ----------------------------------------

    def test_faults_on_s3_and_dynamodb_every_item_exactly_right(self):
        run_id = "aws-faults"
        self.queue(run_id)
        big = os.urandom(3 << 20)  # a package large enough for ranged parallel GETs
        pkg = self.upload("deps/bigpkg.zip", self._zip_with_blob(big))
        tasks = [
            {"name": "a", "command": ["sh", "-c", "python3 -c 'import bigmod; print(bigmod.X)'"]},
            {"name": "b", "command": ["sh", "-c", "echo kaput >&2; exit 3"], "upstream": ["a"]},
            {"name": "c", "command": ["true"], "upstream": ["b"]},
            {"name": "d", "command": ["sh", "-c", "test -e marker || { touch marker; exit 1; }"],
             "retries": 1, "retry_delay_seconds": 0},
        ] + [{"name": "p%02d" % i, "command": ["true"]} for i in range(10)]
        art = self.upload("flows/faults/artifact.zip", zip_bytes(flow_files(tasks)))
        s3_faults = {"500": 0.06, "503": 0.06, "reset": 0.04, "reset_after": 0.04, "delay": 0.05}
        ddb_faults = {"500": 0.05, "503": 0.05, "throttle": 0.08, "reset": 0.04,
                      "reset_after": 0.05, "delay": 0.05}
        with faultproxy.FaultProxy(self.moto.endpoint, seed=1234, rates=s3_faults,
                                   delay_s=0.2) as sp, \
                faultproxy.FaultProxy(self.moto.endpoint, seed=5678, rates=ddb_faults,
                                      delay_s=0.2) as dp:
            env = self.container_env(run_id, art, deps=[pkg], AWS_ENDPOINT_URL_S3=sp.url,
                                     AWS_ENDPOINT_URL_DYNAMODB=dp.url)
            env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # every call must use its override
            res = self.run_agent(env, timeout=240)
            s3_stats, ddb_stats = dict(sp.stats), dict(dp.stats)
        self.assertEqual(res.code, 1, res)
        self.assertGreater(sum(v for k, v in s3_stats.items() if k != "forwarded"), 0, s3_stats)
        self.assertGreater(sum(v for k, v in ddb_stats.items() if k != "forwarded"), 0, ddb_stats)
        self.assertEqual(res.events("status_write_failed"), [])
        self.assertEqual(res.events("trace_upload_failed"), [])
        self.assertEqual(res.events("task_output", "a")[0]["message"], "1")
        run = self.check_run_item(run_id, res, "FAILED",
                                  {"succeeded": 12, "failed": 1, "skipped": 1})
        self.assertEqual(run["trigger_source"], "schedule")
        self.assertTrue(run["error_message"].startswith('task "b" failed: exited with code 3'))
        prefix = "s3://%s/exceptions/%s/%s/" % (TRACES, ORG, run_id)
        self.assertEqual(run["trace_s3_uri"], prefix + "traceback.txt")
        expect = {"a": ("SUCCEEDED", 1, 1, 0), "b": ("FAILED", 1, 1, 3),
                  "c": ("SKIPPED", 0, 1, None), "d": ("SUCCEEDED", 2, 2, 0)}
        expect.update({"p%02d" % i: ("SUCCEEDED", 1, 1, 0) for i in range(10)})
        items = self.check_task_items(run_id, res, expect)
        self.assertEqual(items["b"]["trace_s3_uri"], prefix + "b/1.txt")
        self.assertEqual(items["d"]["trace_s3_uri"], prefix + "d/1.txt")
        self.assertIn("kaput", self.s3_text(TRACES, "exceptions/%s/%s/b/1.txt" % (ORG, run_id)))

    @staticmethod
    def _zip_with_blob(blob):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("bigmod.py", "X = 1\n")
            z.writestr("blob.bin", blob)
        return buf.getvalue()

    # -- 8. SIGTERM in container mode ---------------------------------------------------------

    def start_agent(self, env):
        """Starts the agent in the background; returns (proc, lines) with stdout lines collected
        by a reader thread."""
        p = subprocess.Popen([AGENT, "--log-format", "json"], env=env, cwd=self.tmp,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.addCleanup(p.stderr.close)
        self.addCleanup(p.stdout.close)
        self.addCleanup(awsenv.stop_process, p)
        lines = []
        p.reader = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")),
                                    daemon=True)
        p.reader.start()
        return p, lines

    def wait_line(self, p, lines, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(pred(json.loads(ln)) for ln in list(lines)):
                return
            self.assertIsNone(p.poll(), "".join(lines))
            time.sleep(0.05)
        self.fail("no such line within %d s:\n%s" % (timeout, "".join(lines)))

    def sigterm_and_collect(self, p, lines, env, within=25):
        """Sends SIGTERM; returns (Result, seconds to exit)."""
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        try:
            code = p.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.fail("the agent did not exit within %d s of SIGTERM" % within)
        elapsed = time.monotonic() - t0
        p.reader.join(timeout=10)
        res = Result(code, "".join(lines), p.stderr.read())
        self.assert_no_secrets(res, env)
        return res, elapsed

    def test_sigterm_during_download_exits_143_nothing_unpacked(self):
        run_id = "aws-sigterm-dl"
        self.queue(run_id)
        art = self.upload("flows/sigtermdl/artifact.zip",
                          zip_bytes(flow_files([{"name": "t", "command": ["true"]}])))
        stall = lambda method, path, headers: method == "GET" and "sigtermdl" in path
        with faultproxy.FaultProxy(self.moto.endpoint, seed=1, rates={"delay": 1.0}, delay_s=8,
                                   match=stall) as sp:
            env = self.container_env(run_id, art, AWS_ENDPOINT_URL_S3=sp.url)
            p, lines = self.start_agent(env)
            self.wait_line(p, lines, lambda ln: ln["event_type"] == "download_start")
            self.wait_line(p, lines, lambda ln: sp.stats["delay"] > 0)
            res, elapsed = self.sigterm_and_collect(p, lines, env)
        self.assertEqual(res.code, 143, res)
        self.assertLess(elapsed, 6, res)  # did not wait for the stalled download
        self.assert_nothing_unpacked(run_id, res)
        run = self.get(run_id)
        self.assertEqual((run["status"], run["error_message"], run["stop_reason"]),
                         ("FAILED", "Worker shutdown requested via SIGTERM", "SIGTERM"), run)
        self.assertEqual(self.task_items(run_id), {})

    def test_sigterm_drains_and_records_run_failed_exit_143(self):
        run_id = "aws-sigterm"
        self.queue(run_id)
        art = self.upload("flows/sigterm/artifact.zip", zip_bytes(flow_files([
            {"name": "quick", "command": ["true"]},
            {"name": "long", "command": ["sleep", "60"], "upstream": ["quick"]},
            {"name": "never", "command": ["true"], "upstream": ["long"]},
        ])))
        env = self.container_env(run_id, art, DAGY_DRAIN_SECONDS="1",
                                 DAGY_KILL_GRACE_SECONDS="1")
        p, lines = self.start_agent(env)
        self.wait_line(p, lines, lambda ln: ln["event_type"] == "task_start" and
                       ln["task_name"] == "long")
        res, elapsed = self.sigterm_and_collect(p, lines, env)
        self.assertEqual(res.code, 143, res)
        self.assertLess(elapsed, 15, res)  # drain 1 s + grace 1 s + flush, well inside 30 s
        self.assertEqual(len(res.events("shutdown_requested")), 1, res)
        run = self.check_run_item(run_id, res, "FAILED",
                                  {"succeeded": 1, "cancelled": 2})
        self.assertEqual(run["error_message"], "Worker shutdown requested via SIGTERM")
        self.assertEqual(run["stop_reason"], "SIGTERM")
        items = self.check_task_items(run_id, res, {"quick": ("SUCCEEDED", 1, 1, 0),
                                                    "long": ("CANCELLED", 1, 1, None),
                                                    "never": ("CANCELLED", 0, 1, None)})
        self.assertIn("SIGTERM", items["long"]["error_message"])
        self.assertIn("SIGTERM", items["never"]["error_message"])


if __name__ == "__main__":
    unittest.main()
