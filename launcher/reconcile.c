/* reconcile.c - `dagy-launch reconcile`: closes runs whose worker died without saying so (OOM
 * kill, Spot interruption, a task that never started) and relaunches the ones the platform
 * killed. Phases, in order:
 *   1. Query the sparse index of active runs (never a Scan of the whole history);
 *   2. DescribeTasks, 100 tasks per call, and the verdict per run;
 *   3. StopTask for tasks that did not reach RUNNING within --start-timeout;
 *   4. relaunch (a retry that resumes) the infrastructure failures, within --relaunch-infra;
 *   5. one conditional UpdateItem per run: terminal status, stop_reason, relaunched_as, and the
 *      index marker removed.
 * The relaunch comes before the source's terminal write and has a deterministic run id, so a
 * reconcile that dies in between, run again, finds the source still active, computes the same
 * retry run id and meets its own QUEUED item (launch_request_sha256): no second task. */
#include "launcher/launch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ddb.h"
#include "proto/util.h"

typedef struct {
    cJSON *item; /* the plain run item as the index returned it */
    const char *run_id, *status, *arn, *cancel_reason;
    bool queued, ended; /* ended: terminal, but the marker is still there */
    double age;         /* seconds since created_at */
    bool described, act, stop_task, relaunch, cleanup;
    int infra_retries;
    launch_verdict v; /* v.status NULL = leave the run alone this time */
    char relaunch_id[LAUNCH_MAX_RUN_ID + 1];
    bool relaunched; /* the retry exists: recorded as relaunched_as */
} cand;

typedef struct rec_job rec_job;
typedef int (*op_start)(rec_job *j, size_t i);

struct rec_job {
    launch__ctx ctx;
    long max_runs, stale, start_timeout, relaunch_infra;
    double now;
    cand *c;
    size_t n;
    /* the current phase: ops 0..n_ops-1 started by `start`, at most LAUNCH_MAX_INFLIGHT at once */
    op_start start;
    size_t n_ops, next_op, inflight;
    size_t n_with_arn; /* candidates [0, n_with_arn) have a task ARN (after sorting) */
    void (*phase_done)(rec_job *j);
    size_t checked, updated, skipped, relaunched, errors;
    size_t children_stopped; /* orphaned ECS children of agents (reconcile_children.c) */
    char error[LAUNCH_ERR_MAX];
};

static bool aws_ok(const fetch_aws_result *r)
{
    return r->err == 0 && r->http_status >= 200 && r->http_status < 300;
}

static void note_error(rec_job *j, const char *what, const fetch_aws_result *r)
{
    char why[LAUNCH_ERR_MAX - 64];
    launch__aws_reason(r, why, sizeof why);
    j->errors++;
    if (!j->error[0])
        launch__fmt(j->error, sizeof j->error, "%s: %s", what, why);
}

/* ---- a bounded phase: ops started while fewer than LAUNCH_MAX_INFLIGHT are in flight ---- */

static void pump_ops(rec_job *j)
{
    while (j->inflight < LAUNCH_MAX_INFLIGHT && j->next_op < j->n_ops) {
        size_t i = j->next_op++;
        j->inflight++;
        if (j->start(j, i) < 0)
            j->inflight--; /* could not start: counted as an error by `start` */
    }
    if (j->inflight == 0 && j->next_op >= j->n_ops)
        j->phase_done(j);
}

static void run_phase(rec_job *j, size_t n, op_start start, void (*done)(rec_job *))
{
    j->start = start;
    j->n_ops = n;
    j->next_op = 0;
    j->inflight = 0;
    j->phase_done = done;
    pump_ops(j);
}

static void op_done(rec_job *j)
{
    j->inflight--;
    pump_ops(j);
}

/* ---- 1. the active runs ---- */

/* Last sign of life: the newest of updated_at, last_heartbeat_at and created_at. */
static double last_seen(const cJSON *it)
{
    const char *names[] = {"updated_at", "last_heartbeat_at", "created_at"};
    double best = -1;
    for (size_t i = 0; i < 3; i++) {
        double t = proto_parse_iso(launch__str(it, names[i]));
        if (t > best)
            best = t;
    }
    return best;
}

