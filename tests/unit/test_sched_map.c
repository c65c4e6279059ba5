/* test_sched_map.c - dynamic fan-out in the plan: a map node expanded into children at run time,
 * its max_parallel bound, per-child retries, allow_failures, the `over` upstream that must
 * succeed whatever the trigger rule, skips through the map node, the drain, and an empty map. */
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

#define MAXT 8

typedef struct {
    sched_task_def defs[MAXT];
    size_t ups[MAXT][4];
    size_t n;
    sched_plan *p;
    char log[16384];
    size_t len;
} fx;

static void on_transition(void *ud, size_t task, sched_state from, sched_state to,
                          const char *reason)
{
    fx *f = ud;
    if (f->len + 300 >= sizeof f->log)
        return;
    f->len += (size_t)snprintf(f->log + f->len, sizeof f->log - f->len, "%s %s->%s%s%s\n",
                               sched_task_name(f->p, task), sched_state_name(from),
                               sched_state_name(to), reason ? ": " : "", reason ? reason : "");
}

/* Adds a task; `ups` are indices (-1 ends the list). */
static size_t add(fx *f, const char *name, long u1, long u2)
{
    size_t i = f->n++;
    sched_task_def *d = &f->defs[i];
    memset(d, 0, sizeof *d);
    d->name = name;
    d->retry_backoff = 1;
    d->retry_max_delay_seconds = 300;
    d->upstream = f->ups[i];
    if (u1 >= 0)
        f->ups[i][d->n_upstream++] = (size_t)u1;
    if (u2 >= 0)
        f->ups[i][d->n_upstream++] = (size_t)u2;
    return i;
}

static void make_map(fx *f, size_t i, size_t over, int max_par, int allow)
{
    f->defs[i].map = true;
    f->defs[i].map_over = over;
    f->defs[i].map_max_parallel = max_par;
    f->defs[i].map_allow_failures = allow;
}

static void start(fx *f, int max_parallel)
{
    assert_int_equal(sched_new(f->defs, f->n, max_parallel, 7, on_transition, f, &f->p), 0);
}

static void clear(fx *f)
{
    f->len = 0;
    f->log[0] = '\0';
}

/* Runs `src` (a plain task) to success. */
static void run_ok(fx *f, size_t src)
{
    assert_int_equal(sched_next(f->p, 0), (long)src);
    sched_exited(f->p, src, SCHED_EXIT_OK, NULL, 0);
}

/* Starts everything startable; returns how many. */
static size_t start_all(fx *f, long *got, size_t cap)
{
    size_t n = 0;
    long i;
    while ((i = sched_next(f->p, 0)) >= 0) {
        if (n < cap)
            got[n] = i;
        n++;
    }
    return n;
}

static void test_map_expands_into_named_children_bounded_by_max_parallel(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1), after = add(f, "after", 1, -1);
    make_map(f, m, src, 3, 0);
    start(f, 16);
    run_ok(f, src);
    assert_int_equal(sched_next(f->p, 0), (long)m);
    assert_true(sched_task_is_map(f->p, m));
    assert_int_equal(sched_expand(f->p, m, 10), 0);
    assert_int_equal(sched_expand(f->p, m, 10), -EINVAL); /* once */
    assert_int_equal(sched_count(f->p), 13);
    size_t first, n;
    assert_true(sched_map_children(f->p, m, &first, &n));
    assert_int_equal(first, 3);
    assert_int_equal(n, 10);
    assert_string_equal(sched_task_name(f->p, first + 7), "m[7]");
    assert_int_equal(sched_task_parent(f->p, first + 7), (long)m);
    assert_int_equal(sched_task_map_index(f->p, first + 7), 7);
    assert_int_equal(sched_task_parent(f->p, after), -1);
    long got[16];
    size_t done = 0;
    size_t peak = 0;
    for (int round = 0; round < 20 && done < 10; round++) {
        size_t k = start_all(f, got, 16);
        size_t running = sched_running(f->p) - 1; /* the map node itself is RUNNING */
        peak = running > peak ? running : peak;
        assert_true(running <= 3);
        (void)k;
        /* finish the lowest running child */
        for (size_t c = first; c < first + n; c++)
            if (sched_task_state(f->p, c) == SCHED_RUNNING) {
                sched_exited(f->p, c, SCHED_EXIT_OK, NULL, 0);
                done++;
                break;
            }
    }
    assert_int_equal(done, 10);
    assert_int_equal(peak, 3);
    assert_int_equal(sched_state_terminal(sched_task_state(f->p, after)), false);
    assert_int_equal(sched_next_joined(f->p), (long)m);
    assert_int_equal(sched_next_joined(f->p), -1);
    const char *why = "x";
    assert_int_equal(sched_map_outcome(f->p, m, &why), SCHED_EXIT_OK);
    assert_null(why);
    sched_exited(f->p, m, SCHED_EXIT_OK, NULL, 0);
    assert_int_equal(sched_next(f->p, 0), (long)after);
    sched_exited(f->p, after, SCHED_EXIT_OK, NULL, 0);
    assert_true(sched_done(f->p));
    sched_free(f->p);
    free(f);
}

