/* main.c - dagy-launch entry point: subcommand dispatch, option parsing and --help for each
 * subcommand (contract section 8). The work is done by the launcher library (launch.h). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/launch.h"

static const char usage_main[] =
    "usage: dagy-launch COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  run            launch one flow run on ECS Fargate\n"
    "  batch          launch many runs at once from a JSON file\n"
    "  status RUN_ID  print a run's item, its retry chain and its tasks\n"
    "  result RUN_ID TASK  print a task's stored result\n"
    "  retry RUN_ID   launch a run again (resuming from its failure by default)\n"
    "  cancel RUN_ID  cancel a run (--all-running: every active run)\n"
    "  logs RUN_ID    print a run's log lines from CloudWatch Logs (--follow, --task, --since)\n"
    "  reconcile      close stale runs whose ECS task has stopped; relaunch infra failures\n"
    "  init-tables    create the DynamoDB tables where absent\n"
    "  register-flow  upload a flow artifact and register its version\n"
    "  register-package     upload a dependency package and register it\n"
    "  register-deployment  register a deployment: an environment and its packages\n"
    "  lambda         serve AWS Lambda invocations (docs/lambda.md)\n"
    "\n"
    "`dagy-launch COMMAND --help` describes each command; docs/launch.md has the rest.\n"
    "Results are JSON on stdout. Exit codes: 0 success, 1 failure, 2 invalid input.\n";

#define LAUNCH_OPTS_HELP                                                                           \
    "  --flow-version V        version to run (default latest: the highest semantic version)\n"    \
    "  --param NAME=VALUE      run parameter (string); repeatable; wins over --params-json\n"      \
    "  --params-json J|@FILE   run parameters as a JSON object, inline or from FILE\n"             \
    "  --environment ENV       environment name (default: the deployment's)\n"                     \
    "  --deployment NAME       deployment whose dependency packages the run gets\n"                \
    "  --trigger-source S      audit: what triggered the run (default cli, or lambda)\n"           \
    "  --triggered-by S        audit: who triggered it (default $USER or the Lambda's name)\n"     \
    "  --profile P             small|medium|large|xlarge|heavy|max (default small)\n"              \
    "  --cpu N --memory MB     explicit Fargate size instead of a profile\n"                       \
    "  --ephemeral-storage G   ephemeral storage in GiB, 21-200 (default 21)\n"                    \
    "  --env NAME=VALUE        extra container variable; repeatable\n"                             \
    "  --capacity-provider C   FARGATE or FARGATE_SPOT (default: launch type FARGATE)\n"

static const char usage_run[] =
    "usage: dagy-launch run --flow NAME --org ORG [OPTIONS]\n"
    "\n"
    "Writes the run item QUEUED, then starts one ECS task (RunTask) and records its ARN.\n"
    "Prints {success, run_id, flow_name, flow_version, task_arn, correlation_id, error_message}.\n"
    "\n"
    "  --flow NAME             registered flow to run\n"
    "  --org ORG               organisation the flow belongs to\n"
    "  --run-id ID             run id (default: a new UUID); an existing id is never relaunched\n"
    "  --correlation-id ID     trace id carried into every log line (default: a new "
    "UUID)\n" LAUNCH_OPTS_HELP "\n"
    "Configuration comes from the environment: DAGY_ECS_CLUSTER_ARN, DAGY_ECS_SUBNETS,\n"
    "DAGY_ECS_SECURITY_GROUPS, and DAGY_ECS_TASK_DEFINITION or DAGY_ECS_WORKER_IMAGE,\n"
    "DAGY_ECS_EXECUTION_ROLE_ARN, DAGY_ECS_TASK_ROLE_ARN, DAGY_ECS_LOG_GROUP (see "
    "docs/launch.md).\n"
    "Exit: 0 launched (or the run id already has a task), 1 launch failed, 2 invalid input.\n";

static const char usage_batch[] =
    "usage: dagy-launch batch --file REQUESTS.json --org ORG [--correlation-id PARENT] "
    "[OPTIONS]\n"
    "\n"
    "REQUESTS.json is a JSON array of objects with the fields flow_name, flow_version,\n"
    "parameters, environment, deployment_name, workload_profile, cpu, memory,\n"
    "ephemeral_storage_gib, extra_env_vars, metadata, run_id, trigger_source, triggered_by,\n"
    "capacity_provider. Options give the defaults of every request (parameters and\n"
    "extra_env_vars are merged, the request's keys win). All requests are launched at once;\n"
    "request i gets the correlation id PARENT:i. Prints a JSON array of results in request\n"
    "order. Any invalid request: nothing is launched, exit 2. Exit 1 if any launch failed.\n"
    "\n"
    "  --file FILE             the requests\n"
    "  --org ORG               organisation of every request\n"
    "  --correlation-id ID     parent correlation id (default: a new UUID)\n"
    "  --flow NAME             default flow_name\n" LAUNCH_OPTS_HELP;

static const char usage_status[] =
    "usage: dagy-launch status RUN_ID\n"
    "\n"
    "Prints the run's DAGY_RUNS item as plain JSON, plus \"retry_chain\" (the runs it retries,\n"
    "nearest first, each {run_id, status}) and \"tasks\" (its DAGY_TASK_RUNS items: status,\n"
    "attempt, result_s3_uri, reused_from, ...). Exit 1 if there is no such run.\n";

static const char usage_result[] =
    "usage: dagy-launch result RUN_ID TASK\n"
    "\n"
    "Prints the task's stored result (its result_s3_uri) on stdout, byte for byte, after\n"
    "checking it against the task item's result_sha256. Exit 1 if there is none or it does\n"
    "not match.\n";

static const char usage_lambda[] =
    "usage: dagy-launch lambda\n"
    "\n"
    "Serves AWS Lambda invocations through the Runtime API at AWS_LAMBDA_RUNTIME_API: action\n"
    "events ({\"action\": \"launch\"|\"batch\"|\"status\"|\"retry\"|\"cancel\"|\"reconcile\", "
    "...}),\n"
    "API Gateway HTTP API requests, EventBridge schedules and ECS Task State Change events\n"
    "(docs/lambda.md). Each invocation answers before its deadline.\n";

static const char usage_retry[] =
    "usage: dagy-launch retry RUN_ID [--all] [--run-id NEW] [--correlation-id ID]\n"
    "\n"
    "Launches a new run with the source's exact flow version, parameters, packages,\n"
    "environment, org, size, capacity provider and extra variables; retry_of = RUN_ID. By\n"
    "default the agent resumes from RUN_ID (DAGY_RESUME_FROM: tasks that SUCCEEDED there with\n"
    "the same task_hash are reused); --all runs everything again. The source must have ended\n"
    "(a SUCCEEDED one only with --all). Prints the same JSON as run.\n"
    "\n"
    "  --all                   run every task again\n"
    "  --run-id NEW            the new run's id (default: a new UUID)\n"
    "  --correlation-id ID     default: the source's\n"
    "  --triggered-by S        audit: who asked (default $USER)\n";

static const char usage_cancel[] =
    "usage: dagy-launch cancel RUN_ID [--reason TEXT]\n"
    "       dagy-launch cancel --all-running [--flow NAME] [--reason TEXT]\n"
    "\n"
    "Records cancel_requested_at and cancel_reason on a QUEUED or RUNNING run, then stops its\n"
    "ECS task (StopTask, reason TEXT). The agent ends the run CANCELLED with stop_reason\n"
    "\"UserInitiated: TEXT\"; a QUEUED run whose task never started is set CANCELLED at once.\n"
    "Prints {run_id, status, task_arn, message} (an array with --all-running).\n"
    "Exit 0 done (or already cancelled), 1 no such run / already ended / AWS failure.\n";

static const char usage_reconcile[] =
    "usage: dagy-launch reconcile [--max-runs 50] [--stale-seconds 300] [--start-timeout 600]\n"
    "                           [--relaunch-infra 2]\n"
    "\n"
    "Queries the index of active runs (QUEUED/RUNNING ECS runs), describes the tasks of those\n"
    "not updated for --stale-seconds (QUEUED ones: also those older than --start-timeout), and\n"
    "closes the runs whose task has STOPPED: exit code 0 -> SUCCEEDED, cancelled through\n"
    "dagy-launch cancel -> CANCELLED, otherwise FAILED \"Reconciled: REASON\", with\n"
    "stop_reason \"stopCode: stoppedReason\". Infrastructure failures (TaskFailedToStart,\n"
    "SpotInterruption, OutOfMemory, a SIGTERM nobody asked for, no task RUNNING within\n"
    "--start-timeout) are relaunched at once as a resuming retry, up to --relaunch-infra per\n"
    "chain. Writes are conditional; idempotent (a second pass relaunches nothing).\n"
    "Prints {\"checked\": N, \"updated\": N, \"skipped\": N, \"relaunched\": N}.\n"
    "\n"
    "  --max-runs N            check at most N runs (default 50)\n"
    "  --stale-seconds N       ignore runs updated within N seconds (default 300)\n"
    "  --start-timeout N       a QUEUED run not RUNNING after N s failed to start (default\n"
    "                          600; a run without task ARN waits at least 120 s, the launch "
    "grace)\n"
    "  --relaunch-infra N      relaunches per chain of retries (default 2; 0 = never)\n";

static const char usage_init[] =
    "usage: dagy-launch init-tables\n"
    "\n"
    "Creates DAGY_RUNS, DAGY_TASK_RUNS, DAGY_FLOWS, DAGY_DEPLOYMENTS and DAGY_DEP_PACKAGES\n"
    "(names overridable with DAGY_*_TABLE) with on-demand billing where absent, and waits\n"
    "until they are ACTIVE. Idempotent. Prints {\"created\": [...], \"existing\": [...]}.\n";

static const char usage_register[] =
    "usage: dagy-launch register-flow --artifact FILE --flow NAME --flow-version V --org ORG\n"
    "\n"
    "Checks the artifact (safe unpack, flow_spec.json valid and naming the same flow and\n"
    "version), uploads it to s3://DAGY_ARTIFACT_BUCKET/flows/NAME/V/artifact.zip and writes\n"
    "the DAGY_FLOWS item with its spec and artifact_sha256. A version is immutable: the same\n"
    "artifact again is a no-op, a different one is refused (exit 2).\n";

enum {
    O_FLOW = 256,
    O_VERSION,
    O_ORG,
    O_PARAM,
    O_PJSON,
    O_ENVIRONMENT,
    O_DEPLOY,
    O_CORR,
    O_SRC,
    O_BY,
    O_PROFILE,
    O_CPU,
    O_MEM,
    O_EPH,
    O_ENV,
    O_CAP,
    O_RUNID,
    O_FILE,
    O_MAXRUNS,
    O_STALE,
    O_ARTIFACT,
    O_START_TIMEOUT,
    O_RELAUNCH,
    O_ALL,
    O_REASON,
    O_ALL_RUNNING,
    O_HELP
};

static int bad_usage(const char *cmd, const char *msg)
{
    fprintf(stderr, "dagy-launch %s: %s\n(see dagy-launch %s --help)\n", cmd, msg, cmd);
    return LAUNCH_EXIT_INVALID;
}

/* Stores one run/batch option; parameters and variables are applied at once so their errors
 * name the argument. Returns 0, or -EINVAL with err set. */
