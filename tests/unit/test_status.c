/* test_status.c - the status store against a fake backend that records every write and
 * completes it only when the test says so: coalescing, sequencing, one write in flight per item,
 * retries after failures, and flush (waiting, deadline, status_write_failed log lines). */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/log.h"
#include "agent/status.h"

#define MAX_WRITES 20000

/* One write the fake backend received: a snapshot of the item and how to complete it. */
typedef struct {
    status_kind kind;
    cJSON *snap;
    status_write_cb done;
    void *ctx;
    bool completed;
} fake_write;

typedef struct {
    status_backend base;
    fake_write w[MAX_WRITES];
    int n;
    int auto_rc;        /* with auto_complete: the rc every write completes with */
    bool auto_complete; /* complete every write 1 ms later (a fast store) */
    uv_timer_t auto_timer;
    bool closed;
} fake_backend;

static fake_backend *fake_of(status_backend *b)
{
    return (fake_backend *)b;
}

static void complete(fake_backend *f, int i, int rc, const char *err)
{
    assert_true(i < f->n);
    assert_false(f->w[i].completed);
    f->w[i].completed = true;
    f->w[i].done(f->w[i].ctx, rc, err);
}

static void on_auto(uv_timer_t *t)
{
    fake_backend *f = t->data;
    for (int i = 0; i < f->n; i++)
        if (!f->w[i].completed)
            complete(f, i, f->auto_rc, f->auto_rc ? "fake failure" : NULL);
}

static int fake_write_item(status_backend *b, status_kind kind, const cJSON *item,
                           status_write_cb done, void *ctx)
{
    fake_backend *f = fake_of(b);
    assert_true(f->n < MAX_WRITES);
    f->w[f->n++] = (fake_write){kind, cJSON_Duplicate(item, true), done, ctx, false};
    if (f->auto_complete && !uv_is_active((uv_handle_t *)&f->auto_timer))
        uv_timer_start(&f->auto_timer, on_auto, 1, 0);
    return 0;
}

static void fake_close(status_backend *b)
{
    fake_of(b)->closed = true;
}

typedef struct {
    uv_loop_t loop;
    fake_backend *fake;
    status_store *store;
    int log_fd;
    bool flushed;
    bool failed_run;
    int n_failed;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    uv_loop_init(&fx->loop);
    fx->fake = calloc(1, sizeof *fx->fake);
    fx->fake->base =
        (status_backend){.name = "fake", .write = fake_write_item, .close = fake_close};
    uv_timer_init(&fx->loop, &fx->fake->auto_timer);
    fx->fake->auto_timer.data = fx->fake;
    assert_int_equal(status_store_new(&fx->loop, &fx->fake->base, &fx->store), 0);
    char path[] = "/tmp/dagy-test-status-log.XXXXXX";
    fx->log_fd = mkstemp(path);
    assert_true(fx->log_fd >= 0);
    unlink(path);
    agent_log_init(LOG_FORMAT_JSON, LOG_DEBUG, fx->log_fd);
    agent_log_context("run-1", "flow", NULL, NULL, "corr");
    *state = fx;
    return 0;
}

/* Frees the store, completes orphaned writes (must be harmless), closes the loop cleanly. */
static int teardown(void **state)
{
    fixture *fx = *state;
    status_store_free(fx->store);
    assert_true(fx->fake->closed);
    for (int i = 0; i < fx->fake->n; i++)
        if (!fx->fake->w[i].completed)
            complete(fx->fake, i, -ECANCELED, "cancelled");
    uv_close((uv_handle_t *)&fx->fake->auto_timer, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    for (int i = 0; i < fx->fake->n; i++)
        cJSON_Delete(fx->fake->w[i].snap);
    free(fx->fake);
    close(fx->log_fd);
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, 2);
    free(fx);
    return 0;
}

