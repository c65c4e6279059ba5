/* flowspec.c - parses and validates flow_spec.json (spec_version 1) into a flowspec: every field
 * is type- and range-checked, unknown fields are rejected, defaults are applied, upstream names
 * are resolved through a hash table and the graph is checked for cycles. The first problem found
 * is reported as one message naming the task and the field. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "proto/flowspec_int.h"
#include "proto/jsonnul.h"
#include "proto/names.h"
#include "proto/util.h"

/* Upper bound for every duration (about 31 years): keeps seconds -> milliseconds conversions in
 * the scheduler far from overflow. */
#define MAX_SECONDS 1e9

static const char *const top_fields[] = {"spec_version", "name",     "version", "description",
                                         "max_parallel", "defaults", "tasks"};
enum { F_SPEC_VERSION, F_NAME, F_VERSION, F_DESCRIPTION, F_MAX_PARALLEL, F_DEFAULTS, F_TASKS };

/* The scheduling fields, allowed both in "defaults" and in a task. */
static const char *const sched_fields[] = {"retries",       "retry_delay_seconds",
                                           "retry_backoff", "retry_max_delay_seconds",
                                           "retry_jitter",  "timeout_seconds"};
enum { S_RETRIES, S_DELAY, S_BACKOFF, S_MAX_DELAY, S_JITTER, S_TIMEOUT, S_COUNT };

/* Task fields: the scheduling fields come last, at T_SCHED + S_*. */
static const char *const task_fields[] = {"name",          "description",
                                          "command",       "callable",
                                          "kwargs",        "env",
                                          "upstream",      "trigger_rule",
                                          "executor",      "map",
                                          "retries",       "retry_delay_seconds",
                                          "retry_backoff", "retry_max_delay_seconds",
                                          "retry_jitter",  "timeout_seconds"};
enum {
    T_NAME,
    T_DESCRIPTION,
    T_COMMAND,
    T_CALLABLE,
    T_KWARGS,
    T_ENV,
    T_UPSTREAM,
    T_TRIGGER,
    T_EXECUTOR,
    T_MAP,
    T_SCHED
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(COUNT(task_fields) == T_SCHED + S_COUNT, "task_fields ends with sched_fields");

static const char *const trigger_names[] = {"all_success", "all_done", "one_failed", "none_failed"};

/* Parser state shared by the steps below. */
typedef struct {
    flowspec *s;
    char *err;
    const cJSON **up_json; /* per task: its "upstream" array (or NULL), resolved after all names */
    sched_task_def defaults;
} pctx;

/* Returns the end of the identifier [A-Za-z_][A-Za-z0-9_]* at p, or NULL if there is none. */
static const char *ident_end(const char *p)
{
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_'))
        return NULL;
    for (p++; (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_';
         p++)
        ;
    return p;
}

/* "pkg.module:function": dotted identifiers, a colon, an identifier. */
static bool valid_callable(const char *s)
{
    const char *p = ident_end(s);
    while (p && *p == '.')
        p = ident_end(p + 1);
    if (!p || *p != ':')
        return false;
    p = ident_end(p + 1);
    return p && *p == '\0';
}

static bool json_int(const cJSON *v, double lo, double hi, int *out)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return false;
    if (v->valuedouble < lo || v->valuedouble > hi)
        return false;
    *out = (int)v->valuedouble;
    return true;
}

static bool json_num(const cJSON *v, double lo, double hi, bool lo_open, double *out)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return false;
    double d = v->valuedouble;
    if (d < lo || (lo_open && d == lo) || d > hi)
        return false;
    *out = d;
    return true;
}

