#!/usr/bin/env python3
"""ddb_moto.py - the DynamoDB side of bench/ddb_dag.sh: a DynamoDB server (moto, or dynalite) with
the runs and task-runs tables, a counting pass-through proxy in front of it, and the end-of-run
checks.

  ddb_moto.py serve DIR [moto|dynalite]
                               start the server (moto by default; signatures not checked) and
                               the proxy; write DIR/endpoints ("SERVER_URL PROXY_URL SERVER_PID");
                               run until SIGTERM/SIGINT, then stop the server by its pid
  ddb_moto.py counts URL       print the proxy's request counts as JSON and reset them
  ddb_moto.py capacity URL N   send N conditional UpdateItems (like the agent's: SET of a dozen
                               attributes, status_seq condition) from 16 threads; print the rate
                               moto sustains (UpdateItem/s), the floor under any client
  ddb_moto.py verify URL RUN_ID N
                               check the run item SUCCEEDED with N tasks and all N task items
                               SUCCEEDED (exit 1 otherwise); print what was found

The proxy counts requests by X-Amz-Target operation and by table (TableName in the JSON body);
GET /__counts on the proxy answers the counts and resets them (it is never forwarded)."""

import http.client
import http.server
import json
import os
import signal
import sys
import threading
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import awsenv  # noqa: E402

RUNS = os.environ.get("DAGY_RUNS_TABLE", "DAGY_RUNS")
TASK_RUNS = os.environ.get("DAGY_TASK_RUNS_TABLE", "DAGY_TASK_RUNS")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "content-length"}


