/* traces.c - failure traces to S3 (contract section 6): every failed attempt's stderr tail goes
 * to s3://DAGY_TRACES_BUCKET/exceptions/ORG_ID/RUN_ID/TASK_NAME/ATTEMPT.txt, and the run's first
 * failure also to .../RUN_ID/traceback.txt; the items then carry trace_s3_uri. Uploads run
 * beside the DAG; the finish waits (bounded) for them. Without a bucket, traces stay in the
 * logs (every stderr line is a task_output line). */
#include "agent/run.h"
#include "agent/log.h"
#include "proto/names.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    run_state *r;
    long task; /* whose item gets trace_s3_uri (an index: r->tasks may move), or -1: the run's */
    int attempt;
    char *uri;
} trace_put;

static void on_put(void *ud, const fetch_aws_result *res)
{
    trace_put *tp = ud;
    run_state *r = tp->r;
    if (res->err == -ECANCELED) {
        /* the agent is exiting: nothing to report */
    } else if (res->err || res->http_status / 100 != 2) {
        log_line *l = agent_log_begin(LOG_WARNING, "trace_upload_failed",
                                      "could not upload the failure trace to %s", tp->uri);
        agent_log_str(l, "error", res->message);
        agent_log_end(l);
    } else if (r->status) {
        agent_task *t = tp->task >= 0 ? &r->tasks[tp->task] : NULL;
        cJSON *item = t ? t->item : r->run_item;
        /* Uploads of successive attempts can finish out of order (retry_delay_seconds 0): the
         * task item keeps the latest attempt's trace, not the last upload to finish. */
        if (!t || t->trace_attempt < tp->attempt) {
            if (t)
                t->trace_attempt = tp->attempt;
            status_set_str(item, "trace_s3_uri", tp->uri);
            status_touch(r->status, item);
        }
    }
    r->pending--;
    if (tp->task >= 0 && r->tasks) {
        r->tasks[tp->task].uploads--;
        agent__release_task(r, (size_t)tp->task);
    }
    free(tp->uri);
    free(tp);
}

/* Starts one PutObject of `body` at KEY. */
static void put(run_state *r, long task, int attempt, const char *key, const char *body, size_t len)
{
    trace_put *tp = calloc(1, sizeof *tp);
    const char *bucket = r->cfg->traces_bucket;
    tp->r = r;
    tp->task = task;
    tp->attempt = attempt;
    tp->uri = malloc(strlen(bucket) + strlen(key) + 8);
    sprintf(tp->uri, "s3://%s/%s", bucket, key);
    r->pending++;
    if (task >= 0)
        r->tasks[task].uploads++;
    if (fetch_s3_put(r->aws, bucket, key, body, len, "text/plain; charset=utf-8", on_put, tp)) {
        r->pending--;
        if (task >= 0)
            r->tasks[task].uploads--;
        free(tp->uri);
        free(tp);
    }
}

void agent__upload_trace(run_state *r, size_t i, int attempt, const char *trace, size_t len)
{
    agent_config *c = r->cfg;
    const char *task = r->tasks[i].ft->name;
    if (!c->traces_bucket || !r->aws)
        return;
    const char *org = c->org_id ? c->org_id : "none";
    size_t hlen = strlen(task) + strlen(c->run_id) + 96;
    char *body = malloc(hlen + len + 1);
    int n = snprintf(body, hlen, "run %s, task %s, attempt %d failed; stderr tail:\n", c->run_id,
                     task, attempt);
    memcpy(body + n, trace, len);
    size_t blen = (size_t)n + len;
    /* Every name is one key segment, encoded the way file names are (proto_name_encode): a
     * task ".hidden" has exceptions/ORG/RUN/%2Ehidden/1.txt, never a "." or ".." segment. */
    char key[4 * PROTO_NAME_ENCODED_MAX], eo[PROTO_NAME_ENCODED_MAX], er[PROTO_NAME_ENCODED_MAX],
        et[PROTO_NAME_ENCODED_MAX];
    proto_name_encode(org, eo, sizeof eo);
    proto_name_encode(c->run_id, er, sizeof er);
    proto_name_encode(task, et, sizeof et);
    snprintf(key, sizeof key, "exceptions/%s/%s/%s/%d.txt", eo, er, et, attempt);
    put(r, (long)i, attempt, key, body, blen);
    if (!r->first_trace_sent) {
        r->first_trace_sent = true;
        snprintf(key, sizeof key, "exceptions/%s/%s/traceback.txt", eo, er);
        put(r, -1, attempt, key, body, blen);
    }
    free(body);
}
