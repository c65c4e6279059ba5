/* sched.h - the DAG plan: task-run state machine, readiness, retries, timeouts and trigger rules.
 *
 * Pure logic: no libuv, no clock reads, no processes, no I/O. The driver (agent/run.c, or a fake
 * runner in tests) feeds it events stamped with a time in milliseconds it chooses, asks which task
 * to start next, and is told of every state transition through one callback. */
#ifndef DAGY_SCHED_H
#define DAGY_SCHED_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Task-run states (contract section 4). */
typedef enum {
    SCHED_PENDING = 0, /* waiting for upstream tasks */
    SCHED_RUNNING,     /* an attempt is running */
    SCHED_RETRYING,    /* an attempt failed; waiting out the retry delay */
    SCHED_SUCCEEDED,   /* terminal */
    SCHED_FAILED,      /* terminal: the last attempt failed */
    SCHED_SKIPPED,     /* terminal: the trigger rule can no longer be met */
    SCHED_CANCELLED,   /* terminal: cancelled by a drain */
} sched_state;

typedef enum {
    SCHED_ALL_SUCCESS = 0,
    SCHED_ALL_DONE,
    SCHED_ONE_FAILED,
    SCHED_NONE_FAILED,
} sched_trigger;

/* Why a SKIPPED task was skipped. To its downstream tasks' trigger rules a task skipped because
 * of a failure counts as FAILED, one skipped because of a cancellation as CANCELLED, and one
 * skipped because its rule was not met (no failure anywhere) as neither: Airflow's
 * upstream_failed / skipped distinction, without a separate status (contract section 4). */
typedef enum {
    SCHED_SKIP_NONE = 0,           /* not skipped */
    SCHED_SKIP_TRIGGER_RULE,       /* the rule could not be met, and nothing failed */
    SCHED_SKIP_UPSTREAM_FAILED,    /* an upstream task failed (directly or further up) */
    SCHED_SKIP_UPSTREAM_CANCELLED, /* an upstream task was cancelled (directly or further up) */
} sched_skip_cause;

/* How an attempt ended, as the driver reports it. */
typedef enum {
    SCHED_EXIT_OK = 0,    /* exit status 0 */
    SCHED_EXIT_FAILED,    /* non-zero exit, signal, spawn failure */
    SCHED_EXIT_TIMED_OUT, /* killed after sched told the driver the attempt timed out */
    SCHED_EXIT_CANCELLED, /* killed by the drain */
    SCHED_EXIT_FATAL,     /* could not start, and no retry can change that: FAILED at once */
} sched_exit;

/* One task as the plan needs it. Strings are copied by sched_new(). */
typedef struct {
    const char *name;
    const size_t *upstream; /* indices into the task array */
    size_t n_upstream;
    sched_trigger trigger;
    int retries;                    /* extra attempts after the first */
    double retry_delay_seconds;     /* delay before attempt 2 */
    double retry_backoff;           /* multiplier per further attempt */
    double retry_max_delay_seconds; /* cap */
    bool retry_jitter;              /* full jitter: uniform in [0, delay] */
    double timeout_seconds;         /* per attempt; <= 0 means none */
    /* Dynamic fan-out ("map"): the task runs once per element of its upstream `map_over`'s
     * result, as children the driver creates with sched_expand(). The scheduling fields above
     * apply to each child; the map node itself has no timeout and one attempt. */
    bool map;
    size_t map_over;        /* index of a direct upstream task (one of `upstream`) */
    int map_max_parallel;   /* children running at once; <= 0: no bound of its own */
    int map_allow_failures; /* failed children tolerated; the map fails with one more */
} sched_task_def;

typedef struct sched_plan sched_plan;

/* Called for every state change of a task, in order. `reason` is a human-readable cause for
 * SKIPPED ("upstream failed: \"x\" is FAILED (trigger_rule all_success)", "upstream failed:
 * \"y\" was skipped because \"x\" FAILED (...)", "trigger_rule one_failed not met: ...";
 * sched_task_skip_cause() is already set when it is called), FAILED/RETRYING (the attempt's
 * error as the driver reported it, or "exceeded timeout of N s[: error]" for a timed-out attempt)
 * and CANCELLED; NULL otherwise. `reason` is valid only during the call. Must not call back into
 * the plan except through the read-only accessors. No transition happens inside sched_new(). */
