"""The worker image in container mode, as ECS runs it, against a loopback moto_server
(--network=host): the artifact by S3 URI with #sha256=, status in DynamoDB, failure traces in
S3; `podman stop -t 30` drains and exits 143; a dependency package's requirements.txt installed
by pip as the image user from a local wheel directory; and a read-only root whose /tmp is an
empty root-owned directory (what Fargate mounts)."""

import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imageenv  # noqa: E402
import awsenv  # noqa: E402  (tests/integration, put on sys.path by imageenv)

EXAMPLES = os.path.join(imageenv.BUILD, "examples")
HARDENED = ["--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges"]
ARTIFACTS, TRACES, ORG = "artifacts", "traces", "acme"
SHUTDOWN = "Worker shutdown requested via SIGTERM"

moto = None


def setUpModule():
    global moto
    imageenv.worker_image()
    moto = awsenv.Moto()
    moto.start()
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=ARTIFACTS)
    s3.create_bucket(Bucket=TRACES)
    moto.create_status_tables()


def tearDownModule():
    if moto is not None:
        moto.stop()


def plain(av):
    """A DynamoDB attribute value as a plain Python value."""
    (t, v), = av.items()
    if t == "M":
        return {k: plain(x) for k, x in v.items()}
    if t == "L":
        return [plain(x) for x in v]
    return v


