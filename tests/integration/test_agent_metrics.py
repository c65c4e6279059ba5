"""Metrics and cost of a run (docs/operations.md "Metrics" and "Cost per run"): dagy-agent in
container mode against moto with a loopback ECS task metadata endpoint records the run item's
estimated_cost_usd from the task's Limits, storage, capacity provider and duration, equal to the
price table's to the cent; its stdout carries CloudWatch Embedded Metric Format lines that pass a
validator written from the specification (tests/integration/emf.py) and name the right metrics;
a hostile metadata answer costs nothing but a warning; a local run records no cost; DAGY_METRICS=0
turns the lines off and DAGY_LOG_LEVEL does not."""

import http.server
import json
import math
import os
import shutil
import sys
import signal
import subprocess
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402
import awsenv  # noqa: E402
import emf  # noqa: E402
from loopback import LoopbackServer  # noqa: E402
from test_agent_aws import Result, plain, zip_bytes  # noqa: E402

AGENT = agentenv.AGENT
RUNS, TASK_RUNS, ARTIFACTS = "DAGY_RUNS", "DAGY_TASK_RUNS", "dagy-artifacts"
TASK_ARN = "arn:aws:ecs:us-east-1:123456789012:task/dagy-cluster/feedfacefeedfacefeedfacefeedface"

# The documented us-east-1 table (docs/operations.md), per hour: vCPU, GB, storage GB above 20.
TABLE = {("x86_64", False): (0.04048, 0.004445, 0.000111),
         ("x86_64", True): (0.01334053, 0.00146489, 0.000111)}

RUN_METRICS = {"RunDuration", "TasksFailed", "TasksRetried", "TasksSkipped", "EstimatedCostUSD"}
ALL_METRICS = RUN_METRICS | {"TaskDuration", "DownloadDuration", "UnpackDuration",
                             "StatusWriteLag"}


def expected_cost(vcpu, mem_mib, storage_gib, spot, seconds):
    """The table's price of a run of `seconds` (billed: whole seconds, one minute at least)."""
    rate = TABLE[(os.uname().machine, spot)]
    per_hour = vcpu * rate[0] + mem_mib / 1024 * rate[1] + max(0, storage_gib - 20) * rate[2]
    return round(per_hour * max(60, math.ceil(seconds)) / 3600, 6)


