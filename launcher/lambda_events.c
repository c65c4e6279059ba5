/* lambda_events.c - what `dagy-launch lambda` answers for one event (docs/lambda.md): the
 * action events of the seeds' dag-launcher and ecs-reconciler ({"action": "launch", ...}),
 * API Gateway HTTP API requests (payload 2.0), EventBridge schedules whose detail is a launch
 * request, and ECS Task State Change events (a STOPPED task closes its run at once). Every
 * action runs the same code as the command line (launch__run, launch__status, ...), so both
 * answer the same JSON. Runs in the invocation's child process (lambda.c). */
#include "launcher/launch.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/names.h"
#include "proto/util.h"

/* Fields of an action event besides the request's own (the batch-file fields). */
static const char *const envelope_fields[] = {"action", "org_id", "correlation_id", NULL};

/* {"error": message} with an HTTP status. */
launch__reply launch__lambda_error(int http, const char *fmt, ...)
{
    char msg[LAUNCH_ERR_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "error", msg);
    return (launch__reply){b, http};
}

/* HTTP status for a launch's exit code. */
static int launch_http(int exit)
{
    return exit == LAUNCH_EXIT_OK ? 202 : exit == LAUNCH_EXIT_INVALID ? 400 : 502;
}

/* Missing configuration is the function's fault, not the caller's: 500, not 400. */
static bool config_missing(unsigned need, launch__reply *a)
{
    char err[LAUNCH_ERR_MAX];
    launch_config cfg;
    if (launch_config_from_env(&cfg, need, err) == 0)
        return false;
    *a = launch__lambda_error(500, "%s", err);
    return true;
}

/* A string field (NULL if absent); -EINVAL with err if present and not a string. */
int launch__lambda_str_field(const cJSON *ev, const char *name, const char **out, char *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, name);
    *out = NULL;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v)) {
        launch__fmt(err, LAUNCH_ERR_MAX, "%s must be a string", name);
        return -EINVAL;
    }
    *out = v->valuestring;
    return 0;
}

/* A whole-number field in [min, max] (absent: *out unchanged). */
static int int_field(const cJSON *ev, const char *name, long min, long max, long *out, char *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, name);
    if (!v || cJSON_IsNull(v))
        return 0;
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1e300;
    if (cJSON_IsString(v) && launch_parse_int(v->valuestring, min, max, out) == 0)
        return 0;
    if (d < (double)min || d > (double)max || d != (double)(long)d) {
        launch__fmt(err, LAUNCH_ERR_MAX, "%s must be a whole number from %ld to %ld", name, min,
                    max);
        return -EINVAL;
    }
    *out = (long)d;
    return 0;
}

