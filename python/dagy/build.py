"""dagy.build - `dagy build`: imports a flow file by its path under the project root, turns its
DAG into flow_spec.json, checks the spec (the Python mirror of the agent's rules, then
`dagy-agent --flow DIR --graph` on the unpacked artifact when the binary is found) and writes a
deterministic zip: entries sorted, fixed timestamps and permissions, so the same sources always
give the same bytes (and sha256). Standard library only."""

import contextlib
import fnmatch
import hashlib
import importlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import traceback
import zipfile

from . import _dag
from . import spec as _spec

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
SKIP_DIRS = ("__pycache__", "node_modules")
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")
GENERATED = ("flow_spec.json", "metadata.json")
AGENT_TIMEOUT = 60
SPEC_MAX_BYTES = 16 << 20  # FLOWSPEC_MAX_BYTES of the agent


class BuildError(Exception):
    """A flow that cannot be built into an artifact; the message says what and where."""


def _is_venv(path):
    """True for a virtual environment (venv/virtualenv write pyvenv.cfg, conda conda-meta/)."""
    return (os.path.isfile(os.path.join(path, "pyvenv.cfg"))
            or os.path.isdir(os.path.join(path, "conda-meta")))


def _matches(rel, patterns):
    """True if a glob matches the relative path, any of its leading directories, or (for a
    pattern without '/') any single component of it."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pat in patterns:
        pat = pat.strip("/")
        if "/" in pat:
            if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
                return True
        elif any(fnmatch.fnmatchcase(p, pat) for p in parts):
            return True
    return False


def _skipped_by_default(name, full):
    return (name.startswith(".") or name in SKIP_DIRS or name.endswith(SKIP_SUFFIXES)
            or (os.path.isdir(full) and not os.path.islink(full) and _is_venv(full)))


def collect_sources(root, include=(), exclude=(), skip_paths=()):
    """Sorted (archive name, absolute path, mode) of the files under root that go into the
    artifact. Skipped: names starting with '.', __pycache__, *.pyc, virtualenvs, dist/ at the
    root, `exclude` globs, everything not matching an `include` glob (when any is given) and
    `skip_paths` (the output file). Symbolic links and special files are refused."""
    root = os.path.realpath(root)
    skip = {os.path.realpath(p) for p in skip_paths}
    out = []

    def walk_error(e):
        raise BuildError("cannot read %s: %s" % (e.filename, e.strerror))

    for cur, dirs, files in os.walk(root, onerror=walk_error):
        rel_dir = os.path.relpath(cur, root)
        rel_dir = "" if rel_dir == os.curdir else rel_dir.replace(os.sep, "/")
        keep = []
        for d in sorted(dirs):
            full, rel = os.path.join(cur, d), (rel_dir + "/" + d).lstrip("/")
            if _skipped_by_default(d, full) or (rel == "dist") or _matches(rel, exclude):
                continue
            if os.path.islink(full):
                raise BuildError("%s is a symbolic link: dagy build packs regular files only "
                                 "(skip it with --exclude %s)" % (full, rel))
            keep.append(d)
        dirs[:] = keep
        for f in sorted(files):
            full, rel = os.path.join(cur, f), (rel_dir + "/" + f).lstrip("/")
            if _skipped_by_default(f, full) or _matches(rel, exclude):
                continue
            if include and not _matches(rel, include):
                continue
            if os.path.realpath(full) in skip:
                continue
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                raise BuildError("%s is %s: dagy build packs regular files only (skip it with "
                                 "--exclude %s)" % (full, "a symbolic link" if stat.S_ISLNK(
                                     st.st_mode) else "not a regular file", rel))
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise BuildError("%r: file name is not valid UTF-8" % full)
            out.append((rel, full, 0o755 if st.st_mode & 0o111 else 0o644))
    out.sort()
    return out


def sdk_sources():
    """The SDK's own modules as (archive name, path, mode), packed as dagy/ so the runner can
    import a flow module that does `from dagy import ...` (the SDK is standard library only)."""
    here = os.path.dirname(os.path.abspath(_dag.__file__))
    return sorted(("dagy/" + f, os.path.join(here, f), 0o644) for f in os.listdir(here)
                  if f.endswith(".py"))


def write_zip(path, entries):
    """Writes a zip of entries [(name, bytes or file path, mode)] sorted by name, every entry
    dated 1980-01-01 00:00 with a fixed mode, deflated: the same entries, the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in sorted(entries, key=lambda e: e[0]):
            zi = zipfile.ZipInfo(name, ZIP_DATE)
            zi.create_system = 3  # unix, so external_attr carries the mode
            zi.external_attr = (stat.S_IFREG | mode) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            if isinstance(data, bytes):
                z.writestr(zi, data, compresslevel=9)
                continue
            size = os.path.getsize(data)
            with open(data, "rb") as src, z.open(zi, "w", force_zip64=size >= 2**31) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _import_root(root):
    """Puts root first on sys.path and hides modules already imported from under it, so the
    flow is imported fresh by its path under root; restores sys.path and sys.modules after."""
    real = os.path.realpath(root)

    def under(m):
        # The running SDK stays: a root holding its own dagy/ must not swap the DAG class.
        if m.__name__ == "dagy" or m.__name__.startswith("dagy."):
            return False
        f = getattr(m, "__file__", None)
        return bool(f) and os.path.realpath(f).startswith(real + os.sep)

    saved = {k: m for k, m in list(sys.modules.items()) if under(m)}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, real)
    try:
        yield
    finally:
        for k, m in list(sys.modules.items()):
            if under(m):
                del sys.modules[k]
        sys.modules.update(saved)
        try:
            sys.path.remove(real)
        except ValueError:
            pass


