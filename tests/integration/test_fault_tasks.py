"""Fault suite: hostile tasks (issue 9 defects 1 and 4).

- A FIFO planted at DAGY_TASK_OUTPUT never freezes the agent: the task fails (its result is not a
  regular file), the run ends by itself with exit 1, and a SIGTERM sent to a run whose task is
  still holding the FIFO is honoured (exit 143).
- A task failing with invalid UTF-8 on stderr (`\\377\\376`), or with 1500 `é` (valid, but long
  enough to be cut), ends FAILED within seconds with status in DynamoDB (moto, dynalite): the
  store accepts every write (no status_write_failed, no minute of retries), the items are
  terminal and their error_message is valid UTF-8; the local state files are valid UTF-8 too."""

import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultenv  # noqa: E402

FIFO_TASK = "rm -f \"$DAGY_TASK_OUTPUT\"; mkfifo \"$DAGY_TASK_OUTPUT\"; echo planted"
BAD_STDERR = {
    "invalid_bytes": "printf 'boom \\377\\376\\n' >&2; exit 1",
    "long_e_acute": "i=0; s=''; while [ $i -lt 1500 ]; do s=\"${s}\u00e9\"; i=$((i+1)); done; "
                    "printf '%s\\n' \"$s\" >&2; exit 1",
}


class _TaskFaults:
    def setUp(self):
        faultenv.scratch(self)

    def flow(self, tasks):
        d = os.path.join(self.tmp, "flow-%s" % faultenv.new_mark()[-6:])
        os.makedirs(d)
        with open(os.path.join(d, "flow_spec.json"), "w") as f:
            json.dump(faultenv.spec(tasks, mark=self.mark), f)
        return d

    def start(self, flow, run_id, env=None, args=()):
        e = env or faultenv.agent_env(self.work, {"DAGY_KILL_GRACE_SECONDS": "1"})
        a = faultenv.Agent(["--flow", flow, "--state-dir", self.state, "--log-format", "json",
                            "--run-id", run_id] + list(args), e)
        self.addCleanup(a.cleanup)
        return a


class LocalTaskFaultsTest(_TaskFaults, unittest.TestCase):
    def test_fifo_at_task_output_fails_the_task_without_freezing(self):
        a = self.start(self.flow([faultenv.sh("fifo", FIFO_TASK),
                                  faultenv.sh("after", "true", upstream=["fifo"])]), "fifo-1")
        try:
            code = a.wait(20)
        except Exception:
            self.fail("the agent froze on a FIFO at DAGY_TASK_OUTPUT (killed after 20 s)\n" +
                      a.report())
        report = a.report()
        self.assertEqual(code, 1, report)
        lines = a.lines()
        faultenv.check_log_agrees_with_exit(self, lines, code, report)
        run, tasks = faultenv.local_items(self.state, "fifo-1", ["fifo", "after"])
        faultenv.check_items(self, run, tasks, lines, code, ["fifo", "after"], report)
        self.assertEqual(tasks["fifo"]["status"], "FAILED", report)
        faultenv.assert_no_process_left(self, self.mark, report=report)

    def test_sigterm_is_honoured_while_a_task_output_is_a_fifo(self):
        a = self.start(self.flow([faultenv.sh("fifo", FIFO_TASK),
                                  faultenv.sh("slow", "sleep 30")]), "fifo-2",
                       args=["--drain-seconds", "1"])
        self.assertIsNotNone(a.wait_event("task_output", 20,
                                          lambda l: l.get("message") == "planted"), a.report())
        time.sleep(0.5)
        a.signal(signal.SIGTERM)
        try:
            code = a.wait(20)
        except Exception:
            self.fail("SIGTERM ignored while a FIFO sits at DAGY_TASK_OUTPUT\n" + a.report())
        report = a.report()
        self.assertEqual(code, 143, report)
        lines = a.lines()
        faultenv.check_log_agrees_with_exit(self, lines, code, report)
        run, tasks = faultenv.local_items(self.state, "fifo-2", ["fifo", "slow"])
        faultenv.check_items(self, run, tasks, lines, code, ["fifo", "slow"], report)


    def test_bad_stderr_local_state_files_are_valid_utf8(self):
        a = self.start(self.flow([faultenv.sh("bad", BAD_STDERR["invalid_bytes"])]), "utf8-local")
        self.assertEqual(a.wait(60), 1, a.report())
        for root, _, files in os.walk(self.state):
            for n in files:
                with open(os.path.join(root, n), "rb") as f:
                    faultenv.valid_utf8(self, f.read(), os.path.join(root, n))


class _InvalidUtf8Base(_TaskFaults, faultenv.StoreClass):
    def test_bad_stderr_reaches_the_store_as_valid_utf8(self):
        for label, script in BAD_STDERR.items():
            with self.subTest(stderr=label):
                run_id = "utf8-%s-%s" % (label, faultenv.new_mark()[-6:])
                faultenv.queue_run(self.ddb, run_id)
                env = faultenv.ddb_env(self.store, faultenv.agent_env(self.work))
                a = self.start(self.flow([faultenv.sh("bad", script)]), run_id, env=env)
                t = time.monotonic()
                code = a.wait(120)
                took = time.monotonic() - t
                report = a.report()
                self.assertEqual(code, 1, report)
                self.assertLess(took, 15, "%.1f s: the store kept refusing\n%s" % (took, report))
                lines = a.lines()
                self.assertEqual([l for l in lines if l["event_type"] == "status_write_failed"],
                                 [], report)
                faultenv.check_log_agrees_with_exit(self, lines, code, report)
                run, tasks = faultenv.ddb_items(self.ddb, run_id, ["bad"])
                faultenv.check_items(self, run, tasks, lines, code, ["bad"], report)
                for item in (run, tasks["bad"]):
                    faultenv.valid_utf8(self, item.get("error_message", "").encode(
                        "utf-8", "surrogateescape"), "error_message")

for _kind in faultenv.store_backends():
    _name = "InvalidUtf8DynamoDB_" + _kind
    globals()[_name] = type(_name, (_InvalidUtf8Base, unittest.TestCase), {"store_kind": _kind})


if __name__ == "__main__":
    unittest.main()
