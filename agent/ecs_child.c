/* ecs_child.c - the child side of the per-task ECS executor: an agent started with
 * DAGY_ONLY_TASK=NAME, DAGY_ATTEMPT=N and DAGY_TASK_RUN_ID (by its parent's RunTask overrides)
 * runs attempt N of task NAME and nothing else:
 *   - the run item is the parent's: the child's status backend leaves it alone;
 *   - the gate reads the task's own item instead, refuses an attempt that is stale (the item is
 *     terminal, or a later attempt started), and writes above the parent's status_seq by
 *     ECS_CHILD_SEQ_GAP, so the child's writes land over the parent's RUNNING and the parent's
 *     later writes (it skips twice the gap) land over the child's;
 *   - the upstream tasks' results are fetched from S3 (their items' result_s3_uri, verified
 *     against result_sha256), every other task counts as done, and the task starts as attempt N;
 *   - it records RUNNING, then SUCCEEDED (with its stored result), RETRYING (a failed attempt the
 *     parent may retry) or FAILED (the last attempt), never CANCELLED: a stopped child's attempt
 *     is the parent's to record. */
#include "agent/ecs_exec.h"
#include "agent/log.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the backend that leaves the run item alone ---- */

typedef struct {
    status_backend base;
    status_backend *in;
} child_backend;

static int child_write(status_backend *b, status_kind kind, const cJSON *item, status_write_cb done,
                       void *ctx)
{
    child_backend *c = (child_backend *)b;
    if (kind == STATUS_RUN) { /* the parent's item: applied, as far as this agent cares */
        done(ctx, 0, NULL);
        return 0;
    }
    return c->in->write(c->in, kind, item, done, ctx);
}

static int child_read(status_backend *b, status_kind kind, const char *run_id,
                      const char *task_name, status_read_cb done, void *ctx)
{
    child_backend *c = (child_backend *)b;
    return c->in->read(c->in, kind, run_id, task_name, done, ctx);
}

static void child_close(status_backend *b)
{
    child_backend *c = (child_backend *)b;
    c->in->close(c->in);
    free(c);
}

status_backend *agent__ecs_child_backend(status_backend *inner)
{
    child_backend *c = calloc(1, sizeof *c);
    if (!c)
        return inner; /* out of memory at start: the run fails soon enough anyway */
    c->base = *inner;
    c->base.write = child_write;
    c->base.read = child_read;
    c->base.close = child_close;
    c->in = inner;
    return &c->base;
}

/* ---- the gate: the task's own item ---- */

static double num_attr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* Why the stored item makes this child stale (NULL: go on). */
static const char *stale_reason(const agent_config *c, const cJSON *stored, char *buf, size_t n)
{
    const char *st = proto_json_str(stored, "status");
    int attempt = (int)num_attr(stored, "attempt");
    if (st && proto_status_terminal(st))
        snprintf(buf, n, "task \"%s\" of run \"%s\" already ended %s", c->only_task, c->run_id, st);
    else if (attempt > c->only_attempt)
        snprintf(buf, n, "task \"%s\" of run \"%s\" is at attempt %d, after this child's %d",
                 c->only_task, c->run_id, attempt, c->only_attempt);
    else
        return NULL;
    return buf;
}

static void on_own_item(void *ctx, int rc, const cJSON *stored, const char *err);

static void read_own_item(run_state *r)
{
    int rc = status_store_read(r->status, STATUS_TASK, r->cfg->run_id, r->cfg->only_task,
                               on_own_item, r);
    if (rc < 0)
        on_own_item(r, rc, NULL, NULL);
}

static void on_own_wait(uv_timer_t *h)
{
    read_own_item(h->data);
}

/* The parent's RUNNING for this attempt must be stored first: the child's writes go above it
 * (a parent that took its run over writes far above 0). The parent writes it at the latest half
 * a second after RunTask; the start gate's own deadline (15 s, exit 3) bounds the wait. */