typedef void (*sched_transition_cb)(void *ud, size_t task, sched_state from, sched_state to,
                                    const char *reason);

/* Creates a plan. The definitions must already be validated (acyclic, indices in range).
 * max_parallel >= 1. seed drives the jitter PRNG (same seed, same delays). Returns 0 or -errno;
 * *out is owned by the caller and freed with sched_free(). */
int sched_new(const sched_task_def *defs, size_t n, int max_parallel, uint64_t seed,
              sched_transition_cb cb, void *ud, sched_plan **out);
void sched_free(sched_plan *p);

/* Returns the index of the next task to start (lowest spec index among ready tasks) and marks it
 * RUNNING with attempt+1, or -1 if nothing may start now (none ready, max_parallel reached, or
 * draining). The driver calls it in a loop until -1. `now_ms` stamps the attempt start, from which
 * the attempt's timeout deadline is computed. */
long sched_next(sched_plan *p, uint64_t now_ms);

/* The driver reports that the running attempt of `task` ended. `error` (may be NULL on success)
 * becomes the transition reason. Leads to SUCCEEDED, RETRYING (ready again at now + delay), FAILED
 * or CANCELLED, and may cascade SKIPPED/ready to downstream tasks. */
void sched_exited(sched_plan *p, size_t task, sched_exit how, const char *error, uint64_t now_ms);

/* Earliest time (ms) at which sched_tick() has something to do: a retry delay ending or a running
 * attempt's timeout. UINT64_MAX if none. */
uint64_t sched_next_deadline(const sched_plan *p);

/* Advances time: RETRYING tasks whose delay has passed become eligible (they stay RETRYING until
 * sched_next() starts them); for each running attempt whose timeout passed, calls
 * on_timeout(ud, task) exactly once per attempt so the driver can kill it (it then reports
 * SCHED_EXIT_TIMED_OUT through sched_exited). on_timeout may be NULL. */
void sched_tick(sched_plan *p, uint64_t now_ms, void (*on_timeout)(void *ud, size_t task),
                void *ud);

/* Starts the drain: nothing new starts, no retries; PENDING and RETRYING tasks become CANCELLED
 * at once (reason given). Running attempts continue until the driver reports them. */
void sched_drain(sched_plan *p, const char *reason);

/* Marks a PENDING task SUCCEEDED without running it (attempt stays 0): its result comes from an
 * earlier run (resume). Call before the first sched_next(). The transition callback sees
 * PENDING -> SUCCEEDED, and downstream tasks count it as any success. Returns 0, or -EINVAL if
 * the task is not PENDING. */
int sched_mark_reused(sched_plan *p, size_t task);

/* Counts `attempts` attempts of a PENDING task as already made elsewhere, so that its next start
 * is attempt attempts+1 (an ECS child running attempt N of its parent's task: agent/ecs_exec.c).
 * Returns 0, or -EINVAL if the task is not PENDING or no attempt would be left. */
int sched_set_attempts(sched_plan *p, size_t task, int attempts);

/* The running attempt's process ended and the driver is completing it (e.g. storing its
 * result): the task stays RUNNING until sched_exited(), but no longer counts against
 * max_parallel and can no longer time out. Idempotent. */
void sched_finishing(sched_plan *p, size_t task);

/* ---- dynamic fan-out (map) ----
 *
 * A map node becomes ready like any task, except that it also waits for its `map_over` upstream
 * to SUCCEEDED whatever its trigger rule (a map needs the array), and is SKIPPED when that
 * upstream ends otherwise. sched_next() returns it like any task (RUNNING, attempt 1, holding
 * no max_parallel slot and no timeout); the driver then reads the upstream's result and calls
 * sched_expand() with the number of elements (or sched_exited() FAILED/FATAL for a bad one).
 * Children get indices sched_count() .. sched_count() + n - 1, names "NAME[k]", the map's
 * scheduling fields, no upstream or downstream edges; at most map_max_parallel of them are
 * released into the ready queue at a time (a child waiting out a retry delay keeps its place),
 * and they count against the global max_parallel like any task. When every child is terminal,
 * the map node is "joined": sched_next_joined() returns it, and the driver completes it (result
 * of the children, then sched_exited() with sched_map_outcome()'s verdict). The drain cancels
 * children that have not started; a map whose children were cancelled ends CANCELLED. */

