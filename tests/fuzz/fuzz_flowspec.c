/* fuzz_flowspec.c - libFuzzer harness for the flow spec parser and validator: parse arbitrary
 * bytes; when they form a valid spec, check what validation promises (names follow the one
 * rule, every task is found under its own name, upstream indices are in range, the graph is
 * acyclic, no \u0000 escape was accepted), render its templates and print it as DOT. A refusal
 * must say why.
 * Built with -DDAGY_FUZZ=ON (tests/fuzz/CMakeLists.txt); run by `ctest -L fuzz` or
 * scripts/fuzz.sh. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "proto/flowspec.h"
#include "proto/names.h"

/* Depth-first search for a cycle through task i (0 white, 1 grey, 2 black). */
static int has_cycle(const flowspec *s, size_t i, unsigned char *mark)
{
    if (mark[i] == 1)
        return 1;
    if (mark[i] == 2)
        return 0;
    mark[i] = 1;
    for (size_t k = 0; k < s->tasks[i].n_upstream; k++)
        if (has_cycle(s, s->tasks[i].upstream[k], mark))
            return 1;
    mark[i] = 2;
    return 0;
}

/* Aborts unless the parsed spec satisfies every rule the validator states. */
static void check_valid(const flowspec *s)
{
    unsigned char *mark = calloc(s->n_tasks + 1, 1);
    if (!mark)
        abort();
    for (size_t i = 0; i < s->n_tasks; i++) {
        const flowspec_task *t = &s->tasks[i];
        if (!proto_name_check(PROTO_NAME_TASK, t->name, NULL, 0))
            abort(); /* a name the one rule refuses passed the spec check */
        if (flowspec_find(s, t->name) != (long)i)
            abort(); /* every task must be found under its own name */
        if ((t->command == NULL) == (t->callable == NULL))
            abort(); /* exactly one of command and callable */
        for (size_t k = 0; k < t->n_upstream; k++)
            if (t->upstream[k] >= s->n_tasks)
                abort();
    }
    for (size_t i = 0; i < s->n_tasks; i++)
        if (has_cycle(s, i, mark))
            abort();
    free(mark);
}

/* True if the JSON text holds a \u0000 escape (an odd run of backslashes before "u0000"). */
static int has_nul_escape(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i + 6 <= n; i++) {
        if (memcmp(d + i, "\\u0000", 6) != 0)
            continue;
        size_t k = 0;
        while (k < i && d[i - 1 - k] == '\\')
            k++;
        if (k % 2 == 0)
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    static cJSON *params;
    char err[FLOWSPEC_ERR_MAX];
    flowspec *s = NULL;

    if (!sink)
        sink = fopen("/dev/null", "w");
    if (!params)
        params = cJSON_Parse("{\"date\": \"2026-01-01\", \"n\": 3, \"obj\": {\"a\": [1]},"
                             " \"src\": \"{{ run_id }}\"}");
    err[0] = '\0';
    if (flowspec_parse((const char *)data, size, &s, err) != 0) {
        if (!err[0])
            abort(); /* a refusal must say what was wrong */
        return 0;
    }
    if (has_nul_escape(data, size))
        abort(); /* a \u0000 escape silently truncates a spec string: it must be refused */
    check_valid(s);
    flowspec_write_dot(s, sink);
    flowspec_vars vars = {
        .parameters = params, .run_id = "run-1", .flow_name = s->name, .flow_version = s->version};
    err[0] = '\0';
    if (flowspec_render(s, &vars, err) != 0 && !err[0])
        abort();
    flowspec_write_dot(s, sink);
    flowspec_free(s);
    return 0;
}
