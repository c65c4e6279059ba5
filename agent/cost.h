/* cost.h - a run's estimated Fargate cost (the run item's `estimated_cost_usd`,
 * docs/operations.md "Cost per run"): the task's profile read from the ECS task metadata v4
 * answer (hostile input: parsed strictly, any doubt means no cost), a price table (us-east-1,
 * overridable by environment) and the run's duration. Pure: no I/O, no clock. */
#ifndef DAGY_COST_H
#define DAGY_COST_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>

/* What Fargate bills a task for. */
typedef struct {
    double vcpu;        /* task CPU in vCPUs (Limits.CPU) */
    double memory_gib;  /* task memory in GiB (Limits.Memory is MiB) */
    double storage_gib; /* configured ephemeral storage (EphemeralStorageMetrics.Reserved) */
    bool spot;          /* FARGATE_SPOT capacity provider */
    bool arm;           /* Linux/ARM64 (Graviton) */
} agent_cost_profile;

/* Prices in USD. */
typedef struct {
    double vcpu_hour;       /* per vCPU-hour */
    double gb_hour;         /* per GB-hour of memory */
    double storage_gb_hour; /* per GB-hour of ephemeral storage above the free 20 GB */
} agent_cost_rates;

#define AGENT_COST_FREE_STORAGE_GIB 20.0
#define AGENT_COST_MIN_SECONDS      60.0 /* Fargate bills per second, one minute at least */
#define AGENT_COST_DECIMALS         6    /* estimated_cost_usd is rounded to 6 decimals */

/* The built-in us-east-1 table (docs/operations.md). */
agent_cost_rates agent_cost_table(bool arm, bool spot);

/* The rates for `p`: the table's, each replaced by its override when set (DAGY_PRICE_VCPU_HOUR,
 * DAGY_PRICE_GB_HOUR, DAGY_PRICE_STORAGE_GB_HOUR; `env` is getenv or a test's lookup).
 * Returns 0, or -EINVAL with err naming the variable (a decimal number 0..1000 is required). */
int agent_cost_rates_for(const agent_cost_profile *p, const char *(*env)(const char *),
                         agent_cost_rates *out, char *err, size_t errlen);

/* Reads the profile from the task metadata answer `task` (the JSON of
 * ${ECS_CONTAINER_METADATA_URI_V4}/task). capacity_provider: the metadata's
 * CapacityProviderName when present, else this (DAGY_CAPACITY_PROVIDER, NULL = FARGATE).
 * machine: uname's machine (x86_64, aarch64). Returns 0, or -EINVAL with err saying which field
 * is missing or wrong (then no cost can be estimated). */
int agent_cost_profile_parse(const cJSON *task, const char *capacity_provider, const char *machine,
                             agent_cost_profile *out, char *err, size_t errlen);

/* The estimated cost in USD of running `p` for `seconds` (billed: whole seconds, at least 60),
 * rounded to AGENT_COST_DECIMALS decimals. */
double agent_cost_usd(const agent_cost_profile *p, const agent_cost_rates *r, double seconds);

#endif
