/* request.c - launch requests and the AWS request bodies built from them: the run item, the
 * container environment, RunTask, the dagy-worker task definition, and the reconcile verdict
 * for a described task. Pure: plain data in, cJSON out, so every body is unit-tested. */
#include "launcher/launch.h"
#include "proto/ecsreq.h"
#include "proto/fargate.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fields a request of a batch file may carry (the seeds' DagLaunchRequest). */
static const char *const item_fields[] = {"flow_name",
                                          "flow_version",
                                          "parameters",
                                          "environment",
                                          "deployment_name",
                                          "workload_profile",
                                          "cpu",
                                          "memory",
                                          "ephemeral_storage_gib",
                                          "extra_env_vars",
                                          "metadata",
                                          "run_id",
                                          "trigger_source",
                                          "triggered_by",
                                          "capacity_provider",
                                          NULL};

/* err with the request prefix ("request 3: ") when the request comes from a batch file. */
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        char m_[LAUNCH_ERR_MAX];                                                                   \
        launch__fmt(m_, sizeof m_, __VA_ARGS__);                                                   \
        if (index >= 0)                                                                            \
            launch__fmt(err, LAUNCH_ERR_MAX, "request %ld: %s", index, m_);                        \
        else                                                                                       \
            launch__fmt(err, LAUNCH_ERR_MAX, "%s", m_);                                            \
        return -EINVAL;                                                                            \
    } while (0)

/* A string field of the request item, or the option, or NULL; -EINVAL if the field is there but
 * not a string. */
static int pick_str(const cJSON *item, const char *field, const char *opt, const char **out,
                    long index, char *err)
{
    const cJSON *f = item ? cJSON_GetObjectItemCaseSensitive(item, field) : NULL;
    *out = opt;
    if (f && !cJSON_IsNull(f)) {
        if (!cJSON_IsString(f))
            FAIL("%s must be a string", field);
        *out = f->valuestring;
    }
    if (*out && !**out)
        *out = NULL;
    return 0;
}

/* An integer field given as a JSON number or a decimal string; *given false if absent. */
static int pick_int_text(const cJSON *item, const char *field, const char *opt, char *buf, size_t n,
                         const char **out, long index, char *err)
{
    const cJSON *f = item ? cJSON_GetObjectItemCaseSensitive(item, field) : NULL;
    *out = opt;
    if (!f || cJSON_IsNull(f))
        return 0;
    if (cJSON_IsNumber(f))
        launch__fmt(buf, n, "%.17g", f->valuedouble);
    else if (cJSON_IsString(f))
        launch__fmt(buf, n, "%s", f->valuestring);
    else
        FAIL("%s must be a number", field);
    *out = buf;
    return 0;
}

/* The one rule for names and ids (proto/names.h); the message names the flag (or the batch
 * field) and says why. */
static int check_name(proto_name_kind kind, const char *what, const char *s, long index, char *err)
{
    char why[LAUNCH_ERR_MAX];
    if (!proto_name_check(kind, s, why, sizeof why))
        FAIL("%s: %s", what, why);
    return 0;
}

/* CPU and memory: a profile, or an explicit valid Fargate pair, or the small profile. */
static int resolve_size(launch_request *r, const char *profile, const char *cpu, const char *mem,
                        bool from_item, long index, char *err)
{
    const char *pf = from_item ? "workload_profile" : "--profile";
    const char *cf = from_item ? "cpu" : "--cpu", *mf = from_item ? "memory" : "--memory";
    long c = 0, m = 0;
    if (profile && (cpu || mem))
        FAIL("give either %s or %s/%s, not both", pf, cf, mf);
    if (profile) {
        if (launch_profile(profile, &r->cpu, &r->memory) < 0)
            FAIL("%s \"%s\" is unknown (small, medium, large, xlarge, heavy, max)", pf, profile);
        return 0;
    }
    if (!cpu && !mem) {
        launch_profile("small", &r->cpu, &r->memory);
        return 0;
    }
    if (!cpu || !mem)
        FAIL("%s and %s go together", cf, mf);
    if (launch_parse_int(cpu, 1, 1 << 20, &c) < 0)
        FAIL("%s \"%s\" is not a number of CPU units", cf, cpu);
    if (launch_parse_int(mem, 1, 1 << 24, &m) < 0)
        FAIL("%s \"%s\" is not a number of MiB", mf, mem);
    if (!launch_fargate_memory_hint((int)c))
        FAIL("%s %ld is not a Fargate CPU size (256, 512, 1024, 2048, 4096, 8192, 16384)", cf, c);
    if (!launch_fargate_valid((int)c, (int)m))
        FAIL("%s %ld with %s %ld is not a valid Fargate size: CPU %ld takes memory %s", cf, c, mf,
             m, c, launch_fargate_memory_hint((int)c));
    r->cpu = (int)c;
    r->memory = (int)m;
    return 0;
}

