/* test_sched_reuse.c - the plan's two hooks for durable runs: sched_mark_reused (a task done in
 * an earlier run counts as SUCCEEDED without running) and sched_finishing (an attempt whose
 * process ended while its result is being stored frees its max_parallel slot and its timeout,
 * but downstream tasks wait until it is SUCCEEDED). */
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

typedef struct {
    char log[2048];
    size_t len;
    sched_plan *p;
} rec;

static void on_transition(void *ud, size_t task, sched_state from, sched_state to,
                          const char *reason)
{
    rec *r = ud;
    r->len += (size_t)snprintf(r->log + r->len, sizeof r->log - r->len, "%s %s->%s#%d\n",
                               sched_task_name(r->p, task), sched_state_name(from),
                               sched_state_name(to), sched_task_attempt(r->p, task));
}

/* a -> b -> c, plus d and e without upstream; max_parallel 1. */
static sched_plan *chain(rec *r, int max_parallel, double timeout)
{
    static const size_t up_a[] = {0}, up_b[] = {1};
    sched_task_def defs[5] = {
        {.name = "a"},
        {.name = "b", .upstream = up_a, .n_upstream = 1},
        {.name = "c", .upstream = up_b, .n_upstream = 1},
        {.name = "d"},
        {.name = "e"},
    };
    for (int i = 0; i < 5; i++)
        defs[i].timeout_seconds = timeout;
    memset(r, 0, sizeof *r);
    assert_int_equal(sched_new(defs, 5, max_parallel, 1, on_transition, r, &r->p), 0);
    return r->p;
}

static void test_reused_tasks_succeed_without_running_and_release_downstream(void **state)
{
    rec r;
    sched_plan *p = chain(&r, 1, 0);
    assert_int_equal(sched_mark_reused(p, 0), 0);
    assert_int_equal(sched_mark_reused(p, 1), 0);
    assert_int_equal(sched_task_attempt(p, 0), 0);
    assert_int_equal(sched_task_state(p, 1), SCHED_SUCCEEDED);
    /* c is ready (its upstream b succeeded); spec order: c, d, e */
    assert_int_equal(sched_next(p, 0), 2);
    assert_int_equal(sched_next(p, 0), -1); /* max_parallel 1 */
    sched_exited(p, 2, SCHED_EXIT_OK, NULL, 1);
    assert_int_equal(sched_next(p, 1), 3);
    sched_exited(p, 3, SCHED_EXIT_OK, NULL, 2);
    assert_int_equal(sched_next(p, 2), 4);
    sched_exited(p, 4, SCHED_EXIT_OK, NULL, 3);
    assert_true(sched_done(p));
    assert_int_equal(sched_count_in(p, SCHED_SUCCEEDED), 5);
    assert_string_equal(r.log, "a PENDING->SUCCEEDED#0\n"
                               "b PENDING->SUCCEEDED#0\n"
                               "c PENDING->RUNNING#1\n"
                               "c RUNNING->SUCCEEDED#1\n"
                               "d PENDING->RUNNING#1\n"
                               "d RUNNING->SUCCEEDED#1\n"
                               "e PENDING->RUNNING#1\n"
                               "e RUNNING->SUCCEEDED#1\n");
    sched_free(p);
}

static void test_reuse_refused_unless_pending(void **state)
{
    rec r;
    sched_plan *p = chain(&r, 2, 0);
    assert_int_equal(sched_next(p, 0), 0);
    assert_int_equal(sched_mark_reused(p, 0), -EINVAL); /* running */
    assert_int_equal(sched_mark_reused(p, 99), -EINVAL);
    assert_int_equal(sched_mark_reused(p, 3), 0);
    assert_int_equal(sched_mark_reused(p, 3), -EINVAL); /* already terminal */
    sched_free(p);
}

static void test_finishing_frees_the_slot_but_holds_downstream(void **state)
{
    rec r;
    sched_plan *p = chain(&r, 1, 0);
    assert_int_equal(sched_next(p, 0), 0);
    assert_int_equal(sched_next(p, 0), -1);
    sched_finishing(p, 0);
    sched_finishing(p, 0); /* idempotent */
    assert_int_equal(sched_task_state(p, 0), SCHED_RUNNING);
    assert_int_equal(sched_next(p, 0), 3); /* d takes the freed slot; b still waits for a */
    assert_int_equal(sched_next(p, 0), -1);
    sched_exited(p, 0, SCHED_EXIT_OK, NULL, 5);
    assert_int_equal(sched_next(p, 5), -1); /* d holds the only slot */
    sched_exited(p, 3, SCHED_EXIT_OK, NULL, 6);
    assert_int_equal(sched_next(p, 6), 1); /* b */
    sched_free(p);
}

static void test_finishing_attempt_cannot_time_out(void **state)
{
    rec r;
    sched_plan *p = chain(&r, 2, 1.0);
    assert_int_equal(sched_next(p, 0), 0);
    assert_int_equal(sched_next(p, 0), 3);
    sched_finishing(p, 0);
    assert_int_equal(sched_next_deadline(p), 1000); /* only d's timeout is left */
    sched_tick(p, 5000, NULL, NULL);
    sched_exited(p, 0, SCHED_EXIT_FAILED, "cannot store the result", 5000);
    assert_int_equal(sched_task_state(p, 0), SCHED_FAILED);
    sched_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reused_tasks_succeed_without_running_and_release_downstream),
        cmocka_unit_test(test_reuse_refused_unless_pending),
        cmocka_unit_test(test_finishing_frees_the_slot_but_holds_downstream),
        cmocka_unit_test(test_finishing_attempt_cannot_time_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
