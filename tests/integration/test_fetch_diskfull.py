"""dagy-agent on a full disk (issue 9 defect 3): the work directory on a 1 MiB tmpfs. Unpacking
an artifact that does not fit, or downloading one, ends the run with exit 3 and an error naming
the path and the free space; never SUCCEEDED with zero-filled files, never "invalid JSON".
Needs permission to mount (root); skipped otherwise. Each tmpfs is unmounted by its path."""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
from agentenv import AGENT, Result, read_json  # noqa: E402

SPEC = {"spec_version": 1, "name": "full", "version": "1.0.0",
        "tasks": [{"name": "a", "command": ["true"]}]}


def tar_bytes(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def mount_tmpfs(path, size="1m"):
    os.makedirs(path)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return r.returncode == 0


class DiskFull(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dagy-full-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.small = os.path.join(self.tmp, "small")
        if not mount_tmpfs(self.small):
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(subprocess.run, ["umount", "-l", self.small])
        self.state = os.path.join(self.tmp, "state")

    def agent(self, flow, run_id, env=None):
        base = env or {k: v for k, v in os.environ.items() if not k.startswith("DAGY_")}
        base = dict(base, DAGY_WORK_DIR=os.path.join(self.small, "work"))
        p = subprocess.run([AGENT, "--flow", flow, "--run-id", run_id, "--state-dir", self.state,
                            "--log-format", "json"], env=base, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        return Result(p.returncode, p.stdout, p.stderr, None)

    def check_full(self, r, run_id, path):
        self.assertEqual(r.code, 3, r)
        self.assertNotRegex(r.err, r"Sanitizer|runtime error:")
        end = r.lines[-1]
        self.assertEqual(end["event_type"], "run_end")
        self.assertEqual(end["exit_code"], 3)
        self.assertIn("No space left on device", end["error"])
        self.assertIn(path, end["error"])
        self.assertIn("free", end["error"])
        run = read_json(os.path.join(self.state, "runs", run_id + ".json"))
        self.assertEqual(run["status"], "FAILED")
        self.assertEqual(run["error_message"], end["error"])
        self.assertFalse(r.events("task_start"), "a task ran on a half-unpacked flow")

    def test_full_disk_while_unpacking_is_exit_3_naming_path_and_free_space(self):
        archive = os.path.join(self.tmp, "flow.tar")
        with open(archive, "wb") as f:
            f.write(tar_bytes({"data.bin": os.urandom(3 << 20),
                               "flow_spec.json": json.dumps(SPEC).encode()}))
        r = self.agent(archive, "full-unpack")
        self.check_full(r, "full-unpack", os.path.join(self.small, "work", "full-unpack", "flow"))
        self.assertFalse(os.path.exists(os.path.join(self.small, "work", "full-unpack", "flow")))

    def test_truncated_flow_spec_on_full_disk_is_exit_3_not_invalid_json(self):
        archive = os.path.join(self.tmp, "flow.tar")
        spec = dict(SPEC, description="x" * (2 << 20))
        with open(archive, "wb") as f:
            f.write(tar_bytes({"flow_spec.json": json.dumps(spec).encode()}))
        r = self.agent(archive, "full-spec")
        self.check_full(r, "full-spec", "flow_spec.json")


class DownloadDiskFull(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.moto = awsenv.Moto().start()
        try:
            cls.moto.client("s3").create_bucket(Bucket="full-artifacts")
        except BaseException:
            cls.moto.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    setUp = DiskFull.setUp
    agent = DiskFull.agent

    def test_full_disk_while_downloading_is_exit_3_naming_the_path(self):
        data = tar_bytes({"flow_spec.json": json.dumps(SPEC).encode(),
                          "data.bin": os.urandom(3 << 20)})
        self.moto.client("s3").put_object(Bucket="full-artifacts", Key="a.tar", Body=data)
        uri = "s3://full-artifacts/a.tar#sha256=" + hashlib.sha256(data).hexdigest()
        env = self.moto.env({k: v for k, v in os.environ.items() if not k.startswith("DAGY_")})
        r = self.agent(uri, "full-download", env)
        self.assertEqual(r.code, 3, r)
        end = r.lines[-1]
        self.assertEqual(end["exit_code"], 3)
        path = os.path.join(self.small, "work", "full-download", "artifact")
        self.assertIn("No space left on device", end["error"])
        self.assertIn(path, end["error"])
        self.assertIn("free", end["error"])
        self.assertFalse(os.path.exists(path), "the partial download was left behind")
        run = read_json(os.path.join(self.state, "runs", "full-download.json"))
        self.assertEqual(run["status"], "FAILED")


if __name__ == "__main__":
    unittest.main()