/* Merges a JSON object field of the item into `dst` (later wins); -EINVAL if not an object. */
static int merge_object(cJSON *dst, const cJSON *item, const char *field, bool strings_only,
                        long index, char *err)
{
    const cJSON *f = item ? cJSON_GetObjectItemCaseSensitive(item, field) : NULL;
    if (!f || cJSON_IsNull(f))
        return 0;
    if (!cJSON_IsObject(f))
        FAIL("%s must be a JSON object", field);
    const cJSON *e;
    cJSON_ArrayForEach(e, f)
    {
        if (strings_only) {
            char e_err[LAUNCH_ERR_MAX];
            if (!cJSON_IsString(e))
                FAIL("%s.%s must be a string", field, e->string);
            if (launch_env_name_check(e->string, e_err) < 0)
                FAIL("%s: %s", field, e_err);
        }
        cJSON_DeleteItemFromObjectCaseSensitive(dst, e->string);
        cJSON_AddItemToObject(dst, e->string, cJSON_Duplicate(e, true));
    }
    return 0;
}

/* Checks the item's field names: an unknown field is a typo that must not silently change the
 * launch. */
static int check_item_fields(const cJSON *item, long index, char *err)
{
    if (!cJSON_IsObject(item))
        FAIL("must be a JSON object");
    const cJSON *f;
    cJSON_ArrayForEach(f, item)
    {
        bool known = false;
        for (const char *const *k = item_fields; *k && !known; k++)
            known = strcmp(*k, f->string) == 0;
        if (!known)
            FAIL("unknown field \"%s\"", f->string);
    }
    return 0;
}

/* Identity strings: flow, org, versions, correlation (tag values), run id, trigger. */
static int pick_identity(launch_request *r, const launch_opts *o, const cJSON *item, long index,
                         char *err)
{
    const char *flow, *ver, *env, *dep, *run, *src, *by, *cap;
    if (pick_str(item, "flow_name", o->flow, &flow, index, err) ||
        pick_str(item, "flow_version", o->flow_version, &ver, index, err) ||
        pick_str(item, "environment", o->environment, &env, index, err) ||
        pick_str(item, "deployment_name", o->deployment, &dep, index, err) ||
        pick_str(item, "run_id", o->run_id, &run, index, err) ||
        pick_str(item, "trigger_source", o->trigger_source, &src, index, err) ||
        pick_str(item, "triggered_by", o->triggered_by, &by, index, err) ||
        pick_str(item, "capacity_provider", o->capacity_provider, &cap, index, err))
        return -EINVAL;
    if (!flow)
        FAIL("%s is required", item ? "flow_name" : "--flow");
    if (!o->org || !*o->org)
        FAIL("--org is required");
    if (check_name(PROTO_NAME_FLOW, item ? "flow_name" : "--flow", flow, index, err) ||
        check_name(PROTO_NAME_ORG, "--org", o->org, index, err) ||
        (env && check_name(PROTO_NAME_ENVIRONMENT, item ? "environment" : "--environment", env,
                           index, err)) ||
        (dep && check_name(PROTO_NAME_DEPLOYMENT, item ? "deployment_name" : "--deployment", dep,
                           index, err)) ||
        (run && check_name(PROTO_NAME_RUN_ID, item ? "run_id" : "--run-id", run, index, err)))
        return -EINVAL;
    if (ver && !launch_tag_value_valid(ver, 128))
        FAIL("flow version \"%s\" has characters ECS tags do not allow", ver);
    if (run && strlen(run) > LAUNCH_MAX_RUN_ID)
        FAIL("run id \"%s\" is longer than %d characters (it is the ECS clientToken)", run,
             LAUNCH_MAX_RUN_ID);
    if (cap && !proto_capacity_provider_valid(cap))
        FAIL("capacity provider \"%s\" must be FARGATE or FARGATE_SPOT", cap);
    const char *lambda = getenv("AWS_LAMBDA_FUNCTION_NAME");
    if (!src)
        src = lambda && *lambda ? "lambda" : "cli";
    if (!by)
        by = lambda && *lambda ? lambda : getenv("USER");
    char uuid[40];
    launch_uuid4(uuid);
    r->flow_name = strdup(flow);
    r->flow_version = strdup(ver ? ver : "latest");
    r->org_id = strdup(o->org);
    r->environment = env ? strdup(env) : NULL;
    r->deployment = dep ? strdup(dep) : NULL;
    r->run_id = strdup(run ? run : uuid);
    r->trigger_source = strdup(src);
    r->triggered_by = by && *by ? strdup(by) : NULL;
    r->capacity_provider = cap ? strdup(cap) : NULL;
    return 0;
}

