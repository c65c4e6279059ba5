/* test_launch_logs.c - `dagy-launch logs --since DURATION`: the accepted forms and bounds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "launcher/launch.h"

static void test_durations(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_int_equal(launch_parse_duration("30s", &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(launch_parse_duration("10m", &ms), 0);
    assert_int_equal(ms, 600000);
    assert_int_equal(launch_parse_duration("2h", &ms), 0);
    assert_int_equal(ms, 7200000);
    assert_int_equal(launch_parse_duration("1d", &ms), 0);
    assert_int_equal(ms, 86400000);
    assert_int_equal(launch_parse_duration("366d", &ms), 0);
    static const char *const bad[] = {
        "",    "10", "m", "0m", "-5m", "+5m", "1.5h", "5 m", "5mm", "367d", "99999999999999999999s",
        " 5m", NULL};
    for (const char *const *b = bad; *b; b++)
        assert_int_equal(launch_parse_duration(*b, &ms), -22);
    assert_int_equal(launch_parse_duration(NULL, &ms), -22);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_durations)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
