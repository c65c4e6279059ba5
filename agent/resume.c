/* resume.c - task fingerprints and resume (issue 10 items 2 and 3). Before the DAG starts:
 *   1. the code digest of the flow directory (every file but flow_spec.json, metadata.json and
 *      byte-code caches; thread pool) and every task's task_hash (proto/taskhash.c);
 *   2. with --resume-from / DAGY_RESUME_FROM: the source run's items, then its own source's
 *      (resume_from, else retry_of), and so on; a task that SUCCEEDED there with the same
 *      task_hash, and whose upstream tasks are all reused too, is a candidate;
 *   3. every candidate's stored result is fetched into this run's results/ and verified
 *      against result_sha256 (S3: the download's #sha256= check; local: a hashing copy); a
 *      result that is missing or does not match is not reused: the task runs again, and so
 *      does everything downstream of it;
 *   4. the reused tasks are marked SUCCEEDED in the plan (attempt 0, reused_from), unrun.
 * A map task is reused whole like any task. One that is not, but whose upstream tasks all are,
 * gets its children "MAP[k]" that SUCCEEDED in the chain (resume_map.c) fetched and verified
 * too (step 3, after the tasks); its expansion reuses those whose task_hash matches.
 * A source still QUEUED/RUNNING is refused (exit 2), an unknown one too. */
#include "agent/durable.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/unpack.h"
#include "proto/names.h"
#include "proto/sha256.h"
#include "proto/util.h"

#define CHAIN_MAX  32 /* source runs followed at most */
#define FETCH_MAX  16 /* result downloads/copies at once */
#define COPY_BUFSZ (1u << 20)

typedef struct {
    run_state *r;
    uv_work_t work;
    int err;
    char digest[PROTO_HASH_HEX];
} digest_job;

typedef struct {
    run_state *r;
    char *visited[CHAIN_MAX];
    int depth;
    size_t next_fetch;        /* index into order[] of the next candidate to fetch */
    size_t *order;            /* topological order of the tasks */
    bool kids_phase;          /* the tasks are settled: fetching map children now */
    size_t kid_map, kid_next; /* the next map child to fetch: task index, kids[] index */
    size_t kids_staged;       /* children verified (or without a result) */
} resume_ctx;

typedef struct {
    resume_ctx *c;
    size_t i;
    long kid; /* -1: task i itself; else its kids[] index */
    uv_work_t work;
    char *src, *dst, *want;
    int err; /* -EBADMSG: checksum mismatch */
} copy_job;

static void begin_hashes(run_state *r, const char *digest);
static void resume_next(resume_ctx *c, const char *run_id);
static void chain_done(resume_ctx *c);
static void fetch_more(resume_ctx *c);

/* ---- helpers ---- */

static agent_durable *durable_state(run_state *r)
{
    if (!r->durable)
        r->durable = calloc(1, sizeof *r->durable);
    return r->durable;
}

const char *agent__resume_str(const cJSON *o, const char *k)
{
    const char *s = proto_json_str(o, k);
    return s && *s ? s : NULL; /* an empty attribute of a source item is no value */
}

/* SHA-256 of everything read from fd (and a copy to out_fd if >= 0); hex into hex. */
static int hash_fd(int fd, int out_fd, char hex[PROTO_HASH_HEX])
{
    proto_sha256 h;
    unsigned char *buf = malloc(COPY_BUFSZ), md[32];
    int rc = buf ? 0 : -ENOMEM;
    proto_sha256_init(&h);
    while (!rc) {
        ssize_t n = read(fd, buf, COPY_BUFSZ);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : 0;
            break;
        }
        proto_sha256_update(&h, buf, (size_t)n);
        for (ssize_t off = 0; out_fd >= 0 && off < n && !rc;) {
            ssize_t w = write(out_fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno != EINTR)
                rc = -errno;
            off += w > 0 ? w : 0;
        }
    }
    if (!rc) {
        proto_sha256_final(&h, md);
        proto_hex(md, 32, hex);
    }
    free(buf);
    return rc;
}

