"""Fault suite: the DynamoDB status store unreachable (issue 9 defect 6), through
tests/integration/faultproxy.py in front of moto and dynalite:

- blackholed (requests never answered), dropped (connection reset) or refused (nothing listens)
  from the start: the first write (run item RUNNING) fails after bounded retries, no task starts,
  exit 3, and the last log line is run_end with exit_code 3 - within a bounded time;
- the store goes away in the middle of the run: `status_store_degraded` is logged within seconds,
  the final flush is bounded, the agent exits 3 and run_end says 3 (never 0 or 143 while the
  status was lost)."""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import faultenv  # noqa: E402
import faultproxy  # noqa: E402

FIRST_WRITE_BUDGET_S = 40  # bounded retries of the first write, then exit 3
DEGRADED_WITHIN_S = 10     # "reported within seconds"
FLUSH_BUDGET_S = 30        # the whole shutdown fits ECS's stopTimeout


class _StoreFaultBase(faultenv.StoreClass):
    def setUp(self):
        faultenv.scratch(self)
        self.flow = os.path.join(self.tmp, "flow")
        os.makedirs(self.flow)
        self.started = os.path.join(self.tmp, "started")
        with open(os.path.join(self.flow, "flow_spec.json"), "w") as f:
            json.dump(faultenv.spec([
                faultenv.sh("first", "touch %s; sleep 2" % self.started),
                faultenv.sh("second", "sleep 3", upstream=["first"]),
                faultenv.sh("third", "true", upstream=["second"]),
            ], mark=self.mark), f)

    def start(self, run_id, endpoint):
        env = faultenv.ddb_env(self.store, faultenv.agent_env(os.path.join(self.tmp, "work")),
                               endpoint=endpoint)
        a = faultenv.Agent(["--flow", self.flow, "--state-dir", os.path.join(self.tmp, "state"),
                            "--log-format", "json", "--run-id", run_id], env)
        self.addCleanup(a.cleanup)
        return a

    def check_unreachable_from_start(self, endpoint, what):
        run_id = "store-%s-%s" % (what, faultenv.new_mark()[-6:])
        a = self.start(run_id, endpoint)
        t = time.monotonic()
        try:
            code = a.wait(FIRST_WRITE_BUDGET_S + 30)
        except Exception:
            self.fail("the agent did not give up on a %s store in %d s\n%s" % (
                what, FIRST_WRITE_BUDGET_S + 30, a.report()))
        took = time.monotonic() - t
        report = a.report()
        lines = a.lines()
        self.assertEqual([l for l in lines if l["event_type"] == "task_start"], [],
                         "tasks ran while the status store was %s\n%s" % (what, report))
        self.assertFalse(os.path.exists(self.started), report)
        self.assertEqual(code, 3, report)
        faultenv.check_log_agrees_with_exit(self, lines, code, report)
        self.assertLess(took, FIRST_WRITE_BUDGET_S, "gave up after %.1f s\n%s" % (took, report))
        faultenv.assert_no_process_left(self, self.mark, report=report)

    def test_blackholed_store_from_start_is_exit_3_before_any_task(self):
        with faultproxy.FaultProxy(self.store.endpoint, rates={"blackhole": 1.0}) as p:
            self.check_unreachable_from_start(p.url, "blackholed")

    def test_dropping_store_from_start_is_exit_3_before_any_task(self):
        with faultproxy.FaultProxy(self.store.endpoint, rates={"reset": 1.0}) as p:
            self.check_unreachable_from_start(p.url, "dropping")

    def test_refusing_store_from_start_is_exit_3_before_any_task(self):
        self.check_unreachable_from_start("http://127.0.0.1:%d" % awsenv.free_port(), "refusing")

    def test_store_lost_mid_run_is_reported_within_seconds_and_exit_3(self):
        for fault in ("blackhole", "reset"):
            with self.subTest(fault=fault), faultproxy.FaultProxy(self.store.endpoint) as p:
                self.setUp_started_reset()
                run_id = "midrun-%s-%s" % (fault, faultenv.new_mark()[-6:])
                a = self.start(run_id, p.url)
                self.assertTrue(faultenv.agentenv.wait_for(
                    lambda: os.path.exists(self.started), 20), a.report())
                p.set_rates({fault: 1.0})
                t = time.monotonic()
                deg = a.wait_event("status_store_degraded", DEGRADED_WITHIN_S + 20)
                self.assertIsNotNone(deg, "no status_store_degraded line\n" + a.report())
                self.assertLess(time.monotonic() - t, DEGRADED_WITHIN_S, a.report())
                try:
                    code = a.wait(60)
                except Exception:
                    self.fail("the final flush is not bounded\n" + a.report())
                report = a.report()
                self.assertLess(time.monotonic() - t, 5 + 3 + FLUSH_BUDGET_S, report)
                self.assertEqual(code, 3, report)
                faultenv.check_log_agrees_with_exit(self, a.lines(), code, report)
                faultenv.assert_no_process_left(self, self.mark, report=report)

    def setUp_started_reset(self):
        if os.path.exists(self.started):
            os.unlink(self.started)


for _kind in faultenv.store_backends():
    _name = "StoreFault_" + _kind
    globals()[_name] = type(_name, (_StoreFaultBase, unittest.TestCase), {"store_kind": _kind})


if __name__ == "__main__":
    unittest.main()
