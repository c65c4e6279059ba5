"""imageenv - builds and runs the dagy worker image with podman for the `image` tests.

Makes the base images once per machine (debootstrap --variant=minbase from the Debian mirror the
machine's apt already uses, `podman import`; the slim variant without docs, man pages and
locales, as the official debian:*-slim images are made), checks the podman settings this
workplace needs (/etc/containers/containers.conf), builds Dockerfile.worker from the repository
itself and runs containers that are removed by name when the test ends.

    import imageenv
    img = imageenv.worker_image()          # raises unittest.SkipTest only if podman cannot run
    with imageenv.Containers() as c:
        r = c.run(["--help"])              # podman run --name NAME ... IMAGE --help
"""

import atexit
import contextlib
import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

SRC = os.environ.get("DAGY_TEST_SRC") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("DAGY_TEST_BUILD") or os.path.join(SRC, "build")
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

SUITE = "bookworm"
# The names Dockerfile.worker's FROM lines resolve to; the stand-ins carry BASE_LABEL so that a
# real image of the same name (pulled by a user) is used as it is and never replaced.
BASES = {"debian:bookworm": "docker.io/library/debian:bookworm",
         "debian:bookworm-slim": "docker.io/library/debian:bookworm-slim"}
BASE_LABEL = "dev.dagy.base=debootstrap"
IMAGE = "localhost/dagy-worker:image-test"
BUILD_STAGE = "localhost/dagy-worker-build:image-test"
LOCK = "/var/tmp/dagy-image-test.lock"
CONF = "/etc/containers/containers.conf"
CONF_TEXT = """\
# Written by dagy's tests/image (imageenv.py) because this file was absent: the settings rootful
# podman needs on these machines (no systemd, a hybrid cgroup v1 layout, no CAP_SYS_RESOURCE).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
CONF_KEYS = ("default_ulimits", "runtime", "cgroup_manager", "events_logger")

# What the official slim images leave out (debuerreotype-slimify), as dpkg path filters: written
# into the slim image so that later `apt-get install`s leave them out too.
SLIM_DPKG_CFG = """\
# This is the "slim" variant of the Debian base image (made by dagy's tests/image as the
# official images are): files normally unnecessary in containers are excluded, and this
# configuration keeps them that way.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
# apt settings of the official images (Acquire::Languages none, no cached .debs).
APT_DOCKER_CFG = """\
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
"""

_image_ready = None  # (image, None) or (None, skip reason) after the first call


def log(msg):
    print("imageenv: " + msg, file=sys.stderr, flush=True)


def run(argv, timeout=600, check=True, env=None, **kw):
    """Runs argv (stdout/stderr captured as text); raises AssertionError with both on failure."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                       stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s exited %d:\n%s\n%s" % (" ".join(argv), r.returncode,
                                                       r.stdout[-4000:], r.stderr[-4000:]))
    return r


_conf_override = None  # our own containers.conf when the system's lacks a setting


def podman_env():
    """The environment for podman: CONTAINERS_CONF points at a complete file of our own when the
    system's containers.conf exists but lacks a setting (we never edit an existing file)."""
    env = dict(os.environ)
    if _conf_override:
        env["CONTAINERS_CONF"] = _conf_override
    return env


def podman(args, timeout=600, check=True):
    return run(["podman"] + list(args), timeout=timeout, check=check, env=podman_env())