static void turn(fixture *fx)
{
    uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static double snap_num(const fake_write *w, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(w->snap, key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static const char *snap_str(const fake_write *w, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(w->snap, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void on_flush(void *ud, bool failed_run, int n_failed)
{
    fixture *fx = ud;
    assert_false(fx->flushed);
    fx->flushed = true;
    fx->failed_run = failed_run;
    fx->n_failed = n_failed;
}

/* Runs the loop (bounded) until the flush reports. */
static void run_until_flushed(fixture *fx)
{
    for (int i = 0; i < 10000 && !fx->flushed; i++)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true(fx->flushed);
}

/* Every JSON line logged so far whose event_type is `event`, as a cJSON array. */
static cJSON *logged(fixture *fx, const char *event)
{
    off_t len = lseek(fx->log_fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)len + 1);
    assert_int_equal(pread(fx->log_fd, buf, (size_t)len, 0), len);
    cJSON *out = cJSON_CreateArray();
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j); /* every log line is one JSON object */
        const cJSON *ev = cJSON_GetObjectItem(j, "event_type");
        if (cJSON_IsString(ev) && !strcmp(ev->valuestring, event))
            cJSON_AddItemToArray(out, j);
        else
            cJSON_Delete(j);
    }
    free(buf);
    return out;
}

static void creates_items_with_key_attributes(void **state)
{
    fixture *fx = *state;
    cJSON *run = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    cJSON *task = status_item(fx->store, STATUS_TASK, "run-1", "extract");
    assert_ptr_equal(status_item(fx->store, STATUS_RUN, "run-1", NULL), run);
    assert_ptr_equal(status_item(fx->store, STATUS_TASK, "run-1", "extract"), task);
    assert_ptr_not_equal(status_item(fx->store, STATUS_TASK, "run-1", "load"), task);
    assert_string_equal(cJSON_GetObjectItem(task, "run_id")->valuestring, "run-1");
    assert_string_equal(cJSON_GetObjectItem(task, "task_name")->valuestring, "extract");
    assert_null(cJSON_GetObjectItem(run, "task_name"));
    turn(fx);
    assert_int_equal(fx->fake->n, 0); /* nothing is written before a touch */
}

/* Three changes in one callback leave as one write, seq 1, with all of them. */
static void coalesces_touches_in_one_turn(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    status_set_str(it, "status", "RUNNING");
    status_touch(fx->store, it);
    status_set_str(it, "started_at", "2026-01-01T00:00:00.000Z");
    status_touch(fx->store, it);
    status_set_num(it, "tasks_total", 3);
    status_touch(fx->store, it);
    assert_int_equal(fx->fake->n, 0); /* never inside the caller's callback */
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    fake_write *w = &fx->fake->w[0];
    assert_int_equal(w->kind, STATUS_RUN);
    assert_int_equal(snap_num(w, "status_seq"), 1);
    assert_string_equal(snap_str(w, "status"), "RUNNING");
    assert_int_equal(snap_num(w, "tasks_total"), 3);
    assert_int_equal(strlen(snap_str(w, "updated_at")), 24);
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
}

/* Changes during a write in flight: no second write until it completes, then exactly one with
 * the latest state (intermediate states skipped). */
static void touch_during_inflight_sends_one_followup(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_TASK, "run-1", "t");
    status_set_str(it, "status", "RUNNING");
    status_touch(fx->store, it);
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    status_set_str(it, "status", "RETRYING");
    status_touch(fx->store, it);
    turn(fx);
    status_set_str(it, "status", "RUNNING");
    status_set_num(it, "attempt", 2);
    status_touch(fx->store, it);
    turn(fx);
    status_set_str(it, "status", "SUCCEEDED");
    status_touch(fx->store, it);
    turn(fx);
    assert_int_equal(fx->fake->n, 1); /* at most one in flight */
    complete(fx->fake, 0, 0, NULL);
    turn(fx);
    assert_int_equal(fx->fake->n, 2);
    assert_int_equal(snap_num(&fx->fake->w[1], "status_seq"), 2);
    assert_string_equal(snap_str(&fx->fake->w[1], "status"), "SUCCEEDED");
    assert_int_equal(snap_num(&fx->fake->w[1], "attempt"), 2);
    complete(fx->fake, 1, 0, NULL);
    turn(fx);
    assert_int_equal(fx->fake->n, 2);
}

/* status_seq strictly increases per item, independently for each item. */
static void seq_increases_per_item(void **state)
{
    fixture *fx = *state;
    cJSON *a = status_item(fx->store, STATUS_TASK, "run-1", "a");
    cJSON *b = status_item(fx->store, STATUS_TASK, "run-1", "b");
    double last_a = 0;
    for (int round = 0; round < 5; round++) {
        status_set_num(a, "attempt", round);
        status_touch(fx->store, a);
        if (round % 2 == 0)
            status_touch(fx->store, b);
        int first = fx->fake->n;
        turn(fx);
        for (int i = first; i < fx->fake->n; i++) {
            fake_write *w = &fx->fake->w[i];
            if (!strcmp(snap_str(w, "task_name"), "a")) {
                assert_true(snap_num(w, "status_seq") > last_a);
                last_a = snap_num(w, "status_seq");
            }
            complete(fx->fake, i, 0, NULL);
        }
    }
    assert_int_equal(last_a, 5);
    cJSON *seq_b = cJSON_GetObjectItem(b, "status_seq");
    assert_int_equal(seq_b->valuedouble, 3);
}

/* A failed write is neither dropped nor retried at once: it goes out again after a backoff,
 * with a new seq and the latest state. */
static void failed_write_is_retried_later(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    status_set_str(it, "status", "RUNNING");
    status_touch(fx->store, it);
    turn(fx);
    complete(fx->fake, 0, -EAGAIN, "DynamoDB UpdateItem: HTTP 503");
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    status_set_str(it, "status", "SUCCEEDED");
    status_touch(fx->store, it); /* during the backoff: carried by the retry */
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    uint64_t t0 = uv_now(&fx->loop);
    for (int i = 0; i < 100 && fx->fake->n == 1; i++)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->fake->n, 2);
    assert_true(uv_now(&fx->loop) - t0 >= 900);
    assert_int_equal(snap_num(&fx->fake->w[1], "status_seq"), 2);
    assert_string_equal(snap_str(&fx->fake->w[1], "status"), "SUCCEEDED");
    complete(fx->fake, 1, 0, NULL);
    cJSON *warn = logged(fx, "status_store_degraded");
    assert_int_equal(cJSON_GetArraySize(warn), 1);
    cJSON_Delete(warn);
}

