/* test_sched.c - the DAG plan driven step by step by a fake runner and a fake clock: every
 * transition is recorded and the log asserted exactly (ordering, trigger rules, retries with
 * backoff and jitter, timeouts, the drain), plus large DAGs that must finish without quadratic
 * work or deep recursion. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "scheduler/sched.h"

#define MAXT 16
#define MAXU 4

/* A spec under construction, the plan built from it, and what the plan told us. */
typedef struct {
    sched_task_def defs[MAXT];
    size_t ups[MAXT][MAXU];
    size_t n;
    sched_plan *p;
    char log[8192]; /* "name FROM->TO[ #attempt][ (delay ms)][: reason]" lines */
    size_t len;
    size_t n_transitions;
    char last_reason[256];
    size_t timed_out[16]; /* tasks passed to on_timeout, in order */
    size_t n_timed_out;
} fx;

static void on_transition(void *ud, size_t task, sched_state from, sched_state to,
                          const char *reason)
{
    fx *f = ud;
    f->n_transitions++;
    snprintf(f->last_reason, sizeof f->last_reason, "%s", reason ? reason : "");
    if (f->len + 512 >= sizeof f->log)
        return; /* big tests only count */
    f->len +=
        (size_t)snprintf(f->log + f->len, sizeof f->log - f->len, "%s %s->%s",
                         sched_task_name(f->p, task), sched_state_name(from), sched_state_name(to));
    if (to == SCHED_RUNNING)
        f->len += (size_t)snprintf(f->log + f->len, sizeof f->log - f->len, " #%d",
                                   sched_task_attempt(f->p, task));
    if (to == SCHED_RETRYING)
        f->len += (size_t)snprintf(f->log + f->len, sizeof f->log - f->len, " (%llu ms)",
                                   (unsigned long long)sched_retry_delay_ms(f->p, task));
    if (reason)
        f->len += (size_t)snprintf(f->log + f->len, sizeof f->log - f->len, ": %s", reason);
    f->len += (size_t)snprintf(f->log + f->len, sizeof f->log - f->len, "\n");
}

static void on_timeout(void *ud, size_t task)
{
    fx *f = ud;
    assert_true(f->n_timed_out < 16);
    f->timed_out[f->n_timed_out++] = task;
}

static size_t find(fx *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->defs[i].name, name) == 0)
            return i;
    fail_msg("no task %s", name);
    return 0;
}

/* Adds a task with upstream names as a space-separated list; defaults: all_success, no retries,
 * no timeout. */
static size_t add(fx *f, const char *name, const char *ups)
{
    assert_true(f->n < MAXT);
    size_t i = f->n++;
    sched_task_def *d = &f->defs[i];
    memset(d, 0, sizeof *d);
    d->name = name;
    d->retry_backoff = 1;
    d->retry_max_delay_seconds = 300;
    d->upstream = f->ups[i];
    char buf[128];
    snprintf(buf, sizeof buf, "%s", ups ? ups : "");
    for (char *save = NULL, *tok = strtok_r(buf, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        assert_true(d->n_upstream < MAXU);
        f->ups[i][d->n_upstream++] = find(f, tok);
    }
    return i;
}

static fx *fx_new(void)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    return f;
}

static void start(fx *f, int max_parallel)
{
    assert_int_equal(sched_new(f->defs, f->n, max_parallel, 42, on_transition, f, &f->p), 0);
    assert_int_equal(f->len, 0); /* sched_new changes no state */
}

static void fx_free(fx *f)
{
    sched_free(f->p);
    free(f);
}

/* Asserts the transitions since the last check, then forgets them. */
#define EXPECT_LOG(f, expected)                                                                    \
    do {                                                                                           \
        assert_string_equal((f)->log, expected);                                                   \
        (f)->len = 0;                                                                              \
        (f)->log[0] = '\0';                                                                        \
    } while (0)

/* The fake runner: starts everything the plan allows; returns the names started, "a,b". */
static const char *next_all(fx *f, uint64_t now)
{
    static char out[256];
    out[0] = '\0';
    long i;
    while ((i = sched_next(f->p, now)) >= 0) {
        if (out[0])
            strcat(out, ",");
        strcat(out, sched_task_name(f->p, (size_t)i));
    }
    return out;
}

static void ex(fx *f, const char *name, sched_exit how, const char *err, uint64_t now)
{
    sched_exited(f->p, find(f, name), how, err, now);
}

static sched_state st(fx *f, const char *name)
{
    return sched_task_state(f->p, find(f, name));
}

/* ---- ordering ---- */

static void linear_chain_runs_in_order(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", "a");
    add(f, "c", "b");
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a");
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n");
    ex(f, "a", SCHED_EXIT_OK, NULL, 10);
    assert_string_equal(next_all(f, 10), "b");
    ex(f, "b", SCHED_EXIT_OK, NULL, 20);
    assert_false(sched_done(f->p));
    assert_string_equal(next_all(f, 20), "c");
    ex(f, "c", SCHED_EXIT_OK, NULL, 30);
    EXPECT_LOG(f, "a RUNNING->SUCCEEDED\n"
                  "b PENDING->RUNNING #1\n"
                  "b RUNNING->SUCCEEDED\n"
                  "c PENDING->RUNNING #1\n"
                  "c RUNNING->SUCCEEDED\n");
    assert_true(sched_done(f->p));
    assert_string_equal(next_all(f, 40), "");
    assert_int_equal(sched_count_in(f->p, SCHED_SUCCEEDED), 3);
    assert_int_equal(sched_next_deadline(f->p), UINT64_MAX);
    fx_free(f);
}

static void diamond_runs_middle_in_parallel_then_joins(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", "a");
    add(f, "c", "a");
    add(f, "d", "b c");
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a");
    ex(f, "a", SCHED_EXIT_OK, NULL, 1);
    assert_string_equal(next_all(f, 1), "b,c");
    assert_int_equal(sched_running(f->p), 2);
    ex(f, "c", SCHED_EXIT_OK, NULL, 2);
    assert_string_equal(next_all(f, 2), ""); /* the join waits for b */
    ex(f, "b", SCHED_EXIT_OK, NULL, 3);
    assert_string_equal(next_all(f, 3), "d");
    ex(f, "d", SCHED_EXIT_OK, NULL, 4);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "a RUNNING->SUCCEEDED\n"
                  "b PENDING->RUNNING #1\n"
                  "c PENDING->RUNNING #1\n"
                  "c RUNNING->SUCCEEDED\n"
                  "b RUNNING->SUCCEEDED\n"
                  "d PENDING->RUNNING #1\n"
                  "d RUNNING->SUCCEEDED\n");
    assert_true(sched_done(f->p));
    fx_free(f);
}

