/* status.c - the status store: one cJSON item per run / task run, written through a backend with
 * at most one write in flight per item. Changes are coalesced: a touch only marks the item, and
 * a timer sends the marked items that are due, so several changes made in one callback (or
 * while a write is in flight) leave as one write carrying the latest state.
 *
 * Backends may ask for a coalescing window (status_backend.coalesce_ms: a task item is due that
 * long after it became ready) and bound the task-item writes in flight (max_inflight): the
 * rest wait in the ready list, FIFO, with the run item always first, and a write's snapshot is
 * taken when it is sent, so an item that waited leaves with every change made meanwhile.
 *
 * Each write is a snapshot stamped with the item's next status_seq and updated_at; the backends'
 * conditions (newer seq, no terminal overwrite) make late or repeated writes harmless. A write
 * the condition refuses is read back: only this agent's own newer item makes it an answer. A
 * write that failed transiently is retried with backoff; one refused as it is (invalid, no
 * permission, full or read-only disk, someone else's item) is logged once and waits for the
 * item's next change. Nothing is dropped until a flush gives up at its deadline and logs every
 * unwritten item as `status_write_failed`. Every string enters an item through status_set_str,
 * which makes it valid UTF-8. */
#include "agent/status.h"
#include "agent/log.h"
#include "proto/util.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Where an item stands. Every transition goes through set_state(). */
typedef enum {
    IT_CLEAN,    /* latest state confirmed by the backend (or never touched) */
    IT_READY,    /* changed; queued for the next batch */
    IT_INFLIGHT, /* a snapshot is being written; `dirty` says it changed since */
    IT_BACKOFF,  /* the last write failed; waits for the retry timer */
    IT_GAVE_UP,  /* failed permanently during a flush; reported by it */
} it_state;

typedef struct st_item st_item;
typedef struct st_write st_write;

struct st_item {
    cJSON *obj;   /* the item; NULL while parked */
    char *parked; /* a parked item: "run_id\0task_name\0json" (see park()) */
    status_kind kind;
    it_state state;
    bool dirty;        /* touched while in flight */
    uint64_t seq;      /* status_seq of the last snapshot sent */
    int fails;         /* consecutive failed writes */
    uint64_t retry_at; /* loop time of the next try (IT_BACKOFF) */
    char *err;         /* last error, NULL after a success */
    st_write *w;       /* the write in flight (IT_INFLIGHT) */
    bool released;     /* the caller is done with it: free once clean (status_release) */
    bool reported;     /* its current failure was logged as status_write_failed */
    uint64_t sent_ms;  /* loop time the write in flight was sent */
    uint64_t change_ms, next_change_ms; /* oldest unconfirmed change; one made while in flight */
    uint64_t due_ms; /* loop time it may be sent (IT_READY): after the coalescing window */
    size_t idx;      /* position in status_store.items */
    uint64_t hash;
    st_item *hnext;       /* hash chain */
    st_item *prev, *next; /* ready or backoff list */
};

/* A write's context. Separate from the item so status_store_free() can orphan writes still in
 * flight: their late completion then only frees the ticket. */
struct st_write {
    status_store *s;
    st_item *it;
};

typedef struct {
    st_item *head, *tail;
} st_list;

struct status_store {
    uv_loop_t *loop;
    status_backend *be;
    uv_timer_t kick;     /* 0 ms: send the ready items on the next turn */
    uv_timer_t retry;    /* earliest backoff expiry */
    uv_timer_t deadline; /* flush timeout */
    uv_timer_t watch;    /* 1 s: a write unanswered for STATUS_DEGRADED_MS is an outage */
    int open_handles;
    st_item **buckets; /* hash table by key */
    size_t nbuckets;
    st_item **items; /* every item, in creation order */
    size_t n, cap;
    st_list ready, backoff;
    size_t n_pending;        /* items READY, INFLIGHT or BACKOFF */
    uint32_t inflight_tasks; /* task items INFLIGHT (bounded by backend.max_inflight) */
    bool failing;            /* a write failed and none succeeded since (log once per outage) */
    uint64_t seq_base;       /* this agent's status_seq range starts above it */
    bool flushing;
    void (*flush_done)(void *ud, bool failed_run, int n_failed);
    void *flush_ud;
    status_lag_cb lag_cb; /* status-write lag samples (status_store_on_lag) */
    void *lag_ud;
    size_t n_lag;
    double lag[STATUS_LAG_BATCH];
};

#define BACKOFF_FIRST_MS 1000
#define BACKOFF_CAP_MS   30000
#define BACKOFF_FLUSH_MS 1000 /* while flushing, time is short: retry at least this often */

static void list_push(st_list *l, st_item *it)
{
    it->next = NULL;
    it->prev = l->tail;
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
}

