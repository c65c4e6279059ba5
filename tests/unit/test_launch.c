/* test_launch.c - the pure parts of dagy-launch: Fargate sizes and profiles, semantic version
 * order, parameters and extra variables, request validation, the request bodies (run item,
 * container environment, RunTask, task definition) and the reconcile verdict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/launch.h"

static void test_fargate_table(void **state)
{
    (void)state;
    static const int ok[][2] = {
        {256, 512},    {256, 1024},   {256, 2048},    {512, 1024},    {512, 4096},    {1024, 2048},
        {1024, 8192},  {2048, 4096},  {2048, 16384},  {4096, 8192},   {4096, 30720},  {8192, 16384},
        {8192, 20480}, {8192, 61440}, {16384, 32768}, {16384, 40960}, {16384, 122880}};
    static const int bad[][2] = {{256, 3072},     {256, 4096},   {512, 512},    {512, 5120},
                                 {512, 1536},     {1024, 1024},  {1024, 9216},  {2048, 17408},
                                 {4096, 31744},   {8192, 17408}, {8192, 65536}, {16384, 36864},
                                 {16384, 131072}, {300, 512},    {0, 0},        {-256, 512}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_true(launch_fargate_valid(ok[i][0], ok[i][1]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(launch_fargate_valid(bad[i][0], bad[i][1]));
    assert_string_equal(launch_fargate_memory_hint(8192), "16384-61440 in steps of 4096");
    assert_null(launch_fargate_memory_hint(300));
}

static void test_profiles_are_valid_fargate_sizes(void **state)
{
    (void)state;
    const char *names[] = {"small", "medium", "large", "xlarge", "heavy", "max"};
    const int want[][2] = {{256, 512},   {1024, 2048},  {2048, 4096},
                           {4096, 8192}, {8192, 16384}, {16384, 32768}};
    for (size_t i = 0; i < 6; i++) {
        int cpu = 0, mem = 0;
        assert_int_equal(launch_profile(names[i], &cpu, &mem), 0);
        assert_int_equal(cpu, want[i][0]);
        assert_int_equal(mem, want[i][1]);
        assert_true(launch_fargate_valid(cpu, mem));
    }
    int cpu, mem;
    assert_int_equal(launch_profile("huge", &cpu, &mem), -EINVAL);
    assert_int_equal(launch_profile("Small", &cpu, &mem), -EINVAL);
}

static void test_semver_order(void **state)
{
    (void)state;
    assert_true(launch_semver_cmp("1.10.0", "1.9.3") > 0);
    assert_true(launch_semver_cmp("1.9.3", "1.10.0") < 0);
    assert_true(launch_semver_cmp("2.0.0", "1.99.99") > 0);
    assert_true(launch_semver_cmp("v1.2.3", "1.2.3") == 0);
    assert_true(launch_semver_cmp("1.2.3+build.5", "1.2.3") == 0);
    assert_true(launch_semver_cmp("10.0.0", "9.0.0") > 0);
    /* semver.org item 11's example chain, each lower than the next. */
    const char *chain[] = {"1.0.0-alpha",  "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
                           "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1",       "1.0.0"};
    for (size_t i = 0; i + 1 < sizeof chain / sizeof chain[0]; i++) {
        assert_true(launch_semver_cmp(chain[i], chain[i + 1]) < 0);
        assert_true(launch_semver_cmp(chain[i + 1], chain[i]) > 0);
    }
    assert_true(launch_semver_cmp("18446744073709551615.0.0", "9.0.0") > 0);
}

static void test_semver_validity(void **state)
{
    (void)state;
    const char *good[] = {"0.0.0",
                          "1.2.3",
                          "v1.2.3",
                          "1.0.0-rc.1",
                          "1.0.0+20130313144700",
                          "1.0.0-beta+exp.sha.5114f85",
                          "1.0.0-x-y-z.--"};
    const char *bad[] = {
        "",       "1",          "1.2",    "1.2.3.4",    "01.2.3",
        "1.02.3", "1.2.3-",     "1.2.3+", "1.2.3-a..b", "1.2.3-a_b",
        "latest", "dev-branch", "1.2.x",  " 1.2.3",     "99999999999999999999999.0.0"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(launch_semver_valid(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(launch_semver_valid(bad[i]));
}

static void test_parse_int(void **state)
{
    (void)state;
    long v = 0;
    assert_int_equal(launch_parse_int("21", 21, 200, &v), 0);
    assert_int_equal(v, 21);
    assert_int_equal(launch_parse_int("200", 21, 200, &v), 0);
    assert_int_equal(launch_parse_int("20", 21, 200, &v), -EINVAL);
    assert_int_equal(launch_parse_int("201", 21, 200, &v), -EINVAL);
    assert_int_equal(launch_parse_int("5x", 0, 10, &v), -EINVAL);
    assert_int_equal(launch_parse_int("", 0, 10, &v), -EINVAL);
    assert_int_equal(launch_parse_int(" 5", 0, 10, &v), -EINVAL);
    assert_int_equal(launch_parse_int(NULL, 0, 10, &v), -EINVAL);
}

static void test_params(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    cJSON *p = cJSON_CreateObject();
    assert_int_equal(launch_param_add(p, "date=2024-03-14", err), 0);
    assert_int_equal(launch_param_add(p, "expr=a=b", err), 0);
    assert_int_equal(launch_param_add(p, "empty=", err), 0);
    assert_int_equal(launch_param_add(p, "=x", err), -EINVAL);
    assert_int_equal(launch_param_add(p, "novalue", err), -EINVAL);
    assert_non_null(strstr(err, "expected NAME=VALUE"));
    assert_string_equal(cJSON_GetObjectItem(p, "expr")->valuestring, "a=b");
    assert_string_equal(cJSON_GetObjectItem(p, "empty")->valuestring, "");
    assert_int_equal(launch_params_merge(p, "{\"date\": 1, \"n\": [1]}", "--params-json", err), 0);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(p, "date")));
    assert_int_equal(cJSON_GetArraySize(p), 4);
    assert_int_equal(launch_params_merge(p, "[1]", "--params-json", err), -EINVAL);
    assert_non_null(strstr(err, "expected a JSON object"));
    char path[] = "/tmp/dagy-test-params-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"f\": \"file\"}", 13), 13);
    close(fd);
    char arg[64];
    snprintf(arg, sizeof arg, "@%s", path);
    assert_int_equal(launch_params_merge(p, arg, "--params-json", err), 0);
    assert_string_equal(cJSON_GetObjectItem(p, "f")->valuestring, "file");
    unlink(path);
    assert_int_equal(launch_params_merge(p, arg, "--params-json", err), -EINVAL);
    assert_non_null(strstr(err, "cannot read"));
    cJSON_Delete(p);
}