static void max_parallel_respected_and_lowest_spec_index_first(void **state)
{
    fx *f = fx_new();
    add(f, "x", NULL);
    add(f, "a", "x"); /* becomes ready later, but precedes c and d in the spec */
    add(f, "b", NULL);
    add(f, "c", NULL);
    add(f, "d", NULL);
    start(f, 2);
    assert_string_equal(next_all(f, 0), "x,b");
    assert_int_equal(sched_running(f->p), 2);
    assert_string_equal(next_all(f, 0), "");
    ex(f, "x", SCHED_EXIT_OK, NULL, 1);
    assert_string_equal(next_all(f, 1), "a");
    ex(f, "b", SCHED_EXIT_OK, NULL, 2);
    assert_string_equal(next_all(f, 2), "c");
    ex(f, "a", SCHED_EXIT_OK, NULL, 3);
    ex(f, "c", SCHED_EXIT_OK, NULL, 3);
    assert_string_equal(next_all(f, 3), "d");
    ex(f, "d", SCHED_EXIT_OK, NULL, 4);
    assert_true(sched_done(f->p));
    assert_int_equal(sched_count_in(f->p, SCHED_SUCCEEDED), 5);
    fx_free(f);
}

/* ---- retries ---- */

static void backoff_doubles_from_delay_and_caps_at_max(void **state)
{
    sched_task_def d = {
        .retry_delay_seconds = 5, .retry_backoff = 2, .retry_max_delay_seconds = 300};
    const double want[] = {5, 10, 20, 40, 80, 160, 300, 300, 300};
    for (int n = 1; n <= 9; n++)
        assert_float_equal(sched_backoff_seconds(&d, n), want[n - 1], 1e-9);
    d.retry_backoff = 1;
    assert_float_equal(sched_backoff_seconds(&d, 7), 5, 1e-9);
    d.retry_delay_seconds = 0;
    assert_float_equal(sched_backoff_seconds(&d, 3), 0, 1e-9);
    d = (sched_task_def){
        .retry_delay_seconds = 1.5, .retry_backoff = 3, .retry_max_delay_seconds = 10};
    assert_float_equal(sched_backoff_seconds(&d, 2), 4.5, 1e-9);
    assert_float_equal(sched_backoff_seconds(&d, 3), 10, 1e-9);
    d.retry_backoff = 1e300; /* overflow to infinity is still capped */
    assert_float_equal(sched_backoff_seconds(&d, 5), 10, 1e-9);
}

/* Fails a jittered task `tries` times and collects the delays the plan chose. */
static void jitter_delays(uint64_t seed, uint64_t *out, int tries)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    f->defs[a].retries = tries;
    f->defs[a].retry_delay_seconds = 5;
    f->defs[a].retry_jitter = true;
    assert_int_equal(sched_new(f->defs, f->n, 1, seed, NULL, NULL, &f->p), 0);
    uint64_t now = 0;
    for (int k = 0; k < tries; k++) {
        assert_int_equal(sched_next(f->p, now), 0);
        sched_exited(f->p, 0, SCHED_EXIT_FAILED, "boom", now);
        assert_int_equal(sched_task_state(f->p, 0), SCHED_RETRYING);
        out[k] = sched_retry_delay_ms(f->p, 0);
        assert_true(out[k] <= 5000);
        if (out[k] > 0)
            assert_int_equal(sched_next_deadline(f->p), now + out[k]);
        now += out[k];
        sched_tick(f->p, now, NULL, NULL);
    }
    fx_free(f);
}

static void jitter_within_zero_and_delay_and_reproducible_with_seed(void **state)
{
    enum { N = 40 };
    uint64_t a[N], b[N], c[N];
    jitter_delays(7, a, N);
    jitter_delays(7, b, N);
    jitter_delays(8, c, N);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int k = 0; k < N; k++) {
        lo = a[k] < lo ? a[k] : lo;
        hi = a[k] > hi ? a[k] : hi;
    }
    /* Full jitter spreads over the whole range, not a narrow band around the delay. */
    assert_true(lo < 2000 && hi > 3000);
}

static void flaky_task_succeeds_on_third_attempt(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    add(f, "b", "a");
    f->defs[a].retries = 3;
    f->defs[a].retry_delay_seconds = 1;
    f->defs[a].retry_backoff = 2;
    start(f, 2);
    assert_int_equal(sched_task_max_attempts(f->p, a), 4);
    assert_string_equal(next_all(f, 0), "a");
    ex(f, "a", SCHED_EXIT_FAILED, "exited with code 1: flaky", 100);
    assert_int_equal(sched_next_deadline(f->p), 1100);
    assert_string_equal(next_all(f, 100), "");
    sched_tick(f->p, 1099, on_timeout, f);
    assert_string_equal(next_all(f, 1099), "");
    sched_tick(f->p, 1100, on_timeout, f);
    assert_int_equal(sched_next_deadline(f->p), UINT64_MAX);
    assert_int_equal(st(f, "a"), SCHED_RETRYING); /* eligible, not started yet */
    assert_string_equal(next_all(f, 1100), "a");
    ex(f, "a", SCHED_EXIT_FAILED, "exited with code 1: flaky again", 1200);
    assert_int_equal(sched_next_deadline(f->p), 3200);
    sched_tick(f->p, 3200, on_timeout, f);
    assert_string_equal(next_all(f, 3200), "a");
    assert_int_equal(sched_task_attempt(f->p, a), 3);
    assert_int_equal(sched_retry_delay_ms(f->p, a), 0);
    ex(f, "a", SCHED_EXIT_OK, NULL, 3300);
    assert_string_equal(next_all(f, 3300), "b");
    ex(f, "b", SCHED_EXIT_OK, NULL, 3400);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "a RUNNING->RETRYING (1000 ms): exited with code 1: flaky\n"
                  "a RETRYING->RUNNING #2\n"
                  "a RUNNING->RETRYING (2000 ms): exited with code 1: flaky again\n"
                  "a RETRYING->RUNNING #3\n"
                  "a RUNNING->SUCCEEDED\n"
                  "b PENDING->RUNNING #1\n"
                  "b RUNNING->SUCCEEDED\n");
    assert_true(sched_done(f->p));
    assert_int_equal(f->n_timed_out, 0);
    fx_free(f);
}

