/* test_s3.c - strict parsing of s3:// URIs with an optional #sha256= fragment. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fetch/aws.h"
#include "fetch/creds.h"

static void parses_bucket_key_and_checksum(void **state)
{
    char *b, *k, *h;
    assert_int_equal(fetch_s3_parse_uri("s3://my-bucket/flows/etl/1.0/artifact.zip", &b, &k, &h),
                     0);
    assert_string_equal(b, "my-bucket");
    assert_string_equal(k, "flows/etl/1.0/artifact.zip");
    assert_null(h);
    free(b);
    free(k);
    const char *u = "s3://b.with.dots/a b+c=d,%e/\xc3\xa9?x#sha256="
                    "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
    assert_int_equal(fetch_s3_parse_uri(u, &b, &k, &h), 0);
    assert_string_equal(b, "b.with.dots");
    assert_string_equal(k, "a b+c=d,%e/\xc3\xa9?x");
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    free(b);
    free(k);
    free(h);
}

static void rejects_malformed_uris(void **state)
{
    const char *bad[] = {
        "",
        "s3:/b/k",
        "S3://bkt/k",
        "https://bkt.s3.amazonaws.com/k",
        "s3://bkt",
        "s3://bkt/",
        "s3:///k",
        "s3://b/k",
        "s3://Bucket/k",
        "s3://bkt_x/k",
        "s3://-bkt/k",
        "s3://bkt-/k",
        "s3://bk..t/k",
        "s3://bkt/k#",
        "s3://bkt/k#sha256=",
        "s3://bkt/k#sha256=abc",
        "s3://bkt/k#sha256="
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        "s3://bkt/k#sha256="
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
        "s3://bkt/k#md5=d41d8cd98f00b204e9800998ecf8427e",
        "s3://bkt/invalid-\xff-utf8",
        "s3://bkt/cut-\xe2\x82",
        "s3://bkt/#sha256="
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *b = (char *)1, *k = (char *)1, *h = (char *)1;
        if (fetch_s3_parse_uri(bad[i], &b, &k, &h) != -EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_null(b);
        assert_null(k);
        assert_null(h);
    }
    char *b, *k, *h;
    assert_int_equal(fetch_s3_parse_uri(NULL, &b, &k, &h), -EINVAL);
}

static void key_length_limit(void **state)
{
    char uri[1200] = "s3://bkt/";
    memset(uri + 9, 'k', 1024);
    uri[9 + 1024] = '\0';
    char *b, *k, *h;
    assert_int_equal(fetch_s3_parse_uri(uri, &b, &k, &h), 0);
    assert_int_equal(strlen(k), 1024);
    free(b);
    free(k);
    uri[9 + 1024] = 'k';
    uri[9 + 1025] = '\0';
    assert_int_equal(fetch_s3_parse_uri(uri, &b, &k, &h), -EINVAL);
}

/* The bucket-name rule shared by URIs, uploads and DAGY_TRACES_BUCKET / DAGY_RESULTS_BUCKET. */
static void bucket_name_rule(void **state)
{
    static const char *const good[] = {
        "abc", "my-traces", "a.b.c", "123bucket", "1.2.3", "my-ap-abcdefghij-s3alias", "x--y"};
    static const char *const bad[] = {"ab",
                                      "Not_A_Bucket",
                                      "UPPER",
                                      "-bucket",
                                      "bucket-",
                                      ".bucket",
                                      "bucket.",
                                      "my..bucket",
                                      "192.168.5.4",
                                      "1.2.3.4",
                                      "xn--bucket",
                                      "sthree-bucket",
                                      "bucket/key",
                                      "s3://bucket",
                                      "b\xc3\xa9"
                                      "cket",
                                      "has space",
                                      ""};
    char long_name[80];
    memset(long_name, 'b', 64);
    long_name[64] = '\0';
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (fetch_s3_bucket_problem(good[i]))
            fail_msg("refused %s: %s", good[i], fetch_s3_bucket_problem(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (!fetch_s3_bucket_problem(bad[i]))
            fail_msg("accepted %s", bad[i]);
    assert_non_null(fetch_s3_bucket_problem(long_name));
    long_name[63] = '\0';
    assert_null(fetch_s3_bucket_problem(long_name));
    assert_non_null(strstr(fetch_s3_bucket_problem("s3://b/k"), "not an s3:// URI"));
    char *b, *k, *h;
    assert_int_equal(fetch_s3_parse_uri("s3://192.168.5.4/k", &b, &k, &h), -EINVAL);
}

/* The S3 error parser on hostile bodies: bounded, cleaned, NULs and missing tags handled. */
static void s3_error_parser_on_hostile_bodies(void **state)
{
    char code[24], msg[32];
    static const char body[] = "<Error><Code>No\0Such\xffKeyWithAVeryLongName</Code>"
                               "<Message>line\none\x1b[2J</Message></Error>";
    fetch_http_resp r = {.status = 404, .body = (char *)body, .body_len = sizeof body - 1};
    fetch__s3_error_code(&r, code, sizeof code, msg, sizeof msg);
    assert_true(strlen(code) < sizeof code);
    assert_null(strchr(code, '\xff'));
    assert_string_equal(msg, "line one [2J");
    r.body = "<Error><Code>Unclosed";
    r.body_len = strlen(r.body);
    fetch__s3_error_code(&r, code, sizeof code, msg, sizeof msg);
    assert_string_equal(code, "NoSuchKey"); /* from the status */
    assert_string_equal(msg, "");
    r = (fetch_http_resp){.status = 412, .body = "", .body_len = 0};
    fetch__s3_error_code(&r, code, sizeof code, msg, sizeof msg);
    assert_string_equal(code, "PreconditionFailed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_bucket_key_and_checksum),
        cmocka_unit_test(rejects_malformed_uris),
        cmocka_unit_test(key_length_limit),
        cmocka_unit_test(bucket_name_rule),
        cmocka_unit_test(s3_error_parser_on_hostile_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
