/* test_template.c - `{{ ... }}` templates: syntax errors at parse time (naming task and field),
 * expansion of every variable, parameter values of every JSON type, and flowspec_render over
 * command, env and nested kwargs. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "proto/flowspec.h"

static cJSON *params;
static flowspec_vars vars;

static int setup(void **state)
{
    params = cJSON_Parse("{\"date\": \"2026-03-14\", \"n\": 42, \"f\": 1.5, \"on\": true,"
                         " \"nothing\": null, \"list\": [1, \"a\"], \"obj\": {\"k\": \"v\"},"
                         " \"tricky\": \"{{ run_id }} \\\"q\\\"\", \"my-param_2\": \"ok\"}");
    vars = (flowspec_vars){.parameters = params,
                           .run_id = "run-1",
                           .flow_name = "etl",
                           .flow_version = "1.2.3",
                           .org_id = "acme",
                           .environment = "prod"};
    return params ? 0 : -1;
}

static int teardown(void **state)
{
    cJSON_Delete(params);
    return 0;
}

static void expect_expansion(const char *in, const char *want)
{
    char err[FLOWSPEC_ERR_MAX] = "";
    char *out = flowspec_expand(in, &vars, "here", err);
    if (!out)
        fail_msg("expanding %s: %s", in, err);
    if (strcmp(out, want) != 0)
        fail_msg("expanding %s\nwant: %s\ngot:  %s", in, want, out);
    free(out);
}

static void expect_expand_error(const char *in, const char *want)
{
    char err[FLOWSPEC_ERR_MAX] = "";
    char *out = flowspec_expand(in, &vars, "task \"t\": command[1]", err);
    if (out || strcmp(err, want) != 0)
        fail_msg("expanding %s\nwant error: %s\ngot: %s / %s", in, want, out ? out : "(null)", err);
}

static void test_every_variable_expands(void **state)
{
    expect_expansion("{{ run_id }}/{{ flow_name }}/{{ flow_version }}/{{ org_id }}/"
                     "{{ environment }}/{{ parameters.date }}",
                     "run-1/etl/1.2.3/acme/prod/2026-03-14");
    expect_expansion("no templates here", "no templates here");
    expect_expansion("", "");
    expect_expansion("x{{ parameters.my-param_2 }}y", "xoky");
}

static void test_whitespace_inside_braces_is_optional(void **state)
{
    expect_expansion("{{run_id}}", "run-1");
    expect_expansion("{{   run_id }}", "run-1");
    expect_expansion("{{\trun_id\t}}", "run-1");
    expect_expansion("{{\n parameters.date \n}}", "2026-03-14");
    expect_expansion("a{{run_id}}b{{ run_id}}c{{run_id }}d", "arun-1brun-1crun-1d");
}

static void test_lone_braces_are_literal(void **state)
{
    expect_expansion("a } b { c }} d {x}", "a } b { c }} d {x}");
    expect_expansion("awk '{print $1}'", "awk '{print $1}'");
}

static void test_non_string_parameters_expand_to_json(void **state)
{
    expect_expansion("{{ parameters.n }}", "42");
    expect_expansion("{{ parameters.f }}", "1.5");
    expect_expansion("{{ parameters.on }}", "true");
    expect_expansion("{{ parameters.nothing }}", "null");
    expect_expansion("{{ parameters.list }}", "[1,\"a\"]");
    expect_expansion("{{ parameters.obj }}", "{\"k\":\"v\"}");
}

static void test_inserted_values_are_not_expanded_again(void **state)
{
    expect_expansion("<{{ parameters.tricky }}>", "<{{ run_id }} \"q\">");
}

static void test_unset_variables_expand_to_empty(void **state)
{
    char err[FLOWSPEC_ERR_MAX];
    flowspec_vars empty = {0};
    char *out = flowspec_expand("[{{ run_id }}|{{ org_id }}|{{ environment }}]", &empty, NULL, err);
    assert_string_equal(out, "[||]");
    free(out);
    out = flowspec_expand("[{{ flow_name }}]", NULL, NULL, err);
    assert_string_equal(out, "[]");
    free(out);
}

static void test_missing_parameter_names_the_flag(void **state)
{
    expect_expand_error("--date={{ parameters.day }}",
                        "task \"t\": command[1]: parameter \"day\" is not set (pass --param "
                        "day=...)");
    char err[FLOWSPEC_ERR_MAX];
    flowspec_vars none = {0};
    assert_null(flowspec_expand("{{ parameters.date }}", &none, NULL, err));
    assert_string_equal(err, "parameter \"date\" is not set (pass --param date=...)");
    /* Parameters that are not a JSON object count as none. */
    cJSON *arr = cJSON_CreateArray();
    flowspec_vars bad = {.parameters = arr};
    assert_null(flowspec_expand("{{ parameters.date }}", &bad, NULL, err));
    cJSON_Delete(arr);
}

