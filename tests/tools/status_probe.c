/* status_probe.c - drives the status store + DynamoDB backend against a real endpoint (moto,
 * possibly behind tests/integration/faultproxy.py) for the integration tests.
 *
 *   status_probe run RUNS_TABLE TASK_RUNS_TABLE RUN_ID N_TASKS FLUSH_MS
 *       A run with N_TASKS task runs going through RUNNING, RETRYING, SUCCEEDED / FAILED (and a
 *       trace_s3_uri added to FAILED items) over many loop turns, then a flush. Prints
 *       {"failed_run":B,"n_failed":N,"items":[...]} (the store's final items) on stdout; log
 *       lines go to stderr. Exit 0, or 3 if the run item was not written, 1 if a task item was not.
 *   status_probe put RUNS_TABLE TASK_RUNS_TABLE run|task ITEM_JSON
 *       One backend write of ITEM_JSON exactly as given (its own status_seq), no store: prints
 *       {"rc":N,"error":S}.
 */
#include "agent/log.h"
#include "agent/status.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/aws.h"

typedef struct {
    uv_loop_t *loop;
    status_store *store;
    uv_timer_t tick;
    int n, t;
    cJSON *run;
    cJSON **tasks;
    int *start, *failed;
    bool flushed, failed_run;
    int n_failed;
    uint64_t flush_ms;
} probe;

static const char *plan_state(probe *p, int i, int step)
{
    bool retries = i % 3 == 0, fails = i % 5 == 4;
    const char *retry_seq[] = {"RUNNING", "RETRYING", "RUNNING", "SUCCEEDED"};
    const char *fail_seq[] = {"RUNNING", "FAILED", "FAILED"}; /* last: adds trace_s3_uri */
    const char *ok_seq[] = {"RUNNING", "SUCCEEDED"};
    if (fails)
        return step < 3 ? fail_seq[step] : NULL;
    if (retries)
        return step < 4 ? retry_seq[step] : NULL;
    return step < 2 ? ok_seq[step] : NULL;
}

/* Moves task i one step along its plan; returns false when it has no more steps. */
static bool step_task(probe *p, int i)
{
    int step = p->t - p->start[i];
    if (step < 0)
        return true;
    const char *st = plan_state(p, i, step);
    if (!st)
        return false;
    char ts[32], uri[200];
    cJSON *it = p->tasks[i];
    proto_iso_time(proto_now(), ts);
    status_set_str(it, "status", st);
    status_set_num(it, "attempt", i % 3 == 0 && step >= 2 ? 2 : 1);
    if (step == 0)
        status_set_str(it, "started_at", ts);
    if (!strcmp(st, "RETRYING"))
        status_set_str(it, "error_message", "exit code 1 (attempt 1)");
    if (!strcmp(st, "SUCCEEDED") || (!strcmp(st, "FAILED") && step == 1)) {
        status_set_str(it, "ended_at", ts);
        status_set_num(it, "duration_seconds", 0.25 * (i + 1));
        status_set_num(it, "exit_code", st[0] == 'S' ? 0 : 1);
        status_set_str(it, "error_message", st[0] == 'S' ? NULL : "exit code 1");
        p->failed[i] = st[0] == 'F';
    }
    if (!strcmp(st, "FAILED") && step == 2) {
        snprintf(uri, sizeof uri, "s3://traces/exceptions/org/r/%d/1.txt", i);
        status_set_str(it, "trace_s3_uri", uri);
    }
    status_touch(p->store, it);
    return true;
}

static void on_flushed(void *ud, bool failed_run, int n_failed)
{
    probe *p = ud;
    p->flushed = true;
    p->failed_run = failed_run;
    p->n_failed = n_failed;
}

/* Finishes the run item (counts, terminal status) and flushes. */
static void finish_run(probe *p)
{
    char ts[32];
    int nf = 0;
    for (int i = 0; i < p->n; i++)
        nf += p->failed[i];
    status_set_str(p->run, "status", nf ? "FAILED" : "SUCCEEDED");
    status_set_str(p->run, "completed_at", proto_iso_time(proto_now(), ts));
    status_set_num(p->run, "tasks_failed", nf);
    status_set_num(p->run, "tasks_succeeded", p->n - nf);
    status_set_str(p->run, "error_message", nf ? "task \"t0004\" failed: exit code 1" : NULL);
    status_touch(p->store, p->run);
    status_flush(p->store, p->flush_ms, on_flushed, p);
}

static void on_tick(uv_timer_t *t)
{
    probe *p = t->data;
    bool busy = false;
    for (int i = 0; i < p->n; i++)
        busy |= step_task(p, i);
    char ts[32];
    status_set_str(p->run, "last_heartbeat_at", proto_iso_time(proto_now(), ts));
    status_touch(p->store, p->run);
    p->t++;
    if (!busy) {
        uv_timer_stop(t);
        finish_run(p);
    }
}

static void on_tick_closed(uv_handle_t *h)
{
    *(bool *)h->data = true;
}

