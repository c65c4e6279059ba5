/* sched_map.c - dynamic fan-out in the plan (sched.h, "dynamic fan-out"): map nodes set up at
 * sched_new(), expanded into children at run time (the one allocation after sched_new()), the
 * per-map bound on released children, the join once every child has ended, and the verdict
 * with allow_failures. Pure data, like sched.c. */
#include "scheduler/sched_int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Releases the next children of map m into the ready queue while it has room (map_max_parallel
 * counts released children that are not terminal, so one waiting out a retry delay keeps its
 * place and the bound holds exactly). Nothing is released once the drain started. */
static void map_release(sched_plan *p, struct map_state *m)
{
    while (!p->draining && m->next < m->n &&
           (m->max_par <= 0 || m->admitted < (uint32_t)m->max_par)) {
        uint32_t c = m->first + m->next++;
        if (p->tasks[c].state != SCHED_PENDING)
            continue;
        sched__heap_push(p, &p->ready, c);
        m->admitted++;
    }
}

/* A child of a map became terminal: count it, release the next one, join the map when it was
 * the last. */
void sched__child_done(sched_plan *p, uint32_t i)
{
    struct task *t = &p->tasks[i];
    struct map_state *m = &p->maps[p->tasks[t->parent].map];
    uint32_t k = i - m->first;
    if (k < m->next)
        m->admitted--;
    m->done++;
    if (t->state == SCHED_FAILED && m->failed++ == 0)
        m->first_failed = i;
    if (t->state == SCHED_CANCELLED)
        m->cancelled++;
    map_release(p, m);
    if (m->done == m->n)
        p->joined[p->n_joined++] = m->node;
}

/* Sets up the map nodes: `over` must be one of the task's upstream tasks. A map node runs one
 * attempt (its retries and timeout are its children's). */
int sched__init_maps(sched_plan *p, const sched_task_def *defs)
{
    for (size_t i = 0; i < p->n; i++)
        p->n_maps += defs[i].map;
    p->maps = calloc(p->n_maps ? p->n_maps : 1, sizeof *p->maps);
    p->joined = malloc((p->n_maps ? p->n_maps : 1) * sizeof *p->joined);
    if (!p->maps || !p->joined)
        return -ENOMEM;
    p->footprint += p->n_maps * (sizeof *p->maps + sizeof *p->joined);
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) {
        const sched_task_def *d = &defs[i];
        bool found = false;
        for (size_t u = 0; d->map && u < d->n_upstream; u++)
            found |= d->upstream[u] == d->map_over;
        if (!d->map)
            continue;
        if (!found)
            return -EINVAL;
        struct map_state *m = &p->maps[k];
        m->node = (uint32_t)i;
        m->over = (uint32_t)d->map_over;
        m->max_par = d->map_max_parallel;
        m->allow_fail = d->map_allow_failures;
        m->child_attempts = p->tasks[i].max_attempts;
        p->tasks[i].max_attempts = 1;
        p->tasks[i].map = (uint32_t)k++;
    }
    return 0;
}

/* Grows an array of `n` elements of `size` bytes to `cap`, zeroing the new part. */
static int grow(void *pp, size_t n, size_t cap, size_t size)
{
    void **ap = pp;
    char *a = realloc(*ap, cap * size);
    if (!a)
        return -ENOMEM;
    memset(a + n * size, 0, (cap - n) * size);
    *ap = a;
    return 0;
}

/* Makes room for `add` more tasks in every per-task array. Grown arrays stay valid on failure
 * (only larger): the plan is unchanged but for capacity. */
static int grow_plan(sched_plan *p, size_t add)
{
    size_t n = p->n, cap = n + add;
    if (grow(&p->tasks, n, cap, sizeof *p->tasks) || grow(&p->ready.a, n, cap, sizeof(uint32_t)) ||
        grow(&p->retry.a, n, cap, sizeof(uint32_t)) ||
        grow(&p->timeout.a, n, cap, sizeof(uint32_t)))
        return -ENOMEM;
    /* The work ring is indexed modulo p->n: lay it out from 0 before the modulus changes. */
    uint32_t *w = malloc(cap * sizeof *w);
    if (!w)
        return -ENOMEM;
    for (size_t k = 0; k < p->work_len; k++)
        w[k] = p->work[(p->work_head + k) % n];
    free(p->work);
    p->work = w;
    p->work_head = 0;
    p->footprint += add * (sizeof *p->tasks + 5 * sizeof(uint32_t));
    return 0;
}

