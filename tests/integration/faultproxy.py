"""faultproxy - a loopback HTTP proxy for tests that forwards to an upstream (moto) and, at
random (seeded), injects the faults a real AWS endpoint produces.

Faults (rates are probabilities per request, checked in this order, at most one per request):
  "500"          answer 500 InternalServerError without forwarding
  "503"          answer 503 ServiceUnavailable without forwarding
  "throttle"     answer 400 ProvisionedThroughputExceededException (DynamoDB JSON) without forwarding
  "reset"        close the connection without any reply, without forwarding
  "reset_after"  forward (the upstream APPLIES the request), then close without reply: the client
                 must retry a request that already took effect
  "delay"        sleep `delay_s` (default 0.3), then forward
  "blackhole"    read the request, then never answer (the connection stays open until stop())

Usage as a module (module-level singleton) or as a class:
    import faultproxy
    url = faultproxy.start(moto.endpoint, seed=7, rates={"500": 0.1, "reset": 0.05})
    ...  # point AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_DYNAMODB) at url
    faultproxy.stop()

    with faultproxy.FaultProxy(upstream, seed=1, rates=...) as p:
        p.url; p.stats (counts per fault and "forwarded"); p.bodies (request bodies when
        record_bodies=True; header names lower-case)

The Host header is passed through unchanged, so SigV4 signatures made for the proxy's address
still verify upstream. `match(method, path, headers) -> bool` limits faults to some requests
(others are always forwarded). Loopback only; threads are daemons and stop() joins the server.
"""

import http.server
import os
import sys
import json
import random
import socket
import struct
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import LoopbackServer, forward  # noqa: E402

FAULTS = ("500", "503", "throttle", "reset", "reset_after", "delay", "blackhole")

class FaultProxy(LoopbackServer):
    def __init__(self, upstream, seed=0, rates=None, delay_s=0.3, match=None, record_bodies=False):
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError("faultproxy forwards to http:// upstreams only: %r" % upstream)
        self.up_host = u.hostname
        self.up_port = u.port or 80
        self.rates = dict(rates or {})
        for k in self.rates:
            if k not in FAULTS:
                raise ValueError("unknown fault %r (known: %s)" % (k, ", ".join(FAULTS)))
        self.delay_s = delay_s
        self.match = match
        self.record_bodies = record_bodies
        # The "throttle" answer's __type: DynamoDB's by default; ECS says "ThrottlingException".
        self.throttle_type = ("com.amazonaws.dynamodb.v20120810#"
                              "ProvisionedThroughputExceededException")
        self.bodies = []
        self.stats = {k: 0 for k in FAULTS + ("forwarded",)}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # releases blackholed requests

    # -- decisions ---------------------------------------------------------------------------

    def _choose(self, method, path, headers):
        """The fault for this request (or None), drawn from the seeded generator."""
        if self.match is not None and not self.match(method, path, headers):
            return None
        with self._lock:
            x = self._rng.random()
            acc = 0.0
            for k in FAULTS:
                acc += self.rates.get(k, 0.0)
                if x < acc:
                    self.stats[k] += 1
                    return k
            return None

    def _count(self, key):
        with self._lock:
            self.stats[key] += 1

    # -- server ------------------------------------------------------------------------------

    @property
    def url(self):
        return self.endpoint

    def handler_class(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _read_body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _reset(self):
                """Closes the connection with RST and no reply."""
                self.close_connection = True
                try:
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                except OSError:
                    pass

            def _reply(self, code, body, ctype="application/x-amz-json-1.0"):
                data = body.encode() if isinstance(body, str) else body
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _forward(self, body):
                return forward(self, outer.up_host, outer.up_port, body)

            def _handle(self):
                body = self._read_body()
                if outer.record_bodies:
                    with outer._lock:
                        outer.bodies.append(
                            (self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                        )
                fault = outer._choose(self.command, self.path, self.headers)
                if fault == "500":
                    return self._reply(
                        500, json.dumps({"__type": "InternalServerError", "message": "injected"})
                    )
                if fault == "503":
                    return self._reply(503, "Service Unavailable (injected)", "text/plain")
                if fault == "throttle":
                    return self._reply(
                        400,
                        json.dumps(
                            {
                                "__type": outer.throttle_type,
                                "message": "The level of configured provisioned throughput for "
                                "the table was exceeded (injected)",
                            }
                        ),
                    )
                if fault == "reset":
                    return self._reset()
                if fault == "blackhole":
                    outer._stopping.wait(600)  # bounded: never outlives a test
                    return self._reset()
                if fault == "delay":
                    time.sleep(outer.delay_s)
                try:
                    status, reason, headers, data = self._forward(body)
                except OSError:
                    return self._reset()
                outer._count("forwarded")
                if fault == "reset_after":
                    return self._reset()
                self.send_response(status, reason)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, *args):
                pass

        return Handler

    def stop(self):
        self._stopping.set()
        super().stop()

    def set_rates(self, rates):
        """Changes the fault rates from now on (e.g. {} to stop injecting)."""
        with self._lock:
            self.rates = dict(rates or {})


_current = None


def start(upstream_url, seed=0, rates=None, **kw):
    """Starts the module's proxy (stopping a previous one) and returns its URL."""
    global _current
    stop()
    _current = FaultProxy(upstream_url, seed=seed, rates=rates, **kw).start()
    return _current.url


def current():
    """The module's running FaultProxy (for stats and bodies), or None."""
    return _current


def stop():
    """Stops the module's proxy, if any."""
    global _current
    if _current is not None:
        _current.stop()
        _current = None
