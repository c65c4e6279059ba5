/* test_log_sink.c - the logger's second destination (the CloudWatch Logs shipper's sink) and the
 * held run_end line: the sink sees every JSON object whole, decides about stdout, and run_end
 * stays the last line on stdout even when lines are written after it was logged. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "agent/log.h"

static int out_fd = -1;
static int sunk;
static char last_event[64];

/* Everything written so far (NUL-terminated); caller frees. */
static char *written(void)
{
    off_t n = lseek(out_fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(out_fd, buf, (size_t)n, 0), n);
    return buf;
}

/* Keeps task_output off stdout; while run_end is logged, writes an older line itself (as the
 * shipper does when its queue overflows). */
static bool sink(void *ud, const char *json, size_t len, double ts, log_level level,
                 const char *event_type)
{
    (void)ud;
    (void)level;
    cJSON *j = cJSON_ParseWithLength(json, len);
    assert_non_null(j); /* one whole JSON object, without its newline */
    assert_true(ts > 1e9);
    assert_string_equal(cJSON_GetObjectItem(j, "event_type")->valuestring, event_type);
    cJSON_Delete(j);
    sunk++;
    snprintf(last_event, sizeof last_event, "%s", event_type);
    if (!strcmp(event_type, "run_end"))
        agent_log_raw("{\"older\":true}\n");
    return strcmp(event_type, "task_output") != 0;
}

static void test_sink_and_held_run_end(void **state)
{
    (void)state;
    out_fd = memfd_create("log", 0);
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, out_fd);
    agent_log_set_sink(sink, NULL);
    agent_log_hold_run_end(true);
    agent_log(LOG_INFO, "run_start", "start");
    agent_log(LOG_INFO, "task_output", "noise");
    agent_log(LOG_INFO, "run_end", "end");
    agent_log_set_sink(NULL, NULL);
    agent_log(LOG_WARNING, "log_shipping_incomplete", "report");
    agent_log_release();
    assert_int_equal(sunk, 3);
    char *out = written();
    /* run_start, the sink's older line, the report, then run_end last. */
    const char *a = strstr(out, "\"run_start\""), *b = strstr(out, "{\"older\":true}");
    const char *c = strstr(out, "\"log_shipping_incomplete\""), *d = strstr(out, "\"run_end\"");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(d);
    assert_null(strstr(out, "noise"));
    assert_true(a < b && b < c && c < d);
    assert_string_equal(out + strlen(out) - 1, "\n");
    assert_true(strchr(d, '\n') == out + strlen(out) - 1); /* run_end is the last line */
    free(out);
    close(out_fd);
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sink_and_held_run_end)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