class CountingProxy:
    """Forwards every request to `upstream` unchanged and counts it."""

    def __init__(self, upstream):
        u = urllib.parse.urlsplit(upstream)
        self.host, self.port = u.hostname, u.port
        self.lock = threading.Lock()
        self.counts = {}

    def count(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def take(self):
        with self.lock:
            c, self.counts = self.counts, {}
        return c

    def start(self):
        outer = self
        local = threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _upstream(self):
                if getattr(local, "conn", None) is None:
                    local.conn = http.client.HTTPConnection(outer.host, outer.port, timeout=120)
                return local.conn

            def _send(self, status, reason, headers, data):
                self.send_response(status, reason)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/__counts":
                    body = json.dumps(outer.take()).encode()
                    return self._send(200, "OK", [("Content-Type", "application/json")], body)
                return self._forward(b"")

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                op = (self.headers.get("X-Amz-Target") or "?").rsplit(".", 1)[-1]
                table = "?"
                try:
                    table = json.loads(body).get("TableName", "?")
                except ValueError:
                    pass
                outer.count("op:" + op)
                outer.count("%s:%s" % (op, table))
                return self._forward(body)

            def _forward(self, body):
                for attempt in (1, 2):  # a kept-alive upstream connection may have closed
                    conn = self._upstream()
                    try:
                        conn.putrequest(self.command, self.path, skip_host=True,
                                        skip_accept_encoding=True)
                        for k, v in self.headers.items():
                            if k.lower() not in _HOP:
                                conn.putheader(k, v)
                        conn.putheader("Content-Length", str(len(body)))
                        conn.endheaders(body)
                        resp = conn.getresponse()
                        data = resp.read()
                        break
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        local.conn = None
                        if attempt == 2:
                            self.close_connection = True
                            return
                hdrs = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
                self._send(resp.status, resp.reason, hdrs, data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        return self


def create_tables(moto):
    ddb = moto.client("dynamodb")
    ddb.create_table(TableName=RUNS, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "run_id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "run_id", "AttributeType": "S"}])
    ddb.create_table(TableName=TASK_RUNS, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "run_id", "KeyType": "HASH"},
                                {"AttributeName": "task_name", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "run_id", "AttributeType": "S"},
                                           {"AttributeName": "task_name", "AttributeType": "S"}])


def serve(out_dir, kind="moto"):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    srv = awsenv.Moto(auth=False) if kind == "moto" else awsenv.DynaliteServer()
    srv.start()
    try:
        srv.access_key, srv.secret_key = "AKIDBENCH", "bench-secret"
        create_tables(srv)
        proxy = CountingProxy(srv.endpoint).start()
        tmp = os.path.join(out_dir, "endpoints.tmp")
        with open(tmp, "w") as f:
            f.write("%s %s %d\n" % (srv.endpoint, proxy.url, srv.proc.pid))
        os.rename(tmp, os.path.join(out_dir, "endpoints"))
        while not stop.wait(1):
            if srv.proc.poll() is not None:
                print("%s exited:\n%s" % (kind, srv.log()), file=sys.stderr)
                return 1
        proxy.server.shutdown()
        return 0
    finally:
        srv.stop()


def counts(proxy_url):
    with urllib.request.urlopen(proxy_url + "/__counts", timeout=10) as r:
        print(r.read().decode())
    return 0


def verify(endpoint, run_id, n_tasks):
    import boto3
    import boto3.dynamodb.types

    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench-secret")
    de = boto3.dynamodb.types.TypeDeserializer()
    run = ddb.get_item(TableName=RUNS, Key={"run_id": {"S": run_id}}, ConsistentRead=True)
    run = {k: de.deserialize(v) for k, v in run.get("Item", {}).items()}
    statuses, start = {}, None
    while True:
        kw = {"TableName": TASK_RUNS, "KeyConditionExpression": "run_id = :r",
              "ExpressionAttributeValues": {":r": {"S": run_id}}, "ConsistentRead": True}
        if start:
            kw["ExclusiveStartKey"] = start
        page = ddb.query(**kw)
        for it in page["Items"]:
            st = it["status"]["S"]
            statuses[st] = statuses.get(st, 0) + 1
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    ok = (run.get("status") == "SUCCEEDED" and int(run.get("tasks_total", -1)) == n_tasks
          and int(run.get("tasks_succeeded", -1)) == n_tasks and statuses == {"SUCCEEDED": n_tasks})
    print("run item: status=%s tasks_total=%s tasks_succeeded=%s status_seq=%s; task items: %s"
          % (run.get("status"), run.get("tasks_total"), run.get("tasks_succeeded"),
             run.get("status_seq"), json.dumps(statuses)))
    return 0 if ok else 1


def capacity(endpoint, n):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench-secret")
    names = ["status", "attempt", "max_attempts", "started_at", "ended_at", "duration_seconds",
             "exit_code", "task_run_id", "updated_at", "status_seq"]

    def one(i):
        vals = {":v%d" % k: ({"N": "1"} if k in (1, 2, 5, 6, 9) else {"S": "x%d" % i})
                for k in range(len(names))}
        vals[":seq"] = vals[":v9"]
        ddb.update_item(
            TableName=TASK_RUNS,
            Key={"run_id": {"S": "capacity"}, "task_name": {"S": "t%d" % i}},
            UpdateExpression="SET " + ", ".join("#a%d = :v%d" % (k, k) for k in range(len(names))),
            ConditionExpression="attribute_not_exists(#a9) OR #a9 < :seq",
            ExpressionAttributeNames={"#a%d" % k: nm for k, nm in enumerate(names)},
            ExpressionAttributeValues=vals)

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(one, range(n)))
    print("%.0f" % (n / (time.monotonic() - t0)))
    return 0


def main(argv):
    if len(argv) in (3, 4) and argv[1] == "serve" and argv[3:] in ([], ["moto"], ["dynalite"]):
        return serve(argv[2], *argv[3:])
    if len(argv) == 3 and argv[1] == "counts":
        return counts(argv[2])
    if len(argv) == 4 and argv[1] == "capacity":
        return capacity(argv[2], int(argv[3]))
    if len(argv) == 5 and argv[1] == "verify":
        return verify(argv[2], argv[3], int(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
