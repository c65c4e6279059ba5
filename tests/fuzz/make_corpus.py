#!/usr/bin/env python3
"""make_corpus.py - writes the seed corpus of every harness into tests/fuzz/corpus/<harness>/
(small, hand-made inputs that reach deep into each parser). Re-run after changing it; the files
are committed so fuzzing needs no Python."""
import io
import json
import os
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def put(harness, name, data):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def js(v):
    return json.dumps(v, separators=(",", ":"))


def flowspec():
    spec = {"spec_version": 1, "name": "etl", "version": "1.0.0", "max_parallel": 4,
            "defaults": {"retries": 1, "retry_delay_seconds": 5, "retry_backoff": 2.0,
                         "retry_max_delay_seconds": 300, "retry_jitter": True,
                         "timeout_seconds": 3600},
            "tasks": [
                {"name": "extract", "command": ["sh", "-c", "echo {{ parameters.date }}"],
                 "env": {"SRC": "{{ parameters.src }}", "R": "{{ run_id }}"}, "retries": 3,
                 "timeout_seconds": 600},
                {"name": "transform", "callable": "flows.etl:transform",
                 "kwargs": {"data": {"upstream": "extract"}, "mode": "{{ parameters.n }}"},
                 "upstream": ["extract"]},
                {"name": "cleanup", "command": ["rm", "-f", "raw.csv"], "upstream": ["transform"],
                 "trigger_rule": "all_done"},
                {"name": "alert", "command": ["true"], "upstream": ["extract", "transform"],
                 "trigger_rule": "one_failed", "description": "page someone"}]}
    put("fuzz_flowspec", "etl.json", js(spec))
    put("fuzz_flowspec", "minimal.json",
        js({"spec_version": 1, "name": "m", "version": "1", "tasks": [{"name": "a", "command": ["true"]}]}))
    put("fuzz_flowspec", "cycle.json", js({"spec_version": 1, "name": "c", "version": "1", "tasks": [
        {"name": "a", "command": ["true"], "upstream": ["b"]},
        {"name": "b", "command": ["true"], "upstream": ["a"]}]}))
    put("fuzz_flowspec", "nonecase.json", js({"spec_version": 1, "name": "n", "version": "1", "tasks": [
        {"name": "x", "command": ["true"], "trigger_rule": "none_failed", "upstream": ["y"]},
        {"name": "y", "callable": "m:f", "kwargs": {"a": [1, {"b": "{{ flow_name }}"}]}}]}))


def template():
    for i, t in enumerate(["plain text", "{{ parameters.date }}", "a {{run_id}} b {{ flow_name }}",
                           "{{ parameters.obj }}/{{ parameters.inj }}", "{{ parameters.missing }}",
                           "{{ unknown }}", "{{ parameters. }}", "{{ parameters.date", "}} {{",
                           "{{ org_id }}{{ environment }}{{ flow_version }}", "\u00e9{{ parameters.u }}"]):
        put("fuzz_template", "t%02d" % i, t)


