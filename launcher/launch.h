/* launch.h - dagy-launch, the control plane (contract section 8): launch flow runs on ECS Fargate,
 * look runs up, reconcile stuck runs, create tables and register flows.
 *
 * Two layers: pure functions (validation, profiles, semantic versions, request bodies, the
 * reconcile verdict; no I/O, unit-tested) and the commands, each of which runs one libuv loop
 * with one fetch_aws client and returns the process exit code. */
#ifndef DAGY_LAUNCH_H
#define DAGY_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cjson/cJSON.h>

#include "proto/ddb.h"

#define LAUNCH_ERR_MAX 512

/* Exit codes of every subcommand. */
enum {
    LAUNCH_EXIT_OK = 0,      /* everything succeeded */
    LAUNCH_EXIT_FAILED = 1,  /* a launch, a lookup or an AWS call failed */
    LAUNCH_EXIT_INVALID = 2, /* bad arguments, request or configuration: nothing was written */
};

/* status_seq written by the launcher's own terminal writes (launch failure, reconcile): above
 * anything the agent can still send, so a delayed agent write cannot land on top. */
#define LAUNCH_FINAL_SEQ 1000000000000LL

/* ECS limits enforced before RunTask (RunTask API reference). */
#define LAUNCH_MAX_OVERRIDES_CHARS 8192 /* containerOverrides, JSON characters */
#define LAUNCH_MAX_RUN_ID          64   /* clientToken: up to 64 ASCII characters */
#define LAUNCH_MAX_TAG_VALUE       256
#define LAUNCH_DESCRIBE_BATCH      100 /* DescribeTasks: up to 100 tasks per call */
/* Launches of a batch (and reconcile's writes) in progress at once: each has one request in
 * flight (a deployment's package lookups excepted), so this bounds the open connections. */
#define LAUNCH_MAX_INFLIGHT 16

/* ---- configuration (environment, contract section 8) ---- */

typedef struct {
    const char *cluster;          /* DAGY_ECS_CLUSTER_ARN */
    const char *execution_role;   /* DAGY_ECS_EXECUTION_ROLE_ARN */
    const char *task_role;        /* DAGY_ECS_TASK_ROLE_ARN */
    const char *image;            /* DAGY_ECS_WORKER_IMAGE */
    const char *subnets;          /* DAGY_ECS_SUBNETS, comma-separated */
    const char *security_groups;  /* DAGY_ECS_SECURITY_GROUPS, comma-separated */
    const char *log_group;        /* DAGY_ECS_LOG_GROUP */
    const char *agent_log_group;  /* DAGY_LOG_GROUP (optional): passed on to the agent */
    const char *artifact_bucket;  /* DAGY_ARTIFACT_BUCKET */
    const char *traces_bucket;    /* DAGY_TRACES_BUCKET (optional) */
    const char *results_bucket;   /* DAGY_RESULTS_BUCKET (optional; default traces_bucket) */
    const char *task_definition;  /* DAGY_ECS_TASK_DEFINITION (optional: family or ARN) */
    const char *container_name;   /* DAGY_ECS_CONTAINER_NAME, default dagy-worker */
    const char *assign_public_ip; /* DAGY_ECS_ASSIGN_PUBLIC_IP, ENABLED|DISABLED (default) */
    const char *runs_table, *task_runs_table, *flows_table, *deployments_table, *packages_table;
    bool runs_table_set, task_runs_table_set; /* passed on to the agent only when set */
} launch_config;

/* What a command needs from the environment. */
enum {
    LAUNCH_NEED_RUN = 1,     /* cluster, subnets, security groups; image, roles and log group
                                unless DAGY_ECS_TASK_DEFINITION is set */
    LAUNCH_NEED_CLUSTER = 2, /* cluster only (reconcile) */
    LAUNCH_NEED_BUCKET = 4,  /* DAGY_ARTIFACT_BUCKET (register-flow) */
};

