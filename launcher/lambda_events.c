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

/* An action's answer: the payload, and the HTTP status it maps to for API Gateway. */
typedef struct {
    cJSON *body;
    int http;
} answer;

static answer error_answer(int http, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* {"error": message} with an HTTP status. */
static answer error_answer(int http, const char *fmt, ...)
{
    char msg[LAUNCH_ERR_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "error", msg);
    return (answer){b, http};
}

/* HTTP status for a launch's exit code. */
static int launch_http(int exit)
{
    return exit == LAUNCH_EXIT_OK ? 202 : exit == LAUNCH_EXIT_INVALID ? 400 : 502;
}

/* A string field (NULL if absent); -EINVAL with err if present and not a string. */
static int str_field(const cJSON *ev, const char *name, const char **out, char *err)
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
static int only_fields(const cJSON *ev, const char *const *allowed, char *err)
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
    if (str_field(ev, "org_id", &o->org, err) < 0 ||
        str_field(ev, "correlation_id", &o->correlation_id, err) < 0)
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
static answer act_launch(const cJSON *ev)
{
    char err[LAUNCH_ERR_MAX];
    launch_opts o = {0};
    if (launch_envelope(ev, &o, err) < 0)
        return error_answer(400, "%s", err);
    cJSON *item = request_of(ev), *out = NULL;
    int rc = launch__run(&o, item, &out);
    cJSON_Delete(item);
    return (answer){out, launch_http(rc)};
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
            cJSON_ArrayForEach(e, d) if (!cJSON_GetObjectItemCaseSensitive(mine, e->string))
                cJSON_AddItemToObject(mine, e->string, cJSON_Duplicate(e, true));
        } else if (!mine && !(size && own_size)) {
            cJSON_AddItemToObject(m, d->string, cJSON_Duplicate(d, true));
        }
    }
    return m;
}

/* {"action": "batch", "requests": [...], "org_id", "correlation_id", defaults...}. */
static answer act_batch(const cJSON *ev)
{
    char err[LAUNCH_ERR_MAX];
    launch_opts o = {0};
    if (launch_envelope(ev, &o, err) < 0)
        return error_answer(400, "%s", err);
    const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(ev, "requests");
    if (!cJSON_IsArray(reqs) || cJSON_GetArraySize(reqs) == 0)
        return error_answer(400, "requests must be a non-empty array of launch requests");
    cJSON *defaults = request_of(ev), *items = cJSON_CreateArray(), *out = NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(defaults, "requests");
    cJSON_DeleteItemFromObjectCaseSensitive(defaults, "run_id"); /* never one id for all */
    const cJSON *r;
    cJSON_ArrayForEach(r, reqs) cJSON_AddItemToArray(items, with_defaults(defaults, r));
    int rc = launch__batch(&o, items, &out);
    cJSON_Delete(defaults);
    cJSON_Delete(items);
    return (answer){out, rc == LAUNCH_EXIT_OK ? 202 : launch_http(rc)};
}

/* The run id field: required, a valid name. */
static int run_id_field(const cJSON *ev, const char **id, char *err)
{
    if (str_field(ev, "run_id", id, err) < 0)
        return -EINVAL;
    if (!*id) {
        launch__fmt(err, LAUNCH_ERR_MAX, "run_id is required");
        return -EINVAL;
    }
    return proto_name_check(PROTO_NAME_RUN_ID, *id, err, LAUNCH_ERR_MAX) ? 0 : -EINVAL;
}

/* {"action": "status", "run_id"}. */
static answer act_status(const cJSON *ev)
{
    static const char *const fields[] = {"action", "run_id", NULL};
    char err[LAUNCH_ERR_MAX];
    const char *id;
    if (only_fields(ev, fields, err) < 0 || run_id_field(ev, &id, err) < 0)
        return error_answer(400, "%s", err);
    cJSON *out = NULL;
    int rc = launch__status(id, &out, err);
    if (rc == 0)
        return (answer){out, 200};
    return error_answer(rc == -ENOENT ? 404 : rc == -EINVAL ? 500 : 502, "%s", err);
}

