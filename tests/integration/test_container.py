"""The worker image's parts, tested without a Docker engine: entrypoint.sh (shellcheck, environment
checks, exec), Dockerfile.worker's runtime package list against the binaries' NEEDED libraries,
the install layout (the agent finds its Python runner under ../share/dagy), and the agent as PID 1
of a fresh PID namespace (orphans reaped, SIGTERM drained to exit 143) — as in a container."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

SRC = os.environ.get("DAGY_TEST_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..")
)
BUILD = os.environ.get("DAGY_TEST_BUILD") or os.path.join(SRC, "build")
AGENT = os.environ.get("DAGY_AGENT") or os.path.join(BUILD, "dagy-agent")
LAUNCH = os.environ.get("DAGY_LAUNCH") or os.path.join(BUILD, "dagy-launch")
ENTRYPOINT = os.path.join(SRC, "entrypoint.sh")
DOCKERFILE = os.path.join(SRC, "Dockerfile.worker")

# Sanitizer runtimes appear in DAGY_SANITIZE test builds only; the image is built without them.
SANITIZER_LIBS = re.compile(r"^lib(asan|ubsan|lsan|tsan)\.so")

# Programs that must never reach the runtime image.
BUILD_TOOLS = {"build-essential", "gcc", "cc", "make", "cmake", "ninja-build", "pkg-config",
               "libc6-dev", "binutils"}


def dockerfile_stages(text):
    """Splits a Dockerfile into [(stage_name, [instruction, ...])], continuations joined."""
    stages, cur = [], None
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
            cur = (m.group(2) or m.group(1), m.group(1), [])
            stages.append(cur)
        elif cur is not None:
            cur[2].append(line)
    return stages


def apt_installed(instructions):
    """Package names given to `apt-get install` in a stage's RUN instructions."""
    pkgs = set()
    for ins in instructions:
        if not ins.upper().startswith("RUN "):
            continue
        for cmd in re.split(r"&&|;", ins[4:]):
            words = cmd.split()
            if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
                after = words[words.index("install") + 1:]
                pkgs.update(w for w in after if not w.startswith("-"))
    return pkgs


def needed_libs(binary):
    """The DT_NEEDED sonames of an ELF file (readelf -d)."""
    out = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def soname_paths(soname):
    """Where the dynamic linker finds `soname` (ldconfig -p), 64-bit entries first."""
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    paths = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)", line)
        if m and m.group(1) == soname:
            paths.append((0 if "64" in m.group(2) else 1, m.group(3)))
    return [p for _, p in sorted(paths)]


def owning_package(path):
    """The Debian package that ships `path` (dpkg -S), trying the merged-/usr spellings."""
    candidates = [path, os.path.realpath(path)]
    for p in list(candidates):
        if p.startswith("/usr/"):
            candidates.append(p[4:])
        else:
            candidates.append("/usr" + p)
    for p in candidates:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].strip()
    return None


def base_image_packages():
    """Packages every Debian image has: the Essential ones and everything they depend on (the
    set debian:bookworm-slim is built from), computed from this machine's dpkg database."""
    fmt = "${Package}\t${Essential}\t${Pre-Depends}, ${Depends}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    deps, todo = {}, []
    for line in out.splitlines():
        name, essential, rel = (line.split("\t") + ["", ""])[:3]
        alts = [re.split(r"[\s(:]", d.strip())[0] for d in re.split(r"[,|]", rel) if d.strip()]
        deps[name] = alts
        if essential == "yes":
            todo.append(name)
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen or p not in deps:
            continue
        seen.add(p)
        todo.extend(deps[p])
    return seen


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def write_flow(path, tasks, name="container_test"):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "flow_spec.json"), "w") as f:
        json.dump({"spec_version": 1, "name": name, "version": "1.0.0", "tasks": tasks}, f)


def read_state(state_dir, run_id, task=None):
    p = os.path.join(state_dir, "runs", run_id + ".json") if task is None else os.path.join(
        state_dir, "runs", run_id, "tasks", task + ".json")
    with open(p) as f:
        return json.load(f)


class Tmp(unittest.TestCase):
    def setUp(self):
        t = tempfile.TemporaryDirectory(prefix="dagy-container-test-")
        self.addCleanup(t.cleanup)
        self.tmp = t.name

    def stop(self, p):
        """Kills a process we started (and its process group) if it is still running."""
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
        p.wait(timeout=30)


