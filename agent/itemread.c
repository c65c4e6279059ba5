/* itemread.c - reads a run's items back from the status backend the run writes to: the run item
 * through the status store's own read (status_store_read: the state file, or a consistent
 * GetItem), then, when asked, every task-run item of the run: the files of
 * runs/RUN_ID/tasks/ (local) or a consistent, paginated Query on the task-runs table. Used by
 * resume (the source run) and cancel (cancel_requested_at on our own run item). Items come back as
 * plain JSON values (DynamoDB JSON unmarshalled). Everything read is treated as hostile: bounded
 * file reads, no links followed, malformed items skipped. */
#include "agent/durable.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ddb.h"
#include "proto/names.h"
#include "proto/util.h"

#define ITEM_FILE_MAX   (4u << 20)
#define QUERY_PAGES_MAX 10000 /* 1 MB pages: far beyond FLOWSPEC_MAX_TASKS items */

/* ---- local state directory ---- */

static cJSON *read_item_file(const char *path, int *err)
{
    size_t len = 0;
    char *text = proto_read_file(path, ITEM_FILE_MAX, &len);
    *err = text ? 0 : -errno;
    cJSON *j = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    if (text && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        j = NULL;
        *err = -EBADMSG;
    }
    return j;
}

/* Every parseable task item file of the run (names starting with '.' are temporaries). */
static cJSON *read_task_dir(const char *dir)
{
    cJSON *arr = cJSON_CreateArray();
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && arr && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || n < 6 || strcmp(e->d_name + n - 5, ".json"))
            continue;
        char *path = NULL;
        int err = 0;
        if (asprintf(&path, "%s/%s", dir, e->d_name) < 0)
            break;
        cJSON *it = read_item_file(path, &err);
        free(path);
        if (it)
            cJSON_AddItemToArray(arr, it);
    }
    if (d)
        closedir(d);
    return arr;
}

/* The task items of a run from the state directory (files named as status_local.c names
 * them: the run id through proto_name_encode). */
static cJSON *read_local_tasks(run_state *r, const char *run_id)
{
    char *dir = NULL, enc[PROTO_NAME_ENCODED_MAX];
    proto_name_encode(run_id, enc, sizeof enc);
    if (asprintf(&dir, "%s/runs/%s/tasks", r->cfg->state_dir, enc) < 0)
        return NULL;
    cJSON *tasks = read_task_dir(dir);
    free(dir);
    return tasks;
}

/* ---- DynamoDB ---- */

typedef struct {
    run_state *r;
    char *run_id;
    bool with_tasks;
    cJSON *run;   /* plain */
    cJSON *tasks; /* plain, array */
    int pages;
    agent_read_cb cb;
    void *ud;
} ddb_read;

static const fetch_retry read_retry = {.max_attempts = 4, .base_ms = 100, .cap_ms = 1000};

static void ddb_read_end(ddb_read *d, int rc, const char *err)
{
    d->r->pending--;
    d->cb(d->ud, rc, err, d->run, d->tasks);
    cJSON_Delete(d->run);
    cJSON_Delete(d->tasks);
    free(d->run_id);
    free(d);
}

/* Describes a failed DynamoDB answer; 0 when it is a success. */
static int answer_failed(const fetch_aws_result *res, const char *what, char *err, size_t n)
{
    if (!res->err && res->http_status / 100 == 2 && res->json)
        return 0;
    snprintf(err, n, "%s: %s", what,
             res->message ? res->message
             : res->err   ? strerror(-res->err)
                          : "no answer");
    return res->err == -ECANCELED ? -ECANCELED : -EIO;
}

static int send_query(ddb_read *d, const cJSON *start);

