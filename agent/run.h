/* run.h - internals shared by the run lifecycle's files (run.c: phases, signals, finish;
 * prepare.c: artifact and packages; tasks.c: the DAG driver). Not a public interface. */
#ifndef DAGY_RUN_H
#define DAGY_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "agent/agent.h"
#include "agent/cost.h"
#include "agent/status.h"
#include "fetch/aws.h"
#include "proto/flowspec.h"
#include "sandbox/sbx.h"
#include "scheduler/sched.h"

/* Phases of a run, in order. Every change goes through agent__set_phase(). */
typedef enum {
    RUN_STARTING = 0, /* reading the stored run item, writing RUNNING: nothing runs before */
    RUN_PREPARING,    /* downloading, unpacking, installing packages, loading the spec */
    RUN_EXECUTING,    /* the DAG is running (and possibly draining) */
    RUN_FINISHING,    /* final status written, waiting for uploads and the status flush */
    RUN_DONE,         /* the loop may stop */
} run_phase;

/* Per-task runtime state (the plan holds the scheduling state). */
typedef struct run_state run_state;
typedef struct agent_durable agent_durable; /* durable runs: agent/durable.h */

/* r->tasks is indexed like the plan: the spec's tasks first, then map children as they are
 * created (map.c). The array is reallocated when a map expands: keep an index, never an
 * `agent_task *`, across a callback or a pump. */
typedef struct {
    run_state *run;
    size_t index;            /* in the plan (and in the spec for the spec's own tasks) */
    const flowspec_task *ft; /* what it runs: &spec->tasks[index], or a map child's `own` */
    flowspec_task *own;      /* a map child's rendered task (map.c), freed with the tasks */
    cJSON *item;             /* the task-run status item, created at first start or terminal */
    sbx_proc *proc;          /* the running attempt, or NULL */
    uint64_t first_start_ms, attempt_start_ms;
    int exit_code;     /* of the last attempt, -1 if none */
    int uploads;       /* trace uploads in flight (they add trace_s3_uri to the item) */
    int trace_attempt; /* attempt whose trace trace_s3_uri names (0: none yet) */
    double duration;   /* seconds from first start to end, once terminal */
    bool timed_out;    /* the plan said the running attempt timed out */
    bool infra;        /* the last attempt failed because an internal write or read failed */
    char *inputs;      /* the running attempt's DAGY_TASK_INPUTS file, or NULL */
    bool cancelled;    /* the drain killed the running attempt */
    bool has_result;   /* its result is stored in results/ (never probed on disk for) */
    char task_run_id[40];
    struct ecs_child *ecs; /* the attempt running as its own ECS task (ecs_exec.c), or NULL */
    bool adopted; /* an ECS child wrote this task's terminal item: the parent writes it no more */
    bool ran;     /* child mode: the one attempt was started */
} agent_task;

struct run_state {
    agent_config *cfg;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_work_t pool_start; /* starts the thread pool with every signal blocked (run.c) */
    uv_timer_t sched_timer, drain_timer, heartbeat_timer;
    sbx_ctx *sbx;
    fetch_aws *aws; /* NULL when the run needs no AWS at all */
    status_store *status;
    struct prep *prep; /* prepare.c's state while it exists */
    cJSON *run_item;
    run_phase phase;

