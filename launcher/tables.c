/* tables.c - `dagy-launch init-tables` and `register-flow`: the DynamoDB tables of contract
 * section 6 (created where absent, on-demand billing, the runs table with its sparse index of
 * active runs), and flow registration (artifact checked and uploaded, DAGY_FLOWS item written). */
#include "launcher/launch.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fetch/unpack.h"
#include "proto/ddb.h"
#include "proto/flowspec.h"

static bool aws_ok(const fetch_aws_result *r)
{
    return r->err == 0 && r->http_status >= 200 && r->http_status < 300;
}

/* ---- init-tables ---- */

#define N_TABLES         5
#define TABLE_WAIT_POLLS 120 /* DescribeTable once a second until ACTIVE, at most 2 minutes */

typedef struct tables_job tables_job;

typedef struct {
    tables_job *job;
    const char *name, *hash, *range;
    bool created, done;
    bool index;       /* the runs table: needs the sparse index of active runs */
    bool index_added; /* the index was added to an existing table (UpdateTable) */
    int polls;
    uv_timer_t timer;
} table_op;

struct tables_job {
    launch__ctx ctx;
    table_op t[N_TABLES];
    size_t pending;
    char error[LAUNCH_ERR_MAX];
};

static void table_done(table_op *t)
{
    t->done = true;
    if (--t->job->pending == 0)
        uv_stop(&t->job->ctx.loop);
}

static void table_fail(table_op *t, const char *what, const fetch_aws_result *r)
{
    char why[LAUNCH_ERR_MAX];
    launch__aws_reason(r, why, sizeof why);
    if (!t->job->error[0])
        launch__fmt(t->job->error, sizeof t->job->error, "%s %s: %s", what, t->name, why);
    table_done(t);
}

static void describe_table(table_op *t);

static void on_poll(uv_timer_t *h)
{
    describe_table(h->data);
}

static int add_index(table_op *t);

/* The status of the active-runs index in a table description: NULL if absent. */
static const char *index_status(const cJSON *desc)
{
    const cJSON *g, *gs = cJSON_GetObjectItemCaseSensitive(desc, "GlobalSecondaryIndexes");
    cJSON_ArrayForEach(g, gs)
    {
        const char *name = launch__str(g, "IndexName");
        if (name && strcmp(name, LAUNCH_ACTIVE_INDEX) == 0) {
            const char *st = launch__str(g, "IndexStatus");
            return st ? st : "ACTIVE";
        }
    }
    return NULL;
}

/* Waits for ACTIVE: real DynamoDB creates tables (and indexes) asynchronously (CREATING). An
 * existing runs table without the index gets it here. */
static void on_table_status(void *ud, const fetch_aws_result *r, const char *what)
{
    table_op *t = ud;
    if (!aws_ok(r))
        return table_fail(t, what, r);
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(
        r->json, strcmp(what, "DescribeTable") == 0 ? "Table" : "TableDescription");
    const char *st = launch__str(desc, "TableStatus");
    const char *ist = t->index ? index_status(desc) : "ACTIVE";
    if ((!st || strcmp(st, "ACTIVE") == 0) && !ist && !t->index_added) {
        t->index_added = true;
        if (add_index(t) < 0) {
            launch__fmt(t->job->error, sizeof t->job->error, "UpdateTable %s: cannot send",
                        t->name);
            table_done(t);
        }
        return;
    }
    if ((!st || strcmp(st, "ACTIVE") == 0) && ist && strcmp(ist, "ACTIVE") == 0)
        return table_done(t);
    if (++t->polls > TABLE_WAIT_POLLS) {
        launch__fmt(t->job->error, sizeof t->job->error, "table %s still %s after %d s", t->name,
                    st, TABLE_WAIT_POLLS);
        return table_done(t);
    }
    uv_timer_start(&t->timer, on_poll, 1000, 0);
}

static void on_describe_table(void *ud, const fetch_aws_result *r)
{
    on_table_status(ud, r, "DescribeTable");
}

static void describe_table(table_op *t)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", t->name);
    if (launch__call(&t->job->ctx, "dynamodb", "DescribeTable", q, on_describe_table, t) < 0) {
        launch__fmt(t->job->error, sizeof t->job->error, "DescribeTable %s: cannot send", t->name);
        table_done(t);
    }
}

