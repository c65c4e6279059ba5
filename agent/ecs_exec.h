/* ecs_exec.h - internals shared by the two sides of the per-task ECS executor: ecs_exec.c (the
 * parent: RunTask, following, StopTask) and ecs_child.c (DAGY_ONLY_TASK). The hooks the rest of
 * the agent calls are the agent__ecs_* declarations in run.h. Not a public interface. */
#ifndef DAGY_ECS_EXEC_H
#define DAGY_ECS_EXEC_H

#include "agent/run.h"
#include "agent/durable.h"

typedef struct agent_ecs agent_ecs;

#define ECS_TARGET          "AmazonEC2ContainerServiceV20141113."
#define ECS_LAUNCH_INFLIGHT 8      /* RunTask calls at once */
#define ECS_RATE_PER_S      20.0   /* Fargate's sustained RunTask rate (DAGY_ECS_RUNTASK_RATE) */
#define ECS_BURST           100.0  /* and its burst (DAGY_ECS_RUNTASK_BURST) */
#define ECS_DESCRIBE_MAX    100    /* ARNs per DescribeTasks (the API's limit) */
#define ECS_POLL_MAX_MS     60000  /* the poll interval's cap under throttling */
#define ECS_STOP_WAIT_MS    150000 /* after StopTask: stopTimeout (120 s at most) and margin */
#define ECS_OVERRIDES_MAX   8192   /* ECS's limit on the container overrides' characters */

typedef enum { CH_WAITING = 0, CH_LAUNCHING, CH_FOLLOWING, CH_ENDING } ch_state;

typedef struct ecs_child ecs_child;
struct ecs_child {
    run_state *r;
    size_t i;
    int attempt;
    ch_state state;
    char *instance; /* what the child runs (DAGY_ONLY_TASK) */
    char **env;     /* extra NAME=VALUE for the child (a map instance), owned */
    char token[65]; /* RunTask clientToken */
    char *arn;      /* the ECS task, once RunTask answered */
    bool timed_out; /* the plan's timeout fired: StopTask */
    bool cancelled; /* the drain expired: StopTask, CANCELLED */
    bool stop_sent, stopped, reading, reread;
    int ecs_exit; /* the container's exit code, -1 unknown */
    char *ecs_reason;
    uint64_t seq0; /* the item's status_seq when the child was launched */
    uint64_t stop_ms;
    int refs;        /* callbacks still to come */
    bool detached;   /* ended: freed when refs reaches 0 */
    ecs_child *next; /* in agent_ecs.all */
};

struct agent_ecs {
    run_state *r;
    ecs_child *all; /* every live child */
    /* configuration, resolved at the first launch */
    int conf_state; /* 0 not yet, 1 reading the task metadata, 2 ready, 3 failed */
    char *conf_error;
    char *cluster, *taskdef, *subnets, *sgs, *assign_ip, *container, *parent_arn;
    char *task_role, *exec_role;
    /* launches */
    double rate, burst; /* the token bucket: RunTask calls a second, and at once */
    double tokens;
    uint64_t refill_ms;
    int launching;
    bool pumping, pump_again; /* launch_pump is running / must go round again */
    /* polling */
    int tick_pending; /* reads and describes of the current poll */
    uint64_t poll_ms; /* the interval now (grows under throttling) */
    bool poll_armed;
    bool describe_failing;
};

/* ---- ecs_exec.c ---- */
const char *agent__ecs_getenv(const char *name); /* getenv, an empty value as unset */
/* The spec task of plan task i, and the name its item and logs carry (a map instance's plan
 * task has its own name, NAME[7]: the seam to change when plan and spec indices differ). */
const flowspec_task *agent__ecs_spec_task(const run_state *r, size_t i);
const char *agent__ecs_item_name(const run_state *r, size_t i);
/* The run can still take answers (not torn down). */
bool agent__ecs_live(const run_state *r);
/* Ends the attempt in the plan; the child is freed once its last callback came. */
void agent__ecs_child_end(ecs_child *ch, sched_exit how, const char *err);
/* Drops a reference held by a callback still to come; frees an ended child at the last one. */
void agent__ecs_child_unref(ecs_child *ch);
void agent__ecs_launch_pump(agent_ecs *e);
void agent__ecs_send_stop(ecs_child *ch, const char *why);

/* ---- ecs_child.c ---- */
/* Child mode at tasks_init: the spec task of DAGY_ONLY_TASK (NAME, or NAME[k] for an instance
 * of map NAME), r->only_spec and, for a plain task, r->only_index. 0 or exit 2 with err. */
int agent__ecs_child_find(run_state *r, char *err);

/* ---- ecs_request.c ---- */
/* The RunTask body of the child's attempt (caller frees). */
cJSON *agent__ecs_runtask_body(ecs_child *ch);
/* The first failure of a RunTask answer: "REASON (detail)". */
void agent__ecs_runtask_failure(const cJSON *j, char *out, size_t n);
/* clientToken: hex SHA-256 of run id, instance and attempt (64 characters). */
void agent__ecs_client_token(const char *run_id, const char *instance, int attempt, char out[65]);

/* ---- ecs_follow.c ---- */
/* Arms the next poll if a child is followed and no poll is under way. */
void agent__ecs_poll_arm(agent_ecs *e);
/* ECS stopped the task and the child recorded no end: the stop decides. */
void agent__ecs_end_from_ecs(ecs_child *ch);

/* A child writes its task's item from the stored status_seq + ECS_CHILD_SEQ_GAP on; a parent
 * whose attempt ended writes from (its seq when the child started) + 2 * ECS_CHILD_SEQ_GAP on:
 * a child writes an item a handful of times, so the two ranges never meet, and a late write of
 * a stopped child never replaces what the parent recorded after it. */
#define ECS_CHILD_SEQ_GAP 1000

#endif
