/* taskhash.c - task fingerprints: canonical JSON, the framed serialization of a task's
 * definition (version 1, docs/agent.md "Task fingerprints") hashed with SHA-256, the hash
 * chain over upstream tasks in topological order, and an order-independent digest of the
 * flow's code. Pure: no I/O. */
#include "proto/taskhash.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/sha256.h"
#include "proto/util.h"

/* ---- canonical JSON ---- */

typedef proto_sbuf sbuf;

/* A JSON string with the minimal escapes: " \ and control characters. */
static void sb_json_string(sbuf *b, const char *s)
{
    proto_sbuf_json_str(b, s);
}

/* Shortest text that reads back as the same double; integers below 2^53 without exponent. */
static void sb_number(sbuf *b, double v)
{
    char num[64];
    if (!isfinite(v)) {
        proto_sbuf_puts(b, "null");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(num, sizeof num, "%.0f", v == 0 ? 0.0 : v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(num, sizeof num, "%.*g", prec, v);
            if (strtod(num, NULL) == v)
                break;
        }
    }
    proto_sbuf_puts(b, num);
}

static int cmp_member(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

static void sb_value(sbuf *b, const cJSON *v);

/* Object members in bytewise key order. */
static void sb_object(sbuf *b, const cJSON *v)
{
    size_t n = 0, k = 0;
    for (const cJSON *m = v->child; m; m = m->next)
        n++;
    const cJSON **ms = malloc((n ? n : 1) * sizeof *ms);
    if (!ms) {
        b->oom = true;
        return;
    }
    for (const cJSON *m = v->child; m; m = m->next)
        ms[k++] = m;
    qsort(ms, n, sizeof *ms, cmp_member);
    proto_sbuf_put(b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            proto_sbuf_put(b, ",", 1);
        sb_json_string(b, ms[i]->string ? ms[i]->string : "");
        proto_sbuf_put(b, ":", 1);
        sb_value(b, ms[i]);
    }
    proto_sbuf_put(b, "}", 1);
    free(ms);
}

static void sb_value(sbuf *b, const cJSON *v)
{
    if (!v || cJSON_IsNull(v) || cJSON_IsInvalid(v))
        proto_sbuf_puts(b, "null");
    else if (cJSON_IsTrue(v))
        proto_sbuf_puts(b, "true");
    else if (cJSON_IsFalse(v))
        proto_sbuf_puts(b, "false");
    else if (cJSON_IsNumber(v))
        sb_number(b, v->valuedouble);
    else if (cJSON_IsString(v))
        sb_json_string(b, v->valuestring ? v->valuestring : "");
    else if (cJSON_IsArray(v)) {
        proto_sbuf_put(b, "[", 1);
        for (const cJSON *e = v->child; e; e = e->next) {
            if (e != v->child)
                proto_sbuf_put(b, ",", 1);
            sb_value(b, e);
        }
        proto_sbuf_put(b, "]", 1);
    } else if (cJSON_IsObject(v))
        sb_object(b, v);
    else
        proto_sbuf_puts(b, "null"); /* raw values never occur in parsed specs */
}

char *proto_canonical_json(const cJSON *v)
{
    sbuf b = {0};
    sb_value(&b, v);
    if (b.oom || !b.s) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---- the framed serialization ---- */

/* One field: "TAG LEN:BYTES\n". The length frames the value, so no byte sequence inside a
 * value can end it early. */
static void sb_field(sbuf *b, const char *tag, const char *val, size_t len)
{
    char head[64];
    snprintf(head, sizeof head, "%s %zu:", tag, len);
    proto_sbuf_puts(b, head);
    proto_sbuf_put(b, val, len);
    proto_sbuf_put(b, "\n", 1);
}

static void sb_field_str(sbuf *b, const char *tag, const char *val)
{
    sb_field(b, tag, val, strlen(val));
}

static void sb_count(sbuf *b, const char *tag, size_t n)
{
    char line[64];
    snprintf(line, sizeof line, "%s %zu\n", tag, n);
    proto_sbuf_puts(b, line);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* env entries sorted bytewise (their order in the spec does not change what a task sees). */
static void sb_env(sbuf *b, const flowspec_task *t)
{
    const char **env = malloc((t->env_len ? t->env_len : 1) * sizeof *env);
    if (!env) {
        b->oom = true;
        return;
    }
    for (size_t i = 0; i < t->env_len; i++)
        env[i] = t->env[i];
    qsort(env, t->env_len, sizeof *env, cmp_str);
    sb_count(b, "env", t->env_len);
    for (size_t i = 0; i < t->env_len; i++)
        sb_field_str(b, "e", env[i]);
    free(env);
}

/* Upstream (name, hash) pairs sorted by name. */
static void sb_upstream(sbuf *b, size_t n, const char *const *names, const char *const *hashes)
{
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!order) {
        b->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = 1; i < n; i++) /* insertion sort: upstream lists are short */
        for (size_t j = i; j > 0 && strcmp(names[order[j - 1]], names[order[j]]) > 0; j--) {
            size_t tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    sb_count(b, "upstream", n);
    for (size_t i = 0; i < n; i++) {
        sb_field_str(b, "u", names[order[i]]);
        sb_field_str(b, "h", hashes[order[i]]);
    }
    free(order);
}

static void sha256_hex(const void *data, size_t len, char out[PROTO_HASH_HEX])
{
    proto_sha256_hex(data, len, out);
}

int proto_task_hash(const flowspec_task *t, const char *const *up_names,
                    const char *const *up_hashes, const proto_hash_ctx *ctx,
                    char out[PROTO_HASH_HEX])
{
    sbuf b = {0};
    proto_sbuf_puts(&b, "dagy-task-hash 1\n");
    sb_field_str(&b, "name", t->name);
    if (t->command) {
        sb_count(&b, "command", t->command_len);
        for (size_t i = 0; i < t->command_len; i++)
            sb_field_str(&b, "a", t->command[i]);
    } else {
        sb_field_str(&b, "callable", t->callable ? t->callable : "");
        char *kw = proto_canonical_json(t->kwargs);
        if (!kw)
            b.oom = true;
        else
            sb_field_str(&b, "kwargs", kw);
        free(kw);
    }
    sb_env(&b, t);
    char *params = ctx->parameters ? proto_canonical_json(ctx->parameters) : strdup("{}");
    if (!params)
        b.oom = true;
    else
        sb_field_str(&b, "parameters", params);
    free(params);
    sb_field_str(&b, "code", ctx->code_digest ? ctx->code_digest : "");
    size_t n_deps = 0;
    while (ctx->dep_uris && ctx->dep_uris[n_deps])
        n_deps++;
    sb_count(&b, "deps", n_deps);
    for (size_t i = 0; i < n_deps; i++)
        sb_field_str(&b, "d", ctx->dep_uris[i]);
    sb_upstream(&b, t->n_upstream, up_names, up_hashes);
    if (t->map) { /* a map's result also depends on what it maps over and what it tolerates */
        char n[24];
        snprintf(n, sizeof n, "%d", t->map->allow_failures);
        sb_field_str(&b, "map", t->map->over);
        sb_field_str(&b, "allow_failures", n);
    }
    if (b.oom) {
        free(b.s);
        return -ENOMEM;
    }
    sha256_hex(b.s, b.len, out);
    free(b.s);
    return 0;
}

int proto_task_order(const flowspec *s, size_t *order)
{
    size_t n = s->n_tasks, head = 0, seen = 0;
    size_t *pending = calloc(n ? n : 1, sizeof *pending);
    size_t *down_n = calloc(n + 1, sizeof *down_n);
    size_t *down = NULL;
    int rc = -ENOMEM;
    if (!pending || !down_n)
        goto out;
    size_t edges = 0;
    for (size_t i = 0; i < n; i++) {
        pending[i] = s->tasks[i].n_upstream;
        for (size_t k = 0; k < s->tasks[i].n_upstream; k++)
            down_n[s->tasks[i].upstream[k] + 1]++;
        edges += s->tasks[i].n_upstream;
    }
    for (size_t i = 0; i < n; i++)
        down_n[i + 1] += down_n[i];
    if (!(down = malloc((edges ? edges : 1) * sizeof *down)))
        goto out;
    size_t *fill = pending; /* reuse: counted again below */
    size_t *pos = calloc(n ? n : 1, sizeof *pos);
    if (!pos)
        goto out;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < s->tasks[i].n_upstream; k++) {
            size_t u = s->tasks[i].upstream[k];
            down[down_n[u] + pos[u]++] = i;
        }
    free(pos);
    for (size_t i = 0; i < n; i++)
        if (fill[i] == 0)
            order[seen++] = i;
    while (head < seen) {
        size_t u = order[head++];
        for (size_t e = down_n[u]; e < down_n[u + 1]; e++)
            if (--fill[down[e]] == 0)
                order[seen++] = down[e];
    }
    rc = seen == n ? 0 : -EINVAL;
out:
    free(pending);
    free(down_n);
    free(down);
    return rc;
}

int proto_task_hashes(const flowspec *s, const proto_hash_ctx *ctx, char (*out)[PROTO_HASH_HEX])
{
    size_t n = s->n_tasks, max_up = 1;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return -ENOMEM;
    int rc = proto_task_order(s, order);
    for (size_t i = 0; i < n; i++)
        max_up = s->tasks[i].n_upstream > max_up ? s->tasks[i].n_upstream : max_up;
    const char **names = malloc(max_up * sizeof *names);
    const char **hashes = malloc(max_up * sizeof *hashes);
    if (!rc && (!names || !hashes))
        rc = -ENOMEM;
    for (size_t k = 0; !rc && k < n; k++) {
        const flowspec_task *t = &s->tasks[order[k]];
        for (size_t u = 0; u < t->n_upstream; u++) {
            names[u] = s->tasks[t->upstream[u]].name;
            hashes[u] = out[t->upstream[u]];
        }
        rc = proto_task_hash(t, names, hashes, ctx, out[order[k]]);
    }
    free(names);
    free(hashes);
    free(order);
    return rc;
}

/* ---- code digest ---- */

struct proto_code_digest {
    char **entries; /* "PATH\nSHA" */
    size_t n, cap;
    bool oom;
};

proto_code_digest *proto_code_digest_new(void)
{
    return calloc(1, sizeof(proto_code_digest));
}

int proto_code_digest_add(proto_code_digest *d, const char *rel, const char *content_sha_hex)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        char **p = realloc(d->entries, cap * sizeof *p);
        if (!p) {
            d->oom = true;
            return -ENOMEM;
        }
        d->entries = p;
        d->cap = cap;
    }
    sbuf b = {0};
    sb_field_str(&b, "f", rel);
    sb_field_str(&b, "h", content_sha_hex);
    if (b.oom) {
        free(b.s);
        d->oom = true;
        return -ENOMEM;
    }
    d->entries[d->n++] = b.s;
    return 0;
}

