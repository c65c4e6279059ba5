/* test_sigv4.c - SigV4 against the worked examples AWS publishes (S3 "Signature Calculations for
 * the Authorization Header" and the general signing-key / IAM examples) and URI encoding of
 * tricky S3 keys. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/sigv4.h"

#define S3_KEY    "AKIAIOSFODNN7EXAMPLE"
#define S3_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

/* Signs r with the S3 example credentials and checks the signature. */
static void check_sig(const sigv4_request *r, const char *key, const char *secret,
                      const char *expected)
{
    char *auth = NULL, sig[65];
    assert_int_equal(sigv4_authorization(r, key, secret, &auth, sig), 0);
    assert_string_equal(sig, expected);
    assert_non_null(strstr(auth, expected));
    free(auth);
}

static void s3_get_object_example(void **state)
{
    sigv4_header h[] = {{"Host", "examplebucket.s3.amazonaws.com"},
                        {"Range", "bytes=0-9"},
                        {"x-amz-content-sha256", SIGV4_EMPTY_SHA256},
                        {"x-amz-date", "20130524T000000Z"}};
    sigv4_request r = {"GET",       "/test.txt", NULL, h, 4, SIGV4_EMPTY_SHA256, "20130524T000000Z",
                       "us-east-1", "s3"};
    char *creq = sigv4_canonical_request(&r);
    assert_string_equal(creq, "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\n"
                              "range:bytes=0-9\nx-amz-content-sha256:" SIGV4_EMPTY_SHA256 "\n"
                              "x-amz-date:20130524T000000Z\n\n"
                              "host;range;x-amz-content-sha256;x-amz-date\n" SIGV4_EMPTY_SHA256);
    char *sts = sigv4_string_to_sign(&r, creq);
    assert_string_equal(sts, "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/"
                             "aws4_request\n"
                             "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    free(creq);
    free(sts);
    check_sig(&r, S3_KEY, S3_SECRET,
              "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    char *auth = NULL;
    assert_int_equal(sigv4_authorization(&r, S3_KEY, S3_SECRET, &auth, NULL), 0);
    assert_string_equal(auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/"
                              "us-east-1/s3/aws4_request, SignedHeaders=host;range;"
                              "x-amz-content-sha256;x-amz-date, Signature="
                              "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    free(auth);
}

static void s3_put_object_example(void **state)
{
    const char *body = "Welcome to Amazon S3.";
    char hash[65];
    sigv4_sha256_hex(body, strlen(body), hash);
    assert_string_equal(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    char *path = sigv4_uri_encode("/test$file.text", 15, true);
    assert_string_equal(path, "/test%24file.text");
    sigv4_header h[] = {{"x-amz-storage-class", "REDUCED_REDUNDANCY"},
                        {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                        {"Host", "examplebucket.s3.amazonaws.com"},
                        {"x-amz-date", "20130524T000000Z"},
                        {"x-amz-content-sha256", hash}};
    sigv4_request r = {"PUT", path, NULL, h, 5, hash, "20130524T000000Z", "us-east-1", "s3"};
    check_sig(&r, S3_KEY, S3_SECRET,
              "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    free(path);
}

static void s3_get_bucket_lifecycle_example(void **state)
{
    sigv4_header h[] = {{"Host", "examplebucket.s3.amazonaws.com"},
                        {"x-amz-content-sha256", SIGV4_EMPTY_SHA256},
                        {"x-amz-date", "20130524T000000Z"}};
    sigv4_request r = {"GET",       "/", "lifecycle", h, 3, SIGV4_EMPTY_SHA256, "20130524T000000Z",
                       "us-east-1", "s3"};
    check_sig(&r, S3_KEY, S3_SECRET,
              "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

/* The query is given out of order on purpose: signing must sort it (curl 7.88 does not). */
static void s3_list_objects_example_sorts_query(void **state)
{
    sigv4_header h[] = {{"Host", "examplebucket.s3.amazonaws.com"},
                        {"x-amz-content-sha256", SIGV4_EMPTY_SHA256},
                        {"x-amz-date", "20130524T000000Z"}};
    sigv4_request r = {
        "GET",       "/", "prefix=J&max-keys=2", h, 3, SIGV4_EMPTY_SHA256, "20130524T000000Z",
        "us-east-1", "s3"};
    char *creq = sigv4_canonical_request(&r);
    assert_non_null(strstr(creq, "\nmax-keys=2&prefix=J\n"));
    free(creq);
    check_sig(&r, S3_KEY, S3_SECRET,
              "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

static void signing_key_derivation_example(void **state)
{
    unsigned char k[32];
    char hex[65];
    sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam",
                      k);
    sigv4_hex(k, 32, hex);
    assert_string_equal(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

/* "AWS4" + a 100-character secret is longer than SHA-256's block: HMAC hashes the key first;
 * "AWS4" + 60 characters fills the block exactly (values from Python's hmac module). */
static void signing_key_with_a_key_of_a_block_or_longer(void **state)
{
    unsigned char k[32];
    char hex[65], secret[101];
    memset(secret, 'x', 100);
    secret[100] = '\0';
    sigv4_signing_key(secret, "20120215", "us-east-1", "iam", k);
    sigv4_hex(k, 32, hex);
    assert_string_equal(hex, "5ee5f84bf29dda1063275e2d5d65348c46cee95c29e51945e45c407bffe67f61");
    memset(secret, 'y', 60);
    secret[60] = '\0';
    sigv4_signing_key(secret, "20120215", "us-east-1", "iam", k);
    sigv4_hex(k, 32, hex);
    assert_string_equal(hex, "77514b9bcf0e1a1010ece04082b1f53558692ed994aac8931c071946f5167b04");
}

static void iam_list_users_example(void **state)
{
    sigv4_header h[] = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
                        {"Host", "iam.amazonaws.com"},
                        {"X-Amz-Date", "20150830T123600Z"}};
    sigv4_request r = {"GET",
                       "/",
                       "Version=2010-05-08&Action=ListUsers",
                       h,
                       3,
                       SIGV4_EMPTY_SHA256,
                       "20150830T123600Z",
                       "us-east-1",
                       "iam"};
    check_sig(&r, S3_KEY, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
              "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
}

static void header_values_are_trimmed_and_collapsed(void **state)
{
    sigv4_header h[] = {{"X-Custom", "  a   b  c "}, {"host", "h"}};
    sigv4_request r = {"GET",       "",  NULL, h, 2, SIGV4_EMPTY_SHA256, "20130524T000000Z",
                       "us-east-1", "s3"};
    char *creq = sigv4_canonical_request(&r);
    assert_string_equal(creq,
                        "GET\n/\n\nhost:h\nx-custom:a b c\n\nhost;x-custom\n" SIGV4_EMPTY_SHA256);
    free(creq);
}

static void uri_encoding_of_tricky_s3_keys(void **state)
{
    struct {
        const char *in, *out;
    } cases[] = {
        {"dir/a b.txt", "dir/a%20b.txt"},
        {"a+b=c,d%e", "a%2Bb%3Dc%2Cd%25e"},
        {"caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.tgz", "caf%C3%A9/%E6%97%A5%E6%9C%AC.tgz"},
        {"~user/x-y_z.1", "~user/x-y_z.1"},
        {"a//b/", "a//b/"},
        {"q?#&*", "q%3F%23%26%2A"},
        {"%20", "%2520"}, /* already-encoded text is encoded once more: keys are literal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *e = sigv4_uri_encode(cases[i].in, strlen(cases[i].in), true);
        assert_string_equal(e, cases[i].out);
        free(e);
    }
    char *e = sigv4_uri_encode("a/b", 3, false);
    assert_string_equal(e, "a%2Fb");
    free(e);
}

static void amz_date_format(void **state)
{
    char d[17];
    sigv4_amz_date(1369353600LL, d);
    assert_string_equal(d, "20130524T000000Z");
}

static void bad_input_is_rejected(void **state)
{
    sigv4_request r = {"GET", "/", NULL, NULL, 0, SIGV4_EMPTY_SHA256, "2013", "us-east-1", "s3"};
    char *auth = NULL;
    assert_int_equal(sigv4_authorization(&r, S3_KEY, S3_SECRET, &auth, NULL), -22);
    assert_null(auth);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(s3_get_object_example),
        cmocka_unit_test(s3_put_object_example),
        cmocka_unit_test(s3_get_bucket_lifecycle_example),
        cmocka_unit_test(s3_list_objects_example_sorts_query),
        cmocka_unit_test(signing_key_derivation_example),
        cmocka_unit_test(signing_key_with_a_key_of_a_block_or_longer),
        cmocka_unit_test(iam_list_users_example),
        cmocka_unit_test(header_values_are_trimmed_and_collapsed),
        cmocka_unit_test(uri_encoding_of_tricky_s3_keys),
        cmocka_unit_test(amz_date_format),
        cmocka_unit_test(bad_input_is_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
