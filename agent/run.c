/* run.c - the run lifecycle: set up the loop, status store and signals; the start gate (read the
 * stored run item: refuse an ended run id, take over a RUNNING one, store RUNNING before anything
 * runs); prepare; execute the DAG; finish (final run status, trace uploads, status flush, then
 * run_end as the last line) and choose the exit code.
 *
 * Shutdown (contract section 3): the first SIGTERM/SIGINT stops new starts at once, the drain
 * timer lets running tasks finish for drain_seconds, then their process groups are terminated;
 * a second signal skips the wait. The run is then FAILED with "Worker shutdown requested via
 * SIGTERM" and the agent exits 143 after flushing status. */
#include "agent/run.h"
#include "agent/durable.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "proto/ddb.h"
#include "proto/sha256.h"
#include "proto/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "fetch/unpack.h"
#include "proto/util.h"

static const char *const phase_names[] = {"STARTING", "PREPARING", "EXECUTING", "FINISHING",
                                          "DONE"};

/* Budgets (milliseconds). The start gate: reading the run item and writing RUNNING, with the
 * backend's own retries inside. The final flush after a signal fits ECS's 30 s stopTimeout:
 * 15 s drain + 3 s kill grace + 2 s trace wait + 8 s flush = 28 s (docs/agent.md). */
#define START_BUDGET_MS        15000
#define FLUSH_BUDGET_MS        15000
#define FLUSH_BUDGET_SIGNAL_MS 8000
#define TRACE_WAIT_MS          5000
#define TRACE_WAIT_SIGNAL_MS   2000
/* After run_end, the lines still queued for CloudWatch Logs (DAGY_LOG_GROUP): 15 + 3 + 2 + 8 +
 * 10 = 38 s after a signal, inside the 60 s stopTimeout of dagy-launch's task definition. */
#define LOG_FLUSH_BUDGET_MS        20000
#define LOG_FLUSH_BUDGET_SIGNAL_MS 10000

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
    /* 8-4-4-4-12 hex digits (proto_hex, not snprintf: one per attempt, and 16 conversions) */
    static const unsigned char groups[] = {4, 2, 2, 2, 6};
    size_t in = 0;
    for (size_t g = 0; g < sizeof groups; g++) {
        proto_hex(b + in, groups[g], buf);
        buf += 2 * groups[g];
        in += groups[g];
        *buf++ = g + 1 < sizeof groups ? '-' : '\0';
    }
}

void agent__run_set(run_state *r, const char *key, const char *val)
{
    status_set_str(r->run_item, key, val);
    status_touch(r->status, r->run_item);
}

static const char *env_get(const char *name)
{
    return getenv(name);
}

void agent__cost_metadata(run_state *r, const cJSON *task, const char *why)
{
    char err[256];
    struct utsname u;
    if (!r->cfg->container_mode || r->phase >= RUN_FINISHING)
        return; /* local runs record no cost (docs/operations.md); a late answer is too late */
    const char *machine = uname(&u) == 0 ? u.machine : NULL;
    if (task &&
        !agent_cost_profile_parse(task, getenv("DAGY_CAPACITY_PROVIDER"), machine, &r->cost, err,
                                  sizeof err) &&
        !agent_cost_rates_for(&r->cost, env_get, &r->rates, err, sizeof err)) {
        r->cost_known = true;
        return;
    }
    log_line *l =
        agent_log_begin(LOG_WARNING, "cost_unavailable", "no estimated_cost_usd for this run: %s",
                        task  ? err
                        : why ? why
                              : "no task metadata");
    agent_log_str(l, "error", task ? err : why);
    agent_log_end(l);
}

/* Tasks that needed more than one attempt. */
static int tasks_retried(run_state *r)
{
    int n = 0;
    for (size_t i = 0; r->plan && i < sched_count(r->plan); i++)
        n += sched_task_attempt(r->plan, i) > 1 ? 1 : 0;
    return n;
}

