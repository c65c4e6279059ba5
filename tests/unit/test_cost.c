/* test_cost.c - the run's estimated Fargate cost (agent/cost.h): a known profile and duration
 * costs the table's price to the cent (on-demand, Spot, ARM, storage above the free 20 GiB, the
 * one-minute minimum), overrides replace the table, and a hostile task metadata answer gives an
 * error naming the field instead of a guess. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "agent/cost.h"

/* A Fargate task metadata v4 answer, as documented (trimmed), with `extra` members merged in. */
static cJSON *metadata(const char *extra)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"Cluster\":\"arn:aws:ecs:us-east-1:123456789012:cluster/dagy\","
             "\"TaskARN\":\"arn:aws:ecs:us-east-1:123456789012:task/dagy/abc\","
             "\"Family\":\"dagy-worker\",\"Revision\":\"3\",\"DesiredStatus\":\"RUNNING\","
             "\"KnownStatus\":\"RUNNING\",\"Limits\":{\"CPU\":1,\"Memory\":2048},"
             "\"AvailabilityZone\":\"us-east-1a\",\"LaunchType\":\"FARGATE\","
             "\"EphemeralStorageMetrics\":{\"Utilized\":261,\"Reserved\":20496},"
             "\"Containers\":[]%s%s}",
             extra ? "," : "", extra ? extra : "");
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    return j;
}

static const char *no_env(const char *name)
{
    (void)name;
    return NULL;
}

static agent_cost_profile parse_ok(const char *extra, const char *hint, const char *machine)
{
    agent_cost_profile p;
    char err[256] = "";
    cJSON *j = metadata(extra);
    int rc = agent_cost_profile_parse(j, hint, machine, &p, err, sizeof err);
    cJSON_Delete(j);
    if (rc)
        fail_msg("profile refused: %s", err);
    return p;
}

static double cost_of(const agent_cost_profile *p, double seconds)
{
    agent_cost_rates r;
    char err[256];
    assert_int_equal(agent_cost_rates_for(p, no_env, &r, err, sizeof err), 0);
    return agent_cost_usd(p, &r, seconds);
}

static long cents(double usd)
{
    return lround(usd * 100);
}

/* 1 vCPU + 2 GiB for an hour on x86 on-demand: 0.04048 + 2 * 0.004445 = $0.04937. */
static void known_profile_costs_the_table_price(void **state)
{
    (void)state;
    agent_cost_profile p = parse_ok(NULL, NULL, "x86_64");
    assert_float_equal(p.vcpu, 1, 0);
    assert_float_equal(p.memory_gib, 2, 0);
    assert_float_equal(p.storage_gib, 20, 0);
    assert_false(p.spot);
    assert_false(p.arm);
    assert_float_equal(cost_of(&p, 3600), 0.04937, 1e-9);
    /* 10 h of a 4 vCPU / 8 GiB task: (4*0.04048 + 8*0.004445) * 10 = $1.9748 = 197 cents */
    agent_cost_profile big = {4, 8, 20, false, false};
    assert_int_equal(cents(cost_of(&big, 36000)), 197);
    assert_float_equal(cost_of(&big, 36000), 1.9748, 1e-9);
}

static void spot_is_cheaper_than_on_demand(void **state)
{
    (void)state;
    agent_cost_profile od = parse_ok(NULL, "FARGATE", "x86_64");
    agent_cost_profile hinted = parse_ok(NULL, "FARGATE_SPOT", "x86_64");
    agent_cost_profile meta = parse_ok("\"CapacityProviderName\":\"FARGATE_SPOT\"", NULL, "x86_64");
    assert_true(hinted.spot && meta.spot && !od.spot);
    /* 1 vCPU + 2 GiB Spot, an hour: 0.01334053 + 2 * 0.00146489 = 0.01627031 */
    assert_float_equal(cost_of(&hinted, 3600), 0.01627, 1e-9);
    assert_true(cost_of(&hinted, 3600) < cost_of(&od, 3600) / 2);
    /* The metadata wins over the launcher's hint. */
    agent_cost_profile both =
        parse_ok("\"CapacityProviderName\":\"FARGATE\"", "FARGATE_SPOT", "x86_64");
    assert_false(both.spot);
}

