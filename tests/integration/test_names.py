"""Names and ids follow one rule in both programs (contract section 10: 1-128 characters of
[A-Za-z0-9_.-], not "." or ".."), and a name becomes a file name or an S3 key segment through one
encoding (a leading "." is written %2E). Task names that start with a dot run like any other, in
local mode (state files, results, inputs) and in container mode against moto (DynamoDB items,
trace keys that match the items' trace_s3_uri); "." and ".." are refused with exit 2 naming the
task; every run id the agent refuses, dagy-launch refuses too, with exit 2 before any write."""

import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import launchenv  # noqa: E402
from agentenv import AGENT, Flow, encode_name as encode, read_json  # noqa: E402

# Task names at the edges of the rule: a leading dot, an inner dot, a leading "..".
DOT_TASKS = [".hidden", "a.b", "..x"]
# Ids both programs must refuse.
BAD_IDS = ["..", ".", "a:b", "a/b", "../x", "a b", "caf\u00e9", "x" * 129]


def dot_spec(fail=None, retries=0):
    """.hidden -> a.b -> ..x, each passing its inputs on; `fail` names a task that fails."""
    def cmd(name):
        body = 'cat "$DAGY_TASK_INPUTS" > /dev/null; echo "{\\"from\\": \\"$DAGY_TASK_NAME\\"}"' \
               ' > "$DAGY_TASK_OUTPUT"; echo "inputs of $DAGY_TASK_NAME: $(cat "$DAGY_TASK_INPUTS")"'
        if name == fail:
            body = 'echo "boom in $DAGY_TASK_NAME attempt $DAGY_ATTEMPT" >&2; exit 4'
        return ["sh", "-c", body]
    tasks = [{"name": DOT_TASKS[0], "command": cmd(DOT_TASKS[0])},
             {"name": DOT_TASKS[1], "command": cmd(DOT_TASKS[1]), "upstream": [DOT_TASKS[0]]},
             {"name": DOT_TASKS[2], "command": cmd(DOT_TASKS[2]), "upstream": [DOT_TASKS[1]],
              "retries": retries, "retry_delay_seconds": 0.1, "retry_jitter": False}]
    return {"spec_version": 1, "name": "dots", "version": "1.0.0", "tasks": tasks}


class LocalNames(unittest.TestCase):
    def flow(self, s):
        f = Flow(s)
        self.addCleanup(f.cleanup)
        return f

    def test_dot_task_names_run_and_every_item_is_written(self):
        f = self.flow(dot_spec())
        r = f.run("--run-id", ".run-1")
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.events("status_write_failed"), [], r)
        runs = os.path.join(f.state, "runs")
        self.assertEqual(read_json(os.path.join(runs, encode(".run-1") + ".json"))["status"], "SUCCEEDED")
        tasks_dir = os.path.join(runs, encode(".run-1"), "tasks")
        self.assertEqual(sorted(os.listdir(tasks_dir)),
                         sorted(encode(t) + ".json" for t in DOT_TASKS))
        for t in DOT_TASKS:
            item = read_json(os.path.join(tasks_dir, encode(t) + ".json"))
            self.assertEqual(item["task_name"], t)
            self.assertEqual(item["status"], "SUCCEEDED")
        # Inputs carry the real upstream names, built from the encoded result files.
        self.assertEqual(r.output("a.b"), ['inputs of a.b: {".hidden":{"from": ".hidden"}}'])
        self.assertEqual(r.output("..x"), ['inputs of ..x: {"a.b":{"from": "a.b"}}'])
        # No file anywhere under the state or work directory is hidden or a path step.
        seen = 0
        for top in (f.state, f.work):
            for root, dirs, files in os.walk(top):
                for n in dirs + files:
                    seen += 1
                    self.assertFalse(n.startswith("."), os.path.join(root, n))
        self.assertTrue(os.path.isdir(os.path.join(f.work, encode(".run-1"))))
        self.assertGreater(seen, 8)

    def test_dot_and_dotdot_task_names_are_exit_2_naming_the_task(self):
        for i, bad in enumerate([".", ".."]):
            s = {"spec_version": 1, "name": "f", "tasks": [
                {"name": "ok", "command": ["true"]}, {"name": bad, "command": ["true"]}]}
            f = self.flow(s)
            r = f.run()
            self.assertEqual(r.code, 2, r)
            self.assertIn('task #2: field "name": invalid task name "%s"' % bad,
                          r.lines[-1]["message"] + r.lines[-1].get("error", ""))
            self.assertEqual(r.events("task_start"), [])

    def test_bad_run_ids_are_exit_2(self):
        f = self.flow(dot_spec())
        for bad in BAD_IDS:
            r = f.run("--run-id", bad)
            self.assertEqual(r.code, 2, (bad, r))
            self.assertIn("invalid run id", r.out + r.err, bad)
            self.assertFalse(os.path.exists(os.path.join(f.state, "runs")) and
                             os.listdir(os.path.join(f.state, "runs")), bad)