/* The run's end metrics (agent/metrics.h), just before run_end. */
static void emit_run_metrics(run_state *r)
{
    status_store_lag_flush(r->status);
    int failed = r->plan ? (int)sched_count_in(r->plan, SCHED_FAILED) : 0;
    int skipped = r->plan ? (int)sched_count_in(r->plan, SCHED_SKIPPED) : 0;
    agent_metrics_run(r->duration, failed, tasks_retried(r), skipped, r->cost_usd);
}

static void on_status_lag(void *ud, const double *lag_ms, size_t n)
{
    (void)ud;
    agent_metrics_status_lag(lag_ms, n);
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

static void pool_noop(uv_work_t *w)
{
    (void)w;
}

static void pool_started(uv_work_t *w, int status)
{
    (void)w;
    (void)status;
}

/* Starts libuv's thread pool (every run uses it: the code digest, unpacking, hashing) with
 * every signal blocked, which its threads inherit. Otherwise the kernel may hand a task's
 * SIGCHLD to an idle worker thread, whose run of the handler then wakes the loop thread through
 * libuv's signal pipe: two threads woken per ended task instead of one (bench/dag_bench.sh
 * showed the pool's threads scheduled ~900 times during a 2000-task run). */
static void start_thread_pool(run_state *r)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    /* The first work item creates every thread of the pool before uv_queue_work returns. */
    if (uv_queue_work(&r->loop, &r->pool_start, pool_noop, pool_started) != 0)
        agent_log(LOG_DEBUG, "thread_pool", "cannot start the thread pool early");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    run_state *r = h->data;
    /* run_end is written and is the last line: a signal caught while the loop closes its
     * handles changes nothing (the soak caught a shutdown_requested line after run_end). */
    if (r->phase == RUN_DONE)
        return;
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
        if (r->phase == RUN_STARTING)
            return; /* the start gate ends the run once its record exists (start_done) */
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
            out + len, cap - len, "%-32.32s %-10s %8d %10s\n", r->tasks[i].ft->name,
            sched_state_name(sched_task_state(r->plan, i)), sched_task_attempt(r->plan, i), dur);
    }
    agent_log_raw(out);
    free(out);
}

/* The run's last line: written once the final flush is known, so its status and exit code are
 * what the store holds and what the process returns. `recorded` is false when the run item's
 * final state could not be written. */
static void log_run_end(run_state *r, bool recorded)
{
    const char *store_err = recorded ? NULL : status_run_error(r->status, r->run_item);
    char lost[96] = "";
    if (recorded && r->unwritten)
        snprintf(lost, sizeof lost, "; %d task status%s could not be written", r->unwritten,
                 r->unwritten == 1 ? "" : "es");
    log_line *l = agent_log_begin(
        r->exit_code == 0 ? LOG_INFO : LOG_ERROR, "run_end", "run %s in %.2f s%s%s%s%s%s (exit %d)",
        r->final_status, r->duration, r->error ? ": " : "", r->error ? r->error : "",
        recorded ? "" : "; its final status could not be written: ",
        recorded ? "" : (store_err ? store_err : "no answer from the status store"), lost,
        r->exit_code);
    agent_log_str(l, "status", r->final_status);
    agent_log_num(l, "duration_seconds", r->duration);
    agent_log_int(l, "exit_code", r->exit_code);
    agent_log_str(l, "error", r->error);
    agent_log_bool(l, "status_recorded", recorded && !r->unwritten);
    if (!recorded)
        agent_log_str(l, "status_error", store_err);
    if (r->unwritten)
        agent_log_int(l, "status_items_unwritten", r->unwritten);
    if (r->cost_usd >= 0) { /* all 6 decimals (agent_log_num keeps 3) */
        cJSON *cost = cJSON_CreateNumber(r->cost_usd);
        agent_log_json(l, "estimated_cost_usd", cost);
        cJSON_Delete(cost);
    }
    if (r->plan) {
        agent_log_int(l, "tasks_total", (int64_t)sched_count(r->plan));
        agent_log_int(l, "tasks_succeeded", (int64_t)sched_count_in(r->plan, SCHED_SUCCEEDED));
        agent_log_int(l, "tasks_failed", (int64_t)sched_count_in(r->plan, SCHED_FAILED));
        agent_log_int(l, "tasks_skipped", (int64_t)sched_count_in(r->plan, SCHED_SKIPPED));
        agent_log_int(l, "tasks_cancelled", (int64_t)sched_count_in(r->plan, SCHED_CANCELLED));
    }
    agent_log_end(l);
}

