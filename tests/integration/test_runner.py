"""python/dagy_runner.py run directly, as the agent runs it: a temp flow directory with a module,
the DAGY_* environment of a callable task, and the result / exit code / stderr checked."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

SRC = os.environ.get("DAGY_TEST_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..")
)
RUNNER = os.path.join(SRC, "python", "dagy_runner.py")

MODULE = textwrap.dedent(
    '''
    import os

    def combine(data, opts, factor=1):
        return {"data": data, "opts": opts, "factor": factor, "cwd": os.getcwd()}

    def boom(message):
        helper(message)

    def helper(message):
        raise ValueError("task blew up: " + message)

    def unserializable():
        return {"when": object()}

    def nothing():
        return None

    def quits(code):
        raise SystemExit(code)

    class Namespace:
        @staticmethod
        def nested(x):
            return x * 2
    '''
)


class RunnerTest(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix="dagy-runner-test-")
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        self.flow = os.path.join(self.dir, "flow")
        os.makedirs(os.path.join(self.flow, "flows"))
        with open(os.path.join(self.flow, "flows", "__init__.py"), "w") as f:
            f.write("")
        with open(os.path.join(self.flow, "flows", "mod.py"), "w") as f:
            f.write(MODULE)
        self.output = os.path.join(self.dir, "out", "result.json")
        os.makedirs(os.path.dirname(self.output))
        self.inputs = os.path.join(self.dir, "inputs.json")

    def run_runner(self, callable_, kwargs, inputs=None, extra_env=None):
        """Runs the runner with a callable task's environment; returns the CompletedProcess."""
        with open(self.inputs, "w") as f:
            json.dump(inputs or {}, f)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": self.flow,
            "PYTHONDONTWRITEBYTECODE": "1",
            "DAGY_CALLABLE": callable_,
            "DAGY_KWARGS": kwargs if isinstance(kwargs, str) else json.dumps(kwargs),
            "DAGY_TASK_OUTPUT": self.output,
            "DAGY_TASK_INPUTS": self.inputs,
            "DAGY_RUN_ID": "run-1",
            "DAGY_TASK_NAME": "t",
            "DAGY_ATTEMPT": "1",
        }
        env.update(extra_env or {})
        return subprocess.run(
            [sys.executable, RUNNER], cwd=self.flow, env=env, capture_output=True, text=True,
            timeout=60,
        )

    def result(self):
        with open(self.output) as f:
            return json.load(f)

    def test_upstream_refs_replaced_at_any_depth(self):
        kwargs = {
            "data": {"upstream": "extract"},
            "opts": {"a": [1, {"upstream": "side"}, {"deep": {"upstream": "extract"}}],
                     "keep": {"upstream": "side", "other": 1}},
            "factor": 3,
        }
        inputs = {"extract": [1, 2, 3], "side": {"k": "v"}}
        p = self.run_runner("flows.mod:combine", kwargs, inputs)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = self.result()
        self.assertEqual(r["data"], [1, 2, 3])
        self.assertEqual(r["opts"]["a"], [1, {"k": "v"}, {"deep": [1, 2, 3]}])
        # Only the exact one-key shape is a reference; anything else passes through.
        self.assertEqual(r["opts"]["keep"], {"upstream": "side", "other": 1})
        self.assertEqual(r["factor"], 3)
        self.assertEqual(os.path.realpath(r["cwd"]), os.path.realpath(self.flow))
        # Written atomically: no temp file left beside the result.
        self.assertEqual(os.listdir(os.path.dirname(self.output)), ["result.json"])

    def test_null_upstream_result_passes_none(self):
        p = self.run_runner("flows.mod:combine", {"data": {"upstream": "x"}, "opts": None},
                            {"x": None})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIsNone(self.result()["data"])

    def test_missing_upstream_names_it(self):
        p = self.run_runner("flows.mod:combine", {"data": {"upstream": "nope"}, "opts": 1},
                            {"extract": 1})
        self.assertEqual(p.returncode, 1)
        self.assertIn("'nope'", p.stderr)
        self.assertIn("kwargs.data", p.stderr)
        self.assertFalse(os.path.exists(self.output))

    def test_exception_prints_traceback_and_exits_1(self):
        p = self.run_runner("flows.mod:boom", {"message": "xyz"})
        self.assertEqual(p.returncode, 1)
        self.assertIn("Traceback (most recent call last)", p.stderr)
        self.assertIn("ValueError: task blew up: xyz", p.stderr)
        self.assertIn("in helper", p.stderr)
        self.assertNotIn("dagy_runner.py", p.stderr)
        self.assertFalse(os.path.exists(self.output))

    def test_import_error_is_clear(self):
        p = self.run_runner("flows.missing_mod:f", {})
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot import module 'flows.missing_mod' (PYTHONPATH=%s)" % self.flow,
                      p.stderr)

    def test_missing_function_is_clear(self):
        p = self.run_runner("flows.mod:absent", {})
        self.assertEqual(p.returncode, 1)
        self.assertIn("has no attribute 'absent'", p.stderr)

    def test_dotted_function_name(self):
        p = self.run_runner("flows.mod:Namespace.nested", {"x": 21})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.result(), 42)

    def test_non_serializable_result(self):
        p = self.run_runner("flows.mod:unserializable", {})
        self.assertEqual(p.returncode, 1)
        self.assertIn("not JSON-serializable", p.stderr)
        self.assertFalse(os.path.exists(self.output))
        self.assertEqual(os.listdir(os.path.dirname(self.output)), [])

    def test_unwritable_output_is_clear(self):
        p = self.run_runner("flows.mod:nothing", {},
                            extra_env={"DAGY_TASK_OUTPUT": os.path.join(self.dir, "no", "r.json")})
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot write DAGY_TASK_OUTPUT", p.stderr)

    def test_output_is_line_buffered(self):
        # The first line must reach the pipe before the function returns.
        with open(os.path.join(self.flow, "flows", "slow.py"), "w") as f:
            f.write("import time\ndef run():\n    print('first', flush=False)\n"
                    "    time.sleep(3)\n    return 1\n")
        with open(self.inputs, "w") as f:
            f.write("{}")
        env = dict(os.environ, PYTHONPATH=self.flow, DAGY_CALLABLE="flows.slow:run",
                   DAGY_KWARGS="{}", DAGY_TASK_OUTPUT=self.output, DAGY_TASK_INPUTS=self.inputs)
        env.pop("PYTHONUNBUFFERED", None)
        p = subprocess.Popen([sys.executable, RUNNER], cwd=self.flow, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait(timeout=30)))
        t0 = time.monotonic()
        line = p.stdout.readline()
        self.assertEqual(line, "first\n")
        self.assertLess(time.monotonic() - t0, 2.5, "output was held back until exit")
        self.assertEqual(p.wait(timeout=30), 0)

    def test_none_result_is_json_null(self):
        p = self.run_runner("flows.mod:nothing", {})
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(self.output) as f:
            self.assertEqual(f.read(), "null")

    def test_sys_exit_code_kept(self):
        p = self.run_runner("flows.mod:quits", {"code": 7})
        self.assertEqual(p.returncode, 7)
        self.assertIn("sys.exit(7)", p.stderr)

    def test_bad_callable_format_exits_2(self):
        for bad in ("flows.mod", ":f", "flows.mod:", "a:b:c", "flows mod:f", ""):
            with self.subTest(bad=bad):
                p = self.run_runner(bad, {})
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("DAGY_CALLABLE", p.stderr)

    def test_bad_kwargs_exits_2(self):
        p = self.run_runner("flows.mod:nothing", "[1, 2]")
        self.assertEqual(p.returncode, 2)
        self.assertIn("DAGY_KWARGS", p.stderr)
        p = self.run_runner("flows.mod:nothing", "{not json")
        self.assertEqual(p.returncode, 2)
        self.assertIn("DAGY_KWARGS", p.stderr)

    def test_kwargs_file_is_read_when_set(self):
        """Kwargs over 128 KiB come in DAGY_KWARGS_FILE (the agent then sets no DAGY_KWARGS)."""
        path = os.path.join(self.dir, "kwargs.json")
        big = "x" * (300 * 1024)
        with open(path, "w") as f:
            json.dump({"data": {"upstream": "a"}, "opts": big}, f)
        p = self.run_runner("flows.mod:combine", "", {"a": [7]},
                            extra_env={"DAGY_KWARGS_FILE": path})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.result()["data"], [7])
        self.assertEqual(self.result()["opts"], big)

    def test_bad_kwargs_file_exits_2_naming_it(self):
        path = os.path.join(self.dir, "kwargs.json")
        for content in ("[1]", "{nope"):
            with open(path, "w") as f:
                f.write(content)
            p = self.run_runner("flows.mod:nothing", "", extra_env={"DAGY_KWARGS_FILE": path})
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("DAGY_KWARGS_FILE", p.stderr)
        p = self.run_runner("flows.mod:nothing", "",
                            extra_env={"DAGY_KWARGS_FILE": path + ".missing"})
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("DAGY_KWARGS_FILE", p.stderr)


if __name__ == "__main__":
    unittest.main()
