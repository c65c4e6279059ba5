"""loopback.py - the pieces every test server shares: a threaded HTTP server on 127.0.0.1 (a free
port) with start/stop and context-manager use, and forwarding of one request to an upstream
(for the recording and fault-injecting proxies)."""

import http.client
import http.server
import threading

# Headers that describe one connection, not the message: never forwarded. Content-Length is
# recomputed by the forwarder.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length",
              "proxy-connection", "te", "trailer", "upgrade"}


class LoopbackServer:
    """Base class: subclasses implement handler_class() returning a BaseHTTPRequestHandler
    subclass. start() serves it on a free loopback port in a daemon thread; stop() shuts it down
    and joins the thread (idempotent)."""

    _server = None
    _thread = None

    def handler_class(self):
        raise NotImplementedError

    def start(self):
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

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


def forward(handler, host, port, body):
    """Sends the request `handler` is serving (method, path, headers as received: the Host header
    too, so SigV4 signatures made for the proxy still verify) with `body` to host:port. Returns
    (status, reason, headers without hop-by-hop ones, data)."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.putrequest(handler.command, handler.path, skip_host=True, skip_accept_encoding=True)
        for k, v in handler.headers.items():
            if k.lower() not in HOP_BY_HOP:
                conn.putheader(k, v)
        if body or handler.command in ("POST", "PUT"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body if body else None)
        resp = conn.getresponse()
        data = resp.read()
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        return resp.status, resp.reason, headers, data
    finally:
        conn.close()