/* Puts an item first (the run item: it never waits behind task items). */
static void list_push_front(st_list *l, st_item *it)
{
    it->prev = NULL;
    it->next = l->head;
    if (l->head)
        l->head->prev = it;
    else
        l->tail = it;
    l->head = it;
}

static void list_del(st_list *l, st_item *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        l->head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        l->tail = it->prev;
    it->prev = it->next = NULL;
}

static bool is_pending(it_state st)
{
    return st == IT_READY || st == IT_INFLIGHT || st == IT_BACKOFF;
}

/* The one place an item changes state: keeps the lists, the pending count and the count of
 * task writes in flight in step. A ready item is due after the backend's coalescing window
 * (the run item, and every item during a flush, at once); the run item goes first. */
static void set_state(status_store *s, st_item *it, it_state to)
{
    bool task = it->kind == STATUS_TASK;
    if (it->state == IT_READY)
        list_del(&s->ready, it);
    else if (it->state == IT_BACKOFF)
        list_del(&s->backoff, it);
    s->n_pending += (size_t)is_pending(to) - (size_t)is_pending(it->state);
    s->inflight_tasks += (uint32_t)(task && to == IT_INFLIGHT);
    s->inflight_tasks -= (uint32_t)(task && it->state == IT_INFLIGHT);
    it->state = to;
    if (to == IT_READY) {
        it->due_ms = uv_now(s->loop) + (task && !s->flushing ? s->be->coalesce_ms : 0);
        if (task)
            list_push(&s->ready, it);
        else
            list_push_front(&s->ready, it);
    } else if (to == IT_BACKOFF) {
        list_push(&s->backoff, it);
    }
}

/* True when no further task-item write may start (backend.max_inflight reached). */
static bool slots_full(const status_store *s)
{
    return s->be->max_inflight && s->inflight_tasks >= s->be->max_inflight;
}

static void on_kick(uv_timer_t *t);
static void on_retry(uv_timer_t *t);
static void on_deadline(uv_timer_t *t);

/* (Re)arms the send timer for the first ready item's due time (at once while flushing: the
 * kick also completes a flush). Items are due in the order they became ready, so the head's
 * time is the earliest. Nothing to arm when nothing is ready, or when every slot is taken and
 * only task items wait: the next completion kicks again. */
static void kick(status_store *s)
{
    st_item *head = s->ready.head;
    uint64_t now = uv_now(s->loop);
    if (!head) {
        if (s->flushing && s->n_pending == 0)
            uv_timer_start(&s->kick, on_kick, 0, 0);
        return;
    }
    if (head->kind == STATUS_TASK && slots_full(s))
        return;
    uv_timer_start(&s->kick, on_kick, !s->flushing && head->due_ms > now ? head->due_ms - now : 0,
                   0);
}

/* ---- items: hash table by kind + run_id + task_name ---- */

/* The key attributes are the item's first members (status_item adds them first), or the first
 * strings of a parked item's text. */
static const char *item_run(const st_item *it)
{
    return it->obj ? it->obj->child->valuestring : it->parked;
}

static const char *item_task(const st_item *it)
{
    if (it->kind != STATUS_TASK)
        return NULL;
    return it->obj ? it->obj->child->next->valuestring : it->parked + strlen(it->parked) + 1;
}

/* A released item that still waits for its write (for a slot, the coalescing window, a retry)
 * is parked: kept as text instead of a cJSON tree, about a quarter of the memory. Behind a slow
 * store a thousand of them may wait (bench/ddb_dag.sh, peak RSS). Layout: run_id NUL task_name
 * NUL json NUL, then the exact doubles of the number members in member order (cJSON prints a
 * number only to within an ulp). Every member comes back as it was, JSON null included (the
 * backends REMOVE it). An item with a non-finite number, or no memory: stays a tree.
 * While at most backend.park_above items wait, none is parked: parking prints the tree and its
 * write parses it back, which cost ~5 % of the agent's CPU on a DAG of short tasks with local
 * status, where an item waits only the 100 ms coalescing window (256 trees: about 0.5 MiB). */
static void park(status_store *s, st_item *it)
{
    if (!it->obj || !it->released || it->state == IT_INFLIGHT || it->state == IT_CLEAN ||
        s->n_pending <= s->be->park_above)
        return;
    size_t nn = 0;
    for (const cJSON *m = it->obj->child; m; m = m->next) {
        if (cJSON_IsNumber(m) && !isfinite(m->valuedouble))
            return;
        nn += cJSON_IsNumber(m);
    }
    char *json = cJSON_PrintUnformatted(it->obj);
    const char *task = item_task(it) ? item_task(it) : "";
    size_t rl = strlen(item_run(it)) + 1, tl = strlen(task) + 1, jl = json ? strlen(json) + 1 : 0;
    char *p = json ? malloc(rl + tl + jl + nn * sizeof(double)) : NULL;
    if (p) {
        memcpy(p, item_run(it), rl);
        memcpy(p + rl, task, tl);
        memcpy(p + rl + tl, json, jl);
        char *d = p + rl + tl + jl;
        for (const cJSON *m = it->obj->child; m; m = m->next)
            if (cJSON_IsNumber(m)) {
                memcpy(d, &m->valuedouble, sizeof(double));
                d += sizeof(double);
            }
        cJSON_Delete(it->obj);
        it->obj = NULL;
        it->parked = p;
    }
    cJSON_free(json);
}

