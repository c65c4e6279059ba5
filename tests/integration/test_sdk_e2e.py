"""The Python SDK end to end: the py_sdk example built with `dagy build` (the same bytes as the
CMake build's build/examples/py_sdk.zip) and run by dagy-agent, results flowing from task to
task; then, against moto, dependency packages and deployments registered with dagy-launch
(register-package, register-deployment) and SDK-built flows registered with register-flow and
launched with that deployment, the agent running in container mode with the launched task's
environment and a callable importing the deployment's package."""

import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import launchenv  # noqa: E402
from launchenv import ORG, container_env  # noqa: E402

SRC = os.environ.get("DAGY_TEST_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("DAGY_TEST_BUILD") or os.path.join(SRC, "build")
EXAMPLE = os.path.join(SRC, "examples", "py_sdk")
READY = os.path.exists(launchenv.AGENT) and os.path.exists(launchenv.LAUNCH)

PRICED_FLOW = textwrap.dedent('''
    """A flow whose callable imports `pricing`, which only the deployment's package provides."""
    from dagy import DAG, task


    @task
    def extract():
        return [{"sku": "a", "amount": 10.0}, {"sku": "b", "amount": 5.5}]


    @task
    def price(rows):
        import pricing
        return [dict(r, gross=pricing.gross(r["amount"])) for r in rows]


    @task
    def total(rows, environment):
        if environment != "production":
            raise RuntimeError("environment is %r" % environment)
        value = round(sum(r["gross"] for r in rows), 2)
        print("total gross %s (pricing from the deployment)" % value)
        return {"gross": value}


    with DAG("priced", version="1.0.0") as dag:
        total(price(extract()), environment="{{ environment }}")
''')


def dagy_build(flow, root, output, *extra):
    """Runs `python3 -m dagy build` with the SDK of this tree; returns the parsed summary."""
    env = dict(os.environ, PYTHONPATH=os.path.join(SRC, "python"), PYTHONDONTWRITEBYTECODE="1",
               DAGY_AGENT=launchenv.AGENT)
    p = subprocess.run([sys.executable, "-m", "dagy", "build", flow, "--root", root, "--output",
                        output] + list(extra), cwd=root, env=env, capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        raise AssertionError("dagy build failed: %s" % p.stderr)
    return json.loads(p.stdout)


def log_lines(stdout):
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]


def package_zip(path, gross_factor):
    """A dependency package: a `pricing` module at the archive root."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        # A fixed entry time: the same factor gives the same bytes (writestr with a name stamps
        # the current second, so "the same content again" differed across a second boundary).
        z.writestr(zipfile.ZipInfo("pricing/__init__.py", date_time=(2026, 1, 1, 0, 0, 0)),
                   "def gross(net):\n    return round(net * %r, 2)\n" % gross_factor)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def agent_env(extra=None):
    """A clean environment for a local agent run: no PYTHONPATH (the artifact carries dagy)."""
    env = awsenv.clean_env()
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


@unittest.skipUnless(READY, "dagy-agent / dagy-launch not built")
class SdkExampleLocal(unittest.TestCase):
    def test_example_built_and_run_results_flow_between_tasks(self):
        with tempfile.TemporaryDirectory(prefix="dagy-sdk-e2e-") as tmp:
            r = dagy_build("flows/etl_pipeline.py", EXAMPLE, os.path.join(tmp, "py_sdk.zip"))
            self.assertEqual(r["checked_by"], "dagy-agent")
            cmake_zip = os.path.join(BUILD, "examples", "py_sdk.zip")
            if os.path.exists(cmake_zip):  # the CMake build made the very same bytes
                import hashlib
                with open(cmake_zip, "rb") as f:
                    self.assertEqual(hashlib.sha256(f.read()).hexdigest(), r["sha256"],
                                     "%s differs from a fresh dagy build (the SDK is packed "
                                     "too: is the build older than the sources?)" % cmake_zip)
            out = os.path.join(tmp, "out.json")
            a = awsenv.run([launchenv.AGENT, "--flow", r["artifact"], "--param",
                            "source=data/sales.csv", "--param", "destination=" + out,
                            "--state-dir", os.path.join(tmp, "state"), "--log-format", "json"],
                           env=agent_env(), cwd=tmp, timeout=120)
            self.assertEqual(a.returncode, 0, a.stdout[-3000:] + a.stderr[-3000:])
            with open(out) as f:
                rows = json.load(f)
            # extract -> transform -> load: the CSV's 6 rows, the one without amount dropped
            self.assertEqual(len(rows), 5)
            self.assertTrue(all(r["processed"] is True for r in rows))
            self.assertEqual(sorted(r["amount"] for r in rows), [10.01, 45.25, 80.0, 99.99, 120.5])
            lines = log_lines(a.stdout)
            report = [x["message"] for x in lines if x.get("task_name") == "report"
                      and x.get("event_type") == "task_output"]
            self.assertEqual(len(report), 1, report)
            got = json.loads(report[0].split("report: ", 1)[1])
            self.assertEqual(got["load"]["rows"], 5)
            self.assertEqual(got["load"]["total"], 355.75)
            self.assertEqual(got["load"]["by_region"], {"eu": 200.5, "us": 110.0, "apac": 45.25})
            start = next(x for x in lines if x["event_type"] == "run_start")
            self.assertEqual(start.get("metadata"), {"owner": "data-platform",
                                                     "tags": ["demo", "sdk"]})


@unittest.skipUnless(READY, "dagy-agent / dagy-launch not built")
class SdkLaunchWithDeployment(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.L = launchenv.LaunchEnv().start()
        r = cls.L.launch("init-tables")
        assert r.returncode == 0, r.stderr

    @classmethod
    def tearDownClass(cls):
        cls.L.stop()

    def package_item(self, slug):
        from boto3.dynamodb.types import TypeDeserializer
        it = self.L.moto.client("dynamodb").get_item(
            TableName="DAGY_DEP_PACKAGES", Key={"slug": {"S": slug}}, ConsistentRead=True
        ).get("Item")
        d = TypeDeserializer()
        return {k: d.deserialize(v) for k, v in it.items()} if it else None

    def deployment_item(self, name):
        from boto3.dynamodb.types import TypeDeserializer
        it = self.L.moto.client("dynamodb").get_item(
            TableName="DAGY_DEPLOYMENTS", Key={"deployment_name": {"S": name}},
            ConsistentRead=True).get("Item")
        d = TypeDeserializer()
        return {k: d.deserialize(v) for k, v in it.items()} if it else None

    def register_package(self, slug, version, factor, org=ORG):
        p = self.L.path("pkg-%d.zip" % len(os.listdir(self.L.tmp.name)))
        package_zip(p, factor)
        return self.L.launch("register-package", "--slug", slug, "--artifact", p, "--version",
                             version, "--org", org)

    def test_register_package_and_deployment_rules(self):
        r = self.register_package("rules_pkg", "1.0.0", 2)
        self.assertEqual(r.returncode, 0, r.stderr)
        uri = r.json["package_s3_uri"]
        self.assertRegex(uri, r"^s3://%s/dep-packages/rules_pkg/1\.0\.0/package\.zip#sha256="
                         r"[0-9a-f]{64}$" % launchenv.BUCKET)
        item = self.package_item("rules_pkg")
        self.assertEqual((item["package_s3_uri"], item["org_id"], item["version"]),
                         (uri, ORG, "1.0.0"))
        obj = self.L.moto.client("s3").get_object(
            Bucket=launchenv.BUCKET, Key="dep-packages/rules_pkg/1.0.0/package.zip")["Body"].read()
        import hashlib
        self.assertEqual(hashlib.sha256(obj).hexdigest(), uri.split("#sha256=")[1])
        # the same content again: a no-op; other content under the same version: refused
        again = self.register_package("rules_pkg", "1.0.0", 2)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(again.json["package_s3_uri"], uri)
        other = self.register_package("rules_pkg", "1.0.0", 3)
        self.assertEqual(other.returncode, 2)
        self.assertIn("already registered with different content", other.stderr)
        self.assertEqual(self.package_item("rules_pkg")["package_s3_uri"], uri)
        # a slug of another org, bad names, a corrupt archive: refused, nothing written
        self.assertEqual(self.register_package("rules_pkg", "2.0.0", 2, org="evil").returncode, 2)
        self.assertEqual(self.register_package("bad/slug", "1.0.0", 2).returncode, 2)
        self.assertEqual(self.register_package("x", "../1", 2).returncode, 2)
        junk = self.L.path("junk.zip")
        with open(junk, "wb") as f:
            f.write(b"PK\x03\x04 not really a zip")
        r = self.L.launch("register-package", "--slug", "junk", "--artifact", junk, "--version",
                          "1", "--org", ORG)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIsNone(self.package_item("junk"))
        # a deployment naming an unknown slug: refused, naming it; nothing written
        d = self.L.launch("register-deployment", "--name", "staging", "--environment", "staging",
                          "--packages", "rules_pkg,nope")
        self.assertEqual(d.returncode, 2)
        self.assertIn('package "nope" is not registered', d.stderr)
        self.assertIsNone(self.deployment_item("staging"))
        d = self.L.launch("register-deployment", "--name", "staging", "--environment", "staging",
                          "--packages", "rules_pkg,rules_pkg")
        self.assertEqual(d.returncode, 2)
        d = self.L.launch("register-deployment", "--name", "staging", "--environment", "staging",
                          "--packages", "rules_pkg")
        self.assertEqual(d.returncode, 0, d.stderr)
        self.assertEqual(self.deployment_item("staging")["dep_package_slugs"], ["rules_pkg"])
        self.assertEqual(d.json["environment"], "staging")

    def run_container(self, run_id, arn):
        """The agent in container mode with exactly the launched task's override environment."""
        env = container_env(self.L.describe_task(arn))
        with tempfile.TemporaryDirectory(prefix="dagy-sdk-e2e-") as work:
            e = self.L.moto.env(**env)
            e.pop("PYTHONPATH", None)
            e["DAGY_WORK_DIR"] = work
            e["DAGY_HEARTBEAT_SECONDS"] = "1"
            a = awsenv.run([launchenv.AGENT], env=e, timeout=120, cwd=work)
        self.assertEqual(a.returncode, 0, "agent failed:\n%s\n%s" % (a.stdout[-4000:],
                                                                    a.stderr[-4000:]))
        st = self.L.launch("status", run_id)
        self.assertEqual(st.json["status"], "SUCCEEDED", st.json)
        return env, log_lines(a.stdout), st.json

    def test_sdk_flows_launched_with_a_deployment_package(self):
        L = self.L
        r = self.register_package("pricing", "1.0.0", 1.2)
        self.assertEqual(r.returncode, 0, r.stderr)
        pkg_uri = r.json["package_s3_uri"]
        d = L.launch("register-deployment", "--name", "prod", "--environment", "production",
                     "--packages", "pricing")
        self.assertEqual(d.returncode, 0, d.stderr)

        # a flow written with the SDK whose callable imports the package's module
        proj = L.path("priced_proj")
        os.makedirs(os.path.join(proj, "flows"))
        with open(os.path.join(proj, "flows", "priced.py"), "w") as f:
            f.write(PRICED_FLOW)
        b = dagy_build("flows/priced.py", proj, L.path("priced.zip"))
        r = L.launch("register-flow", "--artifact", b["artifact"], "--flow", "priced",
                     "--flow-version", "1.0.0", "--org", ORG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.json["artifact_sha256"], b["sha256"])
        r = L.launch("run", "--flow", "priced", "--org", ORG, "--deployment", "prod")
        self.assertEqual(r.returncode, 0, r.stderr)
        env, lines, st = self.run_container(r.json["run_id"], r.json["task_arn"])
        self.assertEqual(env["DAGY_DEP_PACKAGE_URIS"], pkg_uri)
        self.assertEqual(env["DAGY_ENVIRONMENT"], "production")
        self.assertEqual(st["tasks_succeeded"], 3)
        out = [x["message"] for x in lines if x.get("event_type") == "task_output"
               and x.get("task_name") == "total"]
        self.assertIn("total gross 18.6 (pricing from the deployment)", out)

        # the py_sdk example itself: registered and launched with the same deployment
        ex = dagy_build("flows/etl_pipeline.py", EXAMPLE, L.path("py_sdk.zip"))
        r = L.launch("register-flow", "--artifact", ex["artifact"], "--flow", "etl_pipeline",
                     "--flow-version", "1.0.0", "--org", ORG)
        self.assertEqual(r.returncode, 0, r.stderr)
        dest = L.path("example-out.json")
        r = L.launch("run", "--flow", "etl_pipeline", "--org", ORG, "--deployment", "prod",
                     "--param", "source=data/sales.csv", "--param", "destination=" + dest)
        self.assertEqual(r.returncode, 0, r.stderr)
        _, lines, st = self.run_container(r.json["run_id"], r.json["task_arn"])
        self.assertEqual(st["tasks_succeeded"], 4)
        with open(dest) as f:
            self.assertEqual(len(json.load(f)), 5)


if __name__ == "__main__":
    unittest.main()