/* Reads the configuration. The strings point into the environment (valid until it changes).
 * Missing or malformed configuration: -EINVAL and err = "missing configuration: VAR is not set"
 * or names the variable and what is wrong with it. */
int launch_config_from_env(launch_config *c, unsigned need, char *err);

/* ---- validation (pure) ---- */

/* Profile name -> Fargate CPU units / MiB. Returns 0 or -EINVAL for an unknown name. */
int launch_profile(const char *name, int *cpu, int *memory);
/* True if (cpu, memory) is a valid Fargate task size (contract section 8 table). */
bool launch_fargate_valid(int cpu, int memory);
/* Allowed memory values for a CPU value, as text for messages ("1024-4096 in steps of 1024"). */
const char *launch_fargate_memory_hint(int cpu);

/* Semantic versions (semver.org 2.0, optional leading "v"). */
bool launch_semver_valid(const char *v);
/* <0, 0, >0 by semver precedence (build metadata ignored). Both must be valid. */
int launch_semver_cmp(const char *a, const char *b);

/* Strict decimal integer in [min, max]. Returns 0 or -EINVAL. */
int launch_parse_int(const char *s, long min, long max, long *out);

/* "NAME=VALUE" into `params` (a JSON object; the value is a string, later wins). */
int launch_param_add(cJSON *params, const char *arg, char *err);
/* Merges a JSON object given inline or as "@FILE" into `params` (later wins). `what` names the
 * source in errors ("--params-json"). */
int launch_params_merge(cJSON *params, const char *text_or_file, const char *what, char *err);
/* "NAME=VALUE" into `env` (object NAME -> string): NAME must be a valid variable name and not one
 * the launcher sets itself (DAGY_RUN_ID, ...). */
int launch_env_add(cJSON *env, const char *arg, char *err);
/* Checks one extra environment variable name (same rules as launch_env_add). */
int launch_env_name_check(const char *name, char *err);

/* The characters ECS allows in a tag value (letters, digits, space and + - = . _ : / @),
 * 1..max characters. */
bool launch_tag_value_valid(const char *s, size_t max);

/* ---- launch requests ---- */

/* One launch, after defaults and validation: every string owned (malloc'd). */
typedef struct {
    char *flow_name;
    char *flow_version; /* "latest" or a registered version */
    char *org_id;
    char *environment; /* may be NULL (then the deployment's, if any) */
    char *deployment;  /* may be NULL */
    char *correlation_id;
    char *trigger_source;
    char *triggered_by; /* may be NULL */
    char *run_id;
    char *capacity_provider; /* NULL = launchType FARGATE */
    cJSON *parameters;       /* object */
    cJSON *env;              /* object NAME -> string: extra container variables */
    cJSON *metadata;         /* object or NULL; stored on the run item */
    int cpu, memory, ephemeral_gib;
    bool correlation_given; /* false = generated: not part of the request's fingerprint */
    /* Retries (`dagy-launch retry`, reconcile's relaunch); NULL / 0 for a plain run. */
    char *retry_of;    /* the run this one retries */
    char *resume_from; /* DAGY_RESUME_FROM for the agent (NULL with retry --all) */
    int infra_retries; /* relaunches after infrastructure failures along the chain */
} launch_request;

/* Command-line options of run/batch (all optional here; required ones checked by the command).
 * The JSON objects are owned by the caller. */
typedef struct {
    const char *flow, *flow_version, *org, *environment, *deployment, *correlation_id;
    const char *trigger_source, *triggered_by, *profile, *capacity_provider, *run_id, *file;
    const char *cpu, *memory, *ephemeral; /* as given, validated by launch_request_init */
    cJSON *parameters;                    /* object, never NULL */
    cJSON *env;                           /* object, never NULL */
} launch_opts;

/* Builds and validates one request from the options and (for batch) one element of the
 * requests file (`item` may be NULL; its fields win over the options; `index` >= 0 names it in
 * messages). Generates run id and correlation id when absent. Returns 0 or -EINVAL with err
 * naming the flag, field or value at fault. */
