/* ecs_exec.c - the parent side of the per-task ECS executor (docs/agent.md, "Tasks on their own
 * ECS task"). An attempt of a task with "executor": {"type": "ecs"} is one ECS task of the run's
 * own task definition, whose overrides make its dagy-agent run just that attempt (ecs_child.c).
 * A child moves through one state machine:
 *   WAITING   - the plan started the attempt; it waits for a RunTask token (20/s, burst 100) and
 *               a free launch slot (at most ECS_LAUNCH_INFLIGHT RunTask calls at once);
 *   LAUNCHING - RunTask in flight (clientToken = hash of run id, task and attempt: a retried call
 *               starts no second task);
 *   FOLLOWING - the task exists: every poll, its task-run item is read (the fast path: the
 *               child's own record of the attempt) and the unsettled children are described
 *               (DescribeTasks, 100 ARNs a call); STOPPED without a record falls back on ECS's
 *               container exit code;
 *   ENDING    - the outcome is known (the result is being fetched from S3 for downstream
 *               tasks); then agent__attempt_end() and the child is freed.
 * The rule for the outcome: the child's item wins when it recorded this attempt's end
 * (SUCCEEDED, RETRYING, FAILED); otherwise the ECS task's stop decides (a timeout or a drain the
 * parent asked for, else FAILED with the container's exit code and ECS's reason). */
#include "agent/ecs_exec.h"
#include "agent/log.h"
#include "proto/sigv4.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    /* polling */
    int tick_pending; /* reads and describes of the current poll */
    uint64_t poll_ms; /* the interval now (grows under throttling) */
    bool poll_armed;
    bool describe_failing;
};

static void launch_pump(agent_ecs *e);
static void poll_arm(agent_ecs *e);
static void child_end(ecs_child *ch, sched_exit how, const char *err);

static agent_ecs *ecs_state(run_state *r)
{
    if (!r->ecs) {
        r->ecs = calloc(1, sizeof *r->ecs);
        r->ecs->r = r;
        r->ecs->rate = r->cfg->ecs_runtask_rate > 0 ? r->cfg->ecs_runtask_rate : ECS_RATE_PER_S;
        r->ecs->burst = r->cfg->ecs_runtask_burst > 0 ? r->cfg->ecs_runtask_burst : ECS_BURST;
        r->ecs->tokens = r->ecs->burst;
        r->ecs->refill_ms = uv_now(&r->loop);
        r->ecs->poll_ms = (uint64_t)(r->cfg->ecs_poll_seconds * 1000);
    }
    return r->ecs;
}

static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The spec task of plan task i, and the name its item and logs carry (a map instance's plan
 * task has its own name, NAME[7]: the one seam to change when plan and spec indices differ). */
static const flowspec_task *spec_task(const run_state *r, size_t i)
{
    return &r->spec->tasks[i];
}

static const char *item_name(const run_state *r, size_t i)
{
    return sched_task_name(r->plan, i);
}

static bool live(const run_state *r)
{
    return r->phase < RUN_DONE && r->status && r->aws;
}

/* ---- checks at start ---- */

bool agent__ecs_task(const run_state *r, size_t i)
{
    return r->only_index < 0 && spec_task(r, i)->executor != NULL;
}

int agent__ecs_init(run_state *r, char *err)
{
    agent_config *c = r->cfg;
    if (c->only_task) {
        r->only_index = flowspec_find(r->spec, c->only_task);
        if (r->only_index < 0) {
            snprintf(err, AGENT_ERR_MAX, "DAGY_ONLY_TASK=%.128s: the flow has no such task",
                     c->only_task);
            return AGENT_EXIT_INVALID;
        }
        return 0;
    }
    for (size_t i = 0; i < r->spec->n_tasks; i++) {
        if (!r->spec->tasks[i].executor)
            continue;
        const char *need = NULL;
        if (!c->flow || strncmp(c->flow, "s3://", 5) != 0)
            need = "the flow artifact in S3 (container mode, DAGY_ARTIFACT_S3_URI)";
        else if (strcmp(c->status_backend, "dynamodb") != 0)
            need = "DynamoDB status (DAGY_STATUS_BACKEND=dynamodb)";
        else if (!agent__results_bucket(r))
            need = "a results bucket (DAGY_RESULTS_BUCKET or DAGY_TRACES_BUCKET)";
        for (char **d = c->dep_uris; !need && d && *d; d++)
            if (strncmp(*d, "s3://", 5) != 0)
                need = "dependency packages in S3";
        if (need) {
            snprintf(err, AGENT_ERR_MAX,
                     "task \"%s\": executor \"ecs\" runs the task on its own ECS task, which "
                     "needs %s",
                     r->spec->tasks[i].name, need);
            return AGENT_EXIT_INVALID;
        }
    }
    return 0;
}

/* ---- configuration: the run's own ECS task ---- */

/* Everything but cluster and task definition comes from the environment (the launcher passes
 * the network configuration on: ECS task metadata has no subnet or security group ids). */
