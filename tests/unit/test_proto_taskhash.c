/* test_proto_taskhash.c - task fingerprints: canonical JSON, what changes a task_hash and what
 * does not, the hash chain over upstream tasks, and the order-independent code digest. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "proto/sigv4.h"
#include "proto/taskhash.h"

static char *q(const char *s)
{
    char *out = strdup(s);
    for (char *p = out; *p; p++)
        if (*p == '\'')
            *p = '"';
    return out;
}

#define CODE  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define CODE2 "ff23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define CODE3 "aa23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* Parses and renders a spec (single quotes for readability) and hashes every task. */
static char (*hashes_of(const char *spec_sq, const char *params_json, const char *code,
                        const char *const *deps, flowspec **out_spec))[PROTO_HASH_HEX]
{
    char *json = q(spec_sq);
    char err[FLOWSPEC_ERR_MAX] = "";
    flowspec *s = NULL;
    if (flowspec_parse(json, strlen(json), &s, err))
        fail_msg("spec: %s: %s", json, err);
    char *pj = params_json ? q(params_json) : NULL;
    cJSON *params = pj ? cJSON_Parse(pj) : cJSON_CreateObject();
    flowspec_vars vars = {params, "run-1", "flow", "1.0", "org", "env"};
    if (flowspec_render(s, &vars, err))
        fail_msg("render: %s", err);
    char(*h)[PROTO_HASH_HEX] = calloc(s->n_tasks, sizeof *h);
    proto_hash_ctx ctx = {code, params, deps};
    assert_int_equal(proto_task_hashes(s, &ctx, h), 0);
    for (size_t i = 0; i < s->n_tasks; i++)
        assert_int_equal(strlen(h[i]), 64);
    cJSON_Delete(params);
    free(pj);
    free(json);
    if (out_spec)
        *out_spec = s;
    else
        flowspec_free(s);
    return h;
}

#define CHAIN(c_cmd)                                                                               \
    "{'spec_version': 1, 'name': 'flow', 'version': '1', 'tasks': ["                               \
    "{'name': 'a', 'command': ['echo', 'a']},"                                                     \
    "{'name': 'b', 'command': ['echo', 'b'], 'upstream': ['a']},"                                  \
    "{'name': 'c', 'command': " c_cmd ", 'upstream': ['b']},"                                      \
    "{'name': 'd', 'command': ['echo', 'd'], 'upstream': ['c']},"                                  \
    "{'name': 'e', 'command': ['echo', 'e']}]}"

#define MAPF(opts)                                                                                 \
    "{'spec_version': 1, 'name': 'flow', 'tasks': [{'name': 's', 'command': ['echo', '[1]']},"     \
    "{'name': 'm', 'command': ['echo', '{{ item }}'], 'upstream': ['s'], 'map': {'over': 's'" opts \
    "}}, {'name': 'j', 'command': ['true'], 'upstream': ['m']}]}"

/* A map's result depends on allow_failures (FAILED or null slots), not on max_parallel. */
static void test_map_hash_covers_allow_failures_not_max_parallel(void **state)
{
    char(*h1)[PROTO_HASH_HEX] = hashes_of(MAPF(""), NULL, CODE, NULL, NULL);
    char(*h2)[PROTO_HASH_HEX] = hashes_of(MAPF(", 'max_parallel': 3"), NULL, CODE, NULL, NULL);
    char(*h3)[PROTO_HASH_HEX] = hashes_of(MAPF(", 'allow_failures': 2"), NULL, CODE, NULL, NULL);
    assert_string_equal(h1[0], h3[0]);
    assert_string_equal(h1[1], h2[1]);
    assert_string_not_equal(h1[1], h3[1]);
    assert_string_not_equal(h1[2], h3[2]); /* downstream of the map too */
    free(h1);
    free(h2);
    free(h3);
    (void)state;
}