static void retries_exhausted_fail_and_skip_cascades_naming_the_cause(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    add(f, "b", "a");
    add(f, "c", "b");
    add(f, "other", NULL);
    f->defs[a].retries = 1; /* retry_delay_seconds 0: eligible again at once */
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a,other");
    ex(f, "a", SCHED_EXIT_FAILED, "exited with code 2", 5);
    assert_int_equal(sched_next_deadline(f->p), UINT64_MAX);
    assert_string_equal(next_all(f, 5), "a");
    ex(f, "a", SCHED_EXIT_FAILED, "exited with code 3", 6);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "other PENDING->RUNNING #1\n"
                  "a RUNNING->RETRYING (0 ms): exited with code 2\n"
                  "a RETRYING->RUNNING #2\n"
                  "a RUNNING->FAILED: exited with code 3\n"
                  "b PENDING->SKIPPED: upstream failed: \"a\" is FAILED (trigger_rule "
                  "all_success)\n"
                  "c PENDING->SKIPPED: upstream failed: \"b\" was skipped because \"a\" FAILED "
                  "(trigger_rule all_success)\n");
    assert_false(sched_done(f->p)); /* "other" still runs */
    ex(f, "other", SCHED_EXIT_OK, NULL, 7);
    assert_true(sched_done(f->p));
    assert_int_equal(sched_count_in(f->p, SCHED_FAILED), 1);
    assert_int_equal(sched_count_in(f->p, SCHED_SKIPPED), 2);
    assert_int_equal(sched_count_in(f->p, SCHED_SUCCEEDED), 1);
    fx_free(f);
}

static void failed_exit_without_error_still_has_a_reason(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    start(f, 1);
    assert_string_equal(next_all(f, 0), "a");
    ex(f, "a", SCHED_EXIT_FAILED, NULL, 1);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "a RUNNING->FAILED: attempt failed\n");
    fx_free(f);
}

/* ---- trigger rules ---- */

static void all_success_skips_as_soon_as_one_upstream_fails(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", NULL);
    add(f, "c", "a b");
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a,b");
    ex(f, "a", SCHED_EXIT_FAILED, "boom", 1);
    assert_int_equal(st(f, "c"), SCHED_SKIPPED); /* b is still running */
    ex(f, "b", SCHED_EXIT_OK, NULL, 2);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "b PENDING->RUNNING #1\n"
                  "a RUNNING->FAILED: boom\n"
                  "c PENDING->SKIPPED: upstream failed: \"a\" is FAILED (trigger_rule "
                  "all_success)\n"
                  "b RUNNING->SUCCEEDED\n");
    assert_true(sched_done(f->p));
    fx_free(f);
}

static void all_done_runs_after_every_upstream_finished_whatever_the_outcome(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", NULL);
    size_t c = add(f, "cleanup", "a b");
    f->defs[c].trigger = SCHED_ALL_DONE;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a,b");
    ex(f, "a", SCHED_EXIT_FAILED, "boom", 1);
    assert_string_equal(next_all(f, 1), "");
    assert_int_equal(st(f, "cleanup"), SCHED_PENDING);
    ex(f, "b", SCHED_EXIT_OK, NULL, 2);
    assert_string_equal(next_all(f, 2), "cleanup");
    ex(f, "cleanup", SCHED_EXIT_OK, NULL, 3);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "b PENDING->RUNNING #1\n"
                  "a RUNNING->FAILED: boom\n"
                  "b RUNNING->SUCCEEDED\n"
                  "cleanup PENDING->RUNNING #1\n"
                  "cleanup RUNNING->SUCCEEDED\n");
    fx_free(f);
}

static void one_failed_runs_as_soon_as_one_upstream_fails(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", NULL);
    size_t c = add(f, "alert", "a b");
    f->defs[c].trigger = SCHED_ONE_FAILED;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a,b");
    ex(f, "a", SCHED_EXIT_FAILED, "boom", 1);
    assert_string_equal(next_all(f, 1), "alert"); /* b still running */
    ex(f, "b", SCHED_EXIT_FAILED, "boom too", 2);
    assert_string_equal(next_all(f, 2), "");
    ex(f, "alert", SCHED_EXIT_OK, NULL, 3);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "b PENDING->RUNNING #1\n"
                  "a RUNNING->FAILED: boom\n"
                  "alert PENDING->RUNNING #1\n"
                  "b RUNNING->FAILED: boom too\n"
                  "alert RUNNING->SUCCEEDED\n");
    assert_true(sched_done(f->p));
    fx_free(f);
}

static void one_failed_skipped_when_no_upstream_failed(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", NULL);
    size_t c = add(f, "alert", "a b");
    f->defs[c].trigger = SCHED_ONE_FAILED;
    add(f, "after", "alert");
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a,b");
    ex(f, "b", SCHED_EXIT_OK, NULL, 1);
    assert_int_equal(st(f, "alert"), SCHED_PENDING);
    ex(f, "a", SCHED_EXIT_OK, NULL, 2);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "b PENDING->RUNNING #1\n"
                  "b RUNNING->SUCCEEDED\n"
                  "a RUNNING->SUCCEEDED\n"
                  "alert PENDING->SKIPPED: trigger_rule one_failed not met: no upstream task "
                  "failed (last finished \"a\" is SUCCEEDED)\n"
                  "after PENDING->SKIPPED: trigger_rule all_success not met: upstream \"alert\" "
                  "is SKIPPED\n");
    assert_true(sched_done(f->p));
    fx_free(f);
}

