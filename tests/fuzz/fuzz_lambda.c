/* fuzz_lambda.c - libFuzzer harness for the events `dagy-launch lambda` answers
 * (launch__lambda_event): action events, API Gateway HTTP API requests (payload 2.0, base64
 * bodies), EventBridge schedules and ECS Task State Change events, all hostile. The environment
 * is emptied first, so an event that would reach AWS stops at "no AWS region" without I/O.
 * Checks: no crash or leak; an answer always; it prints as valid UTF-8; an error answer (-1) has
 * a non-empty errorType and errorMessage; an API Gateway answer's statusCode is 100-599. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "launcher/launch.h"
#include "proto/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    clearenv(); /* no region, no credentials, no endpoints: nothing reaches the network */
    setenv("HOME", "/nonexistent", 1);
    return 0;
}

/* Aborts unless `name` is a non-empty string member of `o`. */
static void need_string(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(v) || !v->valuestring[0])
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *a = NULL;
    int rc = launch__lambda_event((const char *)data, size, &a);
    if (!a || (rc != 0 && rc != -1))
        abort();
    char *text = cJSON_PrintUnformatted(a);
    if (!text || !proto_utf8_valid(text, strlen(text)))
        abort();
    if (rc == -1) {
        need_string(a, "errorType");
        need_string(a, "errorMessage");
    }
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(a, "statusCode");
    if (sc && (!cJSON_IsNumber(sc) || sc->valuedouble < 100 || sc->valuedouble > 599))
        abort();
    cJSON_free(text);
    cJSON_Delete(a);
    return 0;
}
