"""A map run with DAGY_STATUS_BACKEND=dynamodb against moto: every child has its own task-run
item ("m[7]", with map_parent, map_index, task_hash), the map's item counts its children, and
`dagy-launch status` lists the children under their map in element order (DynamoDB returns
"m[10]" before "m[2]"), each with its external_id when it has one. A resume of a map that failed
in one child, with results in an S3 bucket, reuses the other children (test_map_resume.py has
the local-status cases)."""

import decimal
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402
import awsenv  # noqa: E402

RUNS = "DAGY_RUNS"
TASK_RUNS = "DAGY_TASK_RUNS"
LAUNCH = os.path.join(os.environ.get("DAGY_TEST_BUILD", "build"), "dagy-launch")


def plain(v):
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


SPEC = {
    "spec_version": 1, "name": "map_ddb", "max_parallel": 4,
    "tasks": [
        {"name": "src", "command": ["sh", "-c", "echo '[0,1,2,3,4,5,6,7,8,9,10,11]' > "
                                                "\"$DAGY_TASK_OUTPUT\""]},
        {"name": "m", "command": ["sh", "-c", "[ $DAGY_MAP_ITEM != 4 ] || exit 9; "
                                              "echo $DAGY_MAP_ITEM > \"$DAGY_TASK_OUTPUT\""],
         "upstream": ["src"], "map": {"over": "src", "max_parallel": 3, "allow_failures": 1}},
        {"name": "collect", "command": ["sh", "-c", "cat \"$DAGY_TASK_INPUTS\""],
         "upstream": ["m"]},
    ],
}


class MapDynamoDBTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.moto = awsenv.Moto().start()
        cls.moto.create_status_tables(RUNS, TASK_RUNS)

    @classmethod
    def tearDownClass(cls):
        cls.moto.stop()

    def setUp(self):
        import boto3.dynamodb.types

        self.ddb = self.moto.client("dynamodb")
        self.deser = boto3.dynamodb.types.TypeDeserializer()
        self.flow = agentenv.Flow(SPEC)
        self.addCleanup(self.flow.cleanup)

    def get(self, run_id, task):
        item = self.ddb.get_item(TableName=TASK_RUNS, ConsistentRead=True,
                                 Key={"run_id": {"S": run_id}, "task_name": {"S": task}})
        item = item.get("Item")
        return None if item is None else plain(
            {k: self.deser.deserialize(v) for k, v in item.items()})

    def test_children_have_items_and_status_lists_them_under_their_map(self):
        run_id = "map-ddb-1"
        env = self.moto.env(self.flow.env(), AWS_ENDPOINT_URL=self.moto.endpoint,
                            DAGY_STATUS_BACKEND="dynamodb")
        res = self.flow.run("--run-id", run_id, env=env, timeout=120)
        self.assertEqual(res.code, 0, res)
        self.assertEqual(json.loads(res.output("collect")[0]),
                         {"m": [0, 1, 2, 3, None, 5, 6, 7, 8, 9, 10, 11]})
        for k in range(12):
            it = self.get(run_id, "m[%d]" % k)
            self.assertIsNotNone(it, k)
            self.assertEqual(it["status"], "FAILED" if k == 4 else "SUCCEEDED")
            self.assertEqual((it["map_parent"], it["map_index"]), ("m", k))
            self.assertEqual(len(it["task_hash"]), 64)
            self.assertEqual(it["task_run_id"], res.events("task_end", "m[%d]" % k)[0]["task_run_id"])
        self.assertEqual(self.get(run_id, "m[4]")["exit_code"], 9)
        m = self.get(run_id, "m")
        self.assertEqual((m["status"], m["map_children"], m["map_over"]), ("SUCCEEDED", 12, "src"))
        # What an ECS child would carry (the executor records its task ARN as external_id).
        arn = "arn:aws:ecs:us-east-1:123456789012:task/dagy/0123456789abcdef"
        self.ddb.update_item(TableName=TASK_RUNS,
                             Key={"run_id": {"S": run_id}, "task_name": {"S": "m[2]"}},
                             UpdateExpression="SET external_id = :a",
                             ExpressionAttributeValues={":a": {"S": arn}})
        p = awsenv.run([LAUNCH, "status", run_id], env=self.moto.env(), timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        tasks = {t["task_name"]: t for t in out["tasks"]}
        self.assertEqual(sorted(tasks), ["collect", "m", "src"])
        kids = tasks["m"]["children"]
        self.assertEqual([c["task_name"] for c in kids], ["m[%d]" % k for k in range(12)])
        self.assertEqual(kids[2]["external_id"], arn)
        self.assertNotIn("external_id", kids[3])
        self.assertEqual(kids[4]["status"], "FAILED")
        self.assertNotIn("children", tasks["src"])

    def test_resume_of_a_failed_map_reruns_only_the_failed_child_results_in_s3(self):
        # moto's S3 signature check refuses keys with a '%' (the children's keys m%5B3%5D.json
        # are signed as sent, %255B): this test's own moto does not check signatures.
        moto = awsenv.Moto(auth=False).start()
        self.addCleanup(moto.stop)
        moto.create_status_tables(RUNS, TASK_RUNS)
        self.ddb = moto.client("dynamodb")
        s3 = moto.client("s3")
        s3.create_bucket(Bucket="mapres")
        flag = os.path.join(self.flow.tmp, "fixed")
        spec = json.loads(json.dumps(SPEC))
        spec["tasks"][1]["command"] = [
            "sh", "-c", "echo $DAGY_MAP_INDEX >> \"$MARKS\"; test -e \"$FLAG\" || "
            "[ $DAGY_MAP_ITEM != 4 ] || exit 9; echo $DAGY_MAP_ITEM > \"$DAGY_TASK_OUTPUT\""]
        spec["tasks"][1]["env"] = {"FLAG": flag, "MARKS": os.path.join(self.flow.tmp, "marks")}
        spec["tasks"][1]["map"]["allow_failures"] = 0
        with open(os.path.join(self.flow.dir, "flow_spec.json"), "w") as fh:
            json.dump(spec, fh)
        env = moto.env(self.flow.env(), AWS_ENDPOINT_URL=moto.endpoint,
                            DAGY_STATUS_BACKEND="dynamodb", DAGY_RESULTS_BUCKET="mapres")
        first = self.flow.run("--run-id", "map-res-a", env=env, timeout=120)
        self.assertEqual(first.code, 1, first)
        self.assertEqual(self.get("map-res-a", "m")["status"], "FAILED")
        self.assertTrue(self.get("map-res-a", "m[3]")["result_s3_uri"].startswith("s3://mapres/"))
        open(flag, "w").close()
        os.unlink(os.path.join(self.flow.tmp, "marks"))
        res = self.flow.run("--run-id", "map-res-b", "--resume-from", "map-res-a", env=env,
                            timeout=120)
        self.assertEqual(res.code, 0, res)
        self.assertEqual(agentenv.read_text(os.path.join(self.flow.tmp, "marks")).split(), ["4"])
        self.assertEqual({e["task_name"] for e in res.events("task_reused")},
                         {"src"} | {"m[%d]" % k for k in range(12) if k != 4})
        self.assertEqual(json.loads(res.output("collect")[0]), {"m": list(range(12))})
        it = self.get("map-res-b", "m[3]")
        self.assertEqual((it["status"], it["reused_from"]), ("SUCCEEDED", "map-res-a"))
        self.assertEqual(it["result_s3_uri"], self.get("map-res-a", "m[3]")["result_s3_uri"])
        run = self.ddb.get_item(TableName=RUNS, ConsistentRead=True,
                                Key={"run_id": {"S": "map-res-b"}})["Item"]
        self.assertEqual(run["tasks_reused"]["N"], "12")


if __name__ == "__main__":
    unittest.main()
