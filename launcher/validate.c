/* validate.c - the pure checks of dagy-launch: configuration from the environment, workload
 * profiles and the Fargate CPU/memory table, semantic versions, parameters and extra variables,
 * and UUIDs (names and times: proto/names.h, proto/util.h). Nothing here talks to AWS, so every
 * rule is unit-tested directly. */
#include "launcher/launch.h"
#include "proto/fargate.h"
#include "proto/jsonnul.h"
#include "proto/names.h"
#include "proto/util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

/* ---- configuration ---- */

/* getenv that treats an empty value as unset. */
static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int need_var(const char *name, const char **out, char *err)
{
    if (!(*out = env_or_null(name))) {
        launch__fmt(err, LAUNCH_ERR_MAX, "missing configuration: %s is not set", name);
        return -EINVAL;
    }
    return 0;
}

/* A comma-separated list must have no empty items ("subnet-1,,subnet-2" is a typo). */
static int check_list(const char *name, const char *v, char *err)
{
    for (const char *p = v;; p++) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0 || strspn(p, " ") == len) {
            launch__fmt(err, LAUNCH_ERR_MAX, "%s has an empty item: \"%s\"", name, v);
            return -EINVAL;
        }
        if (!comma)
            return 0;
        p = comma;
    }
}

int launch_config_from_env(launch_config *c, unsigned need, char *err)
{
    memset(c, 0, sizeof *c);
    c->cluster = env_or_null("DAGY_ECS_CLUSTER_ARN");
    c->execution_role = env_or_null("DAGY_ECS_EXECUTION_ROLE_ARN");
    c->task_role = env_or_null("DAGY_ECS_TASK_ROLE_ARN");
    c->image = env_or_null("DAGY_ECS_WORKER_IMAGE");
    c->subnets = env_or_null("DAGY_ECS_SUBNETS");
    c->security_groups = env_or_null("DAGY_ECS_SECURITY_GROUPS");
    c->log_group = env_or_null("DAGY_ECS_LOG_GROUP");
    c->agent_log_group = env_or_null("DAGY_LOG_GROUP");
    c->artifact_bucket = env_or_null("DAGY_ARTIFACT_BUCKET");
    c->traces_bucket = env_or_null("DAGY_TRACES_BUCKET");
    c->results_bucket = env_or_null("DAGY_RESULTS_BUCKET");
    c->task_definition = env_or_null("DAGY_ECS_TASK_DEFINITION");
    c->container_name = env_or_null("DAGY_ECS_CONTAINER_NAME");
    c->assign_public_ip = env_or_null("DAGY_ECS_ASSIGN_PUBLIC_IP");
    if (!c->container_name)
        c->container_name = "dagy-worker";
    if (!c->assign_public_ip)
        c->assign_public_ip = "DISABLED";
    c->runs_table_set = env_or_null("DAGY_RUNS_TABLE") != NULL;
    c->task_runs_table_set = env_or_null("DAGY_TASK_RUNS_TABLE") != NULL;
    c->runs_table = c->runs_table_set ? getenv("DAGY_RUNS_TABLE") : "DAGY_RUNS";
    c->task_runs_table = c->task_runs_table_set ? getenv("DAGY_TASK_RUNS_TABLE") : "DAGY_TASK_RUNS";
    c->flows_table = env_or_null("DAGY_FLOWS_TABLE") ? getenv("DAGY_FLOWS_TABLE") : "DAGY_FLOWS";
    c->deployments_table = env_or_null("DAGY_DEPLOYMENTS_TABLE") ? getenv("DAGY_DEPLOYMENTS_TABLE")
                                                                 : "DAGY_DEPLOYMENTS";
    c->packages_table = env_or_null("DAGY_DEP_PACKAGES_TABLE") ? getenv("DAGY_DEP_PACKAGES_TABLE")
                                                               : "DAGY_DEP_PACKAGES";
    if (strcmp(c->assign_public_ip, "ENABLED") != 0 &&
        strcmp(c->assign_public_ip, "DISABLED") != 0) {
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "DAGY_ECS_ASSIGN_PUBLIC_IP must be ENABLED or DISABLED, not \"%s\"",
                    c->assign_public_ip);
        return -EINVAL;
    }
    if ((need & (LAUNCH_NEED_RUN | LAUNCH_NEED_CLUSTER)) &&
        need_var("DAGY_ECS_CLUSTER_ARN", &c->cluster, err) < 0)
        return -EINVAL;
    if (need & LAUNCH_NEED_RUN) {
        if (need_var("DAGY_ECS_SUBNETS", &c->subnets, err) < 0 ||
            need_var("DAGY_ECS_SECURITY_GROUPS", &c->security_groups, err) < 0 ||
            check_list("DAGY_ECS_SUBNETS", c->subnets, err) < 0 ||
            check_list("DAGY_ECS_SECURITY_GROUPS", c->security_groups, err) < 0)
            return -EINVAL;
        /* Without a task definition of the operator's, dagy-launch registers its own and needs
         * everything that goes into it. */
        if (!c->task_definition &&
            (need_var("DAGY_ECS_WORKER_IMAGE", &c->image, err) < 0 ||
             need_var("DAGY_ECS_EXECUTION_ROLE_ARN", &c->execution_role, err) < 0 ||
             need_var("DAGY_ECS_TASK_ROLE_ARN", &c->task_role, err) < 0 ||
             need_var("DAGY_ECS_LOG_GROUP", &c->log_group, err) < 0))
            return -EINVAL;
    }
    if ((need & LAUNCH_NEED_BUCKET) && need_var("DAGY_ARTIFACT_BUCKET", &c->artifact_bucket, err))
        return -EINVAL;
    return 0;
}

