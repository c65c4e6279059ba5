/* run.c - the run lifecycle: set up the loop, status store and signals; prepare; execute the DAG;
 * finish (final run status, run_end, trace uploads, status flush) and choose the exit code.
 *
 * Shutdown (contract section 3): the first SIGTERM/SIGINT stops new starts at once, the drain
 * timer lets running tasks finish for drain_seconds, then their process groups are terminated;
 * a second signal skips the wait. The run is then FAILED with "Worker shutdown requested via
 * SIGTERM" and the agent exits 143 after flushing status. */
#include "agent/run.h"
#include "agent/durable.h"
#include "agent/log.h"
#include "proto/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/unpack.h"

static const char *const phase_names[] = {"PREPARING", "EXECUTING", "FINISHING", "DONE"};

void agent__set_phase(run_state *r, run_phase p)
{
    agent_log(LOG_DEBUG, "run_phase", "run phase %s -> %s", phase_names[r->phase], phase_names[p]);
    r->phase = p;
}

void agent_uuid(char *buf)
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, GRND_NONBLOCK) != (ssize_t)sizeof b) {
        /* No entropy yet (a very early boot): time, pid and a counter, still unique. */
        static uint64_t counter;
        uint64_t t = uv_hrtime() ^ ((uint64_t)getpid() << 32);
        uint64_t c = ++counter;
        memcpy(b, &t, 8);
        memcpy(b + 8, &c, 8);
    }
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

void agent__run_set(run_state *r, const char *key, const char *val)
{
    status_set_str(r->run_item, key, val);
    status_touch(r->status, r->run_item);
}

/* The run's identity fields on the run item. */
static void run_item_identity(run_state *r)
{
    agent_config *c = r->cfg;
    cJSON *it = r->run_item;
    status_set_str(it, "flow_name", c->flow_name);
    status_set_str(it, "flow_version", c->flow_version);
    status_set_str(it, "org_id", c->org_id);
    status_set_str(it, "environment", c->environment);
    status_set_str(it, "correlation_id", c->correlation_id);
    status_set_str(it, "executor", c->container_mode ? "ecs" : "local");
    char *params = cJSON_PrintUnformatted(c->parameters);
    status_set_str(it, "parameters", params);
    cJSON_free(params);
    if (r->external_id)
        status_set_str(it, "external_id", r->external_id);
}

/* RUNNING is written as soon as the agent is up, so the launcher's QUEUED moves at once. */
static void write_running(run_state *r)
{
    char ts[32];
    proto_iso_time(proto_now(), ts);
    run_item_identity(r);
    status_set_str(r->run_item, "status", "RUNNING");
    status_set_str(r->run_item, "started_at", ts);
    status_set_str(r->run_item, "last_heartbeat_at", ts);
    if (!r->cfg->container_mode)
        status_set_str(r->run_item, "created_at", ts);
    status_touch(r->status, r->run_item);
}

static void on_heartbeat(uv_timer_t *t)
{
    run_state *r = t->data;
    char ts[32];
    if (r->phase >= RUN_FINISHING)
        return;
    agent__run_set(r, "last_heartbeat_at", proto_iso_time(proto_now(), ts));
}

/* Drain timer: running tasks had their chance; terminate their process groups. */
static void on_drain_expired(uv_timer_t *t)
{
    run_state *r = t->data;
    r->drain_expired = true;
    agent__tasks_kill(r);
}

static void on_signal(uv_signal_t *h, int signum)
{
    run_state *r = h->data;
    r->signals++;
    if (r->signals == 1) {
        r->stop_signal = signum == SIGTERM ? "SIGTERM" : "SIGINT";
        log_line *l = agent_log_begin(LOG_WARNING, "shutdown_requested",
                                      "%s received: no new tasks; draining running tasks for up "
                                      "to %g s",
                                      r->stop_signal, r->cfg->drain_seconds);
        agent_log_str(l, "signal", r->stop_signal);
        agent_log_end(l);
        agent__cancel_check(r); /* a requested cancel is not a crash */
        if (r->phase == RUN_PREPARING) {
            agent__prepare_cancel(r);
            agent__finish(r, AGENT_EXIT_SIGTERM, "Worker shutdown requested via SIGTERM");
            return;
        }
        if (r->phase == RUN_EXECUTING) {
            agent__tasks_drain(r);
            uv_timer_start(&r->drain_timer, on_drain_expired,
                           (uint64_t)(r->cfg->drain_seconds * 1000), 0);
            agent__tasks_pump(r);
        }
        return;
    }
    /* A second signal skips the wait. */
    agent_log(LOG_WARNING, "shutdown_requested", "second signal: terminating running tasks now");
    if (r->phase == RUN_EXECUTING && !r->drain_expired) {
        uv_timer_stop(&r->drain_timer);
        on_drain_expired(&r->drain_timer);
    }
}

