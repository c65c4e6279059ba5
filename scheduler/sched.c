/* sched.c - the DAG plan: one explicit state machine per task run, trigger rules decided as early
 * as the outcome is certain, retries with backoff and jitter, per-attempt timeouts and the drain.
 * Pure data: the driver supplies the time; every transition goes through set_state(). Cost is
 * O((tasks + edges) log tasks) for a whole run: downstream lists are precomputed, readiness is
 * counted, and ready/retry/timeout queues are binary min-heaps. Map nodes' fan-out is in
 * sched_map.c. */
#include "scheduler/sched_int.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"PENDING", "RUNNING", "RETRYING", "SUCCEEDED",
                                          "FAILED",  "SKIPPED", "CANCELLED"};
static const char *const trigger_names[] = {"all_success", "all_done", "one_failed", "none_failed"};

/* Allowed transitions (contract section 4), as a bit mask of target states per source state. */
#define B(s) (1u << (s))
static const unsigned allowed[] = {
    [SCHED_PENDING] = B(SCHED_RUNNING) | B(SCHED_SKIPPED) | B(SCHED_CANCELLED) |
                      B(SCHED_SUCCEEDED), /* reused (sched_mark_reused) */
    [SCHED_RUNNING] = B(SCHED_RETRYING) | B(SCHED_SUCCEEDED) | B(SCHED_FAILED) | B(SCHED_CANCELLED),
    [SCHED_RETRYING] = B(SCHED_RUNNING) | B(SCHED_CANCELLED),
};
#undef B

const char *sched_state_name(sched_state s)
{
    return (unsigned)s <= SCHED_CANCELLED ? state_names[s] : "UNKNOWN";
}

bool sched_state_terminal(sched_state s)
{
    return s >= SCHED_SUCCEEDED && s <= SCHED_CANCELLED;
}