    char *run_dir;             /* WORK_DIR/RUN_ID: downloads, unpacked flow and packages, results */
    int run_dir_lock;          /* shared flock on run_dir while the run lives (prune.c), or -1 */
    char *flow_dir;            /* the unpacked flow (or the user's directory) */
    char flow_code_digest[65]; /* computed while unpacking it (unpack_stats), or "": walk it */
    char **dep_dirs;           /* unpacked dependency packages, NULL-terminated */
    cJSON *metadata;           /* metadata.json, or NULL */
    char *external_id;
    flowspec *spec;
    sched_plan *plan;
    agent_task *tasks;
    char **base_env; /* the environment every task starts from, NULL-terminated */
    size_t n_base_env;
    char *runner;   /* path of dagy_runner.py */
    char *exec_dir; /* RUN_DIR/exec/INSTANCE: this agent's task files (results.c) */
    int exec_fd[3]; /* its out/, in/, results/ (O_PATH), when exec_fds; else paths are used */
    bool exec_fds;
    bool infra_failed;   /* a task failed for good because of an infrastructure error */
    char **spare_inputs; /* inputs files of ended attempts, for reuse (results.c) */
    size_t n_spare_inputs, cap_spare_inputs;

    uint64_t started_ms, finish_ms;
    int signals; /* SIGTERM/SIGINT received so far */
    const char *stop_signal;
    bool drain_expired;
    int pending; /* uploads and other I/O the finish must wait for */
    int exit_code;
    char *error;              /* the run's error_message, or NULL */
    const char *final_status; /* what the run item's last write says (run_end's status) */
    double duration;          /* seconds, fixed when the run finished */
    int unwritten;            /* items the final flush could not write */
    uv_timer_t start_timer;   /* bounds RUN_STARTING */
    bool first_trace_sent;
    agent_durable *durable;  /* task hashes, resume, result stores, cancel (durable.h) */
    agent_cost_profile cost; /* from the ECS task metadata (agent__cost_metadata) */
    agent_cost_rates rates;
    bool cost_known;
    double cost_usd;       /* estimated_cost_usd, fixed when the run finished; < 0: none */
    struct agent_ecs *ecs; /* the per-task ECS executor (ecs_exec.c), NULL until used */
    uv_timer_t ecs_poll_timer, ecs_launch_timer;
    long only_index; /* child mode (DAGY_ONLY_TASK): the plan task to run (-1 until known: a
                        map instance exists once its map expanded), else -1 */
    long only_spec;  /* child mode: the spec task (the map, for an instance NAME[k]) */
};

/* run.c */
void agent__set_phase(run_state *r, run_phase p);
/* Ends the run: final run item, run_end line, uploads, flush. exit_code and error chosen by the
 * caller (error may be NULL). */
void agent__finish(run_state *r, int exit_code, const char *error);
/* Starts the DAG once preparation is done (called by prepare.c). */
void agent__execute(run_state *r);
/* The ECS task metadata answer (NULL if the fetch failed: `why`) gives the cost profile;
 * container mode only. A missing or wrong field: a warning, no cost (never a failed run). */
void agent__cost_metadata(run_state *r, const cJSON *task, const char *why);
/* Marks the run item with a key=value and schedules a write. */
void agent__run_set(run_state *r, const char *key, const char *val);

/* prune.c: DAGY_KEEP_RUNS. hold: takes the live-run lock on r->run_dir (after creating it);
 * prune: at the end of a run, removes old run directories (work dir, local state dir). */
void agent__hold_run_dir(run_state *r);
/* True if a live agent on this machine holds the work directory of run c->run_id. */
bool agent__run_dir_busy(const agent_config *c);
void agent__prune_runs(run_state *r);

/* prepare.c: fetches and unpacks everything, loads the spec; calls agent__execute() or
 * agent__finish(). */
void agent__prepare(run_state *r);
/* A signal during preparation: unpacks stop at their next block (their partial directories
 * removed), pip is terminated. The jobs still settle through their callbacks. */
void agent__prepare_cancel(run_state *r);
/* Teardown, once every handle is closing: waits for the work still on the thread pool (unpacks,
 * download checksums: cancelled, they stop at their next block), then frees what preparation
 * left. */
void agent__prepare_teardown(run_state *r);
/* What to mount when `err` (EACCES, EPERM, EROFS) says the directory `what` (e.g. "DAGY_WORK_DIR
 * /tmp/dagy") is not writable (a read-only root, a root-owned volume): "; WHAT must be writable
 * by uid N: mount ...", written to buf; "" (buf untouched) for any other error. */