/* A boolean field (absent: false). */
static int bool_field(const cJSON *ev, const char *name, bool *out, char *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, name);
    *out = false;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v)) {
        launch__fmt(err, LAUNCH_ERR_MAX, "%s must be true or false", name);
        return -EINVAL;
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Refuses fields outside `allowed` (a typo must not be ignored silently). */
int launch__lambda_only_fields(const cJSON *ev, const char *const *allowed, char *err)
{
    const cJSON *f;
    cJSON_ArrayForEach(f, ev)
    {
        bool ok = false;
        for (const char *const *k = allowed; *k && !ok; k++)
            ok = strcmp(*k, f->string) == 0;
        if (!ok) {
            launch__fmt(err, LAUNCH_ERR_MAX, "unknown field \"%s\"", f->string);
            return -EINVAL;
        }
    }
    return 0;
}

/* org_id and correlation_id of a launch or batch event into the options. */
static int launch_envelope(const cJSON *ev, launch_opts *o, char *err)
{
    if (launch__lambda_str_field(ev, "org_id", &o->org, err) < 0 ||
        launch__lambda_str_field(ev, "correlation_id", &o->correlation_id, err) < 0)
        return -EINVAL;
    if (!o->org || !*o->org) {
        launch__fmt(err, LAUNCH_ERR_MAX, "org_id is required");
        return -EINVAL;
    }
    if (!proto_name_check(PROTO_NAME_ORG, o->org, err, LAUNCH_ERR_MAX))
        return -EINVAL;
    return 0;
}

/* A copy of the event without the envelope fields: the request object of `run`. */
static cJSON *request_of(const cJSON *ev)
{
    cJSON *item = cJSON_Duplicate(ev, true);
    for (const char *const *k = envelope_fields; item && *k; k++)
        cJSON_DeleteItemFromObjectCaseSensitive(item, *k);
    return item;
}

/* {"action": "launch", "flow_name", "org_id", ...}: `run`. */
launch__reply launch__lambda_launch(const cJSON *ev)
{
    char err[LAUNCH_ERR_MAX];
    launch_opts o = {0};
    launch__reply a;
    if (launch_envelope(ev, &o, err) < 0)
        return launch__lambda_error(400, "%s", err);
    if (config_missing(LAUNCH_NEED_RUN, &a))
        return a;
    cJSON *item = request_of(ev), *out = NULL;
    int rc = launch__run(&o, item, &out);
    cJSON_Delete(item);
    return (launch__reply){out, launch_http(rc)};
}

/* Fields of a batch event: the envelope, requests, and defaults for every request. */
static const char *const size_fields[] = {"workload_profile", "cpu", "memory", NULL};

/* One request with the event's defaults underneath (parameters and extra_env_vars merged, the
 * request's keys win; a request's own size replaces the default size as a whole). */
static cJSON *with_defaults(const cJSON *defaults, const cJSON *req)
{
    if (!cJSON_IsObject(req))
        return cJSON_Duplicate(req, true); /* launch_request_init names the fault */
    cJSON *m = cJSON_Duplicate(req, true);
    bool own_size = false;
    for (const char *const *k = size_fields; *k; k++)
        own_size = own_size || cJSON_GetObjectItemCaseSensitive(req, *k);
    const cJSON *d;
    cJSON_ArrayForEach(d, defaults)
    {
        bool size = false;
        for (const char *const *k = size_fields; *k; k++)
            size = size || strcmp(*k, d->string) == 0;
        cJSON *mine = cJSON_GetObjectItemCaseSensitive(m, d->string);
        bool merge =
            strcmp(d->string, "parameters") == 0 || strcmp(d->string, "extra_env_vars") == 0;
        if (merge && cJSON_IsObject(mine) && cJSON_IsObject(d)) {
            const cJSON *e;
            cJSON_ArrayForEach(e, d)
            {
                if (!cJSON_GetObjectItemCaseSensitive(mine, e->string))
                    cJSON_AddItemToObject(mine, e->string, cJSON_Duplicate(e, true));
            }
        } else if (!mine && !(size && own_size)) {
            cJSON_AddItemToObject(m, d->string, cJSON_Duplicate(d, true));
        }
    }
    return m;
}

/* {"action": "batch", "requests": [...], "org_id", "correlation_id", defaults...}. */
static launch__reply act_batch(const cJSON *ev)
{
    char err[LAUNCH_ERR_MAX];
    launch_opts o = {0};
    if (launch_envelope(ev, &o, err) < 0)
        return launch__lambda_error(400, "%s", err);
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(ev, "requests");
    if (!cJSON_IsArray(reqs) || cJSON_GetArraySize(reqs) == 0)
        return launch__lambda_error(400, "requests must be a non-empty array of launch requests");
    launch__reply a;
    if (config_missing(LAUNCH_NEED_RUN, &a))
        return a;
    cJSON *defaults = request_of(ev), *items = cJSON_CreateArray(), *out = NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(defaults, "requests");
    cJSON_DeleteItemFromObjectCaseSensitive(defaults, "run_id"); /* never one id for all */
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs) cJSON_AddItemToArray(items, with_defaults(defaults, r));
    int rc = launch__batch(&o, items, &out);
    cJSON_Delete(defaults);
    cJSON_Delete(items);
    return (launch__reply){out, rc == LAUNCH_EXIT_OK ? 202 : launch_http(rc)};
}

/* The run id field: required, a valid name. */
static int run_id_field(const cJSON *ev, const char **id, char *err)
{
    if (launch__lambda_str_field(ev, "run_id", id, err) < 0)
        return -EINVAL;
    if (!*id) {
        launch__fmt(err, LAUNCH_ERR_MAX, "run_id is required");
        return -EINVAL;
    }
    return proto_name_check(PROTO_NAME_RUN_ID, *id, err, LAUNCH_ERR_MAX) ? 0 : -EINVAL;
}