/* The item's tree, parsed back from its text if it is parked; NULL when out of memory. */
static cJSON *item_obj(st_item *it)
{
    if (it->obj || !it->parked)
        return it->obj;
    const char *task = it->parked + strlen(it->parked) + 1;
    const char *json = task + strlen(task) + 1, *d = json + strlen(json) + 1;
    cJSON *obj = cJSON_Parse(json);
    if (!obj)
        return NULL;
    for (cJSON *m = obj->child; m; m = m->next)
        if (cJSON_IsNumber(m)) {
            double v;
            memcpy(&v, d, sizeof v);
            d += sizeof v;
            cJSON_SetNumberValue(m, v);
        }
    it->obj = obj;
    free(it->parked);
    it->parked = NULL;
    return obj;
}

/* FNV-1a over kind, run id, NUL, task name. */
static uint64_t hash_key(status_kind kind, const char *run_id, const char *task)
{
    uint64_t h = (1469598103934665603ULL ^ (unsigned)kind) * 1099511628211ULL;
    for (const char *k = run_id; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ULL;
    h *= 1099511628211ULL;
    for (const char *k = task ? task : ""; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ULL;
    return h;
}

static st_item *lookup(status_store *s, status_kind kind, const char *run_id, const char *task)
{
    uint64_t h = hash_key(kind, run_id, task);
    for (st_item *it = s->buckets[h & (s->nbuckets - 1)]; it; it = it->hnext)
        if (it->hash == h && it->kind == kind && !strcmp(item_run(it), run_id) &&
            (!task || !strcmp(item_task(it), task)))
            return it;
    return NULL;
}

/* Doubles the table when it is full (load factor 1 keeps chains short). */
static int grow(status_store *s)
{
    if (s->n < s->nbuckets)
        return 0;
    size_t nb = s->nbuckets * 2;
    st_item **b = calloc(nb, sizeof *b);
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < s->n; i++) {
        st_item *it = s->items[i];
        it->hnext = b[it->hash & (nb - 1)];
        b[it->hash & (nb - 1)] = it;
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = nb;
    return 0;
}

/* Appends a new item to the table and the item array. */
static int insert(status_store *s, st_item *it)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        st_item **p = realloc(s->items, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        s->items = p;
        s->cap = cap;
    }
    if (grow(s))
        return -ENOMEM;
    it->hnext = s->buckets[it->hash & (s->nbuckets - 1)];
    s->buckets[it->hash & (s->nbuckets - 1)] = it;
    it->idx = s->n;
    s->items[s->n++] = it;
    return 0;
}

static void item_free(st_item *it);

/* Takes a clean, released item out of the table and the array, and frees it. */
static void item_remove(status_store *s, st_item *it)
{
    st_item **pp = &s->buckets[it->hash & (s->nbuckets - 1)];
    while (*pp != it)
        pp = &(*pp)->hnext;
    *pp = it->hnext;
    s->items[it->idx] = s->items[--s->n];
    s->items[it->idx]->idx = it->idx;
    item_free(it);
}

static void item_free(st_item *it)
{
    cJSON_Delete(it->obj);
    free(it->parked);
    free(it->err);
    free(it);
}

/* The attribute names of contract section 6. Items use these shared constants as member names
 * instead of a copy per member: with thousands of task items that is a large part of their
 * memory (the agent's peak RSS is a benchmark goal). */
static const char *const known_names[] = {
    "run_id",          "task_name",    "task_run_id",       "status",
    "status_seq",      "updated_at",   "attempt",           "max_attempts",
    "started_at",      "ended_at",     "duration_seconds",  "exit_code",
    "error_message",   "trace_s3_uri", "flow_name",         "flow_version",
    "org_id",          "environment",  "executor",          "external_id",
    "correlation_id",  "parameters",   "trigger_source",    "triggered_by",
    "created_at",      "completed_at", "last_heartbeat_at", "tasks_total",
    "tasks_succeeded", "tasks_failed", "tasks_skipped",     "tasks_cancelled",
    "stop_reason"};

/* The item's member `key`, added (as JSON null) if absent. NULL on allocation failure. */
static cJSON *member(cJSON *item, const char *key)
{
    cJSON *m = cJSON_GetObjectItemCaseSensitive(item, key);
    if (m)
        return m;
    if (!(m = cJSON_CreateNull()))
        return NULL;
    for (size_t i = 0; i < sizeof known_names / sizeof *known_names; i++)
        if (!strcmp(key, known_names[i])) {
            cJSON_AddItemToObjectCS(item, known_names[i], m); /* shares the constant name */
            return m;
        }
    if (!cJSON_AddItemToObject(item, key, m)) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

/* Changes a member's value in place (keeps the node and its name: no churn per transition). */
static void member_set(cJSON *m, int type, char *str, double num)
{
    if (m->valuestring && !(m->type & cJSON_IsReference))
        cJSON_free(m->valuestring);
    m->valuestring = str;
    m->type = (m->type & cJSON_StringIsConst) | type;
    m->valuedouble = num;
    m->valueint = num >= (double)INT_MAX ? INT_MAX : num <= (double)INT_MIN ? INT_MIN : (int)num;
}

cJSON *status_item(status_store *s, status_kind kind, const char *run_id, const char *task_name)
{
    assert(run_id && (kind == STATUS_RUN) == (task_name == NULL));
    st_item *it = lookup(s, kind, run_id, task_name);
    if (it) { /* asked for again: the caller holds it again, so it is no longer released */
        cJSON *obj = item_obj(it);
        it->released = it->released && !obj;
        return obj;
    }
    if (!(it = calloc(1, sizeof *it)) || !(it->obj = cJSON_CreateObject())) {
        free(it);
        return NULL;
    }
    it->kind = kind;
    it->seq = s->seq_base;
    it->hash = hash_key(kind, run_id, task_name);
    status_set_str(it->obj, "run_id", run_id);
    if (task_name)
        status_set_str(it->obj, "task_name", task_name);
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(it->obj, "run_id")) ||
        (task_name && !cJSON_IsString(it->obj->child->next)) || insert(s, it)) {
        item_free(it);
        return NULL;
    }
    return it->obj;
}