/* A \u0000 escape would cut a parameter (cJSON ends strings there): refused, naming it. */
static void test_params_with_nul_escapes_are_refused(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    cJSON *p = cJSON_CreateObject();
    assert_int_equal(
        launch_params_merge(p, "{\"day\": \"2024\\u0000; rm -rf /\"}", "--params-json", err),
        -EINVAL);
    assert_string_equal(err, "--params-json: the string at day contains a NUL character "
                             "(\\u0000), which is not allowed");
    assert_null(p->child);
    assert_int_equal(launch_params_merge(p, "{\"day\": \"a\\\\u0000\"}", "--params-json", err), 0);
    assert_string_equal(cJSON_GetObjectItem(p, "day")->valuestring, "a\\u0000");
    cJSON_Delete(p);
}

static void test_env_extras(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    cJSON *e = cJSON_CreateObject();
    assert_int_equal(launch_env_add(e, "DAGY_LOG_LEVEL=DEBUG", err), 0);
    assert_int_equal(launch_env_add(e, "_X1=a=b", err), 0);
    assert_int_equal(launch_env_add(e, "DAGY_RUN_ID=x", err), -EINVAL);
    assert_non_null(strstr(err, "set by dagy-launch"));
    assert_int_equal(launch_env_add(e, "DAGY_ARTIFACT_S3_URI=s3://x/y", err), -EINVAL);
    assert_int_equal(launch_env_add(e, "1BAD=x", err), -EINVAL);
    assert_int_equal(launch_env_add(e, "BAD-NAME=x", err), -EINVAL);
    assert_int_equal(launch_env_add(e, "NOVALUE", err), -EINVAL);
    assert_int_equal(cJSON_GetArraySize(e), 2);
    cJSON_Delete(e);
}

static launch_opts base_opts(void)
{
    launch_opts o = {.flow = "etl", .org = "acme"};
    o.parameters = cJSON_CreateObject();
    o.env = cJSON_CreateObject();
    return o;
}

static void opts_clear(launch_opts *o)
{
    cJSON_Delete(o->parameters);
    cJSON_Delete(o->env);
}

static void test_request_defaults(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    launch_opts o = base_opts();
    launch_request r;
    assert_int_equal(launch_request_init(&r, &o, NULL, -1, err), 0);
    assert_string_equal(r.flow_version, "latest");
    assert_int_equal(r.cpu, 256);
    assert_int_equal(r.memory, 512);
    assert_int_equal(r.ephemeral_gib, 21);
    assert_int_equal(strlen(r.run_id), 36);
    assert_int_equal(strlen(r.correlation_id), 36);
    assert_null(r.capacity_provider);
    assert_null(r.deployment);
    launch_request_clear(&r);
    o.profile = "heavy";
    o.ephemeral = "200";
    o.run_id = "my-run.1_x";
    o.correlation_id = "req-1";
    o.capacity_provider = "FARGATE_SPOT";
    assert_int_equal(launch_request_init(&r, &o, NULL, -1, err), 0);
    assert_int_equal(r.cpu, 8192);
    assert_int_equal(r.memory, 16384);
    assert_int_equal(r.ephemeral_gib, 200);
    assert_string_equal(r.run_id, "my-run.1_x");
    assert_string_equal(r.correlation_id, "req-1");
    assert_string_equal(r.capacity_provider, "FARGATE_SPOT");
    launch_request_clear(&r);
    opts_clear(&o);
}

