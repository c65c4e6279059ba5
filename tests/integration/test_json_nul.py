"""A "\\u0000" escape in JSON that people or tasks write would silently cut the string (cJSON ends
strings at the NUL): task "a\\u0000; rm -rf /" ran as "a". The agent and dagy-launch refuse such
specs, parameters and batch files with exit 2, naming the task and field (or the parameter, or
the request), before anything runs or is written."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launchenv  # noqa: E402
from agentenv import Flow  # noqa: E402

WHY = "contains a NUL character (\\u0000), which is not allowed"


def spec_text(task_name, command):
    """flow_spec.json as text: json.dumps would write the NUL escapes just the same."""
    return json.dumps({"spec_version": 1, "name": "nul", "tasks": [
        {"name": "ok", "command": ["true"]},
        {"name": task_name, "command": command, "upstream": ["ok"]}]})


class AgentNul(unittest.TestCase):
    def flow(self, text):
        f = Flow(text)
        self.addCleanup(f.cleanup)
        return f

    def test_nul_in_spec_is_exit_2_naming_task_and_field(self):
        cases = [(spec_text("a\u0000; rm -rf /", ["true"]), 'task #2: field "name": ' + WHY),
                 (spec_text("x", ["sh", "-c", "echo a\u0000; touch /tmp/pwned"]),
                  'task "x": field "command": ' + WHY)]
        for text, want in cases:
            self.assertIn("\\u0000", text)
            f = self.flow(text)
            r = f.run()
            self.assertEqual(r.code, 2, r)
            self.assertIn(want, r.lines[-1]["error"])
            self.assertEqual(r.events("task_start"), [])

    def test_nul_in_parameters_is_exit_2_naming_the_parameter(self):
        f = self.flow(spec_text("x", ["echo", "{{ parameters.day }}"]))
        r = f.run(env={"DAGY_PARAMETERS": '{"day": "2024\\u0000; rm -rf /"}'})
        self.assertEqual(r.code, 2, r)
        # Configuration errors are config_error JSON lines in json mode (docs/agent.md).
        self.assertIn("DAGY_PARAMETERS: the string at day " + WHY, r.lines[-1]["error"])
        path = os.path.join(f.tmp, "params.json")
        with open(path, "w") as fh:
            fh.write('{"day": {"deep": ["\\u0000"]}}')
        r = f.run("--params-json", "@" + path)
        self.assertEqual(r.code, 2, r)
        self.assertIn("--params-json: the string at day.deep[0] " + WHY, r.lines[-1]["error"])
        self.assertFalse(os.path.exists(os.path.join(f.state, "runs")) and
                         os.listdir(os.path.join(f.state, "runs")))
        # An escaped backslash is not a NUL: the parameter arrives with its six characters.
        r = f.run("--params-json", '{"day": "a\\\\u0000"}')
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.output("x"), ["a\\u0000"])


class LaunchNul(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        try:
            r = cls.L.launch("init-tables")
            assert r.returncode == 0, r.stderr
        except BaseException:
            cls.L.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.L.stop()

    def test_nul_in_params_and_batch_is_exit_2_before_any_call(self):
        before = len(self.L.proxy.records)
        r = self.L.launch("run", "--flow", "etl", "--org", launchenv.ORG, "--run-id", "nul-1",
                          "--params-json", '{"day": "a\\u0000b"}')
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--params-json: the string at day " + WHY, r.stderr)
        batch = self.L.path("batch.json")
        with open(batch, "w") as f:
            f.write('[{"flow_name": "etl", "run_id": "good-1"}, '
                    '{"flow_name": "etl", "run_id": "a\\u0000b"}]')
        r = self.L.launch("batch", "--file", batch, "--org", launchenv.ORG)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--file: the string at [1].run_id " + WHY, r.stderr)
        self.assertIsNone(self.L.run_item("a"))
        self.assertIsNone(self.L.run_item("good-1"))
        self.assertIsNone(self.L.run_item("nul-1"))
        self.assertEqual(len(self.L.proxy.records), before)


if __name__ == "__main__":
    unittest.main()
