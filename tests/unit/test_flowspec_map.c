/* test_flowspec_map.c - the "map" field of a task: its validation (over must be a direct
 * upstream, the bounds), {{ item }} allowed only in map tasks, map templates kept for the children
 * and still checked at render time, flowspec_render_child (item as-is for strings, compact JSON
 * otherwise; DAGY_MAP_ITEM/DAGY_MAP_INDEX; NAME[k]), the DOT of a map node, and the derived id
 * NAME[k] in the one name rule (PROTO_NAME_TASK_INSTANCE) and the one encoder. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "proto/flowspec.h"
#include "proto/names.h"

static char *q(const char *s)
{
    char *out = strdup(s);
    for (char *p = out; *p; p++)
        if (*p == '\'')
            *p = '"';
    return out;
}

#define SPEC(tasks) "{'spec_version': 1, 'name': 'flow', 'tasks': [" tasks "]}"
#define SRC         "{'name': 'src', 'command': ['true']}, "

static void expect_error(const char *spec_sq, const char *want_sq)
{
    char *json = q(spec_sq), *want = q(want_sq);
    char err[FLOWSPEC_ERR_MAX] = "";
    flowspec *s = NULL;
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
    if (flowspec_parse(json, strlen(json), &s, err) != 0)
        fail_msg("spec: %s\nunexpected error: %s", json, err);
    free(json);
    return s;
}

static void test_map_over_must_be_a_direct_upstream(void **state)
{
    (void)state;
    expect_error(SPEC(SRC "{'name': 'm', 'command': ['true'], 'map': {'over': 'src'}}"),
                 "task 'm': map: field 'over': 'src' is not listed in 'upstream' (a map "
                 "runs over the result of a direct upstream task)");
    expect_error(SPEC(SRC "{'name': 'm', 'command': ['true'], 'upstream': ['src'], "
                          "'map': {'over': 'nope'}}"),
                 "task 'm': map: field 'over': 'nope' is not listed in 'upstream' (a map "
                 "runs over the result of a direct upstream task)");
    expect_error(SPEC(SRC "{'name': 'm', 'command': ['true'], 'upstream': ['src'], 'map': {}}"),
                 "task 'm': map: field 'over': must name an upstream task (a string)");
    expect_error(SPEC(SRC "{'name': 'm', 'command': ['true'], 'upstream': ['src'], 'map': 'src'}"),
                 "task 'm': field 'map': must be an object like {'over': 'UPSTREAM_TASK'}");
    expect_error(SPEC(SRC "{'name': 'm', 'command': ['true'], 'upstream': ['src'], "
                          "'map': {'over': 'src', 'max_parallel': 0}}"),
                 "task 'm': map: field 'max_parallel': must be an integer >= 1");
    expect_error(SPEC(SRC "{'name': 'm', 'command': ['true'], 'upstream': ['src'], "
                          "'map': {'over': 'src', 'allow_failures': -1}}"),
                 "task 'm': map: field 'allow_failures': must be an integer >= 0");
    expect_error(SPEC(SRC "{'name': 'm', 'command': ['true'], 'upstream': ['src'], "
                          "'map': {'over': 'src', 'parallel': 2}}"),
                 "task 'm': map: unknown field 'parallel' (allowed: over, max_parallel, "
                 "allow_failures)");
}

static void test_item_is_only_defined_in_a_map_task(void **state)
{
    (void)state;
    expect_error(SPEC("{'name': 'x', 'command': ['echo', '{{ item }}']}"),
                 "task 'x': command[1]: {{ item }} is only defined in a task with 'map' (it is "
                 "one element of the array mapped over)");
    expect_error(SPEC("{'name': 'x', 'command': ['true'], 'env': {'A': 'x{{item}}'}}"),
                 "task 'x': env 'A': {{ item }} is only defined in a task with 'map' (it is one "
                 "element of the array mapped over)");
    expect_error(SPEC("{'name': 'x', 'callable': 'm:f', 'kwargs': {'a': ['{{ item }}']}}"),
                 "task 'x': kwargs.a[0]: {{ item }} is only defined in a task with 'map' (it is "
                 "one element of the array mapped over)");
}

static void test_map_task_parses_into_the_plan_definition(void **state)
{
    (void)state;
    flowspec *s = parse_ok(SPEC(SRC "{'name': 'other', 'command': ['true']}, "
                                    "{'name': 'm', 'command': ['echo', '{{ item }}'], "
                                    "'upstream': ['other', 'src'], 'retries': 2, "
                                    "'map': {'over': 'src', 'max_parallel': 8, "
                                    "'allow_failures': 3}}"));
    const flowspec_task *m = &s->tasks[2];
    assert_non_null(m->map);
    assert_string_equal(m->map->over, "src");
    assert_int_equal(m->map->over_index, 0);
    assert_true(m->def.map);
    assert_int_equal(m->def.map_over, 0);
    assert_int_equal(m->def.map_max_parallel, 8);
    assert_int_equal(m->def.map_allow_failures, 3);
    assert_int_equal(m->def.retries, 2);
    assert_null(s->tasks[0].map);
    flowspec_free(s);
}

/* A map task's templates survive the render (the children expand them), but an unset
 * parameter in one is still an error before anything runs. */
