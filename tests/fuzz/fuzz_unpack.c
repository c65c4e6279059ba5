/* fuzz_unpack.c - libFuzzer harness for unpack_archive: each input is written to a file and
 * unpacked into scratch/a/b/out, then again through unpack_archive_growing (as a download whose
 * early tail, the second half, has met its prefix). Findings: a crash or sanitizer report, a
 * refusal without a message or that leaves anything behind, and anything that lands outside
 * `out` (the levels a/ and b/ catch `..` escapes that land beside it), a device, FIFO,
 * socket or set-id file inside it, a symlink whose target leaves it, and a zip ("PK" first)
 * for which the two paths disagree (result or code digest). */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/unpack.h"

static char scratch[64]; /* one directory per fuzzing process */
static char dest[160];

/* Removes the scratch tree when libFuzzer exits (it calls exit() at -max_total_time). */
static void remove_scratch(void)
{
    if (scratch[0])
        unpack_rmtree(scratch);
}

/* Creates the per-process scratch tree once. */
static void ensure_scratch(void)
{
    char p[128];
    if (scratch[0])
        return;
    atexit(remove_scratch);
    snprintf(scratch, sizeof scratch, "/tmp/fuzz-unpack-XXXXXX");
    if (!mkdtemp(scratch))
        abort();
    snprintf(p, sizeof p, "%s/a", scratch);
    if (mkdir(p, 0700))
        abort();
    snprintf(p, sizeof p, "%s/a/b", scratch);
    if (mkdir(p, 0700))
        abort();
    snprintf(dest, sizeof dest, "%s/a/b/out", scratch);
}

/* Aborts unless directory `dir` holds exactly the entry `only` (or nothing when only is NULL). */
static void expect_only(const char *dir, const char *a, const char *b)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d)
        abort();
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if ((a && !strcmp(e->d_name, a)) || (b && !strcmp(e->d_name, b)))
            continue;
        fprintf(stderr, "fuzz_unpack: %s/%s is outside the destination\n", dir, e->d_name);
        abort();
    }
    closedir(d);
}

/* Lexically resolves `target` relative to directory `base` (both without a trailing slash) and
 * returns whether the result stays within dest. */
static int link_inside(const char *base, const char *target)
{
    char path[8192];
    if (target[0] == '/')
        return 0;
    if (snprintf(path, sizeof path, "%s/%s", base, target) >= (int)sizeof path)
        return 0;
    /* Normalise: a stack of component starts. */
    char out[8192];
    size_t len = 0;
    for (char *save = NULL, *c = strtok_r(path, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (!strcmp(c, "."))
            continue;
        if (!strcmp(c, "..")) {
            while (len > 0 && out[len - 1] != '/')
                len--;
            if (len > 0)
                len--;
            continue;
        }
        out[len++] = '/';
        size_t n = strlen(c);
        memcpy(out + len, c, n);
        len += n;
    }
    out[len] = '\0';
    size_t dl = strlen(dest);
    return strncmp(out, dest, dl) == 0 && (out[dl] == '\0' || out[dl] == '/');
}

/* Walks the extracted tree: regular files, directories and inward symlinks only, no set-id. */
static void check_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d)
        abort();
    while ((e = readdir(d))) {
        char p[8192], target[8192];
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (lstat(p, &st))
            abort();
        if (st.st_mode & (S_ISUID | S_ISGID | S_ISVTX))
            abort();
        if (S_ISDIR(st.st_mode)) {
            check_tree(p);
        } else if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlink(p, target, sizeof target - 1);
            if (n < 0)
                abort();
            target[n] = '\0';
            if (!link_inside(dir, target)) {
                fprintf(stderr, "fuzz_unpack: symlink %s -> %s leaves the destination\n", p,
                        target);
                abort();
            }
        } else if (!S_ISREG(st.st_mode)) {
            abort(); /* device, FIFO or socket */
        }
    }
    closedir(d);
}

/* Unpacks through one of the two paths and checks what it left; returns its rc. */
static int unpack_once(const char *archive, size_t size, bool growing, unpack_stats *st)
{
    char a[128], b[128], err[UNPACK_ERR_MAX];
    snprintf(a, sizeof a, "%s/a", scratch);
    snprintf(b, sizeof b, "%s/a/b", scratch);
    unpack_limits lim = {.max_total_bytes = 64u << 20, .max_entries = 1000, .max_ratio = 200};
    err[0] = '\0';
    int rc;
    if (growing) {
        unpack_source src;
        if (unpack_source_init(&src))
            abort();
        unpack_source_update(&src, size / 2, size, false, 0);
        unpack_source_tail(&src, size / 2, size);
        if (size < 2) /* no tail: a file too short for one */
            unpack_source_update(&src, size, size, true, 0);
        rc = unpack_archive_growing(archive, dest, &lim, NULL, &src, st, err);
        unpack_source_destroy(&src);
    } else {
        rc = unpack_archive(archive, dest, &lim, st, err);
    }
    /* A refusal must say why and leave nothing. */
    if (rc && (!err[0] || access(dest, F_OK) == 0))
        abort();
    expect_only(scratch, "input", "a");
    expect_only(a, "b", NULL);
    expect_only(b, "out", NULL);
    if (!rc) {
        check_tree(dest);
        if (unpack_rmtree(dest))
            abort();
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char archive[128];
    ensure_scratch();
    snprintf(archive, sizeof archive, "%s/input", scratch);
    FILE *fp = fopen(archive, "wb");
    if (!fp || fwrite(data, 1, size, fp) != size || fclose(fp))
        abort();
    unpack_stats whole, grown;
    int rc = unpack_once(archive, size, false, &whole);
    int rc2 = unpack_once(archive, size, true, &grown);
    bool zip = size >= 2 && data[0] == 'P' && data[1] == 'K';
    if (zip && (rc != rc2 || strcmp(whole.code_digest, grown.code_digest)))
        abort();
    if (unlink(archive))
        abort();
    return 0;
}