/* The map node holds no slot: with a global max_parallel of 2, two children run at once. */
static void test_children_count_against_the_global_limit_and_the_map_node_does_not(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1);
    make_map(f, m, src, 0, 0);
    start(f, 2);
    run_ok(f, src);
    assert_int_equal(sched_next(f->p, 0), (long)m);
    assert_int_equal(sched_expand(f->p, m, 5), 0);
    long got[8];
    assert_int_equal(start_all(f, got, 8), 2);
    assert_int_equal(got[0], 2);
    assert_int_equal(got[1], 3);
    sched_free(f->p);
    free(f);
}

static void test_a_failed_child_is_retried_on_its_own(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1);
    make_map(f, m, src, 0, 0);
    f->defs[m].retries = 1;
    f->defs[m].retry_delay_seconds = 0;
    start(f, 8);
    run_ok(f, src);
    assert_int_equal(sched_next(f->p, 0), (long)m);
    assert_int_equal(sched_task_max_attempts(f->p, m), 1);
    assert_int_equal(sched_expand(f->p, m, 2), 0);
    long got[4];
    assert_int_equal(start_all(f, got, 4), 2);
    clear(f);
    sched_exited(f->p, 2, SCHED_EXIT_FAILED, "exited with code 1", 0);
    sched_exited(f->p, 3, SCHED_EXIT_OK, NULL, 0);
    assert_string_equal(f->log, "m[0] RUNNING->RETRYING: exited with code 1\n"
                                "m[1] RUNNING->SUCCEEDED\n");
    assert_int_equal(sched_next_joined(f->p), -1);
    assert_int_equal(sched_next(f->p, 0), 2);
    assert_int_equal(sched_task_attempt(f->p, 2), 2);
    assert_int_equal(sched_task_max_attempts(f->p, 2), 2);
    sched_exited(f->p, 2, SCHED_EXIT_OK, NULL, 0);
    assert_int_equal(sched_next_joined(f->p), (long)m);
    sched_free(f->p);
    free(f);
}

static void test_allow_failures_decides_the_map_and_downstream_skips(void **state)
{
    (void)state;
    for (int allow = 0; allow <= 2; allow++) {
        fx *f = calloc(1, sizeof *f);
        size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1), d = add(f, "d", 1, -1);
        make_map(f, m, src, 0, allow);
        start(f, 8);
        run_ok(f, src);
        assert_int_equal(sched_next(f->p, 0), (long)m);
        assert_int_equal(sched_expand(f->p, m, 4), 0);
        long got[4];
        assert_int_equal(start_all(f, got, 4), 4);
        sched_exited(f->p, 3, SCHED_EXIT_OK, NULL, 0);
        sched_exited(f->p, 4, SCHED_EXIT_FAILED, "boom", 0);
        sched_exited(f->p, 5, SCHED_EXIT_OK, NULL, 0);
        sched_exited(f->p, 6, SCHED_EXIT_FAILED, "boom", 0);
        assert_int_equal(sched_map_failed(f->p, m), 2);
        assert_int_equal(sched_next_joined(f->p), (long)m);
        const char *why = NULL;
        sched_exit how = sched_map_outcome(f->p, m, &why);
        if (allow < 2) {
            assert_int_equal(how, SCHED_EXIT_FAILED);
            char want[128];
            snprintf(want, sizeof want,
                     "2 of 4 children failed (allow_failures %d); the first was \"m[1]\"", allow);
            assert_string_equal(why, want);
            sched_exited(f->p, m, how, why, 0);
            assert_int_equal(sched_task_state(f->p, d), SCHED_SKIPPED);
            assert_int_equal(sched_task_skip_cause(f->p, d), SCHED_SKIP_UPSTREAM_FAILED);
        } else {
            assert_int_equal(how, SCHED_EXIT_OK);
            sched_exited(f->p, m, how, NULL, 0);
            assert_int_equal(sched_next(f->p, 0), (long)d);
        }
        sched_free(f->p);
        free(f);
    }
}

