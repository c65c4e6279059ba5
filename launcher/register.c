/* register.c - `dagy-launch register-package` and `register-deployment`: the DAGY_DEP_PACKAGES
 * and DAGY_DEPLOYMENTS items of contract section 6, which `run` resolves into the
 * DAGY_DEP_PACKAGE_URIS of a run. A package is checked (safe unpack) and uploaded with its
 * sha256 in the URI, so the agent verifies what it downloads; a deployment names registered
 * packages only. Each command makes its AWS calls one after the other on one loop. */
#include "launcher/launch.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/unpack.h"
#include "proto/ddb.h"

#define MAX_DEPLOYMENT_PACKAGES 100

/* The outcome of one AWS call, kept after the callback returns. */
typedef struct {
    bool done, ok;
    cJSON *item; /* GetItem: the plain (unmarshalled) item, or NULL when absent */
    char code[128];
    char why[LAUNCH_ERR_MAX];
} reply;

static void on_reply(void *ud, const fetch_aws_result *r)
{
    reply *p = ud;
    p->done = true;
    p->ok = r->err == 0 && r->http_status >= 200 && r->http_status < 300;
    if (r->error_code)
        launch__fmt(p->code, sizeof p->code, "%s", r->error_code);
    if (!p->ok) {
        launch__aws_reason(r, p->why, sizeof p->why);
        return;
    }
    const cJSON *raw = r->json ? cJSON_GetObjectItemCaseSensitive(r->json, "Item") : NULL;
    if (cJSON_IsObject(raw) && raw->child)
        p->item = proto_ddb_unmarshal(raw);
}

/* Runs the loop until the call started by `start_rc` (launch__call's result) has answered. */
static void wait_reply(launch__ctx *c, int start_rc, const char *what, reply *p)
{
    if (start_rc < 0) {
        launch__fmt(p->why, sizeof p->why, "%s: cannot send: %s", what, strerror(-start_rc));
        return;
    }
    while (!p->done && uv_run(&c->loop, UV_RUN_ONCE))
        ;
    if (!p->done) /* the loop ran dry without an answer: never expected, never hangs */
        launch__fmt(p->why, sizeof p->why, "%s: no answer", what);
}

static void reply_clear(reply *p)
{
    cJSON_Delete(p->item);
    memset(p, 0, sizeof *p);
}

/* GetItem {key_name: key} from `table`, consistent. p->item is NULL when there is none. */
static void get_item(launch__ctx *c, const char *table, const char *key_name, const char *key,
                     reply *p)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", table);
    cJSON_AddItemToObject(q, "Key", launch__key(key_name, key, NULL, NULL));
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    wait_reply(c, launch__call(c, "dynamodb", "GetItem", q, on_reply, p), "DynamoDB GetItem", p);
}

/* PutItem of a plain item, with an optional condition (its values in `values`, consumed; the
 * condition writes the attribute "version" as #v). */
static void put_item(launch__ctx *c, const char *table, const cJSON *plain, const char *cond,
                     cJSON *values, reply *p)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", table);
    cJSON_AddItemToObject(q, "Item", proto_ddb_marshal(plain));
    if (cond) {
        /* #v: "version" spelled through a name placeholder, whatever the reserved words are. */
        cJSON *names = cJSON_AddObjectToObject(q, "ExpressionAttributeNames");
        cJSON_AddStringToObject(names, "#v", "version");
        cJSON_AddStringToObject(q, "ConditionExpression", cond);
        cJSON_AddItemToObject(q, "ExpressionAttributeValues", proto_ddb_marshal(values));
    }
    cJSON_Delete(values);
    wait_reply(c, launch__call(c, "dynamodb", "PutItem", q, on_reply, p), "DynamoDB PutItem", p);
}

/* ---- register-package ---- */

/* Unpacks the package into a scratch directory (the agent's own checks and limits) and removes
 * it again: an unsafe, corrupt or oversized archive is refused before anything is uploaded. */
static int check_package(const char *artifact, char *err)
{
    char tmpl[32], dest[64];
    int rc = launch__unpack_scratch(artifact, tmpl, dest, err);
    if (rc == 0)
        unpack_rmtree(tmpl);
    return rc;
}

typedef struct {
    const char *slug, *artifact, *version, *org;
    char sha[65], now[32], key[512], uri[1024];
} package_job;

