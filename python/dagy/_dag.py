"""dagy._dag - the authoring model: `@task` wraps a function, `DAG` is the context in which
calling a task records a node instead of running it, and `TaskRef` is what such a call returns
(a reference to the task's future result). Outside a DAG a task is its plain function, which is
how dagy's runner calls it when the flow runs. Standard library only."""

import functools
import inspect
import json
import math
import os
import threading

from . import spec as _spec

_local = threading.local()


class DagyError(Exception):
    """A flow that cannot be built; the message names the task and the argument."""


class TaskCallError(DagyError, TypeError):
    """A task called with arguments its function would not accept (as Python's TypeError)."""


def _stack():
    s = getattr(_local, "stack", None)
    if s is None:
        s = _local.stack = []
    return s


def current_dag():
    """The innermost DAG whose `with` block is running in this thread, or None."""
    s = _stack()
    return s[-1] if s else None


_collectors = []


class collect_dags:
    """Context manager recording every DAG whose `with` block ends while it is active (how
    `dagy build` finds the DAG a flow file defines)."""

    def __enter__(self):
        self.dags = []
        _collectors.append(self.dags)
        return self.dags

    def __exit__(self, *exc):
        _collectors.remove(self.dags)
        return False


def _check_options(opts, where):
    """Validates the scheduling options, trigger rule and env of a task (agent rules)."""
    for field in _spec.SCHED_FIELDS:
        v = opts.get(field)
        if v is not None:
            why = _spec.sched_problem(field, v)
            if why:
                raise DagyError('%s: %s=%r: %s' % (where, field, v, why))
    rule = opts.get("trigger_rule")
    if rule is not None and rule not in _spec.TRIGGER_RULES:
        raise DagyError("%s: trigger_rule=%r: must be one of %s"
                        % (where, rule, ", ".join(_spec.TRIGGER_RULES)))
    env = opts.get("env")
    if env is not None:
        if not isinstance(env, dict):
            raise DagyError("%s: env must be a dict of str to str, got %s"
                            % (where, type(env).__name__))
        for k, v in env.items():
            why = _spec.env_problem(k, v)
            if why:
                raise DagyError("%s: %s" % (where, why))
    desc = opts.get("description")
    if desc is not None and not isinstance(desc, str):
        raise DagyError("%s: description must be a string" % where)


_OPTION_NAMES = ("name", "description", "env", "trigger_rule", "upstream",
                 "executor") + _spec.SCHED_FIELDS

MAP_ITEM = {"map_item": True}  # what dagy_runner.py replaces with a map child's element


class unmapped:
    """Wraps a task's result passed whole to every child of `.map(...)` (only one argument is
    mapped over): `process.map(files, config=unmapped(load_config()))`."""

    __slots__ = ("ref",)

    def __init__(self, ref):
        if not isinstance(ref, TaskRef):
            raise DagyError("unmapped(%r): wraps the result of a task call" % (ref,))
        self.ref = ref