/* ---- profiles and the Fargate table: the one rule is proto/fargate.c ---- */

int launch_profile(const char *name, int *cpu, int *memory)
{
    return proto_profile(name, cpu, memory);
}

bool launch_fargate_valid(int cpu, int memory)
{
    return proto_fargate_valid(cpu, memory);
}

const char *launch_fargate_memory_hint(int cpu)
{
    return proto_fargate_memory_hint(cpu);
}

/* ---- semantic versions ---- */

/* Splits a version into its numeric core and the pre-release part (NULL if none). Returns false
 * if it is not semver: three dot-separated numbers without leading zeros, optional
 * "-prerelease" of dot-separated [0-9A-Za-z-] identifiers, optional "+build". */
static bool semver_parse(const char *v, unsigned long long core[3], const char **pre,
                         size_t *pre_len)
{
    if (*v == 'v')
        v++;
    for (int i = 0; i < 3; i++) {
        if (!isdigit((unsigned char)*v) || (v[0] == '0' && isdigit((unsigned char)v[1])))
            return false;
        errno = 0;
        char *end;
        core[i] = strtoull(v, &end, 10);
        if (errno)
            return false;
        v = end;
        if (i < 2 && *v++ != '.')
            return false;
    }
    *pre = NULL;
    *pre_len = 0;
    if (*v == '-') {
        *pre = ++v;
        while (*v && *v != '+')
            v++;
        *pre_len = (size_t)(v - *pre);
        if (*pre_len == 0)
            return false;
        for (const char *p = *pre; p < v; p++) {
            bool dot = *p == '.';
            if (!(isalnum((unsigned char)*p) || *p == '-' || dot))
                return false;
            if (dot && (p == *pre || p[1] == '.' || p + 1 == v))
                return false;
        }
    }
    if (*v == '+') {
        if (!*++v)
            return false;
        for (; *v; v++)
            if (!(isalnum((unsigned char)*v) || *v == '-' || *v == '.'))
                return false;
    }
    return *v == '\0';
}

bool launch_semver_valid(const char *v)
{
    unsigned long long core[3];
    const char *pre;
    size_t len;
    return v && semver_parse(v, core, &pre, &len);
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return n > 0;
}

/* Pre-release precedence (semver 2.0 item 11): identifier by identifier; numeric ones compare
 * numerically and rank below alphanumeric ones; a shorter list that is a prefix ranks lower. */
static int prerelease_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    while (an && bn) {
        size_t la = 0, lb = 0;
        while (la < an && a[la] != '.')
            la++;
        while (lb < bn && b[lb] != '.')
            lb++;
        bool na = all_digits(a, la), nb = all_digits(b, lb);
        int c;
        if (na && nb)
            c = la != lb ? (la < lb ? -1 : 1) : memcmp(a, b, la);
        else if (na != nb)
            c = na ? -1 : 1;
        else {
            c = memcmp(a, b, la < lb ? la : lb);
            if (c == 0 && la != lb)
                c = la < lb ? -1 : 1;
        }
        if (c)
            return c < 0 ? -1 : 1;
        a += la + (la < an);
        an -= la + (la < an);
        b += lb + (lb < bn);
        bn -= lb + (lb < bn);
    }
    return an ? 1 : bn ? -1 : 0;
}

int launch_semver_cmp(const char *a, const char *b)
{
    unsigned long long ca[3], cb[3];
    const char *pa, *pb;
    size_t la, lb;
    if (!semver_parse(a, ca, &pa, &la) || !semver_parse(b, cb, &pb, &lb))
        return 0;
    for (int i = 0; i < 3; i++)
        if (ca[i] != cb[i])
            return ca[i] < cb[i] ? -1 : 1;
    if (!pa || !pb) /* a release ranks above its pre-releases */
        return pa ? -1 : pb ? 1 : 0;
    return prerelease_cmp(pa, la, pb, lb);
}