static int run_mode(uv_loop_t *loop, status_store *store, char **argv)
{
    probe p = {.loop = loop, .store = store, .n = atoi(argv[5])};
    p.flush_ms = strtoull(argv[6], NULL, 10);
    p.tasks = calloc((size_t)p.n, sizeof *p.tasks);
    p.start = calloc((size_t)p.n, sizeof *p.start);
    p.failed = calloc((size_t)p.n, sizeof *p.failed);
    p.run = status_item(store, STATUS_RUN, argv[4], NULL);
    char ts[32], name[32];
    status_set_str(p.run, "status", "RUNNING");
    status_set_str(p.run, "started_at", proto_iso_time(proto_now(), ts));
    status_set_str(p.run, "flow_name", "probe_flow");
    status_set_str(p.run, "environment", "test");
    status_set_str(p.run, "parameters", "{\"date\":\"2026-03-14\"}");
    status_set_num(p.run, "tasks_total", p.n);
    status_touch(store, p.run);
    for (int i = 0; i < p.n; i++) {
        snprintf(name, sizeof name, "t%04d", i);
        p.tasks[i] = status_item(store, STATUS_TASK, argv[4], name);
        status_set_str(p.tasks[i], "task_run_id", name);
        p.start[i] = i % 7;
    }
    uv_timer_init(loop, &p.tick);
    p.tick.data = &p;
    uv_timer_start(&p.tick, on_tick, 5, 5);
    while (!p.flushed && uv_run(loop, UV_RUN_ONCE))
        ;
    /* p.tick lives in this frame: it must leave the loop's handle queue before we return. */
    bool closed = false;
    p.tick.data = &closed;
    uv_close((uv_handle_t *)&p.tick, on_tick_closed);
    for (int i = 0; i < 100 && !closed; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddBoolToObject(out, "failed_run", p.failed_run);
    cJSON_AddNumberToObject(out, "n_failed", p.n_failed);
    cJSON *items = cJSON_AddArrayToObject(out, "items");
    cJSON_AddItemToArray(items, cJSON_Duplicate(p.run, true));
    for (int i = 0; i < p.n; i++)
        cJSON_AddItemToArray(items, cJSON_Duplicate(p.tasks[i], true));
    char *text = cJSON_PrintUnformatted(out);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(out);
    int rc = !p.flushed || p.failed_run ? 3 : p.n_failed ? 1 : 0;
    free(p.tasks);
    free(p.start);
    free(p.failed);
    return rc;
}

typedef struct {
    bool done;
    int rc;
    char err[1024];
} put_result;

static void on_put(void *ctx, int rc, const char *err)
{
    put_result *r = ctx;
    r->done = true;
    r->rc = rc;
    snprintf(r->err, sizeof r->err, "%s", err ? err : "");
}

static int put_mode(uv_loop_t *loop, status_backend *be, char **argv)
{
    cJSON *item = cJSON_Parse(argv[5]);
    if (!item) {
        fprintf(stderr, "status_probe: ITEM_JSON does not parse\n");
        return 2;
    }
    put_result r = {0};
    int rc = be->write(be, !strcmp(argv[4], "run") ? STATUS_RUN : STATUS_TASK, item, on_put, &r);
    cJSON_Delete(item);
    if (rc < 0) {
        r.rc = rc;
        snprintf(r.err, sizeof r.err, "write: %s", strerror(-rc));
    }
    while (rc == 0 && !r.done && uv_run(loop, UV_RUN_ONCE))
        ;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "rc", r.rc);
    cJSON_AddStringToObject(out, "error", r.err);
    char *text = cJSON_PrintUnformatted(out);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(out);
    return 0;
}

static void close_any(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int main(int argc, char **argv)
{
    bool run = argc == 7 && !strcmp(argv[1], "run");
    bool put = argc == 6 && !strcmp(argv[1], "put");
    if (!run && !put) {
        fprintf(stderr, "usage: status_probe run RUNS TASK_RUNS RUN_ID N_TASKS FLUSH_MS\n"
                        "       status_probe put RUNS TASK_RUNS run|task ITEM_JSON\n");
        return 2;
    }
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, 2);
    uv_loop_t loop;
    uv_loop_init(&loop);
    fetch_aws *aws = NULL;
    char err[FETCH_ERR_MAX];
    if (fetch_aws_new(&loop, &aws, err)) {
        fprintf(stderr, "status_probe: %s\n", err);
        return 2;
    }
    status_backend *be = NULL;
    if (status_ddb_new(aws, argv[2], argv[3], &be)) {
        fprintf(stderr, "status_probe: status_ddb_new failed\n");
        return 2;
    }
    /* Every loop turn's change becomes a write (no coalescing window): more requests for the
     * fault proxy to hit, and the store's sequencing is what these tests check. */
    be->coalesce_ms = 0;
    int rc;
    if (run) {
        status_store *store = NULL;
        status_store_new(&loop, be, &store);
        rc = run_mode(&loop, store, argv);
        status_store_free(store);
    } else {
        rc = put_mode(&loop, be, argv);
        be->close(be);
    }
    fetch_aws_free(aws);
    uv_walk(&loop, close_any, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop)) {
        fprintf(stderr, "status_probe: loop did not close cleanly\n");
        return 4;
    }
    return rc;
}
