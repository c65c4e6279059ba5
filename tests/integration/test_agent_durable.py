"""Durable runs, agent side (issue 10 items 1-3 and 5; contract section 10), against moto with
signatures enforced: task results stored in S3 before SUCCEEDED (result_s3_uri, result_sha256,
result_bytes), task_hash on every item, DAGY_RESUME_FROM reusing what succeeded (not run: side
effects prove it), reused results fed downstream byte for byte and refused when their sha256
does not match, a changed task rerunning itself and everything downstream, SIGTERM then resume,
a requested cancel ending CANCELLED, and every DynamoDB request body validated against botocore's
service model. Local mode: --resume-from in the same state directory."""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402
import awsenv  # noqa: E402
import faultproxy  # noqa: E402
import test_agent_aws as base  # noqa: E402  (helpers only; its tests run in their own file)

RUNS, TASK_RUNS, ARTIFACTS, TRACES, ORG = (base.RUNS, base.TASK_RUNS, base.ARTIFACTS, base.TRACES,
                                           base.ORG)
RESULTS = "dagy-results"
HEX64 = r"^[0-9a-f]{64}$"


def result_file(work, run_id, task):
    """The stored result of `task` in the run directory: exec/INSTANCE/results/TASK.json (one
    agent instance per run here)."""
    found = glob.glob(os.path.join(work, run_id, "exec", "*", "results", task + ".json"))
    assert len(found) == 1, found
    return found[0]


def five_tasks(tmp, third="test -e {tmp}/fixed"):
    """t1..t5 in a chain; each appends its name to tmp/side; t1 and t2 write results, t3 prints
    its inputs and then runs `third` (fails until tmp/fixed exists) and passes them on."""
    side = "echo $DAGY_TASK_NAME >> %s/side; " % tmp
    return [
        {"name": "t1", "command": ["sh", "-c", side + "printf '{\"rows\":  [1, 2.50, \"\\u00e9\"]}'"
                                   " > \"$DAGY_TASK_OUTPUT\""]},
        {"name": "t2", "command": ["sh", "-c", side + "cat \"$DAGY_TASK_INPUTS\" > "
                                   "\"$DAGY_TASK_OUTPUT\""], "upstream": ["t1"]},
        {"name": "t3", "command": ["sh", "-c", side + "cat \"$DAGY_TASK_INPUTS\"; echo; " +
                                   third.format(tmp=tmp) + " && cat \"$DAGY_TASK_INPUTS\" > "
                                   "\"$DAGY_TASK_OUTPUT\""], "upstream": ["t2"]},
        {"name": "t4", "command": ["sh", "-c", side + "cat \"$DAGY_TASK_INPUTS\""],
         "upstream": ["t3"]},
        {"name": "t5", "command": ["sh", "-c", side + "true"], "upstream": ["t4"]},
    ]


