"""The Python authoring SDK (python/dagy): references, positional binding, nested references,
duplicate names, ordering, options and defaults, bad arguments, cycles refused at the `>>` that
would close them, the spec matching what dagy-agent accepts, `dagy build` determinism (same
sources -> same sha256) and what it packs, `dagy graph` against `dagy-agent --graph`, and
`pip install ./python`."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
import zipfile

SRC = os.environ.get("DAGY_TEST_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PYDIR = os.path.join(SRC, "python")
sys.path.insert(0, PYDIR)
import dagy  # noqa: E402
from dagy import DAG, DagyError, TaskCallError, command, task  # noqa: E402
from dagy import spec as dspec  # noqa: E402

AGENT = os.environ.get("DAGY_AGENT") or os.path.join(
    os.environ.get("DAGY_TEST_BUILD", os.path.join(SRC, "build")), "dagy-agent")
HAVE_AGENT = os.path.isfile(AGENT) and os.access(AGENT, os.X_OK)


@task
def extract(source_path, limit=10):
    return [source_path, limit]


@task(retries=3, retry_delay_seconds=5, trigger_rule="all_done", env={"MODE": "{{ environment }}"})
def transform(data, factor=1):
    return data


@task
def load(data, destination, **options):
    return None


@task
def many(*rows):
    return rows


@task
def takes_upstream(upstream):
    return upstream


def spec_of(dag):
    """The spec with module paths relative to this directory (this file runs as __main__)."""
    return dag.to_spec(root=os.path.dirname(os.path.abspath(__file__)))


def by_name(spec, name):
    return next(t for t in spec["tasks"] if t["name"] == name)


class References(unittest.TestCase):
    def test_reference_becomes_upstream_kwarg_and_edge(self):
        with DAG("etl", version="1.0.0") as dag:
            d = extract(source_path="{{ parameters.source }}")
            transform(data=d)
        s = spec_of(dag)
        t = by_name(s, "transform")
        self.assertEqual(t["kwargs"], {"data": {"upstream": "extract"}})
        self.assertEqual(t["upstream"], ["extract"])
        self.assertEqual(by_name(s, "extract")["kwargs"], {"source_path": "{{ parameters.source }}"})
        self.assertEqual(t["callable"], "test_sdk:transform")  # from the file, not __main__
        dspec.validate(s)

    def test_positional_arguments_bound_by_signature(self):
        with DAG("etl") as dag:
            d = extract("in.csv", 5)
            load(d, "out.json", compress=True)
        s = spec_of(dag)
        self.assertEqual(by_name(s, "extract")["kwargs"], {"source_path": "in.csv", "limit": 5})
        # **options spread into top-level kwargs, as the runner's func(**kwargs) passes them
        self.assertEqual(by_name(s, "load")["kwargs"],
                         {"data": {"upstream": "extract"}, "destination": "out.json",
                          "compress": True})

    def test_wrong_call_fails_like_python(self):
        with DAG("etl"):
            with self.assertRaises(TypeError) as cm:
                extract()
            self.assertIn("source_path", str(cm.exception))
            with self.assertRaises(TaskCallError):
                extract("a", 1, 2)
            with self.assertRaises(TaskCallError):
                extract("a", nope=1)
            with self.assertRaises(TaskCallError) as cm:
                many(1, 2)
            self.assertIn("keyword arguments only", str(cm.exception))

    def test_nested_references_in_lists_and_dicts(self):
        with DAG("etl") as dag:
            a = extract("a")
            b = extract("b")
            load({"first": a, "all": [a, b, {"deep": (b,)}]}, "x")
        t = by_name(spec_of(dag), "load")
        self.assertEqual(t["kwargs"]["data"], {
            "first": {"upstream": "extract"},
            "all": [{"upstream": "extract"}, {"upstream": "extract_2"},
                    {"deep": [{"upstream": "extract_2"}]}]})
        self.assertEqual(t["upstream"], ["extract", "extract_2"])
        dspec.validate(spec_of(dag))

    def test_duplicate_names_get_suffixes_unless_named(self):
        with DAG("etl") as dag:
            extract("a")
            extract("b")
            extract("c")
            extract.options(name="extract_eu")("d")
            with self.assertRaises(DagyError) as cm:
                extract.options(name="extract_eu")("e")
            self.assertIn("duplicate task name 'extract_eu'", str(cm.exception))
            command("report", ["true"])
            with self.assertRaises(DagyError):
                command("report", ["true"])
        self.assertEqual(dag.task_names, ["extract", "extract_2", "extract_3", "extract_eu", "report"])

    def test_explicit_ordering_rshift_and_upstream(self):
        with DAG("etl") as dag:
            a = extract("a")
            b = extract("b")
            c = command("c", ["true"], upstream=[a])
            d = command("d", ["true"])
            a >> b >> d
            [a, b] >> c
            e = load(None, "x", upstream=[c, d])
        s = spec_of(dag)
        self.assertEqual(by_name(s, "extract_2")["upstream"], ["extract"])
        self.assertEqual(by_name(s, "d")["upstream"], ["extract_2"])
        self.assertEqual(by_name(s, "c")["upstream"], ["extract", "extract_2"])
        self.assertEqual(by_name(s, "load")["upstream"], ["c", "d"])
        self.assertNotIn("upstream", by_name(s, "load")["kwargs"])
        self.assertEqual(repr(e), "<dagy result of task 'load'>")
        dspec.validate(s)

    def test_a_parameter_named_upstream_is_data(self):
        with DAG("etl") as dag:
            a = extract("a")
            takes_upstream(upstream="plain value")
            takes_upstream.options(upstream=[a], name="ordered")(upstream=a)
        s = spec_of(dag)
        self.assertEqual(by_name(s, "takes_upstream")["kwargs"], {"upstream": "plain value"})
        self.assertNotIn("upstream", by_name(s, "takes_upstream"))
        o = by_name(s, "ordered")
        self.assertEqual((o["kwargs"], o["upstream"]), ({"upstream": {"upstream": "extract"}},
                                                        ["extract"]))
        dspec.validate(s)

    def test_cycles_impossible_by_construction(self):
        with DAG("etl") as dag:
            a = extract("a")
            b = transform(a)
            c = transform(b)
            with self.assertRaises(DagyError) as cm:
                c >> a
            self.assertIn("cycle", str(cm.exception))
            self.assertIn("extract -> transform -> transform_2 -> extract", str(cm.exception))
            with self.assertRaises(DagyError):
                a >> a
            b >> c  # already an edge: no-op
        self.assertIsNone(dspec.find_cycle(spec_of(dag)["tasks"]))
        self.assertEqual(dag.upstream_of("extract"), [])

    def test_outside_a_dag_a_task_is_its_function(self):
        self.assertEqual(extract("p", 2), ["p", 2])
        self.assertEqual(transform.__name__, "transform")
        self.assertIn("factor", str(transform.signature))

    def test_a_reference_has_no_value_at_build_time(self):
        with DAG("etl"):
            a = extract("a")
            for op in (lambda: bool(a), lambda: list(a), lambda: a["x"], lambda: "%s" % a,
                       lambda: "{}".format(a), lambda: f"/tmp/{a}"):
                with self.assertRaises(DagyError):
                    op()


class Options(unittest.TestCase):
    def test_trigger_rules_and_scheduling_fields(self):
        with DAG("etl", max_parallel=2, defaults={"retries": 1, "timeout_seconds": 60}) as dag:
            transform(extract("a"))
            command("cleanup", ["rm", "-f", "x"], trigger_rule="all_done", timeout_seconds=5,
                    env={"A": "1"})
        s = spec_of(dag)
        self.assertEqual(s["max_parallel"], 2)
        self.assertEqual(s["defaults"], {"retries": 1, "timeout_seconds": 60})
        t = by_name(s, "transform")
        self.assertEqual((t["trigger_rule"], t["retries"], t["retry_delay_seconds"]),
                         ("all_done", 3, 5))
        self.assertEqual(t["env"], {"MODE": "{{ environment }}"})
        self.assertNotIn("retries", by_name(s, "extract"))
        c = by_name(s, "cleanup")
        self.assertEqual((c["command"], c["trigger_rule"], c["timeout_seconds"], c["env"]),
                         (["rm", "-f", "x"], "all_done", 5, {"A": "1"}))
        dspec.validate(s)

    def test_bad_options_refused_with_the_task_named(self):
        cases = [
            lambda: task(retries=101)(lambda_free),
            lambda: task(retries=-1)(lambda_free),
            lambda: task(retry_backoff=0.5)(lambda_free),
            lambda: task(timeout_seconds=0)(lambda_free),
            lambda: task(retry_jitter="yes")(lambda_free),
            lambda: task(trigger_rule="any")(lambda_free),
            lambda: task(env={"DAGY_X": "1"})(lambda_free),
            lambda: task(env={"1A": "1"})(lambda_free),
            lambda: task(env={"A": 1})(lambda_free),
            lambda: task(name="bad name")(lambda_free),
            lambda: DAG("etl", defaults={"retrys": 1}),
            lambda: DAG("bad/name"),
            lambda: DAG(".."),
            lambda: DAG("etl", max_parallel=0),
            lambda: DAG("etl", metadata={"when": object()}),
        ]
        for i, make in enumerate(cases):
            with self.assertRaises(DagyError, msg="case %d" % i) as cm:
                make()
            self.assertTrue(str(cm.exception), "case %d" % i)
        with self.assertRaises(DagyError) as cm:
            task(trigger_rule="any")(lambda_free)
        self.assertIn("lambda_free", str(cm.exception))

    def test_bad_arguments_name_task_and_argument(self):
        with DAG("etl"):
            for value, why in [(object(), "not JSON-serialisable"), (float("nan"), "JSON number"),
                               ({1: "a"}, "keys must be strings"), ("{{ foo }}", "unknown template"),
                               ("a\0b", "NUL"), ({"upstream": "extract"}, "literal"),
                               ("caf\udce9", "not valid UTF-8"),
                               (extract, "pass its result")]:
                with self.assertRaises(DagyError) as cm:
                    extract(value)
                self.assertIn("task extract", str(cm.exception))
                self.assertIn("source_path", str(cm.exception))
                self.assertIn(why, str(cm.exception))
            with self.assertRaises(DagyError) as cm:
                command("c", ["echo", extract("a")])
            self.assertIn("argv[1]", str(cm.exception))
            with self.assertRaises(DagyError):
                command("c", "echo hi")
        with self.assertRaises(DagyError):
            command("c", ["true"])  # outside a DAG

    def test_references_across_dags_refused(self):
        with DAG("one"):
            a = extract("a")
        with DAG("two"):
            with self.assertRaises(DagyError):
                transform(a)

    def test_nested_function_and_async_refused(self):
        def inner(x):
            return x
        with DAG("etl") as dag:
            task(inner)(1)
        with self.assertRaises(DagyError) as cm:
            spec_of(dag)
        self.assertIn("top level", str(cm.exception))
        with DAG("etl") as dag:
            extract("a")
        with self.assertRaises(DagyError) as cm:
            dag.to_spec()  # no root: __main__ cannot be imported by the runner
        self.assertIn("dagy build", str(cm.exception))

        async def coro():
            return 1
        with self.assertRaises(DagyError):
            task(coro)


def lambda_free(x):
    return x


class SpecRules(unittest.TestCase):
    """The Python check refuses what the agent refuses, with the agent's message."""

    BAD = [
        ({"tasks": [{"name": "a", "command": ["true"], "typo": 1}]}, 'unknown field "typo"'),
        ({"tasks": [{"name": "a b", "command": ["true"]}]}, "invalid task name"),
        ({"tasks": [{"name": "..", "command": ["true"]}]}, 'may not be "." or ".."'),
        ({"tasks": [{"name": "x" * 129, "command": ["true"]}]}, "longer than 128"),
        ({"tasks": [{"name": "a", "command": ["true"]}, {"name": "a", "command": ["true"]}]},
         "duplicate task name"),
        ({"tasks": [{"name": "a", "command": ["true"], "upstream": ["b"]},
                    {"name": "b", "command": ["true"], "upstream": ["a"]}]}, "cycle: "),
        ({"tasks": [{"name": "a", "callable": "m:f", "kwargs": {"x": {"upstream": "b"}}},
                    {"name": "b", "command": ["true"]}]}, "not listed in"),
        ({"tasks": [{"name": "a", "callable": "m.f"}]}, "module.path:function"),
        ({"tasks": [{"name": "a", "command": ["x {{ nope }}"]}]}, "unknown template variable"),
        ({"tasks": [{"name": "a", "command": ["true"], "kwargs": {}}]}, "only allowed with"),
        ({"tasks": [{"name": "a", "command": ["true"], "env": {"DAGY_X": "1"}}]}, "reserved"),
        ({"tasks": [{"name": "a", "command": [""]}]}, "program name"),
        ({"tasks": [{"name": "a", "command": ["true"], "retries": 1.5}]}, "between 0 and 100"),
        ({"tasks": []}, "non-empty array"),
        ({"spec_version": 2, "tasks": [{"name": "a", "command": ["true"]}]}, "unsupported version 2"),
        ({"max_parallel": 0, "tasks": [{"name": "a", "command": ["true"]}]}, "max_parallel"),
        ({"defaults": {"retry": 1}, "tasks": [{"name": "a", "command": ["true"]}]},
         'defaults: unknown field "retry"'),
        ({"tasks": [{"name": "a", "command": ["x {{ parameters.a b }}"]}]},
         "invalid parameter name"),
        ({"tasks": [{"name": "a", "command": ["x {{ run_id"]}]}, "unterminated template"),
        ({"tasks": [{"name": "a", "command": ["true"], "env": {"A-B": "1"}}]},
         "invalid variable name"),
        ({"tasks": [{"name": "a", "command": ["true"], "trigger_rule": "always"}]},
         "must be one of all_success"),
        ({"tasks": [{"name": "a", "command": ["true"], "upstream": ["a"]}]},
         "cannot depend on itself"),
        ({"tasks": [{"name": "a", "command": ["true"], "timeout_seconds": 0}]}, "> 0"),
        ({"tasks": [{"name": "a", "callable": "m:f", "kwargs": {"x": ["{{ foo }}"]}}]},
         "kwargs.x[0]: unknown template variable"),
    ]

    def spec(self, extra):
        s = {"spec_version": 1, "name": "f"}
        s.update(extra)
        return s

    def test_python_rules_refuse_with_the_agents_message(self):
        for extra, msg in self.BAD:
            with self.assertRaises(dspec.SpecError, msg=json.dumps(extra)[:80]) as cm:
                dspec.validate(self.spec(extra))
            self.assertIn(msg, str(cm.exception))

    @unittest.skipUnless(HAVE_AGENT, "dagy-agent not built")
    def test_agent_refuses_the_same_specs(self):
        with tempfile.TemporaryDirectory() as tmp:
            for extra, msg in self.BAD:
                with open(os.path.join(tmp, "flow_spec.json"), "w") as f:
                    json.dump(self.spec(extra), f)
                p = subprocess.run([AGENT, "--flow", tmp, "--graph"], capture_output=True,
                                   text=True, timeout=30, cwd=tmp)
                self.assertEqual(p.returncode, 2, (extra, p.stdout))
                self.assertIn(msg, p.stderr)


