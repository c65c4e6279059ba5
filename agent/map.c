/* map.c - dynamic fan-out in the agent (flow-spec "map", docs/flow-spec.md): when the plan starts
 * a map task, the result of the upstream it maps over is split into its elements (their text as
 * the task wrote it, minus whitespace, so numbers keep every digit), one child task is rendered
 * per element ({{ item }}, DAGY_MAP_ITEM, DAGY_MAP_INDEX), fingerprinted and handed to the plan
 * (sched_expand); when every child has ended, the map's result (the children's results in order,
 * null for a child without one) is stored like any task's and the map ends as the plan's verdict
 * (sched_map_outcome) says. A child is an ordinary task of the plan and of r->tasks otherwise:
 * its own item "NAME[k]", attempts, retries, timeout, result file and S3 key. */
#include "agent/durable.h"
#include "agent/log.h"
#include "agent/run.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One element of an array: its offset and length in the result text. */
typedef struct {
    size_t off, len;
} span;

static bool json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* What kind of JSON value starts with c (the text is valid JSON: results.c checked it). */
static const char *json_kind(char c)
{
    switch (c) {
    case '{':
        return "an object";
    case '"':
        return "a string";
    case 't':
    case 'f':
        return "a boolean";
    case 'n':
        return "null";
    default:
        return "a number";
    }
}

/* Splits the valid JSON array text s[0..n) into its top-level elements, at most `max` (then
 * -E2BIG). -EINVAL if s is not an array. *out is malloc'd (caller frees). */
static int split_array(const char *s, size_t n, size_t max, span **out, size_t *count)
{
    size_t i = 0, cap = 0, k = 0, start = 0;
    span *a = NULL;
    int depth = 0;
    bool in_str = false, have = false;
    while (i < n && json_ws(s[i]))
        i++;
    if (i >= n || s[i] != '[')
        return -EINVAL;
    for (; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (depth == 1 && !have && !json_ws(c) && c != ']' && c != ',')
            have = true, start = i;
        if (c == '"')
            in_str = true;
        else if (c == '[' || c == '{')
            depth++;
        else if (depth == 1 && (c == ',' || c == ']') && have) {
            size_t end = i;
            while (end > start && json_ws(s[end - 1]))
                end--;
            if (k == max) {
                free(a);
                return -E2BIG;
            }
            if (k == cap) {
                span *na = realloc(a, (cap = cap ? cap * 2 : 64) * sizeof *a);
                if (!na) {
                    free(a);
                    return -ENOMEM;
                }
                a = na;
            }
            a[k++] = (span){start, end - start};
            have = false;
        }
        if (c == ']' || c == '}')
            depth--;
    }
    *out = a;
    *count = k;
    return 0;
}

/* The element's text without whitespace outside strings: its compact JSON, digits untouched. */
static char *compact(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    size_t k = 0;
    bool in_str = false;
    for (size_t i = 0; o && i < n; i++) {
        char c = s[i];
        if (in_str) {
            o[k++] = c;
            if (c == '\\' && i + 1 < n)
                o[k++] = s[++i];
            else if (c == '"')
                in_str = false;
        } else if (!json_ws(c)) {
            in_str = c == '"';
            o[k++] = c;
        }
    }
    if (o)
        o[k] = '\0';
    return o;
}

/* The result text of task u (NULL and *len 0 when it stored none). -errno with err. */
static int read_result(run_state *r, size_t u, char **text, size_t *len, char *err, size_t errlen)
{
    *text = NULL;
    *len = 0;
    if (sched_task_state(r->plan, u) != SCHED_SUCCEEDED || !r->tasks[u].has_result)
        return 0;
    char *path = agent__task_file(r, AGENT_DIR_RESULTS, u, 0);
    *text = path ? proto_read_file(path, r->cfg->max_result_bytes, len) : NULL;
    int rc = *text || (path && errno == ENOENT) ? 0 : -(path ? errno : ENOMEM);
    if (rc)
        snprintf(err, errlen, "cannot read the result file %s: %s", path ? path : "",
                 strerror(-rc));
    free(path);
    return rc;
}

/* The map's elements, or an error naming the upstream and what its result is. */
static int map_elements(run_state *r, size_t i, span **el, size_t *n, char **text, char *err)
{
    const flowspec_task *ft = r->tasks[i].ft;
    const char *up = ft->map->over;
    size_t len = 0;
    int rc = read_result(r, ft->map->over_index, text, &len, err, AGENT_ERR_MAX);
    if (rc)
        return rc;
    if (!*text) {
        snprintf(err, AGENT_ERR_MAX,
                 "map over \"%s\": it stored no result (null), and a map needs a JSON array", up);
        return -EINVAL;
    }
    rc = split_array(*text, len, (size_t)r->cfg->max_map_items, el, n);
    if (rc == -EINVAL) {
        size_t k = 0;
        while (k < len && json_ws((*text)[k]))
            k++;
        snprintf(err, AGENT_ERR_MAX,
                 "map over \"%s\": its result is %s, not a JSON array (a map runs once per "
                 "element of an array)",
                 up, json_kind(k < len ? (*text)[k] : 'n'));
    } else if (rc == -E2BIG) {
        snprintf(err, AGENT_ERR_MAX,
                 "map over \"%s\": its array has more than DAGY_MAX_MAP_ITEMS (%d) elements", up,
                 r->cfg->max_map_items);
    } else if (rc) {
        snprintf(err, AGENT_ERR_MAX, "map over \"%s\": out of memory", up);
    }
    return rc;
}

