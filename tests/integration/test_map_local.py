"""dagy-agent running "map" tasks locally (docs/flow-spec.md, "Dynamic fan-out"): a map over 50
elements with max_parallel 8 (never more than 8 children at once, results in order), a failing
child retried on its own, allow_failures (null slots) and one failure too many, a result that is
not an array, an empty array, DAGY_MAX_MAP_ITEMS, {{ item }} and DAGY_MAP_ITEM, skip propagation
through a map, the SIGTERM drain cancelling children, resume reusing a map that succeeded, --graph."""

import json
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402


def spec(tasks, **top):
    return dict({"spec_version": 1, "name": "mapflow", "tasks": tasks}, **top)


def emit(value):
    """A task that writes `value` as its result."""
    return ["sh", "-c", "printf '%s' '" + json.dumps(value) + "' > \"$DAGY_TASK_OUTPUT\""]


def src(value, name="src"):
    return {"name": name, "command": emit(value)}


def mapped(command, over="src", upstream=None, **mapopts):
    task = {"name": "m", "command": command, "upstream": upstream or [over],
            "map": dict({"over": over}, **mapopts)}
    return task


def collect(name="collect", up="m", trigger=None):
    t = {"name": name, "command": ["sh", "-c", "cat \"$DAGY_TASK_INPUTS\""], "upstream": [up]}
    if trigger:
        t["trigger_rule"] = trigger
    return t