static void test_render_keeps_map_templates_and_still_checks_parameters(void **state)
{
    (void)state;
    flowspec *s = parse_ok(SPEC(SRC "{'name': 'm', 'command': ['echo', '{{ item }}', "
                                    "'{{ parameters.day }}'], 'upstream': ['src'], "
                                    "'map': {'over': 'src'}}"));
    char err[FLOWSPEC_ERR_MAX] = "";
    flowspec_vars none = {0};
    assert_int_equal(flowspec_render(s, &none, err), -EINVAL);
    assert_string_equal(err, "task \"m\": command[2]: parameter \"day\" is not set (pass "
                             "--param day=...)");
    cJSON *params = cJSON_Parse("{\"day\": \"mon\"}");
    flowspec_vars vars = {.parameters = params, .run_id = "r1"};
    assert_int_equal(flowspec_render(s, &vars, err), 0);
    assert_string_equal(s->tasks[1].command[1], "{{ item }}");
    assert_string_equal(s->tasks[1].command[2], "{{ parameters.day }}");
    cJSON_Delete(params);
    flowspec_free(s);
}

static void test_render_child_inserts_the_element(void **state)
{
    (void)state;
    flowspec *s = parse_ok(SPEC(SRC "{'name': 'm', 'command': ['echo', 'x={{ item }}'], "
                                    "'env': {'E': '{{item}}-{{ run_id }}'}, 'upstream': ['src'], "
                                    "'timeout_seconds': 5, 'map': {'over': 'src'}}"));
    flowspec_vars vars = {.run_id = "r1"};
    flowspec_task c;
    char err[FLOWSPEC_ERR_MAX] = "";
    /* A string element goes in as it is (its JSON escapes decoded). */
    assert_int_equal(flowspec_render_child(&s->tasks[1], &vars, "\"a \\\"b\\\"\"", 7, &c, err), 0);
    assert_string_equal(c.name, "m[7]");
    assert_string_equal(c.command[1], "x=a \"b\"");
    assert_int_equal(c.env_len, 3);
    assert_string_equal(c.env[0], "E=a \"b\"-r1");
    assert_string_equal(c.env[1], "DAGY_MAP_ITEM=\"a \\\"b\\\"\"");
    assert_string_equal(c.env[2], "DAGY_MAP_INDEX=7");
    assert_null(c.map);
    assert_false(c.def.map);
    assert_true(c.def.timeout_seconds == 5);
    assert_int_equal(c.n_upstream, 1);
    flowspec_task_clear(&c);
    /* Anything else as its compact JSON, digits untouched; an inserted "{{ run_id }}" stays. */
    assert_int_equal(flowspec_render_child(&s->tasks[1], &vars,
                                           "{\"k\":[9007199254740993],\"t\":\"{{ run_id }}\"}", 0,
                                           &c, err),
                     0);
    assert_string_equal(c.command[1], "x={\"k\":[9007199254740993],\"t\":\"{{ run_id }}\"}");
    assert_string_equal(s->tasks[1].command[1], "x={{ item }}"); /* the map task is untouched */
    flowspec_task_clear(&c);
    flowspec_free(s);
}

static void test_dot_shows_a_map_node(void **state)
{
    (void)state;
    flowspec *s = parse_ok(SPEC(SRC "{'name': 'm', 'command': ['true'], 'upstream': ['src'], "
                                    "'map': {'over': 'src', 'max_parallel': 4}}"));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    flowspec_write_dot(s, f);
    fclose(f);
    assert_non_null(strstr(buf, "\"m\" [label=\"m[*] over src\\nmax_parallel 4\\n$ true\", "
                                "style=\"rounded,bold\", peripheries=2];"));
    assert_non_null(strstr(buf, "\"src\" -> \"m\" [style=bold, label=\"map\"];"));
    free(buf);
    flowspec_free(s);
}

static void test_instance_names_follow_the_name_rule_with_an_index(void **state)
{
    (void)state;
    static const char *const ok[] = {"m[0]", "m[7]", "a.b-c_d[1234567]", "x", ".hidden[3]"};
    static const char *const bad[] = {"m[]",   "m[01]", "m[12345678]", "m[-1]",  "[3]", ".[3]",
                                      "..[0]", "m[3]x", "m[3][4]",     "a b[1]", "m[3"};
    char err[256];
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!proto_name_check(PROTO_NAME_TASK_INSTANCE, ok[i], err, sizeof err))
            fail_msg("%s refused: %s", ok[i], err);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (proto_name_check(PROTO_NAME_TASK_INSTANCE, bad[i], err, sizeof err))
            fail_msg("%s accepted", bad[i]);
    /* A spec's task name never has the suffix. */
    assert_false(proto_name_check(PROTO_NAME_TASK, "m[7]", NULL, 0));
    char enc[PROTO_NAME_ENCODED_MAX];
    proto_name_encode("m[7]", enc, sizeof enc);
    assert_string_equal(enc, "m%5B7%5D");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_over_must_be_a_direct_upstream),
        cmocka_unit_test(test_item_is_only_defined_in_a_map_task),
        cmocka_unit_test(test_map_task_parses_into_the_plan_definition),
        cmocka_unit_test(test_render_keeps_map_templates_and_still_checks_parameters),
        cmocka_unit_test(test_render_child_inserts_the_element),
        cmocka_unit_test(test_dot_shows_a_map_node),
        cmocka_unit_test(test_instance_names_follow_the_name_rule_with_an_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
