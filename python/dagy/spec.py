"""dagy.spec - the rules of flow_spec.json (spec_version 1) in Python, mirroring the agent's
proto/flowspec.c, proto/flowspec_template.c and proto/names.c message for message, so that
`dagy build` refuses what dagy-agent would refuse even where the agent binary is not at hand;
plus the Graphviz DOT view of a spec, as `dagy-agent --graph` prints it (flowspec_graph.c).
Standard library only."""

import math
import re

MAX_TASKS = 100000
MAX_SECONDS = 1e9
MAX_DEPTH = 1000  # cJSON's nesting limit: the agent cannot read a deeper document

TOP_FIELDS = ("spec_version", "name", "version", "description", "max_parallel", "defaults", "tasks")
SCHED_FIELDS = ("retries", "retry_delay_seconds", "retry_backoff", "retry_max_delay_seconds",
                "retry_jitter", "timeout_seconds")
TASK_FIELDS = ("name", "description", "command", "callable", "kwargs", "env", "upstream",
               "trigger_rule", "map") + SCHED_FIELDS
MAP_FIELDS = ("over", "max_parallel", "allow_failures")
TRIGGER_RULES = ("all_success", "all_done", "one_failed", "none_failed")
TEMPLATE_VARS = ("run_id", "flow_name", "flow_version", "org_id", "environment", "item")

_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]+\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CALLABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*\Z")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_\-]{1,128}\Z")


class SpecError(ValueError):
    """A spec the agent would refuse; the message names the task and the field."""


def _quote(s):
    """At most 64 bytes of s, printable ASCII kept and every other byte as \\xHH (names.c)."""
    raw = s.encode("utf-8", "surrogatepass")
    out = "".join(chr(c) if 0x20 <= c < 0x7F and c not in (0x5C, 0x22) else "\\x%02X" % c
                  for c in raw[:64])
    return out + ("..." if len(raw) > 64 else "")


def name_problem(s, noun="task name"):
    """None if s is a valid name (1-128 characters of [A-Za-z0-9_.-], not . or ..), else the
    agent's message: 'invalid task name "x y": may contain only letters, digits and _ . -'."""
    if not isinstance(s, str):
        return "%s must be a string" % noun
    why = None
    if not s:
        why = "is empty"
    elif len(s.encode("utf-8", "surrogatepass")) > 128:
        why = "is longer than 128 characters"
    elif s in (".", ".."):
        why = 'may not be "." or ".."'
    elif not _NAME_CHARS.match(s):
        why = "may contain only letters, digits and _ . -"
    return None if why is None else 'invalid %s "%s": %s' % (noun, _quote(s), why)


def is_identifier(s):
    """True for an ASCII Python identifier ([A-Za-z_][A-Za-z0-9_]*), as the agent reads them."""
    return isinstance(s, str) and bool(_IDENT.match(s))


def callable_valid(s):
    """True for "pkg.module:function" (dotted identifiers, a colon, one identifier)."""
    return isinstance(s, str) and bool(_CALLABLE.match(s))


def _snippet(s):
    cut = s.split("\n", 1)[0]
    return cut[:48] + ("..." if len(cut) > 48 or len(cut) < len(s) else "")


def template_problem(s):
    """None if every {{ ... }} in s is well formed, else why not (flowspec_template.c)."""
    p = 0
    while True:
        q = s.find("{{", p)
        if q < 0:
            return None
        close = s.find("}}", q + 2)
        if close < 0:
            return 'unterminated template "%s" (missing "}}")' % _snippet(s[q:])
        body = s[q + 2:close].strip(" \t\n\r")
        shown = _snippet(body)
        if body == "":
            return 'empty template "{{ }}"'
        if body.startswith("parameters."):
            name = body[len("parameters."):]
            if not name:
                return 'empty parameter name in "{{ %s }}"' % shown
            if not _PARAM_NAME.match(name):
                return ('invalid parameter name in "{{ %s }}" (1-128 characters of A-Z a-z 0-9 _ -)'
                        % shown)
        elif body not in TEMPLATE_VARS:
            return ('unknown template variable "%s" (known: parameters.NAME, run_id, flow_name, '
                    "flow_version, org_id, environment, item)" % shown)
        p = close + 2


def uses_item(s):
    """True if the well-formed templates of s include {{ item }} (a map child's element)."""
    p = 0
    while True:
        q = s.find("{{", p)
        if q < 0:
            return False
        close = s.find("}}", q + 2)
        if close < 0:
            return False
        if s[q + 2:close].strip(" \t\n\r") == "item":
            return True
        p = close + 2


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _is_integral(v):
    """An integer, or a float with an integral value (as the agent reads JSON numbers)."""
    return _is_int(v) or (_is_num(v) and float(v).is_integer())


