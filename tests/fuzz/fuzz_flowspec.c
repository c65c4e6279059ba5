/* fuzz_flowspec.c - libFuzzer harness for the flow spec parser: parse arbitrary bytes, and when
 * they form a valid spec, render its templates and print it as DOT. Not built by default.
 *
 * Build and run from the repository root (clang with libFuzzer):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. proto/flowspec*.c \
 *       tests/fuzz/fuzz_flowspec.c -lcjson -lm -o /tmp/fuzz_flowspec
 *   mkdir -p /tmp/fuzz-corpus && /tmp/fuzz_flowspec -max_len=65536 -max_total_time=300 \
 *       /tmp/fuzz-corpus
 * Seed the corpus with real specs (docs/flow-spec.md has examples) to get deep quickly. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "proto/flowspec.h"

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
    if (flowspec_parse((const char *)data, size, &s, err) != 0)
        return 0;
    flowspec_write_dot(s, sink);
    for (size_t i = 0; i < s->n_tasks; i++)
        if (flowspec_find(s, s->tasks[i].name) != (long)i)
            abort(); /* every task must be found under its own name */
    flowspec_vars vars = {
        .parameters = params, .run_id = "run-1", .flow_name = s->name, .flow_version = s->version};
    flowspec_render(s, &vars, err);
    flowspec_write_dot(s, sink);
    flowspec_free(s);
    return 0;
}