/* A synchronous backend failure (write() < 0) is handled like a failed completion. */
static int refusing_write(status_backend *b, status_kind kind, const cJSON *item,
                          status_write_cb done, void *ctx)
{
    return -ENOMEM;
}

static void flush_gives_up_on_refused_writes_at_deadline(void **state)
{
    fixture *fx = *state;
    fx->fake->base.write = refusing_write;
    cJSON *it = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    status_set_str(it, "status", "FAILED");
    status_touch(fx->store, it);
    status_flush(fx->store, 300, on_flush, fx);
    run_until_flushed(fx);
    assert_true(fx->failed_run);
    assert_int_equal(fx->n_failed, 1);
    cJSON *lines = logged(fx, "status_write_failed");
    assert_int_equal(cJSON_GetArraySize(lines), 1);
    const cJSON *l = cJSON_GetArrayItem(lines, 0);
    assert_non_null(strstr(cJSON_GetObjectItem(l, "error")->valuestring, "refused the write"));
    cJSON_Delete(lines);
}

/* Flush waits for writes in flight and for the follow-ups they need. */
static void flush_waits_for_inflight_writes(void **state)
{
    fixture *fx = *state;
    cJSON *run = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    cJSON *task = status_item(fx->store, STATUS_TASK, "run-1", "t");
    status_set_str(run, "status", "RUNNING");
    status_touch(fx->store, run);
    turn(fx);
    status_set_str(run, "status", "SUCCEEDED");
    status_touch(fx->store, run);
    status_set_str(task, "status", "SUCCEEDED");
    status_touch(fx->store, task);
    status_flush(fx->store, 10000, on_flush, fx);
    turn(fx);
    turn(fx);
    assert_false(fx->flushed);
    assert_int_equal(fx->fake->n, 2); /* run (in flight since before) + task */
    complete(fx->fake, 1, 0, NULL);
    turn(fx);
    assert_false(fx->flushed);
    complete(fx->fake, 0, 0, NULL);
    turn(fx);
    assert_false(fx->flushed);
    assert_int_equal(fx->fake->n, 3);
    assert_string_equal(snap_str(&fx->fake->w[2], "status"), "SUCCEEDED");
    complete(fx->fake, 2, 0, NULL);
    run_until_flushed(fx);
    assert_false(fx->failed_run);
    assert_int_equal(fx->n_failed, 0);
    cJSON *lines = logged(fx, "status_write_failed");
    assert_int_equal(cJSON_GetArraySize(lines), 0);
    cJSON_Delete(lines);
}

/* A flush with nothing to write still reports, from the loop (never inside status_flush). */
static void flush_with_nothing_pending_reports_from_loop(void **state)
{
    fixture *fx = *state;
    status_item(fx->store, STATUS_RUN, "run-1", NULL);
    status_flush(fx->store, 1000, on_flush, fx);
    assert_false(fx->flushed);
    run_until_flushed(fx);
    assert_false(fx->failed_run);
    assert_int_equal(fx->n_failed, 0);
    assert_int_equal(fx->fake->n, 0);
}

