/* agent.h - dagy-agent's configuration (command line + environment, contract sections 3 and 5)
 * and the run lifecycle that drives a whole flow run on one libuv loop. */
#ifndef DAGY_AGENT_H
#define DAGY_AGENT_H

#include "agent/cwlogs.h"
#include <stdbool.h>
#include <stdint.h>
#include <cjson/cJSON.h>

/* Exit codes (contract section 3). */
enum {
    AGENT_EXIT_OK = 0,
    AGENT_EXIT_TASK_FAILED = 1,
    AGENT_EXIT_INVALID = 2,
    AGENT_EXIT_INFRA = 3,
    AGENT_EXIT_SIGTERM = 143,
};

#define AGENT_ERR_MAX 1024

typedef struct {
    /* what to run */
    char *flow;          /* --flow: path, directory or s3:// URI; NULL in container mode */
    bool container_mode; /* no --flow: everything from the environment */
    char **dep_uris;     /* DAGY_DEP_PACKAGE_URIS, NULL-terminated (may be empty) */
    cJSON *parameters;   /* object: DAGY_PARAMETERS, --params-json, then --param */
    /* identity */
    char *run_id, *flow_name, *flow_version, *org_id, *environment, *correlation_id;
    /* behaviour */
    int max_parallel;          /* 0 = spec's, else number of CPUs */
    double drain_seconds;      /* DAGY_DRAIN_SECONDS / --drain-seconds, default 15 */
    double heartbeat_seconds;  /* DAGY_HEARTBEAT_SECONDS, default 30 */
    double kill_grace_seconds; /* DAGY_KILL_GRACE_SECONDS, default 3: SIGTERM -> SIGKILL */
    size_t max_result_bytes;   /* DAGY_MAX_RESULT_BYTES, default 16 MiB: largest task result */
    int max_map_items;         /* DAGY_MAX_MAP_ITEMS, default 10000: most children of one map */
    char *state_dir;           /* --state-dir, default ./.dagy */
    char *work_dir;            /* DAGY_WORK_DIR, default /tmp/dagy */
    int keep_runs;             /* DAGY_KEEP_RUNS, default 20 (0: keep every run directory) */
    char *status_backend;      /* "local" or "dynamodb" */
    char *runs_table, *task_runs_table, *traces_bucket;
    char *results_bucket; /* DAGY_RESULTS_BUCKET (NULL: the traces bucket, if any) */
    char *resume_from;    /* --resume-from / DAGY_RESUME_FROM: the run to reuse tasks from */
    char *python;         /* DAGY_PYTHON, default python3 */
    char *runner;         /* DAGY_PYTHON_RUNNER, default beside the binary */
    char *pip_command;    /* DAGY_PIP_COMMAND, default "python3 -m pip" */
    int log_format;       /* log_format, or -1 = decide by isatty */
    int log_level;        /* log_level */
    cwlogs_config cwlogs; /* DAGY_LOG_GROUP, DAGY_LOG_STDOUT, DAGY_LOG_BUFFER_BYTES */
    /* the per-task ECS executor (agent/ecs_exec.c, docs/agent.md "Tasks on their own ECS task") */
    char *only_task;         /* DAGY_ONLY_TASK: run just this task's attempt (an ECS child) */
    int only_attempt;        /* DAGY_ATTEMPT with DAGY_ONLY_TASK: the attempt number, >= 1 */
    char *only_task_run_id;  /* DAGY_TASK_RUN_ID with DAGY_ONLY_TASK: the parent's task_run_id */
    double ecs_poll_seconds; /* DAGY_ECS_POLL_SECONDS, default 5: how often children are polled */
    double ecs_runtask_rate, ecs_runtask_burst; /* DAGY_ECS_RUNTASK_RATE/_BURST (0: 20, 100) */
    bool graph, version, help;
} agent_config;

/* Parses argv and the environment. Returns 0, or AGENT_EXIT_INVALID with a message in err
 * that names the flag or variable. `self` is argv[0]'s resolved path (to find the runner). */
int agent_config_load(agent_config *c, int argc, char **argv, char *err);
void agent_config_free(agent_config *c);
void agent_print_help(void);

/* Runs the flow described by the configuration; returns the process exit code. */
int agent_run(agent_config *c);

/* Prints the flow's DAG as Graphviz DOT (for --graph); returns an exit code. */
int agent_graph(agent_config *c);

/* A random (version 4) UUID into buf (37 bytes). */
void agent_uuid(char *buf);

#endif