static void on_flushed(void *ud, bool failed_run, int n_failed)
{
    run_state *r = ud;
    if (failed_run)
        r->exit_code = AGENT_EXIT_INFRA; /* the store does not say what happened */
    /* A task status lost is an infrastructure failure too, even with the run item written: a
     * task item left RUNNING in the store must not come with a clean exit. 143 stays 143. */
    if (n_failed > 0 && r->exit_code != AGENT_EXIT_SIGTERM)
        r->exit_code = AGENT_EXIT_INFRA;
    r->unwritten = n_failed; /* each was logged as status_write_failed */
    agent__prune_runs(r);
    print_summary(r);
    if (!r->cfg->only_task) /* an ECS child's run is its parent's: one RunDuration a run */
        emit_run_metrics(r);
    agent__set_phase(r, RUN_DONE); /* before run_end: nothing is logged after it */
    log_run_end(r, !failed_run);
    uv_stop(&r->loop);
}

/* Waits (bounded) for trace uploads before the final flush: they add trace_s3_uri to items. */
static void on_finish_poll(uv_timer_t *t)
{
    run_state *r = t->data;
    uint64_t waited = uv_now(&r->loop) - r->finish_ms;
    if (r->pending > 0 && waited < (r->signals ? TRACE_WAIT_SIGNAL_MS : TRACE_WAIT_MS))
        return;
    uv_timer_stop(t);
    status_flush(r->status, r->signals ? FLUSH_BUDGET_SIGNAL_MS : FLUSH_BUDGET_MS, on_flushed, r);
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
    r->final_status = status;
    r->duration = (double)(uv_now(&r->loop) - r->started_ms) / 1000.0;
    run_item_counts(r);
    status_set_str(r->run_item, "status", status);
    status_set_str(r->run_item, "completed_at", ts);
    status_set_num(r->run_item, "duration_seconds", r->duration);
    status_set_str(r->run_item, "error_message", r->error);
    if (r->cost_known) {
        r->cost_usd = agent_cost_usd(&r->cost, &r->rates, r->duration);
        status_set_num(r->run_item, "estimated_cost_usd", r->cost_usd);
    }
    if (exit_code == AGENT_EXIT_SIGTERM)
        status_set_str(r->run_item, "stop_reason",
                       cancel           ? cancel
                       : r->stop_signal ? r->stop_signal
                                        : "SIGTERM");
    /* The launcher's sparse active-runs index (docs/launch.md) holds a run while this attribute
     * exists. An ended run leaves it, except a SIGTERM nobody asked for: the reconciler must
     * still find that run to tell an infrastructure stop and relaunch it. */
    if (!(exit_code == AGENT_EXIT_SIGTERM && !cancel))
        status_set_str(r->run_item, PROTO_ACTIVE_RUNS_ATTR, NULL);
    status_touch(r->status, r->run_item);

    r->finish_ms = uv_now(&r->loop);
    uv_timer_start(&r->sched_timer, on_finish_poll, 0, 50);
}

/* Ends the run before its record exists (refused, or the store cannot be reached): nothing
 * more is written; the last line says why, with the exit code. */
static void finish_unrecorded(run_state *r, int exit_code, const char *error)
{
    uv_timer_stop(&r->start_timer);
    r->exit_code = exit_code;
    agent__set_phase(r, RUN_DONE); /* before run_end: nothing is logged after it */
    log_line *l = agent_log_begin(LOG_ERROR, "run_end", "%s (exit %d)", error, exit_code);
    agent_log_int(l, "exit_code", exit_code);
    agent_log_str(l, "error", error);
    agent_log_bool(l, "status_recorded", false);
    agent_log_end(l);
    uv_stop(&r->loop);
}

void agent__finish_unrecorded(run_state *r, int exit_code, const char *error)
{
    finish_unrecorded(r, exit_code, error);
}