/* Each bad option set fails with a message naming the flag. */
static void test_request_errors_name_the_flag(void **state)
{
    (void)state;
    struct {
        const char *profile, *cpu, *mem, *eph, *run_id, *corr, *cap, *flow, *org, *want;
    } cases[] = {
        {NULL, "256", "4096", NULL, NULL, NULL, NULL, "etl", "acme",
         "--cpu 256 with --memory 4096"},
        {NULL, "300", "512", NULL, NULL, NULL, NULL, "etl", "acme", "--cpu 300 is not a Fargate"},
        {NULL, "abc", "512", NULL, NULL, NULL, NULL, "etl", "acme", "--cpu \"abc\""},
        {NULL, "256", NULL, NULL, NULL, NULL, NULL, "etl", "acme", "go together"},
        {"large", "256", "512", NULL, NULL, NULL, NULL, "etl", "acme", "either --profile"},
        {"tiny", NULL, NULL, NULL, NULL, NULL, NULL, "etl", "acme", "--profile \"tiny\""},
        {NULL, NULL, NULL, "20", NULL, NULL, NULL, "etl", "acme", "--ephemeral-storage \"20\""},
        {NULL, NULL, NULL, NULL, "has space", NULL, NULL, "etl", "acme", "run id"},
        {NULL, NULL, NULL, NULL,
         "x12345678901234567890123456789012345678901234567890123456789012345", NULL, NULL, "etl",
         "acme", "longer than 64 characters"},
        {NULL, NULL, NULL, NULL, "..", NULL, NULL, "etl", "acme", "--run-id: invalid run id"},
        {NULL, NULL, NULL, NULL, "a:b", NULL, NULL, "etl", "acme", "--run-id: invalid run id"},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL, "e/tl", "acme", "--flow: invalid flow name"},
        {NULL, NULL, NULL, NULL, NULL, "bad{corr}", NULL, "etl", "acme", "--correlation-id"},
        {NULL, NULL, NULL, NULL, NULL, NULL, "EC2", "etl", "acme", "FARGATE or FARGATE_SPOT"},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "acme", "--flow is required"},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL, "etl", NULL, "--org is required"},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL, "etl", "ac#me", "--org"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[LAUNCH_ERR_MAX] = "";
        launch_opts o = base_opts();
        o.profile = cases[i].profile;
        o.cpu = cases[i].cpu;
        o.memory = cases[i].mem;
        o.ephemeral = cases[i].eph;
        o.run_id = cases[i].run_id;
        o.correlation_id = cases[i].corr;
        o.capacity_provider = cases[i].cap;
        o.flow = cases[i].flow;
        o.org = cases[i].org;
        launch_request r;
        assert_int_equal(launch_request_init(&r, &o, NULL, -1, err), -EINVAL);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].want);
        opts_clear(&o);
    }
}

static void test_batch_item_overrides_and_child_correlation(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    launch_opts o = base_opts();
    o.profile = "medium";
    o.correlation_id = "PARENT";
    o.environment = "dev";
    cJSON_AddStringToObject(o.parameters, "common", "1");
    cJSON_AddStringToObject(o.parameters, "shard", "default");
    cJSON_AddStringToObject(o.env, "A", "cli");
    cJSON *item = cJSON_Parse("{\"flow_name\": \"shard\", \"cpu\": 512, \"memory\": \"2048\","
                              "\"parameters\": {\"shard\": \"3\"}, \"extra_env_vars\": {\"A\": "
                              "\"req\"}, \"ephemeral_storage_gib\": 40, \"metadata\": {\"k\": 1},"
                              "\"environment\": \"prod\", \"run_id\": \"r-3\"}");
    launch_request r;
    assert_int_equal(launch_request_init(&r, &o, item, 3, err), 0);
    assert_string_equal(r.flow_name, "shard");
    assert_string_equal(r.correlation_id, "PARENT:3");
    assert_string_equal(r.environment, "prod");
    assert_string_equal(r.run_id, "r-3");
    assert_int_equal(r.cpu, 512); /* the request's size replaces the --profile */
    assert_int_equal(r.memory, 2048);
    assert_int_equal(r.ephemeral_gib, 40);
    assert_string_equal(cJSON_GetObjectItem(r.parameters, "shard")->valuestring, "3");
    assert_string_equal(cJSON_GetObjectItem(r.parameters, "common")->valuestring, "1");
    assert_string_equal(cJSON_GetObjectItem(r.env, "A")->valuestring, "req");
    assert_non_null(r.metadata);
    launch_request_clear(&r);
    cJSON_Delete(item);
    /* Errors name the request and the field. */
    const char *bad[][2] = {
        {"{\"flow_name\": \"x\", \"typo\": 1}", "request 7: unknown field \"typo\""},
        {"{\"flow_name\": \"x\", \"cpu\": 256, \"memory\": 8192}",
         "request 7: cpu 256 with memory 8192"},
        {"{\"flow_name\": \"x\", \"parameters\": [1]}",
         "request 7: parameters must be a JSON object"},
        {"{\"flow_name\": \"x\", \"extra_env_vars\": {\"DAGY_RUN_ID\": \"x\"}}",
         "set by dagy-launch"},
        {"{\"flow_name\": \"x\", \"extra_env_vars\": {\"A\": 1}}",
         "extra_env_vars.A must be a string"},
        {"{\"flow_name\": 5}", "request 7: flow_name must be a string"},
        {"{\"flow_name\": \"x\", \"workload_profile\": \"big\"}",
         "request 7: workload_profile \"big\""},
        {"{\"flow_name\": \"x\", \"ephemeral_storage_gib\": 500}", "ephemeral_storage_gib \"500\""},
        {"[1]", "request 7: must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *it = cJSON_Parse(bad[i][0]);
        assert_int_equal(launch_request_init(&r, &o, it, 7, err), -EINVAL);
        if (!strstr(err, bad[i][1]))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i][1]);
        cJSON_Delete(it);
    }
    opts_clear(&o);
}