class DurableAwsTest(unittest.TestCase):
    # The container-mode helpers of test_agent_aws (one copy of them).
    container_env = base.AgentAwsTest.container_env
    run_agent = base.AgentAwsTest.run_agent
    assert_no_secrets = base.AgentAwsTest.assert_no_secrets
    get = base.AgentAwsTest.get
    task_items = base.AgentAwsTest.task_items
    queue = base.AgentAwsTest.queue
    upload = base.AgentAwsTest.upload
    start_agent = base.AgentAwsTest.start_agent
    wait_line = base.AgentAwsTest.wait_line
    sigterm_and_collect = base.AgentAwsTest.sigterm_and_collect

    @classmethod
    def setUpClass(cls):
        import boto3.dynamodb.types

        cls.moto = awsenv.Moto().start()
        try:
            cls.moto.create_status_tables(RUNS, TASK_RUNS)
            s3 = cls.moto.client("s3")
            for b in (ARTIFACTS, TRACES, RESULTS):
                s3.create_bucket(Bucket=b)
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
        self.tmp = tempfile.mkdtemp(prefix="dagy-durable-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.work = os.path.join(self.tmp, "work")
        self.meta = base.MetadataServer().start()
        self.addCleanup(self.meta.stop)
        self.secrets = [self.moto.secret_key]
        # Every DynamoDB request goes through a recording proxy; bodies are validated in tearDown.
        self.proxy = faultproxy.FaultProxy(self.moto.endpoint, record_bodies=True).start()
        self.addCleanup(self.proxy.stop)

    def tearDown(self):
        self.check_ddb_bodies()

    # -- helpers -------------------------------------------------------------------------------

    def env(self, run_id, art, **extra):
        extra.setdefault("DAGY_RESULTS_BUCKET", RESULTS)
        extra.setdefault("AWS_ENDPOINT_URL_DYNAMODB", self.proxy.url)
        return self.container_env(run_id, art, **extra)

    def artifact(self, name, tasks):
        return self.upload("flows/%s/artifact.zip" % name, base.zip_bytes(base.flow_files(tasks)))

    def side(self):
        path = os.path.join(self.tmp, "side")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            out = f.read().split()
        os.unlink(path)
        return out

    def result_obj(self, run_id, task):
        key = "results/%s/%s/%s.json" % (ORG, run_id, task)
        return self.s3.get_object(Bucket=RESULTS, Key=key)["Body"].read()

    def check_ddb_bodies(self):
        """Every GetItem, Query and UpdateItem the agent sent fits botocore's DynamoDB model."""
        import botocore.session
        import botocore.validate

        model = botocore.session.get_session().get_service_model("dynamodb")
        seen = set()
        for _, _, headers, body in self.proxy.bodies:
            target = headers.get("x-amz-target", "")
            if not target.startswith("DynamoDB_20120810."):
                continue
            op = target.split(".", 1)[1]
            seen.add(op)
            shape = model.operation_model(op).input_shape
            report = botocore.validate.ParamValidator().validate(json.loads(body), shape)
            self.assertFalse(report.has_errors(), report.generate_report())
        return seen

    def check_stored_result(self, run_id, task, item):
        """The item names the S3 object holding the result, with its sha256 and size."""
        data = self.result_obj(run_id, task)
        self.assertEqual(item["result_s3_uri"],
                         "s3://%s/results/%s/%s/%s.json" % (RESULTS, ORG, run_id, task))
        self.assertEqual(item["result_sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(item["result_bytes"], len(data))
        self.assertNotIn("result_path", item)
        return data

    # -- tests ---------------------------------------------------------------------------------

    def test_third_of_five_fails_then_resume_reuses_first_two_and_feeds_them_byte_for_byte(self):
        art = self.artifact("five", five_tasks(self.tmp))
        res = self.run_agent(self.env("dur-a", art))
        self.assertEqual(res.code, 1, res)
        self.assertEqual(self.side(), ["t1", "t2", "t3"])
        items = self.task_items("dur-a")
        for name in ("t1", "t2", "t3", "t4", "t5"):
            self.assertRegex(items[name]["task_hash"], HEX64, name)
        self.assertEqual(len({items[n]["task_hash"] for n in items}), 5)
        t1 = self.check_stored_result("dur-a", "t1", items["t1"])
        self.assertEqual(t1, '{"rows":  [1, 2.50, "\\u00e9"]}'.encode())
        t2 = self.check_stored_result("dur-a", "t2", items["t2"])
        self.assertEqual(items["t3"]["status"], "FAILED")
        self.assertNotIn("result_s3_uri", items["t3"])
        seen_a = res.events("task_output", "t3")[0]["message"]

        open(os.path.join(self.tmp, "fixed"), "w").close()
        res = self.run_agent(self.env("dur-b", art, DAGY_RESUME_FROM="dur-a"))
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.side(), ["t3", "t4", "t5"])  # t1 and t2 did not run
        self.assertEqual([ln["task_name"] for ln in res.events("task_reused")], ["t1", "t2"])
        self.assertEqual(res.events("task_start", "t1") + res.events("task_start", "t2"), [])
        items_b = self.task_items("dur-b")
        for name in ("t1", "t2"):
            it = items_b[name]
            self.assertEqual((it["status"], it["attempt"], it["reused_from"]),
                             ("SUCCEEDED", 0, "dur-a"), it)
            self.assertEqual(it["task_hash"], items[name]["task_hash"])
            for k in ("result_s3_uri", "result_sha256", "result_bytes"):
                self.assertEqual(it[k], items[name][k], k)
        for name in ("t3", "t4", "t5"):
            self.assertEqual((items_b[name]["status"], items_b[name]["attempt"]),
                             ("SUCCEEDED", 1))
            self.assertNotIn("reused_from", items_b[name])
            self.assertEqual(items_b[name]["task_hash"], items[name]["task_hash"])
        # t3 saw exactly the inputs it saw in the first run: t2's stored result, byte for byte
        self.assertEqual(res.events("task_output", "t3")[0]["message"], seen_a)
        with open(result_file(self.work, "dur-b", "t2"), "rb") as f:
            self.assertEqual(f.read(), t2)
        run = self.get("dur-b")
        self.assertEqual((run["status"], run["resume_from"], run["tasks_reused"],
                          run["tasks_succeeded"]), ("SUCCEEDED", "dur-a", 2, 5), run)
        self.assertTrue({"GetItem", "Query", "UpdateItem"} <= self.check_ddb_bodies())

        # A resume of the resume follows the chain: everything is reused, from where it ran.
        res = self.run_agent(self.env("dur-c", art, DAGY_RESUME_FROM="dur-b"))
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.side(), [])
        items_c = self.task_items("dur-c")
        self.assertEqual({n: items_c[n]["reused_from"] for n in items_c},
                         {"t1": "dur-a", "t2": "dur-a", "t3": "dur-b", "t4": "dur-b",
                          "t5": "dur-b"})

    def test_resume_refuses_a_result_whose_sha256_does_not_match(self):
        art = self.artifact("tamper", five_tasks(self.tmp))
        res = self.run_agent(self.env("dur-t-a", art))
        self.assertEqual(res.code, 1, res)
        self.side()
        key = "results/%s/dur-t-a/t2.json" % ORG
        self.s3.put_object(Bucket=RESULTS, Key=key, Body=b'{"t1": "forged"}')
        open(os.path.join(self.tmp, "fixed"), "w").close()
        res = self.run_agent(self.env("dur-t-b", art, DAGY_RESUME_FROM="dur-t-a"))
        self.assertEqual(res.code, 0, res)
        # t2 runs again (and so does everything after it); t1's result is intact and reused
        self.assertEqual(self.side(), ["t2", "t3", "t4", "t5"])
        refused = res.events("result_not_reused", "t2")
        self.assertEqual(len(refused), 1, res)
        self.assertIn("result_sha256", refused[0]["message"])
        items = self.task_items("dur-t-b")
        self.assertEqual(items["t1"]["reused_from"], "dur-t-a")
        self.assertNotIn("reused_from", items["t2"])
        self.assertNotIn(b"forged", self.result_obj("dur-t-b", "t2"))
        self.assertNotIn("forged", json.dumps(res.events("task_output")))

    def test_changed_task_reruns_it_and_everything_downstream(self):
        tasks = five_tasks(self.tmp, third="true")
        art = self.artifact("v1", tasks)
        res = self.run_agent(self.env("dur-v1", art))
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.side(), ["t1", "t2", "t3", "t4", "t5"])
        tasks[2]["command"][2] = tasks[2]["command"][2].replace("echo;", "echo; echo v2;")
        files = base.flow_files(tasks)
        files["flow_spec.json"] = files["flow_spec.json"].replace('"2.1.0"', '"2.2.0"')
        art2 = self.upload("flows/v2/artifact.zip", base.zip_bytes(files))
        res = self.run_agent(self.env("dur-v2", art2, DAGY_RESUME_FROM="dur-v1"))
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.side(), ["t3", "t4", "t5"])
        self.assertIn("v2", [ln["message"] for ln in res.events("task_output", "t3")])
        h1, h2 = self.task_items("dur-v1"), self.task_items("dur-v2")
        same = [n for n in sorted(h1) if h1[n]["task_hash"] == h2[n]["task_hash"]]
        self.assertEqual(same, ["t1", "t2"])

    def test_sigterm_mid_run_is_failed_then_resume_reuses_what_finished(self):
        marker = os.path.join(self.tmp, "fast")
        art = self.artifact("sigterm", [
            {"name": "q1", "command": ["sh", "-c", "echo q1 >> %s/side; echo 1 > "
                                       "\"$DAGY_TASK_OUTPUT\"" % self.tmp]},
            {"name": "q2", "command": ["sh", "-c", "echo q2 >> %s/side" % self.tmp],
             "upstream": ["q1"]},
            {"name": "long", "command": ["sh", "-c", "echo long >> %s/side; test -e %s || "
                                         "sleep 60" % (self.tmp, marker)], "upstream": ["q2"]},
            {"name": "after", "command": ["sh", "-c", "echo after >> %s/side" % self.tmp],
             "upstream": ["long"]},
        ])
        self.queue("dur-s-a")
        env = self.env("dur-s-a", art, DAGY_DRAIN_SECONDS="0", DAGY_KILL_GRACE_SECONDS="1")
        p, lines = self.start_agent(env)
        self.wait_line(p, lines, lambda ln: ln["event_type"] == "task_start" and
                       ln["task_name"] == "long")
        # task_start comes before the process runs: wait until it really is running
        side = os.path.join(self.tmp, "side")
        self.assertTrue(agentenv.wait_for(lambda: "long" in open(side).read(), 20))
        res, _ = self.sigterm_and_collect(p, lines, env)
        self.assertEqual(res.code, 143, res)
        run = self.get("dur-s-a")
        self.assertEqual((run["status"], run["stop_reason"], run["error_message"]),
                         ("FAILED", "SIGTERM", "Worker shutdown requested via SIGTERM"), run)
        self.assertEqual(self.side(), ["q1", "q2", "long"])
        open(marker, "w").close()
        res = self.run_agent(self.env("dur-s-b", art, DAGY_RESUME_FROM="dur-s-a"))
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.side(), ["long", "after"])
        items = self.task_items("dur-s-b")
        self.assertEqual([n for n in sorted(items) if items[n].get("reused_from")], ["q1", "q2"])

    def test_requested_cancel_ends_cancelled_with_stop_reason_exit_143(self):
        art = self.artifact("cancel", [{"name": "long", "command": ["sleep", "60"]}])
        self.queue("dur-cancel")
        env = self.env("dur-cancel", art, DAGY_DRAIN_SECONDS="0", DAGY_KILL_GRACE_SECONDS="1")
        p, lines = self.start_agent(env)
        self.wait_line(p, lines, lambda ln: ln["event_type"] == "task_start")
        # what `dagy-launch cancel` writes before StopTask
        self.ddb.update_item(
            TableName=RUNS, Key={"run_id": {"S": "dur-cancel"}},
            UpdateExpression="SET cancel_requested_at = :t, cancel_reason = :r",
            ExpressionAttributeValues={":t": {"S": "2026-12-01T09:00:00.000Z"},
                                       ":r": {"S": "wrong parameters"}})
        res, elapsed = self.sigterm_and_collect(p, lines, env)
        self.assertEqual(res.code, 143, res)
        self.assertLess(elapsed, 10)
        run = self.get("dur-cancel")
        self.assertEqual((run["status"], run["stop_reason"]),
                         ("CANCELLED", "UserInitiated: wrong parameters"), run)
        end = res.events("run_end")[0]
        self.assertEqual((end["status"], end["exit_code"]), ("CANCELLED", 143))
        self.assertEqual(self.task_items("dur-cancel")["long"]["status"], "CANCELLED")
        self.assertIn("GetItem", self.check_ddb_bodies())

    def test_cancel_during_download_starts_no_task_while_the_check_is_pending(self):
        # The artifact arrives ~1.6 s after the SIGTERM, the GetItem answer 2.5 s after it (the
        # check gives up at 2 s): nothing may start in between, and the run is not CANCELLED
        # since the answer came too late.
        art = self.artifact("cancel-dl", [{"name": "t", "command": ["sh", "-c", "echo t >> "
                                                                    "%s/side" % self.tmp]}])
        self.queue("dur-cancel-dl")
        self.ddb.update_item(
            TableName=RUNS, Key={"run_id": {"S": "dur-cancel-dl"}},
            UpdateExpression="SET cancel_requested_at = :t",
            ExpressionAttributeValues={":t": {"S": "2026-12-01T09:00:00.000Z"}})
        slow_get = lambda m, path, h: m == "GET" and "cancel-dl" in path
        slow_item = lambda m, path, h: (h.get("X-Amz-Target") or "").endswith(".GetItem")
        with faultproxy.FaultProxy(self.moto.endpoint, seed=1, rates={"delay": 1.0}, delay_s=1.8,
                                   match=slow_get) as sp, \
                faultproxy.FaultProxy(self.proxy.url, seed=1, rates={"delay": 1.0}, delay_s=2.5,
                                      match=slow_item) as dp:
            env = self.env("dur-cancel-dl", art, AWS_ENDPOINT_URL_S3=sp.url,
                           AWS_ENDPOINT_URL_DYNAMODB=dp.url)
            p, lines = self.start_agent(env)
            self.wait_line(p, lines, lambda ln: ln["event_type"] == "download_start")
            time.sleep(0.2)  # the artifact arrives ~1.6 s after the signal, within the 2 s wait
            res, _ = self.sigterm_and_collect(p, lines, env)
        self.assertEqual(res.code, 143, res)
        self.assertEqual(res.events("task_start"), [])
        self.assertEqual(self.side(), [])
        self.assertEqual(len(res.events("cancel_check_timeout")), 1, res)
        run = self.get("dur-cancel-dl")
        self.assertEqual((run["status"], run["stop_reason"]), ("FAILED", "SIGTERM"), run)

    def test_resume_from_a_running_or_unknown_run_is_refused_exit_2(self):
        art = self.artifact("refuse", [{"name": "t", "command": ["sh", "-c", "echo t >> %s/side"
                                                                 % self.tmp]}])
        self.ddb.put_item(TableName=RUNS, Item={"run_id": {"S": "dur-busy"},
                                                "status": {"S": "RUNNING"},
                                                "status_seq": {"N": "4"}})
        res = self.run_agent(self.env("dur-r1", art, DAGY_RESUME_FROM="dur-busy"))
        self.assertEqual(res.code, 2, res)
        self.assertIn("still RUNNING", res.events("run_end")[0]["error"])
        res = self.run_agent(self.env("dur-r2", art, DAGY_RESUME_FROM="dur-nowhere"))
        self.assertEqual(res.code, 2, res)
        self.assertIn("no such run", res.events("run_end")[0]["error"])
        self.assertEqual(self.side(), [])
        self.assertEqual(self.get("dur-r1")["status"], "FAILED")

    def test_result_that_cannot_be_stored_fails_the_attempt_and_is_retried(self):
        art = self.artifact("nobucket", [
            {"name": "t", "command": ["sh", "-c", "echo t >> %s/side; echo 1 > "
                                      "\"$DAGY_TASK_OUTPUT\"" % self.tmp],
             "retries": 1, "retry_delay_seconds": 0},
            {"name": "u", "command": ["true"], "upstream": ["t"]}])
        res = self.run_agent(self.env("dur-nob", art, DAGY_RESULTS_BUCKET="no-such-bucket"))
        self.assertEqual(res.code, 3, res)  # an infrastructure failure, not the task's
        self.assertEqual(self.side(), ["t", "t"])
        it = self.task_items("dur-nob")["t"]
        self.assertEqual((it["status"], it["attempt"]), ("FAILED", 2), it)
        self.assertIn("infrastructure: cannot store the result", it["error_message"])
        self.assertIn("NoSuchBucket", it["error_message"])
        self.assertNotIn("result_s3_uri", it)

    def test_a_slow_upload_holds_downstream_but_not_the_slot(self):
        # max_parallel 1; a's result upload is held 2.5 s: b (independent) runs meanwhile, a's
        # downstream c waits for a to be SUCCEEDED, i.e. stored.
        art = self.artifact("overlap", [
            {"name": "a", "command": ["sh", "-c", "echo 1 > \"$DAGY_TASK_OUTPUT\""]},
            {"name": "b", "command": ["true"]},
            {"name": "c", "command": ["true"], "upstream": ["a"]}])
        slow = lambda m, path, h: m == "PUT" and path.endswith("/a.json")
        with faultproxy.FaultProxy(self.moto.endpoint, seed=1, rates={"delay": 1.0}, delay_s=2.5,
                                   match=slow) as sp:
            res = self.run_agent(self.env("dur-overlap", art, AWS_ENDPOINT_URL_S3=sp.url,
                                          DAGY_MAX_PARALLEL="1"))
            self.assertEqual(sp.stats["delay"], 1, sp.stats)
        self.assertEqual(res.code, 0, res)
        order = [(ln["event_type"], ln["task_name"]) for ln in res.lines
                 if ln["event_type"] in ("task_start", "task_end")]
        self.assertLess(order.index(("task_end", "b")), order.index(("task_end", "a")), order)
        self.assertLess(order.index(("task_end", "a")), order.index(("task_start", "c")), order)

    def test_large_result_is_streamed_and_reused(self):
        big = os.path.join(self.tmp, "big.json")
        with open(big, "w") as f:
            f.write('["' + "x" * (3 << 20) + '"]')
        art = self.artifact("big", [
            {"name": "big", "command": ["sh", "-c", "cp %s \"$DAGY_TASK_OUTPUT\"" % big]},
            {"name": "use", "command": ["sh", "-c", "wc -c < \"$DAGY_TASK_INPUTS\"; exit 1"],
             "upstream": ["big"]}])
        res = self.run_agent(self.env("dur-big", art))
        self.assertEqual(res.code, 1, res)
        it = self.task_items("dur-big")["big"]
        with open(big, "rb") as f:
            self.assertEqual(self.check_stored_result("dur-big", "big", it), f.read())
        res = self.run_agent(self.env("dur-big2", art, DAGY_RESUME_FROM="dur-big"))
        self.assertEqual(res.events("task_output", "use")[0]["message"],
                         str(len('{"big":') + (3 << 20) + 4 + 1))