static const char *conf_from_env(agent_ecs *e)
{
    e->cluster = dup_or_null(env_or_null("DAGY_ECS_CLUSTER_ARN"));
    e->taskdef = dup_or_null(env_or_null("DAGY_ECS_TASK_DEFINITION"));
    e->subnets = dup_or_null(env_or_null("DAGY_ECS_SUBNETS"));
    e->sgs = dup_or_null(env_or_null("DAGY_ECS_SECURITY_GROUPS"));
    const char *ip = env_or_null("DAGY_ECS_ASSIGN_PUBLIC_IP");
    e->assign_ip = strdup(ip ? ip : "DISABLED");
    const char *cn = env_or_null("DAGY_ECS_CONTAINER_NAME");
    e->container = strdup(cn ? cn : "dagy-worker");
    e->task_role = dup_or_null(env_or_null("DAGY_ECS_TASK_ROLE_ARN"));
    e->exec_role = dup_or_null(env_or_null("DAGY_ECS_EXECUTION_ROLE_ARN"));
    e->parent_arn = dup_or_null(e->r->external_id);
    if (!e->subnets)
        return "DAGY_ECS_SUBNETS is not set";
    if (!e->sgs)
        return "DAGY_ECS_SECURITY_GROUPS is not set";
    if (strcmp(e->assign_ip, "ENABLED") != 0 && strcmp(e->assign_ip, "DISABLED") != 0)
        return "DAGY_ECS_ASSIGN_PUBLIC_IP must be ENABLED or DISABLED";
    return NULL;
}

static void conf_done(agent_ecs *e, const char *error)
{
    if (error && !e->conf_error) {
        size_t n = strlen(error) + 64;
        e->conf_error = malloc(n);
        snprintf(e->conf_error, n, "executor \"ecs\": %s", error);
    }
    e->conf_state = e->conf_error ? 3 : 2;
    launch_pump(e);
}

static void on_task_metadata(void *ud, const fetch_aws_result *res)
{
    agent_ecs *e = ud;
    if (!live(e->r))
        return;
    const cJSON *j = res->json;
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(j, "Cluster");
    const cJSON *fam = cJSON_GetObjectItemCaseSensitive(j, "Family");
    const cJSON *rev = cJSON_GetObjectItemCaseSensitive(j, "Revision");
    const cJSON *arn = cJSON_GetObjectItemCaseSensitive(j, "TaskARN");
    if (!e->cluster && cJSON_IsString(cl))
        e->cluster = strdup(cl->valuestring);
    if (!e->taskdef && cJSON_IsString(fam) && cJSON_IsString(rev)) {
        size_t n = strlen(fam->valuestring) + strlen(rev->valuestring) + 2;
        e->taskdef = malloc(n);
        snprintf(e->taskdef, n, "%s:%s", fam->valuestring, rev->valuestring);
    }
    if (!e->parent_arn && cJSON_IsString(arn))
        e->parent_arn = strdup(arn->valuestring);
    char why[FETCH_ERR_MAX + 80];
    snprintf(why, sizeof why, "the ECS task metadata (%s) names no %s",
             res->message ? res->message : "read", !e->cluster ? "Cluster" : "Family/Revision");
    conf_done(e, e->cluster && e->taskdef ? NULL : why);
}

/* Resolves the configuration once (state 1 while the metadata is read). */
static void conf_start(agent_ecs *e)
{
    e->conf_state = 1;
    const char *bad = conf_from_env(e);
    const char *base = env_or_null("ECS_CONTAINER_METADATA_URI_V4");
    if (bad || (e->cluster && e->taskdef)) {
        conf_done(e, bad);
        return;
    }
    if (!base) {
        conf_done(e, "ECS_CONTAINER_METADATA_URI_V4 is not set (not on ECS?), so "
                     "DAGY_ECS_CLUSTER_ARN and DAGY_ECS_TASK_DEFINITION must be");
        return;
    }
    size_t n = strlen(base) + 8;
    char *url = malloc(n);
    snprintf(url, n, "%s%s", base, base[strlen(base) - 1] == '/' ? "task" : "/task");
    int rc = fetch_http_get(e->r->aws, url, on_task_metadata, e);
    free(url);
    if (rc)
        conf_done(e, "cannot read the ECS task metadata");
}

/* ---- children ---- */

static void child_unref(ecs_child *ch)
{
    if (--ch->refs > 0 || !ch->detached)
        return;
    agent_ecs *e = ch->r->ecs;
    for (ecs_child **p = &e->all; *p; p = &(*p)->next)
        if (*p == ch) {
            *p = ch->next;
            break;
        }
    for (char **v = ch->env; v && *v; v++)
        free(*v);
    free(ch->env);
    free(ch->instance);
    free(ch->arn);
    free(ch->ecs_reason);
    free(ch);
}

/* Ends the attempt in the plan; the child is freed once its last callback came. */
static void child_end(ecs_child *ch, sched_exit how, const char *err)
{
    run_state *r = ch->r;
    agent_task *t = &r->tasks[ch->i];
    if (ch->detached)
        return;
    ch->detached = true;
    t->ecs = NULL;
    if (!t->adopted && t->item) /* above anything the child could still write */
        status_seq_floor(r->status, t->item, ch->seq0 + 2 * ECS_CHILD_SEQ_GAP);
    ch->refs++;
    agent__attempt_end(r, ch->i, how, err);
    child_unref(ch);
}

static double item_seq(const cJSON *it)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "status_seq");
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* The child's environment: what container mode needs (contract section 5), the child mode,
 * and the instance's extra variables. */
