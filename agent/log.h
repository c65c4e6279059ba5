/* log.h - the agent's log lines (contract section 7): one JSON object per line on stdout, or the
 * `pretty` terminal view. Every line carries timestamp, level, event_type, message, run_id,
 * flow_name and correlation_id; callers add the fields that apply.
 *
 * Usage: agent_log_begin() returns a line (or NULL when the level is filtered out: every adder
 * accepts NULL), adders append fields, agent_log_end() writes it in one write(2). Strings are
 * escaped as JSON (invalid UTF-8 becomes \ufffd, NUL \u0000), so any byte sequence is safe to
 * pass; the pretty view shows control characters as visible escapes (\x1b), never raw. */
#ifndef DAGY_LOG_H
#define DAGY_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <cjson/cJSON.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERROR } log_level;
typedef enum { LOG_FORMAT_JSON = 0, LOG_FORMAT_PRETTY } log_format;

typedef struct log_line log_line;

/* Configures the process-wide logger (fd is usually 1). */
void agent_log_init(log_format fmt, log_level min_level, int fd);
/* Parses DEBUG/INFO/WARNING/ERROR (case-insensitive; WARN accepted). Returns 0 or -EINVAL. */
int agent_log_parse_level(const char *s, log_level *out);
/* Identity fields carried on every line from now on (copied; NULL = unchanged). */
void agent_log_context(const char *run_id, const char *flow_name, const char *flow_version,
                       const char *org_id, const char *correlation_id);

log_line *agent_log_begin(log_level level, const char *event_type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with the message as bytes: any bytes, NUL included ("abc\0def" is logged as
 * "abc\u0000def"), for lines a task printed. */
log_line *agent_log_begin_text(log_level level, const char *event_type, const char *msg,
                               size_t len);
/* A `metrics` line (event_type "metrics", level INFO) for agent/metrics.c: printed whatever the
 * minimum level, in the JSON format only, once a flow name is set; NULL otherwise. */
log_line *agent_log_begin_metrics(const char *msg);
void agent_log_str(log_line *l, const char *key, const char *val); /* NULL val: omitted */
void agent_log_strn(log_line *l, const char *key, const char *val, size_t len);
void agent_log_int(log_line *l, const char *key, int64_t val);
void agent_log_num(log_line *l, const char *key, double val);
void agent_log_bool(log_line *l, const char *key, bool val);
void agent_log_json(log_line *l, const char *key, const cJSON *val); /* embedded as JSON */
/* `json` (len bytes) must be one JSON value already; it is embedded as is, unchecked. */
void agent_log_json_text(log_line *l, const char *key, const char *json, size_t len);
void agent_log_end(log_line *l);

/* A second destination for every line (the CloudWatch Logs shipper, agent/cwlogs.c): called
 * from agent_log_end with the JSON object (without newline, not NUL-terminated: len bytes),
 * its timestamp (UNIX seconds), level and event type, before stdout; returns whether the line
 * goes to stdout too. NULL detaches it. */
typedef bool (*agent_log_sink)(void *ud, const char *json, size_t len, double ts, log_level level,
                               const char *event_type);
void agent_log_set_sink(agent_log_sink sink, void *ud);
/* While held, the run_end line's stdout bytes are kept instead of written; agent_log_release
 * writes them (and stops holding), so lines written after the run ended (the shipper's report)
 * still come before it on stdout: run_end stays the last line. */
void agent_log_hold_run_end(bool hold);
void agent_log_release(void);
/* Between begin and end (nested: the outermost end), stdout lines are gathered and written in
 * one write(2) at the end, in order: a task's end handled by the loop prints its task_end,
 * metrics and the next task's task_start lines after that task has been spawned, in one write
 * instead of three. An ERROR line or run_end writes the batch at once; so does exit(), and a
 * batch that reached 64 KiB (a map expanding into thousands of tasks). */
void agent_log_batch_begin(void);
void agent_log_batch_end(void);

/* Pretty view only (no-ops in JSON mode): whether it is on, the live progress line kept under
 * the log, and raw text (the end-of-run table). */
bool agent_log_is_pretty(void);
void agent_log_progress(const char *line);
void agent_log_raw(const char *text);

/* Shorthand for a line with no extra fields. */
void agent_log(log_level level, const char *event_type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