/* Ends the run before the DAG: exit code and message, unless a signal got there first. */
static void begin_fail(run_state *r, int code, const char *msg)
{
    if (r->phase != RUN_PREPARING)
        return;
    agent_log(LOG_ERROR, code == AGENT_EXIT_INVALID ? "resume_refused" : "resume_failed", "%s",
              msg);
    agent__finish(r, code, msg);
}

/* ---- 1. code digest ---- */

static __thread proto_code_digest *walk_digest;
static __thread size_t walk_root_len;
static __thread int walk_err;

/* nftw callback: every regular file's content and every link's target go into the digest. */
static int walk_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    const char *rel = path + walk_root_len + (path[walk_root_len] == '/');
    char hex[PROTO_HASH_HEX], target[4096];
    if (!*rel || proto_code_digest_skip(rel))
        return 0;
    if (type == FTW_F && S_ISREG(st->st_mode)) {
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        int rc = fd < 0 ? -errno : hash_fd(fd, -1, hex);
        if (fd >= 0)
            close(fd);
        if (rc) {
            walk_err = rc;
            return 1;
        }
        proto_code_digest_add(walk_digest, rel, hex);
    } else if (type == FTW_SL) {
        ssize_t n = readlink(path, target, sizeof target);
        if (n >= 0) {
            proto_sha256_hex(target, (size_t)n, hex);
            char *name = NULL;
            if (asprintf(&name, "%s -> (link)", rel) >= 0)
                proto_code_digest_add(walk_digest, name, hex);
            free(name);
        }
    }
    return 0;
}

static void digest_work(uv_work_t *w)
{
    digest_job *j = w->data;
    if (j->r->flow_code_digest[0]) { /* the unpack computed it from the bytes it wrote */
        memcpy(j->digest, j->r->flow_code_digest, sizeof j->digest);
        j->err = 0;
        return;
    }
    walk_digest = proto_code_digest_new();
    walk_root_len = strlen(j->r->flow_dir);
    walk_err = 0;
    if (!walk_digest) {
        j->err = -ENOMEM;
        return;
    }
    if (nftw(j->r->flow_dir, walk_one, 32, FTW_PHYS) < 0 && !walk_err)
        walk_err = -errno;
    j->err = walk_err;
    proto_code_digest_finish(walk_digest, j->digest);
    walk_digest = NULL;
}

static void digest_done(uv_work_t *w, int status)
{
    digest_job *j = w->data;
    run_state *r = j->r;
    r->pending--;
    if (status == UV_ECANCELED || r->phase != RUN_PREPARING) {
        free(j);
        return;
    }
    if (j->err) {
        char msg[600];
        snprintf(msg, sizeof msg, "cannot read the flow directory %s for its code digest: %s",
                 r->flow_dir, strerror(-j->err));
        free(j);
        begin_fail(r, AGENT_EXIT_INFRA, msg);
        return;
    }
    char digest[PROTO_HASH_HEX];
    memcpy(digest, j->digest, sizeof digest);
    free(j);
    begin_hashes(r, digest);
}

/* ---- 2. hashes and the source chain ---- */

static void ready(run_state *r)
{
    r->durable->ready = true;
    agent__execute(r);
}

