/* sha256.c - proto/sha256.h on OpenSSL's SHA256_Init/Update/Final (deprecated in OpenSSL 3.0 in
 * favour of EVP, but present, and free of EVP's library-context start-up: see the header). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "proto/sha256.h"

void proto_sha256_init(proto_sha256 *h)
{
    SHA256_Init(&h->c);
}

void proto_sha256_update(proto_sha256 *h, const void *data, size_t len)
{
    SHA256_Update(&h->c, data, len);
}

void proto_sha256_final(proto_sha256 *h, unsigned char md[32])
{
    SHA256_Final(md, &h->c);
}
