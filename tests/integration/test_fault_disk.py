"""Fault suite: full and read-only disks under the work and state directories (issue 9 defects
3 and 7, issue 8 defect 17), on tiny tmpfs mounts made by the test (root only; skipped
otherwise) and unmounted in teardown.

- An artifact larger than the work directory's free space: exit 3 naming the path and the free
  space, no task started, nothing reported SUCCEEDED - also when flow_spec.json is the entry cut
  short (never exit 2 "invalid JSON").
- The work directory filling up during the run: a downstream task never starts with a broken
  inputs file (empty or cut), the run does not SUCCEED, the last log line agrees with the exit.
- The state directory filling up during the run: exit 3, the last log line agrees, the wait is
  bounded, no state file is half-written.
- A read-only state directory: the error says "Read-only file system", not "No such file"."""

import io
import json
import os
import subprocess
import sys
import time
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultenv  # noqa: E402

BOUNDED_S = 40


def mount_tmpfs(tc, path, size, readonly=False):
    """Mounts a tmpfs of `size` at path (created) and unmounts it in cleanup."""
    os.makedirs(path, exist_ok=True)
    opts = "size=%s,mode=0700" % size + (",ro" if readonly else "")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        tc.skipTest("cannot mount a tmpfs here (%s)" % p.stdout.strip())
    tc.addCleanup(lambda: subprocess.run(["umount", "-l", path], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))


class DiskFaultTest(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("tmpfs mounts need root")
        faultenv.scratch(self)

    def flow_dir(self, tasks):
        d = os.path.join(self.tmp, "flow")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "flow_spec.json"), "w") as f:
            json.dump(faultenv.spec(tasks, mark=self.mark), f)
        return d

    def run_agent(self, flow, run_id, timeout=BOUNDED_S + 30):
        a = faultenv.Agent(["--flow", flow, "--state-dir", self.state, "--log-format", "json",
                            "--run-id", run_id], faultenv.agent_env(self.work))
        self.addCleanup(a.cleanup)
        t = time.monotonic()
        try:
            code = a.wait(timeout)
        except Exception:
            self.fail("the agent did not finish within %d s\n%s" % (timeout, a.report()))
        self.assertLess(time.monotonic() - t, BOUNDED_S, a.report())
        return a, code

    def artifact(self, spec_last):
        """A zip with 4 MiB of incompressible data and flow_spec.json first or last."""
        spec = json.dumps(faultenv.spec([faultenv.sh("a", "true")], mark=self.mark))
        path = os.path.join(self.tmp, "big.zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            if not spec_last:
                z.writestr("flow_spec.json", spec)
            z.writestr("data.bin", os.urandom(4 << 20))
            if spec_last:
                z.writestr("flow_spec.json", spec + " " * 4096)
        return path

    def test_artifact_larger_than_the_work_dir_is_exit_3_naming_path_and_space(self):
        for spec_last in (False, True):
            with self.subTest(flow_spec_json="last" if spec_last else "first"):
                work = os.path.join(self.tmp, "work-%d" % spec_last)
                mount_tmpfs(self, work, "2m")
                self.work = work
                art = self.artifact(spec_last)
                a, code = self.run_agent(art, "disk-unpack-%d" % spec_last)
                report = a.report()
                lines = a.lines()
                self.assertEqual([l for l in lines if l["event_type"] == "task_start"], [], report)
                self.assertEqual(code, 3, "a full work directory while unpacking\n" + report)
                faultenv.check_log_agrees_with_exit(self, lines, code, report)
                err = lines[-1].get("error", "") + lines[-1].get("message", "")
                self.assertIn(work, err, "the error names the path\n" + report)
                self.assertRegex(err, r"(?i)free|space", report)

    def test_work_dir_filling_up_never_feeds_a_broken_inputs_file(self):
        mount_tmpfs(self, self.work, "1m")
        fill = ("printf '{\"a\": 1, \"pad\": \"%s\"}' \"$(head -c 2000 /dev/zero | tr '\\0' x)\""
                " > \"$DAGY_TASK_OUTPUT\"; "
                "dd if=/dev/zero of=\"$(dirname \"$DAGY_TASK_OUTPUT\")/../fill\" bs=64k "
                "2>/dev/null; true")
        check = "grep -q '\"pad\"' \"$DAGY_TASK_INPUTS\" && grep -q '}' \"$DAGY_TASK_INPUTS\"" \
                " || exit 42"
        flow = self.flow_dir([faultenv.sh("fill", fill),
                              faultenv.sh("reader", check, upstream=["fill"])])
        a, code = self.run_agent(flow, "disk-inputs")
        report = a.report()
        lines = a.lines()
        faultenv.check_log_agrees_with_exit(self, lines, code, report)
        ends = faultenv.final_events(lines)
        reader = ends.get("reader", {})
        self.assertNotEqual(reader.get("exit_code"), 42,
                            "the reader started with a broken inputs file\n" + report)
        self.assertNotEqual(code, 0, report)

    def test_state_dir_filling_up_is_exit_3_with_the_log_agreeing(self):
        mount_tmpfs(self, self.state, "256k")
        fill = "dd if=/dev/zero of=\"$STATE_DIR/fill\" bs=16k 2>/dev/null; true"
        tasks = [faultenv.sh("fill", fill, env={"STATE_DIR": self.state})]
        tasks += [faultenv.sh("t%02d" % i, "true", upstream=["fill"]) for i in range(10)]
        flow = self.flow_dir(tasks)
        a, code = self.run_agent(flow, "disk-state")
        report = a.report()
        lines = a.lines()
        self.assertEqual(code, 3, "statuses could not be written\n" + report)
        faultenv.check_log_agrees_with_exit(self, lines, code, report)
        for root, _, files in os.walk(self.state):
            for n in files:
                if n.endswith(".json"):
                    with open(os.path.join(root, n)) as f:
                        json.load(f)  # never half-written

    def test_read_only_state_dir_says_read_only(self):
        mount_tmpfs(self, self.state, "1m", readonly=True)
        a, code = self.run_agent(self.flow_dir([faultenv.sh("a", "true")]), "disk-ro")
        report = a.report()
        self.assertNotEqual(code, 0, report)
        self.assertIn("Read-only file system", report)
        self.assertNotIn("No such file or directory", report)
        faultenv.check_log_agrees_with_exit(self, a.lines(), code, report)


if __name__ == "__main__":
    unittest.main()
