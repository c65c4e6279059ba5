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
 * parent asked for, else FAILED with the container's exit code and ECS's reason).
 * The RunTask request is built in ecs_request.c, children are followed in ecs_follow.c. */
#include "agent/ecs_exec.h"
#include "agent/log.h"
#include "proto/sigv4.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

const char *agent__ecs_getenv(const char *name)
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
const flowspec_task *agent__ecs_spec_task(const run_state *r, size_t i)
{
    return r->tasks[i].ft;
}

const char *agent__ecs_item_name(const run_state *r, size_t i)
{
    return sched_task_name(r->plan, i);
}

bool agent__ecs_live(const run_state *r)
{
    return r->phase < RUN_DONE && r->status && r->aws;
}

/* ---- checks at start ---- */

bool agent__ecs_task(const run_state *r, size_t i)
{
    return !r->cfg->only_task && agent__ecs_spec_task(r, i)->executor != NULL;
}

int agent__ecs_init(run_state *r, char *err)
{
    agent_config *c = r->cfg;
    if (c->only_task)
        return agent__ecs_child_find(r, err);
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
    e->cluster = dup_or_null(agent__ecs_getenv("DAGY_ECS_CLUSTER_ARN"));
    e->taskdef = dup_or_null(agent__ecs_getenv("DAGY_ECS_TASK_DEFINITION"));
    e->subnets = dup_or_null(agent__ecs_getenv("DAGY_ECS_SUBNETS"));
    e->sgs = dup_or_null(agent__ecs_getenv("DAGY_ECS_SECURITY_GROUPS"));
    const char *ip = agent__ecs_getenv("DAGY_ECS_ASSIGN_PUBLIC_IP");
    e->assign_ip = strdup(ip ? ip : "DISABLED");
    const char *cn = agent__ecs_getenv("DAGY_ECS_CONTAINER_NAME");
    e->container = strdup(cn ? cn : "dagy-worker");
    e->task_role = dup_or_null(agent__ecs_getenv("DAGY_ECS_TASK_ROLE_ARN"));
    e->exec_role = dup_or_null(agent__ecs_getenv("DAGY_ECS_EXECUTION_ROLE_ARN"));
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
    agent__ecs_launch_pump(e);
}

static void on_task_metadata(void *ud, const fetch_aws_result *res)
{
    agent_ecs *e = ud;
    if (!agent__ecs_live(e->r))
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
    const char *base = agent__ecs_getenv("ECS_CONTAINER_METADATA_URI_V4");
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

void agent__ecs_child_unref(ecs_child *ch)
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
void agent__ecs_child_end(ecs_child *ch, sched_exit how, const char *err)
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
    agent__ecs_child_unref(ch);
}

static void on_runtask(void *ud, const fetch_aws_result *res)
{
    ecs_child *ch = ud;
    run_state *r = ch->r;
    if (!agent__ecs_live(r)) {
        agent__ecs_child_unref(ch);
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
            agent__ecs_runtask_failure(res->json, why, sizeof why);
        agent__ecs_child_end(ch, ch->cancelled ? SCHED_EXIT_CANCELLED : SCHED_EXIT_FAILED, why);
    } else if (!ch->detached) {
        agent_task *t = &r->tasks[ch->i];
        ch->arn = strdup(arn->valuestring);
        ch->state = CH_FOLLOWING;
        ch->seq0 = status_item_seq(r->status, t->item);
        status_set_str(t->item, "external_id", ch->arn);
        status_touch(r->status, t->item);
        log_line *l = agent_log_begin(LOG_INFO, "ecs_task_started",
                                      "task \"%s\" attempt %d runs on ECS task %s",
                                      agent__ecs_item_name(r, ch->i), ch->attempt, ch->arn);
        agent_log_str(l, "task_name", agent__ecs_item_name(r, ch->i));
        agent_log_str(l, "task_run_id", t->task_run_id);
        agent_log_int(l, "attempt", ch->attempt);
        agent_log_str(l, "task_arn", ch->arn);
        agent_log_end(l);
        if (ch->cancelled || ch->timed_out)
            agent__ecs_send_stop(ch, ch->cancelled ? "dagy: the parent run is shutting down"
                                                   : "dagy: the attempt exceeded its timeout");
        agent__ecs_poll_arm(r->ecs);
    }
    agent__ecs_launch_pump(r->ecs);
    agent__ecs_child_unref(ch);
}

/* Sends one RunTask. */
static void launch(ecs_child *ch)
{
    run_state *r = ch->r;
    static const fetch_retry retry = {.max_attempts = 8, .base_ms = 200, .cap_ms = 10000};
    cJSON *body = agent__ecs_runtask_body(ch);
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
        agent__ecs_child_end(ch, SCHED_EXIT_FATAL, why);
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
        agent__ecs_child_end(ch, SCHED_EXIT_FAILED, why);
    }
}