FLOW = textwrap.dedent('''
    """A test flow."""
    from dagy import DAG, task, command
    from flows.helpers import double


    @task
    def extract(n):
        return list(range(int(n)))


    @task(retries=1)
    def transform(data):
        return [double(x) for x in data]


    with DAG("sdk_flow", version="1.2.3", metadata={"owner": "tests"}) as dag:
        d = extract("{{ parameters.n }}")
        t = transform(d)
        command("report", ["sh", "-c", "cat \\"$DAGY_TASK_INPUTS\\""], upstream=[t])
''')


def make_project(root, flow=FLOW):
    os.makedirs(os.path.join(root, "flows"))
    with open(os.path.join(root, "flows", "__init__.py"), "w") as f:
        f.write("")
    with open(os.path.join(root, "flows", "pipeline.py"), "w") as f:
        f.write(flow)
    with open(os.path.join(root, "flows", "helpers.py"), "w") as f:
        f.write("def double(x):\n    return 2 * x\n")
    with open(os.path.join(root, "run.sh"), "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(root, "run.sh"), 0o755)
    for junk in ("__pycache__/x.pyc", ".git/config", "venv/pyvenv.cfg", "venv/lib/site.py",
                 ".env", "flows/__pycache__/pipeline.cpython-311.pyc"):
        p = os.path.join(root, junk)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write("junk")


def run_dagy(args, cwd, **env):
    e = dict(os.environ, PYTHONPATH=PYDIR, **env)
    return subprocess.run([sys.executable, "-m", "dagy"] + args, cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=120)


class Build(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dagy-sdk-test-")
        self.root = os.path.join(self.tmp, "proj")
        make_project(self.root)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def build(self, *extra, **env):
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent"] + list(extra), self.root, **env)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def test_same_sources_same_sha256(self):
        a = self.build("--output", os.path.join(self.tmp, "a.zip"))
        # a second copy of the project, with other mtimes and another umask: the same bytes
        other = os.path.join(self.tmp, "other")
        shutil.copytree(self.root, other, copy_function=shutil.copy)
        for dirpath, _, files in os.walk(other):
            for f in files:
                os.utime(os.path.join(dirpath, f), (1e9, 1e9))
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent", "--output",
                      os.path.join(self.tmp, "b.zip")], other)
        self.assertEqual(p.returncode, 0, p.stderr)
        b = json.loads(p.stdout)
        self.assertEqual(a["sha256"], b["sha256"])
        with open(os.path.join(self.tmp, "a.zip"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), a["sha256"])
        with open(os.path.join(self.root, "flows", "helpers.py"), "a") as f:
            f.write("# changed\n")
        c = self.build("--output", os.path.join(self.tmp, "c.zip"))
        self.assertNotEqual(a["sha256"], c["sha256"])

    def test_artifact_contents_sorted_fixed_dates_and_modes(self):
        r = self.build()
        self.assertTrue(r["artifact"].endswith(os.path.join("dist", "sdk_flow-1.2.3.zip")))
        with zipfile.ZipFile(r["artifact"]) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            spec = json.loads(z.read("flow_spec.json"))
            meta = json.loads(z.read("metadata.json"))
        self.assertEqual(names, sorted(names))
        self.assertEqual(set(names), {
            "flow_spec.json", "metadata.json", "flows/__init__.py", "flows/pipeline.py",
            "flows/helpers.py", "run.sh", "dagy/__init__.py", "dagy/__main__.py", "dagy/_dag.py",
            "dagy/build.py", "dagy/cli.py", "dagy/spec.py"})
        self.assertTrue(all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos))
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in infos}
        self.assertEqual(modes["run.sh"], 0o755)
        self.assertEqual(modes["flows/pipeline.py"], 0o644)
        self.assertEqual(meta, {"owner": "tests"})
        self.assertEqual(spec["name"], "sdk_flow")
        self.assertEqual(spec["version"], "1.2.3")
        self.assertEqual(by_name(spec, "extract")["callable"], "flows.pipeline:extract")
        self.assertEqual(by_name(spec, "report")["upstream"], ["transform"])
        # a second build does not pack the first artifact (dist/ is skipped)
        r2 = self.build()
        self.assertEqual(r2["sha256"], r["sha256"])

    def test_version_name_include_exclude(self):
        out = os.path.join(self.tmp, "x.zip")
        r = self.build("--output", out, "--version", "2.0.0", "--name", "renamed",
                       "--exclude", "run.sh", "--no-sdk")
        self.assertEqual((r["flow_name"], r["flow_version"]), ("renamed", "2.0.0"))
        with zipfile.ZipFile(out) as z:
            names = z.namelist()
            spec = json.loads(z.read("flow_spec.json"))
        self.assertEqual((spec["name"], spec["version"]), ("renamed", "2.0.0"))
        self.assertNotIn("run.sh", names)
        self.assertFalse(any(n.startswith("dagy/") for n in names))
        r = self.build("--output", out, "--include", "flows", "--exclude", "*.sh")
        with zipfile.ZipFile(out) as z:
            self.assertNotIn("run.sh", z.namelist())
            self.assertIn("flows/helpers.py", z.namelist())

    def test_excluding_a_tasks_module_is_an_error(self):
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent", "--exclude", "pipeline.py"],
                     self.root)
        self.assertEqual(p.returncode, 2)
        self.assertIn("flows/pipeline.py", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.root, "dist")))

    def test_bad_flow_is_exit_2_and_writes_nothing(self):
        bad = FLOW.replace('extract("{{ parameters.n }}")', 'extract("{{ nope }}")')
        with open(os.path.join(self.root, "flows", "pipeline.py"), "w") as f:
            f.write(bad)
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent"], self.root)
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("task extract: argument 'n'", p.stderr)
        self.assertIn("unknown template variable", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.root, "dist")))
        with open(os.path.join(self.root, "flows", "pipeline.py"), "w") as f:
            f.write("raise RuntimeError('boom')\n")
        p = run_dagy(["build", "flows/pipeline.py"], self.root)
        self.assertEqual(p.returncode, 2)
        self.assertIn("RuntimeError: boom", p.stderr)
        with open(os.path.join(self.root, "flows", "pipeline.py"), "w") as f:
            f.write("x = 1\n")
        p = run_dagy(["build", "flows/pipeline.py"], self.root)
        self.assertEqual(p.returncode, 2)
        self.assertIn("defines no DAG", p.stderr)

    def test_flow_outside_root_and_stale_spec_refused(self):
        elsewhere = os.path.join(self.tmp, "elsewhere")
        os.mkdir(elsewhere)
        p = run_dagy(["build", os.path.join(self.root, "flows", "pipeline.py"), "--no-agent"],
                     elsewhere)
        self.assertEqual(p.returncode, 2)
        self.assertIn("is not under the project root", p.stderr)
        p = run_dagy(["build", os.path.join(self.root, "flows", "pipeline.py"), "--no-agent",
                      "--root", self.root], elsewhere)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(self.root, "flow_spec.json"), "w") as f:
            f.write("{}")
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent"], self.root)
        self.assertEqual(p.returncode, 2)
        self.assertIn("flow_spec.json would be replaced", p.stderr)

    def test_flow_output_at_import_goes_to_stderr(self):
        with open(os.path.join(self.root, "flows", "pipeline.py"), "a") as f:
            f.write("print('hello from the flow module')\n")
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent"], self.root)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["flow_name"], "sdk_flow")
        self.assertIn("hello from the flow module", p.stderr)

    def test_output_never_replaces_a_file_that_is_not_a_zip(self):
        target = os.path.join(self.root, "flows", "helpers.py")
        with open(target) as f:
            before = f.read()
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent", "--output", target], self.root)
        self.assertEqual(p.returncode, 2, p.stdout)
        self.assertIn("is not a zip file", p.stderr)
        with open(target) as f:
            self.assertEqual(f.read(), before)

    def test_output_that_cannot_be_written_is_exit_2(self):
        os.makedirs(os.path.join(self.tmp, "isdir.zip"))
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent", "--output",
                      os.path.join(self.tmp, "isdir.zip")], self.root)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("is not a zip file", p.stderr)
        with open(os.path.join(self.tmp, "afile"), "w") as f:
            f.write("x")
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent", "--output",
                      os.path.join(self.tmp, "afile", "x.zip")], self.root)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("cannot write", p.stderr)
        self.assertNotIn("Traceback", p.stderr)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["afile", "isdir.zip", "proj"])

    def test_root_with_its_own_dagy_package_builds(self):
        shutil.copytree(os.path.join(PYDIR, "dagy"), os.path.join(self.root, "dagy"))
        r = self.build("--output", os.path.join(self.tmp, "own.zip"))
        with zipfile.ZipFile(r["artifact"]) as z:
            self.assertEqual(len([n for n in z.namelist() if n == "dagy/_dag.py"]), 1)

    def test_tasks_from_another_module_of_the_project(self):
        with open(os.path.join(self.root, "flows", "tasks.py"), "w") as f:
            f.write("from dagy import task\n\n\n@task\ndef triple(x):\n    return 3 * x\n")
        with open(os.path.join(self.root, "flows", "pipeline.py"), "w") as f:
            f.write("from dagy import DAG\nfrom flows.tasks import triple\n\n"
                    "with DAG('two_modules'):\n    triple(triple(1))\n")
        r = self.build()
        with zipfile.ZipFile(r["artifact"]) as z:
            spec = json.loads(z.read("flow_spec.json"))
        self.assertEqual([t["callable"] for t in spec["tasks"]],
                         ["flows.tasks:triple", "flows.tasks:triple"])
        self.assertEqual([t["name"] for t in spec["tasks"]], ["triple", "triple_2"])

    def test_symlink_in_sources_refused(self):
        os.symlink("/etc/passwd", os.path.join(self.root, "leak"))
        p = run_dagy(["build", "flows/pipeline.py", "--no-agent"], self.root)
        self.assertEqual(p.returncode, 2)
        self.assertIn("symbolic link", p.stderr)
        r = self.build("--exclude", "leak")
        self.assertTrue(os.path.exists(r["artifact"]))

    @unittest.skipUnless(HAVE_AGENT, "dagy-agent not built")
    def test_agent_checks_the_artifact_and_graph_matches(self):
        p = run_dagy(["build", "flows/pipeline.py"], self.root, DAGY_AGENT=AGENT)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual(r["checked_by"], "dagy-agent")
        g = run_dagy(["graph", "flows/pipeline.py"], self.root)
        self.assertEqual(g.returncode, 0, g.stderr)
        with tempfile.TemporaryDirectory() as stage:
            with zipfile.ZipFile(r["artifact"]) as z:
                z.extractall(stage)
            a = subprocess.run([AGENT, "--flow", stage, "--graph"], capture_output=True,
                               text=True, timeout=30, cwd=stage)
        self.assertEqual(a.returncode, 0, a.stderr)
        self.assertEqual(g.stdout, a.stdout)

    @unittest.skipUnless(HAVE_AGENT, "dagy-agent not built")
    def test_agent_message_when_only_the_agent_refuses(self):
        fake = os.path.join(self.tmp, "fake-agent")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\necho 'flow_spec.json: task \"x\": refused by agent' >&2\nexit 2\n")
        os.chmod(fake, 0o755)
        p = run_dagy(["build", "flows/pipeline.py", "--agent", fake], self.root)
        self.assertEqual(p.returncode, 2)
        self.assertIn("refused by agent", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.root, "dist", "sdk_flow-1.2.3.zip")))
        self.assertEqual(os.listdir(os.path.join(self.root, "dist")), [])


class Install(unittest.TestCase):
    def test_pip_install_gives_the_dagy_command(self):
        with tempfile.TemporaryDirectory() as tmp:
            target = os.path.join(tmp, "t")
            p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--quiet",
                                "--target", target, PYDIR], capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, PIP_NO_WARN_SCRIPT_LOCATION="1"))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(os.path.isfile(os.path.join(target, "bin", "dagy")))
            self.assertFalse(os.path.exists(os.path.join(target, "dagy", "__pycache__", "x")))
            v = subprocess.run([sys.executable, os.path.join(target, "bin", "dagy"), "--version"],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, PYTHONPATH=target))
            self.assertEqual(v.returncode, 0, v.stderr)
            self.assertEqual(v.stdout.strip(), "dagy " + dagy.__version__)

    def test_version_matches_pyproject(self):
        with open(os.path.join(PYDIR, "pyproject.toml")) as f:
            self.assertIn('version = "%s"' % dagy.__version__, f.read())


if __name__ == "__main__":
    unittest.main()
