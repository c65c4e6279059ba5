/* metrics.h - CloudWatch metrics without API calls: Embedded Metric Format (EMF) documents
 * printed as log lines (docs/operations.md "Metrics").
 *
 * A metrics line is an ordinary JSON log line (event_type `metrics`, the envelope of contract
 * section 7) that also carries the EMF `_aws` member and one top-level member per metric, so
 * CloudWatch Logs extracts the metrics from it whichever way it arrives: the awslogs driver
 * (one stdout line = one log event) or PutLogEvents (header `x-amzn-logs-format: json/emf`).
 * Namespace `Dagy`, one dimension set [flow_name]: the dimension's value is the envelope's own
 * `flow_name` member. Lines are printed in the JSON log format only, whatever DAGY_LOG_LEVEL,
 * unless DAGY_METRICS=0, and only once the run has a flow name (a dimension value must not be
 * empty). */
#ifndef DAGY_METRICS_H
#define DAGY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/log.h"

#define AGENT_METRICS_NAMESPACE  "Dagy"
#define AGENT_METRICS_DIMENSION  "flow_name"
#define AGENT_METRICS_MAX_VALUES 100 /* EMF: at most 100 values per metric member */

/* One metric of a line: `n` values (1..AGENT_METRICS_MAX_VALUES) in `unit` (a CloudWatch unit
 * name: "Seconds", "Milliseconds", "Count", "None"). Non-finite values are left out; a metric
 * left with no value is not declared. */
typedef struct {
    const char *name;
    const char *unit;
    const double *values;
    size_t n;
} agent_metric;

/* Reads DAGY_METRICS (`value`, NULL = unset): unset, "1", "true", "on" turn metrics on; "0",
 * "false", "off" off. Returns 0, or -EINVAL with err naming the variable. */
int agent_metrics_configure(const char *value, char *err, size_t errlen);
bool agent_metrics_enabled(void);

/* The EMF metadata object {"Timestamp": ts_ms, "CloudWatchMetrics": [{"Namespace": ns,
 * "Dimensions": [[dimension]], "Metrics": [{"Name", "Unit"}...]}]} for metrics m[0..n) (those
 * with at least one finite value, and a name and unit of letters, digits and "_/.:-" only, at most
 * 100), as JSON text in buf (NUL-terminated). Returns its length, or 0 when no metric is left or
 * the text does not fit in cap bytes. Pure. */
size_t agent_metrics_emf_metadata(char *buf, size_t cap, const char *ns, const char *dimension,
                                  const agent_metric *m, size_t n, int64_t ts_ms);

/* Begins a metrics line (NULL when metrics are off or cannot be printed: every call accepts
 * NULL); callers may add non-metric fields (task_name, ...) with the log adders, then end it
 * with agent_metrics_end, which adds `_aws` and the metric members and writes the line. */
log_line *agent_metrics_begin(const char *message);
void agent_metrics_end(log_line *l, const agent_metric *m, size_t n);

/* The agent's metric points (docs/operations.md lists them). Metrics lines carry no `status`
 * or `duration_seconds` member, so the runbook's queries on those fields see no extra lines. */
void agent_metrics_task_attempt(const char *task_name, int attempt, double seconds);
void agent_metrics_phase(const char *metric, const char *uri, double seconds);
/* Status-write lag samples in milliseconds (a batch of at most AGENT_METRICS_MAX_VALUES). */
void agent_metrics_status_lag(const double *lag_ms, size_t n);
/* The run's end: duration, tasks failed/retried/skipped, cost (cost_usd < 0: unknown). */
void agent_metrics_run(double seconds, int failed, int retried, int skipped, double cost_usd);

#endif
