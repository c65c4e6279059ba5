/* cwlogs.h - the agent's log lines shipped to CloudWatch Logs (DAGY_LOG_GROUP): the stream named
 * after the run id, PutLogEvents batches on the loop, a bounded queue, and what goes to stdout
 * meanwhile (docs/agent.md "Logs in CloudWatch Logs").
 *
 * One shipper per process (the logger is process-wide too). It receives every line through the
 * logger's sink (agent_log_set_sink) and never blocks it: a line is copied into the queue, the
 * requests run on the loop. Nothing is lost silently: a line the queue cannot hold, or one
 * still unshipped at the end, goes to stdout instead, and a final log_shipping_incomplete line
 * (before run_end, which stays the last line) counts them. */
#ifndef DAGY_CWLOGS_H
#define DAGY_CWLOGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "fetch/aws.h"

/* CloudWatch Logs' PutLogEvents limits. */
#define CWLOGS_BATCH_BYTES    1048576              /* sum of (message bytes + 26) */
#define CWLOGS_EVENT_OVERHEAD 26                   /* counted per event */
#define CWLOGS_BATCH_EVENTS   10000                /* events per batch */
#define CWLOGS_EVENT_MAX      (262144 - 26)        /* one message, bytes */
#define CWLOGS_SPAN_MS        (24LL * 3600 * 1000) /* a batch may not span more */
/* Task output lines are emitted whole up to this many bytes when shipping (sbx_set_line_max):
 * with the message's 1900 bytes and the line's other fields, a printable line's JSON stays
 * within CWLOGS_EVENT_MAX. */
#define CWLOGS_TASK_LINE_MAX (192 * 1024)
/* Default and least cap of the queued bytes (DAGY_LOG_BUFFER_BYTES). */
#define CWLOGS_QUEUE_DEFAULT (64u << 20)
#define CWLOGS_QUEUE_MIN     (256u << 10)

typedef struct {
    char *group;      /* DAGY_LOG_GROUP, NULL = not shipping */
    bool stdout_all;  /* DAGY_LOG_STDOUT=all: every line on stdout too (default: lifecycle) */
    size_t cap_bytes; /* DAGY_LOG_BUFFER_BYTES */
} cwlogs_config;

/* Reads DAGY_LOG_GROUP, DAGY_LOG_STDOUT and DAGY_LOG_BUFFER_BYTES. Returns 0 or -EINVAL with err
 * (err_max bytes) naming the variable and what is wrong. */
int cwlogs_config_from_env(cwlogs_config *c, char *err, size_t err_max);
void cwlogs_config_free(cwlogs_config *c);

/* Starts shipping to stream `stream` (the run id) of c->group: CreateLogStream (an existing
 * stream is fine), then batches. `pretty` = stdout is the pretty view for a person, which then
 * keeps every line. Holds run_end on stdout until cwlogs_finish. Returns 0 or -errno. */
int cwlogs_start(uv_loop_t *loop, fetch_aws *aws, const cwlogs_config *c, const char *stream,
                 bool pretty);
/* After run_end: ships what is queued within budget_ms (running the loop), then writes what is
 * left unshipped to stdout, the log_shipping_incomplete line if anything missed CloudWatch, and
 * the held run_end line. A no-op when not shipping. */
void cwlogs_finish(uint64_t budget_ms);

/* ---- pure helpers (unit-tested) ---- */

/* Which lines go to stdout while shipping (DAGY_LOG_STDOUT unset or "lifecycle"): WARNING and
 * ERROR lines and the run's lifecycle events. */
bool cwlogs_lifecycle_line(int level, const char *event_type);
/* A line of `len` bytes that is longer than `max`: the same JSON object with its longest string
 * fields ("line", "message", ...) cut on a character boundary and "log_truncated": true,
 * "log_original_bytes": len added, at most `max` bytes (malloc'd, *out_len set), or NULL if it
 * cannot be made to fit. */
char *cwlogs_fit_line(const char *json, size_t len, size_t max, size_t *out_len);
/* Whether one more event of `len` bytes, `span_ms` after the batch's first, fits a batch that
 * holds n events of `bytes` (messages + 26 each) already. */
bool cwlogs_batch_fits(size_t n, size_t bytes, int64_t span_ms, size_t len);
/* Appends `s` (n bytes, valid UTF-8) as a JSON string literal to out (capacity grows). Returns
 * 0 or -ENOMEM. */
int cwlogs_json_escape(char **out, size_t *out_len, size_t *out_cap, const char *s, size_t n);

#endif