/* The correlation id: the option for a single run; "PARENT:INDEX" for a batch request. */
static int pick_correlation(launch_request *r, const launch_opts *o, long index, char *err)
{
    char buf[LAUNCH_MAX_TAG_VALUE + 32], uuid[40];
    const char *parent = o->correlation_id && *o->correlation_id ? o->correlation_id : NULL;
    r->correlation_given = parent != NULL;
    if (!parent) {
        launch_uuid4(uuid);
        parent = uuid;
    }
    if (index >= 0)
        launch__fmt(buf, sizeof buf, "%s:%ld", parent, index);
    else
        launch__fmt(buf, sizeof buf, "%s", parent);
    if (strlen(parent) > 240 || !launch_tag_value_valid(buf, LAUNCH_MAX_TAG_VALUE))
        FAIL("--correlation-id \"%s\" must be 1-240 characters of letters, digits and "
             "+ - = . _ : / @ (it becomes an ECS tag)",
             parent);
    r->correlation_id = strdup(buf);
    return 0;
}

/* Size and ephemeral storage of one request. */
static int pick_size(launch_request *r, const launch_opts *o, const cJSON *item, long index,
                     char *err)
{
    char cbuf[64], mbuf[64], ebuf[64];
    const char *profile, *cpu, *mem, *eph;
    bool item_size = item && (cJSON_GetObjectItemCaseSensitive(item, "workload_profile") ||
                              cJSON_GetObjectItemCaseSensitive(item, "cpu") ||
                              cJSON_GetObjectItemCaseSensitive(item, "memory"));
    bool item_eph = item && cJSON_GetObjectItemCaseSensitive(item, "ephemeral_storage_gib");
    /* A request's own size replaces the command line's as a whole (a profile on the command
     * line plus a cpu in the request would otherwise conflict). */
    if (pick_str(item, "workload_profile", item_size ? NULL : o->profile, &profile, index, err) ||
        pick_int_text(item, "cpu", item_size ? NULL : o->cpu, cbuf, sizeof cbuf, &cpu, index,
                      err) ||
        pick_int_text(item, "memory", item_size ? NULL : o->memory, mbuf, sizeof mbuf, &mem, index,
                      err) ||
        pick_int_text(item, "ephemeral_storage_gib", o->ephemeral, ebuf, sizeof ebuf, &eph, index,
                      err) ||
        resolve_size(r, profile, cpu, mem, item_size, index, err) < 0)
        return -EINVAL;
    long gib = 21;
    if (eph && launch_parse_int(eph, PROTO_EPHEMERAL_MIN_GIB, PROTO_EPHEMERAL_MAX_GIB, &gib) < 0)
        FAIL("%s \"%s\" must be 21-200 GiB",
             item_eph ? "ephemeral_storage_gib" : "--ephemeral-storage", eph);
    r->ephemeral_gib = (int)gib;
    return 0;
}