static cJSON *child_env(ecs_child *ch)
{
    run_state *r = ch->r;
    agent_config *c = r->cfg;
    cJSON *env = cJSON_CreateArray();
    char att[16], *params = cJSON_PrintUnformatted(c->parameters);
    snprintf(att, sizeof att, "%d", ch->attempt);
    char *deps = NULL;
    size_t dl = 1;
    for (char **d = c->dep_uris; d && *d; d++)
        dl += strlen(*d) + 1;
    deps = calloc(1, dl);
    for (char **d = c->dep_uris; d && *d; d++)
        strcat(strlen(deps) ? strcat(deps, ",") : deps, *d);
    const char *kv[][2] = {
        {"DAGY_RUN_ID", c->run_id},
        {"DAGY_FLOW_NAME", c->flow_name},
        {"DAGY_FLOW_VERSION", c->flow_version},
        {"DAGY_ORG_ID", c->org_id},
        {"DAGY_ENVIRONMENT", c->environment},
        {"DAGY_CORRELATION_ID", c->correlation_id},
        {"DAGY_ARTIFACT_S3_URI", c->flow},
        {"DAGY_DEP_PACKAGE_URIS", *deps ? deps : NULL},
        {"DAGY_PARAMETERS", params},
        {"DAGY_STATUS_BACKEND", "dynamodb"},
        {"DAGY_RUNS_TABLE", c->runs_table},
        {"DAGY_TASK_RUNS_TABLE", c->task_runs_table},
        {"DAGY_TRACES_BUCKET", c->traces_bucket},
        {"DAGY_RESULTS_BUCKET", agent__results_bucket(r)},
        {"DAGY_ONLY_TASK", ch->instance},
        {"DAGY_ATTEMPT", att},
        {"DAGY_TASK_RUN_ID", r->tasks[ch->i].task_run_id},
        {"DAGY_DRAIN_SECONDS", "0"}, /* a stopped child stops at once: the parent records it */
        {"DAGY_LOG_LEVEL", env_or_null("DAGY_LOG_LEVEL")},
        {"DAGY_MAX_RESULT_BYTES", env_or_null("DAGY_MAX_RESULT_BYTES")},
        {"DAGY_KILL_GRACE_SECONDS", env_or_null("DAGY_KILL_GRACE_SECONDS")},
        {"DAGY_PIP_COMMAND", env_or_null("DAGY_PIP_COMMAND")},
        {"DAGY_LOG_GROUP", env_or_null("DAGY_LOG_GROUP")},
    };
    for (size_t k = 0; k < sizeof kv / sizeof kv[0]; k++) {
        if (!kv[k][1])
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", kv[k][0]);
        cJSON_AddStringToObject(o, "value", kv[k][1]);
        cJSON_AddItemToArray(env, o);
    }
    for (char **v = ch->env; v && *v; v++) {
        const char *eq = strchr(*v, '=');
        if (!eq)
            continue;
        cJSON *o = cJSON_CreateObject();
        char *name = strndup(*v, (size_t)(eq - *v));
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddStringToObject(o, "value", eq + 1);
        free(name);
        cJSON_AddItemToArray(env, o);
    }
    cJSON_free(params);
    free(deps);
    return env;
}

static cJSON *str_list(const char *csv)
{
    cJSON *a = cJSON_CreateArray();
    char **l = proto_split_list(csv, ',');
    for (size_t k = 0; l && l[k]; k++)
        cJSON_AddItemToArray(a, cJSON_CreateString(l[k]));
    proto_list_free(l);
    return a;
}

static void add_tag(cJSON *tags, const char *key, const char *value)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "key", key);
    cJSON_AddStringToObject(t, "value", value);
    cJSON_AddItemToArray(tags, t);
}

/* overrides: the executor's size, the roles, the worker container's environment. */
static cJSON *runtask_overrides(ecs_child *ch)
{
    agent_ecs *e = ch->r->ecs;
    const flowspec_executor *x = spec_task(ch->r, ch->i)->executor;
    cJSON *ov = cJSON_CreateObject();
    char num[16];
    if (x->cpu) {
        snprintf(num, sizeof num, "%d", x->cpu);
        cJSON_AddStringToObject(ov, "cpu", num);
        snprintf(num, sizeof num, "%d", x->memory);
        cJSON_AddStringToObject(ov, "memory", num);
    }
    if (x->ephemeral_gib)
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(ov, "ephemeralStorage"), "sizeInGiB",
                                x->ephemeral_gib);
    if (e->task_role)
        cJSON_AddStringToObject(ov, "taskRoleArn", e->task_role);
    if (e->exec_role)
        cJSON_AddStringToObject(ov, "executionRoleArn", e->exec_role);
    cJSON *co = cJSON_CreateObject();
    cJSON_AddStringToObject(co, "name", e->container);
    cJSON_AddItemToObject(co, "environment", child_env(ch));
    /* A container's hard memory limit (the managed definition has one) must not cap the task's
     * new size: raise it with the task, as dagy-launch does. */
    if (x->cpu)
        cJSON_AddNumberToObject(co, "memory", x->memory);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(ov, "containerOverrides"), co);
    return ov;
}