/* {"action": "retry", "run_id", "all", "new_run_id", "correlation_id", "triggered_by"}. */
static answer act_retry(const cJSON *ev)
{
    static const char *const fields[] = {"action",         "run_id",       "all", "new_run_id",
                                         "correlation_id", "triggered_by", NULL};
    char err[LAUNCH_ERR_MAX];
    const char *id;
    launch_retry_opts o = {.trigger_source = "retry"};
    if (only_fields(ev, fields, err) < 0 || run_id_field(ev, &id, err) < 0 ||
        bool_field(ev, "all", &o.all, err) < 0 || str_field(ev, "new_run_id", &o.run_id, err) < 0 ||
        str_field(ev, "correlation_id", &o.correlation_id, err) < 0 ||
        str_field(ev, "triggered_by", &o.triggered_by, err) < 0)
        return error_answer(400, "%s", err);
    cJSON *out = NULL;
    bool launched;
    int rc = launch__retry(id, &o, &out, &launched);
    int http = rc == LAUNCH__EXIT_NOT_FOUND             ? 404
               : !launched && rc == LAUNCH_EXIT_INVALID ? 409
                                                        : launch_http(rc);
    return (answer){out, http};
}

/* The cancel of one run or of every active one. */
static answer do_cancel(const launch_cancel_opts *o)
{
    char err[LAUNCH_ERR_MAX] = "";
    cJSON *out = NULL;
    int rc = launch__cancel(o, &out, err);
    if (!out)
        return error_answer(rc == LAUNCH_EXIT_INVALID ? 400 : 502, "%s", err);
    const char *st = o->all_running ? NULL : launch__str(out, "status");
    int http = rc == LAUNCH_EXIT_OK ? 200 : st && strcmp(st, "unknown") == 0 ? 404 : st ? 409 : 502;
    return (answer){out, http};
}

/* {"action": "cancel", "run_id" | "all_running": true, "flow_name", "reason"}. */
static answer act_cancel(const cJSON *ev)
{
    static const char *const fields[] = {"action",    "run_id", "all_running",
                                         "flow_name", "reason", NULL};
    char err[LAUNCH_ERR_MAX];
    launch_cancel_opts o = {0};
    if (only_fields(ev, fields, err) < 0 ||
        bool_field(ev, "all_running", &o.all_running, err) < 0 ||
        str_field(ev, "flow_name", &o.flow, err) < 0 ||
        str_field(ev, "reason", &o.reason, err) < 0 ||
        (!o.all_running && run_id_field(ev, &o.run_id, err) < 0))
        return error_answer(400, "%s", err);
    if (o.all_running && cJSON_GetObjectItemCaseSensitive(ev, "run_id"))
        return error_answer(400, "give either run_id or all_running, not both");
    if (o.flow && !o.all_running)
        return error_answer(400, "flow_name goes with all_running");
    return do_cancel(&o);
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
static answer act_reconcile(const cJSON *ev)
{
    static const char *const fields[] = {
        "action",         "max_runs", "stale_threshold_seconds", "start_timeout_seconds",
        "relaunch_infra", NULL};
    char err[LAUNCH_ERR_MAX] = "";
    launch_reconcile_opts o;
    if (only_fields(ev, fields, err) < 0 || reconcile_opts(ev, &o, err) < 0)
        return error_answer(400, "%s", err);
    cJSON *out = NULL;
    int rc = launch__reconcile(&o, &out, err);
    if (!out)
        return error_answer(rc == LAUNCH_EXIT_INVALID ? 500 : 502, "%s", err);
    if (rc != LAUNCH_EXIT_OK)
        cJSON_AddStringToObject(out, "error", err);
    return (answer){out, rc == LAUNCH_EXIT_OK ? 200 : 502};
}

/* An action event (also a schedule's detail). */
static answer action_event(const cJSON *ev)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(ev, "action");
    /* A bare launch request (an input transformer's output) is a launch. */
    const char *name = cJSON_IsString(a) ? a->valuestring : !a ? "launch" : NULL;
    if (!name)
        return error_answer(400, "action must be a string");
    static const struct {
        const char *name;
        answer (*fn)(const cJSON *);
    } acts[] = {{"launch", act_launch}, {"batch", act_batch},   {"status", act_status},
                {"retry", act_retry},   {"cancel", act_cancel}, {"reconcile", act_reconcile}};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (strcmp(acts[i].name, name) == 0)
            return acts[i].fn(ev);
    int cut = (int)proto_utf8_cut(name, strlen(name), 60);
    return error_answer(400,
                        "unknown action \"%.*s\": expected launch, batch, status, retry, cancel "
                        "or reconcile",
                        cut, name);
}

/* ---- API Gateway HTTP API, payload format 2.0 ---- */

/* Strict base64 (RFC 4648, padding optional) into a new NUL-terminated buffer; NULL if the
 * text is not base64. */
