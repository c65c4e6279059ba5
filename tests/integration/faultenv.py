"""faultenv.py - what the fault, soak and valgrind tests share: run dagy-agent as a child we can
signal (optionally under a wrapper such as valgrind), find the processes a run left behind, and
check a finished run against the promises of contract sections 3, 4, 6 and 7:

- the exit code is one the contract allows for what happened;
- the last log line is `run_end` and agrees with the exit code;
- every run and task-run item is terminal, and says what the log says happened;
- no process of the run is left (found by a marker variable every task carries in its
  environment, which setsid daemons and orphans inherit too).

Every process started here is stopped by its pid; seeds of random choices are printed."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402

AGENT = agentenv.AGENT
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED")
RUN_TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
TASK_END_EVENTS = ("task_end", "task_failed", "task_skipped", "task_cancelled")
MARK_VAR = "FAULTTEST_MARK"
# The exit code of each run status (contract section 3).
EXIT_OF_STATUS = {"SUCCEEDED": 0, "FAILED": 1}


def seeded(name):
    """A random.Random for one test: seed from DAGY_FAULT_SEED or the clock, printed so a
    failure can be replayed with DAGY_FAULT_SEED=N."""
    seed = int(os.environ.get("DAGY_FAULT_SEED") or time.time() * 1000) % (1 << 31)
    print("%s: seed %d (replay with DAGY_FAULT_SEED=%d)" % (name, seed, seed), file=sys.stderr)
    return random.Random(seed), seed


def new_mark():
    return "mark-" + uuid.uuid4().hex


def spec(tasks, name="fault_flow", max_parallel=4, mark=None):
    """A flow spec; every task gets MARK_VAR=mark in its env so its processes can be found."""
    for t in tasks:
        if mark:
            t.setdefault("env", {})[MARK_VAR] = mark
    return {"spec_version": 1, "name": name, "version": "1.0.0", "max_parallel": max_parallel,
            "tasks": tasks}


def sh(name, script, **kw):
    t = {"name": name, "command": ["sh", "-c", script]}
    t.update(kw)
    return t


# ---- processes ----------------------------------------------------------------------------

def marked_pids(mark):
    """Live (non-zombie) processes whose environment holds MARK_VAR=mark."""
    want = ("%s=%s" % (MARK_VAR, mark)).encode()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want in env and agentenv.pid_alive(int(d)):
            found.append(int(d))
    return found


def kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def children_of(pid):
    """Direct children of pid (from /proc/PID/task/*/children)."""
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def du(path):
    """Bytes used under path (st_blocks, like du), 0 if absent."""
    total = 0
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                total += os.lstat(os.path.join(root, n)).st_blocks * 512
            except OSError:
                pass
    return total


class Agent:
    """One dagy-agent process with its stdout/stderr in files (so a stuck agent cannot block
    us on a full pipe). prefix: argv put before the agent (e.g. valgrind ...)."""

    def __init__(self, args, env, prefix=None, cwd=None):
        self.tmp = tempfile.mkdtemp(prefix="dagy-agent-out-")
        self.out_path = os.path.join(self.tmp, "stdout")
        self.err_path = os.path.join(self.tmp, "stderr")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.argv = list(prefix or []) + [AGENT] + list(args)
        self.proc = subprocess.Popen(self.argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.code = None
        self.max_rss_kb = None

    def lines(self):
        """The JSON lines so far (an unparseable line raises: every line must be JSON)."""
        with open(self.out_path, "rb") as f:
            data = f.read()
        out = []
        for raw in data.splitlines():
            out.append(json.loads(raw.decode("utf-8")))  # strict UTF-8 too
        return out

    def events(self, event_type):
        return [l for l in self.lines() if l.get("event_type") == event_type]

    def wait_event(self, event_type, timeout, pred=None):
        """Waits until a line of event_type (matching pred) appears; returns it or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                for l in self.lines():
                    if l.get("event_type") == event_type and (pred is None or pred(l)):
                        return l
            except ValueError:
                pass  # a line being written
            if self.exited():
                return None
            time.sleep(0.02)
        return None

    def exited(self):
        """Whether the agent has exited, without reaping it (wait() collects its rusage)."""
        if self.code is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def signal(self, sig):
        if not self.exited():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        """Waits for exit; returns the exit code (143 for SIGTERM as the agent reports it, or
        -N if the process was killed by signal N). Raises TimeoutExpired after killing it."""
        try:
            _, status, ru = os.wait4(self.pid, 0) if timeout is None else self._wait4(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.code = self.proc.returncode
        self.max_rss_kb = ru.ru_maxrss
        self._out.close()
        self._err.close()
        return self.code

    def _wait4(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                return pid, status, ru
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout)
            time.sleep(0.02)

    def kill(self):
        """SIGKILL by pid and reap (cleanup path)."""
        if not self.exited():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.wait(10)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass
        for f in (self._out, self._err):
            if not f.closed:
                f.close()

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def report(self):
        """Tail of the output for assertion messages."""
        with open(self.out_path, "rb") as f:
            out = f.read().decode("utf-8", "replace")
        return "exit %s\nstdout (tail):\n%s\nstderr (tail):\n%s" % (
            self.code, out[-5000:], self.stderr()[-3000:])

    def cleanup(self):
        self.kill()
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- checks --------------------------------------------------------------------------------

def final_events(lines):
    """task name -> the last task_end/task_failed/task_skipped/task_cancelled line."""
    last = {}
    for l in lines:
        if l.get("event_type") in TASK_END_EVENTS and l.get("task_name"):
            last[l["task_name"]] = l
    return last


def check_log_agrees_with_exit(tc, lines, code, report=""):
    """The last line is run_end, with the process's exit code; the exit code is one the
    contract allows for the run status logged."""
    tc.assertTrue(lines, "no log line at all\n" + report)
    end = lines[-1]
    tc.assertEqual(end.get("event_type"), "run_end",
                   "the last log line is not run_end\n" + report)
    tc.assertEqual(end.get("exit_code"), code,
                   "run_end says exit %r, the agent exited %r\n%s" % (end.get("exit_code"), code,
                                                                     report))
    status = end.get("status")
    if code in EXIT_OF_STATUS.values() and status in EXIT_OF_STATUS:
        tc.assertEqual(EXIT_OF_STATUS[status], code, report)
    if code == 143:
        tc.assertIn(status, ("FAILED", "CANCELLED"), report)
    return end


def check_items(tc, run_item, task_items, lines, code, task_names, report=""):
    """Run item and task items terminal and consistent with the log and the exit code.
    run_item: dict or None; task_items: name -> dict or None."""
    tc.assertIsNotNone(run_item, "the run item is missing\n" + report)
    tc.assertIn(run_item.get("status"), RUN_TERMINAL,
                "run item not terminal: %r\n%s" % (run_item.get("status"), report))
    end = [l for l in lines if l.get("event_type") == "run_end"]
    if end:
        tc.assertEqual(run_item["status"], end[-1].get("status"),
                       "run item %s, run_end %s\n%s" % (run_item["status"], end[-1].get("status"),
                                                        report))
    if code == 0:
        tc.assertEqual(run_item["status"], "SUCCEEDED", report)
    elif code == 1:
        tc.assertEqual(run_item["status"], "FAILED", report)
    elif code == 143:
        tc.assertIn(run_item["status"], ("FAILED", "CANCELLED"), report)
    last = final_events(lines)
    for name in task_names:
        it = task_items.get(name)
        ev = last.get(name)
        if it is None:
            # A task without an item is PENDING: acceptable only if it never started and the log
            # says nothing about it (it then must not be reported as finished either).
            tc.assertIsNone(ev, "task %s: log says %s, no item\n%s" % (
                name, ev and ev.get("status"), report))
            tc.assertNotEqual(run_item["status"], "SUCCEEDED",
                              "run SUCCEEDED with task %s never recorded\n%s" % (name, report))
            continue
        tc.assertIn(it.get("status"), TERMINAL,
                    "task %s item not terminal: %r\n%s" % (name, it.get("status"), report))
        if ev is not None:
            tc.assertEqual(it["status"], ev.get("status"),
                           "task %s: item %s, log %s\n%s" % (name, it["status"], ev.get("status"),
                                                             report))


def local_items(state_dir, run_id, task_names):
    runs = os.path.join(state_dir, "runs")
    run = _read_json(os.path.join(runs, run_id + ".json"))
    tasks = {}
    for n in task_names:
        tasks[n] = _read_json(os.path.join(runs, run_id, "tasks", n + ".json"))
    return run, tasks


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def assert_no_process_left(tc, mark, timeout=5.0, report=""):
    """No process carrying the mark survives (after a short grace for reaping)."""
    agentenv.wait_for(lambda: not marked_pids(mark), timeout)
    left = marked_pids(mark)
    if left:
        desc = []
        for pid in left:
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    desc.append("%d: %s" % (pid, f.read().replace(b"\0", b" ").decode(
                        "utf-8", "replace")))
            except OSError:
                desc.append(str(pid))
        kill_pids(left)
        tc.fail("processes of the run left behind:\n  %s\n%s" % ("\n  ".join(desc), report))


# ---- DynamoDB status stores ---------------------------------------------------------------

def store_backends():
    """The DynamoDB implementations the status fault tests run against: moto always, dynalite
    when installed (scripts/deps.sh --test installs it; DAGY_FAULT_BACKENDS=moto limits)."""
    import awsenv
    want = (os.environ.get("DAGY_FAULT_BACKENDS") or "moto,dynalite").split(",")
    out = []
    if "moto" in want:
        out.append("moto")
    if "dynalite" in want and awsenv.dynalite_cli():
        out.append("dynalite")
    return out


def start_store(kind):
    """A started moto (no signature checks needed here) or dynalite with the status tables."""
    import awsenv
    s = awsenv.Moto(auth=False) if kind == "moto" else awsenv.DynaliteServer()
    s.start()
    try:
        s.create_status_tables()
    except BaseException:
        s.stop()
        raise
    return s

class StoreClass:
    """Mixin for a test class whose tests share one DynamoDB store: the class's `store_kind`
    ("moto" or "dynalite") is started once (cls.store, cls.ddb client) and stopped after."""
    store_kind = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.store = start_store(cls.store_kind)
        cls.ddb = cls.store.client("dynamodb")

    @classmethod
    def tearDownClass(cls):
        cls.store.stop()
        super().tearDownClass()


def scratch(tc):
    """Gives test case `tc` a scratch directory (tc.tmp, with tc.work and tc.state paths in it) and
    a process mark (tc.mark); the directory and every process carrying the mark go after it."""
    import shutil
    tc.tmp = tempfile.mkdtemp(prefix="dagy-fault-")
    tc.addCleanup(shutil.rmtree, tc.tmp, True)
    tc.mark = new_mark()
    tc.addCleanup(lambda: kill_pids(marked_pids(tc.mark)))
    tc.work = os.path.join(tc.tmp, "work")
    tc.state = os.path.join(tc.tmp, "state")


def _plain(v):
    import decimal
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def ddb_item(client, run_id, task=None):
    import boto3.dynamodb.types
    deser = boto3.dynamodb.types.TypeDeserializer()
    key = {"run_id": {"S": run_id}}
    if task is not None:
        key["task_name"] = {"S": task}
    item = client.get_item(TableName="DAGY_TASK_RUNS" if task else "DAGY_RUNS", Key=key,
                           ConsistentRead=True).get("Item")
    return None if item is None else _plain({k: deser.deserialize(v) for k, v in item.items()})


def ddb_items(client, run_id, task_names):
    return ddb_item(client, run_id), {n: ddb_item(client, run_id, n) for n in task_names}


def queue_run(client, run_id):
    """The launcher's write: the run item QUEUED with status_seq 0."""
    client.put_item(TableName="DAGY_RUNS",
                    Item={"run_id": {"S": run_id}, "status": {"S": "QUEUED"},
                          "status_seq": {"N": "0"}, "executor": {"S": "ecs"}},
                    ConditionExpression="attribute_not_exists(run_id)")


def ddb_env(store, flow_env, endpoint=None, **extra):
    """Environment of a local-flow agent whose status goes to DynamoDB at `endpoint`
    (default: the store itself)."""
    env = store.env(flow_env)
    env.pop("AWS_ENDPOINT_URL", None)
    env["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint or store.endpoint
    env["DAGY_STATUS_BACKEND"] = "dynamodb"
    env.update(extra)
    return env


def agent_env(work, extra=None):
    """The test's environment without DAGY_* variables, with a work directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGY_")}
    env["DAGY_WORK_DIR"] = work
    env.update(extra or {})
    return env


def valid_utf8(tc, data, what):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        tc.fail("%s is not valid UTF-8 (%s): %r" % (what, e, data[max(0, e.start - 40):e.end + 40]))