/* Takes the plain item `it` as the next candidate (`arn` its task, NULL if none yet). */
static cand *take_cand(rec_job *j, cJSON *it, const char *arn, double age)
{
    const char *st = launch__str(it, "status");
    bool queued = strcmp(st, "QUEUED") == 0, running = strcmp(st, "RUNNING") == 0;
    cand *c = &j->c[j->n++];
    c->item = it;
    c->run_id = launch__str(it, "run_id");
    c->status = st;
    c->arn = arn;
    c->queued = queued;
    c->ended = !queued && !running;
    c->age = age;
    if (cJSON_GetObjectItemCaseSensitive(it, "cancel_requested_at")) {
        const char *why = launch__str(it, "cancel_reason");
        c->cancel_reason = why ? why : "";
    }
    const cJSON *ir = cJSON_GetObjectItemCaseSensitive(it, "infra_retries");
    c->infra_retries = cJSON_IsNumber(ir) ? ir->valueint : 0;
    return c;
}

/* Whether the index entry needs looking at now (takes `it` into a candidate if so). */
static void consider(rec_job *j, cJSON *it)
{
    const char *id = launch__str(it, "run_id"), *st = launch__str(it, "status");
    const char *ex = launch__str(it, "executor"), *arn = launch__str(it, "external_id");
    if (!id || !st || (ex && strcmp(ex, "ecs") != 0))
        return cJSON_Delete(it);
    bool queued = strcmp(st, "QUEUED") == 0, running = strcmp(st, "RUNNING") == 0;
    bool has_arn = arn && *arn;
    double seen = last_seen(it), created = proto_parse_iso(launch__str(it, "created_at"));
    double age = j->now - (created >= 0 ? created : seen);
    bool stale = seen < 0 || j->now - seen >= (double)j->stale;
    /* A QUEUED run without a task ARN may be a launch between its QUEUED write and RunTask's
     * answer: never before the launch grace, and only once it failed to start in time. */
    long no_task_wait =
        j->start_timeout > LAUNCH_GRACE_SECONDS ? j->start_timeout : LAUNCH_GRACE_SECONDS;
    bool take = running  ? stale
                : queued ? (has_arn ? stale || age >= (double)j->start_timeout
                                    : age >= (double)no_task_wait)
                         : true; /* ended, marker left behind */
    if (!take)
        return cJSON_Delete(it);
    take_cand(j, it, has_arn ? arn : NULL, age);
}

static void query(rec_job *j, const cJSON *start_key);
static void start_describe(rec_job *j);

static void on_query(void *ud, const fetch_aws_result *r)
{
    rec_job *j = ud;
    if (!aws_ok(r)) {
        /* A table from before the index (DynamoDB: ValidationException "does not have the
         * specified index"; moto: ResourceNotFoundException), or no table at all. */
        bool no_index = r->error_code && (strcmp(r->error_code, "ValidationException") == 0 ||
                                          strcmp(r->error_code, "ResourceNotFoundException") == 0);
        note_error(j,
                   no_index ? "cannot query the active runs (run dagy-launch init-tables to add "
                              "the index " LAUNCH_ACTIVE_INDEX ")"
                            : "cannot query the active runs",
                   r);
        uv_stop(&j->ctx.loop);
        return;
    }
    const cJSON *e, *items = cJSON_GetObjectItemCaseSensitive(r->json, "Items");
    cJSON_ArrayForEach(e, items)
    {
        if ((long)j->n >= j->max_runs)
            break;
        consider(j, proto_ddb_unmarshal(e));
    }
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(r->json, "LastEvaluatedKey");
    if ((long)j->n < j->max_runs && cJSON_IsObject(next))
        return query(j, next);
    start_describe(j);
}