/* The RunTask body (docs/agent.md lists every field). */
static cJSON *runtask_body(ecs_child *ch)
{
    agent_ecs *e = ch->r->ecs;
    const flowspec_executor *x = spec_task(ch->r, ch->i)->executor;
    cJSON *b = cJSON_CreateObject();
    char att[16];
    snprintf(att, sizeof att, "%d", ch->attempt);
    cJSON_AddStringToObject(b, "cluster", e->cluster);
    cJSON_AddStringToObject(b, "taskDefinition", e->taskdef);
    cJSON_AddNumberToObject(b, "count", 1);
    if (x->capacity_provider) {
        cJSON *cp = cJSON_CreateObject();
        cJSON_AddStringToObject(cp, "capacityProvider", x->capacity_provider);
        cJSON_AddNumberToObject(cp, "weight", 1);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(b, "capacityProviderStrategy"), cp);
    } else {
        cJSON_AddStringToObject(b, "launchType", "FARGATE");
    }
    cJSON *vpc = cJSON_AddObjectToObject(cJSON_AddObjectToObject(b, "networkConfiguration"),
                                         "awsvpcConfiguration");
    cJSON_AddItemToObject(vpc, "subnets", str_list(e->subnets));
    cJSON_AddItemToObject(vpc, "securityGroups", str_list(e->sgs));
    cJSON_AddStringToObject(vpc, "assignPublicIp", e->assign_ip);
    cJSON_AddItemToObject(b, "overrides", runtask_overrides(ch));
    cJSON *tags = cJSON_AddArrayToObject(b, "tags");
    add_tag(tags, "dagy:run_id", ch->r->cfg->run_id);
    add_tag(tags, "dagy:task", spec_task(ch->r, ch->i)->name);
    add_tag(tags, "dagy:attempt", att);
    add_tag(tags, "dagy:parent", e->parent_arn ? e->parent_arn : "none");
    if (ch->r->cfg->flow_name)
        add_tag(tags, "dagy:flow_name", ch->r->cfg->flow_name);
    cJSON_AddStringToObject(b, "startedBy", "dagy-agent");
    cJSON_AddStringToObject(b, "clientToken", ch->token);
    return b;
}

/* The first failure of a RunTask answer: "REASON (detail, arn)". */
static void runtask_failure(const cJSON *j, char *out, size_t n)
{
    const cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "failures"), 0);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(f, "reason");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(f, "detail");
    snprintf(out, n, "%s%s%s%s", cJSON_IsString(rs) ? rs->valuestring : "RunTask returned no task",
             cJSON_IsString(dt) ? " (" : "", cJSON_IsString(dt) ? dt->valuestring : "",
             cJSON_IsString(dt) ? ")" : "");
}

static void send_stop(ecs_child *ch, const char *why);

static void on_runtask(void *ud, const fetch_aws_result *res)
{
    ecs_child *ch = ud;
    run_state *r = ch->r;
    if (!live(r)) {
        child_unref(ch);
        return;
    }
    r->ecs->launching--;
    const cJSON *task = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(res->json, "tasks"), 0);
    const cJSON *arn = cJSON_GetObjectItemCaseSensitive(task, "taskArn");
    char why[AGENT_ERR_MAX];
    if (!ch->detached && (res->err || res->http_status / 100 != 2 || !cJSON_IsString(arn))) {
        if (res->err || res->http_status / 100 != 2)
            snprintf(why, sizeof why, "ECS RunTask failed: %s", res->message ? res->message : "");
        else
            runtask_failure(res->json, why, sizeof why);
        child_end(ch, ch->cancelled ? SCHED_EXIT_CANCELLED : SCHED_EXIT_FAILED, why);
    } else if (!ch->detached) {
        agent_task *t = &r->tasks[ch->i];
        ch->arn = strdup(arn->valuestring);
        ch->state = CH_FOLLOWING;
        ch->seq0 = status_item_seq(r->status, t->item);
        status_set_str(t->item, "external_id", ch->arn);
        status_touch(r->status, t->item);
        log_line *l = agent_log_begin(LOG_INFO, "ecs_task_started",
                                      "task \"%s\" attempt %d runs on ECS task %s",
                                      item_name(r, ch->i), ch->attempt, ch->arn);
        agent_log_str(l, "task_name", item_name(r, ch->i));
        agent_log_str(l, "task_run_id", t->task_run_id);
        agent_log_int(l, "attempt", ch->attempt);
        agent_log_str(l, "task_arn", ch->arn);
        agent_log_end(l);
        if (ch->cancelled || ch->timed_out)
            send_stop(ch, ch->cancelled ? "dagy: the parent run is shutting down"
                                        : "dagy: the attempt exceeded its timeout");
        poll_arm(r->ecs);
    }
    launch_pump(r->ecs);
    child_unref(ch);
}

/* Sends one RunTask. */
static void launch(ecs_child *ch)
{
    run_state *r = ch->r;
    static const fetch_retry retry = {.max_attempts = 8, .base_ms = 200, .cap_ms = 10000};
    cJSON *body = runtask_body(ch);
    const cJSON *co = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(body, "overrides"), "containerOverrides");
    char *cot = cJSON_PrintUnformatted(co), *text = cJSON_PrintUnformatted(body);
    size_t chars = cot ? strlen(cot) : 0;
    cJSON_Delete(body);
    cJSON_free(cot);
    char why[200];
    int rc = -ENOMEM;
    if (text && chars > ECS_OVERRIDES_MAX) {
        snprintf(why, sizeof why,
                 "the ECS child's container overrides would be %zu characters, over ECS's limit "
                 "of %d (large parameters: pass them by reference)",
                 chars, ECS_OVERRIDES_MAX);
        free(text);
        child_end(ch, SCHED_EXIT_FATAL, why);
        return;
    }
    ch->state = CH_LAUNCHING;
    ch->refs++;
    r->ecs->launching++;
    if (text)
        rc = fetch_aws_json(r->aws, "ecs", ECS_TARGET "RunTask", text, &retry, on_runtask, ch);
    free(text);
    if (rc) {
        r->ecs->launching--;
        ch->refs--;
        snprintf(why, sizeof why, "ECS RunTask could not be sent: %s", strerror(-rc));
        child_end(ch, SCHED_EXIT_FAILED, why);
    }
}

