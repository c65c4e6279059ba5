"""dagy-agent with DAGY_STATUS_BACKEND=dynamodb against moto (through tests/integration/
faultproxy.py): run and task-run items land in their final state despite 5xx, throttling,
connection resets and delays; the agent's first write lands on the launcher's QUEUED item; a
terminal item written by someone else is never replaced; a store that refuses every write ends
the run with exit 3 and status_write_failed lines (no secret in them)."""

import decimal
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402
import awsenv  # noqa: E402
import faultproxy  # noqa: E402

RUNS = "DAGY_RUNS"
TASK_RUNS = "DAGY_TASK_RUNS"

FAULTS = {"500": 0.05, "503": 0.05, "throttle": 0.08, "reset": 0.04, "reset_after": 0.05,
          "delay": 0.05}


def plain(v):
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def spec(n_parallel=12):
    """a -> b (fails) -> c (skipped); plus n_parallel independent fast tasks; d retries once."""
    tasks = [
        {"name": "a", "command": ["true"]},
        {"name": "b", "command": ["sh", "-c", "echo boom >&2; exit 3"], "upstream": ["a"]},
        {"name": "c", "command": ["true"], "upstream": ["b"]},
        {"name": "d", "command": ["sh", "-c", "test -e marker || { touch marker; exit 1; }"],
         "retries": 1, "retry_delay_seconds": 0},
    ]
    tasks += [{"name": "p%02d" % i, "command": ["true"]} for i in range(n_parallel)]
    return {"spec_version": 1, "name": "ddb_e2e", "version": "1.0.0", "max_parallel": 4,
            "tasks": tasks}


