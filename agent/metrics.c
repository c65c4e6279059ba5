/* metrics.c - CloudWatch Embedded Metric Format lines (agent/metrics.h): the `_aws` metadata
 * builder (pure) and the agent's metric points, printed through the log (agent/log.h) so they
 * reach stdout and every shipper of the log lines.
 *
 * EMF rules kept here (CloudWatch_Embedded_Metric_Format_Specification): Timestamp an integer
 * of milliseconds since the epoch; at most 100 metrics per directive and 100 values per metric
 * member; every referenced dimension and metric present as a top-level member, a number or an
 * array of numbers for a metric, a string for a dimension. */
#include "agent/metrics.h"
#include "proto/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool enabled = true;

int agent_metrics_configure(const char *value, char *err, size_t errlen)
{
    static const char *const on[] = {"1", "true", "on", "yes"};
    static const char *const off[] = {"0", "false", "off", "no"};
    enabled = true;
    if (!value || !*value)
        return 0;
    for (size_t i = 0; i < sizeof on / sizeof on[0]; i++) {
        if (!strcasecmp(value, on[i]))
            return 0;
        if (!strcasecmp(value, off[i])) {
            enabled = false;
            return 0;
        }
    }
    snprintf(err, errlen, "DAGY_METRICS must be 1 or 0 (true/false, on/off), not \"%.64s\"", value);
    return -EINVAL;
}

bool agent_metrics_enabled(void)
{
    return enabled;
}

/* The finite values of m (at most AGENT_METRICS_MAX_VALUES). */
static size_t finite_values(const agent_metric *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->n && i < AGENT_METRICS_MAX_VALUES; i++)
        k += isfinite(m->values[i]) ? 1 : 0;
    return k;
}

cJSON *agent_metrics_emf_metadata(const char *ns, const char *dimension, const agent_metric *m,
                                  size_t n, int64_t ts_ms)
{
    cJSON *defs = cJSON_CreateArray();
    for (size_t i = 0; i < n && cJSON_GetArraySize(defs) < 100; i++) {
        if (!finite_values(&m[i]))
            continue;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "Name", m[i].name);
        cJSON_AddStringToObject(d, "Unit", m[i].unit);
        cJSON_AddItemToArray(defs, d);
    }
    if (!cJSON_GetArraySize(defs)) {
        cJSON_Delete(defs);
        return NULL;
    }
    cJSON *aws = cJSON_CreateObject();
    cJSON_AddNumberToObject(aws, "Timestamp", (double)ts_ms);
    cJSON *dirs = cJSON_AddArrayToObject(aws, "CloudWatchMetrics");
    cJSON *dir = cJSON_CreateObject();
    cJSON_AddStringToObject(dir, "Namespace", ns);
    cJSON *dims = cJSON_AddArrayToObject(dir, "Dimensions");
    cJSON *set = cJSON_CreateArray();
    cJSON_AddItemToArray(set, cJSON_CreateString(dimension));
    cJSON_AddItemToArray(dims, set);
    cJSON_AddItemToObject(dir, "Metrics", defs);
    cJSON_AddItemToArray(dirs, dir);
    return aws;
}

/* A metric's member: one number, or an array of the finite values. */
static cJSON *metric_value(const agent_metric *m)
{
    size_t k = finite_values(m);
    if (k == 1) {
        for (size_t i = 0;; i++)
            if (isfinite(m->values[i]))
                return cJSON_CreateNumber(m->values[i]);
    }
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < m->n && i < AGENT_METRICS_MAX_VALUES; i++)
        if (isfinite(m->values[i]))
            cJSON_AddItemToArray(a, cJSON_CreateNumber(m->values[i]));
    return a;
}

log_line *agent_metrics_begin(const char *message)
{
    return enabled ? agent_log_begin_metrics(message) : NULL;
}

void agent_metrics_end(log_line *l, const agent_metric *m, size_t n)
{
    if (!l)
        return;
    cJSON *aws = agent_metrics_emf_metadata(AGENT_METRICS_NAMESPACE, AGENT_METRICS_DIMENSION, m, n,
                                            (int64_t)(proto_now() * 1000.0));
    if (aws) {
        size_t declared = 0;
        for (size_t i = 0; i < n && declared < 100; i++) {
            if (!finite_values(&m[i]))
                continue;
            cJSON *v = metric_value(&m[i]);
            agent_log_json(l, m[i].name, v);
            cJSON_Delete(v);
            declared++;
        }
        agent_log_json(l, "_aws", aws);
        cJSON_Delete(aws);
    }
    agent_log_end(l);
}

void agent_metrics_task_attempt(const char *task_name, int attempt, double seconds)
{
    log_line *l = agent_metrics_begin("task attempt metrics");
    agent_log_str(l, "task_name", task_name);
    agent_log_int(l, "attempt", attempt);
    agent_metric m = {"TaskDuration", "Seconds", &seconds, 1};
    agent_metrics_end(l, &m, 1);
}

void agent_metrics_phase(const char *metric, const char *uri, double seconds)
{
    log_line *l = agent_metrics_begin("preparation metrics");
    agent_log_str(l, "uri", uri);
    agent_metric m = {metric, "Seconds", &seconds, 1};
    agent_metrics_end(l, &m, 1);
}

void agent_metrics_status_lag(const double *lag_ms, size_t n)
{
    if (!n)
        return;
    log_line *l = agent_metrics_begin("status write lag metrics");
    agent_metric m = {"StatusWriteLag", "Milliseconds", lag_ms,
                      n < AGENT_METRICS_MAX_VALUES ? n : AGENT_METRICS_MAX_VALUES};
    agent_metrics_end(l, &m, 1);
}

void agent_metrics_run(double seconds, int failed, int retried, int skipped, double cost_usd)
{
    log_line *l = agent_metrics_begin("run metrics");
    double v[] = {seconds, failed, retried, skipped, cost_usd};
    agent_metric m[] = {{"RunDuration", "Seconds", &v[0], 1},
                        {"TasksFailed", "Count", &v[1], 1},
                        {"TasksRetried", "Count", &v[2], 1},
                        {"TasksSkipped", "Count", &v[3], 1},
                        {"EstimatedCostUSD", "None", &v[4], 1}};
    agent_metrics_end(l, m, cost_usd >= 0 ? 5 : 4);
}