static void on_own_item(void *ctx, int rc, const cJSON *stored, const char *err)
{
    run_state *r = ctx;
    char msg[AGENT_ERR_MAX];
    if (r->phase != RUN_STARTING || !r->status)
        return;
    if (rc == 0 && (int)num_attr(stored, "attempt") < r->cfg->only_attempt &&
        !stale_reason(r->cfg, stored, msg, sizeof msg)) {
        uv_timer_start(&r->ecs_launch_timer, on_own_wait, 250, 0);
        return;
    }
    uv_timer_stop(&r->start_timer);
    if (rc < 0) {
        snprintf(msg, sizeof msg, "cannot read task \"%s\" of run \"%s\": %s", r->cfg->only_task,
                 r->cfg->run_id, err ? err : strerror(-rc));
        agent__finish_unrecorded(r, AGENT_EXIT_INFRA, msg);
        return;
    }
    char why[AGENT_ERR_MAX - 64];
    if (stale_reason(r->cfg, stored, why, sizeof why)) {
        snprintf(msg, sizeof msg, "%s: this ECS child has nothing to run", why);
        agent__finish_unrecorded(r, AGENT_EXIT_INVALID, msg);
        return;
    }
    agent__gate_passed(r, (uint64_t)num_attr(stored, "status_seq") + ECS_CHILD_SEQ_GAP);
}

void agent__ecs_child_gate(run_state *r)
{
    read_own_item(r);
}

/* ---- before the DAG: the upstream results ---- */

typedef struct child_prep child_prep;

typedef struct {
    child_prep *p;
    size_t u;     /* the upstream task */
    int tries;    /* reads so far */
    bool waiting; /* read again at the next tick */
} upstream_job;

/* Counted in run_state.pending while it lives, so a finish meanwhile waits for it. */
struct child_prep {
    run_state *r;
    int outstanding;
    int exit_code; /* the first failure, 0 while none */
    char error[AGENT_ERR_MAX];
    upstream_job *jobs;
    size_t n_jobs;
};

/* The parent writes an item up to half a second after the change (the DynamoDB backend's
 * coalescing) and may start this child before the upstream task's end is stored: an upstream
 * item that is absent or not yet ended is read again, every UPSTREAM_WAIT_MS, this many times. */
#define UPSTREAM_WAIT_MS 250
#define UPSTREAM_TRIES   240

static void prep_fail(child_prep *p, int code, const char *fmt, const char *a, const char *b)
{
    if (p->exit_code)
        return;
    p->exit_code = code;
    snprintf(p->error, sizeof p->error, fmt, a, b ? b : "");
}

/* Every other task counts as done (not recorded: on_transition skips them in a child), and the
 * task starts as attempt N. */
static int set_attempts(run_state *r, size_t only, char *err)
{
    if (sched_set_attempts(r->plan, only, r->cfg->only_attempt - 1)) {
        snprintf(err, AGENT_ERR_MAX, "DAGY_ATTEMPT=%d: task \"%s\" has only %d attempts",
                 r->cfg->only_attempt, r->cfg->only_task, sched_task_max_attempts(r->plan, only));
        return AGENT_EXIT_INVALID;
    }
    return 0;
}

/* Marks every PENDING task but `keep` done (not recorded: on_transition skips them). */
static void mark_others(run_state *r, size_t keep)
{
    for (size_t j = 0; j < sched_count(r->plan); j++)
        if (j != keep && sched_task_state(r->plan, j) == SCHED_PENDING)
            sched_mark_reused(r->plan, j);
}

/* A plain task starts as attempt N; a map instance's map runs (it expands into its instances
 * from the stored upstream result, agent__ecs_child_expanded). */
static int mark_plan(run_state *r, char *err)
{
    if (r->only_index < 0) {
        mark_others(r, (size_t)r->only_spec);
        return 0;
    }
    int rc = set_attempts(r, (size_t)r->only_index, err);
    if (!rc)
        mark_others(r, (size_t)r->only_index);
    return rc;
}

