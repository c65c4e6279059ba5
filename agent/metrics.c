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
#include <stdlib.h>
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

/* Names, units, the namespace and the dimension are the agent's own constants: letters, digits
 * and "_/.:-" only, so they are written without escapes. Anything else is not declared. */
static bool plain_name(const char *s)
{
    if (!s || !*s || strlen(s) > 255)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("_/.:-", *s)))
            return false;
    return true;
}

/* Whether m is declared: a plain name and unit, and at least one finite value. */
static bool declared(const agent_metric *m)
{
    return plain_name(m->name) && plain_name(m->unit) && finite_values(m) > 0;
}

/* A bounded text buffer: an append that does not fit marks it full (the text is then unused). */
typedef struct {
    char *p;
    size_t cap, len;
    bool full;
} text_buf;

static void tb_add(text_buf *t, const char *s, size_t n)
{
    if (t->full || n >= t->cap - t->len) {
        t->full = true;
        return;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void tb_adds(text_buf *t, const char *s)
{
    tb_add(t, s, strlen(s));
}

/* A number as cJSON prints one (proto_fmt_json_num). */
static void tb_num(text_buf *t, double v)
{
    char num[PROTO_NUM_MAX];
    tb_add(t, num, proto_fmt_json_num(num, v));
}

size_t agent_metrics_emf_metadata(char *buf, size_t cap, const char *ns, const char *dimension,
                                  const agent_metric *m, size_t n, int64_t ts_ms)
{
    text_buf t = {buf, cap, 0, cap == 0};
    size_t defs = 0;
    if (!plain_name(ns) || !plain_name(dimension))
        return 0;
    char ts[PROTO_NUM_MAX];
    tb_adds(&t, "{\"Timestamp\":");
    tb_add(&t, ts, proto_fmt_int(ts, ts_ms));
    tb_adds(&t, ",\"CloudWatchMetrics\":[{\"Namespace\":\"");
    tb_adds(&t, ns);
    tb_adds(&t, "\",\"Dimensions\":[[\"");
    tb_adds(&t, dimension);
    tb_adds(&t, "\"]],\"Metrics\":[");
    for (size_t i = 0; i < n && defs < 100; i++) {
        if (!declared(&m[i]))
            continue;
        tb_adds(&t, defs++ ? ",{\"Name\":\"" : "{\"Name\":\"");
        tb_adds(&t, m[i].name);
        tb_adds(&t, "\",\"Unit\":\"");
        tb_adds(&t, m[i].unit);
        tb_adds(&t, "\"}");
    }
    tb_adds(&t, "]}]}");
    return defs && !t.full ? t.len : 0;
}

/* A metric's member: one number, or an array of the finite values. */
static void metric_value(text_buf *t, const agent_metric *m)
{
    size_t k = finite_values(m), written = 0;
    if (k != 1)
        tb_add(t, "[", 1);
    for (size_t i = 0; i < m->n && i < AGENT_METRICS_MAX_VALUES; i++) {
        if (!isfinite(m->values[i]))
            continue;
        if (written++)
            tb_add(t, ",", 1);
        tb_num(t, m->values[i]);
    }
    if (k != 1)
        tb_add(t, "]", 1);
}

log_line *agent_metrics_begin(const char *message)
{
    return enabled ? agent_log_begin_metrics(message) : NULL;
}

/* Text, not cJSON trees: a metrics line is printed for every task attempt, and building, printing
 * and freeing the `_aws` tree took 4 % of the agent's CPU on a DAG of short tasks. */
void agent_metrics_end(log_line *l, const agent_metric *m, size_t n)
{
    if (!l)
        return;
    char aws[4096], val[4096];
    size_t aws_len =
        agent_metrics_emf_metadata(aws, sizeof aws, AGENT_METRICS_NAMESPACE,
                                   AGENT_METRICS_DIMENSION, m, n, (int64_t)(proto_now() * 1000.0));
    if (aws_len) {
        size_t count = 0;
        for (size_t i = 0; i < n && count < 100; i++) {
            if (!declared(&m[i]))
                continue;
            text_buf t = {val, sizeof val, 0, false};
            metric_value(&t, &m[i]);
            if (!t.full)
                agent_log_json_text(l, m[i].name, val, t.len);
            count++;
        }
        agent_log_json_text(l, "_aws", aws, aws_len);
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
