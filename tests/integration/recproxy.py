"""recproxy - a loopback HTTP proxy that forwards every request unchanged to an upstream (moto)
and records the AWS JSON 1.0 calls that pass through it.

The Host header is forwarded as received, so SigV4 signatures made for the proxy's address still
verify upstream. `records` is a list of (operation, request_json) in arrival order; `rewrite`, if
set, is called as rewrite(operation, request_json, response_json) and may return a replacement
response (to simulate what the emulator cannot, e.g. ECS stop codes). Stop it by calling stop().

Usage:
    with RecProxy(moto.endpoint) as p:
        env["AWS_ENDPOINT_URL_ECS"] = p.endpoint
        ...
        p.calls("RunTask")  # the recorded RunTask bodies
"""

import http.client
import http.server
import json
import threading
import urllib.parse

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class RecProxy:
    def __init__(self, upstream):
        u = urllib.parse.urlsplit(upstream)
        self.upstream_host = u.hostname
        self.upstream_port = u.port
        self.records = []
        self.rewrite = None
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    # -- recorded calls --

    def calls(self, operation):
        """Request bodies (parsed JSON) of every recorded call of `operation`, in order."""
        with self._lock:
            return [body for op, body in self.records if op == operation]

    # -- server --

    def start(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                target = self.headers.get("X-Amz-Target") or ""
                op = target.rsplit(".", 1)[-1] if target else None
                req_json = None
                if op:
                    try:
                        req_json = json.loads(body or b"{}")
                    except ValueError:
                        req_json = None
                    with outer._lock:
                        outer.records.append((op, req_json))
                conn = http.client.HTTPConnection(outer.upstream_host, outer.upstream_port, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in _HOP_HEADERS:
                            conn.putheader(k, v)
                    conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                    headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_HEADERS]
                finally:
                    conn.close()
                if op and outer.rewrite is not None and req_json is not None:
                    try:
                        resp_json = json.loads(data or b"{}")
                    except ValueError:
                        resp_json = None
                    if resp_json is not None:
                        new = outer.rewrite(op, req_json, resp_json)
                        if new is not None:
                            if isinstance(new, tuple):
                                status, new = new
                            data = json.dumps(new).encode()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def validate_ecs_request(operation, params):
    """Validates request parameters against botocore's ECS service model; raises
    botocore.exceptions.ParamValidationError when they do not fit the operation's input shape."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("ecs")
    validate_parameters(params, model.operation_model(operation).input_shape)
