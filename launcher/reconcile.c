/* reconcile.c - `dagy-launch reconcile`: closes runs whose worker died without saying so (OOM
 * kill, Spot interruption, a task that never started). Three phases on one loop: Scan for stale
 * QUEUED/RUNNING ECS runs, DescribeTasks in batches of 100, then one conditional UpdateItem per
 * stopped task. The condition (status still QUEUED or RUNNING) means a run the agent finished
 * meanwhile is never touched, and a second reconcile finds nothing left to do. */
#include "launcher/launch.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ddb.h"

typedef struct {
    char *run_id, *arn, *status;
    launch_verdict v; /* v.status NULL = leave the run alone */
} cand;

typedef struct {
    launch__ctx ctx;
    long max_runs, stale;
    double now;
    cand *c;
    size_t n;
    size_t pending;
    size_t updated, skipped, errors;
    char error[LAUNCH_ERR_MAX];
} rec_job;

typedef struct {
    rec_job *j;
    size_t first, count; /* candidates [first, first+count) that have an ARN, in order */
} describe_chunk;

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

static void start_describe(rec_job *j);
static void start_updates(rec_job *j);

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

static void add_candidate(rec_job *j, const cJSON *it)
{
    const char *id = launch__str(it, "run_id"), *st = launch__str(it, "status");
    double seen = last_seen(it);
    if (!id || !st || (seen >= 0 && j->now - seen < (double)j->stale))
        return;
    cand *c = &j->c[j->n++];
    c->run_id = strdup(id);
    c->status = strdup(st);
    const char *arn = launch__str(it, "external_id");
    c->arn = arn && *arn ? strdup(arn) : NULL;
}

static void scan(rec_job *j, const cJSON *start_key);

static void on_scan(void *ud, const fetch_aws_result *r)
{
    rec_job *j = ud;
    if (!aws_ok(r)) {
        note_error(j, "cannot scan the runs table", r);
        uv_stop(&j->ctx.loop);
        return;
    }
    const cJSON *e, *items = cJSON_GetObjectItemCaseSensitive(r->json, "Items");
    cJSON_ArrayForEach(e, items)
    {
        if ((long)j->n >= j->max_runs)
            break;
        cJSON *it = proto_ddb_unmarshal(e);
        add_candidate(j, it);
        cJSON_Delete(it);
    }
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(r->json, "LastEvaluatedKey");
    if ((long)j->n < j->max_runs && cJSON_IsObject(next))
        return scan(j, next);
    start_describe(j);
}

static void scan(rec_job *j, const cJSON *start_key)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.runs_table);
    cJSON_AddStringToObject(q, "FilterExpression", "#s IN (:q, :r) AND #e = :ecs");
    cJSON_AddStringToObject(q, "ProjectionExpression",
                            "run_id, #s, external_id, updated_at, last_heartbeat_at, created_at");
    cJSON *names = cJSON_AddObjectToObject(q, "ExpressionAttributeNames");
    cJSON_AddStringToObject(names, "#s", "status");
    cJSON_AddStringToObject(names, "#e", "executor");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":q"), "S", "QUEUED");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":r"), "S", "RUNNING");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":ecs"), "S", "ecs");
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    if (start_key)
        cJSON_AddItemToObject(q, "ExclusiveStartKey", cJSON_Duplicate(start_key, true));
    int rc = launch__call(&j->ctx, "dynamodb", "Scan", q, on_scan, j);
    if (rc < 0) {
        j->errors++;
        launch__fmt(j->error, sizeof j->error, "DynamoDB Scan: %s", strerror(-rc));
        uv_stop(&j->ctx.loop);
    }
}

/* ECS forgets a stopped task after about an hour; a stale run whose task is gone is over. */
static void verdict_missing(cand *c, const char *what)
{
    c->v.status = "FAILED";
    launch__fmt(c->v.error_message, sizeof c->v.error_message, "Reconciled: %s", what);
    launch__fmt(c->v.stop_reason, sizeof c->v.stop_reason, "MISSING: %s", what);
}

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
            /* Absent from "tasks" (ECS lists it under failures with reason MISSING). */
            if (found)
                launch_reconcile_verdict(found, j->ctx.cfg.container_name, &c->v);
            else
                verdict_missing(c, "ECS task not found");
        }
    }
    free(ch);
    if (--j->pending == 0)
        start_updates(j);
}

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
    /* A QUEUED run that never got a task ARN: the launch died between the run item and
     * RunTask's answer, and no agent ever started (it would have recorded itself). */
    for (size_t i = with_arn; i < j->n; i++)
        if (strcmp(j->c[i].status, "QUEUED") == 0)
            verdict_missing(&j->c[i], "no ECS task was recorded for this run");
    j->pending = 1;
    for (size_t first = 0; first < with_arn; first += LAUNCH_DESCRIBE_BATCH) {
        describe_chunk *ch = malloc(sizeof *ch);
        size_t count =
            with_arn - first < LAUNCH_DESCRIBE_BATCH ? with_arn - first : LAUNCH_DESCRIBE_BATCH;
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
        } else {
            j->pending++;
        }
    }
    if (--j->pending == 0)
        start_updates(j);
}

