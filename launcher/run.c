/* run.c - `dagy-launch run` and `batch`: each launch is a small state machine on the shared
 * loop (resolve flow -> deployment packages -> task definition -> run item QUEUED -> RunTask ->
 * record the task ARN or the launch failure). A batch runs every launch at once; they share one
 * task definition lookup.
 *
 * Ordering is the point: nothing is written before every request is valid and resolved, the run
 * item exists before the task can start (the agent's first write lands on it), and a run id that
 * already has an item never reaches RunTask. */
#include "launcher/launch.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ddb.h"

/* States of one launch, in order. */
typedef enum {
    L_FLOW,     /* reading DAGY_FLOWS (GetItem, or Query for "latest") */
    L_DEPLOY,   /* reading DAGY_DEPLOYMENTS and DAGY_DEP_PACKAGES */
    L_TASKDEF,  /* waiting for the shared task definition */
    L_PUT,      /* PutItem QUEUED, only if the run id is new */
    L_EXISTING, /* the run id exists: reading it to report it */
    L_RUNTASK,  /* RunTask */
    L_RECORD,   /* UpdateItem external_id, or FAILED "ECS launch failed: ..." */
    L_DONE,
} lstate;

static const char *const lstate_names[] = {"flow",     "deploy",  "taskdef", "put",
                                           "existing", "runtask", "record",  "done"};

typedef struct batch batch;

typedef struct one {
    batch *b;
    launch_request req;
    lstate state;
    char *flow_version, *artifact_uri, *environment; /* resolved */
    char *best_version, *best_uri, *best_sha;        /* Query for "latest" so far */
    size_t other_versions;                           /* non-semver versions seen */
    char **pkgs;
    size_t n_pkgs, pkgs_pending;
    cJSON *runtask; /* the RunTask body, built before the run item is written */
    char sha[65];   /* launch_request_sha256 of this launch */
    bool pre_flow;  /* flow_version and artifact_uri given (a retry): no DAGY_FLOWS lookup */
    bool pre_pkgs;  /* pkgs given (a retry): no deployment lookup */
    char *task_arn;
    bool success;
    int exit;
    const char *note; /* extra "message" of the result */
    char error[LAUNCH_ERR_MAX];
    struct one *next_wait;
} one;

enum { TD_NONE, TD_PENDING, TD_READY, TD_FAILED };

struct batch {
    launch__ctx ctx;
    one *runs;
    size_t n, pending;
    size_t next, active; /* the next launch to start; launches started and not done */
    bool pumping;
    int td_state;
    char *taskdef;
    bool managed;
    char td_err[LAUNCH_ERR_MAX];
    one *waiters;
};

static void set_state(one *o, lstate s)
{
    if (getenv("DAGY_LAUNCH_DEBUG"))
        fprintf(stderr, "dagy-launch: run %s: %s -> %s\n", o->req.run_id, lstate_names[o->state],
                lstate_names[s]);
    o->state = s;
}

static void to_flow(one *o);

/* Starts launches while fewer than LAUNCH_MAX_INFLIGHT run, so a batch of thousands keeps a
 * bounded number of requests (and connections) open. A launch that ends at once (its first call
 * cannot start) re-enters through finish(); the flag turns that into another turn of this loop
 * instead of a recursion as deep as the batch. */
static void pump(batch *b)
{
    if (b->pumping)
        return;
    b->pumping = true;
    while (b->active < LAUNCH_MAX_INFLIGHT && b->next < b->n) {
        one *o = &b->runs[b->next++];
        b->active++;
        o->b = b;
        to_flow(o);
    }
    b->pumping = false;
}

/* Ends a launch; the loop stops when the last one is done. */
static void finish(one *o, bool success, int exit)
{
    batch *b = o->b;
    o->success = success;
    o->exit = exit;
    set_state(o, L_DONE);
    b->active--;
    if (--b->pending == 0)
        uv_stop(&b->ctx.loop);
    else
        pump(b);
}

static void fail(one *o, int exit, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(one *o, int exit, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->error, sizeof o->error, fmt, ap);
    va_end(ap);
    finish(o, false, exit);
}

/* A call that could not even start ends the launch (its callback never runs). */
static void call_or_fail(one *o, const char *service, const char *op, cJSON *body, fetch_aws_cb cb)
{
    int rc = launch__call(&o->b->ctx, service, op, body, cb, o);
    if (rc < 0)
        fail(o, LAUNCH_EXIT_FAILED, "%s %s: %s", service, op, strerror(-rc));
}

static bool aws_ok(const fetch_aws_result *r)
{
    return r->err == 0 && r->http_status >= 200 && r->http_status < 300;
}

/* The unmarshalled "Item" of a GetItem answer, or NULL when there is none. */
static cJSON *get_item(const fetch_aws_result *r)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(r->json, "Item");
    return cJSON_IsObject(it) ? proto_ddb_unmarshal(it) : NULL;
}

static void to_deployment(one *o);
static void to_taskdef(one *o);
static void to_put(one *o);