/* {"action": "status", "run_id"}. */
launch__reply launch__lambda_status(const cJSON *ev)
{
    static const char *const fields[] = {"action", "run_id", NULL};
    char err[LAUNCH_ERR_MAX];
    const char *id;
    if (launch__lambda_only_fields(ev, fields, err) < 0 || run_id_field(ev, &id, err) < 0)
        return launch__lambda_error(400, "%s", err);
    cJSON *out = NULL;
    int rc = launch__status(id, &out, err);
    if (rc == 0)
        return (launch__reply){out, 200};
    return launch__lambda_error(rc == -ENOENT ? 404 : rc == -EINVAL ? 500 : 502, "%s", err);
}

/* {"action": "retry", "run_id", "all", "new_run_id", "correlation_id", "triggered_by"}. */
static launch__reply act_retry(const cJSON *ev)
{
    static const char *const fields[] = {"action",         "run_id",       "all", "new_run_id",
                                         "correlation_id", "triggered_by", NULL};
    char err[LAUNCH_ERR_MAX];
    const char *id;
    launch_retry_opts o = {.trigger_source = "retry"};
    if (launch__lambda_only_fields(ev, fields, err) < 0 || run_id_field(ev, &id, err) < 0 ||
        bool_field(ev, "all", &o.all, err) < 0 ||
        launch__lambda_str_field(ev, "new_run_id", &o.run_id, err) < 0 ||
        launch__lambda_str_field(ev, "correlation_id", &o.correlation_id, err) < 0 ||
        launch__lambda_str_field(ev, "triggered_by", &o.triggered_by, err) < 0)
        return launch__lambda_error(400, "%s", err);
    if (o.run_id && !proto_name_check(PROTO_NAME_RUN_ID, o.run_id, err, sizeof err))
        return launch__lambda_error(400, "new_run_id: %s", err);
    launch__reply a;
    if (config_missing(0, &a))
        return a;
    cJSON *out = NULL;
    bool launched;
    int rc = launch__retry(id, &o, &out, &launched);
    int http = rc == LAUNCH__EXIT_NOT_FOUND             ? 404
               : !launched && rc == LAUNCH_EXIT_INVALID ? 409
                                                        : launch_http(rc);
    return (launch__reply){out, http};
}

/* The cancel of one run or of every active one. */
launch__reply launch__lambda_cancel(const launch_cancel_opts *o)
{
    char err[LAUNCH_ERR_MAX] = "";
    cJSON *out = NULL;
    int rc = launch__cancel(o, &out, err);
    if (!out)
        return launch__lambda_error(rc == LAUNCH_EXIT_INVALID ? 400 : 502, "%s", err);
    /* cancel_one answers status "unknown" when the run could not be read after the refused
     * write: absent (launch__get_run's "... not found (TABLE)"), or the read failed. */
    const char *st = o->all_running ? NULL : launch__str(out, "status");
    const char *msg = launch__str(out, "message");
    bool unknown = st && strcmp(st, "unknown") == 0;
    int http = rc == LAUNCH_EXIT_OK                                      ? 200
               : unknown && msg && strstr(msg, "\" not found (") != NULL ? 404
               : st && !unknown                                          ? 409
                                                                         : 502;
    return (launch__reply){out, http};
}

/* {"action": "cancel", "run_id" | "all_running": true, "flow_name", "reason"}. */
static launch__reply act_cancel(const cJSON *ev)
{
    static const char *const fields[] = {"action",    "run_id", "all_running",
                                         "flow_name", "reason", NULL};
    char err[LAUNCH_ERR_MAX];
    launch_cancel_opts o = {0};
    if (launch__lambda_only_fields(ev, fields, err) < 0 ||
        bool_field(ev, "all_running", &o.all_running, err) < 0 ||
        launch__lambda_str_field(ev, "flow_name", &o.flow, err) < 0 ||
        launch__lambda_str_field(ev, "reason", &o.reason, err) < 0 ||
        (!o.all_running && run_id_field(ev, &o.run_id, err) < 0))
        return launch__lambda_error(400, "%s", err);
    if (o.all_running && cJSON_GetObjectItemCaseSensitive(ev, "run_id"))
        return launch__lambda_error(400, "give either run_id or all_running, not both");
    if (o.flow && !o.all_running)
        return launch__lambda_error(400, "flow_name goes with all_running");
    return launch__lambda_cancel(&o);
}