class MapLocalTest(unittest.TestCase):
    def flow(self, s, files=None):
        f = agentenv.Flow(s, files)
        self.addCleanup(f.cleanup)
        return f

    def inputs_of(self, res, task="collect"):
        return json.loads(res.output(task)[0])

    def test_fifty_children_run_at_most_eight_at_once_and_results_keep_order(self):
        marks = "$MARKS/$DAGY_MAP_INDEX"
        child = ["sh", "-c",
                 "date +%s.%N > " + marks + ".start; sleep 0.05; date +%s.%N > " + marks +
                 ".end; echo $(( DAGY_MAP_ITEM * 2 )) > \"$DAGY_TASK_OUTPUT\""]
        f = self.flow(spec([src(list(range(50))), dict(mapped(child, max_parallel=8),
                                                      env={"MARKS": "MARKS_DIR"}),
                            collect()], max_parallel=32))
        marks_dir = os.path.join(f.tmp, "marks")
        os.makedirs(marks_dir)
        s = json.load(open(os.path.join(f.dir, "flow_spec.json")))
        s["tasks"][1]["env"]["MARKS"] = marks_dir
        json.dump(s, open(os.path.join(f.dir, "flow_spec.json"), "w"))
        res = f.run()
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.inputs_of(res), {"m": [2 * k for k in range(50)]})
        spans = []
        for k in range(50):
            start = float(agentenv.read_text(os.path.join(marks_dir, "%d.start" % k)))
            end = float(agentenv.read_text(os.path.join(marks_dir, "%d.end" % k)))
            spans.append((start, end))
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                        key=lambda x: (x[0], x[1]))
        now = peak = 0
        for _, d in events:
            now += d
            peak = max(peak, now)
        self.assertLessEqual(peak, 8)
        self.assertGreaterEqual(peak, 2)  # they did overlap
        self.assertEqual(len(res.events("task_start")), 1 + 1 + 50 + 1)
        item = res.task_item("m[49]")
        self.assertEqual(item["status"], "SUCCEEDED")
        self.assertEqual(item["map_parent"], "m")
        self.assertEqual(item["map_index"], 49)
        self.assertEqual(len(item["task_hash"]), 64)
        m = res.task_item("m")
        self.assertEqual(m["status"], "SUCCEEDED")
        self.assertEqual(m["map_children"], 50)
        self.assertEqual(m["map_over"], "src")
        run = res.run_item()
        self.assertEqual(run["tasks_total"], 53)
        self.assertEqual(run["tasks_succeeded"], 53)
        self.assertEqual(len(res.events("map_expanded", "m")), 1)

    def test_a_failing_child_is_retried_on_its_own(self):
        child = ["sh", "-c", "if [ \"$DAGY_MAP_ITEM\" = 3 ] && [ $DAGY_ATTEMPT = 1 ]; then "
                 "echo flaky >&2; exit 1; fi; echo $DAGY_MAP_ITEM > \"$DAGY_TASK_OUTPUT\""]
        f = self.flow(spec([src([1, 2, 3, 4]), dict(mapped(child), retries=1,
                                                    retry_delay_seconds=0), collect()]))
        res = f.run()
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.inputs_of(res), {"m": [1, 2, 3, 4]})
        self.assertEqual(res.task_item("m[2]")["attempt"], 2)
        self.assertEqual(res.task_item("m[2]")["max_attempts"], 2)
        for k in (0, 1, 3):
            self.assertEqual(res.task_item("m[%d]" % k)["attempt"], 1)
        retries = res.events("task_retry")
        self.assertEqual([e["task_name"] for e in retries], ["m[2]"])
        self.assertIn("flaky", retries[0]["error"])

    def test_allow_failures_leaves_null_slots(self):
        child = ["sh", "-c", "case $DAGY_MAP_ITEM in 1|3) exit 7;; esac; "
                 "echo $DAGY_MAP_ITEM > \"$DAGY_TASK_OUTPUT\""]
        f = self.flow(spec([src([0, 1, 2, 3]), mapped(child, allow_failures=2), collect()]))
        res = f.run()
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.inputs_of(res), {"m": [0, None, 2, None]})
        self.assertEqual(res.task_item("m[1]")["status"], "FAILED")
        self.assertEqual(res.task_item("m")["status"], "SUCCEEDED")
        self.assertEqual(res.run_item()["status"], "SUCCEEDED")

    def test_one_failure_too_many_fails_the_map_and_skips_downstream(self):
        child = ["sh", "-c", "case $DAGY_MAP_ITEM in 1|3) exit 7;; esac; true"]
        f = self.flow(spec([src([0, 1, 2, 3]), mapped(child, allow_failures=1), collect(),
                            collect("always", trigger="all_done")]))
        res = f.run()
        self.assertEqual(res.code, 1, res)
        m = res.task_item("m")
        self.assertEqual(m["status"], "FAILED")
        self.assertEqual(m["error_message"],
                         '2 of 4 children failed (allow_failures 1); the first was "m[1]"')
        self.assertEqual(res.task_item("collect")["status"], "SKIPPED")
        self.assertEqual(res.task_item("collect")["skip_reason"], "upstream_failed")
        self.assertEqual(self.inputs_of(res, "always"), {"m": None})
        # every child ran: the map is decided once all of them have ended
        self.assertEqual(res.task_item("m[3]")["status"], "FAILED")
        self.assertEqual(res.task_item("m[2]")["status"], "SUCCEEDED")

    def test_a_result_that_is_not_an_array_fails_the_map_naming_the_upstream(self):
        cases = [({"a": 1}, "an object"), ("text", "a string"), (42, "a number"),
                 (True, "a boolean")]
        for value, kind in cases:
            with self.subTest(value=value):
                f = self.flow(spec([src(value), mapped(["true"]), collect()]))
                res = f.run()
                self.assertEqual(res.code, 1, res)
                m = res.task_item("m")
                self.assertEqual(m["status"], "FAILED")
                self.assertEqual(m["error_message"],
                                 'map over "src": its result is %s, not a JSON array (a map runs '
                                 'once per element of an array)' % kind)
                self.assertEqual(m["attempt"], 1)  # no retry: the same result would fail again
                self.assertEqual(res.task_item("collect")["skip_reason"], "upstream_failed")
        f = self.flow(spec([{"name": "src", "command": ["true"]}, mapped(["true"])]))
        res = f.run()
        self.assertEqual(res.code, 1, res)
        self.assertEqual(res.task_item("m")["error_message"],
                         'map over "src": it stored no result (null), and a map needs a JSON '
                         'array')

    def test_the_timeout_applies_to_each_child(self):
        child = ["sh", "-c", "[ $DAGY_MAP_ITEM = 1 ] && sleep 5; echo $DAGY_MAP_ITEM > "
                 "\"$DAGY_TASK_OUTPUT\""]
        f = self.flow(spec([src([0, 1, 2]), dict(mapped(child, allow_failures=1),
                                                 timeout_seconds=0.5), collect()]))
        res = f.run(env={"DAGY_KILL_GRACE_SECONDS": "0.2"})
        self.assertEqual(res.code, 0, res)
        self.assertIn("exceeded timeout of 0.5 s", res.task_item("m[1]")["error_message"])
        self.assertEqual(self.inputs_of(res), {"m": [0, None, 2]})

    def test_elements_are_split_on_top_level_commas_only(self):
        items = ["a,]b\\\"", [1, [2, {"x": "],["}]], {}, [], " spaced "]
        child = ["sh", "-c", "printf '%s' \"$DAGY_MAP_ITEM\" > \"$DAGY_TASK_OUTPUT\""]
        f = self.flow(spec([{"name": "src", "command": ["sh", "-c", "cat items.json > "
                                                                    "\"$DAGY_TASK_OUTPUT\""]},
                            mapped(child), collect()]),
                      files={"items.json": json.dumps(items, indent=2)})
        res = f.run()
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.inputs_of(res), {"m": items})

    def test_an_empty_array_succeeds_with_an_empty_result(self):
        f = self.flow(spec([src([]), mapped(["false"]), collect()]))
        res = f.run()
        self.assertEqual(res.code, 0, res)
        self.assertEqual(self.inputs_of(res), {"m": []})
        self.assertEqual(res.task_item("m")["map_children"], 0)

    def test_more_elements_than_the_cap_fail_the_map(self):
        f = self.flow(spec([src([1, 2, 3, 4]), mapped(["true"])]))
        res = f.run(env={"DAGY_MAX_MAP_ITEMS": "3"})
        self.assertEqual(res.code, 1, res)
        self.assertEqual(res.task_item("m")["error_message"],
                         'map over "src": its array has more than DAGY_MAX_MAP_ITEMS (3) elements')
        self.assertEqual(len(res.events("task_start")), 2)  # src and m; no child
        res = f.run(env={"DAGY_MAX_MAP_ITEMS": "x"})
        self.assertEqual(res.code, 2, res)

    def test_item_template_and_map_item_env(self):
        items = ["plain text", {"k": [1, 2], "s": "{{ run_id }}"}, 9007199254740993, None]
        child = ["sh", "-c", "printf '%s|%s|%s|%s' \"$1\" \"$DAGY_MAP_ITEM\" \"$DAGY_MAP_INDEX\" "
                 "\"$E\"", "sh", "{{ item }}"]
        task = mapped(child)
        task["env"] = {"E": "<{{ item }}>"}
        # the elements come from a file: in src's own command "{{ run_id }}" would be expanded
        f = self.flow(spec([{"name": "src", "command": ["sh", "-c", "cat items.json > "
                                                                    "\"$DAGY_TASK_OUTPUT\""]},
                            task]), files={"items.json": json.dumps(items)})
        res = f.run()
        self.assertEqual(res.code, 0, res)
        got = [res.output("m[%d]" % k)[0] for k in range(4)]
        self.assertEqual(got[0], 'plain text|"plain text"|0|<plain text>')
        # compact JSON, digits kept, an inserted template never expanded again
        self.assertEqual(got[1], '{"k":[1,2],"s":"{{ run_id }}"}|{"k":[1,2],"s":"{{ run_id }}"}'
                                 '|1|<{"k":[1,2],"s":"{{ run_id }}"}>')
        self.assertEqual(got[2], '9007199254740993|9007199254740993|2|<9007199254740993>')
        self.assertEqual(got[3], 'null|null|3|<null>')

    def test_item_outside_a_map_and_over_not_an_upstream_are_refused_before_running(self):
        f = self.flow(spec([src([1]), {"name": "x", "command": ["echo", "{{ item }}"]}]))
        res = f.run()
        self.assertEqual(res.code, 2, res)
        self.assertIn('task "x": command[1]: {{ item }} is only defined in a task with "map"',
                      res.events("run_end")[0]["error"])
        f = self.flow(spec([src([1]), src([2], "other"),
                            mapped(["true"], over="src", upstream=["other"])]))
        res = f.run()
        self.assertEqual(res.code, 2, res)
        self.assertIn('task "m": map: field "over": "src" is not listed in "upstream"',
                      res.events("run_end")[0]["error"])

    def test_a_map_over_a_failed_upstream_is_skipped_whatever_its_rule(self):
        m = mapped(["true"])
        m["trigger_rule"] = "all_done"
        f = self.flow(spec([{"name": "src", "command": ["false"]}, m,
                            collect("after", trigger="all_done")]))
        res = f.run()
        self.assertEqual(res.code, 1, res)
        item = res.task_item("m")
        self.assertEqual(item["status"], "SKIPPED")
        self.assertEqual(item["skip_reason"], "upstream_failed")
        self.assertEqual(res.task_item("after")["status"], "SUCCEEDED")

    def test_sigterm_cancels_children_not_started_and_the_map(self):
        child = ["sh", "-c", "touch \"$MARKS/$DAGY_MAP_INDEX\"; sleep 30"]
        f = self.flow(spec([src(list(range(20))), dict(mapped(child, max_parallel=2),
                                                      env={"MARKS": "x"}), collect()]))
        marks = os.path.join(f.tmp, "marks")
        os.makedirs(marks)
        s = json.load(open(os.path.join(f.dir, "flow_spec.json")))
        s["tasks"][1]["env"]["MARKS"] = marks
        json.dump(s, open(os.path.join(f.dir, "flow_spec.json"), "w"))
        p = f.start(env={"DAGY_DRAIN_SECONDS": "0.2", "DAGY_KILL_GRACE_SECONDS": "0.5"})
        try:
            self.assertTrue(agentenv.wait_for(lambda: len(os.listdir(marks)) >= 2, 10))
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=20)
        finally:
            agentenv.stop(p)
        self.assertEqual(p.returncode, 143)
        res = agentenv.Result(p.returncode, out, b"", f)
        self.assertEqual(len(os.listdir(marks)), 2)  # nothing started after the signal
        self.assertEqual(res.task_item("m")["status"], "CANCELLED")
        self.assertEqual(res.task_item("m[0]")["status"], "CANCELLED")
        self.assertEqual(res.task_item("m[19]")["status"], "CANCELLED")
        self.assertEqual(res.task_item("collect")["status"], "CANCELLED")
        self.assertEqual(res.run_item()["status"], "FAILED")

    def test_resume_reuses_a_map_that_succeeded_whole(self):
        child = ["sh", "-c", "echo $DAGY_MAP_ITEM > \"$DAGY_TASK_OUTPUT\""]
        f = self.flow(spec([src([1, 2]), mapped(child), collect(),
                            {"name": "boom", "command": ["false"], "upstream": ["collect"]}]))
        first = f.run()
        self.assertEqual(first.code, 1, first)
        again = f.run("--resume-from", first.run_id)
        self.assertEqual(again.code, 1, again)
        self.assertEqual([e["task_name"] for e in again.events("task_reused")],
                         ["src", "m", "collect"])
        self.assertEqual({e["task_name"] for e in again.events("task_start")}, {"boom"})
        self.assertEqual((again.task_item("m")["reused_from"], again.task_item("m")["map_children"]),
                         (first.run_id, 2))
        # each child's fingerprint covers its element (test_map_resume.py: partial maps)
        self.assertNotEqual(first.task_item("m[0]")["task_hash"],
                            first.task_item("m[1]")["task_hash"])

    def test_graph_shows_the_map_node(self):
        f = self.flow(spec([src([1]), mapped(["true"], max_parallel=3), collect()]))
        p = agentenv.subprocess.run([agentenv.AGENT, "--flow", f.dir, "--graph"],
                                    stdout=agentenv.subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 0)
        dot = p.stdout.decode()
        self.assertIn('"m" [label="m[*] over src\\nmax_parallel 3\\n$ true", '
                      'style="rounded,bold", peripheries=2];', dot)
        self.assertIn('"src" -> "m" [style=bold, label="map"];', dot)


if __name__ == "__main__":
    unittest.main()