typedef struct {
    rec_job *j;
    cand *c;
} update_op;

static void update_done(rec_job *j)
{
    if (--j->pending == 0)
        uv_stop(&j->ctx.loop);
}

static void on_update(void *ud, const fetch_aws_result *r)
{
    update_op *u = ud;
    rec_job *j = u->j;
    if (aws_ok(r))
        j->updated++;
    else if (r->error_code && strcmp(r->error_code, "ConditionalCheckFailedException") == 0)
        j->skipped++; /* the agent (or another reconciler) got there first */
    else
        note_error(j, u->c->run_id, r);
    free(u);
    update_done(j);
}

/* The terminal write, only while the run is still QUEUED or RUNNING, with a status_seq above
 * anything the agent could still send. */
static cJSON *update_body(rec_job *j, const cand *c)
{
    char now[32], done[32], seq[32];
    proto_iso_time(j->now, now);
    proto_iso_time(c->v.stopped_at > 0 ? c->v.stopped_at : j->now, done);
    launch__fmt(seq, sizeof seq, "%lld", LAUNCH_FINAL_SEQ);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", c->run_id, NULL, NULL));
    cJSON_AddStringToObject(q, "UpdateExpression",
                            c->v.error_message[0]
                                ? "SET #s = :st, stop_reason = :sr, completed_at = :ca, "
                                  "updated_at = :now, status_seq = :seq, error_message = :msg"
                                : "SET #s = :st, stop_reason = :sr, completed_at = :ca, "
                                  "updated_at = :now, status_seq = :seq");
    cJSON_AddStringToObject(q, "ConditionExpression", "#s IN (:q, :r)");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(q, "ExpressionAttributeNames"), "#s", "status");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":st"), "S", c->v.status);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":sr"), "S", c->v.stop_reason);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":ca"), "S", done);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":now"), "S", now);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":seq"), "N", seq);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":q"), "S", "QUEUED");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":r"), "S", "RUNNING");
    if (c->v.error_message[0])
        cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":msg"), "S", c->v.error_message);
    return q;
}

static void start_updates(rec_job *j)
{
    j->pending = 1;
    for (size_t i = 0; i < j->n; i++) {
        cand *c = &j->c[i];
        if (!c->v.status) {
            j->skipped++; /* still running, or not describable this time */
            continue;
        }
        update_op *u = malloc(sizeof *u);
        int rc = -ENOMEM;
        if (u) {
            *u = (update_op){j, c};
            rc = launch__call(&j->ctx, "dynamodb", "UpdateItem", update_body(j, c), on_update, u);
        }
        if (rc < 0) {
            free(u);
            j->errors++;
            launch__fmt(j->error, sizeof j->error, "DynamoDB UpdateItem: %s", strerror(-rc));
        } else {
            j->pending++;
        }
    }
    update_done(j);
}

int launch_cmd_reconcile(long max_runs, long stale_seconds)
{
    rec_job *j = calloc(1, sizeof *j);
    if (!j || !(j->c = calloc((size_t)max_runs, sizeof *j->c))) {
        free(j);
        fprintf(stderr, "dagy-launch: out of memory\n");
        return LAUNCH_EXIT_FAILED;
    }
    j->max_runs = max_runs;
    j->stale = stale_seconds;
    j->now = proto_now();
    if (launch__ctx_open(&j->ctx, LAUNCH_NEED_CLUSTER, j->error) < 0) {
        fprintf(stderr, "dagy-launch: %s\n", j->error);
        free(j->c);
        free(j);
        return LAUNCH_EXIT_INVALID;
    }
    scan(j, NULL);
    uv_run(&j->ctx.loop, UV_RUN_DEFAULT);
    launch__ctx_close(&j->ctx);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "checked", (double)j->n);
    cJSON_AddNumberToObject(out, "updated", (double)j->updated);
    cJSON_AddNumberToObject(out, "skipped", (double)j->skipped);
    if (j->errors)
        cJSON_AddNumberToObject(out, "errors", (double)j->errors);
    launch__print_json(out);
    cJSON_Delete(out);
    int rc = LAUNCH_EXIT_OK;
    if (j->errors) {
        fprintf(stderr, "dagy-launch: reconcile: %zu error(s); first: %s\n", j->errors, j->error);
        rc = LAUNCH_EXIT_FAILED;
    }
    for (size_t i = 0; i < j->n; i++) {
        free(j->c[i].run_id);
        free(j->c[i].arn);
        free(j->c[i].status);
    }
    free(j->c);
    free(j);
    return rc;
}
