"""dagy-agent's unpacking of a large artifact, end to end: SIGTERM while the thread pool is
unpacking stops the unpack at its next block, waits for it, removes the partial directory and
exits 143 with the run recorded FAILED (issue 8 defect 16); SIGTERM during a download removes the
partial file the same way. Runs under the ASan build too, where a leak or a write into freed
memory fails the test."""
import http.server
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agentenv import AGENT, read_json, stop, wait_for  # noqa: E402

SPEC = {"spec_version": 1, "name": "big", "version": "1.0.0",
        "tasks": [{"name": "a", "command": ["true"]}]}


def big_tgz(path, size_mib, files):
    """Writes a .tar.gz holding `files` (name -> bytes) and then big.bin, size_mib MiB of zeros,
    in well under a second: the deflate stream of one MiB of zeros after a full flush is the same
    every time, so it is computed once and repeated; only the CRC is computed over all bytes."""
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    crc, total = 0, 0
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # gzip header, no name

        def deflate(data, flush=zlib.Z_FULL_FLUSH):
            nonlocal crc, total
            crc = zlib.crc32(data, crc)
            total += len(data)
            return c.compress(data) + c.flush(flush)

        head = b""
        for name, content in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(content), 0o644
            head += ti.tobuf(format=tarfile.GNU_FORMAT) + content + bytes(-len(content) % 512)
        ti = tarfile.TarInfo("big.bin")
        ti.size, ti.mode = size_mib << 20, 0o644
        out.write(deflate(head + ti.tobuf(format=tarfile.GNU_FORMAT)))
        zero = bytes(1 << 20)
        block = deflate(zero)
        for _ in range(size_mib):
            out.write(block)
        for _ in range(size_mib - 1):
            crc = zlib.crc32(zero, crc)
        total += (size_mib - 1) << 20
        out.write(deflate(bytes(1024), zlib.Z_FINISH))  # the tar's end blocks
        out.write(struct.pack("<II", crc & 0xFFFFFFFF, total & 0xFFFFFFFF))


def sanitizer_report(stderr):
    for marker in ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:"):
        if marker in stderr:
            return marker
    return None


class UnpackSignal(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dagy-unpack-")
        cls.archive = os.path.join(cls.tmp, "big.tgz")
        big_tgz(cls.archive, 1200, {"flow_spec.json": json.dumps(SPEC).encode()})

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["rm", "-rf", cls.tmp])

    def run_dir(self, run_id):
        return os.path.join(self.tmp, "work", run_id)

    def test_sigterm_during_unpack_stops_it_and_removes_the_partial_directory(self):
        run_id = "unpack-sigterm"
        state = os.path.join(self.tmp, "state")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGY_")}
        env.update(DAGY_WORK_DIR=os.path.join(self.tmp, "work"), DAGY_UNPACK_MAX_RATIO="100000")
        p = subprocess.Popen([AGENT, "--flow", self.archive, "--run-id", run_id, "--state-dir",
                              state, "--log-format", "json"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(stop, p)
        big = os.path.join(self.run_dir(run_id), "flow", "big.bin")
        self.assertTrue(wait_for(lambda: os.path.exists(big) and os.path.getsize(big) > (64 << 20),
                                 timeout=30), "the unpack never got going")
        written = os.path.getsize(big)
        self.assertLess(written, 1200 << 20, "the unpack finished before the signal")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        stopped_in = time.monotonic() - t0
        out, err = out.decode(), err.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 143, err[-3000:])
        self.assertIsNone(sanitizer_report(err), err[-6000:])
        self.assertLess(stopped_in, 10, "the agent waited for the whole unpack")
        self.assertFalse(os.path.exists(os.path.join(self.run_dir(run_id), "flow")),
                         "the partial flow directory was left behind")
        lines = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(lines[-1]["event_type"], "run_end")
        self.assertEqual(lines[-1]["exit_code"], 143)
        self.assertFalse([l for l in lines if l["event_type"] == "unpack_end"])
        run = read_json(os.path.join(state, "runs", run_id + ".json"))
        self.assertEqual(run["status"], "FAILED")
        self.assertEqual(run["error_message"], "Worker shutdown requested via SIGTERM")
        # The unpack really stopped: nothing writes there any more.
        time.sleep(0.5)
        self.assertFalse(os.path.exists(big))


class TrickleServer:
    """Serves any GET as a 206 part of a 64 MiB object, 64 KiB every 20 ms (never finishes in
    the test's time)."""

    SIZE = 64 << 20

    def __init__(self):
        size = self.SIZE

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                a, b = self.headers.get("Range", "bytes=0-").split("=")[1].split("-")
                a, b = int(a), min(int(b or size - 1), size - 1)
                self.send_response(206)
                self.send_header("Content-Range", "bytes %d-%d/%d" % (a, b, size))
                self.send_header("Content-Length", str(b - a + 1))
                self.send_header("ETag", '"trickle"')
                self.end_headers()
                chunk = bytes(64 << 10)
                try:
                    for _ in range((b - a + 1) // len(chunk)):
                        self.wfile.write(chunk)
                        time.sleep(0.02)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.srv.server_address[1]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class DownloadSignal(unittest.TestCase):
    def test_sigterm_during_download_removes_the_partial_file(self):
        tmp = tempfile.mkdtemp(prefix="dagy-dl-")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        srv = TrickleServer()
        self.addCleanup(srv.stop)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DAGY_") and not k.startswith("AWS_")}
        env.update(DAGY_WORK_DIR=os.path.join(tmp, "work"), AWS_ENDPOINT_URL=srv.url,
                   AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="AKIDTEST",
                   AWS_SECRET_ACCESS_KEY="test-secret", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        state = os.path.join(tmp, "state")
        p = subprocess.Popen([AGENT, "--flow", "s3://bkt/slow.tgz", "--run-id", "dl-sigterm",
                              "--state-dir", state, "--log-format", "json"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(stop, p)
        part = os.path.join(tmp, "work", "dl-sigterm", "artifact")
        self.assertTrue(wait_for(lambda: os.path.exists(part) and os.path.getsize(part) > (1 << 20),
                                 timeout=30), "the download never got going")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
        err = err.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 143, err[-3000:])
        self.assertIsNone(sanitizer_report(err), err[-6000:])
        self.assertFalse(os.path.exists(part), "the partial download was left behind")
        lines = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual(lines[-1]["event_type"], "run_end")
        self.assertEqual(lines[-1]["exit_code"], 143)
        run = read_json(os.path.join(state, "runs", "dl-sigterm.json"))
        self.assertEqual(run["status"], "FAILED")


if __name__ == "__main__":
    unittest.main()