static void on_launch_timer(uv_timer_t *t)
{
    run_state *r = t->data;
    if (r->ecs)
        agent__ecs_launch_pump(r->ecs);
}

/* Starts waiting children while the token bucket and the launch slots allow. */
/* The first child still waiting for RunTask, in the order the plan started them. Loops below
 * look the next one up again after every step: a step can end the attempt, and the plan may
 * then end (and free) other children (a timeout) or start new ones. */
static ecs_child *first_waiting(agent_ecs *e)
{
    for (ecs_child *ch = e->all; ch; ch = ch->next)
        if (ch->state == CH_WAITING && !ch->detached)
            return ch;
    return NULL;
}

/* One pass of launch_pump: launches while the bucket and the slots allow. */
static void launch_some(agent_ecs *e)
{
    run_state *r = e->r;
    uint64_t now = uv_now(&r->loop);
    e->tokens += (double)(now - e->refill_ms) * e->rate / 1000.0;
    if (e->tokens > e->burst)
        e->tokens = e->burst;
    e->refill_ms = now;
    ecs_child *ch;
    while (agent__ecs_live(r) && e->conf_state != 1 && (ch = first_waiting(e))) {
        if (e->conf_state == 0) {
            conf_start(e); /* pumps again when the configuration is known */
            continue;
        }
        if (e->conf_state == 3) {
            agent__ecs_child_end(ch, SCHED_EXIT_FATAL, e->conf_error);
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

/* Starts waiting children while the token bucket and the launch slots allow. Not re-entered:
 * a call from inside (an attempt ended, the plan started another) makes the running one go
 * round once more. */
void agent__ecs_launch_pump(agent_ecs *e)
{
    if (e->pumping) {
        e->pump_again = true;
        return;
    }
    e->pumping = true;
    do {
        e->pump_again = false;
        launch_some(e);
    } while (e->pump_again && agent__ecs_live(e->r));
    e->pumping = false;
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
    ch->instance = strdup(instance ? instance : agent__ecs_item_name(r, i));
    ch->env = calloc(n + 1, sizeof *ch->env);
    for (size_t k = 0; k < n; k++)
        ch->env[k] = strdup(extra_env[k]);
    ch->ecs_exit = -1;
    agent__ecs_client_token(r->cfg->run_id, ch->instance, ch->attempt, ch->token);
    ecs_child **tail = &e->all; /* in start order: launched first come, first served */
    while (*tail)
        tail = &(*tail)->next;
    *tail = ch;
    r->tasks[i].ecs = ch;
    agent__ecs_launch_pump(e);
}

/* ---- stopping ---- */

static void on_stop(void *ud, const fetch_aws_result *res)
{
    ecs_child *ch = ud;
    run_state *r = ch->r;
    if (agent__ecs_live(r) && !ch->detached) {
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
            agent__ecs_end_from_ecs(ch);
    }
    agent__ecs_child_unref(ch);
}

void agent__ecs_send_stop(ecs_child *ch, const char *why)
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
    agent_log_str(l, "task_name", agent__ecs_item_name(r, ch->i));
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
        agent__ecs_child_end(ch, SCHED_EXIT_TIMED_OUT, NULL);
    else
        agent__ecs_send_stop(ch, "dagy: the attempt exceeded its timeout");
}

void agent__ecs_drain(run_state *r)
{
    if (!r->ecs)
        return;
    char why[96];
    snprintf(why, sizeof why, "Worker shutdown requested via %s: not launched",
             r->stop_signal ? r->stop_signal : "SIGTERM");
    ecs_child *ch;
    while ((ch = first_waiting(r->ecs)))
        agent__ecs_child_end(ch, SCHED_EXIT_CANCELLED, why);
}

void agent__ecs_kill(run_state *r)
{
    if (!r->ecs)
        return;
    for (;;) { /* looked up again after each step, as in launch_some */
        ecs_child *ch = r->ecs->all;
        while (ch && (ch->detached || ch->state == CH_ENDING || ch->cancelled))
            ch = ch->next;
        if (!ch)
            return;
        ch->cancelled = true;
        if (ch->state == CH_WAITING)
            agent__ecs_child_end(ch, SCHED_EXIT_CANCELLED,
                                 "Worker shutdown requested: not launched");
        else if (ch->stop_sent && ch->state == CH_FOLLOWING)
            agent__ecs_end_from_ecs(ch); /* a timeout's StopTask is already out: no time to wait */
        else
            agent__ecs_send_stop(
                ch, "dagy: the parent run is shutting down"); /* LAUNCHING: on_runtask */
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
