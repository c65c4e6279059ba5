"""Soak (label soak): flows back to back in ONE warm state and work directory, as in a staging
container running hundreds of flows: random DAGs with random failures, timeouts, retries, and
SIGTERMs (seeded, printed). DAGY_SOAK_FLOWS flows (default 40; bench/soak.sh runs 200).

Every run is checked like a fault-suite run (exit code, last log line, terminal items, no process
left). Across runs, per agent process: open fds (peak of /proc/PID/fd while it runs), peak RSS
(VmHWM), processes left, and the disk used by the state and work directories. Asserted flat:
- no process is ever left;
- fds and RSS of the last quarter of the runs within a small margin of the first half's;
- disk: with DAGY_KEEP_RUNS (default 20) only that many run directories are kept, so after
  KEEP+2 runs the state and work directories stop growing.
The figures (start and end) are printed on stderr, and written as JSON to DAGY_SOAK_REPORT."""

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultenv  # noqa: E402

FLOWS = int(os.environ.get("DAGY_SOAK_FLOWS", "40"))
KEEP_RUNS = int(os.environ.get("DAGY_KEEP_RUNS", "20"))
FD_MARGIN = 4  # peak fds depend on how many tasks overlap (max_parallel 3)
RSS_FACTOR, RSS_SLACK_KB = 1.25, 2048
DISK_SLACK = 1.10