const char *agent__unwritable_hint(int err, const char *what, char *buf, size_t n);
/* Reads and validates the spec of r->flow_dir with the run's variables; returns 0 or an exit
 * code with err set. */
int agent__load_spec(run_state *r, char *err);

/* map.c: dynamic fan-out. expand: the map node i was started by the plan: split its `over`
 * upstream's result into children (or fail it). complete: the plan joined map node i (every
 * child ended): store the array of their results and end it. */
void agent__map_expand(run_state *r, size_t i);
void agent__map_complete(run_state *r, size_t i);

/* tasks.c: the DAG driver. */
int agent__tasks_init(run_state *r, char *err);
void agent__tasks_pump(run_state *r);  /* start what may start, re-arm the deadline timer */
void agent__tasks_drain(run_state *r); /* SIGTERM: stop starting, cancel pending */
void agent__tasks_kill(run_state *r);  /* drain expired: terminate running groups */
void agent__tasks_free(run_state *r);
/* Grows r->tasks (and the durable per-task arrays) to n entries, the new ones zeroed. 0 or
 * -ENOMEM (nothing changed but capacity). */
int agent__tasks_grow(run_state *r, size_t n);
/* Writes DAGY_KWARGS_FILE of a callable task whose kwargs do not fit the environment. 0 or an
 * exit code with err. */
int agent__write_kwargs_file(run_state *r, const flowspec_task *ft, char *err);
/* Uploads a failure trace of task `i` to the traces bucket (if set); sets trace_s3_uri on the
 * task's item (and on the run item for the run's first failure). */
void agent__upload_trace(run_state *r, size_t i, int attempt, const char *trace, size_t len);
/* Hands a terminal task's item back to the status store once nothing will change it again. */
void agent__release_task(run_state *r, size_t i);

/* tasks.c: the DAG starts (phase EXECUTING, run_start, first pump) once everything before it
 * is ready; agent__execute() calls it, or the ECS child's preparation does. */
void agent__execute_dag(run_state *r);
/* run.c: the start gate passed (a child read its own task item): writes continue above `base`. */
void agent__gate_passed(run_state *r, uint64_t base);
/* run.c: ends the run before its record exists (the gate refused it): run_end, no write. */
void agent__finish_unrecorded(run_state *r, int exit_code, const char *error);

/* ecs_exec.c: the per-task ECS executor (docs/agent.md "Tasks on their own ECS task").
 * Parent side: an attempt of a task whose spec says "executor": {"type": "ecs"} is started as
 * its own ECS task (RunTask, rate- and concurrency-bounded), followed (its task-run item, then
 * DescribeTasks in batches of 100), stopped on timeout and drain (StopTask), and ended through
 * agent__attempt_end(). Child side: DAGY_ONLY_TASK runs one attempt of one task. */
/* At tasks_init: checks what the executor needs (an s3:// artifact, DynamoDB status, a results
 * bucket) for every ECS task, and finds the child's task. 0 or an exit code with err set. */
int agent__ecs_init(run_state *r, char *err);
/* True if attempts of task i run on their own ECS task (never in child mode). */
bool agent__ecs_task(const run_state *r, size_t i);
/* Starts the attempt the plan just marked RUNNING as an ECS task. `instance` is the name the
 * child runs (DAGY_ONLY_TASK; NULL: the task's name) and `extra_env` (NULL-terminated
 * NAME=VALUE, may be NULL) goes into its environment: the seam for a map instance
 * (NAME[7], DAGY_MAP_ITEM). */
void agent__ecs_start(run_state *r, size_t i, const char *instance, char *const *extra_env);
/* The plan says task i's attempt timed out: StopTask, the attempt ends TIMED_OUT once ECS says
 * STOPPED (unless the child recorded its own end first). */
