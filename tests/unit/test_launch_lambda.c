/* test_launch_lambda.c - the parts of `dagy-launch lambda`'s event handling that decide without
 * AWS (launch__lambda_event): what kind of event it is, error answers for bad events, API
 * Gateway routes, status codes and bodies, ignored ECS events, and that every answer is valid
 * UTF-8 JSON even when the message embeds a hostile field name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/launch.h"
#include "proto/util.h"

/* The answer to `text`; *rc the return code. Caller frees. */
static cJSON *answer_of(const char *text, size_t len, int *rc)
{
    cJSON *a = NULL;
    *rc = launch__lambda_event(text, len, &a);
    assert_non_null(a);
    char *printed = cJSON_PrintUnformatted(a);
    assert_non_null(printed);
    assert_true(proto_utf8_valid(printed, strlen(printed)));
    free(printed);
    return a;
}

/* Asserts an error answer of `type` whose message holds `part` (NULL: any message). */
static void assert_error(const char *text, size_t len, const char *type, const char *part)
{
    int rc;
    cJSON *a = answer_of(text, len, &rc);
    assert_int_equal(rc, -1);
    assert_string_equal(launch__str(a, "errorType"), type);
    const char *msg = launch__str(a, "errorMessage");
    assert_non_null(msg);
    if (part && !strstr(msg, part))
        fail_msg("\"%s\" not in \"%s\"", part, msg);
    cJSON_Delete(a);
}

/* assert_error for a NUL-terminated event. */
static void assert_text_error(const char *text, const char *type, const char *part)
{
    assert_error(text, strlen(text), type, part);
}

static void test_bad_events_are_error_answers(void **state)
{
    (void)state;
    assert_text_error("{not json", "Dagy.InvalidEvent", "JSON object");
    assert_text_error("[1]", "Dagy.InvalidEvent", "JSON object");
    assert_error("\xff\xfe", 2, "Dagy.InvalidEvent", "UTF-8");
    assert_error("{\"a\":1}\0{}", 10, "Dagy.InvalidEvent", "UTF-8");
    assert_text_error("{\"action\":\"\\u0000\"}", "Dagy.InvalidEvent", "NUL");
    assert_text_error("{\"hello\":1}", "Dagy.InvalidEvent", "unknown event");
    assert_text_error("{\"action\":\"explode\"}", "Dagy.InvalidRequest", "unknown action");
    assert_text_error("{\"action\":7}", "Dagy.InvalidRequest", "string");
    assert_text_error("{\"action\":\"status\",\"run_id\":\"../x\"}", "Dagy.InvalidRequest", NULL);
    assert_text_error("{\"action\":\"status\"}", "Dagy.InvalidRequest", "run_id is required");
    assert_text_error("{\"action\":\"reconcile\",\"max_runs\":\"many\"}", "Dagy.InvalidRequest",
                      "max_runs");
    assert_text_error("{\"action\":\"reconcile\",\"max_runs\":1.5}", "Dagy.InvalidRequest",
                      "whole number");
    assert_text_error("{\"action\":\"cancel\",\"run_id\":\"a\",\"all_running\":true}",
                      "Dagy.InvalidRequest", "not both");
    assert_text_error("{\"action\":\"batch\",\"org_id\":\"acme\",\"requests\":[]}",
                      "Dagy.InvalidRequest", "non-empty");
}

/* An error message cut inside a multi-byte character is still UTF-8 in the answer. */
static void test_answers_stay_utf8_when_messages_are_cut(void **state)
{
    (void)state;
    char ev[2048];
    size_t n = (size_t)snprintf(ev, sizeof ev, "{\"action\":\"status\",\"x");
    for (int i = 0; i < 400; i++)
        n += (size_t)snprintf(ev + n, sizeof ev - n, "\xc3\xa9");
    n += (size_t)snprintf(ev + n, sizeof ev - n, "\":1}");
    assert_error(ev, n, "Dagy.InvalidRequest", "unknown field");
}

/* The API Gateway response for an HTTP event; asserts the shape, returns the parsed body. */
static cJSON *http(const char *method, const char *path, const char *body, bool b64, int status)
{
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "version", "2.0");
    cJSON_AddStringToObject(ev, "rawPath", path);
    cJSON *h = cJSON_AddObjectToObject(cJSON_AddObjectToObject(ev, "requestContext"), "http");
    cJSON_AddStringToObject(h, "method", method);
    if (body)
        cJSON_AddStringToObject(ev, "body", body);
    cJSON_AddBoolToObject(ev, "isBase64Encoded", b64);
    char *text = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    int rc;
    cJSON *a = answer_of(text, strlen(text), &rc);
    free(text);
    assert_int_equal(rc, 0);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(a, "statusCode");
    assert_true(cJSON_IsNumber(code));
    if (code->valueint != status)
        fail_msg("%s %s: status %d, expected %d", method, path, code->valueint, status);
    assert_string_equal(launch__str(cJSON_GetObjectItemCaseSensitive(a, "headers"), "content-type"),
                        "application/json");
    cJSON *parsed = cJSON_Parse(launch__str(a, "body"));
    assert_true(cJSON_IsObject(parsed));
    cJSON_Delete(a);
    return parsed;
}

static void assert_http_error(const char *method, const char *path, const char *body, bool b64,
                              int status, const char *part)
{
    cJSON *b = http(method, path, body, b64, status);
    const char *e = launch__str(b, "error");
    assert_non_null(e);
    if (!strstr(e, part))
        fail_msg("\"%s\" not in \"%s\"", part, e);
    cJSON_Delete(b);
}