/* Renders the child of element k (its item: compact JSON text). */
static flowspec_task *render_child(run_state *r, size_t i, size_t k, const char *item, char *err)
{
    const agent_config *c = r->cfg;
    if (strlen(item) + sizeof "DAGY_MAP_ITEM=" > SBX_ARG_STRLEN_MAX) {
        snprintf(err, AGENT_ERR_MAX,
                 "map over \"%s\": element %zu is %zu bytes, over exec()'s limit of %d bytes "
                 "for DAGY_MAP_ITEM; map over smaller elements (keys, paths) instead",
                 r->tasks[i].ft->map->over, k, strlen(item), SBX_ARG_STRLEN_MAX);
        return NULL;
    }
    flowspec_vars vars = {c->parameters,   c->run_id, c->flow_name,
                          c->flow_version, c->org_id, c->environment};
    flowspec_task *t = calloc(1, sizeof *t);
    char why[FLOWSPEC_ERR_MAX];
    if (!t || flowspec_render_child(r->tasks[i].ft, &vars, item, k, t, why) < 0) {
        snprintf(err, AGENT_ERR_MAX, "%s", t ? why : "out of memory");
        free(t);
        return NULL;
    }
    return t;
}

/* Every child of map i, rendered, or NULL with err (nothing kept). */
static flowspec_task **render_children(run_state *r, size_t i, char *err, size_t *count)
{
    span *el = NULL;
    size_t n = 0;
    char *text = NULL;
    flowspec_task **kids = NULL;
    if (map_elements(r, i, &el, &n, &text, err))
        goto out;
    kids = calloc(n ? n : 1, sizeof *kids);
    for (size_t k = 0; kids && k < n; k++) {
        char *item = compact(text + el[k].off, el[k].len);
        kids[k] = item ? render_child(r, i, k, item, err) : NULL;
        free(item);
        if (!kids[k]) {
            for (size_t j = 0; j < k; j++) {
                flowspec_task_clear(kids[j]);
                free(kids[j]);
            }
            free(kids);
            kids = NULL;
            break;
        }
    }
    if (!kids && !err[0])
        snprintf(err, AGENT_ERR_MAX, "out of memory");
    *count = n;
out:
    free(el);
    free(text);
    return kids;
}

/* The child's task_hash: its definition as it runs (DAGY_MAP_ITEM and DAGY_MAP_INDEX are in its
 * env, so the element is covered) over the map's upstream hashes. */
static void child_hash(run_state *r, size_t c)
{
    agent_durable *d = r->durable;
    const flowspec_task *ft = r->tasks[c].ft;
    if (!d || !d->hashes)
        return;
    const char **names = calloc(ft->n_upstream + 1, sizeof *names);
    const char **hashes = calloc(ft->n_upstream + 1, sizeof *hashes);
    for (size_t k = 0; names && hashes && k < ft->n_upstream; k++) {
        names[k] = r->spec->tasks[ft->upstream[k]].name;
        hashes[k] = d->hashes[ft->upstream[k]];
    }
    proto_hash_ctx ctx = {d->code_digest, r->cfg->parameters,
                          (const char *const *)r->cfg->dep_uris};
    if (!names || !hashes || proto_task_hash(ft, names, hashes, &ctx, d->hashes[c]))
        d->hashes[c][0] = '\0';
    free(names);
    free(hashes);
}

/* Hands the rendered children to the plan and to r->tasks. 0, or -errno (kids not taken). */
static int adopt_children(run_state *r, size_t i, flowspec_task **kids, size_t n, char *err)
{
    size_t first = sched_count(r->plan);
    int rc = agent__tasks_grow(r, first + n);
    if (!rc)
        rc = sched_expand(r->plan, i, n);
    if (rc) {
        snprintf(err, AGENT_ERR_MAX, "cannot create %zu map children: %s", n, strerror(-rc));
        return rc;
    }
    for (size_t k = 0; k < n; k++) {
        agent_task *t = &r->tasks[first + k];
        t->run = r;
        t->index = first + k;
        t->exit_code = -1;
        t->ft = t->own = kids[k];
        child_hash(r, first + k);
    }
    for (size_t k = 0; k < n; k++)
        if ((rc = agent__write_kwargs_file(r, kids[k], err)))
            break; /* the children are the plan's now: each fails at its start instead */
    return 0;
}