static void on_launch_timer(uv_timer_t *t)
{
    run_state *r = t->data;
    if (r->ecs)
        launch_pump(r->ecs);
}

/* Starts waiting children while the token bucket and the launch slots allow. */
static void launch_pump(agent_ecs *e)
{
    run_state *r = e->r;
    if (!live(r) || e->conf_state == 1)
        return;
    uint64_t now = uv_now(&r->loop);
    e->tokens += (double)(now - e->refill_ms) * e->rate / 1000.0;
    if (e->tokens > e->burst)
        e->tokens = e->burst;
    e->refill_ms = now;
    for (ecs_child *ch = e->all, *next; ch; ch = next) {
        next = ch->next;
        if (ch->state != CH_WAITING || ch->detached)
            continue;
        if (e->conf_state == 0) {
            conf_start(e); /* calls launch_pump again when the configuration is known */
            return;
        }
        if (e->conf_state == 3) {
            child_end(ch, SCHED_EXIT_FATAL, e->conf_error);
            continue;
        }
        if (e->launching >= ECS_LAUNCH_INFLIGHT)
            return; /* on_runtask pumps again */
        if (e->tokens < 1.0) {
            uint64_t wait = (uint64_t)((1.0 - e->tokens) * 1000.0 / e->rate) + 1;
            uv_timer_start(&r->ecs_launch_timer, on_launch_timer, wait, 0);
            return;
        }
        e->tokens -= 1.0;
        launch(ch);
    }
}

/* clientToken: hex SHA-256 of run id, instance and attempt (64 characters, ECS's maximum): the
 * same attempt asked twice is one task. */
static void client_token(const char *run_id, const char *instance, int attempt, char out[65])
{
    size_t n = strlen(run_id) + strlen(instance) + 32;
    char *s = malloc(n);
    int len = snprintf(s, n, "%s\n%s\n%d", run_id, instance, attempt);
    sigv4_sha256_hex(s, (size_t)len, out);
    free(s);
}

void agent__ecs_start(run_state *r, size_t i, const char *instance, char *const *extra_env)
{
    agent_ecs *e = ecs_state(r);
    ecs_child *ch = calloc(1, sizeof *ch);
    size_t n = 0;
    while (extra_env && extra_env[n])
        n++;
    ch->r = r;
    ch->i = i;
    ch->attempt = sched_task_attempt(r->plan, i);
    ch->instance = strdup(instance ? instance : item_name(r, i));
    ch->env = calloc(n + 1, sizeof *ch->env);
    for (size_t k = 0; k < n; k++)
        ch->env[k] = strdup(extra_env[k]);
    ch->ecs_exit = -1;
    client_token(r->cfg->run_id, ch->instance, ch->attempt, ch->token);
    ch->next = e->all;
    e->all = ch;
    r->tasks[i].ecs = ch;
    launch_pump(e);
}

/* ---- following: the item first, DescribeTasks for the rest ---- */

static const char *str_attr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void on_result_fetched(void *ud, const fetch_aws_result *res)
{
    ecs_child *ch = ud;
    run_state *r = ch->r;
    if (!live(r)) {
        child_unref(ch);
        return;
    }
    char why[AGENT_ERR_MAX];
    if (res->err || res->http_status / 100 != 2) {
        snprintf(why, sizeof why, "infrastructure: cannot fetch the result of the ECS attempt: %s",
                 res->message ? res->message : "no answer");
        r->tasks[ch->i].infra = true;
        child_end(ch, SCHED_EXIT_FAILED, why);
    } else {
        r->tasks[ch->i].has_result = true;
        child_end(ch, SCHED_EXIT_OK, NULL);
    }
    child_unref(ch);
}

/* SUCCEEDED: the result attributes go on the parent's copy of the item, and the stored result
 * is fetched (verified) for downstream tasks. */
static void end_succeeded(ecs_child *ch, const cJSON *stored, cJSON *it)
{
    run_state *r = ch->r;
    const char *uri = str_attr(stored, "result_s3_uri"), *sha = str_attr(stored, "result_sha256");
    static const char *const keep[] = {"result_s3_uri", "result_sha256", "task_hash"};
    for (size_t k = 0; k < sizeof keep / sizeof keep[0]; k++)
        status_set_str(it, keep[k], str_attr(stored, keep[k]));
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(stored, "result_bytes");
    if (cJSON_IsNumber(bytes))
        status_set_num(it, "result_bytes", bytes->valuedouble);
    if (!uri || !sha) {
        child_end(ch, SCHED_EXIT_OK, NULL);
        return;
    }
    size_t n = strlen(uri) + strlen(sha) + 16;
    char *full = malloc(n), *path = agent__task_file(r, AGENT_DIR_RESULTS, ch->i, 0);
    snprintf(full, n, "%s#sha256=%s", uri, sha);
    ch->state = CH_ENDING;
    ch->refs++;
    int rc = fetch_s3_get_file(r->aws, full, path, NULL, on_result_fetched, ch);
    free(full);
    free(path);
    if (rc) {
        ch->refs--;
        r->tasks[ch->i].infra = true;
        child_end(ch, SCHED_EXIT_FAILED,
                  "infrastructure: cannot fetch the result of the ECS attempt");
    }
}