def ensure_containers_conf():
    """Writes /etc/containers/containers.conf when absent; when present but lacking one of the
    settings, leaves it alone and points podman at a file of our own (CONTAINERS_CONF)."""
    global _conf_override
    if not os.path.exists(CONF):
        os.makedirs(os.path.dirname(CONF), exist_ok=True)
        with open(CONF, "w") as f:
            f.write(CONF_TEXT)
        log("wrote %s (it was absent): ulimits, runtime runc, cgroupfs, file events" % CONF)
        return
    with open(CONF) as f:
        text = f.read()
    lacking = [k for k in CONF_KEYS if not re.search(r"(?m)^\s*%s\s*=" % k, text)]
    if lacking:
        fd, path = tempfile.mkstemp(prefix="dagy-image-test-", suffix=".conf")
        atexit.register(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            f.write(CONF_TEXT.replace("because this file was absent",
                                      "because %s lacks %s" % (CONF, ", ".join(lacking))))
        _conf_override = path
        log("%s lacks %s: left unchanged, podman runs with CONTAINERS_CONF=%s"
            % (CONF, ", ".join(lacking), path))


def podman_unusable():
    """None when podman can run a container here, else the reason (for the skip message)."""
    if not shutil.which("podman"):
        return "podman is not installed (scripts/deps.sh --test installs it on Debian)"
    if os.geteuid() != 0:
        return "the image tests run rootful podman and need root"
    r = podman(["info", "--format", "{{.Host.OCIRuntime.Name}}"], timeout=120, check=False)
    if r.returncode != 0:
        return "podman info failed: " + (r.stderr.strip() or r.stdout.strip())[-500:]
    return None


def apt_sources():
    """[(uri, suite, components)] of the Debian entries the machine's apt uses, deb822
    (/etc/apt/sources.list.d/*.sources) and one-line (sources.list, *.list) formats."""
    out = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            for stanza in re.split(r"\n\s*\n", f.read()):
                fields = {}
                for line in stanza.splitlines():
                    m = re.match(r"([A-Za-z-]+):\s*(.*)", line)
                    if m and not line.startswith("#"):
                        fields[m.group(1).lower()] = m.group(2).split()
                if fields.get("enabled", ["yes"])[0] == "no" or \
                        "deb" not in fields.get("types", []):
                    continue
                for uri in fields.get("uris", []):
                    for suite in fields.get("suites", []):
                        out.append((uri, suite, fields.get("components", ["main"])))
    lists = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in lists:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    out.append((words[1], words[2], words[3:] or ["main"]))
    return out


def debian_mirror():
    """The URI the machine's apt uses for the bookworm suite itself (raises if there is none)."""
    for uri, suite, _ in apt_sources():
        if suite == SUITE:
            return uri.rstrip("/")
    raise AssertionError("no apt source for suite %r in /etc/apt/sources.list(.d): the base "
                         "images are made from the machine's own Debian mirror" % SUITE)


def image_sources_text():
    """sources.list for the base images: the machine's bookworm, -updates, -security entries."""
    lines = []
    for uri, suite, comps in apt_sources():
        if suite == SUITE or suite.startswith(SUITE + "-"):
            lines.append("deb %s %s %s" % (uri, suite, " ".join(comps)))
    return "\n".join(dict.fromkeys(lines)) + "\n"


def image_label(ref):
    """The image's dev.dagy.base label, '' if it has none, or None if there is no such image."""
    r = podman(["image", "inspect", "--format", '{{index .Labels "dev.dagy.base"}}', ref],
               check=False, timeout=60)
    if r.returncode != 0:
        return None
    return r.stdout.strip().replace("<no value>", "")


def slimify(root):
    """Removes docs (but copyrights), man/info pages and locales, as the official slim images."""
    share = os.path.join(root, "usr/share")
    for sub in ("man", "info", "groff", "linda", "lintian/overrides", "locale"):
        d = os.path.join(share, sub)
        if os.path.isdir(d):
            for e in os.listdir(d):
                p = os.path.join(d, e)
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
    doc = os.path.join(share, "doc")
    for dirpath, dirnames, filenames in os.walk(doc, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            if not (name == "copyright" and os.path.dirname(dirpath) == doc):
                os.unlink(p)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if os.path.isdir(p) and not os.path.islink(p) and not os.listdir(p):
                os.rmdir(p)
    os.makedirs(os.path.join(root, "etc/dpkg/dpkg.cfg.d"), exist_ok=True)
    with open(os.path.join(root, "etc/dpkg/dpkg.cfg.d/docker"), "w") as f:
        f.write(SLIM_DPKG_CFG)


def import_rootfs(root, ref):
    """`tar -C root -c . | podman import` as `ref`, with the official images' CMD and our label."""
    tar = subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-cf", "-", "."],
                           stdout=subprocess.PIPE)
    try:
        r = subprocess.run(["podman", "import", "--change", 'CMD ["bash"]',
                            "--change", "LABEL " + BASE_LABEL, "-", ref],
                           stdin=tar.stdout, capture_output=True, text=True, timeout=600,
                           env=podman_env())
    finally:
        tar.stdout.close()
        tar.wait(timeout=600)
    if r.returncode != 0 or tar.returncode != 0:
        raise AssertionError("podman import %s failed: %s" % (ref, r.stderr[-2000:]))


def make_base_images():
    """debootstrap (minbase) once, then imports it as debian:bookworm and, slimmed, as
    debian:bookworm-slim. Images that already exist are kept."""
    want = [name for name, ref in BASES.items() if image_label(ref) is None]
    if not want:
        return
    if not shutil.which("debootstrap"):
        raise AssertionError("debootstrap is not installed (scripts/deps.sh --test installs it)")
    mirror = debian_mirror()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dagy-debootstrap-", dir="/var/tmp") as tmp:
        root = os.path.join(tmp, "rootfs")
        log("debootstrap --variant=minbase %s from %s (once per machine)" % (SUITE, mirror))
        run(["debootstrap", "--variant=minbase", SUITE, root, mirror], timeout=900)
        with open(os.path.join(root, "etc/apt/sources.list"), "w") as f:
            f.write(image_sources_text())
        with open(os.path.join(root, "etc/apt/apt.conf.d/docker"), "w") as f:
            f.write(APT_DOCKER_CFG)
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in glob.glob(os.path.join(root, d, "*")):
                if os.path.isfile(p):
                    os.unlink(p)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, "etc/hostname"))
        if "debian:bookworm" in want:
            import_rootfs(root, BASES["debian:bookworm"])
        if "debian:bookworm-slim" in want:
            slimify(root)
            import_rootfs(root, BASES["debian:bookworm-slim"])
    log("base images made in %.0f s" % (time.monotonic() - t0))