/* The store's record of an item object, found again from its key attributes. */
static st_item *find(status_store *s, const cJSON *obj)
{
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(obj, "run_id");
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(obj, "task_name");
    if (!cJSON_IsString(run))
        return NULL;
    const char *tn = cJSON_IsString(task) ? task->valuestring : NULL;
    st_item *it = lookup(s, tn ? STATUS_TASK : STATUS_RUN, run->valuestring, tn);
    return it && it->obj == obj ? it : NULL;
}

void status_touch(status_store *s, cJSON *item)
{
    st_item *it = item ? find(s, item) : NULL;
    assert(!item || it); /* items come from status_item() and keep their key attributes */
    if (!it)
        return;
    it->reported = false; /* a new state: a failure to write it is news again */
    uint64_t *since = it->state == IT_INFLIGHT ? &it->next_change_ms : &it->change_ms;
    if (!*since)
        *since = uv_now(s->loop);
    switch (it->state) {
    case IT_CLEAN:
    case IT_GAVE_UP:
        /* The run item never waits for the coalescing window nor for a slot: RUNNING must
         * replace the launcher's QUEUED at once, and the end of a run is news too. */
        set_state(s, it, IT_READY);
        kick(s);
        break;
    case IT_INFLIGHT:
        it->dirty = true; /* the completion sends the latest state */
        break;
    case IT_READY:
    case IT_BACKOFF:
        break; /* already due: the write will carry this change */
    }
}

void status_release(status_store *s, cJSON *item)
{
    st_item *it = item ? find(s, item) : NULL;
    assert(!item || it);
    if (!it)
        return;
    it->released = true;
    if (it->state == IT_CLEAN)
        item_remove(s, it);
    else
        park(s, it);
}

/* A cJSON-allocated copy of val that is valid UTF-8 (proto_utf8_clean's repair), or NULL. */
static char *utf8_copy(const char *val)
{
    size_t n = strlen(val);
    if (proto_utf8_valid(val, n)) { /* the common case: one copy, no scan twice */
        char *copy = cJSON_malloc(n + 1);
        if (copy)
            memcpy(copy, val, n + 1);
        return copy;
    }
    char *clean = proto_utf8_clean(val, n, 0);
    char *copy = clean ? cJSON_malloc(strlen(clean) + 1) : NULL;
    if (copy)
        memcpy(copy, clean, strlen(clean) + 1);
    free(clean);
    return copy;
}

void status_set_str(cJSON *item, const char *key, const char *val)
{
    cJSON *m = item ? member(item, key) : NULL;
    if (!m || (val && cJSON_IsString(m) && !strcmp(m->valuestring, val)))
        return;
    char *copy = NULL;
    if (val && !(copy = utf8_copy(val)))
        return;
    member_set(m, val ? cJSON_String : cJSON_NULL, copy, 0);
}