/* At the deadline every unconfirmed item is one status_write_failed line with the full item. */
static void flush_timeout_reports_unwritten_items(void **state)
{
    fixture *fx = *state;
    cJSON *run = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    cJSON *t1 = status_item(fx->store, STATUS_TASK, "run-1", "t1");
    cJSON *t2 = status_item(fx->store, STATUS_TASK, "run-1", "t2");
    status_set_str(run, "status", "SUCCEEDED");
    status_set_str(t1, "status", "SUCCEEDED");
    status_set_str(t2, "status", "FAILED");
    status_touch(fx->store, run);
    status_touch(fx->store, t1);
    status_touch(fx->store, t2);
    status_flush(fx->store, 100, on_flush, fx);
    turn(fx);
    assert_int_equal(fx->fake->n, 3);
    complete(fx->fake, 1, 0, NULL);                           /* t1 confirmed */
    complete(fx->fake, 2, -ETIMEDOUT, "DynamoDB: timed out"); /* t2 retried, never answered */
    run_until_flushed(fx);
    assert_true(fx->failed_run);
    assert_int_equal(fx->n_failed, 2);
    cJSON *lines = logged(fx, "status_write_failed");
    assert_int_equal(cJSON_GetArraySize(lines), 2);
    const cJSON *l;
    bool saw_run = false, saw_t2 = false;
    cJSON_ArrayForEach(l, lines)
    {
        assert_string_equal(cJSON_GetObjectItem(l, "level")->valuestring, "ERROR");
        const cJSON *item = cJSON_GetObjectItem(l, "item");
        assert_true(cJSON_IsObject(item));
        assert_string_equal(cJSON_GetObjectItem(item, "run_id")->valuestring, "run-1");
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(item, "status_seq")));
        const cJSON *task = cJSON_GetObjectItem(item, "task_name");
        if (!task) {
            saw_run = true;
            assert_string_equal(cJSON_GetObjectItem(item, "status")->valuestring, "SUCCEEDED");
        } else {
            saw_t2 = !strcmp(task->valuestring, "t2");
            assert_string_equal(cJSON_GetObjectItem(l, "task_name")->valuestring, "t2");
            assert_non_null(strstr(cJSON_GetObjectItem(l, "error")->valuestring, "timed out"));
        }
    }
    assert_true(saw_run && saw_t2);
    cJSON_Delete(lines);
}

/* Only task items unwritten: failed_run stays false. A permanent error ends the flush early. */
static void flush_permanent_task_failure_is_not_a_run_failure(void **state)
{
    fixture *fx = *state;
    cJSON *run = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    cJSON *t = status_item(fx->store, STATUS_TASK, "run-1", "t");
    status_set_str(run, "status", "SUCCEEDED");
    status_set_str(t, "status", "SUCCEEDED");
    status_touch(fx->store, run);
    status_touch(fx->store, t);
    status_flush(fx->store, 60000, on_flush, fx);
    turn(fx);
    complete(fx->fake, 0, 0, NULL);
    complete(fx->fake, 1, -EACCES, "DynamoDB UpdateItem: AccessDeniedException: denied");
    uint64_t t0 = uv_now(&fx->loop);
    run_until_flushed(fx);
    assert_true(uv_now(&fx->loop) - t0 < 5000); /* not the 60 s deadline */
    assert_false(fx->failed_run);
    assert_int_equal(fx->n_failed, 1);
}

/* The benchmark path: 2000 fast tasks x 3 transitions (PENDING, implied and never touched, as
 * the agent does; RUNNING; SUCCEEDED one turn later) against a store answering in 1 ms stay at
 * <= 2 writes per task, and every item's last write carries its final state. */
static void fast_dag_needs_at_most_two_writes_per_task(void **state)
{
    fixture *fx = *state;
    enum { N = 2000, PAR = 4 };
    fx->fake->auto_complete = true;
    cJSON *items[N];
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "task_%d", i);
        items[i] = status_item(fx->store, STATUS_TASK, "run-1", name);
        status_set_str(items[i], "status", "PENDING");
    }
    /* Each turn: PAR tasks start, the PAR started in the previous turn finish. */
    for (int base = 0; base < N + PAR; base += PAR) {
        for (int i = base; i < base + PAR && i < N; i++) {
            status_set_str(items[i], "status", "RUNNING");
            status_set_num(items[i], "attempt", 1);
            status_touch(fx->store, items[i]);
        }
        for (int i = base - PAR; i >= 0 && i < base && i < N; i++) {
            status_set_str(items[i], "status", "SUCCEEDED");
            status_set_num(items[i], "exit_code", 0);
            status_touch(fx->store, items[i]);
        }
        turn(fx);
    }
    status_flush(fx->store, 10000, on_flush, fx);
    run_until_flushed(fx);
    assert_int_equal(fx->n_failed, 0);
    assert_true(fx->fake->n <= 2 * N);
    for (int i = 0; i < N; i++) {
        const cJSON *seq = cJSON_GetObjectItem(items[i], "status_seq");
        assert_true(seq->valuedouble >= 1 && seq->valuedouble <= 3);
    }
    /* The last write of each item is SUCCEEDED with the item's final seq. */
    int *last = calloc(N, sizeof *last);
    for (int i = 0; i < fx->fake->n; i++) {
        int k = atoi(snap_str(&fx->fake->w[i], "task_name") + 5);
        last[k] = i;
    }
    for (int k = 0; k < N; k++) {
        assert_string_equal(snap_str(&fx->fake->w[last[k]], "status"), "SUCCEEDED");
        assert_int_equal(snap_num(&fx->fake->w[last[k]], "status_seq"),
                         cJSON_GetObjectItem(items[k], "status_seq")->valuedouble);
    }
    free(last);
    printf("fast dag: %d tasks, %d writes (%.2f per task)\n", N, fx->fake->n,
           (double)fx->fake->n / N);
}

