/* test_log.c - the agent's log line encoder: every line is one valid UTF-8 JSON object whatever
 * bytes a task prints (NUL included: "abc\0def" was logged as "abc"), and the pretty view never
 * passes a task's terminal control sequences to the operator's terminal. */
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
#include "proto/util.h"

static int out_fd = -1;

/* A fresh in-memory file as the log's destination. */
static int setup(void **state)
{
    (void)state;
    out_fd = memfd_create("log", 0);
    return out_fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    close(out_fd);
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, 1);
    return 0;
}

/* Everything written so far (NUL-terminated; *len gets the length); caller frees. */
static char *written(size_t *len)
{
    off_t n = lseek(out_fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    assert_int_equal(pread(out_fd, buf, (size_t)n, 0), n);
    *len = (size_t)n;
    return buf;
}

/* The only line written, parsed (asserting it is one valid UTF-8 JSON line). */
static cJSON *one_line(void)
{
    size_t len;
    char *text = written(&len);
    assert_true(len > 0 && text[len - 1] == '\n');
    assert_null(memchr(text, '\n', len - 1));
    assert_true(proto_utf8_valid(text, len));
    cJSON *j = cJSON_ParseWithLength(text, len);
    assert_non_null(j);
    free(text);
    return j;
}

static void task_output_keeps_bytes_after_nul(void **state)
{
    (void)state;
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, out_fd);
    log_line *l = agent_log_begin_text(LOG_INFO, "task_output", "abc\0def", 7);
    agent_log_str(l, "stream", "stdout");
    agent_log_end(l);
    size_t len;
    char *text = written(&len);
    assert_non_null(strstr(text, "\"message\":\"abc\\u0000def\""));
    free(text);
    cJSON *j = one_line();
    const cJSON *m = cJSON_GetObjectItem(j, "message");
    assert_memory_equal(m->valuestring, "abc", 4); /* cJSON itself stops at the NUL */
    cJSON_Delete(j);
}

/* Every byte value, invalid UTF-8, surrogates, overlong forms, ESC and C1 controls: one valid
 * UTF-8 JSON object per line, the valid characters kept. */
static void every_line_is_valid_utf8_json_whatever_the_bytes(void **state)
{
    (void)state;
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, out_fd);
    char all[300];
    size_t n = 0;
    for (int c = 0; c < 256; c++)
        all[n++] = (char)c;
    const char extra[] = "\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80\xe2\x82\xac\xc2\x9b\x1b[2J";
    memcpy(all + n, extra, sizeof extra - 1);
    n += sizeof extra - 1;
    log_line *l = agent_log_begin_text(LOG_INFO, "task_output", all, n);
    agent_log_strn(l, "line", all, n);
    agent_log_end(l);
    size_t len;
    char *text = written(&len);
    assert_non_null(strstr(text, "\"message\":\"\\u0000\\u0001"));    /* from the first byte on */
    assert_non_null(strstr(text, "\xe2\x82\xac\\u009b\\u001b[2J\"")); /* valid ones kept */
    /* No raw control byte at all (C0, DEL, C1): `cat` of the log cannot drive a terminal. */
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned char c = (unsigned char)text[i];
        assert_false(c < 0x20 || c == 0x7f);
        assert_false(c == 0xc2 && (unsigned char)text[i + 1] < 0xa0);
    }
    free(text);
    cJSON *j = one_line();
    assert_string_equal(cJSON_GetObjectItem(j, "event_type")->valuestring, "task_output");
    cJSON_Delete(j);
}

/* A message longer than the line buffer is cut on a character boundary, never inside one. */
/* Integers are written digit for digit at both ends of their range (no snprintf). */
static void integers_keep_every_digit_at_the_extremes(void **state)
{
    (void)state;
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, out_fd);
    log_line *l = agent_log_begin_text(LOG_INFO, "t", "m", 1);
    agent_log_int(l, "min", INT64_MIN);
    agent_log_int(l, "max", INT64_MAX);
    agent_log_int(l, "zero", 0);
    agent_log_int(l, "neg", -7);
    agent_log_int(l, "ten", 10);
    agent_log_end(l);
    size_t len;
    char *text = written(&len);
    assert_non_null(strstr(text, "\"min\":-9223372036854775808,\"max\":9223372036854775807,"
                                 "\"zero\":0,\"neg\":-7,\"ten\":10"));
    free(text);
    cJSON_Delete(one_line());
}

/* Lines logged in a batch (nested too) reach stdout only at its outermost end, all of them and in
 * order; an ERROR line and run_end write the batch at once, since the process may end next. */