/* ---- flow ---- */

/* "s3://..." plus "#sha256=HEX" from the flow item, so the agent verifies its download. */
static char *artifact_with_digest(const char *uri, const char *sha)
{
    size_t n = strlen(uri) + (sha ? strlen(sha) + 9 : 0) + 1;
    char *s = malloc(n);
    if (s)
        launch__fmt(s, n, "%s%s%s", uri, sha && !strchr(uri, '#') ? "#sha256=" : "",
                    sha && !strchr(uri, '#') ? sha : "");
    return s;
}

static void flow_resolved(one *o, const char *version, const char *uri, const char *sha)
{
    o->flow_version = strdup(version);
    o->artifact_uri = artifact_with_digest(uri, sha);
    if (!o->flow_version || !o->artifact_uri)
        return fail(o, LAUNCH_EXIT_FAILED, "out of memory");
    to_deployment(o);
}

static void on_flow_get(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    if (!aws_ok(r)) {
        char why[LAUNCH_ERR_MAX];
        launch__aws_reason(r, why, sizeof why);
        return fail(o, LAUNCH_EXIT_FAILED, "cannot read %s: %s", o->b->ctx.cfg.flows_table, why);
    }
    cJSON *it = get_item(r);
    const char *org = launch__str(it, "org_id"), *uri = launch__str(it, "artifact_s3_uri");
    if (!it)
        fail(o, LAUNCH_EXIT_INVALID, "flow \"%s\" version \"%s\" is not registered (%s)",
             o->req.flow_name, o->req.flow_version, o->b->ctx.cfg.flows_table);
    else if (org && strcmp(org, o->req.org_id) != 0)
        fail(o, LAUNCH_EXIT_INVALID, "flow \"%s\" version \"%s\" belongs to org \"%s\", not \"%s\"",
             o->req.flow_name, o->req.flow_version, org, o->req.org_id);
    else if (!uri)
        fail(o, LAUNCH_EXIT_INVALID, "flow \"%s\" version \"%s\" has no artifact_s3_uri",
             o->req.flow_name, o->req.flow_version);
    else
        flow_resolved(o, o->req.flow_version, uri, launch__str(it, "artifact_sha256"));
    cJSON_Delete(it);
}

static void query_flows(one *o, const cJSON *start_key);

/* Keeps the highest semantic version of the org's registrations seen so far. */
static void consider_version(one *o, const cJSON *it)
{
    const char *v = launch__str(it, "flow_version"), *org = launch__str(it, "org_id");
    const char *uri = launch__str(it, "artifact_s3_uri"), *sha = launch__str(it, "artifact_sha256");
    if (!v || !uri || (org && strcmp(org, o->req.org_id) != 0))
        return;
    if (!launch_semver_valid(v)) {
        o->other_versions++;
        return;
    }
    if (o->best_version && launch_semver_cmp(v, o->best_version) <= 0)
        return;
    free(o->best_version);
    free(o->best_uri);
    free(o->best_sha);
    o->best_version = strdup(v);
    o->best_uri = strdup(uri);
    o->best_sha = sha ? strdup(sha) : NULL;
}

static void on_flow_query(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    if (!aws_ok(r)) {
        char why[LAUNCH_ERR_MAX];
        launch__aws_reason(r, why, sizeof why);
        return fail(o, LAUNCH_EXIT_FAILED, "cannot query %s: %s", o->b->ctx.cfg.flows_table, why);
    }
    const cJSON *e, *items = cJSON_GetObjectItemCaseSensitive(r->json, "Items");
    cJSON_ArrayForEach(e, items)
    {
        cJSON *it = proto_ddb_unmarshal(e);
        consider_version(o, it);
        cJSON_Delete(it);
    }
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(r->json, "LastEvaluatedKey");
    if (cJSON_IsObject(next))
        return query_flows(o, next);
    if (o->best_version)
        return flow_resolved(o, o->best_version, o->best_uri, o->best_sha);
    if (o->other_versions)
        return fail(o, LAUNCH_EXIT_INVALID,
                    "flow \"%s\" has no semantic version for org \"%s\" (latest needs one); "
                    "pass --flow-version",
                    o->req.flow_name, o->req.org_id);
    fail(o, LAUNCH_EXIT_INVALID, "flow \"%s\" is not registered for org \"%s\" (%s)",
         o->req.flow_name, o->req.org_id, o->b->ctx.cfg.flows_table);
}

static void query_flows(one *o, const cJSON *start_key)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", o->b->ctx.cfg.flows_table);
    cJSON_AddStringToObject(q, "KeyConditionExpression", "flow_name = :f");
    cJSON_AddStringToObject(q, "ProjectionExpression",
                            "flow_version, org_id, artifact_s3_uri, artifact_sha256");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":f"), "S", o->req.flow_name);
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    if (start_key)
        cJSON_AddItemToObject(q, "ExclusiveStartKey", cJSON_Duplicate(start_key, true));
    call_or_fail(o, "dynamodb", "Query", q, on_flow_query);
}