class ContainerNames(unittest.TestCase):
    """Container mode against moto. Encoded segments hold '%', which moto's signature checker
    wrongly rejects (awsenv's note; real S3 takes them, and the signing of '%' in keys is pinned
    by test_sigv4's encoding cases), so this moto runs without signature checks."""

    @classmethod
    def setUpClass(cls):
        import boto3.dynamodb.types

        cls.moto = awsenv.Moto(auth=False).start()
        try:
            cls.moto.create_status_tables("DAGY_RUNS", "DAGY_TASK_RUNS")
            s3 = cls.moto.client("s3")
            s3.create_bucket(Bucket="names-artifacts")
            s3.create_bucket(Bucket="names-traces")
        except BaseException:
            cls.moto.stop()
            raise
        cls.deser = boto3.dynamodb.types.TypeDeserializer()

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dagy-names-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_container(self, run_id, spec, org):
        f = Flow(spec)
        self.addCleanup(f.cleanup)
        s3 = self.moto.client("s3")
        with open(f.zip(), "rb") as z:
            s3.put_object(Bucket="names-artifacts", Key="flows/%s.zip" % run_id, Body=z.read())
        base = {k: v for k, v in os.environ.items() if not k.startswith("DAGY_")}
        env = self.moto.env(base)
        env.update({"DAGY_RUN_ID": run_id, "DAGY_ORG_ID": org,
                    "DAGY_ARTIFACT_S3_URI": "s3://names-artifacts/flows/%s.zip" % run_id,
                    "DAGY_TRACES_BUCKET": "names-traces",
                    "DAGY_WORK_DIR": os.path.join(self.tmp, "work")})
        p = awsenv.run([AGENT, "--log-format", "json"], env=env, timeout=120, cwd=self.tmp)
        lines = [json.loads(x) for x in p.stdout.splitlines()]
        return p, lines

    def items(self, run_id):
        ddb = self.moto.client("dynamodb")
        page = ddb.query(TableName="DAGY_TASK_RUNS", KeyConditionExpression="run_id = :r",
                         ExpressionAttributeValues={":r": {"S": run_id}}, ConsistentRead=True)
        out = {}
        for it in page["Items"]:
            d = {k: self.deser.deserialize(v) for k, v in it.items()}
            out[d["task_name"]] = d
        return out

    def trace_keys(self):
        s3 = self.moto.client("s3")
        page = s3.list_objects_v2(Bucket="names-traces", Prefix="exceptions")
        return sorted(o["Key"] for o in page.get("Contents", []))

    def test_dot_task_names_items_and_trace_keys_match(self):
        run_id, org = ".r.1", ".org"
        p, lines = self.run_container(run_id, dot_spec(fail="..x", retries=1), org)
        self.assertEqual(p.returncode, 1, p.stdout[-3000:] + p.stderr[-2000:])
        self.assertEqual([x for x in lines if x["event_type"] == "trace_upload_failed"], [])
        self.assertEqual([x for x in lines if x["event_type"] == "status_write_failed"], [])
        items = self.items(run_id)
        self.assertEqual(sorted(items), sorted(DOT_TASKS))
        self.assertEqual(items[".hidden"]["status"], "SUCCEEDED")
        self.assertEqual(items["a.b"]["status"], "SUCCEEDED")
        self.assertEqual(items["..x"]["status"], "FAILED")
        prefix = "exceptions/%2Eorg/%2Er.1/"
        keys = self.trace_keys()
        self.assertEqual(keys, [prefix + "%2E.x/1.txt", prefix + "%2E.x/2.txt",
                                prefix + "traceback.txt"])
        # The items name exactly the objects S3 holds (nothing collapsed by the HTTP client).
        self.assertEqual(items["..x"]["trace_s3_uri"], "s3://names-traces/" + prefix + "%2E.x/2.txt")
        ddb = self.moto.client("dynamodb")
        run = ddb.get_item(TableName="DAGY_RUNS", Key={"run_id": {"S": run_id}},
                           ConsistentRead=True)["Item"]
        self.assertEqual(run["trace_s3_uri"]["S"], "s3://names-traces/" + prefix + "traceback.txt")
        s3 = self.moto.client("s3")
        body = s3.get_object(Bucket="names-traces", Key=prefix + "%2E.x/2.txt")["Body"].read()
        self.assertIn(b"boom in ..x attempt 2", body)

    def test_bad_org_id_is_exit_2(self):
        p, lines = self.run_container("ok-run", dot_spec(), "..")
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertIn("invalid org id", p.stdout + p.stderr)