/* Applies one scheduling field to d. Returns NULL, or why the value is invalid. */
static const char *apply_sched_field(int which, const cJSON *v, sched_task_def *d)
{
    switch (which) {
    case S_RETRIES:
        return json_int(v, 0, 100, &d->retries) ? NULL : "must be an integer between 0 and 100";
    case S_DELAY:
        return json_num(v, 0, MAX_SECONDS, false, &d->retry_delay_seconds)
                   ? NULL
                   : "must be a number of seconds >= 0 (at most 1e9)";
    case S_BACKOFF:
        return json_num(v, 1, HUGE_VAL, false, &d->retry_backoff) ? NULL : "must be a number >= 1";
    case S_MAX_DELAY:
        return json_num(v, 0, MAX_SECONDS, false, &d->retry_max_delay_seconds)
                   ? NULL
                   : "must be a number of seconds >= 0 (at most 1e9)";
    case S_JITTER:
        d->retry_jitter = cJSON_IsTrue(v);
        return cJSON_IsBool(v) ? NULL : "must be true or false";
    case S_TIMEOUT:
        return json_num(v, 0, MAX_SECONDS, true, &d->timeout_seconds)
                   ? NULL
                   : "must be a number of seconds > 0 (at most 1e9)";
    }
    return "unknown field";
}

/* Maps each member of obj to its slot in found[] (same order as names[]); rejects unknown and
 * repeated keys. prefix starts the message ("", "defaults: ", "task \"x\": "). */
static int collect(const cJSON *obj, const char *const *names, size_t n, const cJSON **found,
                   const char *prefix, char *err)
{
    const cJSON *m;
    memset(found, 0, n * sizeof(*found));
    cJSON_ArrayForEach(m, obj)
    {
        size_t i = 0;
        while (i < n && strcmp(names[i], m->string) != 0)
            i++;
        if (i < n && found[i])
            return flowspec__fail(err, "%sfield \"%s\" appears twice", prefix, names[i]);
        if (i < n) {
            found[i] = m;
            continue;
        }
        char allowed[400];
        size_t len = 0;
        for (size_t k = 0; k < n; k++)
            len += (size_t)snprintf(allowed + len, sizeof(allowed) - len, "%s%s", k ? ", " : "",
                                    names[k]);
        return flowspec__fail(err, "%sunknown field \"%.64s\" (allowed: %s)", prefix, m->string,
                              allowed);
    }
    return 0;
}

/* Applies every scheduling field present in found[0..S_COUNT) to d. */
static int apply_sched_fields(const cJSON **found, sched_task_def *d, const char *prefix, char *err)
{
    for (int i = 0; i < S_COUNT; i++) {
        const char *why = found[i] ? apply_sched_field(i, found[i], d) : NULL;
        if (why)
            return flowspec__fail(err, "%sfield \"%s\": %s", prefix, sched_fields[i], why);
    }
    return 0;
}

static int parse_defaults(pctx *c, const cJSON *v)
{
    const cJSON *found[S_COUNT];
    sched_task_def *d = &c->defaults;
    *d = (sched_task_def){.trigger = SCHED_ALL_SUCCESS,
                          .retries = 0,
                          .retry_delay_seconds = 5,
                          .retry_backoff = 2.0,
                          .retry_max_delay_seconds = 300,
                          .retry_jitter = true,
                          .timeout_seconds = 0};
    if (!v)
        return 0;
    if (!cJSON_IsObject(v))
        return flowspec__fail(c->err, "field \"defaults\": must be an object");
    int rc = collect(v, sched_fields, S_COUNT, found, "defaults: ", c->err);
    return rc ? rc : apply_sched_fields(found, d, "defaults: ", c->err);
}

/* Copies an optional string field; *dst stays NULL when absent. */
static int opt_string(const cJSON *v, char **dst, const char *prefix, const char *field, char *err)
{
    if (!v)
        return 0;
    if (!cJSON_IsString(v))
        return flowspec__fail(err, "%sfield \"%s\": must be a string", prefix, field);
    *dst = strdup(v->valuestring);
    return *dst ? 0 : -ENOMEM;
}

static int parse_command(flowspec_task *t, const cJSON *v, const char *prefix, char *err)
{
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    if (n == 0)
        return flowspec__fail(err, "%sfield \"command\": must be a non-empty array of strings",
                              prefix);
    if (!(t->command = calloc((size_t)n + 1, sizeof(char *))))
        return -ENOMEM;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        size_t i = t->command_len;
        char where[200];
        snprintf(where, sizeof(where), "%scommand[%zu]", prefix, i);
        if (!cJSON_IsString(e))
            return flowspec__fail(err, "%s: must be a string", where);
        if (i == 0 && e->valuestring[0] == '\0')
            return flowspec__fail(err, "%s: the program name must not be empty", where);
        int rc = flowspec_check_templates(e->valuestring, where, err);
        if (rc < 0)
            return rc;
        if (!(t->command[i] = strdup(e->valuestring)))
            return -ENOMEM;
        t->command_len++;
    }
    return 0;
}