static void config_env(void)
{
    setenv("DAGY_ECS_CLUSTER_ARN", "arn:aws:ecs:us-east-1:1:cluster/dagy", 1);
    setenv("DAGY_ECS_SUBNETS", "subnet-1, subnet-2", 1);
    setenv("DAGY_ECS_SECURITY_GROUPS", "sg-1", 1);
    setenv("DAGY_ECS_WORKER_IMAGE", "img:1", 1);
    setenv("DAGY_ECS_EXECUTION_ROLE_ARN", "arn:exec", 1);
    setenv("DAGY_ECS_TASK_ROLE_ARN", "arn:task", 1);
    setenv("DAGY_ECS_LOG_GROUP", "/ecs/dagy", 1);
    setenv("DAGY_TRACES_BUCKET", "traces", 1);
    unsetenv("DAGY_ECS_TASK_DEFINITION");
    unsetenv("DAGY_ECS_ASSIGN_PUBLIC_IP");
    unsetenv("DAGY_RUNS_TABLE");
    unsetenv("DAGY_TASK_RUNS_TABLE");
}

static void test_config_missing_names_the_variable(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    launch_config c;
    const char *vars[] = {"DAGY_ECS_CLUSTER_ARN",        "DAGY_ECS_SUBNETS",
                          "DAGY_ECS_SECURITY_GROUPS",    "DAGY_ECS_WORKER_IMAGE",
                          "DAGY_ECS_EXECUTION_ROLE_ARN", "DAGY_ECS_TASK_ROLE_ARN",
                          "DAGY_ECS_LOG_GROUP"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        config_env();
        setenv(vars[i], "", 1); /* empty is missing too */
        assert_int_equal(launch_config_from_env(&c, LAUNCH_NEED_RUN, err), -EINVAL);
        char want[128];
        snprintf(want, sizeof want, "missing configuration: %s is not set", vars[i]);
        assert_string_equal(err, want);
    }
    /* With an operator's task definition, image/roles/log group are not needed. */
    config_env();
    unsetenv("DAGY_ECS_WORKER_IMAGE");
    unsetenv("DAGY_ECS_LOG_GROUP");
    setenv("DAGY_ECS_TASK_DEFINITION", "my-family", 1);
    assert_int_equal(launch_config_from_env(&c, LAUNCH_NEED_RUN, err), 0);
    assert_string_equal(c.container_name, "dagy-worker");
    assert_string_equal(c.assign_public_ip, "DISABLED");
    assert_string_equal(c.runs_table, "DAGY_RUNS");
    config_env();
    setenv("DAGY_ECS_SUBNETS", "subnet-1,,subnet-2", 1);
    assert_int_equal(launch_config_from_env(&c, LAUNCH_NEED_RUN, err), -EINVAL);
    assert_non_null(strstr(err, "DAGY_ECS_SUBNETS has an empty item"));
    config_env();
    setenv("DAGY_ECS_ASSIGN_PUBLIC_IP", "yes", 1);
    assert_int_equal(launch_config_from_env(&c, 0, err), -EINVAL);
    assert_non_null(strstr(err, "DAGY_ECS_ASSIGN_PUBLIC_IP"));
    config_env();
    unsetenv("DAGY_ARTIFACT_BUCKET");
    assert_int_equal(launch_config_from_env(&c, LAUNCH_NEED_BUCKET, err), -EINVAL);
    assert_string_equal(err, "missing configuration: DAGY_ARTIFACT_BUCKET is not set");
}

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