def load_dag(flow_file, root, dag_name=None):
    """Imports flow_file (a .py file under root) as its module path and returns the DAG it
    defines (the one named dag_name when it defines several)."""
    flow = os.path.abspath(flow_file)
    if not os.path.isfile(flow):
        raise BuildError("%s: no such file" % flow_file)
    try:
        module = _dag.module_for_file(flow, root)
    except _dag.DagyError as e:
        raise BuildError(str(e))
    if module is None:
        raise BuildError("%s is not under the project root %s (pass --root DIR: the directory the "
                         "artifact's imports start from)" % (flow_file, os.path.abspath(root)))
    # Whatever the flow prints while it is imported goes to stderr: stdout is the summary.
    with _import_root(root), _dag.collect_dags() as dags, contextlib.redirect_stdout(sys.stderr):
        try:
            mod = importlib.import_module(module)
        except _dag.DagyError as e:
            raise BuildError("%s: %s" % (flow_file, e))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            raise BuildError("importing %s (module %s) failed:\n%s"
                             % (flow_file, module, traceback.format_exc().rstrip()))
        if not dags:
            dags.extend(v for v in vars(mod).values() if isinstance(v, _dag.DAG))
    if dag_name is not None:
        dags = [d for d in dags if d.name == dag_name]
    if len(dags) != 1:
        names = ", ".join(d.name for d in dags)
        raise BuildError("%s defines %s DAG%s%s" % (
            flow_file, "no" if not dags else len(dags), "" if len(dags) == 1 else "s",
            " named %s" % dag_name if dag_name and not dags else
            " (%s): choose one with --dag NAME" % names if dags else
            " (write the tasks inside `with DAG(\"name\"):`)"))
    return dags[0], module


def find_agent(agent=None):
    """The dagy-agent binary: `agent`, else $DAGY_AGENT, else dagy-agent on PATH; or None."""
    cand = agent or os.environ.get("DAGY_AGENT") or shutil.which("dagy-agent")
    if not cand or not os.path.isfile(cand) or not os.access(cand, os.X_OK):
        return None
    return os.path.abspath(cand)  # the check runs in a scratch directory