/* Expands the RUNNING, not yet expanded map node `task` into n children (n may be 0: the node
 * is joined at once). Grows the plan (the one allocation after sched_new(); indices of existing
 * tasks do not change). Must not be called from the transition callback. Returns 0, -EINVAL
 * (not a map node, not RUNNING, already expanded, too many tasks) or -ENOMEM (the plan is
 * unchanged). */
int sched_expand(sched_plan *p, size_t task, size_t n);
/* Pops a joined map node (every child terminal, not yet completed), or -1. */
long sched_next_joined(sched_plan *p);
/* The verdict on a joined map node: SCHED_EXIT_CANCELLED if a child was cancelled, else
 * SCHED_EXIT_FAILED if more than map_allow_failures children failed, else SCHED_EXIT_OK.
 * *reason (valid until the next call into the plan) says why for the first two, e.g. "3 of 50
 * children failed (allow_failures 2); the first was \"m[7]\"" (that child's own item holds
 * its error); NULL for OK. */
sched_exit sched_map_outcome(sched_plan *p, size_t task, const char **reason);
/* Map structure accessors. sched_task_is_map: the task is a map node. sched_task_parent: the
 * map node of a child, or -1. sched_task_map_index: a child's element index (0-based).
 * sched_map_children: first child index and count once expanded (false before). */
bool sched_task_is_map(const sched_plan *p, size_t task);
long sched_task_parent(const sched_plan *p, size_t task);
size_t sched_task_map_index(const sched_plan *p, size_t task);
bool sched_map_children(const sched_plan *p, size_t task, size_t *first, size_t *n);
/* Counts of a map node's children that FAILED so far (for messages and tests). */
size_t sched_map_failed(const sched_plan *p, size_t task);
/* Most children one map may have (the plan's indices are 32-bit). */
#define SCHED_MAX_CHILDREN 1000000u

/* True when every task is in a terminal state. */
bool sched_done(const sched_plan *p);

/* Accessors. */
size_t sched_count(const sched_plan *p);
sched_state sched_task_state(const sched_plan *p, size_t task);
int sched_task_attempt(const sched_plan *p, size_t task);      /* attempts started so far */
int sched_task_max_attempts(const sched_plan *p, size_t task); /* retries + 1 */
const char *sched_task_name(const sched_plan *p, size_t task); /* the plan's copy */
size_t sched_running(const sched_plan *p);
/* Why `task` was skipped (SCHED_SKIP_NONE unless it is SKIPPED). */
sched_skip_cause sched_task_skip_cause(const sched_plan *p, size_t task);
/* "trigger_rule", "upstream_failed", "upstream_cancelled" (NULL for SCHED_SKIP_NONE): the
 * task-run item's skip_reason. */
const char *sched_skip_cause_name(sched_skip_cause c);
/* Counts of tasks currently in `state`. */
size_t sched_count_in(const sched_plan *p, sched_state state);
/* Delay in ms the plan chose for the retry now pending for `task` (0 if none). For logs/tests. */
uint64_t sched_retry_delay_ms(const sched_plan *p, size_t task);
/* Bytes the plan allocated at sched_new(). Nothing is allocated while running, except that the
 * reason buffer grows for a timeout reason with a long error (not counted). For tests. */
size_t sched_footprint(const sched_plan *p);

/* Pure helpers, exposed for tests and docs: the contract's backoff before attempt n+1
 * (n >= 1 is the failed attempt), before jitter, in seconds. */
double sched_backoff_seconds(const sched_task_def *d, int n);
const char *sched_state_name(sched_state s); /* "PENDING", "RUNNING", ... */
bool sched_state_terminal(sched_state s);
/* Parses "all_success" etc.; returns 0 or -EINVAL. */
int sched_trigger_parse(const char *s, sched_trigger *out);
const char *sched_trigger_name(sched_trigger t);

#endif
