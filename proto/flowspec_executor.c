/* flowspec_executor.c - a task's "executor" field: {"type": "ecs"} with an optional size
 * ("profile", or "cpu" and "memory"), "ephemeral_storage_gib" and "capacity_provider", checked
 * with the same rule as `dagy-launch run` (proto/fargate.h); {"type": "local"} is the default. */
#include "proto/flowspec_int.h"
#include "proto/fargate.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const fields[] = {
    "type", "profile", "cpu", "memory", "ephemeral_storage_gib", "capacity_provider"};
enum { E_TYPE, E_PROFILE, E_CPU, E_MEMORY, E_EPHEMERAL, E_CAPACITY, E_COUNT };

/* An integer in [lo, hi], else false. */
static bool int_in(const cJSON *v, double lo, double hi, int *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return false;
    *out = (int)v->valuedouble;
    return true;
}

/* Maps the members of the executor object to fields[]; unknown or repeated keys fail. */
static int collect(const cJSON *v, const cJSON *f[E_COUNT], const char *prefix, char *err)
{
    memset(f, 0, E_COUNT * sizeof *f);
    const cJSON *m;
    cJSON_ArrayForEach(m, v)
    {
        size_t k = 0;
        while (k < E_COUNT && strcmp(fields[k], m->string) != 0)
            k++;
        if (k == E_COUNT)
            return flowspec__fail(err,
                                  "%sfield \"executor\": unknown field \"%.64s\" (allowed: type, "
                                  "profile, cpu, memory, ephemeral_storage_gib, capacity_provider)",
                                  prefix, m->string);
        if (f[k])
            return flowspec__fail(err, "%sfield \"executor\": \"%s\" is given twice", prefix,
                                  fields[k]);
        f[k] = m;
    }
    return 0;
}

/* The task size: a profile, or a valid cpu/memory pair, or none (the task definition's). */
static int parse_size(const cJSON *f[E_COUNT], flowspec_executor *e, const char *prefix, char *err)
{
    if (f[E_PROFILE] && (f[E_CPU] || f[E_MEMORY]))
        return flowspec__fail(err,
                              "%sfield \"executor\": give either \"profile\" or "
                              "\"cpu\"/\"memory\", not both",
                              prefix);
    if (f[E_PROFILE]) {
        const char *p = cJSON_IsString(f[E_PROFILE]) ? f[E_PROFILE]->valuestring : NULL;
        if (proto_profile(p, &e->cpu, &e->memory) < 0)
            return flowspec__fail(err, "%sfield \"executor\": profile %s%.64s%s is unknown (%s)",
                                  prefix, p ? "\"" : "", p ? p : "(not a string)", p ? "\"" : "",
                                  PROTO_PROFILE_NAMES);
        return 0;
    }
    if (!f[E_CPU] != !f[E_MEMORY])
        return flowspec__fail(err, "%sfield \"executor\": \"cpu\" and \"memory\" go together",
                              prefix);
    if (!f[E_CPU])
        return 0;
    if (!int_in(f[E_CPU], 1, 1 << 20, &e->cpu) || !proto_fargate_memory_hint(e->cpu))
        return flowspec__fail(err, "%sfield \"executor\": cpu must be a Fargate CPU size (%s)",
                              prefix, PROTO_FARGATE_CPUS);
    if (!int_in(f[E_MEMORY], 1, 1 << 24, &e->memory) || !proto_fargate_valid(e->cpu, e->memory))
        return flowspec__fail(err,
                              "%sfield \"executor\": cpu %d with memory %.0f is not a valid "
                              "Fargate size: CPU %d takes memory %s",
                              prefix, e->cpu,
                              cJSON_IsNumber(f[E_MEMORY]) ? f[E_MEMORY]->valuedouble : -1.0, e->cpu,
                              proto_fargate_memory_hint(e->cpu));
    return 0;
}

int flowspec__parse_executor(const cJSON *v, flowspec_executor **out, const char *prefix, char *err)
{
    const cJSON *f[E_COUNT];
    *out = NULL;
    if (!cJSON_IsObject(v))
        return flowspec__fail(err,
                              "%sfield \"executor\": must be an object such as "
                              "{\"type\": \"ecs\", \"profile\": \"xlarge\"}",
                              prefix);
    int rc = collect(v, f, prefix, err);
    if (rc)
        return rc;
    const char *type = cJSON_IsString(f[E_TYPE]) ? f[E_TYPE]->valuestring : NULL;
    if (!type || (strcmp(type, "ecs") != 0 && strcmp(type, "local") != 0))
        return flowspec__fail(err, "%sfield \"executor\": \"type\" must be \"ecs\" or \"local\"",
                              prefix);
    bool local = strcmp(type, "local") == 0;
    if (local && (f[E_PROFILE] || f[E_CPU] || f[E_MEMORY] || f[E_EPHEMERAL] || f[E_CAPACITY]))
        return flowspec__fail(err,
                              "%sfield \"executor\": a \"local\" executor takes no size or "
                              "capacity provider",
                              prefix);
    if (local)
        return 0;
    flowspec_executor *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    const cJSON *cap = f[E_CAPACITY];
    if ((rc = parse_size(f, e, prefix, err)))
        goto fail;
    if (f[E_EPHEMERAL] && !int_in(f[E_EPHEMERAL], PROTO_EPHEMERAL_MIN_GIB, PROTO_EPHEMERAL_MAX_GIB,
                                  &e->ephemeral_gib)) {
        rc = flowspec__fail(err,
                            "%sfield \"executor\": ephemeral_storage_gib must be an integer "
                            "of %d-%d GiB",
                            prefix, PROTO_EPHEMERAL_MIN_GIB, PROTO_EPHEMERAL_MAX_GIB);
        goto fail;
    }
    if (cap && !(cJSON_IsString(cap) && proto_capacity_provider_valid(cap->valuestring))) {
        rc = flowspec__fail(err,
                            "%sfield \"executor\": capacity_provider must be FARGATE or "
                            "FARGATE_SPOT",
                            prefix);
        goto fail;
    }
    if (cap && !(e->capacity_provider = strdup(cap->valuestring))) {
        rc = -ENOMEM;
        goto fail;
    }
    *out = e;
    return 0;
fail:
    flowspec__executor_free(e);
    return rc;
}

void flowspec__executor_free(flowspec_executor *e)
{
    if (!e)
        return;
    free(e->capacity_provider);
    free(e);
}

flowspec_executor *flowspec__executor_dup(const flowspec_executor *e)
{
    flowspec_executor *d = e ? malloc(sizeof *d) : NULL;
    if (!d)
        return NULL;
    *d = *e;
    if (e->capacity_provider && !(d->capacity_provider = strdup(e->capacity_provider))) {
        free(d);
        return NULL;
    }
    return d;
}
