/* test_status_lag.c - the status store's status-write lag samples (status_store_on_lag): the time
 * from a change (status_touch) to the backend's confirmation of a write carrying it, measured on
 * a real loop against a fake backend the test completes by hand: a change made while a write
 * flies is timed from its own touch, a failed write keeps the oldest change's time, and samples
 * arrive in batches of STATUS_LAG_BATCH. */
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

#define MAX_W 1024

typedef struct {
    status_backend base;
    status_write_cb done[MAX_W];
    void *ctx[MAX_W];
    bool completed[MAX_W];
    int n;
    bool closed;
} fake;

static int fake_write(status_backend *b, status_kind kind, const cJSON *item, status_write_cb done,
                      void *ctx)
{
    fake *f = (fake *)b;
    (void)kind;
    (void)item;
    assert_true(f->n < MAX_W);
    f->done[f->n] = done;
    f->ctx[f->n++] = ctx;
    return 0;
}

static void fake_close(status_backend *b)
{
    ((fake *)b)->closed = true;
}

typedef struct {
    uv_loop_t loop;
    fake *f;
    status_store *s;
    double samples[4 * STATUS_LAG_BATCH];
    size_t n_samples;
    int batches;
    bool flushed;
} fixture;

static void on_lag(void *ud, const double *lag, size_t n)
{
    fixture *fx = ud;
    assert_true(n >= 1 && n <= STATUS_LAG_BATCH);
    for (size_t i = 0; i < n; i++)
        fx->samples[fx->n_samples++] = lag[i];
    fx->batches++;
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    uv_loop_init(&fx->loop);
    fx->f = calloc(1, sizeof *fx->f);
    fx->f->base = (status_backend){.name = "fake", .write = fake_write, .close = fake_close};
    assert_int_equal(status_store_new(&fx->loop, &fx->f->base, &fx->s), 0);
    status_store_on_lag(fx->s, on_lag, fx);
    agent_log_init(LOG_FORMAT_JSON, LOG_ERROR, STDERR_FILENO);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    status_store_free(fx->s);
    for (int i = 0; i < fx->f->n; i++)
        if (!fx->f->completed[i])
            fx->f->done[i](fx->f->ctx[i], -ECANCELED, "cancelled");
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx->f);
    free(fx);
    return 0;
}

static void on_wait(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop for `ms` of loop time (the store's kick timers fire on the way). */
static void run_for(fixture *fx, uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&fx->loop, &t);
    uv_timer_start(&t, on_wait, ms, 0);
    while (uv_is_active((uv_handle_t *)&t))
        uv_run(&fx->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static void complete(fixture *fx, int i, int rc)
{
    assert_true(i < fx->f->n && !fx->f->completed[i]);
    fx->f->completed[i] = true;
    fx->f->done[i](fx->f->ctx[i], rc, rc ? "fake failure" : NULL);
}

/* Loop time is in whole milliseconds and timers fire late, never early: how late depends on
 * the machine, and under valgrind beside other tests (-j2) the test failed once, most likely here.
 */
static void assert_lag(double got, double want)
{
    double late = getenv("DAGY_UNDER_VALGRIND") ? 1000 : 150;
    if (got < want - 1 || got > want + late)
        fail_msg("lag %.0f ms, expected about %.0f ms", got, want);
}

static void lag_is_time_from_change_to_confirmation(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->s, STATUS_TASK, "r", "a");
    status_set_str(it, "status", "RUNNING");
    status_touch(fx->s, it);
    run_for(fx, 60);
    assert_int_equal(fx->f->n, 1);
    assert_int_equal(fx->n_samples, 0); /* nothing confirmed yet */
    complete(fx, 0, 0);
    status_store_lag_flush(fx->s);
    assert_int_equal(fx->n_samples, 1);
    assert_lag(fx->samples[0], 60);
    status_store_lag_flush(fx->s); /* nothing left: no call */
    assert_int_equal(fx->batches, 1);
}

static void change_during_a_write_is_timed_from_its_own_touch(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->s, STATUS_TASK, "r", "a");
    status_touch(fx->s, it);
    run_for(fx, 40);
    status_set_str(it, "status", "SUCCEEDED"); /* while write 0 flies */
    status_touch(fx->s, it);
    run_for(fx, 40);
    complete(fx, 0, 0); /* confirms the first change only: ~80 ms */
    run_for(fx, 30);
    assert_int_equal(fx->f->n, 2);
    complete(fx, 1, 0); /* the second change: touched 70 ms ago */
    status_store_lag_flush(fx->s);
    assert_int_equal(fx->n_samples, 2);
    assert_lag(fx->samples[0], 80);
    assert_lag(fx->samples[1], 70);
}

/* A failed write confirms nothing: the retry's success is timed from the first change. */
static void failed_write_keeps_the_oldest_change(void **state)
{
    fixture *fx = *state;
    cJSON *it = status_item(fx->s, STATUS_RUN, "r", NULL);
    status_touch(fx->s, it);
    run_for(fx, 30);
    complete(fx, 0, -EAGAIN);
    assert_int_equal(fx->n_samples, 0);
    status_touch(fx->s, it); /* another change while backing off: still the first one's time */
    run_for(fx, 1200);       /* the retry (BACKOFF_FIRST_MS) */
    assert_int_equal(fx->f->n, 2);
    complete(fx, 1, 0);
    status_store_lag_flush(fx->s);
    assert_int_equal(fx->n_samples, 1);
    assert_lag(fx->samples[0], 1230);
}

static void samples_arrive_in_batches(void **state)
{
    fixture *fx = *state;
    for (int i = 0; i < 250; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        status_touch(fx->s, status_item(fx->s, STATUS_TASK, "r", name));
    }
    run_for(fx, 5);
    assert_int_equal(fx->f->n, 250);
    for (int i = 0; i < 250; i++)
        complete(fx, i, 0);
    assert_int_equal(fx->batches, 2); /* two full batches, from inside the completions */
    assert_int_equal(fx->n_samples, 200);
    status_store_lag_flush(fx->s);
    assert_int_equal(fx->batches, 3);
    assert_int_equal(fx->n_samples, 250);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(lag_is_time_from_change_to_confirmation, setup, teardown),
        cmocka_unit_test_setup_teardown(change_during_a_write_is_timed_from_its_own_touch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(failed_write_keeps_the_oldest_change, setup, teardown),
        cmocka_unit_test_setup_teardown(samples_arrive_in_batches, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