/* The child recorded the end of this attempt: its record is the outcome. */
static void end_from_item(ecs_child *ch, const cJSON *stored, const char *st)
{
    run_state *r = ch->r;
    agent_task *t = &r->tasks[ch->i];
    const cJSON *ec = cJSON_GetObjectItemCaseSensitive(stored, "exit_code");
    const char *msg = str_attr(stored, "error_message");
    t->exit_code = cJSON_IsNumber(ec) ? ec->valueint : -1;
    status_seq_floor(r->status, t->item, (uint64_t)item_seq(stored));
    if (str_attr(stored, "trace_s3_uri"))
        status_set_str(t->item, "trace_s3_uri", str_attr(stored, "trace_s3_uri"));
    if (!strcmp(st, "SUCCEEDED")) {
        t->adopted = true; /* terminal: the child's write stands */
        end_succeeded(ch, stored, t->item);
        return;
    }
    /* FAILED is the child's last attempt (or one that cannot be retried): terminal too. */
    bool last = !strcmp(st, "FAILED");
    t->adopted = last;
    child_end(ch, last ? SCHED_EXIT_FATAL : SCHED_EXIT_FAILED, msg ? msg : "the attempt failed");
}

/* ECS stopped the task and the child recorded no end: the stop decides. */
static void end_from_ecs(ecs_child *ch)
{
    char why[AGENT_ERR_MAX];
    ch->r->tasks[ch->i].exit_code = ch->ecs_exit;
    if (ch->cancelled) {
        snprintf(why, sizeof why, "Worker shutdown requested via %s: ECS task stopped",
                 ch->r->stop_signal ? ch->r->stop_signal : "SIGTERM");
        child_end(ch, SCHED_EXIT_CANCELLED, why);
    } else if (ch->timed_out) {
        child_end(ch, SCHED_EXIT_TIMED_OUT, NULL);
    } else {
        char code[24] = "unknown";
        if (ch->ecs_exit >= 0)
            snprintf(code, sizeof code, "%d", ch->ecs_exit);
        snprintf(why, sizeof why,
                 "ECS task %s stopped without recording attempt %d (exit code %s%s%s)", ch->arn,
                 ch->attempt, code, ch->ecs_reason ? "; " : "",
                 ch->ecs_reason ? ch->ecs_reason : "");
        child_end(ch, SCHED_EXIT_FAILED, why);
    }
}

static void tick_done(agent_ecs *e);
static void read_item(ecs_child *ch);

static void on_item(void *ctx, int rc, const cJSON *stored, const char *err)
{
    ecs_child *ch = ctx;
    run_state *r = ch->r;
    ch->reading = false;
    /* ENDING: an earlier read already decided (a second read, started when ECS said STOPPED,
     * must not fetch the result into the same file again). */
    if (!live(r) || ch->detached || ch->state == CH_ENDING) {
        child_unref(ch);
        if (live(r))
            tick_done(r->ecs);
        return;
    }
    const char *st = str_attr(stored, "status");
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(stored, "attempt");
    bool mine = rc == 0 && st && cJSON_IsNumber(att) && att->valueint == ch->attempt &&
                item_seq(stored) > (double)ch->seq0 + 0.5 * ECS_CHILD_SEQ_GAP;
    bool ended =
        mine && (!strcmp(st, "SUCCEEDED") || !strcmp(st, "FAILED") || !strcmp(st, "RETRYING"));
    if (ended)
        end_from_item(ch, stored, st);
    else if (ch->stopped && !ch->reread)
        end_from_ecs(ch);
    else if (ch->reread) { /* STOPPED came while this read was in flight: read once more */
        ch->reread = false;
        read_item(ch);
    }
    (void)err;
    tick_done(r->ecs);
    child_unref(ch);
}

static void read_item(ecs_child *ch)
{
    run_state *r = ch->r;
    if (ch->reading)
        return;
    ch->reading = true;
    ch->refs++;
    r->ecs->tick_pending++;
    int rc =
        status_store_read(r->status, STATUS_TASK, r->cfg->run_id, item_name(r, ch->i), on_item, ch);
    if (rc < 0)
        on_item(ch, rc, NULL, NULL);
}

static ecs_child *by_arn(agent_ecs *e, const char *arn)
{
    for (ecs_child *ch = e->all; arn && ch; ch = ch->next)
        if (!ch->detached && ch->arn && !strcmp(ch->arn, arn))
            return ch;
    return NULL;
}

/* A task ECS says is STOPPED (or MISSING): its exit code, then one more read of its item. */
static void mark_stopped(ecs_child *ch, const cJSON *task)
{
    if (ch->stopped || ch->state != CH_FOLLOWING)
        return;
    ch->stopped = true;
    const cJSON *c, *cs = cJSON_GetObjectItemCaseSensitive(task, "containers");
    cJSON_ArrayForEach(c, cs)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *ec = cJSON_GetObjectItemCaseSensitive(c, "exitCode");
        bool ours = cJSON_IsString(name) && !strcmp(name->valuestring, ch->r->ecs->container);
        if (ours && cJSON_IsNumber(ec))
            ch->ecs_exit = ec->valueint;
    }
    const char *code = str_attr(task, "stopCode"), *why = str_attr(task, "stoppedReason");
    char buf[600];
    snprintf(buf, sizeof buf, "%s%s%s", code ? code : (task ? "" : "MISSING"),
             code && why ? ": " : "", why ? why : "");
    free(ch->ecs_reason);
    ch->ecs_reason = *buf ? strdup(buf) : NULL;
    log_line *l = agent_log_begin(LOG_INFO, "ecs_task_stopped", "ECS task %s STOPPED%s%s", ch->arn,
                                  *buf ? ": " : "", buf);
    agent_log_str(l, "task_name", item_name(ch->r, ch->i));
    agent_log_int(l, "attempt", ch->attempt);
    agent_log_str(l, "task_arn", ch->arn);
    if (ch->ecs_exit >= 0)
        agent_log_int(l, "exit_code", ch->ecs_exit);
    agent_log_end(l);
    if (ch->reading)
        ch->reread = true;
    else
        read_item(ch);
}

