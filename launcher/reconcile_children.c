/* reconcile_children.c - the orphans of the agent's per-task ECS executor: tasks an agent
 * started for one task of its run (startedBy "dagy-agent", tags dagy:run_id, dagy:task,
 * dagy:attempt, dagy:parent) whose parent is gone (a kill -9, an OOM kill of the parent's
 * container: nothing stopped them). `dagy-launch reconcile` lists the running ones (ListTasks,
 * startedBy), describes them with their tags (DescribeTasks, 100 a call), describes their parents,
 * and stops (StopTask) each child whose parent task is STOPPED or unknown to ECS. A child whose
 * parent says "none" (a parent outside ECS) is stopped when its run item has ended. Sequential
 * and bounded: at most CHILD_PAGES pages of 100 children a reconcile. */
#include "launcher/launch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/util.h"

#define CHILD_PAGES 10 /* ListTasks pages (100 tasks each) looked at per reconcile */
#define CHUNK       100

typedef struct {
    char *arn, *parent, *run_id;
    bool orphan;
} child;

static const char *tag(const cJSON *task, const char *key)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(task, "tags"))
    {
        const char *k = launch__str(t, "key");
        if (k && !strcmp(k, key))
            return launch__str(t, "value");
    }
    return NULL;
}

/* ListTasks: the running tasks the agent started; at most CHILD_PAGES pages. */
static int list_children(launch__ctx *c, char ***arns, size_t *n, char *err)
{
    char *next = NULL;
    size_t cap = 0;
    for (int page = 0; page < CHILD_PAGES; page++) {
        cJSON *b = cJSON_CreateObject(), *out = NULL;
        cJSON_AddStringToObject(b, "cluster", c->cfg.cluster);
        cJSON_AddStringToObject(b, "startedBy", "dagy-agent");
        cJSON_AddStringToObject(b, "desiredStatus", "RUNNING");
        cJSON_AddNumberToObject(b, "maxResults", CHUNK);
        if (next)
            cJSON_AddStringToObject(b, "nextToken", next);
        free(next);
        next = NULL;
        int rc = launch__call_sync(c, "ecs", "ListTasks", b, &out, NULL, err);
        if (rc) {
            cJSON_Delete(out);
            return rc;
        }
        const cJSON *a;
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(out, "taskArns"))
        {
            if (!cJSON_IsString(a))
                continue;
            if (*n == cap)
                *arns = realloc(*arns, (cap = cap ? cap * 2 : 64) * sizeof **arns);
            (*arns)[(*n)++] = strdup(a->valuestring);
        }
        const char *tok = launch__str(out, "nextToken");
        next = tok ? strdup(tok) : NULL;
        cJSON_Delete(out);
        if (!next)
            break;
    }
    free(next);
    return 0;
}

/* DescribeTasks of arns[0..n) (n <= 100) with their tags; *out the answer. */
static int describe(launch__ctx *c, char **arns, size_t n, cJSON **out, char *err)
{
    cJSON *b = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(b, "tasks");
    cJSON_AddStringToObject(b, "cluster", c->cfg.cluster);
    for (size_t k = 0; k < n; k++)
        cJSON_AddItemToArray(list, cJSON_CreateString(arns[k]));
    cJSON_AddItemToArray(cJSON_AddArrayToObject(b, "include"), cJSON_CreateString("TAGS"));
    return launch__call_sync(c, "ecs", "DescribeTasks", b, out, NULL, err);
}

/* Is the parent task gone: STOPPED, or MISSING (ECS forgets stopped tasks after an hour)? */
static bool parent_gone(launch__ctx *c, const char *parent, const char *run_id, char *err)
{
    if (!parent || !strcmp(parent, "none")) {
        char why[LAUNCH_ERR_MAX];
        cJSON *it = run_id ? launch__read_run(c, run_id, why) : NULL;
        const char *st = launch__str(it, "status");
        bool ended = st && proto_status_terminal(st);
        cJSON_Delete(it);
        return ended;
    }
    cJSON *out = NULL;
    char *one = (char *)parent;
    if (describe(c, &one, 1, &out, err)) {
        cJSON_Delete(out);
        return false; /* cannot tell: leave the child alone this time */
    }
    const cJSON *t = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(out, "tasks"), 0);
    const char *last = launch__str(t, "lastStatus");
    bool gone = !t || (last && !strcmp(last, "STOPPED"));
    cJSON_Delete(out);
    return gone;
}

static int stop_child(launch__ctx *c, const child *ch, char *err)
{
    char reason[300];
    launch__fmt(reason, sizeof reason, "dagy reconcile: parent %.200s is gone",
                ch->parent ? ch->parent : "none");
    cJSON *b = cJSON_CreateObject(), *out = NULL;
    cJSON_AddStringToObject(b, "cluster", c->cfg.cluster);
    cJSON_AddStringToObject(b, "task", ch->arn);
    cJSON_AddStringToObject(b, "reason", reason);
    int rc = launch__call_sync(c, "ecs", "StopTask", b, &out, NULL, err);
    cJSON_Delete(out);
    return rc;
}

/* Parents already looked up in this reconcile (a parent has many children: one call each). */
typedef struct {
    char *key; /* the parent ARN, or "none:RUN_ID" */
    bool gone;
} parent_seen;

static bool parent_gone_cached(launch__ctx *c, parent_seen **seen, size_t *n_seen,
                               const char *parent, const char *run_id, char *err)
{
    char key[600];
    launch__fmt(key, sizeof key, "%s%s", parent && strcmp(parent, "none") ? parent : "none:",
                parent && strcmp(parent, "none") ? "" : run_id);
    for (size_t k = 0; k < *n_seen; k++)
        if (!strcmp((*seen)[k].key, key))
            return (*seen)[k].gone;
    bool gone = parent_gone(c, parent, run_id, err);
    parent_seen *grown = realloc(*seen, (*n_seen + 1) * sizeof **seen);
    if (grown) {
        *seen = grown;
        (*seen)[(*n_seen)++] = (parent_seen){strdup(key), gone};
    }
    return gone;
}

int launch__reconcile_children(launch__ctx *c, size_t *stopped, size_t *errors, char *err)
{
    char **arns = NULL;
    size_t n = 0, n_seen = 0;
    parent_seen *seen = NULL;
    int rc = list_children(c, &arns, &n, err);
    for (size_t k = 0; !rc && k < n; k += CHUNK) {
        cJSON *out = NULL;
        size_t m = n - k < CHUNK ? n - k : CHUNK;
        if (describe(c, arns + k, m, &out, err)) {
            (*errors)++;
            cJSON_Delete(out);
            continue;
        }
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(out, "tasks"))
        {
            child ch = {.arn = (char *)launch__str(t, "taskArn"),
                        .parent = (char *)tag(t, "dagy:parent"),
                        .run_id = (char *)tag(t, "dagy:run_id")};
            const char *last = launch__str(t, "lastStatus");
            if (!ch.arn || !ch.run_id || (last && !strcmp(last, "STOPPED")))
                continue;
            if (parent_gone_cached(c, &seen, &n_seen, ch.parent, ch.run_id, err)) {
                if (stop_child(c, &ch, err))
                    (*errors)++;
                else
                    (*stopped)++;
            }
        }
        cJSON_Delete(out);
    }
    for (size_t k = 0; k < n; k++)
        free(arns[k]);
    free(arns);
    for (size_t k = 0; k < n_seen; k++)
        free(seen[k].key);
    free(seen);
    return rc;
}