/* Everything of one request; on failure the caller clears the partly filled request. */
static int request_fill(launch_request *r, const launch_opts *o, const cJSON *item, long index,
                        char *err)
{
    if ((item && check_item_fields(item, index, err) < 0) ||
        pick_identity(r, o, item, index, err) < 0 || pick_correlation(r, o, index, err) < 0 ||
        pick_size(r, o, item, index, err) < 0)
        return -EINVAL;
    r->parameters = o->parameters ? cJSON_Duplicate(o->parameters, true) : cJSON_CreateObject();
    r->env = o->env ? cJSON_Duplicate(o->env, true) : cJSON_CreateObject();
    if (!r->parameters || !r->env)
        return -ENOMEM;
    if (merge_object(r->parameters, item, "parameters", false, index, err) < 0 ||
        merge_object(r->env, item, "extra_env_vars", true, index, err) < 0)
        return -EINVAL;
    const cJSON *meta = item ? cJSON_GetObjectItemCaseSensitive(item, "metadata") : NULL;
    if (meta && !cJSON_IsNull(meta)) {
        if (!cJSON_IsObject(meta))
            FAIL("metadata must be a JSON object");
        r->metadata = cJSON_Duplicate(meta, true);
    }
    if (!r->flow_name || !r->flow_version || !r->org_id || !r->run_id || !r->correlation_id ||
        !r->trigger_source)
        return -ENOMEM;
    return 0;
}

int launch_request_init(launch_request *r, const launch_opts *o, const cJSON *item, long index,
                        char *err)
{
    memset(r, 0, sizeof *r);
    int rc = request_fill(r, o, item, index, err);
    if (rc == -ENOMEM)
        launch__fmt(err, LAUNCH_ERR_MAX, "out of memory");
    if (rc < 0)
        launch_request_clear(r);
    return rc;
}

void launch_request_clear(launch_request *r)
{
    free(r->flow_name);
    free(r->flow_version);
    free(r->org_id);
    free(r->environment);
    free(r->deployment);
    free(r->correlation_id);
    free(r->trigger_source);
    free(r->triggered_by);
    free(r->run_id);
    free(r->capacity_provider);
    free(r->retry_of);
    free(r->resume_from);
    cJSON_Delete(r->parameters);
    cJSON_Delete(r->env);
    cJSON_Delete(r->metadata);
    memset(r, 0, sizeof *r);
}

/* ---- bodies ---- */

static void add_json_string(cJSON *obj, const char *name, const cJSON *value)
{
    char *text = cJSON_PrintUnformatted(value);
    cJSON_AddStringToObject(obj, name, text ? text : "{}");
    free(text);
}

/* What a retry needs to repeat this launch exactly, the fingerprint and the index marker. */
static void run_item_launch_fields(cJSON *it, const launch_request *r, const launch_resolved *v)
{
    char sha[65];
    launch_request_sha256(r, v, sha);
    cJSON_AddStringToObject(it, "launch_request_sha256", sha);
    cJSON_AddStringToObject(it, LAUNCH_ACTIVE_ATTR, LAUNCH_ACTIVE_VALUE);
    cJSON_AddStringToObject(it, "artifact_s3_uri", v->artifact_uri);
    /* Always, even empty: a retry then never re-reads a deployment that may have changed. */
    cJSON *l = cJSON_AddArrayToObject(it, "dep_package_uris");
    for (size_t i = 0; i < v->n_packages; i++)
        cJSON_AddItemToArray(l, cJSON_CreateString(v->package_uris[i]));
    cJSON_AddNumberToObject(it, "cpu", r->cpu);
    cJSON_AddNumberToObject(it, "memory", r->memory);
    cJSON_AddNumberToObject(it, "ephemeral_storage_gib", r->ephemeral_gib);
    if (r->capacity_provider)
        cJSON_AddStringToObject(it, "capacity_provider", r->capacity_provider);
    if (r->env && r->env->child)
        add_json_string(it, "extra_env", r->env);
    if (r->retry_of)
        cJSON_AddStringToObject(it, "retry_of", r->retry_of);
    if (r->resume_from)
        cJSON_AddStringToObject(it, "resume_from", r->resume_from);
    if (r->retry_of)
        cJSON_AddNumberToObject(it, "infra_retries", r->infra_retries);
}

