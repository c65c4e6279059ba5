/* config.c - dagy-agent's configuration: command-line flags (contract section 3) layered over
 * the environment (section 5). Every bad value is refused with a message naming the flag or the
 * variable; nothing falls back silently. */
#include "agent/agent.h"
#include "agent/log.h"
#include "fetch/aws.h"
#include "proto/jsonnul.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dup_or(const char *v, const char *dflt)
{
    if (v && *v)
        return strdup(v);
    return dflt ? strdup(dflt) : NULL;
}

/* `path` made absolute against the current directory (the agent's, not a task's: tasks run in
 * the flow directory, so a relative work directory would name other files there). Takes
 * ownership of `path`; NULL on ENOMEM or when the current directory cannot be read. */
static char *absolute_path(char *path)
{
    if (!path || path[0] == '/')
        return path;
    char *cwd = getcwd(NULL, 0), *out = NULL;
    if (cwd && asprintf(&out, "%s/%s", cwd, path) < 0)
        out = NULL;
    free(cwd);
    free(path);
    return out;
}

/* Parses a non-negative number with an upper bound; 0 or -EINVAL. */
static int parse_seconds(const char *s, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

/* Reads --params-json @FILE (at most 16 MiB); NULL with err set. */
static char *read_params_file(const char *path, char *err)
{
    char *text = proto_read_user_file(path, 1u << 24, NULL);
    if (!text)
        snprintf(err, AGENT_ERR_MAX, "--params-json: cannot read %s: %s", path,
                 errno == EFBIG ? "larger than 16 MiB" : strerror(errno));
    return text;
}

/* Merges a JSON object text into c->parameters (later sources win). */
static int merge_params_json(agent_config *c, const char *text, const char *what, char *err)
{
    if (proto_json_has_nul(text, strlen(text))) { /* cJSON would cut the string there */
        char where[128];
        proto_json_nul_where(text, strlen(text), where, sizeof where);
        snprintf(err, AGENT_ERR_MAX,
                 "%s: the string at %s contains a NUL character (\\u0000), which is not allowed",
                 what, where);
        return -EINVAL;
    }
    cJSON *o = cJSON_Parse(text);
    if (!cJSON_IsObject(o)) {
        snprintf(err, AGENT_ERR_MAX, "%s: must be a JSON object, e.g. {\"date\": \"2024-03-14\"}",
                 what);
        cJSON_Delete(o);
        return -EINVAL;
    }
    cJSON *item = o->child;
    while (item) {
        cJSON *next = item->next;
        cJSON_DetachItemViaPointer(o, item);
        cJSON_DeleteItemFromObjectCaseSensitive(c->parameters, item->string);
        cJSON_AddItemToObject(c->parameters, item->string, item);
        item = next;
    }
    cJSON_Delete(o);
    return 0;
}

/* --param NAME=VALUE: the value is a string. */
static int add_param(agent_config *c, const char *arg, char *err)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        snprintf(err, AGENT_ERR_MAX, "--param %s: expected NAME=VALUE", arg);
        return -EINVAL;
    }
    char *name = strndup(arg, (size_t)(eq - arg));
    cJSON_DeleteItemFromObjectCaseSensitive(c->parameters, name);
    cJSON_AddStringToObject(c->parameters, name, eq + 1);
    free(name);
    return 0;
}

/* A bucket variable that is set must name a valid bucket: a typo would silently lose every
 * trace or result (S3 refuses the name at the first upload, long after the run started). */
static int check_bucket_var(const char *var, char *err)
{
    const char *v = getenv(var), *why;
    if (!v || !*v || !(why = fetch_s3_bucket_problem(v)))
        return 0;
    char *q = proto_utf8_clean(v, strlen(v), 80);
    snprintf(err, AGENT_ERR_MAX, "%s=\"%s\" is not a valid S3 bucket name: %s", var, q ? q : "",
             why);
    free(q);
    return -EINVAL;
}

/* The environment layer (contract section 5). */
static int ecs_config(agent_config *c, char *err);