def ddb():
    item = {"run_id": {"S": "r1"}, "task_name": {"S": "extract"}, "status": {"S": "RUNNING"},
            "status_seq": {"N": "7"}, "attempt": {"N": "1"}, "ok": {"BOOL": True},
            "none": {"NULL": True}, "l": {"L": [{"S": "a"}, {"N": "1.5e3"}]},
            "m": {"M": {"x": {"SS": ["p", "q"]}, "y": {"NS": ["1", "-2.25"]}}}}
    put("fuzz_ddb", "getitem.json", js({"Item": item}))
    put("fuzz_ddb", "scan.json", js({"Items": [item, {"run_id": {"S": "r2"}, "status_seq": {"N": "0"}}],
                                     "Count": 2, "LastEvaluatedKey": {"run_id": {"S": "r2"}}}))
    put("fuzz_ddb", "ccf.json", js({"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                                    "message": "The conditional request failed"}))
    put("fuzz_ddb", "validation.json", js({"__type": "com.amazon.coral.validate#ValidationException",
                                           "Message": "One or more parameter values were invalid"}))
    put("fuzz_ddb", "bare.json", js({"run_id": {"S": "x"}, "status_seq": {"N": "1e400"}}))


def sigv4():
    put("fuzz_sigv4", "get.txt", "GET\n/bucket/my%20key\nlist-type=2&prefix=a%2Fb&delimiter\n"
        "us-east-1\ns3\n20260314T090000Z\nHost:s3.amazonaws.com\nx-amz-date:20260314T090000Z\n"
        "X-Amz-Content-Sha256:UNSIGNED-PAYLOAD\n")
    put("fuzz_sigv4", "post.txt", "POST\n/\n\nus-west-2\ndynamodb\n20260101T000000Z\n"
        "host:dynamodb.us-west-2.amazonaws.com\nx-amz-target:DynamoDB_20120810.UpdateItem\n"
        "content-type:  application/x-amz-json-1.0  \n")
    put("fuzz_sigv4", "query.txt", "GET\n\nb=2&a=1&a=0&a&c=\u00e9\neu\necs\nbaddate\nA:  x   y  \n")


def unpack():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("flow_spec.json", '{"spec_version":1}')
        z.writestr("pkg/__init__.py", "")
        z.writestr("pkg/mod.py", "x = 1\n")
    put("fuzz_unpack", "flow.zip", buf.getvalue())
    for mode, name in (("w", "flow.tar"), ("w:gz", "flow.tar.gz")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as t:
            for n, data in (("flow_spec.json", b"{}"), ("d/f.txt", b"hello\n")):
                ti = tarfile.TarInfo(n)
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            d = tarfile.TarInfo("d2")
            d.type = tarfile.DIRTYPE
            t.addfile(d)
            s = tarfile.TarInfo("d/link")
            s.type = tarfile.SYMTYPE
            s.linkname = "f.txt"
            t.addfile(s)
            h = tarfile.TarInfo("d/hard")
            h.type = tarfile.LNKTYPE
            h.linkname = "d/f.txt"
            t.addfile(h)
        put("fuzz_unpack", name, buf.getvalue())
    # Hostile ones: escaping names and links (refused; the harness checks nothing lands).
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for n, kind, link in (("../up.txt", tarfile.REGTYPE, ""), ("esc", tarfile.SYMTYPE, "../../x"),
                              ("a/../../b", tarfile.REGTYPE, ""), ("fifo", tarfile.FIFOTYPE, "")):
            ti = tarfile.TarInfo(n)
            ti.type = kind
            ti.linkname = link
            t.addfile(ti, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    put("fuzz_unpack", "hostile.tar", buf.getvalue())


def creds():
    put("fuzz_creds", "ecs.json", js({"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "s3cr3tvalue",
                                      "Token": "tok", "Expiration": "2026-03-14T09:00:00Z",
                                      "RoleArn": "arn:aws:iam::1:role/x"}))
    put("fuzz_creds", "frac.json", js({"AccessKeyId": "A", "SecretAccessKey": "B",
                                       "Expiration": "2026-03-14T09:00:00.123+02:00"}))
    put("fuzz_creds", "file.ini", "# c\n[default]\naws_access_key_id = AKID\n"
        "aws_secret_access_key=SECRET\n; x\n[other]\naws_session_token = T\n")
    put("fuzz_creds", "uri.txt", "http://127.0.0.1:8080/creds")
    put("fuzz_creds", "uri2.txt", "http://127.0.0.1@192.0.2.2:18777/creds")


def s3err():
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
            '<Message>The specified key does not exist.</Message><Key>a/b</Key>'
            '<RequestId>1</RequestId></Error>')
    put("fuzz_s3err", "nosuchkey", b"\x02" + body.encode())
    put("fuzz_s3err", "denied", b"\x01<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
    put("fuzz_s3err", "empty403", b"\x01")
    put("fuzz_s3err", "open", b"\x04<Error><Code>SlowDown")


def ecs():
    task = {"taskArn": "arn:aws:ecs:us-east-1:1:task/c/abc", "lastStatus": "STOPPED",
            "stopCode": "EssentialContainerExited", "stoppedReason": "Essential container exited",
            "stoppedAt": 1773478800.5,
            "containers": [{"name": "dagy-worker", "exitCode": 137, "reason": "OutOfMemoryError"},
                           {"name": "sidecar", "exitCode": 0}]}
    put("fuzz_ecs", "runtask.json", js({"tasks": [{"taskArn": "arn:aws:ecs:us-east-1:1:task/c/abc",
                                                   "lastStatus": "PROVISIONING"}], "failures": []}))
    put("fuzz_ecs", "runtask_fail.json", js({"tasks": [], "failures": [
        {"arn": "arn:aws:ecs:us-east-1:1:container-instance/x", "reason": "RESOURCE:MEMORY",
         "detail": "no capacity"}]}))
    put("fuzz_ecs", "describe.json", js({"tasks": [task, dict(task, stopCode="UserInitiated",
                                                              containers=[{"name": "dagy-worker", "exitCode": 0}]),
                                                   {"taskArn": "t3", "lastStatus": "RUNNING"}],
                                         "failures": [{"arn": "t4", "reason": "MISSING"}]}))


def logline():
    for i, v in enumerate([b"hello world", "caf\u00e9 \u2603 \U0001F600".encode(), b"boom \xff\xfe",
                           b"abc\x00def", b"\x1b[31mred\x1b[0m\r\n\t\"\\", "\u00e9".encode() * 40,
                           b"\xe2\x82", b"\xed\xa0\x80 surrogate", b"\xf4\x90\x80\x80 too big"]):
        put("fuzz_logline", "l%02d" % i, v)


if __name__ == "__main__":
    for f in (flowspec, template, ddb, sigv4, unpack, creds, s3err, ecs, logline):
        f()