cJSON *launch_run_item(const launch_request *r, const launch_resolved *v, const char *now)
{
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "run_id", r->run_id);
    cJSON_AddStringToObject(it, "status", "QUEUED");
    cJSON_AddNumberToObject(it, "status_seq", 0);
    cJSON_AddStringToObject(it, "executor", "ecs");
    cJSON_AddStringToObject(it, "flow_name", r->flow_name);
    cJSON_AddStringToObject(it, "flow_version", v->flow_version);
    cJSON_AddStringToObject(it, "org_id", r->org_id);
    if (v->environment)
        cJSON_AddStringToObject(it, "environment", v->environment);
    if (r->deployment)
        cJSON_AddStringToObject(it, "deployment_name", r->deployment);
    cJSON_AddStringToObject(it, "correlation_id", r->correlation_id);
    add_json_string(it, "parameters", r->parameters);
    cJSON_AddStringToObject(it, "trigger_source", r->trigger_source);
    if (r->triggered_by)
        cJSON_AddStringToObject(it, "triggered_by", r->triggered_by);
    if (r->metadata)
        add_json_string(it, "metadata", r->metadata);
    cJSON_AddStringToObject(it, "created_at", now);
    cJSON_AddStringToObject(it, "updated_at", now);
    run_item_launch_fields(it, r, v);
    return it;
}

static void add_env(cJSON *list, const char *name, const char *value)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "value", value);
    cJSON_AddItemToArray(list, e);
}

/* What the agent's per-task ECS executor needs to start tasks like this one and that ECS task
 * metadata does not say (docs/agent.md, "Tasks on their own ECS task"): the network
 * configuration, a container name and roles other than the defaults. An --env of the same
 * name is the operator's choice and wins. */
static void ecs_exec_env(cJSON *env, const launch_config *c, const launch_request *r)
{
    const char *kv[][2] = {
        {"DAGY_ECS_SUBNETS", c->subnets},
        {"DAGY_ECS_SECURITY_GROUPS", c->security_groups},
        {"DAGY_ECS_ASSIGN_PUBLIC_IP", c->assign_public_ip && strcmp(c->assign_public_ip, "DISABLED")
                                          ? c->assign_public_ip
                                          : NULL},
        {"DAGY_ECS_CONTAINER_NAME",
         c->container_name && strcmp(c->container_name, "dagy-worker") ? c->container_name : NULL},
        /* With an operator's definition the roles are per-run overrides: children get them too. */
        {"DAGY_ECS_TASK_ROLE_ARN", c->task_definition ? c->task_role : NULL},
        {"DAGY_ECS_EXECUTION_ROLE_ARN", c->task_definition ? c->execution_role : NULL},
    };
    for (size_t k = 0; k < sizeof kv / sizeof kv[0]; k++)
        if (kv[k][1] && !cJSON_GetObjectItemCaseSensitive(r->env, kv[k][0]))
            add_env(env, kv[k][0], kv[k][1]);
}

