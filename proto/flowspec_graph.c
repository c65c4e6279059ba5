/* flowspec_graph.c - the task graph side of the flow spec: the name hash table, cycle detection
 * (iterative, so specs with very long chains cannot overflow the stack) and Graphviz DOT output. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "proto/flowspec_int.h"

int flowspec__fail(char *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, FLOWSPEC_ERR_MAX, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* FNV-1a: short keys, good enough spread for a power-of-two table. */
static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int flowspec__map_init(flowspec__map *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2)
        cap *= 2;
    m->keys = calloc(cap, sizeof(*m->keys));
    m->vals = calloc(cap, sizeof(*m->vals));
    m->cap = cap;
    if (!m->keys || !m->vals) {
        flowspec__map_free(m);
        return -ENOMEM;
    }
    return 0;
}

void flowspec__map_free(flowspec__map *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
    m->cap = 0;
}

int flowspec__map_put(flowspec__map *m, const char *key, size_t val, size_t *prev)
{
    /* Capacity is at least twice the number of keys, so a free slot always exists. */
    size_t i = (size_t)hash(key) & (m->cap - 1);
    for (; m->keys[i]; i = (i + 1) & (m->cap - 1))
        if (strcmp(m->keys[i], key) == 0) {
            *prev = m->vals[i];
            return 1;
        }
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

long flowspec__map_get(const flowspec__map *m, const char *key)
{
    size_t i = (size_t)hash(key) & (m->cap - 1);
    for (; m->keys[i]; i = (i + 1) & (m->cap - 1))
        if (strcmp(m->keys[i], key) == 0)
            return (long)m->vals[i];
    return -1;
}

long flowspec_find(const flowspec *s, const char *name)
{
    if (s->index)
        return flowspec__map_get(s->index, name);
    for (size_t i = 0; i < s->n_tasks; i++)
        if (strcmp(s->tasks[i].name, name) == 0)
            return (long)i;
    return -1;
}

/* Appends " -> name" style pieces to the cycle message, ending with "..." if it would not fit. */
static void cycle_add(char *err, size_t *len, const char *sep, const char *name, bool *full)
{
    size_t need = strlen(sep) + strlen(name);
    if (*full || !err)
        return;
    /* Keep room for " -> ..." and the closing " -> NAME" (names are at most 128 bytes). */
    if (*len + need + 8 + 4 + 128 + 1 >= FLOWSPEC_ERR_MAX) {
        memcpy(err + *len, " -> ...", 8);
        *len += 7;
        *full = true;
        return;
    }
    *len += (size_t)snprintf(err + *len, FLOWSPEC_ERR_MAX - *len, "%s%s", sep, name);
}

/* Writes "cycle: a -> b -> c -> a" in run order. stack[w..top] are on the DFS path, each entry
 * an upstream of the one before, and stack[w] is an upstream of stack[top]. */
static int report_cycle(const flowspec *s, const size_t *stack, size_t w, size_t top, char *err)
{
    size_t len = 0;
    bool full = false;
    cycle_add(err, &len, "cycle: ", s->tasks[stack[w]].name, &full);
    for (size_t k = top; k > w; k--)
        cycle_add(err, &len, " -> ", s->tasks[stack[k]].name, &full);
    if (err) /* always fits: cycle_add keeps room for it */
        snprintf(err + len, FLOWSPEC_ERR_MAX - len, " -> %s", s->tasks[stack[w]].name);
    return -EINVAL;
}

enum { WHITE = 0, GREY, BLACK };

int flowspec__check_acyclic(const flowspec *s, char *err)
{
    size_t n = s->n_tasks;
    unsigned char *color = calloc(n ? n : 1, 1);
    size_t *stack = malloc((n ? n : 1) * sizeof(*stack)); /* task on the DFS path */
    size_t *next = malloc((n ? n : 1) * sizeof(*next));   /* next upstream edge to follow */
    size_t *depth = malloc((n ? n : 1) * sizeof(*depth)); /* stack position of a GREY task */
    int rc = 0;
    if (!color || !stack || !next || !depth) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t root = 0; root < n && rc == 0; root++) {
        if (color[root] != WHITE)
            continue;
        size_t top = 0;
        stack[0] = root, next[0] = 0, depth[root] = 0, color[root] = GREY;
        for (;;) {
            const flowspec_task *t = &s->tasks[stack[top]];
            if (next[top] == t->n_upstream) {
                color[stack[top]] = BLACK;
                if (top-- == 0)
                    break;
                continue;
            }
            size_t u = t->upstream[next[top]++];
            if (color[u] == GREY) {
                rc = report_cycle(s, stack, depth[u], top, err);
                break;
            }
            if (color[u] == WHITE) {
                top++;
                stack[top] = u, next[top] = 0, depth[u] = top, color[u] = GREY;
            }
        }
    }
out:
    free(color);
    free(stack);
    free(next);
    free(depth);
    return rc;
}

