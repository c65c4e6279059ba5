/* retry.c - `dagy-launch retry` and `dagy-launch cancel`: the commands that act on a run that
 * exists. A retry repeats the source's launch exactly (run.c does the launching, with the same
 * exactly-once QUEUED write and idempotent RunTask as `run`); a cancel records the request on
 * the run item before it stops the task, so the agent (on SIGTERM) and the reconciler can tell
 * a cancel from a crash. */
#include "launcher/launch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ddb.h"
#include "proto/names.h"
#include "proto/util.h"

/* ---- retry ---- */

void launch__spec_clear(launch__spec *s)
{
    launch_request_clear(&s->req);
    free(s->artifact_uri);
    for (size_t i = 0; i < s->n_pkgs; i++)
        free(s->pkgs[i]);
    free(s->pkgs);
    free(s->task_arn);
    cJSON_Delete(s->result);
    memset(s, 0, sizeof *s);
}

int launch__spec_from_item(launch__spec *s, const cJSON *src, const launch_retry_opts *ro,
                           char *err)
{
    memset(s, 0, sizeof *s);
    int rc = launch_request_from_item(&s->req, src, ro, err);
    if (rc < 0)
        return rc;
    /* The source's own artifact (with its #sha256=) and packages, when it recorded them; an
     * older item is resolved again by its exact version and deployment. */
    const char *art = launch__str(src, "artifact_s3_uri");
    const cJSON *pk = cJSON_GetObjectItemCaseSensitive(src, "dep_package_uris"), *e;
    if (art && !(s->artifact_uri = strdup(art)))
        rc = -ENOMEM;
    if (rc == 0 && cJSON_IsArray(pk)) {
        s->pkgs_known = true;
        size_t n = (size_t)cJSON_GetArraySize(pk);
        s->pkgs = calloc(n ? n : 1, sizeof *s->pkgs);
        rc = s->pkgs ? 0 : -ENOMEM;
        cJSON_ArrayForEach(e, pk)
        {
            if (rc == 0 && cJSON_IsString(e) && !(s->pkgs[s->n_pkgs++] = strdup(e->valuestring)))
                rc = -ENOMEM;
        }
    }
    if (rc < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "out of memory");
        launch__spec_clear(s);
    }
    return rc;
}

/* Why the source cannot be retried now, or NULL. */
static const char *retry_refusal(const cJSON *src, bool all, char *buf, size_t n)
{
    const char *st = launch__str(src, "status");
    if (!st || !proto_status_terminal(st)) {
        launch__fmt(buf, n, "run \"%s\" is still %s: wait for it to end or cancel it first",
                    launch__str(src, "run_id"), st ? st : "without a status");
        return buf;
    }
    if (strcmp(st, "SUCCEEDED") == 0 && !all) {
        launch__fmt(buf, n, "run \"%s\" SUCCEEDED: nothing to resume (--all runs it again)",
                    launch__str(src, "run_id"));
        return buf;
    }
    return NULL;
}

/* A refusal as `run` prints a failed launch: {success false, run_id, task_arn null, error}. */
static cJSON *refused(const char *run_id, const char *msg)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "success", false);
    cJSON_AddNullToObject(j, "run_id");
    cJSON_AddStringToObject(j, "retry_of", run_id);
    cJSON_AddNullToObject(j, "task_arn");
    cJSON_AddStringToObject(j, "error_message", msg);
    return j;
}

int launch__retry(const char *run_id, const launch_retry_opts *o, cJSON **answer, bool *launched)
{
    char err[LAUNCH_ERR_MAX], why[LAUNCH_ERR_MAX], msg[LAUNCH_ERR_MAX + 64];
    *answer = NULL;
    *launched = false;
    if (!proto_name_check(PROTO_NAME_RUN_ID, run_id, err, sizeof err)) {
        fprintf(stderr, "dagy-launch: retry: %s\n", err);
        *answer = refused(run_id, err);
        return LAUNCH_EXIT_INVALID;
    }
    launch__ctx ctx;
    if (launch__ctx_open(&ctx, 0, err) < 0) {
        fprintf(stderr, "dagy-launch: %s\n", err);
        *answer = refused(run_id, err);
        return LAUNCH_EXIT_INVALID;
    }
    cJSON *src = NULL;
    int grc = launch__get_run(&ctx, run_id, &src, err);
    launch__ctx_close(&ctx);
    if (!src) {
        fprintf(stderr, "dagy-launch: retry: %s\n", err);
        *answer = refused(run_id, err);
        return grc == -ENOENT ? LAUNCH__EXIT_NOT_FOUND : LAUNCH_EXIT_FAILED;
    }
    int rc = LAUNCH_EXIT_INVALID;
    launch__spec spec;
    const char *no = retry_refusal(src, o->all, why, sizeof why);
    if (no) {
        fprintf(stderr, "dagy-launch: retry: %s\n", no);
        *answer = refused(run_id, no);
    } else if (launch__spec_from_item(&spec, src, o, err) < 0) {
        launch__fmt(msg, sizeof msg, "run \"%s\": %s", run_id, err);
        fprintf(stderr, "dagy-launch: retry: %s\n", msg);
        *answer = refused(run_id, msg);
    } else {
        int lrc = launch__launch(&spec, 1);
        *answer = spec.result;
        spec.result = NULL;
        *launched = true;
        if (!spec.success)
            fprintf(stderr, "dagy-launch: %s\n", spec.error);
        rc = lrc == LAUNCH_EXIT_INVALID ? lrc : lrc < 0 ? LAUNCH_EXIT_FAILED : spec.exit;
        launch__spec_clear(&spec);
    }
    cJSON_Delete(src);
    return rc;
}

