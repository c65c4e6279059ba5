/* names.c - the one rule for names and ids, and their encoding as path segments (names.h). */
#include "proto/names.h"

#include <stdio.h>
#include <string.h>

static const char *const nouns[] = {
    [PROTO_NAME_RUN_ID] = "run id",
    [PROTO_NAME_TASK] = "task name",
    [PROTO_NAME_FLOW] = "flow name",
    [PROTO_NAME_FLOW_VERSION] = "flow version",
    [PROTO_NAME_ORG] = "org id",
    [PROTO_NAME_SLUG] = "package slug",
    [PROTO_NAME_DEPLOYMENT] = "deployment name",
    [PROTO_NAME_ENVIRONMENT] = "environment",
    [PROTO_NAME_TASK_INSTANCE] = "task name",
};

const char *proto_name_noun(proto_name_kind kind)
{
    if ((size_t)kind < sizeof nouns / sizeof nouns[0] && nouns[kind])
        return nouns[kind];
    return "name";
}

static bool name_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* Quotes at most 64 bytes of s for an error message, printable ASCII only. */
static void quote(const char *s, char *out, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; s[i] && i < 64 && k + 5 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '\\' && c != '"')
            out[k++] = (char)c;
        else
            k += (size_t)snprintf(out + k, n - k, "\\x%02X", c);
    }
    if (strlen(s) > 64 && k + 4 < n)
        memcpy(out + k, "...", 3), k += 3;
    out[k < n ? k : n - 1] = '\0';
}

/* Length of the "[INDEX]" suffix of a map child's id (INDEX: 1-7 digits, no leading zero), or
 * 0 when s has none. */
static size_t instance_suffix(const char *s, size_t len)
{
    if (len < 3 || s[len - 1] != ']')
        return 0;
    size_t d = len - 1;
    while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9')
        d--;
    size_t digits = len - 1 - d;
    if (d == 0 || s[d - 1] != '[' || digits == 0 || digits > 7 || (digits > 1 && s[d] == '0'))
        return 0;
    return digits + 2;
}

bool proto_name_check(proto_name_kind kind, const char *s, char *err, size_t errlen)
{
    const char *why = NULL;
    size_t len = s ? strlen(s) : 0;
    if (kind == PROTO_NAME_TASK_INSTANCE && s)
        len -= instance_suffix(s, len); /* the name part follows the rule of every name */
    if (!s || !len)
        why = "is empty";
    else if (len > PROTO_NAME_MAX)
        why = "is longer than 128 characters";
    else if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
        why = "may not be \".\" or \"..\"";
    else
        for (size_t i = 0; i < len && !why; i++)
            if (!name_char((unsigned char)s[i]))
                why = "may contain only letters, digits and _ . -";
    if (!why)
        return true;
    if (err && errlen) {
        char q[300];
        quote(s ? s : "", q, sizeof q);
        snprintf(err, errlen, "invalid %s \"%s\": %s", proto_name_noun(kind), q, why);
    }
    return false;
}

size_t proto_name_encode(const char *s, char *out, size_t out_len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = name_char(c) && !(c == '.' && i == 0);
        char enc[3] = {(char)c, 0, 0};
        size_t n = 1;
        if (!plain)
            enc[0] = '%', enc[1] = hex[c >> 4], enc[2] = hex[c & 15], n = 3;
        for (size_t j = 0; j < n; j++, k++)
            if (k + 1 < out_len)
                out[k] = enc[j];
    }
    if (out_len)
        out[k < out_len ? k : out_len - 1] = '\0';
    return k;
}