static int load_env(agent_config *c, char *err)
{
    const char *v;
    c->run_id = dup_or(getenv("DAGY_RUN_ID"), NULL);
    c->flow_name = dup_or(getenv("DAGY_FLOW_NAME"), NULL);
    c->flow_version = dup_or(getenv("DAGY_FLOW_VERSION"), NULL);
    c->org_id = dup_or(getenv("DAGY_ORG_ID"), NULL);
    c->environment = dup_or(getenv("DAGY_ENVIRONMENT"), NULL);
    c->correlation_id = dup_or(getenv("DAGY_CORRELATION_ID"), NULL);
    c->work_dir = absolute_path(dup_or(getenv("DAGY_WORK_DIR"), "/tmp/dagy"));
    if (!c->work_dir) {
        snprintf(err, AGENT_ERR_MAX,
                 "DAGY_WORK_DIR is relative and the current directory "
                 "cannot be read: %s",
                 strerror(errno));
        return -EINVAL;
    }
    c->runs_table = dup_or(getenv("DAGY_RUNS_TABLE"), "DAGY_RUNS");
    c->task_runs_table = dup_or(getenv("DAGY_TASK_RUNS_TABLE"), "DAGY_TASK_RUNS");
    c->traces_bucket = dup_or(getenv("DAGY_TRACES_BUCKET"), NULL);
    c->results_bucket = dup_or(getenv("DAGY_RESULTS_BUCKET"), NULL);
    c->resume_from = dup_or(getenv("DAGY_RESUME_FROM"), NULL);
    c->python = dup_or(getenv("DAGY_PYTHON"), "python3");
    c->runner = dup_or(getenv("DAGY_PYTHON_RUNNER"), NULL);
    c->pip_command = dup_or(getenv("DAGY_PIP_COMMAND"), "python3 -m pip");
    c->dep_uris = proto_split_list(getenv("DAGY_DEP_PACKAGE_URIS"), ',');
    c->drain_seconds = 15;
    c->heartbeat_seconds = 30;
    c->kill_grace_seconds = 3;
    c->max_result_bytes = 16u << 20;
    c->max_map_items = 10000;
    c->log_format = -1;
    c->log_level = LOG_INFO;

    if (check_bucket_var("DAGY_TRACES_BUCKET", err) || check_bucket_var("DAGY_RESULTS_BUCKET", err))
        return -EINVAL;
    if (cwlogs_config_from_env(&c->cwlogs, err, AGENT_ERR_MAX))
        return -EINVAL;
    if ((v = getenv("DAGY_PARAMETERS")) && *v && merge_params_json(c, v, "DAGY_PARAMETERS", err))
        return -EINVAL;
    if ((v = getenv("DAGY_LOG_LEVEL")) && *v) {
        log_level lv;
        if (agent_log_parse_level(v, &lv)) {
            snprintf(err, AGENT_ERR_MAX,
                     "DAGY_LOG_LEVEL=%.40s: expected DEBUG, INFO, WARNING or ERROR", v);
            return -EINVAL;
        }
        c->log_level = lv;
    }
    c->keep_runs = 20;
    if ((v = getenv("DAGY_KEEP_RUNS")) && *v && parse_int(v, 0, 1000000, &c->keep_runs)) {
        snprintf(err, AGENT_ERR_MAX,
                 "DAGY_KEEP_RUNS=%.40s: expected a number of run directories to keep, 0-1000000 "
                 "(0 keeps all)",
                 v);
        return -EINVAL;
    }
    if ((v = getenv("DAGY_MAX_PARALLEL")) && *v && parse_int(v, 1, 10000, &c->max_parallel)) {
        snprintf(err, AGENT_ERR_MAX, "DAGY_MAX_PARALLEL=%.40s: expected an integer 1-10000", v);
        return -EINVAL;
    }
    if ((v = getenv("DAGY_MAX_MAP_ITEMS")) && *v && parse_int(v, 0, 1000000, &c->max_map_items)) {
        snprintf(err, AGENT_ERR_MAX, "DAGY_MAX_MAP_ITEMS=%.40s: expected an integer 0-1000000", v);
        return -EINVAL;
    }
    int max_result;
    if ((v = getenv("DAGY_MAX_RESULT_BYTES")) && *v) {
        if (parse_int(v, 2, 1 << 30, &max_result)) {
            snprintf(err, AGENT_ERR_MAX,
                     "DAGY_MAX_RESULT_BYTES=%.40s: expected a number of bytes 2-1073741824", v);
            return -EINVAL;
        }
        c->max_result_bytes = (size_t)max_result;
    }
    static const struct {
        const char *var;
        double max;
        size_t off;
    } secs[] = {
        {"DAGY_DRAIN_SECONDS", 3600, offsetof(agent_config, drain_seconds)},
        {"DAGY_HEARTBEAT_SECONDS", 86400, offsetof(agent_config, heartbeat_seconds)},
        {"DAGY_KILL_GRACE_SECONDS", 600, offsetof(agent_config, kill_grace_seconds)},
    };
    for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++) {
        if ((v = getenv(secs[i].var)) && *v &&
            parse_seconds(v, secs[i].max, (double *)((char *)c + secs[i].off))) {
            snprintf(err, AGENT_ERR_MAX, "%s=%.40s: expected a number of seconds 0-%g", secs[i].var,
                     v, secs[i].max);
            return -EINVAL;
        }
    }
    if (c->heartbeat_seconds < 1)
        c->heartbeat_seconds = 1;
    return ecs_config(c, err);
}

