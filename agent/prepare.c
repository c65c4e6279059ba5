/* prepare.c - everything before the first task: the flow artifact and dependency packages are
 * fetched concurrently (S3 or local files), unpacked safely on the thread pool, requirements
 * installed with pip, the ECS task ARN read from the metadata endpoint, the spec loaded.
 *
 * Every job reports into one `prep` record; the first failure decides the exit code (2 for bad
 * input, 3 for infrastructure), but the run ends only once every job has settled, so no thread
 * is still writing into the work directory when the agent exits. A signal cancels the unpacks
 * (each stops at its next block and removes its partial directory); the finish waits for them
 * and teardown waits for whatever is still on the thread pool. */
#include "agent/run.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "fetch/unpack.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct prep prep;

/* One artifact or package: fetched to `archive`, unpacked into `dest`. */
typedef struct {
    prep *p;
    const char *uri; /* s3:// URI (with #sha256=), local archive, or local directory */
    char *archive;
    char *dest;
    bool is_flow;
    uint64_t t0;
    uv_work_t work;
    bool unpacking;   /* work queued, its after-callback not run yet */
    bool streaming;   /* s3: unpacked into `staging` while it downloads (src) */
    bool downloading; /* streaming: the download's callback has not run yet */
    bool downloaded;  /* streaming: the download completed, length and #sha256= verified */
    char *staging;    /* streaming: the unpack's directory, renamed to `dest` once verified */
    unpack_source src;
    atomic_bool cancel; /* read by the worker before every block */
    unpack_limits limits;
    unpack_stats stats;
    int rc;
    char err[UNPACK_ERR_MAX];
} prep_job;

struct prep {
    run_state *r;
    prep_job *jobs;
    size_t n_jobs;
    int outstanding;
    int fail_code;
    char fail[AGENT_ERR_MAX];
    size_t pip_next; /* next package whose requirements to install */
    sbx_proc *pip;
};

static void settle(prep *p);