int launch_request_init(launch_request *r, const launch_opts *o, const cJSON *item, long index,
                        char *err);
void launch_request_clear(launch_request *r);

/* What `run` resolved before writing: the flow version and the URIs the agent downloads. */
typedef struct {
    const char *flow_version;
    const char *artifact_uri;        /* s3://...#sha256=HEX */
    const char *const *package_uris; /* may be NULL */
    size_t n_packages;
    const char *environment; /* the request's, else the deployment's, or NULL */
} launch_resolved;

/* The run item written QUEUED (plain JSON, before marshalling): contract section 6, plus what a
 * retry needs to repeat the launch exactly (artifact_s3_uri, dep_package_uris, cpu, memory,
 * ephemeral_storage_gib, capacity_provider, extra_env), the request's fingerprint
 * (launch_request_sha256) and the sparse-index marker (LAUNCH_ACTIVE_ATTR). */
cJSON *launch_run_item(const launch_request *r, const launch_resolved *v, const char *now);

/* The sparse index of active runs (docs/launch.md): LAUNCH_ACTIVE_ATTR = "1" is on a run item
 * only while the control plane still has to look at it (QUEUED, RUNNING). Every terminal write
 * REMOVEs it. */
#define LAUNCH_ACTIVE_ATTR  PROTO_ACTIVE_RUNS_ATTR
#define LAUNCH_ACTIVE_VALUE "1"
#define LAUNCH_ACTIVE_INDEX "active_runs"

/* SHA-256 (hex) over the canonical form of a launch: what runs, where and with what (run id,
 * flow and resolved version, artifact and package URIs, org, environment, deployment,
 * parameters, extra variables, metadata, size, capacity provider, retry fields, and the
 * correlation id when it was given). Audit fields (trigger_source, triggered_by) and a
 * generated correlation id are left out, so the same command run again has the same print.
 * Objects are hashed with sorted keys. */
void launch_request_sha256(const launch_request *r, const launch_resolved *v, char hex[65]);
/* The container environment (ECS [{name, value}] list) of contract section 5. */
cJSON *launch_container_env(const launch_config *c, const launch_request *r,
                            const launch_resolved *v);
/* The full RunTask request. `managed` = the task definition is dagy-launch's own, so the
 * container's hard memory limit is raised to the task's memory. */
cJSON *launch_runtask_body(const launch_config *c, const char *task_definition, bool managed,
                           const launch_request *r, const launch_resolved *v);
/* Size of the containerOverrides of a RunTask body, in JSON characters (ECS caps it at 8192). */
size_t launch_overrides_chars(const cJSON *runtask_body);

/* The stop timeout of the dagy-worker task definition: the agent drains for 15 s, then stops its
 * tasks and flushes its status writes; ECS's default of 30 s leaves that only 15 s. */
#define LAUNCH_STOP_TIMEOUT 60
/* RegisterTaskDefinition body of the dagy-worker task definition (family "dagy-worker"). */
cJSON *launch_taskdef_body(const launch_config *c, const char *region);
/* True if a described task definition (DescribeTaskDefinition's "taskDefinition") has the
 * image, roles, container name, stop timeout and log configuration launch_taskdef_body would
 * register, so it can be reused. */
bool launch_taskdef_matches(const launch_config *c, const char *region, const cJSON *td);

/* ---- retries (`dagy-launch retry`, reconcile's relaunch) ---- */

typedef struct {
    const char *run_id;         /* NULL = a new UUID */
    const char *correlation_id; /* NULL = the source's */
    const char *trigger_source; /* "retry", "reconcile" */
    const char *triggered_by;   /* NULL = $USER or the Lambda's name */
    bool all;                   /* true = run everything again (no DAGY_RESUME_FROM) */
    int infra_retries;          /* recorded on the new run */
} launch_retry_opts;

