/* lambda_http.c - API Gateway HTTP API requests (payload format 2.0) for `dagy-launch lambda`
 * (docs/lambda.md): POST /flows/{flowName}/runs launches, GET /runs/{runId} is the status,
 * POST /runs/{runId}/cancel cancels; the answer is always an HTTP response (statusCode, JSON
 * body, content-type), 400 with the validation message for bad input. The actions themselves are
 * lambda_events.c's, so the API answers what the CLI prints. */
#include "launcher/launch.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/names.h"
#include "proto/util.h"

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
static launch__reply http_launch(const cJSON *ev, const char *flow)
{
    char err[LAUNCH_ERR_MAX] = "";
    if (!proto_name_check(PROTO_NAME_FLOW, flow, err, sizeof err))
        return launch__lambda_error(400, "flowName: %s", err);
    cJSON *body = http_body(ev, err);
    if (!body)
        return launch__lambda_error(400, "%s", err);
    const char *given = launch__str(body, "flow_name");
    launch__reply a;
    if (cJSON_GetObjectItemCaseSensitive(body, "action")) {
        a = launch__lambda_error(400, "unknown field \"action\" (the route says what to do)");
    } else if (cJSON_GetObjectItemCaseSensitive(body, "flow_name") &&
               (!given || strcmp(given, flow) != 0)) {
        a = launch__lambda_error(400, "flow_name in the body differs from the path's \"%s\"", flow);
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
        a = launch__lambda_launch(body);
    }
    cJSON_Delete(body);
    return a;
}

/* POST /runs/{runId}/cancel: body {"reason"} (optional). */
static launch__reply http_cancel(const cJSON *ev, const char *run_id)
{
    static const char *const fields[] = {"reason", NULL};
    char err[LAUNCH_ERR_MAX] = "";
    cJSON *body = http_body(ev, err);
    if (!body || launch__lambda_only_fields(body, fields, err) < 0) {
        cJSON_Delete(body);
        return launch__lambda_error(400, "%s", err);
    }
    launch_cancel_opts o = {.run_id = run_id};
    launch__reply a;
    if (launch__lambda_str_field(body, "reason", &o.reason, err) < 0)
        a = launch__lambda_error(400, "%s", err);
    else if (!proto_name_check(PROTO_NAME_RUN_ID, run_id, err, sizeof err))
        a = launch__lambda_error(400, "runId: %s", err);
    else
        a = launch__lambda_cancel(&o);
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
static launch__reply http_route(const cJSON *ev)
{
    const cJSON *http = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(ev, "requestContext"), "http");
    const char *method = launch__str(http, "method"), *path = route_path(ev, http);
    char a[16], b[200], c[16];
    if (!method || !path)
        return launch__lambda_error(400,
                                    "the request has no requestContext.http.method or rawPath");
    int n = segments(path);
    bool flows = segment(path, 0, a, sizeof a) && strcmp(a, "flows") == 0;
    bool runs = segment(path, 0, a, sizeof a) && strcmp(a, "runs") == 0;
    bool post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;
    if (flows && n == 3 && segment(path, 1, b, sizeof b) && segment(path, 2, c, sizeof c) &&
        strcmp(c, "runs") == 0)
        return post ? http_launch(ev, b) : launch__lambda_error(405, "use POST to launch a run");
    if (runs && n == 2 && segment(path, 1, b, sizeof b)) {
        char err[LAUNCH_ERR_MAX];
        if (!get)
            return launch__lambda_error(405, "use GET to read a run");
        if (!proto_name_check(PROTO_NAME_RUN_ID, b, err, sizeof err))
            return launch__lambda_error(400, "runId: %s", err);
        cJSON *ev2 = cJSON_CreateObject();
        cJSON_AddStringToObject(ev2, "run_id", b);
        launch__reply r = launch__lambda_status(ev2);
        cJSON_Delete(ev2);
        return r;
    }
    if (runs && n == 3 && segment(path, 1, b, sizeof b) && segment(path, 2, c, sizeof c) &&
        strcmp(c, "cancel") == 0)
        return post ? http_cancel(ev, b) : launch__lambda_error(405, "use POST to cancel a run");
    int cut = (int)proto_utf8_cut(path, strlen(path), 120);
    return launch__lambda_error(
        404,
        "no route for %s %.*s (POST /flows/{flowName}/runs, GET /runs/{runId}, "
        "POST /runs/{runId}/cancel)",
        strlen(method) < 10 ? method : "?", cut, path);
}

/* The API Gateway response: statusCode, JSON body, content-type. */
static cJSON *http_response(launch__reply a)
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

cJSON *launch__lambda_http(const cJSON *ev, const char *version)
{
    if (!version || strcmp(version, "2.0") != 0)
        return http_response(launch__lambda_error(400, "API Gateway payload format 2.0 expected"));
    return http_response(http_route(ev));
}