static void to_flow(one *o)
{
    set_state(o, L_FLOW);
    if (o->pre_flow)
        return to_deployment(o);
    if (strcmp(o->req.flow_version, "latest") == 0)
        return query_flows(o, NULL);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", o->b->ctx.cfg.flows_table);
    cJSON_AddItemToObject(
        q, "Key", launch__key("flow_name", o->req.flow_name, "flow_version", o->req.flow_version));
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    call_or_fail(o, "dynamodb", "GetItem", q, on_flow_get);
}

/* ---- deployment and its packages ---- */

typedef struct {
    one *o;
    size_t i;
} pkg_slot;

static void on_package(void *ud, const fetch_aws_result *r)
{
    pkg_slot *s = ud;
    one *o = s->o;
    const char *slug = o->pkgs[s->i];
    cJSON *it = aws_ok(r) ? get_item(r) : NULL;
    const char *uri = launch__str(it, "package_s3_uri");
    if (!aws_ok(r)) {
        char why[LAUNCH_ERR_MAX];
        launch__aws_reason(r, why, sizeof why);
        launch__fmt(o->error, sizeof o->error, "cannot read %s: %s", o->b->ctx.cfg.packages_table,
                    why);
        o->exit = LAUNCH_EXIT_FAILED;
    } else if (!uri || strchr(uri, ',')) {
        launch__fmt(o->error, sizeof o->error, "deployment \"%s\": package \"%s\" %s in %s",
                    o->req.deployment, slug,
                    !it    ? "is not registered"
                    : !uri ? "has no package_s3_uri"
                           : "has a comma in its package_s3_uri",
                    o->b->ctx.cfg.packages_table);
        o->exit = LAUNCH_EXIT_INVALID;
    } else {
        /* The slot now holds the URI the agent downloads instead of the slug. */
        free(o->pkgs[s->i]);
        o->pkgs[s->i] = strdup(uri);
    }
    cJSON_Delete(it);
    free(s);
    if (--o->pkgs_pending)
        return;
    if (o->error[0])
        return finish(o, false, o->exit);
    to_taskdef(o);
}

/* One GetItem per slug, all at once; the slots keep the deployment's order. */
static void fetch_packages(one *o)
{
    o->pkgs_pending = o->n_pkgs + 1; /* +1 until every call is started */
    for (size_t i = 0; i < o->n_pkgs; i++) {
        pkg_slot *s = malloc(sizeof *s);
        cJSON *q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "TableName", o->b->ctx.cfg.packages_table);
        cJSON_AddItemToObject(q, "Key", launch__key("slug", o->pkgs[i], NULL, NULL));
        int rc = -ENOMEM;
        if (s) {
            *s = (pkg_slot){o, i};
            rc = launch__call(&o->b->ctx, "dynamodb", "GetItem", q, on_package, s);
        } else {
            cJSON_Delete(q);
        }
        if (rc < 0) {
            free(s);
            launch__fmt(o->error, sizeof o->error, "DynamoDB GetItem: %s", strerror(-rc));
            o->exit = LAUNCH_EXIT_FAILED;
            o->pkgs_pending--;
        }
    }
    if (--o->pkgs_pending)
        return;
    if (o->error[0])
        return finish(o, false, o->exit);
    to_taskdef(o);
}

static void on_deployment(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    if (!aws_ok(r)) {
        char why[LAUNCH_ERR_MAX];
        launch__aws_reason(r, why, sizeof why);
        return fail(o, LAUNCH_EXIT_FAILED, "cannot read %s: %s", o->b->ctx.cfg.deployments_table,
                    why);
    }
    cJSON *it = get_item(r);
    if (!it)
        return fail(o, LAUNCH_EXIT_INVALID, "deployment \"%s\" is not registered (%s)",
                    o->req.deployment, o->b->ctx.cfg.deployments_table);
    const char *env = launch__str(it, "environment");
    if (!o->environment && env)
        o->environment = strdup(env);
    const cJSON *s, *slugs = cJSON_GetObjectItemCaseSensitive(it, "dep_package_slugs");
    size_t n = (size_t)cJSON_GetArraySize(slugs);
    o->pkgs = n ? calloc(n, sizeof *o->pkgs) : NULL;
    char why[LAUNCH_ERR_MAX] = "";
    cJSON_ArrayForEach(s, slugs)
    {
        if (cJSON_IsString(s) && !*why &&
            !proto_name_check(PROTO_NAME_SLUG, s->valuestring, why, sizeof why))
            break;
        if (cJSON_IsString(s) && o->pkgs)
            o->pkgs[o->n_pkgs++] = strdup(s->valuestring);
    }
    cJSON_Delete(it);
    if (*why)
        return fail(o, LAUNCH_EXIT_INVALID, "deployment \"%s\": %s", o->req.deployment, why);
    if (o->n_pkgs)
        return fetch_packages(o);
    to_taskdef(o);
}

