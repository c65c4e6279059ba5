/* fuzz_ecs.c - libFuzzer harness for the ECS answers dagy-launch reads: RunTask (the task ARN,
 * or the first failure's reason) and DescribeTasks (the reconcile verdict for every described
 * task, for the configured and a missing container name). Checks: no crash; RunTask gives either
 * an ARN or a non-empty reason; a verdict is NULL or one of the terminal statuses, with a
 * stop_reason, and its messages are bounded C strings. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "launcher/launch.h"

/* Aborts unless v is a well-formed verdict. */
static void check_verdict(const launch_verdict *v)
{
    if (strnlen(v->error_message, sizeof v->error_message) == sizeof v->error_message ||
        strnlen(v->stop_reason, sizeof v->stop_reason) == sizeof v->stop_reason)
        abort();
    if (!v->status)
        return;
    if (strcmp(v->status, "SUCCEEDED") && strcmp(v->status, "FAILED") &&
        strcmp(v->status, "CANCELLED"))
        abort();
    if (!v->stop_reason[0])
        abort(); /* a closed run always says why it stopped */
    if (strcmp(v->status, "SUCCEEDED") && !v->error_message[0])
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (!j)
        return 0;
    char why[LAUNCH_ERR_MAX];
    why[0] = '\0';
    const char *arn = launch__runtask_arn(j, why, sizeof why);
    if (!arn && !why[0])
        abort();
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(j, "tasks"), *t;
    cJSON_ArrayForEach(t, tasks)
    {
        launch_verdict v;
        launch_reconcile_verdict(t, "dagy-worker", &v);
        check_verdict(&v);
        launch_reconcile_verdict(t, "no-such-container", &v);
        check_verdict(&v);
    }
    cJSON_Delete(j);
    return 0;
}