void agent__ecs_timeout(run_state *r, size_t i);
/* Drain started: attempts still waiting for RunTask end CANCELLED at once. */
void agent__ecs_drain(run_state *r);
/* Drain expired: StopTask every running child; each ends CANCELLED once StopTask answered. */
void agent__ecs_kill(run_state *r);
void agent__ecs_free(run_state *r);
/* Child mode: the status backend that leaves the run item alone (the parent owns it). Takes
 * ownership of `inner`. */
status_backend *agent__ecs_child_backend(status_backend *inner);
/* Child mode, at the start gate: reads the task's own item, refuses a stale attempt, and
 * passes the gate with a status_seq base above the parent's writes. */
void agent__ecs_child_gate(run_state *r);
/* Child mode, before the DAG starts: fetches the upstream tasks' stored results from S3 and
 * marks every other task done; calls agent__execute_dag() (or agent__finish()). */
void agent__ecs_child_begin(run_state *r);
/* Child mode: map node i expanded; if it is the map of DAGY_ONLY_TASK=NAME[k], that instance
 * becomes the task to run and its siblings count as done. */
void agent__ecs_child_expanded(run_state *r, size_t i);
/* Child mode: true once the one attempt has ended (the child then finishes). */
bool agent__ecs_child_done(run_state *r, int *exit_code);

/* results.c: the files of task attempts (layout in results.c's header comment). */
typedef enum {
    AGENT_DIR_OUT = 0, /* DAGY_TASK_OUTPUT files, one per attempt */
    AGENT_DIR_IN,      /* DAGY_TASK_INPUTS files, one per attempt */
    AGENT_DIR_RESULTS, /* validated results of SUCCEEDED tasks */
} agent_dir;
/* Creates this agent instance's RUN_DIR/exec/UUID/{out,in,results}; sets r->exec_dir and
 * opens the three directories (r->exec_fd: the per-task file operations are made relative to
 * them, not through the whole path). Returns 0 or -errno with err (AGENT_ERR_MAX) set. */
int agent__results_init(run_state *r, char *err);
/* Closes what agent__results_init opened. */
void agent__results_close(run_state *r);
/* The path of task i's file in `dir` for `attempt` (0: no attempt number, as in results/).
 * Caller frees; NULL on ENOMEM. */
char *agent__task_file(const run_state *r, agent_dir dir, size_t i, int attempt);
/* Reads and validates the result attempt `attempt` of task i wrote to DAGY_TASK_OUTPUT, without
 * ever blocking (a FIFO, a symlink or a file over DAGY_MAX_RESULT_BYTES is refused). On 0,
 * *text is the result (exactly one JSON value, valid UTF-8, whitespace trimmed; caller frees)
 * or NULL if the task wrote none. -EBADMSG: the result is bad, err names the task and what is
 * wrong (the attempt fails); -ENOMEM. */
int agent__task_result_read(run_state *r, size_t i, int attempt, char **text, size_t *len,
                            char *err, size_t errlen);
/* Stores a validated result of task i as its results/ file, the one inputs are built from
 * (a reused or downloaded result goes through here too). 0 or -errno with err set. */
int agent__task_result_store(run_state *r, size_t i, const char *text, size_t len, char *err,
                             size_t errlen);
/* Writes the DAGY_TASK_INPUTS file of `attempt` of task i from its upstream tasks' stored
 * results (null for an upstream without one); *path gets its path (caller frees).
 * 0 or -errno with err set (an infrastructure failure: path and errno). */
int agent__inputs_build(run_state *r, size_t i, int attempt, char **path, char *err, size_t errlen);
/* Hands the inputs file `path` of an attempt that has ended (nothing reads it any more) back
 * for reuse; takes ownership of the string. NULL is ignored. */
void agent__inputs_done_transfer(run_state *r, char *path);
/* Frees the spare inputs list (teardown). */
void agent__inputs_free(run_state *r);

#endif