static void test_runtask_body(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    config_env();
    setenv("DAGY_RUNS_TABLE", "MY_RUNS", 1);
    launch_config c;
    assert_int_equal(launch_config_from_env(&c, LAUNCH_NEED_RUN, err), 0);
    launch_opts o = base_opts();
    o.run_id = "run-1";
    o.correlation_id = "corr-1";
    o.profile = "large";
    cJSON_AddStringToObject(o.parameters, "date", "2024-03-14");
    cJSON_AddStringToObject(o.env, "DAGY_LOG_LEVEL", "DEBUG");
    launch_request r;
    assert_int_equal(launch_request_init(&r, &o, NULL, -1, err), 0);
    const char *pkgs[] = {"s3://b/p1.zip", "s3://b/p2.tgz#sha256=ab"};
    launch_resolved v = {"1.2.0", "s3://b/flows/etl/1.2.0/artifact.zip#sha256=ff", pkgs, 2, "prod"};
    cJSON *b = launch_runtask_body(&c, "arn:td:1", true, &r, &v);
    assert_string_equal(cJSON_GetObjectItem(b, "launchType")->valuestring, "FARGATE");
    assert_null(cJSON_GetObjectItem(b, "capacityProviderStrategy"));
    assert_string_equal(cJSON_GetObjectItem(b, "clientToken")->valuestring, "run-1");
    assert_string_equal(cJSON_GetObjectItem(b, "startedBy")->valuestring, "dagy-launch");
    const cJSON *vpc =
        cJSON_GetObjectItem(cJSON_GetObjectItem(b, "networkConfiguration"), "awsvpcConfiguration");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(vpc, "subnets")), 2);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(vpc, "subnets"), 1)->valuestring,
                        "subnet-2");
    const cJSON *ov = cJSON_GetObjectItem(b, "overrides");
    assert_string_equal(cJSON_GetObjectItem(ov, "cpu")->valuestring, "2048");
    assert_string_equal(cJSON_GetObjectItem(ov, "memory")->valuestring, "4096");
    assert_null(cJSON_GetObjectItem(ov, "taskRoleArn")); /* managed: roles are in the task def */
    const cJSON *co = cJSON_GetArrayItem(cJSON_GetObjectItem(ov, "containerOverrides"), 0);
    assert_string_equal(cJSON_GetObjectItem(co, "name")->valuestring, "dagy-worker");
    assert_int_equal(cJSON_GetObjectItem(co, "memory")->valueint, 4096);
    const cJSON *env = cJSON_GetObjectItem(co, "environment");
    assert_string_equal(env_value(env, "DAGY_RUN_ID"), "run-1");
    assert_string_equal(env_value(env, "DAGY_FLOW_VERSION"), "1.2.0");
    assert_string_equal(env_value(env, "DAGY_ENVIRONMENT"), "prod");
    assert_string_equal(env_value(env, "DAGY_DEP_PACKAGE_URIS"),
                        "s3://b/p1.zip,s3://b/p2.tgz#sha256=ab");
    assert_string_equal(env_value(env, "DAGY_PARAMETERS"), "{\"date\":\"2024-03-14\"}");
    assert_string_equal(env_value(env, "DAGY_CORRELATION_ID"), "corr-1");
    assert_string_equal(env_value(env, "DAGY_RUNS_TABLE"), "MY_RUNS");
    assert_null(env_value(env, "DAGY_TASK_RUNS_TABLE"));
    assert_string_equal(env_value(env, "DAGY_TRACES_BUCKET"), "traces");
    assert_string_equal(env_value(env, "DAGY_LOG_LEVEL"), "DEBUG");
    const cJSON *tags = cJSON_GetObjectItem(b, "tags");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(tags, 0), "key")->valuestring,
                        "dagy:run_id");
    assert_true(launch_overrides_chars(b) > 200 && launch_overrides_chars(b) < 1000);
    cJSON_Delete(b);
    /* Capacity provider instead of launch type; operator's task definition: roles in overrides,
     * container memory left alone. */
    free(r.capacity_provider);
    r.capacity_provider = strdup("FARGATE_SPOT");
    b = launch_runtask_body(&c, "family", false, &r, &v);
    assert_null(cJSON_GetObjectItem(b, "launchType"));
    const cJSON *cp = cJSON_GetArrayItem(cJSON_GetObjectItem(b, "capacityProviderStrategy"), 0);
    assert_string_equal(cJSON_GetObjectItem(cp, "capacityProvider")->valuestring, "FARGATE_SPOT");
    ov = cJSON_GetObjectItem(b, "overrides");
    assert_string_equal(cJSON_GetObjectItem(ov, "taskRoleArn")->valuestring, "arn:task");
    co = cJSON_GetArrayItem(cJSON_GetObjectItem(ov, "containerOverrides"), 0);
    assert_null(cJSON_GetObjectItem(co, "memory"));
    cJSON_Delete(b);
    /* Oversized parameters are measured. */
    char big[9000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cJSON_AddStringToObject(r.parameters, "big", big);
    b = launch_runtask_body(&c, "family", false, &r, &v);
    assert_true(launch_overrides_chars(b) > LAUNCH_MAX_OVERRIDES_CHARS);
    cJSON_Delete(b);
    launch_request_clear(&r);
    opts_clear(&o);
}

static void test_run_item(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    launch_opts o = base_opts();
    o.run_id = "run-9";
    o.deployment = "prod";
    o.trigger_source = "api";
    o.triggered_by = "me";
    cJSON_AddNumberToObject(o.parameters, "n", 3);
    launch_request r;
    assert_int_equal(launch_request_init(&r, &o, NULL, -1, err), 0);
    launch_resolved v = {"1.0.0", "s3://b/k", NULL, 0, NULL};
    cJSON *it = launch_run_item(&r, &v, "2026-03-14T09:00:00.123Z");
    assert_string_equal(cJSON_GetObjectItem(it, "status")->valuestring, "QUEUED");
    assert_int_equal(cJSON_GetObjectItem(it, "status_seq")->valueint, 0);
    assert_string_equal(cJSON_GetObjectItem(it, "executor")->valuestring, "ecs");
    assert_string_equal(cJSON_GetObjectItem(it, "flow_version")->valuestring, "1.0.0");
    assert_string_equal(cJSON_GetObjectItem(it, "parameters")->valuestring, "{\"n\":3}");
    assert_string_equal(cJSON_GetObjectItem(it, "deployment_name")->valuestring, "prod");
    assert_string_equal(cJSON_GetObjectItem(it, "trigger_source")->valuestring, "api");
    assert_string_equal(cJSON_GetObjectItem(it, "triggered_by")->valuestring, "me");
    assert_string_equal(cJSON_GetObjectItem(it, "created_at")->valuestring,
                        "2026-03-14T09:00:00.123Z");
    assert_null(cJSON_GetObjectItem(it, "environment"));
    assert_null(cJSON_GetObjectItem(it, "external_id"));
    cJSON_Delete(it);
    launch_request_clear(&r);
    opts_clear(&o);
}