cJSON *launch_container_env(const launch_config *c, const launch_request *r,
                            const launch_resolved *v)
{
    cJSON *env = cJSON_CreateArray();
    add_env(env, "DAGY_RUN_ID", r->run_id);
    add_env(env, "DAGY_FLOW_NAME", r->flow_name);
    add_env(env, "DAGY_FLOW_VERSION", v->flow_version);
    add_env(env, "DAGY_ORG_ID", r->org_id);
    if (v->environment)
        add_env(env, "DAGY_ENVIRONMENT", v->environment);
    add_env(env, "DAGY_ARTIFACT_S3_URI", v->artifact_uri);
    if (v->n_packages) {
        size_t len = 1;
        for (size_t i = 0; i < v->n_packages; i++)
            len += strlen(v->package_uris[i]) + 1;
        char *joined = calloc(1, len);
        for (size_t i = 0; joined && i < v->n_packages; i++) {
            if (i)
                strcat(joined, ",");
            strcat(joined, v->package_uris[i]);
        }
        add_env(env, "DAGY_DEP_PACKAGE_URIS", joined ? joined : "");
        free(joined);
    }
    char *params = cJSON_PrintUnformatted(r->parameters);
    add_env(env, "DAGY_PARAMETERS", params ? params : "{}");
    free(params);
    add_env(env, "DAGY_CORRELATION_ID", r->correlation_id);
    if (c->traces_bucket)
        add_env(env, "DAGY_TRACES_BUCKET", c->traces_bucket);
    /* Durable results (contract section 10): the configured bucket, else the traces bucket. */
    if (c->results_bucket || c->traces_bucket)
        add_env(env, "DAGY_RESULTS_BUCKET",
                c->results_bucket ? c->results_bucket : c->traces_bucket);
    if (r->resume_from)
        add_env(env, "DAGY_RESUME_FROM", r->resume_from);
    /* The agent's cost estimate needs it: the task metadata does not say Spot. */
    if (r->capacity_provider)
        add_env(env, "DAGY_CAPACITY_PROVIDER", r->capacity_provider);
    if (c->runs_table_set)
        add_env(env, "DAGY_RUNS_TABLE", c->runs_table);
    if (c->task_runs_table_set)
        add_env(env, "DAGY_TASK_RUNS_TABLE", c->task_runs_table);
    if (c->agent_log_group) /* the agent ships its lines to stream RUN_ID there (logs.c reads it) */
        add_env(env, "DAGY_LOG_GROUP", c->agent_log_group);
    ecs_exec_env(env, c, r);
    const cJSON *e;
    cJSON_ArrayForEach(e, r->env)
    {
        if (cJSON_IsString(e))
            add_env(env, e->string, e->valuestring);
    }
    return env;
}

/* overrides: task size, ephemeral storage, the worker container's environment. */
static cJSON *runtask_overrides(const launch_config *c, bool managed, const launch_request *r,
                                const launch_resolved *v)
{
    char num[32];
    cJSON *ov = cJSON_CreateObject();
    launch__fmt(num, sizeof num, "%d", r->cpu);
    cJSON_AddStringToObject(ov, "cpu", num);
    launch__fmt(num, sizeof num, "%d", r->memory);
    cJSON_AddStringToObject(ov, "memory", num);
    cJSON *eph = cJSON_AddObjectToObject(ov, "ephemeralStorage");
    cJSON_AddNumberToObject(eph, "sizeInGiB", r->ephemeral_gib);
    /* With an operator's task definition the configured roles still apply to this run. */
    if (!managed && c->task_role)
        cJSON_AddStringToObject(ov, "taskRoleArn", c->task_role);
    if (!managed && c->execution_role)
        cJSON_AddStringToObject(ov, "executionRoleArn", c->execution_role);
    cJSON *cos = cJSON_AddArrayToObject(ov, "containerOverrides");
    cJSON *co = cJSON_CreateObject();
    cJSON_AddStringToObject(co, "name", c->container_name);
    cJSON_AddItemToObject(co, "environment", launch_container_env(c, r, v));
    /* The managed definition sets the container's hard memory limit to the small profile (moto
     * and some tools want one); raise it with the task so a larger profile is usable. */
    if (managed)
        cJSON_AddNumberToObject(co, "memory", r->memory);
    cJSON_AddItemToArray(cos, co);
    return ov;
}

cJSON *launch_runtask_body(const launch_config *c, const char *task_definition, bool managed,
                           const launch_request *r, const launch_resolved *v)
{
    cJSON *tags,
        *b = proto_ecs_runtask_body(c->cluster, task_definition, r->capacity_provider, c->subnets,
                                    c->security_groups, c->assign_public_ip, &tags);
    if (!b)
        return NULL;
    cJSON_AddItemToObject(b, "overrides", runtask_overrides(c, managed, r, v));
    proto_ecs_add_tag(tags, "dagy:run_id", r->run_id);
    proto_ecs_add_tag(tags, "dagy:flow_name", r->flow_name);
    proto_ecs_add_tag(tags, "dagy:flow_version", v->flow_version);
    proto_ecs_add_tag(tags, "dagy:org_id", r->org_id);
    proto_ecs_add_tag(tags, "dagy:correlation_id", r->correlation_id);
    cJSON_AddStringToObject(b, "startedBy", "dagy-launch");
    /* ECS's idempotency token: a retried RunTask with the same token starts no second task. */
    cJSON_AddStringToObject(b, "clientToken", r->run_id);
    return b;
}