static void to_deployment(one *o)
{
    set_state(o, L_DEPLOY);
    if (o->req.environment)
        o->environment = strdup(o->req.environment);
    if (!o->req.deployment || o->pre_pkgs)
        return to_taskdef(o);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", o->b->ctx.cfg.deployments_table);
    cJSON_AddItemToObject(q, "Key", launch__key("deployment_name", o->req.deployment, NULL, NULL));
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    call_or_fail(o, "dynamodb", "GetItem", q, on_deployment);
}

/* ---- the shared task definition ---- */

/* Releases every launch waiting for the task definition. */
static void taskdef_done(batch *b, int state)
{
    b->td_state = state;
    one *w = b->waiters;
    b->waiters = NULL;
    while (w) {
        one *next = w->next_wait;
        w->next_wait = NULL;
        if (state == TD_READY)
            to_put(w);
        else
            fail(w, LAUNCH_EXIT_FAILED, "%s", b->td_err);
        w = next;
    }
}

static void on_register(void *ud, const fetch_aws_result *r)
{
    batch *b = ud;
    const cJSON *td = cJSON_GetObjectItemCaseSensitive(r->json, "taskDefinition");
    const char *arn = launch__str(td, "taskDefinitionArn");
    if (!aws_ok(r) || !arn) {
        char why[LAUNCH_ERR_MAX];
        launch__aws_reason(r, why, sizeof why);
        launch__fmt(b->td_err, sizeof b->td_err,
                    "cannot register the dagy-worker task definition: %s", why);
        return taskdef_done(b, TD_FAILED);
    }
    b->taskdef = strdup(arn);
    taskdef_done(b, TD_READY);
}

/* Reuses the newest dagy-worker revision if it is what we would register; else registers. */
static void on_describe_td(void *ud, const fetch_aws_result *r)
{
    batch *b = ud;
    const cJSON *td = cJSON_GetObjectItemCaseSensitive(r->json, "taskDefinition");
    const char *region = fetch_aws_region(b->ctx.aws);
    const char *arn = launch__str(td, "taskDefinitionArn");
    if (aws_ok(r) && arn && launch_taskdef_matches(&b->ctx.cfg, region, td)) {
        b->taskdef = strdup(arn);
        return taskdef_done(b, TD_READY);
    }
    /* Not found is a ClientException; anything else (AccessDenied, ...) shows up again, with a
     * clearer message, when registering. */
    int rc = launch__call(&b->ctx, "ecs", "RegisterTaskDefinition",
                          launch_taskdef_body(&b->ctx.cfg, region), on_register, b);
    if (rc < 0) {
        launch__fmt(b->td_err, sizeof b->td_err, "ECS RegisterTaskDefinition: %s", strerror(-rc));
        taskdef_done(b, TD_FAILED);
    }
}

static void to_taskdef(one *o)
{
    batch *b = o->b;
    set_state(o, L_TASKDEF);
    if (b->td_state == TD_READY)
        return to_put(o);
    if (b->td_state == TD_FAILED)
        return fail(o, LAUNCH_EXIT_FAILED, "%s", b->td_err);
    o->next_wait = b->waiters;
    b->waiters = o;
    if (b->td_state == TD_PENDING)
        return;
    b->td_state = TD_PENDING;
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "taskDefinition", "dagy-worker");
    int rc = launch__call(&b->ctx, "ecs", "DescribeTaskDefinition", q, on_describe_td, b);
    if (rc < 0) {
        launch__fmt(b->td_err, sizeof b->td_err, "ECS DescribeTaskDefinition: %s", strerror(-rc));
        taskdef_done(b, TD_FAILED);
    }
}

/* ---- run item, RunTask, record ---- */

static void to_runtask(one *o);

/* The RunTask body for the resolved launch (rebuilt when the request adopts the correlation id
 * of its own earlier attempt). Returns false, with the launch failed, if ECS would refuse it. */
static bool build_runtask(one *o)
{
    batch *b = o->b;
    launch_resolved v = {o->flow_version, o->artifact_uri, (const char *const *)o->pkgs, o->n_pkgs,
                         o->environment};
    cJSON_Delete(o->runtask);
    o->runtask = launch_runtask_body(&b->ctx.cfg, b->taskdef, b->managed, &o->req, &v);
    size_t chars = launch_overrides_chars(o->runtask);
    /* ECS rejects larger overrides; find out before anything is written. */
    if (chars > LAUNCH_MAX_OVERRIDES_CHARS) {
        fail(o, LAUNCH_EXIT_INVALID,
             "the container overrides would be %zu characters, over ECS's limit of %d: "
             "pass fewer or smaller parameters/--env values",
             chars, LAUNCH_MAX_OVERRIDES_CHARS);
        return false;
    }
    return true;
}

/* The run id already has an item (`it`, plain; NULL if it vanished). Ours - the same request
 * fingerprint, still QUEUED - means an earlier attempt of this very launch wrote it (a lost
 * PutItem answer, or a crash before RunTask): continue with RunTask, whose clientToken (the run
 * id) makes a second call start no second task. Someone else's request is refused. */