static void begin_hashes(run_state *r, const char *digest)
{
    agent_durable *d = r->durable;
    size_t n = r->spec->n_tasks;
    snprintf(d->code_digest, sizeof d->code_digest, "%s", digest);
    d->hashes = calloc(n ? n : 1, sizeof *d->hashes);
    d->tasks = calloc(n ? n : 1, sizeof *d->tasks);
    proto_hash_ctx ctx = {d->code_digest, r->cfg->parameters,
                          (const char *const *)r->cfg->dep_uris};
    int rc = d->hashes && d->tasks ? proto_task_hashes(r->spec, &ctx, d->hashes) : -ENOMEM;
    if (rc) {
        begin_fail(r, AGENT_EXIT_INFRA, "cannot compute the task hashes: out of memory");
        return;
    }
    agent_log(LOG_DEBUG, "task_hashes", "code digest %s; %zu task hashes", d->code_digest, n);
    if (!r->cfg->resume_from) {
        ready(r);
        return;
    }
    resume_ctx *c = calloc(1, sizeof *c);
    if (!c || !(c->order = malloc((n ? n : 1) * sizeof *c->order)) ||
        proto_task_order(r->spec, c->order)) {
        free(c ? c->order : NULL);
        free(c);
        begin_fail(r, AGENT_EXIT_INFRA, "cannot order the tasks: out of memory");
        return;
    }
    c->r = r;
    agent__run_set(r, "resume_from", r->cfg->resume_from);
    resume_next(c, r->cfg->resume_from);
}

static void ctx_free(resume_ctx *c)
{
    for (int k = 0; k < c->depth; k++)
        free(c->visited[k]);
    free(c->order);
    free(c);
}

/* Takes, from one source run's items, every SUCCEEDED task with our task_hash that no run
 * nearer in the chain provided, and every SUCCEEDED map child (its hash is known only once
 * its map expands). */
static void take_matches(resume_ctx *c, const char *run_id, const cJSON *items)
{
    run_state *r = c->r;
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const char *name = agent__resume_str(it, "task_name"),
                   *st = agent__resume_str(it, "status");
        const char *hash = agent__resume_str(it, "task_hash"),
                   *origin = agent__resume_str(it, "reused_from");
        long i = name ? flowspec_find(r->spec, name) : -1;
        if (!st || strcmp(st, "SUCCEEDED") || !hash)
            continue;
        const char *from =
            origin && proto_name_check(PROTO_NAME_RUN_ID, origin, NULL, 0) ? origin : run_id;
        size_t k = 0;
        long m = i < 0 && name ? agent__resume_kid_of(r, name, &k) : -1;
        if (m >= 0)
            agent__resume_kid_add(r, c->depth, (size_t)m, k, it, from);
        durable_task *t = i >= 0 ? &r->durable->tasks[i] : NULL;
        if (!t || t->src_item || strcmp(hash, r->durable->hashes[i]))
            continue;
        t->src_item = cJSON_Duplicate(it, true);
        t->src_run = strdup(from);
    }
}

/* Candidates: a match whose upstream tasks are all candidates (their results are the inputs it
 * saw). In topological order, so one pass decides. */
static size_t close_reuse(resume_ctx *c, bool initial)
{
    run_state *r = c->r;
    size_t n = 0;
    for (size_t k = 0; k < r->spec->n_tasks; k++) {
        size_t i = c->order[k];
        const flowspec_task *ft = &r->spec->tasks[i];
        durable_task *t = &r->durable->tasks[i];
        bool ok = initial ? t->src_item != NULL : t->reuse;
        for (size_t u = 0; ok && u < ft->n_upstream; u++)
            ok = r->durable->tasks[ft->upstream[u]].reuse;
        t->reuse = ok;
        n += ok;
    }
    return n;
}