static void arm_uses_the_graviton_prices(void **state)
{
    (void)state;
    agent_cost_profile p = parse_ok(NULL, NULL, "aarch64");
    assert_true(p.arm);
    /* 0.03238 + 2 * 0.00356 = 0.03950 per hour */
    assert_float_equal(cost_of(&p, 3600), 0.0395, 1e-9);
    agent_cost_profile s = parse_ok(NULL, "FARGATE_SPOT", "arm64");
    assert_true(s.arm && s.spot);
    assert_float_equal(cost_of(&s, 3600), round((0.01067083 + 2 * 0.00117324) * 1e6) / 1e6, 1e-9);
}

/* Reserved 51200 MiB = 50 GiB: 30 GiB above the free 20 at $0.000111 = $0.00333 an hour more.
 * The documented 20496 MiB is the default 20 GiB (sizes are whole GiB): nothing extra. */
static void storage_above_20_gib_is_billed(void **state)
{
    (void)state;
    agent_cost_profile p = parse_ok(NULL, NULL, "x86_64");
    agent_cost_profile big = p;
    big.storage_gib = 50;
    assert_float_equal(cost_of(&big, 3600) - cost_of(&p, 3600), 0.00333, 2e-6);
    cJSON *j = metadata(NULL);
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "EphemeralStorageMetrics"), "Reserved",
                              cJSON_CreateNumber(51200));
    char err[256];
    agent_cost_profile q;
    assert_int_equal(agent_cost_profile_parse(j, NULL, "x86_64", &q, err, sizeof err), 0);
    assert_float_equal(q.storage_gib, 50, 1e-9);
    assert_float_equal(cost_of(&q, 3600), 0.04937 + 0.00333, 1e-9);
    cJSON_Delete(j);
    /* No EphemeralStorageMetrics (an older platform): the free 20 GiB. */
    j = metadata(NULL);
    cJSON_DeleteItemFromObject(j, "EphemeralStorageMetrics");
    assert_int_equal(agent_cost_profile_parse(j, NULL, "x86_64", &q, err, sizeof err), 0);
    assert_float_equal(q.storage_gib, 20, 0);
    cJSON_Delete(j);
}

/* Fargate bills whole seconds, one minute at least. */
static void one_minute_minimum_and_whole_seconds(void **state)
{
    (void)state;
    agent_cost_profile p = {1, 2, 20, false, false};
    double minute = cost_of(&p, 60);
    assert_float_equal(minute, round(0.04937 / 60 * 1e6) / 1e6, 1e-12);
    assert_float_equal(cost_of(&p, 5), minute, 0);
    assert_float_equal(cost_of(&p, 0), minute, 0);
    assert_float_equal(cost_of(&p, -3), minute, 0);
    assert_float_equal(cost_of(&p, NAN), minute, 0);
    assert_float_equal(cost_of(&p, 60.2), cost_of(&p, 61), 0);
    assert_true(cost_of(&p, 61) > minute);
    /* Rounded to 6 decimals. */
    double c = cost_of(&p, 7777);
    assert_float_equal(c * 1e6, round(c * 1e6), 1e-6);
}

static const char *overrides(const char *name)
{
    if (!strcmp(name, "DAGY_PRICE_VCPU_HOUR"))
        return "0.1";
    if (!strcmp(name, "DAGY_PRICE_GB_HOUR"))
        return "0.01";
    if (!strcmp(name, "DAGY_PRICE_STORAGE_GB_HOUR"))
        return "0.001";
    return NULL;
}

static const char *bad_value;
static const char *bad_env(const char *name)
{
    return !strcmp(name, "DAGY_PRICE_GB_HOUR") ? bad_value : NULL;
}

