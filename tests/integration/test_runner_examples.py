"""The example flows of examples/ run end to end through dagy-agent (local status): from their
directories and from the archives the build packs (build/examples/NAME.zip, NAME.tar.gz), with the
outcomes examples/README.md promises (retry, skip, all_done cleanup, timeout, data passing)."""

import glob
import json
import os
import subprocess
import tempfile
import unittest
import zipfile

SRC = os.environ.get("DAGY_TEST_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..")
)
BUILD = os.environ.get("DAGY_TEST_BUILD") or os.path.join(SRC, "build")
AGENT = os.environ.get("DAGY_AGENT") or os.path.join(BUILD, "dagy-agent")
EXAMPLES = os.path.join(SRC, "examples")


class ExampleRun(unittest.TestCase):
    def setUp(self):
        t = tempfile.TemporaryDirectory(prefix="dagy-examples-test-")
        self.addCleanup(t.cleanup)
        self.tmp = t.name
        self.state = os.path.join(self.tmp, "state")

    def agent(self, flow, run_id, *args, timeout=120):
        """Runs the agent on `flow`; returns (exit code, parsed JSON log lines, raw output)."""
        env = dict(os.environ, DAGY_STATUS_BACKEND="local", DAGY_WORK_DIR=self.tmp + "/work")
        p = subprocess.run([AGENT, "--flow", flow, "--run-id", run_id, "--state-dir", self.state,
                            "--log-format", "json"] + list(args), cwd=self.tmp, env=env,
                           capture_output=True, text=True, timeout=timeout)
        events = []
        for line in p.stdout.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return p.returncode, events, (p.stdout + p.stderr)[-4000:]

    def task(self, run_id, name):
        with open(os.path.join(self.state, "runs", run_id, "tasks", name + ".json")) as f:
            return json.load(f)

    def output(self, events, task):
        return [e["message"] for e in events
                if e.get("event_type") == "task_output" and e.get("task_name") == task]


class EtlShellTest(ExampleRun):
    FLOW = os.path.join(EXAMPLES, "etl_shell")

    def test_default_run_succeeds_with_retry_and_skip(self):
        rc, ev, out = self.agent(self.FLOW, "etl-ok", "--param", "date=2024-06-01")
        self.assertEqual(rc, 0, out)
        v = self.task("etl-ok", "validate")
        self.assertEqual((v["status"], v["attempt"]), ("SUCCEEDED", 2))
        self.assertEqual(self.task("etl-ok", "alert_on_failure")["status"], "SKIPPED")
        self.assertEqual(self.task("etl-ok", "cleanup")["status"], "SUCCEEDED")
        self.assertTrue(any(e.get("event_type") == "task_retry" for e in ev), out)
        report = " ".join(self.output(ev, "publish"))
        self.assertIn("report for 2024-06-01", report)
        self.assertRegex(report, r"\"daily_total\": ?{\"total\": ?546}")
        self.assertFalse(os.path.exists("/tmp/dagy-etl-etl-ok"), "cleanup left the scratch dir")
        # metadata.json is carried into run_start.
        start = [e for e in ev if e.get("event_type") == "run_start"]
        self.assertEqual(start[0].get("metadata", {}).get("owner"), "data-platform", start)

    def test_fail_param_fails_run_and_runs_cleanup_and_alert(self):
        rc, ev, out = self.agent(self.FLOW, "etl-fail", "--param", "date=2024-06-01",
                                 "--param", "fail=1")
        self.assertEqual(rc, 1, out)
        self.assertEqual(self.task("etl-fail", "publish")["status"], "FAILED")
        with open(os.path.join(self.state, "runs", "etl-fail.json")) as f:
            run = json.load(f)
        self.assertEqual(run["status"], "FAILED")
        self.assertIn("publish", run["error_message"])
        self.assertIn("failing on purpose", run["error_message"])
        self.assertEqual(self.task("etl-fail", "alert_on_failure")["status"], "SUCCEEDED")
        self.assertEqual(self.task("etl-fail", "cleanup")["status"], "SUCCEEDED")
        self.assertFalse(os.path.exists("/tmp/dagy-etl-etl-fail"))

    def test_fail_timeout_param_reports_timeout(self):
        rc, ev, out = self.agent(self.FLOW, "etl-timeout", "--param", "date=2024-06-01",
                                 "--param", "fail=timeout")
        self.assertEqual(rc, 1, out)
        publish = self.task("etl-timeout", "publish")
        self.assertEqual(publish["status"], "FAILED")
        self.assertIn("exceeded timeout of 5 s", publish["error_message"])
        self.assertEqual(self.task("etl-timeout", "cleanup")["status"], "SUCCEEDED")

    def test_missing_date_parameter_is_rejected_before_running(self):
        rc, ev, out = self.agent(self.FLOW, "etl-nodate")
        self.assertEqual(rc, 2, out)
        self.assertIn("date", out)
        self.assertFalse(any(e.get("event_type") == "task_start" for e in ev))


class PyCallableTest(ExampleRun):
    FLOW = os.path.join(EXAMPLES, "py_callable")

    def check_success(self, flow, run_id):
        rc, ev, out = self.agent(flow, run_id)
        self.assertEqual(rc, 0, out)
        lines = self.output(ev, "report")
        summary = [json.loads(m.split("report: ", 1)[1]) for m in lines if "report: {" in m]
        self.assertEqual(len(summary), 1, lines)
        # extract: values 1, 4, 9, 16, 25; transform: x 1.5 -> total 82.5.
        self.assertEqual((summary[0]["rows"], summary[0]["total"]), (5, 82.5))
        self.assertEqual(summary[0]["run_id"], run_id)
        self.assertFalse(os.path.exists(summary[0]["file"]), "cleanup left the output file")

    def test_from_directory(self):
        self.check_success(self.FLOW, "py-dir")


class ArchivesTest(ExampleRun):
    def archives(self, name):
        found = sorted(glob.glob(os.path.join(BUILD, "examples", name + ".*")))
        self.assertEqual([os.path.basename(p) for p in found], [name + ".tar.gz", name + ".zip"])
        return found

    def test_spec_at_archive_root(self):
        for name in ("etl_shell", "py_callable"):
            with zipfile.ZipFile(os.path.join(BUILD, "examples", name + ".zip")) as z:
                names = z.namelist()
            self.assertIn("flow_spec.json", names)
            self.assertFalse([n for n in names if "__pycache__" in n], names)

    def test_py_callable_archives_run(self):
        for i, path in enumerate(self.archives("py_callable")):
            with self.subTest(archive=os.path.basename(path)):
                PyCallableTest.check_success(self, path, "py-archive-%d" % i)

    def test_etl_shell_archives_run(self):
        for i, path in enumerate(self.archives("etl_shell")):
            with self.subTest(archive=os.path.basename(path)):
                rc, ev, out = self.agent(path, "etl-archive-%d" % i, "--param", "date=2024-01-31")
                self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
