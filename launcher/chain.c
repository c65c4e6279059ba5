/* chain.c - the pure rules behind exactly-once launches and retry chains: the fingerprint of a
 * launch request (to tell our own QUEUED item from someone else's), the deterministic run id of
 * an infrastructure relaunch, and the classification of a stopped ECS task as an
 * infrastructure failure or the flow's own. No I/O. */
#include "launcher/launch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* ---- the request fingerprint ---- */

static int key_cmp(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

/* A deep copy of `v` whose objects have their keys in byte order (cJSON keeps insertion order,
 * and "--param b=1 --param a=2" must print like "--param a=2 --param b=1"). */
static cJSON *sorted_copy(const cJSON *v)
{
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v))
        return cJSON_Duplicate(v, true);
    int n = cJSON_GetArraySize(v);
    cJSON *out = cJSON_IsObject(v) ? cJSON_CreateObject() : cJSON_CreateArray();
    const cJSON **kids = n ? calloc((size_t)n, sizeof *kids) : NULL;
    if (!out || (n && !kids)) {
        free(kids);
        cJSON_Delete(out);
        return NULL;
    }
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) kids[i++] = e;
    if (cJSON_IsObject(v) && n > 1)
        qsort(kids, (size_t)n, sizeof *kids, key_cmp);
    for (i = 0; i < n; i++) {
        cJSON *c = sorted_copy(kids[i]);
        if (cJSON_IsObject(v))
            cJSON_AddItemToObject(out, kids[i]->string, c);
        else
            cJSON_AddItemToArray(out, c);
    }
    free(kids);
    return out;
}

static void add_opt(cJSON *o, const char *name, const char *value)
{
    if (value)
        cJSON_AddStringToObject(o, name, value);
    else
        cJSON_AddNullToObject(o, name);
}

/* The canonical launch request, keys in a fixed order. */
static cJSON *canonical_request(const launch_request *r, const launch_resolved *v)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "fingerprint_version", 1);
    cJSON_AddStringToObject(c, "run_id", r->run_id);
    cJSON_AddStringToObject(c, "flow_name", r->flow_name);
    cJSON_AddStringToObject(c, "flow_version", v->flow_version);
    cJSON_AddStringToObject(c, "artifact_s3_uri", v->artifact_uri);
    cJSON *pk = cJSON_AddArrayToObject(c, "dep_package_uris");
    for (size_t i = 0; i < v->n_packages; i++)
        cJSON_AddItemToArray(pk, cJSON_CreateString(v->package_uris[i]));
    cJSON_AddStringToObject(c, "org_id", r->org_id);
    add_opt(c, "environment", v->environment);
    add_opt(c, "deployment_name", r->deployment);
    cJSON_AddItemToObject(c, "parameters", sorted_copy(r->parameters));
    cJSON_AddItemToObject(c, "extra_env", r->env ? sorted_copy(r->env) : cJSON_CreateObject());
    cJSON_AddItemToObject(c, "metadata",
                          r->metadata ? sorted_copy(r->metadata) : cJSON_CreateNull());
    cJSON_AddNumberToObject(c, "cpu", r->cpu);
    cJSON_AddNumberToObject(c, "memory", r->memory);
    cJSON_AddNumberToObject(c, "ephemeral_storage_gib", r->ephemeral_gib);
    add_opt(c, "capacity_provider", r->capacity_provider);
    add_opt(c, "correlation_id", r->correlation_given ? r->correlation_id : NULL);
    add_opt(c, "retry_of", r->retry_of);
    add_opt(c, "resume_from", r->resume_from);
    cJSON_AddNumberToObject(c, "infra_retries", r->infra_retries);
    return c;
}

