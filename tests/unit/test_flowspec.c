/* test_flowspec.c - flow_spec.json parsing and validation: every error message, defaults,
 * upstream resolution, cycles, limits, DOT output and the speed of large specs. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include "proto/flowspec.h"

/* Specs are written with single quotes to keep them readable; q() turns them into JSON. */
static char *q(const char *s)
{
    char *out = strdup(s);
    for (char *p = out; *p; p++)
        if (*p == '\'')
            *p = '"';
    return out;
}

#define SPEC(tasks) "{'spec_version': 1, 'name': 'flow', 'tasks': [" tasks "]}"
#define CMD         "'command': ['true']"

static void expect_error(const char *spec_sq, const char *want_sq)
{
    char *json = q(spec_sq), *want = q(want_sq);
    char err[FLOWSPEC_ERR_MAX] = "";
    flowspec *s = (flowspec *)0x1;
    int rc = flowspec_parse(json, strlen(json), &s, err);
    if (rc != -EINVAL || strcmp(err, want) != 0)
        fail_msg("spec: %s\nwant: %s\ngot:  %s (rc %d)", json, want, err, rc);
    assert_null(s);
    free(json);
    free(want);
}

static flowspec *parse_ok(const char *spec_sq)
{
    char *json = q(spec_sq);
    char err[FLOWSPEC_ERR_MAX] = "";
    flowspec *s = NULL;
    int rc = flowspec_parse(json, strlen(json), &s, err);
    if (rc != 0)
        fail_msg("spec: %s\nunexpected error: %s", json, err);
    free(json);
    return s;
}

static void test_minimal_spec_gets_builtin_defaults(void **state)
{
    flowspec *s = parse_ok(SPEC("{'name': 'only', " CMD "}"));
    assert_int_equal(s->spec_version, 1);
    assert_string_equal(s->name, "flow");
    assert_string_equal(s->version, "");
    assert_null(s->description);
    assert_int_equal(s->max_parallel, 0);
    assert_int_equal(s->n_tasks, 1);
    flowspec_task *t = &s->tasks[0];
    assert_string_equal(t->name, "only");
    assert_ptr_equal(t->def.name, t->name);
    assert_int_equal(t->command_len, 1);
    assert_string_equal(t->command[0], "true");
    assert_null(t->command[1]);
    assert_null(t->callable);
    assert_null(t->kwargs);
    assert_null(t->env);
    assert_int_equal(t->n_upstream, 0);
    assert_int_equal(t->def.trigger, SCHED_ALL_SUCCESS);
    assert_int_equal(t->def.retries, 0);
    assert_true(t->def.retry_delay_seconds == 5);
    assert_true(t->def.retry_backoff == 2.0);
    assert_true(t->def.retry_max_delay_seconds == 300);
    assert_true(t->def.retry_jitter);
    assert_true(t->def.timeout_seconds == 0);
    flowspec_free(s);
}

/* The example of contract section 2, verbatim. */
static const char contract_example[] =
    "{'spec_version': 1, 'name': 'etl_pipeline', 'version': '1.0.0', 'max_parallel': 4,"
    " 'defaults': {'retries': 0, 'retry_delay_seconds': 5, 'retry_backoff': 2.0,"
    "   'retry_max_delay_seconds': 300, 'retry_jitter': true, 'timeout_seconds': 3600},"
    " 'tasks': ["
    "  {'name': 'extract',"
    "   'command': ['sh', '-c', 'fetch-data --date {{ parameters.date }} > raw.csv'],"
    "   'env': {'SOURCE': '{{ parameters.source }}'},"
    "   'retries': 3, 'retry_delay_seconds': 5, 'timeout_seconds': 600},"
    "  {'name': 'transform', 'callable': 'flows.etl_pipeline:transform',"
    "   'kwargs': {'data': {'upstream': 'extract'}, 'mode': '{{ parameters.mode }}'},"
    "   'upstream': ['extract']},"
    "  {'name': 'cleanup', 'command': ['rm', '-f', 'raw.csv'], 'upstream': ['transform'],"
    "   'trigger_rule': 'all_done'}]}";

static void test_contract_example_parses(void **state)
{
    flowspec *s = parse_ok(contract_example);
    assert_string_equal(s->name, "etl_pipeline");
    assert_string_equal(s->version, "1.0.0");
    assert_int_equal(s->max_parallel, 4);
    assert_int_equal(s->n_tasks, 3);
    flowspec_task *ex = &s->tasks[0], *tr = &s->tasks[1], *cl = &s->tasks[2];
    assert_int_equal(ex->command_len, 3);
    assert_string_equal(ex->command[2], "fetch-data --date {{ parameters.date }} > raw.csv");
    assert_int_equal(ex->env_len, 1);
    assert_string_equal(ex->env[0], "SOURCE={{ parameters.source }}");
    assert_null(ex->env[1]);
    assert_int_equal(ex->def.retries, 3);
    assert_true(ex->def.timeout_seconds == 600);
    assert_string_equal(tr->callable, "flows.etl_pipeline:transform");
    assert_null(tr->command);
    assert_true(cJSON_IsObject(tr->kwargs));
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(tr->kwargs, "data"), "upstream")->valuestring,
        "extract");
    assert_int_equal(tr->n_upstream, 1);
    assert_int_equal(tr->upstream[0], 0);
    assert_ptr_equal(tr->def.upstream, tr->upstream);
    assert_int_equal(tr->def.n_upstream, 1);
    assert_true(tr->def.timeout_seconds == 3600);
    assert_int_equal(cl->def.trigger, SCHED_ALL_DONE);
    assert_int_equal(cl->upstream[0], 1);
    assert_int_equal(flowspec_find(s, "cleanup"), 2);
    assert_int_equal(flowspec_find(s, "nope"), -1);
    flowspec_free(s);
}