/* A backend's coalescing window: changes wait for it (and merge), a flush does not. */
static void coalescing_window_delays_and_merges(void **state)
{
    fixture *fx = *state;
    fx->fake->base.coalesce_ms = 50;
    cJSON *it = status_item(fx->store, STATUS_TASK, "run-1", "t");
    uint64_t t0 = uv_now(&fx->loop);
    status_set_str(it, "status", "RUNNING");
    status_touch(fx->store, it);
    turn(fx);
    status_set_str(it, "status", "SUCCEEDED");
    status_touch(fx->store, it);
    turn(fx);
    assert_int_equal(fx->fake->n, 0);
    for (int i = 0; i < 100 && fx->fake->n == 0; i++)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_int_equal(fx->fake->n, 1);
    assert_true(uv_now(&fx->loop) - t0 >= 45);
    assert_string_equal(snap_str(&fx->fake->w[0], "status"), "SUCCEEDED");
    complete(fx->fake, 0, 0, NULL);
    status_set_num(it, "exit_code", 0);
    status_touch(fx->store, it);
    status_flush(fx->store, 5000, on_flush, fx);
    turn(fx);
    assert_int_equal(fx->fake->n, 2); /* the flush did not wait for the window */
    complete(fx->fake, 1, 0, NULL);
    run_until_flushed(fx);
    assert_int_equal(fx->n_failed, 0);
}

/* Setters: NULL string value is a JSON null (the backends REMOVE it); replace keeps one member. */
static void setters_replace_and_remove(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    status_set_str(it, "error_message", "boom");
    status_set_str(it, "error_message", "bang");
    status_set_num(it, "n", 1);
    status_set_num(it, "n", 2.5);
    assert_string_equal(cJSON_GetObjectItem(it, "error_message")->valuestring, "bang");
    assert_true(cJSON_GetObjectItem(it, "n")->valuedouble == 2.5);
    status_set_str(it, "error_message", NULL);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(it, "error_message")));
    assert_int_equal(cJSON_GetArraySize(it), 3);
}

/* A released item leaves the store once its latest state is written; until then it is kept
 * (and retried) like any other. status_item() then starts a fresh item under the same key. */
static void released_item_is_freed_once_written(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_TASK, "run-1", "t");
    status_set_str(it, "status", "FAILED");
    status_touch(fx->store, it);
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    status_release(fx->store, it); /* in flight: kept for now */
    complete(fx->fake, 0, -EIO, "fake failure");
    /* Kept (parked while it backs off: asked for again, it comes back whole, maybe elsewhere). */
    it = status_item(fx->store, STATUS_TASK, "run-1", "t");
    assert_string_equal(cJSON_GetObjectItem(it, "status")->valuestring, "FAILED");

    cJSON *b = status_item(fx->store, STATUS_TASK, "run-1", "u");
    status_set_str(b, "status", "SUCCEEDED");
    status_touch(fx->store, b);
    turn(fx);
    assert_int_equal(fx->fake->n, 2);
    status_release(fx->store, b);
    complete(fx->fake, 1, 0, NULL); /* written: freed */
    cJSON *fresh = status_item(fx->store, STATUS_TASK, "run-1", "u");
    assert_null(cJSON_GetObjectItem(fresh, "status"));
    status_release(fx->store, fresh); /* clean: freed at once */
    assert_null(cJSON_GetObjectItem(status_item(fx->store, STATUS_TASK, "run-1", "u"), "status"));
}

/* A write that failed before the flush is retried by the flush, which then ends as soon as the
 * retry is confirmed (not at its deadline). */
static void flush_retries_an_earlier_failure_at_once(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_TASK, "run-1", "t");
    status_set_str(it, "status", "FAILED");
    status_touch(fx->store, it);
    turn(fx);
    complete(fx->fake, 0, -EIO, "fake failure");
    turn(fx);
    status_flush(fx->store, 5000, on_flush, fx);
    for (int i = 0; i < 100 && fx->fake->n < 2; i++)
        uv_run(&fx->loop, UV_RUN_NOWAIT); /* ONCE would block until the flush deadline */
    assert_int_equal(fx->fake->n, 2);
    uint64_t t0 = uv_now(&fx->loop);
    complete(fx->fake, 1, 0, NULL);
    run_until_flushed(fx);
    assert_int_equal(fx->n_failed, 0);
    assert_true(uv_now(&fx->loop) - t0 < 1000);
}

/* ---- UTF-8, permanent errors, refusals, seq ranges, outages, sizes ---- */

