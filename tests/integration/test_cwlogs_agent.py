"""dagy-agent with DAGY_LOG_GROUP against moto (signatures on): the run's CloudWatch Logs stream
(named after the run id) holds every line the agent printed, in order, run_end last; a 40 KiB
task line arrives whole; batches stay within 10,000 events and 1 MiB and validate against
botocore's PutLogEvents model (JSON 1.1, x-amzn-logs-format: json/emf); CloudWatch failing for a
while loses nothing; SIGTERM mid-run ships everything up to run_end; a full queue and a missing
group send the lines to stdout instead and say so; stdout keeps only lifecycle lines by
default."""

import json
import os
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
import recproxy  # noqa: E402

GROUP = "/ecs/dagy-worker"


def spec(*tasks):
    return {"spec_version": 1, "name": "cwl", "version": "1.0.0", "tasks": list(tasks)}


def sh(name, script, **kw):
    return dict({"name": name, "command": ["sh", "-c", script]}, **kw)


def is_put(method, path, headers):
    return headers.get("X-Amz-Target", "").endswith("PutLogEvents")


class CloudWatchLogsAgentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.moto = awsenv.Moto().start()
        cls.logs = cls.moto.client("logs")
        cls.logs.create_log_group(logGroupName=GROUP)

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def flow(self, *tasks):
        f = agentenv.Flow(spec(*tasks))
        self.addCleanup(f.cleanup)
        return f

    def proxy(self, **kw):
        p = faultproxy.FaultProxy(self.moto.endpoint, **kw)
        p.start()
        self.addCleanup(p.stop)
        return p

    def env(self, endpoint=None, **extra):
        env = self.moto.env(DAGY_LOG_GROUP=GROUP)
        if endpoint:
            env["AWS_ENDPOINT_URL_LOGS"] = endpoint
        env.update(extra)
        return env

    def stream(self, run_id, group=GROUP):
        """Every message of the run's stream, in order (all pages)."""
        out, token = [], None
        for _ in range(10000):
            kw = {"logGroupName": group, "logStreamName": run_id, "startFromHead": True}
            if token:
                kw["nextToken"] = token
            page = self.logs.get_log_events(**kw)
            out += [e["message"] for e in page["events"]]
            if page["nextForwardToken"] == token:
                return out
            token = page["nextForwardToken"]
        raise AssertionError("GetLogEvents never caught up")

    def check_bodies(self, proxy):
        """Every PutLogEvents request: botocore-valid, JSON 1.1, EMF header, within limits."""
        ops = [b[2].get("x-amz-target", "").rsplit(".", 1)[-1] for b in proxy.bodies]
        self.assertEqual(ops[0], "CreateLogStream")
        for op, b in zip(ops, proxy.bodies):  # every call fits botocore's model of its input
            self.assertEqual(b[2]["x-amz-target"], "Logs_20140328." + op)
            recproxy.validate_request("logs", op, json.loads(b[3]))
        puts = [b for op, b in zip(ops, proxy.bodies) if op == "PutLogEvents"]
        self.assertTrue(puts)
        for _, _, headers, body in puts:
            self.assertEqual(headers["content-type"], "application/x-amz-json-1.1")
            self.assertEqual(headers["x-amzn-logs-format"], "json/emf")
            params = json.loads(body)
            recproxy.validate_request("logs", "PutLogEvents", params)
            ev = params["logEvents"]
            self.assertLessEqual(len(ev), 10000)
            size = sum(len(e["message"].encode()) + 26 for e in ev)
            self.assertLessEqual(size, 1048576)
            ts = [e["timestamp"] for e in ev]
            self.assertEqual(ts, sorted(ts))
            self.assertLess(ts[-1] - ts[0], 24 * 3600 * 1000)
        return puts

    def lines_of(self, out):
        return [l for l in out.decode().splitlines()]

    def test_stream_holds_every_line_in_order_with_a_40_kib_line_whole(self):
        f = self.flow(sh("a", "echo one; echo two >&2"),
                      sh("big", "head -c 40960 /dev/zero | tr '\\0' x; echo", upstream=["a"]))
        p = self.proxy(record_bodies=True)
        r = f.run("--run-id", "cwl-order", env=self.env(p.url, DAGY_LOG_STDOUT="all"))
        self.assertEqual(r.code, 0, r)
        printed = r.out.splitlines()
        shipped = self.stream("cwl-order")
        # metrics lines are the one exception to "all": ingested once (the stream), never twice
        self.assertEqual([m for m in shipped if json.loads(m)["event_type"] != "metrics"], printed)
        self.assertEqual(json.loads(printed[-1])["event_type"], "run_end")
        big = [l for l in r.lines if l["event_type"] == "task_output" and l["task_name"] == "big"]
        self.assertEqual(len(big), 1)  # whole, not in 16 KiB pieces
        self.assertEqual(big[0]["line"], "x" * 40960)
        self.check_bodies(p)

    def test_metrics_lines_are_ingested_once_even_with_stdout_all(self):
        f = self.flow(sh("a", "echo one"))
        r = f.run("--run-id", "cwl-emf-once", env=self.env(DAGY_LOG_STDOUT="all"))
        self.assertEqual(r.code, 0, r)
        shipped = [json.loads(m) for m in self.stream("cwl-emf-once")]
        self.assertIn("metrics", [l["event_type"] for l in shipped])
        self.assertIn("task_output", [l["event_type"] for l in r.lines])
        self.assertNotIn("metrics", [l["event_type"] for l in r.lines])

    def test_stdout_keeps_only_lifecycle_lines_by_default(self):
        f = self.flow(sh("a", "echo hello"), sh("b", "echo oops >&2; exit 1", upstream=["a"]))
        r = f.run("--run-id", "cwl-lifecycle", env=self.env())
        self.assertEqual(r.code, 1, r)
        kinds = [l["event_type"] for l in r.lines]
        self.assertEqual(kinds[0], "run_start")
        self.assertEqual(kinds[-1], "run_end")
        self.assertNotIn("task_output", kinds)
        self.assertNotIn("task_start", kinds)
        self.assertTrue(all(l["level"] in ("WARNING", "ERROR") or l["event_type"] in
                            ("run_start", "run_end") for l in r.lines), kinds)
        shipped = [json.loads(m) for m in self.stream("cwl-lifecycle")]
        self.assertIn("hello", [l["message"] for l in shipped if l["event_type"] == "task_output"])
        self.assertEqual(shipped[-1]["event_type"], "run_end")
        # Every stdout line was shipped too, in the same order.
        self.assertEqual([l for l in shipped if l in r.lines], r.lines)

    def test_batches_stay_within_10000_events_and_1_mib(self):
        # 25,000 lines (~7 MiB of JSON) printed at once while each PutLogEvents takes 0.5 s:
        # the queue holds several batches' worth, so batches fill up to the 1 MiB limit.
        pad = "p" * 100
        f = self.flow(sh("many", "seq 1 25000 | sed 's/$/ %s/'" % pad))
        p = self.proxy(record_bodies=True, match=is_put, rates={"delay": 1.0}, delay_s=0.5)
        r = f.run("--run-id", "cwl-batches", env=self.env(p.url, DAGY_LOG_STDOUT="all",
                                                           DAGY_METRICS="0"),
                  timeout=120)
        self.assertEqual(r.code, 0, r)
        self.assertEqual(self.stream("cwl-batches"), r.out.splitlines())
        puts = self.check_bodies(p)
        sizes = [sum(len(e["message"].encode()) + 26 for e in json.loads(b[3])["logEvents"])
                 for b in puts]
        self.assertGreaterEqual(len(puts), 7)
        self.assertGreater(max(sizes), 1048576 - 1000, sizes)

    def test_cloudwatch_failing_for_a_while_loses_nothing(self):
        p = self.proxy(seed=5, match=is_put, rates={"503": 1.0})
        f = self.flow(sh("slow", "i=0; while [ $i -lt 40 ]; do echo tick $i; i=$((i+1)); "
                                 "sleep 0.1; done"))
        proc = f.start("--run-id", "cwl-outage", env=self.env(p.url, DAGY_LOG_STDOUT="all",
                                                           DAGY_METRICS="0"))
        self.addCleanup(agentenv.stop, proc)
        time.sleep(2.5)  # every PutLogEvents fails meanwhile (retries, then backoff)
        p.rates.clear()
        p.rates.update({"500": 0.15, "throttle": 0.15, "reset": 0.1})
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        self.assertGreater(p.stats["503"], 0)
        printed = out.decode().splitlines()
        self.assertEqual(self.stream("cwl-outage"), printed)
        kinds = [json.loads(l)["event_type"] for l in printed]
        self.assertIn("log_shipping_degraded", kinds)
        self.assertEqual(kinds[-1], "run_end")

    def test_sequence_token_answers_are_handled(self):
        # The first PutLogEvents "was already accepted" (moto took it; the answer says so), the
        # second "needs" a sequence token: the agent counts the first as shipped (no duplicate)
        # and sends the second again with the expected token.
        seen = []

        def rewrite(op, req, resp):
            if op != "PutLogEvents":
                return None
            seen.append(req)
            if len(seen) == 1:
                return 400, {"__type": "DataAlreadyAcceptedException", "message": "accepted",
                             "expectedSequenceToken": "tok-1"}
            if len(seen) == 2:
                return 400, {"__type": "InvalidSequenceTokenException", "message": "token",
                             "expectedSequenceToken": "tok-2"}
            return None

        f = self.flow(sh("a", "echo one; sleep 1; echo two; sleep 1; echo three"))
        with recproxy.RecProxy(self.moto.endpoint) as rp:
            rp.rewrite = rewrite
            r = f.run("--run-id", "cwl-seq", env=self.env(rp.endpoint, DAGY_LOG_STDOUT="all",
                                                           DAGY_METRICS="0"))
        self.assertEqual(r.code, 0, r)
        self.assertGreaterEqual(len(seen), 3)
        self.assertEqual(seen[2].get("sequenceToken"), "tok-2")
        self.assertEqual(seen[2]["logEvents"], seen[1]["logEvents"])
        got = self.stream("cwl-seq")
        n2 = len(seen[1]["logEvents"])  # the refused batch was applied by moto, then resent
        want = r.out.splitlines()
        first = len(seen[0]["logEvents"])
        self.assertEqual(got[:first + n2], want[:first + n2])
        self.assertEqual(got[first + n2:first + 2 * n2], want[first:first + n2])
        self.assertEqual(got[first + 2 * n2:], want[first + n2:])

    def test_sigterm_mid_run_ships_everything_up_to_run_end(self):
        f = self.flow(sh("long", "echo started; i=0; while [ $i -lt 600 ]; do echo t $i; "
                                 "i=$((i+1)); sleep 0.05; done"))
        proc = f.start("--run-id", "cwl-sigterm", "--drain-seconds", "1",
                       env=self.env(DAGY_LOG_STDOUT="all",
                                                           DAGY_METRICS="0"))
        self.addCleanup(agentenv.stop, proc)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 143, err)
        printed = out.decode().splitlines()
        self.assertEqual(json.loads(printed[-1])["event_type"], "run_end")
        self.assertEqual(self.stream("cwl-sigterm"), printed)

    def test_cloudwatch_never_answering_bounds_the_exit_and_loses_nothing(self):
        # Every PutLogEvents hangs: after SIGTERM the agent gives the final flush 10 s, then
        # writes the unshipped lines to stdout, says so, and run_end comes last.
        # The first batch hangs in flight while the 256 KiB queue overflows: stdout must still
        # get every line in order (the batch in flight first).
        p = self.proxy(match=is_put, rates={"blackhole": 1.0})
        f = self.flow(sh("a", "echo 1; sleep 1; seq 2 3000 | sed 's/$/ %s/'; sleep 30"
                         % ("z" * 200)))
        out_file = tempfile.TemporaryFile()  # read only at the end: a pipe would fill up
        self.addCleanup(out_file.close)
        proc = subprocess.Popen(
            [agentenv.AGENT, "--flow", f.dir, "--state-dir", f.state, "--log-format", "json",
             "--run-id", "cwl-hang", "--drain-seconds", "0"],
            env=f.env(self.env(p.url, DAGY_LOG_BUFFER_BYTES="262144")), stdout=out_file,
            stderr=subprocess.PIPE)
        self.addCleanup(agentenv.stop, proc)
        time.sleep(3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
        self.assertEqual(proc.returncode, 143, err)
        out_file.seek(0)
        out = out_file.read()
        self.assertLess(took, 25)
        lines = [json.loads(l) for l in out.decode().splitlines()]
        self.assertEqual(lines[-1]["event_type"], "run_end")
        self.assertEqual(lines[-2]["event_type"], "log_shipping_incomplete")
        self.assertGreater(lines[-2]["lines_unshipped_at_exit"], 0)
        self.assertGreater(lines[-2]["lines_over_queue_cap"], 0)
        outs = [l["message"].split()[0] for l in lines if l["event_type"] == "task_output"]
        self.assertEqual(outs, [str(i) for i in range(1, 3001)])

    def test_a_full_queue_sends_lines_to_stdout_and_says_so(self):
        # CloudWatch refuses every batch while the task prints ~1.5 MiB: the 256 KiB queue
        # fills, later lines go to stdout; the shipper reports before run_end.
        p = self.proxy(match=is_put, rates={"503": 1.0})
        f = self.flow(sh("noisy", "seq 0 5999 | sed 's/^/n /; s/$/ %s/'" % ("q" * 200)))
        r = f.run("--run-id", "cwl-full", timeout=120,
                  env=self.env(p.url, DAGY_LOG_BUFFER_BYTES="262144"))
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.lines[-1]["event_type"], "run_end")
        rep = r.lines[-2]
        self.assertEqual(rep["event_type"], "log_shipping_incomplete")
        self.assertGreater(rep["lines_over_queue_cap"], 0)
        self.assertGreater(rep["lines_unshipped_at_exit"], 0)
        # Every task line reached stdout, in order (nothing shipped: CloudWatch refused all
        # along; the oldest queued lines make room).
        outs = [l["message"] for l in r.lines if l["event_type"] == "task_output"]
        self.assertEqual([int(o.split()[1]) for o in outs], list(range(6000)))

    def test_a_missing_log_group_sends_every_line_to_stdout(self):
        f = self.flow(sh("a", "echo still here"))
        r = f.run("--run-id", "cwl-nogroup", env=self.env(DAGY_LOG_GROUP="/dagy/absent"))
        self.assertEqual(r.code, 0, r)
        kinds = [l["event_type"] for l in r.lines]
        self.assertIn("log_shipping_failed", kinds)
        self.assertIn("still here", [l["message"] for l in r.lines])
        self.assertEqual(kinds[-1], "run_end")
        failed = r.events("log_shipping_failed")[0]
        self.assertIn("/dagy/absent", failed["error"])

    def test_a_line_over_an_event_is_truncated_with_a_marker(self):
        # 100 KiB of \x01: its JSON escapes (\u0001) make 600 KiB, over an event's 256 KiB.
        f = self.flow(sh("ctl", "head -c 102400 /dev/zero | tr '\\0' '\\001'; echo; "
                                "head -c 300000 /dev/zero | tr '\\0' y; echo"))
        r = f.run("--run-id", "cwl-huge", env=self.env(DAGY_LOG_STDOUT="all"))
        self.assertEqual(r.code, 0, r)
        shipped = [json.loads(m) for m in self.stream("cwl-huge")]
        for m in self.stream("cwl-huge"):
            self.assertLessEqual(len(m.encode()), 262144 - 26)
        cut = [l for l in shipped if l.get("log_truncated")]
        self.assertEqual(len(cut), 1)
        self.assertGreater(cut[0]["log_original_bytes"], 262144)
        self.assertTrue(cut[0]["line"].endswith("[truncated]"))
        # The 300,000-byte line comes in 192 KiB pieces, each whole in one event.
        ys = [l["line"] for l in shipped if l.get("line", "").startswith("yyy")]
        self.assertEqual("".join(ys), "y" * 300000)
        self.assertEqual(len(ys), 2)
        self.assertEqual(r.lines[-2]["event_type"], "log_shipping_incomplete")
        self.assertEqual(r.lines[-2]["lines_truncated"], 1)
        self.assertEqual(r.lines[-2]["lines_not_shipped"], 0)

    def test_bad_log_variables_are_configuration_errors(self):
        f = self.flow(sh("a", "true"))
        for var, val in (("DAGY_LOG_GROUP", "bad group!"), ("DAGY_LOG_STDOUT", "some"),
                         ("DAGY_LOG_BUFFER_BYTES", "12")):
            r = f.run(env=self.env(**{var: val}))
            self.assertEqual(r.code, 2, r)
            self.assertIn(var, r.lines[-1]["error"])


if __name__ == "__main__":
    unittest.main()