static void test_taskdef_body_and_reuse(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    config_env();
    launch_config c;
    assert_int_equal(launch_config_from_env(&c, LAUNCH_NEED_RUN, err), 0);
    cJSON *td = launch_taskdef_body(&c, "eu-west-1");
    assert_string_equal(cJSON_GetObjectItem(td, "family")->valuestring, "dagy-worker");
    assert_string_equal(cJSON_GetObjectItem(td, "networkMode")->valuestring, "awsvpc");
    const cJSON *cd = cJSON_GetArrayItem(cJSON_GetObjectItem(td, "containerDefinitions"), 0);
    assert_int_equal(cJSON_GetObjectItem(cd, "stopTimeout")->valueint, LAUNCH_STOP_TIMEOUT);
    assert_true(LAUNCH_STOP_TIMEOUT > 30 && LAUNCH_STOP_TIMEOUT <= 120); /* Fargate max 120 */
    const cJSON *lo = cJSON_GetObjectItem(cJSON_GetObjectItem(cd, "logConfiguration"), "options");
    assert_string_equal(cJSON_GetObjectItem(lo, "awslogs-group")->valuestring, "/ecs/dagy");
    assert_string_equal(cJSON_GetObjectItem(lo, "awslogs-region")->valuestring, "eu-west-1");
    /* What we register is what we reuse. */
    assert_true(launch_taskdef_matches(&c, "eu-west-1", td));
    assert_false(launch_taskdef_matches(&c, "us-east-1", td));
    c.image = "img:2";
    assert_false(launch_taskdef_matches(&c, "eu-west-1", td));
    c.image = "img:1";
    cJSON_AddStringToObject(td, "status", "INACTIVE");
    assert_false(launch_taskdef_matches(&c, "eu-west-1", td));
    cJSON_Delete(td);
}

