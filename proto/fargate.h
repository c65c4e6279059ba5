/* fargate.h - the one rule for ECS Fargate task sizes, shared by dagy-launch (run, batch) and
 * dagy-agent (a task's "executor": {"type": "ecs", ...}): workload profiles, the CPU/memory table
 * and the ephemeral storage range (AWS ECS developer guide, "Task CPU and memory"). Pure. */
#ifndef DAGY_PROTO_FARGATE_H
#define DAGY_PROTO_FARGATE_H

#include <stdbool.h>

#define PROTO_EPHEMERAL_MIN_GIB 21
#define PROTO_EPHEMERAL_MAX_GIB 200
/* The profile names, for messages. */
#define PROTO_PROFILE_NAMES "small, medium, large, xlarge, heavy, max"
#define PROTO_FARGATE_CPUS  "256, 512, 1024, 2048, 4096, 8192, 16384"

/* CPU units and MiB of a profile (small 256/512 ... max 16384/32768). 0 or -EINVAL. */
int proto_profile(const char *name, int *cpu, int *memory);
/* True if cpu/memory is a Fargate task size. */
bool proto_fargate_valid(int cpu, int memory);
/* The memory sizes CPU `cpu` takes ("1024-4096 in steps of 1024"), NULL if cpu is no Fargate
 * size. */
const char *proto_fargate_memory_hint(int cpu);

/* True for a capacity provider dagy launches on: FARGATE or FARGATE_SPOT. */
bool proto_capacity_provider_valid(const char *name);

#endif