/* The index holds only active runs, so this reads what is active, not the history. */
static void query(rec_job *j, const cJSON *start_key)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.runs_table);
    cJSON_AddStringToObject(q, "IndexName", LAUNCH_ACTIVE_INDEX);
    cJSON_AddStringToObject(q, "KeyConditionExpression", LAUNCH_ACTIVE_ATTR " = :one");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":one"), "S", LAUNCH_ACTIVE_VALUE);
    if (start_key)
        cJSON_AddItemToObject(q, "ExclusiveStartKey", cJSON_Duplicate(start_key, true));
    int rc = launch__call(&j->ctx, "dynamodb", "Query", q, on_query, j);
    if (rc < 0) {
        j->errors++;
        launch__fmt(j->error, sizeof j->error, "DynamoDB Query: %s", strerror(-rc));
        uv_stop(&j->ctx.loop);
    }
}

/* ---- 2. describe and decide ---- */

static void set_verdict(cand *c, bool infra, const char *msg, const char *stop)
{
    c->v.status = "FAILED";
    c->v.infra = infra;
    launch__fmt(c->v.error_message, sizeof c->v.error_message, "Reconciled: %s", msg);
    launch__fmt(c->v.stop_reason, sizeof c->v.stop_reason, "%s", stop);
}

/* A run the agent ended itself but left in the index: a FAILED that the platform caused (a
 * SIGTERM nobody asked for through cancel) is relaunched; anything else only leaves the index. */
static void decide_ended(rec_job *j, cand *c, const cJSON *task)
{
    bool failed = strcmp(c->status, "FAILED") == 0;
    launch_verdict v;
    launch_reconcile_verdict(task, j->ctx.cfg.container_name, c->cancel_reason, &v);
    if (task && !v.status && failed && !c->cancel_reason)
        return; /* not STOPPED yet: its stop code decides, next time */
    c->act = true;
    c->cleanup = true;
    const char *msg = launch__str(c->item, "error_message");
    bool sigterm = msg && strstr(msg, "Worker shutdown requested via SIGTERM");
    c->v.infra = failed && !c->cancel_reason && (v.status ? v.infra : sigterm);
    if (v.status && failed)
        launch__fmt(c->v.stop_reason, sizeof c->v.stop_reason, "%s", v.stop_reason);
}

/* The verdict for an active run, from its described task (NULL: ECS does not know it). */
static void decide(rec_job *j, cand *c, const cJSON *task)
{
    if (c->ended)
        return decide_ended(j, c, task);
    char why[160];
    if (!c->arn) {
        launch__fmt(why, sizeof why, "TaskFailedToStart: no ECS task was recorded within %ld s",
                    j->start_timeout > LAUNCH_GRACE_SECONDS ? j->start_timeout
                                                            : LAUNCH_GRACE_SECONDS);
        set_verdict(c, true, "no ECS task was recorded for this run", why);
    } else if (!task) {
        /* ECS forgets a stopped task after about an hour; a stale run whose task is gone is
         * over. A QUEUED one never reached RUNNING (the agent would have said so). */
        set_verdict(c, c->queued, "ECS task not found", "MISSING: ECS task not found");
    } else {
        launch_reconcile_verdict(task, j->ctx.cfg.container_name, c->cancel_reason, &c->v);
        const char *last = launch__str(task, "lastStatus");
        if (!c->v.status && c->queued && c->age >= (double)j->start_timeout && last &&
            strcmp(last, "RUNNING") != 0 && strcmp(last, "DEACTIVATING") != 0 &&
            strcmp(last, "STOPPING") != 0) {
            launch__fmt(why, sizeof why, "TaskFailedToStart: not RUNNING within %ld s (%s)",
                        j->start_timeout, last);
            set_verdict(c, true, "the ECS task did not start in time", why);
            c->stop_task = true;
        }
    }
    c->act = c->v.status != NULL;
}

typedef struct {
    rec_job *j;
    size_t first, count; /* candidates [first, first+count) that have an ARN, in order */
} describe_chunk;