/* ---- numbers, parameters, variables ---- */

int launch_parse_int(const char *s, long min, long max, long *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int launch_param_add(cJSON *params, const char *arg, char *err)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        launch__fmt(err, LAUNCH_ERR_MAX, "--param %s: expected NAME=VALUE", arg);
        return -EINVAL;
    }
    char *name = strndup(arg, (size_t)(eq - arg));
    if (!name)
        return -ENOMEM;
    cJSON_DeleteItemFromObjectCaseSensitive(params, name);
    cJSON_AddStringToObject(params, name, eq + 1);
    free(name);
    return 0;
}

char *launch__read_file(const char *path, const char *what, char *err)
{
    char *text = proto_read_user_file(path, 16u << 20, NULL);
    if (!text)
        launch__fmt(err, LAUNCH_ERR_MAX, "%s: cannot read %s: %s", what, path,
                    errno == EFBIG ? "larger than 16 MiB" : strerror(errno));
    return text;
}

int launch__refuse_nul(const char *text, const char *what, char *err)
{
    if (!proto_json_has_nul(text, strlen(text)))
        return 0;
    char where[128];
    proto_json_nul_where(text, strlen(text), where, sizeof where);
    launch__fmt(err, LAUNCH_ERR_MAX,
                "%s: the string at %s contains a NUL character (\\u0000), which is not allowed",
                what, where);
    return -EINVAL;
}

int launch_params_merge(cJSON *params, const char *text_or_file, const char *what, char *err)
{
    bool file = text_or_file[0] == '@';
    char *text = file ? launch__read_file(text_or_file + 1, what, err) : strdup(text_or_file);
    if (!text)
        return file ? -EINVAL : -ENOMEM;
    if (launch__refuse_nul(text, what, err) < 0) {
        free(text);
        return -EINVAL;
    }
    cJSON *obj = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(obj)) {
        launch__fmt(err, LAUNCH_ERR_MAX, "%s: expected a JSON object%s%s", what, file ? " in " : "",
                    file ? text_or_file + 1 : "");
        cJSON_Delete(obj);
        return -EINVAL;
    }
    while (obj->child) {
        cJSON *item = cJSON_DetachItemViaPointer(obj, obj->child);
        cJSON_DeleteItemFromObjectCaseSensitive(params, item->string);
        cJSON_AddItemToObject(params, item->string, item);
    }
    cJSON_Delete(obj);
    return 0;
}

/* Variables dagy-launch sets from the request itself; an extra variable must not change them
 * (the run item and the task would disagree). */
static const char *const reserved_env[] = {"DAGY_RUN_ID",
                                           "DAGY_FLOW_NAME",
                                           "DAGY_FLOW_VERSION",
                                           "DAGY_ORG_ID",
                                           "DAGY_ENVIRONMENT",
                                           "DAGY_ARTIFACT_S3_URI",
                                           "DAGY_DEP_PACKAGE_URIS",
                                           "DAGY_PARAMETERS",
                                           "DAGY_CORRELATION_ID",
                                           "DAGY_RUNS_TABLE",
                                           "DAGY_TASK_RUNS_TABLE",
                                           "DAGY_RESUME_FROM",
                                           NULL};

int launch_env_name_check(const char *name, char *err)
{
    bool ok = (isalpha((unsigned char)name[0]) || name[0] == '_');
    for (const char *p = name; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || *p == '_';
    if (!ok) {
        launch__fmt(err, LAUNCH_ERR_MAX, "--env %s: not a valid variable name", name);
        return -EINVAL;
    }
    for (const char *const *r = reserved_env; *r; r++) {
        if (strcmp(*r, name) == 0) {
            launch__fmt(err, LAUNCH_ERR_MAX,
                        "--env %s: set by dagy-launch itself from the request; use the matching "
                        "option instead",
                        name);
            return -EINVAL;
        }
    }
    return 0;
}

int launch_env_add(cJSON *env, const char *arg, char *err)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        launch__fmt(err, LAUNCH_ERR_MAX, "--env %s: expected NAME=VALUE", arg);
        return -EINVAL;
    }
    char *name = strndup(arg, (size_t)(eq - arg));
    if (!name)
        return -ENOMEM;
    int rc = launch_env_name_check(name, err);
    if (rc == 0) {
        cJSON_DeleteItemFromObjectCaseSensitive(env, name);
        cJSON_AddStringToObject(env, name, eq + 1);
    }
    free(name);
    return rc;
}

bool launch_tag_value_valid(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr(" +-=._:/@", *s))
            return false;
    return true;
}

/* ---- time and ids ---- */

void launch_uuid4(char *buf)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) {
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char)rand();
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    launch__fmt(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                b[13], b[14], b[15]);
}
