"""fetch_s3_put_fd_parts / fetch_s3_put_fd (tests/tools/s3put_probe) against moto with
signatures enforced: a file streamed in parts arrives whole and byte for byte (parts retried
through injected faults), a single PutObject from an fd likewise, and a failing upload is
aborted (no multipart upload left behind) with an error naming the URI."""

import hashlib
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
import faultproxy  # noqa: E402

BUCKET = "dagy-mp"
MIB = 1 << 20


def probe():
    return os.path.join(awsenv.tools_dir(), "s3put_probe")


class MultipartTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(probe()):
            raise unittest.SkipTest("s3put_probe not built at %s" % probe())
        cls.moto = awsenv.Moto().start()
        cls.moto.client("s3").create_bucket(Bucket=BUCKET)

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="dagy-mp-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.s3 = self.moto.client("s3")

    def file(self, size):
        path = os.path.join(self.tmp, "data")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def put(self, key, path, part=None, endpoint=None, bucket=BUCKET):
        args = [probe(), bucket, key, path] + ([str(part)] if part else [])
        env = self.moto.env(AWS_ENDPOINT_URL=endpoint or self.moto.endpoint)
        p = awsenv.run(args, env=env, timeout=120)
        self.assertNotIn(p.returncode, (2, 3), p.stderr)
        self.assertNotRegex(p.stderr, r"Sanitizer|runtime error:")
        return p.returncode, json.loads(p.stdout.splitlines()[-1])

    def stored(self, key):
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def test_parts_arrive_whole_byte_for_byte(self):
        path = self.file(12 * MIB + 12345)  # three parts of 5 MiB, the last one short
        code, res = self.put("results/o/r/big.json", path, part=5 * MIB)
        self.assertEqual(code, 0, res)
        with open(path, "rb") as f:
            self.assertEqual(hashlib.sha256(self.stored("results/o/r/big.json")).hexdigest(),
                             hashlib.sha256(f.read()).hexdigest())

    def test_parts_survive_faults(self):
        path = self.file(11 * MIB)
        rates = {"500": 0.15, "503": 0.1, "reset": 0.1}
        with faultproxy.FaultProxy(self.moto.endpoint, seed=77, rates=rates) as fp:
            code, res = self.put("results/o/r/faults.json", path, part=5 * MIB, endpoint=fp.url)
            stats = dict(fp.stats)
        self.assertEqual(code, 0, (res, stats))
        self.assertGreater(stats["500"] + stats["503"] + stats["reset"], 0, stats)
        with open(path, "rb") as f:
            self.assertEqual(self.stored("results/o/r/faults.json"), f.read())

    def test_single_put_from_fd(self):
        path = self.file(3 * MIB)
        code, res = self.put("results/o/r/single.json", path)
        self.assertEqual(code, 0, res)
        with open(path, "rb") as f:
            self.assertEqual(self.stored("results/o/r/single.json"), f.read())

    def test_failed_upload_is_aborted_and_named(self):
        path = self.file(11 * MIB)
        # Every UploadPart of the second part fails with a non-retryable 403.
        second = lambda m, p, h: m == "PUT" and "partNumber=2" in p
        with faultproxy.FaultProxy(self.moto.endpoint, seed=1, rates={"500": 1.0},
                                   match=second) as fp:
            code, res = self.put("results/o/r/aborted.json", path, part=5 * MIB, endpoint=fp.url)
        self.assertEqual(code, 1, res)
        self.assertIn("s3://%s/results/o/r/aborted.json" % BUCKET, res["message"])
        left = self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        self.assertEqual([u for u in left if u["Key"] == "results/o/r/aborted.json"], [])
        with self.assertRaises(Exception):
            self.stored("results/o/r/aborted.json")

    def test_part_size_below_the_minimum_is_refused(self):
        path = self.file(MIB)
        code, res = self.put("results/o/r/tiny.json", path, part=MIB)
        self.assertEqual(code, 1)
        self.assertEqual(res, {"call_error": -22})


if __name__ == "__main__":
    unittest.main()
