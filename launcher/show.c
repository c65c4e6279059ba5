/* show.c - `dagy-launch status` and `dagy-launch result`: a run with its retry chain and its
 * task-run items, and one task's durable result from S3, checked against the result_sha256 the
 * agent recorded before anything reaches stdout. */
#include "launcher/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/ddb.h"
#include "proto/names.h"

#define CHAIN_MAX 32 /* retry_of hops followed by status (a chain is a handful in practice) */

cJSON *launch__read_run(launch__ctx *c, const char *run_id, char *err)
{
    cJSON *q = cJSON_CreateObject(), *ans = NULL;
    cJSON_AddStringToObject(q, "TableName", c->cfg.runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", run_id, NULL, NULL));
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    char why[LAUNCH_ERR_MAX];
    if (launch__call_sync(c, "dynamodb", "GetItem", q, &ans, NULL, why) < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot read %s: %s", c->cfg.runs_table, why);
        cJSON_Delete(ans);
        return NULL;
    }
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(ans, "Item");
    cJSON *plain = cJSON_IsObject(it) ? proto_ddb_unmarshal(it) : NULL;
    cJSON_Delete(ans);
    if (!plain)
        launch__fmt(err, LAUNCH_ERR_MAX, "run \"%s\" not found (%s)", run_id, c->cfg.runs_table);
    return plain;
}

/* [{run_id, status}, ...]: the runs `run` retries, nearest first. */
static cJSON *retry_chain(launch__ctx *c, const cJSON *run)
{
    cJSON *chain = cJSON_CreateArray();
    char *next = launch__str(run, "retry_of") ? strdup(launch__str(run, "retry_of")) : NULL;
    for (int hop = 0; next && hop < CHAIN_MAX; hop++) {
        char err[LAUNCH_ERR_MAX];
        cJSON *it = launch__read_run(c, next, err), *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "run_id", next);
        const char *st = launch__str(it, "status");
        st ? cJSON_AddStringToObject(e, "status", st) : cJSON_AddNullToObject(e, "status");
        cJSON_AddItemToArray(chain, e);
        free(next);
        next = launch__str(it, "retry_of") ? strdup(launch__str(it, "retry_of")) : NULL;
        cJSON_Delete(it);
    }
    free(next);
    return chain;
}

/* Every task-run item of the run (all pages), plain; NULL with err on a failed read. */
static cJSON *task_items(launch__ctx *c, const char *run_id, char *err)
{
    cJSON *tasks = cJSON_CreateArray(), *start = NULL;
    for (int page = 0; page < 100000; page++) {
        cJSON *q = cJSON_CreateObject(), *ans = NULL;
        cJSON_AddStringToObject(q, "TableName", c->cfg.task_runs_table);
        cJSON_AddStringToObject(q, "KeyConditionExpression", "run_id = :r");
        cJSON_AddStringToObject(
            cJSON_AddObjectToObject(cJSON_AddObjectToObject(q, "ExpressionAttributeValues"), ":r"),
            "S", run_id);
        cJSON_AddBoolToObject(q, "ConsistentRead", true);
        if (start)
            cJSON_AddItemToObject(q, "ExclusiveStartKey", start);
        char why[LAUNCH_ERR_MAX];
        if (launch__call_sync(c, "dynamodb", "Query", q, &ans, NULL, why) < 0) {
            launch__fmt(err, LAUNCH_ERR_MAX, "cannot read %s: %s", c->cfg.task_runs_table, why);
            cJSON_Delete(ans);
            cJSON_Delete(tasks);
            return NULL;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(ans, "Items"))
            cJSON_AddItemToArray(tasks, proto_ddb_unmarshal(e));
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(ans, "LastEvaluatedKey");
        start = cJSON_IsObject(next) ? cJSON_Duplicate(next, true) : NULL;
        cJSON_Delete(ans);
        if (!start)
            break;
    }
    cJSON_Delete(start);
    return tasks;
}

/* Orders map children by map then element index; items by task name. */
static int by_map_index(const void *a, const void *b)
{
    const cJSON *x = *(cJSON *const *)a, *y = *(cJSON *const *)b;
    int c = strcmp(launch__str(x, "map_parent"), launch__str(y, "map_parent"));
    const cJSON *ix = cJSON_GetObjectItemCaseSensitive(x, "map_index");
    const cJSON *iy = cJSON_GetObjectItemCaseSensitive(y, "map_index");
    double dx = cJSON_IsNumber(ix) ? ix->valuedouble : 0,
           dy = cJSON_IsNumber(iy) ? iy->valuedouble : 0;
    return c ? c : (dx > dy) - (dx < dy);
}