/* Reconcile's options from an event (the seeds' names), defaults as the command line's. */
static int reconcile_opts(const cJSON *ev, launch_reconcile_opts *o, char *err)
{
    *o = (launch_reconcile_opts){50, 300, 600, 2};
    return int_field(ev, "max_runs", 1, 100000, &o->max_runs, err) < 0 ||
                   int_field(ev, "stale_threshold_seconds", 0, 100L * 86400, &o->stale_seconds,
                             err) < 0 ||
                   int_field(ev, "start_timeout_seconds", 0, 100L * 86400, &o->start_timeout, err) <
                       0 ||
                   int_field(ev, "relaunch_infra", 0, 100, &o->relaunch_infra, err) < 0
               ? -EINVAL
               : 0;
}

/* {"action": "reconcile", "max_runs", "stale_threshold_seconds", ...}. */
static launch__reply act_reconcile(const cJSON *ev)
{
    static const char *const fields[] = {
        "action",         "max_runs", "stale_threshold_seconds", "start_timeout_seconds",
        "relaunch_infra", NULL};
    char err[LAUNCH_ERR_MAX] = "";
    launch_reconcile_opts o;
    if (launch__lambda_only_fields(ev, fields, err) < 0 || reconcile_opts(ev, &o, err) < 0)
        return launch__lambda_error(400, "%s", err);
    cJSON *out = NULL;
    int rc = launch__reconcile(&o, &out, err);
    if (!out)
        return launch__lambda_error(rc == LAUNCH_EXIT_INVALID ? 500 : 502, "%s", err);
    if (rc != LAUNCH_EXIT_OK)
        cJSON_AddStringToObject(out, "error", err);
    return (launch__reply){out, rc == LAUNCH_EXIT_OK ? 200 : 502};
}

/* An action event (also a schedule's detail). */
static launch__reply action_event(const cJSON *ev)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(ev, "action");
    /* A bare launch request (an input transformer's output) is a launch. */
    const char *name = cJSON_IsString(a) ? a->valuestring : !a ? "launch" : NULL;
    if (!name)
        return launch__lambda_error(400, "action must be a string");
    static const struct {
        const char *name;
        launch__reply (*fn)(const cJSON *);
    } acts[] = {{"launch", launch__lambda_launch},
                {"batch", act_batch},
                {"status", launch__lambda_status},
                {"retry", act_retry},
                {"cancel", act_cancel},
                {"reconcile", act_reconcile}};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (strcmp(acts[i].name, name) == 0)
            return acts[i].fn(ev);
    int cut = (int)proto_utf8_cut(name, strlen(name), 60);
    return launch__lambda_error(
        400,
        "unknown action \"%.*s\": expected launch, batch, status, retry, cancel "
        "or reconcile",
        cut, name);
}

/* ---- EventBridge ---- */

/* The run id a task carries: tag dagy:run_id (when the event has tags), group "dagy:ID", or
 * DAGY_RUN_ID in the worker container's override environment. NULL if none. */
static const char *task_run_id(const cJSON *task, const char *container)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(task, "tags"))
    {
        const char *k = launch__str(t, "key");
        if (k && strcmp(k, "dagy:run_id") == 0 && launch__str(t, "value"))
            return launch__str(t, "value");
    }
    const char *g = launch__str(task, "group");
    if (g && strncmp(g, "dagy:", 5) == 0)
        return g + 5;
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(task, "overrides"), *co, *e;
    cJSON_ArrayForEach(co, cJSON_GetObjectItemCaseSensitive(ov, "containerOverrides"))
    {
        const char *name = launch__str(co, "name");
        if (name && container && strcmp(name, container) != 0)
            continue;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(co, "environment"))
        {
            const char *k = launch__str(e, "name");
            if (k && strcmp(k, "DAGY_RUN_ID") == 0 && launch__str(e, "value"))
                return launch__str(e, "value");
        }
    }
    return NULL;
}