static void on_create_table(void *ud, const fetch_aws_result *r)
{
    table_op *t = ud;
    /* Already there (from an earlier run): that is the idempotent case, not an error. */
    if (r->error_code && strcmp(r->error_code, "ResourceInUseException") == 0)
        return describe_table(t);
    t->created = aws_ok(r);
    on_table_status(ud, r, "CreateTable");
}

static void add_key(cJSON *defs, cJSON *schema, const char *name, const char *type)
{
    cJSON *d = cJSON_CreateObject(), *s = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "AttributeName", name);
    cJSON_AddStringToObject(d, "AttributeType", "S");
    cJSON_AddItemToArray(defs, d);
    cJSON_AddStringToObject(s, "AttributeName", name);
    cJSON_AddStringToObject(s, "KeyType", type);
    cJSON_AddItemToArray(schema, s);
}

/* The sparse index of active runs: only items that carry LAUNCH_ACTIVE_ATTR are in it, so
 * reconcile and cancel --all-running read the active runs, not the history. */
static cJSON *active_index(void)
{
    cJSON *g = cJSON_CreateObject();
    cJSON_AddStringToObject(g, "IndexName", LAUNCH_ACTIVE_INDEX);
    cJSON *schema = cJSON_AddArrayToObject(g, "KeySchema");
    cJSON *k = cJSON_CreateObject();
    cJSON_AddStringToObject(k, "AttributeName", LAUNCH_ACTIVE_ATTR);
    cJSON_AddStringToObject(k, "KeyType", "HASH");
    cJSON_AddItemToArray(schema, k);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(g, "Projection"), "ProjectionType", "ALL");
    return g;
}

static void active_attr_def(cJSON *defs)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "AttributeName", LAUNCH_ACTIVE_ATTR);
    cJSON_AddStringToObject(d, "AttributeType", "S");
    cJSON_AddItemToArray(defs, d);
}

static void on_update_table(void *ud, const fetch_aws_result *r)
{
    on_table_status(ud, r, "UpdateTable");
}

static int add_index(table_op *t)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", t->name);
    active_attr_def(cJSON_AddArrayToObject(q, "AttributeDefinitions"));
    cJSON *u = cJSON_CreateObject();
    cJSON_AddItemToObject(u, "Create", active_index());
    cJSON_AddItemToArray(cJSON_AddArrayToObject(q, "GlobalSecondaryIndexUpdates"), u);
    return launch__call(&t->job->ctx, "dynamodb", "UpdateTable", q, on_update_table, t);
}

static int create_table(table_op *t)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", t->name);
    cJSON *defs = cJSON_AddArrayToObject(q, "AttributeDefinitions");
    cJSON *schema = cJSON_AddArrayToObject(q, "KeySchema");
    add_key(defs, schema, t->hash, "HASH");
    if (t->range)
        add_key(defs, schema, t->range, "RANGE");
    if (t->index) {
        active_attr_def(defs);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(q, "GlobalSecondaryIndexes"), active_index());
    }
    cJSON_AddStringToObject(q, "BillingMode", "PAY_PER_REQUEST");
    return launch__call(&t->job->ctx, "dynamodb", "CreateTable", q, on_create_table, t);
}

/* An existing runs table that just got the index: its QUEUED/RUNNING runs were written
 * without the marker, so they are marked once (one Scan, at migration time only) or the
 * reconciler would never see them. Returns how many were marked; err set on failure. */