static void test_reconcile_verdict(void **state)
{
    (void)state;
    launch_verdict v;
    static const char *const user143 =
        "{\"lastStatus\": \"STOPPED\", \"stopCode\": \"UserInitiated\", \"stoppedReason\": "
        "\"Task stopped by user\", \"containers\": [{\"name\": \"dagy-worker\", \"exitCode\": "
        "143}]}";
    struct {
        const char *task, *cancel, *status, *msg, *stop;
        bool infra;
    } cases[] = {
        {"{\"lastStatus\": \"RUNNING\"}", NULL, NULL, "", "", false},
        {"{\"lastStatus\": \"STOPPED\", \"stopCode\": \"EssentialContainerExited\","
         "\"stoppedReason\": \"Essential container in task exited\","
         "\"containers\": [{\"name\": \"dagy-worker\", \"exitCode\": 0}]}",
         NULL, "SUCCEEDED", "", "EssentialContainerExited: Essential container in task exited",
         false},
        /* StopTask through dagy-launch cancel: CANCELLED with the reason given. */
        {user143, "nightly freeze", "CANCELLED", "Reconciled: Task stopped by user (exit code 143)",
         "UserInitiated: nightly freeze", false},
        {user143, "", "CANCELLED", "Reconciled: Task stopped by user (exit code 143)",
         "UserInitiated: cancel requested", false},
        /* The same stop nobody asked for through cancel: a SIGTERM from elsewhere. */
        {user143, NULL, "FAILED", "Reconciled: Task stopped by user (exit code 143)",
         "UserInitiated: Task stopped by user", true},
        {"{\"lastStatus\": \"STOPPED\", \"stopCode\": \"EssentialContainerExited\", "
         "\"stoppedReason\": \"Essential container in task exited\", \"containers\": "
         "[{\"name\": \"sidecar\", \"exitCode\": 0}, {\"name\": \"dagy-worker\", \"exitCode\": "
         "137, \"reason\": \"OutOfMemoryError\"}]}",
         NULL, "FAILED",
         "Reconciled: Essential container in task exited (exit code 137: OutOfMemoryError)",
         "EssentialContainerExited: Essential container in task exited", true},
        /* A flow's own failure (exit 1) is never the platform's. */
        {"{\"lastStatus\": \"STOPPED\", \"stopCode\": \"EssentialContainerExited\", "
         "\"stoppedReason\": \"Essential container in task exited\", \"containers\": "
         "[{\"name\": \"dagy-worker\", \"exitCode\": 1}]}",
         "too late", "FAILED", "Reconciled: Essential container in task exited (exit code 1)",
         "EssentialContainerExited: Essential container in task exited", false},
        {"{\"lastStatus\": \"STOPPED\", \"stopCode\": \"EssentialContainerExited\", "
         "\"stoppedReason\": \"x\", \"containers\": [{\"name\": \"dagy-worker\", \"exitCode\": "
         "137, \"reason\": \"killed\"}]}",
         NULL, "FAILED", "Reconciled: x (exit code 137: killed)", "EssentialContainerExited: x",
         false},
        {"{\"lastStatus\": \"STOPPED\", \"stopCode\": \"TaskFailedToStart\", \"stoppedReason\": "
         "\"CannotPullContainerError\", \"containers\": [{\"name\": \"dagy-worker\"}]}",
         NULL, "FAILED", "Reconciled: CannotPullContainerError",
         "TaskFailedToStart: CannotPullContainerError", true},
        {"{\"lastStatus\": \"STOPPED\", \"stopCode\": \"SpotInterruption\"}", NULL, "FAILED",
         "Reconciled: ECS task stopped", "SpotInterruption: ECS task stopped", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *t = cJSON_Parse(cases[i].task);
        assert_non_null(t);
        launch_reconcile_verdict(t, "dagy-worker", cases[i].cancel, &v);
        if (!cases[i].status) {
            assert_null(v.status);
        } else {
            assert_non_null(v.status);
            assert_string_equal(v.status, cases[i].status);
            assert_string_equal(v.error_message, cases[i].msg);
            assert_string_equal(v.stop_reason, cases[i].stop);
            assert_int_equal(v.infra, cases[i].infra);
        }
        cJSON_Delete(t);
    }
}

/* Relaunch ids are deterministic and always a valid clientToken. */
static void test_retry_run_id(void **state)
{
    (void)state;
    char a[LAUNCH_MAX_RUN_ID + 1], b[LAUNCH_MAX_RUN_ID + 1];
    launch_retry_run_id("run-1", 1, a);
    assert_string_equal(a, "run-1-infra1");
    char longid[65];
    memset(longid, 'x', 64);
    longid[64] = '\0';
    launch_retry_run_id(longid, 2, a);
    launch_retry_run_id(longid, 2, b);
    assert_string_equal(a, b);
    assert_true(strlen(a) <= LAUNCH_MAX_RUN_ID);
    assert_true(a[0] == 'r' && strstr(a, "-infra2") != NULL);
    launch_retry_run_id(longid, 3, b);
    assert_string_not_equal(a, b);
}

/* A retry repeats the source's launch exactly and names its source. */
static void test_request_from_item(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX];
    cJSON *src = cJSON_Parse(
        "{\"run_id\": \"src-1\", \"flow_name\": \"etl\", \"flow_version\": \"1.2.0\", "
        "\"org_id\": \"acme\", \"environment\": \"prod\", \"correlation_id\": \"corr-9\", "
        "\"parameters\": \"{\\\"d\\\":\\\"x\\\"}\", \"extra_env\": \"{\\\"K\\\":\\\"v\\\"}\", "
        "\"cpu\": 1024, \"memory\": 2048, \"ephemeral_storage_gib\": 30, "
        "\"capacity_provider\": \"FARGATE_SPOT\", \"status\": \"FAILED\"}");
    assert_non_null(src);
    launch_retry_opts ro = {.trigger_source = "retry", .infra_retries = 1};
    launch_request r;
    assert_int_equal(launch_request_from_item(&r, src, &ro, err), 0);
    assert_string_equal(r.flow_version, "1.2.0");
    assert_string_equal(r.correlation_id, "corr-9");
    assert_string_equal(r.retry_of, "src-1");
    assert_string_equal(r.resume_from, "src-1");
    assert_string_equal(r.capacity_provider, "FARGATE_SPOT");
    assert_int_equal(r.cpu, 1024);
    assert_int_equal(r.ephemeral_gib, 30);
    assert_string_equal(cJSON_GetObjectItem(r.parameters, "d")->valuestring, "x");
    assert_string_equal(cJSON_GetObjectItem(r.env, "K")->valuestring, "v");
    const char *pk[] = {"s3://b/p.zip"};
    launch_resolved v = {"1.2.0", "s3://b/a.zip#sha256=ff", pk, 1, "prod"};
    launch_config c;
    config_env();
    assert_int_equal(launch_config_from_env(&c, LAUNCH_NEED_RUN, err), 0);
    cJSON *env = launch_container_env(&c, &r, &v);
    assert_string_equal(env_value(env, "DAGY_RESUME_FROM"), "src-1");
    assert_string_equal(env_value(env, "DAGY_CAPACITY_PROVIDER"), "FARGATE_SPOT");
    /* What the agent's ECS executor needs and task metadata lacks; managed definition: no
     * role overrides, defaults not repeated. */
    assert_string_equal(env_value(env, "DAGY_ECS_SUBNETS"), "subnet-1, subnet-2");
    assert_string_equal(env_value(env, "DAGY_ECS_SECURITY_GROUPS"), "sg-1");
    assert_null(env_value(env, "DAGY_ECS_ASSIGN_PUBLIC_IP"));
    assert_null(env_value(env, "DAGY_ECS_CONTAINER_NAME"));
    assert_null(env_value(env, "DAGY_ECS_TASK_ROLE_ARN"));
    cJSON_Delete(env);
    launch_request_clear(&r);
    ro.all = true;
    assert_int_equal(launch_request_from_item(&r, src, &ro, err), 0);
    assert_null(r.resume_from);
    env = launch_container_env(&c, &r, &v);
    assert_null(env_value(env, "DAGY_RESUME_FROM"));
    cJSON_Delete(env);
    launch_request_clear(&r);
    cJSON_DeleteItemFromObject(src, "org_id");
    assert_int_equal(launch_request_from_item(&r, src, &ro, err), -EINVAL);
    assert_non_null(strstr(err, "org_id"));
    cJSON_Delete(src);
}