static void test_malformed_templates(void **state)
{
    expect_expand_error("--date {{ parameters.date",
                        "task \"t\": command[1]: unterminated template \"{{ parameters.date\" "
                        "(missing \"}}\")");
    expect_expand_error("{{ run_id }",
                        "task \"t\": command[1]: unterminated template \"{{ run_id }\" (missing "
                        "\"}}\")");
    expect_expand_error("{{ foo }}", "task \"t\": command[1]: unknown template variable \"foo\" "
                                     "(known: parameters.NAME, run_id, flow_name, flow_version, "
                                     "org_id, environment, item)");
    expect_expand_error("{{ parameters }}",
                        "task \"t\": command[1]: unknown template variable \"parameters\" "
                        "(known: parameters.NAME, run_id, flow_name, flow_version, org_id, "
                        "environment, item)");
    expect_expand_error(
        "{{ RUN_ID }}",
        "task \"t\": command[1]: unknown template variable \"RUN_ID\" (known: "
        "parameters.NAME, run_id, flow_name, flow_version, org_id, environment, item)");
    expect_expand_error("{{ parameters. }}",
                        "task \"t\": command[1]: empty parameter name in \"{{ parameters. }}\"");
    expect_expand_error("{{  }}", "task \"t\": command[1]: empty template \"{{ }}\"");
    expect_expand_error("{{ parameters.a b }}",
                        "task \"t\": command[1]: invalid parameter name in \"{{ parameters.a b "
                        "}}\" (1-128 characters of A-Z a-z 0-9 _ -)");
    expect_expand_error("{{ parameters.a.b }}",
                        "task \"t\": command[1]: invalid parameter name in \"{{ parameters.a.b "
                        "}}\" (1-128 characters of A-Z a-z 0-9 _ -)");
    char err[FLOWSPEC_ERR_MAX];
    assert_int_equal(flowspec_check_templates("ok {{ parameters.x }}", "w", err), 0);
    assert_int_equal(flowspec_check_templates("{{ nope }}", NULL, err), -EINVAL);
    assert_true(strncmp(err, "unknown template variable \"nope\"", 32) == 0);
}

static void expect_parse_error(const char *json, const char *want)
{
    char err[FLOWSPEC_ERR_MAX] = "";
    flowspec *s = NULL;
    int rc = flowspec_parse(json, strlen(json), &s, err);
    if (rc != -EINVAL || strcmp(err, want) != 0)
        fail_msg("spec: %s\nwant: %s\ngot:  %s", json, want, err);
}

#define TASKS(t) "{\"spec_version\": 1, \"name\": \"f\", \"tasks\": [" t "]}"