void status_set_num(cJSON *item, const char *key, double val)
{
    cJSON *m = item ? member(item, key) : NULL;
    if (m)
        member_set(m, cJSON_Number, NULL, val);
}

/* ---- writes ---- */

/* Errors a retry cannot fix (refused as invalid, no table, no permission, a full or read-only
 * disk, an item someone else owns): the item waits for its next change instead of retrying,
 * and a flush gives up on it at once instead of waiting for its deadline. */
static bool is_permanent(int rc)
{
    return rc == -EACCES || rc == -EPERM || rc == -ENOENT || rc == -EINVAL || rc == -EROFS ||
           rc == -ENOSPC || rc == -EDQUOT || rc == -EFBIG || rc == -EEXIST || rc == -ENAMETOOLONG ||
           rc == -ENOTDIR || rc == -EISDIR;
}

static const char *item_desc(const st_item *it, char *buf, size_t n)
{
    if (it->kind == STATUS_RUN)
        snprintf(buf, n, "run %s", item_run(it));
    else
        snprintf(buf, n, "task run %s/%s", item_run(it), item_task(it));
    return buf;
}

/* Logs one item whose latest state did not reach the store, and why (once per state). */
static void log_unwritten(st_item *it)
{
    char desc[400];
    const char *err = it->err;
    if (!err)
        err = it->state == IT_INFLIGHT ? "no answer from the status store before the deadline"
                                       : "not written before the deadline";
    log_line *l = agent_log_begin(LOG_ERROR, "status_write_failed",
                                  "the status of %s could not be written: %s",
                                  item_desc(it, desc, sizeof desc), err);
    if (item_task(it))
        agent_log_str(l, "task_name", item_task(it));
    agent_log_json(l, "item", item_obj(it));
    agent_log_str(l, "error", err);
    agent_log_end(l);
    it->reported = true;
}

/* The first sign of an outage: one warning, at once, whatever the number of items. */
static void degraded(status_store *s, const st_item *it, const char *err)
{
    char desc[400];
    if (s->failing)
        return;
    s->failing = true;
    log_line *l = agent_log_begin(LOG_WARNING, "status_store_degraded",
                                  "the %s status store is failing (%s: %s); the run goes on, "
                                  "its status writes are retried or reported",
                                  s->be->name, item_desc(it, desc, sizeof desc), err);
    agent_log_str(l, "error", err);
    agent_log_end(l);
}

/* Arms the retry timer for the earliest due item. */
static void arm_retry(status_store *s)
{
    uint64_t now = uv_now(s->loop), first = UINT64_MAX;
    for (st_item *it = s->backoff.head; it; it = it->next)
        if (it->retry_at < first)
            first = it->retry_at;
    if (first == UINT64_MAX)
        uv_timer_stop(&s->retry);
    else
        uv_timer_start(&s->retry, on_retry, first > now ? first - now : 0, 0);
}

/* A failed write: remember why, then back off, or give up on an error that will not pass. */
static void write_failed(status_store *s, st_item *it, int rc, const char *err)
{
    free(it->err);
    it->err = strdup(err && *err ? err : strerror(-rc));
    it->fails++;
    if (is_permanent(rc)) {
        if (rc != -EEXIST) /* someone else's item is not an outage of the store */
            degraded(s, it, it->err ? it->err : "");
        if (!it->reported && !s->flushing) /* a flush reports it when it ends */
            log_unwritten(it);
        if (it->dirty) { /* changed meanwhile: the new state deserves its own try */
            it->reported = false;
            set_state(s, it, IT_READY);
        } else {
            set_state(s, it, IT_GAVE_UP);
        }
        return;
    }
    degraded(s, it, it->err ? it->err : "");
    uint64_t delay = BACKOFF_FIRST_MS << (it->fails < 6 ? it->fails - 1 : 5);
    if (delay > BACKOFF_CAP_MS)
        delay = BACKOFF_CAP_MS;
    if (s->flushing && delay > BACKOFF_FLUSH_MS)
        delay = BACKOFF_FLUSH_MS;
    it->retry_at = uv_now(s->loop) + delay;
    set_state(s, it, IT_BACKOFF);
    arm_retry(s);
}

/* One status-write lag sample: the write just confirmed carried changes since change_ms. */
static void lag_sample(status_store *s, st_item *it)
{
    if (it->change_ms && s->lag_cb) {
        s->lag[s->n_lag++] = (double)(uv_now(s->loop) - it->change_ms);
        if (s->n_lag == STATUS_LAG_BATCH)
            status_store_lag_flush(s);
    }
    it->change_ms = it->next_change_ms; /* made in flight: confirmed by the next write */
    it->next_change_ms = 0;
}