static void existing_decide(one *o, const cJSON *it)
{
    const char *arn = launch__str(it, "external_id"), *st = launch__str(it, "status");
    const char *msg = launch__str(it, "error_message");
    const char *sha = launch__str(it, "launch_request_sha256");
    const char *corr = launch__str(it, "correlation_id");
    if (sha && strcmp(sha, o->sha) != 0)
        return fail(o, LAUNCH_EXIT_FAILED,
                    "run \"%s\" already exists with a different launch request "
                    "(launch_request_sha256 %.12s..., this request %.12s...); not launched again: "
                    "use a new run id",
                    o->req.run_id, sha, o->sha);
    if (it && !o->req.correlation_given && corr && strcmp(corr, o->req.correlation_id) != 0) {
        char *c = strdup(corr);
        if (!c)
            return fail(o, LAUNCH_EXIT_FAILED, "out of memory");
        free(o->req.correlation_id);
        o->req.correlation_id = c;
        if (!build_runtask(o))
            return;
    }
    if (arn) {
        o->note = "run already exists; no second task was started";
        o->task_arn = strdup(arn);
        return finish(o, true, LAUNCH_EXIT_OK);
    }
    if (sha && st && strcmp(st, "QUEUED") == 0) {
        o->note = "run item already written by an earlier attempt of this launch; RunTask "
                  "called with the same clientToken";
        return to_runtask(o);
    }
    fail(o, LAUNCH_EXIT_FAILED, "run \"%s\" already exists (status %s)%s%s; not launched again",
         o->req.run_id, st ? st : "unknown", msg ? ": " : ", no task recorded", msg ? msg : "");
}

static void on_existing(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    if (!aws_ok(r)) {
        char why[LAUNCH_ERR_MAX - 64];
        launch__aws_reason(r, why, sizeof why);
        return fail(o, LAUNCH_EXIT_FAILED, "run \"%s\" already exists; reading it failed: %s",
                    o->req.run_id, why);
    }
    cJSON *it = get_item(r);
    existing_decide(o, it);
    cJSON_Delete(it);
}

static void on_put(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    if (aws_ok(r))
        return to_runtask(o);
    if (r->error_code && strcmp(r->error_code, "ConditionalCheckFailedException") == 0) {
        set_state(o, L_EXISTING);
        /* ReturnValuesOnConditionCheckFailure brought the item along; else read it. */
        const cJSON *old = cJSON_GetObjectItemCaseSensitive(r->json, "Item");
        if (cJSON_IsObject(old)) {
            cJSON *it = proto_ddb_unmarshal(old);
            existing_decide(o, it);
            cJSON_Delete(it);
            return;
        }
        cJSON *q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "TableName", o->b->ctx.cfg.runs_table);
        cJSON_AddItemToObject(q, "Key", launch__key("run_id", o->req.run_id, NULL, NULL));
        cJSON_AddBoolToObject(q, "ConsistentRead", true);
        return call_or_fail(o, "dynamodb", "GetItem", q, on_existing);
    }
    char why[LAUNCH_ERR_MAX];
    launch__aws_reason(r, why, sizeof why);
    fail(o, LAUNCH_EXIT_FAILED, "cannot write the run item to %s: %s", o->b->ctx.cfg.runs_table,
         why);
}

static void to_put(one *o)
{
    batch *b = o->b;
    set_state(o, L_PUT);
    if (!build_runtask(o))
        return;
    launch_resolved v = {o->flow_version, o->artifact_uri, (const char *const *)o->pkgs, o->n_pkgs,
                         o->environment};
    launch_request_sha256(&o->req, &v, o->sha);
    char now[32];
    proto_iso_time(proto_now(), now);
    cJSON *plain = launch_run_item(&o->req, &v, now);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", b->ctx.cfg.runs_table);
    cJSON_AddItemToObject(q, "Item", proto_ddb_marshal(plain));
    cJSON_Delete(plain);
    cJSON_AddStringToObject(q, "ConditionExpression", "attribute_not_exists(run_id)");
    cJSON_AddStringToObject(q, "ReturnValuesOnConditionCheckFailure", "ALL_OLD");
    call_or_fail(o, "dynamodb", "PutItem", q, on_put);
}

static void on_stop_cancelled(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    if (!aws_ok(r)) {
        char why[LAUNCH_ERR_MAX];
        launch__aws_reason(r, why, sizeof why);
        fprintf(stderr, "dagy-launch: warning: run %s: stopping task %s failed: %s\n",
                o->req.run_id, o->task_arn, why);
    }
    fail(o, LAUNCH_EXIT_FAILED,
         "run \"%s\" was cancelled while it was being launched; task %s "
         "stopped",
         o->req.run_id, o->task_arn);
}

