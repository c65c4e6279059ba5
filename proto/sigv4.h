/* sigv4.h - AWS Signature Version 4 (header-based) signing, pure functions with no I/O.
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
 * The caller gives the already URI-encoded path and query and every header to sign; this
 * module builds the canonical request, the string to sign and the Authorization value.
 * Nothing here logs: callers must never log the Authorization value or the secret. */
#ifndef DAGY_SIGV4_H
#define DAGY_SIGV4_H

#include <stdbool.h>
#include <stddef.h>

#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct {
    const char *name;  /* any case; lowercased in the canonical form */
    const char *value; /* trimmed, inner runs of spaces collapsed */
} sigv4_header;

typedef struct {
    const char *method;          /* "GET", "PUT", "POST" */
    const char *path;            /* URI-encoded once, e.g. "/bucket/my%20key" ("/" if empty) */
    const char *query;           /* encoded "a=b&c=d" in any order, or NULL / "" */
    const sigv4_header *headers; /* every header to sign, including host and x-amz-date */
    size_t n_headers;
    const char *payload_hash; /* lowercase hex SHA-256 of the body */
    const char *amz_date;     /* "YYYYMMDDTHHMMSSZ" (same as the x-amz-date header) */
    const char *region;
    const char *service; /* "s3", "dynamodb", "ecs", ... */
} sigv4_request;

/* Percent-encodes s (len bytes) per RFC 3986: unreserved A-Z a-z 0-9 - _ . ~ stay, everything
 * else (including every byte of UTF-8 sequences) becomes %XX with uppercase hex; '/' is kept
 * when keep_slash. Returns a malloc'd string or NULL on allocation failure. */
char *sigv4_uri_encode(const char *s, size_t len, bool keep_slash);

/* Lowercase hex SHA-256 of data into out (65 bytes with the NUL). */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void sigv4_hex(const unsigned char *in, size_t n, char *out);

/* The signing key HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date8), region), service), "aws4_request"). */
void sigv4_signing_key(const char *secret, const char *date8, const char *region,
                       const char *service, unsigned char out[32]);

/* The canonical request text (malloc'd), or NULL on allocation failure or bad input. */
char *sigv4_canonical_request(const sigv4_request *r);
/* The string to sign for a canonical request (malloc'd), or NULL. */
char *sigv4_string_to_sign(const sigv4_request *r, const char *canonical_request);
/* "name1;name2;..." of the signed headers, sorted (malloc'd), or NULL. */
char *sigv4_signed_headers(const sigv4_request *r);

/* The full Authorization header value ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=...") malloc'd in *out; signature_hex (65 bytes) optionally receives the signature
 * for tests. Returns 0, -EINVAL or -ENOMEM. */
int sigv4_authorization(const sigv4_request *r, const char *access_key, const char *secret,
                        char **out, char *signature_hex);

/* Formats a UNIX time as the x-amz-date value "YYYYMMDDTHHMMSSZ" (17 bytes with NUL). */
void sigv4_amz_date(long long unix_seconds, char out[17]);

#endif
