"""dagy_backend - the in-tree PEP 517 / PEP 660 build backend of the dagy package: builds the
wheel (and sdist) with the standard library alone, so `pip install ./python` works on a machine
with no network and no setuptools/wheel. It reads the [project] table of pyproject.toml (name,
version, description, requires-python, [project.scripts]) and packs the `dagy` package."""

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "dagy"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _toml_project():
    """The [project] and [project.scripts] tables (tomllib when present, else the simple
    `key = "value"` lines this file uses)."""
    path = os.path.join(HERE, "pyproject.toml")
    try:
        import tomllib
        with open(path, "rb") as f:
            data = tomllib.load(f)
        return data["project"], data["project"].get("scripts", {})
    except ImportError:
        pass
    tables, cur = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"\[([A-Za-z0-9_.\-]+)\]$", line)
            if m:
                cur = tables.setdefault(m.group(1), {})
                continue
            m = re.match(r'([A-Za-z0-9_\-]+)\s*=\s*"([^"]*)"$', line)
            if m and cur is not None:
                cur[m.group(1)] = m.group(2)
    return tables["project"], tables.get("project.scripts", {})


def _meta():
    proj, scripts = _toml_project()
    name, version = proj["name"], proj["version"]
    lines = ["Metadata-Version: 2.1", "Name: " + name, "Version: " + version,
             "Summary: " + proj.get("description", "")]
    if proj.get("requires-python"):
        lines.append("Requires-Python: " + proj["requires-python"])
    metadata = "\n".join(lines) + "\n"
    entry = "[console_scripts]\n" + "".join("%s = %s\n" % kv for kv in sorted(scripts.items()))
    return name, version, metadata, entry


def _dist_info(name, version):
    return "%s-%s.dist-info" % (name.replace("-", "_"), version)


def _files():
    src = os.path.join(HERE, PACKAGE)
    return sorted(PACKAGE + "/" + f for f in os.listdir(src) if f.endswith(".py"))


def _write_wheel(wheel_directory, editable):
    name, version, metadata, entry = _meta()
    di = _dist_info(name, version)
    wheel = "%s-%s-py3-none-any.whl" % (name.replace("-", "_"), version)
    entries = []
    if editable:
        entries.append((name + ".pth", (HERE + "\n").encode()))
    else:
        for rel in _files():
            with open(os.path.join(HERE, rel), "rb") as f:
                entries.append((rel, f.read()))
    entries += [(di + "/METADATA", metadata.encode()),
                (di + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: dagy_backend\n"
                 b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
                (di + "/entry_points.txt", entry.encode())]
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w", zipfile.ZIP_DEFLATED) as z:
        for rel, data in entries:
            zi = zipfile.ZipInfo(rel, ZIP_DATE)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append("%s,sha256=%s,%d" % (rel, digest.decode(), len(data)))
        record.append(di + "/RECORD,,")
        zi = zipfile.ZipInfo(di + "/RECORD", ZIP_DATE)
        zi.external_attr = 0o644 << 16
        z.writestr(zi, "\n".join(record) + "\n")
    return wheel


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_sdist = get_requires_for_build_editable = get_requires_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, editable=False)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, editable=True)


def build_sdist(sdist_directory, config_settings=None):
    name, version, metadata, _ = _meta()
    base = "%s-%s" % (name, version)
    out = base + ".tar.gz"
    rels = ["pyproject.toml", "README.md", "_build/dagy_backend.py"] + _files()
    with tarfile.open(os.path.join(sdist_directory, out), "w:gz") as t:
        for rel in rels:
            t.add(os.path.join(HERE, rel), base + "/" + rel)
        info = tarfile.TarInfo(base + "/PKG-INFO")
        info.size = len(metadata.encode())
        t.addfile(info, io.BytesIO(metadata.encode()))
    return out