/* Counts terminal task states onto the run item. */
static void run_item_counts(run_state *r)
{
    static const struct {
        const char *key;
        sched_state st;
    } counts[] = {{"tasks_succeeded", SCHED_SUCCEEDED},
                  {"tasks_failed", SCHED_FAILED},
                  {"tasks_skipped", SCHED_SKIPPED},
                  {"tasks_cancelled", SCHED_CANCELLED}};
    if (!r->plan)
        return;
    status_set_num(r->run_item, "tasks_total", (double)sched_count(r->plan));
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        status_set_num(r->run_item, counts[i].key, (double)sched_count_in(r->plan, counts[i].st));
}

/* Pretty view: the end-of-run table. */
static void print_summary(run_state *r)
{
    if (!agent_log_is_pretty() || !r->plan)
        return;
    agent_log_progress(NULL);
    size_t n = sched_count(r->plan);
    size_t cap = 256 + n * 200, len = 0;
    char *out = malloc(cap);
    if (!out)
        return;
    len += (size_t)snprintf(out + len, cap - len, "\n%-32s %-10s %8s %10s\n", "TASK", "STATUS",
                            "ATTEMPTS", "DURATION");
    for (size_t i = 0; i < n; i++) {
        sched_state st = sched_task_state(r->plan, i);
        char dur[32] = "-";
        if (st == SCHED_SUCCEEDED || st == SCHED_FAILED)
            snprintf(dur, sizeof dur, "%.2fs", r->tasks[i].duration);
        len += (size_t)snprintf(
            out + len, cap - len, "%-32.32s %-10s %8d %10s\n", r->spec->tasks[i].name,
            sched_state_name(sched_task_state(r->plan, i)), sched_task_attempt(r->plan, i), dur);
    }
    agent_log_raw(out);
    free(out);
}

static void on_flushed(void *ud, bool failed_run, int n_failed)
{
    run_state *r = ud;
    if (failed_run) {
        agent_log(LOG_ERROR, "status_write_failed",
                  "the run's final status could not be written (%d item(s) unwritten)", n_failed);
        r->exit_code = AGENT_EXIT_INFRA;
    }
    agent__set_phase(r, RUN_DONE);
    uv_stop(&r->loop);
}

/* Waits (bounded) for trace uploads before the final flush: they add trace_s3_uri to items. */
static void on_finish_poll(uv_timer_t *t)
{
    run_state *r = t->data;
    uint64_t waited = uv_now(&r->loop) - r->finish_ms;
    if (r->pending > 0 && waited < 5000)
        return;
    uv_timer_stop(t);
    /* What is left of the 30 s ECS stopTimeout after a drain; a normal end gets longer. */
    uint64_t budget = r->signals ? 8000 : 60000;
    status_flush(r->status, budget, on_flushed, r);
}

void agent__finish(run_state *r, int exit_code, const char *error)
{
    if (r->phase >= RUN_FINISHING || agent__cancel_defer(r, exit_code, error))
        return;
    agent__set_phase(r, RUN_FINISHING);
    uv_timer_stop(&r->sched_timer);
    uv_timer_stop(&r->drain_timer);
    uv_timer_stop(&r->heartbeat_timer);
    r->exit_code = exit_code;
    if (error != r->error) { /* callers may pass r->error itself */
        free(r->error);
        r->error = error ? strdup(error) : NULL;
    }

    const char *cancel = exit_code == AGENT_EXIT_SIGTERM ? agent__cancel_text(r) : NULL;
    const char *status = exit_code == AGENT_EXIT_OK ? "SUCCEEDED" : cancel ? "CANCELLED" : "FAILED";
    if (cancel) {
        free(r->error);
        r->error = strdup(cancel);
    }
    char ts[32];
    proto_iso_time(proto_now(), ts);
    double dur = (double)(uv_now(&r->loop) - r->started_ms) / 1000.0;
    run_item_counts(r);
    status_set_str(r->run_item, "status", status);
    status_set_str(r->run_item, "completed_at", ts);
    status_set_num(r->run_item, "duration_seconds", dur);
    status_set_str(r->run_item, "error_message", r->error);
    if (exit_code == AGENT_EXIT_SIGTERM)
        status_set_str(r->run_item, "stop_reason",
                       cancel           ? cancel
                       : r->stop_signal ? r->stop_signal
                                        : "SIGTERM");
    status_touch(r->status, r->run_item);

    log_line *l =
        agent_log_begin(exit_code == 0 ? LOG_INFO : LOG_ERROR, "run_end", "run %s in %.2f s%s%s",
                        status, dur, r->error ? ": " : "", r->error ? r->error : "");
    agent_log_str(l, "status", status);
    agent_log_num(l, "duration_seconds", dur);
    agent_log_int(l, "exit_code", exit_code);
    agent_log_str(l, "error", r->error);
    if (r->plan) {
        agent_log_int(l, "tasks_total", (int64_t)sched_count(r->plan));
        agent_log_int(l, "tasks_succeeded", (int64_t)sched_count_in(r->plan, SCHED_SUCCEEDED));
        agent_log_int(l, "tasks_failed", (int64_t)sched_count_in(r->plan, SCHED_FAILED));
        agent_log_int(l, "tasks_skipped", (int64_t)sched_count_in(r->plan, SCHED_SKIPPED));
        agent_log_int(l, "tasks_cancelled", (int64_t)sched_count_in(r->plan, SCHED_CANCELLED));
    }
    agent_log_end(l);
    print_summary(r);

    r->finish_ms = uv_now(&r->loop);
    uv_timer_start(&r->sched_timer, on_finish_poll, 0, 50);
}

