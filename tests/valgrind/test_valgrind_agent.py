"""dagy-agent end to end under valgrind memcheck (ctest label valgrind, release build only):
a normal local run (a retried failure, a skipped and an all_done task), a run SIGTERMed mid-DAG
(a task that ignores TERM, drained then killed) and a SIGTERM while the artifact is being
unpacked by the libuv worker thread, and a run shipping its lines to CloudWatch Logs (moto behind
a proxy that fails a third of the PutLogEvents, a line cut to fit an event). Each must exit as the contract says with no memcheck error
and no definite or indirect leak (suppressions: tests/valgrind.supp, libraries only)."""

import os
import re
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import agentenv  # noqa: E402
import faultenv  # noqa: E402

SRC = os.environ.get("DAGY_TEST_SRC") or os.path.join(os.path.dirname(__file__), "..", "..")
VALGRIND = os.environ.get("DAGY_VALGRIND") or shutil.which("valgrind")
SUPP = os.path.join(SRC, "tests", "valgrind.supp")


def memcheck(log_prefix):
    """The valgrind command line: every error and every definite/indirect leak fails the run."""
    return [VALGRIND, "--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
            "--child-silent-after-fork=yes", "--num-callers=30", "--suppressions=" + SUPP,
            "--log-file=" + log_prefix + ".%p"]