static long backfill_active(launch__ctx *c, char *err)
{
    long marked = 0;
    cJSON *start = NULL;
    for (int page = 0; page < 1000000; page++) {
        cJSON *q = cJSON_CreateObject(), *ans = NULL;
        cJSON_AddStringToObject(q, "TableName", c->cfg.runs_table);
        cJSON_AddStringToObject(q, "FilterExpression",
                                "#s IN (:q, :r) AND attribute_not_exists(" LAUNCH_ACTIVE_ATTR ")");
        cJSON_AddStringToObject(q, "ProjectionExpression", "run_id");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(q, "ExpressionAttributeNames"), "#s",
                                "status");
        cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":q"), "S", "QUEUED");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(vals, ":r"), "S", "RUNNING");
        if (start)
            cJSON_AddItemToObject(q, "ExclusiveStartKey", start);
        char why[LAUNCH_ERR_MAX];
        if (launch__call_sync(c, "dynamodb", "Scan", q, &ans, NULL, why) < 0) {
            launch__fmt(err, LAUNCH_ERR_MAX, "marking the active runs of %s: %s", c->cfg.runs_table,
                        why);
            cJSON_Delete(ans);
            return marked;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(ans, "Items"))
        {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(e, "run_id"), "S");
            if (!cJSON_IsString(id))
                continue;
            cJSON *u = cJSON_CreateObject(), *ua = NULL;
            cJSON_AddStringToObject(u, "TableName", c->cfg.runs_table);
            cJSON_AddItemToObject(u, "Key", launch__key("run_id", id->valuestring, NULL, NULL));
            cJSON_AddStringToObject(u, "UpdateExpression", "SET " LAUNCH_ACTIVE_ATTR " = :one");
            cJSON_AddStringToObject(u, "ConditionExpression", "#s IN (:q, :r)");
            cJSON_AddStringToObject(cJSON_AddObjectToObject(u, "ExpressionAttributeNames"), "#s",
                                    "status");
            cJSON *uv = cJSON_AddObjectToObject(u, "ExpressionAttributeValues");
            cJSON_AddStringToObject(cJSON_AddObjectToObject(uv, ":one"), "S", LAUNCH_ACTIVE_VALUE);
            cJSON_AddStringToObject(cJSON_AddObjectToObject(uv, ":q"), "S", "QUEUED");
            cJSON_AddStringToObject(cJSON_AddObjectToObject(uv, ":r"), "S", "RUNNING");
            /* A run that ended meanwhile fails the condition: right, it is not active. */
            marked += launch__call_sync(c, "dynamodb", "UpdateItem", u, &ua, NULL, why) == 0;
            cJSON_Delete(ua);
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(ans, "LastEvaluatedKey");
        start = cJSON_IsObject(next) ? cJSON_Duplicate(next, true) : NULL;
        cJSON_Delete(ans);
        if (!start)
            break;
    }
    cJSON_Delete(start);
    return marked;
}

int launch_cmd_init_tables(void)
{
    char err[LAUNCH_ERR_MAX];
    tables_job *j = calloc(1, sizeof *j);
    if (!j)
        return LAUNCH_EXIT_FAILED;
    if (launch__ctx_open(&j->ctx, 0, err) < 0) {
        fprintf(stderr, "dagy-launch: %s\n", err);
        free(j);
        return LAUNCH_EXIT_INVALID;
    }
    const launch_config *c = &j->ctx.cfg;
    const char *defs[N_TABLES][3] = {{c->runs_table, "run_id", NULL},
                                     {c->task_runs_table, "run_id", "task_name"},
                                     {c->flows_table, "flow_name", "flow_version"},
                                     {c->deployments_table, "deployment_name", NULL},
                                     {c->packages_table, "slug", NULL}};
    for (size_t i = 0; i < N_TABLES; i++) {
        table_op *t = &j->t[i];
        *t = (table_op){j, defs[i][0], defs[i][1], defs[i][2], false, false, i == 0, false, 0, {0}};
        uv_timer_init(&j->ctx.loop, &t->timer);
        t->timer.data = t;
        j->pending++;
        if (create_table(t) < 0) {
            launch__fmt(j->error, sizeof j->error, "CreateTable %s: cannot send", t->name);
            table_done(t);
        }
    }
    if (j->pending)
        uv_run(&j->ctx.loop, UV_RUN_DEFAULT);
    for (size_t i = 0; i < N_TABLES; i++)
        uv_close((uv_handle_t *)&j->t[i].timer, NULL);
    long backfilled = 0;
    if (!j->error[0] && j->t[0].index_added)
        backfilled = backfill_active(&j->ctx, j->error);
    launch__ctx_close(&j->ctx);
    int rc = LAUNCH_EXIT_OK;
    if (j->error[0]) {
        fprintf(stderr, "dagy-launch: init-tables: %s\n", j->error);
        rc = LAUNCH_EXIT_FAILED;
    } else {
        cJSON *out = cJSON_CreateObject();
        cJSON *created = cJSON_AddArrayToObject(out, "created");
        cJSON *existing = cJSON_AddArrayToObject(out, "existing");
        for (size_t i = 0; i < N_TABLES; i++)
            cJSON_AddItemToArray(j->t[i].created ? created : existing,
                                 cJSON_CreateString(j->t[i].name));
        if (j->t[0].index_added) {
            cJSON *idx = cJSON_AddObjectToObject(out, "index_added");
            cJSON_AddStringToObject(idx, "table", j->t[0].name);
            cJSON_AddStringToObject(idx, "index", LAUNCH_ACTIVE_INDEX);
            cJSON_AddNumberToObject(idx, "active_runs_marked", (double)backfilled);
        }
        launch__print_json(out);
        cJSON_Delete(out);
    }
    free(j);
    return rc;
}

