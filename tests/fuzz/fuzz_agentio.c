/* fuzz_agentio.c - libFuzzer harness for two inputs of the agent that come from outside:
 * - the ECS task metadata answer (${ECS_CONTAINER_METADATA_URI_V4}/task), read for the run's
 *   cost (agent_cost_profile_parse): a profile, when accepted, is finite and positive and its
 *   cost for an hour is a finite non-negative number;
 * - a log line too long for one CloudWatch Logs event (cwlogs_fit_line): the input as the
 *   "line" of a task_output JSON line, fitted to a small maximum; what comes back is at most
 *   that many bytes, valid UTF-8, one JSON object with "log_truncated": true.
 * Checks: no crash, no leak, and the properties above. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agent/cost.h"
#include "agent/cwlogs.h"
#include "proto/util.h"

/* The metadata side. */
static void metadata(const uint8_t *data, size_t size)
{
    cJSON *task = cJSON_ParseWithLength((const char *)data, size);
    if (!task)
        return;
    agent_cost_profile p;
    char err[256];
    const char *cp = size % 2 ? "FARGATE_SPOT" : NULL;
    if (agent_cost_profile_parse(task, cp, size % 3 ? "x86_64" : "aarch64", &p, err, sizeof err) ==
        0) {
        if (!isfinite(p.vcpu) || p.vcpu <= 0 || !isfinite(p.memory_gib) || p.memory_gib <= 0 ||
            !isfinite(p.storage_gib) || p.storage_gib < 0)
            abort();
        agent_cost_rates r = agent_cost_table(p.arm, p.spot);
        double usd = agent_cost_usd(&p, &r, 3600);
        if (!isfinite(usd) || usd < 0)
            abort();
    } else if (!err[0] || strnlen(err, sizeof err) == sizeof err) {
        abort(); /* a refusal says why, in a bounded string */
    }
    cJSON_Delete(task);
}

/* The log side: {"event_type":"task_output","line": INPUT} fitted to 512 bytes. */
static void long_line(const uint8_t *data, size_t size)
{
    char *s = proto_utf8_clean((const char *)data, size, 0); /* as a task's bytes reach the log */
    if (!s)
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event_type", "task_output");
    cJSON_AddStringToObject(o, "line", s);
    char *json = cJSON_PrintUnformatted(o);
    size_t len = json ? strlen(json) : 0, max = 512, out_len = 0;
    char *fit = json && len > max ? cwlogs_fit_line(json, len, max, &out_len) : NULL;
    if (fit) {
        cJSON *back = cJSON_ParseWithLength(fit, out_len);
        if (out_len > max || !proto_utf8_valid(fit, out_len) || !cJSON_IsObject(back) ||
            !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(back, "log_truncated")))
            abort();
        cJSON_Delete(back);
    }
    free(fit);
    cJSON_free(json);
    cJSON_Delete(o);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    metadata(data, size);
    long_line(data, size);
    return 0;
}
