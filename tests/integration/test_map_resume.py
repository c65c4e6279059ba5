"""Resume of a map task (docs/agent.md, "Map tasks" and "Resume"), local status: a 12-child map
SIGTERMed halfway reruns only the children that did not succeed (markers, task_reused lines) and
its result and the join's input are byte-identical to a full run's; a map that succeeded is
reused whole (no child runs, no child item); a changed `over` result reruns the children; a
tampered stored child result reruns that child, a tampered map result rebuilds the map from its
reused children. The DynamoDB variant (status in moto, results in an S3 bucket) is in
test_map_ddb.py."""

import hashlib
import json
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402

N = 12


def child_cmd():
    """Marks each start (one line per run), then writes 3 * item after a short sleep."""
    return ["sh", "-c", "echo x >> \"$MARKS/$DAGY_MAP_INDEX\"; sleep 0.2; "
                        "echo $(( DAGY_MAP_ITEM * 3 )) > \"$DAGY_TASK_OUTPUT\""]


def make_spec(items, marks, boom=False, **mapopts):
    tasks = [
        {"name": "src", "command": ["sh", "-c", "printf '%s' '" + json.dumps(items) +
                                    "' > \"$DAGY_TASK_OUTPUT\""]},
        {"name": "m", "command": child_cmd(), "upstream": ["src"], "env": {"MARKS": marks},
         "map": dict({"over": "src", "max_parallel": 2}, **mapopts)},
        # {{ run_id }}: never reused, so every run shows what the map fed it
        {"name": "join", "command": ["sh", "-c", "cat \"$DAGY_TASK_INPUTS\"; : {{ run_id }}"],
         "upstream": ["m"]},
    ]
    if boom:
        tasks.append({"name": "boom", "command": ["false"], "upstream": ["join"]})
    return {"spec_version": 1, "name": "mapresume", "tasks": tasks}