/* Everything local: names, version, sha256 and a safe unpack, before any AWS call. */
static int package_prepare(package_job *j, const launch_config *cfg, char *err)
{
    char enc[PROTO_NAME_ENCODED_MAX];
    if (!proto_name_check(PROTO_NAME_SLUG, j->slug, err, LAUNCH_ERR_MAX) ||
        !proto_name_check(PROTO_NAME_ORG, j->org, err, LAUNCH_ERR_MAX) ||
        launch__version_check(j->version, "--version", err) < 0)
        return -EINVAL;
    int rc = launch__sha256_file(j->artifact, j->sha);
    if (rc < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "--artifact %s: %s", j->artifact, strerror(-rc));
        return -EINVAL;
    }
    if ((rc = check_package(j->artifact, err)) < 0)
        return rc;
    /* The slug is one key segment, encoded like every name (proto_name_encode). */
    proto_name_encode(j->slug, enc, sizeof enc);
    launch__fmt(j->key, sizeof j->key, "dep-packages/%s/%s/package.zip", enc, j->version);
    launch__fmt(j->uri, sizeof j->uri, "s3://%s/%s#sha256=%s", cfg->artifact_bucket, j->key,
                j->sha);
    proto_iso_time(proto_now(), j->now);
    return 0;
}

/* The registered item decides: another org's slug or the same version with other content is
 * refused (exit 2); the same version and content again is a no-op (returns 1); else 0. */
static int package_existing(const package_job *j, const cJSON *it, char *err)
{
    const char *org = launch__str(it, "org_id"), *ver = launch__str(it, "version");
    const char *sha = launch__str(it, "package_sha256");
    if (!it)
        return 0;
    if (org && strcmp(org, j->org) != 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "package \"%s\" is registered by org \"%s\", not \"%s\"",
                    j->slug, org, j->org);
        return -EINVAL;
    }
    if (!ver || strcmp(ver, j->version) != 0)
        return 0;
    if (sha && strcmp(sha, j->sha) == 0)
        return 1;
    launch__fmt(err, LAUNCH_ERR_MAX,
                "package \"%s\" version \"%s\" is already registered with different content "
                "(sha256 %s); register a new version",
                j->slug, j->version, sha ? sha : "unknown");
    return -EINVAL;
}

static void print_package(const package_job *j)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "slug", j->slug);
    cJSON_AddStringToObject(o, "version", j->version);
    cJSON_AddStringToObject(o, "org_id", j->org);
    cJSON_AddStringToObject(o, "package_s3_uri", j->uri);
    cJSON_AddStringToObject(o, "package_sha256", j->sha);
    launch__print_json(o);
    cJSON_Delete(o);
}

/* Upload, then the item, written only if no other content took this version meanwhile. */
static int package_write(launch__ctx *c, const package_job *j, char *err)
{
    reply p = {0};
    int rc = fetch_s3_put_file(c->aws, c->cfg.artifact_bucket, j->key, j->artifact, on_reply, &p);
    wait_reply(c, rc, "S3 PutObject", &p);
    if (!p.ok) {
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot upload the package to s3://%s/%s: %s",
                    c->cfg.artifact_bucket, j->key, p.why);
        reply_clear(&p);
        return LAUNCH_EXIT_FAILED;
    }
    reply_clear(&p);
    cJSON *plain = cJSON_CreateObject(), *vals = cJSON_CreateObject();
    cJSON_AddStringToObject(plain, "slug", j->slug);
    cJSON_AddStringToObject(plain, "package_s3_uri", j->uri);
    cJSON_AddStringToObject(plain, "org_id", j->org);
    cJSON_AddStringToObject(plain, "version", j->version);
    cJSON_AddStringToObject(plain, "package_sha256", j->sha);
    cJSON_AddStringToObject(plain, "created_at", j->now);
    cJSON_AddStringToObject(vals, ":v", j->version);
    cJSON_AddStringToObject(vals, ":sha", j->sha);
    put_item(c, c->cfg.packages_table, plain,
             "attribute_not_exists(slug) OR #v <> :v OR package_sha256 = :sha", vals, &p);
    cJSON_Delete(plain);
    rc = LAUNCH_EXIT_OK;
    if (!p.ok) {
        bool race = strcmp(p.code, "ConditionalCheckFailedException") == 0;
        launch__fmt(err, LAUNCH_ERR_MAX, "%s: %s",
                    race ? "package version registered concurrently with other content"
                         : "cannot write the DAGY_DEP_PACKAGES item",
                    p.why);
        rc = race ? LAUNCH_EXIT_INVALID : LAUNCH_EXIT_FAILED;
    }
    reply_clear(&p);
    return rc;
}