def sched_problem(field, v):
    """None if v is a valid value of scheduling field `field`, else why (flowspec.c)."""
    if field == "retries":
        ok = (_is_int(v) or (_is_num(v) and float(v).is_integer())) and 0 <= v <= 100
        return None if ok else "must be an integer between 0 and 100"
    if field in ("retry_delay_seconds", "retry_max_delay_seconds"):
        ok = _is_num(v) and 0 <= v <= MAX_SECONDS
        return None if ok else "must be a number of seconds >= 0 (at most 1e9)"
    if field == "retry_backoff":
        return None if _is_num(v) and v >= 1 else "must be a number >= 1"
    if field == "retry_jitter":
        return None if isinstance(v, bool) else "must be true or false"
    if field == "timeout_seconds":
        ok = _is_num(v) and 0 < v <= MAX_SECONDS
        return None if ok else "must be a number of seconds > 0 (at most 1e9)"
    return "unknown field"


def env_problem(name, value):
    """None if NAME=value is an allowed task environment entry, else why (prefix-free)."""
    if not isinstance(name, str) or not _IDENT.match(name):
        return 'env "%s": invalid variable name (must match [A-Za-z_][A-Za-z0-9_]*)' % (
            str(name)[:64])
    if name.startswith("DAGY_"):
        return 'env "%s": names starting with DAGY_ are reserved' % name[:64]
    if not isinstance(value, str):
        return 'env "%s": value must be a string' % name[:64]
    why = template_problem(value)
    return None if why is None else 'env "%s": %s' % (name[:64], why)


def _fail(msg):
    raise SpecError(msg)


def _collect(obj, allowed, prefix):
    for k in obj:
        if k not in allowed:
            _fail('%sunknown field "%s" (allowed: %s)' % (prefix, k[:64], ", ".join(allowed)))