/* Checks one env member and returns its "NAME=VALUE" copy through *out. */
static int env_entry(const cJSON *e, flowspec__map *seen, size_t i, const char *prefix, char *err,
                     char **out)
{
    const char *name = e->string, *end = ident_end(name);
    size_t prev;
    if (!end || *end)
        return flowspec__fail(err,
                              "%senv \"%.64s\": invalid variable name (must match "
                              "[A-Za-z_][A-Za-z0-9_]*)",
                              prefix, name);
    if (strncmp(name, "DAGY_", 5) == 0)
        return flowspec__fail(err, "%senv \"%.64s\": names starting with DAGY_ are reserved",
                              prefix, name);
    if (flowspec__map_put(seen, name, i, &prev))
        return flowspec__fail(err, "%senv \"%.64s\" is set twice", prefix, name);
    char where[300];
    snprintf(where, sizeof(where), "%senv \"%.64s\"", prefix, name);
    if (!cJSON_IsString(e))
        return flowspec__fail(err, "%s: value must be a string", where);
    int rc = flowspec_check_templates(e->valuestring, where, err);
    if (rc < 0)
        return rc;
    if (!(*out = malloc(strlen(name) + strlen(e->valuestring) + 2)))
        return -ENOMEM;
    sprintf(*out, "%s=%s", name, e->valuestring);
    return 0;
}

static int parse_env(flowspec_task *t, const cJSON *v, const char *prefix, char *err)
{
    if (!cJSON_IsObject(v))
        return flowspec__fail(err, "%sfield \"env\": must be an object of strings", prefix);
    size_t n = (size_t)cJSON_GetArraySize(v);
    flowspec__map seen;
    if (!(t->env = calloc(n + 1, sizeof(char *))) || flowspec__map_init(&seen, n) < 0)
        return -ENOMEM;
    int rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        if ((rc = env_entry(e, &seen, t->env_len, prefix, err, &t->env[t->env_len])) < 0)
            break;
        t->env_len++;
    }
    flowspec__map_free(&seen);
    return rc;
}

/* Context of the kwargs walkers: the message prefix and, when resolving, the task's upstreams. */
typedef struct {
    const char *prefix;
    char *err;
    const flowspec__map *names;
    const size_t *mark; /* mark[task] == stamp: task is an upstream of this one */
    size_t stamp;
} kw_ctx;

/* Checks that a kwargs string holds well-formed templates. */
static int check_kw(cJSON *str, const char *path, void *ud)
{
    kw_ctx *c = ud;
    char where[400];
    snprintf(where, sizeof(where), "%s%s", c->prefix, path);
    return flowspec_check_templates(str->valuestring, where, c->err);
}

static int parse_kwargs(flowspec_task *t, cJSON *task_obj, cJSON *v, const char *prefix, char *err)
{
    if (!cJSON_IsObject(v))
        return flowspec__fail(err, "%sfield \"kwargs\": must be an object", prefix);
    kw_ctx c = {.prefix = prefix, .err = err};
    int rc = flowspec__walk_kwargs(v, check_kw, &c);
    if (rc < 0)
        return rc;
    /* Take the subtree over rather than copy it: the parsed document is deleted afterwards. */
    t->kwargs = cJSON_DetachItemViaPointer(task_obj, v);
    return 0;
}

static int parse_upstream(pctx *c, size_t i, const cJSON *v, const char *prefix)
{
    if (!cJSON_IsArray(v))
        return flowspec__fail(c->err, "%sfield \"upstream\": must be an array of task names",
                              prefix);
    size_t k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        if (!cJSON_IsString(e))
            return flowspec__fail(c->err, "%supstream[%zu]: must be a task name (a string)", prefix,
                                  k);
        k++;
    }
    if (k && !(c->s->tasks[i].upstream = calloc(k, sizeof(size_t))))
        return -ENOMEM;
    c->up_json[i] = v;
    return 0;
}

