"""lambdaenv - a loopback AWS Lambda Runtime API (2018-06-01) for the `dagy-launch lambda` tests:
feeds invocations to the runtime and records its answers.

    api = RuntimeAPI().start()
    p = api.spawn([LAUNCH, "lambda"], env)        # AWS_LAMBDA_RUNTIME_API points here
    kind, payload, headers = api.invoke({"action": "status", "run_id": "x"})
    api.stop_process(p); api.stop()

GET /runtime/invocation/next blocks until invoke() queues an event (as Lambda does); the answer
is the POST to /invocation/ID/response or /invocation/ID/error; /init/error is recorded in
`init_errors`."""

import http.server
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awsenv  # noqa: E402
from loopback import LoopbackServer  # noqa: E402


class RuntimeAPI(LoopbackServer):
    def __init__(self):
        self.pending = queue.Queue()
        self.answers = {}
        self.init_errors = []
        self.next_calls = 0
        self._cv = threading.Condition()
        self._stopping = False

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def handler_class(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as written: no Nagle delay against the client's delayed
            # ACK (40 ms per request on a kept-alive connection otherwise).
            disable_nagle_algorithm = True

            def do_GET(self):
                if self.path != "/2018-06-01/runtime/invocation/next":
                    return self._send(404, b'{"message":"no such path"}')
                with outer._cv:
                    outer.next_calls += 1
                    outer._cv.notify_all()
                # Blocks like Lambda's long poll, in slices so a stopping server lets go.
                while not outer._stopping:
                    try:
                        rid, body, deadline = outer.pending.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    hdrs = {"Lambda-Runtime-Aws-Request-Id": rid,
                            "Lambda-Runtime-Deadline-Ms": str(deadline),
                            "Lambda-Runtime-Invoked-Function-Arn":
                                "arn:aws:lambda:us-east-1:123456789012:function:dag-launcher",
                            "Lambda-Runtime-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793"}
                    return self._send(200, body, hdrs)
                self._send(503, b"{}")

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                parts = self.path.split("/")
                # /2018-06-01/runtime/invocation/ID/response|error, /2018-06-01/runtime/init/error
                if self.path == "/2018-06-01/runtime/init/error":
                    outer.init_errors.append((json.loads(body), dict(self.headers)))
                    return self._send(202, b'{"status":"OK"}')
                if len(parts) == 6 and parts[3] == "invocation" and parts[5] in ("response", "error"):
                    with outer._cv:
                        outer.answers[parts[4]] = (parts[5], body, dict(self.headers))
                        outer._cv.notify_all()
                    return self._send(202, b'{"status":"OK"}')
                self._send(404, b'{"message":"no such path"}')

            def _send(self, code, body, hdrs=None):
                try:
                    self.send_response(code)
                    for k, v in (hdrs or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the runtime went away (a test stopped it)

            def log_message(self, *args):
                pass

        return Handler

    def stop(self):
        self._stopping = True
        super().stop()

    def invoke(self, event, deadline_in=30.0, timeout=60):
        """Queues one invocation (a dict, or raw bytes) and waits for its answer: returns
        (kind, payload, headers) with kind "response" or "error" and payload parsed JSON (or the
        raw bytes if it is not JSON)."""
        rid = str(uuid.uuid4())
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        self.pending.put((rid, body, int((time.time() + deadline_in) * 1000)))
        end = time.time() + timeout
        with self._cv:
            while rid not in self.answers:
                left = end - time.time()
                if left <= 0:
                    raise AssertionError("no answer to invocation %s within %s s" % (rid, timeout))
                self._cv.wait(left)
            kind, raw, headers = self.answers.pop(rid)
        raw.decode("utf-8")  # every answer is UTF-8
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw
        return kind, payload, headers

    def spawn(self, argv, env, log_path):
        """Starts the runtime with AWS_LAMBDA_RUNTIME_API pointing here; stderr to log_path."""
        e = dict(env)
        e["AWS_LAMBDA_RUNTIME_API"] = self.address
        e.setdefault("AWS_LAMBDA_FUNCTION_NAME", "dag-launcher")
        log = open(log_path, "wb")
        try:
            return subprocess.Popen(argv, env=e, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log)
        finally:
            log.close()

    def stop_process(self, p):
        awsenv.stop_process(p)