/* Records the first failure. */
static void prep_fail(prep *p, int code, const char *fmt, const char *a, const char *b)
{
    if (p->fail_code)
        return;
    p->fail_code = code;
    snprintf(p->fail, sizeof p->fail, fmt, a, b ? b : "");
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

static void unpack_work(uv_work_t *w)
{
    prep_job *j = w->data;
    j->rc = unpack_limits_from_env(&j->limits, j->err);
    if (j->rc)
        return;
    if (j->streaming)
        j->rc = unpack_archive_growing(j->archive, j->staging, &j->limits, &j->cancel, &j->src,
                                       &j->stats, j->err);
    else
        j->rc = unpack_archive_cancellable(j->archive, j->dest, &j->limits, &j->cancel, &j->stats,
                                           j->err);
}

static void log_unpack_end(prep_job *j)
{
    double dur = (double)(uv_now(&j->p->r->loop) - j->t0) / 1000.0;
    log_line *l = agent_log_begin(LOG_INFO, "unpack_end", "unpacked %s: %llu entries, %s", j->uri,
                                  (unsigned long long)j->stats.entries, j->stats.format);
    agent_log_str(l, "uri", j->uri);
    agent_log_int(l, "bytes", (int64_t)j->stats.bytes);
    agent_log_int(l, "entries", (int64_t)j->stats.entries);
    agent_log_str(l, "format", j->stats.format);
    agent_log_num(l, "duration_seconds", dur);
    agent_log_end(l);
    agent_metrics_phase("UnpackDuration", j->uri, dur);
}

/* A streamed job whose download and unpack have both ended: the staging directory becomes
 * `dest` only if the download was verified and the unpack succeeded, and is removed otherwise,
 * so nothing unverified is ever at `dest`. Then the job settles. */
static void stream_settle(prep_job *j)
{
    prep *p = j->p;
    if (j->downloading || j->unpacking)
        return;
    if (j->downloaded && !j->rc && p->r->phase == RUN_PREPARING) {
        if (rename(j->staging, j->dest))
            prep_fail(p, AGENT_EXIT_INFRA, "cannot move the unpacked %s into place: %s", j->uri,
                      strerror(errno));
        else
            log_unpack_end(j);
    }
    unpack_rmtree(j->staging); /* ENOENT after the rename, or after a failed unpack */
    unpack_source_destroy(&j->src);
    j->streaming = false;
    p->outstanding--;
    settle(p);
}

static void unpack_done(uv_work_t *w, int status)
{
    prep_job *j = w->data;
    prep *p = j->p;
    j->unpacking = false;
    p->r->pending--;
    if (status == UV_ECANCELED || j->rc == -ECANCELED) {
        prep_fail(p, AGENT_EXIT_SIGTERM, "unpacking %s cancelled%s", j->uri, NULL);
    } else if (p->r->phase != RUN_PREPARING) {
        /* The run ended meanwhile (run_end is logged): nothing more to say about this job. */
    } else if (j->rc) {
        prep_fail(p, j->rc == -EINVAL ? AGENT_EXIT_INVALID : AGENT_EXIT_INFRA,
                  "cannot unpack %s: %s", j->uri, j->err);
    } else if (!j->streaming) { /* a streamed one is logged once verified and in place */
        log_unpack_end(j);
    }
    if (j->streaming) {
        stream_settle(j);
        return;
    }
    p->outstanding--;
    settle(p);
}

static void start_unpack(prep_job *j)
{
    j->t0 = uv_now(&j->p->r->loop);
    j->work.data = j;
    int rc = uv_queue_work(&j->p->r->loop, &j->work, unpack_work, unpack_done);
    if (rc) {
        prep_fail(j->p, AGENT_EXIT_INFRA, "cannot unpack %s: %s", j->uri, uv_strerror(rc));
        j->rc = rc;
        if (j->streaming) {
            stream_settle(j);
            return;
        }
        j->p->outstanding--;
        settle(j->p);
        return;
    }
    /* The finish waits (bounded) for the unpack to stop before the final status flush. */
    j->unpacking = true;
    j->p->r->pending++;
}

static void on_progress(void *ud, uint64_t done, uint64_t total)
{
    prep_job *j = ud;
    if (!agent_log_is_pretty())
        return;
    char line[256];
    snprintf(line, sizeof line, "downloading %.150s: %.1f / %.1f MiB", j->uri,
             (double)done / 1048576.0, (double)total / 1048576.0);
    agent_log_progress(line);
}

/* Streaming: more of the archive is final; the unpack may read it. */
static void on_prefix(void *ud, uint64_t written, uint64_t total)
{
    prep_job *j = ud;
    unpack_source_update(&j->src, written, total, false, 0);
}

/* Streaming: the end of a zip (its central directory) is final; the unpack may read it. */
static void on_tail(void *ud, uint64_t from, uint64_t total)
{
    prep_job *j = ud;
    unpack_source_tail(&j->src, from, total);
}

static void on_downloaded(void *ud, const fetch_aws_result *res)
{
    prep_job *j = ud;
    prep *p = j->p;
    bool ok = !res->err && res->http_status / 100 == 2;
    if (j->streaming) {
        /* The unpack stops at its next read on a failure, or finishes on success. */
        j->downloading = false;
        j->downloaded = ok;
        unpack_source_update(&j->src, 0, 0, ok, ok ? 0 : res->err ? res->err : -EIO);
    }
    if (!ok) {
        if (res->err != -ECANCELED)
            prep_fail(p, res->err == -EBADMSG ? AGENT_EXIT_INVALID : AGENT_EXIT_INFRA,
                      "cannot download %s", res->message ? res->message : j->uri, NULL);
        if (j->streaming) {
            stream_settle(j);
            return;
        }
        p->outstanding--;
        settle(p);
        return;
    }
    struct stat st;
    double dur = (double)(uv_now(&p->r->loop) - j->t0) / 1000.0;
    log_line *l = agent_log_begin(LOG_INFO, "download_end", "downloaded %s in %.2f s", j->uri, dur);
    agent_log_str(l, "uri", j->uri);
    agent_log_int(l, "bytes", stat(j->archive, &st) == 0 ? (int64_t)st.st_size : 0);
    agent_log_num(l, "duration_seconds", dur);
    agent_log_end(l);
    agent_metrics_phase("DownloadDuration", j->uri, dur);
    if (j->streaming) {
        stream_settle(j);
        return;
    }
    if (p->r->phase != RUN_PREPARING) {
        p->outstanding--;
        settle(p);
        return;
    }
    start_unpack(j);
}

/* Starts one job: download (s3://), unpack (local archive) or use as is (local directory). */
static void start_job(prep *p, prep_job *j)
{
    run_state *r = p->r;
    struct stat st;
    p->outstanding++;
    if (!strncmp(j->uri, "s3://", 5)) {
        log_line *l = agent_log_begin(LOG_INFO, "download_start", "downloading %s", j->uri);
        agent_log_str(l, "uri", j->uri);
        agent_log_end(l);
        j->t0 = uv_now(&r->loop);
        /* Unpacked while it downloads (tar, tar.gz in order; a zip from its early-fetched tail
         * and then its entries as the prefix reaches them) into a staging directory that
         * becomes `dest` only once the download is verified (stream_settle). */
        j->staging = malloc(strlen(j->dest) + 9);
        if (j->staging && !unpack_source_init(&j->src)) {
            sprintf(j->staging, "%s.staging", j->dest);
            j->streaming = true;
        }
        int rc = fetch_s3_get_file_streaming(r->aws, j->uri, j->archive, on_progress,
                                             j->streaming ? on_prefix : NULL,
                                             j->streaming ? on_tail : NULL, on_downloaded, j);
        if (rc) {
            prep_fail(p, rc == -EINVAL ? AGENT_EXIT_INVALID : AGENT_EXIT_INFRA,
                      "cannot download %s: %s", j->uri, strerror(-rc));
            if (j->streaming)
                unpack_source_destroy(&j->src);
            j->streaming = false;
            p->outstanding--;
            return;
        }
        if (j->streaming) {
            j->downloading = true;
            start_unpack(j);
        }
        return;
    }
    if (stat(j->uri, &st)) {
        prep_fail(p, AGENT_EXIT_INVALID, "cannot read %s: %s", j->uri, strerror(errno));
        p->outstanding--;
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        char real[PATH_MAX];
        if (!realpath(j->uri, real)) {
            prep_fail(p, AGENT_EXIT_INVALID, "cannot resolve %s: %s", j->uri, strerror(errno));
            p->outstanding--;
            return;
        }
        free(j->dest);
        j->dest = strdup(real);
        p->outstanding--;
        return;
    }
    free(j->archive);
    j->archive = strdup(j->uri);
    start_unpack(j);
}

static void on_metadata(void *ud, const fetch_aws_result *res)
{
    prep *p = ud;
    /* Teardown cancels a fetch still out when a signal ended the run: run_end is written and
     * the store is gone, so nothing is said or stored (a warning used to follow run_end). */
    if (p->r->phase == RUN_DONE || res->err == -ECANCELED) {
        p->outstanding--;
        settle(p);
        return;
    }
    const cJSON *arn = res->json ? cJSON_GetObjectItem(res->json, "TaskARN") : NULL;
    if (!res->err && cJSON_IsString(arn)) {
        p->r->external_id = strdup(arn->valuestring);
        agent__run_set(p->r, "external_id", arn->valuestring);
    } else {
        agent_log(LOG_WARNING, "ecs_metadata", "could not read the ECS task ARN: %s",
                  res->message ? res->message : "no TaskARN in the task metadata");
    }
    agent__cost_metadata(p->r, res->err || res->http_status / 100 != 2 ? NULL : res->json,
                         res->message ? res->message : "the task metadata is not JSON");
    p->outstanding--;
    settle(p);
}

/* ECS task metadata v4: the task ARN becomes the run's external_id; Limits and the rest give
 * the cost profile (agent__cost_metadata). Fetched while the artifacts download. */
static void start_metadata(prep *p)
{
    const char *base = getenv("ECS_CONTAINER_METADATA_URI_V4");
    if (!base || !*base || !p->r->aws)
        return;
    char *url = path_join(base, "task");
    p->outstanding++;
    if (fetch_http_get(p->r->aws, url, on_metadata, p))
        p->outstanding--;
    free(url);
}

static void pip_line(void *ud, sbx_proc *proc, int stream, const char *line, size_t len)
{
    prep *p = ud;
    log_line *l =
        agent_log_begin(LOG_INFO, "deps_output", "%.*s", (int)(len > 1800 ? 1800 : len), line);
    agent_log_str(l, "stream", stream == SBX_STDERR ? "stderr" : "stdout");
    agent_log_str(l, "uri", p->jobs[p->pip_next].uri);
    agent_log_end(l);
}

static void install_next(prep *p);

static void pip_exit(void *ud, sbx_proc *proc, const sbx_result *res)
{
    prep *p = ud;
    prep_job *j = &p->jobs[p->pip_next];
    p->pip = NULL;
    if (res->exit_code != 0 || res->term_signal || res->spawn_error) {
        char why[128];
        if (res->spawn_error)
            snprintf(why, sizeof why, "cannot run %s: %s", p->r->cfg->pip_command,
                     strerror(-res->spawn_error));
        else if (res->term_signal)
            snprintf(why, sizeof why, "pip killed by signal %d", res->term_signal);
        else
            snprintf(why, sizeof why, "pip exited with code %d", res->exit_code);
        prep_fail(p, AGENT_EXIT_INFRA, "installing requirements of %s failed: %s", j->uri, why);
        p->outstanding--;
        settle(p);
        return;
    }
    log_line *l =
        agent_log_begin(LOG_INFO, "deps_installed", "installed requirements of %s", j->uri);
    agent_log_str(l, "uri", j->uri);
    agent_log_end(l);
    p->pip_next++;
    install_next(p);
}

/* Runs `PIP_COMMAND install -r requirements.txt --target DIR.site` for the next package that
 * has a requirements.txt, one at a time; settles when none is left. */
static void install_next(prep *p)
{
    run_state *r = p->r;
    for (; p->pip_next < p->n_jobs; p->pip_next++) {
        prep_job *j = &p->jobs[p->pip_next];
        if (j->is_flow || r->phase != RUN_PREPARING)
            continue;
        char *req = path_join(j->dest, "requirements.txt");
        if (access(req, F_OK)) {
            free(req);
            continue;
        }
        char *argv[64];
        char *cmd = strdup(r->cfg->pip_command);
        size_t n = 0;
        for (char *tok = strtok(cmd, " \t"); tok && n < 56; tok = strtok(NULL, " \t"))
            argv[n++] = tok;
        char *target = malloc(strlen(j->dest) + 6);
        sprintf(target, "%s.site", j->dest);
        argv[n++] = "install";
        argv[n++] = "-r";
        argv[n++] = req;
        argv[n++] = "--target";
        argv[n++] = target;
        argv[n] = NULL;
        extern char **environ;
        sbx_spec spec = {.argv = argv, .envp = environ, .cwd = j->dest};
        sbx_callbacks cb = {.on_line = pip_line, .on_exit = pip_exit};
        int rc = sbx_spawn(r->sbx, &spec, &cb, p, &p->pip);
        free(cmd);
        free(req);
        free(target);
        if (rc) {
            prep_fail(p, AGENT_EXIT_INFRA, "cannot start pip for %s: %s", j->uri, strerror(-rc));
            break;
        }
        return;
    }
    p->outstanding--;
    settle(p);
}

static void prep_free(prep *p)
{
    p->r->prep = NULL;
    for (size_t i = 0; i < p->n_jobs; i++) {
        free(p->jobs[i].archive);
        free(p->jobs[i].dest);
        free(p->jobs[i].staging);
    }
    free(p->jobs);
    free(p);
}

/* Called whenever a job settles: when nothing is outstanding, moves on. */
static void settle(prep *p)
{
    run_state *r = p->r;
    if (p->outstanding > 0)
        return;
    if (r->phase != RUN_PREPARING) { /* a signal ended the run meanwhile */
        prep_free(p);
        return;
    }
    if (!p->fail_code && p->pip_next == 0 && p->n_jobs > 1) {
        p->pip_next = 1; /* jobs[0] is the flow */
        p->outstanding = 1;
        install_next(p);
        return;
    }
    if (p->fail_code) {
        int code = p->fail_code;
        char msg[AGENT_ERR_MAX];
        snprintf(msg, sizeof msg, "%s", p->fail);
        prep_free(p);
        agent_log(LOG_ERROR, "prepare_failed", "%s", msg);
        agent__finish(r, code, msg);
        return;
    }
    r->flow_dir = p->jobs[0].dest;
    p->jobs[0].dest = NULL;
    /* Nothing writes into the flow directory between its unpack and the code digest. */
    snprintf(r->flow_code_digest, sizeof r->flow_code_digest, "%s", p->jobs[0].stats.code_digest);
    r->dep_dirs = calloc(p->n_jobs * 2, sizeof *r->dep_dirs);
    size_t k = 0;
    for (size_t i = 1; i < p->n_jobs; i++) {
        r->dep_dirs[k++] = p->jobs[i].dest;
        char *site = malloc(strlen(p->jobs[i].dest) + 6);
        sprintf(site, "%s.site", p->jobs[i].dest);
        if (access(site, F_OK) == 0)
            r->dep_dirs[k++] = site;
        else
            free(site);
        p->jobs[i].dest = NULL;
    }
    prep_free(p);
    char err[AGENT_ERR_MAX];
    int code = agent__load_spec(r, err);
    if (code) {
        agent_log(LOG_ERROR, "spec_invalid", "%s", err);
        agent__finish(r, code, err);
        return;
    }
    agent__execute(r);
}

const char *agent__unwritable_hint(int err, const char *what, char *buf, size_t n)
{
    if (err != EACCES && err != EPERM && err != EROFS)
        return "";
    snprintf(buf, n,
             "; %s must be writable by uid %u: mount a volume there (ECS with "
             "readonlyRootFilesystem: a bind volume at containerPath /tmp or /tmp/dagy, which "
             "the image's VOLUME hands to the image's user) or point it at a writable "
             "directory; see docs/operations.md",
             what, (unsigned)geteuid());
    return buf;
}

/* The run's work directory, emptied of any earlier attempt's leftovers. */
static int make_run_dir(run_state *r, char *err)
{
    char what[256], hint[640];
    snprintf(what, sizeof what, "DAGY_WORK_DIR %s", r->cfg->work_dir);
    int rc = proto_mkdirs(r->cfg->work_dir, 0700);
    if (rc) {
        snprintf(err, AGENT_ERR_MAX, "cannot create DAGY_WORK_DIR %s: %s%s", r->cfg->work_dir,
                 strerror(-rc), agent__unwritable_hint(-rc, what, hint, sizeof hint));
        return rc;
    }
    char enc[PROTO_NAME_ENCODED_MAX]; /* ".r" is a directory like any other: %2Er */
    proto_name_encode(r->cfg->run_id, enc, sizeof enc);
    r->run_dir = path_join(r->cfg->work_dir, enc);
    unpack_rmtree(r->run_dir);
    if (mkdir(r->run_dir, 0700)) {
        rc = -errno;
        snprintf(err, AGENT_ERR_MAX, "cannot create %s: %s%s", r->run_dir, strerror(-rc),
                 agent__unwritable_hint(-rc, what, hint, sizeof hint));
        return rc;
    }
    agent__hold_run_dir(r); /* DAGY_KEEP_RUNS pruning by other agents skips it */
    if (!r->cfg->dep_uris || !r->cfg->dep_uris[0])
        return 0; /* no package: no deps/ (a file system object less for every local run) */
    char *deps = path_join(r->run_dir, "deps");
    rc = mkdir(deps, 0700) ? -errno : 0;
    free(deps);
    return rc;
}

void agent__prepare(run_state *r)
{
    agent_config *c = r->cfg;
    char err[AGENT_ERR_MAX];
    if (make_run_dir(r, err)) {
        agent_log(LOG_ERROR, "prepare_failed", "%s", err);
        agent__finish(r, AGENT_EXIT_INFRA, err);
        return;
    }
    size_t n_deps = 0;
    while (c->dep_uris && c->dep_uris[n_deps])
        n_deps++;
    prep *p = calloc(1, sizeof *p);
    p->r = r;
    r->prep = p;
    p->n_jobs = n_deps + 1;
    p->jobs = calloc(p->n_jobs, sizeof *p->jobs);
    p->outstanding = 1; /* held until every job has been started */
    for (size_t i = 0; i < p->n_jobs; i++) {
        prep_job *j = &p->jobs[i];
        char name[64];
        j->p = p;
        j->is_flow = i == 0;
        j->uri = i == 0 ? c->flow : c->dep_uris[i - 1];
        snprintf(name, sizeof name, i == 0 ? "artifact" : "deps/%zu.archive", i);
        j->archive = path_join(r->run_dir, name);
        snprintf(name, sizeof name, i == 0 ? "flow" : "deps/%zu", i);
        j->dest = path_join(r->run_dir, name);
    }
    for (size_t i = 0; i < p->n_jobs; i++)
        start_job(p, &p->jobs[i]);
    start_metadata(p);
    p->outstanding--;
    settle(p);
}

void agent__prepare_cancel(run_state *r)
{
    prep *p = r->prep;
    if (!p)
        return;
    for (size_t i = 0; i < p->n_jobs; i++)
        atomic_store(&p->jobs[i].cancel, true);
    if (p->pip)
        sbx_terminate(p->pip, 0);
}

void agent__prepare_teardown(run_state *r)
{
    /* Every handle is closing; only work on the thread pool can keep the loop alive: an unpack
     * (or a download's checksum) writes into memory of this run until its after-callback.
     * Both stop at their next block once cancelled, so this wait is short. */
    for (size_t i = 0; r->prep && i < r->prep->n_jobs; i++)
        atomic_store(&r->prep->jobs[i].cancel, true);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    /* What is left waits for callbacks that teardown has cancelled silently (pip, forgotten by
     * sbx_close): nothing can reach it any more. */
    if (r->prep)
        prep_free(r->prep);
}