size_t launch_overrides_chars(const cJSON *body)
{
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(body, "overrides");
    const cJSON *co = cJSON_GetObjectItemCaseSensitive(ov, "containerOverrides");
    char *text = co ? cJSON_PrintUnformatted(co) : NULL;
    size_t n = text ? strlen(text) : 0;
    free(text);
    return n;
}

/* ---- the dagy-worker task definition ---- */

static cJSON *log_configuration(const launch_config *c, const char *region)
{
    cJSON *lc = cJSON_CreateObject();
    cJSON_AddStringToObject(lc, "logDriver", "awslogs");
    cJSON *o = cJSON_AddObjectToObject(lc, "options");
    cJSON_AddStringToObject(o, "awslogs-group", c->log_group);
    cJSON_AddStringToObject(o, "awslogs-region", region);
    cJSON_AddStringToObject(o, "awslogs-stream-prefix", "dagy");
    return lc;
}

cJSON *launch_taskdef_body(const launch_config *c, const char *region)
{
    char num[32];
    int cpu = 0, mem = 0;
    launch_profile("small", &cpu, &mem);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "family", "dagy-worker");
    cJSON *rc = cJSON_AddArrayToObject(b, "requiresCompatibilities");
    cJSON_AddItemToArray(rc, cJSON_CreateString("FARGATE"));
    cJSON_AddStringToObject(b, "networkMode", "awsvpc");
    launch__fmt(num, sizeof num, "%d", cpu);
    cJSON_AddStringToObject(b, "cpu", num);
    launch__fmt(num, sizeof num, "%d", mem);
    cJSON_AddStringToObject(b, "memory", num);
    cJSON_AddStringToObject(b, "executionRoleArn", c->execution_role);
    cJSON_AddStringToObject(b, "taskRoleArn", c->task_role);
    cJSON *cds = cJSON_AddArrayToObject(b, "containerDefinitions");
    cJSON *cd = cJSON_CreateObject();
    cJSON_AddStringToObject(cd, "name", c->container_name);
    cJSON_AddStringToObject(cd, "image", c->image);
    cJSON_AddBoolToObject(cd, "essential", true);
    cJSON_AddNumberToObject(cd, "memory", mem);
    cJSON_AddNumberToObject(cd, "stopTimeout", LAUNCH_STOP_TIMEOUT);
    cJSON_AddItemToObject(cd, "logConfiguration", log_configuration(c, region));
    cJSON_AddItemToArray(cds, cd);
    cJSON *tags = cJSON_AddArrayToObject(b, "tags");
    proto_ecs_add_tag(tags, "dagy:managed-by", "dagy-launch");
    return b;
}

static bool str_eq(const cJSON *obj, const char *name, const char *want)
{
    const char *v = launch__str(obj, name);
    return v && want && strcmp(v, want) == 0;
}

bool launch_taskdef_matches(const launch_config *c, const char *region, const cJSON *td)
{
    const cJSON *cds = cJSON_GetObjectItemCaseSensitive(td, "containerDefinitions");
    const cJSON *cd = cJSON_GetArraySize(cds) == 1 ? cJSON_GetArrayItem(cds, 0) : NULL;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(cd, "stopTimeout");
    const cJSON *lc = cJSON_GetObjectItemCaseSensitive(cd, "logConfiguration");
    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(lc, "options");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(td, "status");
    if (!cd || (cJSON_IsString(status) && strcmp(status->valuestring, "ACTIVE") != 0))
        return false;
    return str_eq(td, "networkMode", "awsvpc") &&
           str_eq(td, "executionRoleArn", c->execution_role) &&
           str_eq(td, "taskRoleArn", c->task_role) && str_eq(cd, "name", c->container_name) &&
           str_eq(cd, "image", c->image) && cJSON_IsNumber(st) &&
           st->valueint == LAUNCH_STOP_TIMEOUT && str_eq(lc, "logDriver", "awslogs") &&
           str_eq(lo, "awslogs-group", c->log_group) && str_eq(lo, "awslogs-region", region) &&
           str_eq(lo, "awslogs-stream-prefix", "dagy");
}