static void test_task_values_override_defaults(void **state)
{
    flowspec *s = parse_ok("{'spec_version': 1, 'name': 'f', 'description': 'd',"
                           " 'defaults': {'retries': 2, 'retry_delay_seconds': 1.5,"
                           "  'retry_backoff': 3, 'retry_max_delay_seconds': 60,"
                           "  'retry_jitter': false, 'timeout_seconds': 10},"
                           " 'tasks': [{'name': 'a', " CMD "},"
                           "  {'name': 'b', " CMD ", 'retries': 5, 'retry_delay_seconds': 0,"
                           "   'retry_backoff': 1, 'retry_max_delay_seconds': 0,"
                           "   'retry_jitter': true, 'timeout_seconds': 0.5,"
                           "   'trigger_rule': 'none_failed', 'description': 'task b'}]}");
    sched_task_def *a = &s->tasks[0].def, *b = &s->tasks[1].def;
    assert_string_equal(s->description, "d");
    assert_int_equal(a->retries, 2);
    assert_true(a->retry_delay_seconds == 1.5);
    assert_true(a->retry_backoff == 3);
    assert_true(a->retry_max_delay_seconds == 60);
    assert_false(a->retry_jitter);
    assert_true(a->timeout_seconds == 10);
    assert_int_equal(b->retries, 5);
    assert_true(b->retry_delay_seconds == 0);
    assert_true(b->retry_backoff == 1);
    assert_true(b->retry_max_delay_seconds == 0);
    assert_true(b->retry_jitter);
    assert_true(b->timeout_seconds == 0.5);
    assert_int_equal(b->trigger, SCHED_NONE_FAILED);
    assert_string_equal(s->tasks[1].description, "task b");
    flowspec_free(s);
}

static void test_unknown_fields_are_rejected_everywhere(void **state)
{
    expect_error("{'spec_version': 1, 'name': 'f', 'taks': [], 'tasks': [{'name': 'a', " CMD "}]}",
                 "unknown field 'taks' (allowed: spec_version, name, version, description, "
                 "max_parallel, defaults, tasks)");
    expect_error("{'spec_version': 1, 'name': 'f', 'defaults': {'retry': 1}, 'tasks': [{'name': "
                 "'a', " CMD "}]}",
                 "defaults: unknown field 'retry' (allowed: retries, retry_delay_seconds, "
                 "retry_backoff, retry_max_delay_seconds, retry_jitter, timeout_seconds)");
    expect_error(SPEC("{'name': 'x', " CMD ", 'upstreams': []}"),
                 "task 'x': unknown field 'upstreams' (allowed: name, description, command, "
                 "callable, kwargs, env, upstream, trigger_rule, executor, map, retries, "
                 "retry_delay_seconds, "
                 "retry_backoff, retry_max_delay_seconds, retry_jitter, timeout_seconds)");
}

static void test_repeated_json_keys_are_rejected(void **state)
{
    expect_error("{'spec_version': 1, 'name': 'f', 'name': 'g', 'tasks': [{'name': 'a', " CMD "}]}",
                 "field 'name' appears twice");
    expect_error(SPEC("{'name': 'x', " CMD ", 'retries': 1, 'retries': 2}"),
                 "task 'x': field 'retries' appears twice");
    expect_error("{'spec_version': 1, 'name': 'f', 'defaults': {'retries': 1, 'retries': 1},"
                 " 'tasks': [{'name': 'a', " CMD "}]}",
                 "defaults: field 'retries' appears twice");
    expect_error(SPEC("{'name': 'x', " CMD ", 'env': {'A': '1', 'A': '2'}}"),
                 "task 'x': env 'A' is set twice");
}

static void test_top_level_errors(void **state)
{
    expect_error("[]", "the spec must be a JSON object");
    expect_error("{'name': 'f', 'tasks': []}", "missing required field 'spec_version'");
    expect_error("{'spec_version': '1', 'name': 'f'}", "field 'spec_version': must be an integer");
    expect_error("{'spec_version': 1.5, 'name': 'f'}", "field 'spec_version': must be an integer");
    /* The version is checked before anything else: a newer spec may have new fields. */
    expect_error("{'spec_version': 2, 'name': 'f', 'new_field': 1}",
                 "field 'spec_version': unsupported version 2 (this dagy reads spec_version 1)");
    expect_error("{'spec_version': 1, 'tasks': []}", "missing required field 'name'");
    expect_error("{'spec_version': 1, 'name': 'my flow', 'tasks': []}",
                 "field 'name': invalid flow name 'my flow': may contain only letters, digits and "
                 "_ . -");
    expect_error("{'spec_version': 1, 'name': '..', 'tasks': []}",
                 "field 'name': invalid flow name '..': may not be '.' or '..'");
    expect_error("{'spec_version': 1, 'name': 7, 'tasks': []}", "field 'name': must be a string");
    expect_error("{'spec_version': 1, 'name': 'f', 'version': 1, 'tasks': []}",
                 "field 'version': must be a string");
    expect_error("{'spec_version': 1, 'name': 'f', 'description': [], 'tasks': []}",
                 "field 'description': must be a string");
    const char *bad_parallel[] = {"0", "-1", "1.5", "'4'", "true", "null"};
    for (size_t i = 0; i < sizeof(bad_parallel) / sizeof(*bad_parallel); i++) {
        char spec[200];
        snprintf(spec, sizeof(spec), "{'spec_version': 1, 'name': 'f', 'max_parallel': %s}",
                 bad_parallel[i]);
        expect_error(spec, "field 'max_parallel': must be an integer >= 1");
    }
    expect_error("{'spec_version': 1, 'name': 'f'}", "missing required field 'tasks'");
    expect_error("{'spec_version': 1, 'name': 'f', 'tasks': []}",
                 "field 'tasks': must be a non-empty array");
    expect_error("{'spec_version': 1, 'name': 'f', 'tasks': {}}",
                 "field 'tasks': must be a non-empty array");
    expect_error("{'spec_version': 1, 'name': 'f', 'defaults': [], 'tasks': [{'name': 'a', " CMD
                 "}]}",
                 "field 'defaults': must be an object");
}