static int set_launch_opt(launch_opts *o, int c, const char *arg, const char **pjson, char *err)
{
    switch (c) {
    case O_FLOW:
        o->flow = arg;
        break;
    case O_VERSION:
        o->flow_version = arg;
        break;
    case O_ORG:
        o->org = arg;
        break;
    case O_PARAM:
        return launch_param_add(o->parameters, arg, err);
    case O_PJSON:
        *pjson = arg;
        break;
    case O_ENVIRONMENT:
        o->environment = arg;
        break;
    case O_DEPLOY:
        o->deployment = arg;
        break;
    case O_CORR:
        o->correlation_id = arg;
        break;
    case O_SRC:
        o->trigger_source = arg;
        break;
    case O_BY:
        o->triggered_by = arg;
        break;
    case O_PROFILE:
        o->profile = arg;
        break;
    case O_CPU:
        o->cpu = arg;
        break;
    case O_MEM:
        o->memory = arg;
        break;
    case O_EPH:
        o->ephemeral = arg;
        break;
    case O_ENV:
        return launch_env_add(o->env, arg, err);
    case O_CAP:
        o->capacity_provider = arg;
        break;
    case O_RUNID:
        o->run_id = arg;
        break;
    case O_FILE:
        o->file = arg;
        break;
    default:
        launch__fmt(err, LAUNCH_ERR_MAX, "unknown option");
        return -EINVAL;
    }
    return 0;
}

