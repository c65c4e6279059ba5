/* taskhash.h - task fingerprints (task_hash, contract section 10): a SHA-256 over a canonical
 * serialization of a task's definition as it will run. Two runs may share a task's result only
 * if its task_hash is the same. Pure: no I/O (the caller supplies the code digest).
 *
 * The serialization (version 1) is documented in docs/agent.md ("Task fingerprints"); every
 * field is framed by its length, so no value can be mistaken for another field. */
#ifndef DAGY_TASKHASH_H
#define DAGY_TASKHASH_H

#include <stddef.h>
#include <cjson/cJSON.h>

#include "proto/flowspec.h"

#define PROTO_HASH_HEX 65 /* 64 hex digits + NUL */

/* What a fingerprint covers besides the task itself. All borrowed for the call. */
typedef struct {
    const char *code_digest;     /* hex SHA-256 of the flow's code (proto_code_digest_*) */
    const cJSON *parameters;     /* the run's parameters (an object; NULL = {}) */
    const char *const *dep_uris; /* dependency package URIs, in PYTHONPATH order; may be NULL */
} proto_hash_ctx;

/* Canonical JSON of a value: object members sorted by key (bytewise), no whitespace, numbers
 * in their shortest round-trip form, strings with the minimal JSON escapes. Returns a malloc'd
 * string (caller frees) or NULL on out of memory. */
char *proto_canonical_json(const cJSON *v);

/* The task_hash of every task of a rendered spec (templates already expanded), each covering
 * its upstream tasks' hashes: out[i] receives task i's hex hash. Returns 0, -EINVAL for a
 * cyclic spec, or -ENOMEM. */
int proto_task_hashes(const flowspec *s, const proto_hash_ctx *ctx, char (*out)[PROTO_HASH_HEX]);

/* The spec's task indices in an order where every task comes after its upstream tasks (Kahn's
 * algorithm; order[] holds s->n_tasks entries). Returns 0, -EINVAL if cyclic, or -ENOMEM. */
int proto_task_order(const flowspec *s, size_t *order);

/* One task's hash given its upstream tasks' hashes (up_hashes[k] for s->tasks[i].upstream[k]).
 * Exposed for tests. Returns 0 or -ENOMEM. */
int proto_task_hash(const flowspec_task *t, const char *const *up_names,
                    const char *const *up_hashes, const proto_hash_ctx *ctx,
                    char out[PROTO_HASH_HEX]);

/* A streaming digest of the flow's code: feed each file (relative path, bytes) in any order;
 * the result does not depend on the order. Used by agent/resume.c on the unpacked flow. */
typedef struct proto_code_digest proto_code_digest;
proto_code_digest *proto_code_digest_new(void);
/* Adds one regular file (`rel` its path below the flow directory; its content's hex SHA-256).
 * Returns 0 or -ENOMEM. */
int proto_code_digest_add(proto_code_digest *d, const char *rel, const char *content_sha_hex);
/* Writes the digest (hex) and frees d. */
void proto_code_digest_finish(proto_code_digest *d, char out[PROTO_HASH_HEX]);
/* Whether a path below the flow directory is left out of the code digest: flow_spec.json and
 * metadata.json at the root (the spec is hashed per task), and Python's byte-code caches
 * (derived from sources that are hashed), and .git directories (a working copy's history is
 * not code the tasks run). `rel` has no leading "./". */
int proto_code_digest_skip(const char *rel);

#endif
