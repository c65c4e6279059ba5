/* names.h - the one rule for names and ids (run id, task name, flow name, package slug,
 * org id ...) shared by dagy-agent and dagy-launch, and the one encoder that turns a name into
 * a file name or an S3 key segment (contract section 10). No I/O. */
#ifndef DAGY_NAMES_H
#define DAGY_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define PROTO_NAME_MAX 128

/* What a name is, for error messages ("run id", "task name", ...). */
typedef enum {
    PROTO_NAME_RUN_ID = 0,
    PROTO_NAME_TASK,
    PROTO_NAME_FLOW,
    PROTO_NAME_FLOW_VERSION,
    PROTO_NAME_ORG,
    PROTO_NAME_SLUG,
    PROTO_NAME_DEPLOYMENT,
    PROTO_NAME_ENVIRONMENT,
    PROTO_NAME_TASK_INSTANCE, /* a task name, or a map child's derived id "NAME[INDEX]" (INDEX
                                 decimal, no leading zero, at most 7 digits): status items,
                                 result keys; never a spec's task name */
} proto_name_kind;

/* The noun for `kind`, e.g. "run id". Static storage. */
const char *proto_name_noun(proto_name_kind kind);

/* True if `s` is a valid name: 1-128 characters of [A-Za-z0-9_.-], not "." or "..".
 * On false, and if err is not NULL, writes a message of at most `errlen` bytes that names the
 * kind and says what is wrong (the offending value is quoted, escaped, cut to 64 bytes). */
bool proto_name_check(proto_name_kind kind, const char *s, char *err, size_t errlen);

/* Encodes a valid name as one path segment (a file name or an S3 key segment) that cannot be
 * "." or "..", cannot start with '.', and contains no character a shell, URL or file system
 * treats specially: bytes outside [A-Za-z0-9_-] and a leading '.' become %XX (uppercase hex);
 * other '.' are kept. Writes at most out_len bytes including the NUL; returns the length it
 * needs (excluding the NUL), like snprintf. 3 * PROTO_NAME_MAX + 1 bytes always suffice. */
size_t proto_name_encode(const char *s, char *out, size_t out_len);
#define PROTO_NAME_ENCODED_MAX (3 * PROTO_NAME_MAX + 1)

#endif
