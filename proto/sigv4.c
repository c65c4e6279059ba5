/* sigv4.c - AWS Signature Version 4: canonical request, string to sign, signing key and
 * Authorization value, with proto/sha256's SHA-256 and an HMAC-SHA256 on it (not OpenSSL's: its
 * EVP layer cost a plain-HTTP run ~0.4 MiB). Hand-written rather than libcurl's
 * CURLOPT_AWS_SIGV4 because curl 7.88 does not sort the canonical query string and signs inside
 * curl_easy_perform with the wall clock, so it can be neither checked against AWS's published
 * vectors nor reused for the headers we must control (payload hash of file uploads). */
#include "proto/sigv4.h"
#include "proto/sha256.h"
#include "proto/util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef proto_sbuf sbuf;

/* Returns the built string (caller frees) or NULL if any append failed. */
static char *sb_finish(sbuf *b)
{
    if (b->oom || !b->s) {
        free(b->s);
        return b->oom ? NULL : strdup("");
    }
    return b->s;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

char *sigv4_uri_encode(const char *s, size_t len, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

void sigv4_hex(const unsigned char *in, size_t n, char *out)
{
    proto_hex(in, n, out);
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    proto_sha256_hex(data, len, out);
}

/* HMAC-SHA256 (RFC 2104) of msg under key, on proto/sha256: OpenSSL's HMAC() started its EVP
 * layer (a provider, the method store: ~0.4 MiB resident) in runs that use no TLS. */
static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
    unsigned char k[64] = {0}, pad[64], inner[PROTO_SHA256_LEN];
    proto_sha256 s;
    if (klen > sizeof k) {
        proto_sha256_init(&s);
        proto_sha256_update(&s, key, klen);
        proto_sha256_final(&s, k);
    } else {
        memcpy(k, key, klen);
    }
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = k[i] ^ 0x36;
    proto_sha256_init(&s);
    proto_sha256_update(&s, pad, sizeof pad);
    proto_sha256_update(&s, msg, strlen(msg));
    proto_sha256_final(&s, inner);
    for (size_t i = 0; i < sizeof pad; i++)
        pad[i] = k[i] ^ 0x5c;
    proto_sha256_init(&s);
    proto_sha256_update(&s, pad, sizeof pad);
    proto_sha256_update(&s, inner, sizeof inner);
    proto_sha256_final(&s, out);
    explicit_bzero(k, sizeof k); /* derived from the secret key */
    explicit_bzero(pad, sizeof pad);
    explicit_bzero(&s, sizeof s);
}

void sigv4_signing_key(const char *secret, const char *date8, const char *region,
                       const char *service, unsigned char out[32])
{
    size_t slen = strlen(secret);
    char *k = malloc(slen + 5);
    unsigned char a[32], b[32];
    if (!k) {
        memset(out, 0, 32);
        return;
    }
    memcpy(k, "AWS4", 4);
    memcpy(k + 4, secret, slen + 1);
    hmac(k, slen + 4, date8, a);
    hmac(a, 32, region, b);
    hmac(b, 32, service, a);
    hmac(a, 32, "aws4_request", out);
    /* The derived keys are secret material: do not leave copies on the heap or stack. */
    explicit_bzero(k, slen + 4);
    explicit_bzero(a, sizeof a);
    explicit_bzero(b, sizeof b);
    free(k);
}

/* One canonical header: lowercase name, value trimmed with inner space runs collapsed. */
typedef struct {
    char *name;
    char *value;
} canon_hdr;

static char *lower_dup(const char *s)
{
    char *d = strdup(s);
    for (char *p = d; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d;
}

static char *trim_collapse(const char *v)
{
    char *d = malloc(strlen(v) + 1);
    if (!d)
        return NULL;
    size_t o = 0;
    while (*v == ' ' || *v == '\t')
        v++;
    for (; *v; v++) {
        bool sp = (*v == ' ' || *v == '\t');
        if (sp && (o == 0 || d[o - 1] == ' '))
            continue;
        d[o++] = sp ? ' ' : *v;
    }
    while (o > 0 && d[o - 1] == ' ')
        o--;
    d[o] = '\0';
    return d;
}

static int cmp_hdr(const void *x, const void *y)
{
    return strcmp(((const canon_hdr *)x)->name, ((const canon_hdr *)y)->name);
}

static void free_hdrs(canon_hdr *h, size_t n)
{
    for (size_t i = 0; h && i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

/* Sorted canonical copies of the request's headers, or NULL. */
static canon_hdr *canon_headers(const sigv4_request *r)
{
    canon_hdr *h = calloc(r->n_headers ? r->n_headers : 1, sizeof *h);
    if (!h)
        return NULL;
    for (size_t i = 0; i < r->n_headers; i++) {
        h[i].name = lower_dup(r->headers[i].name);
        h[i].value = trim_collapse(r->headers[i].value);
        if (!h[i].name || !h[i].value) {
            free_hdrs(h, r->n_headers);
            return NULL;
        }
    }
    qsort(h, r->n_headers, sizeof *h, cmp_hdr);
    return h;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The canonical query: parameters sorted by name then value, each "name=value" (a name with no
 * '=' gets an empty value, as "?lifecycle" signs "lifecycle="). */
static void put_canon_query(sbuf *b, const char *q)
{
    if (!q || !*q)
        return;
    size_t n = 1;
    for (const char *p = q; *p; p++)
        n += (*p == '&');
    char **parts = calloc(n, sizeof *parts);
    char *copy = strdup(q);
    if (!parts || !copy) {
        b->oom = true;
        free(parts);
        free(copy);
        return;
    }
    size_t k = 0;
    for (char *save = NULL, *t = strtok_r(copy, "&", &save); t; t = strtok_r(NULL, "&", &save))
        parts[k++] = t;
    /* Sorting "name=value" strings orders by name first except when one name is a prefix of
     * another; compare with '=' treated as the lowest byte to keep name order exact. */
    for (size_t i = 0; i < k; i++)
        for (char *p = parts[i]; *p; p++)
            if (*p == '=') {
                *p = '\001';
                break;
            }
    qsort(parts, k, sizeof *parts, cmp_str);
    for (size_t i = 0; i < k; i++) {
        char *eq = strchr(parts[i], '\001');
        if (i)
            proto_sbuf_puts(b, "&");
        if (eq) {
            proto_sbuf_put(b, parts[i], (size_t)(eq - parts[i]));
            proto_sbuf_puts(b, "=");
            proto_sbuf_puts(b, eq + 1);
        } else {
            proto_sbuf_puts(b, parts[i]);
            proto_sbuf_puts(b, "=");
        }
    }
    free(parts);
    free(copy);
}

char *sigv4_signed_headers(const sigv4_request *r)
{
    canon_hdr *h = canon_headers(r);
    if (!h)
        return NULL;
    sbuf b = {0};
    for (size_t i = 0; i < r->n_headers; i++) {
        if (i)
            proto_sbuf_puts(&b, ";");
        proto_sbuf_puts(&b, h[i].name);
    }
    free_hdrs(h, r->n_headers);
    return sb_finish(&b);
}

char *sigv4_canonical_request(const sigv4_request *r)
{
    if (!r->method || !r->payload_hash)
        return NULL;
    canon_hdr *h = canon_headers(r);
    if (!h)
        return NULL;
    sbuf b = {0};
    proto_sbuf_puts(&b, r->method);
    proto_sbuf_puts(&b, "\n");
    proto_sbuf_puts(&b, r->path && *r->path ? r->path : "/");
    proto_sbuf_puts(&b, "\n");
    put_canon_query(&b, r->query);
    proto_sbuf_puts(&b, "\n");
    for (size_t i = 0; i < r->n_headers; i++) {
        proto_sbuf_puts(&b, h[i].name);
        proto_sbuf_puts(&b, ":");
        proto_sbuf_puts(&b, h[i].value);
        proto_sbuf_puts(&b, "\n");
    }
    proto_sbuf_puts(&b, "\n");
    for (size_t i = 0; i < r->n_headers; i++) {
        if (i)
            proto_sbuf_puts(&b, ";");
        proto_sbuf_puts(&b, h[i].name);
    }
    proto_sbuf_puts(&b, "\n");
    proto_sbuf_puts(&b, r->payload_hash);
    free_hdrs(h, r->n_headers);
    return sb_finish(&b);
}

char *sigv4_string_to_sign(const sigv4_request *r, const char *canonical_request)
{
    char hash[65];
    if (!r->amz_date || strlen(r->amz_date) != 16)
        return NULL;
    sigv4_sha256_hex(canonical_request, strlen(canonical_request), hash);
    sbuf b = {0};
    proto_sbuf_puts(&b, "AWS4-HMAC-SHA256\n");
    proto_sbuf_puts(&b, r->amz_date);
    proto_sbuf_puts(&b, "\n");
    proto_sbuf_put(&b, r->amz_date, 8);
    proto_sbuf_puts(&b, "/");
    proto_sbuf_puts(&b, r->region);
    proto_sbuf_puts(&b, "/");
    proto_sbuf_puts(&b, r->service);
    proto_sbuf_puts(&b, "/aws4_request\n");
    proto_sbuf_puts(&b, hash);
    return sb_finish(&b);
}

int sigv4_authorization(const sigv4_request *r, const char *access_key, const char *secret,
                        char **out, char *signature_hex)
{
    if (!access_key || !secret || !r->region || !r->service || !r->amz_date ||
        strlen(r->amz_date) != 16)
        return -EINVAL;
    char *creq = sigv4_canonical_request(r);
    char *sts = creq ? sigv4_string_to_sign(r, creq) : NULL;
    char *signed_hdrs = sigv4_signed_headers(r);
    int rc = -ENOMEM;
    if (creq && sts && signed_hdrs) {
        char date8[9], sig[65];
        unsigned char key[32], mac[32];
        memcpy(date8, r->amz_date, 8);
        date8[8] = '\0';
        sigv4_signing_key(secret, date8, r->region, r->service, key);
        hmac(key, sizeof key, sts, mac);
        explicit_bzero(key, sizeof key);
        sigv4_hex(mac, sizeof mac, sig);
        sbuf b = {0};
        proto_sbuf_puts(&b, "AWS4-HMAC-SHA256 Credential=");
        proto_sbuf_puts(&b, access_key);
        proto_sbuf_puts(&b, "/");
        proto_sbuf_puts(&b, date8);
        proto_sbuf_puts(&b, "/");
        proto_sbuf_puts(&b, r->region);
        proto_sbuf_puts(&b, "/");
        proto_sbuf_puts(&b, r->service);
        proto_sbuf_puts(&b, "/aws4_request, SignedHeaders=");
        proto_sbuf_puts(&b, signed_hdrs);
        proto_sbuf_puts(&b, ", Signature=");
        proto_sbuf_puts(&b, sig);
        *out = sb_finish(&b);
        if (signature_hex)
            memcpy(signature_hex, sig, 65);
        rc = *out ? 0 : -ENOMEM;
    }
    free(creq);
    free(sts);
    free(signed_hdrs);
    return rc;
}

void sigv4_amz_date(long long unix_seconds, char out[17])
{
    time_t t = (time_t)unix_seconds;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}