static void on_record_arn(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    if (r->error_code && strcmp(r->error_code, "ConditionalCheckFailedException") == 0) {
        /* `dagy-launch cancel` got there between the QUEUED write and RunTask's answer: the
         * run is over, so is its task. */
        cJSON *q = cJSON_CreateObject();
        cJSON_AddStringToObject(q, "cluster", o->b->ctx.cfg.cluster);
        cJSON_AddStringToObject(q, "task", o->task_arn);
        cJSON_AddStringToObject(q, "reason", "dagy-launch: run cancelled during its launch");
        return call_or_fail(o, "ecs", "StopTask", q, on_stop_cancelled);
    }
    /* The task runs either way; the agent also records its ARN from the metadata endpoint. */
    if (!aws_ok(r)) {
        char why[LAUNCH_ERR_MAX];
        launch__aws_reason(r, why, sizeof why);
        fprintf(stderr,
                "dagy-launch: warning: run %s: task %s started, but recording it failed: %s\n",
                o->req.run_id, o->task_arn, why);
    }
    finish(o, true, LAUNCH_EXIT_OK);
}

static void on_record_failure(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    if (!aws_ok(r)) {
        char why[LAUNCH_ERR_MAX];
        launch__aws_reason(r, why, sizeof why);
        fprintf(stderr, "dagy-launch: warning: run %s: recording the launch failure failed: %s\n",
                o->req.run_id, why);
    }
    finish(o, false, LAUNCH_EXIT_FAILED);
}

/* UpdateItem of the run: SET external_id, or the launch failure (only while still QUEUED). */
static void record(one *o, bool launched)
{
    set_state(o, L_RECORD);
    char now[32], seq[32];
    proto_iso_time(proto_now(), now);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", o->b->ctx.cfg.runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", o->req.run_id, NULL, NULL));
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    if (launched) {
        /* if_not_exists: the agent may have recorded it first; never create a stray item. */
        cJSON_AddStringToObject(q, "UpdateExpression",
                                "SET external_id = if_not_exists(external_id, :arn)");
        cJSON_AddStringToObject(
            q, "ConditionExpression",
            "attribute_exists(run_id) AND attribute_not_exists(cancel_requested_at)");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":arn"), "S", o->task_arn);
        return call_or_fail(o, "dynamodb", "UpdateItem", q, on_record_arn);
    }
    launch__fmt(seq, sizeof seq, "%lld", LAUNCH_FINAL_SEQ);
    cJSON_AddStringToObject(q, "UpdateExpression",
                            "SET #s = :failed, error_message = :msg, completed_at = :now, "
                            "updated_at = :now, status_seq = :seq REMOVE " LAUNCH_ACTIVE_ATTR);
    cJSON_AddStringToObject(q, "ConditionExpression", "#s = :queued");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(q, "ExpressionAttributeNames"), "#s", "status");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":failed"), "S", "FAILED");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":queued"), "S", "QUEUED");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":msg"), "S", o->error);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":now"), "S", now);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":seq"), "N", seq);
    int rc = launch__call(&o->b->ctx, "dynamodb", "UpdateItem", q, on_record_failure, o);
    if (rc < 0)
        finish(o, false, LAUNCH_EXIT_FAILED);
}

/* The first RunTask failure as "REASON (detail, arn)". */
static void failure_reason(const cJSON *failures, char *buf, size_t n)
{
    const cJSON *f = cJSON_GetArrayItem(failures, 0);
    const char *reason = launch__str(f, "reason"), *detail = launch__str(f, "detail");
    const char *arn = launch__str(f, "arn");
    /* ECS may send empty strings: an empty field counts as absent (the message says something). */
    reason = reason && *reason ? reason : NULL;
    detail = detail && *detail ? detail : NULL;
    arn = arn && *arn ? arn : NULL;
    launch__fmt(buf, n, "%s%s%s%s%s%s", reason ? reason : "unknown failure",
                detail || arn ? " (" : "", detail ? detail : "", detail && arn ? ", " : "",
                arn ? arn : "", detail || arn ? ")" : "");
}

const char *launch__runtask_arn(const cJSON *answer, char *why, size_t n)
{
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(answer, "tasks");
    const cJSON *failures = cJSON_GetObjectItemCaseSensitive(answer, "failures");
    const char *arn = launch__str(cJSON_GetArrayItem(tasks, 0), "taskArn");
    if (cJSON_GetArraySize(failures) > 0)
        failure_reason(failures, why, n);
    else if (!arn)
        launch__fmt(why, n, "RunTask returned no task");
    else
        return arn;
    return NULL;
}

static void on_runtask(void *ud, const fetch_aws_result *r)
{
    one *o = ud;
    char why[LAUNCH_ERR_MAX - 32];
    const char *arn = NULL;
    if (!aws_ok(r))
        launch__aws_reason(r, why, sizeof why);
    else if ((arn = launch__runtask_arn(r->json, why, sizeof why))) {
        o->task_arn = strdup(arn);
        return record(o, true);
    }
    launch__fmt(o->error, sizeof o->error, "ECS launch failed: %s", why);
    record(o, false);
}

