/* unpack_util.c - the parts of fetch/unpack.h that need no libarchive: the limits from the
 * environment, removing a tree, the free-space note of disk-full messages, and the growing
 * source a download feeds. The agent links these itself; extraction proper (unpack.c) lives in
 * its AWS module, loaded on first need (fetch/module/lazy.c). */
#include "fetch/unpack.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define DEFAULT_MAX_BYTES   (8ULL << 30)
#define DEFAULT_MAX_ENTRIES 100000ULL
#define DEFAULT_MAX_RATIO   200.0

/* Parses an unsigned decimal environment variable strictly (digits only, > 0, no overflow).
 * Unset or empty keeps *out. */
static int env_u64(const char *var, uint64_t *out, char *err)
{
    const char *v = getenv(var);
    if (!v || !*v)
        return 0;
    uint64_t x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9' || x > (UINT64_MAX - 9) / 10)
            goto bad;
        x = x * 10 + (uint64_t)(*p - '0');
    }
    if (x == 0)
        goto bad;
    *out = x;
    return 0;
bad:
    if (err)
        snprintf(err, UNPACK_ERR_MAX, "%s must be a positive whole number, got \"%.64s\"", var, v);
    return -EINVAL;
}

/* Parses a positive finite decimal number from the environment; unset or empty keeps *out. */
static int env_ratio(const char *var, double *out, char *err)
{
    const char *v = getenv(var);
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !isfinite(x) || x <= 0 || (v[0] < '0' || v[0] > '9')) {
        if (err)
            snprintf(err, UNPACK_ERR_MAX, "%s must be a positive number, got \"%.64s\"", var, v);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int unpack_limits_from_env(unpack_limits *out, char *err)
{
    unpack_limits l = {DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_RATIO};
    int rc = env_u64("DAGY_UNPACK_MAX_BYTES", &l.max_total_bytes, err);
    if (!rc)
        rc = env_u64("DAGY_UNPACK_MAX_ENTRIES", &l.max_entries, err);
    if (!rc)
        rc = env_ratio("DAGY_UNPACK_MAX_RATIO", &l.max_ratio, err);
    if (!rc)
        *out = l;
    return rc;
}

/* nftw visits one thread's tree at a time; its callback state is per thread because the agent
 * unpacks several packages in worker threads at once. */
static _Thread_local int rm_errno;
static _Thread_local bool rm_retry;

/* Makes the directory that holds path writable and searchable by us (a task may have chmodded
 * it), so its entries can be removed. */
static void rm_fix_parent(const char *path, int base)
{
    char dir[PATH_MAX];
    if (base <= 0 || base >= (int)sizeof dir)
        return;
    memcpy(dir, path, (size_t)base);
    dir[base] = '\0';
    struct stat st;
    if (!lstat(dir, &st) && S_ISDIR(st.st_mode))
        chmod(dir, (st.st_mode & 07777) | 0700);
}

/* nftw callback: unlinks files and symlinks, removes directories after their contents. */
static int rm_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    int rc;
    if (type == FTW_DNR) {
        /* Unreadable directory: make it ours and ask for another pass. */
        if (!chmod(path, (st->st_mode & 07777) | 0700))
            rm_retry = true;
        else if (!rm_errno)
            rm_errno = errno;
        return 0;
    }
    rc = type == FTW_DP ? rmdir(path) : unlink(path);
    if (rc && errno == EACCES) {
        rm_fix_parent(path, ftw->base);
        rc = type == FTW_DP ? rmdir(path) : unlink(path);
    }
    if (rc && errno != ENOENT && !rm_errno)
        rm_errno = errno;
    return 0;
}

int unpack_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st))
        return -errno;
    /* Each pass can open up one more level of unreadable directories; a pass that fixed none
     * is the last. FTW_PHYS: never follow a symlink, remove it. */
    for (int pass = 0; pass < 64; pass++) {
        rm_errno = 0;
        rm_retry = false;
        if (nftw(path, rm_visit, 16, FTW_PHYS | FTW_DEPTH | FTW_MOUNT) && !rm_errno)
            rm_errno = errno;
        if (!rm_retry)
            break;
    }
    if (rm_errno)
        return -rm_errno;
    return lstat(path, &st) ? 0 : -ENOTEMPTY;
}

/* "12.0 KiB" for a byte count. */
static void human_bytes(uint64_t n, char *out, size_t cap)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        snprintf(out, cap, "%" PRIu64 " bytes", n);
        return;
    }
    double v = (double)n / 1024;
    size_t i = 0;
    for (; v >= 1024 && i + 1 < sizeof units / sizeof units[0]; i++)
        v /= 1024;
    snprintf(out, cap, "%.1f %s", v, units[i]);
}

void unpack_free_space_note(const char *path, char *out, size_t cap)
{
    struct statvfs sv;
    char amount[32];
    out[0] = '\0';
    if (statvfs(path, &sv) != 0)
        return;
    human_bytes((uint64_t)sv.f_bavail * sv.f_frsize, amount, sizeof amount);
    if (sv.f_files > 0 && sv.f_favail == 0) /* out of inodes, not of bytes */
        snprintf(out, cap, "; %s free but no inode left on that file system", amount);
    else
        snprintf(out, cap, "; %s free on that file system", amount);
}

/* ---- growing archives ---- */

int unpack_source_init(unpack_source *src)
{
    memset(src, 0, sizeof *src);
    if (pthread_mutex_init(&src->mu, NULL))
        return -ENOMEM;
    if (pthread_cond_init(&src->cv, NULL)) {
        pthread_mutex_destroy(&src->mu);
        return -ENOMEM;
    }
    return 0;
}

void unpack_source_destroy(unpack_source *src)
{
    pthread_cond_destroy(&src->cv);
    pthread_mutex_destroy(&src->mu);
}

void unpack_source_update(unpack_source *src, uint64_t avail, uint64_t size, bool done, int failed)
{
    pthread_mutex_lock(&src->mu);
    if (avail > src->avail)
        src->avail = avail;
    if (size)
        src->size = size;
    src->done |= done;
    if (failed && !src->failed)
        src->failed = failed;
    pthread_cond_broadcast(&src->cv);
    pthread_mutex_unlock(&src->mu);
}

void unpack_source_tail(unpack_source *src, uint64_t from, uint64_t size)
{
    pthread_mutex_lock(&src->mu);
    if (from > 0 && from < size && (!src->size || src->size == size)) {
        src->size = size;
        src->tail_from = from;
    }
    pthread_cond_broadcast(&src->cv);
    pthread_mutex_unlock(&src->mu);
}
