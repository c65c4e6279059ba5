"""The status store + DynamoDB backend (tests/tools/status_probe) against moto: items end exactly
in their final state, also through a proxy injecting 5xx, throttling, resets and delays; the
conditions refuse lower seqs and terminal overwrites; every UpdateItem body validates against
botocore's DynamoDB service model; an unreachable store ends the flush with exit 3 and
status_write_failed lines."""

import decimal
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import faultproxy  # noqa: E402

RUNS = "DAGY_RUNS"
TASK_RUNS = "DAGY_TASK_RUNS"


def probe_path():
    return os.path.join(awsenv.tools_dir(), "status_probe")


def plain(v):
    """boto3's deserialized values (Decimal) as the probe prints them (int / float)."""
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


class _Base:
    server = None  # awsenv.Moto or awsenv.DynaliteServer, set by the subclasses below

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(probe_path()):
            raise unittest.SkipTest("status_probe not built at %s" % probe_path())
        cls.moto = cls.server().start()
        cls.moto.create_status_tables(RUNS, TASK_RUNS)

    @classmethod
    def tearDownClass(cls):
        faultproxy.stop()
        cls.moto.stop()

    def setUp(self):
        import boto3.dynamodb.types

        self.ddb = self.moto.client("dynamodb")
        self.deser = boto3.dynamodb.types.TypeDeserializer()

    def get(self, run_id, task=None):
        key = {"run_id": {"S": run_id}}
        table = RUNS
        if task is not None:
            key["task_name"] = {"S": task}
            table = TASK_RUNS
        item = self.ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        if item is None:
            return None
        return plain({k: self.deser.deserialize(v) for k, v in item.items()})

    def probe(self, args, endpoint, timeout=180):
        env = self.moto.env(AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_DYNAMODB=endpoint)
        return awsenv.run([probe_path()] + args, env=env, timeout=timeout)

    def put(self, kind, item, endpoint=None, runs=RUNS):
        p = self.probe(["put", runs, TASK_RUNS, kind, json.dumps(item)],
                       endpoint or self.moto.endpoint)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def check_items_stored(self, out):
        """Every item the store ended with is in DynamoDB exactly (null members absent)."""
        for want in out["items"]:
            want = {k: v for k, v in want.items() if v is not None}
            got = self.get(want["run_id"], want.get("task_name"))
            self.assertEqual(got, want)

    def run_probe(self, run_id, n_tasks, endpoint, flush_ms=60000):
        p = self.probe(["run", RUNS, TASK_RUNS, run_id, str(n_tasks), str(flush_ms)], endpoint)
        self.assertEqual(p.returncode, 0, "probe failed:\n%s\n%s" % (p.stdout, p.stderr[-4000:]))
        out = json.loads(p.stdout)
        self.assertFalse(out["failed_run"])
        self.assertEqual(out["n_failed"], 0)
        self.assertEqual(len(out["items"]), n_tasks + 1)
        return out

    def test_run_items_reach_final_state_and_bodies_match_service_model(self):
        import botocore.session
        import botocore.validate

        with faultproxy.FaultProxy(self.moto.endpoint, record_bodies=True) as proxy:
            out = self.run_probe("run-clean", 25, proxy.url)
        self.check_items_stored(out)
        run = self.get("run-clean")
        self.assertEqual(run["status"], "FAILED")
        self.assertEqual(self.get("run-clean", "t0004")["trace_s3_uri"],
                         "s3://traces/exceptions/org/r/4/1.txt")
        self.assertNotIn("error_message", self.get("run-clean", "t0000"))  # REMOVEd on success
        # Coalescing: far fewer writes than the probe's transitions and heartbeats.
        updates = [b for (_, _, h, b) in proxy.bodies
                   if h.get("x-amz-target") == "DynamoDB_20120810.UpdateItem"]
        self.assertGreater(len(updates), 25)
        model = botocore.session.get_session().get_service_model("dynamodb")
        shape = model.operation_model("UpdateItem").input_shape
        for body in updates:
            params = json.loads(body)
            report = botocore.validate.ParamValidator().validate(params, shape)
            self.assertFalse(report.has_errors(), report.generate_report())
            self.assertIn("ConditionExpression", params)

    def test_faults_are_survived_and_items_end_exactly_right(self):
        rates = {"500": 0.05, "503": 0.05, "throttle": 0.08, "reset": 0.05,
                 "reset_after": 0.05, "delay": 0.05}
        with faultproxy.FaultProxy(self.moto.endpoint, seed=20260314, rates=rates,
                                   delay_s=0.2) as proxy:
            out = self.run_probe("run-faults", 40, proxy.url)
            stats = dict(proxy.stats)
        for k in rates:
            self.assertGreater(stats[k], 0, "fault %s never injected: %r" % (k, stats))
        self.check_items_stored(out)

    def test_module_level_proxy_api(self):
        url = faultproxy.start(self.moto.endpoint, seed=1, rates={"throttle": 0.3})
        try:
            self.assertTrue(url.startswith("http://127.0.0.1:"))
            out = self.run_probe("run-module", 5, url)
            self.check_items_stored(out)
            self.assertGreater(faultproxy.current().stats["throttle"], 0)
        finally:
            faultproxy.stop()
        self.assertIsNone(faultproxy.current())

    def test_conditions_refuse_lower_seq_and_terminal_overwrite(self):
        r = "run-cond"
        self.assertEqual(self.put("run", {"run_id": r, "status": "QUEUED", "status_seq": 0}),
                         {"rc": 0, "error": ""})
        self.put("run", {"run_id": r, "status": "RUNNING", "status_seq": 5, "x": "five"})
        self.assertEqual(self.get(r)["x"], "five")  # the agent's write lands on QUEUED
        res = self.put("run", {"run_id": r, "status": "RUNNING", "status_seq": 3, "x": "three"})
        self.assertEqual(res["rc"], 1)  # refused (STATUS_REFUSED) is an answer, not an error
        self.assertEqual(self.get(r)["x"], "five")
        self.put("run", {"run_id": r, "status": "RUNNING", "status_seq": 5, "x": "dup"})
        self.assertEqual(self.get(r)["x"], "five")
        self.put("run", {"run_id": r, "status": "FAILED", "status_seq": 6, "x": "six"})
        self.put("run", {"run_id": r, "status": "RUNNING", "status_seq": 7, "x": "seven"})
        self.put("run", {"run_id": r, "status": "SUCCEEDED", "status_seq": 8, "x": "eight"})
        self.put("run", {"run_id": r, "status_seq": 9, "x": "nine"})
        got = self.get(r)
        self.assertEqual((got["status"], got["status_seq"], got["x"]), ("FAILED", 6, "six"))
        self.put("run", {"run_id": r, "status": "FAILED", "status_seq": 10,
                         "trace_s3_uri": "s3://b/exceptions/o/run-cond/traceback.txt", "x": None})
        got = self.get(r)
        self.assertEqual(got["trace_s3_uri"], "s3://b/exceptions/o/run-cond/traceback.txt")
        self.assertEqual(got["status_seq"], 10)
        self.assertNotIn("x", got)
        t = {"run_id": r, "task_name": "extract", "status": "SKIPPED", "status_seq": 2}
        self.put("task", t)
        self.put("task", dict(t, status="RUNNING", status_seq=3))
        self.assertEqual(self.get(r, "extract")["status"], "SKIPPED")

    def test_store_errors_are_reported_not_hidden(self):
        res = self.put("run", {"run_id": "r", "status": "RUNNING", "status_seq": 1},
                       runs="NO_SUCH_TABLE")
        self.assertEqual(res["rc"], -2)  # -ENOENT: ResourceNotFoundException
        self.assertIn("ResourceNotFoundException", res["error"])
        self.assertNotIn(self.moto.secret_key, res["error"])

    def test_unreachable_store_fails_the_flush_with_exit_3(self):
        dead = "http://127.0.0.1:%d" % awsenv.free_port()
        p = self.probe(["run", RUNS, TASK_RUNS, "run-dead", "2", "1500"], dead, timeout=60)
        self.assertEqual(p.returncode, 3, p.stderr[-3000:])
        out = json.loads(p.stdout)
        self.assertTrue(out["failed_run"])
        self.assertEqual(out["n_failed"], 3)
        failed = [json.loads(line) for line in p.stderr.splitlines()
                  if '"status_write_failed"' in line]
        self.assertEqual(len(failed), 3)
        for line in failed:
            self.assertEqual(line["level"], "ERROR")
            self.assertEqual(line["item"]["run_id"], "run-dead")
            self.assertTrue(line["error"])
            self.assertNotIn(self.moto.secret_key, json.dumps(line))
        self.assertIsNone(self.get("run-dead"))


class MotoDdbStatusTest(_Base, unittest.TestCase):
    server = awsenv.Moto


@unittest.skipUnless(awsenv.dynalite_cli(), "dynalite not installed (scripts/deps.sh --test)")
class DynaliteDdbStatusTest(_Base, unittest.TestCase):
    server = awsenv.DynaliteServer


if __name__ == "__main__":
    unittest.main()