static int by_name(const void *a, const void *b)
{
    const char *x = launch__str(*(cJSON *const *)a, "task_name");
    const char *y = launch__str(*(cJSON *const *)b, "task_name");
    return strcmp(x ? x : "", y ? y : "");
}

/* bsearch: the name `key` against an item's task_name. */
static int name_is(const void *key, const void *item)
{
    const char *y = launch__str(*(cJSON *const *)item, "task_name");
    return strcmp(key, y ? y : "");
}

/* Moves every map child's item (one with map_parent) from `tasks` into its map task's
 * "children", in element order: a map of 10,000 children reads as one task with a list, each
 * child with its status, attempt and external_id (an ECS task ARN when it ran on ECS). A
 * child whose map item is missing stays in `tasks`. O(n log n). */
static void nest_children(cJSON *tasks)
{
    size_t n = (size_t)cJSON_GetArraySize(tasks), nk = 0, nm = 0;
    cJSON **kids = calloc(n ? n : 1, sizeof *kids), **maps = calloc(n ? n : 1, sizeof *maps);
    for (cJSON *t = tasks->child; kids && maps && t; t = t->next)
        if (launch__str(t, "map_parent"))
            kids[nk++] = t;
        else
            maps[nm++] = t;
    if (!kids || !maps) {
        free(kids), free(maps);
        return;
    }
    qsort(kids, nk, sizeof *kids, by_map_index);
    qsort(maps, nm, sizeof *maps, by_name);
    for (size_t j = 0; j < nk; j++) {
        cJSON **m = bsearch(launch__str(kids[j], "map_parent"), maps, nm, sizeof *maps, name_is);
        if (!m)
            continue;
        cJSON *list = cJSON_GetObjectItemCaseSensitive(*m, "children");
        if (!list)
            list = cJSON_AddArrayToObject(*m, "children");
        cJSON_AddItemToArray(list, cJSON_DetachItemViaPointer(tasks, kids[j]));
    }
    free(kids);
    free(maps);
}

int launch_cmd_status(const char *run_id)
{
    char err[LAUNCH_ERR_MAX];
    if (!proto_name_check(PROTO_NAME_RUN_ID, run_id, err, sizeof err)) {
        fprintf(stderr, "dagy-launch: %s\n", err);
        return LAUNCH_EXIT_INVALID;
    }
    launch__ctx c;
    if (launch__ctx_open(&c, 0, err) < 0) {
        fprintf(stderr, "dagy-launch: %s\n", err);
        return LAUNCH_EXIT_INVALID;
    }
    int rc = LAUNCH_EXIT_FAILED;
    cJSON *run = launch__read_run(&c, run_id, err), *tasks = NULL;
    if (run && (tasks = task_items(&c, run_id, err))) {
        int reused = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tasks) reused += launch__str(t, "reused_from") != NULL;
        cJSON_AddItemToObject(run, "retry_chain", retry_chain(&c, run));
        cJSON_AddNumberToObject(run, "tasks_reused", reused);
        nest_children(tasks);
        cJSON_AddItemToObject(run, "tasks", tasks);
        launch__print_json(run);
        rc = LAUNCH_EXIT_OK;
    }
    launch__ctx_close(&c);
    if (rc != LAUNCH_EXIT_OK)
        fprintf(stderr, "dagy-launch: %s\n", err);
    cJSON_Delete(run);
    return rc;
}

/* ---- result ---- */

typedef struct {
    bool done;
    int err;
    char msg[LAUNCH_ERR_MAX];
    uv_loop_t *loop;
} get_job;

static void on_get(void *ud, const fetch_aws_result *r)
{
    get_job *g = ud;
    g->done = true;
    bool ok = r->err == 0 && r->http_status >= 200 && r->http_status < 300;
    g->err = ok ? 0 : r->err ? r->err : -EIO;
    if (!ok)
        launch__aws_reason(r, g->msg, sizeof g->msg);
    uv_stop(g->loop);
}

