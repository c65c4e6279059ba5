/* lazy.c - dagy-agent-core's side of its AWS module: the functions of fetch/module/table.h,
 * defined here so that the core links neither libcurl nor libarchive, each loading
 * dagy-agent-aws.so (beside the executable, found through /proc/self/exe) on its first call and
 * then calling the module's own. A local run that unpacks nothing never loads it.
 *
 * Thread-safe (the unpackers run in libuv's worker threads): the module is loaded once, under
 * pthread_once, and never unloaded. A module that is missing, unreadable, or from another build
 * is an installation fault: the first call fails with -ELIBACC and a message naming the path
 * and the reason, and so does every later one. */
#include "fetch/module/table.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LOAD_ERR_MAX 400

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const dagy_fetch_module *mod;
static char load_err[LOAD_ERR_MAX];

/* The module's path: the executable's directory + DAGY_FETCH_MODULE_NAME; false if the
 * executable cannot be found (no /proc) or the path does not fit. */
static bool module_path(char *out, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0)
        return false;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash || (size_t)(slash + 1 - out) + sizeof DAGY_FETCH_MODULE_NAME > cap)
        return false;
    memcpy(slash + 1, DAGY_FETCH_MODULE_NAME, sizeof DAGY_FETCH_MODULE_NAME);
    return true;
}

/* Loads the module and checks that it is this build's (pthread_once routine). */
static void load(void)
{
    char path[PATH_MAX];
    if (!module_path(path, sizeof path)) {
        snprintf(load_err, sizeof load_err,
                 "cannot find the AWS module " DAGY_FETCH_MODULE_NAME
                 " (/proc/self/exe unreadable: %s)",
                 strerror(errno));
        return;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    const dagy_fetch_module *t = h ? dlsym(h, DAGY_FETCH_TABLE_SYMBOL) : NULL;
    if (!t) {
        const char *why = dlerror();
        snprintf(load_err, sizeof load_err, "cannot load the AWS module %.200s: %.160s", path,
                 why ? why : "no " DAGY_FETCH_TABLE_SYMBOL);
    } else if (t->version != DAGY_FETCH_TABLE_VERSION || t->size != sizeof *t || !t->build ||
               strcmp(t->build, DAGY_VERSION) != 0) {
        snprintf(load_err, sizeof load_err,
                 "the AWS module %.200s is from another build (interface %d, version %.32s; this "
                 "agent has interface %d, version %s): install both from one build",
                 path, t->version,
                 t->version == DAGY_FETCH_TABLE_VERSION && t->build ? t->build : "?",
                 DAGY_FETCH_TABLE_VERSION, DAGY_VERSION);
    } else {
        mod = t;
    }
}

/* The module's table, loading it on the first call; NULL (with err filled, if given, in
 * cap bytes) if it cannot be loaded. */
static const dagy_fetch_module *module(char *err, size_t cap)
{
    pthread_once(&load_once, load);
    if (!mod && err)
        snprintf(err, cap, "%s", load_err);
    return mod;
}

int fetch_aws_new(uv_loop_t *loop, fetch_aws **out, char *err)
{
    const dagy_fetch_module *m = module(err, FETCH_ERR_MAX);
    *out = NULL;
    return m ? m->aws_new(loop, out, err) : -ELIBACC;
}

/* The rest take a fetch_aws, which only the loaded module makes: mod is set. */
void fetch_aws_free(fetch_aws *a)
{
    if (a)
        mod->aws_free(a);
}

int fetch_aws_json(fetch_aws *a, const char *service, const char *target, const char *body,
                   const fetch_retry *retry, fetch_aws_cb cb, void *ud)
{
    fetch_json_opts o = {.retry = retry};
    return mod->aws_json_opts(a, service, target, body, &o, cb, ud);
}

int fetch_aws_json_opts(fetch_aws *a, const char *service, const char *target, const char *body,
                        const fetch_json_opts *opts, fetch_aws_cb cb, void *ud)
{
    return mod->aws_json_opts(a, service, target, body, opts, cb, ud);
}

int fetch_s3_get_file(fetch_aws *a, const char *uri, const char *path, fetch_progress_cb progress,
                      fetch_aws_cb cb, void *ud)
{
    return mod->s3_get_file(a, uri, path, progress, cb, ud);
}

int fetch_s3_get_file_streaming(fetch_aws *a, const char *uri, const char *path,
                                fetch_progress_cb progress, fetch_progress_cb prefix,
                                fetch_aws_cb cb, void *ud)
{
    return mod->s3_get_file_streaming(a, uri, path, progress, prefix, cb, ud);
}

int fetch_s3_put(fetch_aws *a, const char *bucket, const char *key, const void *data, size_t len,
                 const char *content_type, fetch_aws_cb cb, void *ud)
{
    return mod->s3_put(a, bucket, key, data, len, content_type, cb, ud);
}

int fetch_s3_put_fd(fetch_aws *a, const char *bucket, const char *key, int fd, uint64_t len,
                    const char *sha256_hex, const char *content_type, fetch_aws_cb cb, void *ud)
{
    return mod->s3_put_fd(a, bucket, key, fd, len, sha256_hex, content_type, cb, ud);
}

int fetch_http_get(fetch_aws *a, const char *url, fetch_aws_cb cb, void *ud)
{
    return mod->http_get(a, url, cb, ud);
}

int unpack_archive_cancellable(const char *archive_path, const char *dest_dir,
                               const unpack_limits *lim, const atomic_bool *cancel,
                               unpack_stats *stats, char *err)
{
    const dagy_fetch_module *m = module(err, UNPACK_ERR_MAX);
    return m ? m->unpack_cancellable(archive_path, dest_dir, lim, cancel, stats, err) : -ELIBACC;
}

int unpack_archive(const char *archive_path, const char *dest_dir, const unpack_limits *lim,
                   unpack_stats *stats, char *err)
{
    return unpack_archive_cancellable(archive_path, dest_dir, lim, NULL, stats, err);
}

int unpack_archive_growing(const char *archive_path, const char *dest_dir, const unpack_limits *lim,
                           const atomic_bool *cancel, unpack_source *src, unpack_stats *stats,
                           char *err)
{
    const dagy_fetch_module *m = module(err, UNPACK_ERR_MAX);
    return m ? m->unpack_growing(archive_path, dest_dir, lim, cancel, src, stats, err) : -ELIBACC;
}
