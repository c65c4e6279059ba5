/* test_proto_jsonnul.c - finding \u0000 escapes in JSON text (cJSON cuts strings there): exact
 * detection inside strings only, the marked parse, and the path of the first NUL. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/jsonnul.h"

static bool has(const char *s)
{
    return proto_json_has_nul(s, strlen(s));
}

static void detects_nul_escapes_inside_strings_only(void **state)
{
    (void)state;
    assert_true(has("\"a\\u0000b\""));
    assert_true(has("{\"k\\u0000\": 1}"));
    assert_true(has("[\"x\", \"\\\\\", \"\\u0000\"]")); /* after an escaped backslash */
    assert_true(has("[\"\\\"\\u0000\"]"));              /* after an escaped quote */
    assert_false(has("\"a\\\\u0000b\""));               /* "\\" then u0000: six characters */
    assert_true(has("\"\\u0001\\u00000\""));            /* \u0000, then a plain 0 */
    assert_false(has(""));
    assert_false(has("{\"a\": \"\\u00e9\"}"));
    assert_false(has("\"abc\\u000\""));
    assert_false(proto_json_has_nul(NULL, 0));
    /* Cut at len: the escape must be whole inside the text. */
    assert_false(proto_json_has_nul("\"\\u0000\"", 5));
}

static void marked_parse_finds_every_nul_string(void **state)
{
    (void)state;
    const char *t =
        "{\"a\": \"x\\u0000y\", \"b\": \"plain\", \"c\": [\"\\u0000\"], \"d\\u0000\": 1}";
    char marker[4];
    cJSON *j = proto_json_parse_nul_marked(t, strlen(t), marker);
    assert_non_null(j);
    assert_true(proto_json_holds(cJSON_GetObjectItem(j, "a"), marker));
    assert_false(proto_json_holds(cJSON_GetObjectItem(j, "b"), marker));
    assert_true(proto_json_holds(cJSON_GetObjectItem(j, "c"), marker));
    assert_int_equal(strlen(cJSON_GetObjectItem(j, "a")->valuestring), 5); /* x, 3 bytes, y */
    assert_true(proto_json_holds(j, marker));
    cJSON_Delete(j);
}

/* The marker is a character the text does not hold, raw or escaped. */
static void marker_avoids_characters_of_the_text(void **state)
{
    (void)state;
    const char *t = "[\"\\uFDD0 \xef\xb7\x91 \\ufdd2\", \"\\u0000\"]";
    char marker[4];
    cJSON *j = proto_json_parse_nul_marked(t, strlen(t), marker);
    assert_non_null(j);
    assert_string_equal(marker, "\xef\xb7\x93"); /* U+FDD3, the first free one */
    assert_false(proto_json_holds(cJSON_GetArrayItem(j, 0), marker));
    assert_true(proto_json_holds(cJSON_GetArrayItem(j, 1), marker));
    cJSON_Delete(j);
    /* A text holding all 32 candidates cannot be marked: the path falls back to line/column. */
    char big[600] = "[\"";
    for (unsigned k = 0; k < 32; k++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "\\u%04X", 0xFDD0 + k);
    strcat(big, "\",\n \"\\u0000\"]");
    assert_null(proto_json_parse_nul_marked(big, strlen(big), marker));
    char where[64];
    proto_json_nul_where(big, strlen(big), where, sizeof where);
    assert_string_equal(where, "line 2, column 3");
}

static void where_names_the_path(void **state)
{
    (void)state;
    char where[128];
    const char *cases[][2] = {
        {"{\"day\": \"a\\u0000\"}", "day"},
        {"{\"x\": [1, {\"y\": \"\\u0000\"}]}", "x[1].y"},
        {"[{\"run_id\": \"ok\"}, {\"run_id\": \"a\\u0000b\"}]", "[1].run_id"},
        {"{\"a b\": \"\\u0000\"}", "\"a b\""},
        {"{\"p\": {\"k\\u0000\": 1}}", "p.<member name>"},
        {"\"\\u0000\"", "line 1, column 2"},
        {"{\"a\": \"\\u0000\" oops", "line 1, column 8"}, /* not JSON: line and column */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proto_json_nul_where(cases[i][0], strlen(cases[i][0]), where, sizeof where);
        if (strcmp(where, cases[i][1]))
            fail_msg("%s: want %s, got %s", cases[i][0], cases[i][1], where);
    }
    char tiny[4];
    proto_json_nul_where(cases[1][0], strlen(cases[1][0]), tiny, sizeof tiny);
    assert_true(strlen(tiny) < sizeof tiny);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(detects_nul_escapes_inside_strings_only),
        cmocka_unit_test(marked_parse_finds_every_nul_string),
        cmocka_unit_test(marker_avoids_characters_of_the_text),
        cmocka_unit_test(where_names_the_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