static char *base64_decode(const char *in, size_t n, size_t *out_len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    while (n && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return NULL;
    char *out = malloc(n / 4 * 3 + 4);
    size_t o = 0;
    uint32_t acc = 0;
    for (size_t i = 0; out && i < n; i++) {
        const char *p = in[i] ? strchr(tab, in[i]) : NULL;
        if (!p) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)(p - tab);
        if (i % 4 == 3) {
            out[o++] = (char)(acc >> 16);
            out[o++] = (char)(acc >> 8);
            out[o++] = (char)acc;
            acc = 0;
        }
    }
    if (out && n % 4 == 2)
        out[o++] = (char)(acc >> 4);
    if (out && n % 4 == 3) {
        out[o++] = (char)(acc >> 10);
        out[o++] = (char)(acc >> 2);
    }
    if (out) {
        out[o] = '\0';
        *out_len = o;
    }
    return out;
}

/* The request body as a JSON object (an absent or empty body is {}); NULL with err. */
static cJSON *http_body(const cJSON *ev, char *err)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(ev, "body");
    if (!cJSON_IsString(b) || !*b->valuestring)
        return cJSON_CreateObject();
    size_t n = strlen(b->valuestring);
    char *text = NULL;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ev, "isBase64Encoded"))) {
        size_t len = 0;
        text = base64_decode(b->valuestring, n, &len);
        if (!text || strlen(text) != len || !proto_utf8_valid(text, len)) {
            launch__fmt(err, LAUNCH_ERR_MAX, "the body is not base64-encoded UTF-8 text");
            free(text);
            return NULL;
        }
    } else if (!(text = strdup(b->valuestring))) {
        launch__fmt(err, LAUNCH_ERR_MAX, "out of memory");
        return NULL;
    }
    cJSON *j = launch__refuse_nul(text, "the body", err) < 0 ? NULL : cJSON_Parse(text);
    bool nul = !j && err[0];
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        if (!nul)
            launch__fmt(err, LAUNCH_ERR_MAX, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* "/flows/NAME/runs" -> NAME in `seg` (segment `i` of the path, 0-based); false if absent. */
static bool segment(const char *path, int i, char *seg, size_t cap)
{
    const char *p = path;
    for (int k = 0; k <= i; k++) {
        if (*p != '/')
            return false;
        p++;
        size_t n = strcspn(p, "/");
        if (k == i) {
            if (n == 0 || n >= cap)
                return false;
            memcpy(seg, p, n);
            seg[n] = '\0';
            return true;
        }
        p += n;
    }
    return false;
}

/* Number of segments of a path ("/runs/x/cancel" = 3; a trailing slash adds none). */
static int segments(const char *path)
{
    int n = 0;
    for (const char *p = path; *p; p++)
        n += *p == '/' && p[1] && p[1] != '/';
    return n;
}

/* POST /flows/{flowName}/runs: the body is the launch request, the flow comes from the path. */
static answer http_launch(const cJSON *ev, const char *flow)
{
    char err[LAUNCH_ERR_MAX] = "";
    if (!proto_name_check(PROTO_NAME_FLOW, flow, err, sizeof err))
        return error_answer(400, "flowName: %s", err);
    cJSON *body = http_body(ev, err);
    if (!body)
        return error_answer(400, "%s", err);
    const char *given = launch__str(body, "flow_name");
    answer a;
    if (cJSON_GetObjectItemCaseSensitive(body, "action")) {
        a = error_answer(400, "unknown field \"action\" (the route says what to do)");
    } else if (cJSON_GetObjectItemCaseSensitive(body, "flow_name") &&
               (!given || strcmp(given, flow) != 0)) {
        a = error_answer(400, "flow_name in the body differs from the path's \"%s\"", flow);
    } else {
        const cJSON *qs = cJSON_GetObjectItemCaseSensitive(ev, "queryStringParameters");
        const char *qorg = launch__str(qs, "org_id");
        if (!cJSON_GetObjectItemCaseSensitive(body, "org_id") && qorg)
            cJSON_AddStringToObject(body, "org_id", qorg);
        cJSON_DeleteItemFromObjectCaseSensitive(body, "flow_name");
        cJSON_AddStringToObject(body, "flow_name", flow);
        /* Audit fields say where the request came from; a caller cannot choose them. */
        cJSON_DeleteItemFromObjectCaseSensitive(body, "trigger_source");
        cJSON_DeleteItemFromObjectCaseSensitive(body, "triggered_by");
        cJSON_AddStringToObject(body, "trigger_source", "api");
        const cJSON *rc = cJSON_GetObjectItemCaseSensitive(ev, "requestContext");
        const char *ip = launch__str(cJSON_GetObjectItemCaseSensitive(rc, "http"), "sourceIp");
        if (ip && proto_utf8_valid(ip, strlen(ip)) && strlen(ip) < 64)
            cJSON_AddStringToObject(body, "triggered_by", ip);
        a = act_launch(body);
    }
    cJSON_Delete(body);
    return a;
}

/* POST /runs/{runId}/cancel: body {"reason"} (optional). */
static answer http_cancel(const cJSON *ev, const char *run_id)
{
    static const char *const fields[] = {"reason", NULL};
    char err[LAUNCH_ERR_MAX] = "";
    cJSON *body = http_body(ev, err);
    if (!body || only_fields(body, fields, err) < 0) {
        cJSON_Delete(body);
        return error_answer(400, "%s", err);
    }
    launch_cancel_opts o = {.run_id = run_id};
    answer a;
    if (str_field(body, "reason", &o.reason, err) < 0)
        a = error_answer(400, "%s", err);
    else if (!proto_name_check(PROTO_NAME_RUN_ID, run_id, err, sizeof err))
        a = error_answer(400, "runId: %s", err);
    else
        a = do_cancel(&o);
    cJSON_Delete(body);
    return a;
}

/* The path without the stage prefix a named stage puts in front of it. */
static const char *route_path(const cJSON *ev, const cJSON *http)
{
    const char *path = launch__str(ev, "rawPath");
    if (!path)
        path = launch__str(http, "path");
    const char *stage =
        launch__str(cJSON_GetObjectItemCaseSensitive(ev, "requestContext"), "stage");
    size_t n = stage ? strlen(stage) : 0;
    if (path && n && strcmp(stage, "$default") != 0 && path[0] == '/' &&
        strncmp(path + 1, stage, n) == 0 && (path[n + 1] == '/' || !path[n + 1]))
        path += n + 1;
    return path;
}

/* The route: POST /flows/{flowName}/runs, GET /runs/{runId}, POST /runs/{runId}/cancel. */
static answer http_route(const cJSON *ev)
{
    const cJSON *http = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(ev, "requestContext"), "http");
    const char *method = launch__str(http, "method"), *path = route_path(ev, http);
    char a[16], b[200], c[16];
    if (!method || !path)
        return error_answer(400, "the request has no requestContext.http.method or rawPath");
    int n = segments(path);
    bool flows = segment(path, 0, a, sizeof a) && strcmp(a, "flows") == 0;
    bool runs = segment(path, 0, a, sizeof a) && strcmp(a, "runs") == 0;
    bool post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;
    if (flows && n == 3 && segment(path, 1, b, sizeof b) && segment(path, 2, c, sizeof c) &&
        strcmp(c, "runs") == 0)
        return post ? http_launch(ev, b) : error_answer(405, "use POST to launch a run");
    if (runs && n == 2 && segment(path, 1, b, sizeof b)) {
        char err[LAUNCH_ERR_MAX];
        if (!get)
            return error_answer(405, "use GET to read a run");
        if (!proto_name_check(PROTO_NAME_RUN_ID, b, err, sizeof err))
            return error_answer(400, "runId: %s", err);
        cJSON *ev2 = cJSON_CreateObject();
        cJSON_AddStringToObject(ev2, "run_id", b);
        answer r = act_status(ev2);
        cJSON_Delete(ev2);
        return r;
    }
    if (runs && n == 3 && segment(path, 1, b, sizeof b) && segment(path, 2, c, sizeof c) &&
        strcmp(c, "cancel") == 0)
        return post ? http_cancel(ev, b) : error_answer(405, "use POST to cancel a run");
    int cut = (int)proto_utf8_cut(path, strlen(path), 120);
    return error_answer(404,
                        "no route for %s %.*s (POST /flows/{flowName}/runs, GET /runs/{runId}, "
                        "POST /runs/{runId}/cancel)",
                        strlen(method) < 10 ? method : "?", cut, path);
}