int launch_cmd_retry(const char *run_id, const launch_retry_opts *o)
{
    cJSON *answer = NULL;
    bool launched = false;
    int rc = launch__retry(run_id, o, &answer, &launched);
    if (launched) /* a refusal is a message on stderr only, as before */
        launch__print_json(answer);
    cJSON_Delete(answer);
    return rc == LAUNCH__EXIT_NOT_FOUND ? LAUNCH_EXIT_FAILED : rc;
}

/* ---- cancel ---- */

#define CANCEL_REASON_MAX 200 /* ECS keeps a stoppedReason of up to 255 characters */

typedef struct {
    launch__ctx ctx;
    const char *reason; /* "" when none was given */
    char now[32];
} cancel_job;

static void add_val(cJSON *vals, const char *name, const char *type, const char *value)
{
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, name), type, value);
}

/* Records the request (the first one's time and reason win) while the run is not terminal.
 * Returns 0 with *item = the run after the write, or -EEXIST when it had already ended. */
static int record_request(cancel_job *j, const char *run_id, cJSON **item, char *err)
{
    cJSON *q = cJSON_CreateObject(), *ans = NULL;
    cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", run_id, NULL, NULL));
    cJSON_AddStringToObject(q, "UpdateExpression",
                            "SET cancel_requested_at = if_not_exists(cancel_requested_at, :now), "
                            "cancel_reason = if_not_exists(cancel_reason, :why)");
    cJSON_AddStringToObject(q, "ConditionExpression", "#s IN (:q, :r)");
    cJSON_AddStringToObject(q, "ReturnValues", "ALL_NEW");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(q, "ExpressionAttributeNames"), "#s", "status");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    add_val(vals, ":now", "S", j->now);
    add_val(vals, ":why", "S", j->reason);
    add_val(vals, ":q", "S", "QUEUED");
    add_val(vals, ":r", "S", "RUNNING");
    char code[LAUNCH_CODE_MAX], why[LAUNCH_ERR_MAX];
    int rc = launch__call_sync(&j->ctx, "dynamodb", "UpdateItem", q, &ans, code, why);
    const cJSON *attrs = cJSON_GetObjectItemCaseSensitive(ans, "Attributes");
    *item = rc == 0 && cJSON_IsObject(attrs) ? proto_ddb_unmarshal(attrs) : NULL;
    cJSON_Delete(ans);
    if (rc < 0 && strcmp(code, "ConditionalCheckFailedException") == 0)
        return -EEXIST;
    if (rc < 0 || !*item) {
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot record the cancel request: %s",
                    rc < 0 ? why : "no item in the answer");
        return -EIO;
    }
    return 0;
}

static int stop_task(cancel_job *j, const char *arn, char *err)
{
    cJSON *q = cJSON_CreateObject(), *ans = NULL;
    cJSON_AddStringToObject(q, "cluster", j->ctx.cfg.cluster);
    cJSON_AddStringToObject(q, "task", arn);
    cJSON_AddStringToObject(q, "reason", *j->reason ? j->reason : "dagy-launch cancel");
    char why[LAUNCH_ERR_MAX];
    int rc = launch__call_sync(&j->ctx, "ecs", "StopTask", q, &ans, NULL, why);
    cJSON_Delete(ans);
    if (rc < 0)
        launch__fmt(err, LAUNCH_ERR_MAX, "cancel recorded, but StopTask %s failed: %s", arn, why);
    return rc;
}

/* A QUEUED run whose agent never wrote: nobody else will end it, so the cancel does. Returns
 * true if it was still QUEUED (false: the agent took over and will end it itself). */