/* ---- register-flow ---- */

int launch__sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char buf[65536], dig[32];
    unsigned int dlen = 0;
    size_t n;
    int rc = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0)
        if (EVP_DigestUpdate(md, buf, n) != 1)
            rc = -EIO;
    if (rc == 0 && (ferror(f) || EVP_DigestFinal_ex(md, dig, &dlen) != 1))
        rc = -EIO;
    EVP_MD_CTX_free(md);
    fclose(f);
    for (unsigned i = 0; rc == 0 && i < dlen; i++)
        launch__fmt(hex + 2 * i, 3, "%02x", dig[i]);
    return rc;
}

int launch__unpack_scratch(const char *artifact, char tmpl[32], char dest[64], char *err)
{
    unpack_limits lim;
    char uerr[UNPACK_ERR_MAX];
    int rc = unpack_limits_from_env(&lim, err);
    if (rc < 0)
        return rc;
    snprintf(tmpl, 32, "/tmp/dagy-register-XXXXXX");
    if (!mkdtemp(tmpl)) {
        rc = -errno;
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot create a scratch directory: %s", strerror(-rc));
        return rc;
    }
    launch__fmt(dest, 64, "%s/a", tmpl);
    if (unpack_archive(artifact, dest, &lim, NULL, uerr) < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "--artifact %s: %s", artifact, uerr);
        unpack_rmtree(tmpl);
        return -EINVAL;
    }
    return 0;
}

/* Unpacks the artifact into a scratch directory and parses its flow_spec.json; the spec (as
 * compact JSON text) and its task count come back, the scratch directory is removed. */
static int read_spec(const char *artifact, const char *flow, const char *version, char **spec_text,
                     size_t *n_tasks, char *err)
{
    char tmpl[32], dest[64], path[96];
    int rc = launch__unpack_scratch(artifact, tmpl, dest, err);
    if (rc < 0)
        return rc;
    launch__fmt(path, sizeof path, "%s/flow_spec.json", dest);
    char ferr[FLOWSPEC_ERR_MAX];
    flowspec *spec = NULL;
    if ((rc = flowspec_load(path, &spec, ferr)) < 0)
        launch__fmt(err, LAUNCH_ERR_MAX, "--artifact %s: %s", artifact,
                    rc == -ENOENT ? "no flow_spec.json at the archive's root" : ferr);
    else if (strcmp(spec->name, flow) != 0 || strcmp(spec->version, version) != 0) {
        bool name = strcmp(spec->name, flow) != 0;
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "%s %s does not match the artifact's flow_spec.json %s \"%s\"",
                    name ? "--flow" : "--flow-version", name ? flow : version,
                    name ? "name" : "version", name ? spec->name : spec->version);
        rc = -EINVAL;
    }
    if (rc == 0) {
        char *text = launch__read_file(path, "flow_spec.json", err);
        cJSON *j = text ? cJSON_Parse(text) : NULL;
        *spec_text = j ? cJSON_PrintUnformatted(j) : NULL;
        *n_tasks = spec->n_tasks;
        cJSON_Delete(j);
        free(text);
        rc = *spec_text ? 0 : -ENOMEM;
    }
    flowspec_free(spec);
    unpack_rmtree(tmpl);
    return rc < 0 ? (rc == -ENOENT || rc == -EINVAL ? -EINVAL : rc) : 0;
}

typedef struct {
    launch__ctx ctx;
    const char *artifact, *flow, *version, *org;
    char sha[65], now[32];
    char *spec, *uri;
    size_t n_tasks;
    int rc;
    char error[LAUNCH_ERR_MAX];
} register_job;

static void reg_fail(register_job *j, int rc, const char *what, const fetch_aws_result *r)
{
    char why[LAUNCH_ERR_MAX - 64];
    launch__aws_reason(r, why, sizeof why);
    launch__fmt(j->error, sizeof j->error, "%s: %s", what, why);
    j->rc = rc;
    uv_stop(&j->ctx.loop);
}

/* An existing registration of this flow version: the same artifact for the same org is this
 * very registration (again, or an earlier attempt whose answer was lost) and succeeds; anything
 * else is refused, since a version is immutable. Returns true when it was ours. */