/* The ECS executor's variables: DAGY_ECS_POLL_SECONDS, and the child mode (DAGY_ONLY_TASK with
 * DAGY_ATTEMPT and DAGY_TASK_RUN_ID, set by the parent in the child's RunTask overrides). */
static int ecs_config(agent_config *c, char *err)
{
    const char *v;
    c->ecs_poll_seconds = 5;
    if ((v = getenv("DAGY_ECS_POLL_SECONDS")) && *v &&
        (parse_seconds(v, 300, &c->ecs_poll_seconds) || c->ecs_poll_seconds < 0.05)) {
        snprintf(err, AGENT_ERR_MAX, "DAGY_ECS_POLL_SECONDS=%.40s: expected 0.05-300 seconds", v);
        return -EINVAL;
    }
    static const struct {
        const char *var;
        size_t off;
    } rates[] = {{"DAGY_ECS_RUNTASK_RATE", offsetof(agent_config, ecs_runtask_rate)},
                 {"DAGY_ECS_RUNTASK_BURST", offsetof(agent_config, ecs_runtask_burst)}};
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        double *d = (double *)((char *)c + rates[i].off);
        if ((v = getenv(rates[i].var)) && *v && (parse_seconds(v, 1000, d) || *d < 1)) {
            snprintf(err, AGENT_ERR_MAX, "%s=%.40s: expected a number 1-1000", rates[i].var, v);
            return -EINVAL;
        }
    }
    if (!(v = getenv("DAGY_ONLY_TASK")) || !*v)
        return 0;
    c->only_task = strdup(v);
    const char *att = getenv("DAGY_ATTEMPT"), *trid = getenv("DAGY_TASK_RUN_ID");
    if (!att || parse_int(att, 1, 1000, &c->only_attempt)) {
        snprintf(err, AGENT_ERR_MAX,
                 "DAGY_ONLY_TASK is set, so DAGY_ATTEMPT must be the attempt number 1-1000, not "
                 "\"%.40s\"",
                 att ? att : "(unset)");
        return -EINVAL;
    }
    if (!trid || !*trid || strlen(trid) > 36 || strspn(trid, "0123456789abcdef-") != strlen(trid)) {
        snprintf(err, AGENT_ERR_MAX,
                 "DAGY_ONLY_TASK is set, so DAGY_TASK_RUN_ID must be the task run's UUID, not "
                 "\"%.40s\"",
                 trid ? trid : "(unset)");
        return -EINVAL;
    }
    c->only_task_run_id = strdup(trid);
    return 0;
}

/* --resume-from must be a valid run id, other than this run's. (DAGY_RESULTS_BUCKET is
 * checked with the other bucket variables.) */
static int durable_config_check(agent_config *c, char *err)
{
    if (!c->resume_from)
        return 0;
    if (!proto_name_check(PROTO_NAME_RUN_ID, c->resume_from, err, AGENT_ERR_MAX)) {
        char why[AGENT_ERR_MAX];
        snprintf(why, sizeof why, "--resume-from / DAGY_RESUME_FROM: %s", err);
        snprintf(err, AGENT_ERR_MAX, "%s", why);
        return -EINVAL;
    }
    if (c->run_id && !strcmp(c->resume_from, c->run_id)) {
        snprintf(err, AGENT_ERR_MAX,
                 "--resume-from %.128s: a run cannot resume itself; a resumed run gets a new "
                 "run id",
                 c->resume_from);
        return -EINVAL;
    }
    return 0;
}

