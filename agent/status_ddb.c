/* status_ddb.c - the DynamoDB status backend: one conditional UpdateItem per write on the runs
 * or task-runs table (contract section 6), sent through fetch_aws_json, which retries
 * throttling, 5xx and network errors with full-jitter backoff.
 *
 * A ConditionalCheckFailedException is an answer, not an error: a newer or terminal item is
 * already stored, which is exactly what the condition is for. It is reported as STATUS_REFUSED;
 * the store then reads the item back (consistent GetItem) to tell its own newer write from
 * someone else's. */
#include "agent/status.h"
#include "fetch/aws.h"
#include "proto/ddb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Changes to one item within this window leave as one UpdateItem: a task that ends quickly is
 * written once (its end state) instead of twice, halving the writes of large DAGs of short
 * tasks. Half a second is invisible next to the 30 s heartbeat; a flush writes at once. */
#define DDB_COALESCE_MS 500

/* Task-item writes in flight at once; the store keeps the rest as ready items (no request
 * built), so a burst of a thousand task ends costs 16 requests' memory, not a thousand, and an
 * item still waiting when its task ends leaves as one write. Why 16 (docs/agent.md "DynamoDB
 * status"): at DynamoDB's ~5-10 ms per UpdateItem that is 1600-3200 writes/s, above the 1000
 * WCU/s one partition takes (a run's task items share the partition key run_id) and above
 * what the agent's tasks produce; 16 descriptors and connections, each kept alive and reused. */
#define DDB_MAX_INFLIGHT 16

/* DynamoDB refuses items over 400 KB (names and values); the store drops the largest attributes
 * of an item above this, which leaves room for the size estimate's error. */
#define DDB_MAX_ITEM_BYTES 390000

typedef struct {
    status_backend base;
    fetch_aws *aws;
    char *runs_table, *task_runs_table;
    int inflight;
    bool closing; /* close() came while writes were in flight: free after the last one */
} ddb_backend;

typedef struct {
    ddb_backend *b;
    status_write_cb done;
    void *ctx;
} ddb_write;

static const char *const run_keys[] = {"run_id", NULL};
static const char *const task_keys[] = {"run_id", "task_name", NULL};

/* The per-request retry policy: a handful of tries within a few seconds, so a flush with an
 * 8 s budget (after a SIGTERM drain) still gets at least one more round from the store. */
static const fetch_retry ddb_retry = {.max_attempts = 6, .base_ms = 100, .cap_ms = 5000};

static void ddb_free(ddb_backend *b)
{
    free(b->runs_table);
    free(b->task_runs_table);
    free(b);
}

/* Maps a final DynamoDB answer to the status_write_cb convention. Whether a failure may pass
 * is fetch_aws's classification (fetch_aws_transient); here it only gets an errno name. */
static int answer_rc(const fetch_aws_result *r)
{
    const char *code = r->error_code ? r->error_code : "";
    if (r->err == -ECANCELED)
        return -ECANCELED;
    if (!r->err && r->http_status >= 200 && r->http_status < 300)
        return 0;
    if (!strcmp(code, "ConditionalCheckFailedException"))
        return STATUS_REFUSED; /* the store decides whose item is stored */
    if (r->transient)
        return -EAGAIN; /* still failing after fetch_aws's retries: the store retries later */
    if (r->err)
        return r->err;
    if (!strcmp(code, "AccessDeniedException") || !strcmp(code, "UnrecognizedClientException") ||
        !strcmp(code, "InvalidSignatureException") ||
        !strcmp(code, "MissingAuthenticationTokenException") || r->http_status == 401 ||
        r->http_status == 403)
        return -EACCES;
    if (!strcmp(code, "ResourceNotFoundException"))
        return -ENOENT;
    if (!strcmp(code, "ItemCollectionSizeLimitExceededException"))
        return -EFBIG;
    return -EINVAL; /* ValidationException, SerializationException, any other refusal */
}

static void on_answer(void *ud, const fetch_aws_result *r)
{
    ddb_write *w = ud;
    ddb_backend *b = w->b;
    int rc = answer_rc(r);
    w->done(w->ctx, rc, rc < 0 ? (r->message ? r->message : "DynamoDB UpdateItem failed") : NULL);
    free(w);
    if (--b->inflight == 0 && b->closing)
        ddb_free(b);
}