static cJSON *ignore(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* {"ignored": why}, logged. */
static cJSON *ignore(const char *fmt, ...)
{
    char why[LAUNCH_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    fprintf(stderr, "dagy-launch: lambda: ignored: %s\n", why);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "ignored", why);
    return o;
}

/* ECS Task State Change: a STOPPED task of a dagy run closes the run at once. */
static launch__reply ecs_task_event(const cJSON *ev)
{
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(ev, "detail");
    const char *arn = launch__str(task, "taskArn"), *last = launch__str(task, "lastStatus");
    if (!cJSON_IsObject(task) || !arn || !*arn || strlen(arn) > 1600 ||
        !proto_utf8_valid(arn, strlen(arn)))
        return launch__lambda_error(400, "ECS Task State Change without detail.taskArn");
    if (!last || strcmp(last, "STOPPED") != 0)
        return (launch__reply){ignore("task %s is %.*s, not STOPPED", arn,
                                      last ? (int)proto_utf8_cut(last, strlen(last), 40) : 7,
                                      last ? last : "without lastStatus"),
                               200};
    const char *cn = getenv("DAGY_ECS_CONTAINER_NAME");
    const char *id = task_run_id(task, cn && *cn ? cn : "dagy-worker");
    char err[LAUNCH_ERR_MAX] = "";
    if (!id)
        return (launch__reply){
            ignore("task %s carries no dagy run id (tag dagy:run_id, group dagy:ID "
                   "or DAGY_RUN_ID)",
                   arn),
            200};
    if (!proto_name_check(PROTO_NAME_RUN_ID, id, err, sizeof err))
        return (launch__reply){ignore("task %s: %s", arn, err), 200};
    launch_reconcile_opts o = {50, 300, 600, 2}; /* reconcile's defaults */
    const char *ri = getenv("DAGY_LAMBDA_RELAUNCH_INFRA");
    if (ri && *ri && launch_parse_int(ri, 0, 100, &o.relaunch_infra) < 0)
        return launch__lambda_error(500, "DAGY_LAMBDA_RELAUNCH_INFRA must be 0-100");
    /* EventBridge gives times as ISO 8601 text, DescribeTasks as epoch seconds. */
    cJSON *t = cJSON_Duplicate(task, true), *out = NULL;
    const char *at = launch__str(t, "stoppedAt");
    double when = at ? proto_parse_iso(at) : -1;
    if (at)
        cJSON_DeleteItemFromObjectCaseSensitive(t, "stoppedAt");
    if (when > 0)
        cJSON_AddNumberToObject(t, "stoppedAt", when);
    int rc = launch__reconcile_task(id, t, &o, &out, err);
    cJSON_Delete(t);
    if (!out)
        return launch__lambda_error(rc == LAUNCH_EXIT_INVALID ? 500 : 502, "run %s: %s", id, err);
    if (rc != LAUNCH_EXIT_OK)
        cJSON_AddStringToObject(out, "error", err);
    return (launch__reply){out, rc == LAUNCH_EXIT_OK ? 200 : 502};
}

/* Any other EventBridge event (a schedule, a custom PutEvents): its detail is the request. */
static launch__reply eventbridge_event(const cJSON *ev)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "detail");
    if (!cJSON_IsObject(d) || !d->child)
        return launch__lambda_error(400,
                                    "EventBridge event without a request in its detail (give the "
                                    "launch request as the rule target's input, or as detail)");
    cJSON *req = cJSON_Duplicate(d, true);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(req, "action");
    bool launch = !a || (cJSON_IsString(a) && strcmp(a->valuestring, "launch") == 0);
    if (launch && !cJSON_GetObjectItemCaseSensitive(req, "trigger_source"))
        cJSON_AddStringToObject(req, "trigger_source", "schedule");
    const cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ev, "resources"), 0);
    const char *rule = cJSON_IsString(r0) ? r0->valuestring : NULL;
    if (launch && rule && !cJSON_GetObjectItemCaseSensitive(req, "triggered_by") &&
        strlen(rule) <= 256 && proto_utf8_valid(rule, strlen(rule)))
        cJSON_AddStringToObject(req, "triggered_by", rule);
    launch__reply r = action_event(req);
    cJSON_Delete(req);
    return r;
}

/* ---- the event ---- */

/* Makes every string of `j` (keys too) valid UTF-8: an launch__reply never carries invalid bytes.
 */
static void clean_strings(cJSON *j)
{
    for (cJSON *e = j ? j->child : NULL; e; e = e->next) {
        if (e->string && !proto_utf8_valid(e->string, strlen(e->string))) {
            char *c = proto_utf8_clean(e->string, strlen(e->string), 0);
            if (c && !(e->type & cJSON_StringIsConst)) {
                free(e->string);
                e->string = c;
            } else {
                free(c);
            }
        }
        if (cJSON_IsString(e) && !proto_utf8_valid(e->valuestring, strlen(e->valuestring))) {
            char *c = proto_utf8_clean(e->valuestring, strlen(e->valuestring), 0);
            if (c)
                cJSON_SetValuestring(e, c);
            free(c);
        }
        clean_strings(e);
    }
}