static bool cancel_queued(cancel_job *j, const char *run_id, char *err)
{
    char stop[LAUNCH_ERR_MAX], seq[32];
    launch__fmt(stop, sizeof stop, "UserInitiated: %s",
                *j->reason ? j->reason : "cancel requested");
    launch__fmt(seq, sizeof seq, "%lld", LAUNCH_FINAL_SEQ);
    cJSON *q = cJSON_CreateObject(), *ans = NULL;
    cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", run_id, NULL, NULL));
    cJSON_AddStringToObject(
        q, "UpdateExpression",
        "SET #s = :c, stop_reason = :sr, completed_at = :now, updated_at = :now, "
        "status_seq = :seq REMOVE " LAUNCH_ACTIVE_ATTR);
    cJSON_AddStringToObject(q, "ConditionExpression", "#s = :q");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(q, "ExpressionAttributeNames"), "#s", "status");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    add_val(vals, ":c", "S", "CANCELLED");
    add_val(vals, ":sr", "S", stop);
    add_val(vals, ":now", "S", j->now);
    add_val(vals, ":seq", "N", seq);
    add_val(vals, ":q", "S", "QUEUED");
    char code[LAUNCH_CODE_MAX];
    int rc = launch__call_sync(&j->ctx, "dynamodb", "UpdateItem", q, &ans, code, err);
    cJSON_Delete(ans);
    if (rc < 0 && strcmp(code, "ConditionalCheckFailedException") != 0)
        fprintf(stderr, "dagy-launch: warning: run %s: %s\n", run_id, err);
    return rc == 0;
}

/* The cancel of one run; its result object goes to `out`. Returns the exit code. */
static int cancel_one(cancel_job *j, const char *run_id, cJSON *out)
{
    char err[LAUNCH_ERR_MAX] = "";
    cJSON *it = NULL;
    cJSON_AddStringToObject(out, "run_id", run_id);
    int rc = record_request(j, run_id, &it, err);
    if (rc == -EEXIST) {
        cJSON *cur = launch__read_run(&j->ctx, run_id, err);
        const char *st = launch__str(cur, "status");
        cJSON_AddStringToObject(out, "status", st ? st : "unknown");
        bool already = st && strcmp(st, "CANCELLED") == 0;
        if (cur && !already)
            launch__fmt(err, sizeof err, "run \"%s\" already ended (%s): nothing to cancel", run_id,
                        st ? st : "no status");
        cJSON_AddStringToObject(out, "message", already ? "already cancelled" : err);
        cJSON_Delete(cur);
        return already ? LAUNCH_EXIT_OK : LAUNCH_EXIT_FAILED;
    }
    if (rc < 0) {
        cJSON_AddStringToObject(out, "message", err);
        return LAUNCH_EXIT_FAILED;
    }
    const char *arn = launch__str(it, "external_id"), *st = launch__str(it, "status");
    bool queued = st && strcmp(st, "QUEUED") == 0;
    int exit = LAUNCH_EXIT_OK;
    if (arn && stop_task(j, arn, err) < 0)
        exit = LAUNCH_EXIT_FAILED;
    const char *msg = "cancel requested; the task was asked to stop (the agent ends the run "
                      "CANCELLED)";
    if (queued && cancel_queued(j, run_id, err)) {
        st = "CANCELLED";
        msg = arn ? "the run had not started: CANCELLED, its task stopped"
                  : "the run had not started: CANCELLED (a launch in progress stops its task)";
    } else if (!arn) {
        msg = "cancel requested; the run has no task ARN yet (its agent reads the request)";
    }
    cJSON_AddStringToObject(out, "status", st ? st : "unknown");
    arn ? cJSON_AddStringToObject(out, "task_arn", arn) : cJSON_AddNullToObject(out, "task_arn");
    cJSON_AddStringToObject(out, "message", exit == LAUNCH_EXIT_OK ? msg : err);
    cJSON_Delete(it);
    return exit;
}

