"""dagy-agent local runs against hostile task processes: a setsid daemon holding stdout, a natural
exit in the same loop turn as the timeout, kill -9 of the agent, and parameters/kwargs larger
than one exec() string. Every process a task starts carries a unique marker variable (the task's
`env`), so the tests find them in /proc and kill them by pid in cleanup."""
import json
import os
import signal
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentenv import Flow, pid_alive, read_json, stop, wait_for  # noqa: E402


def spec(tasks, **kw):
    s = {"spec_version": 1, "name": "t", "version": "1.0.0", "tasks": tasks}
    s.update(kw)
    return s


def marked(mark):
    """Pids of live processes whose environment holds T_MARK=mark."""
    needle = ("T_MARK=%s" % mark).encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env and pid_alive(int(d)):
            out.append(int(d))
    return out


class AgentProcesses(unittest.TestCase):
    def setUp(self):
        self.mark = uuid.uuid4().hex
        self.addCleanup(self.kill_marked)

    def kill_marked(self):
        for pid in marked(self.mark):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def flow(self, s, files=None):
        f = Flow(s, files)
        self.addCleanup(f.cleanup)
        return f

    def task(self, name, cmd, **kw):
        t = {"name": name, "command": ["sh", "-c", cmd] if isinstance(cmd, str) else cmd,
             "env": {"T_MARK": self.mark}}
        t.update(kw)
        return t

    # -- issue 8 defect 5 ----------------------------------------------------------------------

    def test_setsid_daemon_holding_stdout_does_not_time_out_and_is_killed(self):
        """The exact command of the issue, timeout 1 s: SUCCEEDED with exit_code 0 (the leader's
        exit), in well under the timeout, and no `sleep 4` survives the agent."""
        f = self.flow(spec([self.task("t", "setsid sleep 4 & sleep 0.2; echo done",
                                      timeout_seconds=1)]))
        t0 = time.monotonic()
        r = f.run()
        took = time.monotonic() - t0
        self.assertEqual(r.code, 0, r)
        item = r.task_item("t")
        self.assertEqual(item["status"], "SUCCEEDED", item)
        self.assertEqual(item["exit_code"], 0, item)
        self.assertNotIn("error_message", item)
        self.assertEqual(r.output("t"), ["done"])
        self.assertLess(took, 3.5, r)
        self.assertEqual(marked(self.mark), [], "the setsid daemon outlived the agent")

    # -- issue 8, also verify: timeout and natural exit in one loop turn -------------------------

    def test_exit_before_timeout_seen_with_the_timeout_is_success(self):
        """The agent is stopped (SIGSTOP) while its tasks exit 0 well before their timeout and is
        resumed after the timeout: the expired deadline timer and the pending SIGCHLD are then
        handled in the same loop turn, timers first. The exits must win: SUCCEEDED, exit 0."""
        tasks = [self.task("t%d" % i, "touch started_$DAGY_TASK_NAME; sleep 0.3",
                           timeout_seconds=1) for i in range(4)]
        f = self.flow(spec(tasks, max_parallel=4))
        p = f.start()
        self.addCleanup(stop, p)
        started = [os.path.join(f.dir, "started_t%d" % i) for i in range(4)]
        self.assertTrue(wait_for(lambda: all(map(os.path.exists, started)), 10, 0.005))
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(1.5)  # the tasks exit at 0.3 s, their deadline passes at 1 s
        os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, out.decode()[-3000:])
        state = os.path.join(f.state, "runs")
        run_id = [n for n in os.listdir(state) if n.endswith(".json")][0][:-5]
        for i in range(4):
            item = read_json(os.path.join(state, run_id, "tasks", "t%d.json" % i))
            self.assertEqual((item["status"], item.get("exit_code")), ("SUCCEEDED", 0), item)

    # -- issue 9 defect 5 ----------------------------------------------------------------------

    def test_kill_9_of_the_agent_kills_its_tasks(self):
        """kill -9 of the agent: within 1 s the task's leader, a child in its group and a child
        that left the group with setsid are all gone, and none writes its marker file."""
        f = self.flow(spec([self.task(
            "t", "(sleep 2; echo x > m_group) & setsid sh -c 'sleep 2; echo x > m_escaped' & "
                 "echo ready > ready; sleep 2; echo x > m_leader")]))
        p = f.start()
        self.addCleanup(stop, p)
        self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(f.dir, "ready")), 10))
        self.assertTrue(wait_for(lambda: len(marked(self.mark)) >= 3, 5), marked(self.mark))
        p.kill()
        p.wait(timeout=10)
        t0 = time.monotonic()
        self.assertTrue(wait_for(lambda: marked(self.mark) == [], 1.0, 0.01),
                        "still running 1 s after kill -9: %s" % marked(self.mark))
        gone_after = time.monotonic() - t0
        time.sleep(2.5)
        for name in ("m_group", "m_escaped", "m_leader"):
            self.assertFalse(os.path.exists(os.path.join(f.dir, name)), name)
        self.assertLess(gone_after, 1.0)

    def test_only_the_loop_thread_can_take_a_tasks_sigchld(self):
        """Every thread of the agent but the loop thread blocks SIGCHLD (and SIGTERM, SIGINT), so
        a task's exit wakes the loop thread alone, not an idle thread-pool thread that would run
        the handler and wake the loop in turn (issue 12: ~900 wake-ups of pool threads per
        2000-task run). Read from /proc while a task runs."""
        f = self.flow(spec([self.task(
            "t", "echo ready > ready; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do "
                 "sleep 0.05; i=$((i+1)); done")]))
        p = f.start()
        self.addCleanup(stop, p)
        self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(f.dir, "ready")), 10))
        blocked = {}
        for tid in os.listdir("/proc/%d/task" % p.pid):
            with open("/proc/%d/task/%s/status" % (p.pid, tid)) as fh:
                fields = dict(ln.split(":", 1) for ln in fh.read().splitlines() if ":" in ln)
            blocked[int(tid)] = int(fields["SigBlk"].strip(), 16)
        self.assertGreater(len(blocked), 1, "no thread pool: %s" % blocked)
        bits = [1 << (sig - 1) for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)]
        self.assertFalse(any(blocked[p.pid] & b for b in bits), "the loop thread blocks them")
        for tid, mask in blocked.items():
            if tid != p.pid:
                self.assertTrue(all(mask & b for b in bits),
                                "thread %d takes signals (SigBlk %x)" % (tid, mask))
        with open(os.path.join(f.dir, "go"), "w"):
            pass
        self.assertEqual(p.wait(timeout=30), 0)

    # -- issue 8 defect 10 ---------------------------------------------------------------------

    def big_params(self, f):
        """A 200 KiB parameter (over one exec() string: 128 KiB), every byte value that JSON
        and UTF-8 allow in a line, written to a --params-json file."""
        big = "".join(chr(32 + (i * 7) % 95) for i in range(200 * 1024)) + "\u00e9\u20ac"
        path = os.path.join(f.tmp, "params.json")
        with open(path, "w") as fh:
            json.dump({"big": big, "small": "s"}, fh)
        return big, "@" + path

    def test_200_kib_parameter_reaches_shell_and_callable_tasks_byte_for_byte(self):
        f = self.flow(spec([
            self.task("shell", 'test -z "${DAGY_PARAMETERS+set}" || exit 9; '
                               'cp "$DAGY_PARAMETERS_FILE" got.json', retries=2),
            {"name": "call", "callable": "mod:echo", "kwargs": {"data": "{{ parameters.big }}"},
             "retries": 2},
        ]), files={"mod.py": "def echo(data):\n    return {'data': data, 'n': len(data)}\n"})
        big, arg = self.big_params(f)
        r = f.run("--params-json", arg)
        self.assertEqual(r.code, 0, r)
        with open(os.path.join(f.dir, "got.json"), encoding="utf-8") as fh:
            self.assertEqual(json.load(fh), {"big": big, "small": "s"})
        res = read_json(os.path.join(r.events("run_start")[0]["results_dir"], "call.json"))
        self.assertEqual(res["n"], len(big))
        self.assertEqual(res["data"], big)
        for name in ("shell", "call"):
            self.assertEqual(r.task_item(name)["attempt"], 1)

    def test_small_parameters_are_in_the_variable_and_the_file(self):
        f = self.flow(spec([self.task(
            "t", 'echo "$DAGY_PARAMETERS"; cat "$DAGY_PARAMETERS_FILE"; echo; '
                 'test "$(stat -c %a "$DAGY_PARAMETERS_FILE")" = 600')]))
        r = f.run("--param", "a=1")
        self.assertEqual(r.code, 0, r)
        self.assertEqual([json.loads(x) for x in r.output("t")], [{"a": "1"}, {"a": "1"}])

    def test_oversized_argument_or_env_is_refused_up_front_exit_2(self):
        for field, t in (
                ("command[2]", self.task("big_arg", ["echo", "x", "{{ parameters.big }}"])),
                ('env "BIG"', dict(self.task("big_env", "true"),
                                   env={"BIG": "{{ parameters.big }}", "T_MARK": self.mark}))):
            with self.subTest(field=field):
                f = self.flow(spec([self.task("first", "touch ran"), t]))
                _, arg = self.big_params(f)
                r = f.run("--params-json", arg)
                self.assertEqual(r.code, 2, r)
                self.assertFalse(os.path.exists(os.path.join(f.dir, "ran")))
                self.assertEqual(r.events("task_start"), [])
                msg = r.lines[-1]["message"]
                self.assertIn('task "%s"' % t["name"], msg)
                self.assertIn(field, msg)
                self.assertIn("131071", msg)

    def test_command_and_env_over_the_total_limit_is_refused_up_front_exit_2(self):
        # each value fits one string (100 KiB), all of them together do not (over 6 MiB)
        env = {"V%02d" % i: "{{ parameters.v }}" for i in range(70)}
        env["T_MARK"] = self.mark
        f = self.flow(spec([dict(self.task("wide", "true"), env=env)]))
        path = os.path.join(f.tmp, "p.json")
        with open(path, "w") as fh:
            json.dump({"v": "v" * (100 * 1024)}, fh)
        r = f.run("--params-json", "@" + path)
        self.assertEqual(r.code, 2, r)
        self.assertEqual(r.events("task_start"), [])
        msg = r.lines[-1]["message"]
        self.assertIn('task "wide"', msg)
        self.assertIn("limit", msg)


if __name__ == "__main__":
    unittest.main()