static int parse_trigger(sched_trigger *out, const cJSON *v, const char *prefix, char *err)
{
    for (size_t i = 0; cJSON_IsString(v) && i < COUNT(trigger_names); i++)
        if (strcmp(v->valuestring, trigger_names[i]) == 0) {
            *out = (sched_trigger)i;
            return 0;
        }
    return flowspec__fail(err,
                          "%sfield \"trigger_rule\": must be one of all_success, all_done, "
                          "one_failed, none_failed",
                          prefix);
}

/* "map": {"over": NAME, "max_parallel": N >= 1, "allow_failures": K >= 0}; `over` is resolved
 * (and checked to be an upstream task) in resolve_task. */
static int parse_map(flowspec_task *t, const cJSON *v, const char *prefix, char *err)
{
    static const char *const fields[] = {"over", "max_parallel", "allow_failures"};
    const cJSON *f[COUNT(fields)];
    char pfx[200];
    if (!cJSON_IsObject(v))
        return flowspec__fail(err,
                              "%sfield \"map\": must be an object like {\"over\": "
                              "\"UPSTREAM_TASK\"}",
                              prefix);
    snprintf(pfx, sizeof pfx, "%smap: ", prefix);
    int rc = collect(v, fields, COUNT(fields), f, pfx, err);
    if (rc < 0)
        return rc;
    if (!f[0] || !cJSON_IsString(f[0]))
        return flowspec__fail(err, "%sfield \"over\": must name an upstream task (a string)", pfx);
    if (!(t->map = calloc(1, sizeof *t->map)) || !(t->map->over = strdup(f[0]->valuestring)))
        return -ENOMEM;
    if (f[1] && !json_int(f[1], 1, INT_MAX, &t->map->max_parallel))
        return flowspec__fail(err, "%sfield \"max_parallel\": must be an integer >= 1", pfx);
    if (f[2] && !json_int(f[2], 0, INT_MAX, &t->map->allow_failures))
        return flowspec__fail(err, "%sfield \"allow_failures\": must be an integer >= 0", pfx);
    return 0;
}

/* {{ item }} is an element of a map task's array: anywhere else it is an error. */
static int check_no_item(const flowspec_task *t, const char *prefix, char *err)
{
    char where[300];
    for (size_t i = 0; i < t->command_len; i++)
        if (flowspec__uses_item(t->command[i])) {
            snprintf(where, sizeof where, "command[%zu]", i);
            goto fail;
        }
    for (size_t i = 0; i < t->env_len; i++)
        if (flowspec__uses_item(strchr(t->env[i], '=') + 1)) {
            snprintf(where, sizeof where, "env \"%.*s\"", (int)(strchr(t->env[i], '=') - t->env[i]),
                     t->env[i]);
            goto fail;
        }
    if (t->kwargs && flowspec__walk_kwargs(t->kwargs, flowspec__kw_uses_item, where) > 0)
        goto fail;
    return 0;
fail:
    return flowspec__fail(err,
                          "%s%s: {{ item }} is only defined in a task with \"map\" (it is one "
                          "element of the array mapped over)",
                          prefix, where);
}

/* Validates the task's name (reported by position, since the name is what is wrong) and
 * registers it in the name table. */
static int task_name(pctx *c, size_t i, const cJSON *t)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, "name");
    size_t prev;
    if (!v)
        return flowspec__fail(c->err, "task #%zu: missing required field \"name\"", i + 1);
    if (!cJSON_IsString(v))
        return flowspec__fail(c->err, "task #%zu: field \"name\": must be a string", i + 1);
    char why[FLOWSPEC_ERR_MAX];
    if (!proto_name_check(PROTO_NAME_TASK, v->valuestring, why, sizeof why))
        return flowspec__fail(c->err, "task #%zu: field \"name\": %s", i + 1, why);
    if (!(c->s->tasks[i].name = strdup(v->valuestring)))
        return -ENOMEM;
    if (flowspec__map_put(c->s->index, c->s->tasks[i].name, i, &prev))
        return flowspec__fail(c->err, "duplicate task name \"%s\" (tasks #%zu and #%zu)",
                              v->valuestring, prev + 1, i + 1);
    return 0;
}