static void to_runtask(one *o)
{
    set_state(o, L_RUNTASK);
    cJSON *body = o->runtask;
    o->runtask = NULL;
    int rc = launch__call(&o->b->ctx, "ecs", "RunTask", body, on_runtask, o);
    if (rc < 0) {
        launch__fmt(o->error, sizeof o->error, "ECS launch failed: %s", strerror(-rc));
        record(o, false);
    }
}

/* ---- the commands ---- */

static cJSON *result_json(const one *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "success", o->success);
    cJSON_AddStringToObject(j, "run_id", o->req.run_id);
    cJSON_AddStringToObject(j, "flow_name", o->req.flow_name);
    if (o->flow_version)
        cJSON_AddStringToObject(j, "flow_version", o->flow_version);
    o->task_arn ? cJSON_AddStringToObject(j, "task_arn", o->task_arn)
                : cJSON_AddNullToObject(j, "task_arn");
    cJSON_AddStringToObject(j, "correlation_id", o->req.correlation_id);
    o->success ? cJSON_AddNullToObject(j, "error_message")
               : cJSON_AddStringToObject(j, "error_message", o->error);
    if (o->note)
        cJSON_AddStringToObject(j, "message", o->note);
    return j;
}

/* An error before any launch started: the message on stderr, the result as `run` prints it. */
static cJSON *invalid(const char *msg, const launch_request *r)
{
    fprintf(stderr, "dagy-launch: %s\n", msg);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "success", false);
    r && r->run_id ? cJSON_AddStringToObject(j, "run_id", r->run_id)
                   : cJSON_AddNullToObject(j, "run_id");
    cJSON_AddNullToObject(j, "task_arn");
    cJSON_AddStringToObject(j, "error_message", msg);
    return j;
}

static void one_clear(one *o)
{
    launch_request_clear(&o->req);
    free(o->flow_version);
    free(o->artifact_uri);
    free(o->environment);
    free(o->best_version);
    free(o->best_uri);
    free(o->best_sha);
    for (size_t i = 0; i < o->n_pkgs; i++)
        free(o->pkgs[i]);
    free(o->pkgs);
    cJSON_Delete(o->runtask);
    free(o->task_arn);
}

/* Runs every launch of the batch to completion on one loop. Returns -1 when they ran, or
 * LAUNCH_EXIT_INVALID with *answer the error result when the configuration is missing. */
static int run_all(batch *b, cJSON **answer)
{
    char err[LAUNCH_ERR_MAX];
    if (launch__ctx_open(&b->ctx, LAUNCH_NEED_RUN, err) < 0) {
        *answer = invalid(err, b->n == 1 ? &b->runs[0].req : NULL);
        return LAUNCH_EXIT_INVALID;
    }
    b->managed = b->ctx.cfg.task_definition == NULL;
    if (!b->managed) {
        b->taskdef = strdup(b->ctx.cfg.task_definition);
        b->td_state = TD_READY;
    }
    b->pending = b->n;
    pump(b);
    if (b->pending)
        uv_run(&b->ctx.loop, UV_RUN_DEFAULT);
    launch__ctx_close(&b->ctx);
    return -1;
}

/* Validates every request of `items` (a non-empty array; each element may be NULL-like only
 * for a single run from the options); any invalid request: nothing is launched. */
static int load_requests(batch *b, const launch_opts *o, const cJSON *items, char *err)
{
    int n = cJSON_GetArraySize(items);
    b->runs = calloc((size_t)n, sizeof *b->runs);
    int rc = b->runs ? 0 : -ENOMEM;
    for (int i = 0; rc == 0 && i < n; i++, b->n++)
        rc = launch_request_init(&b->runs[i].req, o, cJSON_GetArrayItem(items, i), i, err);
    for (size_t i = 0; rc == 0 && i < b->n; i++)
        for (size_t k = 0; rc == 0 && k < i; k++)
            if (strcmp(b->runs[i].req.run_id, b->runs[k].req.run_id) == 0) {
                launch__fmt(err, LAUNCH_ERR_MAX, "request %zu: run_id \"%s\" repeats request %zu",
                            i, b->runs[i].req.run_id, k);
                rc = -EINVAL;
            }
    if (rc == -ENOMEM)
        launch__fmt(err, LAUNCH_ERR_MAX, "out of memory");
    return rc;
}

int launch__run(const launch_opts *o, const cJSON *item, cJSON **answer)
{
    char err[LAUNCH_ERR_MAX];
    batch b = {0};
    one run = {0};
    *answer = NULL;
    if (launch_request_init(&run.req, o, item, -1, err) < 0) {
        *answer = invalid(err, NULL);
        return LAUNCH_EXIT_INVALID;
    }
    b.runs = &run;
    b.n = 1;
    int rc = run_all(&b, answer);
    if (rc < 0) {
        *answer = result_json(&run);
        if (!run.success)
            fprintf(stderr, "dagy-launch: %s\n", run.error);
        rc = run.exit;
    }
    one_clear(&run);
    free(b.taskdef);
    return rc;
}