static void on_describe(void *ud, const fetch_aws_result *r)
{
    describe_chunk *ch = ud;
    rec_job *j = ch->j;
    if (!aws_ok(r)) {
        note_error(j, "DescribeTasks", r);
    } else {
        const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(r->json, "tasks"), *t;
        for (size_t i = ch->first; i < ch->first + ch->count; i++) {
            cand *c = &j->c[i];
            const cJSON *found = NULL;
            cJSON_ArrayForEach(t, tasks)
            {
                const char *arn = launch__str(t, "taskArn");
                if (arn && strcmp(arn, c->arn) == 0)
                    found = t;
            }
            c->described = true;
            decide(j, c, found); /* absent: ECS lists it under failures, MISSING */
        }
    }
    free(ch);
    op_done(j);
}

static int start_describe_chunk(rec_job *j, size_t k)
{
    size_t first = k * LAUNCH_DESCRIBE_BATCH;
    size_t count = j->n_with_arn - first < LAUNCH_DESCRIBE_BATCH ? j->n_with_arn - first
                                                                 : LAUNCH_DESCRIBE_BATCH;
    describe_chunk *ch = malloc(sizeof *ch);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "cluster", j->ctx.cfg.cluster);
    cJSON *arr = cJSON_AddArrayToObject(q, "tasks");
    for (size_t i = first; i < first + count; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(j->c[i].arn));
    int rc = -ENOMEM;
    if (ch) {
        *ch = (describe_chunk){j, first, count};
        rc = launch__call(&j->ctx, "ecs", "DescribeTasks", q, on_describe, ch);
    } else {
        cJSON_Delete(q);
    }
    if (rc < 0) {
        free(ch);
        j->errors++;
        launch__fmt(j->error, sizeof j->error, "ECS DescribeTasks: %s", strerror(-rc));
    }
    return rc;
}

static void start_stops(rec_job *j);

/* Candidates with an ARN first (in batches of 100), the rest after. */
static int by_arn(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return (x->arn == NULL) - (y->arn == NULL);
}

static void start_describe(rec_job *j)
{
    qsort(j->c, j->n, sizeof *j->c, by_arn);
    size_t with_arn = 0;
    while (with_arn < j->n && j->c[with_arn].arn)
        with_arn++;
    for (size_t i = with_arn; i < j->n; i++)
        decide(j, &j->c[i], NULL);
    j->n_with_arn = with_arn;
    run_phase(j, (with_arn + LAUNCH_DESCRIBE_BATCH - 1) / LAUNCH_DESCRIBE_BATCH,
              start_describe_chunk, start_stops);
}

/* ---- 3. stop what did not start in time ---- */

typedef struct {
    rec_job *j;
    cand *c;
} cand_op;

static void on_stop(void *ud, const fetch_aws_result *r)
{
    cand_op *u = ud;
    if (!aws_ok(r)) {
        note_error(u->j, u->c->run_id, r);
        u->c->act = false; /* try again next time rather than close a run whose task lives */
    }
    rec_job *j = u->j;
    free(u);
    op_done(j);
}

static cand *nth_where(rec_job *j, size_t k, bool (*pred)(const cand *))
{
    for (size_t i = 0; i < j->n; i++)
        if (pred(&j->c[i]) && k-- == 0)
            return &j->c[i];
    return NULL;
}

static bool wants_stop(const cand *c)
{
    return c->act && c->stop_task;
}

static int start_stop(rec_job *j, size_t k)
{
    cand *c = nth_where(j, k, wants_stop);
    cand_op *u = malloc(sizeof *u);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "cluster", j->ctx.cfg.cluster);
    cJSON_AddStringToObject(q, "task", c->arn);
    cJSON_AddStringToObject(q, "reason",
                            "dagy-launch reconcile: not RUNNING within the start "
                            "timeout");
    int rc = -ENOMEM;
    if (u) {
        *u = (cand_op){j, c};
        rc = launch__call(&j->ctx, "ecs", "StopTask", q, on_stop, u);
    } else {
        cJSON_Delete(q);
    }
    if (rc < 0) {
        free(u);
        c->act = false;
        j->errors++;
    }
    return rc;
}

