"""dagy-agent's DynamoDB status at the edges, against moto AND dynalite (stricter about UTF-8,
sizes and expressions): an error message with invalid or cut UTF-8 is stored cleaned, at once;
a request the service refuses as invalid is not retried for a minute; a restart with the id of an
ended run is refused (exit 2), one of a RUNNING run takes over above every stored status_seq; a
write refused because someone else's item is stored is never taken for success; an unreachable
store stops the run before any task starts (exit 3), the last line agreeing; an oversized run
item is written without the oversized attribute."""

import decimal
import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402
import awsenv  # noqa: E402
import faultproxy  # noqa: E402

RUNS = "DAGY_RUNS"
TASK_RUNS = "DAGY_TASK_RUNS"


def plain(v):
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def spec(tasks):
    return {"spec_version": 1, "name": "ddb_faults", "version": "1.0.0", "tasks": tasks}


def sh(name, cmd, **kw):
    t = {"name": name, "command": ["sh", "-c", cmd]}
    t.update(kw)
    return t


class _Base:
    server = None  # awsenv.Moto or awsenv.Dynalite, set by subclasses

    @classmethod
    def setUpClass(cls):
        cls.srv = cls.server().start()
        cls.srv.create_status_tables(RUNS, TASK_RUNS)

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def setUp(self):
        import boto3.dynamodb.types

        self.ddb = self.srv.client("dynamodb")
        self.deser = boto3.dynamodb.types.TypeDeserializer()
        self.ser = boto3.dynamodb.types.TypeSerializer()

    def flow(self, tasks):
        f = agentenv.Flow(spec(tasks))
        self.addCleanup(f.cleanup)
        return f

    def get(self, run_id, task=None):
        key = {"run_id": {"S": run_id}}
        if task is not None:
            key["task_name"] = {"S": task}
        item = self.ddb.get_item(TableName=TASK_RUNS if task else RUNS, Key=key,
                                 ConsistentRead=True).get("Item")
        return None if item is None else plain(
            {k: self.deser.deserialize(v) for k, v in item.items()})

    def put(self, item, task=False):
        self.ddb.put_item(TableName=TASK_RUNS if task else RUNS,
                          Item={k: self.ser.serialize(v) for k, v in item.items()})

    def run_agent(self, flow, run_id, endpoint=None, timeout=120, extra_args=(), **env):
        ep = endpoint or self.srv.endpoint
        e = self.srv.env(flow.env(), AWS_ENDPOINT_URL=ep, AWS_ENDPOINT_URL_DYNAMODB=ep,
                         DAGY_STATUS_BACKEND="dynamodb")
        e.update(env)
        t0 = time.monotonic()
        res = flow.run("--run-id", run_id, *extra_args, env=e, timeout=timeout)
        res.elapsed = time.monotonic() - t0
        return res

    def assert_last_line_agrees(self, res):
        last = res.lines[-1]
        self.assertEqual(last["event_type"], "run_end", res)
        self.assertEqual(last["exit_code"], res.code, res)

    # ---- issue 9 defect 1 ----

    def check_invalid_utf8_task(self, cmd, run_id):
        f = self.flow([sh("bad", cmd)])
        res = self.run_agent(f, run_id)
        self.assertEqual(res.code, 1, res)
        self.assertLess(res.elapsed, 20, res)
        self.assertEqual(res.events("status_write_failed"), [], res)
        item = self.get(run_id, "bad")
        self.assertEqual(item["status"], "FAILED")
        self.assertEqual(self.get(run_id)["status"], "FAILED")
        item["error_message"].encode("utf-8")  # boto3 decoded it: valid UTF-8
        self.assert_last_line_agrees(res)
        return item

    def test_error_message_cut_mid_character_is_stored_valid(self):
        item = self.check_invalid_utf8_task("printf 'é%.0s' $(seq 1500) >&2; exit 1",
                                            "utf8-cut-" + self.tag)
        self.assertIn("é", item["error_message"])

    def test_invalid_utf8_error_message_is_stored_with_replacement(self):
        item = self.check_invalid_utf8_task("printf 'boom \\377\\376\\n' >&2; exit 1",
                                            "utf8-bad-" + self.tag)
        self.assertIn("boom \ufffd\ufffd", item["error_message"])

    def bad_keys_table(self, name):
        """A table whose key is not the agent's: every request on it is a ValidationException."""
        self.ddb.create_table(
            TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST")
        return name

    def test_request_refused_as_invalid_is_not_retried_for_a_minute(self):
        f = self.flow([sh("a", "true")])
        res = self.run_agent(f, "invalid-" + self.tag,
                             DAGY_RUNS_TABLE=self.bad_keys_table("BAD_RUNS_" + self.tag))
        self.assertEqual(res.code, 3, res)
        self.assertLess(res.elapsed, 10, res)
        self.assertEqual(res.events("task_start"), [], res)
        self.assertIn("ValidationException", res.lines[-1]["message"])
        self.assert_last_line_agrees(res)

    def test_invalid_task_item_write_fails_fast_and_is_reported_once(self):
        run_id = "invalid-task-" + self.tag
        f = self.flow([sh("a", "true"), sh("b", "sleep 1", upstream=["a"])])
        res = self.run_agent(f, run_id,
                             DAGY_TASK_RUNS_TABLE=self.bad_keys_table("BAD_TASKS_" + self.tag))
        self.assertLess(res.elapsed, 15, res)
        fails = res.events("status_write_failed")
        self.assertTrue(fails, res)
        for x in fails:
            self.assertIn("ValidationException", x["error"])
        # One line per state that could not be written, never a line per retry.
        self.assertLessEqual(len([x for x in fails if x["task_name"] == "a"]), 2, res)
        self.assertTrue(res.events("status_store_degraded"), res)
        self.assertEqual(self.get(run_id)["status"], "SUCCEEDED")
        self.assert_last_line_agrees(res)

    # ---- issue 9 defect 2 ----

    def test_restart_of_an_ended_run_is_refused_with_exit_2(self):
        run_id = "ended-" + self.tag
        f = self.flow([sh("a", "true")])
        first = self.run_agent(f, run_id)
        self.assertEqual(first.code, 0, first)
        before = self.get(run_id)
        again = self.run_agent(f, run_id)
        self.assertEqual(again.code, 2, again)
        self.assertEqual(again.events("task_start"), [])
        self.assertIn(run_id, again.lines[-1]["message"])
        self.assertIn("--resume-from", again.lines[-1]["message"])
        self.assert_last_line_agrees(again)
        self.assertEqual(self.get(run_id), before)

    def test_restart_of_a_running_run_takes_over_above_stored_seqs(self):
        run_id = "takeover-" + self.tag
        # What a dead agent left: the run RUNNING at seq 40, task a RUNNING at seq 90.
        self.put({"run_id": run_id, "status": "RUNNING", "status_seq": 40, "executor": "ecs"})
        self.put({"run_id": run_id, "task_name": "a", "status": "RUNNING", "status_seq": 90},
                 task=True)
        f = self.flow([sh("a", "true"), sh("b", "true", upstream=["a"])])
        res = self.run_agent(f, run_id)
        self.assertEqual(res.code, 0, res)
        run = self.get(run_id)
        self.assertEqual(run["status"], "SUCCEEDED")
        self.assertGreater(run["status_seq"], 90)
        self.assertLess(run["status_seq"], 10 ** 12)  # the reconciler's writes stay above
        self.assertEqual(self.get(run_id, "a")["status"], "SUCCEEDED")
        self.assertEqual(self.get(run_id, "b")["status"], "SUCCEEDED")
        self.assertEqual(len(res.events("status_takeover")), 1, res)
        self.assert_last_line_agrees(res)

    def test_refused_write_of_an_item_someone_else_ended_is_not_success(self):
        run_id = "foreign-" + self.tag
        self.put({"run_id": run_id, "status": "RUNNING", "status_seq": 3, "executor": "ecs"})
        # Task a was ended by an earlier agent of this run: our write of it is refused.
        self.put({"run_id": run_id, "task_name": "a", "status": "SUCCEEDED", "status_seq": 2},
                 task=True)
        f = self.flow([sh("a", "exit 1")])
        res = self.run_agent(f, run_id)
        fails = res.events("status_write_failed")
        self.assertEqual([x.get("task_name") for x in fails], ["a"], res)
        self.assertIn("SUCCEEDED", fails[0]["error"])
        self.assertEqual(self.get(run_id, "a")["status"], "SUCCEEDED")
        self.assertEqual(self.get(run_id)["status"], "FAILED")
        self.assert_last_line_agrees(res)

    # ---- issue 9 defect 6 ----

    def test_unreachable_store_stops_the_run_before_any_task(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(16)  # accepts connections, never answers: a blackhole
            f = self.flow([sh("a", "touch ran")])
            res = self.run_agent(f, "blackhole-" + self.tag,
                                 endpoint="http://127.0.0.1:%d" % s.getsockname()[1])
        self.assertEqual(res.code, 3, res)
        self.assertLess(res.elapsed, 40, res)
        self.assertEqual(res.events("task_start"), [], res)
        self.assertFalse(os.path.exists(os.path.join(f.dir, "ran")))
        self.assert_last_line_agrees(res)
        degraded = res.events("status_store_degraded")  # reported within seconds, once
        self.assertEqual(len(degraded), 1, res)

    def test_shutdown_with_a_store_gone_silent_is_bounded_and_last_line_agrees(self):
        """SIGTERM while DynamoDB stops answering, a task that ignores SIGTERM: drain, kill
        grace, at most 2 s for traces and 8 s of flush, then exit 3 (the final status is not
        stored) with run_end saying so: with the default 15 s drain, 28 s < ECS's 30 s."""
        f = self.flow([sh("stubborn", "trap '' TERM; sleep 60")])
        with faultproxy.FaultProxy(self.srv.endpoint, seed=3, delay_s=30) as proxy:
            e = self.srv.env(f.env(), AWS_ENDPOINT_URL=proxy.url,
                             AWS_ENDPOINT_URL_DYNAMODB=proxy.url, DAGY_STATUS_BACKEND="dynamodb",
                             DAGY_DRAIN_SECONDS="1", DAGY_KILL_GRACE_SECONDS="1")
            p = subprocess.Popen([agentenv.AGENT, "--flow", f.dir, "--state-dir", f.state,
                                  "--log-format", "json", "--run-id", "silent-" + self.tag],
                                 env=f.env(e), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                time.sleep(2)  # RUNNING and the task's item are stored by now
                proxy.rates["delay"] = 1.0  # from now on every request hangs for 30 s
                t0 = time.monotonic()
                p.send_signal(signal.SIGTERM)
                out, err = p.communicate(timeout=60)
                elapsed = time.monotonic() - t0
            finally:
                awsenv.stop_process(p)
        lines = [json.loads(x) for x in out.decode().splitlines()]
        self.assertEqual(p.returncode, 3, (out[-3000:], err))
        self.assertLess(elapsed, 1 + 1 + 2 + 8 + 2.5, lines[-3:])
        self.assertEqual(lines[-1]["event_type"], "run_end")
        self.assertEqual(lines[-1]["exit_code"], 3)
        self.assertFalse(lines[-1]["status_recorded"])
        self.assertTrue([x for x in lines if x["event_type"] == "status_store_degraded"])
        self.assertEqual(self.get("silent-" + self.tag)["status"], "RUNNING")

    # ---- issue 8 "also verify": 400 KB items ----

    def test_oversized_run_item_is_written_without_the_oversized_attribute(self):
        run_id = "big-" + self.tag
        f = self.flow([sh("a", "true")])
        params = os.path.join(f.tmp, "params.json")
        with open(params, "w") as p:
            json.dump({"blob": "x" * 450000}, p)
        res = self.run_agent(f, run_id, extra_args=["--params-json", "@" + params])
        # The task itself may fail to start with 450 KB in DAGY_PARAMETERS (E2BIG: the tasks
        # engineer's DAGY_PARAMETERS_FILE); the run item must be stored either way.
        self.assertIn(res.code, (0, 1), res)
        self.assertLess(res.elapsed, 20, res)
        run = self.get(run_id)
        self.assertEqual(run["status"], "SUCCEEDED" if res.code == 0 else "FAILED")
        self.assertNotIn("parameters", run)
        self.assertEqual(run["truncated_attributes"], ["parameters"])
        self.assertEqual(res.events("status_write_failed"), [])


class MotoStatusFaults(_Base, unittest.TestCase):
    server = awsenv.Moto
    tag = "moto"


# dynalite's harness (awsenv.DynaliteServer, installed by scripts/deps.sh --test) comes with the
# "verify" engineer's fault suite.
@unittest.skipUnless(getattr(awsenv, "DynaliteServer", None) and awsenv.dynalite_cli(),
                     "dynalite not installed (scripts/deps.sh --test)")
class DynaliteStatusFaults(_Base, unittest.TestCase):
    server = getattr(awsenv, "DynaliteServer", None)
    tag = "dynalite"


if __name__ == "__main__":
    unittest.main()