/* Does this run need the AWS client at all? */
static bool needs_aws(const agent_config *c)
{
    if (c->container_mode || !strcmp(c->status_backend, "dynamodb") || c->traces_bucket ||
        c->results_bucket || c->cwlogs.group)
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
    start_thread_pool(r);
    char why[256];
    agent_cost_rates rates;
    if (agent_metrics_configure(getenv("DAGY_METRICS"), why, sizeof why) ||
        agent_cost_rates_for(NULL, env_get, &rates, why, sizeof why)) {
        snprintf(err, AGENT_ERR_MAX, "%s", why);
        return AGENT_EXIT_INVALID;
    }
    uv_timer_init(&r->loop, &r->sched_timer);
    uv_timer_init(&r->loop, &r->drain_timer);
    uv_timer_init(&r->loop, &r->heartbeat_timer);
    uv_timer_init(&r->loop, &r->start_timer);
    uv_timer_init(&r->loop, &r->ecs_poll_timer);
    uv_timer_init(&r->loop, &r->ecs_launch_timer);
    r->start_timer.data = r->ecs_poll_timer.data = r->ecs_launch_timer.data = r;
    r->only_index = r->only_spec = -1;
    uv_signal_init(&r->loop, &r->sigterm);
    uv_signal_init(&r->loop, &r->sigint);
    r->sched_timer.data = r->drain_timer.data = r->heartbeat_timer.data = r;
    r->sigterm.data = r->sigint.data = r;
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    /* main() blocked SIGTERM/SIGINT before anything else; a signal that came since is
     * pending and reaches the handlers now (on_signal, on the next loop turn). */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_UNBLOCK, &stop, NULL);

    if ((rc = sbx_init(&r->loop, &r->sbx))) {
        snprintf(err, AGENT_ERR_MAX, "cannot set up task processes: %s", strerror(-rc));
        return AGENT_EXIT_INFRA;
    }
    /* -ELIBACC: the AWS module is missing or from another build (fetch/module/lazy.c). */
    if (needs_aws(c) && (rc = fetch_aws_new(&r->loop, &r->aws, err)))
        return rc == -ELIBACC ? AGENT_EXIT_INFRA : AGENT_EXIT_INVALID;
    if (c->cwlogs.group) { /* from here on the lines also go to CloudWatch Logs */
        if ((rc = cwlogs_start(&r->loop, r->aws, &c->cwlogs, c->run_id, agent_log_is_pretty()))) {
            snprintf(err, AGENT_ERR_MAX, "cannot start shipping logs: %s", strerror(-rc));
            return AGENT_EXIT_INFRA;
        }
        sbx_set_line_max(r->sbx, CWLOGS_TASK_LINE_MAX);
    }
    status_backend *be = NULL;
    if (!strcmp(c->status_backend, "dynamodb"))
        rc = status_ddb_new(r->aws, c->runs_table, c->task_runs_table, &be);
    else
        rc = status_local_new(c->state_dir, &be);
    if (!rc && c->only_task) /* an ECS child: the parent owns the run item */
        be = agent__ecs_child_backend(be);
    if (rc || (rc = status_store_new(&r->loop, be, &r->status))) {
        bool local = strcmp(c->status_backend, "dynamodb") != 0;
        char what[256], hint[640] = "";
        if (local) {
            snprintf(what, sizeof what, "the state directory %s (--state-dir)", c->state_dir);
            agent__unwritable_hint(-rc, what, hint, sizeof hint);
        }
        snprintf(err, AGENT_ERR_MAX, "cannot open the %s status store%s%s: %s%s", c->status_backend,
                 local ? " " : "", local ? c->state_dir : "", strerror(-rc), hint);
        return AGENT_EXIT_INFRA;
    }
    status_store_on_lag(r->status, on_status_lag, r);
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
    /* Nothing is logged here: run_end was the last line. A loop that does not close (a
     * request still active) is the sanitizer and valgrind runs' business. */
    (void)uv_loop_close(&r->loop);
    if (r->run_dir_lock >= 0)
        close(r->run_dir_lock);
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

/* ---- the start gate: nothing runs before the run's record exists ---- */

