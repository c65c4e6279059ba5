"""recproxy - a loopback HTTP proxy that forwards every request unchanged to an upstream (moto)
and records the AWS JSON 1.0 calls that pass through it.

The Host header is forwarded as received, so SigV4 signatures made for the proxy's address still
verify upstream. `records` is a list of (operation, request_json) in arrival order; `requests`
lists every request of any protocol (S3 too) as (method, path, service, operation, request_json),
the service taken from the SigV4 credential scope; `rewrite`, if
set, is called as rewrite(operation, request_json, response_json) and may return a replacement
response (to simulate what the emulator cannot, e.g. ECS stop codes). Stop it by calling stop().

Usage:
    with RecProxy(moto.endpoint) as p:
        env["AWS_ENDPOINT_URL_ECS"] = p.endpoint
        ...
        p.calls("RunTask")  # the recorded RunTask bodies
"""

import http.server
import json
import os
import re
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import LoopbackServer, forward  # noqa: E402


class RecProxy(LoopbackServer):
    def __init__(self, upstream):
        u = urllib.parse.urlsplit(upstream)
        self.upstream_host = u.hostname
        self.upstream_port = u.port
        self.records = []
        self.requests = []
        self.rewrite = None
        self._lock = threading.Lock()

    # -- recorded calls --

    def calls(self, operation):
        """Request bodies (parsed JSON) of every recorded call of `operation`, in order."""
        with self._lock:
            return [body for op, body in self.records if op == operation]

    # -- server --

    def handler_class(self):
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
                scope = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/",
                                  self.headers.get("Authorization") or "")
                with outer._lock:
                    outer.requests.append((self.command, self.path, scope and scope.group(1), op,
                                           req_json))
                status, _, headers, data = forward(self, outer.upstream_host, outer.upstream_port,
                                                   body)
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

        return Handler


def validate_request(service, operation, params):
    """Validates request parameters against botocore's model of `service` ("ecs", "dynamodb");
    raises botocore.exceptions.ParamValidationError when they do not fit the operation's input
    shape."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model(service)
    validate_parameters(params, model.operation_model(operation).input_shape)


def validate_ecs_request(operation, params):
    """validate_request for ECS."""
    validate_request("ecs", operation, params)
