/* flowspec.h - flow_spec.json (spec_version 1, contract section 2): parse, validate, expand
 * templates, print as Graphviz DOT.
 *
 * Every problem is reported before any task starts, as one human-readable message naming the
 * task and the field: `task "load": upstream "trnsform" does not exist`, `cycle: x -> y -> x`. */
#ifndef DAGY_FLOWSPEC_H
#define DAGY_FLOWSPEC_H

#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <cjson/cJSON.h>
#include "scheduler/sched.h"

#define FLOWSPEC_ERR_MAX 512

/* Where a task's attempts run (the task's "executor"; NULL: in the agent's own container).
 * "ecs": each attempt is its own ECS task (agent/ecs_exec.c), sized like `dagy-launch run`. */
typedef struct {
    int cpu, memory;         /* task size (CPU units, MiB); 0: the task definition's */
    int ephemeral_gib;       /* 21-200; 0: not overridden */
    char *capacity_provider; /* FARGATE, FARGATE_SPOT, or NULL: launch type FARGATE */
} flowspec_executor;

/* "map": {"over": "UPSTREAM", "max_parallel": N, "allow_failures": K} (docs/flow-spec.md). */
typedef struct {
    char *over;         /* the upstream task whose result (a JSON array) is mapped over */
    size_t over_index;  /* its index in flowspec.tasks */
    int max_parallel;   /* 0: no bound of its own */
    int allow_failures; /* 0 by default */
} flowspec_map;

typedef struct {
    char *name;
    char **command; /* NULL-terminated argv, or NULL for a callable task */
    size_t command_len;
    char *callable; /* "module.path:function", or NULL */
    cJSON *kwargs;  /* object or NULL (callable tasks only) */
    char **env;     /* NULL-terminated "NAME=VALUE" pairs, may be NULL */
    size_t env_len;
    size_t *upstream; /* indices into flowspec.tasks */
    size_t n_upstream;
    sched_task_def def; /* scheduling parameters with defaults applied; def.name/upstream alias
                           the fields above */
    char *description;  /* or NULL */
    flowspec_executor *executor; /* or NULL: run in the agent's container */
    flowspec_map *map;           /* a map task, or NULL. Its templates stay unexpanded after
                                    flowspec_render (checked there): flowspec_render_child expands them
                                    once per element, with {{ item }} */
} flowspec_task;

typedef struct {
    int spec_version;
    char *name;
    char *version;
    int max_parallel; /* 0 when absent (the agent then picks the number of CPUs) */
    flowspec_task *tasks;
    size_t n_tasks;
    char *description;             /* or NULL */
    struct flowspec__index *index; /* private: name -> task index (flowspec_find); may be NULL */
} flowspec;

/* Values for template expansion. `parameters` is a JSON object (may be NULL = no parameters). */
typedef struct {
    const cJSON *parameters;
    const char *run_id;
    const char *flow_name;
    const char *flow_version;
    const char *org_id;
    const char *environment;
} flowspec_vars;

/* Limits: larger specs or more tasks are rejected. */
#define FLOWSPEC_MAX_BYTES (16u * 1024 * 1024)
#define FLOWSPEC_MAX_TASKS 100000

/* Parses and validates the JSON text. On success returns 0 and *out (free with flowspec_free).
 * On failure returns -EINVAL (-ENOMEM if out of memory) and writes a message into err
 * (FLOWSPEC_ERR_MAX bytes; err may be NULL). Templates are checked for syntax here but not
 * expanded. The spec owns every string and the kwargs trees; `json` is not referenced after. */
int flowspec_parse(const char *json, size_t len, flowspec **out, char *err);
/* Reads and parses a file (errors are prefixed with the path). Returns 0, -EINVAL for a bad spec,
 * or the -errno of a failed open/read. */
int flowspec_load(const char *path, flowspec **out, char *err);
void flowspec_free(flowspec *s); /* NULL is fine */

/* Expands every template in command elements, env values and string kwargs values (recursively),
 * in place. Fails with -EINVAL and an error naming task and field if a template names an unset
 * parameter or is malformed. Non-string parameters expand to their JSON text; NULL variables in
 * `vars` (or vars == NULL) expand to "". Inserted values are not expanded again. After a failure
 * the spec may be partly expanded: free it rather than run it. */
int flowspec_render(flowspec *s, const flowspec_vars *vars, char *err);

/* The task of one element of a map task: a deep copy of `map` rendered with vars and `item`
 * (the element as compact JSON text: {{ item }} inserts a string element as it is, any other
 * as that JSON), named "NAME[index]", its env extended with DAGY_MAP_ITEM (the element) and
 * DAGY_MAP_INDEX, no `map`. Returns 0, or -EINVAL/-ENOMEM with err (a value over the template
 * size limit); *out is then cleared. Free with flowspec_task_clear(). */
int flowspec_render_child(const flowspec_task *map, const flowspec_vars *vars, const char *item,
                          size_t index, flowspec_task *out, char *err);
/* Frees what one task owns (not the struct itself). */
void flowspec_task_clear(flowspec_task *t);

/* Expands templates in one string; returns a malloc'd string or NULL with err set. `where` is
 * used as the prefix of the message ("task \"x\": command[2]"; may be NULL). */
char *flowspec_expand(const char *in, const flowspec_vars *vars, const char *where, char *err);

/* Writes the DAG as Graphviz DOT (digraph, one node per task labelled with name, and its trigger
 * rule when not all_success; one edge per upstream link). */
void flowspec_write_dot(const flowspec *s, FILE *f);

/* Index of the task with this name, or -1. */
long flowspec_find(const flowspec *s, const char *name);

/* Checks the template syntax of one string without expanding it. Returns 0, or -EINVAL with
 * "WHERE: reason" in err (where may be NULL). */
int flowspec_check_templates(const char *in, const char *where, char *err);

#endif