static void none_failed_skips_on_a_failure_directly_or_through_a_skip(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", "a"); /* skipped because a fails */
    add(f, "c", NULL);
    size_t d = add(f, "d", "b c");
    size_t e = add(f, "e", "a c");
    add(f, "ok", NULL);
    size_t g = add(f, "g", "ok c");
    f->defs[d].trigger = SCHED_NONE_FAILED;
    f->defs[e].trigger = SCHED_NONE_FAILED;
    f->defs[g].trigger = SCHED_NONE_FAILED;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a,c,ok");
    ex(f, "a", SCHED_EXIT_FAILED, "boom", 1);
    assert_string_equal(next_all(f, 1), "");
    ex(f, "c", SCHED_EXIT_OK, NULL, 2);
    ex(f, "ok", SCHED_EXIT_OK, NULL, 2);
    assert_string_equal(next_all(f, 2), "g");
    ex(f, "g", SCHED_EXIT_OK, NULL, 3);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "c PENDING->RUNNING #1\n"
                  "ok PENDING->RUNNING #1\n"
                  "a RUNNING->FAILED: boom\n"
                  "b PENDING->SKIPPED: upstream failed: \"a\" is FAILED (trigger_rule "
                  "all_success)\n"
                  "e PENDING->SKIPPED: upstream failed: \"a\" is FAILED (trigger_rule "
                  "none_failed)\n"
                  "d PENDING->SKIPPED: upstream failed: \"b\" was skipped because \"a\" FAILED "
                  "(trigger_rule none_failed)\n"
                  "c RUNNING->SUCCEEDED\n"
                  "ok RUNNING->SUCCEEDED\n"
                  "g PENDING->RUNNING #1\n"
                  "g RUNNING->SUCCEEDED\n");
    assert_true(sched_done(f->p));
    fx_free(f);
}

static void cancelled_upstream_skips_all_success_and_none_failed(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", "a");
    size_t c = add(f, "c", "a");
    size_t d = add(f, "d", "a");
    f->defs[c].trigger = SCHED_NONE_FAILED;
    f->defs[d].trigger = SCHED_ALL_DONE;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a");
    ex(f, "a", SCHED_EXIT_CANCELLED, NULL, 1);
    assert_string_equal(next_all(f, 1), "d");
    ex(f, "d", SCHED_EXIT_OK, NULL, 2);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "a RUNNING->CANCELLED: cancelled\n"
                  "b PENDING->SKIPPED: upstream cancelled: \"a\" is CANCELLED (trigger_rule "
                  "all_success)\n"
                  "c PENDING->SKIPPED: upstream cancelled: \"a\" is CANCELLED (trigger_rule "
                  "none_failed)\n"
                  "d PENDING->RUNNING #1\n"
                  "d RUNNING->SUCCEEDED\n");
    assert_true(sched_done(f->p));
    fx_free(f);
}

/* The chain: extract fails -> transform (all_success) is skipped *because of a failure*,
 * so to publish (none_failed) and alert (one_failed) it counts as FAILED, as Airflow's
 * upstream_failed does. */
static void skip_caused_by_a_failure_counts_as_failed_downstream(void **state)
{
    fx *f = fx_new();
    add(f, "extract", NULL);
    add(f, "transform", "extract");
    size_t pub = add(f, "publish", "transform");
    size_t alert = add(f, "alert", "transform");
    f->defs[pub].trigger = SCHED_NONE_FAILED;
    f->defs[alert].trigger = SCHED_ONE_FAILED;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "extract");
    ex(f, "extract", SCHED_EXIT_FAILED, "exited with code 1", 1);
    assert_string_equal(next_all(f, 1), "alert");
    ex(f, "alert", SCHED_EXIT_OK, NULL, 2);
    EXPECT_LOG(f, "extract PENDING->RUNNING #1\n"
                  "extract RUNNING->FAILED: exited with code 1\n"
                  "transform PENDING->SKIPPED: upstream failed: \"extract\" is FAILED "
                  "(trigger_rule all_success)\n"
                  "publish PENDING->SKIPPED: upstream failed: \"transform\" was skipped because "
                  "\"extract\" FAILED (trigger_rule none_failed)\n"
                  "alert PENDING->RUNNING #1\n"
                  "alert RUNNING->SUCCEEDED\n");
    assert_int_equal(st(f, "publish"), SCHED_SKIPPED);
    assert_int_equal(sched_task_skip_cause(f->p, find(f, "transform")), SCHED_SKIP_UPSTREAM_FAILED);
    assert_int_equal(sched_task_skip_cause(f->p, pub), SCHED_SKIP_UPSTREAM_FAILED);
    assert_int_equal(sched_task_skip_cause(f->p, alert), SCHED_SKIP_NONE);
    assert_true(sched_done(f->p));
    fx_free(f);
}

/* A skip because a rule was not met (no failure anywhere) stays neutral: none_failed runs after
 * it, one_failed does not fire, all_success skips with the same cause. */
static void skip_because_a_rule_was_not_met_stays_neutral_downstream(void **state)
{
    fx *f = fx_new();
    add(f, "work", NULL);
    size_t alert = add(f, "alert", "work");
    size_t nf = add(f, "after_alert", "alert");
    size_t of = add(f, "alert_of_alert", "alert");
    add(f, "strict", "alert");
    f->defs[alert].trigger = SCHED_ONE_FAILED;
    f->defs[nf].trigger = SCHED_NONE_FAILED;
    f->defs[of].trigger = SCHED_ONE_FAILED;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "work");
    ex(f, "work", SCHED_EXIT_OK, NULL, 1);
    assert_string_equal(next_all(f, 1), "after_alert");
    ex(f, "after_alert", SCHED_EXIT_OK, NULL, 2);
    EXPECT_LOG(f, "work PENDING->RUNNING #1\n"
                  "work RUNNING->SUCCEEDED\n"
                  "alert PENDING->SKIPPED: trigger_rule one_failed not met: no upstream task "
                  "failed (last finished \"work\" is SUCCEEDED)\n"
                  "alert_of_alert PENDING->SKIPPED: trigger_rule one_failed not met: no upstream "
                  "task failed (last finished \"alert\" is SKIPPED)\n"
                  "strict PENDING->SKIPPED: trigger_rule all_success not met: upstream \"alert\" "
                  "is SKIPPED\n"
                  "after_alert PENDING->RUNNING #1\n"
                  "after_alert RUNNING->SUCCEEDED\n");
    assert_int_equal(sched_task_skip_cause(f->p, alert), SCHED_SKIP_TRIGGER_RULE);
    assert_int_equal(sched_task_skip_cause(f->p, find(f, "strict")), SCHED_SKIP_TRIGGER_RULE);
    assert_true(sched_done(f->p));
    fx_free(f);
}

/* The cause of an all_success skip does not depend on timing: with one upstream skipped by a
 * rule and another that fails later, the task waits for both and is skipped as upstream-failed,
 * so its none_failed downstream never runs past a failure. */
