"""`dagy-launch logs RUN_ID [--follow] [--task NAME] [--since D]` against moto (signatures on):
the lines an agent shipped (DAGY_LOG_GROUP, DynamoDB status) come back as JSON lines in order,
filtered by task and time; --follow waits for a running run and stops after its run_end; the
terminal view shows time, level, task and message without control characters; an unknown run,
a run without a stream and bad arguments are clear errors with the contract's exit codes."""

import json
import os
import pty
import select
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402
import awsenv  # noqa: E402
import launchenv  # noqa: E402
import recproxy  # noqa: E402

GROUP = "/ecs/dagy-worker"


def spec(*tasks):
    return {"spec_version": 1, "name": "cwl", "version": "1.0.0", "tasks": list(tasks)}


def sh(name, script, **kw):
    return dict({"name": name, "command": ["sh", "-c", script]}, **kw)


class LaunchLogsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.moto = awsenv.Moto().start()
        cls.moto.create_status_tables()
        cls.moto.client("logs").create_log_group(logGroupName=GROUP)

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def env(self, **extra):
        # DAGY_METRICS=0: with DAGY_LOG_STDOUT=all, stdout is the stream minus the metrics lines
        # (shipped only); these tests compare the two line for line.
        return self.moto.env(DAGY_LOG_GROUP=GROUP, DAGY_STATUS_BACKEND="dynamodb",
                             DAGY_METRICS="0", **extra)

    def agent(self, run_id, *tasks, start=False):
        f = agentenv.Flow(spec(*tasks))
        self.addCleanup(f.cleanup)
        if start:
            p = f.start("--run-id", run_id, env=self.env(DAGY_LOG_STDOUT="all"))
            self.addCleanup(agentenv.stop, p)
            return p
        r = f.run("--run-id", run_id, env=self.env(DAGY_LOG_STDOUT="all"))
        self.assertEqual(r.code, 0, r)
        return r

    def logs(self, *args, env=None, timeout=60):
        return awsenv.run([launchenv.LAUNCH, "logs"] + list(args), env=env or self.env(),
                          timeout=timeout)

    def test_logs_prints_every_line_in_order_as_json(self):
        r = self.agent("lg-json", sh("a", "echo alpha"), sh("b", "echo beta", upstream=["a"]))
        p = self.logs("lg-json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([json.loads(l) for l in p.stdout.splitlines()], r.lines)
        # The group also comes from DAGY_ECS_LOG_GROUP (the awslogs group) when
        # DAGY_LOG_GROUP is unset.
        env = self.moto.env(DAGY_ECS_LOG_GROUP=GROUP)
        p2 = self.logs("lg-json", env=env)
        self.assertEqual(p2.stdout, p.stdout, p2.stderr)

    def test_task_filter_and_since(self):
        r = self.agent("lg-task", sh("a", "echo from-a"), sh("b", "echo from-b; echo x >&2"))
        p = self.logs("lg-task", "--task", "b")
        self.assertEqual(p.returncode, 0, p.stderr)
        got = [json.loads(l) for l in p.stdout.splitlines()]
        self.assertEqual(got, [l for l in r.lines if l.get("task_name") == "b"])
        self.assertIn("from-b", [l["message"] for l in got])
        self.assertEqual(self.logs("lg-task", "--since", "1d").stdout.splitlines(),
                         self.logs("lg-task").stdout.splitlines())
        time.sleep(2.2)
        p = self.logs("lg-task", "--since", "2s")
        self.assertEqual((p.returncode, p.stdout), (0, ""), p.stderr)

    def test_follow_waits_for_the_run_and_stops_after_run_end(self):
        proc = self.agent("lg-follow", sh("slow", "echo one; sleep 2; echo two"), start=True)
        ddb = self.moto.client("dynamodb")
        self.assertTrue(agentenv.wait_for(lambda: "Item" in ddb.get_item(
            TableName="DAGY_RUNS", Key={"run_id": {"S": "lg-follow"}}), timeout=20))
        p = self.logs("lg-follow", "--follow", timeout=90)
        out, _ = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(p.returncode, 0, p.stderr)
        printed = [json.loads(l) for l in out.decode().splitlines()]
        self.assertEqual([json.loads(l) for l in p.stdout.splitlines()], printed)
        self.assertEqual(printed[-1]["event_type"], "run_end")

    def test_terminal_view_shows_time_level_task_message(self):
        self.agent("lg-tty", sh("t", "printf 'hi \\033[2J there\\n'"))
        master, slave = pty.openpty()
        p = subprocess.Popen([launchenv.LAUNCH, "logs", "lg-tty", "--task", "t"], env=self.env(),
                             stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        data = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 1)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
            elif p.poll() is not None:
                break
        p.wait(timeout=10)
        p.stderr.close()
        os.close(master)
        self.assertEqual(p.returncode, 0)
        text = data.decode()
        self.assertNotIn("\x1b", text)
        lines = [l for l in text.splitlines() if " there" in l]
        self.assertEqual(len(lines), 1, text)
        self.assertRegex(lines[0], r"^\d\d:\d\d:\d\d INFO +t +hi \\u001b\[2J there")

    def test_unknown_run_no_stream_and_bad_arguments(self):
        p = self.logs("lg-nosuch")
        self.assertEqual(p.returncode, 1)
        self.assertIn('run "lg-nosuch" not found', p.stderr)
        # A run whose agent did not ship (no DAGY_LOG_GROUP): exists, but no stream.
        f = agentenv.Flow(spec(sh("a", "true")))
        self.addCleanup(f.cleanup)
        r = f.run("--run-id", "lg-nostream", env=self.moto.env(DAGY_STATUS_BACKEND="dynamodb"))
        self.assertEqual(r.code, 0, r)
        p = self.logs("lg-nostream")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no log stream lg-nostream", p.stderr)
        for args in (["--since", "10x", "r"], ["--since", "0m", "r"], ["r", "extra"], [],
                     ["--bogus", "r"], ["bad id!"], ["r", "--task", "../x"]):
            p = self.logs(*args)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertTrue(p.stderr.startswith("dagy-launch logs: "), p.stderr)
        env = self.moto.env()
        p = self.logs("r", env=env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("DAGY_LOG_GROUP", p.stderr)

    def test_get_log_events_requests_validate_against_botocore(self):
        self.agent("lg-valid", sh("a", "seq 1 50"))
        with recproxy.RecProxy(self.moto.endpoint) as rp:
            p = self.logs("lg-valid", env=self.env(AWS_ENDPOINT_URL_LOGS=rp.endpoint))
            self.assertEqual(p.returncode, 0, p.stderr)
            gets = rp.calls("GetLogEvents")
        self.assertGreaterEqual(len(gets), 2)  # the last page repeats the token
        self.assertEqual(gets[-1]["nextToken"], gets[-2].get("nextToken") or gets[-1]["nextToken"])
        for g in gets:
            recproxy.validate_request("logs", "GetLogEvents", g)


if __name__ == "__main__":
    unittest.main()