class LaunchNames(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        try:
            r = cls.L.launch("init-tables")
            assert r.returncode == 0, r.stderr
            r, _ = cls.L.register("etl", "1.0.0")
            assert r.returncode == 0, r.stderr
        except BaseException:
            cls.L.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.L.stop()

    def test_launcher_refuses_every_run_id_the_agent_refuses(self):
        self.flow = Flow(dot_spec())
        self.addCleanup(self.flow.cleanup)
        self.assertEqual(self.flow.run("--run-id", "good.id").code, 0)
        before_tasks, before_calls = self.L.task_count(), len(self.L.proxy.records)
        for bad in BAD_IDS:
            r = self.L.launch("run", "--flow", "etl", "--org", launchenv.ORG, "--run-id", bad)
            self.assertEqual(r.returncode, 2, (bad, r.stderr))
            self.assertIn("--run-id: invalid run id", r.stderr, bad)
            if bad:
                self.assertIsNone(self.L.run_item(bad))
            # The agent refuses the same id (the same flow runs with a valid one).
            a = self.flow.run("--run-id", bad)
            self.assertEqual(a.code, 2, (bad, a))
        self.assertEqual(self.L.task_count(), before_tasks)
        self.assertEqual(len(self.L.proxy.records), before_calls)
        scan = self.L.moto.client("dynamodb").scan(TableName="DAGY_RUNS")["Items"]
        self.assertEqual(scan, [])

    def test_names_of_flow_org_and_deployment_follow_the_rule(self):
        cases = [(["--flow", "..", "--org", launchenv.ORG], "--flow: invalid flow name"),
                 (["--flow", "etl", "--org", "a:b"], "--org: invalid org id"),
                 (["--flow", "etl", "--org", launchenv.ORG, "--deployment", "."],
                  "--deployment: invalid deployment name"),
                 (["--flow", "etl", "--org", launchenv.ORG, "--environment", "a b"],
                  "--environment: invalid environment")]
        for args, msg in cases:
            r = self.L.launch("run", *args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(msg, r.stderr)
        r = self.L.launch("status", "..")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("invalid run id", r.stderr)
        art = self.L.path("etl-1.0.0.zip")
        for flow, version, msg in [("..", "1.0.0", "invalid flow name"),
                                   ("etl", "..", "is not a usable version")]:
            r = self.L.launch("register-flow", "--artifact", art, "--flow", flow,
                              "--flow-version", version, "--org", launchenv.ORG)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(msg, r.stderr)


if __name__ == "__main__":
    unittest.main()
