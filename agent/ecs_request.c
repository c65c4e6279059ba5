/* ecs_request.c - the RunTask request of an ECS child's attempt (docs/agent.md lists every
 * field): the run's own task definition and network configuration, the executor's size, tags for
 * the reconciler, an idempotent clientToken, and the container environment that makes the
 * child's dagy-agent run just that attempt (ecs_child.c). */
#include "agent/ecs_exec.h"
#include "proto/ecsreq.h"
#include "proto/sha256.h"
#include "proto/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        {"DAGY_LOG_LEVEL", agent__ecs_getenv("DAGY_LOG_LEVEL")},
        {"DAGY_MAX_RESULT_BYTES", agent__ecs_getenv("DAGY_MAX_RESULT_BYTES")},
        {"DAGY_KILL_GRACE_SECONDS", agent__ecs_getenv("DAGY_KILL_GRACE_SECONDS")},
        {"DAGY_PIP_COMMAND", agent__ecs_getenv("DAGY_PIP_COMMAND")},
        {"DAGY_LOG_GROUP", agent__ecs_getenv("DAGY_LOG_GROUP")},
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

/* overrides: the executor's size, the roles, the worker container's environment. */
static cJSON *runtask_overrides(ecs_child *ch)
{
    agent_ecs *e = ch->r->ecs;
    const flowspec_executor *x = agent__ecs_spec_task(ch->r, ch->i)->executor;
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
cJSON *agent__ecs_runtask_body(ecs_child *ch)
{
    agent_ecs *e = ch->r->ecs;
    const flowspec_executor *x = agent__ecs_spec_task(ch->r, ch->i)->executor;
    cJSON *tags, *b = proto_ecs_runtask_body(e->cluster, e->taskdef, x->capacity_provider,
                                             e->subnets, e->sgs, e->assign_ip, &tags);
    if (!b)
        return NULL;
    char att[16];
    snprintf(att, sizeof att, "%d", ch->attempt);
    cJSON_AddItemToObject(b, "overrides", runtask_overrides(ch));
    proto_ecs_add_tag(tags, "dagy:run_id", ch->r->cfg->run_id);
    /* A map instance's name (NAME[7]) has brackets, which ECS tag values refuse: the map's name
     * and the element's index instead. */
    long parent = sched_task_parent(ch->r->plan, ch->i);
    proto_ecs_add_tag(tags, "dagy:task",
                      ch->r->tasks[parent >= 0 ? (size_t)parent : ch->i].ft->name);
    if (parent >= 0) {
        char k[24];
        snprintf(k, sizeof k, "%zu", sched_task_map_index(ch->r->plan, ch->i));
        proto_ecs_add_tag(tags, "dagy:map_index", k);
    }
    proto_ecs_add_tag(tags, "dagy:attempt", att);
    proto_ecs_add_tag(tags, "dagy:parent", e->parent_arn ? e->parent_arn : "none");
    if (ch->r->cfg->flow_name)
        proto_ecs_add_tag(tags, "dagy:flow_name", ch->r->cfg->flow_name);
    cJSON_AddStringToObject(b, "startedBy", "dagy-agent");
    cJSON_AddStringToObject(b, "clientToken", ch->token);
    return b;
}

/* The first failure of a RunTask answer: "REASON (detail, arn)". */
void agent__ecs_runtask_failure(const cJSON *j, char *out, size_t n)
{
    const cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "failures"), 0);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(f, "reason");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(f, "detail");
    snprintf(out, n, "%s%s%s%s", cJSON_IsString(rs) ? rs->valuestring : "RunTask returned no task",
             cJSON_IsString(dt) ? " (" : "", cJSON_IsString(dt) ? dt->valuestring : "",
             cJSON_IsString(dt) ? ")" : "");
}

/* clientToken: hex SHA-256 of run id, instance and attempt (64 characters, ECS's maximum): the
 * same attempt asked twice is one task. */
void agent__ecs_client_token(const char *run_id, const char *instance, int attempt, char out[65])
{
    size_t n = strlen(run_id) + strlen(instance) + 32;
    char *s = malloc(n);
    int len = snprintf(s, n, "%s\n%s\n%d", run_id, instance, attempt);
    proto_sha256_hex(s, (size_t)len, out);
    free(s);
}