def zip_bytes(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in sorted(files.items()):
            z.writestr(name, text)
    return buf.getvalue()


def make_wheel(directory, name="tinydep", version="1.0"):
    """A pure-Python wheel made with the standard library (PEP 427: RECORD with hashes)."""
    files = {
        "%s/__init__.py" % name: "ANSWER = 42\n",
        "%s-%s.dist-info/METADATA" % (name, version):
            "Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (name, version),
        "%s-%s.dist-info/WHEEL" % (name, version):
            "Wheel-Version: 1.0\nGenerator: dagy-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append("%s,sha256=%s,%d" % (path, digest.decode(), len(text.encode())))
    rec_path = "%s-%s.dist-info/RECORD" % (name, version)
    files[rec_path] = "\n".join(record + [rec_path + ",,"]) + "\n"
    path = os.path.join(directory, "%s-%s-py3-none-any.whl" % (name, version))
    with open(path, "wb") as f:
        f.write(zip_bytes(files))
    return path


class AwsCase(unittest.TestCase):
    """Helpers: containers removed by name, a scratch directory, moto's S3 and DynamoDB."""

    def setUp(self):
        self.c = imageenv.Containers()
        self.addCleanup(self.c.remove_all)
        t = tempfile.mkdtemp(prefix="dagy-imgtest-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, t, True)
        os.chmod(t, 0o755)
        self.tmp = t

    def put(self, key, data):
        moto.client("s3").put_object(Bucket=ARTIFACTS, Key=key, Body=data)
        return "s3://%s/%s" % (ARTIFACTS, key)

    def put_artifact(self, name, data):
        uri = self.put("flows/%s/1.0.0/artifact.zip" % name, data)
        return uri + "#sha256=" + hashlib.sha256(data).hexdigest()

    def env_opts(self, run_id, artifact_uri, **extra):
        """-e options: the environment `dagy-launch run` gives an ECS task, aimed at moto."""
        env = moto.env({}, DAGY_RUN_ID=run_id, DAGY_ARTIFACT_S3_URI=artifact_uri,
                       DAGY_ORG_ID=ORG, DAGY_TRACES_BUCKET=TRACES, **extra)
        opts = ["--network=host"]
        for k, v in sorted(env.items()):
            if k.startswith(("AWS_", "DAGY_", "PIP_")):
                opts += ["-e", "%s=%s" % (k, v)]
        return opts

    def run_item(self, run_id):
        item = moto.client("dynamodb").get_item(TableName="DAGY_RUNS",
                                                Key={"run_id": {"S": run_id}}).get("Item")
        return {k: plain(v) for k, v in (item or {}).items()}

    def task_items(self, run_id):
        r = moto.client("dynamodb").query(
            TableName="DAGY_TASK_RUNS", KeyConditionExpression="run_id = :r",
            ExpressionAttributeValues={":r": {"S": run_id}})
        return {plain(i["task_name"]): {k: plain(v) for k, v in i.items()} for i in r["Items"]}


class ContainerModeTest(AwsCase):

    def test_example_from_s3_with_sha256_status_in_dynamodb_traces_in_s3(self):
        with open(os.path.join(EXAMPLES, "etl_shell.zip"), "rb") as f:
            uri = self.put_artifact("etl_shell", f.read())
        run_id = "img-etl-fail"
        r = self.c.run([], self.env_opts(run_id, uri, DAGY_FLOW_NAME="etl_shell",
                                         DAGY_PARAMETERS='{"date": "2024-06-01", "fail": "1"}'))
        self.assertEqual(r.returncode, 1, r.stdout[-4000:] + r.stderr[-2000:])
        run = self.run_item(run_id)
        self.assertEqual(run["status"], "FAILED", run)
        self.assertIn("publish", run["error_message"])
        tasks = self.task_items(run_id)
        self.assertEqual({t: i["status"] for t, i in tasks.items()}, {
            "extract": "SUCCEEDED", "validate": "SUCCEEDED", "by_region": "SUCCEEDED",
            "daily_total": "SUCCEEDED", "publish": "FAILED", "alert_on_failure": "SUCCEEDED",
            "cleanup": "SUCCEEDED"})
        prefix = "exceptions/%s/%s/" % (ORG, run_id)
        self.assertEqual(tasks["publish"]["trace_s3_uri"],
                         "s3://%s/%spublish/1.txt" % (TRACES, prefix))
        body = moto.client("s3").get_object(Bucket=TRACES, Key=prefix + "publish/1.txt")
        self.assertIn("failing on purpose", body["Body"].read().decode())
        moto.client("s3").head_object(Bucket=TRACES, Key=prefix + "traceback.txt")

    def test_checksum_mismatch_exits_2_before_running(self):
        with open(os.path.join(EXAMPLES, "etl_shell.zip"), "rb") as f:
            uri = self.put_artifact("etl_bad_sum", f.read())
        uri = uri.split("#")[0] + "#sha256=" + "0" * 64
        r = self.c.run([], self.env_opts("img-badsum", uri, DAGY_FLOW_NAME="etl_shell",
                                         DAGY_PARAMETERS='{"date": "2024-06-01"}'))
        self.assertEqual(r.returncode, 2, r.stdout[-3000:])
        self.assertIn("sha256 mismatch", self.run_item("img-badsum")["error_message"])
        self.assertEqual(self.task_items("img-badsum"), {})

    def test_podman_stop_drains_then_exits_143_tasks_cancelled(self):
        spec = {"spec_version": 1, "name": "stoppable", "version": "1.0.0", "tasks": [
            {"name": "long", "command": ["sleep", "300"]},
            {"name": "after", "upstream": ["long"], "command": ["true"]}]}
        uri = self.put_artifact("stoppable", zip_bytes({"flow_spec.json": json.dumps(spec)}))
        run_id = "img-stop"
        name = self.c.start([], self.env_opts(run_id, uri, DAGY_FLOW_NAME="stoppable",
                                              DAGY_DRAIN_SECONDS="2"))
        deadline = time.monotonic() + 90
        while self.task_items(run_id).get("long", {}).get("status") != "RUNNING":
            self.assertLess(time.monotonic(), deadline, self.c.logs(name)[-3000:])
            time.sleep(0.3)
        t0 = time.monotonic()
        imageenv.podman(["stop", "-t", "30", name], timeout=90)
        elapsed = time.monotonic() - t0
        code = imageenv.podman(["inspect", "--format", "{{.State.ExitCode}}", name]).stdout
        logs = self.c.logs(name)
        print("\npodman stop -t 30: exit %s after %.1f s (drain 2 s)" % (code.strip(), elapsed),
              file=sys.stderr, flush=True)
        self.assertEqual(code.strip(), "143", logs[-3000:])
        # drain 2 s + kill grace 3 s + final status writes: far inside stopTimeout's 30 s, so
        # podman never had to SIGKILL (that would be 137).
        self.assertLess(elapsed, 20, logs[-3000:])
        run = self.run_item(run_id)
        self.assertEqual((run["status"], run["error_message"]), ("FAILED", SHUTDOWN), run)
        self.assertEqual(run.get("stop_reason"), "SIGTERM")
        tasks = self.task_items(run_id)
        self.assertEqual((tasks["long"]["status"], tasks["after"]["status"]),
                         ("CANCELLED", "CANCELLED"), tasks)
        events = [json.loads(x).get("event_type") for x in logs.splitlines()
                  if x.startswith("{")]
        self.assertIn("shutdown_requested", events)

    def test_dependency_requirements_installed_by_pip_as_image_user(self):
        wheels = os.path.join(self.tmp, "wheels")
        os.makedirs(wheels)
        os.chmod(wheels, 0o755)
        make_wheel(wheels)
        pkg = self.put("packages/helper/1.0/package.zip", zip_bytes({
            "requirements.txt": "tinydep==1.0\n",
            "helper.py": "def twice(x):\n    return 2 * x\n"}))
        spec = {"spec_version": 1, "name": "uses_deps", "version": "1.0.0", "tasks": [
            {"name": "use", "callable": "job:main"}]}
        job = ("import os, tinydep, helper\n"
               "def main():\n"
               "    st = os.stat(tinydep.__file__)\n"
               "    print('tinydep', helper.twice(tinydep.ANSWER), st.st_uid, os.getuid(),\n"
               "          tinydep.__file__, flush=True)\n"
               "    return {'answer': helper.twice(tinydep.ANSWER)}\n")
        uri = self.put_artifact("uses_deps", zip_bytes({"flow_spec.json": json.dumps(spec),
                                                        "job.py": job}))
        run_id = "img-deps"
        # No index: pip finds the wheel in the mounted directory (PIP_* variables reach pip
        # through the agent's environment), as a private subnet without PyPI access would.
        opts = self.env_opts(run_id, uri, DAGY_FLOW_NAME="uses_deps", DAGY_DEP_PACKAGE_URIS=pkg,
                             PIP_NO_INDEX="1", PIP_FIND_LINKS="/wheels")
        r = self.c.run([], opts + ["-v", wheels + ":/wheels:ro"] + HARDENED)
        self.assertEqual(r.returncode, 0, r.stdout[-5000:] + r.stderr[-2000:])
        lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        out = [e["message"] for e in lines if e.get("event_type") == "task_output"]
        said = [m.split() for m in out if m.startswith("tinydep ")]
        self.assertTrue(said, out)
        # The callable's import came from the pip target, written by uid 10001.
        self.assertEqual(said[0][1:4], ["84", "10001", "10001"])
        self.assertRegex(said[0][4], r"^/tmp/dagy/img-deps/deps/\d+\.site/tinydep/__init__\.py$")
        self.assertTrue(any(e.get("event_type") == "deps_installed" for e in lines), lines)
        self.assertEqual(self.run_item(run_id)["status"], "SUCCEEDED")


class DerivedImageTest(AwsCase):
    """docs/operations.md: users add their own Python packages FROM the worker image."""

    def test_pip_install_in_an_image_built_from_the_worker_image(self):
        ctx = os.path.join(self.tmp, "ctx")
        os.makedirs(ctx)
        make_wheel(ctx)
        with open(os.path.join(ctx, "Containerfile"), "w") as f:
            f.write("FROM %s\nUSER root\nCOPY tinydep-1.0-py3-none-any.whl /wheels/\n"
                    "RUN python3 -m pip install --no-cache-dir --break-system-packages "
                    "--no-index --find-links /wheels tinydep==1.0 && rm -rf /wheels "
                    "&& python3 -c 'import tinydep'\nUSER 10001:10001\n" % imageenv.IMAGE)
        tag = "localhost/dagy-worker-derived:image-test"
        imageenv.podman(["build", "--pull=never", "--network=none", "-t", tag, ctx])
        # Cleanups run last-first: the containers (and their anonymous volumes), then the image.
        self.addCleanup(imageenv.podman, ["rmi", tag], check=False)
        self.addCleanup(self.c.remove_all)
        spec = {"spec_version": 1, "name": "derived", "version": "1.0.0", "tasks": [
            {"name": "use", "callable": "job:main"}]}
        job = ("import os, tinydep\n"
               "def main():\n"
               "    print('tinydep', tinydep.ANSWER, tinydep.__file__, flush=True)\n")
        flows = os.path.join(self.tmp, "flows")
        os.makedirs(flows)
        with open(os.path.join(flows, "derived.zip"), "wb") as f:
            f.write(zip_bytes({"flow_spec.json": json.dumps(spec), "job.py": job}))
        os.chmod(flows, 0o755)
        os.chmod(os.path.join(flows, "derived.zip"), 0o644)
        r = self.c.run(["--flow", "/flows/derived.zip", "--log-format", "json"],
                       ["-v", flows + ":/flows:ro"] + HARDENED, image=tag)
        self.assertEqual(r.returncode, 0, r.stdout[-4000:] + r.stderr[-2000:])
        self.assertRegex(r.stdout, r"tinydep 42 /usr/local/lib/python3[.0-9]*/dist-packages/")


class ReadOnlyRootTest(AwsCase):
    """Fargate has no tmpfs: a task with readonlyRootFilesystem mounts a bind volume, created
    empty and root-owned 0755 unless the image declares a VOLUME at that containerPath."""

    def empty_root_dir(self):
        d = os.path.join(self.tmp, "empty-tmp")
        os.makedirs(d)
        os.chown(d, 0, 0)
        os.chmod(d, 0o755)
        return d

    def workdir_flow(self, name):
        spec = {"spec_version": 1, "name": name, "version": "1.0.0", "tasks": [
            {"name": "write", "command": ["sh", "-c", "echo hello > out.txt"]},
            {"name": "read", "upstream": ["write"], "command": ["grep", "-q", "hello",
                                                                 "out.txt"]}]}
        return self.put_artifact(name, zip_bytes({"flow_spec.json": json.dumps(spec)}))

    def test_container_mode_works_with_empty_root_owned_tmp(self):
        uri = self.workdir_flow("ro_ok")
        r = self.c.run([], self.env_opts("img-ro-ok", uri, DAGY_FLOW_NAME="ro_ok")
                       + ["-v", self.empty_root_dir() + ":/tmp"] + HARDENED)
        self.assertEqual(r.returncode, 0, r.stdout[-4000:] + r.stderr[-2000:])
        self.assertEqual(self.run_item("img-ro-ok")["status"], "SUCCEEDED")

    def test_unwritable_work_dir_error_names_dagy_work_dir_and_the_mount(self):
        # --image-volume=ignore: an engine that does not honour the image's VOLUME, so the work
        # directory is the runtime-created, root-owned WORKDIR on the root-owned /tmp.
        uri = self.workdir_flow("ro_bad")
        r = self.c.run([], self.env_opts("img-ro-bad", uri, DAGY_FLOW_NAME="ro_bad")
                       + ["-v", self.empty_root_dir() + ":/tmp", "--image-volume=ignore"]
                       + HARDENED)
        self.assertEqual(r.returncode, 3, r.stdout[-3000:])
        err = self.run_item("img-ro-bad")["error_message"]
        self.assertIn("Permission denied", err)
        self.assertIn("DAGY_WORK_DIR /tmp/dagy", err)
        self.assertIn("uid 10001", err)
        self.assertIn("containerPath /tmp", err)

    def test_unwritable_local_state_dir_error_says_what_to_mount(self):
        empty = self.empty_root_dir()
        r = self.c.run(["--flow", "/flows/etl_shell.zip", "--param", "date=2024-06-01"],
                       ["-v", EXAMPLES + ":/flows:ro", "-v", empty + ":/tmp",
                        "--image-volume=ignore"] + HARDENED)
        self.assertEqual(r.returncode, 3, r.stdout[-3000:] + r.stderr[-3000:])
        out = r.stdout + r.stderr
        self.assertIn("cannot open the local status store ./.dagy", out)
        self.assertIn("uid 10001", out)
        self.assertIn("--state-dir", out)


if __name__ == "__main__":
    unittest.main()
