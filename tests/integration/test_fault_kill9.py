"""Fault suite: `kill -9` of the agent, then a restart with the same run id (issue 9 defects 2
and 5, issue 8 defect 9).

- The tasks of a SIGKILLed agent die with it (outside a PID namespace the agent cannot outlive
  itself, but its tasks must not outlive it either).
- A restart with the same run id either is refused (exit 2, naming the run id) or is recorded
  as what it is: its own log and the stored items agree, and nothing a dead run's process writes
  later lands in the new run's results.
- With DynamoDB status (moto, dynalite) a restart never reports success while the store keeps
  the dead run's RUNNING: if it exits 0 the run item is SUCCEEDED, with a status_seq above the
  dead run's."""

import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultenv  # noqa: E402

NAMES = ["A", "B"]


def dag(mark):
    # A of the killed run ("dead") writes its result 8 s in, long after the restart's A ("new",
    # 1 s): a surviving orphan would overwrite the restart's result.
    return faultenv.spec([
        faultenv.sh("A", "echo started; if [ '{{ parameters.gen }}' = dead ]; then sleep 8; "
                         "else sleep 1; fi; "
                         "printf '{\"gen\": \"%s\"}' '{{ parameters.gen }}' > \"$DAGY_TASK_OUTPUT\""),
        faultenv.sh("B", "cat \"$DAGY_TASK_INPUTS\"", upstream=["A"]),
    ], mark=mark)


class _Kill9Base:
    def setUp(self):
        faultenv.scratch(self)
        self.flow = os.path.join(self.tmp, "flow")
        os.makedirs(self.flow)
        with open(os.path.join(self.flow, "flow_spec.json"), "w") as f:
            json.dump(dag(self.mark), f)

    def env(self):
        return faultenv.agent_env(self.work)

    def start(self, run_id, gen):
        a = faultenv.Agent(["--flow", self.flow, "--state-dir", self.state, "--log-format",
                            "json", "--run-id", run_id, "--param", "gen=%s" % gen], self.env())
        self.addCleanup(a.cleanup)
        return a

    def kill9_mid_task(self, run_id):
        a = self.start(run_id, "dead")
        self.assertIsNotNone(a.wait_event("task_output", 30,
                                          lambda l: l.get("message") == "started"), a.report())
        a.signal(signal.SIGKILL)
        a.wait(10)
        return a

    def test_tasks_die_with_a_killed_agent(self):
        a = self.kill9_mid_task("k9-die")
        faultenv.assert_no_process_left(self, self.mark, timeout=1.5,
                                        report="after kill -9 of the agent\n" + a.report())

    def check_restart(self, run_id, items):
        t0 = time.monotonic()
        b = self.start(run_id, "new")
        code = b.wait(60)
        report = b.report()
        time.sleep(max(0.0, 9.0 - (time.monotonic() - t0)))  # a dead run's orphan wrote by now
        lines = b.lines()
        if code == 2:
            self.assertIn(run_id, report, "a refusal must name the run id")
            return b, code
        self.assertIn(code, (0, 1), report)
        faultenv.check_log_agrees_with_exit(self, lines, code, report)
        run, tasks = items()
        faultenv.check_items(self, run, tasks, lines, code, NAMES, report)
        result = os.path.join(self.work, run_id, "results", "A.json")
        if code == 0 and os.path.exists(result):
            with open(result) as f:
                self.assertEqual(json.load(f), {"gen": "new"},
                                 "a task of the killed run overwrote the restart's result")
        faultenv.assert_no_process_left(self, self.mark, report=report)
        return b, code

    def test_restart_with_the_same_run_id_after_kill9(self):
        self.kill9_mid_task("k9-restart")
        self.check_restart("k9-restart",
                           lambda: faultenv.local_items(self.state, "k9-restart", NAMES))


class Kill9LocalTest(_Kill9Base, unittest.TestCase):
    pass


class _Kill9DdbBase(_Kill9Base, faultenv.StoreClass):
    def env(self):
        return faultenv.ddb_env(self.store, faultenv.agent_env(self.work))

    def test_restart_with_the_same_run_id_after_kill9(self):
        run_id = "k9-ddb-" + faultenv.new_mark()[-6:]
        faultenv.queue_run(self.ddb, run_id)
        self.kill9_mid_task(run_id)
        dead = faultenv.ddb_item(self.ddb, run_id)
        self.assertEqual(dead["status"], "RUNNING", dead)
        b, code = self.check_restart(run_id, lambda: faultenv.ddb_items(self.ddb, run_id, NAMES))
        run = faultenv.ddb_item(self.ddb, run_id)
        if code == 0:
            self.assertEqual(run["status"], "SUCCEEDED",
                             "exit 0 while DynamoDB keeps %s\n%s" % (run["status"], b.report()))
            self.assertGreater(run["status_seq"], dead["status_seq"])
        elif code == 2:
            self.assertEqual(run["status"], dead["status"])  # a refusal writes nothing


for _kind in faultenv.store_backends():
    _name = "Kill9DynamoDB_" + _kind
    globals()[_name] = type(_name, (_Kill9DdbBase, unittest.TestCase), {"store_kind": _kind})


if __name__ == "__main__":
    unittest.main()
