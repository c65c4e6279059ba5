/* fargate.c - Fargate task sizes and workload profiles (proto/fargate.h). */
#include "proto/fargate.h"

#include <errno.h>
#include <string.h>

static const struct {
    const char *name;
    int cpu, memory;
} profiles[] = {
    {"small", 256, 512},    {"medium", 1024, 2048}, {"large", 2048, 4096},
    {"xlarge", 4096, 8192}, {"heavy", 8192, 16384}, {"max", 16384, 32768},
};

int proto_profile(const char *name, int *cpu, int *memory)
{
    for (size_t i = 0; name && i < sizeof profiles / sizeof profiles[0]; i++) {
        if (strcmp(profiles[i].name, name) == 0) {
            *cpu = profiles[i].cpu;
            *memory = profiles[i].memory;
            return 0;
        }
    }
    return -EINVAL;
}

/* Fargate task sizes (AWS ECS developer guide, "Task CPU and memory"). */
static const struct {
    int cpu, min, max, step;
    const char *hint;
} fargate[] = {
    {256, 512, 2048, 0, "512, 1024 or 2048"},
    {512, 1024, 4096, 1024, "1024-4096 in steps of 1024"},
    {1024, 2048, 8192, 1024, "2048-8192 in steps of 1024"},
    {2048, 4096, 16384, 1024, "4096-16384 in steps of 1024"},
    {4096, 8192, 30720, 1024, "8192-30720 in steps of 1024"},
    {8192, 16384, 61440, 4096, "16384-61440 in steps of 4096"},
    {16384, 32768, 122880, 8192, "32768-122880 in steps of 8192"},
};

bool proto_fargate_valid(int cpu, int memory)
{
    for (size_t i = 0; i < sizeof fargate / sizeof fargate[0]; i++) {
        if (fargate[i].cpu != cpu)
            continue;
        if (cpu == 256)
            return memory == 512 || memory == 1024 || memory == 2048;
        return memory >= fargate[i].min && memory <= fargate[i].max &&
               (memory - fargate[i].min) % fargate[i].step == 0;
    }
    return false;
}

const char *proto_fargate_memory_hint(int cpu)
{
    for (size_t i = 0; i < sizeof fargate / sizeof fargate[0]; i++)
        if (fargate[i].cpu == cpu)
            return fargate[i].hint;
    return NULL;
}

bool proto_capacity_provider_valid(const char *name)
{
    return name && (strcmp(name, "FARGATE") == 0 || strcmp(name, "FARGATE_SPOT") == 0);
}