static void on_source(void *ud, int rc, const char *err, const cJSON *run, const cJSON *items)
{
    resume_ctx *c = ud;
    run_state *r = c->r;
    const char *id = c->visited[c->depth - 1];
    char msg[AGENT_ERR_MAX];
    if (r->phase != RUN_PREPARING) {
        ctx_free(c);
        return;
    }
    const char *st = run ? agent__resume_str(run, "status") : NULL;
    if (c->depth == 1 && (rc || !run || !st || !proto_status_terminal(st))) {
        int code = rc ? AGENT_EXIT_INFRA : AGENT_EXIT_INVALID;
        if (rc)
            snprintf(msg, sizeof msg, "cannot read the run to resume from, %s: %s", id, err);
        else if (!run)
            snprintf(msg, sizeof msg, "cannot resume from run %s: no such run in the %s", id,
                     strcmp(r->cfg->status_backend, "dynamodb") ? "state directory" : "runs table");
        else
            snprintf(msg, sizeof msg,
                     "cannot resume from run %s: it is still %s (wait for it to end, or cancel "
                     "it; a run whose agent died stays RUNNING until `dagy-launch reconcile` "
                     "closes it)",
                     id, st ? st : "without a status");
        ctx_free(c);
        begin_fail(r, code, msg);
        return;
    }
    if (rc || !run) { /* further up the chain: use what we have */
        agent_log(LOG_WARNING, "resume_source_unreadable",
                  "run %s (an earlier source of this resume) cannot be read: %s", id,
                  rc ? err : "no such run");
    } else {
        take_matches(c, id, items);
        const char *next = agent__resume_str(run, "resume_from");
        if (!next)
            next = agent__resume_str(run, "retry_of");
        if (next && proto_name_check(PROTO_NAME_RUN_ID, next, NULL, 0)) {
            resume_next(c, next);
            return;
        }
    }
    chain_done(c);
}

/* The chain is read: the candidates, the children kept, then the fetches. */
static void chain_done(resume_ctx *c)
{
    agent__resume_kids_dedupe(c->r);
    close_reuse(c, true);
    fetch_more(c);
}

/* Reads the next run of the chain, unless seen already (a cycle) or the chain is too long. */
static void resume_next(resume_ctx *c, const char *run_id)
{
    for (int k = 0; k < c->depth; k++)
        if (!strcmp(c->visited[k], run_id)) {
            chain_done(c);
            return;
        }
    if (c->depth == CHAIN_MAX || !strcmp(run_id, c->r->cfg->run_id)) {
        chain_done(c);
        return;
    }
    c->visited[c->depth++] = strdup(run_id);
    agent__read_run(c->r, run_id, true, on_source, c);
}

/* ---- 3. fetching and verifying the results to reuse ---- */

/* The fetch of task i's result (kid < 0) or of its map child kids[kid]'s has answered. */
static void fetched(resume_ctx *c, size_t i, long kid, bool ok, const char *why)
{
    run_state *r = c->r;
    if (!r->durable)
        return; /* teardown already freed the run's state (a copy outlived the finish wait) */
    durable_task *t = &r->durable->tasks[i];
    durable_kid *kd = kid >= 0 ? &t->kids[kid] : NULL;
    const char *name = kd ? agent__resume_str(kd->item, "task_name") : r->spec->tasks[i].name;
    r->durable->fetching--;
    if (!ok) {
        log_line *l = agent_log_begin(LOG_WARNING, "result_not_reused",
                                      "task \"%s\" runs again: its stored result %s", name, why);
        agent_log_str(l, "task_name", name);
        agent_log_str(l, "reused_from", kd ? kd->src_run : t->src_run);
        agent_log_str(l, "error", why);
        agent_log_end(l);
        if (!kd)
            t->reuse = false;
    } else if (kd) {
        kd->ok = true;
        c->kids_staged++;
    }
    if (r->phase != RUN_PREPARING) {
        if (r->durable->fetching == 0)
            ctx_free(c);
        return;
    }
    fetch_more(c);
}