/* ---- reconcile verdict ---- */

/* The worker container of a described task: the one named like ours, else the first. */
static const cJSON *worker_container(const cJSON *task, const char *name)
{
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(task, "containers"), *c;
    cJSON_ArrayForEach(c, cs)
    {
        if (str_eq(c, "name", name))
            return c;
    }
    return cJSON_GetArrayItem(cs, 0);
}

/* Stop codes that say the platform ended the task, not the flow (ECS "Stopped tasks errors"). */
static bool infra_stop_code(const char *code)
{
    static const char *const codes[] = {"TaskFailedToStart", "SpotInterruption",
                                        "TerminationNotice", "ServiceSchedulerInitiated", NULL};
    for (const char *const *c = codes; code && *c; c++)
        if (strcmp(*c, code) == 0)
            return true;
    return false;
}

/* The error_message of a reconciled stop: the container's exit code and reason say most. */
static void verdict_message(launch_verdict *v, const char *reason, const cJSON *exit,
                            const char *creason)
{
    if (cJSON_IsNumber(exit) && creason)
        launch__fmt(v->error_message, sizeof v->error_message, "Reconciled: %s (exit code %d: %s)",
                    reason, exit->valueint, creason);
    else if (cJSON_IsNumber(exit))
        launch__fmt(v->error_message, sizeof v->error_message, "Reconciled: %s (exit code %d)",
                    reason, exit->valueint);
    else if (creason)
        launch__fmt(v->error_message, sizeof v->error_message, "Reconciled: %s (%s)", reason,
                    creason);
    else
        launch__fmt(v->error_message, sizeof v->error_message, "Reconciled: %s", reason);
}

void launch_reconcile_verdict(const cJSON *task, const char *container_name,
                              const char *cancel_reason, launch_verdict *v)
{
    memset(v, 0, sizeof *v);
    if (!str_eq(task, "lastStatus", "STOPPED"))
        return;
    const char *code = launch__str(task, "stopCode");
    const char *reason = launch__str(task, "stoppedReason");
    const cJSON *c = worker_container(task, container_name);
    const cJSON *exit = cJSON_GetObjectItemCaseSensitive(c, "exitCode");
    const char *creason = launch__str(c, "reason");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(task, "stoppedAt");
    int ec = cJSON_IsNumber(exit) ? exit->valueint : -1;
    v->stopped_at = cJSON_IsNumber(at) ? at->valuedouble : 0;
    if (!reason || !*reason)
        reason = "ECS task stopped";
    launch__fmt(v->stop_reason, sizeof v->stop_reason, "%s: %s", code ? code : "STOPPED", reason);
    if (ec == 0) {
        v->status = "SUCCEEDED";
        return;
    }
    verdict_message(v, reason, exit, creason);
    bool user = code && strcmp(code, "UserInitiated") == 0;
    if (cancel_reason && (user || ec == 143)) {
        /* dagy-launch cancel asked for it: the contract's "UserInitiated: TEXT". */
        v->status = "CANCELLED";
        launch__fmt(v->stop_reason, sizeof v->stop_reason, "UserInitiated: %s",
                    *cancel_reason ? cancel_reason : "cancel requested");
        return;
    }
    v->status = "FAILED";
    /* The platform's doing, not the flow's: a start failure, a Spot reclaim, a memory kill, a
     * SIGTERM nobody asked for through cancel (a StopTask from elsewhere, a deploy). */
    v->infra = infra_stop_code(code) || user || ec == 143 ||
               (ec == 137 && creason && strstr(creason, "OutOfMemory"));
}