static void test_uuid(void **state)
{
    (void)state;
    char a[40], b[40];
    launch_uuid4(a);
    launch_uuid4(b);
    assert_int_equal(strlen(a), 36);
    assert_true(a[14] == '4');
    assert_true(strchr("89ab", a[19]) != NULL);
    assert_string_not_equal(a, b);
}

/* The fingerprint tells the same launch (any key order, a generated correlation id, another
 * operator) from a different one (a parameter, the size, the resolved version). */
static void test_request_fingerprint(void **state)
{
    (void)state;
    char err[LAUNCH_ERR_MAX], h1[65], h2[65];
    launch_resolved v = {"1.0.0", "s3://b/k#sha256=ff", NULL, 0, NULL};
    launch_request a, b;
    launch_opts o = base_opts();
    o.run_id = "fp-1";
    cJSON_AddStringToObject(o.parameters, "x", "1");
    cJSON_AddStringToObject(o.parameters, "y", "2");
    assert_int_equal(launch_request_init(&a, &o, NULL, -1, err), 0);
    opts_clear(&o);
    o = base_opts();
    o.run_id = "fp-1";
    o.triggered_by = "someone-else";
    cJSON_AddStringToObject(o.parameters, "y", "2");
    cJSON_AddStringToObject(o.parameters, "x", "1");
    assert_int_equal(launch_request_init(&b, &o, NULL, -1, err), 0);
    assert_string_not_equal(a.correlation_id, b.correlation_id); /* both generated */
    launch_request_sha256(&a, &v, h1);
    launch_request_sha256(&b, &v, h2);
    assert_int_equal(strlen(h1), 64);
    assert_string_equal(h1, h2);
    cJSON *it = launch_run_item(&a, &v, "2026-03-14T09:00:00.123Z");
    assert_string_equal(cJSON_GetObjectItem(it, "launch_request_sha256")->valuestring, h1);
    assert_string_equal(cJSON_GetObjectItem(it, LAUNCH_ACTIVE_ATTR)->valuestring, "1");
    assert_string_equal(cJSON_GetObjectItem(it, "artifact_s3_uri")->valuestring, v.artifact_uri);
    assert_int_equal(cJSON_GetObjectItem(it, "cpu")->valueint, 256);
    cJSON_Delete(it);
    cJSON_ReplaceItemInObject(b.parameters, "x", cJSON_CreateString("3"));
    launch_request_sha256(&b, &v, h2);
    assert_string_not_equal(h1, h2);
    cJSON_ReplaceItemInObject(b.parameters, "x", cJSON_CreateString("1"));
    b.memory = 1024;
    launch_request_sha256(&b, &v, h2);
    assert_string_not_equal(h1, h2);
    b.memory = a.memory;
    launch_resolved v2 = {"1.1.0", "s3://b/k#sha256=ff", NULL, 0, NULL};
    launch_request_sha256(&b, &v2, h2);
    assert_string_not_equal(h1, h2);
    b.correlation_given = true; /* a given correlation id is part of the request */
    launch_request_sha256(&b, &v, h2);
    assert_string_not_equal(h1, h2);
    launch_request_clear(&a);
    launch_request_clear(&b);
    opts_clear(&o);
}

/* On a terminal nothing stored can send an escape sequence; text and UTF-8 pass unchanged. */
static void test_tty_write_escapes_controls(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    bool c2 = false;
    const char a[] = "ok \xc3\xa9\x1b[31mred\x7f\xc2";
    const char b[] = "\x9b"
                     "2J \xc2\xa9\n\tend";
    launch__tty_write(a, sizeof a - 1, f, &c2);
    assert_true(c2); /* a 0xC2 split across two writes */
    launch__tty_write(b, sizeof b - 1, f, &c2);
    assert_false(c2);
    fclose(f);
    assert_string_equal(buf, "ok \xc3\xa9\\u001b[31mred\\u007f\\u009b2J \xc2\xa9\n\tend");
    free(buf);
}

static void test_tag_values(void **state)
{
    (void)state;
    assert_true(launch_tag_value_valid("batch-req-1:0", 256));
    assert_true(launch_tag_value_valid("a b+c=d.e_f:g/h@i", 256));
    assert_false(launch_tag_value_valid("", 256));
    assert_false(launch_tag_value_valid("a{b}", 256));
    assert_false(launch_tag_value_valid("abcdef", 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fargate_table),
        cmocka_unit_test(test_profiles_are_valid_fargate_sizes),
        cmocka_unit_test(test_semver_order),
        cmocka_unit_test(test_semver_validity),
        cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_params_with_nul_escapes_are_refused),
        cmocka_unit_test(test_env_extras),
        cmocka_unit_test(test_request_defaults),
        cmocka_unit_test(test_request_errors_name_the_flag),
        cmocka_unit_test(test_batch_item_overrides_and_child_correlation),
        cmocka_unit_test(test_config_missing_names_the_variable),
        cmocka_unit_test(test_runtask_body),
        cmocka_unit_test(test_run_item),
        cmocka_unit_test(test_taskdef_body_and_reuse),
        cmocka_unit_test(test_reconcile_verdict),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_tag_values),
        cmocka_unit_test(test_tty_write_escapes_controls),
        cmocka_unit_test(test_request_fingerprint),
        cmocka_unit_test(test_retry_run_id),
        cmocka_unit_test(test_request_from_item),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
