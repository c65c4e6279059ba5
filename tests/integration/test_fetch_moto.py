"""Tests of the shared moto harness (awsenv): signatures are enforced, keys work, helpers clean up."""

import os
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402

from botocore.exceptions import ClientError  # noqa: E402


class MotoHarnessTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.moto = awsenv.Moto().start()

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def test_iam_keys_are_accepted(self):
        s3 = self.moto.client("s3")
        s3.create_bucket(Bucket="harness-ok")
        s3.put_object(Bucket="harness-ok", Key="k", Body=b"hello")
        self.assertEqual(s3.get_object(Bucket="harness-ok", Key="k")["Body"].read(), b"hello")

    def test_wrong_secret_is_rejected_with_403(self):
        s3 = self.moto._boto("s3", self.moto.access_key, "not-the-secret")
        with self.assertRaises(ClientError) as cm:
            s3.list_buckets()
        self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)
        self.assertEqual(cm.exception.response["Error"]["Code"], "SignatureDoesNotMatch")

    def test_wrong_secret_is_rejected_by_dynamodb(self):
        ddb = self.moto._boto("dynamodb", self.moto.access_key, "not-the-secret")
        with self.assertRaises(ClientError) as cm:
            ddb.list_tables()
        self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)

    def test_unknown_key_is_rejected(self):
        s3 = self.moto._boto("s3", "AKIDUNKNOWN000000000", "x")
        with self.assertRaises(ClientError) as cm:
            s3.list_buckets()
        self.assertEqual(cm.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)

    def test_assume_role_creds_work(self):
        c = self.moto.assume_role_creds()
        self.assertTrue(c["token"])
        s3 = self.moto._boto("s3", c["key"], c["secret"], c["token"])
        s3.list_buckets()
        bad = self.moto._boto("s3", c["key"], c["secret"], "wrong-token")
        with self.assertRaises(ClientError):
            bad.list_buckets()

    def test_env_has_no_profile_leak(self):
        env = self.moto.env()
        self.assertNotIn("AWS_PROFILE", env)
        self.assertEqual(env["AWS_SHARED_CREDENTIALS_FILE"], "/dev/null")
        self.assertEqual(env["AWS_ENDPOINT_URL"], self.moto.endpoint)
        self.assertEqual(env["AWS_REGION"], "us-east-1")

    def test_run_helper_times_out(self):
        with self.assertRaises(awsenv.subprocess.TimeoutExpired):
            awsenv.run(["sleep", "30"], timeout=0.5)
        r = awsenv.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (3, "out\n", "err\n"))


class MotoNoAuthTest(unittest.TestCase):
    def test_no_auth_accepts_any_secret(self):
        with awsenv.Moto(auth=False) as m:
            s3 = m._boto("s3", "AKIDANY", "any")
            s3.create_bucket(Bucket="noauth")
            s3.put_object(Bucket="noauth", Key="a+b=c,d%e é", Body=b"x")
            self.assertEqual(s3.get_object(Bucket="noauth", Key="a+b=c,d%e é")["Body"].read(), b"x")
        self.assertIsNone(m.proc)


class CredsServerTest(unittest.TestCase):
    def test_serves_creds_only_with_token(self):
        with awsenv.CredsServer({"key": "AK", "secret": "SK", "token": "TK"}) as srv:
            req = urllib.request.Request(srv.full_uri, headers={"Authorization": srv.token})
            with urllib.request.urlopen(req, timeout=5) as r:
                body = awsenv.json.loads(r.read())
            self.assertEqual(body["AccessKeyId"], "AK")
            self.assertEqual(body["Token"], "TK")
            self.assertTrue(body["Expiration"].endswith("Z"))
            with self.assertRaises(urllib.error.HTTPError) as cm:
                urllib.request.urlopen(srv.full_uri, timeout=5)
            self.assertEqual(cm.exception.code, 401)
            self.assertEqual((srv.requests, srv.rejected), (1, 1))


if __name__ == "__main__":
    unittest.main()