/* A write confirmed (applied, or refused because our own newer write is stored). */
static void write_ok(status_store *s, st_item *it)
{
    lag_sample(s, it);
    free(it->err);
    it->err = NULL;
    it->fails = 0;
    if (s->failing) {
        s->failing = false;
        agent_log(LOG_INFO, "status_store_recovered", "status writes succeed again");
    }
    set_state(s, it, it->dirty ? IT_READY : IT_CLEAN);
}

/* After a write or a check completed: free a released clean item, send what is due. */
static void write_settled(status_store *s, st_item *it)
{
    it->dirty = false;
    if (it->released && it->state == IT_CLEAN)
        item_remove(s, it); /* `it` is gone from here on */
    else
        park(s, it);
    kick(s); /* a slot is free for what waits; the kick callback also completes a flush */
}

/* Is the stored item this agent's own write of this item, at least as new as the last one
 * sent? Then a refusal means "already there"; otherwise someone else's item is stored. */
static bool stored_is_ours(const status_store *s, const st_item *it, const cJSON *stored)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(stored, "status_seq");
    if (!cJSON_IsNumber(seq))
        return false;
    double v = seq->valuedouble;
    return v > (double)s->seq_base && v < (double)(s->seq_base + STATUS_SEQ_STRIDE) &&
           v >= (double)it->seq;
}

/* Completion of the read that follows a refused write. */
static void on_checked(void *ctx, int rc, const cJSON *stored, const char *err)
{
    st_write *w = ctx;
    status_store *s = w->s;
    st_item *it = w->it;
    free(w);
    if (!s)
        return;
    it->w = NULL;
    char msg[600];
    if (rc < 0 || !stored) {
        snprintf(msg, sizeof msg, "the write was refused and the stored item could not be read: %s",
                 rc < 0 ? (err ? err : strerror(-rc)) : "no item stored");
        write_failed(s, it, -EAGAIN, msg);
    } else if (stored_is_ours(s, it, stored)) {
        write_ok(s, it);
    } else {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(stored, "status");
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(stored, "status_seq");
        snprintf(msg, sizeof msg,
                 "refused: the store holds status %s at status_seq %.0f, not written by this "
                 "agent (an earlier agent of this run, the reconciler or a cancel wrote it)",
                 cJSON_IsString(st) ? st->valuestring : "(none)",
                 cJSON_IsNumber(seq) ? seq->valuedouble : -1.0);
        write_failed(s, it, -EEXIST, msg);
    }
    write_settled(s, it);
}

/* A write refused by the condition: read what is stored to tell whose it is. */
static void check_refused(status_store *s, st_item *it)
{
    st_write *w = malloc(sizeof *w);
    int rc = -ENOMEM;
    if (!s->be->read) { /* a backend that cannot read: trust the refusal */
        free(w);
        write_ok(s, it);
        write_settled(s, it);
        return;
    }
    if (w) {
        *w = (st_write){s, it};
        it->w = w;
        rc = s->be->read(s->be, it->kind, item_run(it), item_task(it), on_checked, w);
    }
    if (rc < 0) {
        free(w);
        it->w = NULL;
        write_failed(s, it, -EAGAIN, "the write was refused and the stored item cannot be read");
        write_settled(s, it);
    }
}

/* Backend completion of one write. May run inside backend->write (synchronous backends). */
static void on_written(void *ctx, int rc, const char *err)
{
    st_write *w = ctx;
    status_store *s = w->s;
    st_item *it = w->it;
    free(w);
    if (!s)
        return; /* the store was freed while this write was in flight */
    it->w = NULL;
    if (rc == STATUS_REFUSED) {
        check_refused(s, it);
        return;
    }
    if (rc < 0)
        write_failed(s, it, rc, err);
    else
        write_ok(s, it);
    write_settled(s, it);
}

/* Approximate DynamoDB size of an item: attribute names plus values (numbers count 21). */
static size_t item_bytes(const cJSON *obj)
{
    size_t n = 0;
    for (const cJSON *m = obj->child; m; m = m->next) {
        if (cJSON_IsNull(m))
            continue;
        n += strlen(m->string) + (cJSON_IsString(m) ? strlen(m->valuestring) : 21);
        if (cJSON_IsArray(m))
            n += 64 * (size_t)cJSON_GetArraySize(m);
    }
    return n;
}

/* An item over the backend's size limit would be refused forever: drop its largest string
 * attributes (never a key, the status or the times) until it fits, and name them in
 * `truncated_attributes` (contract: DynamoDB items are at most 400 KB). */