/* The task-run item's result location, checked: s3://...#sha256=HEX in uri (malloc'd). */
static int result_uri(launch__ctx *c, const char *run_id, const char *task, char **uri, char *err)
{
    cJSON *q = cJSON_CreateObject(), *ans = NULL;
    cJSON_AddStringToObject(q, "TableName", c->cfg.task_runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", run_id, "task_name", task));
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    char why[LAUNCH_ERR_MAX];
    if (launch__call_sync(c, "dynamodb", "GetItem", q, &ans, NULL, why) < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot read %s: %s", c->cfg.task_runs_table, why);
        cJSON_Delete(ans);
        return -EIO;
    }
    const cJSON *raw = cJSON_GetObjectItemCaseSensitive(ans, "Item");
    cJSON *it = cJSON_IsObject(raw) ? proto_ddb_unmarshal(raw) : NULL;
    cJSON_Delete(ans);
    const char *s3 = launch__str(it, "result_s3_uri"), *sha = launch__str(it, "result_sha256");
    const char *local = launch__str(it, "result_path"), *st = launch__str(it, "status");
    int rc = -ENOENT;
    if (!it)
        launch__fmt(err, LAUNCH_ERR_MAX, "task \"%s\" of run \"%s\" not found (%s)", task, run_id,
                    c->cfg.task_runs_table);
    else if (!s3 && local)
        launch__fmt(err, LAUNCH_ERR_MAX, "task \"%s\" has a local result only: %s", task, local);
    else if (!s3)
        launch__fmt(err, LAUNCH_ERR_MAX, "task \"%s\" of run \"%s\" has no stored result (%s)",
                    task, run_id, st ? st : "no status");
    else if (!sha || strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64 || strchr(s3, '#'))
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "task \"%s\": result %s has no valid result_sha256 to check it against", task,
                    s3);
    else if ((*uri = malloc(strlen(s3) + 80))) {
        launch__fmt(*uri, strlen(s3) + 80, "%s#sha256=%s", s3, sha);
        rc = 0;
    }
    cJSON_Delete(it);
    return rc;
}

/* Copies a file to stdout: byte for byte into a pipe or file; on a terminal with control
 * characters escaped (a task's result must not drive the operator's terminal). */
static int cat_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char buf[65536];
    ssize_t n;
    int rc = 0;
    bool tty = isatty(STDOUT_FILENO), c2 = false;
    while (rc == 0 && (n = read(fd, buf, sizeof buf)) != 0) {
        if (n < 0)
            rc = -errno;
        else if (tty)
            launch__tty_write(buf, (size_t)n, stdout, &c2);
        else if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
            rc = -EIO;
    }
    if (c2)
        fputc(0xc2, stdout);
    close(fd);
    return rc == 0 && (fflush(stdout) != 0 || ferror(stdout)) ? -EIO : rc;
}

/* Downloads (verifying the #sha256=) into a private scratch directory, then prints. */
static int fetch_and_print(launch__ctx *c, const char *uri, const char *task, char *err)
{
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[600];
    launch__fmt(dir, sizeof dir, "%s/dagy-result-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot create a scratch directory: %s", strerror(errno));
        return -errno;
    }
    launch__fmt(path, sizeof path, "%s/result.json", dir);
    get_job g = {.loop = &c->loop};
    int rc = fetch_s3_get_file(c->aws, uri, path, NULL, on_get, &g);
    while (rc == 0 && !g.done)
        if (uv_run(&c->loop, UV_RUN_DEFAULT) == 0 && !g.done)
            rc = -EIO;
    if (rc == 0)
        rc = g.err;
    if (rc == -EBADMSG)
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "task \"%s\": the stored result does not match its result_sha256 (%s)", task,
                    uri);
    else if (rc < 0)
        launch__fmt(err, LAUNCH_ERR_MAX, "task \"%s\": cannot download the result: %s", task,
                    g.msg[0] ? g.msg : strerror(-rc));
    else if ((rc = cat_file(path)) < 0)
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot write the result: %s", strerror(-rc));
    unlink(path);
    rmdir(dir);
    return rc;
}

int launch_cmd_result(const char *run_id, const char *task)
{
    char err[LAUNCH_ERR_MAX];
    if (!proto_name_check(PROTO_NAME_RUN_ID, run_id, err, sizeof err) ||
        !proto_name_check(PROTO_NAME_TASK_INSTANCE, task, err, sizeof err)) {
        fprintf(stderr, "dagy-launch: result: %s\n", err);
        return LAUNCH_EXIT_INVALID;
    }
    launch__ctx c;
    if (launch__ctx_open(&c, 0, err) < 0) {
        fprintf(stderr, "dagy-launch: %s\n", err);
        return LAUNCH_EXIT_INVALID;
    }
    char *uri = NULL;
    int rc = result_uri(&c, run_id, task, &uri, err);
    if (rc == 0)
        rc = fetch_and_print(&c, uri, task, err);
    launch__ctx_close(&c);
    free(uri);
    if (rc < 0)
        fprintf(stderr, "dagy-launch: result: %s\n", err);
    return rc < 0 ? LAUNCH_EXIT_FAILED : LAUNCH_EXIT_OK;
}