int launch_cmd_register_package(const char *slug, const char *artifact, const char *version,
                                const char *org)
{
    package_job j = {.slug = slug, .artifact = artifact, .version = version, .org = org};
    char err[LAUNCH_ERR_MAX];
    launch__ctx c;
    if (launch__ctx_open(&c, LAUNCH_NEED_BUCKET, err) < 0 || package_prepare(&j, &c.cfg, err) < 0) {
        fprintf(stderr, "dagy-launch: register-package: %s\n", err);
        launch__ctx_close(&c);
        return LAUNCH_EXIT_INVALID;
    }
    reply p = {0};
    get_item(&c, c.cfg.packages_table, "slug", slug, &p);
    int rc = LAUNCH_EXIT_FAILED, known = 0;
    if (!p.ok)
        launch__fmt(err, sizeof err, "cannot read %s: %s", c.cfg.packages_table, p.why);
    else if ((known = package_existing(&j, p.item, err)) < 0)
        rc = LAUNCH_EXIT_INVALID;
    else
        rc = known ? LAUNCH_EXIT_OK : package_write(&c, &j, err);
    reply_clear(&p);
    launch__ctx_close(&c);
    if (rc == LAUNCH_EXIT_OK)
        print_package(&j);
    else
        fprintf(stderr, "dagy-launch: register-package: %s\n", err);
    return rc;
}

/* ---- register-deployment ---- */

/* Checks the names and splits the slugs (each valid, none twice, at most 100). */
static int deployment_prepare(const char *name, const char *environment, const char *packages,
                              char ***slugs, char *err)
{
    if (!proto_name_check(PROTO_NAME_DEPLOYMENT, name, err, LAUNCH_ERR_MAX) ||
        !proto_name_check(PROTO_NAME_ENVIRONMENT, environment, err, LAUNCH_ERR_MAX))
        return -EINVAL;
    if (!(*slugs = proto_split_list(packages ? packages : "", ',')))
        return -ENOMEM;
    size_t n = 0;
    for (char **s = *slugs; *s; s++, n++) {
        if (!proto_name_check(PROTO_NAME_SLUG, *s, err, LAUNCH_ERR_MAX))
            return -EINVAL;
        for (char **t = *slugs; t < s; t++)
            if (strcmp(*t, *s) == 0) {
                launch__fmt(err, LAUNCH_ERR_MAX, "--packages: \"%s\" is listed twice", *s);
                return -EINVAL;
            }
    }
    if (n > MAX_DEPLOYMENT_PACKAGES) {
        launch__fmt(err, LAUNCH_ERR_MAX, "--packages: %zu packages (at most %d)", n,
                    MAX_DEPLOYMENT_PACKAGES);
        return -EINVAL;
    }
    return 0;
}

/* Every slug must name a registered package with a URI: exit 2 naming the first that does not. */
static int deployment_check_packages(launch__ctx *c, char **slugs, char *err)
{
    for (char **s = slugs; *s; s++) {
        reply p = {0};
        get_item(c, c->cfg.packages_table, "slug", *s, &p);
        int rc = LAUNCH_EXIT_OK;
        if (!p.ok) {
            launch__fmt(err, LAUNCH_ERR_MAX, "cannot read %s: %s", c->cfg.packages_table, p.why);
            rc = LAUNCH_EXIT_FAILED;
        } else if (!p.item || !launch__str(p.item, "package_s3_uri")) {
            launch__fmt(err, LAUNCH_ERR_MAX,
                        "package \"%s\" is not registered in %s (dagy-launch register-package "
                        "--slug %s ...)",
                        *s, c->cfg.packages_table, *s);
            rc = LAUNCH_EXIT_INVALID;
        }
        reply_clear(&p);
        if (rc != LAUNCH_EXIT_OK)
            return rc;
    }
    return LAUNCH_EXIT_OK;
}

int launch_cmd_register_deployment(const char *name, const char *environment, const char *packages)
{
    char err[LAUNCH_ERR_MAX], now[32], **slugs = NULL;
    launch__ctx c;
    if (launch__ctx_open(&c, 0, err) < 0 ||
        deployment_prepare(name, environment, packages, &slugs, err) < 0) {
        fprintf(stderr, "dagy-launch: register-deployment: %s\n", err);
        launch__ctx_close(&c);
        proto_list_free(slugs);
        return LAUNCH_EXIT_INVALID;
    }
    int rc = deployment_check_packages(&c, slugs, err);
    cJSON *plain = cJSON_CreateObject();
    cJSON_AddStringToObject(plain, "deployment_name", name);
    cJSON_AddStringToObject(plain, "environment", environment);
    cJSON *list = cJSON_AddArrayToObject(plain, "dep_package_slugs");
    for (char **s = slugs; *s; s++)
        cJSON_AddItemToArray(list, cJSON_CreateString(*s));
    cJSON_AddStringToObject(plain, "updated_at", proto_iso_time(proto_now(), now));
    if (rc == LAUNCH_EXIT_OK) {
        reply p = {0};
        put_item(&c, c.cfg.deployments_table, plain, NULL, NULL, &p);
        if (!p.ok) {
            launch__fmt(err, sizeof err, "cannot write the %s item: %s", c.cfg.deployments_table,
                        p.why);
            rc = LAUNCH_EXIT_FAILED;
        }
        reply_clear(&p);
    }
    launch__ctx_close(&c);
    if (rc == LAUNCH_EXIT_OK)
        launch__print_json(plain);
    else
        fprintf(stderr, "dagy-launch: register-deployment: %s\n", err);
    cJSON_Delete(plain);
    proto_list_free(slugs);
    return rc;
}