class DurableLocalTest(unittest.TestCase):
    def flow(self, tasks):
        spec = {"spec_version": 1, "name": "local_durable", "version": "1", "max_parallel": 2,
                "tasks": tasks}
        f = agentenv.Flow(spec)
        self.addCleanup(f.cleanup)
        return f

    def side(self, f):
        path = os.path.join(f.tmp, "side")
        if not os.path.exists(path):
            return []
        with open(path) as fh:
            out = fh.read().split()
        os.unlink(path)
        return out

    def test_local_resume_in_the_same_state_directory(self):
        f = self.flow(five_tasks("TMP"))
        # five_tasks writes absolute paths: rewrite them to this flow's temp directory
        spec_path = os.path.join(f.dir, "flow_spec.json")
        with open(spec_path) as fh:
            text = fh.read().replace("TMP", f.tmp)
        with open(spec_path, "w") as fh:
            fh.write(text)
        art = f.zip()
        a = f.run("--run-id", "loc-a", flow=art)
        self.assertEqual(a.code, 1, a)
        self.assertEqual(self.side(f), ["t1", "t2", "t3"])
        it = a.task_item("t1")
        path = result_file(f.work, "loc-a", "t1")
        self.assertEqual(it["result_path"], path)
        with open(path, "rb") as fh:
            data = fh.read()
        self.assertEqual((it["result_sha256"], it["result_bytes"]),
                         (hashlib.sha256(data).hexdigest(), len(data)))
        self.assertNotIn("result_s3_uri", it)
        self.assertRegex(it["task_hash"], HEX64)
        open(os.path.join(f.tmp, "fixed"), "w").close()
        b = f.run("--run-id", "loc-b", "--resume-from", "loc-a", flow=art)
        self.assertEqual(b.code, 0, b)
        self.assertEqual(self.side(f), ["t3", "t4", "t5"])
        self.assertEqual(b.output("t3")[0], a.output("t3")[0])
        t2 = b.task_item("t2")
        self.assertEqual((t2["status"], t2["attempt"], t2["reused_from"]),
                         ("SUCCEEDED", 0, "loc-a"))
        self.assertEqual(t2["result_path"], result_file(f.work, "loc-b", "t2"))
        self.assertEqual(glob.glob(os.path.join(f.work, "loc-b", "reuse.*")), [])
        self.assertEqual(b.run_item()["resume_from"], "loc-a")
        # a resume with no --run-id gets a new one; refusals are exit 2 with nothing run
        c = f.run("--resume-from", "loc-b", flow=art)
        self.assertEqual(c.code, 0, c)
        self.assertNotIn(c.run_id, ("loc-a", "loc-b"))
        self.assertEqual(self.side(f), [])
        for args, want in ((["--run-id", "loc-b", "--resume-from", "loc-b"], "cannot resume"),
                           (["--resume-from", "loc-nowhere"], "no such run"),
                           (["--resume-from", "../etc"], "invalid run id")):
            r = f.run(*args, flow=art)
            self.assertEqual(r.code, 2, r)
            self.assertIn(want, r.out + r.err)
        self.assertEqual(self.side(f), [])

    def test_local_callable_results_are_reused(self):
        job = ("import os\n"
               "SIDE = os.path.join(os.environ['SIDE_DIR'], 'side')\n"
               "def make():\n"
               "    open(SIDE, 'a').write('make\\n')\n"
               "    return {'n': 41, 'text': 'caf\\u00e9'}\n"
               "def use(x):\n"
               "    open(SIDE, 'a').write('use\\n')\n"
               "    if not os.path.exists(os.path.join(os.environ['SIDE_DIR'], 'fixed')):\n"
               "        raise RuntimeError('not yet')\n"
               "    return x['n'] + 1\n")
        spec = {"spec_version": 1, "name": "callables", "tasks": [
            {"name": "make", "callable": "flows.job:make"},
            {"name": "use", "callable": "flows.job:use", "kwargs": {"x": {"upstream": "make"}},
             "upstream": ["make"]}]}
        f = agentenv.Flow(spec, files={"flows/__init__.py": "", "flows/job.py": job})
        self.addCleanup(f.cleanup)
        art = f.zip()
        env = {"SIDE_DIR": f.tmp}
        a = f.run("--run-id", "call-a", flow=art, env=env)
        self.assertEqual(a.code, 1, a)
        self.assertEqual(self.side(f), ["make", "use"])
        made = a.task_item("make")
        with open(made["result_path"], "rb") as fh:
            self.assertEqual(json.loads(fh.read()), {"n": 41, "text": "caf\u00e9"})
        open(os.path.join(f.tmp, "fixed"), "w").close()
        b = f.run("--run-id", "call-b", "--resume-from", "call-a", flow=art, env=env)
        self.assertEqual(b.code, 0, b)
        self.assertEqual(self.side(f), ["use"])
        self.assertEqual(b.task_item("make")["reused_from"], "call-a")
        with open(b.task_item("use")["result_path"]) as fh:
            self.assertEqual(json.load(fh), 42)

    def test_local_resume_of_a_task_whose_name_is_encoded(self):
        # ".dot" is a valid name; its files are named %2Edot: the reused result must land where
        # the downstream task's inputs are read from.
        f = self.flow([
            {"name": ".dot", "command": ["sh", "-c", "echo .dot >> %s/side; echo '[7]' > "
                                         "\"$DAGY_TASK_OUTPUT\"" % "TMP"]},
            {"name": "next", "command": ["sh", "-c", "cat \"$DAGY_TASK_INPUTS\"; test -e "
                                         "TMP/fixed"], "upstream": [".dot"]}])
        spec_path = os.path.join(f.dir, "flow_spec.json")
        with open(spec_path) as fh:
            text = fh.read().replace("TMP", f.tmp)
        with open(spec_path, "w") as fh:
            fh.write(text)
        art = f.zip()
        a = f.run("--run-id", ".enc-a", flow=art)  # a run id whose state file is %2Eenc-a.json
        self.assertEqual(a.code, 1, a)
        open(os.path.join(f.tmp, "fixed"), "w").close()
        b = f.run("--run-id", "enc-b", "--resume-from", ".enc-a", flow=art)
        self.assertEqual(b.code, 0, b)
        self.assertEqual(self.side(f), [".dot"])  # from the first run only
        self.assertEqual(b.output("next")[0], '{".dot":[7]}')

    def test_local_cancel_requested_in_the_state_file(self):
        f = self.flow([{"name": "long", "command": ["sleep", "60"]}])
        p = f.start("--run-id", "loc-cancel", env={"DAGY_DRAIN_SECONDS": "0",
                                                    "DAGY_KILL_GRACE_SECONDS": "1"})
        self.addCleanup(agentenv.stop, p)
        task = os.path.join(f.state, "runs", "loc-cancel", "tasks", "long.json")
        self.assertTrue(agentenv.wait_for(lambda: os.path.exists(task), 20))
        path = os.path.join(f.state, "runs", "loc-cancel.json")
        item = agentenv.read_json(path)
        item["cancel_requested_at"] = "2026-12-01T09:00:00.000Z"
        item["cancel_reason"] = "not today"
        with open(path + ".new", "w") as fh:
            json.dump(item, fh)
        os.rename(path + ".new", path)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 143)
        run = agentenv.read_json(path)
        self.assertEqual((run["status"], run["stop_reason"]),
                         ("CANCELLED", "UserInitiated: not today"))
        end = [json.loads(ln) for ln in out.decode().splitlines()][-1]
        self.assertEqual((end["event_type"], end["status"]), ("run_end", "CANCELLED"))

    def test_local_sigterm_without_cancel_stays_failed(self):
        f = self.flow([{"name": "long", "command": ["sleep", "60"]}])
        p = f.start("--run-id", "loc-term", env={"DAGY_DRAIN_SECONDS": "0",
                                                  "DAGY_KILL_GRACE_SECONDS": "1"})
        self.addCleanup(agentenv.stop, p)
        task = os.path.join(f.state, "runs", "loc-term", "tasks", "long.json")
        self.assertTrue(agentenv.wait_for(lambda: os.path.exists(task), 20))
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
        self.assertEqual(p.returncode, 143)
        run = agentenv.read_json(os.path.join(f.state, "runs", "loc-term.json"))
        self.assertEqual((run["status"], run["stop_reason"], run["error_message"]),
                         ("FAILED", "SIGTERM", "Worker shutdown requested via SIGTERM"))


if __name__ == "__main__":
    unittest.main()
