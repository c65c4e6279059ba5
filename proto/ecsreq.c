/* ecsreq.c - the RunTask request skeleton shared by dagy-launch and dagy-agent (ecsreq.h). */
#include "proto/ecsreq.h"
#include "proto/util.h"

/* "a,b , c" -> ["a","b","c"] (items trimmed; proto_split_list); NULL on allocation failure. */
static cJSON *csv_array(const char *csv)
{
    char **list = proto_split_list(csv ? csv : "", ',');
    cJSON *arr = list ? cJSON_CreateArray() : NULL;
    for (size_t n = 0; arr && list[n]; n++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(list[n]));
    proto_list_free(list);
    return arr;
}

void proto_ecs_add_tag(cJSON *tags, const char *key, const char *value)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "key", key);
    cJSON_AddStringToObject(t, "value", value);
    cJSON_AddItemToArray(tags, t);
}

cJSON *proto_ecs_runtask_body(const char *cluster, const char *task_definition,
                              const char *capacity_provider, const char *subnets,
                              const char *security_groups, const char *assign_public_ip,
                              cJSON **tags)
{
    cJSON *b = cJSON_CreateObject();
    if (!b)
        return NULL;
    cJSON_AddStringToObject(b, "cluster", cluster);
    cJSON_AddStringToObject(b, "taskDefinition", task_definition);
    cJSON_AddNumberToObject(b, "count", 1);
    if (capacity_provider) {
        cJSON *cp = cJSON_CreateObject();
        cJSON_AddStringToObject(cp, "capacityProvider", capacity_provider);
        cJSON_AddNumberToObject(cp, "weight", 1);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(b, "capacityProviderStrategy"), cp);
    } else {
        cJSON_AddStringToObject(b, "launchType", "FARGATE");
    }
    cJSON *vpc = cJSON_AddObjectToObject(cJSON_AddObjectToObject(b, "networkConfiguration"),
                                         "awsvpcConfiguration");
    cJSON_AddItemToObject(vpc, "subnets", csv_array(subnets));
    cJSON_AddItemToObject(vpc, "securityGroups", csv_array(security_groups));
    cJSON_AddStringToObject(vpc, "assignPublicIp", assign_public_ip);
    *tags = cJSON_AddArrayToObject(b, "tags");
    if (!*tags) {
        cJSON_Delete(b);
        return NULL;
    }
    return b;
}