static void stop_loop(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void noop_timer(uv_timer_t *t)
{
}

static void setter_stores_only_valid_utf8(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_TASK, "run-1", "t");
    status_set_str(it, "error_message", "boom \xff\xfe");
    assert_string_equal(cJSON_GetObjectItem(it, "error_message")->valuestring,
                        "boom \xef\xbf\xbd\xef\xbf\xbd");
    status_set_str(it, "error_message", "cut \xc3"); /* an "é" cut in half */
    assert_string_equal(cJSON_GetObjectItem(it, "error_message")->valuestring, "cut \xef\xbf\xbd");
    status_set_str(it, "error_message", "caf\xc3\xa9"); /* valid: unchanged */
    assert_string_equal(cJSON_GetObjectItem(it, "error_message")->valuestring, "caf\xc3\xa9");
}

static void permanent_error_is_not_retried_and_logged_once(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_TASK, "run-1", "t");
    status_set_str(it, "status", "FAILED");
    status_touch(fx->store, it);
    turn(fx);
    complete(fx->fake, 0, -EINVAL, "DynamoDB UpdateItem: ValidationException: bad");
    uv_timer_t t;
    uv_timer_init(&fx->loop, &t);
    uv_timer_start(&t, stop_loop, 2500, 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    turn(fx);
    assert_int_equal(fx->fake->n, 1); /* no retry of a refused request */
    cJSON *failed = logged(fx, "status_write_failed");
    assert_int_equal(cJSON_GetArraySize(failed), 1);
    cJSON_Delete(failed);
    status_flush(fx->store, 5000, on_flush, fx);
    for (int i = 0; i < 100 && fx->fake->n < 2; i++)
        uv_run(&fx->loop, UV_RUN_NOWAIT);
    complete(fx->fake, 1, -EINVAL, "DynamoDB UpdateItem: ValidationException: bad");
    run_until_flushed(fx);
    assert_int_equal(fx->n_failed, 1);
    failed = logged(fx, "status_write_failed");
    assert_int_equal(cJSON_GetArraySize(failed), 1); /* not logged a second time */
    cJSON_Delete(failed);
}

static void state_changed_during_a_refused_write_gets_its_own_try(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_TASK, "run-1", "t");
    status_set_str(it, "error_message", "first");
    status_touch(fx->store, it);
    turn(fx);
    status_set_str(it, "error_message", "second"); /* while the first is in flight */
    status_touch(fx->store, it);
    complete(fx->fake, 0, -EINVAL, "ValidationException");
    turn(fx);
    assert_int_equal(fx->fake->n, 2);
    assert_string_equal(snap_str(&fx->fake->w[1], "error_message"), "second");
    complete(fx->fake, 1, 0, NULL);
}

/* The fake store's answer to reads: this item (a JSON text), or absent. */
static const char *fake_stored;

static int fake_read(status_backend *b, status_kind kind, const char *run_id, const char *task_name,
                     status_read_cb done, void *ctx)
{
    cJSON *j = fake_stored ? cJSON_Parse(fake_stored) : NULL;
    done(ctx, 0, j, NULL);
    cJSON_Delete(j);
    return 0;
}

static void refused_write_is_success_only_when_the_stored_item_is_ours(void **state)
{
    fixture *fx = *state;
    fx->fake->base.read = fake_read;
    status_store_set_seq_base(fx->store, 2000);
    cJSON *a = status_item(fx->store, STATUS_TASK, "run-1", "a");
    cJSON *b = status_item(fx->store, STATUS_TASK, "run-1", "b");
    status_touch(fx->store, a);
    turn(fx);
    assert_int_equal(snap_num(&fx->fake->w[0], "status_seq"), 2001);
    fake_stored = "{\"status\":\"RUNNING\",\"status_seq\":2003}"; /* our own, newer */
    complete(fx->fake, 0, STATUS_REFUSED, NULL);
    status_touch(fx->store, b);
    turn(fx);
    fake_stored = "{\"status\":\"SUCCEEDED\",\"status_seq\":7}"; /* an earlier agent's */
    complete(fx->fake, 1, STATUS_REFUSED, NULL);
    fake_stored = NULL;
    status_flush(fx->store, 3000, on_flush, fx);
    run_until_flushed(fx);
    assert_int_equal(fx->n_failed, 1);
    cJSON *failed = logged(fx, "status_write_failed");
    assert_int_equal(cJSON_GetArraySize(failed), 1);
    const char *err = cJSON_GetObjectItem(cJSON_GetArrayItem(failed, 0), "error")->valuestring;
    assert_non_null(strstr(err, "SUCCEEDED at status_seq 7"));
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(failed, 0), "task_name")->valuestring, "b");
    cJSON_Delete(failed);
}