/* `over` must succeed whatever the map's trigger rule: all_done would otherwise run the map on a
 * failed upstream's missing result. */
static void test_map_is_skipped_when_its_over_upstream_did_not_succeed(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1), d = add(f, "d", 1, -1);
    make_map(f, m, src, 0, 0);
    f->defs[m].trigger = SCHED_ALL_DONE;
    f->defs[d].trigger = SCHED_ALL_DONE;
    start(f, 8);
    assert_int_equal(sched_next(f->p, 0), (long)src);
    clear(f);
    sched_exited(f->p, src, SCHED_EXIT_FAILED, "no", 0);
    assert_int_equal(sched_task_state(f->p, m), SCHED_SKIPPED);
    assert_int_equal(sched_task_skip_cause(f->p, m), SCHED_SKIP_UPSTREAM_FAILED);
    assert_non_null(strstr(f->log, "m PENDING->SKIPPED: upstream failed: \"src\" is FAILED"));
    assert_int_equal(sched_next(f->p, 0), (long)d); /* all_done runs after the skip */
    sched_free(f->p);
    free(f);
}

/* With one_failed, the map waits for `over` even when another upstream already failed. */
static void test_map_waits_for_its_over_upstream_whatever_the_rule(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), bad = add(f, "bad", -1, -1);
    size_t m = add(f, "m", (long)src, (long)bad);
    make_map(f, m, src, 0, 0);
    f->defs[m].trigger = SCHED_ONE_FAILED;
    start(f, 8);
    long got[4];
    assert_int_equal(start_all(f, got, 4), 2);
    sched_exited(f->p, bad, SCHED_EXIT_FAILED, "no", 0);
    assert_int_equal(sched_next(f->p, 0), -1); /* src still runs */
    sched_exited(f->p, src, SCHED_EXIT_OK, NULL, 0);
    assert_int_equal(sched_next(f->p, 0), (long)m);
    sched_free(f->p);
    free(f);
}

static void test_over_must_be_a_direct_upstream(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    add(f, "a", -1, -1);
    size_t b = add(f, "b", -1, -1);
    size_t m = add(f, "m", 0, -1);
    make_map(f, m, b, 0, 0);
    sched_plan *p = NULL;
    assert_int_equal(sched_new(f->defs, f->n, 4, 1, NULL, NULL, &p), -EINVAL);
    free(f);
}

static void test_empty_map_is_joined_at_once(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1);
    make_map(f, m, src, 2, 0);
    start(f, 8);
    run_ok(f, src);
    assert_int_equal(sched_next(f->p, 0), (long)m);
    assert_int_equal(sched_expand(f->p, m, 0), 0);
    assert_int_equal(sched_next_joined(f->p), (long)m);
    const char *why;
    assert_int_equal(sched_map_outcome(f->p, m, &why), SCHED_EXIT_OK);
    sched_exited(f->p, m, SCHED_EXIT_OK, NULL, 0);
    assert_true(sched_done(f->p));
    sched_free(f->p);
    free(f);
}