static void test_api_gateway_routes_and_bad_input(void **state)
{
    (void)state;
    assert_http_error("GET", "/elsewhere", NULL, false, 404, "no route");
    assert_http_error("GET", "/runs/a/b/c", NULL, false, 404, "no route");
    assert_http_error("DELETE", "/runs/abc", NULL, false, 405, "GET");
    assert_http_error("GET", "/flows/etl/runs", NULL, false, 405, "POST");
    assert_http_error("GET", "/runs/abc/cancel", NULL, false, 405, "POST");
    assert_http_error("GET", "/runs/a%2Fb", NULL, false, 400, "runId");
    assert_http_error("POST", "/flows/e$tl/runs", "{}", false, 400, "flowName");
    assert_http_error("POST", "/flows/etl/runs", "{nope", false, 400, "JSON object");
    assert_http_error("POST", "/flows/etl/runs", "[]", false, 400, "JSON object");
    assert_http_error("POST", "/flows/etl/runs", "!!!", true, 400, "base64");
    assert_http_error("POST", "/flows/etl/runs", "/w==", true, 400, "base64"); /* 0xff */
    assert_http_error("POST", "/flows/etl/runs", "AA==", true, 400, "base64"); /* a NUL */
    assert_http_error("POST", "/flows/etl/runs", "{\"action\":\"cancel\"}", false, 400, "action");
    assert_http_error("POST", "/flows/etl/runs", "{\"flow_name\":\"x\"}", false, 400, "differs");
    assert_http_error("POST", "/flows/etl/runs", "{\"a\":\"\\u0000\"}", false, 400, "NUL");
    assert_http_error("POST", "/flows/etl/runs", "e30=", true, 400, "org_id is required");
    assert_http_error("POST", "/runs/abc/cancel", "{\"colour\":1}", false, 400, "colour");
    assert_http_error("POST", "/runs/abc/cancel", "{\"reason\":1}", false, 400, "string");
    /* Payload format 1.0 is not ours. */
    int rc;
    const char *v1 = "{\"version\":\"1.0\",\"requestContext\":{\"http\":{}}}";
    cJSON *a = answer_of(v1, strlen(v1), &rc);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(a, "statusCode")->valueint, 400);
    cJSON_Delete(a);
}

/* An ECS Task State Change event for `task` (JSON text of the detail). */
static cJSON *ecs(const char *detail, int *rc)
{
    char ev[2048];
    int n = snprintf(ev, sizeof ev,
                     "{\"source\":\"aws.ecs\",\"detail-type\":\"ECS Task State Change\","
                     "\"detail\":%s}",
                     detail);
    return answer_of(ev, (size_t)n, rc);
}

/* An event is `len` bytes, not a C string: nothing past them is read (ASan: a heap overflow in
 * strlen before the fix, found by fuzz_lambda). */
static void test_an_event_is_read_within_its_length(void **state)
{
    (void)state;
    const char ev[] = "{\"action\":\"nope\"}";
    char *exact = malloc(sizeof ev - 1); /* no NUL after the event */
    assert_non_null(exact);
    memcpy(exact, ev, sizeof ev - 1);
    cJSON *a = answer_of(exact, sizeof ev - 1, &(int){0});
    assert_string_equal(launch__str(a, "errorType"), "Dagy.InvalidRequest");
    cJSON_Delete(a);
    free(exact);
}

static void test_ecs_events_of_no_dagy_run_are_ignored(void **state)
{
    (void)state;
    const char *cases[] = {
        "{\"taskArn\":\"arn:t/1\",\"lastStatus\":\"RUNNING\"}",
        "{\"taskArn\":\"arn:t/1\",\"lastStatus\":\"STOPPED\",\"group\":\"family:x\"}",
        ("{\"taskArn\":\"arn:t/"
         "1\",\"lastStatus\":\"STOPPED\",\"overrides\":{\"containerOverrides\":"
         "[{\"name\":\"other\",\"environment\":[{\"name\":\"DAGY_RUN_ID\",\"value\":\"r1\"}]}]}}"),
        "{\"taskArn\":\"arn:t/1\",\"lastStatus\":\"STOPPED\",\"group\":\"dagy:../x\"}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc;
        cJSON *a = ecs(cases[i], &rc);
        assert_int_equal(rc, 0);
        assert_non_null(launch__str(a, "ignored"));
        cJSON_Delete(a);
    }
    int rc;
    cJSON *a = ecs("{\"lastStatus\":\"STOPPED\"}", &rc);
    assert_int_equal(rc, -1);
    assert_string_equal(launch__str(a, "errorType"), "Dagy.InvalidRequest");
    cJSON_Delete(a);
    /* Another ECS event type is not ours either. */
    const char *other = "{\"source\":\"aws.ecs\",\"detail-type\":\"ECS Deployment State Change\","
                        "\"detail\":{}}";
    a = answer_of(other, strlen(other), &rc);
    assert_int_equal(rc, 0);
    assert_non_null(launch__str(a, "ignored"));
    cJSON_Delete(a);
}

static void test_schedule_without_a_request_is_invalid(void **state)
{
    (void)state;
    const char *ev =
        "{\"source\":\"aws.events\",\"detail-type\":\"Scheduled Event\",\"detail\":{}}";
    assert_text_error(ev, "Dagy.InvalidRequest", "detail");
}

int main(void)
{
    /* Nothing here may reach AWS: no configuration, an unroutable endpoint. */
    unsetenv("DAGY_ECS_CLUSTER_ARN");
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_events_are_error_answers),
        cmocka_unit_test(test_an_event_is_read_within_its_length),
        cmocka_unit_test(test_answers_stay_utf8_when_messages_are_cut),
        cmocka_unit_test(test_api_gateway_routes_and_bad_input),
        cmocka_unit_test(test_ecs_events_of_no_dagy_run_are_ignored),
        cmocka_unit_test(test_schedule_without_a_request_is_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