class Metadata(LoopbackServer):
    """A loopback task metadata v4 endpoint answering GET .../task with `body` (bytes), after
    `delay` seconds."""

    def __init__(self, body, delay=0):
        self.body = body
        self.delay = delay
        self.hits = 0

    def handler_class(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                time.sleep(outer.delay)
                self.send_response(200 if self.path.endswith("/task") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        return Handler


def task_metadata(cpu=16, memory=122880, reserved_mib=200 * 1024 + 16, **extra):
    doc = {"Cluster": "dagy-cluster", "TaskARN": TASK_ARN, "Family": "dagy-worker",
           "Revision": "4", "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
           "Limits": {"CPU": cpu, "Memory": memory}, "LaunchType": "FARGATE",
           "AvailabilityZone": "us-east-1a",
           "EphemeralStorageMetrics": {"Utilized": 300, "Reserved": reserved_mib},
           "Containers": []}
    doc.update(extra)
    return json.dumps(doc).encode()


# b fails its first attempt (a marker file in the work directory), then succeeds: one retry.
TASKS = [{"name": "a", "command": ["sh", "-c", "echo extract"]},
         {"name": "b", "command": ["sh", "-c", "test -e ../flaky || { touch ../flaky; exit 3; }"],
          "upstream": ["a"], "retries": 1, "retry_delay_seconds": 0}]


class AgentMetricsTest(unittest.TestCase):
    moto = None

    @classmethod
    def setUpClass(cls):
        import boto3.dynamodb.types
        cls.moto = awsenv.Moto().start()
        try:
            cls.moto.create_status_tables(RUNS, TASK_RUNS)
            cls.moto.client("s3").create_bucket(Bucket=ARTIFACTS)
        except BaseException:
            cls.moto.stop()
            raise
        cls.deser = boto3.dynamodb.types.TypeDeserializer()
        body = zip_bytes({"flow_spec.json": json.dumps(
            {"spec_version": 1, "name": "metered_flow", "version": "1.0.0", "tasks": TASKS})})
        cls.moto.client("s3").put_object(Bucket=ARTIFACTS, Key="metered.zip", Body=body)

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dagy-metrics-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def agent_env(self, run_id, meta, **extra):
        base = {k: v for k, v in os.environ.items() if not k.startswith("DAGY_")}
        env = self.moto.env(base)
        env.update({"DAGY_RUN_ID": run_id, "DAGY_FLOW_NAME": "metered_flow",
                    "DAGY_ARTIFACT_S3_URI": "s3://%s/metered.zip" % ARTIFACTS,
                    "DAGY_ORG_ID": "org-1", "DAGY_WORK_DIR": os.path.join(self.tmp, run_id),
                    "ECS_CONTAINER_METADATA_URI_V4": meta.endpoint + "/v4/abc"})
        env.update(extra)
        return env

    def run_agent(self, run_id, metadata_body, **extra):
        meta = Metadata(metadata_body).start()
        self.addCleanup(meta.stop)
        env = self.agent_env(run_id, meta, **extra)
        p = awsenv.run([AGENT, "--log-format", "json"], env=env, timeout=120, cwd=self.tmp)
        res = Result(p.returncode, p.stdout, p.stderr)
        self.assertNotRegex(res.err, r"Sanitizer|runtime error:")
        return res

    def run_item(self, run_id):
        item = self.moto.client("dynamodb").get_item(
            TableName=RUNS, Key={"run_id": {"S": run_id}}, ConsistentRead=True)["Item"]
        return plain({k: self.deser.deserialize(v) for k, v in item.items()})

    def check_emf(self, res):
        """Every `_aws` line is valid EMF, a whole awslogs event; returns {metric: [docs]}."""
        by_metric = {}
        docs = emf.documents(res.out)
        self.assertTrue(docs, res)
        for doc, length in docs:
            self.assertEqual(emf.problems(doc), [], doc)
            self.assertLess(length, emf.AWSLOGS_MAX_LINE)
            self.assertEqual(doc["event_type"], "metrics")
            d = doc["_aws"]["CloudWatchMetrics"][0]
            self.assertEqual((d["Namespace"], d["Dimensions"]), ("Dagy", [["flow_name"]]))
            self.assertEqual(doc["flow_name"], "metered_flow")
            self.assertNotIn("status", doc)  # `filter status = "FAILED"` sees no metrics lines
            for name in emf.metric_names(doc):
                by_metric.setdefault(name, []).append(doc)
        return by_metric

    def test_cost_is_the_table_price_to_the_cent_and_the_emf_lines_validate(self):
        res = self.run_agent("cost-1", task_metadata())
        self.assertEqual(res.code, 0, res)
        item = self.run_item("cost-1")
        want = expected_cost(16, 122880, 200, False, item["duration_seconds"])
        self.assertEqual(round(item["estimated_cost_usd"], 2), round(want, 2))
        self.assertAlmostEqual(item["estimated_cost_usd"], want, places=6)
        self.assertEqual(item["external_id"], TASK_ARN)
        end = res.lines[-1]
        self.assertEqual(end["event_type"], "run_end")
        self.assertEqual(end["estimated_cost_usd"], item["estimated_cost_usd"])
        by_metric = self.check_emf(res)
        self.assertEqual(set(by_metric), ALL_METRICS)
        run = res.lines[-2]  # the run's metrics: just before run_end, the last line
        self.assertEqual(set(emf.metric_names(run)), RUN_METRICS)
        self.assertEqual(run["EstimatedCostUSD"], item["estimated_cost_usd"])
        self.assertEqual((run["TasksFailed"], run["TasksRetried"], run["TasksSkipped"]),
                         (0, 1, 0))
        self.assertAlmostEqual(run["RunDuration"], item["duration_seconds"], places=2)
        # One TaskDuration per attempt end: a, b's failed attempt, b's retry.
        attempts = sorted((d["task_name"], d["attempt"]) for d in by_metric["TaskDuration"])
        self.assertEqual(attempts, [("a", 1), ("b", 1), ("b", 2)])
        self.assertEqual(len(by_metric["DownloadDuration"]), 1)
        self.assertEqual(len(by_metric["UnpackDuration"]), 1)
        lags = [v for d in by_metric["StatusWriteLag"] for v in d["StatusWriteLag"]]
        self.assertGreaterEqual(len(lags), 5)  # RUNNING, the end, task items
        self.assertTrue(all(0 <= v < 60000 for v in lags), lags)

    def test_spot_from_the_launcher_costs_the_spot_price(self):
        res = self.run_agent("cost-spot", task_metadata(cpu=4, memory=30720, reserved_mib=21504),
                             DAGY_CAPACITY_PROVIDER="FARGATE_SPOT")
        self.assertEqual(res.code, 0, res)
        item = self.run_item("cost-spot")
        want = expected_cost(4, 30720, 21, True, item["duration_seconds"])
        self.assertAlmostEqual(item["estimated_cost_usd"], want, places=6)
        self.assertLess(item["estimated_cost_usd"],
                        expected_cost(4, 30720, 21, False, item["duration_seconds"]) / 2)

    def test_price_overrides_replace_the_table(self):
        res = self.run_agent("cost-override", task_metadata(cpu=2, memory=4096),
                             DAGY_PRICE_VCPU_HOUR="1.5", DAGY_PRICE_GB_HOUR="0.25",
                             DAGY_PRICE_STORAGE_GB_HOUR="0")
        self.assertEqual(res.code, 0, res)
        # (2 * 1.5 + 4 * 0.25) per hour, one minute billed: 4 / 60
        self.assertAlmostEqual(self.run_item("cost-override")["estimated_cost_usd"],
                               round(4 / 60, 6), places=6)
        res = self.run_agent("cost-bad-price", task_metadata(), DAGY_PRICE_GB_HOUR="cheap")
        self.assertEqual(res.code, 2, res)
        self.assertIn("DAGY_PRICE_GB_HOUR", res.lines[-1]["error"])

    def test_hostile_metadata_records_no_cost_and_the_run_succeeds(self):
        cases = [("no-limits", json.dumps({"TaskARN": TASK_ARN, "LaunchType": "FARGATE"}).encode(),
                  "Limits.CPU"),
                 ("ec2", task_metadata(LaunchType="EC2"), "LaunchType"),
                 ("string-cpu", task_metadata(cpu="16"), "Limits.CPU"),
                 ("not-json", b'{"TaskARN": "x", "Limits": {', "not JSON"),
                 ("too-big", b'{"pad": "' + b"x" * (2 << 20) + b'"}', "cost"),
                 ("other-provider", task_metadata(CapacityProviderName="my-ec2-asg"),
                  "capacity provider")]
        for name, body, says in cases:
            with self.subTest(name):
                run_id = "hostile-" + name
                res = self.run_agent(run_id, body)
                self.assertEqual(res.code, 0, res)
                item = self.run_item(run_id)
                self.assertEqual(item["status"], "SUCCEEDED")
                self.assertNotIn("estimated_cost_usd", item)
                self.assertNotIn("estimated_cost_usd", res.lines[-1])
                warn = res.events("cost_unavailable")
                self.assertEqual(len(warn), 1, res)
                self.assertEqual(warn[0]["level"], "WARNING")
                self.assertIn(says, warn[0]["message"])
                self.assertNotIn("EstimatedCostUSD", self.check_emf(res))

    def test_sigterm_while_the_metadata_is_slow_leaves_run_end_last(self):
        """A stop during preparation with the metadata answer still out: the run ends (no cost,
        the answer never came) and nothing is logged after run_end when teardown cancels the
        fetch (its callback used to log `ecs_metadata` after run_end)."""
        meta = Metadata(task_metadata(), delay=8).start()
        self.addCleanup(meta.stop)
        env = self.agent_env("slow-meta", meta)
        p = subprocess.Popen([AGENT, "--log-format", "json"], env=env, cwd=self.tmp,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while meta.hits == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
        finally:
            awsenv.stop_process(p)
        res = Result(p.returncode, out.decode(), err.decode())
        self.assertEqual(res.code, 143, res)
        self.assertEqual(res.lines[-1]["event_type"], "run_end", res)
        self.assertNotIn("estimated_cost_usd", self.run_item("slow-meta"))
        self.assertNotRegex(res.err, r"Sanitizer|runtime error:")

    def test_a_run_stopped_by_sigterm_is_costed_too(self):
        """Fargate bills a stopped task as any other: the FAILED (143) run item has its cost."""
        body = zip_bytes({"flow_spec.json": json.dumps(
            {"spec_version": 1, "name": "metered_flow", "version": "1.0.0",
             "tasks": [{"name": "long", "command": ["sleep", "30"]}]})})
        self.moto.client("s3").put_object(Bucket=ARTIFACTS, Key="long.zip", Body=body)
        meta = Metadata(task_metadata(cpu=1, memory=2048, reserved_mib=20496)).start()
        self.addCleanup(meta.stop)
        env = self.agent_env("stopped-1", meta, DAGY_DRAIN_SECONDS="0",
                             DAGY_ARTIFACT_S3_URI="s3://%s/long.zip" % ARTIFACTS)
        p = subprocess.Popen([AGENT, "--log-format", "json"], env=env, cwd=self.tmp,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                item = self.moto.client("dynamodb").get_item(
                    TableName=TASK_RUNS, ConsistentRead=True,
                    Key={"run_id": {"S": "stopped-1"}, "task_name": {"S": "long"}}).get("Item")
                if item and item["status"]["S"] == "RUNNING":
                    break
                time.sleep(0.1)
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
        finally:
            awsenv.stop_process(p)
        res = Result(p.returncode, out.decode(), err.decode())
        self.assertEqual(res.code, 143, res)
        item = self.run_item("stopped-1")
        self.assertEqual(item["status"], "FAILED")
        self.assertAlmostEqual(item["estimated_cost_usd"],
                               expected_cost(1, 2048, 20, False, item["duration_seconds"]),
                               places=6)
        run = res.lines[-2]
        self.assertEqual(run["EstimatedCostUSD"], item["estimated_cost_usd"])
        # The cancelled attempt ended too: one TaskDuration.
        self.assertEqual([d["task_name"] for d, _ in emf.documents(res.out)
                          if "TaskDuration" in d], ["long"])

    def test_metrics_ignore_the_log_level_and_turn_off(self):
        res = self.run_agent("lvl-error", task_metadata(), DAGY_LOG_LEVEL="ERROR")
        self.assertEqual(res.code, 0, res)
        self.assertEqual(set(self.check_emf(res)), ALL_METRICS)
        self.assertFalse([ln for ln in res.lines if ln["level"] == "INFO" and
                          ln["event_type"] != "metrics" and ln["event_type"] != "run_end"])
        res = self.run_agent("metrics-off", task_metadata(), DAGY_METRICS="0")
        self.assertEqual(res.code, 0, res)
        self.assertEqual(emf.documents(res.out), [])
        self.assertEqual(res.events("metrics"), [])
        self.assertGreater(self.run_item("metrics-off")["estimated_cost_usd"], 0)  # still costed


class LocalRunTest(unittest.TestCase):
    def test_local_run_records_no_cost_but_prints_metrics(self):
        with Metadata(task_metadata()) as meta:
            flow = agentenv.Flow({"spec_version": 1, "name": "local_flow", "version": "1",
                                  "tasks": TASKS[:1]})
            self.addCleanup(flow.cleanup)
            res = flow.run(env={"ECS_CONTAINER_METADATA_URI_V4": meta.endpoint + "/v4/x"})
        self.assertEqual(res.code, 0, res)
        self.assertNotIn("estimated_cost_usd", res.run_item())
        self.assertNotIn("estimated_cost_usd", res.lines[-1])
        self.assertEqual(res.events("cost_unavailable"), [])
        docs = emf.documents(res.out)
        for doc, _ in docs:
            self.assertEqual(emf.problems(doc), [], doc)
        names = {n for doc, _ in docs for n in emf.metric_names(doc)}
        self.assertEqual(names, {"TaskDuration", "StatusWriteLag"} | RUN_METRICS -
                         {"EstimatedCostUSD"})

    def test_validator_refuses_what_the_specification_forbids(self):
        good = {"_aws": {"Timestamp": 1, "CloudWatchMetrics": [
            {"Namespace": "Dagy", "Dimensions": [["flow_name"]],
             "Metrics": [{"Name": "M", "Unit": "Seconds"}]}]}, "flow_name": "f", "M": 1.5}
        self.assertEqual(emf.problems(good), [])
        bad = [lambda d: d["_aws"].update(Timestamp="1"),
               lambda d: d["_aws"].update(Timestamp=1.5),
               lambda d: d.pop("M"),
               lambda d: d.update(M="1"),
               lambda d: d.update(M=list(range(101))),
               lambda d: d.pop("flow_name"),
               lambda d: d.update(flow_name=""),
               lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Unit="Secs"),
               lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Name="n" * 256),
               lambda d: d["_aws"]["CloudWatchMetrics"][0].update(
                   Metrics=[{"Name": "M"}] * 101),
               lambda d: d["_aws"]["CloudWatchMetrics"][0].update(
                   Dimensions=[["flow_name"] * 31]),
               lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Extra=1)]
        for i, breaks in enumerate(bad):
            doc = json.loads(json.dumps(good))
            breaks(doc)
            self.assertNotEqual(emf.problems(doc), [], "case %d accepted: %r" % (i, doc))


if __name__ == "__main__":
    unittest.main()