static void test_parse_checks_template_syntax_per_field(void **state)
{
    expect_parse_error(
        TASKS("{\"name\": \"x\", \"command\": [\"a\", \"b\", \"{{ foo }}\"]}"),
        "task \"x\": command[2]: unknown template variable \"foo\" (known: "
        "parameters.NAME, run_id, flow_name, flow_version, org_id, environment, item)");
    expect_parse_error(TASKS("{\"name\": \"x\", \"command\": [\"a\"], \"env\": {\"SOURCE\": "
                             "\"{{ parameters.src\"}}"),
                       "task \"x\": env \"SOURCE\": unterminated template \"{{ parameters.src\" "
                       "(missing \"}}\")");
    expect_parse_error(TASKS("{\"name\": \"x\", \"callable\": \"m:f\", \"kwargs\": {\"mode\": "
                             "\"{{ parameters. }}\"}}"),
                       "task \"x\": kwargs.mode: empty parameter name in \"{{ parameters. }}\"");
    expect_parse_error(
        TASKS("{\"name\": \"x\", \"callable\": \"m:f\", \"kwargs\": {\"a\": "
              "{\"b\": [1, \"ok\", \"{{ bad }}\"]}}}"),
        "task \"x\": kwargs.a.b[2]: unknown template variable \"bad\" (known: "
        "parameters.NAME, run_id, flow_name, flow_version, org_id, environment, item)");
    /* Unknown parameters are fine at parse time: they are only known at run time. */
    char err[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;
    const char *ok = TASKS("{\"name\": \"x\", \"command\": [\"{{ parameters.anything }}\"]}");
    assert_int_equal(flowspec_parse(ok, strlen(ok), &s, err), 0);
    flowspec_free(s);
}

static const char etl[] =
    "{\"spec_version\": 1, \"name\": \"etl\", \"tasks\": ["
    " {\"name\": \"extract\", \"command\": [\"sh\", \"-c\", \"fetch --date {{ parameters.date }}"
    " --run {{run_id}}\"], \"env\": {\"SOURCE\": \"{{ parameters.obj }}\", \"PLAIN\": \"p\"}},"
    " {\"name\": \"transform\", \"callable\": \"m:f\", \"upstream\": [\"extract\"],"
    "  \"kwargs\": {\"data\": {\"upstream\": \"extract\"}, \"mode\": \"{{ parameters.n }}\","
    "   \"deep\": {\"list\": [\"{{ org_id }}-{{ environment }}\", 7, {\"x\": \"{{flow_name}}\"}]},"
    "   \"{{ run_id }}\": \"keys stay\"}}]}";

static void test_render_expands_command_env_and_nested_kwargs(void **state)
{
    char err[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;
    assert_int_equal(flowspec_parse(etl, strlen(etl), &s, err), 0);
    assert_int_equal(flowspec_render(s, &vars, err), 0);
    flowspec_task *ex = &s->tasks[0], *tr = &s->tasks[1];
    assert_string_equal(ex->command[0], "sh");
    assert_string_equal(ex->command[2], "fetch --date 2026-03-14 --run run-1");
    assert_string_equal(ex->env[0], "SOURCE={\"k\":\"v\"}");
    assert_string_equal(ex->env[1], "PLAIN=p");
    char *kw = cJSON_PrintUnformatted(tr->kwargs);
    assert_string_equal(kw, "{\"data\":{\"upstream\":\"extract\"},\"mode\":\"42\","
                            "\"deep\":{\"list\":[\"acme-prod\",7,{\"x\":\"etl\"}]},"
                            "\"{{ run_id }}\":\"keys stay\"}");
    free(kw);
    flowspec_free(s);
}

static void test_render_error_names_task_and_field(void **state)
{
    char err[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;
    flowspec_vars v = vars;
    cJSON *p = cJSON_Parse("{\"obj\": 1, \"n\": 2}");
    v.parameters = p;
    assert_int_equal(flowspec_parse(etl, strlen(etl), &s, err), 0);
    assert_int_equal(flowspec_render(s, &v, err), -EINVAL);
    assert_string_equal(err, "task \"extract\": command[2]: parameter \"date\" is not set (pass "
                             "--param date=...)");
    flowspec_free(s);

    cJSON_AddStringToObject(p, "date", "d");
    cJSON_DeleteItemFromObject(p, "obj");
    assert_int_equal(flowspec_parse(etl, strlen(etl), &s, err), 0);
    assert_int_equal(flowspec_render(s, &v, err), -EINVAL);
    assert_string_equal(err, "task \"extract\": env \"SOURCE\": parameter \"obj\" is not set "
                             "(pass --param obj=...)");
    flowspec_free(s);

    cJSON_AddStringToObject(p, "obj", "o");
    cJSON_DeleteItemFromObject(p, "n");
    assert_int_equal(flowspec_parse(etl, strlen(etl), &s, err), 0);
    assert_int_equal(flowspec_render(s, &v, err), -EINVAL);
    assert_string_equal(err, "task \"transform\": kwargs.mode: parameter \"n\" is not set (pass "
                             "--param n=...)");
    flowspec_free(s);
    cJSON_Delete(p);
}

static void test_long_expansion_grows_the_buffer(void **state)
{
    char in[4096] = "";
    for (int i = 0; i < 150; i++)
        strcat(in, "{{ parameters.date }}");
    char err[FLOWSPEC_ERR_MAX];
    char *out = flowspec_expand(in, &vars, NULL, err);
    assert_non_null(out);
    assert_int_equal(strlen(out), 150 * strlen("2026-03-14"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_variable_expands),
        cmocka_unit_test(test_whitespace_inside_braces_is_optional),
        cmocka_unit_test(test_lone_braces_are_literal),
        cmocka_unit_test(test_non_string_parameters_expand_to_json),
        cmocka_unit_test(test_inserted_values_are_not_expanded_again),
        cmocka_unit_test(test_unset_variables_expand_to_empty),
        cmocka_unit_test(test_missing_parameter_names_the_flag),
        cmocka_unit_test(test_malformed_templates),
        cmocka_unit_test(test_parse_checks_template_syntax_per_field),
        cmocka_unit_test(test_render_expands_command_env_and_nested_kwargs),
        cmocka_unit_test(test_render_error_names_task_and_field),
        cmocka_unit_test(test_long_expansion_grows_the_buffer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