/* The launch request of a retry of the run item `src` (plain JSON): the source's exact flow
 * version, parameters, extra variables, metadata, org, environment, deployment, size and
 * capacity provider, with retry_of = the source, resume_from = the source unless `all`, and the
 * source's correlation id unless another is given. Validated like a `run` request. Returns 0 or
 * -EINVAL with err saying what the source lacks. The artifact and package URIs are the caller's
 * (the source's artifact_s3_uri and dep_package_uris). */
int launch_request_from_item(launch_request *r, const cJSON *src, const launch_retry_opts *o,
                             char *err);
/* The deterministic run id of the k-th infrastructure relaunch of `source`: "SOURCE-infraK", or
 * "r<40 hex of sha256(SOURCE)>-infraK" when that would exceed the 64 characters of a clientToken.
 * A second reconcile computes the same id, and the conditional QUEUED put stops it there. */
void launch_retry_run_id(const char *source, int infra_retries, char out[LAUNCH_MAX_RUN_ID + 1]);

/* ---- reconcile ---- */

/* How long a launch may sit between its QUEUED write and RunTask's answer being recorded: the
 * RunTask retry budget (8 attempts, backoff capped at 5 s) with a wide margin. The reconciler
 * never touches a QUEUED run without a task ARN younger than this, whatever --stale-seconds
 * and --start-timeout say. */
#define LAUNCH_GRACE_SECONDS 120

typedef struct {
    const char *status; /* SUCCEEDED, FAILED, CANCELLED; NULL = task not stopped: leave it */
    char error_message[LAUNCH_ERR_MAX];
    char stop_reason[LAUNCH_ERR_MAX];
    double stopped_at; /* epoch seconds, 0 if ECS did not say */
    bool infra;        /* FAILED by the platform (relaunchable), not by the flow */
} launch_verdict;

/* The terminal status for a described ECS task (docs/launch.md, reconcile): STOPPED with the
 * worker container's exit code 0 -> SUCCEEDED; a cancel was requested (cancel_reason not NULL,
 * "" for no text) and ECS stopped it (UserInitiated, or exit 143) -> CANCELLED with stop_reason
 * "UserInitiated: TEXT"; any other stop -> FAILED "Reconciled: STOPPED_REASON", with `infra` set
 * for TaskFailedToStart, SpotInterruption, TerminationNotice, ServiceSchedulerInitiated, a
 * UserInitiated stop or exit 143 without a cancel request, and exit 137 for OutOfMemory.
 * Not stopped -> status NULL. */
void launch_reconcile_verdict(const cJSON *task, const char *container_name,
                              const char *cancel_reason, launch_verdict *v);

/* ---- time and ids ---- */

/* A random version-4 UUID (buf >= 37 bytes). */
void launch_uuid4(char *buf);

/* ---- commands (each returns the process exit code; results go to stdout as JSON) ---- */

int launch_cmd_run(const launch_opts *o);
int launch_cmd_batch(const launch_opts *o);
int launch_cmd_status(const char *run_id);

typedef struct {
    long max_runs;       /* --max-runs, default 50 */
    long stale_seconds;  /* --stale-seconds, default 300 */
    long start_timeout;  /* --start-timeout, default 600 */
    long relaunch_infra; /* --relaunch-infra, default 2 (per chain of retries) */
} launch_reconcile_opts;
int launch_cmd_reconcile(const launch_reconcile_opts *o);

/* `retry RUN_ID`: a new run repeating RUN_ID's launch (launch_request_from_item). */
int launch_cmd_retry(const char *run_id, const launch_retry_opts *o);

typedef struct {
    const char *run_id; /* NULL with all_running */
    const char *reason; /* NULL = none given */
    bool all_running;
    const char *flow; /* with all_running: only this flow's runs */
} launch_cancel_opts;
/* `cancel RUN_ID` / `cancel --all-running [--flow NAME]`. */
int launch_cmd_cancel(const launch_cancel_opts *o);
/* `logs RUN_ID [--follow] [--task NAME] [--since DURATION]` (logs.c): the run's lines from the
 * CloudWatch Logs stream named RUN_ID in DAGY_LOG_GROUP (else DAGY_ECS_LOG_GROUP). */