static void unanswered_write_reports_degraded_within_seconds(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    status_touch(fx->store, it);
    turn(fx);
    uint64_t t0 = uv_now(&fx->loop);
    uv_timer_t keep; /* the store's watch timer does not keep a loop alive on its own */
    uv_timer_init(&fx->loop, &keep);
    uv_timer_start(&keep, noop_timer, 9000, 0);
    cJSON *warn = cJSON_CreateArray();
    while (cJSON_GetArraySize(warn) == 0 && uv_now(&fx->loop) - t0 < 8000) {
        uv_run(&fx->loop, UV_RUN_ONCE);
        cJSON_Delete(warn);
        warn = logged(fx, "status_store_degraded");
    }
    assert_int_equal(cJSON_GetArraySize(warn), 1);
    assert_true(uv_now(&fx->loop) - t0 >= STATUS_DEGRADED_MS);
    assert_true(uv_now(&fx->loop) - t0 < STATUS_DEGRADED_MS + 1500);
    cJSON_Delete(warn);
    uv_close((uv_handle_t *)&keep, NULL);
    turn(fx); /* finishes the close: `keep` lives on this stack */
    complete(fx->fake, 0, 0, NULL);
}

static void oversized_item_loses_its_largest_attribute(void **state)
{
    fixture *fx = *state;
    fx->fake->base.max_item_bytes = 2000;
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cJSON *it = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    status_set_str(it, "status", "RUNNING");
    status_set_str(it, "parameters", big);
    status_set_str(it, "flow_name", "f");
    status_touch(fx->store, it);
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    assert_null(snap_str(&fx->fake->w[0], "parameters"));
    assert_string_equal(snap_str(&fx->fake->w[0], "flow_name"), "f");
    cJSON *list = cJSON_GetObjectItem(fx->fake->w[0].snap, "truncated_attributes");
    assert_int_equal(cJSON_GetArraySize(list), 1);
    assert_string_equal(cJSON_GetArrayItem(list, 0)->valuestring, "parameters");
    complete(fx->fake, 0, 0, NULL);
}

/* The backend's bound on writes in flight holds whatever the number of ready items; items past
 * the bound wait in the store (no request is built for them) and leave as slots free, the run
 * item never waits behind task items, and a flush writes them all. */
static void writes_in_flight_never_exceed_the_backend_bound(void **state)
{
    fixture *fx = *state;
    enum { N = 100, BOUND = 4 };
    fx->fake->base.max_inflight = BOUND;
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "task_%d", i);
        cJSON *it = status_item(fx->store, STATUS_TASK, "run-1", name);
        status_set_str(it, "status", "SUCCEEDED");
        status_touch(fx->store, it);
        status_release(fx->store, it);
    }
    turn(fx);
    assert_int_equal(fx->fake->n, BOUND);
    cJSON *run = status_item(fx->store, STATUS_RUN, "run-1", NULL);
    status_set_str(run, "status", "RUNNING");
    status_touch(fx->store, run);
    turn(fx);
    assert_int_equal(fx->fake->n, BOUND + 1); /* the run item does not queue */
    assert_int_equal(fx->fake->w[BOUND].kind, STATUS_RUN);
    complete(fx->fake, BOUND, 0, NULL);
    status_flush(fx->store, 10000, on_flush, fx);
    for (int done = 0; done < N; done++) {
        int inflight = 0, next = -1;
        for (int i = 0; i < fx->fake->n; i++)
            if (!fx->fake->w[i].completed) {
                inflight++;
                next = next < 0 ? i : next;
            }
        assert_true(inflight >= 1 && inflight <= BOUND);
        complete(fx->fake, next, 0, NULL);
        turn(fx);
    }
    run_until_flushed(fx);
    assert_int_equal(fx->n_failed, 0);
    assert_int_equal(fx->fake->n, N + 1); /* one write per item */
}

/* A task's RUNNING and SUCCEEDED become one write when the item is still waiting for a slot
 * when it ends: the snapshot is taken when the write is sent, not when it was queued. */
static void item_waiting_for_a_slot_leaves_with_its_latest_state(void **state)
{
    fixture *fx = *state;
    fx->fake->base.max_inflight = 1;
    cJSON *a = status_item(fx->store, STATUS_TASK, "run-1", "a");
    cJSON *b = status_item(fx->store, STATUS_TASK, "run-1", "b");
    status_set_str(a, "status", "RUNNING");
    status_touch(fx->store, a);
    status_set_str(b, "status", "RUNNING");
    status_touch(fx->store, b);
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    status_set_str(b, "status", "SUCCEEDED");
    status_set_num(b, "exit_code", 0);
    status_touch(fx->store, b);
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    complete(fx->fake, 0, 0, NULL);
    turn(fx);
    assert_int_equal(fx->fake->n, 2);
    assert_string_equal(snap_str(&fx->fake->w[1], "task_name"), "b");
    assert_string_equal(snap_str(&fx->fake->w[1], "status"), "SUCCEEDED");
    assert_int_equal(snap_num(&fx->fake->w[1], "status_seq"), 1);
    assert_int_equal(snap_num(&fx->fake->w[1], "exit_code"), 0);
    complete(fx->fake, 1, 0, NULL);
    turn(fx);
    assert_int_equal(fx->fake->n, 2);
}