typedef struct {
    agent_ecs *e;
    char **arns; /* the ARNs asked for */
    size_t n;
} describe_job;

static void on_describe(void *ud, const fetch_aws_result *res)
{
    describe_job *d = ud;
    agent_ecs *e = d->e;
    if (live(e->r)) {
        bool ok = !res->err && res->http_status / 100 == 2;
        if (!ok) {
            /* Throttled (or failing) after fetch_aws's own retries: poll less often. */
            e->poll_ms = e->poll_ms * 2 > ECS_POLL_MAX_MS ? ECS_POLL_MAX_MS : e->poll_ms * 2;
            if (!e->describe_failing) {
                log_line *l = agent_log_begin(LOG_WARNING, "ecs_describe_failed",
                                              "DescribeTasks failed (%s); polling every %.1f s",
                                              res->message ? res->message : "no answer",
                                              (double)e->poll_ms / 1000);
                agent_log_str(l, "error", res->message);
                agent_log_end(l);
            }
            e->describe_failing = true;
        } else {
            e->describe_failing = false;
            e->poll_ms = (uint64_t)(e->r->cfg->ecs_poll_seconds * 1000);
        }
        const cJSON *t, *f;
        const cJSON *tasks = ok ? cJSON_GetObjectItemCaseSensitive(res->json, "tasks") : NULL;
        const cJSON *fails = ok ? cJSON_GetObjectItemCaseSensitive(res->json, "failures") : NULL;
        cJSON_ArrayForEach(t, tasks)
        {
            ecs_child *ch = by_arn(e, str_attr(t, "taskArn"));
            const char *last = str_attr(t, "lastStatus");
            if (ch && last && !strcmp(last, "STOPPED"))
                mark_stopped(ch, t);
        }
        cJSON_ArrayForEach(f, fails)
        {
            ecs_child *ch = by_arn(e, str_attr(f, "arn"));
            const char *why = str_attr(f, "reason");
            if (ch && why && !strcmp(why, "MISSING"))
                mark_stopped(ch, NULL);
        }
    }
    for (size_t k = 0; k < d->n; k++)
        free(d->arns[k]);
    free(d->arns);
    free(d);
    if (live(e->r))
        tick_done(e);
}

/* DescribeTasks for the children in [from, from+n) of the unsettled list. */
static void describe(agent_ecs *e, ecs_child **list, size_t n)
{
    static const fetch_retry retry = {.max_attempts = 5, .base_ms = 200, .cap_ms = 5000};
    describe_job *d = calloc(1, sizeof *d);
    d->e = e;
    d->arns = calloc(n, sizeof *d->arns);
    cJSON *b = cJSON_CreateObject(), *arns = cJSON_CreateArray();
    cJSON_AddStringToObject(b, "cluster", e->cluster);
    for (size_t k = 0; k < n; k++) {
        d->arns[d->n++] = strdup(list[k]->arn);
        cJSON_AddItemToArray(arns, cJSON_CreateString(list[k]->arn));
    }
    cJSON_AddItemToObject(b, "tasks", arns);
    char *text = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    e->tick_pending++;
    int rc = text ? fetch_aws_json(e->r->aws, "ecs", ECS_TARGET "DescribeTasks", text, &retry,
                                   on_describe, d)
                  : -ENOMEM;
    free(text);
    if (rc) {
        fetch_aws_result fail = {.err = rc, .message = "DescribeTasks could not be sent"};
        on_describe(d, &fail);
    }
}

/* One poll: every followed child's item (the fast path), and DescribeTasks, 100 ARNs a call,
 * for those ECS has not yet said are STOPPED. A StopTask that ECS never confirms is given up
 * on after ECS_STOP_WAIT_MS. */
static void on_poll(uv_timer_t *h)
{
    run_state *r = h->data;
    agent_ecs *e = r->ecs;
    e->poll_armed = false;
    if (!live(r))
        return;
    uint64_t now = uv_now(&r->loop);
    size_t n = 0, cap = 16;
    ecs_child **list = malloc(cap * sizeof *list);
    e->tick_pending++; /* this function's own share, released at the end */
    for (ecs_child *ch = e->all; ch; ch = ch->next) {
        if (ch->detached || ch->state != CH_FOLLOWING)
            continue;
        if (ch->stop_sent && !ch->stopped && now - ch->stop_ms > ECS_STOP_WAIT_MS)
            mark_stopped(ch, NULL);
        if (!ch->stopped)
            read_item(ch);
        if (ch->stopped)
            continue;
        if (n == cap)
            list = realloc(list, (cap *= 2) * sizeof *list);
        list[n++] = ch;
    }
    for (size_t k = 0; k < n; k += ECS_DESCRIBE_MAX)
        describe(e, list + k, n - k < ECS_DESCRIBE_MAX ? n - k : ECS_DESCRIBE_MAX);
    free(list);
    tick_done(e);
}

