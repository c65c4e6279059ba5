/* sha256.h - SHA-256 (FIPS 180-4) for the agent's local path: code digests, task hashes, the
 * hashes of stored results. Self-contained, without OpenSSL.
 *
 * Why not OpenSSL: a local run's only use of libcrypto was hashing, and it paid for it twice at
 * start-up: the dynamic loader's relocations of libcrypto.so (~0.7 ms here) and, on the first
 * EVP digest, the library context (openssl.cnf, the default provider: ~0.9 ms). The AWS side
 * (SigV4's HMAC, TLS, artifact checksums) keeps OpenSSL, in the agent's AWS module.
 * tests/unit/test_proto_sha256.c checks this against OpenSSL on every length up to 1 KiB and on
 * split updates. */
#ifndef DAGY_PROTO_SHA256_H
#define DAGY_PROTO_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_SHA256_LEN 32

typedef struct {
    uint32_t h[8];
    uint64_t bytes;        /* message length so far */
    unsigned char buf[64]; /* a partial block */
    size_t fill;           /* bytes in buf */
} proto_sha256;

void proto_sha256_init(proto_sha256 *s);
void proto_sha256_update(proto_sha256 *s, const void *data, size_t len);
/* Writes the digest; s may be initialised again afterwards. */
void proto_sha256_final(proto_sha256 *s, unsigned char md[PROTO_SHA256_LEN]);
/* Lowercase hex of in[0..n) into out (2n+1 bytes). */
void proto_hex(const unsigned char *in, size_t n, char *out);
/* The SHA-256 of data[0..len) in lowercase hex (65 bytes with the NUL). */
void proto_sha256_hex(const void *data, size_t len, char out[65]);

#endif