def _walk_strings(value, path, fn, depth=0):
    """Calls fn(string, path, parent_dict_key) for every string inside value (kwargs paths)."""
    if depth > MAX_DEPTH:
        _fail("%s: nested more than %d levels deep" % (path, MAX_DEPTH))
    if isinstance(value, str):
        fn(value, path)
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk_strings(v, "%s.%s" % (path, k), fn, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk_strings(v, "%s[%d]" % (path, i), fn, depth + 1)


def _refs(value, path, out, top=True):
    """Appends (path, NAME) for every {"upstream": "NAME"} below the kwargs object itself."""
    if isinstance(value, dict):
        if not top and len(value) == 1 and isinstance(value.get("upstream"), str):
            out.append((path, value["upstream"]))
            return
        for k, v in value.items():
            _refs(v, "%s.%s" % (path, k), out, False)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refs(v, "%s[%d]" % (path, i), out, False)


def _has_nul(value):
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any("\0" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _check_sched(obj, prefix):
    for f in SCHED_FIELDS:
        if f in obj:
            why = sched_problem(f, obj[f])
            if why:
                _fail('%sfield "%s": %s' % (prefix, f, why))


def _check_command(cmd, prefix):
    if not isinstance(cmd, list) or not cmd:
        _fail('%sfield "command": must be a non-empty array of strings' % prefix)
    for i, e in enumerate(cmd):
        where = "%scommand[%d]" % (prefix, i)
        if not isinstance(e, str):
            _fail("%s: must be a string" % where)
        if i == 0 and e == "":
            _fail("%s: the program name must not be empty" % where)
        why = template_problem(e)
        if why:
            _fail("%s: %s" % (where, why))


def _check_task_body(t, prefix):
    _collect(t, TASK_FIELDS, prefix)
    if ("command" in t) == ("callable" in t):
        _fail('%smust have exactly one of "command" or "callable"' % prefix)
    if "kwargs" in t and "callable" not in t:
        _fail('%sfield "kwargs" is only allowed with "callable"' % prefix)
    if "description" in t and not isinstance(t["description"], str):
        _fail('%sfield "description": must be a string' % prefix)
    if "command" in t:
        _check_command(t["command"], prefix)
    if "env" in t:
        if not isinstance(t["env"], dict):
            _fail('%sfield "env": must be an object of strings' % prefix)
        for k, v in t["env"].items():
            why = env_problem(k, v)
            if why:
                _fail(prefix + why)
    if "upstream" in t:
        if not isinstance(t["upstream"], list):
            _fail('%sfield "upstream": must be an array of task names' % prefix)
        for i, u in enumerate(t["upstream"]):
            if not isinstance(u, str):
                _fail("%supstream[%d]: must be a task name (a string)" % (prefix, i))
    if "trigger_rule" in t and t["trigger_rule"] not in TRIGGER_RULES:
        _fail('%sfield "trigger_rule": must be one of all_success, all_done, one_failed, '
              "none_failed" % prefix)
    if "map" in t:
        _check_map(t["map"], prefix)
    _check_sched(t, prefix)
    if "callable" in t and not callable_valid(t["callable"]):
        _fail('%sfield "callable": must be "module.path:function" (dotted Python identifiers, '
              "a colon, an identifier)" % prefix)
    if "kwargs" in t:
        if not isinstance(t["kwargs"], dict):
            _fail('%sfield "kwargs": must be an object' % prefix)

        def check(s, path):
            why = template_problem(s)
            if why:
                _fail("%s%s: %s" % (prefix, path, why))
        _walk_strings(t["kwargs"], "kwargs", check)
    if "map" not in t:
        _check_no_item(t, prefix)


def _check_map(m, prefix):
    """The "map" object (flowspec.c parse_map); `over` is checked against upstream later."""
    if not isinstance(m, dict):
        _fail('%sfield "map": must be an object like {"over": "UPSTREAM_TASK"}' % prefix)
    pfx = prefix + "map: "
    _collect(m, MAP_FIELDS, pfx)
    if not isinstance(m.get("over"), str):
        _fail('%sfield "over": must name an upstream task (a string)' % pfx)
    mp = m.get("max_parallel", 1)
    if not _is_integral(mp) or not 1 <= mp <= 2**31 - 1:
        _fail('%sfield "max_parallel": must be an integer >= 1' % pfx)
    af = m.get("allow_failures", 0)
    if not _is_integral(af) or not 0 <= af <= 2**31 - 1:
        _fail('%sfield "allow_failures": must be an integer >= 0' % pfx)


def _check_no_item(t, prefix):
    """{{ item }} outside a map task (flowspec.c check_no_item)."""
    where = None
    for i, e in enumerate(t.get("command", [])):
        if where is None and uses_item(e):
            where = "command[%d]" % i
    for k, v in t.get("env", {}).items():
        if where is None and uses_item(v):
            where = 'env "%s"' % k[:64]
    found = []
    if where is None and "kwargs" in t:
        _walk_strings(t["kwargs"], "kwargs", lambda s, path: found.append(path) if uses_item(s)
                      else None)
        where = found[0] if found else None
    if where is not None:
        _fail('%s%s: {{ item }} is only defined in a task with "map" (it is one element of the '
              "array mapped over)" % (prefix, where))


def _check_task_names(tasks):
    index = {}
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            _fail("task #%d: must be an object" % (i + 1))
        if "name" not in t:
            _fail('task #%d: missing required field "name"' % (i + 1))
        if not isinstance(t["name"], str):
            _fail('task #%d: field "name": must be a string' % (i + 1))
        why = name_problem(t["name"])
        if why:
            _fail('task #%d: field "name": %s' % (i + 1, why))
        if t["name"] in index:
            _fail('duplicate task name "%s" (tasks #%d and #%d)'
                  % (t["name"], index[t["name"]] + 1, i + 1))
        index[t["name"]] = i
        _check_task_body(t, 'task "%s": ' % t["name"])
    return index


def _check_upstream(tasks, index):
    for t in tasks:
        prefix = 'task "%s": ' % t["name"]
        seen = set()
        for u in t.get("upstream", []):
            if u == t["name"]:
                _fail('%supstream "%s": a task cannot depend on itself' % (prefix, u))
            if u not in index:
                _fail('%supstream "%s" does not exist' % (prefix, u[:128]))
            if u in seen:
                _fail('%supstream "%s" is listed twice' % (prefix, u))
            seen.add(u)
        if "map" in t and t["map"]["over"] not in seen:
            _fail('%smap: field "over": "%s" is not listed in "upstream" (a map runs over the '
                  "result of a direct upstream task)" % (prefix, t["map"]["over"][:128]))
        refs = []
        _refs(t.get("kwargs", {}), "kwargs", refs)
        for path, name in refs:
            if name not in seen:
                _fail('%s%s: {"upstream": "%s"} names a task that is not listed in "upstream"'
                      % (prefix, path, name[:64]))


def find_cycle(tasks):
    """A cycle as a list of names in run order (first == last), or None. Iterative DFS over
    upstream edges, like flowspec__check_acyclic."""
    index = {t["name"]: i for i, t in enumerate(tasks)}
    ups = [[index[u] for u in t.get("upstream", [])] for t in tasks]
    color = [0] * len(tasks)
    for root in range(len(tasks)):
        if color[root]:
            continue
        stack, nxt, depth = [root], [0], {root: 0}
        color[root] = 1
        while stack:
            top = stack[-1]
            if nxt[-1] == len(ups[top]):
                color[top] = 2
                stack.pop()
                nxt.pop()
                continue
            u = ups[top][nxt[-1]]
            nxt[-1] += 1
            if color[u] == 1:
                w = depth[u]
                path = [stack[w]] + [stack[k] for k in range(len(stack) - 1, w, -1)] + [stack[w]]
                return [tasks[i]["name"] for i in path]
            if color[u] == 0:
                color[u] = 1
                depth[u] = len(stack)
                stack.append(u)
                nxt.append(0)
    return None


def validate(spec):
    """Raises SpecError with the agent's message for the first problem of `spec` (a parsed
    flow_spec.json); returns None when the agent would accept it."""
    if _has_nul(spec):
        _fail("the spec contains a NUL character (\\u0000), which is not allowed")
    if not isinstance(spec, dict):
        _fail("the spec must be a JSON object")
    if "spec_version" not in spec:
        _fail('missing required field "spec_version"')
    v = spec["spec_version"]
    if not _is_num(v) or not float(v).is_integer():
        _fail('field "spec_version": must be an integer')
    if v != 1:
        _fail('field "spec_version": unsupported version %d (this dagy reads spec_version 1)' % v)
    _collect(spec, TOP_FIELDS, "")
    if "name" not in spec:
        _fail('missing required field "name"')
    if not isinstance(spec["name"], str):
        _fail('field "name": must be a string')
    why = name_problem(spec["name"], "flow name")
    if why:
        _fail('field "name": %s' % why)
    for f in ("version", "description"):
        if f in spec and not isinstance(spec[f], str):
            _fail('field "%s": must be a string' % f)
    mp = spec.get("max_parallel", 1)
    if not (_is_int(mp) or (_is_num(mp) and float(mp).is_integer())) or mp < 1 or mp > 2**31 - 1:
        _fail('field "max_parallel": must be an integer >= 1')
    if "tasks" not in spec:
        _fail('missing required field "tasks"')
    if "defaults" in spec:
        d = spec["defaults"]
        if not isinstance(d, dict):
            _fail('field "defaults": must be an object')
        _collect(d, SCHED_FIELDS, "defaults: ")
        _check_sched(d, "defaults: ")
    tasks = spec["tasks"]
    if not isinstance(tasks, list) or not tasks:
        _fail('field "tasks": must be a non-empty array')
    if len(tasks) > MAX_TASKS:
        _fail('field "tasks": too many tasks (%d; the limit is %d)' % (len(tasks), MAX_TASKS))
    index = _check_task_names(tasks)
    _check_upstream(tasks, index)
    cycle = find_cycle(tasks)
    if cycle:
        _fail("cycle: " + " -> ".join(cycle))


def _dot_escaped(s, limit=0):
    """s as a DOT string body: quotes and backslashes escaped, controls as spaces, cut after
    `limit` bytes (0: no limit) on a UTF-8 boundary with "..." (flowspec_graph.c)."""
    raw = s.encode("utf-8", "surrogatepass")
    cut = raw if not limit or len(raw) <= limit else raw[:limit]
    i = len(cut)
    while limit and len(raw) > limit and i < len(raw) and (raw[i] & 0xC0) == 0x80:
        i += 1
    cut = raw[:i]
    out = bytearray()
    for c in cut:
        if c in (0x22, 0x5C):
            out.append(0x5C)
        out.append(0x20 if c < 0x20 or c == 0x7F else c)
    text = out.decode("utf-8", "replace")
    return text + ("..." if i < len(raw) else "")


def _dot_label(t):
    label = _dot_escaped(t["name"])
    m = t.get("map")
    if m:
        label += "[*] over " + _dot_escaped(m["over"])
        if m.get("max_parallel"):
            label += "\\nmax_parallel %d" % m["max_parallel"]
        if m.get("allow_failures"):
            label += "\\nallow_failures %d" % m["allow_failures"]
    if "callable" in t:
        label += "\\n" + _dot_escaped(t["callable"], 40)
    elif t.get("command"):
        shown = " ".join(t["command"]).encode("utf-8", "surrogatepass")[:79].decode(
            "utf-8", "ignore")
        label += "\\n$ " + _dot_escaped(shown, 40)
    rule = t.get("trigger_rule", "all_success")
    if rule != "all_success":
        label += "\\ntrigger: " + rule
    return label


def to_dot(spec):
    """The DAG of a valid spec as Graphviz DOT text, in the agent's layout."""
    lines = ['digraph "%s" {' % _dot_escaped(spec.get("name", "")), "  rankdir=LR;",
             "  node [shape=box];"]
    for t in spec["tasks"]:
        style = ', style="rounded,bold", peripheries=2' if t.get("map") else ""
        lines.append('  "%s" [label="%s"%s];' % (_dot_escaped(t["name"]), _dot_label(t), style))
    for t in spec["tasks"]:
        over = t["map"]["over"] if t.get("map") else None
        for u in t.get("upstream", []):
            lines.append('  "%s" -> "%s"%s;' % (_dot_escaped(u), _dot_escaped(t["name"]),
                                                 ' [style=bold, label="map"]' if u == over else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"
