/* cost.c - estimated Fargate cost of a run (agent/cost.h): profile from the task metadata,
 * price table with environment overrides, and the billing rule (per second, one minute at
 * least). The metadata answer is hostile input: every field is type- and range-checked, and a
 * field missing or out of range means "no estimate", never a guess. */
#include "agent/cost.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* us-east-1, Linux, per hour (aws.amazon.com/fargate/pricing). Spot prices move with supply;
 * the ARM Spot row applies x86 Spot's published discount to the ARM on-demand prices. Ephemeral
 * storage costs the same on every row. */
static const agent_cost_rates table[2][2] = {
    /* x86_64: on-demand, Spot */
    {{0.04048, 0.004445, 0.000111}, {0.01334053, 0.00146489, 0.000111}},
    /* arm64: on-demand, Spot */
    {{0.03238, 0.00356, 0.000111}, {0.01067083, 0.00117324, 0.000111}},
};

agent_cost_rates agent_cost_table(bool arm, bool spot)
{
    return table[arm ? 1 : 0][spot ? 1 : 0];
}

/* A price override: a plain decimal number in [0, 1000]. */
static int parse_price(const char *var, const char *v, double *out, char *err, size_t errlen)
{
    char *end = NULL;
    errno = 0;
    double d = v && *v ? strtod(v, &end) : NAN;
    if (!end || *end || errno || !isfinite(d) || d < 0 || d > 1000 || strpbrk(v, "xXpP")) {
        snprintf(err, errlen,
                 "%s must be a price in USD between 0 and 1000 (e.g. 0.04048), not "
                 "\"%.64s\"",
                 var, v ? v : "");
        return -EINVAL;
    }
    *out = d;
    return 0;
}

int agent_cost_rates_for(const agent_cost_profile *p, const char *(*env)(const char *),
                         agent_cost_rates *out, char *err, size_t errlen)
{
    agent_cost_rates r = agent_cost_table(p && p->arm, p && p->spot);
    const struct {
        const char *var;
        double *dst;
    } vars[] = {{"DAGY_PRICE_VCPU_HOUR", &r.vcpu_hour},
                {"DAGY_PRICE_GB_HOUR", &r.gb_hour},
                {"DAGY_PRICE_STORAGE_GB_HOUR", &r.storage_gb_hour}};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = env(vars[i].var);
        if (v && *v && parse_price(vars[i].var, v, vars[i].dst, err, errlen))
            return -EINVAL;
    }
    *out = r;
    return 0;
}

/* A number member of `obj` in [lo, hi], or NAN (absent, not a number, out of range). */
static double num_in(const cJSON *obj, const char *key, double lo, double hi)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return NAN;
    return v->valuedouble;
}

/* The capacity provider: FARGATE or FARGATE_SPOT (metadata first, then the launcher's hint). */
static int parse_provider(const cJSON *task, const char *hint, bool *spot, char *err, size_t errlen)
{
    const cJSON *cp = cJSON_GetObjectItemCaseSensitive(task, "CapacityProviderName");
    const char *name = cJSON_IsString(cp) ? cp->valuestring : hint && *hint ? hint : "FARGATE";
    if (!strcmp(name, "FARGATE") || !strcmp(name, "FARGATE_SPOT")) {
        *spot = !strcmp(name, "FARGATE_SPOT");
        return 0;
    }
    snprintf(err, errlen,
             "capacity provider \"%.64s\" has no Fargate price (FARGATE or "
             "FARGATE_SPOT)",
             name);
    return -EINVAL;
}

/* Configured ephemeral storage in GiB: EphemeralStorageMetrics.Reserved (MiB) to the nearest
 * GiB, or the free 20 GiB when the platform does not report it. Fargate allows 20..200 GiB. */
static int parse_storage(const cJSON *task, double *gib, char *err, size_t errlen)
{
    const cJSON *esm = cJSON_GetObjectItemCaseSensitive(task, "EphemeralStorageMetrics");
    *gib = AGENT_COST_FREE_STORAGE_GIB;
    if (!esm)
        return 0;
    double mib = cJSON_IsObject(esm) ? num_in(esm, "Reserved", 0, 200.0 * 1024 + 1024) : NAN;
    if (isnan(mib)) {
        snprintf(err, errlen,
                 "EphemeralStorageMetrics.Reserved is not a size in MiB up to "
                 "201 GiB");
        return -EINVAL;
    }
    /* Sizes are configured in whole GiB; Reserved carries a few MiB more (20496 for 20). */
    *gib = round(mib / 1024.0);
    return 0;
}

int agent_cost_profile_parse(const cJSON *task, const char *capacity_provider, const char *machine,
                             agent_cost_profile *out, char *err, size_t errlen)
{
    agent_cost_profile p = {0};
    if (!cJSON_IsObject(task)) {
        snprintf(err, errlen, "the task metadata is not a JSON object");
        return -EINVAL;
    }
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(task, "LaunchType");
    if (!cJSON_IsString(lt) || strcmp(lt->valuestring, "FARGATE")) {
        snprintf(err, errlen, "LaunchType is %s%.32s%s, not FARGATE",
                 cJSON_IsString(lt) ? "\"" : "", cJSON_IsString(lt) ? lt->valuestring : "missing",
                 cJSON_IsString(lt) ? "\"" : "");
        return -EINVAL;
    }
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(task, "Limits");
    /* Fargate's largest task: 16 vCPU, 120 GiB; a little headroom for new sizes. */
    p.vcpu = cJSON_IsObject(lim) ? num_in(lim, "CPU", 0.125, 64) : NAN;
    double mib = cJSON_IsObject(lim) ? num_in(lim, "Memory", 128, 512.0 * 1024) : NAN;
    if (isnan(p.vcpu) || isnan(mib)) {
        snprintf(err, errlen,
                 "Limits.%s is missing or out of range (vCPUs 0.125-64, MiB "
                 "128-524288)",
                 isnan(p.vcpu) ? "CPU" : "Memory");
        return -EINVAL;
    }
    p.memory_gib = mib / 1024.0;
    if (parse_provider(task, capacity_provider, &p.spot, err, errlen) ||
        parse_storage(task, &p.storage_gib, err, errlen))
        return -EINVAL;
    if (machine && (!strcmp(machine, "aarch64") || !strcmp(machine, "arm64")))
        p.arm = true;
    else if (!machine || strcmp(machine, "x86_64")) {
        snprintf(err, errlen, "architecture \"%.32s\" has no Fargate price (x86_64, aarch64)",
                 machine ? machine : "");
        return -EINVAL;
    }
    *out = p;
    return 0;
}

double agent_cost_usd(const agent_cost_profile *p, const agent_cost_rates *r, double seconds)
{
    double billed = isfinite(seconds) && seconds > 0 ? ceil(seconds) : 0;
    if (billed < AGENT_COST_MIN_SECONDS)
        billed = AGENT_COST_MIN_SECONDS;
    double extra = p->storage_gib - AGENT_COST_FREE_STORAGE_GIB;
    double per_hour = p->vcpu * r->vcpu_hour + p->memory_gib * r->gb_hour +
                      (extra > 0 ? extra * r->storage_gb_hour : 0);
    double scale = pow(10, AGENT_COST_DECIMALS);
    return round(per_hour * billed / 3600.0 * scale) / scale;
}
