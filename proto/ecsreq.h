/* ecsreq.h - the parts of an ECS RunTask request body that dagy-launch (a run's worker task,
 * launcher/request.c) and dagy-agent (a task attempt on its own ECS task, agent/ecs_request.c)
 * build alike: cluster, task definition, count 1, the Fargate launch type or a capacity provider,
 * the awsvpc network configuration, and tags. Pure: builds cJSON, no I/O. */
#ifndef DAGY_PROTO_ECSREQ_H
#define DAGY_PROTO_ECSREQ_H

#include <cjson/cJSON.h>

/* A RunTask body (caller owns it, cJSON_Delete) with cluster, taskDefinition, count 1, and
 * launchType FARGATE, or capacityProviderStrategy [{capacity_provider, weight 1}] when
 * capacity_provider is set; networkConfiguration.awsvpcConfiguration from the comma-separated
 * subnets and security groups (items trimmed) and assign_public_ip (ENABLED/DISABLED); and an
 * empty "tags" array, returned in *tags for proto_ecs_add_tag. NULL on allocation failure. */
cJSON *proto_ecs_runtask_body(const char *cluster, const char *task_definition,
                              const char *capacity_provider, const char *subnets,
                              const char *security_groups, const char *assign_public_ip,
                              cJSON **tags);

/* Appends {"key": key, "value": value} to a RunTask "tags" array. */
void proto_ecs_add_tag(cJSON *tags, const char *key, const char *value);

#endif
