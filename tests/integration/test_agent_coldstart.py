"""test_agent_coldstart.py - the agent's start-up loads only what the run needs (issue 12 part 4):
a local run from a flow directory maps no network or archive library; the AWS module
(dagy-agent-aws.so, libcurl) and the unpack module (dagy-agent-unpack.so, libarchive) are loaded
beside the executable on first need, each only by a run that needs it; without them a local run
still works and a run that needs one fails, saying which file is missing."""
import os
import shutil
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agentenv  # noqa: E402
from agentenv import Flow  # noqa: E402

# Libraries a run that neither unpacks nor talks to AWS must not load.
HEAVY = ("libcurl", "libarchive", "libcrypto", "libssl", "libgnutls", "libp11-kit", "libxml2",
         "libkrb5", "libldap", "dagy-agent-aws.so", "dagy-agent-unpack.so")


def spec(tasks):
    return {"spec_version": 1, "name": "coldstart", "version": "1.0.0", "tasks": tasks}


def loaded(stderr):
    """The objects ld.so reports (LD_DEBUG=files) in the agent's stderr."""
    return [l.split("file=", 1)[1].split(";")[0].split(" [")[0].strip()
            for l in stderr.splitlines()
            if "file=" in l and ("needed by" in l or "dynamically loaded by" in l)]


class ColdStart(unittest.TestCase):
    def flow(self, files=None):
        f = Flow(spec([{"name": "a", "command": ["sh", "-c", "cat data.txt"]}]),
                 files={"data.txt": "payload\n"})
        self.addCleanup(f.cleanup)
        return f

    def test_a_local_directory_run_loads_no_network_or_archive_library(self):
        f = self.flow()
        r = f.run(env={"LD_DEBUG": "files"})
        self.assertEqual(r.code, 0, r.err[-2000:])
        objs = loaded(r.err)
        self.assertTrue(any("libuv" in o for o in objs), objs)  # LD_DEBUG did report
        for o in objs:
            for lib in HEAVY:
                self.assertNotIn(lib, o, "a local run loaded %s" % o)

    def test_a_local_run_does_not_start_openssl(self):
        # OpenSSL's EVP layer reads its configuration (OPENSSL_CONF) on first use: a FIFO
        # nobody writes blocks that read forever. A local run hashes without EVP.
        f = self.flow()
        fifo = os.path.join(f.tmp, "openssl.cnf")
        os.mkfifo(fifo)
        r = f.run(env={"OPENSSL_CONF": fifo}, timeout=20)
        self.assertEqual(r.code, 0, r.err[-2000:])
        self.assertEqual(r.output("a"), ["payload"])

    def test_an_archive_run_loads_the_unpack_module_on_first_need_and_no_libcurl(self):
        f = self.flow()
        r = f.run(flow=f.zip(), env={"LD_DEBUG": "files"})
        self.assertEqual(r.code, 0, r.err[-2000:])
        self.assertEqual(r.output("a"), ["payload"])
        objs = loaded(r.err)
        here = os.path.dirname(os.path.realpath(agentenv.AGENT))
        self.assertIn(os.path.join(here, "dagy-agent-unpack.so"), objs)
        self.assertTrue(any("libarchive" in o for o in objs), objs)
        for o in objs:
            for lib in ("dagy-agent-aws.so", "libcurl", "libssl", "libgnutls"):
                self.assertNotIn(lib, o, "a local archive run loaded %s" % o)

    def agent_without_module(self, f):
        """A copy of the shim and the core alone in a directory: neither module."""
        bindir = os.path.join(f.tmp, "bin")
        os.makedirs(bindir)
        here = os.path.dirname(os.path.realpath(agentenv.AGENT))
        for name in ("dagy-agent", "dagy-agent-core"):
            shutil.copy2(os.path.join(here, name), bindir)
        return os.path.join(bindir, "dagy-agent")

    def test_without_the_module_a_local_run_works_and_an_archive_run_names_it(self):
        f = self.flow()
        saved = agentenv.AGENT
        agentenv.AGENT = self.agent_without_module(f)
        try:
            r = f.run()
            self.assertEqual(r.code, 0, r.err[-2000:])
            self.assertEqual(r.output("a"), ["payload"])
            r = f.run(flow=f.zip())
        finally:
            agentenv.AGENT = saved
        self.assertEqual(r.code, 3, r)  # an installation fault, not a bad flow
        end = r.events("run_end")
        self.assertTrue(end, r.out)
        self.assertIn("cannot load the unpack module", r.out)
        self.assertIn("dagy-agent-unpack.so", end[-1].get("error", "") + r.out)
        self.assertEqual(r.run_item()["status"], "FAILED")

    def test_without_the_module_an_s3_run_fails_as_infra_naming_it(self):
        f = self.flow()
        saved = agentenv.AGENT
        agentenv.AGENT = self.agent_without_module(f)
        try:
            r = f.run(flow="s3://some-bucket/flow.zip",
                      env={"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x",
                           "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # never leaves the host
                           "AWS_SECRET_ACCESS_KEY": "y"})
        finally:
            agentenv.AGENT = saved
        self.assertEqual(r.code, 3, r)
        self.assertIn("cannot load the AWS module", r.out)
        self.assertIn("dagy-agent-aws.so", r.out)


if __name__ == "__main__":
    unittest.main()
