/* s3uri.c - the rules for S3 bucket names and s3:// URIs. No network code (no libcurl): the
 * agent's configuration checks them at start-up without loading its AWS module
 * (fetch/module/lazy.c). */
#include "fetch/aws.h"
#include "proto/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- URIs ---- */

/* Whether b[0..n) is four dot-separated groups of digits, like an IPv4 address. */
static bool looks_like_ipv4(const char *b, size_t n)
{
    int groups = 1, digits = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] == '.') {
            if (digits == 0)
                return false;
            groups++;
            digits = 0;
        } else if (isdigit((unsigned char)b[i])) {
            digits++;
        } else {
            return false;
        }
    }
    return groups == 4 && digits > 0;
}

/* S3's general purpose bucket naming rules (docs: "Bucket naming rules"), minus the suffixes
 * reserved at creation (-s3alias, --ol-s3), which access point aliases use in bucket position. */
static const char *bucket_problem(const char *b, size_t n)
{
    if (n < 3 || n > 63)
        return "it must be 3 to 63 characters long";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return "it may only hold lowercase letters, digits, '.' and '-'";
        if (c == '.' && i + 1 < n && b[i + 1] == '.')
            return "it must not hold two adjacent periods";
    }
    if (!isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
        return "it must begin and end with a letter or a digit";
    if (looks_like_ipv4(b, n))
        return "it must not be formatted as an IP address";
    if ((n >= 4 && !memcmp(b, "xn--", 4)) || (n >= 7 && !memcmp(b, "sthree-", 7)))
        return "it must not begin with the reserved prefix xn-- or sthree-";
    return NULL;
}

static bool bucket_name_ok(const char *b, size_t n)
{
    return bucket_problem(b, n) == NULL;
}

const char *fetch_s3_bucket_problem(const char *name)
{
    if (!name)
        return "it is missing";
    if (!strncmp(name, "s3://", 5))
        return "give the bucket's name only, not an s3:// URI";
    return bucket_problem(name, strlen(name));
}

int fetch_s3_parse_uri(const char *uri, char **bucket, char **key, char **sha256_hex)
{
    *bucket = *key = *sha256_hex = NULL;
    if (!uri || strncmp(uri, "s3://", 5) != 0)
        return -EINVAL;
    const char *b = uri + 5, *slash = strchr(b, '/');
    if (!slash || !bucket_name_ok(b, (size_t)(slash - b)))
        return -EINVAL;
    const char *k = slash + 1, *hash = strchr(k, '#');
    size_t klen = hash ? (size_t)(hash - k) : strlen(k);
    /* S3 keys are UTF-8 (and every message names the URI). */
    if (klen == 0 || klen > 1024 || !proto_utf8_valid(k, klen))
        return -EINVAL;
    char hex[65] = "";
    if (hash) {
        /* Only "#sha256=<64 hex>" is meaningful; any other fragment is a typo to report. */
        const char *h = hash + 1;
        if (strncmp(h, "sha256=", 7) != 0 || strlen(h + 7) != 64)
            return -EINVAL;
        for (int i = 0; i < 64; i++) {
            if (!isxdigit((unsigned char)h[7 + i]))
                return -EINVAL;
            hex[i] = (char)tolower((unsigned char)h[7 + i]);
        }
        hex[64] = '\0';
    }
    *bucket = strndup(b, (size_t)(slash - b));
    *key = strndup(k, klen);
    *sha256_hex = hash ? strdup(hex) : NULL;
    if (!*bucket || !*key || (hash && !*sha256_hex)) {
        free(*bucket);
        free(*key);
        free(*sha256_hex);
        *bucket = *key = *sha256_hex = NULL;
        return -ENOMEM;
    }
    return 0;
}
