"""End-to-end tests of dagy-agent local runs (no AWS): the binary runs real flows, and the tests
check exit codes, JSON log lines and the local state directory."""
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentenv import Flow, pid_alive, read_json, read_text, stop, wait_for  # noqa: E402


def task(name, cmd, **kw):
    t = {"name": name, "command": ["sh", "-c", cmd] if isinstance(cmd, str) else cmd}
    t.update(kw)
    return t


def spec(tasks, **kw):
    s = {"spec_version": 1, "name": "t", "version": "1.0.0", "tasks": tasks}
    s.update(kw)
    return s


class AgentLocal(unittest.TestCase):
    def flow(self, s, files=None):
        f = Flow(s, files)
        self.addCleanup(f.cleanup)
        return f

    def test_relative_work_dir_is_taken_from_the_agents_directory(self):
        """DAGY_WORK_DIR=work (relative) once made every task fail "Directory nonexistent": the
        task files were named relative to the agent's directory, but tasks run in the flow's."""
        import subprocess
        from agentenv import AGENT
        f = self.flow(spec([task("a", 'echo "{\\"v\\": 1}" > "$DAGY_TASK_OUTPUT"'),
                            task("b", 'cat "$DAGY_TASK_INPUTS"', upstream=["a"])]))
        cwd = os.path.join(f.tmp, "cwd")
        os.makedirs(cwd)
        p = subprocess.run([AGENT, "--flow", f.dir, "--state-dir", f.state, "--log-format",
                            "json"], env=f.env({"DAGY_WORK_DIR": "work"}), cwd=cwd,
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p)
        lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
        out = [l["message"] for l in lines if l["event_type"] == "task_output"]
        self.assertEqual([json.loads(o) for o in out], [{"a": {"v": 1}}])
        self.assertTrue(os.path.isdir(os.path.join(cwd, "work")))

    def test_diamond_runs_in_dependency_order_and_succeeds(self):
        f = self.flow(spec([
            task("a", "echo a >> order.txt"),
            task("b", "sleep 0.2; echo b >> order.txt", upstream=["a"]),
            task("c", "echo c >> order.txt", upstream=["a"]),
            task("d", "echo d >> order.txt", upstream=["b", "c"]),
        ]))
        r = f.run()
        self.assertEqual(r.code, 0, r)
        order = read_text(os.path.join(f.dir, "order.txt")).split()
        self.assertEqual(order[0], "a")
        self.assertEqual(order[-1], "d")
        self.assertEqual(sorted(order), ["a", "b", "c", "d"])
        run = r.run_item()
        self.assertEqual(run["status"], "SUCCEEDED")
        self.assertEqual(run["tasks_total"], 4)
        self.assertEqual(run["tasks_succeeded"], 4)
        self.assertEqual(run["executor"], "local")
        for name in "abcd":
            item = r.task_item(name)
            self.assertEqual(item["status"], "SUCCEEDED")
            self.assertEqual(item["exit_code"], 0)
            self.assertEqual(item["attempt"], 1)
            self.assertIn("task_run_id", item)
            self.assertGreaterEqual(item["status_seq"], 1)
        ends = r.events("task_end")
        self.assertEqual(len(ends), 4)
        self.assertTrue(all("duration_seconds" in e for e in ends))
        for line in r.lines:
            for key in ("timestamp", "level", "event_type", "message", "run_id", "flow_name",
                        "correlation_id"):
                self.assertIn(key, line)
        self.assertEqual(r.lines[-1]["event_type"], "run_end")
        self.assertEqual(r.lines[-1]["status"], "SUCCEEDED")

    def test_flaky_task_passes_on_third_attempt(self):
        f = self.flow(spec([task(
            "flaky", 'n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; '
                     'echo "attempt $DAGY_ATTEMPT" >&2; [ $n -ge 3 ]',
            retries=3, retry_delay_seconds=0.1, retry_jitter=False)]))
        r = f.run()
        self.assertEqual(r.code, 0, r)
        item = r.task_item("flaky")
        self.assertEqual(item["status"], "SUCCEEDED")
        self.assertEqual(item["attempt"], 3)
        self.assertEqual(item["max_attempts"], 4)
        self.assertEqual(len(r.events("task_retry", "flaky")), 2)
        self.assertEqual(r.output("flaky", "stderr"), ["attempt 1", "attempt 2", "attempt 3"])

    def test_timeout_kills_the_whole_process_tree(self):
        f = self.flow(spec([task(
            "slow", "sleep 300 & echo $! > child.pid; "
                    "sh -c 'trap \"\" TERM; sleep 300' & echo $! > stubborn.pid; wait",
            timeout_seconds=1)]))
        t0 = time.monotonic()
        r = f.run(env={"DAGY_KILL_GRACE_SECONDS": "0.5"})
        self.assertLess(time.monotonic() - t0, 20)
        self.assertEqual(r.code, 1, r)
        item = r.task_item("slow")
        self.assertEqual(item["status"], "FAILED")
        self.assertIn("exceeded timeout of 1 s", item["error_message"])
        for name in ("child.pid", "stubborn.pid"):
            pid = int(read_text(os.path.join(f.dir, name)))
            self.assertTrue(wait_for(lambda: not pid_alive(pid), 5), name + " survived")

    def test_retry_after_timeout(self):
        f = self.flow(spec([task(
            "t", '[ "$DAGY_ATTEMPT" -ge 2 ] || sleep 30', timeout_seconds=0.5, retries=1,
            retry_delay_seconds=0)]))
        r = f.run()
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.task_item("t")["attempt"], 2)
        retry = r.events("task_retry", "t")
        self.assertEqual(len(retry), 1)
        self.assertIn("exceeded timeout of 0.5 s", retry[0]["error"])

    def test_all_done_cleanup_runs_after_failure_and_downstream_is_skipped(self):
        f = self.flow(spec([
            task("work", "echo boom >&2; exit 3"),
            task("after", "true", upstream=["work"]),
            task("cleanup", "echo cleaned > cleaned.txt", upstream=["work"],
                 trigger_rule="all_done"),
            task("on_fail", "true", upstream=["work"], trigger_rule="one_failed"),
            task("nf", "true", upstream=["after"], trigger_rule="none_failed"),
        ]))
        r = f.run()
        self.assertEqual(r.code, 1, r)
        self.assertTrue(os.path.exists(os.path.join(f.dir, "cleaned.txt")))
        self.assertEqual(r.task_item("work")["status"], "FAILED")
        self.assertEqual(r.task_item("work")["exit_code"], 3)
        self.assertIn("exited with code 3: boom", r.task_item("work")["error_message"])
        self.assertEqual(r.task_item("after")["status"], "SKIPPED")
        self.assertIn('"work"', r.task_item("after")["error_message"])
        self.assertEqual(r.task_item("cleanup")["status"], "SUCCEEDED")
        self.assertEqual(r.task_item("on_fail")["status"], "SUCCEEDED")
        # none_failed: its upstream was SKIPPED *because* "work" failed, which counts as failed
        self.assertEqual(r.task_item("nf")["status"], "SKIPPED")
        self.assertEqual(r.task_item("nf")["skip_reason"], "upstream_failed")
        run = r.run_item()
        self.assertEqual(run["status"], "FAILED")
        self.assertIn('task "work" failed', run["error_message"])
        self.assertEqual(run["tasks_failed"], 1)
        self.assertEqual(run["tasks_skipped"], 2)
        self.assertTrue(r.events("task_skipped", "after"))

    def test_skip_caused_by_a_failure_counts_as_failed_for_none_failed_and_one_failed(self):
        # issue 8, defect 8: extract fails -> transform SKIPPED -> publish (none_failed) must
        # not run, alert (one_failed) must run
        f = self.flow(spec([
            task("extract", "echo no source >&2; exit 1"),
            task("transform", "touch transform.ran", upstream=["extract"]),
            task("publish", "touch publish.ran", upstream=["transform"],
                 trigger_rule="none_failed"),
            task("alert", "touch alert.ran", upstream=["transform"], trigger_rule="one_failed"),
        ]))
        r = f.run()
        self.assertEqual(r.code, 1, r)
        self.assertFalse(os.path.exists(os.path.join(f.dir, "publish.ran")))
        self.assertTrue(os.path.exists(os.path.join(f.dir, "alert.ran")))
        self.assertEqual(r.task_item("alert")["status"], "SUCCEEDED")
        transform, publish = r.task_item("transform"), r.task_item("publish")
        self.assertEqual(transform["status"], "SKIPPED")
        self.assertEqual(transform["skip_reason"], "upstream_failed")
        self.assertEqual(transform["error_message"],
                         'upstream failed: "extract" is FAILED (trigger_rule all_success)')
        self.assertEqual(publish["status"], "SKIPPED")
        self.assertEqual(publish["skip_reason"], "upstream_failed")
        self.assertEqual(publish["error_message"],
                         'upstream failed: "transform" was skipped because "extract" FAILED '
                         '(trigger_rule none_failed)')
        skipped = r.events("task_skipped", "publish")
        self.assertEqual(skipped[0]["skip_reason"], "upstream_failed")
        run = r.run_item()
        self.assertEqual((run["tasks_failed"], run["tasks_skipped"], run["tasks_succeeded"]),
                         (1, 2, 1))

    def test_failed_task_logs_task_failed_and_task_end_with_duration(self):
        # issue 8, defect 12: task_failed was never emitted
        f = self.flow(spec([task("ok", "true"),
                            task("bad", "sleep 0.2; echo broken >&2; exit 4",
                                 retries=1, retry_delay_seconds=0)]))
        r = f.run()
        self.assertEqual(r.code, 1, r)
        failed = r.events("task_failed")
        self.assertEqual([e["task_name"] for e in failed], ["bad"])  # once, for the final failure
        ends = {e["task_name"]: e for e in r.events("task_end")}
        self.assertEqual(sorted(ends), ["bad", "ok"])  # every task that ran
        e, end = failed[0], ends["bad"]
        for key in ("status", "duration_seconds", "exit_code", "error", "attempt", "task_run_id",
                    "level"):
            self.assertEqual(e[key], end[key], key)
        self.assertEqual((e["status"], e["exit_code"], e["attempt"], e["level"]),
                         ("FAILED", 4, 2, "ERROR"))
        self.assertIn("exited with code 4: broken", e["error"])
        self.assertGreaterEqual(e["duration_seconds"], 0.4)
        self.assertNotIn("task_failed", [l["event_type"] for l in r.lines
                                         if l.get("task_name") == "ok"])

    def test_templates_and_task_environment(self):
        f = self.flow(spec([task(
            "show", ["sh", "-c", 'echo "{{ parameters.date }}|{{run_id}}|{{ flow_name }}|'
                                 '$SOURCE|$DAGY_TASK_NAME|$DAGY_ATTEMPT|$DAGY_PARAMETERS"'],
            env={"SOURCE": "src-{{ parameters.source }}"})]))
        r = f.run("--param", "date=2024-03-14", "--params-json", '{"source": "s3", "n": 3}',
                  "--run-id", "run-templ-1")
        self.assertEqual(r.code, 0, r)
        out = r.output("show")[0].split("|")
        self.assertEqual(out[:6], ["2024-03-14", "run-templ-1", "t", "src-s3", "show", "1"])
        self.assertEqual(json.loads(out[6]), {"source": "s3", "n": 3, "date": "2024-03-14"})

    def test_missing_parameter_is_rejected_before_any_task_starts(self):
        f = self.flow(spec([task("first", "touch ran"),
                            task("x", ["echo", "{{ parameters.date }}"])]))
        r = f.run()
        self.assertEqual(r.code, 2, r)
        self.assertFalse(os.path.exists(os.path.join(f.dir, "ran")))
        self.assertFalse(r.events("task_start"))
        msg = r.lines[-1]["message"]
        self.assertIn('task "x"', msg)
        self.assertIn('"date"', msg)

    def test_bad_spec_names_task_and_field(self):
        f = self.flow(spec([task("load", "true", upstream=["trnsform"])]))
        r = f.run()
        self.assertEqual(r.code, 2, r)
        self.assertIn('task "load": upstream "trnsform" does not exist', r.lines[-1]["error"])

    def test_data_passing_between_command_tasks(self):
        f = self.flow(spec([
            task("produce", 'echo \'{"rows": [1, 2, 3]}\' > "$DAGY_TASK_OUTPUT"'),
            task("consume", 'cat "$DAGY_TASK_INPUTS"', upstream=["produce"]),
        ]))
        r = f.run()
        self.assertEqual(r.code, 0, r)
        self.assertEqual(json.loads(r.output("consume")[0]), {"produce": {"rows": [1, 2, 3]}})

    def test_invalid_task_output_fails_the_attempt(self):
        f = self.flow(spec([task("bad", 'echo "not json" > "$DAGY_TASK_OUTPUT"')]))
        r = f.run()
        self.assertEqual(r.code, 1, r)
        self.assertIn("DAGY_TASK_OUTPUT", r.task_item("bad")["error_message"])

    def test_task_named__none_never_shares_a_file_with_the_agent(self):
        # issue 8, defect 3: "_none" took over the shared empty-inputs file (inputs/_none.json):
        # a root task then read another task's inputs and a later root task found no file
        f = self.flow(spec([
            task("a", """echo '{"secret": 42}' > "$DAGY_TASK_OUTPUT" """),
            task("_none", 'cat "$DAGY_TASK_INPUTS"', upstream=["a"]),
            task("late", 'cat "$DAGY_TASK_INPUTS"'),
            task("b", 'cat "$DAGY_TASK_INPUTS"', upstream=["late"]),
            task("last", 'cat "$DAGY_TASK_INPUTS"'),
            task(".x", 'cat "$DAGY_TASK_INPUTS"', upstream=["a"]),
        ], max_parallel=1))
        r = f.run()
        self.assertEqual(r.code, 0, r)
        self.assertEqual(json.loads(r.output("_none")[0]), {"a": {"secret": 42}})
        self.assertEqual(json.loads(r.output(".x")[0]), {"a": {"secret": 42}})
        for root in ("late", "last"):
            self.assertEqual(json.loads(r.output(root)[0]), {}, root)
        self.assertEqual(json.loads(r.output("b")[0]), {"late": None})

    def test_result_that_is_not_exactly_one_json_value_fails_the_attempt(self):
        # issue 8, defect 4: '{"x":1} trailing, garbage' was accepted and copied raw downstream
        bad = {
            "trailing": ("""printf '{"x":1} trailing, garbage' > "$DAGY_TASK_OUTPUT" """,
                         "more than one JSON value"),
            "inject": ("""printf '{"x":1}, "other": {"fake": 1}' > "$DAGY_TASK_OUTPUT" """,
                       "more than one JSON value"),
            "two": ("""printf '1 2' > "$DAGY_TASK_OUTPUT" """, "more than one JSON value"),
            "nul": ("""printf '{"a":"x\\000y"}' > "$DAGY_TASK_OUTPUT" """, "NUL byte"),
            "utf8": ("""printf '{"a":"\\377"}' > "$DAGY_TASK_OUTPUT" """, "not valid UTF-8"),
            "deep": ("""python3 -c 'print("["*100000 + "]"*100000)' > "$DAGY_TASK_OUTPUT" """,
                     "nested deeper than"),
            "syntax": ("""printf '{"a":}' > "$DAGY_TASK_OUTPUT" """, "not valid JSON"),
            "empty": (""": > "$DAGY_TASK_OUTPUT" """, "empty"),
        }
        tasks = [task(n, c) for n, (c, _) in bad.items()]
        tasks.append(task("down", 'cat "$DAGY_TASK_INPUTS"', upstream=list(bad),
                          trigger_rule="all_done"))
        f = self.flow(spec(tasks))
        r = f.run()
        self.assertEqual(r.code, 1, r)
        for name, (_, why) in bad.items():
            item = r.task_item(name)
            self.assertEqual(item["status"], "FAILED", name)
            msg = item["error_message"]
            self.assertIn("DAGY_TASK_OUTPUT", msg, name)
            self.assertIn('task "%s"' % name, msg, name)
            self.assertIn(why, msg, name)
        # downstream sees null for each failed upstream, nothing injected
        self.assertEqual(json.loads(r.output("down")[0]), {n: None for n in bad})

    def test_bad_result_is_retried_like_any_failure(self):
        f = self.flow(spec([
            task("flaky", """if [ "$DAGY_ATTEMPT" = 1 ]; then printf '{"x":1} junk'; """
                          """else printf ' {"x": 2}\\n'; fi > "$DAGY_TASK_OUTPUT" """,
                 retries=1, retry_delay_seconds=0),
            task("down", 'cat "$DAGY_TASK_INPUTS"', upstream=["flaky"]),
        ]))
        r = f.run()
        self.assertEqual(r.code, 0, r)
        retry = r.events("task_retry", "flaky")
        self.assertEqual(len(retry), 1)
        self.assertIn("more than one JSON value", retry[0]["error"])
        self.assertEqual(json.loads(r.output("down")[0]), {"flaky": {"x": 2}})

    def test_fifo_at_task_output_fails_the_attempt_and_the_agent_keeps_working(self):
        # issue 9, defect 4: the agent blocked in open() on a FIFO, ignoring SIGTERM
        f = self.flow(spec([
            task("fifo", 'mkfifo "$DAGY_TASK_OUTPUT"'),
            task("link", 'ln -s /etc/passwd "$DAGY_TASK_OUTPUT"'),
            task("after", "touch after.ran; sleep 30", upstream=["fifo", "link"],
                 trigger_rule="all_done"),
        ]))
        p = f.start("--drain-seconds", "0", env={"DAGY_KILL_GRACE_SECONDS": "0.5"})
        self.addCleanup(stop, p)
        self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(f.dir, "after.ran")), 15),
                        "the agent stopped scheduling")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(p.returncode, 143, err)
        lines = [json.loads(l) for l in out.decode().splitlines()]
        run_id = lines[0]["run_id"]

        def item(n):
            return read_json(os.path.join(f.state, "runs", run_id, "tasks", n + ".json"))
        self.assertEqual(item("fifo")["status"], "FAILED")
        self.assertIn("DAGY_TASK_OUTPUT", item("fifo")["error_message"])
        self.assertIn("not a regular file", item("fifo")["error_message"])
        self.assertEqual(item("link")["status"], "FAILED")
        self.assertIn("symbolic link", item("link")["error_message"])

    def test_result_larger_than_the_bound_fails_naming_the_bound(self):
        f = self.flow(spec([task("big", 'head -c 3000 /dev/zero | tr "\\\\0" 1 '
                                        '> "$DAGY_TASK_OUTPUT"')]))
        r = f.run(env={"DAGY_MAX_RESULT_BYTES": "2048"})
        self.assertEqual(r.code, 1, r)
        msg = r.task_item("big")["error_message"]
        self.assertIn("larger than DAGY_MAX_RESULT_BYTES (2048 bytes)", msg)
        r = f.run(env={"DAGY_MAX_RESULT_BYTES": "lots"})
        self.assertEqual(r.code, 2, r)
        self.assertIn("DAGY_MAX_RESULT_BYTES", r.err + r.out)

    def test_failed_internal_write_fails_the_attempt_as_infrastructure_with_path_and_errno(self):
        # issue 9, defect 7: internal writes were not checked (a 0-byte inputs file)
        # (the tests run as root, so permissions cannot make a write fail: the inputs
        # directory is replaced by a file instead; the agent writes relative to the directory
        # it made, which is gone, so the write fails with ENOENT)
        f = self.flow(spec([
            task("lock", 'd=$(dirname "$DAGY_TASK_INPUTS"); rm -rf "$d"; touch "$d"'),
            task("next", 'cat "$DAGY_TASK_INPUTS"', upstream=["lock"], retries=1,
                 retry_delay_seconds=0),
        ]))
        r = f.run()
        self.assertEqual(r.code, 3, r)
        item = r.task_item("next")
        self.assertEqual(item["status"], "FAILED")
        self.assertIn("cannot write DAGY_TASK_INPUTS", item["error_message"])
        self.assertIn("No such file or directory", item["error_message"])
        self.assertEqual(item["attempt"], 2)  # retried like any failure
        self.assertIn(f.work, item["error_message"])
        self.assertFalse(r.output("next"))  # never started
        self.assertEqual(r.lines[-1]["event_type"], "run_end")
        self.assertEqual(r.lines[-1]["exit_code"], 3)

    def test_restart_with_the_same_run_id_is_safe_from_the_dead_agents_tasks(self):
        # issue 9, defect 5: an orphaned task of a kill -9'd agent overwrote results/A.json of
        # the restarted run
        def write(s):
            with open(os.path.join(f.dir, "flow_spec.json"), "w") as fh:
                json.dump(s, fh)
        f = self.flow(spec([task("A", "true")]))
        write(spec([task("A", "(sleep 2; echo '{\"from\": \"old\"}' > \"$DAGY_TASK_OUTPUT\") & "
                              "echo $! > stale.pid; echo $$ > main.pid; sleep 60")]))
        p = f.start("--run-id", "restart-1")
        self.addCleanup(stop, p)
        self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(f.dir, "main.pid")) and
                                 read_text(os.path.join(f.dir, "main.pid")).strip(), 10))
        p.kill()
        p.communicate(timeout=10)
        for name in ("main.pid", "stale.pid"):
            pid = int(read_text(os.path.join(f.dir, name)))
            self.addCleanup(lambda pid=pid: pid_alive(pid) and os.kill(pid, signal.SIGKILL))
        write(spec([task("A", "sleep 3"),
                    task("B", 'cat "$DAGY_TASK_INPUTS"', upstream=["A"])]))
        r = f.run("--run-id", "restart-1")
        self.assertEqual(r.code, 0, r)
        self.assertEqual(json.loads(r.output("B")[0]), {"A": None})

    def test_fifo_as_metadata_json_is_ignored_with_a_warning(self):
        # the flow directory is the user's: a FIFO there must not freeze the agent either
        f = self.flow(spec([task("a", "true")]))
        os.mkfifo(os.path.join(f.dir, "metadata.json"))
        r = f.run(timeout=20)
        self.assertEqual(r.code, 0, r)
        warn = r.events("metadata_invalid")
        self.assertIn("not a regular file", warn[0]["message"])

    def test_callable_tasks_pass_data(self):
        f = self.flow(spec([
            {"name": "extract", "callable": "mod.pipeline:extract", "kwargs": {"n": 3}},
            {"name": "transform", "callable": "mod.pipeline:transform",
             "kwargs": {"data": {"upstream": "extract"}, "factor": "{{ parameters.factor }}"},
             "upstream": ["extract"]},
            {"name": "fail", "callable": "mod.pipeline:boom", "upstream": ["transform"]},
        ]), files={
            "mod/__init__.py": "",
            "mod/pipeline.py": "def extract(n):\n    return list(range(n))\n"
                               "def transform(data, factor):\n"
                               "    return [x * int(factor) for x in data]\n"
                               "def boom():\n    raise ValueError('bad value here')\n",
        })
        r = f.run("--param", "factor=10")
        self.assertEqual(r.code, 1, r)
        self.assertEqual(r.task_item("transform")["status"], "SUCCEEDED")
        res = read_json(os.path.join(r.events("run_start")[0]["results_dir"], "transform.json"))
        self.assertEqual(res, [0, 10, 20])
        stderr = "\n".join(r.output("fail", "stderr"))
        self.assertIn("Traceback", stderr)
        self.assertIn("ValueError: bad value here", r.task_item("fail")["error_message"])

    def test_artifact_zip_and_tar_gz_detected_by_content(self):
        import tarfile
        f = self.flow(spec([task("a", "cat data.txt")]), files={"data.txt": "payload\n"})
        z = f.zip("artifact.bin")
        r = f.run(flow=z)
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.output("a"), ["payload"])
        self.assertTrue(r.events("unpack_end"))
        tgz = os.path.join(f.tmp, "artifact.data")
        with tarfile.open(tgz, "w:gz") as t:
            for n in ("flow_spec.json", "data.txt"):
                t.add(os.path.join(f.dir, n), n)
        r = f.run(flow=tgz)
        self.assertEqual(r.code, 0, r)
        self.assertEqual(r.output("a"), ["payload"])

    def test_task_hash_is_the_same_from_a_directory_a_zip_a_tar_and_a_hardlinked_tar_gz(self):
        """The unpack computes the code digest from the bytes it writes (no walk of the tree
        after it; a hardlink falls back to the walk): every form of the same tree gives the
        same task_hash, and a changed file another."""
        import io
        import tarfile
        import zipfile
        f = self.flow(spec([task("a", "true")]),
                      files={"lib/mod.py": "X = 1\n", "data.txt": "payload\n",
                             "copy.txt": "payload\n", "lib/__pycache__/m.pyc": "junk"})
        os.symlink("lib/mod.py", os.path.join(f.dir, "ln"))
        names = ["flow_spec.json", "lib/mod.py", "data.txt", "copy.txt", "lib/__pycache__/m.pyc"]

        def add_tar(t, name, hardlink=None):
            full = os.path.join(f.dir, name)
            info = tarfile.TarInfo(name)
            if hardlink:
                info.type, info.linkname = tarfile.LNKTYPE, hardlink
                return t.addfile(info)
            info.size = os.path.getsize(full)
            with open(full, "rb") as src:
                t.addfile(info, src)

        def tarball(path, mode, hardlink):
            with tarfile.open(path, mode) as t:
                for n in names:
                    add_tar(t, n, "data.txt" if hardlink and n == "copy.txt" else None)
                info = tarfile.TarInfo("ln")
                info.type, info.linkname = tarfile.SYMTYPE, "lib/mod.py"
                t.addfile(info)
            return path

        zpath = os.path.join(f.tmp, "artifact.zip")
        with zipfile.ZipFile(zpath, "w") as z:
            for n in names:
                z.write(os.path.join(f.dir, n), n)
            link = zipfile.ZipInfo("ln")
            link.external_attr = 0o120777 << 16
            z.writestr(link, "lib/mod.py")
        forms = {"dir": f.dir, "zip": zpath,
                 "tar": tarball(os.path.join(f.tmp, "a.tar"), "w", False),
                 "tar.gz+hardlink": tarball(os.path.join(f.tmp, "a.tgz"), "w:gz", True)}
        hashes = {}
        for form, path in forms.items():
            r = f.run(flow=path)
            self.assertEqual(r.code, 0, (form, r))
            hashes[form] = r.task_item("a")["task_hash"]
        self.assertEqual(len(set(hashes.values())), 1, hashes)
        with open(os.path.join(f.dir, "data.txt"), "a") as fp:
            fp.write("changed\n")
        r = f.run(flow=tarball(os.path.join(f.tmp, "b.tar"), "w", False))
        self.assertNotEqual(r.task_item("a")["task_hash"], hashes["dir"])

    def test_hostile_archive_is_refused_with_exit_2(self):
        import zipfile
        f = self.flow(spec([task("a", "true")]))
        bad = os.path.join(f.tmp, "evil.zip")
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("flow_spec.json", json.dumps(spec([task("a", "true")])))
            z.writestr("../../escaped.txt", "gotcha")
        r = f.run(flow=bad)
        self.assertEqual(r.code, 2, r)
        self.assertIn("escaped.txt", r.out)
        self.assertFalse(os.path.exists(os.path.join(f.tmp, "escaped.txt")))
        self.assertFalse(os.path.exists(os.path.join(f.work, "escaped.txt")))
        self.assertEqual(r.run_item()["status"], "FAILED")

    def test_graph_prints_dot_without_running(self):
        f = self.flow(spec([task("a", "touch ran"), task("b", "true", upstream=["a"])]))
        import subprocess
        from agentenv import AGENT
        p = subprocess.run([AGENT, "--flow", f.dir, "--graph"], stdout=subprocess.PIPE,
                           timeout=30)
        self.assertEqual(p.returncode, 0)
        dot = p.stdout.decode()
        self.assertTrue(dot.startswith("digraph"))
        self.assertIn('"a" -> "b"', dot)
        self.assertFalse(os.path.exists(os.path.join(f.dir, "ran")))

    def test_max_parallel_limits_concurrency(self):
        f = self.flow(spec([task("t%d" % i, "mkdir lock.$DAGY_TASK_NAME; ls -d lock.* | wc -l "
                                 "> count.$DAGY_TASK_NAME; sleep 0.2; rmdir lock.$DAGY_TASK_NAME")
                            for i in range(6)], max_parallel=2))
        r = f.run()
        self.assertEqual(r.code, 0, r)
        counts = [int(read_text(os.path.join(f.dir, "count.t%d" % i))) for i in range(6)]
        self.assertLessEqual(max(counts), 2)

    def test_bad_arguments_exit_2(self):
        f = self.flow(spec([task("a", "true")]))
        # In json mode a configuration error is one JSON line (event config_error) on stdout.
        r = f.run("--max-parallel", "zero")
        self.assertEqual(r.code, 2)
        self.assertIn("--max-parallel", r.events("config_error")[0]["message"])
        r = f.run("--param", "novalue")
        self.assertEqual(r.code, 2)
        self.assertIn("NAME=VALUE", r.events("config_error")[0]["message"])

    def test_sigterm_drains_then_cancels_a_task_that_ignores_sigterm(self):
        f = self.flow(spec([
            task("quick", "sleep 0.5; echo done"),
            task("stubborn", "trap '' TERM; echo $$ > stubborn.pid; "
                             "sh -c 'trap \"\" TERM; sleep 300' & echo $! > child.pid; "
                             "while true; do sleep 0.1; done"),
            task("later", "true", upstream=["quick"]),
        ]))
        p = f.start("--drain-seconds", "1", env={"DAGY_KILL_GRACE_SECONDS": "0.5"})
        self.addCleanup(stop, p)
        pidfile = os.path.join(f.dir, "child.pid")
        self.assertTrue(wait_for(lambda: os.path.exists(pidfile) and
                                 read_text(pidfile).strip(), 10))
        time.sleep(0.1)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual(p.returncode, 143, err)
        lines = [json.loads(l) for l in out.decode().splitlines()]
        self.assertTrue(any(l["event_type"] == "shutdown_requested" for l in lines))
        run_id = lines[0]["run_id"]
        state = os.path.join(f.state, "runs")
        run = read_json(os.path.join(state, run_id + ".json"))
        self.assertEqual(run["status"], "FAILED")
        self.assertEqual(run["error_message"], "Worker shutdown requested via SIGTERM")
        self.assertEqual(run["stop_reason"], "SIGTERM")

        def item(n):
            return read_json(os.path.join(state, run_id, "tasks", n + ".json"))
        self.assertEqual(item("quick")["status"], "SUCCEEDED")  # finished within the drain
        self.assertEqual(item("stubborn")["status"], "CANCELLED")
        self.assertEqual(item("later")["status"], "CANCELLED")  # never started
        for name in ("stubborn.pid", "child.pid"):
            pid = int(read_text(os.path.join(f.dir, name)))
            self.assertTrue(wait_for(lambda: not pid_alive(pid), 5), name + " survived")


if __name__ == "__main__":
    unittest.main()