class _Base:
    server = None  # awsenv.Moto or awsenv.DynaliteServer, set by the subclasses below

    @classmethod
    def setUpClass(cls):
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
        self.flow = agentenv.Flow(spec())
        self.addCleanup(self.flow.cleanup)

    def get(self, run_id, task=None):
        key = {"run_id": {"S": run_id}}
        if task is not None:
            key["task_name"] = {"S": task}
        item = self.ddb.get_item(TableName=TASK_RUNS if task else RUNS, Key=key,
                                 ConsistentRead=True).get("Item")
        return None if item is None else plain(
            {k: self.deser.deserialize(v) for k, v in item.items()})

    def run_agent(self, run_id, endpoint, access_key=None, secret=None, timeout=120):
        env = self.moto.env(self.flow.env(), AWS_ENDPOINT_URL=endpoint,
                            AWS_ENDPOINT_URL_DYNAMODB=endpoint,
                            DAGY_STATUS_BACKEND="dynamodb", DAGY_LOG_LEVEL="DEBUG")
        if access_key:
            env["AWS_ACCESS_KEY_ID"] = access_key
        if secret:
            env["AWS_SECRET_ACCESS_KEY"] = secret
        return self.flow.run("--run-id", run_id, env=env, timeout=timeout)

    def queue(self, run_id, status="QUEUED"):
        """The launcher's write: the run item with status_seq 0, only if absent."""
        self.ddb.put_item(
            TableName=RUNS,
            Item={"run_id": {"S": run_id}, "status": {"S": status}, "status_seq": {"N": "0"},
                  "executor": {"S": "ecs"}, "trigger_source": {"S": "test"}},
            ConditionExpression="attribute_not_exists(run_id)")

    def check_final_items(self, res, run_id):
        """Every item in DynamoDB says what the agent's log says happened."""
        run = self.get(run_id)
        self.assertEqual(run["status"], "FAILED", res)
        self.assertEqual(run["error_message"], res.events("run_end")[0]["error"])
        self.assertTrue(run["error_message"].startswith('task "b" failed'))
        self.assertEqual(run["tasks_total"], 16)
        self.assertEqual(run["tasks_failed"], 1)
        self.assertEqual(run["tasks_skipped"], 1)
        self.assertEqual(run["tasks_succeeded"], 14)
        self.assertGreaterEqual(run["status_seq"], 1)
        for name in ["a", "b", "c", "d"] + ["p%02d" % i for i in range(12)]:
            item = self.get(run_id, name)
            self.assertIsNotNone(item, name)
            ends = res.events("task_end", name) + res.events("task_skipped", name)
            self.assertEqual(len(ends), 1, name)
            self.assertEqual(item["status"], ends[0]["status"], name)
            self.assertEqual(item["task_run_id"], ends[0]["task_run_id"], name)
            self.assertRegex(item["updated_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(self.get(run_id, "b")["exit_code"], 3)
        self.assertEqual(self.get(run_id, "c")["status"], "SKIPPED")
        d = self.get(run_id, "d")
        self.assertEqual((d["status"], d["attempt"]), ("SUCCEEDED", 2))
        self.assertNotIn("error_message", d)  # the retry's error was REMOVEd on success
        self.assertEqual(res.events("status_write_failed"), [])

    def test_items_reach_final_state_through_faults(self):
        self.queue("ddb-faults")
        with faultproxy.FaultProxy(self.moto.endpoint, seed=4242, rates=FAULTS,
                                   delay_s=0.2) as proxy:
            res = self.run_agent("ddb-faults", proxy.url)
            stats = dict(proxy.stats)
        self.assertEqual(res.code, 1, res)
        self.assertGreater(sum(stats[k] for k in FAULTS), 0, stats)
        self.check_final_items(res, "ddb-faults")
        self.assertEqual(self.get("ddb-faults")["trigger_source"], "test")  # launcher's kept

    def test_clean_run_lands_on_queued_item(self):
        self.queue("ddb-clean")
        res = self.run_agent("ddb-clean", self.moto.endpoint)
        self.assertEqual(res.code, 1, res)
        self.check_final_items(res, "ddb-clean")

    def test_terminal_item_is_never_replaced(self):
        self.queue("ddb-cancelled", status="CANCELLED")
        res = self.run_agent("ddb-cancelled", self.moto.endpoint)
        # An ended run's id is refused before anything runs (docs/agent.md "Run ids are used
        # once"); nothing is written.
        self.assertEqual(res.code, 2, res)
        self.assertEqual(res.events("task_start"), [])
        run = self.get("ddb-cancelled")
        self.assertEqual((run["status"], run["status_seq"]), ("CANCELLED", 0))
        self.assertNotIn("started_at", run)
        self.assertEqual(res.events("status_write_failed"), [])

    def test_refused_credentials_exit_3_before_anything_runs(self):
        if not self.checks_signatures:
            self.skipTest("%s does not check signatures" % self.server.__name__)
        bad_secret = "wrong-secret-0123456789abcdefghijklmnopqrstuv"
        res = self.run_agent("ddb-denied", self.moto.endpoint, secret=bad_secret, timeout=90)
        self.assertEqual(res.code, 3, res)
        # The start gate reads the run item first: refused, so nothing runs or is written.
        self.assertEqual(res.events("task_start"), [])
        last = res.lines[-1]
        self.assertEqual((last["event_type"], last["level"], last["exit_code"]),
                         ("run_end", "ERROR", 3))
        self.assertIn("ddb-denied", last["error"])
        self.assertIn("DynamoDB GetItem", last["error"])
        self.assertNotIn(bad_secret, res.out + res.err)
        self.assertIsNone(self.get("ddb-denied"))


class MotoAgentDynamoDBTest(_Base, unittest.TestCase):
    server = awsenv.Moto
    checks_signatures = True


@unittest.skipUnless(awsenv.dynalite_cli(), "dynalite not installed (scripts/deps.sh --test)")
class DynaliteAgentDynamoDBTest(_Base, unittest.TestCase):
    server = awsenv.DynaliteServer
    checks_signatures = False


if __name__ == "__main__":
    unittest.main()
