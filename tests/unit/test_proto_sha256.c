/* test_proto_sha256.c - proto/sha256.h against FIPS 180-4's examples and against OpenSSL on every
 * message length up to 1 KiB (each padding case: 55, 56, 63, 64 bytes...), whole and split into
 * updates of every size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "proto/sha256.h"

static void openssl_hex(const unsigned char *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    assert_int_equal(EVP_Digest(p, n, md, &len, EVP_sha256(), NULL), 1);
    proto_hex(md, 32, out);
}

static void test_fips_examples(void **state)
{
    char hex[65];
    proto_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    proto_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    proto_sha256_hex(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_every_length_matches_openssl(void **state)
{
    unsigned char msg[1024];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n <= sizeof msg; n++) {
        char want[65], got[65];
        openssl_hex(msg, n, want);
        proto_sha256_hex(msg, n, got);
        assert_string_equal(got, want);
    }
}

static void test_split_updates_match_one_update(void **state)
{
    unsigned char msg[300];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (unsigned char)(i ^ 0x5a);
    char want[65];
    openssl_hex(msg, sizeof msg, want);
    for (size_t step = 1; step <= 130; step++) {
        proto_sha256 s;
        unsigned char md[32];
        char got[65];
        proto_sha256_init(&s);
        for (size_t off = 0; off < sizeof msg; off += step)
            proto_sha256_update(&s, msg + off, off + step > sizeof msg ? sizeof msg - off : step);
        proto_sha256_final(&s, md);
        proto_hex(md, 32, got);
        assert_string_equal(got, want);
    }
}

static void test_a_million_a(void **state)
{
    proto_sha256 s;
    unsigned char md[32], a[1000];
    char hex[65];
    memset(a, 'a', sizeof a);
    proto_sha256_init(&s);
    for (int i = 0; i < 1000; i++)
        proto_sha256_update(&s, a, sizeof a);
    proto_sha256_final(&s, md);
    proto_hex(md, 32, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fips_examples),
        cmocka_unit_test(test_every_length_matches_openssl),
        cmocka_unit_test(test_split_updates_match_one_update),
        cmocka_unit_test(test_a_million_a),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