static void end_first_loop(rec_job *j)
{
    uv_stop(&j->ctx.loop);
}

static void start_stops(rec_job *j)
{
    size_t n = 0;
    for (size_t i = 0; i < j->n; i++)
        n += wants_stop(&j->c[i]);
    run_phase(j, n, start_stop, end_first_loop);
}

/* ---- 4. relaunch ---- */

/* Which runs get a retry: infrastructure failures, no cancel requested, budget left. */
static void pick_relaunches(rec_job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        cand *c = &j->c[i];
        c->relaunch =
            c->act && c->v.infra && !c->cancel_reason && c->infra_retries < j->relaunch_infra;
        if (c->relaunch)
            launch_retry_run_id(c->run_id, c->infra_retries + 1, c->relaunch_id);
    }
}

/* Launches every retry at once (exactly-once by run id). A retry that could not be launched for
 * a passing reason leaves its source active for the next reconcile; one that can never be (the
 * source lacks what a launch needs) closes the source without it. */
static void relaunch_all(rec_job *j)
{
    size_t n = 0;
    launch__spec *specs = calloc(j->n ? j->n : 1, sizeof *specs);
    cand **who = calloc(j->n ? j->n : 1, sizeof *who);
    char err[LAUNCH_ERR_MAX];
    for (size_t i = 0; specs && who && i < j->n; i++) {
        cand *c = &j->c[i];
        if (!c->relaunch)
            continue;
        launch_retry_opts ro = {.run_id = c->relaunch_id,
                                .trigger_source = "reconcile",
                                .triggered_by = "dagy-launch reconcile",
                                .infra_retries = c->infra_retries + 1};
        if (launch__spec_from_item(&specs[n], c->item, &ro, err) < 0) {
            fprintf(stderr, "dagy-launch: reconcile: run %s: not relaunched: %s\n", c->run_id, err);
            continue;
        }
        who[n++] = c;
    }
    if (n && launch__launch(specs, n) < 0)
        j->errors++;
    for (size_t i = 0; i < n; i++) {
        cand *c = who[i];
        launch__spec *s = &specs[i];
        /* A launch failure is recorded on the retry's own item: it exists, the chain holds. */
        c->relaunched = s->success || strncmp(s->error, "ECS launch failed", 17) == 0;
        if (c->relaunched) {
            j->relaunched += s->success;
        } else if (s->exit != LAUNCH_EXIT_INVALID) {
            c->act = false; /* DynamoDB or ECS unreachable: next time, same retry run id */
            j->errors++;
        }
        if (!s->success) {
            fprintf(stderr, "dagy-launch: reconcile: run %s: relaunch %s failed: %s\n", c->run_id,
                    c->relaunch_id, s->error);
            if (!j->error[0])
                launch__fmt(j->error, sizeof j->error, "relaunch %s: %s", c->relaunch_id, s->error);
        }
        launch__spec_clear(s);
    }
    free(specs);
    free(who);
}

/* ---- 5. the terminal writes ---- */

static void on_update(void *ud, const fetch_aws_result *r)
{
    cand_op *u = ud;
    rec_job *j = u->j;
    if (aws_ok(r))
        j->updated++;
    else if (r->error_code && strcmp(r->error_code, "ConditionalCheckFailedException") == 0)
        j->skipped++; /* the agent (or another reconciler) got there first */
    else
        note_error(j, u->c->run_id, r);
    free(u);
    op_done(j);
}

static void add_val(cJSON *vals, const char *name, const char *type, const char *value)
{
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, name), type, value);
}

/* A run the agent ended: the marker goes, the relaunch is recorded, and ECS's stop reason is
 * added unless the agent gave one. */