static void all_success_skip_cause_does_not_depend_on_timing(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    size_t alert = add(f, "alert", "a");
    add(f, "slow", NULL);
    add(f, "join", "alert slow");
    size_t nf = add(f, "publish", "join");
    f->defs[alert].trigger = SCHED_ONE_FAILED;
    f->defs[nf].trigger = SCHED_NONE_FAILED;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a,slow");
    ex(f, "a", SCHED_EXIT_OK, NULL, 1); /* alert skipped by its rule */
    assert_int_equal(st(f, "alert"), SCHED_SKIPPED);
    assert_int_equal(st(f, "join"), SCHED_PENDING); /* waits: slow may still fail */
    ex(f, "slow", SCHED_EXIT_FAILED, "boom", 2);
    assert_int_equal(st(f, "join"), SCHED_SKIPPED);
    assert_int_equal(sched_task_skip_cause(f->p, find(f, "join")), SCHED_SKIP_UPSTREAM_FAILED);
    assert_int_equal(st(f, "publish"), SCHED_SKIPPED);
    assert_string_equal(f->last_reason, "upstream failed: \"join\" was skipped because \"slow\" "
                                        "FAILED (trigger_rule none_failed)");
    assert_true(sched_done(f->p));
    fx_free(f);
}

/* A skip caused by a cancellation carries it on: none_failed skips, all_done still runs. */
static void skip_caused_by_a_cancel_counts_as_cancelled_downstream(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    add(f, "b", "a");
    size_t c = add(f, "c", "b");
    size_t d = add(f, "d", "b");
    size_t e = add(f, "e", "b");
    f->defs[c].trigger = SCHED_NONE_FAILED;
    f->defs[d].trigger = SCHED_ALL_DONE;
    f->defs[e].trigger = SCHED_ONE_FAILED;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a");
    ex(f, "a", SCHED_EXIT_CANCELLED, "stopped", 1);
    assert_string_equal(next_all(f, 1), "d");
    ex(f, "d", SCHED_EXIT_OK, NULL, 2);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "a RUNNING->CANCELLED: stopped\n"
                  "b PENDING->SKIPPED: upstream cancelled: \"a\" is CANCELLED (trigger_rule "
                  "all_success)\n"
                  "c PENDING->SKIPPED: upstream cancelled: \"b\" was skipped because \"a\" was "
                  "CANCELLED (trigger_rule none_failed)\n"
                  "e PENDING->SKIPPED: upstream cancelled: \"b\" was skipped because \"a\" was "
                  "CANCELLED (trigger_rule one_failed)\n"
                  "d PENDING->RUNNING #1\n"
                  "d RUNNING->SUCCEEDED\n");
    assert_int_equal(sched_task_skip_cause(f->p, c), SCHED_SKIP_UPSTREAM_CANCELLED);
    assert_true(sched_done(f->p));
    fx_free(f);
}

/* The whole rule table of docs/flow-spec.md: one upstream task ending each way, every rule. */
static void trigger_rule_table_for_every_upstream_outcome(void **state)
{
    /* upstream outcome -> what a task with each rule does (R runs, S skipped), in the order
     * all_success, all_done, one_failed, none_failed. */
    static const struct {
        const char *outcome;
        const char *want;
    } rows[] = {
        {"SUCCEEDED", "RRSR"},    {"FAILED", "SRRS"},
        {"SKIPPED:rule", "SRSR"}, {"SKIPPED:upstream_failed", "SRRS"},
        {"CANCELLED", "SRSS"},    {"SKIPPED:upstream_cancelled", "SRSS"},
    };
    static const char *const names[] = {"all_success", "all_done", "one_failed", "none_failed"};
    for (size_t row = 0; row < sizeof rows / sizeof rows[0]; row++) {
        fx *f = fx_new();
        add(f, "root", NULL);
        size_t mid = add(f, "mid", "root"); /* the upstream whose outcome we set */
        const char *o = rows[row].outcome;
        if (!strcmp(o, "SKIPPED:rule"))
            f->defs[mid].trigger = SCHED_ONE_FAILED; /* root succeeds: mid skipped by rule */
        for (int t = 0; t < 4; t++) {
            size_t k = add(f, names[t], "mid");
            f->defs[k].trigger = (sched_trigger)t;
        }
        start(f, 8);
        assert_string_equal(next_all(f, 0), "root");
        if (!strcmp(o, "SUCCEEDED") || !strcmp(o, "FAILED") || !strcmp(o, "CANCELLED")) {
            ex(f, "root", SCHED_EXIT_OK, NULL, 1);
            assert_string_equal(next_all(f, 1), "mid");
            ex(f, "mid",
               !strcmp(o, "SUCCEEDED") ? SCHED_EXIT_OK
               : !strcmp(o, "FAILED")  ? SCHED_EXIT_FAILED
                                       : SCHED_EXIT_CANCELLED,
               NULL, 2);
        } else {
            ex(f, "root",
               !strcmp(o, "SKIPPED:upstream_failed")      ? SCHED_EXIT_FAILED
               : !strcmp(o, "SKIPPED:upstream_cancelled") ? SCHED_EXIT_CANCELLED
                                                          : SCHED_EXIT_OK,
               NULL, 1);
            assert_int_equal(st(f, "mid"), SCHED_SKIPPED);
        }
        next_all(f, 3);
        for (int t = 0; t < 4; t++) {
            sched_state want = rows[row].want[t] == 'R' ? SCHED_RUNNING : SCHED_SKIPPED;
            if (st(f, names[t]) != want)
                fail_msg("upstream %s, rule %s: got %s, want %s", o, names[t],
                         sched_state_name(st(f, names[t])), sched_state_name(want));
        }
        fx_free(f);
    }
}

static void task_without_upstream_is_ready_whatever_its_rule(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    size_t b = add(f, "b", NULL);
    f->defs[a].trigger = SCHED_ONE_FAILED;
    f->defs[b].trigger = SCHED_NONE_FAILED;
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a,b");
    fx_free(f);
}

/* ---- timeouts ---- */