/* The run ids of every active ECS run (of `flow`, if given), from the sparse index. */
static cJSON *active_runs(cancel_job *j, const char *flow, char *err)
{
    cJSON *ids = cJSON_CreateArray(), *start = NULL;
    for (int page = 0; page < 10000; page++) {
        cJSON *q = cJSON_CreateObject(), *ans = NULL;
        cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.runs_table);
        cJSON_AddStringToObject(q, "IndexName", LAUNCH_ACTIVE_INDEX);
        cJSON_AddStringToObject(q, "KeyConditionExpression", LAUNCH_ACTIVE_ATTR " = :one");
        cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
        add_val(vals, ":one", "S", LAUNCH_ACTIVE_VALUE);
        if (start)
            cJSON_AddItemToObject(q, "ExclusiveStartKey", start);
        start = NULL;
        char why[LAUNCH_ERR_MAX];
        if (launch__call_sync(&j->ctx, "dynamodb", "Query", q, &ans, NULL, why) < 0) {
            launch__fmt(err, LAUNCH_ERR_MAX, "cannot query the active runs: %s", why);
            cJSON_Delete(ans);
            cJSON_Delete(ids);
            return NULL;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(ans, "Items"))
        {
            cJSON *it = proto_ddb_unmarshal(e);
            const char *id = launch__str(it, "run_id"), *st = launch__str(it, "status");
            const char *f = launch__str(it, "flow_name"), *ex = launch__str(it, "executor");
            if (id && st && !proto_status_terminal(st) && (!ex || strcmp(ex, "ecs") == 0) &&
                (!flow || (f && strcmp(f, flow) == 0)))
                cJSON_AddItemToArray(ids, cJSON_CreateString(id));
            cJSON_Delete(it);
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(ans, "LastEvaluatedKey");
        start = cJSON_IsObject(next) ? cJSON_Duplicate(next, true) : NULL;
        cJSON_Delete(ans);
        if (!start)
            break;
    }
    cJSON_Delete(start);
    return ids;
}

/* Checks the options: a valid run id, a reason ECS and DynamoDB take as is. */
static int cancel_check(const launch_cancel_opts *o, char *err)
{
    if (o->run_id && !proto_name_check(PROTO_NAME_RUN_ID, o->run_id, err, LAUNCH_ERR_MAX))
        return -EINVAL;
    if (o->flow && !proto_name_check(PROTO_NAME_FLOW, o->flow, err, LAUNCH_ERR_MAX))
        return -EINVAL;
    size_t n = o->reason ? strlen(o->reason) : 0;
    bool ctl = false;
    for (size_t i = 0; i < n; i++)
        ctl = ctl || (unsigned char)o->reason[i] < 0x20 || o->reason[i] == 0x7f;
    if (n > CANCEL_REASON_MAX || ctl || (n && !proto_utf8_valid(o->reason, n))) {
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "--reason must be at most %d bytes of UTF-8 text without control characters",
                    CANCEL_REASON_MAX);
        return -EINVAL;
    }
    return 0;
}

int launch__cancel(const launch_cancel_opts *o, cJSON **answer, char *err)
{
    cancel_job j = {.reason = o->reason ? o->reason : ""};
    *answer = NULL;
    if (cancel_check(o, err) < 0 || launch__ctx_open(&j.ctx, LAUNCH_NEED_CLUSTER, err) < 0)
        return LAUNCH_EXIT_INVALID;
    proto_iso_time(proto_now(), j.now);
    int rc = LAUNCH_EXIT_OK;
    if (!o->all_running) {
        cJSON *out = cJSON_CreateObject();
        rc = cancel_one(&j, o->run_id, out);
        if (rc != LAUNCH_EXIT_OK)
            launch__fmt(err, LAUNCH_ERR_MAX, "%s", launch__str(out, "message"));
        *answer = out;
    } else {
        cJSON *ids = active_runs(&j, o->flow, err), *e, *arr = cJSON_CreateArray();
        if (!ids)
            rc = LAUNCH_EXIT_FAILED;
        cJSON_ArrayForEach(e, ids)
        {
            cJSON *out = cJSON_CreateObject();
            if (cancel_one(&j, e->valuestring, out) != LAUNCH_EXIT_OK) {
                fprintf(stderr, "dagy-launch: cancel %s: %s\n", e->valuestring,
                        launch__str(out, "message"));
                rc = LAUNCH_EXIT_FAILED;
            }
            cJSON_AddItemToArray(arr, out);
        }
        if (ids)
            *answer = arr;
        else
            cJSON_Delete(arr);
        cJSON_Delete(ids);
    }
    launch__ctx_close(&j.ctx);
    return rc;
}

int launch_cmd_cancel(const launch_cancel_opts *o)
{
    char err[LAUNCH_ERR_MAX] = "";
    cJSON *answer = NULL;
    int rc = launch__cancel(o, &answer, err);
    if (answer)
        launch__print_json(answer);
    /* With --all-running each failure was named as it happened. */
    if (rc != LAUNCH_EXIT_OK && (!answer || !o->all_running))
        fprintf(stderr, "dagy-launch: cancel: %s\n", err);
    cJSON_Delete(answer);
    return rc;
}