static int ddb_write_item(status_backend *be, status_kind kind, const cJSON *item,
                          status_write_cb done, void *ctx)
{
    ddb_backend *b = (ddb_backend *)be;
    const char *table = kind == STATUS_RUN ? b->runs_table : b->task_runs_table;
    char *body = proto_ddb_status_update(table, kind == STATUS_RUN ? run_keys : task_keys, item);
    if (!body)
        return -EINVAL; /* no key attributes or no status_seq: a programming error upstream */
    ddb_write *w = malloc(sizeof *w);
    if (!w) {
        free(body);
        return -ENOMEM;
    }
    *w = (ddb_write){b, done, ctx};
    int rc = fetch_aws_json(b->aws, "dynamodb", "DynamoDB_20120810.UpdateItem", body, &ddb_retry,
                            on_answer, w);
    free(body); /* fetch_aws_json copies it */
    if (rc < 0) {
        free(w);
        return rc;
    }
    b->inflight++;
    return 0;
}

typedef struct {
    ddb_backend *b;
    status_read_cb done;
    void *ctx;
} ddb_read;

static void on_item(void *ud, const fetch_aws_result *r)
{
    ddb_read *q = ud;
    ddb_backend *b = q->b;
    bool ok = !r->err && r->http_status >= 200 && r->http_status < 300;
    const cJSON *item = ok ? cJSON_GetObjectItemCaseSensitive(r->json, "Item") : NULL;
    cJSON *plain = cJSON_IsObject(item) ? proto_ddb_unmarshal(item) : NULL;
    if (ok && cJSON_IsObject(item) && !plain)
        q->done(q->ctx, -ENOMEM, NULL, "out of memory");
    else if (ok)
        q->done(q->ctx, 0, plain, NULL);
    else
        q->done(q->ctx, r->err ? r->err : -EIO, NULL,
                r->message ? r->message : "DynamoDB GetItem failed");
    cJSON_Delete(plain);
    free(q);
    if (--b->inflight == 0 && b->closing)
        ddb_free(b);
}

/* A strongly consistent GetItem of one status item. */
static int ddb_read_item(status_backend *be, status_kind kind, const char *run_id,
                         const char *task_name, status_read_cb done, void *ctx)
{
    ddb_backend *b = (ddb_backend *)be;
    cJSON *q = cJSON_CreateObject();
    cJSON *key = cJSON_AddObjectToObject(q, "Key");
    cJSON_AddStringToObject(q, "TableName",
                            kind == STATUS_RUN ? b->runs_table : b->task_runs_table);
    cJSON_AddBoolToObject(q, "ConsistentRead", 1);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(key, "run_id"), "S", run_id);
    if (kind == STATUS_TASK)
        cJSON_AddStringToObject(cJSON_AddObjectToObject(key, "task_name"), "S", task_name);
    char *body = cJSON_PrintUnformatted(q);
    cJSON_Delete(q);
    ddb_read *r = body ? malloc(sizeof *r) : NULL;
    if (!r) {
        free(body);
        return -ENOMEM;
    }
    *r = (ddb_read){b, done, ctx};
    int rc = fetch_aws_json(b->aws, "dynamodb", "DynamoDB_20120810.GetItem", body, &ddb_retry,
                            on_item, r);
    free(body);
    if (rc < 0) {
        free(r);
        return rc;
    }
    b->inflight++;
    return 0;
}

static void ddb_close(status_backend *be)
{
    ddb_backend *b = (ddb_backend *)be;
    if (b->inflight > 0)
        b->closing = true; /* completions (or fetch_aws_free's cancellations) free it */
    else
        ddb_free(b);
}

int status_ddb_new(fetch_aws *aws, const char *runs_table, const char *task_runs_table,
                   status_backend **out)
{
    if (!aws || !runs_table || !*runs_table || !task_runs_table || !*task_runs_table)
        return -EINVAL;
    ddb_backend *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->runs_table = strdup(runs_table);
    b->task_runs_table = strdup(task_runs_table);
    if (!b->runs_table || !b->task_runs_table) {
        ddb_free(b);
        return -ENOMEM;
    }
    b->aws = aws;
    b->base.name = "dynamodb";
    b->base.write = ddb_write_item;
    b->base.read = ddb_read_item;
    b->base.close = ddb_close;
    b->base.coalesce_ms = DDB_COALESCE_MS;
    b->base.max_item_bytes = DDB_MAX_ITEM_BYTES;
    b->base.max_inflight = DDB_MAX_INFLIGHT;
    *out = &b->base;
    return 0;
}
