/* test_cwlogs.c - the CloudWatch Logs shipper's pure rules: batch limits (10,000 events,
 * 1,048,576 bytes with 26 per event, 24 h), the line cut to fit one event (valid JSON, valid
 * UTF-8, marked), which lines stay on stdout, the body's string escaping, and the
 * configuration variables. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "agent/cwlogs.h"
#include "agent/log.h"
#include "proto/util.h"

static void test_batch_limits(void **state)
{
    (void)state;
    assert_true(cwlogs_batch_fits(0, 0, 0, 100));
    assert_true(cwlogs_batch_fits(9999, 0, 0, 1));
    assert_false(cwlogs_batch_fits(10000, 0, 0, 1)); /* 10,000 tiny events: the count limit */
    /* Exactly 1,048,576 with the 26 bytes of overhead fits; one byte more does not. */
    assert_true(cwlogs_batch_fits(1, 1048576 - 126, 0, 100));
    assert_false(cwlogs_batch_fits(1, 1048576 - 125, 0, 100));
    assert_true(cwlogs_batch_fits(0, 0, 0, CWLOGS_EVENT_MAX));
    assert_true(cwlogs_batch_fits(5, 10, CWLOGS_SPAN_MS - 1, 10));
    assert_false(cwlogs_batch_fits(5, 10, CWLOGS_SPAN_MS, 10));
    assert_int_equal(CWLOGS_EVENT_MAX + CWLOGS_EVENT_OVERHEAD, 262144);
}

/* A task_output line with `m` units in "message" ("short" if 0) and `n` in "line" (as the
 * logger writes it). */
static char *long_line_msg(size_t m, size_t n, const char *unit, size_t *len)
{
    size_t ul = strlen(unit), cap = (n + m) * ul + 512;
    char *s = malloc(cap);
    size_t at = (size_t)snprintf(s, cap,
                                 "{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"level\":"
                                 "\"INFO\",\"event_type\":\"task_output\",\"message\":\"%s",
                                 m ? "" : "short");
    for (size_t i = 0; i < m; i++, at += ul)
        memcpy(s + at, unit, ul);
    at += (size_t)snprintf(s + at, cap - at, "\",\"task_name\":\"t\",\"line\":\"");
    for (size_t i = 0; i < n; i++, at += ul)
        memcpy(s + at, unit, ul);
    at += (size_t)snprintf(s + at, cap - at, "\"}");
    *len = at;
    return s;
}

static void check_fit_msg(const char *unit, size_t m, size_t n, size_t max)
{
    size_t len, out_len = 0;
    char *in = long_line_msg(m, n, unit, &len);
    assert_true(len > max);
    char *out = cwlogs_fit_line(in, len, max, &out_len);
    assert_non_null(out);
    assert_true(out_len <= max);
    assert_int_equal(strlen(out), out_len);
    assert_true(proto_utf8_valid(out, out_len));
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "log_truncated")));
    assert_int_equal((int)cJSON_GetObjectItem(j, "log_original_bytes")->valuedouble, (int)len);
    const char *line = cJSON_GetObjectItem(j, "line")->valuestring;
    assert_true(strlen(line) > 11 && !strcmp(line + strlen(line) - 11, "[truncated]"));
    assert_string_equal(cJSON_GetObjectItem(j, "event_type")->valuestring, "task_output");
    if (!m)
        assert_string_equal(cJSON_GetObjectItem(j, "message")->valuestring, "short");
    cJSON_Delete(j);
    cJSON_free(out);
    free(in);
}

static void check_fit(const char *unit, size_t n, size_t max)
{
    check_fit_msg(unit, 0, n, max);
}