typedef struct {
    const char *run_id;
    const char *task; /* NULL = every line */
    int64_t since_ms; /* 0 = from the start */
    bool follow;
} launch_logs_opts;
int launch_cmd_logs(const launch_logs_opts *o);
/* `dagy-launch logs ARGS` (argv[0] is "logs"): options, --help, then launch_cmd_logs. */
int launch_logs_main(int argc, char **argv);
/* "30s", "10m", "2h", "1d" -> milliseconds (1 s to 366 d). Returns 0 or -EINVAL. */
int launch_parse_duration(const char *s, int64_t *ms);

/* `result RUN_ID TASK`: the task's stored result on stdout, its result_sha256 verified. */
int launch_cmd_result(const char *run_id, const char *task);
int launch_cmd_init_tables(void);
int launch_cmd_register_flow(const char *artifact, const char *flow, const char *version,
                             const char *org);
/* Uploads a dependency package to s3://DAGY_ARTIFACT_BUCKET/dep-packages/SLUG/V/package.zip and
 * writes its DAGY_DEP_PACKAGES item (package_s3_uri with #sha256=). register.c. */
int launch_cmd_register_package(const char *slug, const char *artifact, const char *version,
                                const char *org);
/* Writes the DAGY_DEPLOYMENTS item of a deployment; every slug of `packages` (comma-separated)
 * must be registered. register.c. */
int launch_cmd_register_deployment(const char *name, const char *environment, const char *packages);
/* `dagy-launch register-package|register-deployment ARGS`: options, --help, then the command
 * (argv[0] is the command name). Returns the exit code. register.c. */
int launch_register_main(int argc, char **argv, const char *cmd);

/* ---- module internals (the launcher's own .c files only) ---- */

#include <uv.h>
#include "fetch/aws.h"

typedef struct {
    uv_loop_t loop;
    fetch_aws *aws;
    launch_config cfg;
    bool loop_ok;
} launch__ctx;

/* Configuration, then the loop and the AWS client. Returns 0 or -EINVAL with err set. */
int launch__ctx_open(launch__ctx *c, unsigned need, char *err);
/* Frees the client, runs the loop until every handle closed, closes the loop. */
void launch__ctx_close(launch__ctx *c);
/* One JSON call: service "dynamodb" or "ecs" (JSON 1.0), or "logs" (CloudWatch Logs, JSON 1.1),
 * op "PutItem", "RunTask", "GetLogEvents", ...; `body` is consumed. Returns 0 or -errno (callback
 * not invoked). */
int launch__call(launch__ctx *c, const char *service, const char *op, cJSON *body, fetch_aws_cb cb,
                 void *ud);
/* One call run to completion on the context's loop (for commands that do one thing after
 * another). Returns 0 with *out = the answer's JSON (caller frees; may be NULL), or -EIO with
 * *out = the error answer's JSON (if any), code = the AWS error code ("" if none; code may be
 * NULL, else LAUNCH_CODE_MAX bytes) and err = "CODE: message". */
#define LAUNCH_CODE_MAX 96
int launch__call_sync(launch__ctx *c, const char *service, const char *op, cJSON *body, cJSON **out,
                      char *code, char *err);
/* reconcile_children.c: stops the running ECS tasks an agent started for one task of its run
 * (startedBy dagy-agent) whose parent task is gone; counts them in *stopped, failed calls in
 * *errors. Returns 0, or -EIO with err set if the children could not be listed. */
int launch__reconcile_children(launch__ctx *c, size_t *stopped, size_t *errors, char *err);
/* The plain run item, read consistently; NULL with err "run "X" not found (TABLE)" or the
 * read's failure. */