/* The API Gateway response: statusCode, JSON body, content-type. */
static cJSON *http_response(answer a)
{
    cJSON *r = cJSON_CreateObject();
    char *text = a.body ? cJSON_PrintUnformatted(a.body) : NULL;
    cJSON_AddNumberToObject(r, "statusCode", a.http);
    cJSON *h = cJSON_AddObjectToObject(r, "headers");
    cJSON_AddStringToObject(h, "content-type", "application/json");
    cJSON_AddStringToObject(r, "body", text ? text : "{}");
    cJSON_AddBoolToObject(r, "isBase64Encoded", false);
    free(text);
    cJSON_Delete(a.body);
    return r;
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
static answer ecs_task_event(const cJSON *ev)
{
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(ev, "detail");
    const char *arn = launch__str(task, "taskArn"), *last = launch__str(task, "lastStatus");
    if (!cJSON_IsObject(task) || !arn || !*arn || strlen(arn) > 1600 ||
        !proto_utf8_valid(arn, strlen(arn)))
        return error_answer(400, "ECS Task State Change without detail.taskArn");
    if (!last || strcmp(last, "STOPPED") != 0)
        return (answer){ignore("task %s is %.*s, not STOPPED", arn,
                               last ? (int)proto_utf8_cut(last, strlen(last), 40) : 7,
                               last ? last : "without lastStatus"),
                        200};
    const char *cn = getenv("DAGY_ECS_CONTAINER_NAME");
    const char *id = task_run_id(task, cn && *cn ? cn : "dagy-worker");
    char err[LAUNCH_ERR_MAX] = "";
    if (!id)
        return (answer){ignore("task %s carries no dagy run id (tag dagy:run_id, group dagy:ID "
                               "or DAGY_RUN_ID)",
                               arn),
                        200};
    if (!proto_name_check(PROTO_NAME_RUN_ID, id, err, sizeof err))
        return (answer){ignore("task %s: %s", arn, err), 200};
    launch_reconcile_opts o;
    if (reconcile_opts(cJSON_GetObjectItemCaseSensitive(ev, "dagy"), &o, err) < 0)
        return error_answer(400, "%s", err);
    const char *ri = getenv("DAGY_LAMBDA_RELAUNCH_INFRA");
    if (ri && *ri && launch_parse_int(ri, 0, 100, &o.relaunch_infra) < 0)
        return error_answer(500, "DAGY_LAMBDA_RELAUNCH_INFRA must be 0-100");
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
        return error_answer(rc == LAUNCH_EXIT_INVALID ? 500 : 502, "run %s: %s", id, err);
    if (rc != LAUNCH_EXIT_OK)
        cJSON_AddStringToObject(out, "error", err);
    return (answer){out, rc == LAUNCH_EXIT_OK ? 200 : 502};
}

/* Any other EventBridge event (a schedule, a custom PutEvents): its detail is the request. */
static answer eventbridge_event(const cJSON *ev)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "detail");
    if (!cJSON_IsObject(d) || !d->child)
        return error_answer(400, "EventBridge event without a request in its detail (give the "
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
    answer r = action_event(req);
    cJSON_Delete(req);
    return r;
}