class MapResumeTest(unittest.TestCase):
    def setUp(self):
        self.f = agentenv.Flow({"spec_version": 1, "name": "x", "tasks": []})
        self.addCleanup(self.f.cleanup)
        self.marks = os.path.join(self.f.tmp, "marks")
        os.makedirs(self.marks)

    def write_spec(self, items=None, boom=False, **mapopts):
        s = make_spec(list(range(N)) if items is None else items, self.marks, boom, **mapopts)
        with open(os.path.join(self.f.dir, "flow_spec.json"), "w") as fh:
            json.dump(s, fh)

    def starts(self, k):
        path = os.path.join(self.marks, str(k))
        return len(agentenv.read_text(path).splitlines()) if os.path.exists(path) else 0

    def clear_marks(self):
        for name in os.listdir(self.marks):
            os.unlink(os.path.join(self.marks, name))

    def item(self, run_id, name):
        return agentenv.read_json(os.path.join(self.f.state, "runs", agentenv.encode_name(run_id),
                                               "tasks", agentenv.encode_name(name) + ".json"))

    def result_bytes(self, run_id, name):
        with open(self.item(run_id, name)["result_path"], "rb") as fh:
            return fh.read()

    def interrupted_run(self):
        """Runs the flow as run "ra" and SIGTERMs it once about half the children succeeded."""
        p = self.f.start("--run-id", "ra", env={"DAGY_DRAIN_SECONDS": "0",
                                                "DAGY_KILL_GRACE_SECONDS": "0.5"})
        try:
            done = lambda: sum(os.path.exists(os.path.join(
                self.f.state, "runs", "ra", "tasks", agentenv.encode_name("m[%d]" % k) +
                ".json")) and self.item("ra", "m[%d]" % k)["status"] == "SUCCEEDED"
                for k in range(N))
            self.assertTrue(agentenv.wait_for(lambda: done() >= N // 2, 30))
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
        finally:
            agentenv.stop(p)
        res = agentenv.Result(p.returncode, out, err, self.f)
        self.assertEqual(res.code, 143, res)
        ok = {k for k in range(N) if self.item("ra", "m[%d]" % k)["status"] == "SUCCEEDED"}
        self.assertTrue(N // 2 <= len(ok) < N, ok)
        return res, ok

    def full_run(self, run_id="full"):
        res = self.f.run("--run-id", run_id)
        self.assertEqual(res.code, 0, res)
        return res

    def test_sigterm_halfway_then_resume_runs_only_the_missing_children(self):
        self.write_spec()
        first, ok = self.interrupted_run()
        self.assertEqual(self.item("ra", "m")["status"], "CANCELLED")
        started_before = {k: self.starts(k) for k in range(N)}
        res = self.f.run("--run-id", "rb", "--resume-from", "ra")
        self.assertEqual(res.code, 0, res)
        reused = {e["task_name"] for e in res.events("task_reused")}
        self.assertEqual(reused, {"src"} | {"m[%d]" % k for k in ok})
        started = {e["task_name"] for e in res.events("task_start")}
        self.assertEqual(started, {"m", "join"} | {"m[%d]" % k for k in range(N) if k not in ok})
        for k in range(N):  # a reused child did not run again; the others ran once more
            self.assertEqual(self.starts(k), started_before[k] + (k not in ok), k)
        for k in ok:
            it = self.item("rb", "m[%d]" % k)
            self.assertEqual((it["status"], it["reused_from"], it["attempt"]),
                             ("SUCCEEDED", "ra", 0))
            self.assertEqual(it["result_sha256"], self.item("ra", "m[%d]" % k)["result_sha256"])
            self.assertEqual(self.result_bytes("rb", "m[%d]" % k),
                             self.result_bytes("ra", "m[%d]" % k))
        self.assertEqual(res.run_item()["tasks_reused"], 1 + len(ok))
        # byte-identical to a full run's: the map's result and the join's input
        full = self.full_run()
        self.assertEqual(self.result_bytes("rb", "m"), self.result_bytes("full", "m"))
        self.assertEqual(self.item("rb", "m")["result_sha256"],
                         self.item("full", "m")["result_sha256"])
        self.assertEqual(res.output("join"), full.output("join"))
        self.assertEqual(json.loads(res.output("join")[0]), {"m": [3 * k for k in range(N)]})
        # a resume of the resume reuses the map whole, from the run that built its result
        again = self.f.run("--run-id", "rc", "--resume-from", "rb")
        self.assertEqual(again.code, 0, again)
        self.assertEqual([e["task_name"] for e in again.events("task_reused")], ["src", "m"])
        self.assertEqual(self.item("rc", "m")["reused_from"], "rb")
        self.assertEqual(again.output("join"), full.output("join"))

    def test_a_map_that_succeeded_is_reused_whole_and_a_changed_over_reruns_its_children(self):
        self.write_spec(boom=True)
        first = self.f.run("--run-id", "sa")
        self.assertEqual(first.code, 1, first)
        self.assertEqual(self.item("sa", "m")["status"], "SUCCEEDED")
        self.clear_marks()
        again = self.f.run("--run-id", "sb", "--resume-from", "sa")
        self.assertEqual(again.code, 1, again)
        self.assertEqual([e["task_name"] for e in again.events("task_reused")], ["src", "m"])
        self.assertEqual({e["task_name"] for e in again.events("task_start")}, {"join", "boom"})
        self.assertEqual(os.listdir(self.marks), [])  # no child ran
        self.assertEqual(again.output("join"), first.output("join"))
        self.assertEqual(self.item("sb", "m")["reused_from"], "sa")
        kids = [n for n in os.listdir(os.path.join(self.f.state, "runs", "sb", "tasks"))
                if n.startswith("m%5B")]
        self.assertEqual(kids, [])  # a map reused whole writes no child items
        # element 3 changes: src's definition changed, so every child's fingerprint did
        items = list(range(N))
        items[3] = 100
        self.write_spec(items, boom=True)
        third = self.f.run("--run-id", "sc", "--resume-from", "sb")
        self.assertEqual(third.code, 1, third)
        self.assertEqual(third.events("task_reused"), [])
        self.assertEqual(sum(self.starts(k) for k in range(N)), N)
        self.assertEqual(json.loads(third.output("join")[0]), {"m": [3 * v for v in items]})
        self.assertNotEqual(self.item("sc", "m[3]")["task_hash"],
                            self.item("sa", "m[3]")["task_hash"])
        # a changed map spec (allow_failures) makes the map itself run again; its children,
        # whose definitions did not change, are reused
        self.clear_marks()
        self.write_spec(items, boom=True, allow_failures=2)
        fourth = self.f.run("--run-id", "sd", "--resume-from", "sc")
        self.assertEqual(fourth.code, 1, fourth)
        self.assertIn("m", {e["task_name"] for e in fourth.events("task_start")})
        self.assertEqual(os.listdir(self.marks), [])
        self.assertEqual(fourth.output("join"), third.output("join"))

    def test_a_tampered_child_result_reruns_that_child_and_a_tampered_map_result_rebuilds(self):
        self.write_spec(boom=True)
        first = self.f.run("--run-id", "ta")
        self.assertEqual(first.code, 1, first)
        for name in ("m[5]", "m"):
            with open(self.item("ta", name)["result_path"], "r+b") as fh:
                data = fh.read()
                fh.seek(0)
                fh.write(b"9" + data[1:])  # same length, other bytes
        self.clear_marks()
        res = self.f.run("--run-id", "tb", "--resume-from", "ta")
        self.assertEqual(res.code, 1, res)
        refused = {e["task_name"] for e in res.events("result_not_reused")}
        self.assertEqual(refused, {"m", "m[5]"})
        self.assertEqual({e["task_name"] for e in res.events("task_start")},
                         {"m", "m[5]", "join", "boom"})
        self.assertEqual([k for k in range(N) if self.starts(k)], [5])
        self.assertEqual(json.loads(res.output("join")[0]), {"m": [3 * k for k in range(N)]})
        self.assertEqual(hashlib.sha256(self.result_bytes("tb", "m")).hexdigest(),
                         self.item("tb", "m")["result_sha256"])
        self.assertEqual(res.output("join"), first.output("join"))
        self.assertEqual(res.run_item()["tasks_reused"], 1 + N - 1)


if __name__ == "__main__":
    unittest.main()