static void fit_item(status_store *s, st_item *it)
{
    static const char *const keep[] = {"run_id",     "task_name",  "status",   "status_seq",
                                       "updated_at", "started_at", "ended_at", "completed_at"};
    uint32_t max = s->be->max_item_bytes;
    while (max && item_bytes(it->obj) > max) {
        cJSON *big = NULL;
        for (cJSON *m = it->obj->child; m; m = m->next) {
            bool kept = false;
            for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
                kept |= !strcmp(m->string, keep[i]);
            if (!kept && cJSON_IsString(m) &&
                (!big || strlen(m->valuestring) > strlen(big->valuestring)))
                big = m;
        }
        if (!big)
            return;
        cJSON *list = cJSON_GetObjectItemCaseSensitive(it->obj, "truncated_attributes");
        if (!cJSON_IsArray(list)) {
            cJSON_DeleteItemFromObjectCaseSensitive(it->obj, "truncated_attributes");
            list = cJSON_AddArrayToObject(it->obj, "truncated_attributes");
        }
        if (list)
            cJSON_AddItemToArray(list, cJSON_CreateString(big->string));
        log_line *l = agent_log_begin(LOG_WARNING, "status_attribute_dropped",
                                      "attribute %s (%zu bytes) dropped from the stored item: "
                                      "the item would exceed the %s store's %u-byte limit",
                                      big->string, strlen(big->valuestring), s->be->name, max);
        agent_log_str(l, "attribute", big->string);
        agent_log_end(l);
        member_set(big, cJSON_NULL, NULL, 0);
    }
}

/* Stamps the next status_seq and updated_at on the item and hands a snapshot to the backend. */
static void send_item(status_store *s, st_item *it)
{
    char ts[32];
    if (!item_obj(it)) { /* a parked item that cannot be parsed back now: retried later */
        set_state(s, it, IT_INFLIGHT);
        write_failed(s, it, -ENOMEM, "out of memory");
        return;
    }
    it->seq++;
    status_set_num(it->obj, "status_seq", (double)it->seq);
    status_set_str(it->obj, "updated_at", proto_iso_time(proto_now(), ts));
    fit_item(s, it);
    it->dirty = false;
    if (!it->change_ms) /* a retry carries the changes made while the failed write flew */
        it->change_ms = it->next_change_ms;
    it->next_change_ms = 0;
    it->sent_ms = uv_now(s->loop);
    set_state(s, it, IT_INFLIGHT);
    st_write *w = malloc(sizeof *w);
    if (!w) {
        write_failed(s, it, -ENOMEM, "out of memory");
        return;
    }
    *w = (st_write){s, it};
    it->w = w;
    int rc = s->be->write(s->be, it->kind, it->obj, on_written, w);
    if (rc < 0) { /* a failed call never invokes its callback: complete it here */
        char msg[200];
        snprintf(msg, sizeof msg, "the %s status store refused the write: %s", s->be->name,
                 strerror(-rc));
        on_written(w, rc, msg);
    }
}

/* Every second: a write unanswered for STATUS_DEGRADED_MS is an outage (a blackholed endpoint
 * answers nothing, not even an error). */
static void on_watch(uv_timer_t *t)
{
    status_store *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (size_t i = 0; i < s->n && !s->failing; i++) {
        st_item *it = s->items[i];
        if (it->state == IT_INFLIGHT && now - it->sent_ms >= STATUS_DEGRADED_MS) {
            char err[100];
            snprintf(err, sizeof err, "no answer for %.0f s", (double)(now - it->sent_ms) / 1e3);
            degraded(s, it, err);
        }
    }
}

/* ---- flush ---- */

/* Ends a flush: reports what is unwritten, then calls the user (last: it may free the store). */
static void finish_flush(status_store *s)
{
    bool failed_run = false;
    int n_failed = 0;
    uv_timer_stop(&s->deadline);
    s->flushing = false;
    for (size_t i = 0; i < s->n; i++) {
        st_item *it = s->items[i];
        if (it->state == IT_CLEAN)
            continue;
        if (!it->reported)
            log_unwritten(it);
        n_failed++;
        failed_run |= it->kind == STATUS_RUN;
    }
    void (*done)(void *, bool, int) = s->flush_done;
    s->flush_done = NULL;
    done(s->flush_ud, failed_run, n_failed);
}

/* Puts the items of `batch` back first in the ready list, before the task items queued
 * meanwhile, but after a run item queued meanwhile (it goes first). */
static void requeue_front(status_store *s, st_list *batch)
{
    st_item *run = s->ready.head && s->ready.head->kind == STATUS_RUN ? s->ready.head : NULL;
    if (run)
        list_del(&s->ready, run);
    batch->tail->next = s->ready.head;
    if (s->ready.head)
        s->ready.head->prev = batch->tail;
    else
        s->ready.tail = batch->tail;
    s->ready.head = batch->head;
    if (run)
        list_push_front(&s->ready, run);
}

/* Sends the ready items that are due (one write each), as far as the backend's bound on writes
 * in flight allows; the rest keep their place. Then completes a flush that has nothing left. */
