/* durable_results.c - durable task results (issue 10 item 1, contract section 10): a successful
 * attempt's DAGY_TASK_OUTPUT is hashed (SHA-256, on the thread pool, 1 MiB at a time) and, with
 * a results bucket, streamed to s3://BUCKET/results/ORG_ID/RUN_ID/TASK.json from the same open
 * file; only then does the task become SUCCEEDED, its item carrying result_s3_uri (or, without
 * a bucket, result_path), result_sha256 and result_bytes. The file stored is the validated
 * result results.c wrote (exec/INSTANCE/results/TASK.json, the one inputs are built from). A
 * result that cannot be stored fails the attempt as an infrastructure failure (retried like any
 * failure; exit 3 if the task fails for good), and its results/ file is removed so no later
 * attempt or downstream task can take it for theirs. While its result is stored the attempt gives
 * its max_parallel slot to other tasks (sched_finishing): uploads overlap the DAG. */
#include "agent/durable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "proto/names.h"
#include "proto/sigv4.h"

struct result_job {
    run_state *r;
    size_t i;
    uv_work_t work;
    char *path;
    int fd;
    uint64_t bytes;
    char sha[PROTO_HASH_HEX];
    int err;        /* of the hashing: -ENOENT = no result written */
    bool abandoned; /* the drain gave up on it: complete nothing, only free */
    char *uri;
};

char *agent__result_file(run_state *r, size_t i)
{
    char *f = agent__task_file(r, AGENT_DIR_RESULTS, i, 0), cwd[4096] = "", *p = NULL;
    /* Absolute, so that result_path still names it for a resume started elsewhere. */
    if (!f || f[0] == '/' || !getcwd(cwd, sizeof cwd))
        return f;
    if (asprintf(&p, "%s/%s", cwd, f) < 0)
        p = NULL;
    free(f);
    return p;
}

const char *agent__results_bucket(const run_state *r)
{
    const agent_config *c = r->cfg;
    return c->results_bucket ? c->results_bucket : c->traces_bucket;
}

static void job_free(result_job *j)
{
    if (j->fd >= 0)
        close(j->fd);
    free(j->path);
    free(j->uri);
    free(j);
}

/* Thread pool: opens the result without following links or blocking on a FIFO, refuses
 * anything but a regular file, and hashes it. */