static void environment_overrides_the_table(void **state)
{
    (void)state;
    agent_cost_profile p = {2, 4, 30, true, true};
    agent_cost_rates r;
    char err[256];
    assert_int_equal(agent_cost_rates_for(&p, overrides, &r, err, sizeof err), 0);
    /* 2*0.1 + 4*0.01 + 10*0.001 = 0.25 an hour */
    assert_float_equal(agent_cost_usd(&p, &r, 3600), 0.25, 1e-12);
    const char *bad[] = {"abc", "-1", "inf", "nan", "0x10", "1e400", "2000", "1.5x", " "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bad_value = bad[i];
        err[0] = '\0';
        if (agent_cost_rates_for(&p, bad_env, &r, err, sizeof err) != -22)
            fail_msg("DAGY_PRICE_GB_HOUR=\"%s\" accepted", bad[i]);
        assert_non_null(strstr(err, "DAGY_PRICE_GB_HOUR"));
    }
    bad_value = ""; /* empty = unset */
    assert_int_equal(agent_cost_rates_for(&p, bad_env, &r, err, sizeof err), 0);
}

/* Each hostile answer: refused with the field named. */
static void hostile_metadata_gives_no_cost(void **state)
{
    (void)state;
    static const struct {
        const char *edit; /* JSON merged over the good answer */
        const char *machine;
        const char *hint;
        const char *says;
    } cases[] = {
        {"\"Limits\":{\"Memory\":2048}", "x86_64", NULL, "Limits.CPU"},
        {"\"Limits\":{\"CPU\":\"1\",\"Memory\":2048}", "x86_64", NULL, "Limits.CPU"},
        {"\"Limits\":{\"CPU\":1,\"Memory\":-5}", "x86_64", NULL, "Limits.Memory"},
        {"\"Limits\":{\"CPU\":1e300,\"Memory\":2048}", "x86_64", NULL, "Limits.CPU"},
        {"\"Limits\":{\"CPU\":1,\"Memory\":1e12}", "x86_64", NULL, "Limits.Memory"},
        {"\"Limits\":[1,2]", "x86_64", NULL, "Limits.CPU"},
        {"\"LaunchType\":\"EC2\"", "x86_64", NULL, "LaunchType"},
        {"\"LaunchType\":7", "x86_64", NULL, "LaunchType"},
        {"\"CapacityProviderName\":\"my-asg\"", "x86_64", NULL, "capacity provider"},
        {"\"EphemeralStorageMetrics\":{\"Reserved\":\"lots\"}", "x86_64", NULL, "Reserved"},
        {"\"EphemeralStorageMetrics\":{\"Reserved\":99999999}", "x86_64", NULL, "Reserved"},
        {"\"EphemeralStorageMetrics\":5", "x86_64", NULL, "Reserved"},
        {NULL, "riscv64", NULL, "architecture"},
        {NULL, NULL, NULL, "architecture"},
        {NULL, "x86_64", "EC2_SPOT", "capacity provider"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = metadata(NULL);
        if (cases[i].edit) {
            char obj[512];
            snprintf(obj, sizeof obj, "{%s}", cases[i].edit);
            cJSON *e = cJSON_Parse(obj);
            assert_non_null(e);
            for (cJSON *m = e->child; m; m = m->next) {
                cJSON_DeleteItemFromObject(j, m->string);
                cJSON_AddItemToObject(j, m->string, cJSON_Duplicate(m, true));
            }
            cJSON_Delete(e);
        }
        agent_cost_profile p;
        char err[256] = "";
        int rc = agent_cost_profile_parse(j, cases[i].hint, cases[i].machine, &p, err, sizeof err);
        cJSON_Delete(j);
        if (rc != -22 || !strstr(err, cases[i].says))
            fail_msg("case %zu: rc %d, error \"%s\" (wanted one naming %s)", i, rc, err,
                     cases[i].says);
    }
    agent_cost_profile p;
    char err[256];
    cJSON *arr = cJSON_Parse("[1]");
    assert_int_equal(agent_cost_profile_parse(arr, NULL, "x86_64", &p, err, sizeof err), -22);
    assert_int_equal(agent_cost_profile_parse(NULL, NULL, "x86_64", &p, err, sizeof err), -22);
    cJSON_Delete(arr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_profile_costs_the_table_price),
        cmocka_unit_test(spot_is_cheaper_than_on_demand),
        cmocka_unit_test(arm_uses_the_graviton_prices),
        cmocka_unit_test(storage_above_20_gib_is_billed),
        cmocka_unit_test(one_minute_minimum_and_whole_seconds),
        cmocka_unit_test(environment_overrides_the_table),
        cmocka_unit_test(hostile_metadata_gives_no_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