void launch_request_sha256(const launch_request *r, const launch_resolved *v, char hex[65])
{
    cJSON *c = canonical_request(r, v);
    char *text = c ? cJSON_PrintUnformatted(c) : NULL;
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    hex[0] = '\0';
    if (text && EVP_Digest(text, strlen(text), dig, &n, EVP_sha256(), NULL) == 1)
        for (unsigned i = 0; i < n && i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    free(text);
    cJSON_Delete(c);
}

/* ---- retries ---- */

void launch_retry_run_id(const char *source, int infra_retries, char out[LAUNCH_MAX_RUN_ID + 1])
{
    char suffix[24];
    snprintf(suffix, sizeof suffix, "-infra%d", infra_retries);
    size_t ns = strlen(source), nx = strlen(suffix);
    if (ns + nx <= LAUNCH_MAX_RUN_ID) {
        memcpy(out, source, ns);
        memcpy(out + ns, suffix, nx + 1);
        return;
    }
    /* Too long to extend: a digest of the source id keeps it deterministic and unique. */
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    char hex[65] = "";
    if (EVP_Digest(source, strlen(source), dig, &n, EVP_sha256(), NULL) == 1)
        for (unsigned i = 0; i < n && i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    launch__fmt(out, LAUNCH_MAX_RUN_ID + 1, "r%.40s%s", hex, suffix);
}

/* A JSON-text attribute of the source item as an object (absent = empty object). */
static cJSON *json_attr(const cJSON *src, const char *name, const char *what, char *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(src, name);
    if (!a || cJSON_IsNull(a))
        return cJSON_CreateObject();
    cJSON *o = cJSON_IsString(a) ? cJSON_Parse(a->valuestring) : NULL;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        snprintf(err, LAUNCH_ERR_MAX, "the source run's %s is not a JSON object", what);
        return NULL;
    }
    return o;
}

/* A number attribute of the source item as decimal text (NULL if absent). */
static const char *num_attr(const cJSON *src, const char *name, char *buf, size_t n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(src, name);
    if (cJSON_IsNumber(a)) {
        snprintf(buf, n, "%.0f", a->valuedouble);
        return buf;
    }
    return cJSON_IsString(a) ? a->valuestring : NULL;
}

int launch_request_from_item(launch_request *r, const cJSON *src, const launch_retry_opts *ro,
                             char *err)
{
    memset(r, 0, sizeof *r);
    const char *id = launch__str(src, "run_id");
    const char *missing = !id                                 ? "run_id"
                          : !launch__str(src, "flow_name")    ? "flow_name"
                          : !launch__str(src, "flow_version") ? "flow_version"
                          : !launch__str(src, "org_id")       ? "org_id"
                                                              : NULL;
    if (missing) {
        snprintf(err, LAUNCH_ERR_MAX,
                 "the source run has no %s: it was not launched by dagy-launch", missing);
        return -EINVAL;
    }
    char cpu[32], mem[32], eph[32];
    launch_opts o = {
        .flow = launch__str(src, "flow_name"),
        .flow_version = launch__str(src, "flow_version"),
        .org = launch__str(src, "org_id"),
        .environment = launch__str(src, "environment"),
        .deployment = launch__str(src, "deployment_name"),
        .correlation_id =
            ro->correlation_id ? ro->correlation_id : launch__str(src, "correlation_id"),
        .trigger_source = ro->trigger_source,
        .triggered_by = ro->triggered_by,
        .capacity_provider = launch__str(src, "capacity_provider"),
        .run_id = ro->run_id,
        .cpu = num_attr(src, "cpu", cpu, sizeof cpu),
        .memory = num_attr(src, "memory", mem, sizeof mem),
        .ephemeral = num_attr(src, "ephemeral_storage_gib", eph, sizeof eph),
    };
    o.parameters = json_attr(src, "parameters", "parameters", err);
    o.env = o.parameters ? json_attr(src, "extra_env", "extra_env", err) : NULL;
    cJSON *meta = o.env ? json_attr(src, "metadata", "metadata", err) : NULL;
    int rc = meta ? launch_request_init(r, &o, NULL, -1, err) : -EINVAL;
    cJSON_Delete(o.parameters);
    cJSON_Delete(o.env);
    if (rc == 0) {
        r->metadata = meta->child ? meta : NULL;
        meta = r->metadata ? NULL : meta;
        r->retry_of = strdup(id);
        r->resume_from = ro->all ? NULL : strdup(id);
        r->infra_retries = ro->infra_retries;
        if (!r->retry_of || (!ro->all && !r->resume_from)) {
            launch_request_clear(r);
            snprintf(err, LAUNCH_ERR_MAX, "out of memory");
            rc = -ENOMEM;
        }
    }
    cJSON_Delete(meta);
    return rc;
}
