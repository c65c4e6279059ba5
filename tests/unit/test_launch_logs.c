/* test_launch_logs.c - `dagy-launch logs --since DURATION`: the accepted forms and bounds; the
 * launcher's DAGY_LOG_GROUP is passed on to the agent (and nothing when unset). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

/* The value of variable `name` in an ECS environment list, or NULL. */
static const char *env_value(const cJSON *list, const char *name)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        if (strcmp(cJSON_GetObjectItem(e, "name")->valuestring, name) == 0)
            return cJSON_GetObjectItem(e, "value")->valuestring;
    }
    return NULL;
}

static void test_log_group_passed_on(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    launch_opts o = {.flow = "etl",
                     .org = "acme",
                     .parameters = cJSON_CreateObject(),
                     .env = cJSON_CreateObject()};
    launch_request r;
    assert_int_equal(launch_request_init(&r, &o, NULL, -1, err), 0);
    launch_resolved v = {"1.0.0", "s3://b/a.zip#sha256=ff", NULL, 0, NULL};
    launch_config c;
    unsetenv("DAGY_LOG_GROUP");
    assert_int_equal(launch_config_from_env(&c, 0, err), 0);
    cJSON *env = launch_container_env(&c, &r, &v);
    assert_null(env_value(env, "DAGY_LOG_GROUP"));
    cJSON_Delete(env);
    setenv("DAGY_LOG_GROUP", "/ecs/dagy-worker", 1);
    assert_int_equal(launch_config_from_env(&c, 0, err), 0);
    env = launch_container_env(&c, &r, &v);
    assert_string_equal(env_value(env, "DAGY_LOG_GROUP"), "/ecs/dagy-worker");
    cJSON_Delete(env);
    unsetenv("DAGY_LOG_GROUP");
    launch_request_clear(&r);
    cJSON_Delete(o.parameters);
    cJSON_Delete(o.env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_durations),
                                       cmocka_unit_test(test_log_group_passed_on)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