static void timeout_fires_once_then_retries_with_reason(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    f->defs[a].timeout_seconds = 2;
    f->defs[a].retries = 1;
    f->defs[a].retry_delay_seconds = 1;
    start(f, 1);
    assert_string_equal(next_all(f, 0), "a");
    assert_int_equal(sched_next_deadline(f->p), 2000);
    sched_tick(f->p, 1999, on_timeout, f);
    assert_int_equal(f->n_timed_out, 0);
    sched_tick(f->p, 2000, on_timeout, f);
    assert_int_equal(f->n_timed_out, 1);
    assert_int_equal(f->timed_out[0], a);
    sched_tick(f->p, 2050, on_timeout, f); /* still being killed: not reported again */
    assert_int_equal(f->n_timed_out, 1);
    assert_int_equal(sched_next_deadline(f->p), UINT64_MAX);
    ex(f, "a", SCHED_EXIT_TIMED_OUT, NULL, 2100);
    assert_int_equal(sched_next_deadline(f->p), 3100);
    sched_tick(f->p, 3100, on_timeout, f);
    assert_string_equal(next_all(f, 3100), "a");
    assert_int_equal(sched_next_deadline(f->p), 5100);
    sched_tick(f->p, 6000, on_timeout, f);
    assert_int_equal(f->n_timed_out, 2);
    ex(f, "a", SCHED_EXIT_TIMED_OUT, "killed by signal 9 (Killed)", 6100);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "a RUNNING->RETRYING (1000 ms): exceeded timeout of 2 s\n"
                  "a RETRYING->RUNNING #2\n"
                  "a RUNNING->FAILED: exceeded timeout of 2 s: killed by signal 9 (Killed)\n");
    assert_true(sched_done(f->p));
    fx_free(f);
}

static void attempt_ending_before_its_timeout_never_times_out(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    size_t b = add(f, "b", NULL);
    f->defs[a].timeout_seconds = 1.5;
    f->defs[b].timeout_seconds = 10;
    start(f, 2);
    assert_string_equal(next_all(f, 0), "a,b");
    assert_int_equal(sched_next_deadline(f->p), 1500);
    ex(f, "a", SCHED_EXIT_OK, NULL, 1000);
    assert_int_equal(sched_next_deadline(f->p), 10000);
    sched_tick(f->p, 9999, on_timeout, f);
    assert_int_equal(f->n_timed_out, 0);
    sched_tick(f->p, 20000, on_timeout, f);
    assert_int_equal(f->n_timed_out, 1);
    assert_int_equal(f->timed_out[0], b);
    ex(f, "b", SCHED_EXIT_TIMED_OUT, NULL, 20001);
    assert_string_equal(f->last_reason, "exceeded timeout of 10 s");
    fx_free(f);

    f = fx_new();
    a = add(f, "a", NULL);
    f->defs[a].timeout_seconds = 1.5;
    start(f, 1);
    assert_string_equal(next_all(f, 0), "a");
    sched_tick(f->p, 1500, on_timeout, f);
    assert_int_equal(f->n_timed_out, 1);
    ex(f, "a", SCHED_EXIT_TIMED_OUT, NULL, 1600);
    assert_string_equal(f->last_reason, "exceeded timeout of 1.5 s");
    fx_free(f);
}

/* ---- drain ---- */

static void drain_cancels_pending_and_retrying_and_lets_running_finish(void **state)
{
    fx *f = fx_new();
    add(f, "r1", NULL);
    size_t r2 = add(f, "r2", NULL);
    size_t q = add(f, "q", NULL);
    add(f, "p", "r1");
    add(f, "x", NULL); /* beyond max_parallel: never started */
    add(f, "r3", NULL);
    f->defs[r2].retries = 2;
    f->defs[q].retries = 2;
    f->defs[q].retry_delay_seconds = 10;
    start(f, 3);
    assert_string_equal(next_all(f, 0), "r1,r2,q");
    ex(f, "q", SCHED_EXIT_FAILED, "boom", 100);
    assert_string_equal(next_all(f, 100), "x");
    EXPECT_LOG(f, "r1 PENDING->RUNNING #1\n"
                  "r2 PENDING->RUNNING #1\n"
                  "q PENDING->RUNNING #1\n"
                  "q RUNNING->RETRYING (10000 ms): boom\n"
                  "x PENDING->RUNNING #1\n");
    assert_int_equal(sched_next_deadline(f->p), 10100);
    sched_drain(f->p, "Worker shutdown requested via SIGTERM");
    EXPECT_LOG(f, "q RETRYING->CANCELLED: Worker shutdown requested via SIGTERM\n"
                  "p PENDING->CANCELLED: Worker shutdown requested via SIGTERM\n"
                  "r3 PENDING->CANCELLED: Worker shutdown requested via SIGTERM\n");
    sched_drain(f->p, "again"); /* idempotent */
    assert_int_equal(f->len, 0);
    assert_int_equal(sched_next_deadline(f->p), UINT64_MAX);
    ex(f, "r1", SCHED_EXIT_OK, NULL, 200);
    assert_string_equal(next_all(f, 200), "");                 /* nothing starts while draining */
    ex(f, "r2", SCHED_EXIT_FAILED, "exited with code 1", 300); /* no retry while draining */
    assert_false(sched_done(f->p));
    ex(f, "x", SCHED_EXIT_CANCELLED, "Worker shutdown requested via SIGTERM: task terminated", 400);
    EXPECT_LOG(f, "r1 RUNNING->SUCCEEDED\n"
                  "r2 RUNNING->FAILED: exited with code 1\n"
                  "x RUNNING->CANCELLED: Worker shutdown requested via SIGTERM: task "
                  "terminated\n");
    assert_true(sched_done(f->p));
    assert_int_equal(sched_count_in(f->p, SCHED_CANCELLED), 4);
    assert_int_equal(sched_count_in(f->p, SCHED_SUCCEEDED), 1);
    assert_int_equal(sched_count_in(f->p, SCHED_FAILED), 1);
    fx_free(f);
}

static void drain_mid_retry_delay_cancels_the_retry(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    add(f, "b", "a");
    f->defs[a].retries = 3;
    f->defs[a].retry_delay_seconds = 30;
    start(f, 1);
    assert_string_equal(next_all(f, 0), "a");
    ex(f, "a", SCHED_EXIT_FAILED, "boom", 0);
    assert_int_equal(sched_next_deadline(f->p), 30000);
    sched_tick(f->p, 10000, on_timeout, f);
    sched_drain(f->p, "stop");
    assert_int_equal(sched_next_deadline(f->p), UINT64_MAX);
    sched_tick(f->p, 60000, on_timeout, f);
    assert_string_equal(next_all(f, 60000), "");
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "a RUNNING->RETRYING (30000 ms): boom\n"
                  "a RETRYING->CANCELLED: stop\n"
                  "b PENDING->CANCELLED: stop\n");
    assert_int_equal(sched_task_attempt(f->p, a), 1);
    assert_int_equal(sched_retry_delay_ms(f->p, a), 0);
    assert_true(sched_done(f->p));
    fx_free(f);
}