int launch_cmd_run(const launch_opts *o)
{
    cJSON *answer = NULL;
    int rc = launch__run(o, NULL, &answer);
    launch__print_json(answer);
    cJSON_Delete(answer);
    return rc;
}

int launch__batch(const launch_opts *o, const cJSON *items, cJSON **answer)
{
    char err[LAUNCH_ERR_MAX], parent[40];
    launch_opts opts = *o;
    batch b = {0};
    *answer = NULL;
    if (!opts.correlation_id || !*opts.correlation_id) {
        launch_uuid4(parent); /* one parent for the whole batch */
        opts.correlation_id = parent;
    }
    int rc = load_requests(&b, &opts, items, err);
    if (rc == 0 && (rc = run_all(&b, answer)) < 0) {
        cJSON *arr = cJSON_CreateArray();
        rc = LAUNCH_EXIT_OK;
        for (size_t i = 0; i < b.n; i++) {
            cJSON_AddItemToArray(arr, result_json(&b.runs[i]));
            if (!b.runs[i].success) {
                fprintf(stderr, "dagy-launch: request %zu: %s\n", i, b.runs[i].error);
                rc = LAUNCH_EXIT_FAILED;
            }
        }
        *answer = arr;
    } else if (rc < 0) {
        *answer = invalid(err, NULL);
        rc = LAUNCH_EXIT_INVALID;
    }
    for (size_t i = 0; i < b.n; i++)
        one_clear(&b.runs[i]);
    free(b.runs);
    free(b.taskdef);
    return rc;
}

/* Reads the requests file: a non-empty JSON array. */
static cJSON *read_requests(const launch_opts *o, char *err)
{
    char *text = launch__read_file(o->file, "--file", err);
    if (!text)
        return NULL;
    if (launch__refuse_nul(text, "--file", err) < 0) {
        free(text);
        return NULL;
    }
    cJSON *arr = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "--file %s: expected a non-empty JSON array of requests",
                    o->file);
        cJSON_Delete(arr);
        return NULL;
    }
    return arr;
}

int launch_cmd_batch(const launch_opts *o)
{
    char err[LAUNCH_ERR_MAX];
    cJSON *answer = NULL, *items = read_requests(o, err);
    int rc = LAUNCH_EXIT_INVALID;
    if (!items)
        answer = invalid(err, NULL);
    else
        rc = launch__batch(o, items, &answer);
    launch__print_json(answer);
    cJSON_Delete(answer);
    cJSON_Delete(items);
    return rc;
}

/* ---- prepared launches (retry, reconcile's relaunch) ---- */

int launch__launch(launch__spec *specs, size_t n)
{
    batch b = {0};
    b.runs = calloc(n ? n : 1, sizeof *b.runs);
    if (!b.runs)
        return -ENOMEM;
    b.n = n;
    for (size_t i = 0; i < n; i++) {
        one *o = &b.runs[i];
        launch__spec *s = &specs[i];
        o->req = s->req;
        memset(&s->req, 0, sizeof s->req);
        if (s->artifact_uri) {
            o->pre_flow = true;
            o->artifact_uri = s->artifact_uri;
            o->flow_version = strdup(o->req.flow_version);
            s->artifact_uri = NULL;
        }
        if (s->pkgs_known) {
            o->pre_pkgs = true;
            o->pkgs = s->pkgs;
            o->n_pkgs = s->n_pkgs;
            s->pkgs = NULL;
            s->n_pkgs = 0;
        }
    }
    char err[LAUNCH_ERR_MAX];
    int rc = 0;
    if (launch__ctx_open(&b.ctx, LAUNCH_NEED_RUN, err) < 0) {
        for (size_t i = 0; i < n; i++) {
            launch__fmt(b.runs[i].error, sizeof b.runs[i].error, "%s", err);
            b.runs[i].exit = LAUNCH_EXIT_INVALID;
        }
        rc = LAUNCH_EXIT_INVALID;
    } else {
        b.managed = b.ctx.cfg.task_definition == NULL;
        if (!b.managed) {
            b.taskdef = strdup(b.ctx.cfg.task_definition);
            b.td_state = TD_READY;
        }
        b.pending = b.n;
        pump(&b);
        if (b.pending)
            uv_run(&b.ctx.loop, UV_RUN_DEFAULT);
        launch__ctx_close(&b.ctx);
    }
    for (size_t i = 0; i < n; i++) {
        one *o = &b.runs[i];
        launch__spec *s = &specs[i];
        s->success = o->success;
        s->exit = o->exit;
        s->result = result_json(o);
        s->task_arn = o->task_arn;
        o->task_arn = NULL;
        launch__fmt(s->error, sizeof s->error, "%s", o->error);
        one_clear(o);
    }
    free(b.runs);
    free(b.taskdef);
    return rc;
}
