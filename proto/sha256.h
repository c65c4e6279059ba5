/* sha256.h - SHA-256 for the agent's local path (code digests, task hashes, stored results),
 * on OpenSSL's SHA-256 functions rather than its EVP layer.
 *
 * Why: the first EVP digest of a process initialises OpenSSL's library context (reads
 * openssl.cnf, loads the default provider), about 0.9 ms here; a local run's only use of
 * OpenSSL is hashing, so it paid that on every start. The low-level functions compute the same
 * digest with no initialisation. The AWS side (SigV4's HMAC, TLS) keeps EVP. */
#ifndef DAGY_PROTO_SHA256_H
#define DAGY_PROTO_SHA256_H

#include <openssl/sha.h>
#include <stddef.h>

typedef struct {
    SHA256_CTX c;
} proto_sha256;

void proto_sha256_init(proto_sha256 *h);
void proto_sha256_update(proto_sha256 *h, const void *data, size_t len);
/* Writes the 32-byte digest; h may be initialised again afterwards. */
void proto_sha256_final(proto_sha256 *h, unsigned char md[32]);

#endif