/* Does this run need the AWS client at all? */
static bool needs_aws(const agent_config *c)
{
    if (c->container_mode || !strcmp(c->status_backend, "dynamodb") || c->traces_bucket ||
        c->results_bucket)
        return true;
    if (c->flow && !strncmp(c->flow, "s3://", 5))
        return true;
    for (char **d = c->dep_uris; d && *d; d++)
        if (!strncmp(*d, "s3://", 5))
            return true;
    return false;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Creates the loop, handles, AWS client and status store. */
static int setup(run_state *r, char *err)
{
    agent_config *c = r->cfg;
    int rc = uv_loop_init(&r->loop);
    if (rc) {
        snprintf(err, AGENT_ERR_MAX, "cannot start the event loop: %s", uv_strerror(rc));
        return AGENT_EXIT_INFRA;
    }
    r->started_ms = uv_now(&r->loop);
    uv_timer_init(&r->loop, &r->sched_timer);
    uv_timer_init(&r->loop, &r->drain_timer);
    uv_timer_init(&r->loop, &r->heartbeat_timer);
    uv_signal_init(&r->loop, &r->sigterm);
    uv_signal_init(&r->loop, &r->sigint);
    r->sched_timer.data = r->drain_timer.data = r->heartbeat_timer.data = r;
    r->sigterm.data = r->sigint.data = r;
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);

    if ((rc = sbx_init(&r->loop, &r->sbx))) {
        snprintf(err, AGENT_ERR_MAX, "cannot set up task processes: %s", strerror(-rc));
        return AGENT_EXIT_INFRA;
    }
    if (needs_aws(c) && fetch_aws_new(&r->loop, &r->aws, err))
        return AGENT_EXIT_INVALID;
    status_backend *be = NULL;
    if (!strcmp(c->status_backend, "dynamodb"))
        rc = status_ddb_new(r->aws, c->runs_table, c->task_runs_table, &be);
    else
        rc = status_local_new(c->state_dir, &be);
    if (rc || (rc = status_store_new(&r->loop, be, &r->status))) {
        snprintf(err, AGENT_ERR_MAX, "cannot open the %s status store: %s", c->status_backend,
                 strerror(-rc));
        return AGENT_EXIT_INFRA;
    }
    r->run_item = status_item(r->status, STATUS_RUN, c->run_id, NULL);
    return 0;
}

static void teardown(run_state *r)
{
    if (r->status)
        status_store_free(r->status);
    r->status = NULL; /* late upload completions (cancelled below) must not touch it */
    if (r->aws)
        fetch_aws_free(r->aws);
    if (r->sbx)
        sbx_close(r->sbx);
    agent__tasks_free(r);
    uv_walk(&r->loop, close_walk, NULL);
    /* Bounded: every handle is closing; a few turns finish their close callbacks. */
    for (int i = 0; i < 100 && uv_run(&r->loop, UV_RUN_NOWAIT); i++)
        ;
    agent__prepare_teardown(r);
    if (uv_loop_close(&r->loop))
        agent_log(LOG_DEBUG, "run_phase", "event loop closed with requests still active");
    free(r->run_dir);
    free(r->flow_dir);
    for (char **d = r->dep_dirs; d && *d; d++)
        free(*d);
    free(r->dep_dirs);
    cJSON_Delete(r->metadata);
    free(r->external_id);
    free(r->error);
    free(r->runner);
    if (r->spec)
        flowspec_free(r->spec);
}

int agent_run(agent_config *c)
{
    run_state *r = calloc(1, sizeof *r);
    char err[AGENT_ERR_MAX] = "";
    r->cfg = c;
    r->exit_code = AGENT_EXIT_INFRA;
    agent_log_context(c->run_id, c->flow_name, c->flow_version, c->org_id, c->correlation_id);
    int rc = setup(r, err);
    if (rc) {
        agent_log(LOG_ERROR, "run_end", "%s", err);
        teardown(r);
        free(r);
        return rc;
    }
    write_running(r);
    uv_timer_start(&r->heartbeat_timer, on_heartbeat, (uint64_t)(c->heartbeat_seconds * 1000),
                   (uint64_t)(c->heartbeat_seconds * 1000));
    agent__prepare(r);
    while (r->phase != RUN_DONE && uv_run(&r->loop, UV_RUN_DEFAULT))
        ;
    rc = r->phase == RUN_DONE ? r->exit_code : AGENT_EXIT_INFRA;
    teardown(r);
    free(r);
    return rc;
}
