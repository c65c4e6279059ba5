"""The Python SDK's Task.map: the spec it writes ("map" with over/max_parallel/allow_failures,
{"map_item": true} for the mapped argument, unmapped(...) results passed whole), the SDK's own
checks of a map spec matching the agent's messages, its DOT matching `dagy-agent --graph`, and
a flow built with `dagy build` and run by dagy-agent: each child gets its element with its JSON
type, the map's result is the list of the children's results in order."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402

SRC = os.environ.get("DAGY_TEST_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, "python"))
import dagy  # noqa: E402
from dagy import spec as dspec  # noqa: E402

FLOW = textwrap.dedent('''
    from dagy import DAG, task, unmapped


    @task
    def parts():
        return [{"id": 1, "n": 9007199254740993}, {"id": 2, "n": 3}, "three", 4]


    @task
    def settings():
        return {"scale": 10}


    @task(retries=1, retry_delay_seconds=0)
    def work(part, cfg, label):
        return {"part": part, "scale": cfg["scale"], "label": label}


    @task
    def total(results):
        return len(results)


    with DAG("sdk_map", version="1.0.0") as dag:
        ps = parts()
        done = work.map(ps, cfg=unmapped(settings()), label="x", max_parallel=2)
        total(done)
''')


class MapSdkTest(unittest.TestCase):
    def test_map_writes_the_spec(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "flows", "mapflow.py")
            os.makedirs(os.path.dirname(path))
            with open(path, "w") as f:
                f.write(FLOW)
            sys.path.insert(0, tmp)
            try:
                import importlib
                mod = importlib.import_module("flows.mapflow")
                spec = mod.dag.to_spec(root=tmp)
            finally:
                sys.path.remove(tmp)
                for k in [k for k in sys.modules if k == "flows" or k.startswith("flows.")]:
                    del sys.modules[k]
        work = next(t for t in spec["tasks"] if t["name"] == "work")
        self.assertEqual(work["map"], {"over": "parts", "max_parallel": 2})
        self.assertEqual(work["kwargs"], {"part": {"map_item": True},
                                          "cfg": {"upstream": "settings"}, "label": "x"})
        self.assertEqual(work["upstream"], ["parts", "settings"])
        dspec.validate(spec)

    def test_map_needs_exactly_one_direct_result(self):
        with dagy.DAG("m2"):
            a = dagy.command("a", ["true"])
            b = dagy.command("b", ["true"])

            @dagy.task
            def f(x, y):
                return x
            f.__module__ = "flows.m"
            with self.assertRaisesRegex(dagy.DagyError, r"exactly one argument .*found x, y"):
                f.map(a, b)
            with self.assertRaisesRegex(dagy.DagyError, r"found none"):
                f.map(1, 2)
            with self.assertRaisesRegex(dagy.DagyError, r"max_parallel=0: must be an integer >= 1"):
                f.map(a, 2, max_parallel=0)
            with self.assertRaisesRegex(dagy.DagyError, r"literal \{\"map_item\": true\}"):
                f(x={"map_item": True}, y=1)
            f.map(a, dagy.unmapped(b), allow_failures=1)

    def test_command_map_over(self):
        with dagy.DAG("m3") as d:
            files = dagy.command("files", ["sh", "-c", "echo '[\"a\", \"b\"]' > $DAGY_TASK_OUTPUT"])
            dagy.command("each", ["echo", "{{ item }}"], map_over=files, map_max_parallel=4)
            with self.assertRaisesRegex(dagy.DagyError, r"need map_over="):
                dagy.command("bad", ["true"], map_allow_failures=1)
        s = d.to_spec()
        each = s["tasks"][1]
        self.assertEqual(each["map"], {"over": "files", "max_parallel": 4})
        self.assertEqual(each["upstream"], ["files"])
        dspec.validate(s)
        f = agentenv.Flow(s)
        self.addCleanup(f.cleanup)
        res = f.run()
        self.assertEqual(res.code, 0, res)
        self.assertEqual(res.output("each[1]"), ["b"])

    def test_python_checks_give_the_agents_messages(self):
        base = {"spec_version": 1, "name": "f", "tasks": [{"name": "src", "command": ["true"]}]}
        cases = [
            ({"name": "x", "command": ["echo", "{{ item }}"]},
             'task "x": command[1]: {{ item }} is only defined in a task with "map" (it is one '
             "element of the array mapped over)"),
            ({"name": "m", "command": ["true"], "map": {"over": "src"}},
             'task "m": map: field "over": "src" is not listed in "upstream" (a map runs over '
             "the result of a direct upstream task)"),
            ({"name": "m", "command": ["true"], "upstream": ["src"],
              "map": {"over": "src", "max_parallel": 0}},
             'task "m": map: field "max_parallel": must be an integer >= 1'),
            ({"name": "m", "command": ["true"], "upstream": ["src"], "map": {"over": "src",
                                                                              "x": 1}},
             'task "m": map: unknown field "x" (allowed: over, max_parallel, allow_failures)'),
        ]
        for task, want in cases:
            s = dict(base, tasks=base["tasks"] + [task])
            with self.assertRaises(dspec.SpecError) as cm:
                dspec.validate(s)
            self.assertEqual(str(cm.exception), want)
            f = agentenv.Flow(s)
            self.addCleanup(f.cleanup)
            res = f.run()
            self.assertEqual(res.code, 2, res)
            self.assertIn(want, res.events("run_end")[0]["error"])

    def test_dot_matches_the_agent(self):
        s = {"spec_version": 1, "name": "f", "tasks": [
            {"name": "src", "command": ["true"]},
            {"name": "m", "command": ["echo", "{{ item }}"], "upstream": ["src"],
             "map": {"over": "src", "max_parallel": 3, "allow_failures": 1}},
            {"name": "after", "command": ["true"], "upstream": ["m"]}]}
        f = agentenv.Flow(s)
        self.addCleanup(f.cleanup)
        p = subprocess.run([agentenv.AGENT, "--flow", f.dir, "--graph"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(dspec.to_dot(s), p.stdout)

    def test_built_flow_runs_each_child_with_its_element(self):
        with tempfile.TemporaryDirectory(prefix="dagy-map-sdk-") as tmp:
            os.makedirs(os.path.join(tmp, "flows"))
            with open(os.path.join(tmp, "flows", "mapflow.py"), "w") as f:
                f.write(FLOW)
            env = dict(os.environ, PYTHONPATH=os.path.join(SRC, "python"),
                       PYTHONDONTWRITEBYTECODE="1", DAGY_AGENT=os.path.abspath(agentenv.AGENT))
            p = subprocess.run([sys.executable, "-m", "dagy", "build", "flows/mapflow.py",
                                "--root", tmp, "--output", os.path.join(tmp, "a.zip")],
                               cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["checked_by"], "dagy-agent")
            aenv = {k: v for k, v in os.environ.items()
                    if not k.startswith("DAGY_") and k != "PYTHONPATH"}
            a = subprocess.run([os.path.abspath(agentenv.AGENT), "--flow", os.path.join(tmp, "a.zip"),
                                "--state-dir", os.path.join(tmp, "state"), "--log-format",
                                "json"], env=dict(aenv, DAGY_WORK_DIR=os.path.join(tmp, "w")),
                               cwd=tmp, capture_output=True, timeout=120)
            res = agentenv.Result(a.returncode, a.stdout, a.stderr, None)
            self.assertEqual(a.returncode, 0, res)
            ends = {e["task_name"]: e["status"] for e in res.events("task_end")}
            self.assertEqual(ends["work[0]"], "SUCCEEDED")
            self.assertEqual(len([n for n in ends if n.startswith("work[")]), 4)
            # the map's result, as the next task got it (results dir of the agent)
            start = res.events("run_start")[0]
            with open(os.path.join(start["results_dir"], "work.json")) as f:
                got = json.load(f)
            self.assertEqual(got, [
                {"part": {"id": 1, "n": 9007199254740993}, "scale": 10, "label": "x"},
                {"part": {"id": 2, "n": 3}, "scale": 10, "label": "x"},
                {"part": "three", "scale": 10, "label": "x"},
                {"part": 4, "scale": 10, "label": "x"}])
            with open(os.path.join(start["results_dir"], "total.json")) as f:
                self.assertEqual(json.load(f), 4)


if __name__ == "__main__":
    unittest.main()