/* A map node that cannot expand (its upstream's result is not an array) fails at once. */
static void test_map_failed_before_expansion_fails_without_retry(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1);
    make_map(f, m, src, 0, 0);
    f->defs[m].retries = 3;
    start(f, 8);
    run_ok(f, src);
    assert_int_equal(sched_next(f->p, 0), (long)m);
    sched_exited(f->p, m, SCHED_EXIT_FAILED, "not an array", 0);
    assert_int_equal(sched_task_state(f->p, m), SCHED_FAILED);
    assert_true(sched_done(f->p));
    sched_free(f->p);
    free(f);
}

/* The drain cancels children not started; running ones end as the driver reports; the map is
 * then CANCELLED. */
static void test_drain_cancels_children_and_the_map(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1), d = add(f, "d", 1, -1);
    make_map(f, m, src, 2, 0);
    start(f, 8);
    run_ok(f, src);
    assert_int_equal(sched_next(f->p, 0), (long)m);
    assert_int_equal(sched_expand(f->p, m, 6), 0);
    long got[8];
    assert_int_equal(start_all(f, got, 8), 2);
    sched_drain(f->p, "Worker shutdown requested via SIGTERM");
    assert_int_equal(sched_task_state(f->p, 5), SCHED_CANCELLED);
    assert_int_equal(sched_task_state(f->p, d), SCHED_CANCELLED);
    assert_int_equal(sched_next_joined(f->p), -1);
    sched_exited(f->p, 3, SCHED_EXIT_OK, NULL, 0);
    assert_int_equal(sched_task_state(f->p, 5), SCHED_CANCELLED); /* nothing released */
    sched_exited(f->p, 4, SCHED_EXIT_CANCELLED, "killed", 0);
    assert_int_equal(sched_next_joined(f->p), (long)m);
    const char *why;
    assert_int_equal(sched_map_outcome(f->p, m, &why), SCHED_EXIT_CANCELLED);
    assert_string_equal(why, "5 of 6 children were cancelled");
    sched_exited(f->p, m, SCHED_EXIT_CANCELLED, why, 0);
    assert_true(sched_done(f->p));
    sched_free(f->p);
    free(f);
}

/* 1000 children through a bound of 8, finishing in reverse order of start within each batch:
 * the bound holds at every step and every child runs once. */
static void test_thousand_children_respect_the_bound(void **state)
{
    (void)state;
    fx *f = calloc(1, sizeof *f);
    size_t src = add(f, "src", -1, -1), m = add(f, "m", 0, -1);
    make_map(f, m, src, 8, 0);
    start(f, 64);
    run_ok(f, src);
    assert_int_equal(sched_next(f->p, 0), (long)m);
    assert_int_equal(sched_expand(f->p, m, 1000), 0);
    long got[64];
    size_t ended = 0;
    for (int round = 0; round < 2000 && ended < 1000; round++) {
        size_t k = start_all(f, got, 64);
        assert_true(sched_running(f->p) - 1 <= 8);
        for (size_t j = k; j-- > 0;) {
            sched_exited(f->p, (size_t)got[j], SCHED_EXIT_OK, NULL, 0);
            ended++;
        }
    }
    assert_int_equal(ended, 1000);
    assert_int_equal(sched_next_joined(f->p), (long)m);
    sched_free(f->p);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_expands_into_named_children_bounded_by_max_parallel),
        cmocka_unit_test(test_children_count_against_the_global_limit_and_the_map_node_does_not),
        cmocka_unit_test(test_a_failed_child_is_retried_on_its_own),
        cmocka_unit_test(test_allow_failures_decides_the_map_and_downstream_skips),
        cmocka_unit_test(test_map_is_skipped_when_its_over_upstream_did_not_succeed),
        cmocka_unit_test(test_map_waits_for_its_over_upstream_whatever_the_rule),
        cmocka_unit_test(test_over_must_be_a_direct_upstream),
        cmocka_unit_test(test_empty_map_is_joined_at_once),
        cmocka_unit_test(test_map_failed_before_expansion_fails_without_retry),
        cmocka_unit_test(test_drain_cancels_children_and_the_map),
        cmocka_unit_test(test_thousand_children_respect_the_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