/* run and batch: parses, then launches. --param wins over --params-json whatever the order. */
static int cmd_launch(int argc, char **argv, bool batch)
{
    static const struct option opts[] = {{"flow", required_argument, 0, O_FLOW},
                                         {"flow-version", required_argument, 0, O_VERSION},
                                         {"org", required_argument, 0, O_ORG},
                                         {"param", required_argument, 0, O_PARAM},
                                         {"params-json", required_argument, 0, O_PJSON},
                                         {"environment", required_argument, 0, O_ENVIRONMENT},
                                         {"deployment", required_argument, 0, O_DEPLOY},
                                         {"correlation-id", required_argument, 0, O_CORR},
                                         {"trigger-source", required_argument, 0, O_SRC},
                                         {"triggered-by", required_argument, 0, O_BY},
                                         {"profile", required_argument, 0, O_PROFILE},
                                         {"cpu", required_argument, 0, O_CPU},
                                         {"memory", required_argument, 0, O_MEM},
                                         {"ephemeral-storage", required_argument, 0, O_EPH},
                                         {"env", required_argument, 0, O_ENV},
                                         {"capacity-provider", required_argument, 0, O_CAP},
                                         {"run-id", required_argument, 0, O_RUNID},
                                         {"file", required_argument, 0, O_FILE},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    const char *cmd = batch ? "batch" : "run", *pjson = NULL;
    char err[LAUNCH_ERR_MAX];
    launch_opts o = {.parameters = cJSON_CreateObject(), .env = cJSON_CreateObject()};
    int c, rc = 0;
    /* o.parameters collects the --param values; --params-json goes underneath them at the end. */
    while (rc == 0 && (c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (c == O_HELP) {
            fputs(batch ? usage_batch : usage_run, stdout);
            rc = -1;
        } else if (c == '?') {
            rc = bad_usage(cmd, "unknown option or missing value");
        } else if ((c == O_RUNID && batch) || (c == O_FILE && !batch)) {
            rc = bad_usage(cmd, c == O_RUNID ? "--run-id belongs in each request (run_id)"
                                             : "--file is for dagy-launch batch");
        } else if (set_launch_opt(&o, c, optarg, &pjson, err) < 0) {
            rc = bad_usage(cmd, err);
        }
    }
    if (rc == 0 && optind < argc)
        rc = bad_usage(cmd, "unexpected argument");
    if (rc == 0 && batch && !o.file)
        rc = bad_usage(cmd, "--file is required");
    if (rc == 0 && pjson) {
        cJSON *base = cJSON_CreateObject();
        if (launch_params_merge(base, pjson, "--params-json", err) < 0) {
            rc = bad_usage(cmd, err);
        } else {
            while (o.parameters->child) {
                cJSON *p = cJSON_DetachItemViaPointer(o.parameters, o.parameters->child);
                cJSON_DeleteItemFromObjectCaseSensitive(base, p->string);
                cJSON_AddItemToObject(base, p->string, p);
            }
        }
        cJSON_Delete(o.parameters);
        o.parameters = base;
    }
    if (rc == 0)
        rc = batch ? launch_cmd_batch(&o) : launch_cmd_run(&o);
    cJSON_Delete(o.parameters);
    cJSON_Delete(o.env);
    return rc < 0 ? 0 : rc;
}

static int cmd_reconcile(int argc, char **argv)
{
    static const struct option opts[] = {{"max-runs", required_argument, 0, O_MAXRUNS},
                                         {"stale-seconds", required_argument, 0, O_STALE},
                                         {"start-timeout", required_argument, 0, O_START_TIMEOUT},
                                         {"relaunch-infra", required_argument, 0, O_RELAUNCH},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    launch_reconcile_opts o = {50, 300, 600, 2};
    int c;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (c == O_HELP) {
            fputs(usage_reconcile, stdout);
            return 0;
        }
        if (c == O_MAXRUNS && launch_parse_int(optarg, 1, 100000, &o.max_runs) == 0)
            continue;
        if (c == O_STALE && launch_parse_int(optarg, 0, 100L * 86400, &o.stale_seconds) == 0)
            continue;
        if (c == O_START_TIMEOUT &&
            launch_parse_int(optarg, 0, 100L * 86400, &o.start_timeout) == 0)
            continue;
        if (c == O_RELAUNCH && launch_parse_int(optarg, 0, 100, &o.relaunch_infra) == 0)
            continue;
        return bad_usage("reconcile", c == O_MAXRUNS         ? "--max-runs must be 1-100000"
                                      : c == O_STALE         ? "--stale-seconds must be 0-8640000"
                                      : c == O_START_TIMEOUT ? "--start-timeout must be 0-8640000"
                                      : c == O_RELAUNCH      ? "--relaunch-infra must be 0-100"
                                                             : "unknown option or missing value");
    }
    if (optind < argc)
        return bad_usage("reconcile", "unexpected argument");
    return launch_cmd_reconcile(&o);
}

/* The one positional RUN_ID after the options (getopt permutes nothing: "+"). */
static const char *one_run_id(int argc, char **argv, const char *cmd, int *rc)
{
    if (optind != argc - 1) {
        *rc = bad_usage(cmd, optind >= argc ? "expected a RUN_ID" : "expected exactly one RUN_ID");
        return NULL;
    }
    return argv[optind];
}

static int cmd_retry(int argc, char **argv)
{
    static const struct option opts[] = {{"all", no_argument, 0, O_ALL},
                                         {"flow-version", required_argument, 0, O_VERSION},
                                         {"run-id", required_argument, 0, O_RUNID},
                                         {"correlation-id", required_argument, 0, O_CORR},
                                         {"triggered-by", required_argument, 0, O_BY},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    launch_retry_opts o = {.trigger_source = "retry"};
    const char *id = NULL;
    int c, rc = 0;
    /* RUN_ID may come first: "retry RUN --all". */
    if (argc > 1 && argv[1][0] != '-') {
        id = argv[1];
        argc--;
        argv++;
    }
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case O_HELP:
            fputs(usage_retry, stdout);
            return 0;
        case O_ALL:
            o.all = true;
            break;
        case O_VERSION:
            /* Every task_hash covers the artifact's sha256: another version reuses nothing, so
             * it is a new run, not a retry. */
            return bad_usage("retry", "--flow-version: a retry runs the source's exact version; "
                                      "to run another version, use dagy-launch run");
        case O_RUNID:
            o.run_id = optarg;
            break;
        case O_CORR:
            o.correlation_id = optarg;
            break;
        case O_BY:
            o.triggered_by = optarg;
            break;
        default:
            return bad_usage("retry", "unknown option or missing value");
        }
    }
    if (id && optind < argc)
        return bad_usage("retry", "unexpected argument");
    if (!id && !(id = one_run_id(argc, argv, "retry", &rc)))
        return rc;
    return launch_cmd_retry(id, &o);
}

static int cmd_cancel(int argc, char **argv)
{
    static const struct option opts[] = {{"reason", required_argument, 0, O_REASON},
                                         {"all-running", no_argument, 0, O_ALL_RUNNING},
                                         {"flow", required_argument, 0, O_FLOW},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    launch_cancel_opts o = {0};
    int c, rc = 0;
    if (argc > 1 && argv[1][0] != '-') {
        o.run_id = argv[1];
        argc--;
        argv++;
    }
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case O_HELP:
            fputs(usage_cancel, stdout);
            return 0;
        case O_REASON:
            o.reason = optarg;
            break;
        case O_ALL_RUNNING:
            o.all_running = true;
            break;
        case O_FLOW:
            o.flow = optarg;
            break;
        default:
            return bad_usage("cancel", "unknown option or missing value");
        }
    }
    if (o.all_running && (o.run_id || optind < argc))
        return bad_usage("cancel", "give either RUN_ID or --all-running, not both");
    if (!o.all_running && o.run_id && optind < argc)
        return bad_usage("cancel", "unexpected argument");
    if (!o.all_running && !o.run_id && !(o.run_id = one_run_id(argc, argv, "cancel", &rc)))
        return rc;
    if (o.flow && !o.all_running)
        return bad_usage("cancel", "--flow goes with --all-running");
    return launch_cmd_cancel(&o);
}