class EntrypointStaticTest(unittest.TestCase):
    def test_shellcheck_clean(self):
        sc = shutil.which("shellcheck")
        if not sc:
            self.skipTest("shellcheck not installed")
        r = subprocess.run([sc, "--shell=sh", ENTRYPOINT], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_posix_shebang_and_set_eu(self):
        with open(ENTRYPOINT) as f:
            text = f.read()
        self.assertTrue(text.startswith("#!/bin/sh\n"))
        self.assertRegex(text, r"(?m)^set -eu$")
        self.assertRegex(text, r'(?m)^exec "\$AGENT" "\$@"$')
        self.assertTrue(os.access(ENTRYPOINT, os.X_OK), "entrypoint.sh must be executable")


class EntrypointEnvTest(Tmp):
    def run_entrypoint(self, env, args=(), agent=None):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        e.update(env)
        if agent:
            e["DAGY_AGENT_BIN"] = agent
        return subprocess.run(["sh", ENTRYPOINT] + list(args), env=e, capture_output=True,
                              text=True, timeout=60)

    def fake_agent(self):
        """A test double for the agent that reports its pid, arguments and a few variables."""
        p = os.path.join(self.tmp, "fake-agent")
        with open(p, "w") as f:
            f.write("#!%s\nimport json, os, sys\n"
                    "print(json.dumps({'pid': os.getpid(), 'argv': sys.argv[1:],"
                    " 'run_id': os.environ.get('DAGY_RUN_ID')}))\n" % sys.executable)
        os.chmod(p, 0o755)
        return p

    def test_missing_everything_names_all_and_exits_2(self):
        r = self.run_entrypoint({}, agent="/nonexistent/agent")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("entrypoint: missing required environment: DAGY_RUN_ID, "
                      "DAGY_ARTIFACT_S3_URI, AWS_REGION", r.stderr)

    def test_missing_one_names_only_it(self):
        r = self.run_entrypoint({"DAGY_RUN_ID": "r1", "AWS_DEFAULT_REGION": "eu-west-1"},
                                agent="/nonexistent/agent")
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing required environment: DAGY_ARTIFACT_S3_URI\n", r.stderr)
        self.assertNotIn("DAGY_RUN_ID", r.stderr.splitlines()[0])

    def test_region_not_needed_for_local_backend(self):
        r = self.run_entrypoint({"DAGY_RUN_ID": "r1", "DAGY_ARTIFACT_S3_URI": "s3://b/k",
                                 "DAGY_STATUS_BACKEND": "local"}, agent=self.fake_agent())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["run_id"], "r1")

    def test_region_required_for_dynamodb(self):
        r = self.run_entrypoint({"DAGY_RUN_ID": "r1", "DAGY_ARTIFACT_S3_URI": "s3://b/k",
                                 "DAGY_STATUS_BACKEND": "dynamodb"}, agent="/nonexistent")
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing required environment: AWS_REGION (or AWS_DEFAULT_REGION)",
                      r.stderr)

    def test_execs_agent_in_place_with_args(self):
        agent = self.fake_agent()
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DAGY_AGENT_BIN": agent}
        p = subprocess.Popen(["sh", ENTRYPOINT, "--flow", "/x y", "--param", "a=b c"], env=e,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        got = json.loads(out)
        # Same pid: the shell exec'd the agent (so in a container the agent is PID 1).
        self.assertEqual(got["pid"], p.pid)
        self.assertEqual(got["argv"], ["--flow", "/x y", "--param", "a=b c"])

    def test_container_mode_with_env_execs_agent(self):
        r = self.run_entrypoint({"DAGY_RUN_ID": "r9", "DAGY_ARTIFACT_S3_URI": "s3://b/k",
                                 "AWS_REGION": "us-east-1"}, agent=self.fake_agent())
        self.assertEqual(r.returncode, 0, r.stderr)
        got = json.loads(r.stdout)
        self.assertEqual((got["argv"], got["run_id"]), ([], "r9"))

    def test_other_program_runs(self):
        r = self.run_entrypoint({}, ["sh", "-c", "echo other $0", "x"], agent="/nonexistent")
        self.assertEqual((r.returncode, r.stdout), (0, "other x\n"))


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DOCKERFILE) as f:
            cls.stages = dockerfile_stages(f.read())
        cls.runtime = cls.stages[-1]
        cls.runtime_pkgs = apt_installed(cls.runtime[2])

    def test_multi_stage_bookworm(self):
        self.assertGreaterEqual(len(self.stages), 2)
        self.assertEqual(self.stages[0][1], "debian:bookworm")
        self.assertEqual(self.runtime[1], "debian:bookworm-slim")

    def test_runtime_has_no_build_tools(self):
        self.assertEqual(self.runtime_pkgs & BUILD_TOOLS, set())
        self.assertFalse([p for p in self.runtime_pkgs if p.endswith("-dev")], self.runtime_pkgs)
        self.assertTrue({"python3", "python3-pip", "ca-certificates"} <= self.runtime_pkgs)

    def test_runtime_packages_provide_every_needed_library(self):
        base = base_image_packages()
        self.assertIn("libc6", base)  # sanity of the closure computation
        # dagy-agent is a static shim (agent/shim/shim.c) that execs dagy-agent-core beside it.
        self.assertEqual(needed_libs(AGENT), [], "the dagy-agent shim must be static")
        core = os.path.join(os.path.dirname(AGENT), "dagy-agent-core")
        for binary in (core, LAUNCH):
            libs = needed_libs(binary)
            self.assertTrue(libs, "%s has no NEEDED entries?" % binary)
            for soname in libs:
                if SANITIZER_LIBS.match(soname):
                    continue
                paths = soname_paths(soname)
                self.assertTrue(paths, "%s: %s not known to ldconfig" % (binary, soname))
                pkg = owning_package(paths[0])
                self.assertIsNotNone(pkg, "%s: no package ships %s" % (binary, paths[0]))
                self.assertTrue(
                    pkg in self.runtime_pkgs or pkg in base,
                    "%s needs %s from package %s, which is neither in the runtime stage's "
                    "apt-get install list %s nor in the base image"
                    % (os.path.basename(binary), soname, pkg, sorted(self.runtime_pkgs)))

    def test_every_runtime_package_exists_in_bookworm(self):
        for pkg in sorted(self.runtime_pkgs):
            r = subprocess.run(["apt-cache", "show", "--no-all-versions", pkg],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, "apt-cache show %s: %s" % (pkg, r.stderr))
            self.assertIn("Package: %s" % pkg, r.stdout)

    def test_non_root_exec_entrypoint_labels(self):
        ins = self.runtime[2]
        users = [i.split(None, 1)[1] for i in ins if i.upper().startswith("USER ")]
        self.assertTrue(users and users[-1].split(":")[0] not in ("0", "root"), users)
        eps = [i.split(None, 1)[1] for i in ins if i.upper().startswith("ENTRYPOINT ")]
        self.assertEqual(len(eps), 1)
        self.assertEqual(json.loads(eps[0]), ["/opt/dagy/bin/entrypoint.sh"])  # exec form
        labels = " ".join(i for i in ins if i.upper().startswith("LABEL "))
        for key in ("version", "source", "title"):
            self.assertIn("org.opencontainers.image.%s=" % key, labels)