/* Each scheduling field with a bad value, in "defaults" and in a task. */
static void test_scheduling_field_errors(void **state)
{
    static const struct {
        const char *field, *value, *why;
    } cases[] = {
        {"retries", "101", "must be an integer between 0 and 100"},
        {"retries", "-1", "must be an integer between 0 and 100"},
        {"retries", "1.5", "must be an integer between 0 and 100"},
        {"retries", "'3'", "must be an integer between 0 and 100"},
        {"retry_delay_seconds", "-1", "must be a number of seconds >= 0 (at most 1e9)"},
        {"retry_delay_seconds", "'5'", "must be a number of seconds >= 0 (at most 1e9)"},
        {"retry_delay_seconds", "1e10", "must be a number of seconds >= 0 (at most 1e9)"},
        {"retry_backoff", "0.5", "must be a number >= 1"},
        {"retry_backoff", "1e999", "must be a number >= 1"},
        {"retry_max_delay_seconds", "-0.1", "must be a number of seconds >= 0 (at most 1e9)"},
        {"retry_jitter", "'yes'", "must be true or false"},
        {"retry_jitter", "1", "must be true or false"},
        {"timeout_seconds", "0", "must be a number of seconds > 0 (at most 1e9)"},
        {"timeout_seconds", "-5", "must be a number of seconds > 0 (at most 1e9)"},
        {"timeout_seconds", "null", "must be a number of seconds > 0 (at most 1e9)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        char spec[300], want[200];
        snprintf(spec, sizeof(spec), SPEC("{'name': 'x', " CMD ", '%s': %s}"), cases[i].field,
                 cases[i].value);
        snprintf(want, sizeof(want), "task 'x': field '%s': %s", cases[i].field, cases[i].why);
        expect_error(spec, want);
        snprintf(spec, sizeof(spec),
                 "{'spec_version': 1, 'name': 'f', 'defaults': {'%s': %s}, 'tasks': [{'name': "
                 "'x', " CMD "}]}",
                 cases[i].field, cases[i].value);
        snprintf(want, sizeof(want), "defaults: field '%s': %s", cases[i].field, cases[i].why);
        expect_error(spec, want);
    }
}

static void test_task_name_errors_name_the_position(void **state)
{
    expect_error(SPEC("{'name': 'a', " CMD "}, 7"), "task #2: must be an object");
    expect_error(SPEC("{'name': 'a', " CMD "}, {" CMD "}"),
                 "task #2: missing required field 'name'");
    expect_error(SPEC("{'name': 'a', " CMD "}, {'name': 'b', " CMD "}, {'name': 3, " CMD "}"),
                 "task #3: field 'name': must be a string");
    expect_error(SPEC("{'name': 'a', " CMD "}, {'name': 'b', " CMD "}, {'name': 'x y', " CMD "}"),
                 "task #3: field 'name': invalid task name 'x y': may contain only letters, "
                 "digits and _ . -");
    expect_error(SPEC("{'name': '', " CMD "}"),
                 "task #1: field 'name': invalid task name '': is empty");
    expect_error(SPEC("{'name': '.', " CMD "}"),
                 "task #1: field 'name': invalid task name '.': may not be '.' or '..'");
    expect_error(SPEC("{'name': 'a', " CMD "}, {'name': '..', " CMD "}"),
                 "task #2: field 'name': invalid task name '..': may not be '.' or '..'");
    char long_name[130], spec[400], want[300];
    memset(long_name, 'n', 129);
    long_name[129] = '\0';
    snprintf(spec, sizeof(spec), SPEC("{'name': '%s', " CMD "}"), long_name);
    snprintf(want, sizeof(want),
             "task #1: field 'name': invalid task name '%.64s...': is longer than 128 characters",
             long_name);
    expect_error(spec, want);
    long_name[128] = '\0';
    snprintf(spec, sizeof(spec), SPEC("{'name': '%s', " CMD "}"), long_name);
    flowspec_free(parse_ok(spec));
    flowspec *s = parse_ok(SPEC("{'name': 'A-z_0.9', " CMD "}"));
    assert_string_equal(s->tasks[0].name, "A-z_0.9");
    flowspec_free(s);
}

static void test_duplicate_task_names(void **state)
{
    expect_error(SPEC("{'name': 'x', " CMD "}, {'name': 'y', " CMD "}, {'name': 'z', " CMD
                      "}, {'name': 'x', " CMD "}"),
                 "duplicate task name 'x' (tasks #1 and #4)");
}

static void test_command_and_callable_errors(void **state)
{
    expect_error(SPEC("{'name': 'x'}"), "task 'x': must have exactly one of 'command' or "
                                        "'callable'");
    expect_error(SPEC("{'name': 'x', " CMD ", 'callable': 'm:f'}"),
                 "task 'x': must have exactly one of 'command' or 'callable'");
    expect_error(SPEC("{'name': 'x', 'command': []}"),
                 "task 'x': field 'command': must be a non-empty array of strings");
    expect_error(SPEC("{'name': 'x', 'command': 'ls -l'}"),
                 "task 'x': field 'command': must be a non-empty array of strings");
    expect_error(SPEC("{'name': 'x', 'command': ['ls', 1]}"),
                 "task 'x': command[1]: must be a string");
    expect_error(SPEC("{'name': 'x', 'command': ['', 'a']}"),
                 "task 'x': command[0]: the program name must not be empty");
    expect_error(SPEC("{'name': 'x', " CMD ", 'kwargs': {}}"),
                 "task 'x': field 'kwargs' is only allowed with 'callable'");
    expect_error(SPEC("{'name': 'x', 'callable': 'm:f', 'kwargs': []}"),
                 "task 'x': field 'kwargs': must be an object");
    const char *bad[] = {"'m'",    "'m:'",    "':f'",   "'m.:f'", "'.m:f'", "'m:f.g'",
                         "'1m:f'", "'m:f g'", "'m::f'", "'m:f:'", "3",      "'m-x:f'"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        char spec[200];
        snprintf(spec, sizeof(spec), SPEC("{'name': 'x', 'callable': %s}"), bad[i]);
        expect_error(spec, "task 'x': field 'callable': must be 'module.path:function' (dotted "
                           "Python identifiers, a colon, an identifier)");
    }
    flowspec *s = parse_ok(SPEC("{'name': 'x', 'callable': '_pkg.mod_2.sub:run_it'}"));
    assert_string_equal(s->tasks[0].callable, "_pkg.mod_2.sub:run_it");
    assert_null(s->tasks[0].kwargs);
    flowspec_free(s);
}

static void test_env_errors(void **state)
{
    expect_error(SPEC("{'name': 'x', " CMD ", 'env': ['A=1']}"),
                 "task 'x': field 'env': must be an object of strings");
    expect_error(SPEC("{'name': 'x', " CMD ", 'env': {'1A': 'v'}}"),
                 "task 'x': env '1A': invalid variable name (must match [A-Za-z_][A-Za-z0-9_]*)");
    expect_error(SPEC("{'name': 'x', " CMD ", 'env': {'A-B': 'v'}}"),
                 "task 'x': env 'A-B': invalid variable name (must match [A-Za-z_][A-Za-z0-9_]*)");
    expect_error(SPEC("{'name': 'x', " CMD ", 'env': {'': 'v'}}"),
                 "task 'x': env '': invalid variable name (must match [A-Za-z_][A-Za-z0-9_]*)");
    expect_error(SPEC("{'name': 'x', " CMD ", 'env': {'DAGY_RUN_ID': 'v'}}"),
                 "task 'x': env 'DAGY_RUN_ID': names starting with DAGY_ are reserved");
    expect_error(SPEC("{'name': 'x', " CMD ", 'env': {'N': 5}}"),
                 "task 'x': env 'N': value must be a string");
    flowspec *s = parse_ok(SPEC("{'name': 'x', " CMD ", 'env': {'_A1': 'x=y', 'dagy_ok': ''}}"));
    assert_int_equal(s->tasks[0].env_len, 2);
    assert_string_equal(s->tasks[0].env[0], "_A1=x=y");
    assert_string_equal(s->tasks[0].env[1], "dagy_ok=");
    flowspec_free(s);
}

/* "executor": the size rule of `dagy-launch run` (proto/fargate.h), one message per mistake. */
static void test_executor_field(void **state)
{
    (void)state;
    flowspec *s = parse_ok(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', 'profile': "
                                "'xlarge', 'ephemeral_storage_gib': 50, 'capacity_provider': "
                                "'FARGATE_SPOT'}}, {'name': 'y', " CMD
                                ", 'executor': {'type': 'local'}}, {'name': 'z', " CMD
                                ", 'executor': {'type': 'ecs', 'cpu': 512, 'memory': 3072}}"));
    const flowspec_executor *e = s->tasks[0].executor;
    assert_non_null(e);
    assert_int_equal(e->cpu, 4096);
    assert_int_equal(e->memory, 8192);
    assert_int_equal(e->ephemeral_gib, 50);
    assert_string_equal(e->capacity_provider, "FARGATE_SPOT");
    assert_null(s->tasks[1].executor);
    assert_int_equal(s->tasks[2].executor->cpu, 512);
    assert_int_equal(s->tasks[2].executor->memory, 3072);
    assert_null(s->tasks[2].executor->capacity_provider);
    flowspec_free(s);
    s = parse_ok(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs'}}"));
    assert_int_equal(s->tasks[0].executor->cpu, 0); /* the task definition's size */
    flowspec_free(s);
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': 'ecs'}"),
                 "task 'x': field 'executor': must be an object such as {'type': 'ecs', "
                 "'profile': 'xlarge'}");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'lambda'}}"),
                 "task 'x': field 'executor': 'type' must be 'ecs' or 'local'");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', 'profle': 'max'}}"),
                 "task 'x': field 'executor': unknown field 'profle' (allowed: type, profile, "
                 "cpu, memory, ephemeral_storage_gib, capacity_provider)");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', 'profile': 'huge'}}"),
                 "task 'x': field 'executor': profile 'huge' is unknown (small, medium, large, "
                 "xlarge, heavy, max)");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', 'profile': 'max', "
                      "'cpu': 256, 'memory': 512}}"),
                 "task 'x': field 'executor': give either 'profile' or 'cpu'/'memory', not both");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', 'cpu': 256}}"),
                 "task 'x': field 'executor': 'cpu' and 'memory' go together");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', 'cpu': 300, "
                      "'memory': 512}}"),
                 "task 'x': field 'executor': cpu must be a Fargate CPU size (256, 512, 1024, "
                 "2048, 4096, 8192, 16384)");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', 'cpu': 256, "
                      "'memory': 8192}}"),
                 "task 'x': field 'executor': cpu 256 with memory 8192 is not a valid Fargate "
                 "size: CPU 256 takes memory 512, 1024 or 2048");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', "
                      "'ephemeral_storage_gib': 20}}"),
                 "task 'x': field 'executor': ephemeral_storage_gib must be an integer of 21-200 "
                 "GiB");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', "
                      "'capacity_provider': 'EC2'}}"),
                 "task 'x': field 'executor': capacity_provider must be FARGATE or FARGATE_SPOT");
    expect_error(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'local', 'cpu': 256, "
                      "'memory': 512}}"),
                 "task 'x': field 'executor': a 'local' executor takes no size or capacity "
                 "provider");
}