/* Parses one task object (tasks[i]) except for resolving its upstream names. */
static int parse_task(pctx *c, size_t i, cJSON *t)
{
    flowspec_task *task = &c->s->tasks[i];
    const cJSON *f[COUNT(task_fields)];
    char prefix[160];
    int rc;
    if (!cJSON_IsObject(t))
        return flowspec__fail(c->err, "task #%zu: must be an object", i + 1);
    if ((rc = task_name(c, i, t)) < 0)
        return rc;
    snprintf(prefix, sizeof(prefix), "task \"%s\": ", task->name);
    if ((rc = collect(t, task_fields, COUNT(task_fields), f, prefix, c->err)) < 0)
        return rc;
    if (!f[T_COMMAND] == !f[T_CALLABLE])
        return flowspec__fail(c->err, "%smust have exactly one of \"command\" or \"callable\"",
                              prefix);
    if (f[T_KWARGS] && !f[T_CALLABLE])
        return flowspec__fail(c->err, "%sfield \"kwargs\" is only allowed with \"callable\"",
                              prefix);
    task->def = c->defaults;
    task->def.name = task->name;
    if ((rc = opt_string(f[T_DESCRIPTION], &task->description, prefix, "description", c->err)) ||
        (f[T_COMMAND] && (rc = parse_command(task, f[T_COMMAND], prefix, c->err))) ||
        (f[T_ENV] && (rc = parse_env(task, f[T_ENV], prefix, c->err))) ||
        (f[T_UPSTREAM] && (rc = parse_upstream(c, i, f[T_UPSTREAM], prefix))) ||
        (f[T_TRIGGER] && (rc = parse_trigger(&task->def.trigger, f[T_TRIGGER], prefix, c->err))) ||
        (f[T_EXECUTOR] &&
         (rc = flowspec__parse_executor(f[T_EXECUTOR], &task->executor, prefix, c->err))) ||
        (f[T_MAP] && (rc = parse_map(task, f[T_MAP], prefix, c->err))) ||
        (rc = apply_sched_fields(f + T_SCHED, &task->def, prefix, c->err)))
        return rc;
    if (f[T_CALLABLE]) {
        const cJSON *v = f[T_CALLABLE];
        if (!cJSON_IsString(v) || !valid_callable(v->valuestring))
            return flowspec__fail(c->err,
                                  "%sfield \"callable\": must be \"module.path:function\" "
                                  "(dotted Python identifiers, a colon, an identifier)",
                                  prefix);
        if (!(task->callable = strdup(v->valuestring)))
            return -ENOMEM;
    }
    if (f[T_KWARGS] && (rc = parse_kwargs(task, t, (cJSON *)f[T_KWARGS], prefix, c->err)))
        return rc;
    return task->map ? 0 : check_no_item(task, prefix, c->err);
}

/* A kwargs value {"upstream": "NAME"} (an object with exactly that one member, at any depth
 * below the kwargs object itself, as python/dagy_runner.py sees it) stands for NAME's result:
 * NAME must be an upstream task. */
static int check_kw_ref(cJSON *str, const char *path, void *ud)
{
    kw_ctx *c = ud;
    bool only_member = str->prev == str && str->next == NULL;
    if (!str->string || strcmp(str->string, "upstream") != 0 || !only_member ||
        strcmp(path, "kwargs.upstream") == 0)
        return 0;
    long idx = flowspec__map_get(c->names, str->valuestring);
    if (idx >= 0 && c->mark[idx] == c->stamp)
        return 0;
    size_t plen = strlen(path) - strlen(".upstream");
    return flowspec__fail(c->err,
                          "%s%.*s: {\"upstream\": \"%.64s\"} names a task that is not listed in "
                          "\"upstream\"",
                          c->prefix, (int)plen, path, str->valuestring);
}

