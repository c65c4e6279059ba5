"""dagy-agent's unpacking of a large artifact, end to end: SIGTERM while the thread pool is
unpacking stops the unpack at its next block, waits for it, removes the partial directory and
exits 143 with the run recorded FAILED (issue 8 defect 16). Runs under the ASan build too, where
a leak or a write into freed memory fails the test."""
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
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


if __name__ == "__main__":
    unittest.main()