static int cmd_register(int argc, char **argv)
{
    static const struct option opts[] = {{"artifact", required_argument, 0, O_ARTIFACT},
                                         {"flow", required_argument, 0, O_FLOW},
                                         {"flow-version", required_argument, 0, O_VERSION},
                                         {"org", required_argument, 0, O_ORG},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    const char *artifact = NULL, *flow = NULL, *version = NULL, *org = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case O_HELP:
            fputs(usage_register, stdout);
            return 0;
        case O_ARTIFACT:
            artifact = optarg;
            break;
        case O_FLOW:
            flow = optarg;
            break;
        case O_VERSION:
            version = optarg;
            break;
        case O_ORG:
            org = optarg;
            break;
        default:
            return bad_usage("register-flow", "unknown option or missing value");
        }
    }
    if (optind < argc)
        return bad_usage("register-flow", "unexpected argument");
    if (!artifact || !flow || !version || !org)
        return bad_usage("register-flow", !artifact  ? "--artifact is required"
                                          : !flow    ? "--flow is required"
                                          : !version ? "--flow-version is required"
                                                     : "--org is required");
    return launch_cmd_register_flow(artifact, flow, version, org);
}

/* Commands without options: only --help. */
static int no_options(int argc, char **argv, const char *cmd, const char *usage, int nargs)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return -1;
    }
    if (argc - 1 != nargs || (nargs && argv[1][0] == '-'))
        return bad_usage(cmd, nargs == 2   ? "expected RUN_ID TASK"
                              : nargs == 1 ? "expected exactly one RUN_ID"
                                           : "takes no arguments");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_main, stderr);
        return LAUNCH_EXIT_INVALID;
    }
    const char *cmd = argv[1];
    argc--;
    argv++;
    optind = 1;
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("dagy-launch %s\n", DAGY_VERSION);
        return 0;
    }
    int rc;
    if (strcmp(cmd, "run") == 0 || strcmp(cmd, "batch") == 0)
        return cmd_launch(argc, argv, strcmp(cmd, "batch") == 0);
    if (strcmp(cmd, "reconcile") == 0)
        return cmd_reconcile(argc, argv);
    if (strcmp(cmd, "retry") == 0)
        return cmd_retry(argc, argv);
    if (strcmp(cmd, "cancel") == 0)
        return cmd_cancel(argc, argv);
    if (strcmp(cmd, "result") == 0)
        return (rc = no_options(argc, argv, cmd, usage_result, 2))
                   ? (rc < 0 ? 0 : rc)
                   : launch_cmd_result(argv[1], argv[2]);
    if (strcmp(cmd, "register-flow") == 0)
        return cmd_register(argc, argv);
    if (strcmp(cmd, "logs") == 0)
        return launch_logs_main(argc, argv);
    if (strcmp(cmd, "register-package") == 0 || strcmp(cmd, "register-deployment") == 0)
        return launch_register_main(argc, argv, cmd);
    if (strcmp(cmd, "status") == 0)
        return (rc = no_options(argc, argv, cmd, usage_status, 1)) ? (rc < 0 ? 0 : rc)
                                                                   : launch_cmd_status(argv[1]);
    if (strcmp(cmd, "lambda") == 0)
        return (rc = no_options(argc, argv, cmd, usage_lambda, 0)) ? (rc < 0 ? 0 : rc)
                                                                   : launch_cmd_lambda();
    if (strcmp(cmd, "init-tables") == 0)
        return (rc = no_options(argc, argv, cmd, usage_init, 0)) ? (rc < 0 ? 0 : rc)
                                                                 : launch_cmd_init_tables();
    fprintf(stderr, "dagy-launch: unknown command \"%s\"\n\n%s", cmd, usage_main);
    return LAUNCH_EXIT_INVALID;
}
