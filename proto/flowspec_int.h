/* flowspec_int.h - internals shared by the flowspec_*.c files (not for other modules): the name
 * hash table, the error helper and the graph checks. */
#ifndef DAGY_FLOWSPEC_INT_H
#define DAGY_FLOWSPEC_INT_H

#include <stdarg.h>
#include "proto/flowspec.h"

/* Open-addressing string -> index table of fixed capacity (sized for the number of keys up front,
 * so it never grows). Keys are borrowed, not copied. */
typedef struct flowspec__index {
    const char **keys;
    size_t *vals;
    size_t cap; /* power of two, at least twice the expected number of keys */
} flowspec__map;

int flowspec__map_init(flowspec__map *m, size_t expected);
void flowspec__map_free(flowspec__map *m);
/* Inserts key -> val. Returns 0, or 1 (and *prev = the stored value) if the key is present. */
int flowspec__map_put(flowspec__map *m, const char *key, size_t val, size_t *prev);
/* Returns the value for key or -1. */
long flowspec__map_get(const flowspec__map *m, const char *key);

/* Formats a message into err (FLOWSPEC_ERR_MAX bytes, err may be NULL); returns -EINVAL. */
int flowspec__fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Finds a cycle with an iterative DFS; returns 0 or -EINVAL with "cycle: a -> b -> a" in err. */
int flowspec__check_acyclic(const flowspec *s, char *err);

/* Walks a kwargs tree; calls fn on every string value with its path ("kwargs.a.b[2]"). Stops at
 * the first non-zero return and returns it. */
typedef int (*flowspec__kw_fn)(cJSON *str, const char *path, void *ud);
int flowspec__walk_kwargs(cJSON *kwargs, flowspec__kw_fn fn, void *ud);

/* flowspec_executor.c: a task's "executor" object, validated with the one Fargate size rule
 * (proto/fargate.h). *out is NULL for {"type": "local"}. */
int flowspec__parse_executor(const cJSON *v, flowspec_executor **out, const char *prefix,
                             char *err);
void flowspec__executor_free(flowspec_executor *e);
/* A deep copy (NULL for NULL or out of memory). */
flowspec_executor *flowspec__executor_dup(const flowspec_executor *e);
/* True if the string holds a well-formed {{ item }} template. */
bool flowspec__uses_item(const char *in);
/* A kwargs walker (flowspec__walk_kwargs): 1 (and the path copied into ud, 300 bytes) at the
 * first string that uses {{ item }}. */
int flowspec__kw_uses_item(cJSON *str, const char *path, void *ud);

#endif