class InstallLayoutTest(Tmp):
    def test_installed_agent_finds_runner_in_share(self):
        prefix = os.path.join(self.tmp, "opt")
        r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(prefix, "share/dagy/dagy_runner.py")))
        flow = os.path.join(self.tmp, "flow")
        # The callable's result must reach the downstream command task through the runner.
        write_flow(flow, [{"name": "py", "callable": "mod:f", "kwargs": {"x": 20}},
                          {"name": "check", "upstream": ["py"], "command": [
                              "sh", "-c", 'grep -q "\\"answer\\": *42" "$DAGY_TASK_INPUTS"']}])
        with open(os.path.join(flow, "mod.py"), "w") as f:
            f.write("def f(x):\n    return {'answer': x + 22}\n")
        env = {k: v for k, v in os.environ.items() if k != "DAGY_PYTHON_RUNNER"}
        env.update(DAGY_STATUS_BACKEND="local", DAGY_WORK_DIR=os.path.join(self.tmp, "work"))
        r = subprocess.run([os.path.join(prefix, "bin", "dagy-agent"), "--flow", flow,
                            "--state-dir", os.path.join(self.tmp, "state"),
                            "--log-format", "json"], cwd=self.tmp, env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])


@unittest.skipUnless(os.geteuid() == 0, "needs root for unshare --pid")
class Pid1Test(Tmp):
    @classmethod
    def setUpClass(cls):
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            raise unittest.SkipTest("unshare --pid unavailable: %s" % r.stderr.decode())

    def start(self, flow, run_id, extra_args=(), extra_env=None):
        """Runs entrypoint.sh (so the agent) as PID 1 of a new PID namespace."""
        env = dict(os.environ, DAGY_AGENT_BIN=AGENT, DAGY_STATUS_BACKEND="local",
                   DAGY_WORK_DIR=os.path.join(self.tmp, "work"))
        env.update(extra_env or {})
        self.state = os.path.join(self.tmp, "state")
        self.log = open(os.path.join(self.tmp, "agent.log"), "w+")
        self.addCleanup(self.log.close)
        p = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", ENTRYPOINT, "--flow", flow,
             "--run-id", run_id, "--state-dir", self.state, "--log-format", "json"]
            + list(extra_args), env=env, cwd=self.tmp, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.addCleanup(self.stop, p)
        return p

    def log_events(self):
        self.log.flush()
        with open(self.log.name) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def log_text(self):
        with open(self.log.name) as f:
            return f.read()[-4000:]

    def test_orphans_reaped_by_agent_as_pid1(self):
        flow = os.path.join(self.tmp, "flow")
        write_flow(flow, [
            # Double fork: each `sleep` is orphaned at once and re-parented to PID 1 (the agent).
            {"name": "orphans", "command": ["sh", "-c",
             "(sleep 0.2 &) ; (sleep 0.3 &) ; (sleep 0.4 &) ; exit 0"]},
            {"name": "no_zombies", "command": [sys.executable, "check.py"],
             "upstream": ["orphans"]},
        ])
        with open(os.path.join(flow, "check.py"), "w") as f:
            f.write(textwrap.dedent('''
                import os, sys, time
                with open("/proc/1/cmdline", "rb") as f:
                    init = f.read().split(b"\\0")[0].decode()
                if os.path.basename(init) != "dagy-agent":
                    sys.exit("PID 1 is %r, not dagy-agent" % init)
                time.sleep(1.0)  # the orphans have exited by now
                zombies = []
                for pid in filter(str.isdigit, os.listdir("/proc")):
                    try:
                        with open("/proc/%s/stat" % pid) as f:
                            stat = f.read()
                    except OSError:
                        continue
                    if stat[stat.rindex(")") + 2] == "Z":
                        zombies.append(stat[:stat.rindex(")") + 1])
                if zombies:
                    sys.exit("zombies in the namespace: %s" % zombies)
                print("no zombies")
            '''))
        p = self.start(flow, "pid1-orphans")
        rc = p.wait(timeout=120)
        self.assertEqual(rc, 0, self.log_text())
        self.assertEqual(read_state(self.state, "pid1-orphans")["status"], "SUCCEEDED")

    def ns_init_pid(self, unshare_pid):
        """The pid (in our namespace) of the unshare'd child: PID 1 of the new namespace."""
        try:
            with open("/proc/%d/task/%d/children" % (unshare_pid, unshare_pid)) as f:
                kids = f.read().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def sigterm_when_started(self, p, task):
        """Waits until `task` started, then sends SIGTERM to the namespace's PID 1 (the agent)."""
        wait_for(lambda: any(e.get("event_type") == "task_start" and e.get("task_name") == task
                             for e in self.log_events()), 60, "task_start of " + task)
        init = wait_for(lambda: self.ns_init_pid(p.pid), 10, "the namespace's PID 1")
        with open("/proc/%d/cmdline" % init, "rb") as f:
            self.assertIn(b"dagy-agent", f.read())
        t0 = time.monotonic()
        os.kill(init, signal.SIGTERM)
        return t0

    def test_sigterm_drains_running_task_then_exits_143(self):
        flow = os.path.join(self.tmp, "flow")
        write_flow(flow, [
            {"name": "long", "command": ["sh", "-c", "sleep 1.5; echo drained > drained.txt"]},
            {"name": "after", "command": ["true"], "upstream": ["long"]},
        ])
        p = self.start(flow, "pid1-drain", ["--drain-seconds", "20"])
        t0 = self.sigterm_when_started(p, "long")
        rc = p.wait(timeout=60)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 143, self.log_text())
        self.assertLess(elapsed, 15, "drain should end when the running task finishes")
        # The running task was allowed to finish; nothing new was started.
        self.assertTrue(os.path.exists(os.path.join(flow, "drained.txt")))
        self.assertEqual(read_state(self.state, "pid1-drain", "long")["status"], "SUCCEEDED")
        self.assertEqual(read_state(self.state, "pid1-drain", "after")["status"], "CANCELLED")
        run = read_state(self.state, "pid1-drain")
        self.assertEqual(run["status"], "FAILED")
        self.assertEqual(run["error_message"], "Worker shutdown requested via SIGTERM")
        self.assertTrue(any(e.get("event_type") == "shutdown_requested"
                            for e in self.log_events()))

    def test_sigterm_kills_task_after_drain_timeout(self):
        flow = os.path.join(self.tmp, "flow")
        write_flow(flow, [{"name": "stuck", "command": ["sleep", "60"]}])
        p = self.start(flow, "pid1-kill", ["--drain-seconds", "1"])
        t0 = self.sigterm_when_started(p, "stuck")
        rc = p.wait(timeout=60)
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 143, self.log_text())
        self.assertLess(elapsed, 20, "agent must stop well inside ECS's 30 s stopTimeout")
        self.assertEqual(read_state(self.state, "pid1-kill", "stuck")["status"], "CANCELLED")
        self.assertEqual(read_state(self.state, "pid1-kill")["error_message"],
                         "Worker shutdown requested via SIGTERM")


if __name__ == "__main__":
    unittest.main()
