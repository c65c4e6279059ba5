"""agentenv.py - helpers for end-to-end tests of the dagy-agent binary: write a flow to a temp
directory (or an archive), run the agent with a timeout, parse its JSON log lines, read the local
state directory."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile

AGENT = os.environ.get("DAGY_AGENT") or os.path.join(
    os.environ.get("DAGY_TEST_BUILD", "build"), "dagy-agent")


def encode_name(name):
    """proto_name_encode of a valid name (file names of the state directory): a leading '.'
    becomes %2E, and so does any byte outside [A-Za-z0-9_.-] (the "[" and "]" of a map child's
    "NAME[7]": %5B, %5D); nothing else changes."""
    out = []
    for i, c in enumerate(name):
        plain = (c.isascii() and (c.isalnum() or c in "_-.")) and not (c == "." and i == 0)
        out.append(c if plain else "".join("%%%02X" % b for b in c.encode()))
    return "".join(out)


class Flow:
    """A flow written to a fresh temp directory; removed by cleanup()."""

    def __init__(self, spec, files=None):
        self.tmp = tempfile.mkdtemp(prefix="dagy-test-")
        self.dir = os.path.join(self.tmp, "flow")
        os.makedirs(self.dir)
        self.state = os.path.join(self.tmp, "state")
        self.work = os.path.join(self.tmp, "work")
        with open(os.path.join(self.dir, "flow_spec.json"), "w") as f:
            json.dump(spec, f) if not isinstance(spec, str) else f.write(spec)
        for name, content in (files or {}).items():
            path = os.path.join(self.dir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(content)

    def zip(self, name="artifact.zip"):
        path = os.path.join(self.tmp, name)
        with zipfile.ZipFile(path, "w") as z:
            for root, _, files in os.walk(self.dir):
                for fn in files:
                    full = os.path.join(root, fn)
                    z.write(full, os.path.relpath(full, self.dir))
        return path

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGY_")}
        env["DAGY_WORK_DIR"] = self.work
        env.update(extra or {})
        return env

    def run(self, *args, flow=None, env=None, timeout=60):
        cmd = [AGENT, "--flow", flow or self.dir, "--state-dir", self.state,
               "--log-format", "json"] + list(args)
        p = subprocess.run(cmd, env=self.env(env), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        return Result(p.returncode, p.stdout, p.stderr, self)

    def start(self, *args, env=None):
        cmd = [AGENT, "--flow", self.dir, "--state-dir", self.state, "--log-format", "json"] + \
            list(args)
        return subprocess.Popen(cmd, env=self.env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


class Result:
    def __init__(self, code, out, err, flow):
        self.code = code
        self.out = out.decode("utf-8", "replace")
        self.err = err.decode("utf-8", "replace")
        self.flow = flow
        self.lines = []
        for line in self.out.splitlines():
            self.lines.append(json.loads(line))  # every stdout line must be JSON

    def events(self, event_type, task=None):
        return [l for l in self.lines if l["event_type"] == event_type and
                (task is None or l.get("task_name") == task)]

    @property
    def run_id(self):
        return self.lines[0]["run_id"]

    def run_item(self):
        return read_json(os.path.join(self.flow.state, "runs", encode_name(self.run_id) + ".json"))

    def task_item(self, name):
        return read_json(os.path.join(self.flow.state, "runs", encode_name(self.run_id), "tasks",
                                      encode_name(name) + ".json"))

    def output(self, task, stream="stdout"):
        return [l["message"] for l in self.events("task_output", task) if l["stream"] == stream]

    def __repr__(self):
        return "exit %d\nstdout:\n%s\nstderr:\n%s" % (self.code, self.out[-4000:],
                                                        self.err[-2000:])


def read_text(path):
    with open(path) as f:
        return f.read()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(pred, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def stop(proc):
    """Stops a process started by a test, by its pid, whatever state it is in."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