static void test_upstream_and_trigger_errors(void **state)
{
    expect_error(
        SPEC("{'name': 'transform', " CMD "}, {'name': 'load', " CMD ", 'upstream': ['trnsform']}"),
        "task 'load': upstream 'trnsform' does not exist");
    expect_error(SPEC("{'name': 'x', " CMD ", 'upstream': ['x']}"),
                 "task 'x': upstream 'x': a task cannot depend on itself");
    expect_error(SPEC("{'name': 'a', " CMD "}, {'name': 'x', " CMD ", 'upstream': ['a', 'a']}"),
                 "task 'x': upstream 'a' is listed twice");
    expect_error(SPEC("{'name': 'x', " CMD ", 'upstream': 'a'}"),
                 "task 'x': field 'upstream': must be an array of task names");
    expect_error(SPEC("{'name': 'x', " CMD ", 'upstream': ['a', null]}"),
                 "task 'x': upstream[1]: must be a task name (a string)");
    expect_error(SPEC("{'name': 'x', " CMD ", 'trigger_rule': 'any'}"),
                 "task 'x': field 'trigger_rule': must be one of all_success, all_done, "
                 "one_failed, none_failed");
    expect_error(SPEC("{'name': 'x', " CMD ", 'trigger_rule': 1}"),
                 "task 'x': field 'trigger_rule': must be one of all_success, all_done, "
                 "one_failed, none_failed");
    flowspec *s = parse_ok(SPEC("{'name': 'a', " CMD ", 'upstream': [], 'trigger_rule': "
                                "'one_failed'}, {'name': 'b', " CMD ", 'upstream': ['a'],"
                                " 'trigger_rule': 'all_success'}"));
    assert_int_equal(s->tasks[0].n_upstream, 0);
    assert_int_equal(s->tasks[0].def.trigger, SCHED_ONE_FAILED);
    assert_int_equal(s->tasks[1].def.trigger, SCHED_ALL_SUCCESS);
    flowspec_free(s);
}

