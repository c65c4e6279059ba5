/* lazy.c - dagy-agent-core's side of its two modules: the functions of fetch/module/table.h,
 * defined here so that the core links neither libcurl nor libarchive, each loading its module
 * (dagy-agent-aws.so or dagy-agent-unpack.so, beside the executable, found through
 * /proc/self/exe) on its first call and then calling the module's own. A local run that unpacks
 * nothing loads neither; a DynamoDB-status run that unpacks nothing, only the AWS module.
 *
 * Thread-safe (the unpackers run in libuv's worker threads): each module is loaded once, under
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

/* One module: what to load, and what loading it gave (table, or the reason in err). */
typedef struct {
    pthread_once_t once;
    const char *file;   /* DAGY_*_MODULE_NAME */
    const char *what;   /* "AWS", "unpack": for messages */
    const char *symbol; /* DAGY_*_TABLE_SYMBOL */
    int version;        /* DAGY_*_TABLE_VERSION */
    size_t size;        /* sizeof the table */
    const void *table;
    char err[LOAD_ERR_MAX];
} lazy_module;

static lazy_module aws_mod = {.once = PTHREAD_ONCE_INIT,
                              .file = DAGY_FETCH_MODULE_NAME,
                              .what = "AWS",
                              .symbol = DAGY_FETCH_TABLE_SYMBOL,
                              .version = DAGY_FETCH_TABLE_VERSION,
                              .size = sizeof(dagy_fetch_module)};
static lazy_module unpack_mod = {.once = PTHREAD_ONCE_INIT,
                                 .file = DAGY_UNPACK_MODULE_NAME,
                                 .what = "unpack",
                                 .symbol = DAGY_UNPACK_TABLE_SYMBOL,
                                 .version = DAGY_UNPACK_TABLE_VERSION,
                                 .size = sizeof(dagy_unpack_module)};

/* The module's path: the executable's directory + `file`; false if the executable cannot be
 * found (no /proc) or the path does not fit. */
static bool module_path(const char *file, char *out, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0)
        return false;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (!slash || (size_t)(slash + 1 - out) + strlen(file) + 1 > cap)
        return false;
    memcpy(slash + 1, file, strlen(file) + 1);
    return true;
}

/* Loads a module and checks that it is this build's. */
static void load(lazy_module *m)
{
    char path[PATH_MAX];
    if (!module_path(m->file, path, sizeof path)) {
        snprintf(m->err, sizeof m->err,
                 "cannot find the %s module %s (/proc/self/exe unreadable: %s)", m->what, m->file,
                 strerror(errno));
        return;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    const dagy_module_head *t = h ? dlsym(h, m->symbol) : NULL;
    if (!t) {
        const char *why = dlerror();
        snprintf(m->err, sizeof m->err, "cannot load the %s module %.200s: %.160s", m->what, path,
                 why ? why : m->symbol);
    } else if (t->version != m->version || t->size != m->size || !t->build ||
               strcmp(t->build, DAGY_VERSION) != 0) {
        snprintf(m->err, sizeof m->err,
                 "the %s module %.200s is from another build (interface %d, version %.32s; this "
                 "agent has interface %d, version %s): install the agent's files from one build",
                 m->what, path, t->version, t->version == m->version && t->build ? t->build : "?",
                 m->version, DAGY_VERSION);
    } else {
        m->table = t;
    }
}

/* pthread_once routines (they take no argument). */
static void load_aws(void)
{
    load(&aws_mod);
}

static void load_unpack(void)
{
    load(&unpack_mod);
}

/* The module's table, loading it on the first call; NULL (with err filled, if given, in
 * cap bytes) if it cannot be loaded. */
static const void *module(lazy_module *m, void (*once)(void), char *err, size_t cap)
{
    pthread_once(&m->once, once);
    if (!m->table && err)
        snprintf(err, cap, "%s", m->err);
    return m->table;
}

/* The AWS table, for functions that take a fetch_aws: only the loaded module makes one. */
static const dagy_fetch_module *aws(void)
{
    return aws_mod.table;
}

int fetch_aws_new(uv_loop_t *loop, fetch_aws **out, char *err)
{
    const dagy_fetch_module *m = module(&aws_mod, load_aws, err, FETCH_ERR_MAX);
    *out = NULL;
    return m ? m->aws_new(loop, out, err) : -ELIBACC;
}

void fetch_aws_free(fetch_aws *a)
{
    if (a)
        aws()->aws_free(a);
}

int fetch_aws_json(fetch_aws *a, const char *service, const char *target, const char *body,
                   const fetch_retry *retry, fetch_aws_cb cb, void *ud)
{
    fetch_json_opts o = {.retry = retry};
    return aws()->aws_json_opts(a, service, target, body, &o, cb, ud);
}

int fetch_aws_json_opts(fetch_aws *a, const char *service, const char *target, const char *body,
                        const fetch_json_opts *opts, fetch_aws_cb cb, void *ud)
{
    return aws()->aws_json_opts(a, service, target, body, opts, cb, ud);
}

int fetch_s3_get_file(fetch_aws *a, const char *uri, const char *path, fetch_progress_cb progress,
                      fetch_aws_cb cb, void *ud)
{
    return aws()->s3_get_file(a, uri, path, progress, cb, ud);
}

int fetch_s3_get_file_streaming(fetch_aws *a, const char *uri, const char *path,
                                fetch_progress_cb progress, fetch_progress_cb prefix,
                                fetch_progress_cb tail, fetch_aws_cb cb, void *ud)
{
    return aws()->s3_get_file_streaming(a, uri, path, progress, prefix, tail, cb, ud);
}

int fetch_s3_put(fetch_aws *a, const char *bucket, const char *key, const void *data, size_t len,
                 const char *content_type, fetch_aws_cb cb, void *ud)
{
    return aws()->s3_put(a, bucket, key, data, len, content_type, cb, ud);
}

int fetch_s3_put_fd(fetch_aws *a, const char *bucket, const char *key, int fd, uint64_t len,
                    const char *sha256_hex, const char *content_type, fetch_aws_cb cb, void *ud)
{
    return aws()->s3_put_fd(a, bucket, key, fd, len, sha256_hex, content_type, cb, ud);
}

int fetch_http_get(fetch_aws *a, const char *url, fetch_aws_cb cb, void *ud)
{
    return aws()->http_get(a, url, cb, ud);
}

int unpack_archive_cancellable(const char *archive_path, const char *dest_dir,
                               const unpack_limits *lim, const atomic_bool *cancel,
                               unpack_stats *stats, char *err)
{
    const dagy_unpack_module *m = module(&unpack_mod, load_unpack, err, UNPACK_ERR_MAX);
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
    const dagy_unpack_module *m = module(&unpack_mod, load_unpack, err, UNPACK_ERR_MAX);
    return m ? m->unpack_growing(archive_path, dest_dir, lim, cancel, src, stats, err) : -ELIBACC;
}