class Sampler(threading.Thread):
    """Polls an agent's /proc entries every 10 ms: peak fd count, last VmHWM (peak RSS)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.max_fds = 0
        self.hwm_kb = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            n = faultenv.fd_count(self.pid)
            if n < 0:
                return
            self.max_fds = max(self.max_fds, n)
            try:
                with open("/proc/%d/status" % self.pid) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.01)


def random_flow(rng, mark):
    """4-7 tasks in a random DAG: some fail, some retry, some time out, all pass data."""
    n = rng.randint(4, 7)
    tasks = []
    for i in range(n):
        name = "t%d" % i
        up = sorted(rng.sample(["t%d" % j for j in range(i)], k=min(i, rng.randint(0, 2))))
        kind = rng.choices(["ok", "fail", "flaky", "timeout", "slow"], [6, 1, 2, 1, 1])[0]
        body = {"ok": "cat \"$DAGY_TASK_INPUTS\" >/dev/null; echo line; "
                      "printf '{\"i\": %d}' > \"$DAGY_TASK_OUTPUT\"" % i,
                "fail": "echo failing >&2; exit 3",
                "flaky": "test \"$DAGY_ATTEMPT\" -ge 2 || { echo flaky >&2; exit 1; }",
                "timeout": "sleep 5",
                "slow": "sleep 0.%d" % rng.randint(2, 8)}[kind]
        t = faultenv.sh(name, body, upstream=up)
        if kind == "flaky":
            t.update(retries=2, retry_delay_seconds=0)
        if kind == "timeout":
            t.update(timeout_seconds=1, retries=rng.randint(0, 1), retry_delay_seconds=0)
        if up and rng.random() < 0.2:
            t["trigger_rule"] = "all_done"
        tasks.append(t)
    return faultenv.spec(tasks, name="soak", max_parallel=3, mark=mark), [t["name"] for t in tasks]


class SoakTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dagy-soak-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.state = os.path.join(self.tmp, "state")
        self.work = os.path.join(self.tmp, "work")
        self.mark = faultenv.new_mark()
        self.addCleanup(lambda: faultenv.kill_pids(faultenv.marked_pids(self.mark)))

    def one_run(self, rng, i):
        spec, names = random_flow(rng, self.mark)
        art = os.path.join(self.tmp, "artifact.zip")
        with zipfile.ZipFile(art, "w") as z:
            z.writestr("flow_spec.json", json.dumps(spec))
            z.writestr("lib/data.txt", "x" * rng.randint(100, 20000))
        run_id = "soak-%04d" % i
        env = faultenv.agent_env(self.work, {"DAGY_KILL_GRACE_SECONDS": "0.5"})
        a = faultenv.Agent(["--flow", art, "--state-dir", self.state, "--log-format", "json",
                            "--run-id", run_id, "--drain-seconds", "1"], env)
        self.addCleanup(a.cleanup)
        s = Sampler(a.pid)
        s.start()
        sigterm = rng.random() < 0.2
        if sigterm:
            time.sleep(rng.uniform(0.2, 1.5))
            a.signal(signal.SIGTERM)
        code = a.wait(60)
        s.done.set()
        s.join(2)
        report = "run %s (%s)\n%s" % (run_id, "SIGTERMed" if sigterm else "plain", a.report())
        lines = a.lines()
        self.assertIn(code, (0, 1, 143) if sigterm else (0, 1), report)
        faultenv.check_log_agrees_with_exit(self, lines, code, report)
        run, tasks = faultenv.local_items(self.state, run_id, names)
        faultenv.check_items(self, run, tasks, lines, code, names, report)
        faultenv.agentenv.wait_for(lambda: not faultenv.marked_pids(self.mark), 3)
        left = faultenv.marked_pids(self.mark)
        faultenv.kill_pids(left)
        a.cleanup()
        return {"run": i, "code": code, "fds": s.max_fds, "rss_kb": s.hwm_kb,
                "left": len(left), "disk_state": faultenv.du(self.state),
                "disk_work": faultenv.du(self.work)}

    def test_soak_resources_stay_flat(self):
        rng, seed = faultenv.seeded(self.id())
        stats = []
        t0 = time.monotonic()
        for i in range(FLOWS):
            stats.append(self.one_run(rng, i))
        took = time.monotonic() - t0
        self.report(stats, seed, took)
        self.assertEqual([s["run"] for s in stats if s["left"]], [],
                         "runs that left processes behind")
        # The peak of the first half (which has seen most DAG shapes) against the last quarter.
        first, last = stats[:max(1, FLOWS // 2)], stats[-max(1, FLOWS // 4):]
        fd0, fd1 = max(s["fds"] for s in first), max(s["fds"] for s in last)
        self.assertLessEqual(fd1, fd0 + FD_MARGIN, "agent fds grew: %d -> %d" % (fd0, fd1))
        rss0, rss1 = max(s["rss_kb"] for s in first), max(s["rss_kb"] for s in last)
        self.assertLessEqual(rss1, rss0 * RSS_FACTOR + RSS_SLACK_KB,
                             "agent peak RSS grew: %d -> %d KiB" % (rss0, rss1))
        if FLOWS >= KEEP_RUNS + 8:
            ref = stats[KEEP_RUNS + 1]
            end = stats[-1]
            for k in ("disk_state", "disk_work"):
                self.assertLessEqual(
                    end[k], ref[k] * DISK_SLACK + 65536,
                    "%s keeps growing after %d runs (DAGY_KEEP_RUNS=%d): %d -> %d bytes" % (
                        k, KEEP_RUNS + 2, KEEP_RUNS, ref[k], end[k]))

    def report(self, stats, seed, took):
        def row(s):
            return ("run %4d: exit %3d, fds %3d, peak RSS %6d KiB, left %d, state %8d B, "
                    "work %8d B" % (s["run"], s["code"], s["fds"], s["rss_kb"], s["left"],
                                    s["disk_state"], s["disk_work"]))
        print("soak: %d flows in %.1f s (seed %d)" % (len(stats), took, seed), file=sys.stderr)
        for s in stats[:3] + [None] + stats[-3:]:
            print("  ..." if s is None else "  " + row(s), file=sys.stderr)
        out = os.environ.get("DAGY_SOAK_REPORT")
        if out:
            with open(out, "w") as f:
                json.dump({"seed": seed, "seconds": took, "runs": stats}, f, indent=1)


if __name__ == "__main__":
    unittest.main()