static void test_fit_line(void **state)
{
    (void)state;
    check_fit("y", 300000, CWLOGS_EVENT_MAX);
    check_fit("\\u0001", 100000, CWLOGS_EVENT_MAX); /* escapes: the printed form is longer */
    /* The message's 1900 escaped bytes as well, which the cut of "line" does not shrink. */
    check_fit_msg("\\u0001", 1900, 102400, CWLOGS_EVENT_MAX);
    check_fit("\xc3\xa9", 200000, CWLOGS_EVENT_MAX); /* cut on a character boundary */
    check_fit("\xf0\x9f\x98\x80", 5000, 4096);
    size_t n;
    assert_null(cwlogs_fit_line("not json", 8, 4, &n));
}

static void test_lifecycle_lines(void **state)
{
    (void)state;
    assert_true(cwlogs_lifecycle_line(LOG_INFO, "run_start"));
    assert_true(cwlogs_lifecycle_line(LOG_INFO, "run_end"));
    assert_true(cwlogs_lifecycle_line(LOG_WARNING, "task_retry"));
    assert_true(cwlogs_lifecycle_line(LOG_ERROR, "task_end"));
    assert_false(cwlogs_lifecycle_line(LOG_INFO, "task_output"));
    assert_false(cwlogs_lifecycle_line(LOG_INFO, "task_start"));
    assert_false(cwlogs_lifecycle_line(LOG_DEBUG, "run_phase"));
}

static void test_escape(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len = 0, cap = 0;
    const char in[] = "{\"a\":\"b\\\\c\xc3\xa9\"}";
    assert_int_equal(cwlogs_json_escape(&out, &len, &cap, in, sizeof in - 1), 0);
    cJSON *j = cJSON_Parse(out);
    assert_true(cJSON_IsString(j));
    assert_string_equal(j->valuestring, in);
    cJSON_Delete(j);
    free(out);
}

static void test_config(void **state)
{
    (void)state;
    cwlogs_config c;
    char err[256];
    unsetenv("DAGY_LOG_GROUP");
    unsetenv("DAGY_LOG_STDOUT");
    unsetenv("DAGY_LOG_BUFFER_BYTES");
    assert_int_equal(cwlogs_config_from_env(&c, err, sizeof err), 0);
    assert_null(c.group);
    assert_false(c.stdout_all);
    assert_int_equal(c.cap_bytes, CWLOGS_QUEUE_DEFAULT);
    setenv("DAGY_LOG_GROUP", "/ecs/dagy-worker", 1);
    setenv("DAGY_LOG_STDOUT", "all", 1);
    setenv("DAGY_LOG_BUFFER_BYTES", "1048576", 1);
    assert_int_equal(cwlogs_config_from_env(&c, err, sizeof err), 0);
    assert_string_equal(c.group, "/ecs/dagy-worker");
    assert_true(c.stdout_all);
    assert_int_equal(c.cap_bytes, 1048576);
    cwlogs_config_free(&c);
    static const char *const bad[][2] = {
        {"DAGY_LOG_GROUP", "a b"},         {"DAGY_LOG_GROUP", "x:y"},
        {"DAGY_LOG_STDOUT", "none"},       {"DAGY_LOG_BUFFER_BYTES", "-1"},
        {"DAGY_LOG_BUFFER_BYTES", "1000"}, {"DAGY_LOG_BUFFER_BYTES", "12k"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("DAGY_LOG_GROUP", "/g", 1);
        setenv("DAGY_LOG_STDOUT", "lifecycle", 1);
        setenv("DAGY_LOG_BUFFER_BYTES", "300000", 1);
        setenv(bad[i][0], bad[i][1], 1);
        assert_int_equal(cwlogs_config_from_env(&c, err, sizeof err), -22);
        assert_non_null(strstr(err, bad[i][0]));
        assert_null(c.group);
    }
    unsetenv("DAGY_LOG_GROUP");
    unsetenv("DAGY_LOG_STDOUT");
    unsetenv("DAGY_LOG_BUFFER_BYTES");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_limits),    cmocka_unit_test(test_fit_line),
        cmocka_unit_test(test_lifecycle_lines), cmocka_unit_test(test_escape),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
