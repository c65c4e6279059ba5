/* flowspec_template.c - `{{ ... }}` templates in command elements, env values and string kwargs
 * values: syntax checks (at parse time) and expansion with run parameters (flowspec_render).
 * Inserted values are never scanned again, so a parameter cannot inject a template. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proto/flowspec_int.h"

#define WHY_MAX        384
#define PARAM_NAME_MAX 128
#define SNIPPET_MAX    48

typedef enum {
    TV_PARAM,
    TV_RUN_ID,
    TV_FLOW_NAME,
    TV_FLOW_VERSION,
    TV_ORG_ID,
    TV_ENVIRONMENT,
    TV_ITEM, /* a map child's element (parse_task refuses it outside a map task) */
} tvar;

static const struct {
    const char *name;
    tvar var;
} plain_vars[] = {
    {"run_id", TV_RUN_ID}, {"flow_name", TV_FLOW_NAME},     {"flow_version", TV_FLOW_VERSION},
    {"org_id", TV_ORG_ID}, {"environment", TV_ENVIRONMENT}, {"item", TV_ITEM},
};

/* One recognised template. */
typedef struct {
    tvar var;
    char param[PARAM_NAME_MAX + 1]; /* TV_PARAM only */
    const char *end;                /* just past the closing "}}" */
} tmpl;

/* Growable output string with a hard size cap. */
typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_param_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Copies at most SNIPPET_MAX bytes of s (up to a newline) for quoting in a message. */
static void snippet(char *dst, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && i < SNIPPET_MAX && s[i] && s[i] != '\n')
        i++;
    memcpy(dst, s, i);
    strcpy(dst + i, i < n && s[i] && s[i] != '\n' ? "..." : "");
}

/* Classifies the trimmed text between the braces. Returns 0 or -EINVAL with a reason in why. */
static int classify(const char *body, size_t n, tmpl *t, char *why)
{
    char shown[SNIPPET_MAX + 4];
    static const char pfx[] = "parameters.";
    size_t plen = sizeof(pfx) - 1;

    snippet(shown, body, n);
    if (n == 0)
        return snprintf(why, WHY_MAX, "empty template \"{{ }}\""), -EINVAL;
    if (n >= plen && memcmp(body, pfx, plen) == 0) {
        const char *name = body + plen;
        size_t nlen = n - plen;
        if (nlen == 0)
            return snprintf(why, WHY_MAX, "empty parameter name in \"{{ %s }}\"", shown), -EINVAL;
        for (size_t i = 0; i < nlen; i++)
            if (!is_param_char(name[i]) || i >= PARAM_NAME_MAX)
                return snprintf(why, WHY_MAX,
                                "invalid parameter name in \"{{ %s }}\" (1-128 characters of "
                                "A-Z a-z 0-9 _ -)",
                                shown),
                       -EINVAL;
        t->var = TV_PARAM;
        memcpy(t->param, name, nlen);
        t->param[nlen] = '\0';
        return 0;
    }
    for (size_t i = 0; i < sizeof(plain_vars) / sizeof(plain_vars[0]); i++)
        if (strlen(plain_vars[i].name) == n && memcmp(plain_vars[i].name, body, n) == 0) {
            t->var = plain_vars[i].var;
            return 0;
        }
    snprintf(why, WHY_MAX,
             "unknown template variable \"%s\" (known: parameters.NAME, run_id, flow_name, "
             "flow_version, org_id, environment, item)",
             shown);
    return -EINVAL;
}

/* Parses the template at p (which starts with "{{"). Returns 0 or -EINVAL with a reason. */
static int parse_one(const char *p, tmpl *t, char *why)
{
    const char *body = p + 2;
    const char *close = strstr(body, "}}");
    if (!close) {
        char shown[SNIPPET_MAX + 4];
        snippet(shown, p, strlen(p));
        snprintf(why, WHY_MAX, "unterminated template \"%s\" (missing \"}}\")", shown);
        return -EINVAL;
    }
    t->end = close + 2;
    while (body < close && is_space(*body))
        body++;
    while (close > body && is_space(close[-1]))
        close--;
    return classify(body, (size_t)(close - body), t, why);
}