static cJSON *cleanup_body(rec_job *j, const cand *c)
{
    char expr[200];
    bool sr = c->v.stop_reason[0] != '\0';
    launch__fmt(expr, sizeof expr, "%s%s%s%s REMOVE " LAUNCH_ACTIVE_ATTR,
                c->relaunched || sr ? "SET " : "", c->relaunched ? "relaunched_as = :ra" : "",
                c->relaunched && sr ? ", " : "",
                sr ? "stop_reason = if_not_exists(stop_reason, :sr)" : "");
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", c->run_id, NULL, NULL));
    cJSON_AddStringToObject(q, "UpdateExpression", expr);
    cJSON_AddStringToObject(q, "ConditionExpression",
                            "#s = :st AND attribute_exists(" LAUNCH_ACTIVE_ATTR ")");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(q, "ExpressionAttributeNames"), "#s", "status");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    add_val(vals, ":st", "S", c->status);
    if (c->relaunched)
        add_val(vals, ":ra", "S", c->relaunch_id);
    if (sr)
        add_val(vals, ":sr", "S", c->v.stop_reason);
    return q;
}

/* The terminal write, only while the run is still QUEUED or RUNNING, with a status_seq above
 * anything the agent could still send; the index marker goes with it. */
static cJSON *update_body(rec_job *j, const cand *c)
{
    if (c->cleanup)
        return cleanup_body(j, c);
    char now[32], done[32], seq[32], expr[256];
    proto_iso_time(j->now, now);
    proto_iso_time(c->v.stopped_at > 0 ? c->v.stopped_at : j->now, done);
    launch__fmt(seq, sizeof seq, "%lld", LAUNCH_FINAL_SEQ);
    launch__fmt(expr, sizeof expr,
                "SET #s = :st, stop_reason = :sr, completed_at = :ca, updated_at = :now, "
                "status_seq = :seq%s%s REMOVE " LAUNCH_ACTIVE_ATTR,
                c->v.error_message[0] ? ", error_message = :msg" : "",
                c->relaunched ? ", relaunched_as = :ra" : "");
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", c->run_id, NULL, NULL));
    cJSON_AddStringToObject(q, "UpdateExpression", expr);
    /* The verdict is about task c->arn: it closes the run only if that is the run's task. */
    cJSON_AddStringToObject(q, "ConditionExpression",
                            c->arn ? "#s IN (:q, :r) AND (attribute_not_exists(external_id) OR "
                                     "external_id = :arn)"
                                   : "#s IN (:q, :r)");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(q, "ExpressionAttributeNames"), "#s", "status");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    if (c->arn)
        add_val(vals, ":arn", "S", c->arn);
    add_val(vals, ":st", "S", c->v.status);
    add_val(vals, ":sr", "S", c->v.stop_reason);
    add_val(vals, ":ca", "S", done);
    add_val(vals, ":now", "S", now);
    add_val(vals, ":seq", "N", seq);
    add_val(vals, ":q", "S", "QUEUED");
    add_val(vals, ":r", "S", "RUNNING");
    if (c->v.error_message[0])
        add_val(vals, ":msg", "S", c->v.error_message);
    if (c->relaunched)
        add_val(vals, ":ra", "S", c->relaunch_id);
    return q;
}

static bool wants_write(const cand *c)
{
    return c->act;
}

static int start_update(rec_job *j, size_t k)
{
    cand *c = nth_where(j, k, wants_write);
    cand_op *u = malloc(sizeof *u);
    int rc = -ENOMEM;
    if (u) {
        *u = (cand_op){j, c};
        rc = launch__call(&j->ctx, "dynamodb", "UpdateItem", update_body(j, c), on_update, u);
    }
    if (rc < 0) {
        free(u);
        j->errors++;
        launch__fmt(j->error, sizeof j->error, "DynamoDB UpdateItem: %s", strerror(-rc));
    }
    return rc;
}

static void writes_done(rec_job *j)
{
    uv_stop(&j->ctx.loop);
}

static void start_updates(rec_job *j)
{
    size_t n = 0;
    for (size_t i = 0; i < j->n; i++) {
        n += wants_write(&j->c[i]);
        j->skipped += !wants_write(&j->c[i]); /* still running, or not describable this time */
    }
    if (n == 0)
        return;
    run_phase(j, n, start_update, writes_done);
    uv_run(&j->ctx.loop, UV_RUN_DEFAULT);
}