static void on_kick(uv_timer_t *t)
{
    status_store *s = t->data;
    uint64_t now = uv_now(s->loop);
    /* Detach first: completions of synchronous backends may queue items again. */
    st_list batch = s->ready;
    s->ready = (st_list){NULL, NULL};
    while (batch.head) {
        st_item *it = batch.head;
        if (it->kind == STATUS_TASK && (slots_full(s) || (!s->flushing && it->due_ms > now)))
            break;
        list_del(&batch, it);
        it->state = IT_CLEAN; /* off the list; set_state moves it on */
        s->n_pending--;
        send_item(s, it);
    }
    if (batch.head)
        requeue_front(s, &batch);
    if (s->flushing && s->n_pending == 0)
        finish_flush(s);
    else
        kick(s);
}

/* Moves every backoff item whose time has come to the ready list. */
static void on_retry(uv_timer_t *t)
{
    status_store *s = t->data;
    uint64_t now = uv_now(s->loop);
    for (st_item *it = s->backoff.head, *next; it; it = next) {
        next = it->next;
        if (it->retry_at <= now)
            set_state(s, it, IT_READY);
    }
    arm_retry(s);
    kick(s);
}

static void on_deadline(uv_timer_t *t)
{
    finish_flush(t->data);
}

void status_flush(status_store *s, uint64_t timeout_ms,
                  void (*done)(void *ud, bool failed_run, int n_failed), void *ud)
{
    assert(!s->flushing && done);
    s->flushing = true;
    s->flush_done = done;
    s->flush_ud = ud;
    /* Retry now whatever is backing off or was given up on. */
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i]->state == IT_BACKOFF || s->items[i]->state == IT_GAVE_UP)
            set_state(s, s->items[i], IT_READY);
    arm_retry(s);
    uv_timer_start(&s->deadline, on_deadline, timeout_ms, 0);
    uv_timer_start(&s->kick, on_kick, 0, 0); /* now, even inside a coalescing window */
}

/* ---- lifetime ---- */

int status_store_new(uv_loop_t *loop, status_backend *backend, status_store **out)
{
    status_store *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->nbuckets = 64;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    if (!s->buckets) {
        free(s);
        return -ENOMEM;
    }
    s->loop = loop;
    s->be = backend;
    uv_timer_t *timers[] = {&s->kick, &s->retry, &s->deadline, &s->watch};
    for (int i = 0; i < 4; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = s;
    }
    s->open_handles = 4;
    uv_timer_start(&s->watch, on_watch, 1000, 1000);
    uv_unref((uv_handle_t *)&s->watch); /* never the reason the loop keeps running */
    *out = s;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    status_store *s = h->data;
    if (--s->open_handles == 0)
        free(s);
}

void status_store_free(status_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        if (s->items[i]->w)
            s->items[i]->w->s = NULL; /* orphan: its completion must not touch the store */
        item_free(s->items[i]);
    }
    free(s->items);
    free(s->buckets);
    s->be->close(s->be);
    uv_close((uv_handle_t *)&s->kick, on_handle_closed);
    uv_close((uv_handle_t *)&s->retry, on_handle_closed);
    uv_close((uv_handle_t *)&s->deadline, on_handle_closed);
    uv_close((uv_handle_t *)&s->watch, on_handle_closed);
}

void status_store_set_seq_base(status_store *s, uint64_t base)
{
    s->seq_base = base;
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i]->seq < base)
            s->items[i]->seq = base;
}

uint64_t status_item_seq(status_store *s, const cJSON *item)
{
    st_item *it = item ? find(s, item) : NULL;
    return it ? it->seq : s->seq_base;
}

void status_seq_floor(status_store *s, cJSON *item, uint64_t seq)
{
    st_item *it = item ? find(s, item) : NULL;
    if (it && it->seq < seq)
        it->seq = seq;
}

int status_store_read(status_store *s, status_kind kind, const char *run_id, const char *task_name,
                      status_read_cb done, void *ctx)
{
    if (!s->be->read)
        return -ENOTSUP;
    return s->be->read(s->be, kind, run_id, task_name, done, ctx);
}

const char *status_run_error(status_store *s, const cJSON *run_item)
{
    st_item *it = run_item ? find(s, run_item) : NULL;
    return it ? it->err : NULL;
}

void status_store_on_lag(status_store *s, status_lag_cb cb, void *ud)
{
    s->lag_cb = cb;
    s->lag_ud = ud;
}

void status_store_lag_flush(status_store *s)
{
    size_t n = s->n_lag;
    s->n_lag = 0;
    if (n && s->lag_cb)
        s->lag_cb(s->lag_ud, s->lag, n);
}

bool status_store_degraded(const status_store *s)
{
    return s->failing;
}