static void hash_work(uv_work_t *w)
{
    result_job *j = w->data;
    struct stat st;
    j->fd = open(j->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (j->fd < 0) {
        j->err = -errno;
        return;
    }
    if (fstat(j->fd, &st) < 0) {
        j->err = -errno;
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        j->err = -EINVAL;
        return;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20), md[32];
    unsigned int mdlen = 0;
    uint64_t off = 0;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        j->err = -ENOMEM;
    while (!j->err) {
        ssize_t n = pread(j->fd, buf, 1 << 20, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            j->err = -errno;
        if (n <= 0)
            break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        off += (uint64_t)n;
    }
    if (!j->err) {
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        sigv4_hex(md, 32, j->sha);
        j->bytes = off;
    }
    EVP_MD_CTX_free(ctx);
    free(buf);
    OPENSSL_thread_stop(); /* OpenSSL's state of this worker thread (never joined) */
}

/* The attempt ends: SUCCEEDED (the item already carries the result) or FAILED with why. */
static void job_end(result_job *j, sched_exit how, const char *why)
{
    run_state *r = j->r;
    r->pending--;
    if (j->abandoned || !r->durable) {
        job_free(j);
        return;
    }
    r->durable->tasks[j->i].store = NULL;
    size_t i = j->i;
    if (how != SCHED_EXIT_OK) {
        unlink(j->path); /* the attempt failed: its result must not stand */
        r->tasks[i].infra = how == SCHED_EXIT_FAILED;
    }
    job_free(j);
    agent__attempt_end(r, i, how, why);
}

/* The result attributes on the task's item (before it becomes SUCCEEDED, in the same write):
 * result_s3_uri = s3 when stored in S3, else result_path = the local file. */
static void record(result_job *j, const char *s3, const char *path)
{
    agent_task *t = &j->r->tasks[j->i];
    status_set_str(t->item, "result_s3_uri", s3);
    status_set_str(t->item, "result_path", s3 ? NULL : path);
    status_set_str(t->item, "result_sha256", j->sha);
    status_set_num(t->item, "result_bytes", (double)j->bytes);
}

static void on_put(void *ud, const fetch_aws_result *res)
{
    result_job *j = ud;
    if (j->abandoned || res->err == -ECANCELED) {
        j->abandoned = true;
        job_end(j, SCHED_EXIT_CANCELLED, NULL);
        return;
    }
    if (res->err || res->http_status / 100 != 2) {
        char why[1200];
        snprintf(why, sizeof why, "infrastructure: cannot store the result: %s",
                 res->message ? res->message : j->uri);
        job_end(j, SCHED_EXIT_FAILED, why);
        return;
    }
    record(j, j->uri, NULL);
    job_end(j, SCHED_EXIT_OK, NULL);
}

/* results/ORG/RUN/TASK.json, every segment through the one name encoder. */
static char *result_key(run_state *r, size_t i)
{
    char org[PROTO_NAME_ENCODED_MAX], run[PROTO_NAME_ENCODED_MAX], task[PROTO_NAME_ENCODED_MAX];
    const char *o = r->cfg->org_id ? r->cfg->org_id : "none";
    proto_name_encode(o, org, sizeof org);
    proto_name_encode(r->cfg->run_id, run, sizeof run);
    proto_name_encode(r->tasks[i].ft->name, task, sizeof task);
    char *key = NULL;
    if (asprintf(&key, "results/%s/%s/%s.json", org, run, task) < 0)
        return NULL;
    return key;
}

/* Starts the upload from the hashed fd. */
static void upload(result_job *j)
{
    run_state *r = j->r;
    const char *bucket = agent__results_bucket(r);
    char *key = result_key(r, j->i);
    char why[600];
    int rc = key ? 0 : -ENOMEM;
    if (!rc && asprintf(&j->uri, "s3://%s/%s", bucket, key) < 0)
        rc = -ENOMEM;
    if (!rc)
        rc = fetch_s3_put_fd(r->aws, bucket, key, j->fd, j->bytes, j->sha, "application/json",
                             on_put, j);
    free(key);
    if (rc) {
        snprintf(why, sizeof why, "infrastructure: cannot store the result at s3://%s/: %s", bucket,
                 rc == -EFBIG ? "larger than 5 GiB (S3's single PutObject limit)" : strerror(-rc));
        job_end(j, SCHED_EXIT_FAILED, why);
    }
}

static void hash_done(uv_work_t *w, int status)
{
    result_job *j = w->data;
    run_state *r = j->r;
    if (j->abandoned || status == UV_ECANCELED) {
        j->abandoned = true;
        job_end(j, SCHED_EXIT_CANCELLED, NULL);
        return;
    }
    if (j->err == -ENOENT) { /* the task wrote no result: nothing to store */
        job_end(j, SCHED_EXIT_OK, NULL);
        return;
    }
    if (j->err) {
        char why[600];
        snprintf(why, sizeof why, "infrastructure: cannot read the stored result %s: %s", j->path,
                 j->err == -EINVAL  ? "not a regular file"
                 : j->err == -ELOOP ? "a symbolic link"
                                    : strerror(-j->err));
        job_end(j, SCHED_EXIT_FAILED, why);
        return;
    }
    if (agent__results_bucket(r) && r->aws) {
        upload(j);
        return;
    }
    record(j, NULL, j->path);
    job_end(j, SCHED_EXIT_OK, NULL);
}

int agent__result_store(run_state *r, size_t i)
{
    result_job *j = calloc(1, sizeof *j);
    if (!j)
        return 0; /* out of memory: tasks.c's own checks still apply */
    j->r = r;
    j->i = i;
    j->fd = -1;
    j->path = agent__result_file(r, i);
    j->work.data = j;
    if (!j->path || uv_queue_work(&r->loop, &j->work, hash_work, hash_done)) {
        job_free(j);
        return 0;
    }
    r->pending++;
    r->durable->tasks[i].store = j;
    sched_finishing(r->plan, i);
    return 1;
}

void agent__results_abandon(run_state *r)
{
    if (!r->durable || !r->durable->tasks || !r->plan)
        return;
    for (size_t i = 0; i < sched_count(r->plan); i++) {
        result_job *j = r->durable->tasks[i].store;
        if (!j)
            continue;
        j->abandoned = true;
        r->durable->tasks[i].store = NULL;
        unlink(j->path); /* not stored: it must not pass for a result */
        char why[160];
        snprintf(why, sizeof why, "Worker shutdown requested via %s: result not stored",
                 r->stop_signal ? r->stop_signal : "SIGTERM");
        agent__attempt_end(r, i, SCHED_EXIT_CANCELLED, why);
    }
}