void agent__map_expand(run_state *r, size_t i)
{
    char err[AGENT_ERR_MAX] = "";
    size_t n = 0;
    flowspec_task **kids = render_children(r, i, err, &n);
    if (kids && adopt_children(r, i, kids, n, err)) {
        for (size_t k = 0; k < n; k++) {
            flowspec_task_clear(kids[k]);
            free(kids[k]);
        }
        free(kids);
        kids = NULL;
    }
    if (!kids) { /* the same array would fail again: no retry */
        sched_exited(r->plan, i, SCHED_EXIT_FATAL, err, uv_now(&r->loop));
        return;
    }
    free(kids);
    const flowspec_task *ft = r->tasks[i].ft;
    cJSON *it = r->tasks[i].item;
    status_set_str(it, "map_over", ft->map->over);
    status_set_num(it, "map_children", (double)n);
    status_touch(r->status, it);
    status_set_num(r->run_item, "tasks_total", (double)sched_count(r->plan));
    status_touch(r->status, r->run_item);
    log_line *l = agent_log_begin(LOG_INFO, "map_expanded", "task \"%s\": %zu children over \"%s\"",
                                  ft->name, n, ft->map->over);
    agent_log_str(l, "task_name", ft->name);
    agent_log_str(l, "task_run_id", r->tasks[i].task_run_id);
    agent_log_int(l, "map_children", (int64_t)n);
    agent_log_str(l, "map_over", ft->map->over);
    agent_log_end(l);
    size_t first = 0;
    if (sched_map_children(r->plan, i, &first, &n)) /* resume: the children that succeeded */
        agent__durable_map_reuse(r, i, first, n);
}

/* The map's result: [child 0's result, child 1's, ...], null for a child without one. Bounded
 * by DAGY_MAX_RESULT_BYTES like any result (downstream tasks read it whole). */
static int map_result(run_state *r, size_t i, char **out, size_t *out_len, char *err)
{
    size_t first = 0, n = 0, len = 1, cap = 256, max = r->cfg->max_result_bytes;
    sched_map_children(r->plan, i, &first, &n);
    char *buf = malloc(cap);
    int rc = buf ? 0 : -ENOMEM;
    if (buf)
        buf[0] = '[';
    for (size_t k = 0; !rc && k < n; k++) {
        char *res = NULL;
        size_t rl = 0;
        rc = read_result(r, first + k, &res, &rl, err, AGENT_ERR_MAX);
        const char *v = res ? res : "null";
        size_t vl = res ? rl : 4;
        if (!rc && len + vl + 2 > max) {
            snprintf(err, AGENT_ERR_MAX,
                     "the map's result (the array of its %zu children's results) is larger than "
                     "DAGY_MAX_RESULT_BYTES (%zu bytes)",
                     n, max);
            rc = -EFBIG;
        }
        if (!rc && len + vl + 2 > cap) {
            char *nb = realloc(buf, cap = (len + vl + 2) * 2);
            rc = nb ? 0 : -ENOMEM;
            buf = nb ? nb : buf;
        }
        if (!rc) {
            if (k)
                buf[len++] = ',';
            memcpy(buf + len, v, vl);
            len += vl;
        }
        free(res);
    }
    if (!rc)
        buf[len++] = ']';
    if (rc == -ENOMEM)
        snprintf(err, AGENT_ERR_MAX, "out of memory building the map's result");
    if (rc)
        free(buf);
    *out = rc ? NULL : buf;
    *out_len = len;
    return rc;
}

void agent__map_complete(run_state *r, size_t i)
{
    const char *why = NULL;
    char err[AGENT_ERR_MAX];
    sched_exit how = sched_map_outcome(r->plan, i, &why);
    if (how != SCHED_EXIT_OK) {
        size_t first = 0, n = 0;
        sched_map_children(r->plan, i, &first, &n);
        for (size_t k = first; how == SCHED_EXIT_FAILED && k < first + n; k++)
            if (sched_task_state(r->plan, k) == SCHED_FAILED && r->tasks[k].infra)
                r->tasks[i].infra = true; /* the map failed for the agent's reasons too: exit 3 */
        snprintf(err, sizeof err, "%s", why ? why : "");
        sched_exited(r->plan, i, how, err, uv_now(&r->loop));
        return;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = map_result(r, i, &text, &len, err);
    if (!rc && agent__task_result_store(r, i, text, len, err, sizeof err)) {
        char why2[AGENT_ERR_MAX];
        memcpy(why2, err, sizeof why2);
        snprintf(err, sizeof err, "infrastructure: %.1000s", why2);
        r->tasks[i].infra = true;
        rc = -EIO;
    }
    free(text);
    if (rc) {
        sched_exited(r->plan, i, SCHED_EXIT_FATAL, err, uv_now(&r->loop));
        return;
    }
    if (agent__result_store(r, i)) /* durable: ends the map through agent__attempt_end */
        return;
    sched_exited(r->plan, i, SCHED_EXIT_OK, NULL, uv_now(&r->loop));
}
