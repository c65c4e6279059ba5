/* test_unpack_grow.c - the whole corpus of test_unpack.c (normal and hostile archives) run
 * through unpack_archive_growing the way an S3 download feeds it: the archive file is emptied
 * and rewritten by another thread, its second half first (unpack_source_tail, as the early
 * tail of a zip), then its prefix in small pieces, then done. Every refusal, message and
 * removal must be the same as from the whole file. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/unpack.h"

/* The downloader's state: the archive's bytes, kept in memory while the file is rewritten. */
typedef struct {
    const char *path;
    unsigned char *data;
    size_t size;
    unpack_source *src;
} grow_writer;

/* pwrite of data[from, to) into the file, whole. */
static void grow_put(int fd, const grow_writer *w, size_t from, size_t to)
{
    while (from < to) {
        ssize_t n = pwrite(fd, w->data + from, to - from, (off_t)from);
        if (n <= 0)
            abort();
        from += (size_t)n;
    }
}

/* Writes the tail (the second half) first, then the prefix in 4 KiB pieces, then done. */
static void *grow_write(void *arg)
{
    grow_writer *w = arg;
    int fd = open(w->path, O_WRONLY | O_TRUNC);
    if (fd < 0)
        abort();
    size_t from = w->size / 2;
    unpack_source_update(w->src, 0, w->size, false, 0);
    if (from > 0) {
        grow_put(fd, w, from, w->size);
        unpack_source_tail(w->src, from, w->size);
    }
    for (size_t off = 0; off < from;) {
        size_t next = from - off < 4096 ? from : off + 4096;
        grow_put(fd, w, off, next);
        off = next;
        unpack_source_update(w->src, off, w->size, false, 0);
        sched_yield();
    }
    close(fd);
    unpack_source_update(w->src, w->size, w->size, true, 0);
    return NULL;
}

/* unpack_archive's signature, through a growing source fed by grow_write. */
static int unpack_growing_tail_first(const char *archive, const char *dest,
                                     const unpack_limits *lim, unpack_stats *st, char *err)
{
    grow_writer w = {.path = archive};
    struct stat sb;
    FILE *fp = fopen(archive, "rb");
    if (!fp || fstat(fileno(fp), &sb) || !(w.data = malloc((size_t)sb.st_size + 1)) ||
        fread(w.data, 1, (size_t)sb.st_size, fp) != (size_t)sb.st_size)
        abort();
    fclose(fp);
    w.size = (size_t)sb.st_size;
    unpack_source src;
    if (unpack_source_init(&src))
        abort();
    w.src = &src;
    pthread_t t;
    if (pthread_create(&t, NULL, grow_write, &w))
        abort();
    int rc = unpack_archive_growing(archive, dest, lim, NULL, &src, st, err);
    pthread_join(t, NULL);
    unpack_source_destroy(&src);
    free(w.data);
    return rc;
}

#define UNPACK_UNDER_TEST unpack_growing_tail_first
#include "test_unpack.c"