class ValgrindAgentTest(unittest.TestCase):
    def setUp(self):
        if not VALGRIND:
            self.skipTest("valgrind not installed")
        self.tmp = tempfile.mkdtemp(prefix="dagy-vg-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.mark = faultenv.new_mark()
        self.addCleanup(lambda: faultenv.kill_pids(faultenv.marked_pids(self.mark)))
        self.state = os.path.join(self.tmp, "state")
        self.work = os.path.join(self.tmp, "work")
        self.vglog = os.path.join(self.tmp, "vg")

    def start(self, flow, *args, env=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("DAGY_")}
        e.update({"DAGY_WORK_DIR": self.work, "DAGY_KILL_GRACE_SECONDS": "1"})
        e.update(env or {})
        a = faultenv.Agent(["--flow", flow, "--state-dir", self.state, "--log-format", "json"] +
                           list(args), e, prefix=memcheck(self.vglog))
        self.addCleanup(a.cleanup)
        return a

    def valgrind_summary(self):
        """(errors, text) over every valgrind log of this test (the agent's own process)."""
        errors, text = 0, ""
        for n in sorted(os.listdir(self.tmp)):
            if n.startswith("vg."):
                with open(os.path.join(self.tmp, n), errors="replace") as f:
                    t = f.read()
                text += t
                for m in re.finditer(r"ERROR SUMMARY: (\d+) errors", t):
                    errors += int(m.group(1))
        return errors, text

    def check_clean(self, a, want_code):
        errors, text = self.valgrind_summary()
        print("valgrind %s: %d errors; %s" % (
            self.id().rsplit(".", 1)[-1], errors,
            "; ".join(re.findall(r"(?:definitely|indirectly) lost: [^\n]*", text))),
            file=sys.stderr)
        self.assertEqual(errors, 0, "memcheck found errors:\n" + text[-12000:])
        self.assertEqual(a.code, want_code, a.report())

    def flow_dir(self, tasks):
        d = os.path.join(self.tmp, "flow")
        os.makedirs(d, exist_ok=True)
        import json
        with open(os.path.join(d, "flow_spec.json"), "w") as f:
            json.dump(faultenv.spec(tasks, mark=self.mark), f)
        return d

    def test_normal_run_is_memcheck_clean(self):
        d = self.flow_dir([
            faultenv.sh("a", "echo '{\"n\": 1}' > \"$DAGY_TASK_OUTPUT\"; echo out; echo err >&2"),
            faultenv.sh("b", "test \"$DAGY_ATTEMPT\" -ge 2 || exit 3", upstream=["a"],
                        retries=1, retry_delay_seconds=0),
            faultenv.sh("c", "echo boom >&2; exit 1", upstream=["a"]),
            faultenv.sh("d", "true", upstream=["c"]),
            faultenv.sh("e", "cat \"$DAGY_TASK_INPUTS\"", upstream=["b", "c"],
                        trigger_rule="all_done"),
        ])
        a = self.start(d)
        a.wait(300)
        self.check_clean(a, 1)

    def test_sigterm_mid_dag_is_memcheck_clean(self):
        d = self.flow_dir([
            faultenv.sh("quick", "true"),
            faultenv.sh("stubborn", "trap '' TERM; while :; do sleep 0.1; done"),
            faultenv.sh("later", "true", upstream=["stubborn"]),
        ])
        a = self.start(d, "--drain-seconds", "1")
        self.assertIsNotNone(a.wait_event("task_start", 120,
                                          lambda l: l.get("task_name") == "stubborn"),
                             a.report())
        time.sleep(0.5)
        a.signal(signal.SIGTERM)
        a.wait(300)
        self.check_clean(a, 143)
        faultenv.assert_no_process_left(self, self.mark, report=a.report())

    def test_sigterm_during_unpack_is_memcheck_clean(self):
        # A plain tar (ratio 1, so no bomb rule fires) big enough that the worker thread is still
        # writing when the signal comes: memcheck slows libarchive down many times.
        art = os.path.join(self.tmp, "big.tar")
        spec = os.path.join(self.tmp, "flow_spec.json")
        with open(spec, "w") as f:
            import json
            json.dump(faultenv.spec([faultenv.sh("a", "true")], mark=self.mark), f)
        blob = os.path.join(self.tmp, "blob")
        with open(blob, "wb") as f:
            f.truncate(0)
            chunk = os.urandom(1 << 20)
            for _ in range(160):
                f.write(chunk)
        with tarfile.open(art, "w") as t:
            t.add(spec, "flow_spec.json")
            t.add(blob, "data/blob1")
            t.add(blob, "data/blob2")
        os.unlink(blob)
        a = self.start(art, "--run-id", "vg-unpack")
        flowdir = os.path.join(self.work, "vg-unpack")
        self.assertTrue(agentenv.wait_for(
            lambda: faultenv.du(flowdir) > (8 << 20) or a.exited(), 120),
            a.report())
        a.signal(signal.SIGTERM)
        a.wait(300)
        self.assertEqual(a.events("unpack_end"), [], "the unpack ended before the signal: "
                         "make the archive bigger\n" + a.report())
        self.check_clean(a, 143)

    def test_cloudwatch_logs_shipping_is_memcheck_clean(self):
        import awsenv
        import faultproxy

        moto = awsenv.Moto().start()
        self.addCleanup(moto.stop)
        moto.client("logs").create_log_group(logGroupName="/vg")
        p = faultproxy.FaultProxy(moto.endpoint, seed=3, rates={"503": 0.33},
                                  match=lambda m, path, h: "PutLogEvents" in
                                  h.get("X-Amz-Target", ""))
        p.start()
        self.addCleanup(p.stop)
        d = self.flow_dir([
            faultenv.sh("a", "seq 1 3000"),
            faultenv.sh("b", "head -c 60000 /dev/zero | tr '\\0' '\\001'; echo",
                        upstream=["a"]),
        ])
        a = self.start(d, "--run-id", "vg-cwlogs",
                       env=moto.env({}, DAGY_LOG_GROUP="/vg", AWS_ENDPOINT_URL_LOGS=p.url,
                                    DAGY_LOG_STDOUT="all", DAGY_WORK_DIR=self.work,
                                    DAGY_KILL_GRACE_SECONDS="1"))
        a.wait(300)
        self.check_clean(a, 0)
        logs = moto.client("logs")
        got, token = [], None
        for _ in range(1000):
            kw = {"logGroupName": "/vg", "logStreamName": "vg-cwlogs", "startFromHead": True}
            if token:
                kw["nextToken"] = token
            page = logs.get_log_events(**kw)
            got += [e["message"] for e in page["events"]]
            if page["nextForwardToken"] == token:
                break
            token = page["nextForwardToken"]
        with open(a.out_path) as f:
            printed = f.read().splitlines()
        # stdout adds the shipper's report (one line was cut to fit an event) before run_end.
        self.assertIn('"event_type":"log_shipping_incomplete"', printed[-2])
        del printed[-2]
        # the metrics (EMF) lines are shipped only, even with DAGY_LOG_STDOUT=all
        emf = [m for m in got if '"event_type":"metrics"' in m]
        self.assertTrue(emf)
        self.assertFalse([m for m in printed if '"event_type":"metrics"' in m])
        got = [m for m in got if m not in emf]
        self.assertEqual(len(got), len(printed))
        self.assertEqual([m for m in got if "log_truncated" not in m],
                         [m for m in printed if len(m) < 262144])
        self.assertEqual(got[-1], printed[-1])


if __name__ == "__main__":
    unittest.main()