/* ---- the event ---- */

/* Makes every string of `j` (keys too) valid UTF-8: an answer never carries invalid bytes. */
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

/* An error answer {"errorType", "errorMessage"}. */
static cJSON *invocation_error(const char *type, const char *msg)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "errorType", type);
    cJSON_AddStringToObject(e, "errorMessage", msg);
    return e;
}

/* An action's answer as an invocation's: success below 500 for 2xx, else an error answer
 * naming the fault (Lambda's Errors metric counts it; the runbooks alarm on it). */
static int plain_answer(answer a, cJSON **out)
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
    /* The command's own answer goes along: a batch's results, a launch's run id. */
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
        if (!version || strcmp(version, "2.0") != 0) {
            *out = http_response(error_answer(400, "API Gateway payload format 2.0 expected"));
            return 0;
        }
        *out = http_response(http_route(ev));
        return 0;
    }
    const char *src = launch__str(ev, "source"), *dt = launch__str(ev, "detail-type");
    if (src && dt && cJSON_GetObjectItemCaseSensitive(ev, "detail")) {
        if (strcmp(src, "aws.ecs") == 0 && strcmp(dt, "ECS Task State Change") == 0)
            return plain_answer(ecs_task_event(ev), out);
        if (strcmp(src, "aws.ecs") == 0)
            return plain_answer((answer){ignore("ECS event of type other than task state"), 200},
                                out);
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

int launch__lambda_event(const char *text, size_t len, cJSON **result)
{
    char err[LAUNCH_ERR_MAX] = "";
    cJSON *ev = NULL;
    int rc = -1;
    if (!proto_utf8_valid(text, len) || strlen(text) != len)
        *result = invocation_error("Dagy.InvalidEvent", "the event is not UTF-8 text");
    else if (launch__refuse_nul(text, "the event", err) < 0)
        *result = invocation_error("Dagy.InvalidEvent", err);
    else if (!cJSON_IsObject(ev = cJSON_ParseWithLength(text, len)))
        *result = invocation_error("Dagy.InvalidEvent", "the event is not a JSON object");
    else
        rc = dispatch(ev, result);
    cJSON_Delete(ev);
    if (!*result) {
        *result = invocation_error("Dagy.Failed", "no answer (out of memory?)");
        rc = -1;
    }
    clean_strings(*result);
    return rc;
}