static void test_cycles_print_the_path(void **state)
{
    /* b runs after a, c after b, a after c. */
    expect_error(SPEC("{'name': 'a', " CMD ", 'upstream': ['c']},"
                      "{'name': 'b', " CMD ", 'upstream': ['a']},"
                      "{'name': 'c', " CMD ", 'upstream': ['b']}"),
                 "cycle: a -> b -> c -> a");
    expect_error(SPEC("{'name': 'x', " CMD ", 'upstream': ['y']},"
                      "{'name': 'y', " CMD ", 'upstream': ['x']}"),
                 "cycle: x -> y -> x");
    /* The cycle is reported without the tasks that merely lead into it. */
    expect_error(SPEC("{'name': 'start', " CMD ", 'upstream': ['p']},"
                      "{'name': 'p', " CMD ", 'upstream': ['q', 'r']},"
                      "{'name': 'q', " CMD "},"
                      "{'name': 'r', " CMD ", 'upstream': ['s']},"
                      "{'name': 's', " CMD ", 'upstream': ['p']}"),
                 "cycle: p -> s -> r -> p");
}

static void test_kwargs_upstream_references(void **state)
{
    expect_error(SPEC("{'name': 'a', " CMD "}, {'name': 'b', 'callable': 'm:f', "
                      "'kwargs': {'data': {'upstream': 'a'}}}"),
                 "task 'b': kwargs.data: {'upstream': 'a'} names a task that is not listed in "
                 "'upstream'");
    expect_error(SPEC("{'name': 'a', " CMD "}, {'name': 'b', 'callable': 'm:f', 'upstream': "
                      "['a'], 'kwargs': {'l': [{'upstream': 'zz'}]}}"),
                 "task 'b': kwargs.l[0]: {'upstream': 'zz'} names a task that is not listed in "
                 "'upstream'");
    /* As in the runner: kwargs itself is never a reference (a parameter may be named
     * "upstream"), only the values inside it. */
    flowspec *top =
        parse_ok(SPEC("{'name': 'b', 'callable': 'm:f', 'kwargs': {'upstream': 'zz'}}"));
    flowspec_free(top);
    /* Objects with more members, or a non-string "upstream", are ordinary values. */
    flowspec *s =
        parse_ok(SPEC("{'name': 'a', " CMD "}, {'name': 'b', 'callable': 'm:f', "
                      "'upstream': ['a'], 'kwargs': {'upstream': 'zz', "
                      "'x': {'upstream': 'zz', 'other': 1}, 'y': {'upstream': 'a'}}}, "
                      "{'name': 'c', 'callable': 'm:f', 'kwargs': {'k': {'upstream': 1}}}"));
    assert_int_equal(cJSON_GetArraySize(s->tasks[1].kwargs), 3);
    flowspec_free(s);
}

