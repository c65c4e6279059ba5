"""Whatever bytes a task prints, every log line of dagy-agent is one valid UTF-8 JSON object, a
NUL byte does not cut the line ("abc\\0def" was logged as "abc"), and the pretty view never
passes a task's terminal control sequences (ESC, BEL, CR, C1, bidi overrides) to the operator's
terminal: they are shown as visible escapes."""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentenv import AGENT, Flow  # noqa: E402

# Every byte but newline, then ESC/OSC/CSI sequences, C1 CSI, a bidi override, invalid UTF-8.
HOSTILE = (bytes(b for b in range(256) if b != 10) +
           b"\x1b]0;pwned\x07\x1b[2J\x1b[31mred\rover\xc2\x9b31m\xe2\x80\xaeabc\xed\xa0\x80\xc0\xaf")


def spec(script):
    return {"spec_version": 1, "name": "bytes", "tasks": [
        {"name": "t", "command": ["python3", "-c", script]}]}


class LogBytes(unittest.TestCase):
    def run_raw(self, script, fmt):
        """Runs the agent; returns (exit code, raw stdout bytes)."""
        f = Flow(spec(script))
        self.addCleanup(f.cleanup)
        cmd = [AGENT, "--flow", f.dir, "--state-dir", f.state, "--log-format", fmt]
        p = subprocess.run(cmd, env=f.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        return p.returncode, p.stdout

    def test_nul_byte_does_not_cut_the_logged_line(self):
        code, out = self.run_raw("import sys; sys.stdout.buffer.write(b'abc\\0def\\n')", "json")
        self.assertEqual(code, 0, out)
        lines = [json.loads(x) for x in out.decode("utf-8").splitlines()]
        msgs = [x["message"] for x in lines if x["event_type"] == "task_output"]
        self.assertEqual(msgs, ["abc\x00def"])

    def test_every_line_is_valid_utf8_json_whatever_the_bytes(self):
        script = "import sys; sys.stdout.buffer.write(%r + b'\\n'); sys.stderr.buffer.write(%r)" % (
            HOSTILE, HOSTILE[::-1])
        code, out = self.run_raw(script, "json")
        self.assertEqual(code, 0, out)
        text = out.decode("utf-8")  # strict: raises on any invalid byte
        lines = [json.loads(x) for x in text.splitlines()]
        outs = [x for x in lines if x["event_type"] == "task_output"]
        self.assertEqual(len(outs), 2)
        for x in outs:
            self.assertIn("\x00", x["message"])
            self.assertIn("\x1b", x["message"])
            self.assertIn("pwned" if x["stream"] == "stdout" else "denwp", x["message"])
            self.assertIn("\ufffd", x["message"])  # the invalid bytes

    def test_pretty_view_shows_a_tasks_control_sequences_visibly(self):
        script = "import sys; sys.stdout.buffer.write(%r + b'\\n')" % HOSTILE
        code, out = self.run_raw(script, "pretty")
        self.assertEqual(code, 0, out)
        text = out.decode("utf-8")
        self.assertIn("\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\rover\\u009b31m\\u202eabc", text)
        for bad in ("\x1b]", "\x07", "\x1b[2J", "\x1b[31mred", "\x9b", "\u202e", "\x00", "\x7f"):
            self.assertNotIn(bad, text)


if __name__ == "__main__":
    unittest.main()