/* Checks what container mode needs and picks the status backend. */
static int finish(agent_config *c, char *err)
{
    const char *backend = getenv("DAGY_STATUS_BACKEND");
    c->container_mode = c->flow == NULL;
    if (backend && *backend && strcmp(backend, "local") && strcmp(backend, "dynamodb")) {
        snprintf(err, AGENT_ERR_MAX, "DAGY_STATUS_BACKEND=%.40s: expected local or dynamodb",
                 backend);
        return -EINVAL;
    }
    c->status_backend = strdup(backend && *backend ? backend
                               : c->container_mode ? "dynamodb"
                                                   : "local");
    if (c->container_mode && !c->graph && !c->help && !c->version) {
        const char *art = getenv("DAGY_ARTIFACT_S3_URI");
        if (!c->run_id) {
            snprintf(err, AGENT_ERR_MAX,
                     "DAGY_RUN_ID is not set (required in container mode; for a local run pass "
                     "--flow PATH)");
            return -EINVAL;
        }
        if (!art || !*art) {
            snprintf(err, AGENT_ERR_MAX,
                     "DAGY_ARTIFACT_S3_URI is not set (required in container mode; for a local "
                     "run pass --flow PATH)");
            return -EINVAL;
        }
        c->flow = strdup(art);
    }
    /* Run id, org id and flow name become file names, DynamoDB keys and S3 key segments. */
    if (c->run_id && !proto_name_check(PROTO_NAME_RUN_ID, c->run_id, err, AGENT_ERR_MAX))
        return -EINVAL;
    if (c->org_id && !proto_name_check(PROTO_NAME_ORG, c->org_id, err, AGENT_ERR_MAX))
        return -EINVAL;
    if (c->flow_name && !proto_name_check(PROTO_NAME_FLOW, c->flow_name, err, AGENT_ERR_MAX))
        return -EINVAL;
    if (durable_config_check(c, err))
        return -EINVAL;
    if (!c->run_id) {
        char id[40];
        agent_uuid(id);
        c->run_id = strdup(id);
    }
    if (!c->correlation_id)
        c->correlation_id = strdup(c->run_id);
    if (!c->state_dir)
        c->state_dir = strdup("./.dagy");
    return 0;
}