/* What the stored run item allows (contract section 6, docs/agent.md "Run ids are used once"):
 * absent or QUEUED: a new run (seq base: the stored seq, 0 from the launcher); RUNNING (an
 * earlier agent of this run died, or is still alive): take over above every seq it could have
 * written; ended: refused, exit 2. Returns 0 with *base, or an exit code with err. */
static int start_decision(run_state *r, const cJSON *stored, uint64_t *base, char *err)
{
    const char *id = r->cfg->run_id;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(stored, "status");
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(stored, "status_seq");
    double v = cJSON_IsNumber(seq) && seq->valuedouble > 0 ? seq->valuedouble : 0;
    *base = 0;
    if (!stored)
        return 0;
    if (cJSON_IsString(st) && proto_status_terminal(st->valuestring)) {
        snprintf(err, AGENT_ERR_MAX,
                 "run \"%s\" already ended %s; a run id is used once: to run the flow again, "
                 "start a new run, and to continue this one use --resume-from %s (dagy-launch "
                 "retry %s)",
                 id, st->valuestring, id, id);
        return AGENT_EXIT_INVALID;
    }
    if (v >= (double)STATUS_SEQ_MAX) {
        snprintf(err, AGENT_ERR_MAX,
                 "run \"%s\" was taken over too many times (status_seq %.0f); start a new run "
                 "with --resume-from %s",
                 id, v, id);
        return AGENT_EXIT_INVALID;
    }
    bool running = cJSON_IsString(st) && !strcmp(st->valuestring, "RUNNING");
    if (running && agent__run_dir_busy(r->cfg)) {
        snprintf(err, AGENT_ERR_MAX,
                 "run \"%s\" is being run by another agent on this machine (it holds %s/%s); "
                 "wait for it, or start a new run",
                 id, r->cfg->work_dir, id);
        return AGENT_EXIT_INVALID;
    }
    *base = running ? (uint64_t)v + STATUS_SEQ_STRIDE : (uint64_t)v;
    if (running) {
        log_line *l = agent_log_begin(
            LOG_WARNING, "status_takeover",
            "run \"%s\" is stored RUNNING (status_seq %.0f) by an agent that did not finish it: "
            "this agent takes it over and runs the flow again; its writes start at status_seq "
            "%llu",
            id, v, (unsigned long long)*base + 1);
        agent_log_num(l, "stored_status_seq", v);
        agent_log_end(l);
    }
    return 0;
}

/* The start gate's end: RUNNING is stored (or not). */
static void on_started(void *ud, bool failed_run, int n_failed)
{
    run_state *r = ud;
    char err[AGENT_ERR_MAX];
    (void)n_failed;
    if (r->phase != RUN_STARTING)
        return;
    uv_timer_stop(&r->start_timer);
    if (failed_run) {
        const char *e = status_run_error(r->status, r->run_item);
        snprintf(err, AGENT_ERR_MAX, "cannot record run \"%s\" in the %s status store: %s",
                 r->cfg->run_id, r->cfg->status_backend, e ? e : "no answer");
        finish_unrecorded(r, AGENT_EXIT_INFRA, err);
        return;
    }
    agent__set_phase(r, RUN_PREPARING);
    if (r->signals) { /* a signal during the gate: the record exists now, end it */
        agent__finish(r, AGENT_EXIT_SIGTERM, "Worker shutdown requested via SIGTERM");
        return;
    }
    uint64_t hb = (uint64_t)(r->cfg->heartbeat_seconds * 1000);
    uv_timer_start(&r->heartbeat_timer, on_heartbeat, hb, hb);
    agent__prepare(r);
}

/* The stored run item arrived: refuse, or write RUNNING with the chosen seq base. */
static void on_run_read(void *ctx, int rc, const cJSON *stored, const char *err)
{
    run_state *r = ctx;
    char msg[AGENT_ERR_MAX];
    if (r->phase != RUN_STARTING || !r->status)
        return;                     /* the gate already timed out */
    uv_timer_stop(&r->start_timer); /* the write's flush has its own deadline */
    if (rc < 0) {
        snprintf(msg, AGENT_ERR_MAX, "cannot read run \"%s\" from the %s status store: %s",
                 r->cfg->run_id, r->cfg->status_backend, err ? err : strerror(-rc));
        finish_unrecorded(r, AGENT_EXIT_INFRA, msg);
        return;
    }
    uint64_t base;
    int code = start_decision(r, stored, &base, msg);
    if (code) {
        finish_unrecorded(r, code, msg);
        return;
    }
    agent__gate_passed(r, base);
}