/* ---- command line ---- */

static const char usage_register_package[] =
    "usage: dagy-launch register-package --slug S --artifact FILE --version V --org ORG\n"
    "\n"
    "Checks the package (a zip or tar.gz unpacked with the agent's safety checks), uploads it\n"
    "to s3://DAGY_ARTIFACT_BUCKET/dep-packages/S/V/package.zip and writes the\n"
    "DAGY_DEP_PACKAGES item (package_s3_uri ending in #sha256=HEX, org_id, version). A new\n"
    "version replaces the slug's current one; the same version with other content is refused\n"
    "(exit 2), the same content again is a no-op; a slug of another org is refused.\n";

static const char usage_register_deployment[] =
    "usage: dagy-launch register-deployment --name N --environment E [--packages a,b]\n"
    "\n"
    "Writes (or replaces) the DAGY_DEPLOYMENTS item: environment and dep_package_slugs, in\n"
    "order. Every slug must be registered (dagy-launch register-package); an unknown one is\n"
    "refused (exit 2) and nothing is written. `run --deployment N` then gives the run these\n"
    "packages (DAGY_DEP_PACKAGE_URIS) and, unless --environment says otherwise, E.\n";

/* The options of both commands; each command accepts its own only, each once. */
typedef struct {
    const char *slug, *artifact, *version, *org; /* register-package */
    const char *name, *environment, *packages;   /* register-deployment */
} reg_args;

/* Where option `c` of `cmd` goes, or NULL if the command has no such option. */
static const char **reg_slot(reg_args *a, int c, bool pkg)
{
    switch (c) {
    case 's':
        return pkg ? &a->slug : NULL;
    case 'a':
        return pkg ? &a->artifact : NULL;
    case 'v':
        return pkg ? &a->version : NULL;
    case 'o':
        return pkg ? &a->org : NULL;
    case 'n':
        return pkg ? NULL : &a->name;
    case 'e':
        return pkg ? NULL : &a->environment;
    case 'p':
        return pkg ? NULL : &a->packages;
    }
    return NULL;
}

static int reg_usage(const char *cmd, const char *msg)
{
    fprintf(stderr, "dagy-launch %s: %s\n(see dagy-launch %s --help)\n", cmd, msg, cmd);
    return LAUNCH_EXIT_INVALID;
}

/* The first required option left out, or NULL. */
static const char *reg_missing(const reg_args *a, bool pkg)
{
    if (pkg)
        return !a->slug       ? "--slug is required"
               : !a->artifact ? "--artifact is required"
               : !a->version  ? "--version is required"
               : !a->org      ? "--org is required"
                              : NULL;
    return !a->name ? "--name is required" : !a->environment ? "--environment is required" : NULL;
}

int launch_register_main(int argc, char **argv, const char *cmd)
{
    static const struct option opts[] = {{"slug", required_argument, 0, 's'},
                                         {"artifact", required_argument, 0, 'a'},
                                         {"version", required_argument, 0, 'v'},
                                         {"org", required_argument, 0, 'o'},
                                         {"name", required_argument, 0, 'n'},
                                         {"environment", required_argument, 0, 'e'},
                                         {"packages", required_argument, 0, 'p'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    bool pkg = strcmp(cmd, "register-package") == 0;
    reg_args a = {0};
    const char **slot, *missing;
    int c;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(pkg ? usage_register_package : usage_register_deployment, stdout);
            return LAUNCH_EXIT_OK;
        }
        if (c == '?' || !(slot = reg_slot(&a, c, pkg)))
            return reg_usage(cmd, "unknown option or missing value");
        if (*slot)
            return reg_usage(cmd, "an option is given twice");
        *slot = optarg;
    }
    if (optind < argc)
        return reg_usage(cmd, "unexpected argument");
    if ((missing = reg_missing(&a, pkg)))
        return reg_usage(cmd, missing);
    return pkg ? launch_cmd_register_package(a.slug, a.artifact, a.version, a.org)
               : launch_cmd_register_deployment(a.name, a.environment, a.packages);
}