static void test_same_definition_same_hash(void **state)
{
    char(*h1)[PROTO_HASH_HEX] = hashes_of(CHAIN("['echo', 'c']"), NULL, CODE, NULL, NULL);
    char(*h2)[PROTO_HASH_HEX] = hashes_of(CHAIN("['echo', 'c']"), NULL, CODE, NULL, NULL);
    for (int i = 0; i < 5; i++)
        assert_string_equal(h1[i], h2[i]);
    for (int i = 1; i < 5; i++)
        assert_string_not_equal(h1[0], h1[i]);
    free(h1);
    free(h2);
}

static void test_changed_task_changes_it_and_everything_downstream_only(void **state)
{
    char(*h1)[PROTO_HASH_HEX] = hashes_of(CHAIN("['echo', 'c']"), NULL, CODE, NULL, NULL);
    char(*h2)[PROTO_HASH_HEX] = hashes_of(CHAIN("['echo', 'c2']"), NULL, CODE, NULL, NULL);
    assert_string_equal(h1[0], h2[0]);     /* a: upstream of the change */
    assert_string_equal(h1[1], h2[1]);     /* b */
    assert_string_not_equal(h1[2], h2[2]); /* c: changed */
    assert_string_not_equal(h1[3], h2[3]); /* d: downstream, through the chain */
    assert_string_equal(h1[4], h2[4]);     /* e: unrelated */
    free(h1);
    free(h2);
}

static void test_argument_boundaries_are_framed(void **state)
{
    char(*h1)[PROTO_HASH_HEX] = hashes_of(CHAIN("['echo', 'c d']"), NULL, CODE, NULL, NULL);
    char(*h2)[PROTO_HASH_HEX] = hashes_of(CHAIN("['echo', 'c', 'd']"), NULL, CODE, NULL, NULL);
    char(*h3)[PROTO_HASH_HEX] = hashes_of(CHAIN("['echo c', 'd']"), NULL, CODE, NULL, NULL);
    assert_string_not_equal(h1[2], h2[2]);
    assert_string_not_equal(h2[2], h3[2]);
    assert_string_not_equal(h1[2], h3[2]);
    free(h1);
    free(h2);
    free(h3);
}

static void test_templates_hash_as_rendered_and_parameters_count(void **state)
{
    const char *spec = "{'spec_version': 1, 'name': 'f', 'tasks': ["
                       "{'name': 't', 'command': ['echo', '{{ parameters.day }}']}]}";
    const char *lit = "{'spec_version': 1, 'name': 'f', 'tasks': ["
                      "{'name': 't', 'command': ['echo', 'mon']}]}";
    char(*h1)[PROTO_HASH_HEX] = hashes_of(spec, "{'day': 'mon'}", CODE, NULL, NULL);
    char(*h2)[PROTO_HASH_HEX] = hashes_of(spec, "{'day': 'tue'}", CODE, NULL, NULL);
    char(*h3)[PROTO_HASH_HEX] = hashes_of(lit, "{'day': 'mon'}", CODE, NULL, NULL);
    char(*h4)[PROTO_HASH_HEX] = hashes_of(lit, "{'day': 'tue'}", CODE, NULL, NULL);
    assert_string_not_equal(h1[0], h2[0]);
    /* the rendered command is the same; DAGY_PARAMETERS is what a task sees as well */
    assert_string_equal(h1[0], h3[0]);
    assert_string_not_equal(h3[0], h4[0]);
    free(h1);
    free(h2);
    free(h3);
    free(h4);
}