/* The poll's last answer came: the next one in poll_ms (no overlap between polls). */
static void tick_done(agent_ecs *e)
{
    if (e->tick_pending > 0 && --e->tick_pending > 0)
        return;
    poll_arm(e);
}

static void poll_arm(agent_ecs *e)
{
    bool any = false;
    for (ecs_child *ch = e->all; ch && !any; ch = ch->next)
        any = !ch->detached && ch->state == CH_FOLLOWING;
    if (!any || e->poll_armed || e->tick_pending > 0 || !live(e->r))
        return;
    e->poll_armed = true;
    uv_timer_start(&e->r->ecs_poll_timer, on_poll, e->poll_ms, 0);
}

/* ---- stopping ---- */

static void on_stop(void *ud, const fetch_aws_result *res)
{
    ecs_child *ch = ud;
    run_state *r = ch->r;
    if (live(r) && !ch->detached) {
        bool ok = !res->err && res->http_status / 100 == 2;
        if (!ok) {
            log_line *l =
                agent_log_begin(LOG_WARNING, "ecs_stop_failed", "StopTask of %s failed: %s",
                                ch->arn, res->message ? res->message : "no answer");
            agent_log_str(l, "task_arn", ch->arn);
            agent_log_str(l, "error", res->message);
            agent_log_end(l);
        }
        /* A drain has no time to wait for STOPPED: the child records nothing once stopped
         * (it never writes CANCELLED), so the parent's CANCELLED is the record. */
        if (ch->cancelled)
            end_from_ecs(ch);
    }
    child_unref(ch);
}

static void send_stop(ecs_child *ch, const char *why)
{
    static const fetch_retry retry = {.max_attempts = 4, .base_ms = 200, .cap_ms = 2000};
    run_state *r = ch->r;
    if (ch->stop_sent || !ch->arn)
        return;
    ch->stop_sent = true;
    ch->stop_ms = uv_now(&r->loop);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "cluster", r->ecs->cluster);
    cJSON_AddStringToObject(b, "task", ch->arn);
    cJSON_AddStringToObject(b, "reason", why);
    char *text = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    log_line *l =
        agent_log_begin(LOG_INFO, "ecs_stop_requested", "stopping ECS task %s: %s", ch->arn, why);
    agent_log_str(l, "task_name", item_name(r, ch->i));
    agent_log_int(l, "attempt", ch->attempt);
    agent_log_str(l, "task_arn", ch->arn);
    agent_log_end(l);
    ch->refs++;
    int rc = text ? fetch_aws_json(r->aws, "ecs", ECS_TARGET "StopTask", text, &retry, on_stop, ch)
                  : -ENOMEM;
    free(text);
    if (rc) {
        fetch_aws_result fail = {.err = rc, .message = "StopTask could not be sent"};
        on_stop(ch, &fail);
    }
}

void agent__ecs_timeout(run_state *r, size_t i)
{
    ecs_child *ch = r->tasks[i].ecs;
    if (!ch || ch->detached || ch->state == CH_ENDING)
        return;
    ch->timed_out = true;
    if (ch->state == CH_WAITING)
        child_end(ch, SCHED_EXIT_TIMED_OUT, NULL);
    else
        send_stop(ch, "dagy: the attempt exceeded its timeout");
}

void agent__ecs_drain(run_state *r)
{
    if (!r->ecs)
        return;
    char why[96];
    snprintf(why, sizeof why, "Worker shutdown requested via %s: not launched",
             r->stop_signal ? r->stop_signal : "SIGTERM");
    for (ecs_child *ch = r->ecs->all, *next; ch; ch = next) {
        next = ch->next;
        if (!ch->detached && ch->state == CH_WAITING)
            child_end(ch, SCHED_EXIT_CANCELLED, why);
    }
}

void agent__ecs_kill(run_state *r)
{
    if (!r->ecs)
        return;
    for (ecs_child *ch = r->ecs->all, *next; ch; ch = next) {
        next = ch->next;
        if (ch->detached || ch->state == CH_ENDING)
            continue;
        ch->cancelled = true;
        if (ch->state == CH_WAITING)
            child_end(ch, SCHED_EXIT_CANCELLED, "Worker shutdown requested: not launched");
        else if (ch->stop_sent && ch->state == CH_FOLLOWING)
            end_from_ecs(ch); /* a timeout's StopTask is already out: no time to wait */
        else
            send_stop(ch, "dagy: the parent run is shutting down"); /* LAUNCHING: on_runtask */
    }
}

void agent__ecs_free(run_state *r)
{
    agent_ecs *e = r->ecs;
    if (!e)
        return;
    for (ecs_child *ch = e->all, *next; ch; ch = next) {
        next = ch->next;
        for (char **v = ch->env; v && *v; v++)
            free(*v);
        free(ch->env);
        free(ch->instance);
        free(ch->arn);
        free(ch->ecs_reason);
        free(ch);
    }
    char *strs[] = {e->conf_error, e->cluster,   e->taskdef,    e->subnets,   e->sgs,
                    e->assign_ip,  e->container, e->parent_arn, e->task_role, e->exec_role};
    for (size_t k = 0; k < sizeof strs / sizeof strs[0]; k++)
        free(strs[k]);
    free(e);
    r->ecs = NULL;
}