static void drain_cancels_a_retry_that_is_already_eligible(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    add(f, "busy", NULL);
    f->defs[a].retries = 1; /* no delay: eligible at once, but max_parallel is taken */
    start(f, 2);
    assert_string_equal(next_all(f, 0), "a,busy");
    ex(f, "a", SCHED_EXIT_FAILED, "boom", 1);
    sched_drain(f->p, NULL);
    assert_string_equal(next_all(f, 2), "");
    ex(f, "busy", SCHED_EXIT_OK, NULL, 3);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "busy PENDING->RUNNING #1\n"
                  "a RUNNING->RETRYING (0 ms): boom\n"
                  "a RETRYING->CANCELLED: cancelled\n"
                  "busy RUNNING->SUCCEEDED\n");
    assert_true(sched_done(f->p));
    fx_free(f);
}

static void next_deadline_is_earliest_retry_or_timeout(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    size_t b = add(f, "b", NULL);
    f->defs[a].timeout_seconds = 10;
    f->defs[b].retries = 1;
    f->defs[b].retry_delay_seconds = 3;
    start(f, 2);
    assert_int_equal(sched_next_deadline(f->p), UINT64_MAX);
    assert_string_equal(next_all(f, 0), "a,b");
    assert_int_equal(sched_next_deadline(f->p), 10000);
    ex(f, "b", SCHED_EXIT_FAILED, "boom", 1000);
    assert_int_equal(sched_next_deadline(f->p), 4000);
    sched_tick(f->p, 4000, on_timeout, f);
    assert_int_equal(sched_next_deadline(f->p), 10000); /* b eligible: no longer a deadline */
    assert_string_equal(next_all(f, 4500), "b");
    assert_int_equal(sched_next_deadline(f->p), 10000);
    ex(f, "a", SCHED_EXIT_OK, NULL, 5000);
    assert_int_equal(sched_next_deadline(f->p), UINT64_MAX);
    assert_int_equal(f->n_timed_out, 0);
    fx_free(f);
}

/* ---- scale ---- */

/* Runs a plan to completion with a FIFO fake runner where every attempt succeeds. */
static void run_to_completion(sched_plan *p, int max_parallel)
{
    size_t n = sched_count(p);
    size_t *running = malloc((n ? n : 1) * sizeof *running);
    size_t head = 0, tail = 0;
    uint64_t now = 0;
    long i;
    while (!sched_done(p)) {
        while ((i = sched_next(p, now)) >= 0)
            running[tail++ % n] = (size_t)i;
        assert_true(sched_running(p) <= (size_t)max_parallel);
        assert_true(head < tail); /* something must be running, or the plan is stuck */
        sched_exited(p, running[head++ % n], SCHED_EXIT_OK, NULL, ++now);
    }
    free(running);
}

static void layered_2000_tasks_complete_with_small_footprint(void **state)
{
    enum { LAYERS = 20, WIDTH = 100, N = LAYERS * WIDTH };
    sched_task_def *defs = calloc(N, sizeof *defs);
    size_t(*ups)[2] = calloc(N, sizeof *ups);
    char(*names)[16] = calloc(N, sizeof *names);
    assert_true(defs && ups && names);
    for (size_t k = 0; k < N; k++) {
        size_t layer = k / WIDTH, col = k % WIDTH;
        snprintf(names[k], sizeof names[k], "t%zu_%zu", layer, col);
        defs[k].name = names[k];
        defs[k].retry_backoff = 1;
        if (layer > 0) {
            ups[k][0] = (layer - 1) * WIDTH + col;
            ups[k][1] = (layer - 1) * WIDTH + (col + 1) % WIDTH;
            defs[k].upstream = ups[k];
            defs[k].n_upstream = 2;
        }
    }
    fx *f = fx_new();
    sched_plan *p;
    assert_int_equal(sched_new(defs, N, 2, 1, on_transition, f, &p), 0);
    f->p = p;
    f->len = sizeof f->log; /* count only */
    assert_true(sched_footprint(p) < 300 * 1024);
    run_to_completion(p, 2);
    assert_int_equal(sched_count_in(p, SCHED_SUCCEEDED), N);
    assert_int_equal(f->n_transitions, 2 * N);
    sched_free(p);
    free(f);
    free(defs);
    free(ups);
    free(names);
}

static void chain_of_5000_failing_at_head_cascades_skipped_without_recursion(void **state)
{
    enum { N = 5000 };
    sched_task_def *defs = calloc(N, sizeof *defs);
    size_t *ups = calloc(N, sizeof *ups);
    char(*names)[16] = calloc(N, sizeof *names);
    assert_true(defs && ups && names);
    for (size_t k = 0; k < N; k++) {
        snprintf(names[k], sizeof names[k], "t%zu", k);
        defs[k].name = names[k];
        if (k > 0) {
            ups[k] = k - 1;
            defs[k].upstream = &ups[k];
            defs[k].n_upstream = 1;
        }
    }
    fx *f = fx_new();
    assert_int_equal(sched_new(defs, N, 4, 1, on_transition, f, &f->p), 0);
    assert_int_equal(sched_next(f->p, 0), 0);
    assert_int_equal(sched_next(f->p, 0), -1);
    f->len = 0;
    f->log[0] = '\0';
    sched_exited(f->p, 0, SCHED_EXIT_FAILED, "exited with code 1", 1);
    assert_true(sched_done(f->p));
    assert_int_equal(sched_count_in(f->p, SCHED_SKIPPED), N - 1);
    assert_int_equal(f->n_transitions, 1 + N);
    assert_string_equal(f->last_reason, "upstream failed: \"t4998\" was skipped because \"t0\" "
                                        "FAILED (trigger_rule all_success)");
    assert_non_null(strstr(f->log, "t0 RUNNING->FAILED: exited with code 1\n"
                                   "t1 PENDING->SKIPPED: upstream failed: \"t0\" is FAILED "
                                   "(trigger_rule all_success)\n"
                                   "t2 PENDING->SKIPPED: upstream failed: \"t1\" was skipped"));
    fx_free(f);
    free(defs);
    free(ups);
    free(names);
}

/* ---- construction and helpers ---- */