void proto_code_digest_finish(proto_code_digest *d, char out[PROTO_HASH_HEX])
{
    if (d->n)
        qsort(d->entries, d->n, sizeof *d->entries, cmp_str);
    proto_sha256 h;
    unsigned char md[32];
    static const char head[] = "dagy-code-digest 1\n";
    proto_sha256_init(&h);
    proto_sha256_update(&h, head, sizeof head - 1);
    for (size_t i = 0; i < d->n; i++)
        proto_sha256_update(&h, d->entries[i], strlen(d->entries[i]));
    if (d->oom) /* an incomplete digest must never match a complete one */
        proto_sha256_update(&h, "oom", 3);
    proto_sha256_final(&h, md);
    proto_hex(md, 32, out);
    for (size_t i = 0; i < d->n; i++)
        free(d->entries[i]);
    free(d->entries);
    free(d);
}

int proto_code_digest_skip(const char *rel)
{
    if (!strcmp(rel, "flow_spec.json") || !strcmp(rel, "metadata.json"))
        return 1;
    size_t n = strlen(rel);
    if (n >= 4 && !strcmp(rel + n - 4, ".pyc"))
        return 1;
    static const char *const dirs[] = {"__pycache__", ".git"};
    for (size_t i = 0; i < 2; i++) {
        size_t l = strlen(dirs[i]);
        for (const char *p = rel; (p = strstr(p, dirs[i])); p += l)
            if ((p == rel || p[-1] == '/') && (p[l] == '/' || p[l] == '\0'))
                return 1;
    }
    return 0;
}