int agent__ecs_child_find(run_state *r, char *err)
{
    const char *name = r->cfg->only_task, *br = strchr(name, '[');
    r->only_index = r->only_spec = flowspec_find(r->spec, name);
    if (r->only_spec >= 0)
        return 0;
    size_t n = br ? (size_t)(br - name) : 0, len = strlen(name);
    char base[160];
    if (br && n < sizeof base && len > n + 2 && name[len - 1] == ']' &&
        strspn(br + 1, "0123456789") == len - n - 2) {
        snprintf(base, sizeof base, "%.*s", (int)n, name);
        long m = flowspec_find(r->spec, base);
        if (m >= 0 && r->spec->tasks[m].map) {
            r->only_spec = m;
            r->only_index = -1; /* known once the map expanded */
            return 0;
        }
    }
    snprintf(err, AGENT_ERR_MAX,
             "DAGY_ONLY_TASK=%.128s: the flow has no such task (nor a map of "
             "that name)",
             name);
    return AGENT_EXIT_INVALID;
}

void agent__ecs_child_expanded(run_state *r, size_t i)
{
    char err[AGENT_ERR_MAX];
    if (!r->cfg->only_task || r->only_index >= 0 || (long)i != r->only_spec)
        return;
    for (size_t j = 0; j < sched_count(r->plan); j++)
        if (sched_task_parent(r->plan, j) == (long)i &&
            !strcmp(sched_task_name(r->plan, j), r->cfg->only_task))
            r->only_index = (long)j;
    if (r->only_index < 0) {
        snprintf(err, sizeof err, "DAGY_ONLY_TASK=%.128s: the map has no such element",
                 r->cfg->only_task);
        agent__finish(r, AGENT_EXIT_INVALID, err);
        return;
    }
    if (set_attempts(r, (size_t)r->only_index, err)) {
        agent__finish(r, AGENT_EXIT_INVALID, err);
        return;
    }
    for (size_t j = 0; j < sched_count(r->plan); j++) /* the siblings */
        if ((long)j != r->only_index && sched_task_parent(r->plan, j) == (long)i &&
            sched_task_state(r->plan, j) == SCHED_PENDING)
            sched_mark_reused(r->plan, j);
}

static void prep_settle(child_prep *p)
{
    if (--p->outstanding > 0)
        return;
    run_state *r = p->r;
    int code = p->exit_code;
    char err[AGENT_ERR_MAX];
    snprintf(err, sizeof err, "%s", p->error);
    uv_timer_stop(&r->ecs_poll_timer);
    free(p->jobs);
    free(p);
    r->pending--;
    if (r->phase != RUN_PREPARING)
        return;
    if (!code)
        code = mark_plan(r, err);
    if (code)
        agent__finish(r, code, err);
    else
        agent__execute_dag(r);
}

static void on_upstream_result(void *ud, const fetch_aws_result *res)
{
    upstream_job *j = ud;
    child_prep *p = j->p;
    run_state *r = p->r;
    if (res->err || res->http_status / 100 != 2)
        prep_fail(p, AGENT_EXIT_INFRA, "cannot fetch the result of upstream task \"%s\": %s",
                  r->spec->tasks[j->u].name, res->message ? res->message : "no answer");
    else
        r->tasks[j->u].has_result = true;
    prep_settle(p);
}

static void read_upstream(upstream_job *j);

/* Every UPSTREAM_WAIT_MS while some upstream item is not yet ended: read those again. */
static void on_upstream_wait(uv_timer_t *h)
{
    child_prep *p = h->data;
    size_t n = p->n_jobs;
    p->outstanding++; /* p outlives the loop below even if every read settles at once */
    for (size_t k = 0; k < n; k++)
        if (p->jobs[k].waiting) {
            p->jobs[k].waiting = false;
            read_upstream(&p->jobs[k]);
        }
    prep_settle(p);
}