static void new_rejects_bad_plans(void **state)
{
    fx *f = fx_new();
    add(f, "a", NULL);
    size_t b = add(f, "b", "a");
    sched_plan *p = NULL;
    assert_int_equal(sched_new(f->defs, f->n, 0, 1, NULL, NULL, &p), -EINVAL);
    f->ups[b][0] = 7; /* out of range */
    assert_int_equal(sched_new(f->defs, f->n, 1, 1, NULL, NULL, &p), -EINVAL);
    f->ups[b][0] = b; /* self */
    assert_int_equal(sched_new(f->defs, f->n, 1, 1, NULL, NULL, &p), -EINVAL);
    f->ups[b][0] = 0;
    f->ups[0][0] = b; /* a <-> b */
    f->defs[0].n_upstream = 1;
    assert_int_equal(sched_new(f->defs, f->n, 1, 1, NULL, NULL, &p), -EINVAL);
    assert_null(p);
    f->defs[0].n_upstream = 0;
    f->defs[0].trigger = (sched_trigger)9;
    assert_int_equal(sched_new(f->defs, f->n, 1, 1, NULL, NULL, &p), -EINVAL);
    f->defs[0].trigger = SCHED_ALL_SUCCESS;
    assert_int_equal(sched_new(f->defs, f->n, 1, 1, NULL, NULL, &p), 0);
    assert_int_equal(sched_count(p), 2);
    sched_free(p);
    assert_int_equal(sched_new(NULL, 0, 1, 1, NULL, NULL, &p), 0);
    assert_true(sched_done(p));
    assert_int_equal(sched_next(p, 0), -1);
    sched_drain(p, "x");
    sched_free(p);
    fx_free(f);
}

static void names_and_trigger_parsing(void **state)
{
    const char *want[] = {"PENDING", "RUNNING", "RETRYING", "SUCCEEDED",
                          "FAILED",  "SKIPPED", "CANCELLED"};
    for (int s = SCHED_PENDING; s <= SCHED_CANCELLED; s++) {
        assert_string_equal(sched_state_name((sched_state)s), want[s]);
        assert_int_equal(sched_state_terminal((sched_state)s), s >= SCHED_SUCCEEDED);
    }
    const char *rules[] = {"all_success", "all_done", "one_failed", "none_failed"};
    for (int t = 0; t < 4; t++) {
        sched_trigger out = (sched_trigger)99;
        assert_int_equal(sched_trigger_parse(rules[t], &out), 0);
        assert_int_equal(out, t);
        assert_string_equal(sched_trigger_name(out), rules[t]);
    }
    sched_trigger out = SCHED_ALL_DONE;
    assert_int_equal(sched_trigger_parse("all_failed", &out), -EINVAL);
    assert_int_equal(sched_trigger_parse("", &out), -EINVAL);
    assert_int_equal(sched_trigger_parse(NULL, &out), -EINVAL);
    assert_int_equal(out, SCHED_ALL_DONE);
}

/* A start that no retry can change (the command is over exec()'s limits) fails the task at
 * once, whatever its retries, and the failure cascades like any other. */
static void fatal_exit_fails_without_retry(void **state)
{
    fx *f = fx_new();
    size_t a = add(f, "a", NULL);
    f->defs[a].retries = 3;
    add(f, "b", "a");
    start(f, 4);
    assert_string_equal(next_all(f, 0), "a");
    ex(f, "a", SCHED_EXIT_FATAL, "too big", 5);
    EXPECT_LOG(f, "a PENDING->RUNNING #1\n"
                  "a RUNNING->FAILED: too big\n"
                  "b PENDING->SKIPPED: upstream failed: \"a\" is FAILED (trigger_rule all_success)\n");
    assert_true(sched_done(f->p));
    assert_int_equal(sched_task_attempt(f->p, a), 1);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linear_chain_runs_in_order),
        cmocka_unit_test(diamond_runs_middle_in_parallel_then_joins),
        cmocka_unit_test(max_parallel_respected_and_lowest_spec_index_first),
        cmocka_unit_test(backoff_doubles_from_delay_and_caps_at_max),
        cmocka_unit_test(jitter_within_zero_and_delay_and_reproducible_with_seed),
        cmocka_unit_test(flaky_task_succeeds_on_third_attempt),
        cmocka_unit_test(retries_exhausted_fail_and_skip_cascades_naming_the_cause),
        cmocka_unit_test(failed_exit_without_error_still_has_a_reason),
        cmocka_unit_test(all_success_skips_as_soon_as_one_upstream_fails),
        cmocka_unit_test(all_done_runs_after_every_upstream_finished_whatever_the_outcome),
        cmocka_unit_test(one_failed_runs_as_soon_as_one_upstream_fails),
        cmocka_unit_test(one_failed_skipped_when_no_upstream_failed),
        cmocka_unit_test(none_failed_skips_on_a_failure_directly_or_through_a_skip),
        cmocka_unit_test(cancelled_upstream_skips_all_success_and_none_failed),
        cmocka_unit_test(skip_caused_by_a_failure_counts_as_failed_downstream),
        cmocka_unit_test(skip_because_a_rule_was_not_met_stays_neutral_downstream),
        cmocka_unit_test(all_success_skip_cause_does_not_depend_on_timing),
        cmocka_unit_test(skip_caused_by_a_cancel_counts_as_cancelled_downstream),
        cmocka_unit_test(trigger_rule_table_for_every_upstream_outcome),
        cmocka_unit_test(task_without_upstream_is_ready_whatever_its_rule),
        cmocka_unit_test(timeout_fires_once_then_retries_with_reason),
        cmocka_unit_test(attempt_ending_before_its_timeout_never_times_out),
        cmocka_unit_test(drain_cancels_pending_and_retrying_and_lets_running_finish),
        cmocka_unit_test(drain_mid_retry_delay_cancels_the_retry),
        cmocka_unit_test(drain_cancels_a_retry_that_is_already_eligible),
        cmocka_unit_test(next_deadline_is_earliest_retry_or_timeout),
        cmocka_unit_test(layered_2000_tasks_complete_with_small_footprint),
        cmocka_unit_test(chain_of_5000_failing_at_head_cascades_skipped_without_recursion),
        cmocka_unit_test(new_rejects_bad_plans),
        cmocka_unit_test(names_and_trigger_parsing),
        cmocka_unit_test(fatal_exit_fails_without_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