static void test_parameter_and_kwargs_key_order_does_not_matter(void **state)
{
    const char *s1 = "{'spec_version': 1, 'name': 'f', 'tasks': [{'name': 't', 'callable': "
                     "'m:f', 'kwargs': {'x': 1, 'y': [1.5, {'b': 2, 'a': null}]}, "
                     "'env': {'A': '1', 'B': '2'}}]}";
    const char *s2 = "{'spec_version': 1, 'name': 'f', 'tasks': [{'name': 't', 'callable': "
                     "'m:f', 'kwargs': {'y': [1.5, {'a': null, 'b': 2}], 'x': 1}, "
                     "'env': {'B': '2', 'A': '1'}}]}";
    char(*h1)[PROTO_HASH_HEX] = hashes_of(s1, "{'p': 1, 'q': 'x'}", CODE, NULL, NULL);
    char(*h2)[PROTO_HASH_HEX] = hashes_of(s2, "{'q': 'x', 'p': 1}", CODE, NULL, NULL);
    assert_string_equal(h1[0], h2[0]);
    free(h1);
    free(h2);
}

static void test_kwargs_env_callable_code_and_deps_each_count(void **state)
{
    const char *base = "{'spec_version': 1, 'name': 'f', 'tasks': [{'name': 't', 'callable': "
                       "'m:f', 'kwargs': {'x': 1}, 'env': {'A': '1'}}]}";
    const char *kw = "{'spec_version': 1, 'name': 'f', 'tasks': [{'name': 't', 'callable': "
                     "'m:f', 'kwargs': {'x': 2}, 'env': {'A': '1'}}]}";
    const char *env = "{'spec_version': 1, 'name': 'f', 'tasks': [{'name': 't', 'callable': "
                      "'m:f', 'kwargs': {'x': 1}, 'env': {'A': '2'}}]}";
    const char *fn = "{'spec_version': 1, 'name': 'f', 'tasks': [{'name': 't', 'callable': "
                     "'m:g', 'kwargs': {'x': 1}, 'env': {'A': '1'}}]}";
    const char *const deps[] = {"s3://b/pkg.zip#sha256=" CODE, NULL};
    char(*h0)[PROTO_HASH_HEX] = hashes_of(base, NULL, CODE, NULL, NULL);
    char(*h[5])[PROTO_HASH_HEX] = {
        hashes_of(kw, NULL, CODE, NULL, NULL),   hashes_of(env, NULL, CODE, NULL, NULL),
        hashes_of(fn, NULL, CODE, NULL, NULL),   hashes_of(base, NULL, CODE2, NULL, NULL),
        hashes_of(base, NULL, CODE, deps, NULL),
    };
    for (int i = 0; i < 5; i++) {
        assert_string_not_equal(h0[0], h[i][0]);
        free(h[i]);
    }
    free(h0);
}

static void test_known_vector_pins_the_serialization(void **state)
{
    /* If this changes, every stored task_hash stops matching: bump the version line instead
     * (docs/agent.md documents version 1). */
    const char *spec = "{'spec_version': 1, 'name': 'f', 'tasks': ["
                       "{'name': 'a', 'command': ['echo', 'hi'], 'env': {'K': 'v'}}]}";
    char(*h)[PROTO_HASH_HEX] = hashes_of(spec, "{'day': 'mon'}", CODE, NULL, NULL);
    /* sha256 of exactly the documented serialization */
    const char *text = "dagy-task-hash 1\n"
                       "name 1:a\n"
                       "command 2\n"
                       "a 4:echo\n"
                       "a 2:hi\n"
                       "env 1\n"
                       "e 3:K=v\n"
                       "parameters 13:{\"day\":\"mon\"}\n"
                       "code 64:" CODE "\n"
                       "deps 0\n"
                       "upstream 0\n";
    char want[65];
    sigv4_sha256_hex(text, strlen(text), want);
    assert_string_equal(h[0], want);
    free(h);
}

static void test_canonical_json(void **state)
{
    char *in = q("{'b': [1, 2.5, -0, 1e300, 'x\\u0001\\\"'], 'a': {'z': true, 'y': false}, "
                 "'c': null}");
    cJSON *v = cJSON_Parse(in);
    char *out = proto_canonical_json(v);
    assert_string_equal(out, "{\"a\":{\"y\":false,\"z\":true},\"b\":[1,2.5,0,1e+300,"
                             "\"x\\u0001\\\"\"],\"c\":null}");
    free(out);
    cJSON_Delete(v);
    free(in);
}