static bool same_registration(register_job *j, const cJSON *it)
{
    const char *sha = launch__str(it, "artifact_sha256"), *uri = launch__str(it, "artifact_s3_uri");
    const char *org = launch__str(it, "org_id");
    if (sha && strcmp(sha, j->sha) == 0 && (!org || strcmp(org, j->org) == 0)) {
        char *u = uri ? strdup(uri) : NULL;
        if (u) {
            free(j->uri);
            j->uri = u;
        }
        j->rc = LAUNCH_EXIT_OK;
        return true;
    }
    if (sha && strcmp(sha, j->sha) == 0)
        launch__fmt(j->error, sizeof j->error,
                    "flow \"%s\" version \"%s\" is already registered for org \"%s\", not \"%s\"",
                    j->flow, j->version, org, j->org);
    else
        launch__fmt(j->error, sizeof j->error,
                    "flow \"%s\" version \"%s\" is already registered with a different artifact "
                    "(sha256 %s); register a new version",
                    j->flow, j->version, sha ? sha : "unknown");
    j->rc = LAUNCH_EXIT_INVALID;
    return false;
}

static void on_put_flow(void *ud, const fetch_aws_result *r)
{
    register_job *j = ud;
    if (r->error_code && strcmp(r->error_code, "ConditionalCheckFailedException") == 0) {
        /* Registered meanwhile - by us, if the first answer was lost and this is the retry. */
        const cJSON *raw = cJSON_GetObjectItemCaseSensitive(r->json, "Item");
        cJSON *it = cJSON_IsObject(raw) ? proto_ddb_unmarshal(raw) : NULL;
        if (!it)
            return reg_fail(j, LAUNCH_EXIT_INVALID,
                            "flow version registered concurrently with other content", r);
        same_registration(j, it);
        cJSON_Delete(it);
        uv_stop(&j->ctx.loop);
        return;
    }
    if (!aws_ok(r))
        return reg_fail(j, LAUNCH_EXIT_FAILED, "cannot write the DAGY_FLOWS item", r);
    j->rc = LAUNCH_EXIT_OK;
    uv_stop(&j->ctx.loop);
}

/* After the upload: the DAGY_FLOWS item, only if that version is still unregistered. */
static void on_upload(void *ud, const fetch_aws_result *r)
{
    register_job *j = ud;
    if (!aws_ok(r))
        return reg_fail(j, LAUNCH_EXIT_FAILED, "cannot upload the artifact", r);
    cJSON *plain = cJSON_CreateObject();
    cJSON_AddStringToObject(plain, "flow_name", j->flow);
    cJSON_AddStringToObject(plain, "flow_version", j->version);
    cJSON_AddStringToObject(plain, "org_id", j->org);
    cJSON_AddStringToObject(plain, "artifact_s3_uri", j->uri);
    cJSON_AddStringToObject(plain, "spec", j->spec);
    cJSON_AddStringToObject(plain, "artifact_sha256", j->sha);
    cJSON_AddStringToObject(plain, "created_at", j->now);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", j->ctx.cfg.flows_table);
    cJSON_AddItemToObject(q, "Item", proto_ddb_marshal(plain));
    cJSON_AddStringToObject(q, "ConditionExpression", "attribute_not_exists(flow_version)");
    cJSON_AddStringToObject(q, "ReturnValuesOnConditionCheckFailure", "ALL_OLD");
    cJSON_Delete(plain);
    int rc = launch__call(&j->ctx, "dynamodb", "PutItem", q, on_put_flow, j);
    if (rc < 0) {
        launch__fmt(j->error, sizeof j->error, "DynamoDB PutItem: %s", strerror(-rc));
        uv_stop(&j->ctx.loop);
    }
}