void agent__gate_passed(run_state *r, uint64_t base)
{
    status_store_set_seq_base(r->status, base);
    write_running(r);
    uint64_t used = uv_now(&r->loop) - r->started_ms;
    status_flush(r->status, used < START_BUDGET_MS - 1000 ? START_BUDGET_MS - used : 1000,
                 on_started, r);
}

/* Ticks every STATUS_DEGRADED_MS while the run item is being read: the first tick reports the
 * silence (as the store does for writes), the one at START_BUDGET_MS ends the run. */
static void on_start_timeout(uv_timer_t *t)
{
    run_state *r = t->data;
    char msg[AGENT_ERR_MAX];
    uint64_t waited = uv_now(&r->loop) - r->started_ms;
    if (waited + 100 < START_BUDGET_MS) {
        if (waited < 2 * STATUS_DEGRADED_MS - 100) {
            snprintf(msg, AGENT_ERR_MAX, "no answer for %.0f s (reading run \"%s\")",
                     (double)waited / 1000, r->cfg->run_id);
            log_line *l = agent_log_begin(LOG_WARNING, "status_store_degraded",
                                          "the %s status store is failing (%s); nothing runs "
                                          "before the run is recorded",
                                          r->cfg->status_backend, msg);
            agent_log_str(l, "error", msg);
            agent_log_end(l);
        }
        return;
    }
    snprintf(msg, AGENT_ERR_MAX,
             "the %s status store did not answer within %d s (reading run "
             "\"%s\"); nothing was run",
             r->cfg->status_backend, START_BUDGET_MS / 1000, r->cfg->run_id);
    finish_unrecorded(r, AGENT_EXIT_INFRA, msg);
}

/* Reads the stored run item first (see start_decision), bounded by START_BUDGET_MS. */
static void start_gate(run_state *r)
{
    uv_timer_start(&r->start_timer, on_start_timeout, STATUS_DEGRADED_MS, STATUS_DEGRADED_MS);
    if (r->cfg->only_task) {
        agent__ecs_child_gate(r);
        return;
    }
    int rc = status_store_read(r->status, STATUS_RUN, r->cfg->run_id, NULL, on_run_read, r);
    if (rc < 0)
        on_run_read(r, rc, NULL, NULL);
}

int agent_run(agent_config *c)
{
    run_state *r = calloc(1, sizeof *r);
    char err[AGENT_ERR_MAX] = "";
    r->cfg = c;
    r->exit_code = AGENT_EXIT_INFRA;
    r->run_dir_lock = -1;
    r->cost_usd = -1;
    agent_log_context(c->run_id, c->flow_name, c->flow_version, c->org_id, c->correlation_id);
    int rc = setup(r, err);
    if (rc) {
        log_line *l = agent_log_begin(LOG_ERROR, "run_end", "%s (exit %d)", err, rc);
        agent_log_int(l, "exit_code", rc);
        agent_log_str(l, "error", err);
        agent_log_bool(l, "status_recorded", false);
        agent_log_end(l);
        cwlogs_finish(LOG_FLUSH_BUDGET_SIGNAL_MS);
        teardown(r);
        free(r);
        return rc;
    }
    start_gate(r);
    while (r->phase != RUN_DONE && uv_run(&r->loop, UV_RUN_DEFAULT))
        ;
    /* run_end is logged: what is still queued for CloudWatch Logs goes now, run_end with it. */
    cwlogs_finish(r->signals ? LOG_FLUSH_BUDGET_SIGNAL_MS : LOG_FLUSH_BUDGET_MS);
    rc = r->phase == RUN_DONE ? r->exit_code : AGENT_EXIT_INFRA;
    teardown(r);
    free(r);
    return rc;
}