class Task:
    """A function made into a dagy task by @task. Called inside `with DAG(...)` it records a
    node and returns a TaskRef; called anywhere else it simply runs the function."""

    def __init__(self, fn, options):
        if not inspect.isfunction(fn):
            raise DagyError("@task applies to a function defined with def, not %r" % (fn,))
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise DagyError("@task %s: async functions are not supported (the runner calls the "
                            "function and stores what it returns)" % fn.__qualname__)
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.signature = inspect.signature(fn)
        for p in self.signature.parameters.values():
            if p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
                raise DagyError("@task %s: parameter %r is positional-only; dagy's runner passes "
                                "arguments by keyword" % (fn.__qualname__, p.name))
        unknown = set(options) - set(_OPTION_NAMES)
        if unknown:
            raise DagyError("@task %s: unknown option(s) %s (allowed: %s)"
                            % (fn.__qualname__, ", ".join(sorted(unknown)), ", ".join(_OPTION_NAMES)))
        name = options.get("name")
        if name is not None:
            why = _spec.name_problem(name)
            if why:
                raise DagyError("@task %s: name=: %s" % (fn.__qualname__, why))
        _check_options(options, "@task %s" % fn.__qualname__)
        executor = options.get("executor")
        if executor is not None and not isinstance(executor, dict):
            raise DagyError("@task %s: executor must be a dict such as {\"type\": \"ecs\", "
                            "\"profile\": \"xlarge\"}" % fn.__qualname__)
        self.options_ = dict(options)

    def __call__(self, *args, **kwargs):
        dag = current_dag()
        if dag is None:
            return self.fn(*args, **kwargs)
        return dag._add_call(self, args, kwargs)

    def map(self, *args, max_parallel=None, allow_failures=None, **kwargs):
        """Inside `with DAG(...)`: one run of the task per element of an upstream task's result
        (a JSON array), as a "map" task: `process.map(files, mode="fast", max_parallel=8)`. The
        one argument given a task's result directly is mapped over: each child gets one element
        there; wrap other results in `unmapped(...)` to pass them whole. Returns a reference to
        the map's result, the list of the children's results in order."""
        dag = current_dag()
        if dag is None:
            raise DagyError("%s.map(...) must be called inside `with DAG(...):`" % self.__name__)
        for opt, v, lo in (("max_parallel", max_parallel, 1), ("allow_failures", allow_failures, 0)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
                raise DagyError("%s.map(...): %s=%r: must be an integer >= %d"
                                % (self.__name__, opt, v, lo))
        mapopts = {k: v for k, v in (("max_parallel", max_parallel),
                                     ("allow_failures", allow_failures)) if v is not None}
        return dag._add_call(self, args, kwargs, mapopts)

    def options(self, **overrides):
        """A copy of this task with some options changed, for one call:
        `extract.options(name="extract_eu", retries=5)(region="eu")`."""
        merged = dict(self.options_)
        merged.update(overrides)
        t = Task(self.fn, merged)
        t._explicit_name = "name" in overrides
        return t

    def __rshift__(self, other):
        raise DagyError("%s >> ...: call the task first (%s(...) >> ...): only the result of a "
                        "call is a node of the DAG" % (self.__name__, self.__name__))

    __lshift__ = __rshift__

    def __repr__(self):
        return "<dagy task %s>" % self.fn.__qualname__


def task(fn=None, *, name=None, retries=None, retry_delay_seconds=None, retry_backoff=None,
         retry_max_delay_seconds=None, retry_jitter=None, timeout_seconds=None,
         trigger_rule=None, env=None, description=None, executor=None):
    """Makes a function a dagy task: `@task` or `@task(name=..., retries=3, ...)`. Options left
    as None come from the DAG's defaults (or the agent's built-in values). `executor` (a dict,
    e.g. {"type": "ecs", "profile": "xlarge"}) goes into the spec as it is; the agent checks
    it."""
    opts = {k: v for k, v in dict(
        name=name, retries=retries, retry_delay_seconds=retry_delay_seconds,
        retry_backoff=retry_backoff, retry_max_delay_seconds=retry_max_delay_seconds,
        retry_jitter=retry_jitter, timeout_seconds=timeout_seconds, trigger_rule=trigger_rule,
        env=env, description=description, executor=executor).items() if v is not None}
    if fn is not None:
        if not callable(fn) or isinstance(fn, str):
            raise DagyError("@task takes options by keyword: @task(name=%r)" % (fn,))
        return Task(fn, opts)
    return lambda f: Task(f, opts)


class TaskRef:
    """What calling a task inside a DAG returns: the task's result, to come. Pass it to other
    tasks (as an argument, also inside lists and dicts) or order tasks with `a >> b`."""

    __slots__ = ("dag", "name")

    def __init__(self, dag, name):
        self.dag = dag
        self.name = name

    def _targets(self, other, op):
        items = list(other) if isinstance(other, (list, tuple)) else [other]
        for x in items:
            if not isinstance(x, TaskRef):
                raise DagyError("%r %s %r: both sides must be task results (the value a task "
                                "call or command() returns)" % (self, op, x))
        return items

    def __rshift__(self, other):
        for x in self._targets(other, ">>"):
            self.dag._add_edge(self, x)
        return other

    def __lshift__(self, other):
        for x in self._targets(other, "<<"):
            self.dag._add_edge(x, self)
        return other

    def __rrshift__(self, other):  # [a, b] >> c
        for x in self._targets(other, ">>"):
            self.dag._add_edge(x, self)
        return self

    def __rlshift__(self, other):  # [a, b] << c
        for x in self._targets(other, "<<"):
            self.dag._add_edge(self, x)
        return self

    def _no_value(self, *_args, **_kw):
        raise DagyError("the result of task %r exists only when the flow runs: pass the reference "
                        "itself to a task (as an argument, or inside a list or dict), and let that "
                        "task use the value" % self.name)

    __bool__ = __iter__ = __getitem__ = __str__ = __format__ = __len__ = _no_value
    __add__ = __radd__ = __mod__ = __contains__ = _no_value

    def __repr__(self):
        return "<dagy result of task %r>" % self.name


class _Node:
    """One task of a DAG as recorded: what it runs, its kwargs (JSON-ready) and its upstreams."""

    def __init__(self, name, task, command, kwargs, options, map_=None):
        self.map = map_  # {"over": NAME, ...} for a map task, else None
        self.name = name
        self.task = task  # a Task, or None for a command
        self.command = command
        self.kwargs = kwargs
        self.options = options
        self.upstream = []  # names, in the order first seen


def _utf8(s):
    """True if s encodes as UTF-8 (no lone surrogates such as os.fsdecode leaves)."""
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _as_list(items):
    """None -> [], one item -> [item], a list or tuple -> a list (never tests truthiness: a
    TaskRef has none)."""
    if items is None:
        return []
    return list(items) if isinstance(items, (list, tuple)) else [items]


class DAG:
    """A flow: `with DAG("etl", version="1.0.0") as dag:` then call tasks. `defaults` sets the
    scheduling fields of every task, `metadata` becomes the artifact's metadata.json."""

    def __init__(self, name, version=None, *, max_parallel=None, defaults=None, description=None,
                 metadata=None):
        why = _spec.name_problem(name, "flow name")
        if why:
            raise DagyError("DAG(%r): %s" % (name, why))
        if version is not None and not isinstance(version, str):
            raise DagyError("DAG %s: version must be a string such as \"1.0.0\", got %r"
                            % (name, version))
        if max_parallel is not None and (not isinstance(max_parallel, int) or
                                         isinstance(max_parallel, bool) or max_parallel < 1):
            raise DagyError("DAG %s: max_parallel must be an integer >= 1, got %r"
                            % (name, max_parallel))
        if defaults is not None:
            if not isinstance(defaults, dict):
                raise DagyError("DAG %s: defaults must be a dict" % name)
            unknown = [k for k in defaults if k not in _spec.SCHED_FIELDS]
            if unknown:
                raise DagyError("DAG %s: defaults: unknown field %r (allowed: %s)"
                                % (name, unknown[0], ", ".join(_spec.SCHED_FIELDS)))
            _check_options(defaults, "DAG %s: defaults" % name)
        if description is not None and not isinstance(description, str):
            raise DagyError("DAG %s: description must be a string" % name)
        if metadata is not None:
            try:
                json.dumps(metadata, allow_nan=False)
            except (TypeError, ValueError) as e:
                raise DagyError("DAG %s: metadata is not JSON-serialisable: %s" % (name, e))
        self.name = name
        self.version = version
        self.max_parallel = max_parallel
        self.defaults = dict(defaults) if defaults else None
        self.description = description
        self.metadata = metadata
        self._nodes = {}  # name -> _Node, in creation order

    def __enter__(self):
        _stack().append(self)
        return self

    def __exit__(self, exc_type, *exc):
        s = _stack()
        if s and s[-1] is self:
            s.pop()
        if exc_type is None:
            for c in _collectors:
                c.append(self)
        return False

    @property
    def task_names(self):
        """Names of the recorded tasks, in the order they were created."""
        return list(self._nodes)

    def upstream_of(self, name):
        """The upstream task names of task `name`."""
        return list(self._nodes[name].upstream)

    # ---- recording ----

    def _unique_name(self, base, explicit, where):
        why = _spec.name_problem(base)
        if why:
            raise DagyError("%s: %s (name it with @task(name=...) or .options(name=...))"
                            % (where, why))
        if base not in self._nodes:
            return base
        if explicit:
            raise DagyError("%s: duplicate task name %r in DAG %s" % (where, base, self.name))
        i = 2
        while "%s_%d" % (base, i) in self._nodes:
            i += 1
        name = "%s_%d" % (base, i)
        why = _spec.name_problem(name)
        if why:
            raise DagyError("%s: %s" % (where, why))
        return name

    def _encode(self, value, where, refs, depth=0):
        """The JSON form of one argument value; TaskRefs become {"upstream": NAME} (recorded in
        refs). Raises DagyError naming `where` for anything JSON cannot carry."""
        if depth > _spec.MAX_DEPTH:
            raise DagyError("%s: nested more than %d levels deep" % (where, _spec.MAX_DEPTH))
        if isinstance(value, unmapped):
            value = value.ref
        if isinstance(value, TaskRef):
            if value.dag is not self:
                raise DagyError("%s: refers to task %r of another DAG (%s)"
                                % (where, value.name, value.dag.name))
            if value.name not in refs:
                refs.append(value.name)
            return {"upstream": value.name}
        if isinstance(value, Task):
            raise DagyError("%s: is the task %s itself; pass its result: %s(...)"
                            % (where, value.__name__, value.__name__))
        if isinstance(value, str):
            if not _utf8(value):
                raise DagyError("%s: %r is not valid UTF-8 text (a flow spec is UTF-8 JSON)"
                                % (where, value[:64]))
            if "\0" in value:
                raise DagyError("%s: contains a NUL character, which a flow spec cannot carry"
                                % where)
            why = _spec.template_problem(value)
            if why:
                raise DagyError("%s: %s" % (where, why))
            return value
        if value is None or isinstance(value, (bool, int)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise DagyError("%s: %r is not a JSON number" % (where, value))
            return value
        if isinstance(value, (list, tuple)):
            return [self._encode(v, "%s[%d]" % (where, i), refs, depth + 1)
                    for i, v in enumerate(value)]
        if isinstance(value, dict):
            return self._encode_dict(value, where, refs, depth)
        raise DagyError("%s: a %s is not JSON-serialisable (pass str, int, float, bool, None, "
                        "lists and dicts of them, or a task's result)"
                        % (where, type(value).__name__))

    def _encode_dict(self, value, where, refs, depth):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise DagyError("%s: key %r: JSON object keys must be strings" % (where, k))
            if "\0" in k or not _utf8(k):
                raise DagyError("%s: key %r contains a NUL character or is not valid UTF-8"
                                % (where, k))
            out[k] = self._encode(v, "%s.%s" % (where, k), refs, depth + 1)
        if len(out) == 1 and out.get("map_item") is True:
            raise DagyError("%s: a literal {\"map_item\": true} would be read as a map child's "
                            "element; use Task.map(...) instead" % where)
        if len(out) == 1 and isinstance(out.get("upstream"), str) and not isinstance(
                value.get("upstream"), TaskRef):
            raise DagyError("%s: a literal {\"upstream\": %r} would be read as a reference to that "
                            "task's result; pass the task's result itself instead"
                            % (where, out["upstream"]))
        return out

    def _resolve_upstream(self, items, where):
        """Names of explicit upstream tasks (TaskRefs of this DAG, or names already recorded)."""
        if items is None:
            return []
        if isinstance(items, (TaskRef, str)):
            items = [items]
        names = []
        for x in items:
            if isinstance(x, TaskRef):
                if x.dag is not self:
                    raise DagyError("%s: upstream %r belongs to another DAG (%s)"
                                    % (where, x.name, x.dag.name))
                names.append(x.name)
            elif isinstance(x, str) and x in self._nodes:
                names.append(x)
            else:
                raise DagyError("%s: upstream=%r: must be results of earlier task calls (or the "
                                "names of tasks already in the DAG)" % (where, x))
        return names

    def _bind(self, t, args, kwargs, where):
        """The keyword arguments the runner will pass, bound like Python would bind the call."""
        try:
            bound = t.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TaskCallError("%s: %s (signature: %s%s)" % (where, e, t.__name__, t.signature))
        out = {}
        for pname, value in bound.arguments.items():
            p = t.signature.parameters[pname]
            if p.kind is p.VAR_POSITIONAL:
                if value:
                    raise TaskCallError("%s: *%s: the runner calls tasks with keyword arguments "
                                        "only; give the function named parameters" % (where, pname))
            elif p.kind is p.POSITIONAL_ONLY:
                raise TaskCallError("%s: %s is positional-only; the runner passes arguments by "
                                    "keyword" % (where, pname))
            elif p.kind is p.VAR_KEYWORD:
                out.update(value)
            else:
                out[pname] = value
        return out

    def _mapped_argument(self, values, where):
        """The one argument of a .map(...) call given a task's result directly (the one mapped
        over): (parameter, TaskRef)."""
        direct = [(k, v) for k, v in values.items() if isinstance(v, TaskRef)]
        if len(direct) != 1:
            raise DagyError("%s: .map(...) maps over exactly one argument given a task's result "
                            "directly (found %s); wrap the others in unmapped(...)"
                            % (where, ", ".join(k for k, _ in direct) or "none"))
        return direct[0]

    def _add_call(self, t, args, kwargs, mapopts=None):
        opts = t.options_
        base = opts.get("name") or t.__name__
        explicit = getattr(t, "_explicit_name", False)
        where = "task %s" % base
        upstream = _as_list(opts.get("upstream"))
        if "upstream" in kwargs and "upstream" not in t.signature.parameters:
            upstream += _as_list(kwargs.pop("upstream"))
        values = self._bind(t, args, kwargs, where)
        name = self._unique_name(base, explicit, where)
        where = "task %s" % name
        refs, map_ = [], None
        if mapopts is not None:
            param, over = self._mapped_argument(values, where)
            self._encode(over, "%s: argument %r" % (where, param), refs)
            map_ = dict({"over": over.name}, **mapopts)
            values = dict(values)
            del values[param]
        encoded = {k: self._encode(v, "%s: argument %r" % (where, k), refs)
                   for k, v in values.items()}
        if map_ is not None:
            encoded[param] = dict(MAP_ITEM)
        node_opts = {k: v for k, v in opts.items() if k not in ("name", "upstream")}
        return self._add_node(name, t, None, encoded, node_opts,
                              refs + self._resolve_upstream(upstream, where), map_)

    def _add_node(self, name, t, command, kwargs, options, upstream, map_=None):
        node = _Node(name, t, command, kwargs, options, map_)
        for u in upstream:
            if u not in node.upstream:
                node.upstream.append(u)
        self._nodes[name] = node
        return TaskRef(self, name)

    def _reaches(self, start, goal):
        """The upstream path start -> ... -> goal (following upstream edges), or None."""
        seen, todo = {start: None}, [start]
        while todo:
            n = todo.pop()
            if n == goal:
                path = [n]
                while seen[path[-1]] is not None:
                    path.append(seen[path[-1]])
                return path
            for u in self._nodes[n].upstream:
                if u not in seen:
                    seen[u] = n
                    todo.append(u)
        return None

    def _add_edge(self, up, down):
        """up >> down: down waits for up. Refused when up already depends on down, so a DAG
        can never hold a cycle."""
        if up.dag is not down.dag:
            raise DagyError("%s >> %s: the tasks belong to different DAGs" % (up.name, down.name))
        if up.name == down.name:
            raise DagyError("%s >> %s: a task cannot depend on itself" % (up.name, down.name))
        path = self._reaches(up.name, down.name)
        if path:
            raise DagyError("%s >> %s would make a cycle: %s" % (
                up.name, down.name, " -> ".join(path + [path[0]])))
        node = self._nodes[down.name]
        if up.name not in node.upstream:
            node.upstream.append(up.name)

    def command(self, name, argv, *, upstream=None, env=None, trigger_rule=None,
                description=None, map_over=None, map_max_parallel=None, map_allow_failures=None,
                **sched):
        """Records a command task (argv run directly, no shell) and returns its result's
        reference. See dagy.command."""
        where = "command %s" % name
        map_ = self._command_map(where, map_over, map_max_parallel, map_allow_failures)
        unknown = [k for k in sched if k not in _spec.SCHED_FIELDS]
        if unknown:
            raise DagyError("%s: unknown option %r (allowed: upstream, env, trigger_rule, "
                            "description, %s)" % (where, unknown[0], ", ".join(_spec.SCHED_FIELDS)))
        if not isinstance(argv, (list, tuple)) or not argv:
            raise DagyError("%s: argv must be a non-empty list of strings (for a shell: "
                            "[\"sh\", \"-c\", \"...\"])" % where)
        for i, a in enumerate(argv):
            if isinstance(a, TaskRef):
                raise DagyError("%s: argv[%d]: a task's result cannot go into a command line; add "
                                "upstream=[...] and read it from $DAGY_TASK_INPUTS" % (where, i))
            if not isinstance(a, str):
                raise DagyError("%s: argv[%d]: must be a string, got %s"
                                % (where, i, type(a).__name__))
            if i == 0 and a == "":
                raise DagyError("%s: argv[0]: the program name must not be empty" % where)
            why = _spec.template_problem(a) or ("contains a NUL character" if "\0" in a else None)
            if why:
                raise DagyError("%s: argv[%d]: %s" % (where, i, why))
        opts = dict(sched, env=env, trigger_rule=trigger_rule, description=description)
        opts = {k: v for k, v in opts.items() if v is not None}
        _check_options(opts, where)
        name = self._unique_name(name, True, where) if isinstance(name, str) else None
        if name is None:
            raise DagyError("command(%r, ...): the name must be a string" % (name,))
        ups = self._resolve_upstream(upstream, where)
        if map_ is not None and map_["over"] not in ups:
            ups.insert(0, map_["over"])
        return self._add_node(name, None, list(argv), None, opts, ups, map_)

    def _command_map(self, where, over, max_parallel, allow_failures):
        """The "map" of a command task (map_over=, map_max_parallel=, map_allow_failures=)."""
        if over is None:
            if max_parallel is not None or allow_failures is not None:
                raise DagyError("%s: map_max_parallel and map_allow_failures need map_over=" % where)
            return None
        if not isinstance(over, TaskRef) or over.dag is not self:
            raise DagyError("%s: map_over=%r: must be the result of an earlier task call of this "
                            "DAG" % (where, over))
        m = {"over": over.name}
        for key, v, lo in (("max_parallel", max_parallel, 1), ("allow_failures", allow_failures, 0)):
            if v is not None:
                if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                    raise DagyError("%s: map_%s=%r: must be an integer >= %d" % (where, key, v, lo))
                m[key] = v
        return m

    # ---- output ----

    def to_spec(self, root=None, name=None, version=None):
        """The flow_spec.json object. Callable paths are derived from each function's file
        relative to `root` (the artifact's root), or from its module name without a root."""
        tasks = []
        for node in self._nodes.values():
            t = {"name": node.name}
            if node.options.get("description") is not None:
                t["description"] = node.options["description"]
            if node.task is None:
                t["command"] = node.command
            else:
                t["callable"] = callable_path(node.task, node.name, root)
                if node.kwargs:
                    t["kwargs"] = node.kwargs
            if node.options.get("env"):
                t["env"] = dict(node.options["env"])
            if node.upstream:
                t["upstream"] = list(node.upstream)
            if node.options.get("trigger_rule") is not None:
                t["trigger_rule"] = node.options["trigger_rule"]
            if node.map is not None:
                t["map"] = dict(node.map)
            if node.options.get("executor") is not None:
                t["executor"] = node.options["executor"]
            for f in _spec.SCHED_FIELDS:
                if node.options.get(f) is not None:
                    t[f] = node.options[f]
            tasks.append(t)
        if not tasks:
            raise DagyError("DAG %s has no tasks" % self.name)
        out = {"spec_version": 1, "name": name or self.name}
        if (version or self.version) is not None:
            out["version"] = version or self.version
        if self.description is not None:
            out["description"] = self.description
        if self.max_parallel is not None:
            out["max_parallel"] = self.max_parallel
        if self.defaults:
            out["defaults"] = dict(self.defaults)
        out["tasks"] = tasks
        return out

    def to_dot(self, root=None):
        """The DAG as Graphviz DOT, as `dagy-agent --graph` prints it."""
        return _spec.to_dot(self.to_spec(root))

    def __repr__(self):
        return "<dagy DAG %s: %d tasks>" % (self.name, len(self._nodes))


def command(name, argv, *, upstream=None, env=None, trigger_rule=None, description=None,
            map_over=None, map_max_parallel=None, map_allow_failures=None, **sched):
    """A command task in the current DAG: `command("report", ["python3", "-m", "flows.report"],
    upstream=[load])`. argv runs directly (no shell); its elements may hold templates. Returns
    a reference usable in `>>`, `upstream=` and as a task argument (the command's result is what
    it writes to $DAGY_TASK_OUTPUT). With map_over=RESULT it is a map task: it runs once per
    element of that result, each run seeing its element as {{ item }} and $DAGY_MAP_ITEM."""
    dag = current_dag()
    if dag is None:
        raise DagyError("command(%r, ...) must be called inside `with DAG(...):`" % (name,))
    return dag.command(name, argv, upstream=upstream, env=env, trigger_rule=trigger_rule,
                       description=description, map_over=map_over,
                       map_max_parallel=map_max_parallel, map_allow_failures=map_allow_failures,
                       **sched)


def module_for_file(path, root):
    """The importable module name of file `path` under directory `root` (flows/etl.py ->
    flows.etl, pkg/__init__.py -> pkg), or None when path is not under root. Raises DagyError
    when a part of the path is not a Python identifier."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    rel = os.path.relpath(real, base)
    if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir:
        return None
    stem, ext = os.path.splitext(rel)
    if ext != ".py":
        raise DagyError("%s: a task's module must be a .py file" % rel)
    parts = stem.split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    bad = [p for p in parts if not _spec.is_identifier(p)]
    if not parts or bad:
        raise DagyError("%s is not importable as a Python module under %s: %r is not an identifier "
                        "(use letters, digits and _ in directory and file names)"
                        % (rel, base, bad[0] if bad else rel))
    return ".".join(parts)


def callable_path(t, task_name, root=None):
    """"module.path:function" of a task: the module from the function's file relative to root
    (so the runner imports exactly what was written), else from its __module__."""
    fn = t.fn
    where = "task %s" % task_name
    if fn.__qualname__ != fn.__name__ or not _spec.is_identifier(fn.__name__):
        raise DagyError("%s: %s must be a function defined at the top level of its module (the "
                        "runner imports module:function)" % (where, fn.__qualname__))
    module = None
    if root is not None:
        src = inspect.getsourcefile(fn) or fn.__code__.co_filename
        module = module_for_file(src, root) if src and os.path.exists(src) else None
    if module is None:
        module = fn.__module__
        if module == "__main__" or not all(_spec.is_identifier(p) for p in module.split(".")):
            raise DagyError("%s: cannot tell the module of %s (%r); build the flow with `dagy "
                            "build FLOW.py`, which imports it by its path under the root"
                            % (where, fn.__name__, module))
    return "%s:%s" % (module, fn.__name__)