static cJSON *summary_json(const rec_job *j)
{
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "checked", (double)j->n);
    cJSON_AddNumberToObject(out, "updated", (double)j->updated);
    cJSON_AddNumberToObject(out, "skipped", (double)j->skipped);
    cJSON_AddNumberToObject(out, "relaunched", (double)j->relaunched);
    if (j->children_stopped) /* only then: the summary's keys stay as they were */
        cJSON_AddNumberToObject(out, "children_stopped", (double)j->children_stopped);
    if (j->errors)
        cJSON_AddNumberToObject(out, "errors", (double)j->errors);
    return out;
}

static void job_free(rec_job *j)
{
    for (size_t i = 0; j && i < j->n; i++)
        cJSON_Delete(j->c[i].item);
    if (j)
        free(j->c);
    free(j);
}

/* A job with room for `slots` candidates and its context open; NULL with err set (*exit the
 * exit code: invalid configuration, or out of memory). */
static rec_job *job_open(const launch_reconcile_opts *o, size_t slots, char *err, int *exit)
{
    rec_job *j = calloc(1, sizeof *j);
    if (!j || !(j->c = calloc(slots, sizeof *j->c))) {
        free(j);
        launch__fmt(err, LAUNCH_ERR_MAX, "out of memory");
        *exit = LAUNCH_EXIT_FAILED;
        return NULL;
    }
    j->max_runs = o->max_runs;
    j->stale = o->stale_seconds;
    j->start_timeout = o->start_timeout;
    j->relaunch_infra = o->relaunch_infra;
    j->now = proto_now();
    launch_config probe;
    /* A relaunch is a launch: its configuration must be there before anything is closed. */
    if ((o->relaunch_infra > 0 && launch_config_from_env(&probe, LAUNCH_NEED_RUN, j->error) < 0) ||
        launch__ctx_open(&j->ctx, LAUNCH_NEED_CLUSTER, j->error) < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "%s%s", j->error,
                    o->relaunch_infra > 0 ? " (relaunching needs the launch configuration; "
                                            "--relaunch-infra 0 closes runs without relaunching)"
                                          : "");
        job_free(j);
        *exit = LAUNCH_EXIT_INVALID;
        return NULL;
    }
    return j;
}

/* Relaunches, terminal writes, then the context closed; the exit code. */
static int job_finish(rec_job *j, char *err)
{
    pick_relaunches(j);
    relaunch_all(j);
    start_updates(j);
    char why[LAUNCH_ERR_MAX];
    if (launch__reconcile_children(&j->ctx, &j->children_stopped, &j->errors, why)) {
        j->errors++;
        if (!j->error[0])
            launch__fmt(j->error, sizeof j->error, "listing the agents' ECS children: %s", why);
    }
    launch__ctx_close(&j->ctx);
    if (!j->errors)
        return LAUNCH_EXIT_OK;
    launch__fmt(err, LAUNCH_ERR_MAX, "reconcile: %zu error(s); first: %s", j->errors, j->error);
    return LAUNCH_EXIT_FAILED;
}

int launch__reconcile(const launch_reconcile_opts *o, cJSON **answer, char *err)
{
    int rc;
    *answer = NULL;
    rec_job *j = job_open(o, (size_t)o->max_runs, err, &rc);
    if (!j)
        return rc;
    query(j, NULL);
    uv_run(&j->ctx.loop, UV_RUN_DEFAULT);
    rc = job_finish(j, err);
    *answer = summary_json(j);
    job_free(j);
    return rc;
}

int launch_cmd_reconcile(const launch_reconcile_opts *o)
{
    char err[LAUNCH_ERR_MAX];
    cJSON *answer = NULL;
    int rc = launch__reconcile(o, &answer, err);
    if (answer)
        launch__print_json(answer);
    if (rc != LAUNCH_EXIT_OK)
        fprintf(stderr, "dagy-launch: %s\n", err);
    cJSON_Delete(answer);
    return rc;
}