/* An error launch__reply {"errorType", "errorMessage"}. */
static cJSON *invocation_error(const char *type, const char *msg)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "errorType", type);
    cJSON_AddStringToObject(e, "errorMessage", msg);
    return e;
}

/* An action's launch__reply as an invocation's: success below 500 for 2xx, else an error answer
 * naming the fault (Lambda's Errors metric counts it; the runbooks alarm on it). */
static int plain_answer(launch__reply a, cJSON **out)
{
    if (a.http < 300) {
        *out = a.body;
        return 0;
    }
    const char *msg = launch__str(a.body, "error");
    if (!msg)
        msg = launch__str(a.body, "error_message");
    if (!msg)
        msg = launch__str(a.body, "message");
    char type[48];
    launch__fmt(type, sizeof type, "Dagy.%s",
                a.http == 400   ? "InvalidRequest"
                : a.http == 404 ? "NotFound"
                : a.http == 409 ? "Conflict"
                : a.http == 500 ? "InvalidConfiguration"
                                : "Failed");
    cJSON *e = invocation_error(type, msg ? msg : "failed");
    /* The command's own launch__reply goes along: a batch's results, a launch's run id. */
    if (a.body && !cJSON_GetObjectItemCaseSensitive(a.body, "error"))
        cJSON_AddItemToObject(e, "answer", a.body);
    else
        cJSON_Delete(a.body);
    *out = e;
    return -1;
}

/* What kind of event `ev` is, and its answer. */
static int dispatch(const cJSON *ev, cJSON **out)
{
    const cJSON *rc = cJSON_GetObjectItemCaseSensitive(ev, "requestContext");
    const char *version = launch__str(ev, "version");
    if (cJSON_IsObject(rc) && cJSON_GetObjectItemCaseSensitive(rc, "http")) {
        *out = launch__lambda_http(ev, version);
        return 0;
    }
    const char *src = launch__str(ev, "source"), *dt = launch__str(ev, "detail-type");
    if (src && dt && cJSON_GetObjectItemCaseSensitive(ev, "detail")) {
        if (strcmp(src, "aws.ecs") == 0 && strcmp(dt, "ECS Task State Change") == 0)
            return plain_answer(ecs_task_event(ev), out);
        if (strcmp(src, "aws.ecs") == 0)
            return plain_answer(
                (launch__reply){ignore("ECS event of type other than task state"), 200}, out);
        return plain_answer(eventbridge_event(ev), out);
    }
    if (!cJSON_GetObjectItemCaseSensitive(ev, "action") &&
        !cJSON_GetObjectItemCaseSensitive(ev, "flow_name")) {
        *out = invocation_error("Dagy.InvalidEvent",
                                "unknown event: expected {\"action\": ...}, a launch request, an "
                                "API Gateway (2.0) request or an EventBridge event");
        return -1;
    }
    return plain_answer(action_event(ev), out);
}

int launch__lambda_event(const char *event, size_t len, cJSON **result)
{
    char err[LAUNCH_ERR_MAX] = "";
    cJSON *ev = NULL;
    int rc = -1;
    /* The event is `len` bytes, not a C string: a terminated copy for the string checks. */
    char *text = malloc(len + 1);
    if (text) {
        memcpy(text, event, len);
        text[len] = '\0';
    }
    *result = NULL;
    if (!text) /* out of memory: the Dagy.Failed answer below */
        rc = -1;
    else if (!proto_utf8_valid(text, len) || strlen(text) != len)
        *result = invocation_error("Dagy.InvalidEvent", "the event is not UTF-8 text");
    else if (launch__refuse_nul(text, "the event", err) < 0)
        *result = invocation_error("Dagy.InvalidEvent", err);
    else if (!cJSON_IsObject(ev = cJSON_ParseWithLength(text, len)))
        *result = invocation_error("Dagy.InvalidEvent", "the event is not a JSON object");
    else
        rc = dispatch(ev, result);
    cJSON_Delete(ev);
    free(text);
    if (!*result) {
        *result = invocation_error("Dagy.Failed", "no launch__reply (out of memory?)");
        rc = -1;
    }
    clean_strings(*result);
    return rc;
}
