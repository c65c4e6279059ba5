/* test_proto_names.c - the one rule for names and ids (proto_name_check) and the one encoder of a
 * name as a path segment (proto_name_encode): every rule, the edges, adversarial bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/names.h"

/* A name of n copies of c (n <= 300). */
static const char *repeat(char c, size_t n)
{
    static char buf[301];
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

static void check_accepts_the_contract_alphabet(void **state)
{
    (void)state;
    const char *ok[] = {"a",    "Z",       "0",   "_",     "-",       "etl_pipeline-1.0",
                        ".x",   ".hidden", "..x", "a.b",   "a..b",    "...",
                        "x.",   "x..",     "-rf", "_none", "A-z_0.9", "traceback.txt",
                        "a-b_c"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!proto_name_check(PROTO_NAME_TASK, ok[i], NULL, 0))
            fail_msg("refused valid name \"%s\"", ok[i]);
    assert_true(proto_name_check(PROTO_NAME_RUN_ID, repeat('r', 128), NULL, 0));
}

static void check_refuses_dot_dotdot_empty_and_long(void **state)
{
    (void)state;
    char err[256];
    assert_false(proto_name_check(PROTO_NAME_TASK, ".", err, sizeof err));
    assert_string_equal(err, "invalid task name \".\": may not be \".\" or \"..\"");
    assert_false(proto_name_check(PROTO_NAME_RUN_ID, "..", err, sizeof err));
    assert_string_equal(err, "invalid run id \"..\": may not be \".\" or \"..\"");
    assert_false(proto_name_check(PROTO_NAME_FLOW, "", err, sizeof err));
    assert_string_equal(err, "invalid flow name \"\": is empty");
    assert_false(proto_name_check(PROTO_NAME_ORG, NULL, err, sizeof err));
    assert_string_equal(err, "invalid org id \"\": is empty");
    assert_false(proto_name_check(PROTO_NAME_SLUG, repeat('s', 129), err, sizeof err));
    assert_non_null(strstr(err, "is longer than 128 characters"));
    /* The value is quoted cut to 64 bytes. */
    assert_non_null(strstr(err, repeat('s', 64)));
    assert_null(strstr(err, repeat('s', 65)));
    assert_non_null(strstr(err, "...\""));
}

static void check_refuses_every_other_byte(void **state)
{
    (void)state;
    for (int c = 1; c < 256; c++) {
        char s[4] = {'a', (char)c, 'b', '\0'};
        bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
        if (proto_name_check(PROTO_NAME_TASK, s, NULL, 0) != want)
            fail_msg("byte 0x%02x: expected %s", c, want ? "valid" : "invalid");
    }
    const char *bad[] = {"a/b",
                         "../x",
                         "a b",
                         "caf\xc3\xa9",
                         "a:b",
                         "a%2Eb",
                         "a\\b",
                         "$(rm)",
                         "a\nb",
                         "\xef\xbb\xbf"
                         "a",
                         "a\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(proto_name_check(PROTO_NAME_TASK, bad[i], NULL, 0));
}

/* The message never carries raw control bytes or quotes: it is safe to log and print. */
static void check_message_escapes_the_value(void **state)
{
    (void)state;
    char err[256];
    assert_false(proto_name_check(PROTO_NAME_DEPLOYMENT, "a\"b\x1b[31m\xff", err, sizeof err));
    assert_string_equal(err, "invalid deployment name \"a\\x22b\\x1B[31m\\xFF\": may contain only "
                             "letters, digits and _ . -");
    /* A small buffer is cut, still terminated. */
    char small[12];
    assert_false(proto_name_check(PROTO_NAME_TASK, "..", small, sizeof small));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_false(proto_name_check(PROTO_NAME_TASK, "..", err, 0)); /* errlen 0: nothing written */
}

static void nouns_name_every_kind(void **state)
{
    (void)state;
    assert_string_equal(proto_name_noun(PROTO_NAME_RUN_ID), "run id");
    assert_string_equal(proto_name_noun(PROTO_NAME_TASK), "task name");
    assert_string_equal(proto_name_noun(PROTO_NAME_ENVIRONMENT), "environment");
    assert_string_equal(proto_name_noun((proto_name_kind)99), "name");
}

/* The encoded form of s (asserts the returned length matches). */
static const char *enc(const char *s)
{
    static char out[PROTO_NAME_ENCODED_MAX];
    size_t n = proto_name_encode(s, out, sizeof out);
    assert_int_equal(n, strlen(out));
    return out;
}

static void encode_escapes_a_leading_dot_only(void **state)
{
    (void)state;
    assert_string_equal(enc("extract"), "extract");
    assert_string_equal(enc("a.b"), "a.b");
    assert_string_equal(enc(".x"), "%2Ex");
    assert_string_equal(enc(".hidden"), "%2Ehidden");
    assert_string_equal(enc("..x"), "%2E.x");
    assert_string_equal(enc("..."), "%2E..");
    /* Even names the check refuses never encode to "." or "..". */
    assert_string_equal(enc("."), "%2E");
    assert_string_equal(enc(".."), "%2E.");
    assert_string_equal(enc("a/../b"), "a%2F..%2Fb");
    assert_string_equal(enc("a b%"), "a%20b%25");
    assert_string_equal(enc("\xff"), "%FF");
    assert_string_equal(enc(""), "");
}

/* Distinct valid names encode to distinct segments ('%' is not a name character). */
static void encode_is_injective_on_valid_names(void **state)
{
    (void)state;
    const char *names[] = {".x", "%2Ex", "_x", "x", ".", "x."};
    char a[PROTO_NAME_ENCODED_MAX], b[PROTO_NAME_ENCODED_MAX];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        for (size_t j = 0; j < sizeof names / sizeof names[0]; j++) {
            if (i == j || !proto_name_check(PROTO_NAME_TASK, names[i], NULL, 0) ||
                !proto_name_check(PROTO_NAME_TASK, names[j], NULL, 0))
                continue;
            proto_name_encode(names[i], a, sizeof a);
            proto_name_encode(names[j], b, sizeof b);
            assert_string_not_equal(a, b);
        }
}

static void encode_sizes_like_snprintf(void **state)
{
    (void)state;
    char out[PROTO_NAME_ENCODED_MAX];
    /* A 128-character name: as is, or 130 with a leading dot. */
    assert_int_equal(proto_name_encode(repeat('n', 128), out, sizeof out), 128);
    char dotted[129];
    dotted[0] = '.';
    memcpy(dotted + 1, repeat('n', 127), 128);
    assert_int_equal(proto_name_encode(dotted, out, sizeof out), 130);
    assert_memory_equal(out, "%2En", 4);
    /* The worst case fits PROTO_NAME_ENCODED_MAX exactly. */
    assert_int_equal(proto_name_encode(repeat(' ', 128), out, sizeof out), 3 * 128);
    assert_int_equal(strlen(out), 3 * 128);
    /* Too small a buffer: cut, terminated, and the needed length returned. */
    char small[4];
    assert_int_equal(proto_name_encode(".hidden", small, sizeof small), 9);
    assert_string_equal(small, "%2E");
    assert_int_equal(proto_name_encode(".hidden", NULL, 0), 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(check_accepts_the_contract_alphabet),
        cmocka_unit_test(check_refuses_dot_dotdot_empty_and_long),
        cmocka_unit_test(check_refuses_every_other_byte),
        cmocka_unit_test(check_message_escapes_the_value),
        cmocka_unit_test(nouns_name_every_kind),
        cmocka_unit_test(encode_escapes_a_leading_dot_only),
        cmocka_unit_test(encode_is_injective_on_valid_names),
        cmocka_unit_test(encode_sizes_like_snprintf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