int sched_trigger_parse(const char *s, sched_trigger *out)
{
    for (size_t i = 0; s && i < sizeof trigger_names / sizeof *trigger_names; i++) {
        if (strcmp(s, trigger_names[i]) == 0) {
            *out = (sched_trigger)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *sched_trigger_name(sched_trigger t)
{
    return (unsigned)t <= SCHED_NONE_FAILED ? trigger_names[t] : "unknown";
}

/* The contract's backoff: min(delay * backoff^(n-1), max), never negative or NaN. */
static double backoff_seconds(double delay, double backoff, double max_delay, int n)
{
    double d = delay * pow(backoff, n > 1 ? n - 1 : 0);
    if (isnan(d) || d < 0)
        d = 0;
    return d < max_delay ? d : (max_delay > 0 ? max_delay : 0);
}

double sched_backoff_seconds(const sched_task_def *d, int n)
{
    return backoff_seconds(d->retry_delay_seconds, d->retry_backoff, d->retry_max_delay_seconds, n);
}

/* Seconds to milliseconds, rounded, clamped to [0, MAX_MS]. */
static uint64_t to_ms(double s)
{
    if (!(s > 0))
        return 0;
    double ms = s * 1000.0 + 0.5;
    return ms >= (double)MAX_MS ? MAX_MS : (uint64_t)ms;
}

/* splitmix64: tiny, seedable, good enough for spreading retries apart. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---- heaps ---- */

static bool heap_less(const sched_plan *p, const heap *h, uint32_t x, uint32_t y)
{
    if (h->keyed && p->tasks[x].due_ms != p->tasks[y].due_ms)
        return p->tasks[x].due_ms < p->tasks[y].due_ms;
    return x < y;
}

static void heap_put(sched_plan *p, heap *h, uint32_t k, uint32_t x)
{
    h->a[k] = x;
    p->tasks[x].heap_pos = k;
}

static void sift_up(sched_plan *p, heap *h, uint32_t k)
{
    uint32_t x = h->a[k];
    while (k > 0 && heap_less(p, h, x, h->a[(k - 1) / 2])) {
        heap_put(p, h, k, h->a[(k - 1) / 2]);
        k = (k - 1) / 2;
    }
    heap_put(p, h, k, x);
}

static void sift_down(sched_plan *p, heap *h, uint32_t k)
{
    uint32_t x = h->a[k];
    for (;;) {
        uint32_t c = 2 * k + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && heap_less(p, h, h->a[c + 1], h->a[c]))
            c++;
        if (!heap_less(p, h, h->a[c], x))
            break;
        heap_put(p, h, k, h->a[c]);
        k = c;
    }
    heap_put(p, h, k, x);
}

void sched__heap_push(sched_plan *p, heap *h, uint32_t x)
{
    assert(p->tasks[x].heap_pos == NO_POS && h->n < p->n);
    h->a[h->n] = x;
    sift_up(p, h, h->n++);
}

/* Removes task x from h (it must be there). */
static void heap_remove(sched_plan *p, heap *h, uint32_t x)
{
    uint32_t k = p->tasks[x].heap_pos;
    assert(k < h->n && h->a[k] == x);
    p->tasks[x].heap_pos = NO_POS;
    uint32_t last = h->a[--h->n];
    if (k == h->n)
        return;
    heap_put(p, h, k, last);
    sift_down(p, h, k);
    sift_up(p, h, p->tasks[last].heap_pos);
}

static uint32_t heap_pop(sched_plan *p, heap *h)
{
    uint32_t x = h->a[0];
    heap_remove(p, h, x);
    return x;
}

/* Empties h in O(size), forgetting every member's position. */
static void heap_clear(sched_plan *p, heap *h)
{
    for (uint32_t k = 0; k < h->n; k++)
        p->tasks[h->a[k]].heap_pos = NO_POS;
    h->n = 0;
}

/* ---- transitions ---- */

/* Formats a reason into the plan's buffer, growing it if needed (truncates if it cannot). */
const char *sched__reasonf(sched_plan *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(p->msg, p->msg_cap, fmt, ap);
    va_end(ap);
    if (len >= 0 && (size_t)len >= p->msg_cap) {
        char *m = realloc(p->msg, (size_t)len + 1);
        if (m) {
            p->msg = m;
            p->msg_cap = (size_t)len + 1;
            va_start(ap, fmt);
            vsnprintf(p->msg, p->msg_cap, fmt, ap);
            va_end(ap);
        }
    }
    return p->msg;
}

/* The one place a task changes state: checks the move is legal, keeps the counters, tells the
 * driver, and queues terminal tasks so their downstream tasks get re-evaluated. */
static void set_state(sched_plan *p, uint32_t i, sched_state to, const char *reason)
{
    struct task *t = &p->tasks[i];
    sched_state from = (sched_state)t->state;
    bool legal = from <= SCHED_RETRYING && (allowed[from] & (1u << to));
    assert(legal);
    (void)legal;
    p->count[from]--;
    p->count[to]++;
    t->state = (uint8_t)to;
    if (sched_state_terminal(to)) {
        p->n_terminal++;
        p->work[(p->work_head + p->work_len++) % p->n] = i;
    }
    if (p->cb)
        p->cb(p->ud, i, from, to, reason);
    if (sched_state_terminal(to) && t->parent != NO_POS)
        sched__child_done(p, i);
}

typedef enum { DECIDE_WAIT, DECIDE_READY, DECIDE_SKIP } decision;

/* What a finished task means to its downstream tasks' trigger rules, worst last. A task skipped
 * because of a failure (or a cancel) passes that outcome on, so a failure is never hidden by a
 * skip in between. */
typedef enum { OUT_SUCCEEDED, OUT_SKIPPED, OUT_CANCELLED, OUT_FAILED } outcome;

static outcome outcome_of(const struct task *u)
{
    switch ((sched_state)u->state) {
    case SCHED_SUCCEEDED:
        return OUT_SUCCEEDED;
    case SCHED_FAILED:
        return OUT_FAILED;
    case SCHED_SKIPPED:
        return u->skip_cause == SCHED_SKIP_UPSTREAM_FAILED      ? OUT_FAILED
               : u->skip_cause == SCHED_SKIP_UPSTREAM_CANCELLED ? OUT_CANCELLED
                                                                : OUT_SKIPPED;
    default:
        return OUT_CANCELLED;
    }
}

/* Applies the trigger rule to what is known of t's upstream tasks (counted by outcome_of()),
 * deciding as early as the outcome *and its cause* are certain: a failure or cancel decides at
 * once; a skip by rule alone waits until every upstream is done, so whether the task counts as
 * skipped or upstream-failed downstream never depends on which upstream finished first. */
static decision decide(const struct task *t)
{
    uint32_t done = t->n_succ + t->n_fail + t->n_skip + t->n_cancel;
    bool all_done = done == t->n_up;
    if (t->n_up == 0)
        return DECIDE_READY;
    switch ((sched_trigger)t->trigger) {
    case SCHED_ALL_SUCCESS:
        if (t->n_fail + t->n_cancel > 0)
            return DECIDE_SKIP;
        if (!all_done)
            return DECIDE_WAIT;
        return t->n_skip > 0 ? DECIDE_SKIP : DECIDE_READY;
    case SCHED_ALL_DONE:
        return all_done ? DECIDE_READY : DECIDE_WAIT;
    case SCHED_ONE_FAILED:
        if (t->n_fail > 0)
            return DECIDE_READY;
        return all_done ? DECIDE_SKIP : DECIDE_WAIT;
    case SCHED_NONE_FAILED:
        /* CANCELLED counts as FAILED: a run cut short must not look like a clean one. */
        if (t->n_fail + t->n_cancel > 0)
            return DECIDE_SKIP;
        return all_done ? DECIDE_READY : DECIDE_WAIT;
    }
    return DECIDE_WAIT;
}

/* Records why task d is skipped (from its worst upstream) and returns the reason; `up` is the
 * upstream whose outcome just decided it. */
static const char *skip_task(sched_plan *p, uint32_t d, uint32_t up)
{
    struct task *t = &p->tasks[d];
    const char *rule = trigger_names[t->trigger];
    outcome o = t->cause == NO_POS ? OUT_SUCCEEDED : outcome_of(&p->tasks[t->cause]);
    if (o == OUT_FAILED || o == OUT_CANCELLED) {
        const struct task *c = &p->tasks[t->cause];
        t->skip_cause =
            o == OUT_FAILED ? SCHED_SKIP_UPSTREAM_FAILED : SCHED_SKIP_UPSTREAM_CANCELLED;
        t->root = c->state == SCHED_SKIPPED ? c->root : t->cause;
        const char *what = o == OUT_FAILED ? "failed" : "cancelled";
        if (t->root == t->cause)
            return sched__reasonf(p, "upstream %s: \"%s\" is %s (trigger_rule %s)", what, c->name,
                                  state_names[c->state], rule);
        return sched__reasonf(
            p, "upstream %s: \"%s\" was skipped because \"%s\" %s%s (trigger_rule %s)", what,
            c->name, p->tasks[t->root].name, o == OUT_FAILED ? "" : "was ",
            state_names[p->tasks[t->root].state], rule);
    }
    t->skip_cause = SCHED_SKIP_TRIGGER_RULE;
    if (t->trigger == SCHED_ONE_FAILED) {
        t->cause = up;
        return sched__reasonf(
            p,
            "trigger_rule %s not met: no upstream task failed (last finished \"%s\" "
            "is %s)",
            rule, p->tasks[up].name, state_names[p->tasks[up].state]);
    }
    assert(t->cause != NO_POS); /* all_success skips by rule only after a skipped upstream */
    return sched__reasonf(p, "trigger_rule %s not met: upstream \"%s\" is SKIPPED", rule,
                          p->tasks[t->cause].name);
}

/* Why map node d is skipped when the upstream it maps over ended without success (o). */
static const char *map_skip(sched_plan *p, uint32_t d, uint32_t up, outcome o)
{
    if (o == OUT_FAILED || o == OUT_CANCELLED)
        return skip_task(p, d, up);
    p->tasks[d].skip_cause = SCHED_SKIP_TRIGGER_RULE;
    return sched__reasonf(p, "map over \"%s\": it is SKIPPED, so there is no array to map over",
                          p->tasks[up].name);
}

/* Counts the outcome of terminal task `up` into downstream task d and acts on the decision. */
static void notify_downstream(sched_plan *p, uint32_t up, uint32_t d)
{
    struct task *t = &p->tasks[d];
    outcome o = outcome_of(&p->tasks[up]);
    uint32_t *counter[] = {&t->n_succ, &t->n_skip, &t->n_cancel, &t->n_fail};
    (*counter[o])++;
    /* Already decided (queued, started, skipped or cancelled): later outcomes change nothing. */
    if (t->state != SCHED_PENDING || t->heap_pos != NO_POS || p->draining)
        return;
    bool map = t->map != NO_POS;
    if (map && up == p->maps[t->map].over && o != OUT_SUCCEEDED) {
        t->cause = up; /* no array to map over, whatever the trigger rule */
        set_state(p, d, SCHED_SKIPPED, map_skip(p, d, up, o));
        return;
    }
    if (o != OUT_SUCCEEDED && (t->cause == NO_POS || o > outcome_of(&p->tasks[t->cause])))
        t->cause = up;
    switch (decide(t)) {
    case DECIDE_READY:
        /* A map also needs its array: it waits for `over` whatever its rule says. */
        if (!map || p->tasks[p->maps[t->map].over].state == SCHED_SUCCEEDED)
            sched__heap_push(p, &p->ready, d);
        break;
    case DECIDE_SKIP:
        set_state(p, d, SCHED_SKIPPED, skip_task(p, d, up));
        break;
    case DECIDE_WAIT:
        break;
    }
}

/* Propagates every queued terminal outcome downstream. Iterative (a skip queues more work), so
 * a 5000-long chain of skips uses no stack. */
static void propagate(sched_plan *p)
{
    while (p->work_len > 0) {
        uint32_t up = p->work[p->work_head];
        p->work_head = (p->work_head + 1) % p->n;
        p->work_len--;
        if (up >= p->n_static)
            continue; /* a map child: no edges (its map node is told in child_done) */
        for (uint32_t e = p->down_off[up]; e < p->down_off[up + 1]; e++)
            notify_downstream(p, up, p->down[e]);
    }
}

/* ---- construction ---- */

/* Checks upstream indices and acyclicity (Kahn's algorithm, O(V + E)); uses n_succ as scratch. */
static int check_graph(sched_plan *p)
{
    size_t seen = 0, head = 0;
    for (size_t i = 0; i < p->n; i++) {
        p->tasks[i].n_succ = p->tasks[i].n_up;
        if (p->tasks[i].n_up == 0)
            p->work[seen++] = (uint32_t)i;
    }
    while (head < seen) {
        uint32_t u = p->work[head++];
        for (uint32_t e = p->down_off[u]; e < p->down_off[u + 1]; e++)
            if (--p->tasks[p->down[e]].n_succ == 0)
                p->work[seen++] = p->down[e];
    }
    for (size_t i = 0; i < p->n; i++)
        p->tasks[i].n_succ = 0;
    return seen == p->n ? 0 : -EINVAL;
}

/* Builds the downstream adjacency (CSR): counts, prefix sums, then fills. */
static int build_edges(sched_plan *p, const sched_task_def *defs)
{
    size_t n_edges = 0;
    for (size_t i = 0; i < p->n; i++) {
        for (size_t k = 0; k < defs[i].n_upstream; k++) {
            size_t u = defs[i].upstream[k];
            if (u >= p->n || u == i)
                return -EINVAL;
            p->down_off[u + 1]++;
        }
        n_edges += defs[i].n_upstream;
        if (n_edges >= UINT32_MAX)
            return -EINVAL;
    }
    for (size_t i = 0; i < p->n; i++)
        p->down_off[i + 1] += p->down_off[i];
    p->down = malloc((n_edges ? n_edges : 1) * sizeof *p->down);
    uint32_t *fill = calloc(p->n, sizeof *fill);
    if (!p->down || !fill) {
        free(fill);
        return -ENOMEM;
    }
    for (size_t i = 0; i < p->n; i++)
        for (size_t k = 0; k < defs[i].n_upstream; k++) {
            size_t u = defs[i].upstream[k];
            p->down[p->down_off[u] + fill[u]++] = (uint32_t)i;
        }
    free(fill);
    p->footprint += n_edges * sizeof *p->down;
    return 0;
}

/* Copies one definition into the plan's compact task record. */
static void init_task(struct task *t, const sched_task_def *d, const char *name)
{
    t->name = name;
    t->delay_s = d->retry_delay_seconds;
    t->backoff = d->retry_backoff;
    t->max_delay_s = d->retry_max_delay_seconds;
    t->timeout_s = d->timeout_seconds;
    t->n_up = (uint32_t)d->n_upstream;
    t->heap_pos = t->cause = t->root = t->parent = t->map = NO_POS;
    t->max_attempts = (d->retries > 0 ? d->retries : 0) + 1;
    t->state = SCHED_PENDING;
    t->trigger = (uint8_t)d->trigger;
    t->jitter = d->retry_jitter;
}

/* Allocates every array the plan will ever need, so nothing allocates while running. */
static int alloc_plan(sched_plan *p, const sched_task_def *defs)
{
    size_t n = p->n, names_len = 0, max_name = 0;
    for (size_t i = 0; i < n; i++) {
        if (!defs[i].name || (unsigned)defs[i].trigger > SCHED_NONE_FAILED)
            return -EINVAL;
        size_t l = strlen(defs[i].name);
        names_len += l + 1;
        max_name = l > max_name ? l : max_name;
    }
    size_t m = n ? n : 1;
    p->tasks = calloc(m, sizeof *p->tasks);
    p->down_off = calloc(n + 1, sizeof *p->down_off);
    p->names = malloc(names_len ? names_len : 1);
    p->work = malloc(m * sizeof *p->work);
    p->ready.a = malloc(m * sizeof(uint32_t));
    p->retry.a = malloc(m * sizeof(uint32_t));
    p->timeout.a = malloc(m * sizeof(uint32_t));
    p->msg_cap = 2 * max_name + 128; /* every skip reason fits; only long errors grow it */
    p->msg = malloc(p->msg_cap);
    if (!p->tasks || !p->down_off || !p->names || !p->work || !p->ready.a || !p->retry.a ||
        !p->timeout.a || !p->msg)
        return -ENOMEM;
    p->footprint =
        sizeof *p + m * (sizeof *p->tasks + 5 * sizeof(uint32_t)) + names_len + p->msg_cap;
    return 0;
}

int sched_new(const sched_task_def *defs, size_t n, int max_parallel, uint64_t seed,
              sched_transition_cb cb, void *ud, sched_plan **out)
{
    if (max_parallel < 1 || n >= UINT32_MAX || (n > 0 && !defs) || !out)
        return -EINVAL;
    sched_plan *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->n = p->n_static = n;
    p->max_parallel = max_parallel;
    p->rng = seed;
    p->cb = cb;
    p->ud = ud;
    p->retry.keyed = p->timeout.keyed = true;
    int rc = alloc_plan(p, defs);
    if (rc)
        goto fail;
    char *name = p->names;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(defs[i].name) + 1;
        memcpy(name, defs[i].name, l);
        init_task(&p->tasks[i], &defs[i], name);
        name += l;
    }
    if ((rc = build_edges(p, defs)) || (rc = check_graph(p)) || (rc = sched__init_maps(p, defs)))
        goto fail;
    p->count[SCHED_PENDING] = n;
    for (size_t i = 0; i < n; i++)
        if (p->tasks[i].n_up == 0)
            sched__heap_push(p, &p->ready, (uint32_t)i);
    *out = p;
    return 0;
fail:
    sched_free(p);
    return rc;
}

void sched_free(sched_plan *p)
{
    if (!p)
        return;
    free(p->tasks);
    free(p->down_off);
    free(p->down);
    free(p->names);
    free(p->work);
    free(p->ready.a);
    free(p->retry.a);
    free(p->timeout.a);
    free(p->msg);
    for (size_t k = 0; p->maps && k < p->n_maps; k++)
        free(p->maps[k].names);
    free(p->maps);
    free(p->joined);
    free(p);
}

/* ---- driving ---- */

long sched_next(sched_plan *p, uint64_t now_ms)
{
    if (p->draining || p->ready.n == 0 ||
        p->count[SCHED_RUNNING] - p->n_finishing >= (size_t)p->max_parallel)
        return -1;
    uint32_t i = heap_pop(p, &p->ready);
    struct task *t = &p->tasks[i];
    t->attempt++;
    t->retry_delay_ms = 0;
    if (t->map != NO_POS) { /* expanded by the driver; its children hold the slots */
        t->finishing = true;
        p->n_finishing++;
    } else if (t->timeout_s > 0) {
        uint64_t ms = to_ms(t->timeout_s);
        ms = ms ? ms : 1; /* a sub-millisecond timeout is still a timeout */
        t->due_ms = now_ms > UINT64_MAX - ms ? UINT64_MAX : now_ms + ms;
        sched__heap_push(p, &p->timeout, i);
    }
    set_state(p, i, SCHED_RUNNING, NULL);
    return (long)i;
}

/* The delay before the attempt after `failed` (1-based), with full jitter when asked. */
static uint64_t retry_delay_ms(sched_plan *p, const struct task *t, int failed)
{
    uint64_t ms = to_ms(backoff_seconds(t->delay_s, t->backoff, t->max_delay_s, failed));
    if (t->jitter && ms > 0)
        ms = rng_next(&p->rng) % (ms + 1);
    return ms;
}

/* A failed or timed-out attempt: retry after the backoff delay, or fail for good. */
static void exit_failed(sched_plan *p, uint32_t i, const char *reason, uint64_t now_ms)
{
    struct task *t = &p->tasks[i];
    if (t->attempt >= t->max_attempts || p->draining) {
        set_state(p, i, SCHED_FAILED, reason);
        return;
    }
    t->retry_delay_ms = retry_delay_ms(p, t, t->attempt);
    if (t->retry_delay_ms == 0) {
        sched__heap_push(p, &p->ready, i);
    } else {
        t->due_ms =
            now_ms > UINT64_MAX - t->retry_delay_ms ? UINT64_MAX : now_ms + t->retry_delay_ms;
        sched__heap_push(p, &p->retry, i);
    }
    set_state(p, i, SCHED_RETRYING, reason);
}

/* "exceeded timeout of N s[: error]", N printed as an integer when it is one. */
static const char *timeout_reason(sched_plan *p, uint32_t i, const char *error)
{
    double s = p->tasks[i].timeout_s;
    char num[32];
    if (s == floor(s) && s < 1e15)
        snprintf(num, sizeof num, "%.0f", s);
    else
        snprintf(num, sizeof num, "%g", s);
    return sched__reasonf(p, "exceeded timeout of %s s%s%s", num, error ? ": " : "",
                          error ? error : "");
}

void sched_exited(sched_plan *p, size_t task, sched_exit how, const char *error, uint64_t now_ms)
{
    assert(task < p->n && p->tasks[task].state == SCHED_RUNNING);
    if (task >= p->n || p->tasks[task].state != SCHED_RUNNING)
        return; /* release builds: a misbehaving driver must not corrupt the heaps */
    uint32_t i = (uint32_t)task;
    const struct task *t = &p->tasks[i];
    bool open_map =
        t->map != NO_POS && p->maps[t->map].expanded && p->maps[t->map].done < p->maps[t->map].n;
    assert(!open_map); /* a map ends only once joined */
    if (open_map)
        return;
    if (p->tasks[i].heap_pos != NO_POS)
        heap_remove(p, &p->timeout, i);
    if (p->tasks[i].finishing) {
        p->tasks[i].finishing = false;
        p->n_finishing--;
    }
    switch (how) {
    case SCHED_EXIT_OK:
        set_state(p, i, SCHED_SUCCEEDED, NULL);
        break;
    case SCHED_EXIT_FAILED:
        exit_failed(p, i, error ? error : "attempt failed", now_ms);
        break;
    case SCHED_EXIT_TIMED_OUT:
        exit_failed(p, i, timeout_reason(p, i, error), now_ms);
        break;
    case SCHED_EXIT_CANCELLED:
        set_state(p, i, SCHED_CANCELLED, error ? error : "cancelled");
        break;
    case SCHED_EXIT_FATAL:
        set_state(p, i, SCHED_FAILED, error ? error : "attempt failed");
        break;
    }
    propagate(p);
}

uint64_t sched_next_deadline(const sched_plan *p)
{
    uint64_t dl = UINT64_MAX;
    if (p->retry.n > 0)
        dl = p->tasks[p->retry.a[0]].due_ms;
    if (p->timeout.n > 0 && p->tasks[p->timeout.a[0]].due_ms < dl)
        dl = p->tasks[p->timeout.a[0]].due_ms;
    return dl;
}

void sched_tick(sched_plan *p, uint64_t now_ms, void (*on_timeout)(void *ud, size_t task), void *ud)
{
    while (p->retry.n > 0 && p->tasks[p->retry.a[0]].due_ms <= now_ms)
        sched__heap_push(p, &p->ready, heap_pop(p, &p->retry));
    /* Pop before calling out: the attempt leaves the heap, so it times out exactly once even if
     * the callback reports the exit synchronously. */
    while (p->timeout.n > 0 && p->tasks[p->timeout.a[0]].due_ms <= now_ms) {
        uint32_t i = heap_pop(p, &p->timeout);
        if (on_timeout)
            on_timeout(ud, i);
    }
}

void sched_drain(sched_plan *p, const char *reason)
{
    if (p->draining)
        return;
    p->draining = true;
    heap_clear(p, &p->ready);
    heap_clear(p, &p->retry);
    /* One O(n) pass, once per run. Downstream propagation is moot: everything not running is
     * being cancelled here, in spec order. */
    for (size_t i = 0; i < p->n; i++) {
        sched_state s = (sched_state)p->tasks[i].state;
        if (s == SCHED_PENDING || s == SCHED_RETRYING)
            set_state(p, (uint32_t)i, SCHED_CANCELLED, reason ? reason : "cancelled");
    }
    propagate(p);
}

int sched_mark_reused(sched_plan *p, size_t task)
{
    if (task >= p->n || p->tasks[task].state != SCHED_PENDING)
        return -EINVAL;
    uint32_t i = (uint32_t)task;
    if (p->tasks[i].heap_pos != NO_POS) /* a PENDING task can only be in the ready heap */
        heap_remove(p, &p->ready, i);
    set_state(p, i, SCHED_SUCCEEDED, NULL);
    propagate(p);
    return 0;
}

int sched_set_attempts(sched_plan *p, size_t task, int attempts)
{
    if (task >= p->n || p->tasks[task].state != SCHED_PENDING || attempts < 0 ||
        attempts >= sched_task_max_attempts(p, task))
        return -EINVAL;
    p->tasks[task].attempt = attempts;
    return 0;
}

void sched_finishing(sched_plan *p, size_t task)
{
    assert(task < p->n && p->tasks[task].state == SCHED_RUNNING);
    struct task *t = &p->tasks[task];
    if (task >= p->n || t->state != SCHED_RUNNING || t->finishing)
        return;
    if (t->heap_pos != NO_POS)
        heap_remove(p, &p->timeout, (uint32_t)task);
    t->finishing = true;
    p->n_finishing++;
}

bool sched_done(const sched_plan *p)
{
    return p->n_terminal == p->n;
}

size_t sched_count(const sched_plan *p)
{
    return p->n;
}

sched_state sched_task_state(const sched_plan *p, size_t task)
{
    assert(task < p->n);
    return (sched_state)p->tasks[task].state;
}

const char *sched_task_name(const sched_plan *p, size_t task)
{
    assert(task < p->n);
    return p->tasks[task].name;
}

int sched_task_attempt(const sched_plan *p, size_t task)
{
    assert(task < p->n);
    return p->tasks[task].attempt;
}

int sched_task_max_attempts(const sched_plan *p, size_t task)
{
    assert(task < p->n);
    return p->tasks[task].max_attempts;
}

size_t sched_running(const sched_plan *p)
{
    return p->count[SCHED_RUNNING];
}

sched_skip_cause sched_task_skip_cause(const sched_plan *p, size_t task)
{
    assert(task < p->n);
    return (sched_skip_cause)p->tasks[task].skip_cause;
}

const char *sched_skip_cause_name(sched_skip_cause c)
{
    static const char *const names[] = {NULL, "trigger_rule", "upstream_failed",
                                        "upstream_cancelled"};
    return (unsigned)c <= SCHED_SKIP_UPSTREAM_CANCELLED ? names[c] : NULL;
}

size_t sched_count_in(const sched_plan *p, sched_state state)
{
    return (unsigned)state <= SCHED_CANCELLED ? p->count[state] : 0;
}

uint64_t sched_retry_delay_ms(const sched_plan *p, size_t task)
{
    assert(task < p->n);
    const struct task *t = &p->tasks[task];
    return t->state == SCHED_RETRYING ? t->retry_delay_ms : 0;
}

size_t sched_footprint(const sched_plan *p)
{
    return p->footprint;
}
