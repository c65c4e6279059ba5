/* fuzz_template.c - libFuzzer harness for template expansion (`{{ parameters.X }}`, `{{ run_id }}`
 * ...): any string is either expanded or refused with a message; expansion never accepts what
 * the parse-time syntax check refuses; a string without "{{" expands to itself; inserted values
 * are not expanded again (the parameter "inj" holds a template). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "proto/flowspec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cJSON *params;
    char err[FLOWSPEC_ERR_MAX], err2[FLOWSPEC_ERR_MAX];
    if (!params)
        params = cJSON_Parse("{\"date\": \"2026-01-01\", \"n\": 3, \"obj\": {\"a\": [1, \"x\"]},"
                             " \"inj\": \"{{ run_id }}\", \"e\": \"\", \"u\": \"\\u00e9\"}");
    char *in = malloc(size + 1);
    if (!in)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0'; /* spec strings are C strings (\u0000 is refused by the parser) */
    flowspec_vars vars = {.parameters = params,
                          .run_id = "RUNID",
                          .flow_name = "flow",
                          .flow_version = "1.0.0",
                          .org_id = NULL,
                          .environment = "prod"};
    err[0] = err2[0] = '\0';
    int checked = flowspec_check_templates(in, "task \"t\": command[0]", err);
    if (checked != 0 && !err[0])
        abort();
    char *out = flowspec_expand(in, &vars, "task \"t\": command[0]", err2);
    if (!out && !err2[0])
        abort(); /* a refusal must say why */
    if (out && checked != 0)
        abort(); /* expansion accepted a template the syntax check refuses */
    if (out && !strstr(in, "{{") && strcmp(out, in) != 0)
        abort(); /* text without templates is copied unchanged */
    if (out && strstr(out, "RUNID") && !strstr(in, "run_id") && !strstr(in, "RUNID"))
        abort(); /* "{{ run_id }}" inside a parameter value was expanded again */
    free(out);
    free(in);
    return 0;
}