/* Writes s as a DOT string body (no quotes), escaping what DOT treats specially; control
 * characters become spaces. Stops after `max` bytes of input (0 = no limit), adding "...". */
static void dot_escaped(FILE *f, const char *s, size_t max)
{
    size_t i = 0;
    for (; s[i] && (max == 0 || i < max); i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fputc('\\', f);
        fputc(c < 0x20 || c == 0x7f ? ' ' : c, f);
    }
    if (s[i]) {
        /* Finish a UTF-8 sequence we cut into, so the label stays valid UTF-8. */
        for (; ((unsigned char)s[i] & 0xC0) == 0x80; i++)
            fputc(s[i], f);
        if (s[i])
            fputs("...", f);
    }
}

/* Short description of what a task runs ("m.f:fn" or "$ argv..."), cut at ~40 bytes, plus the
 * trigger rule when it is not the default. */
static void dot_label(FILE *f, const flowspec_task *t)
{
    static const char *const rules[] = {"all_success", "all_done", "one_failed", "none_failed"};
    enum { SHOW = 40 };
    dot_escaped(f, t->name, 0);
    if (t->map) { /* one box stands for every child: NAME[*] */
        fputs("[*] over ", f);
        dot_escaped(f, t->map->over, 0);
        if (t->map->max_parallel)
            fprintf(f, "\\nmax_parallel %d", t->map->max_parallel);
        if (t->map->allow_failures)
            fprintf(f, "\\nallow_failures %d", t->map->allow_failures);
    }
    if (t->callable) {
        fputs("\\n", f);
        dot_escaped(f, t->callable, SHOW);
    } else if (t->command_len) {
        char shown[SHOW * 2];
        size_t len = 0;
        for (size_t i = 0; i < t->command_len && len < sizeof(shown) - 1; i++)
            len += (size_t)snprintf(shown + len, sizeof(shown) - len, "%s%s", i ? " " : "",
                                    t->command[i]);
        fputs("\\n$ ", f);
        dot_escaped(f, shown, SHOW);
    }
    if (t->def.trigger != SCHED_ALL_SUCCESS && (unsigned)t->def.trigger < 4)
        fprintf(f, "\\ntrigger: %s", rules[t->def.trigger]);
    if (t->executor) { /* its own ECS task per attempt */
        fputs("\\necs", f);
        if (t->executor->cpu)
            fprintf(f, " %d/%d", t->executor->cpu, t->executor->memory);
        if (t->executor->capacity_provider)
            fprintf(f, " %s", t->executor->capacity_provider);
    }
}

void flowspec_write_dot(const flowspec *s, FILE *f)
{
    fputs("digraph \"", f);
    dot_escaped(f, s->name ? s->name : "", 0);
    fputs("\" {\n  rankdir=LR;\n  node [shape=box];\n", f);
    for (size_t i = 0; i < s->n_tasks; i++) {
        fputs("  \"", f);
        dot_escaped(f, s->tasks[i].name, 0);
        fputs("\" [label=\"", f);
        dot_label(f, &s->tasks[i]);
        fputs(s->tasks[i].map ? "\", style=\"rounded,bold\", peripheries=2];\n" : "\"];\n", f);
    }
    for (size_t i = 0; i < s->n_tasks; i++) {
        const flowspec_task *t = &s->tasks[i];
        for (size_t k = 0; k < t->n_upstream; k++) {
            fputs("  \"", f);
            dot_escaped(f, s->tasks[t->upstream[k]].name, 0);
            fputs("\" -> \"", f);
            dot_escaped(f, t->name, 0);
            /* The edge a map fans out over. */
            fputs(t->map && t->upstream[k] == t->map->over_index
                      ? "\" [style=bold, label=\"map\"];\n"
                      : "\";\n",
                  f);
        }
    }
    fputs("}\n", f);
}