/* The upstream task's item: SUCCEEDED with a stored result is fetched into results/ (verified
 * against its result_sha256); SUCCEEDED without one, or not SUCCEEDED (an all_done rule), gives
 * null as in the parent. An item still absent or not ended after UPSTREAM_TRIES reads is an
 * error (exit 3): the parent starts this task only after its upstream tasks ended. */
static void on_upstream_item(void *ctx, int rc, const cJSON *stored, const char *err)
{
    upstream_job *j = ctx;
    child_prep *p = j->p;
    run_state *r = p->r;
    const char *name = r->spec->tasks[j->u].name;
    const char *st = proto_json_str(stored, "status"),
               *uri = proto_json_str(stored, "result_s3_uri");
    const char *sha = proto_json_str(stored, "result_sha256");
    bool ended = st && proto_status_terminal(st);
    if (rc == 0 && !ended && ++j->tries < UPSTREAM_TRIES && r->phase == RUN_PREPARING) {
        j->waiting = true; /* the child launches nothing: its poll timer is free */
        r->ecs_poll_timer.data = p;
        if (!uv_is_active((uv_handle_t *)&r->ecs_poll_timer))
            uv_timer_start(&r->ecs_poll_timer, on_upstream_wait, UPSTREAM_WAIT_MS, 0);
        return;
    }
    if (rc == 0 && !ended && r->phase != RUN_PREPARING)
        rc = -ECANCELED; /* a signal meanwhile: the run is ending */
    if (rc < 0 || !ended) {
        prep_fail(p, AGENT_EXIT_INFRA, "cannot read the item of upstream task \"%s\": %s", name,
                  rc < 0   ? (err ? err : strerror(-rc))
                  : stored ? "it has not ended"
                           : "no such item");
    } else if (st && !strcmp(st, "SUCCEEDED") && uri && sha && r->aws) {
        size_t n = strlen(uri) + strlen(sha) + 16;
        char *full = malloc(n);
        char *path = agent__task_file(r, AGENT_DIR_RESULTS, j->u, 0);
        snprintf(full, n, "%s#sha256=%s", uri, sha);
        int frc = fetch_s3_get_file(r->aws, full, path, NULL, on_upstream_result, j);
        free(full);
        free(path);
        if (!frc)
            return; /* on_upstream_result settles */
        prep_fail(p, AGENT_EXIT_INFRA, "cannot fetch the result of upstream task \"%s\": %s", name,
                  strerror(-frc));
    }
    prep_settle(p);
}

void agent__ecs_child_begin(run_state *r)
{
    child_prep *p = calloc(1, sizeof *p);
    const flowspec_task *ft = &r->spec->tasks[r->only_spec];
    p->r = r;
    p->outstanding = 1;
    p->jobs = calloc(ft->n_upstream + 1, sizeof *p->jobs);
    p->n_jobs = ft->n_upstream;
    r->pending++;
    for (size_t k = 0; k < ft->n_upstream; k++) {
        upstream_job *j = &p->jobs[k];
        j->p = p;
        j->u = ft->upstream[k];
        p->outstanding++;
        read_upstream(j);
    }
    prep_settle(p);
}

static void read_upstream(upstream_job *j)
{
    run_state *r = j->p->r;
    int rc = status_store_read(r->status, STATUS_TASK, r->cfg->run_id, r->spec->tasks[j->u].name,
                               on_upstream_item, j);
    if (rc < 0)
        on_upstream_item(j, rc, NULL, NULL);
}

bool agent__ecs_child_done(run_state *r, int *exit_code)
{
    if (!r->cfg->only_task || r->only_index < 0)
        return false;
    agent_task *t = &r->tasks[r->only_index];
    sched_state st = sched_task_state(r->plan, (size_t)r->only_index);
    if (!t->ran || st == SCHED_RUNNING)
        return false;
    *exit_code = st == SCHED_SUCCEEDED ? AGENT_EXIT_OK
                 : r->signals          ? AGENT_EXIT_SIGTERM
                 : t->infra            ? AGENT_EXIT_INFRA
                                       : AGENT_EXIT_TASK_FAILED;
    return true;
}