static void test_code_digest_order_independent_and_skips(void **state)
{
    char d1[PROTO_HASH_HEX], d2[PROTO_HASH_HEX], d3[PROTO_HASH_HEX];
    proto_code_digest *a = proto_code_digest_new();
    proto_code_digest_add(a, "flows/x.py", CODE);
    proto_code_digest_add(a, "data.csv", CODE3);
    proto_code_digest_finish(a, d1);
    proto_code_digest *b = proto_code_digest_new();
    proto_code_digest_add(b, "data.csv", CODE3);
    proto_code_digest_add(b, "flows/x.py", CODE);
    proto_code_digest_finish(b, d2);
    proto_code_digest *c = proto_code_digest_new();
    proto_code_digest_add(c, "data.csv", CODE3);
    proto_code_digest_add(c, "flows/x.py", CODE2);
    proto_code_digest_finish(c, d3);
    assert_string_equal(d1, d2);
    assert_string_not_equal(d1, d3);
    assert_true(proto_code_digest_skip("flow_spec.json"));
    assert_true(proto_code_digest_skip("metadata.json"));
    assert_true(proto_code_digest_skip("flows/__pycache__/x.cpython-311.pyc"));
    assert_true(proto_code_digest_skip("__pycache__/y.pyc"));
    assert_true(proto_code_digest_skip(".git/objects/ab/cdef"));
    assert_true(proto_code_digest_skip("vendor/.git/HEAD"));
    assert_false(proto_code_digest_skip("my.git/HEAD"));
    assert_false(proto_code_digest_skip("flows/__pycache__x.py"));
    assert_false(proto_code_digest_skip("flows/flow_spec.json"));
    assert_false(proto_code_digest_skip("flows/x.py"));
}

/* A flow directory holding only flow_spec.json has an empty code digest (UBSan caught a
 * qsort of a NULL array here before the fix). */
static void test_empty_code_digest(void **state)
{
    char d[PROTO_HASH_HEX], e[PROTO_HASH_HEX];
    proto_code_digest_finish(proto_code_digest_new(), d);
    proto_code_digest_finish(proto_code_digest_new(), e);
    assert_int_equal(strlen(d), 64);
    assert_string_equal(d, e);
}

static void test_cyclic_spec_is_refused(void **state)
{
    flowspec *s = NULL;
    char(*h)[PROTO_HASH_HEX] = hashes_of(CHAIN("['echo', 'c']"), NULL, CODE, NULL, &s);
    /* make a -> d a cycle by hand (the parser would refuse it) */
    size_t *up = realloc(s->tasks[0].upstream, sizeof *up);
    up[0] = 3;
    s->tasks[0].upstream = up;
    s->tasks[0].n_upstream = 1;
    proto_hash_ctx ctx = {CODE, NULL, NULL};
    assert_int_equal(proto_task_hashes(s, &ctx, h), -EINVAL);
    flowspec_free(s);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_definition_same_hash),
        cmocka_unit_test(test_changed_task_changes_it_and_everything_downstream_only),
        cmocka_unit_test(test_argument_boundaries_are_framed),
        cmocka_unit_test(test_templates_hash_as_rendered_and_parameters_count),
        cmocka_unit_test(test_parameter_and_kwargs_key_order_does_not_matter),
        cmocka_unit_test(test_kwargs_env_callable_code_and_deps_each_count),
        cmocka_unit_test(test_known_vector_pins_the_serialization),
        cmocka_unit_test(test_canonical_json),
        cmocka_unit_test(test_code_digest_order_independent_and_skips),
        cmocka_unit_test(test_empty_code_digest),
        cmocka_unit_test(test_cyclic_spec_is_refused),
        cmocka_unit_test(test_map_hash_covers_allow_failures_not_max_parallel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
