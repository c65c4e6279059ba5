/* fuzz_sigv4.c - libFuzzer harness for SigV4 canonicalisation. The input is split at '\n' into
 * method, path, query, region, service, amz_date, then "name:value" headers. Checks: the
 * canonical request has one line per header plus the fixed ones; signing is deterministic;
 * SignedHeaders is the sorted lowercase list of names; the canonical query holds every parameter in
 * sorted order; the URI encoder keeps only unreserved bytes and %XX, and decodes back to its input.
 */
#include <ctype.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/sigv4.h"

#define MAX_FIELDS 32

/* Aborts unless enc is a valid RFC 3986 encoding of s[0..n) (slashes kept when keep). */
static void check_encoding(const char *s, size_t n, const char *enc, int keep)
{
    size_t o = 0;
    for (const char *p = enc; *p; p++) {
        unsigned char c = (unsigned char)*p, d;
        if (c == '%') {
            if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2]) ||
                islower((unsigned char)p[1]) || islower((unsigned char)p[2]))
                abort();
            char hex[3] = {p[1], p[2], 0};
            d = (unsigned char)strtoul(hex, NULL, 16);
            p += 2;
        } else if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
                   (keep && c == '/')) {
            d = c;
        } else {
            abort(); /* a reserved byte left unencoded */
        }
        if (o >= n || (unsigned char)s[o] != d)
            abort(); /* does not decode back to the input */
        o++;
    }
    if (o != n)
        abort();
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Aborts unless the canonical request is well formed for r and SignedHeaders is the sorted,
 * lowercased, ';'-joined list of the header names. */
static void check_canonical(const sigv4_request *r, const char *creq, const char *signed_hdrs)
{
    size_t lines = 0;
    for (const char *p = creq; *p; p++)
        lines += *p == '\n';
    if (lines != r->n_headers + 5)
        abort();
    char *names[MAX_FIELDS], want[8192] = "";
    size_t len = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        names[i] = strdup(r->headers[i].name);
        for (char *p = names[i]; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    qsort(names, r->n_headers, sizeof names[0], cmp_str);
    for (size_t i = 0; i < r->n_headers; i++) {
        len += (size_t)snprintf(want + len, sizeof want - len, "%s%s", i ? ";" : "", names[i]);
        free(names[i]);
    }
    if (len < sizeof want && strcmp(want, signed_hdrs) != 0)
        abort();
    if (!strstr(creq, signed_hdrs))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1), *fields[MAX_FIELDS];
    size_t nf = 0;
    if (!in)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    for (char *p = in; nf < MAX_FIELDS;) {
        fields[nf++] = p;
        char *nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    for (size_t i = 0; i < nf; i++) {
        size_t n = strlen(fields[i]);
        for (int keep = 0; keep < 2; keep++) {
            char *enc = sigv4_uri_encode(fields[i], n, keep);
            if (!enc)
                abort();
            check_encoding(fields[i], n, enc, keep);
            free(enc);
        }
    }
    sigv4_header hdrs[MAX_FIELDS];
    size_t nh = 0;
    for (size_t i = 6; i < nf; i++) {
        char *colon = strchr(fields[i], ':');
        if (!colon)
            continue;
        *colon = '\0';
        hdrs[nh++] = (sigv4_header){fields[i], colon + 1};
    }
    sigv4_request r = {.method = nf > 0 ? fields[0] : "GET",
                       .path = nf > 1 ? fields[1] : "/",
                       .query = nf > 2 ? fields[2] : NULL,
                       .region = nf > 3 ? fields[3] : "us-east-1",
                       .service = nf > 4 ? fields[4] : "s3",
                       .amz_date = nf > 5 ? fields[5] : "20260314T090000Z",
                       .headers = hdrs,
                       .n_headers = nh,
                       .payload_hash = SIGV4_EMPTY_SHA256};
    char *creq = sigv4_canonical_request(&r);
    char *sh = sigv4_signed_headers(&r);
    if (!creq || !sh)
        abort();
    check_canonical(&r, creq, sh);
    static const char secret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    char *a1 = NULL, *a2 = NULL, s1[65], s2[65];
    int rc1 = sigv4_authorization(&r, "AKIDEXAMPLE", secret, &a1, s1);
    int rc2 = sigv4_authorization(&r, "AKIDEXAMPLE", secret, &a2, s2);
    if (rc1 != rc2 || (rc1 == 0 && (strcmp(a1, a2) || strcmp(s1, s2))))
        abort(); /* signing is a pure function of the request */
    if (rc1 == 0 && strstr(a1, secret) && !memmem(data, size, secret, sizeof secret - 1))
        abort(); /* the secret never appears in the Authorization value */
    if (rc1 != 0 && strlen(r.amz_date) == 16)
        abort();
    free(a1);
    free(a2);
    free(creq);
    free(sh);
    free(in);
    return 0;
}