/* A released item waiting for a slot is parked as text and parsed back when sent: the write
 * carries every member exactly (fractions, JSON null = REMOVE, escapes, UTF-8), a failed write
 * of a parked item is retried with the same content, and asking for the item again gives it
 * back whole. */
static void parked_item_is_written_exactly_as_it_was(void **state)
{
    fixture *fx = *state;
    fx->fake->base.max_inflight = 1;
    cJSON *a = status_item(fx->store, STATUS_TASK, "run-1", "a");
    cJSON *b = status_item(fx->store, STATUS_TASK, "run-1", "b \"q\"\n\xc3\xa9");
    status_set_str(a, "status", "RUNNING");
    status_touch(fx->store, a);
    turn(fx);
    status_set_str(b, "status", "FAILED");
    status_set_num(b, "duration_seconds", 0.1 + 0.2);
    status_set_num(b, "exit_code", -1);
    status_set_str(b, "error_message", "line 1\nline \"2\" \xe2\x82\xac\t\\");
    status_set_str(b, "trace_s3_uri", "x");
    status_set_str(b, "trace_s3_uri", NULL); /* JSON null: the backend REMOVEs it */
    status_set_str(b, "custom_attr", "kept");
    status_touch(fx->store, b);
    cJSON *want = cJSON_Duplicate(b, true);
    status_release(fx->store, b);
    turn(fx);
    assert_int_equal(fx->fake->n, 1);
    complete(fx->fake, 0, 0, NULL);
    turn(fx);
    assert_int_equal(fx->fake->n, 2);
    for (int k = 1; k <= 2; k++) {
        cJSON *got = cJSON_Duplicate(fx->fake->w[k].snap, true);
        cJSON_DeleteItemFromObject(got, "status_seq");
        cJSON_DeleteItemFromObject(got, "updated_at");
        assert_true(cJSON_Compare(got, want, true));
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(fx->fake->w[k].snap, "trace_s3_uri")));
        assert_true(snap_num(&fx->fake->w[k], "duration_seconds") == 0.1 + 0.2);
        cJSON_Delete(got);
        if (k == 1) { /* fails: parked again while it backs off, then retried whole */
            complete(fx->fake, 1, -EAGAIN, "fake failure");
            for (int i = 0; i < 3000 && fx->fake->n == 2; i++)
                uv_run(&fx->loop, UV_RUN_ONCE);
            assert_int_equal(fx->fake->n, 3);
            assert_int_equal(snap_num(&fx->fake->w[2], "status_seq"), 2);
        }
    }
    complete(fx->fake, 2, -EAGAIN, "fake failure");
    turn(fx);
    cJSON *again = status_item(fx->store, STATUS_TASK, "run-1", "b \"q\"\n\xc3\xa9");
    assert_non_null(again);
    assert_string_equal(cJSON_GetObjectItem(again, "error_message")->valuestring,
                        cJSON_GetObjectItem(want, "error_message")->valuestring);
    cJSON_Delete(want);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(creates_items_with_key_attributes),
        T(coalesces_touches_in_one_turn),
        T(touch_during_inflight_sends_one_followup),
        T(seq_increases_per_item),
        T(failed_write_is_retried_later),
        T(flush_gives_up_on_refused_writes_at_deadline),
        T(flush_waits_for_inflight_writes),
        T(flush_with_nothing_pending_reports_from_loop),
        T(flush_timeout_reports_unwritten_items),
        T(flush_permanent_task_failure_is_not_a_run_failure),
        T(fast_dag_needs_at_most_two_writes_per_task),
        T(coalescing_window_delays_and_merges),
        T(setters_replace_and_remove),
        T(released_item_is_freed_once_written),
        T(flush_retries_an_earlier_failure_at_once),
        T(setter_stores_only_valid_utf8),
        T(permanent_error_is_not_retried_and_logged_once),
        T(state_changed_during_a_refused_write_gets_its_own_try),
        T(refused_write_is_success_only_when_the_stored_item_is_ours),
        T(unanswered_write_reports_degraded_within_seconds),
        T(oversized_item_loses_its_largest_attribute),
        T(writes_in_flight_never_exceed_the_backend_bound),
        T(item_waiting_for_a_slot_leaves_with_its_latest_state),
        T(parked_item_is_written_exactly_as_it_was),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
