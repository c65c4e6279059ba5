/* resume_map.c - resume of a map task's children (docs/agent.md "Resume", map tasks): the
 * SUCCEEDED items "MAP[k]" of the source chain are kept per map (the few attributes reuse reads,
 * the nearest run per index), their results fetched and verified by resume.c with the tasks',
 * and, when the map expands, every child whose task_hash is the one just computed for it is
 * marked reused (result moved into results/, task_reused); the others run. */
#include "agent/durable.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "MAP[k]" naming a child of a map task of the spec (k in decimal, no leading zero, below
 * DAGY_MAX_MAP_ITEMS): the map's index, k in *k; else -1. */
long agent__resume_kid_of(const run_state *r, const char *name, size_t *k)
{
    const char *br = strchr(name, '[');
    size_t n = br ? (size_t)(br - name) : 0, len = strlen(name), digits = len - n - 2;
    char base[160];
    if (!br || !n || n >= sizeof base || len < n + 3 || name[len - 1] != ']' ||
        strspn(br + 1, "0123456789") != digits || digits > 7 || (br[1] == '0' && digits > 1))
        return -1;
    memcpy(base, name, n);
    base[n] = '\0';
    long m = flowspec_find(r->spec, base);
    unsigned long v = strtoul(br + 1, NULL, 10);
    if (m < 0 || !r->spec->tasks[m].map || v >= (unsigned long)r->cfg->max_map_items)
        return -1;
    *k = (size_t)v;
    return m;
}

/* The attributes of a child item that its reuse reads: a map of 10^6 children keeps that
 * much, not whole items, until it expands. */
static cJSON *kid_copy(const cJSON *it)
{
    static const char *const keep[] = {"task_name",   "task_hash",     "result_sha256",
                                       "result_path", "result_s3_uri", "result_bytes"};
    cJSON *o = cJSON_CreateObject();
    for (size_t j = 0; o && j < sizeof keep / sizeof *keep; j++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, keep[j]);
        cJSON *d = v ? cJSON_Duplicate(v, false) : NULL;
        if (v && (!d || !cJSON_AddItemToObject(o, keep[j], d))) {
            cJSON_Delete(d);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

/* Keeps a SUCCEEDED child item of map m (a copy) for its expansion; out of memory: that child
 * simply runs again. */
void agent__resume_kid_add(run_state *r, int depth, size_t m, size_t k, const cJSON *it,
                           const char *src_run)
{
    durable_task *t = &r->durable->tasks[m];
    if (t->n_kids == t->cap_kids) {
        size_t cap = t->cap_kids ? t->cap_kids * 2 : 16;
        durable_kid *nk = realloc(t->kids, cap * sizeof *nk);
        if (!nk)
            return;
        t->kids = nk;
        t->cap_kids = cap;
    }
    durable_kid *kd = &t->kids[t->n_kids];
    *kd = (durable_kid){kid_copy(it), strdup(src_run), k, depth, false};
    if (!kd->item || !kd->src_run) {
        cJSON_Delete(kd->item);
        free(kd->src_run);
        return;
    }
    t->n_kids++;
}

/* Orders kids by index, the nearest run first. */
static int cmp_kid(const void *a, const void *b)
{
    const durable_kid *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return (x->depth > y->depth) - (x->depth < y->depth);
}

/* Keeps, per map and index, the child of the nearest run of the chain. */
void agent__resume_kids_dedupe(run_state *r)
{
    for (size_t i = 0; i < r->spec->n_tasks; i++) {
        durable_task *t = &r->durable->tasks[i];
        size_t out = 0;
        if (t->n_kids > 1)
            qsort(t->kids, t->n_kids, sizeof *t->kids, cmp_kid);
        for (size_t j = 0; j < t->n_kids; j++) {
            if (out && t->kids[out - 1].index == t->kids[j].index) {
                cJSON_Delete(t->kids[j].item);
                free(t->kids[j].src_run);
                continue;
            }
            t->kids[out++] = t->kids[j];
        }
        t->n_kids = out;
    }
}

void agent__resume_kids_free(run_state *r, durable_task *t, bool unstage)
{
    for (size_t j = 0; j < t->n_kids; j++) {
        durable_kid *kd = &t->kids[j];
        char *f = unstage && kd->item && r->durable->stage_dir
                      ? agent__resume_stage_path(r, agent__resume_str(kd->item, "task_name"))
                      : NULL;
        if (f)
            unlink(f);
        free(f);
        cJSON_Delete(kd->item);
        free(kd->src_run);
    }
    free(t->kids);
    t->kids = NULL;
    t->n_kids = t->cap_kids = 0;
}

/* Reuses child c (kept source child kd) if its task_hash is the one the expansion computed and
 * its result is in place; the child takes kd's item. */
static bool reuse_kid(run_state *r, size_t c, durable_kid *kd)
{
    agent_durable *d = r->durable;
    durable_task *ct = &d->tasks[c];
    const char *hash = agent__resume_str(kd->item, "task_hash");
    if (!kd->ok || !d->hashes[c][0] || !hash || strcmp(hash, d->hashes[c]))
        return false;
    ct->has_result = agent__resume_str(kd->item, "result_sha256") != NULL;
    if (ct->has_result &&
        !agent__resume_place_staged(r, agent__resume_str(kd->item, "task_name"), c))
        return false;
    ct->src_item = kd->item;
    ct->src_run = kd->src_run;
    kd->item = NULL;
    kd->src_run = NULL;
    ct->reuse = true;
    r->tasks[c].has_result = ct->has_result;
    sched_mark_reused(r->plan, c); /* on_transition: agent__durable_reused, task_reused */
    return true;
}

void agent__durable_map_reuse(run_state *r, size_t i, size_t first, size_t n)
{
    agent_durable *d = r->durable;
    if (!d || !d->tasks || i >= r->spec->n_tasks || !d->tasks[i].kids || r->cfg->only_task)
        return; /* an ECS child runs its one task: its siblings are the parent's */
    durable_task *t = &d->tasks[i];
    const flowspec_task *ft = &r->spec->tasks[i];
    bool ups = true; /* an upstream fell out in agent__durable_apply: its inputs changed */
    for (size_t u = 0; ups && u < ft->n_upstream; u++)
        ups = d->tasks[ft->upstream[u]].reuse;
    size_t reused = 0;
    for (size_t j = 0; ups && j < t->n_kids; j++)
        if (t->kids[j].index < n && reuse_kid(r, first + t->kids[j].index, &t->kids[j]))
            reused++;
    agent__resume_kids_free(r, t, true);
    if (reused) {
        d->n_reused += reused;
        status_set_num(r->run_item, "tasks_reused", (double)d->n_reused);
        status_touch(r->status, r->run_item);
    }
    if (d->kid_maps && --d->kid_maps == 0)
        agent__resume_unstage(d);
}