/* Resolves the upstream names of task i into indices; mark[] must hold no stamp i + 1 yet. */
static int resolve_task(pctx *c, size_t i, size_t *mark)
{
    flowspec_task *t = &c->s->tasks[i];
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "task \"%s\": ", t->name);
    const cJSON *e;
    cJSON_ArrayForEach(e, c->up_json[i])
    {
        const char *name = e->valuestring;
        long idx = flowspec__map_get(c->s->index, name);
        if (idx == (long)i)
            return flowspec__fail(c->err, "%supstream \"%s\": a task cannot depend on itself",
                                  prefix, name);
        if (idx < 0)
            return flowspec__fail(c->err, "%supstream \"%.128s\" does not exist", prefix, name);
        if (mark[idx] == i + 1)
            return flowspec__fail(c->err, "%supstream \"%s\" is listed twice", prefix, name);
        mark[idx] = i + 1;
        t->upstream[t->n_upstream++] = (size_t)idx;
    }
    t->def.upstream = t->upstream;
    t->def.n_upstream = t->n_upstream;
    if (t->map) {
        long o = flowspec__map_get(c->s->index, t->map->over);
        if (o < 0 || mark[o] != i + 1)
            return flowspec__fail(c->err,
                                  "%smap: field \"over\": \"%.128s\" is not listed in "
                                  "\"upstream\" (a map runs over the result of a direct upstream "
                                  "task)",
                                  prefix, t->map->over);
        t->map->over_index = (size_t)o;
        t->def.map = true;
        t->def.map_over = (size_t)o;
        t->def.map_max_parallel = t->map->max_parallel;
        t->def.map_allow_failures = t->map->allow_failures;
    }
    kw_ctx k = {
        .prefix = prefix, .err = c->err, .names = c->s->index, .mark = mark, .stamp = i + 1};
    return flowspec__walk_kwargs(t->kwargs, check_kw_ref, &k);
}

static int resolve_all(pctx *c)
{
    size_t n = c->s->n_tasks;
    size_t *mark = calloc(n, sizeof(size_t));
    int rc = mark ? 0 : -ENOMEM;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = resolve_task(c, i, mark);
    free(mark);
    return rc ? rc : flowspec__check_acyclic(c->s, c->err);
}

static int parse_tasks(pctx *c, const cJSON *v)
{
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    if (n == 0)
        return flowspec__fail(c->err, "field \"tasks\": must be a non-empty array");
    if (n > FLOWSPEC_MAX_TASKS)
        return flowspec__fail(c->err, "field \"tasks\": too many tasks (%d; the limit is %d)", n,
                              FLOWSPEC_MAX_TASKS);
    flowspec *s = c->s;
    if (!(s->tasks = calloc((size_t)n, sizeof(*s->tasks))) ||
        !(c->up_json = calloc((size_t)n, sizeof(*c->up_json))) ||
        !(s->index = calloc(1, sizeof(*s->index))) || flowspec__map_init(s->index, (size_t)n) < 0)
        return -ENOMEM;
    s->n_tasks = (size_t)n;
    cJSON *t = v->child, *next;
    for (size_t i = 0; t; i++, t = next) {
        next = t->next; /* parse_task may detach parts of t, never t itself */
        int rc = parse_task(c, i, t);
        if (rc < 0)
            return rc;
    }
    return resolve_all(c);
}

static int parse_spec_version(const cJSON *root, char *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "spec_version");
    int ver;
    if (!v)
        return flowspec__fail(err, "missing required field \"spec_version\"");
    if (!json_int(v, INT_MIN, INT_MAX, &ver))
        return flowspec__fail(err, "field \"spec_version\": must be an integer");
    if (ver != 1)
        return flowspec__fail(err,
                              "field \"spec_version\": unsupported version %d (this dagy "
                              "reads spec_version 1)",
                              ver);
    return 0;
}

