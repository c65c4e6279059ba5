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

int launch__get_run(launch__ctx *c, const char *run_id, cJSON **out, char *err)
{
    cJSON *q = cJSON_CreateObject(), *ans = NULL;
    *out = NULL;
    cJSON_AddStringToObject(q, "TableName", c->cfg.runs_table);
    cJSON_AddItemToObject(q, "Key", launch__key("run_id", run_id, NULL, NULL));
    cJSON_AddBoolToObject(q, "ConsistentRead", true);
    char why[LAUNCH_ERR_MAX];
    if (launch__call_sync(c, "dynamodb", "GetItem", q, &ans, NULL, why) < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot read %s: %s", c->cfg.runs_table, why);
        cJSON_Delete(ans);
        return -EIO;
    }
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(ans, "Item");
    *out = cJSON_IsObject(it) ? proto_ddb_unmarshal(it) : NULL;
    cJSON_Delete(ans);
    if (!*out) {
        launch__fmt(err, LAUNCH_ERR_MAX, "run \"%s\" not found (%s)", run_id, c->cfg.runs_table);
        return -ENOENT;
    }
    return 0;
}

cJSON *launch__read_run(launch__ctx *c, const char *run_id, char *err)
{
    cJSON *it = NULL;
    launch__get_run(c, run_id, &it, err);
    return it;
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

int launch__status(const char *run_id, cJSON **answer, char *err)
{
    *answer = NULL;
    if (!proto_name_check(PROTO_NAME_RUN_ID, run_id, err, LAUNCH_ERR_MAX))
        return -EINVAL;
    launch__ctx c;
    if (launch__ctx_open(&c, 0, err) < 0)
        return -EINVAL;
    cJSON *run = NULL, *tasks = NULL;
    int rc = launch__get_run(&c, run_id, &run, err);
    if (rc == 0 && !(tasks = task_items(&c, run_id, err)))
        rc = -EIO;
    if (rc == 0) {
        int reused = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tasks) reused += launch__str(t, "reused_from") != NULL;
        cJSON_AddItemToObject(run, "retry_chain", retry_chain(&c, run));
        cJSON_AddNumberToObject(run, "tasks_reused", reused);
        cJSON_AddItemToObject(run, "tasks", tasks);
        *answer = run;
        run = NULL;
    }
    launch__ctx_close(&c);
    cJSON_Delete(run);
    return rc;
}

int launch_cmd_status(const char *run_id)
{
    char err[LAUNCH_ERR_MAX];
    cJSON *run = NULL;
    int rc = launch__status(run_id, &run, err);
    if (rc == 0)
        launch__print_json(run);
    else
        fprintf(stderr, "dagy-launch: %s\n", err);
    cJSON_Delete(run);
    return rc == 0 ? LAUNCH_EXIT_OK : rc == -EINVAL ? LAUNCH_EXIT_INVALID : LAUNCH_EXIT_FAILED;
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
        !proto_name_check(PROTO_NAME_TASK, task, err, sizeof err)) {
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
