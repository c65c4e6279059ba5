#!/usr/bin/env python3
"""dagy's runner for `callable` tasks: imports DAGY_CALLABLE ("module.path:function"), calls it
with DAGY_KWARGS (or the file DAGY_KWARGS_FILE, for kwargs over 128 KiB; upstream references
replaced by the upstream tasks' results from DAGY_TASK_INPUTS) and writes the return value as
JSON to DAGY_TASK_OUTPUT.

Exit codes: 0 success, 1 the task failed (exception, import error, bad result), 2 the runner was
started wrongly (bad DAGY_CALLABLE or unreadable environment). Python 3.9+, stdlib only.
"""

import importlib
import json
import os
import sys
import tempfile
import traceback

EXIT_TASK_FAILED = 1
EXIT_USAGE = 2


class RunnerError(Exception):
    """An error with a message for the user and the exit code it maps to."""

    def __init__(self, message, code=EXIT_TASK_FAILED):
        super().__init__(message)
        self.code = code


def parse_callable(spec):
    """Splits "module.path:function" into its two halves (exit 2 when malformed)."""
    module, sep, func = (spec or "").partition(":")
    if not sep or not module or not func or ":" in func:
        raise RunnerError(
            "DAGY_CALLABLE must be 'module.path:function', got %r" % (spec or ""), EXIT_USAGE
        )
    names = module.split(".") + func.split(".")
    if not all(n.isidentifier() for n in names):
        raise RunnerError(
            "DAGY_CALLABLE must be 'module.path:function' made of Python identifiers, got %r"
            % spec,
            EXIT_USAGE,
        )
    return module, func


def load_json_env(name, default):
    """Reads a JSON object from environment variable `name` (exit 2 if it is not one)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise RunnerError("%s is not valid JSON: %s" % (name, e), EXIT_USAGE)
    if not isinstance(value, dict):
        raise RunnerError("%s must be a JSON object" % name, EXIT_USAGE)
    return value


def load_kwargs():
    """The keyword arguments: DAGY_KWARGS, or the file DAGY_KWARGS_FILE names when the agent
    found them too large for one environment variable (over 128 KiB)."""
    path = os.environ.get("DAGY_KWARGS_FILE")
    if not path:
        return load_json_env("DAGY_KWARGS", {})
    try:
        with open(path, "r", encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise RunnerError("cannot read DAGY_KWARGS_FILE %s: %s" % (path, e), EXIT_USAGE)
    if not isinstance(value, dict):
        raise RunnerError("DAGY_KWARGS_FILE %s must hold a JSON object" % path, EXIT_USAGE)
    return value


def load_inputs():
    """Reads the object in the file named by DAGY_TASK_INPUTS ({} when unset)."""
    path = os.environ.get("DAGY_TASK_INPUTS")
    if not path:
        return {}
    try:
        with open(path, "r", encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise RunnerError("cannot read DAGY_TASK_INPUTS %s: %s" % (path, e), EXIT_USAGE)
    if not isinstance(value, dict):
        raise RunnerError("DAGY_TASK_INPUTS %s must hold a JSON object" % path, EXIT_USAGE)
    return value


def is_upstream_ref(value):
    """True for exactly {"upstream": "NAME"}: the one shape that means "that task's result"."""
    return (
        isinstance(value, dict)
        and len(value) == 1
        and isinstance(value.get("upstream"), str)
    )


def is_map_item_ref(value):
    """True for exactly {"map_item": true}: "the element of the array this map child runs for"
    (the Python SDK's Task.map writes it for the mapped argument)."""
    return isinstance(value, dict) and len(value) == 1 and value.get("map_item") is True


def map_item(where):
    """The element this map child runs for (DAGY_MAP_ITEM, compact JSON)."""
    text = os.environ.get("DAGY_MAP_ITEM")
    if text is None:
        raise RunnerError("%s refers to the map item, but this task is not a child of a map "
                          "(DAGY_MAP_ITEM is not set)" % where, EXIT_USAGE)
    try:
        return json.loads(text)
    except ValueError as e:
        raise RunnerError("DAGY_MAP_ITEM is not valid JSON: %s" % e, EXIT_USAGE)


def substitute(value, inputs, where="kwargs"):
    """Returns `value` with every upstream reference and map-item reference, at any depth,
    replaced by its value (which is not scanned again)."""
    if is_map_item_ref(value):
        return map_item(where)
    if is_upstream_ref(value):
        name = value["upstream"]
        if name not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise RunnerError(
                "%s refers to upstream task '%s', which is not an upstream of this task "
                "(upstream results available: %s)" % (where, name, known)
            )
        return inputs[name]
    if isinstance(value, dict):
        return {k: substitute(v, inputs, "%s.%s" % (where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, inputs, "%s[%d]" % (where, i)) for i, v in enumerate(value)]
    return value


def resolve(module_name, func_name):
    """Imports the module and looks the (possibly dotted) function up in it."""
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        raise RunnerError(
            "cannot import module '%s' (PYTHONPATH=%s): %s: %s"
            % (module_name, os.environ.get("PYTHONPATH", ""), type(e).__name__, e)
        )
    for part in func_name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RunnerError(
                "module '%s' has no attribute '%s' (from DAGY_CALLABLE %s:%s)"
                % (module_name, func_name, module_name, func_name)
            )
    if not callable(obj):
        raise RunnerError("%s:%s is not callable" % (module_name, func_name))
    return obj


def write_output(path, result):
    """Writes `result` as JSON to `path` atomically (a temp file beside it, then os.replace)."""
    try:
        data = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RunnerError(
            "the task's return value is not JSON-serializable (%s: %s)" % (type(result).__name__, e)
        )
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dagy-result-", dir=directory)
    except OSError as e:
        raise RunnerError("cannot write DAGY_TASK_OUTPUT %s: %s" % (path, e))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run():
    """Does the whole job; returns the process exit code."""
    module_name, func_name = parse_callable(os.environ.get("DAGY_CALLABLE"))
    kwargs = load_kwargs()
    # Each keyword argument's value is substituted; the kwargs object itself is not a reference
    # even when it looks like one (a function may take a parameter named "upstream").
    inputs = load_inputs()
    kwargs = {k: substitute(v, inputs, "kwargs.%s" % k) for k, v in kwargs.items()}
    func = resolve(module_name, func_name)
    try:
        result = func(**kwargs)
    except SystemExit as e:
        # A task that calls sys.exit() chose its own exit code: 0/None succeeds without a result,
        # anything else fails the attempt with that code (as python itself would).
        if e.code in (None, 0):
            return 0
        print("dagy_runner: %s:%s called sys.exit(%r)" % (module_name, func_name, e.code),
              file=sys.stderr)
        return e.code if isinstance(e.code, int) and 0 < e.code < 256 else EXIT_TASK_FAILED
    except BaseException:
        # Skip the runner's own frame: the trace starts in the user's code.
        etype, value, tb = sys.exc_info()
        traceback.print_exception(etype, value, tb.tb_next if tb else tb, file=sys.stderr)
        return EXIT_TASK_FAILED
    out = os.environ.get("DAGY_TASK_OUTPUT")
    if out:
        write_output(out, result)
    return 0


def main():
    # stdout/stderr are pipes to the agent, which logs them line by line: flush each line so a
    # long task's output shows up as it happens, not when the buffer fills.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
    # The flow directory is the working directory and PYTHONPATH's first entry already; python
    # puts the runner's own directory first on sys.path instead, which must not shadow the flow.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]
    try:
        code = run()
    except RunnerError as e:
        print("dagy_runner: error: %s" % e, file=sys.stderr)
        code = e.code
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