/* Parses the top-level object; spec_version first, since a newer spec may have other fields. */
static int parse_root(pctx *c, const cJSON *root)
{
    const cJSON *f[COUNT(top_fields)];
    flowspec *s = c->s;
    int rc;
    if (!cJSON_IsObject(root))
        return flowspec__fail(c->err, "the spec must be a JSON object");
    if ((rc = parse_spec_version(root, c->err)) < 0 ||
        (rc = collect(root, top_fields, COUNT(top_fields), f, "", c->err)) < 0)
        return rc;
    s->spec_version = 1;
    if (!f[F_NAME])
        return flowspec__fail(c->err, "missing required field \"name\"");
    char why[FLOWSPEC_ERR_MAX];
    if (!cJSON_IsString(f[F_NAME]))
        return flowspec__fail(c->err, "field \"name\": must be a string");
    if (!proto_name_check(PROTO_NAME_FLOW, f[F_NAME]->valuestring, why, sizeof why))
        return flowspec__fail(c->err, "field \"name\": %s", why);
    if (!(s->name = strdup(f[F_NAME]->valuestring)))
        return -ENOMEM;
    if ((rc = opt_string(f[F_VERSION], &s->version, "", "version", c->err)) < 0 ||
        (rc = opt_string(f[F_DESCRIPTION], &s->description, "", "description", c->err)) < 0)
        return rc;
    if (!s->version && !(s->version = strdup("")))
        return -ENOMEM;
    if (f[F_MAX_PARALLEL] && !json_int(f[F_MAX_PARALLEL], 1, INT_MAX, &s->max_parallel))
        return flowspec__fail(c->err, "field \"max_parallel\": must be an integer >= 1");
    if (!f[F_TASKS])
        return flowspec__fail(c->err, "missing required field \"tasks\"");
    if ((rc = parse_defaults(c, f[F_DEFAULTS])) < 0)
        return rc;
    return parse_tasks(c, f[F_TASKS]);
}

/* "invalid JSON at line L, column C" for the byte at `at` (lines and columns count from 1). */
static int json_error(const char *json, size_t len, const char *at, char *err)
{
    size_t line = 1, col = 1, pos = at && at >= json ? (size_t)(at - json) : 0;
    for (size_t i = 0; i < pos && i < len; i++) {
        if (json[i] == '\n')
            line++, col = 1;
        else
            col++;
    }
    return flowspec__fail(err, "invalid JSON at line %zu, column %zu", line, col);
}

#define NUL_WHY "contains a NUL character (\\u0000), which is not allowed"

/* The member of object `o` that holds the marker, or NULL. */
static const cJSON *marked_member(const cJSON *o, const char *marker)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, o)
    {
        if (proto_json_holds(m, marker))
            return m;
    }
    return NULL;
}

/* "PREFIXfield "F": ..." for the marked member m of an object (or its name, if that is it). */
static int nul_field(const cJSON *m, const char *prefix, char *err)
{
    return flowspec__fail(err, "%sfield \"%s\": " NUL_WHY, prefix, m->string);
}

/* The task holding the marker in the tasks array: "task "NAME": field "F": ...". */
static int nul_task(const cJSON *tasks, const char *marker, char *err)
{
    size_t i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tasks)
    {
        i++;
        if (!proto_json_holds(t, marker))
            continue;
        /* A task that is not an object (an array, say) has no field names to report. */
        const cJSON *m = cJSON_IsObject(t) ? marked_member(t, marker) : NULL;
        if (!m)
            return flowspec__fail(err, "task #%zu: " NUL_WHY, i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
        char prefix[200];
        if (cJSON_IsString(name) && !strstr(name->valuestring, marker) &&
            proto_name_check(PROTO_NAME_TASK, name->valuestring, NULL, 0))
            snprintf(prefix, sizeof prefix, "task \"%s\": ", name->valuestring);
        else
            snprintf(prefix, sizeof prefix, "task #%zu: ", i);
        if (strstr(m->string, marker))
            return flowspec__fail(err, "%sthe name of a field " NUL_WHY, prefix);
        return nul_field(m, prefix, err);
    }
    return flowspec__fail(err, "field \"tasks\": " NUL_WHY);
}

/* The spec holds a \u0000 escape, which cJSON would cut the string at: names the task and the
 * field (or the line and column when the text cannot be marked). */