/* {"ignored": why, "run_id": id, "task_arn": arn}, logged. */
static cJSON *ignored(const char *run_id, const char *arn, const char *why)
{
    fprintf(stderr, "dagy-launch: task %s: ignored: %s\n", arn, why);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "ignored", why);
    cJSON_AddStringToObject(out, "run_id", run_id);
    cJSON_AddStringToObject(out, "task_arn", arn);
    return out;
}

/* The answer for the one candidate of a task event, logged. */
static cJSON *task_answer(const rec_job *j, const cand *c, const char *arn)
{
    cJSON *out = summary_json(j);
    cJSON_AddStringToObject(out, "run_id", c->run_id);
    cJSON_AddStringToObject(out, "task_arn", arn);
    const char *verdict = c->cleanup ? c->status : c->v.status;
    verdict ? cJSON_AddStringToObject(out, "status", verdict)
            : cJSON_AddNullToObject(out, "status");
    if (c->relaunched)
        cJSON_AddStringToObject(out, "relaunched_as", c->relaunch_id);
    const char *what = j->updated ? "closed" : j->errors ? "not closed (error)" : "skipped";
    char why[200];
    launch__fmt(why, sizeof why, "%s", c->ended ? "the run had already ended " : "");
    if (c->ended)
        launch__fmt(why + strlen(why), sizeof why - strlen(why), "%s", c->status);
    else if (!j->updated && !j->errors)
        launch__fmt(why, sizeof why, "%s",
                    c->act ? "the run ended or changed task meanwhile (conditional write)"
                           : "the task has not stopped");
    cJSON_AddStringToObject(out, "outcome", what);
    fprintf(stderr, "dagy-launch: run %s: task %s stopped: %s%s%s%s%s\n", c->run_id, arn, what,
            verdict && j->updated ? " " : "", verdict && j->updated ? verdict : "",
            why[0] ? ": " : "", why);
    return out;
}

int launch__reconcile_task(const char *run_id, const cJSON *task, const launch_reconcile_opts *o,
                           cJSON **answer, char *err)
{
    int rc;
    const char *arn = launch__str(task, "taskArn");
    *answer = NULL;
    if (!arn || !*arn) {
        launch__fmt(err, LAUNCH_ERR_MAX, "the task has no taskArn");
        return LAUNCH_EXIT_INVALID;
    }
    rec_job *j = job_open(o, 1, err, &rc);
    if (!j)
        return rc;
    cJSON *it = NULL;
    int grc = launch__get_run(&j->ctx, run_id, &it, err);
    const char *st = launch__str(it, "status"), *ex = launch__str(it, "executor");
    const char *rec = launch__str(it, "external_id");
    char why[LAUNCH_ERR_MAX + 64];
    rc = LAUNCH_EXIT_OK;
    if (grc == -ENOENT || (it && !st)) {
        launch__fmt(why, sizeof why, "run \"%s\" has no item with a status", run_id);
        *answer = ignored(run_id, arn, why);
    } else if (grc < 0) {
        rc = LAUNCH_EXIT_FAILED;
    } else if (ex && strcmp(ex, "ecs") != 0) {
        *answer = ignored(run_id, arn, "the run is not an ECS run");
    } else if (rec && *rec && strcmp(rec, arn) != 0) {
        launch__fmt(why, sizeof why, "run \"%s\" belongs to task %s", run_id, rec);
        *answer = ignored(run_id, arn, why);
    } else {
        /* No staleness test: a STOPPED task is final, and the agent's own last write came before
         * its container exited. The write stays conditional all the same. */
        cand *c = take_cand(j, it, arn, 0);
        it = NULL;
        c->described = true;
        decide(j, c, task);
        rc = job_finish(j, err);
        *answer = task_answer(j, c, arn);
        job_free(j);
        return rc;
    }
    cJSON_Delete(it);
    launch__ctx_close(&j->ctx);
    job_free(j);
    return rc;
}