def dangling_images():
    r = podman(["images", "-q", "--no-trunc", "-f", "dangling=true"], timeout=120)
    return set(r.stdout.split())


def build_image():
    """podman build of Dockerfile.worker with the repository as the build context. The build
    stage is tagged too (BUILD_STAGE) so that its cached apt layer outlives a source change;
    the images a rebuild untags (the previous image and build stage) are removed, by id."""
    t0 = time.monotonic()
    before = dangling_images()
    common = ["build", "--pull=never", "--network=host", "--layers", "-f",
              os.path.join(SRC, "Dockerfile.worker"), "--build-arg", "DAGY_VERSION=0.1.0"]
    for args in (["--target", "build", "-t", BUILD_STAGE], ["-t", IMAGE]):
        r = podman(common + args + [SRC], timeout=1200, check=False)
        if r.returncode != 0:
            raise AssertionError("podman build failed (exit %d):\n%s\n%s"
                                 % (r.returncode, r.stdout[-6000:], r.stderr[-3000:]))
    stale = sorted(dangling_images() - before)
    if stale:
        podman(["rmi"] + stale, check=False, timeout=300)
    log("image %s built in %.0f s" % (IMAGE, time.monotonic() - t0))


def worker_image():
    """The built worker image's name; base images and the build happen on the first call
    (serialised between test processes by a lock file). SkipTest only if podman cannot run."""
    global _image_ready
    if _image_ready is None:
        _image_ready = _prepare()
    image, reason = _image_ready
    if reason:
        raise unittest.SkipTest(reason)
    return image


def _prepare():
    if shutil.which("podman"):
        ensure_containers_conf()
    reason = podman_unusable()
    if reason:
        log("SKIPPING the image tests: " + reason)
        return None, reason
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        make_base_images()
        build_image()
    return IMAGE, None


class Containers:
    """Starts containers with unique names; every one is removed (by name) on exit."""

    def __init__(self):
        self.names = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove_all()
        return False

    def new_name(self):
        name = "dagy-imgtest-%d-%d" % (os.getpid(), len(self.names))
        self.names.append(name)
        return name

    def run(self, args, opts=(), timeout=300, image=None):
        """`podman run --name N OPTS IMAGE ARGS` in the foreground: CompletedProcess."""
        name = self.new_name()
        return podman(["run", "--name", name] + list(opts) + [image or worker_image()]
                      + list(args), timeout=timeout, check=False)

    def start(self, args, opts=()):
        """`podman run -d`: returns the container's name once it is created."""
        name = self.new_name()
        podman(["run", "-d", "--name", name] + list(opts) + [worker_image()] + list(args),
               timeout=120)
        return name

    def logs(self, name):
        r = podman(["logs", name], check=False, timeout=60)
        return r.stdout + r.stderr

    def remove_all(self):
        for name in self.names:
            podman(["rm", "-f", "-v", "-t", "0", "--ignore", name], check=False, timeout=120)
        self.names = []