static int nul_error(const char *json, size_t len, char *err)
{
    char marker[4], where[128];
    cJSON *root = proto_json_parse_nul_marked(json, len, marker);
    const cJSON *m = cJSON_IsObject(root) ? marked_member(root, marker) : NULL;
    int rc;
    if (!m) {
        proto_json_nul_where(json, len, where, sizeof where);
        rc = flowspec__fail(err, "a string at %s " NUL_WHY, where);
    } else if (strstr(m->string, marker)) {
        rc = flowspec__fail(err, "the name of a field " NUL_WHY);
    } else if (!strcmp(m->string, "tasks") && cJSON_IsArray(m)) {
        rc = nul_task(m, marker, err);
    } else if (!strcmp(m->string, "defaults") && cJSON_IsObject(m)) {
        const cJSON *d = marked_member(m, marker);
        rc = strstr(d->string, marker)
                 ? flowspec__fail(err, "defaults: the name of a field " NUL_WHY)
                 : nul_field(d, "defaults: ", err);
    } else {
        rc = nul_field(m, "", err);
    }
    cJSON_Delete(root);
    return rc;
}

int flowspec_parse(const char *json, size_t len, flowspec **out, char *err)
{
    *out = NULL;
    if (!json && len == 0)
        json = "";
    if (len > FLOWSPEC_MAX_BYTES)
        return flowspec__fail(err, "the spec is too large (%zu bytes; the limit is 16 MiB)", len);
    /* JSON text never contains a NUL byte; cJSON would stop there and accept a prefix. */
    const char *nul = memchr(json, '\0', len);
    if (nul)
        return json_error(json, len, nul, err);
    if (proto_json_has_nul(json, len))
        return nul_error(json, len, err);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root)
        return json_error(json, len, end, err);
    while (end < json + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end < json + len) {
        cJSON_Delete(root);
        return json_error(json, len, end, err);
    }
    pctx c = {.err = err};
    int rc = (c.s = calloc(1, sizeof(*c.s))) ? parse_root(&c, root) : -ENOMEM;
    if (rc == -ENOMEM)
        flowspec__fail(err, "out of memory while parsing the spec");
    cJSON_Delete(root);
    free(c.up_json);
    if (rc < 0) {
        flowspec_free(c.s);
        return rc;
    }
    *out = c.s;
    return 0;
}

int flowspec_load(const char *path, flowspec **out, char *err)
{
    char msg[FLOWSPEC_ERR_MAX];
    char *buf = NULL;
    size_t len = 0;
    int rc;
    *out = NULL;
    /* One byte over the limit reads as EFBIG; flowspec_parse words the size error. */
    if (!(buf = proto_read_user_file(path, FLOWSPEC_MAX_BYTES, &len))) {
        rc = -errno;
        if (rc == -EFBIG)
            flowspec__fail(err, "%s: the spec is larger than 16 MiB", path);
        else
            flowspec__fail(err, "%s: %s", path, strerror(-rc));
        return rc;
    }
    rc = flowspec_parse(buf, len, out, msg);
    free(buf);
    if (rc < 0)
        flowspec__fail(err, "%s: %s", path, msg);
    return rc;
}

void flowspec_task_clear(flowspec_task *t)
{
    for (size_t k = 0; t->command && t->command[k]; k++)
        free(t->command[k]);
    for (size_t k = 0; t->env && t->env[k]; k++)
        free(t->env[k]);
    free(t->command);
    free(t->env);
    free(t->name);
    free(t->callable);
    free(t->description);
    free(t->upstream);
    cJSON_Delete(t->kwargs);
    if (t->map)
        free(t->map->over);
    free(t->map);
    flowspec__executor_free(t->executor);
    memset(t, 0, sizeof *t);
}

void flowspec_free(flowspec *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_tasks; i++)
        flowspec_task_clear(&s->tasks[i]);
    if (s->index)
        flowspec__map_free(s->index);
    free(s->index);
    free(s->tasks);
    free(s->name);
    free(s->version);
    free(s->description);
    free(s);
}
