"""dagy-agent refuses an invalid bucket name at start-up (issue 8 defect 15): DAGY_TRACES_BUCKET
and DAGY_RESULTS_BUCKET must follow S3's bucket naming rules, or the run never starts (exit 2,
the message names the variable) instead of silently losing every trace."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentenv import Flow  # noqa: E402

SPEC = {"spec_version": 1, "name": "t", "version": "1.0.0",
        "tasks": [{"name": "a", "command": ["true"]}]}

# AWS configuration that is complete but points nowhere: a run that uploads nothing never
# connects, so only the bucket check can fail it.
AWS = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}

BAD = ["Not_A_Bucket", "ab", "a" * 64, "-bucket", "bucket-", "my..bucket", "192.168.5.4",
       "xn--bucket", "bucket/key", "s3://bucket", "b\u00e9cket"]


class BucketNames(unittest.TestCase):
    def flow(self):
        f = Flow(SPEC)
        self.addCleanup(f.cleanup)
        return f

    def test_invalid_bucket_is_refused_at_start_naming_the_variable(self):
        f = self.flow()
        for var in ("DAGY_TRACES_BUCKET", "DAGY_RESULTS_BUCKET"):
            for name in BAD:
                with self.subTest(var=var, name=name):
                    env = dict(AWS)
                    env[var] = name
                    r = f.run(env=env)
                    self.assertEqual(r.code, 2, r)
                    self.assertIn(var, r.out + r.err)
                    self.assertFalse(os.path.exists(os.path.join(f.state, "runs")),
                                     "a run was recorded before the configuration was checked")

    def test_valid_bucket_names_are_accepted(self):
        f = self.flow()
        for name in ("my-traces", "a.b.c", "123bucket", "b" * 63):
            with self.subTest(name=name):
                env = dict(AWS, DAGY_TRACES_BUCKET=name, DAGY_RESULTS_BUCKET=name)
                r = f.run(env=env)
                self.assertEqual(r.code, 0, r)


if __name__ == "__main__":
    unittest.main()
