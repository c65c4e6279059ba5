/* durable.h - durable runs inside the agent (issue 10, contract section 10), shared by
 * durable_results.c (a task's result stored before it counts as SUCCEEDED), resume.c (task hashes,
 * reuse of an earlier run's tasks), cancel.c (a requested cancel ends the run CANCELLED) and
 * itemread.c (reading run and task-run items back from the status store). Not a public
 * interface; the hooks into tasks.c and run.c are the agent__durable_* / agent__result_* /
 * agent__cancel_* calls below.
 *
 * Lifetimes: run_state.durable is allocated by agent__durable_begin() and freed by
 * agent__durable_free() (from agent__tasks_free, in teardown). Every asynchronous job here
 * (hashing on the thread pool, S3 transfers) counts itself in run_state.pending, so the finish
 * waits (bounded) for it; a job whose run moved on meanwhile only frees itself. */
#ifndef DAGY_DURABLE_H
#define DAGY_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>

#include "agent/log.h"
#include "agent/run.h"
#include "proto/taskhash.h"

typedef struct result_job result_job;

/* A map child "MAP[k]" that SUCCEEDED in the source chain (resume.c): its result is fetched
 * and verified before the DAG starts; the map's expansion reuses it if its task_hash matches. */
typedef struct {
    cJSON *item;   /* the source item (owned until a child takes it) */
    char *src_run; /* the run that ran it and holds its result */
    size_t index;  /* k */
    int depth;     /* position of its run in the chain: the nearest wins */
    bool ok;       /* its result verified and staged (or it stored none) */
} durable_kid;

/* One task's reuse decision and what it came from. */
typedef struct {
    cJSON *src_item;   /* the SUCCEEDED item found in the source chain (owned), or NULL */
    char *src_run;     /* the run that ran it and holds its result */
    bool reuse;        /* decided: not run, recorded SUCCEEDED with reused_from */
    bool has_result;   /* the source stored a result (it was fetched into results/) */
    result_job *store; /* durable_results.c: the store in flight for the running attempt */
    durable_kid *kids; /* a map not reused whole: its children found in the chain */
    size_t n_kids, cap_kids;
} durable_task;

struct agent_durable {
    char (*hashes)[PROTO_HASH_HEX]; /* task_hash per task */
    char code_digest[PROTO_HASH_HEX];
    durable_task *tasks;
    bool ready; /* hashes computed and the resume source applied: the DAG may start */
    size_t n_reused;
    int fetching;    /* reused results still being fetched */
    char *stage_dir; /* RUN_DIR/reuse.UUID: fetched results until the exec tree exists */
    size_t kid_maps; /* maps whose staged children wait for the expansion (keep stage_dir) */
    /* cancel.c */
    int cancel_state;  /* 0 not checked, 1 reading, 2 answered */
    char *cancel_text; /* "UserInitiated: REASON" once a requested cancel is known */
    bool deferred;     /* agent__finish waits for the cancel read */
    int deferred_exit;
    char *deferred_error;
    uv_timer_t *cancel_timer;
};

/* ---- resume.c ---- */

/* Called first thing in agent__execute(): computes the code digest and every task_hash, loads
 * the resume source chain and fetches the results to reuse. Returns true when it took over: it
 * calls agent__execute() again once done (then returns false), or agent__finish() on failure. */
bool agent__durable_begin(run_state *r);
/* Marks the reused tasks in the plan (after run_start). */
void agent__durable_apply(run_state *r);
/* Map i was expanded into children first..first+n-1 (hashed): marks every child whose source
 * item has the same task_hash and a verified result reused (its result placed in results/),
 * when the map's upstream tasks are all reused. */
void agent__durable_map_reuse(run_state *r, size_t i, size_t first, size_t n);
/* Shared by resume.c and resume_map.c. The non-empty string member k of item o, or NULL. */
const char *agent__resume_str(const cJSON *o, const char *k);
/* Shared by resume.c and resume_map.c. The staging file of task (or map child) `name`; moving it
 * to task i's results/ file (false, logged, if it cannot be); removing the staging directory. */
char *agent__resume_stage_path(run_state *r, const char *name);
bool agent__resume_place_staged(run_state *r, const char *name, size_t i);
void agent__resume_unstage(agent_durable *d);
/* resume_map.c: the map task index of a child name "MAP[k]" (k in *k), else -1; keeping a
 * source child item (`depth`: its run's place in the chain); keeping the nearest per index;
 * freeing a map's kept children (with unstage: their staged results too). */
long agent__resume_kid_of(const run_state *r, const char *name, size_t *k);
void agent__resume_kid_add(run_state *r, int depth, size_t m, size_t k, const cJSON *it,
                           const char *src_run);
void agent__resume_kids_dedupe(run_state *r);
void agent__resume_kids_free(run_state *r, durable_task *t, bool unstage);
/* Sets task_hash on a task's item when it is created. */
void agent__durable_item(run_state *r, size_t i, cJSON *item);
/* The PENDING -> SUCCEEDED transition of a reused task: fills its item (reused_from, result
 * attributes of the source) and returns its log line (task_reused) for the caller to end. */
log_line *agent__durable_reused(run_state *r, size_t i, cJSON *item);
void agent__durable_free(run_state *r);

/* ---- durable_results.c ---- */

/* The stored (validated) result of task i, results.c's agent__task_file(AGENT_DIR_RESULTS),
 * made absolute: what inputs are built from and what is uploaded. Caller frees. */
char *agent__result_file(run_state *r, size_t i);
/* Where results go: the results bucket (DAGY_RESULTS_BUCKET, default DAGY_TRACES_BUCKET), or
 * NULL for the run directory only. */
const char *agent__results_bucket(const run_state *r);
/* Stores the result of task i's successful attempt (hash, then upload to S3 or record the local
 * file). Returns 1 when the store is under way (it ends the attempt through
 * agent__attempt_end(): SUCCEEDED with the result attributes on the item, or FAILED "cannot
 * store the result ..."), 0 when there is nothing to do. */
int agent__result_store(run_state *r, size_t i);
/* The drain expired: stores still in flight end their attempts CANCELLED now. */
void agent__results_abandon(run_state *r);

/* ---- cancel.c ---- */

/* First SIGTERM/SIGINT: reads the run item once (bounded) for cancel_requested_at. */
void agent__cancel_check(run_state *r);
/* In agent__finish(): true if the finish must wait for that read (it calls agent__finish
 * again with the same arguments when the answer comes or the wait is over). */
bool agent__cancel_defer(run_state *r, int exit_code, const char *error);
/* "UserInitiated: REASON" if a cancel was requested and the run ends by the signal; else
 * NULL. */
const char *agent__cancel_text(const run_state *r);

/* ---- itemread.c ---- */

/* Answer of a read: rc 0 with the run item (NULL if absent) and, when asked, an array of its
 * task-run items (plain JSON values, owned by the callee: copy what you keep); rc < 0 with err
 * on failure. */
typedef void (*agent_read_cb)(void *ud, int rc, const char *err, const cJSON *run_item,
                              const cJSON *task_items);
/* Reads run `run_id` (and its task-run items if with_tasks) from the run's status backend:
 * the state directory (local) or DynamoDB (GetItem, Query; consistent reads). The callback
 * runs exactly once, possibly before this returns (local). */
void agent__read_run(run_state *r, const char *run_id, bool with_tasks, agent_read_cb cb, void *ud);

/* ---- tasks.c ---- */

/* Ends the running attempt of task i as the plan's `how` (sched_exited), recycles its inputs
 * file and pumps the DAG. */
void agent__attempt_end(run_state *r, size_t i, sched_exit how, const char *err);

#endif