/* "NAME[0]\0NAME[1]\0..." for n children of the map node `name`. */
static char *child_names(const char *name, size_t n, size_t *len)
{
    size_t l = strlen(name), total = 0;
    for (size_t k = 0; k < n; k++)
        total += l + 3 + (size_t)snprintf(NULL, 0, "%zu", k);
    char *names = malloc(total ? total : 1), *q = names;
    for (size_t k = 0; names && k < n; k++)
        q += sprintf(q, "%s[%zu]", name, k) + 1;
    *len = total;
    return names;
}

int sched_expand(sched_plan *p, size_t task, size_t n)
{
    if (task >= p->n || p->tasks[task].map == NO_POS || p->tasks[task].state != SCHED_RUNNING ||
        p->maps[p->tasks[task].map].expanded || n > SCHED_MAX_CHILDREN || p->n + n >= UINT32_MAX)
        return -EINVAL;
    size_t names_len = 0;
    char *names = child_names(p->tasks[task].name, n, &names_len);
    if (!names || grow_plan(p, n)) {
        free(names);
        return -ENOMEM;
    }
    struct task *node = &p->tasks[task];
    struct map_state *m = &p->maps[node->map];
    m->names = names;
    m->first = (uint32_t)p->n;
    m->n = (uint32_t)n;
    m->expanded = true;
    const char *name = names;
    for (size_t k = 0; k < n; k++) {
        struct task *c = &p->tasks[p->n + k];
        *c = *node; /* the scheduling fields; the rest is reset below */
        c->name = name;
        name += strlen(name) + 1;
        c->due_ms = c->retry_delay_ms = 0;
        c->n_up = c->n_succ = c->n_fail = c->n_skip = c->n_cancel = 0;
        c->heap_pos = c->cause = c->root = c->map = NO_POS;
        c->parent = (uint32_t)task;
        c->attempt = 0;
        c->max_attempts = m->child_attempts;
        c->state = SCHED_PENDING;
        c->skip_cause = SCHED_SKIP_NONE;
        c->finishing = false;
    }
    p->n += n;
    p->count[SCHED_PENDING] += n;
    p->footprint += names_len;
    if (n == 0)
        p->joined[p->n_joined++] = (uint32_t)task;
    map_release(p, m);
    return 0;
}

long sched_next_joined(sched_plan *p)
{
    return p->n_joined > 0 ? (long)p->joined[--p->n_joined] : -1;
}

sched_exit sched_map_outcome(sched_plan *p, size_t task, const char **reason)
{
    assert(sched_task_is_map(p, task));
    const struct map_state *m = &p->maps[p->tasks[task].map];
    *reason = NULL;
    if (m->cancelled > 0) {
        *reason = sched__reasonf(p, "%u of %u children were cancelled", m->cancelled, m->n);
        return SCHED_EXIT_CANCELLED;
    }
    if (m->failed > (uint32_t)(m->allow_fail > 0 ? m->allow_fail : 0)) {
        *reason =
            sched__reasonf(p, "%u of %u children failed (allow_failures %d); the first was \"%s\"",
                           m->failed, m->n, m->allow_fail, p->tasks[m->first_failed].name);
        return SCHED_EXIT_FAILED;
    }
    return SCHED_EXIT_OK;
}

bool sched_task_is_map(const sched_plan *p, size_t task)
{
    return task < p->n && p->tasks[task].map != NO_POS;
}

long sched_task_parent(const sched_plan *p, size_t task)
{
    return task < p->n && p->tasks[task].parent != NO_POS ? (long)p->tasks[task].parent : -1;
}

size_t sched_task_map_index(const sched_plan *p, size_t task)
{
    long parent = sched_task_parent(p, task);
    return parent < 0 ? 0 : task - p->maps[p->tasks[parent].map].first;
}

bool sched_map_children(const sched_plan *p, size_t task, size_t *first, size_t *n)
{
    if (!sched_task_is_map(p, task) || !p->maps[p->tasks[task].map].expanded)
        return false;
    *first = p->maps[p->tasks[task].map].first;
    *n = p->maps[p->tasks[task].map].n;
    return true;
}

size_t sched_map_failed(const sched_plan *p, size_t task)
{
    return sched_task_is_map(p, task) ? p->maps[p->tasks[task].map].failed : 0;
}