static void on_query(void *ud, const fetch_aws_result *res)
{
    ddb_read *d = ud;
    char err[800];
    int rc = answer_failed(res, "DynamoDB Query on the task-runs table", err, sizeof err);
    if (rc) {
        ddb_read_end(d, rc, err);
        return;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(res->json, "Items"))
    {
        cJSON *plain = proto_ddb_unmarshal(it);
        if (cJSON_IsObject(plain))
            cJSON_AddItemToArray(d->tasks, plain);
        else
            cJSON_Delete(plain);
    }
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(res->json, "LastEvaluatedKey");
    if (cJSON_IsObject(next) && ++d->pages < QUERY_PAGES_MAX) {
        if ((rc = send_query(d, next)))
            ddb_read_end(d, rc, "cannot send the DynamoDB Query");
        return;
    }
    ddb_read_end(d, 0, NULL);
}

/* Query run_id = :r on the task-runs table, from `start` (LastEvaluatedKey) if given. */
static int send_query(ddb_read *d, const cJSON *start)
{
    cJSON *q = cJSON_CreateObject();
    cJSON_AddStringToObject(q, "TableName", d->r->cfg->task_runs_table);
    cJSON_AddStringToObject(q, "KeyConditionExpression", "#r = :r");
    cJSON *names = cJSON_AddObjectToObject(q, "ExpressionAttributeNames");
    cJSON_AddStringToObject(names, "#r", "run_id");
    cJSON *vals = cJSON_AddObjectToObject(q, "ExpressionAttributeValues");
    cJSON *v = cJSON_AddObjectToObject(vals, ":r");
    cJSON_AddStringToObject(v, "S", d->run_id);
    cJSON_AddBoolToObject(q, "ConsistentRead", 1);
    if (start)
        cJSON_AddItemToObject(q, "ExclusiveStartKey", cJSON_Duplicate(start, 1));
    char *body = cJSON_PrintUnformatted(q);
    cJSON_Delete(q);
    int rc = body ? fetch_aws_json(d->r->aws, "dynamodb", "DynamoDB_20120810.Query", body,
                                   &read_retry, on_query, d)
                  : -ENOMEM;
    cJSON_free(body);
    return rc;
}

/* The run item as the status store read it: done, or on to its task items. */
static void on_run_stored(void *ctx, int rc, const cJSON *stored, const char *err)
{
    ddb_read *d = ctx;
    run_state *r = d->r;
    if (rc || !stored || !d->with_tasks) {
        r->pending--;
        d->cb(d->ud, rc, rc ? (err ? err : "cannot read the run item") : NULL, rc ? NULL : stored,
              NULL);
        free(d->run_id);
        free(d);
        return;
    }
    if (strcmp(r->cfg->status_backend, "dynamodb") || !r->aws) {
        cJSON *tasks = read_local_tasks(r, d->run_id);
        d->run = cJSON_Duplicate(stored, true);
        d->tasks = tasks;
        ddb_read_end(d, d->run && tasks ? 0 : -ENOMEM, d->run && tasks ? NULL : "out of memory");
        return;
    }
    d->run = cJSON_Duplicate(stored, true); /* `stored` is valid only during this call */
    d->tasks = cJSON_CreateArray();
    if (!d->run || !d->tasks || (rc = send_query(d, NULL)))
        ddb_read_end(d, rc ? rc : -ENOMEM, "cannot send the DynamoDB Query");
}

void agent__read_run(run_state *r, const char *run_id, bool with_tasks, agent_read_cb cb, void *ud)
{
    ddb_read *d = calloc(1, sizeof *d);
    if (!d || !(d->run_id = strdup(run_id))) {
        free(d);
        cb(ud, -ENOMEM, "out of memory", NULL, NULL);
        return;
    }
    d->r = r;
    d->with_tasks = with_tasks;
    d->cb = cb;
    d->ud = ud;
    r->pending++;
    int rc = r->status ? status_store_read(r->status, STATUS_RUN, run_id, NULL, on_run_stored, d)
                       : -ENOTSUP;
    if (rc) {
        char err[200];
        snprintf(err, sizeof err, "cannot read the run item: %s", strerror(-rc));
        ddb_read_end(d, rc, err);
    }
}