/* A version is immutable: the same artifact again is a no-op, different content an error. */
static void on_existing_flow(void *ud, const fetch_aws_result *r)
{
    register_job *j = ud;
    if (!aws_ok(r))
        return reg_fail(j, LAUNCH_EXIT_FAILED, "cannot read the flow registry", r);
    const cJSON *raw = cJSON_GetObjectItemCaseSensitive(r->json, "Item");
    cJSON *it = cJSON_IsObject(raw) ? proto_ddb_unmarshal(raw) : NULL;
    if (it && it->child) {
        same_registration(j, it);
        uv_stop(&j->ctx.loop);
    } else {
        char key[1024], enc[PROTO_NAME_ENCODED_MAX];
        proto_name_encode(j->flow, enc, sizeof enc); /* the same key as j->uri */
        launch__fmt(key, sizeof key, "flows/%s/%s/artifact.zip", enc, j->version);
        int rc = fetch_s3_put_file(j->ctx.aws, j->ctx.cfg.artifact_bucket, key, j->artifact,
                                   on_upload, j);
        if (rc < 0) {
            launch__fmt(j->error, sizeof j->error, "S3 PutObject s3://%s/%s: %s",
                        j->ctx.cfg.artifact_bucket, key, strerror(-rc));
            uv_stop(&j->ctx.loop);
        }
    }
    cJSON_Delete(it);
}

static void print_registration(const register_job *j)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "flow_name", j->flow);
    cJSON_AddStringToObject(o, "flow_version", j->version);
    cJSON_AddStringToObject(o, "org_id", j->org);
    cJSON_AddStringToObject(o, "artifact_s3_uri", j->uri);
    cJSON_AddStringToObject(o, "artifact_sha256", j->sha);
    cJSON_AddNumberToObject(o, "tasks", (double)j->n_tasks);
    launch__print_json(o);
    cJSON_Delete(o);
}

int launch__version_check(const char *v, const char *flag, char *err)
{
    if (!launch_tag_value_valid(v, 128) || strchr(v, '/') || strcmp(v, "latest") == 0 ||
        !strcmp(v, ".") || !strcmp(v, "..")) {
        launch__fmt(err, LAUNCH_ERR_MAX, "%s \"%s\" is not a usable version", flag, v);
        return -EINVAL;
    }
    return 0;
}

/* Checks everything local (configuration, names, the artifact and its spec) before any AWS call. */
static int register_prepare(register_job *j, char *err)
{
    if (!proto_name_check(PROTO_NAME_FLOW, j->flow, err, LAUNCH_ERR_MAX))
        return -EINVAL;
    if (launch__version_check(j->version, "--flow-version", err) < 0)
        return -EINVAL;
    if (!proto_name_check(PROTO_NAME_ORG, j->org, err, LAUNCH_ERR_MAX))
        return -EINVAL;
    int rc = launch__sha256_file(j->artifact, j->sha);
    if (rc < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "--artifact %s: %s", j->artifact, strerror(-rc));
        return -EINVAL;
    }
    return read_spec(j->artifact, j->flow, j->version, &j->spec, &j->n_tasks, err);
}

int launch_cmd_register_flow(const char *artifact, const char *flow, const char *version,
                             const char *org)
{
    register_job j = {.artifact = artifact,
                      .flow = flow,
                      .version = version,
                      .org = org,
                      .rc = LAUNCH_EXIT_FAILED};
    if (launch__ctx_open(&j.ctx, LAUNCH_NEED_BUCKET, j.error) < 0 ||
        register_prepare(&j, j.error) < 0) {
        fprintf(stderr, "dagy-launch: %s\n", j.error);
        launch__ctx_close(&j.ctx);
        free(j.spec);
        return LAUNCH_EXIT_INVALID;
    }
    proto_iso_time(proto_now(), j.now);
    /* The flow name is one key segment: encoded like every name (proto_name_encode). */
    char enc[PROTO_NAME_ENCODED_MAX];
    proto_name_encode(flow, enc, sizeof enc);
    size_t n = strlen(j.ctx.cfg.artifact_bucket) + strlen(enc) + strlen(version) + 40;
    j.uri = malloc(n);
    launch__fmt(j.uri, n, "s3://%s/flows/%s/%s/artifact.zip", j.ctx.cfg.artifact_bucket, enc,
                version);
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", j.ctx.cfg.flows_table);
    cJSON_AddItemToObject(q, "Key", launch__key("flow_name", flow, "flow_version", version));
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    int rc = launch__call(&j.ctx, "dynamodb", "GetItem", q, on_existing_flow, &j);
    if (rc < 0)
        launch__fmt(j.error, sizeof j.error, "DynamoDB GetItem: %s", strerror(-rc));
    else
        uv_run(&j.ctx.loop, UV_RUN_DEFAULT);
    launch__ctx_close(&j.ctx);
    if (j.rc == LAUNCH_EXIT_OK)
        print_registration(&j);
    else
        fprintf(stderr, "dagy-launch: register-flow: %s\n", j.error);
    free(j.spec);
    free(j.uri);
    return j.rc;
}
