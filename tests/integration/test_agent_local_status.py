"""dagy-agent's local status store at the edges: a re-run with the id of an ended run is refused
(exit 2), a crashed run is taken over; state and work files are private (a task's own files are
not); a full or read-only state directory is reported at once, the wait bounded and the last line
agreeing with the exit code; SIGTERM right after exec still ends with a record; old run
directories are pruned (DAGY_KEEP_RUNS); configuration errors are JSON lines in json mode."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentenv import AGENT, Flow, read_json  # noqa: E402


def task(name, cmd, **kw):
    t = {"name": name, "command": ["sh", "-c", cmd]}
    t.update(kw)
    return t


def spec(tasks, **kw):
    s = {"spec_version": 1, "name": "t", "version": "1.0.0", "tasks": tasks}
    s.update(kw)
    return s


@contextlib.contextmanager
def tmpfs(size):
    """A small tmpfs mounted on a fresh directory (needs root); unmounted afterwards."""
    d = tempfile.mkdtemp(prefix="dagy-tmpfs-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", d],
                       capture_output=True)
    if r.returncode:
        os.rmdir(d)
        raise unittest.SkipTest("cannot mount a tmpfs: %s" % r.stderr.decode().strip())
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d])
        os.rmdir(d)


class AgentLocalStatus(unittest.TestCase):
    def flow(self, s, files=None):
        f = Flow(s, files)
        self.addCleanup(f.cleanup)
        return f

    def assert_last_line_agrees(self, res):
        last = res.lines[-1]
        self.assertEqual(last["event_type"], "run_end", res)
        self.assertEqual(last["exit_code"], res.code, res)

    # ---- issue 8 defect 9 ----

    def test_rerun_of_an_ended_run_id_is_refused_with_exit_2(self):
        f = self.flow(spec([task("a", "echo x >> count")]))
        first = f.run("--run-id", "again")
        self.assertEqual(first.code, 0, first)
        before = first.run_item()
        res = f.run("--run-id", "again")
        self.assertEqual(res.code, 2, res)
        self.assertEqual(res.events("task_start"), [])
        self.assertIn('"again"', res.lines[-1]["message"])
        self.assertIn("--resume-from", res.lines[-1]["message"])
        self.assert_last_line_agrees(res)
        self.assertEqual(res.run_item(), before)
        with open(os.path.join(f.dir, "count")) as c:
            self.assertEqual(c.read(), "x\n")

    def test_rerun_of_a_crashed_run_takes_over_above_stored_seqs(self):
        f = self.flow(spec([task("a", "true")]))
        tasks = os.path.join(f.state, "runs", "crashed", "tasks")
        os.makedirs(tasks)
        with open(os.path.join(f.state, "runs", "crashed.json"), "w") as o:
            json.dump({"run_id": "crashed", "status": "RUNNING", "status_seq": 12}, o)
        with open(os.path.join(tasks, "a.json"), "w") as o:
            json.dump({"run_id": "crashed", "task_name": "a", "status": "RUNNING",
                       "status_seq": 30}, o)
        res = f.run("--run-id", "crashed")
        self.assertEqual(res.code, 0, res)
        self.assertEqual(res.run_item()["status"], "SUCCEEDED")
        self.assertGreater(res.run_item()["status_seq"], 30)
        self.assertEqual(res.task_item("a")["status"], "SUCCEEDED")
        self.assertEqual(len(res.events("status_takeover")), 1, res)

    def test_rerun_while_the_run_is_live_is_refused(self):
        f = self.flow(spec([task("a", "touch started; sleep 3")]))
        p = f.start("--run-id", "live")
        try:
            item = os.path.join(f.state, "runs", "live.json")
            started = os.path.join(f.dir, "started")
            for _ in range(200):  # RUNNING stored, the work directory held, the task running
                if os.path.exists(item) and os.path.exists(started):
                    break
                time.sleep(0.05)
            self.assertTrue(os.path.exists(started), "the first run's task never started")
            res = f.run("--run-id", "live")
            self.assertEqual(res.code, 2, res)
            self.assertIn("another agent", res.lines[-1]["message"])
            self.assertEqual(p.wait(timeout=30), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()
        self.assertEqual(read_json(os.path.join(f.state, "runs", "live.json"))["status"],
                         "SUCCEEDED")

    # ---- issue 8 defect 18 ----

    def test_state_and_work_files_are_private_but_task_files_are_not(self):
        f = self.flow(spec([task("a", 'echo "{\\"k\\": 1}" > "$DAGY_TASK_OUTPUT"; touch mine'),
                            task("b", "true", upstream=["a"])]))
        res = f.run("--run-id", "private", "--param", "secret=s3cr3t")
        self.assertEqual(res.code, 0, res)
        for root, dirs, files in os.walk(f.state):  # everything here is the agent's
            for n in dirs + files:
                p = os.path.join(root, n)
                self.assertEqual(os.lstat(p).st_mode & 0o077, 0, p)
        run_dir = os.path.join(f.work, "private")
        exec_dir = os.path.dirname(res.events("run_start")[0]["results_dir"])
        for p in [f.work, f.state, run_dir, exec_dir,
                  os.path.join(exec_dir, "results"), os.path.join(exec_dir, "in"),
                  os.path.join(exec_dir, "out")]:
            self.assertEqual(os.stat(p).st_mode & 0o777, 0o700, p)
        # deps/ exists only for a run with packages (tests of --deps check its contents).
        self.assertFalse(os.path.exists(os.path.join(run_dir, "deps")))
        for sub in ("in", "results"):  # the agent's files; out/ files are the task's
            for n in os.listdir(os.path.join(exec_dir, sub)):
                p = os.path.join(exec_dir, sub, n)
                self.assertEqual(os.stat(p).st_mode & 0o077, 0, p)
        # The task's own files follow the umask the agent was started with.
        self.assertEqual(os.stat(os.path.join(f.dir, "mine")).st_mode & 0o777,
                         0o666 & ~self.umask)

    def setUp(self):
        self.umask = os.umask(0o022)
        os.umask(self.umask)

    # ---- issue 8 defect 17, issue 9 defects 6 and 7 ----

    def test_disk_full_state_dir_fails_fast_and_last_line_agrees(self):
        with tmpfs("256k") as state:
            f = self.flow(spec([task("fill", "dd if=/dev/zero of=%s/fill bs=4k count=200 "
                                             "2>/dev/null; true" % state),
                                task("after", "sleep 0.3", upstream=["fill"])]))
            t0 = time.monotonic()
            p = subprocess.run([AGENT, "--flow", f.dir, "--state-dir", state, "--log-format",
                                "json", "--run-id", "full"], env=f.env(), capture_output=True,
                               timeout=120)
            elapsed = time.monotonic() - t0
            lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
        self.assertEqual(p.returncode, 3, p)
        self.assertLess(elapsed, 20, lines[-3:])
        self.assertEqual(lines[-1]["event_type"], "run_end")
        self.assertEqual(lines[-1]["exit_code"], 3)
        self.assertFalse(lines[-1]["status_recorded"])
        degraded = [x for x in lines if x["event_type"] == "status_store_degraded"]
        # Once at least (a write into an item's spare file may still succeed in between).
        self.assertGreaterEqual(len(degraded), 1, lines)
        self.assertIn("No space left", degraded[0]["error"])

    def test_read_only_state_dir_reports_erofs(self):
        with tmpfs("1m") as state:
            os.makedirs(os.path.join(state, "runs"))
            subprocess.run(["mount", "-o", "remount,ro", state], check=True)
            f = self.flow(spec([task("a", "touch ran")]))
            p = subprocess.run([AGENT, "--flow", f.dir, "--state-dir", state, "--log-format",
                                "json"], env=f.env(), capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 3, p)
        lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
        self.assertIn("Read-only file system", lines[-1]["message"])
        self.assertEqual(lines[-1]["exit_code"], 3)
        self.assertNotIn("No such file", p.stdout.decode())
        self.assertFalse(os.path.exists(os.path.join(f.dir, "ran")))

    # ---- issue 9 defect 8 ----

    def test_sigterm_right_after_exec_ends_with_a_record(self):
        """A signal at 0, 1, 5, 10 ms after exec. From the shim's first instruction on (well
        under a millisecond on an idle machine), the signal waits, blocked, for the handlers:
        exit 143 and the run item FAILED. A signal that lands before the new image runs at all
        is the kernel's (default action, nothing started): then nothing may be left behind
        either. At 5 ms and later (the old window was ~10 ms) a record is required."""
        f = self.flow(spec([task("a", "sleep 5")]))
        for delay in (0, 0.001, 0.005, 0.01):
            for i in range(3):
                run_id = "early-%d-%d" % (int(delay * 1000), i)
                p = subprocess.Popen([AGENT, "--flow", f.dir, "--state-dir", f.state,
                                      "--log-format", "json", "--run-id", run_id,
                                      "--drain-seconds", "0"],
                                     env=f.env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
                if delay:
                    time.sleep(delay)
                p.send_signal(signal.SIGTERM)
                out, err = p.communicate(timeout=60)
                item_path = os.path.join(f.state, "runs", run_id + ".json")
                if p.returncode == -signal.SIGTERM and delay < 0.005:
                    self.assertEqual(out, b"", (delay, err))  # it never ran
                    self.assertFalse(os.path.exists(item_path))
                    continue
                self.assertEqual(p.returncode, 143, (delay, out, err))
                lines = [json.loads(x) for x in out.decode().splitlines()]
                self.assertEqual(lines[-1]["event_type"], "run_end")
                self.assertEqual(lines[-1]["exit_code"], 143)
                item = read_json(item_path)
                self.assertEqual(item["status"], "FAILED")
                self.assertEqual(item["error_message"], "Worker shutdown requested via SIGTERM")

    # ---- issue 9 defect 9 ----

    def test_only_the_last_runs_directories_are_kept(self):
        f = self.flow(spec([task("a", "true")]))
        for i in range(5):
            res = f.run("--run-id", "keep-%d" % i, env={"DAGY_KEEP_RUNS": "3"})
            self.assertEqual(res.code, 0, res)
        self.assertEqual(sorted(os.listdir(f.work)), ["keep-2", "keep-3", "keep-4"])
        runs = os.path.join(f.state, "runs")
        self.assertEqual(sorted(n for n in os.listdir(runs) if not n.endswith(".json")),
                         ["keep-2", "keep-3", "keep-4"])
        # Run items go with them (the soak showed ~4 KiB a run otherwise, forever), also the
        # items of runs that ended before any task (no task directory).
        self.assertEqual(sorted(n for n in os.listdir(runs) if n.endswith(".json")),
                         ["keep-2.json", "keep-3.json", "keep-4.json"])
        bad = self.flow(spec([task("a", "true")]))
        with open(os.path.join(bad.dir, "flow_spec.json"), "w") as fh:
            fh.write("{}")
        for i in range(5, 8):
            f.run("--run-id", "keep-%d" % i, env={"DAGY_KEEP_RUNS": "3"},
                  flow=bad.dir if i == 5 else None)
        self.assertEqual(sorted(os.listdir(runs)),  # keep-5 ended at its spec: an item only
                         ["keep-5.json", "keep-6", "keep-6.json", "keep-7", "keep-7.json"])
        res = f.run("--run-id", "keep-x", env={"DAGY_KEEP_RUNS": "zero"})
        self.assertEqual(res.code, 2, res)

    # ---- issue 8 "also verify" ----

    def test_configuration_errors_are_json_lines_in_json_mode(self):
        f = self.flow(spec([task("a", "true")]))
        res = f.run("--max-parallel", "lots")
        self.assertEqual(res.code, 2, res)
        self.assertEqual(len(res.lines), 1, res)
        self.assertEqual(res.lines[0]["level"], "ERROR")
        self.assertEqual(res.lines[0]["event_type"], "config_error")
        self.assertIn("--max-parallel", res.lines[0]["message"])
        p = subprocess.run([AGENT, "--flow", f.dir, "--bogus"], env=f.env(),
                           capture_output=True)  # not a terminal: json by default
        self.assertEqual(p.returncode, 2)
        self.assertEqual(json.loads(p.stdout)["event_type"], "config_error")


if __name__ == "__main__":
    unittest.main()