static int sbuf_add(sbuf *b, const char *s, size_t n, char *why)
{
    if (b->len + n > FLOWSPEC_MAX_BYTES)
        return snprintf(why, WHY_MAX, "expands to more than 16 MiB"), -EINVAL;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return snprintf(why, WHY_MAX, "out of memory"), -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Appends the value of a parameter: strings as-is, anything else as compact JSON. */
static int add_param(sbuf *b, const flowspec_vars *vars, const char *name, char *why)
{
    const cJSON *params = vars ? vars->parameters : NULL;
    const cJSON *v = cJSON_IsObject(params) ? cJSON_GetObjectItemCaseSensitive(params, name) : NULL;
    if (!v)
        return snprintf(why, WHY_MAX, "parameter \"%s\" is not set (pass --param %s=...)", name,
                        name),
               -EINVAL;
    if (cJSON_IsString(v))
        return sbuf_add(b, v->valuestring, strlen(v->valuestring), why);
    char *text = cJSON_PrintUnformatted(v);
    if (!text)
        return snprintf(why, WHY_MAX, "out of memory"), -ENOMEM;
    int rc = sbuf_add(b, text, strlen(text), why);
    cJSON_free(text);
    return rc;
}

/* Appends a map child's element: a string as it is, anything else as its compact JSON. */
static int add_item(sbuf *b, const char *item, char *why)
{
    if (item[0] != '"')
        return sbuf_add(b, item, strlen(item), why);
    cJSON *v = cJSON_Parse(item);
    int rc = cJSON_IsString(v) ? sbuf_add(b, v->valuestring, strlen(v->valuestring), why)
                               : (snprintf(why, WHY_MAX, "out of memory"), -ENOMEM);
    cJSON_Delete(v);
    return rc;
}

/* Appends the value of one template (vars may be NULL: every plain variable is then ""). */
static int add_value(sbuf *b, const tmpl *t, const flowspec_vars *vars, const char *item, char *why)
{
    const char *v = NULL;
    switch (t->var) {
    case TV_PARAM:
        return add_param(b, vars, t->param, why);
    case TV_RUN_ID:
        v = vars ? vars->run_id : NULL;
        break;
    case TV_FLOW_NAME:
        v = vars ? vars->flow_name : NULL;
        break;
    case TV_FLOW_VERSION:
        v = vars ? vars->flow_version : NULL;
        break;
    case TV_ORG_ID:
        v = vars ? vars->org_id : NULL;
        break;
    case TV_ENVIRONMENT:
        v = vars ? vars->environment : NULL;
        break;
    case TV_ITEM:
        return item ? add_item(b, item, why) : 0;
    }
    return v ? sbuf_add(b, v, strlen(v), why) : 0;
}

/* Scans `in`; with out == NULL only checks syntax, otherwise expands into out. */
static int scan(const char *in, const flowspec_vars *vars, const char *item, sbuf *out, char *why)
{
    const char *p = in, *q;
    int rc;
    while ((q = strstr(p, "{{")) != NULL) {
        tmpl t;
        if ((rc = parse_one(q, &t, why)) < 0)
            return rc;
        if (out && ((rc = sbuf_add(out, p, (size_t)(q - p), why)) < 0 ||
                    (rc = add_value(out, &t, vars, item, why)) < 0))
            return rc;
        p = t.end;
    }
    return out ? sbuf_add(out, p, strlen(p), why) : 0;
}

bool flowspec__uses_item(const char *in)
{
    const char *p = in, *q;
    char why[WHY_MAX];
    while ((q = strstr(p, "{{")) != NULL) {
        tmpl t;
        if (parse_one(q, &t, why) < 0)
            return false;
        if (t.var == TV_ITEM)
            return true;
        p = t.end;
    }
    return false;
}

int flowspec__kw_uses_item(cJSON *str, const char *path, void *ud)
{
    if (!flowspec__uses_item(str->valuestring))
        return 0;
    snprintf(ud, 300, "%s", path);
    return 1;
}

static void report(char *err, const char *where, const char *why)
{
    if (where)
        flowspec__fail(err, "%s: %s", where, why);
    else
        flowspec__fail(err, "%s", why);
}

int flowspec_check_templates(const char *in, const char *where, char *err)
{
    char why[WHY_MAX];
    int rc = scan(in, NULL, NULL, NULL, why);
    if (rc < 0)
        report(err, where, why);
    return rc;
}

/* flowspec_expand, with a map child's element for {{ item }} (NULL: expands to ""). */
static char *expand(const char *in, const flowspec_vars *vars, const char *item, const char *where,
                    char *err)
{
    char why[WHY_MAX];
    sbuf b = {0};
    if (scan(in, vars, item, &b, why) < 0) {
        free(b.p);
        report(err, where, why);
        return NULL;
    }
    if (!b.p && sbuf_add(&b, "", 0, why) < 0) {
        report(err, where, why);
        return NULL;
    }
    return b.p;
}

/* Appends ".key" or "[i]" to a kwargs path, marking truncation with "..." when out of room. */
static size_t path_push(char *path, size_t len, size_t cap, const cJSON *child, size_t i)
{
    int n = child->string ? snprintf(path + len, cap - len, ".%s", child->string)
                          : snprintf(path + len, cap - len, "[%zu]", i);
    if (n < 0 || (size_t)n >= cap - len) {
        memcpy(path + cap - 4, "...", 4);
        return cap - 1;
    }
    return len + (size_t)n;
}

static int walk(cJSON *node, char *path, size_t len, size_t cap, flowspec__kw_fn fn, void *ud)
{
    if (cJSON_IsString(node))
        return fn(node, path, ud);
    if (!cJSON_IsObject(node) && !cJSON_IsArray(node))
        return 0;
    size_t i = 0;
    cJSON *child;
    cJSON_ArrayForEach(child, node)
    {
        size_t n = path_push(path, len, cap, child, i++);
        int rc = walk(child, path, n, cap, fn, ud);
        path[len] = '\0';
        if (rc)
            return rc;
    }
    return 0;
}

int flowspec__walk_kwargs(cJSON *kwargs, flowspec__kw_fn fn, void *ud)
{
    /* Depth is bounded by cJSON's nesting limit (1000), so recursion is safe here. */
    char path[256] = "kwargs";
    return kwargs ? walk(kwargs, path, strlen(path), sizeof(path), fn, ud) : 0;
}

char *flowspec_expand(const char *in, const flowspec_vars *vars, const char *where, char *err)
{
    return expand(in, vars, NULL, where, err);
}

typedef struct {
    const flowspec_vars *vars;
    const char *item;
    const char *task;
    char *err;
} render_ctx;

/* Expands one string value of a kwargs tree in place. */
static int render_kw(cJSON *str, const char *path, void *ud)
{
    render_ctx *c = ud;
    char where[320];
    snprintf(where, sizeof(where), "task \"%s\": %s", c->task, path);
    char *v = expand(str->valuestring, c->vars, c->item, where, c->err);
    if (!v)
        return -EINVAL;
    char *set = cJSON_SetValuestring(str, v);
    free(v);
    if (!set) {
        flowspec__fail(c->err, "%s: out of memory", where);
        return -ENOMEM;
    }
    return 0;
}

/* Expands one "NAME=VALUE" env entry in place; the name never holds a template. */
static int render_env(char **entry, const char *task, const flowspec_vars *vars, const char *item,
                      char *err)
{
    char where[320];
    const char *eq = strchr(*entry, '=');
    size_t nlen = (size_t)(eq - *entry);
    snprintf(where, sizeof(where), "task \"%s\": env \"%.*s\"", task, (int)nlen, *entry);
    char *v = expand(eq + 1, vars, item, where, err);
    if (!v)
        return -EINVAL;
    char *pair = malloc(nlen + strlen(v) + 2);
    if (!pair) {
        free(v);
        flowspec__fail(err, "%s: out of memory", where);
        return -ENOMEM;
    }
    memcpy(pair, *entry, nlen + 1);
    strcpy(pair + nlen + 1, v);
    free(v);
    free(*entry);
    *entry = pair;
    return 0;
}

/* Expands every templated field of one task. */
static int render_task(flowspec_task *t, const flowspec_vars *vars, const char *item, char *err)
{
    char where[320];
    for (size_t i = 0; i < t->command_len; i++) {
        snprintf(where, sizeof(where), "task \"%s\": command[%zu]", t->name, i);
        char *v = expand(t->command[i], vars, item, where, err);
        if (!v)
            return -EINVAL;
        free(t->command[i]);
        t->command[i] = v;
    }
    for (size_t i = 0; i < t->env_len; i++) {
        int rc = render_env(&t->env[i], t->name, vars, item, err);
        if (rc < 0)
            return rc;
    }
    render_ctx c = {vars, item, t->name, err};
    return flowspec__walk_kwargs(t->kwargs, render_kw, &c);
}

/* Copies a NULL-terminated string array of n entries with `extra` more slots. */
static char **dup_strv(char *const *v, size_t n, size_t extra)
{
    char **out = calloc(n + extra + 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++)
        if (!(out[i] = strdup(v[i]))) {
            for (size_t k = 0; k < i; k++)
                free(out[k]);
            free(out);
            return NULL;
        }
    return out;
}

/* A deep copy of t's definition (no map, no description), named `name`, with `extra_env` free
 * env slots. 0 or -ENOMEM (out cleared). */
static int copy_task(const flowspec_task *t, const char *name, size_t extra_env, flowspec_task *out)
{
    memset(out, 0, sizeof *out);
    out->name = strdup(name);
    out->command = t->command ? dup_strv(t->command, t->command_len, 0) : NULL;
    out->command_len = t->command_len;
    out->env = dup_strv(t->env ? t->env : (char *[]){NULL}, t->env_len, extra_env);
    out->env_len = t->env_len;
    out->callable = t->callable ? strdup(t->callable) : NULL;
    out->kwargs = t->kwargs ? cJSON_Duplicate(t->kwargs, true) : NULL;
    out->upstream = malloc((t->n_upstream ? t->n_upstream : 1) * sizeof *out->upstream);
    out->n_upstream = t->n_upstream;
    out->executor = flowspec__executor_dup(t->executor); /* a map child runs where its map says */
    if (!out->name || (t->command && !out->command) || !out->env ||
        (t->callable && !out->callable) || (t->kwargs && !out->kwargs) || !out->upstream ||
        (t->executor && !out->executor)) {
        flowspec_task_clear(out);
        return -ENOMEM;
    }
    memcpy(out->upstream, t->upstream, t->n_upstream * sizeof *out->upstream);
    out->def = t->def;
    out->def.name = out->name;
    out->def.upstream = out->upstream;
    out->def.map = false;
    return 0;
}

int flowspec_render_child(const flowspec_task *map, const flowspec_vars *vars, const char *item,
                          size_t index, flowspec_task *out, char *err)
{
    char name[160], num[24];
    snprintf(name, sizeof name, "%s[%zu]", map->name, index);
    snprintf(num, sizeof num, "%zu", index);
    item = item ? item : "null";
    int rc = copy_task(map, name, 2, out);
    if (rc < 0)
        return flowspec__fail(err, "task \"%s\": out of memory", name), rc;
    if ((rc = render_task(out, vars, item, err)) < 0) {
        flowspec_task_clear(out);
        return rc;
    }
    size_t il = strlen(item);
    char *e1 = malloc(il + sizeof "DAGY_MAP_ITEM="), *e2 = malloc(strlen(num) + 16);
    if (!e1 || !e2) {
        free(e1), free(e2);
        flowspec_task_clear(out);
        return flowspec__fail(err, "task \"%s\": out of memory", name), -ENOMEM;
    }
    sprintf(e1, "DAGY_MAP_ITEM=%s", item);
    sprintf(e2, "DAGY_MAP_INDEX=%s", num);
    out->env[out->env_len++] = e1;
    out->env[out->env_len++] = e2;
    return 0;
}

/* A map task's templates are expanded per element (flowspec_render_child); here they are only
 * tried, with a null element, so an unset parameter is still reported before anything runs. */
static int check_map_task(const flowspec_task *t, const flowspec_vars *vars, char *err)
{
    flowspec_task trial;
    int rc = copy_task(t, t->name, 0, &trial);
    if (rc < 0)
        return flowspec__fail(err, "task \"%s\": out of memory", t->name), rc;
    rc = render_task(&trial, vars, "null", err);
    flowspec_task_clear(&trial);
    return rc;
}

int flowspec_render(flowspec *s, const flowspec_vars *vars, char *err)
{
    for (size_t i = 0; i < s->n_tasks; i++) {
        flowspec_task *t = &s->tasks[i];
        int rc = t->map ? check_map_task(t, vars, err) : render_task(t, vars, NULL, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}