def agent_check(agent, zip_path):
    """Unpacks the artifact and runs `dagy-agent --flow DIR --graph` on it: exit 0 or a
    BuildError carrying the agent's message."""
    with tempfile.TemporaryDirectory(prefix="dagy-build-") as tmp:
        stage = os.path.join(tmp, "flow")
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(stage)
        try:
            p = subprocess.run([agent, "--flow", stage, "--graph"], cwd=tmp,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=AGENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BuildError("%s --graph did not finish within %d s" % (agent, AGENT_TIMEOUT))
        except OSError as e:
            raise BuildError("cannot run %s: %s" % (agent, e))
        if p.returncode != 0:
            msg = p.stderr.decode("utf-8", "replace").strip().replace(stage + os.sep, "")
            raise BuildError("dagy-agent refused the spec (exit %d): %s" % (p.returncode, msg))
        return p.stdout.decode("utf-8", "replace")


def _module_files(spec, root):
    """Relative paths a task's module may live at, for every callable whose module is under
    root: {task name: (module, [candidate paths])}."""
    out = {}
    for t in spec["tasks"]:
        if "callable" not in t:
            continue
        mod = t["callable"].split(":")[0]
        base = mod.replace(".", "/")
        cands = [base + ".py", base + "/__init__.py"]
        if any(os.path.isfile(os.path.join(root, c)) for c in cands):
            out[t["name"]] = (mod, cands)
    return out


def _metadata(dag, sources, flow_file):
    """The metadata.json bytes: the DAG's metadata, else the root's own metadata.json, else {}."""
    own = [s for s in sources if s[0] == "metadata.json"]
    if dag.metadata is not None and own:
        raise BuildError("%s sets metadata= and the root has a metadata.json too: keep one (or "
                         "--exclude metadata.json)" % flow_file)
    if own:
        with open(own[0][1], "rb") as f:
            data = f.read()
        try:
            json.loads(data.decode("utf-8"))
        except ValueError as e:
            raise BuildError("%s: not valid JSON: %s" % (own[0][1], e))
        return None
    try:
        return (json.dumps(dag.metadata if dag.metadata is not None else {}, indent=2,
                           sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError as e:
        raise BuildError("%s: metadata holds a string that is not valid UTF-8 (%s)"
                         % (flow_file, e))


def _spec_bytes(dag, root, name, version, flow_file):
    """The validated spec and its flow_spec.json bytes (UTF-8, at most 16 MiB)."""
    if name is not None and _spec.name_problem(name, "flow name"):
        raise BuildError("--name: " + _spec.name_problem(name, "flow name"))
    try:
        spec = dag.to_spec(root=root, name=name, version=version)
        _spec.validate(spec)
        data = (json.dumps(spec, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    except (_dag.DagyError, _spec.SpecError) as e:
        raise BuildError("%s: %s" % (flow_file, e))
    except UnicodeEncodeError as e:
        raise BuildError("%s: the spec holds a string that is not valid UTF-8 (%s)" % (flow_file, e))
    if len(data) > SPEC_MAX_BYTES:
        raise BuildError("%s: flow_spec.json would be %d bytes; dagy-agent reads at most 16 MiB"
                         % (flow_file, len(data)))
    return spec, data


def _output_path(output, spec, root):
    """The artifact path (default ROOT/dist/NAME-VERSION.zip); never a file that is not a zip."""
    if output is None:
        out_name = spec["name"] + ("-" + spec["version"] if spec.get("version") else "") + ".zip"
        output = os.path.join(root, "dist", out_name)
    output = os.path.abspath(output)
    if os.path.lexists(output) and (not os.path.isfile(output) or os.path.islink(output) or
                                    not zipfile.is_zipfile(output)):
        raise BuildError("--output %s exists and is not a zip file: refusing to replace it"
                         % output)
    return output


def _check_sources(spec, root, names, flow_file, log):
    """The packed files hold the flow file and every task module under root, and no
    flow_spec.json of their own; callables from outside root get a note."""
    if "flow_spec.json" in names:
        raise BuildError("%s/flow_spec.json would be replaced by the generated spec: remove it or "
                         "pass --exclude flow_spec.json" % root)
    flow_rel = os.path.relpath(os.path.realpath(flow_file), os.path.realpath(root))
    if flow_rel.replace(os.sep, "/") not in names:
        raise BuildError("the flow file %s is left out of the artifact by --include/--exclude"
                         % flow_rel)
    inside = _module_files(spec, root)
    for task_name, (mod, cands) in sorted(inside.items()):
        if not any(c in names for c in cands):
            raise BuildError("task %s: its module %s (%s) is left out of the artifact by --include/"
                             "--exclude; the runner could not import it" % (task_name, mod,
                                                                           cands[0]))
    for t in spec["tasks"]:
        if "callable" in t and t["name"] not in inside:
            log("note: task %s runs %s, which is not under %s: a dependency package must provide "
                "it" % (t["name"], t["callable"], root))


def build(flow_file, output=None, version=None, name=None, root=None, include=(), exclude=(),
          dag_name=None, agent=None, use_agent=True, vendor_sdk=True, log=None):
    """Builds the artifact of flow_file; returns a dict with artifact, sha256, flow_name,
    flow_version, tasks, files and checked_by. Nothing is written unless every check passed
    (the zip is written beside the output and renamed into place)."""
    log = log or (lambda msg: print("dagy build: " + msg, file=sys.stderr))
    root = os.path.abspath(root or os.getcwd())
    if not os.path.isdir(root):
        raise BuildError("--root %s: not a directory" % root)
    dag, _ = load_dag(flow_file, root, dag_name)
    spec, spec_data = _spec_bytes(dag, root, name, version, flow_file)
    output = _output_path(output, spec, root)
    sources = collect_sources(root, include, exclude, skip_paths=[output])
    names = {s[0] for s in sources}
    _check_sources(spec, root, names, flow_file, log)
    entries = list(sources)
    if vendor_sdk and "dagy" not in {n.split("/")[0] for n in names}:
        entries += sdk_sources()
    meta = _metadata(dag, sources, flow_file)
    if meta is not None:
        entries.append(("metadata.json", meta, 0o644))
    entries.append(("flow_spec.json", spec_data, 0o644))
    return _write_checked(output, entries, spec, agent if use_agent else False, log)


def _write_checked(output, entries, spec, agent, log):
    """Writes the zip beside output, has the agent check it (when found), renames it in."""
    out_dir = os.path.dirname(output)
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".dagy-build-", suffix=".zip", dir=out_dir)
        os.close(fd)
    except OSError as e:
        raise BuildError("cannot write %s: %s" % (output, e))
    try:
        write_zip(tmp, entries)
        binary = find_agent(agent or None) if agent is not False else None
        if binary:
            agent_check(binary, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise BuildError("cannot write %s: %s%s" % (output, e.strerror or e,
                                                    " (%s)" % e.filename if e.filename else ""))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return {"artifact": output, "sha256": sha256_file(output), "flow_name": spec["name"],
            "flow_version": spec.get("version", ""), "tasks": len(spec["tasks"]),
            "files": len(entries), "checked_by": "dagy-agent" if binary else "python"}