cJSON *launch__read_run(launch__ctx *c, const char *run_id, char *err);
/* launch__read_run that tells the two apart: 0 with *out, -ENOENT (no such run) or -EIO. */
int launch__get_run(launch__ctx *c, const char *run_id, cJSON **out, char *err);
/* The AWS message of a failed result, "CODE: message" without the client's label. */
void launch__aws_reason(const fetch_aws_result *r, char *buf, size_t n);
/* Prints a JSON value on stdout (pretty when stdout is a terminal, where DEL and C1 controls are
 * shown as \u escapes), then a newline. */
void launch__print_json(const cJSON *j);
/* Writes s[0..n) for a terminal: C0 controls other than newline and tab, DEL and C1 controls
 * (UTF-8 C2 80-C2 9F) become "\uXXXX", so a stored string cannot send escape sequences.
 * *c2 carries a 0xC2 byte across calls (start false; if true at the end, write 0xC2). */
size_t launch__tty_write(const char *s, size_t n, FILE *out, bool *c2);
/* DynamoDB key object {name: {"S": value}} (one or two key attributes; name2 may be NULL). */
cJSON *launch__key(const char *name, const char *value, const char *name2, const char *value2);
/* snprintf that may truncate (messages embed AWS text of any length; truncation is fine). */
void launch__fmt(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Reads a file of at most 16 MiB whole (NUL-terminated); NULL with err naming `what`. */
char *launch__read_file(const char *path, const char *what, char *err);
/* -EINVAL with err naming `what` and the place if the JSON text holds a \u0000 escape (cJSON
 * would cut the string there, e.g. a run id "a\u0000b" would launch run "a"); else 0. */
int launch__refuse_nul(const char *text, const char *what, char *err);
/* A string attribute of a plain (unmarshalled) item, or NULL. */
const char *launch__str(const cJSON *obj, const char *name);
/* Unpacks `artifact` with the agent's unpacker and limits into a new scratch directory `tmpl`
 * (its tree at `dest`); the caller removes `tmpl` with unpack_rmtree. On failure nothing is left
 * and err names the artifact: -EINVAL (refused archive) or -errno. */
int launch__unpack_scratch(const char *artifact, char tmpl[32], char dest[64], char *err);
/* SHA-256 of a file as 64 hex digits. Returns 0 or -errno. */
int launch__sha256_file(const char *path, char hex[65]);
/* A version usable in an S3 key and a tag (register-flow, register-package): tag characters,
 * no '/', not "latest", "." or "..". Returns 0 or -EINVAL with err naming `flag`. */
int launch__version_check(const char *v, const char *flag, char *err);

/* A prepared launch for launch__launch: the request and, for a retry, what the source run
 * resolved (artifact URI with its #sha256=, package URIs) so nothing is looked up again. */
typedef struct {
    launch_request req; /* moved into the launch (cleared) */
    char *artifact_uri; /* NULL = resolve flow_version in DAGY_FLOWS */
    char **pkgs;        /* with pkgs_known: the packages; else resolved from the deployment */
    size_t n_pkgs;
    bool pkgs_known;
    /* results */
    bool success;
    int exit;
    char *task_arn;
    cJSON *result; /* the JSON `run` prints for this launch */
    char error[LAUNCH_ERR_MAX];
} launch__spec;

/* A retry of the plain run item `src` as a prepared launch. Returns 0 or -EINVAL/-ENOMEM with
 * err set (nothing to clear then). */
int launch__spec_from_item(launch__spec *s, const cJSON *src, const launch_retry_opts *o,
                           char *err);
/* Runs the launches as `batch` does (bounded, one task definition lookup, exactly-once) on a
 * loop of its own, and fills the results. Returns 0, or LAUNCH_EXIT_INVALID when the run
 * configuration is missing (every spec's error says which variable), or -ENOMEM. */
int launch__launch(launch__spec *specs, size_t n);
void launch__spec_clear(launch__spec *s);
/* The task ARN of a RunTask answer (pointing into `answer`), or NULL with `why` (n bytes) saying
 * what ECS reported instead (the first failure, or no task). Buffer-in for tests/fuzz too. */
const char *launch__runtask_arn(const cJSON *answer, char *why, size_t n);

/* ---- the commands as answers (CLI and `dagy-launch lambda` answer the same) ----
 * Each returns the exit code and sets *answer to the JSON the command prints (caller frees;
 * NULL where the command prints nothing); messages go to stderr as the CLI's do. */

/* `run` with the options and, optionally, one request object of the batch-file shape. */
int launch__run(const launch_opts *o, const cJSON *item, cJSON **answer);
/* `batch` of the requests in `items` (a non-empty array). */
int launch__batch(const launch_opts *o, const cJSON *items, cJSON **answer);
/* `status`: 0 with the answer, -EINVAL (bad id, configuration), -ENOENT (no such run) or -EIO,
 * with err set. */
int launch__status(const char *run_id, cJSON **answer, char *err);
/* `retry`: a refusal is answered {success false, run_id null, retry_of, error_message} with
 * *launched false (the CLI prints it on stderr only). */
#define LAUNCH__EXIT_NOT_FOUND 4 /* launch__retry: the source does not exist (the CLI exits 1) */
int launch__retry(const char *run_id, const launch_retry_opts *o, cJSON **answer, bool *launched);
/* `cancel`: err holds the failure (of the one run, or the configuration). */
int launch__cancel(const launch_cancel_opts *o, cJSON **answer, char *err);
/* `reconcile`: the summary; err says why the exit code is not 0. */
int launch__reconcile(const launch_reconcile_opts *o, cJSON **answer, char *err);
/* Closes one run from its stopped task (an ECS Task State Change event's detail, shaped like a
 * DescribeTasks task) with the reconciler's rules: the verdict, a relaunch of an
 * infrastructure failure within o->relaunch_infra, and the conditional terminal write (only
 * while the run is QUEUED/RUNNING and the task is the run's; a run the agent already ended is
 * skipped). No staleness test. The answer is reconcile's summary plus run_id, task_arn,
 * status, outcome (closed|skipped|...) and relaunched_as, or {"ignored": why, ...} for a run
 * that is not this task's. */
int launch__reconcile_task(const char *run_id, const cJSON *task, const launch_reconcile_opts *o,
                           cJSON **answer, char *err);

/* `dagy-launch lambda`: the Lambda custom runtime loop (lambda.c). Returns the exit code. */
int launch_cmd_lambda(void);
/* One invocation's answer for the event text (lambda_events.c): 0 with *answer the response
 * payload, or -1 with *answer {"errorType", "errorMessage"} for an error answer. */
int launch__lambda_event(const char *text, size_t len, cJSON **answer);

/* lambda_events.c internals shared with lambda_http.c: an action's answer and the HTTP status
 * it maps to for API Gateway (2xx, 400 invalid, 404 no such run, 409 wrong state, 500 missing
 * configuration, 502 an AWS call or launch failed). */
typedef struct {
    cJSON *body;
    int http;
} launch__reply;
/* {"error": message} with an HTTP status. */
launch__reply launch__lambda_error(int http, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A string field of an event (NULL if absent); -EINVAL with err if not a string. */
int launch__lambda_str_field(const cJSON *ev, const char *name, const char **out, char *err);
/* -EINVAL with err naming the first field of `ev` not in `allowed` (NULL-terminated). */
int launch__lambda_only_fields(const cJSON *ev, const char *const *allowed, char *err);
/* The actions: launch (a request with org_id), status ({"run_id"}), cancel. */
launch__reply launch__lambda_launch(const cJSON *ev);
launch__reply launch__lambda_status(const cJSON *ev);
launch__reply launch__lambda_cancel(const launch_cancel_opts *o);
/* The API Gateway response to a payload-2.0 request (lambda_http.c). */
cJSON *launch__lambda_http(const cJSON *ev, const char *version);

#endif