int agent_config_load(agent_config *c, int argc, char **argv, char *err)
{
    enum {
        O_FLOW = 256,
        O_PARAM,
        O_PJSON,
        O_RUNID,
        O_MAXP,
        O_DRAIN,
        O_STATE,
        O_LOGF,
        O_GRAPH,
        O_RESUME,
        O_VERSION,
        O_HELP
    };
    static const struct option opts[] = {{"flow", required_argument, 0, O_FLOW},
                                         {"param", required_argument, 0, O_PARAM},
                                         {"params-json", required_argument, 0, O_PJSON},
                                         {"run-id", required_argument, 0, O_RUNID},
                                         {"max-parallel", required_argument, 0, O_MAXP},
                                         {"drain-seconds", required_argument, 0, O_DRAIN},
                                         {"state-dir", required_argument, 0, O_STATE},
                                         {"log-format", required_argument, 0, O_LOGF},
                                         {"graph", no_argument, 0, O_GRAPH},
                                         {"resume-from", required_argument, 0, O_RESUME},
                                         {"version", no_argument, 0, O_VERSION},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    memset(c, 0, sizeof *c);
    c->parameters = cJSON_CreateObject();
    if (load_env(c, err))
        return AGENT_EXIT_INVALID;

    /* Parameters: DAGY_PARAMETERS, then --params-json, then --param, whatever the order given. */
    cJSON *params_cli = cJSON_CreateArray();
    const char *params_json = NULL;
    int o;
    opterr = 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        int rc = 0;
        switch (o) {
        case O_FLOW:
            free(c->flow);
            c->flow = strdup(optarg);
            break;
        case O_PARAM:
            cJSON_AddItemToArray(params_cli, cJSON_CreateString(optarg));
            break;
        case O_PJSON:
            params_json = optarg;
            break;
        case O_RUNID:
            free(c->run_id);
            c->run_id = strdup(optarg);
            break;
        case O_MAXP:
            if (parse_int(optarg, 1, 10000, &c->max_parallel))
                rc = snprintf(err, AGENT_ERR_MAX, "--max-parallel %.40s: expected 1-10000", optarg);
            break;
        case O_DRAIN:
            if (parse_seconds(optarg, 3600, &c->drain_seconds))
                rc = snprintf(err, AGENT_ERR_MAX, "--drain-seconds %.40s: expected 0-3600", optarg);
            break;
        case O_STATE:
            free(c->state_dir);
            c->state_dir = strdup(optarg);
            break;
        case O_LOGF:
            if (!strcmp(optarg, "json"))
                c->log_format = LOG_FORMAT_JSON;
            else if (!strcmp(optarg, "pretty"))
                c->log_format = LOG_FORMAT_PRETTY;
            else
                rc = snprintf(err, AGENT_ERR_MAX, "--log-format %.40s: expected json or pretty",
                              optarg);
            break;
        case O_GRAPH:
            c->graph = true;
            break;
        case O_RESUME:
            free(c->resume_from);
            c->resume_from = strdup(optarg);
            break;
        case O_VERSION:
            c->version = true;
            break;
        case 'h':
        case O_HELP:
            c->help = true;
            break;
        case ':':
            rc = snprintf(err, AGENT_ERR_MAX, "%s needs a value (see --help)", argv[optind - 1]);
            break;
        default:
            rc = snprintf(err, AGENT_ERR_MAX, "unknown option %s (see --help)", argv[optind - 1]);
            break;
        }
        if (rc) {
            cJSON_Delete(params_cli);
            return AGENT_EXIT_INVALID;
        }
    }
    if (optind < argc) {
        snprintf(err, AGENT_ERR_MAX, "unexpected argument \"%.100s\" (see --help)", argv[optind]);
        cJSON_Delete(params_cli);
        return AGENT_EXIT_INVALID;
    }
    int rc = 0;
    if (params_json) {
        char *text =
            params_json[0] == '@' ? read_params_file(params_json + 1, err) : strdup(params_json);
        rc = !text || merge_params_json(c, text, "--params-json", err);
        free(text);
    }
    const cJSON *p;
    cJSON_ArrayForEach(p, params_cli)
    {
        if (!rc)
            rc = add_param(c, p->valuestring, err);
    }
    cJSON_Delete(params_cli);
    if (rc || finish(c, err))
        return AGENT_EXIT_INVALID;
    return 0;
}

void agent_config_free(agent_config *c)
{
    char **strs[] = {&c->flow,          &c->run_id,         &c->flow_name,      &c->flow_version,
                     &c->org_id,        &c->environment,    &c->correlation_id, &c->state_dir,
                     &c->work_dir,      &c->status_backend, &c->runs_table,     &c->task_runs_table,
                     &c->traces_bucket, &c->python,         &c->runner,         &c->pip_command};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
    free(c->results_bucket);
    free(c->resume_from);
    free(c->only_task);
    free(c->only_task_run_id);
    c->results_bucket = c->resume_from = c->only_task = c->only_task_run_id = NULL;
    proto_list_free(c->dep_uris);
    c->dep_uris = NULL;
    cwlogs_config_free(&c->cwlogs);
    cJSON_Delete(c->parameters);
    c->parameters = NULL;
}