/* Thread pool: copies a local source result into this run's results/, hashing it. */
static void copy_work(uv_work_t *w)
{
    copy_job *j = w->data;
    char got[PROTO_HASH_HEX];
    int in = open(j->src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (in < 0 || fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
        j->err = in < 0 ? -errno : -EINVAL;
        if (in >= 0)
            close(in);
        return;
    }
    int out = open(j->dst, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    j->err = out < 0 ? -errno : hash_fd(in, out, got);
    close(in);
    if (out >= 0 && close(out) && !j->err)
        j->err = -errno;
    if (!j->err && strcmp(got, j->want))
        j->err = -EBADMSG;
}

static void copy_done(uv_work_t *w, int status)
{
    copy_job *j = w->data;
    char why[900];
    j->c->r->pending--;
    if (j->err == -EBADMSG)
        snprintf(why, sizeof why, "%s does not match its result_sha256 %s", j->src, j->want);
    else
        snprintf(why, sizeof why, "%s cannot be read: %s", j->src,
                 status == UV_ECANCELED ? "cancelled"
                 : j->err == -EINVAL    ? "not a regular file"
                                        : strerror(-j->err));
    bool ok = status == 0 && !j->err;
    resume_ctx *c = j->c;
    size_t i = j->i;
    long kid = j->kid;
    free(j->src);
    free(j->dst);
    free(j->want);
    free(j);
    fetched(c, i, kid, ok, why);
}

typedef struct {
    resume_ctx *c;
    size_t i;
    long kid;
} dl_job;

static void on_downloaded(void *ud, const fetch_aws_result *res)
{
    dl_job *dj = ud;
    resume_ctx *c = dj->c;
    size_t i = dj->i;
    long kid = dj->kid;
    free(dj);
    c->r->pending--;
    char why[1200];
    bool ok = !res->err && res->http_status / 100 == 2;
    snprintf(why, sizeof why, "%s%s",
             res->err == -EBADMSG ? "does not match its result_sha256: " : "cannot be fetched: ",
             res->message ? res->message : "cancelled");
    fetched(c, i, kid, ok, why);
}

/* Where the result of task (or map child) `name` waits, verified, until the exec tree exists
 * (or the map expands): STAGE/NAME.json. */
char *agent__resume_stage_path(run_state *r, const char *name)
{
    char enc[PROTO_NAME_ENCODED_MAX], *p = NULL;
    proto_name_encode(name, enc, sizeof enc);
    if (asprintf(&p, "%s/%s.json", r->durable->stage_dir, enc) < 0)
        return NULL;
    return p;
}

static char *stage_file(run_state *r, size_t i)
{
    return agent__resume_stage_path(r, r->spec->tasks[i].name);
}

/* Starts fetching candidate i's result (kid < 0) or its map child kids[kid]'s into the
 * staging directory; false if it cannot even start (then it is not reused). */
static bool start_fetch(resume_ctx *c, size_t i, long kid, char *why, size_t whylen)
{
    run_state *r = c->r;
    durable_task *t = &r->durable->tasks[i];
    const cJSON *src = kid < 0 ? t->src_item : t->kids[kid].item;
    const char *sha = agent__resume_str(src, "result_sha256");
    const char *uri = agent__resume_str(src, "result_s3_uri");
    const char *path = agent__resume_str(src, "result_path");
    char *dst = kid < 0 ? stage_file(r, i)
                        : agent__resume_stage_path(r, agent__resume_str(src, "task_name"));
    bool hex_ok = sha && strlen(sha) == 64 && strspn(sha, "0123456789abcdef") == 64;
    if (uri && !proto_utf8_valid(uri, strlen(uri)))
        uri = NULL; /* every string we store is valid UTF-8: such an item describes nothing */
    if (!dst || !hex_ok || (!uri && !path)) {
        snprintf(why, whylen,
                 "is not described completely (result_sha256 and result_s3_uri or "
                 "result_path)");
        free(dst);
        return false;
    }
    if (uri) {
        char *full = NULL;
        dl_job *dj = malloc(sizeof *dj);
        int rc = !r->aws ? -ENOTSUP
                 : !dj || asprintf(&full, "%s#sha256=%s", uri, sha) < 0
                     ? -ENOMEM
                     : fetch_s3_get_file(r->aws, full, dst, NULL, on_downloaded, dj);
        free(full);
        free(dst);
        if (rc) {
            free(dj);
            snprintf(why, whylen, "%s cannot be fetched: %s", uri,
                     rc == -ENOTSUP ? "this run has no AWS access" : strerror(-rc));
            return false;
        }
        *dj = (dl_job){c, i, kid};
        r->pending++;
        return true;
    }
    copy_job *j = calloc(1, sizeof *j);
    if (!j || !(j->src = strdup(path)) || !(j->want = strdup(sha))) {
        if (j)
            free(j->src);
        free(j);
        free(dst);
        snprintf(why, whylen, "cannot be copied: out of memory");
        return false;
    }
    j->c = c;
    j->i = i;
    j->kid = kid;
    j->dst = dst;
    j->work.data = j;
    if (uv_queue_work(&r->loop, &j->work, copy_work, copy_done)) {
        free(j->src);
        free(j->want);
        free(j->dst);
        free(j);
        snprintf(why, whylen, "cannot be copied: no worker thread");
        return false;
    }
    r->pending++;
    return true;
}

static void finish_resume(resume_ctx *c);
static void settle_tasks(resume_ctx *c);
static bool fetch_kids(resume_ctx *c);

/* Keeps up to FETCH_MAX fetches in flight, in topological order; when all have answered,
 * settles the reuse set, then fetches the map children that may be reused the same way. */
static void fetch_more(resume_ctx *c)
{
    run_state *r = c->r;
    agent_durable *d = r->durable;
    char why[600];
    while (d->fetching < FETCH_MAX && c->next_fetch < r->spec->n_tasks) {
        size_t i = c->order[c->next_fetch++];
        durable_task *t = &d->tasks[i];
        if (!t->reuse)
            continue;
        t->has_result = agent__resume_str(t->src_item, "result_sha256") != NULL;
        if (!t->has_result)
            continue; /* it stored no result: nothing to fetch, downstream saw null */
        d->fetching++;
        if (!start_fetch(c, i, -1, why, sizeof why)) {
            fetched(c, i, -1, false, why); /* re-enters fetch_more: stop this loop */
            return;
        }
    }
    if (d->fetching || c->next_fetch < r->spec->n_tasks)
        return;
    if (!c->kids_phase) {
        c->kids_phase = true;
        settle_tasks(c);
    }
    if (!fetch_kids(c))
        return; /* fetched() re-entered fetch_more */
    if (d->fetching == 0 && c->kid_map >= r->spec->n_tasks)
        finish_resume(c);
}

/* Keeps up to FETCH_MAX map children's fetches in flight; false if fetched() re-entered
 * fetch_more (then the caller stops). */
static bool fetch_kids(resume_ctx *c)
{
    run_state *r = c->r;
    agent_durable *d = r->durable;
    char why[600];
    while (d->fetching < FETCH_MAX && c->kid_map < r->spec->n_tasks) {
        durable_task *t = &d->tasks[c->kid_map];
        if (c->kid_next >= t->n_kids) {
            c->kid_map++;
            c->kid_next = 0;
            continue;
        }
        size_t j = c->kid_next++;
        if (!agent__resume_str(t->kids[j].item, "result_sha256")) {
            t->kids[j].ok = true; /* it stored no result: its slot is null */
            c->kids_staged++;
            continue;
        }
        d->fetching++;
        if (!start_fetch(c, c->kid_map, (long)j, why, sizeof why)) {
            fetched(c, c->kid_map, (long)j, false, why);
            return false;
        }
    }
    return true;
}

/* Every task's fetch answered: a task whose result was refused runs again, and so does
 * everything downstream of it; results fetched for tasks that now run are removed (an
 * attempt's result must be its own). The children of a map that runs are kept only if every
 * upstream task of the map is reused: their inputs are those tasks' results. */
static void settle_tasks(resume_ctx *c)
{
    run_state *r = c->r;
    agent_durable *d = r->durable;
    d->n_reused = close_reuse(c, false);
    for (size_t i = 0; i < r->spec->n_tasks; i++) {
        durable_task *t = &d->tasks[i];
        const flowspec_task *ft = &r->spec->tasks[i];
        if (!t->reuse && t->has_result) {
            char *f = stage_file(r, i);
            if (f)
                unlink(f);
            free(f);
        }
        bool ups = !t->reuse;
        for (size_t u = 0; ups && u < ft->n_upstream; u++)
            ups = d->tasks[ft->upstream[u]].reuse;
        if (!ups)
            agent__resume_kids_free(r, t, false);
        d->kid_maps += t->n_kids > 0;
    }
}

/* Every fetch answered: the plan is known. */
static void finish_resume(resume_ctx *c)
{
    run_state *r = c->r;
    agent_durable *d = r->durable;
    log_line *l = agent_log_begin(
        LOG_INFO, "resume_plan", "resuming from run %s: %zu of %zu tasks reused, %zu to run",
        r->cfg->resume_from, d->n_reused, r->spec->n_tasks, r->spec->n_tasks - d->n_reused);
    agent_log_str(l, "resume_from", r->cfg->resume_from);
    agent_log_int(l, "tasks_reused", (int64_t)d->n_reused);
    agent_log_int(l, "tasks_total", (int64_t)r->spec->n_tasks);
    agent_log_int(l, "map_children_reusable", (int64_t)c->kids_staged);
    agent_log_end(l);
    ctx_free(c);
    ready(r);
}

/* ---- hooks ---- */

bool agent__durable_begin(run_state *r)
{
    agent_durable *d = durable_state(r);
    if (!d) {
        begin_fail(r, AGENT_EXIT_INFRA, "out of memory");
        return true;
    }
    if (d->deferred)
        return true; /* a finish waits for the cancel check: nothing may start meanwhile */
    if (d->ready)
        return false;
    if (r->cfg->resume_from) {
        char id[40], msg[600];
        agent_uuid(id);
        if (asprintf(&d->stage_dir, "%s/reuse.%s", r->run_dir, id) < 0)
            d->stage_dir = NULL;
        if (!d->stage_dir || mkdir(d->stage_dir, 0700)) {
            snprintf(msg, sizeof msg, "cannot create the directory for reused results in %s: %s",
                     r->run_dir, strerror(d->stage_dir ? errno : ENOMEM));
            begin_fail(r, AGENT_EXIT_INFRA, msg);
            return true;
        }
    }
    digest_job *j = calloc(1, sizeof *j);
    if (!j) {
        begin_fail(r, AGENT_EXIT_INFRA, "out of memory");
        return true;
    }
    j->r = r;
    j->work.data = j;
    if (uv_queue_work(&r->loop, &j->work, digest_work, digest_done)) {
        free(j);
        begin_fail(r, AGENT_EXIT_INFRA, "cannot compute the code digest: no worker thread");
        return true;
    }
    r->pending++;
    return true;
}

/* Moves the verified result of task i (`name`) from the staging directory to where inputs
 * are built from. */
bool agent__resume_place_staged(run_state *r, const char *name, size_t i)
{
    char *from = agent__resume_stage_path(r, name), *to = agent__result_file(r, i);
    bool ok = from && to && rename(from, to) == 0;
    if (!ok) {
        log_line *l =
            agent_log_begin(LOG_WARNING, "result_not_reused",
                            "task \"%s\" runs again: its result cannot be moved to %s: %s", name,
                            to ? to : "", strerror(errno));
        agent_log_str(l, "task_name", name);
        agent_log_end(l);
        if (from)
            unlink(from);
    }
    free(from);
    free(to);
    return ok;
}

static bool place_result(run_state *r, size_t i)
{
    return agent__resume_place_staged(r, r->spec->tasks[i].name, i);
}

void agent__durable_apply(run_state *r)
{
    agent_durable *d = r->durable;
    if (d && (!d->tasks || !d->n_reused) && !d->kid_maps)
        agent__resume_unstage(d);
    if (!d || !d->tasks || !d->n_reused)
        return;
    size_t *order = malloc(r->spec->n_tasks * sizeof *order);
    if (!order || proto_task_order(r->spec, order)) {
        free(order);
        return; /* cannot happen for a validated spec; then nothing is reused */
    }
    d->n_reused = 0;
    for (size_t k = 0; k < r->spec->n_tasks; k++) {
        size_t i = order[k];
        durable_task *t = &d->tasks[i];
        const flowspec_task *ft = &r->spec->tasks[i];
        for (size_t u = 0; t->reuse && u < ft->n_upstream; u++)
            t->reuse = d->tasks[ft->upstream[u]].reuse; /* an upstream fell out below */
        if (t->reuse && t->has_result && !place_result(r, i))
            t->reuse = false;
        /* Inputs are built only from results this agent stored (results.c): a placed one is. */
        if (t->reuse && t->has_result)
            r->tasks[i].has_result = true;
        if (t->reuse) {
            sched_mark_reused(r->plan, i);
            d->n_reused++;
        }
    }
    free(order);
    status_set_num(r->run_item, "tasks_reused", (double)d->n_reused);
    status_touch(r->status, r->run_item);
    if (!d->kid_maps)
        agent__resume_unstage(d);
}

void agent__durable_item(run_state *r, size_t i, cJSON *item)
{
    if (r->durable && r->durable->hashes)
        status_set_str(item, "task_hash", r->durable->hashes[i]);
}

log_line *agent__durable_reused(run_state *r, size_t i, cJSON *item)
{
    durable_task *t = &r->durable->tasks[i];
    const cJSON *src = t->src_item;
    char ts[32], *copy = t->has_result && !agent__resume_str(src, "result_s3_uri")
                             ? agent__result_file(r, i)
                             : NULL;
    status_set_str(item, "reused_from", t->src_run);
    status_set_str(item, "ended_at", proto_iso_time(proto_now(), ts));
    status_set_str(item, "result_s3_uri", agent__resume_str(src, "result_s3_uri"));
    status_set_str(item, "result_path", copy);
    status_set_str(item, "result_sha256", agent__resume_str(src, "result_sha256"));
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(src, "result_bytes");
    if (cJSON_IsNumber(bytes))
        status_set_num(item, "result_bytes", bytes->valuedouble);
    const cJSON *kids = cJSON_GetObjectItemCaseSensitive(src, "map_children");
    if (r->spec && i < r->spec->n_tasks && r->spec->tasks[i].map && cJSON_IsNumber(kids)) {
        status_set_str(item, "map_over", r->spec->tasks[i].map->over); /* a map reused whole */
        status_set_num(item, "map_children", kids->valuedouble);
    }
    free(copy);
    log_line *l = agent_log_begin(LOG_INFO, "task_reused", "task \"%s\" reused from run %s",
                                  r->tasks[i].ft->name, t->src_run);
    agent_log_str(l, "task_name", r->tasks[i].ft->name);
    agent_log_str(l, "task_run_id", r->tasks[i].task_run_id);
    agent_log_int(l, "attempt", 0);
    agent_log_str(l, "status", "SUCCEEDED");
    agent_log_str(l, "reused_from", t->src_run);
    agent_log_str(l, "task_hash", r->durable->hashes[i]);
    return l;
}

/* Removes the staging directory and whatever is left in it. */
void agent__resume_unstage(agent_durable *d)
{
    if (!d->stage_dir)
        return;
    unpack_rmtree(d->stage_dir);
    free(d->stage_dir);
    d->stage_dir = NULL;
}

static void timer_freed(uv_handle_t *h)
{
    free(h);
}

void agent__durable_free(run_state *r)
{
    agent_durable *d = r->durable;
    if (!d)
        return;
    if (d->cancel_timer) /* the cancel check never answered: close it before teardown's walk */
        uv_close((uv_handle_t *)d->cancel_timer, timer_freed);
    agent__resume_unstage(d);
    size_t n = r->plan ? sched_count(r->plan) : r->spec ? r->spec->n_tasks : 0;
    for (size_t i = 0; d->tasks && i < n; i++) { /* map children past the spec's tasks too */
        cJSON_Delete(d->tasks[i].src_item);
        free(d->tasks[i].src_run);
        agent__resume_kids_free(r, &d->tasks[i], false);
    }
    free(d->tasks);
    free(d->hashes);
    free(d->cancel_text);
    free(d->deferred_error);
    free(d);
    r->durable = NULL;
}