static void batched_lines_wait_for_the_end_and_keep_their_order(void **state)
{
    (void)state;
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, out_fd);
    agent_log_batch_begin();
    agent_log(LOG_INFO, "e1", "one");
    agent_log_batch_begin();
    agent_log(LOG_INFO, "e2", "two");
    agent_log_batch_end();
    assert_int_equal(lseek(out_fd, 0, SEEK_END), 0);
    agent_log_batch_end();
    size_t len;
    char *text = written(&len);
    char *one = strstr(text, "\"message\":\"one\""), *two = strstr(text, "\"message\":\"two\"");
    assert_non_null(one);
    assert_non_null(two);
    assert_true(one < two);
    free(text);
    off_t before = lseek(out_fd, 0, SEEK_END);
    agent_log_batch_begin();
    agent_log(LOG_INFO, "e3", "three");
    agent_log(LOG_ERROR, "e4", "four");
    text = written(&len);
    assert_true((off_t)len > before);
    assert_non_null(strstr(text, "\"message\":\"three\""));
    assert_non_null(strstr(text, "\"message\":\"four\""));
    free(text);
    before = lseek(out_fd, 0, SEEK_END);
    agent_log(LOG_INFO, "run_end", "the end");
    assert_true(lseek(out_fd, 0, SEEK_END) > before);
    /* a batch holds at most 64 KiB: thousands of lines are written on the way, whole lines */
    before = lseek(out_fd, 0, SEEK_END);
    for (int i = 0; i < 1000; i++)
        agent_log(LOG_INFO, "e5", "line %d", i);
    off_t mid = lseek(out_fd, 0, SEEK_END);
    assert_true(mid > before);
    text = written(&len);
    assert_int_equal(text[len - 1], '\n');
    free(text);
    agent_log_batch_end();
    assert_true(lseek(out_fd, 0, SEEK_END) > mid);
}

static void long_message_is_cut_on_a_character(void **state)
{
    (void)state;
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, out_fd);
    char line[4000];
    for (size_t i = 0; i + 3 <= sizeof line - 1; i += 3)
        memcpy(line + i, "\xe2\x82\xac", 3);
    line[3999] = '\0';
    log_line *l = agent_log_begin(LOG_INFO, "x", "%s", line);
    agent_log_end(l);
    cJSON *j = one_line();
    const char *m = cJSON_GetObjectItem(j, "message")->valuestring;
    assert_true(proto_utf8_valid(m, strlen(m)));
    assert_null(strstr(m, "\xef\xbf\xbd")); /* cut before the split character, not replaced */
    assert_true(strlen(m) >= 2040 && strlen(m) % 3 == 0);
    cJSON_Delete(j);
}

/* The pretty view: a task's ESC, BEL, CR, C1 controls, DEL and invalid bytes are shown as
 * visible escapes; the view's own colours still work. */
static void pretty_view_shows_control_characters_visibly(void **state)
{
    (void)state;
    agent_log_init(LOG_FORMAT_PRETTY, LOG_INFO, out_fd);
    const char evil[] = "\x1b]0;pwned\x07\x1b[2Jcls\rover\xc2\x9b"
                        "31m\x7f\xff\xe2\x80\xae"
                        "ok \xe2\x82\xac\tend";
    log_line *l = agent_log_begin_text(LOG_INFO, "task_output", evil, sizeof evil - 1);
    agent_log_str(l, "task_name", "t");
    agent_log_str(l, "stream", "stdout");
    agent_log_end(l);
    l = agent_log_begin(LOG_ERROR, "task_end", "task failed: %s", "boom\x1b[31m");
    agent_log_str(l, "status", "FAILED");
    agent_log_end(l);
    size_t len;
    char *text = written(&len);
    /* Remove the view's own sequences: what is left must hold no control character. */
    const char *own[] = {"\r\033[K", "\033[0m", "\033[2m", "\033[33m", "\033[31m", "\033[32m"};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        for (char *p; (p = strstr(text, own[i]));)
            memmove(p, p + strlen(own[i]), strlen(p + strlen(own[i])) + 1);
    for (const char *p = text; *p; p++)
        if (((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7f)
            fail_msg("control byte 0x%02x left in the pretty view: %s", *p, text);
    assert_true(proto_utf8_valid(text, strlen(text)));
    assert_null(strstr(text, "\xc2\x9b"));
    assert_null(strstr(text, "\xe2\x80\xae")); /* a bidi override could reorder the line */
    assert_non_null(strstr(text,
                           "\\x1b]0;pwned\\x07\\x1b[2Jcls\\rover\\u009b31m\\x7f\\xff\\u202eok "
                           "\xe2\x82\xac\tend"));
    assert_non_null(strstr(text, "task failed: boom\\x1b[31m"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(task_output_keeps_bytes_after_nul, setup, teardown),
        cmocka_unit_test_setup_teardown(every_line_is_valid_utf8_json_whatever_the_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(long_message_is_cut_on_a_character, setup, teardown),
        cmocka_unit_test_setup_teardown(integers_keep_every_digit_at_the_extremes, setup, teardown),
        cmocka_unit_test_setup_teardown(batched_lines_wait_for_the_end_and_keep_their_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pretty_view_shows_control_characters_visibly, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