void agent_print_help(void)
{
    fputs(
        "usage: dagy-agent [--flow PATH|s3://BUCKET/KEY] [--param NAME=VALUE]...\n"
        "                  [--params-json JSON|@FILE] [--run-id ID] [--max-parallel N]\n"
        "                  [--drain-seconds N] [--state-dir DIR] [--log-format json|pretty]\n"
        "                  [--resume-from RUN_ID] [--graph] [--version] [--help]\n"
        "\n"
        "Runs a dagy flow: fetches and safely unpacks the artifact, runs the DAG of tasks,\n"
        "and reports every status change. Without --flow it runs in container mode and takes\n"
        "everything from the environment.\n"
        "\n"
        "Options:\n"
        "  --flow PATH          flow artifact (.zip, .tar.gz, .tar; detected by content), an\n"
        "                       unpacked directory holding flow_spec.json, or s3://BUCKET/KEY\n"
        "  --param NAME=VALUE   run parameter (string); repeatable; wins over --params-json\n"
        "  --params-json J|@F   run parameters as a JSON object, inline or from file F\n"
        "  --run-id ID          run id (default: DAGY_RUN_ID, else a new UUID)\n"
        "  --max-parallel N     tasks running at once (default: spec, else number of CPUs)\n"
        "  --drain-seconds N    on SIGTERM, wait this long for running tasks (default 15)\n"
        "  --state-dir DIR      local status directory (default ./.dagy)\n"
        "  --log-format F       json (default when stdout is not a terminal) or pretty\n"
        "  --resume-from RUN_ID reuse every task that SUCCEEDED in that run (same task_hash)\n"
        "                       instead of running it again; the new run gets a new run id\n"
        "  --graph              print the DAG as Graphviz DOT and exit\n"
        "  --version, --help\n"
        "\n"
        "Environment (container mode; see docs):\n"
        "  DAGY_RUN_ID, DAGY_ARTIFACT_S3_URI (required in container mode; URIs may end in\n"
        "  #sha256=HEX), DAGY_FLOW_NAME, DAGY_FLOW_VERSION, DAGY_ORG_ID, DAGY_ENVIRONMENT,\n"
        "  DAGY_DEP_PACKAGE_URIS, DAGY_PARAMETERS, DAGY_CORRELATION_ID, DAGY_LOG_LEVEL,\n"
        "  DAGY_STATUS_BACKEND (dynamodb|local), DAGY_RUNS_TABLE, DAGY_TASK_RUNS_TABLE,\n"
        "  DAGY_TRACES_BUCKET, DAGY_RESULTS_BUCKET (default: the traces bucket),\n"
        "  DAGY_RESUME_FROM, DAGY_WORK_DIR (default /tmp/dagy), DAGY_MAX_PARALLEL,\n"
        "  DAGY_DRAIN_SECONDS, DAGY_HEARTBEAT_SECONDS (default 30), DAGY_KILL_GRACE_SECONDS\n"
        "  (default 3), DAGY_KEEP_RUNS (run directories kept, default 20; 0 keeps all),\n"
        "  DAGY_MAX_RESULT_BYTES (default 16777216), DAGY_MAX_MAP_ITEMS (default 10000),\n"
        "  DAGY_PIP_COMMAND, DAGY_PYTHON, DAGY_PYTHON_RUNNER,\n"
        "  DAGY_METRICS (CloudWatch EMF lines, default 1),\n"
        "  DAGY_CAPACITY_PROVIDER, DAGY_PRICE_VCPU_HOUR, DAGY_PRICE_GB_HOUR,\n"
        "  DAGY_PRICE_STORAGE_GB_HOUR (estimated_cost_usd, see docs/operations.md),\n"
        "  DAGY_LOG_GROUP (also ship the lines to CloudWatch Logs, stream = run id),\n"
        "  DAGY_LOG_STDOUT (all|lifecycle, default lifecycle), DAGY_LOG_BUFFER_BYTES,\n"
        "  DAGY_UNPACK_MAX_BYTES, DAGY_UNPACK_MAX_ENTRIES, DAGY_UNPACK_MAX_RATIO,\n"
        "  tasks with \"executor\": {\"type\": \"ecs\"}: DAGY_ECS_SUBNETS,\n"
        "  DAGY_ECS_SECURITY_GROUPS, DAGY_ECS_ASSIGN_PUBLIC_IP, DAGY_ECS_CLUSTER_ARN,\n"
        "  DAGY_ECS_TASK_DEFINITION (default: the ECS task metadata's), DAGY_ECS_CONTAINER_NAME,\n"
        "  DAGY_ECS_POLL_SECONDS (default 5), DAGY_ECS_RUNTASK_RATE (20), _BURST (100);\n"
        "  an ECS child: DAGY_ONLY_TASK with DAGY_ATTEMPT and DAGY_TASK_RUN_ID,\n"
        "  AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL[_S3|_DYNAMODB|_ECS|_LOGS],\n"
        "  AWS credentials (environment, ECS container endpoint, shared credentials file).\n"
        "\n"
        "Exit codes: 0 run succeeded; 1 a task failed; 2 invalid input; 3 infrastructure\n"
        "(artifact not fetched, status store unreachable); 143 stopped by SIGTERM.\n",
        stdout);
}