static void test_invalid_json_reports_line_and_column(void **state)
{
    char err[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;
    const char *bad = "{\n  \"spec_version\": 1\n  \"name\": \"f\"\n}";
    assert_int_equal(flowspec_parse(bad, strlen(bad), &s, err), -EINVAL);
    assert_string_equal(err, "invalid JSON at line 3, column 3");
    bad = "{\"spec_version\": 1,\r\n\"name\": oops}";
    assert_int_equal(flowspec_parse(bad, strlen(bad), &s, err), -EINVAL);
    assert_string_equal(err, "invalid JSON at line 2, column 9");
    assert_null(s);
    assert_int_equal(flowspec_parse("", 0, &s, err), -EINVAL);
    assert_string_equal(err, "invalid JSON at line 1, column 1");
    const char *trailing = "{\"spec_version\": 1}\n x";
    assert_int_equal(flowspec_parse(trailing, strlen(trailing), &s, err), -EINVAL);
    assert_string_equal(err, "invalid JSON at line 2, column 2");
    const char nul[] = "{\"a\": 1}\0{}";
    assert_int_equal(flowspec_parse(nul, sizeof(nul) - 1, &s, err), -EINVAL);
    assert_string_equal(err, "invalid JSON at line 1, column 9");
    /* Not NUL-terminated: the length is authoritative. */
    const char *cut = "{\"spec_version\": 1, \"name\": \"f\"}XXXX";
    assert_int_equal(flowspec_parse(cut, 20, &s, err), -EINVAL);
    assert_string_equal(err, "invalid JSON at line 1, column 20");
}

static void test_size_limits(void **state)
{
    char err[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;
    size_t big = FLOWSPEC_MAX_BYTES + 1;
    char *buf = malloc(big);
    memset(buf, ' ', big);
    assert_int_equal(flowspec_parse(buf, big, &s, err), -EINVAL);
    assert_string_equal(err, "the spec is too large (16777217 bytes; the limit is 16 MiB)");
    free(buf);

    /* 100000 tasks in one chain: accepted, and deep chains do not recurse. */
    size_t cap = 64 * (FLOWSPEC_MAX_TASKS + 2), len = 0;
    buf = malloc(cap);
    len += (size_t)sprintf(buf, "{\"spec_version\":1,\"name\":\"f\",\"tasks\":[");
    for (int i = 0; i < FLOWSPEC_MAX_TASKS; i++)
        len += (size_t)(i ? sprintf(buf + len,
                                    ",{\"name\":\"t%d\",\"command\":[\"x\"],"
                                    "\"upstream\":[\"t%d\"]}",
                                    i, i - 1)
                          : sprintf(buf + len, "{\"name\":\"t0\",\"command\":[\"x\"]}"));
    strcpy(buf + len, "]}");
    assert_int_equal(flowspec_parse(buf, len + 2, &s, err), 0);
    assert_int_equal(s->n_tasks, FLOWSPEC_MAX_TASKS);
    assert_int_equal(s->tasks[FLOWSPEC_MAX_TASKS - 1].upstream[0], FLOWSPEC_MAX_TASKS - 2);
    flowspec_free(s);
    free(buf);
    /* One task too many. */
    cap = 40 * (FLOWSPEC_MAX_TASKS + 2);
    buf = malloc(cap);
    len = (size_t)sprintf(buf, "{\"spec_version\":1,\"name\":\"f\",\"tasks\":[");
    for (int i = 0; i <= FLOWSPEC_MAX_TASKS; i++)
        len +=
            (size_t)sprintf(buf + len, "%s{\"name\":\"t%d\",\"command\":[\"x\"]}", i ? "," : "", i);
    strcpy(buf + len, "]}");
    assert_int_equal(flowspec_parse(buf, len + 2, &s, err), -EINVAL);
    assert_string_equal(err, "field \"tasks\": too many tasks (100001; the limit is 100000)");
    free(buf);
}

/* A long cycle is found iteratively and its message is cut to FLOWSPEC_ERR_MAX. */
static void test_long_cycle_message_is_truncated(void **state)
{
    enum { N = 50000 };
    char err[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;
    char *buf = malloc(80 * (N + 2));
    size_t len = (size_t)sprintf(buf, "{\"spec_version\":1,\"name\":\"f\",\"tasks\":[");
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(
            buf + len, "%s{\"name\":\"task%d\",\"command\":[\"x\"],\"upstream\":[\"task%d\"]}",
            i ? "," : "", i, (i + N - 1) % N);
    len += (size_t)sprintf(buf + len, "]}");
    assert_int_equal(flowspec_parse(buf, len, &s, err), -EINVAL);
    assert_true(strncmp(err, "cycle: task0 -> task1 -> task2 -> ", 34) == 0);
    assert_non_null(strstr(err, " -> ... -> task0"));
    assert_true(strlen(err) < FLOWSPEC_ERR_MAX);
    free(buf);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* 2000 tasks, each depending on up to 3 earlier ones, with templates and env: a few ms. */
static void test_2000_tasks_parse_fast(void **state)
{
    enum { N = 2000 };
    char *buf = malloc(300 * N);
    size_t len = (size_t)sprintf(buf, "{\"spec_version\":1,\"name\":\"big\",\"tasks\":[");
    for (int i = 0; i < N; i++) {
        len += (size_t)sprintf(buf + len,
                               "%s{\"name\":\"task-%04d\",\"command\":[\"run\",\"{{ "
                               "parameters.p }}\"],\"env\":{\"A\":\"{{ run_id }}\"},\"upstream\":[",
                               i ? "," : "", i);
        for (int k = 1; k <= 3 && i - k * 7 >= 0; k++)
            len += (size_t)sprintf(buf + len, "%s\"task-%04d\"", k > 1 ? "," : "", i - k * 7);
        len += (size_t)sprintf(buf + len, "]}");
    }
    len += (size_t)sprintf(buf + len, "]}");
    char err[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;
    double best = 1e9;
    for (int round = 0; round < 5; round++) {
        double t0 = now_ms();
        assert_int_equal(flowspec_parse(buf, len, &s, err), 0);
        double dt = now_ms() - t0;
        best = dt < best ? dt : best;
        if (round < 4)
            flowspec_free(s);
    }
    print_message("2000 tasks (%zu bytes): best of 5 parses %.2f ms\n", len, best);
    /* A few ms in a release build; generous for sanitizer builds and loaded machines, and
     * memcheck (the valgrind label sets DAGY_UNDER_VALGRIND) is some 50 times slower. */
    assert_true(best < (getenv("DAGY_UNDER_VALGRIND") ? 12500 : 250));
    assert_int_equal(s->n_tasks, N);
    assert_int_equal(s->tasks[N - 1].n_upstream, 3);
    assert_int_equal(flowspec_find(s, "task-1234"), 1234);
    flowspec_free(s);
    free(buf);
}

static char *dot_of(const flowspec *s)
{
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    flowspec_write_dot(s, f);
    fclose(f);
    return text;
}

static void test_dot_diamond(void **state)
{
    flowspec *s = parse_ok("{'spec_version': 1, 'name': 'diamond', 'tasks': ["
                           "{'name': 'top', 'command': ['echo', 'hi']},"
                           "{'name': 'left', 'callable': 'm.x:left', 'upstream': ['top']},"
                           "{'name': 'right', " CMD ", 'upstream': ['top']},"
                           "{'name': 'bottom', " CMD ", 'upstream': ['left', 'right'],"
                           " 'trigger_rule': 'all_done'}]}");
    char *dot = dot_of(s);
    assert_string_equal(dot, "digraph \"diamond\" {\n"
                             "  rankdir=LR;\n"
                             "  node [shape=box];\n"
                             "  \"top\" [label=\"top\\n$ echo hi\"];\n"
                             "  \"left\" [label=\"left\\nm.x:left\"];\n"
                             "  \"right\" [label=\"right\\n$ true\"];\n"
                             "  \"bottom\" [label=\"bottom\\n$ true\\ntrigger: all_done\"];\n"
                             "  \"top\" -> \"left\";\n"
                             "  \"top\" -> \"right\";\n"
                             "  \"left\" -> \"bottom\";\n"
                             "  \"right\" -> \"bottom\";\n"
                             "}\n");
    free(dot);
    flowspec_free(s);
}

/* --graph shows where a task runs: its own ECS task, with its size. */
static void test_dot_shows_the_ecs_executor(void **state)
{
    (void)state;
    flowspec *s =
        parse_ok(SPEC("{'name': 'x', " CMD ", 'executor': {'type': 'ecs', 'profile': "
                      "'xlarge', 'capacity_provider': 'FARGATE_SPOT'}}, {'name': 'y', " CMD
                      ", 'executor': {'type': 'ecs'}}"));
    char *dot = dot_of(s);
    assert_non_null(strstr(dot, "\"x\" [label=\"x\\n$ true\\necs 4096/8192 FARGATE_SPOT\"];"));
    assert_non_null(strstr(dot, "\"y\" [label=\"y\\n$ true\\necs\"];"));
    free(dot);
    flowspec_free(s);
}

static void test_dot_escapes_and_shortens_commands(void **state)
{
    flowspec *s = parse_ok(SPEC("{'name': 'q', 'command': ['sh', '-c', "
                                "'echo \\'hi\\' \\\\ done; and a rather long tail that is cut']}"));
    char *dot = dot_of(s);
    /* The command is `sh -c echo "hi" \ done; ...`: quote and backslash escaped, cut at 40. */
    assert_non_null(strstr(dot, "[label=\"q\\n$ sh -c echo \\\"hi\\\" \\\\ done; and a rather "
                                "lon...\"];\n"));
    free(dot);
    flowspec_free(s);
}

static void test_load_prefixes_errors_with_the_path(void **state)
{
    char path[] = "/tmp/test_flowspec_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"spec_version\": 1, \"name\": \"f\", \"tasks\": [{\"name\": \"a\"}]}";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char err[FLOWSPEC_ERR_MAX], want[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;
    assert_int_equal(flowspec_load(path, &s, err), -EINVAL);
    snprintf(want, sizeof(want),
             "%s: task \"a\": must have exactly one of \"command\" or "
             "\"callable\"",
             path);
    assert_string_equal(err, want);
    FILE *f = fopen(path, "w");
    fputs("{\"spec_version\": 1, \"name\": \"f\", \"tasks\": [{\"name\": \"a\", \"command\": "
          "[\"x\"]}]}",
          f);
    fclose(f);
    assert_int_equal(flowspec_load(path, &s, err), 0);
    assert_string_equal(s->tasks[0].name, "a");
    flowspec_free(s);
    unlink(path);
    assert_int_equal(flowspec_load(path, &s, err), -ENOENT);
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    assert_string_equal(err, want);
    assert_null(s);
}

/* cJSON cuts a string at a \u0000 escape: "a\u0000; rm -rf /" would run as "a". Such specs are
 * refused, naming the task and the field (defect 13; these parsed before). */
static void test_nul_escapes_are_refused_naming_task_and_field(void **state)
{
#define NUL_WHY "contains a NUL character (\\u0000), which is not allowed"
    expect_error(SPEC("{'name': 'a\\u0000; rm -rf /', " CMD "}"),
                 "task #1: field 'name': " NUL_WHY);
    expect_error(SPEC("{'name': 'x', 'command': ['sh', '-c', 'echo a\\u0000; rm -rf /']}"),
                 "task 'x': field 'command': " NUL_WHY);
    expect_error(SPEC("{'name': 'ok', " CMD "}, {'name': 'x', " CMD ", 'env': {'A': 'b\\u0000'}}"),
                 "task 'x': field 'env': " NUL_WHY);
    expect_error(SPEC("{'name': 'x', " CMD ", 'env': {'A\\u0000B': 'b'}}"),
                 "task 'x': field 'env': " NUL_WHY);
    expect_error(SPEC("{'name': 'x', 'callable': 'm:f', 'kwargs': {'k': [1, {'d': '\\u0000'}]}}"),
                 "task 'x': field 'kwargs': " NUL_WHY);
    expect_error(SPEC("{'name': 'x', 'descr\\u0000iption': 'd', " CMD "}"),
                 "task 'x': the name of a field " NUL_WHY);
    expect_error("{'spec_version': 1, 'name': 'f\\u0000', 'tasks': []}", "field 'name': " NUL_WHY);
    expect_error("{'spec_version': 1, 'name': 'f', 'description': '\\u0000', 'tasks': []}",
                 "field 'description': " NUL_WHY);
    expect_error(
        "{'spec_version': 1, 'name': 'f', 'defaults': {'retries': '\\u0000'}, 'tasks': []}",
        "defaults: field 'retries': " NUL_WHY);
    expect_error("{'spec_version': 1, 'na\\u0000me': 'f', 'tasks': []}",
                 "the name of a field " NUL_WHY);
    /* A task that is not an object has no field names to give: its position is named (the
     * fuzzer found this crash: an array task holding a NUL read a member name that is NULL). */
    expect_error(SPEC("{'name': 'ok', " CMD "}, ['\\u0000']"), "task #2: " NUL_WHY);
    expect_error(SPEC("[[{'a': '\\u0000'}]]"), "task #1: " NUL_WHY);
    /* An escaped backslash before "u0000" is not a NUL: the command keeps the six characters. */
    flowspec *s = parse_ok(SPEC("{'name': 'x', 'command': ['echo', 'a\\\\u0000b']}"));
    assert_string_equal(s->tasks[0].command[1], "a\\u0000b");
    flowspec_free(s);
#undef NUL_WHY
}

/* Names that start with '.' (but are not "." or "..") are valid task names. */
static void test_dot_names_are_valid_task_names(void **state)
{
    flowspec *s = parse_ok(
        SPEC("{'name': '.hidden', " CMD "}, {'name': 'a.b', " CMD "}, {'name': '..x', " CMD "}"));
    assert_string_equal(s->tasks[0].name, ".hidden");
    assert_string_equal(s->tasks[2].name, "..x");
    flowspec_free(s);
    flowspec_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_spec_gets_builtin_defaults),
        cmocka_unit_test(test_contract_example_parses),
        cmocka_unit_test(test_task_values_override_defaults),
        cmocka_unit_test(test_unknown_fields_are_rejected_everywhere),
        cmocka_unit_test(test_repeated_json_keys_are_rejected),
        cmocka_unit_test(test_top_level_errors),
        cmocka_unit_test(test_scheduling_field_errors),
        cmocka_unit_test(test_task_name_errors_name_the_position),
        cmocka_unit_test(test_duplicate_task_names),
        cmocka_unit_test(test_command_and_callable_errors),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_executor_field),
        cmocka_unit_test(test_upstream_and_trigger_errors),
        cmocka_unit_test(test_cycles_print_the_path),
        cmocka_unit_test(test_kwargs_upstream_references),
        cmocka_unit_test(test_invalid_json_reports_line_and_column),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_long_cycle_message_is_truncated),
        cmocka_unit_test(test_2000_tasks_parse_fast),
        cmocka_unit_test(test_dot_diamond),
        cmocka_unit_test(test_dot_shows_the_ecs_executor),
        cmocka_unit_test(test_dot_escapes_and_shortens_commands),
        cmocka_unit_test(test_load_prefixes_errors_with_the_path),
        cmocka_unit_test(test_dot_names_are_valid_task_names),
        cmocka_unit_test(test_nul_escapes_are_refused_naming_task_and_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
