/* test_unpack_stream.c - unpack_archive_growing: a tar.gz extracted while another thread is
 * still writing it (the download), a zip extracted from its tail (written first, as the S3
 * download fetches it) while its prefix arrives, a failure of the writer mid-stream (the
 * destination removed, the writer's error returned), cancellation while waiting for bytes, and
 * a zip without an early tail that waits for its prefix to reach the central directory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetch/unpack.h"

typedef struct {
    char dir[PATH_MAX];
    char archive[PATH_MAX + 16];
    char whole[PATH_MAX + 16]; /* the complete archive the writer copies from */
    char out[PATH_MAX + 16];
    char err[UNPACK_ERR_MAX];
    unpack_limits lim;
    unpack_source src;
    atomic_bool cancel;
    size_t stop_at; /* the writer stops (and fails, when fail) after this many bytes */
    int fail;
    bool saw_partial; /* the destination had entries before the writer was done */
    size_t tail;      /* the writer writes the last `tail` bytes first (unpack_source_tail) */
    size_t first_at;  /* bytes of the prefix written when first.txt was first seen */
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/unpack-stream-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->archive, sizeof f->archive, "%s/archive.bin", f->dir);
    snprintf(f->whole, sizeof f->whole, "%s/whole.bin", f->dir);
    snprintf(f->out, sizeof f->out, "%s/out", f->dir);
    f->lim = (unpack_limits){8ULL << 30, 100000, 200};
    assert_int_equal(unpack_source_init(&f->src), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    unpack_source_destroy(&f->src);
    int rc = unpack_rmtree(f->dir);
    free(f);
    return rc;
}

/* Writes a `fmt` archive ("tar.gz" or "zip") of a small first file and a 3 MiB random one. */
static size_t write_whole(fx *f, const char *fmt)
{
    struct archive *a = archive_write_new();
    if (!strcmp(fmt, "zip")) {
        archive_write_set_format_zip(a);
    } else {
        archive_write_set_format_pax_restricted(a);
        archive_write_add_filter_gzip(a);
    }
    assert_int_equal(archive_write_open_filename(a, f->whole), ARCHIVE_OK);
    static unsigned char blob[3 << 20];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (unsigned char)(rand() >> 7);
    const char *names[] = {"first.txt", "blob.bin"};
    const void *data[] = {"first\n", blob};
    size_t sizes[] = {6, sizeof blob};
    for (int i = 0; i < 2; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)sizes[i]);
        assert_true(archive_write_header(a, e) >= ARCHIVE_WARN);
        assert_int_equal(archive_write_data(a, data[i], sizes[i]), (la_ssize_t)sizes[i]);
        archive_entry_free(e);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    struct stat st;
    assert_int_equal(stat(f->whole, &st), 0);
    return (size_t)st.st_size;
}

static void nap_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* The downloader: copies `whole` into `archive` 64 KiB at a time, raising avail, until
 * stop_at; then done, or the failure. Notes whether first.txt was out before the end. */
static void *writer(void *arg)
{
    fx *f = arg;
    int in = open(f->whole, O_RDONLY), out = open(f->archive, O_WRONLY);
    struct stat st;
    fstat(in, &st);
    static char buf[65536];
    size_t off = 0, size = (size_t)st.st_size, stop = f->stop_at ? f->stop_at : size;
    char first[PATH_MAX * 2];
    snprintf(first, sizeof first, "%s/first.txt", f->out);
    f->first_at = SIZE_MAX;
    if (f->tail) { /* the end first, then the prefix up to it */
        size_t from = size - f->tail;
        for (size_t o = from; o < size;) {
            ssize_t n = pread(in, buf, sizeof buf, (off_t)o);
            assert_true(n > 0 && pwrite(out, buf, (size_t)n, (off_t)o) == n);
            o += (size_t)n;
        }
        unpack_source_tail(&f->src, from, size);
        stop = stop < from ? stop : from;
    }
    while (off < stop) {
        if (f->first_at == SIZE_MAX && access(first, F_OK) == 0)
            f->first_at = off;
        size_t want = stop - off < sizeof buf ? stop - off : sizeof buf;
        ssize_t n = pread(in, buf, want, (off_t)off);
        assert_true(n > 0 && pwrite(out, buf, (size_t)n, (off_t)off) == n);
        off += (size_t)n;
        unpack_source_update(&f->src, off, size, false, 0);
        nap_ms(2);
    }
    if (f->tail && off == size - f->tail) { /* the prefix meets the tail: all there */
        off = size;
        unpack_source_update(&f->src, off, size, false, 0);
    }
    for (int i = 0; i < 200 && access(first, F_OK); i++)
        nap_ms(5);
    f->saw_partial = access(first, F_OK) == 0;
    if (!f->fail && off == size)
        unpack_source_update(&f->src, off, size, true, 0);
    else if (f->fail)
        unpack_source_update(&f->src, off, size, false, f->fail);
    close(in);
    close(out);
    return NULL;
}

/* Runs unpack_archive_growing against the writer thread; returns its rc. */
static int run(fx *f)
{
    int fd = open(f->archive, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    close(fd);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer, f), 0);
    int rc = unpack_archive_growing(f->archive, f->out, &f->lim, &f->cancel, &f->src, NULL, f->err);
    pthread_join(t, NULL);
    return rc;
}

/* A tar.gz is extracted while it arrives: its first entry is out before the last byte. */
static void targz_is_unpacked_while_it_arrives(void **state)
{
    fx *f = *state;
    write_whole(f, "tar.gz");
    int rc = run(f);
    if (rc)
        fail_msg("rc %d: %s", rc, f->err);
    assert_true(f->saw_partial);
    struct stat st;
    char blob[PATH_MAX * 2];
    snprintf(blob, sizeof blob, "%s/blob.bin", f->out);
    assert_int_equal(stat(blob, &st), 0);
    assert_int_equal(st.st_size, 3 << 20);
}

/* The download fails half way (a checksum mismatch, say): the partial destination is removed
 * and the writer's error is returned. */
static void failure_mid_stream_removes_the_destination(void **state)
{
    fx *f = *state;
    f->stop_at = write_whole(f, "tar.gz") / 2;
    f->fail = -EBADMSG;
    int rc = run(f);
    assert_int_equal(rc, -EBADMSG);
    assert_true(f->saw_partial);                /* something had been extracted ... */
    assert_int_equal(access(f->out, F_OK), -1); /* ... and is gone */
    assert_non_null(strstr(f->err, "download"));
}

static void *canceller(void *arg)
{
    fx *f = arg;
    nap_ms(300);
    atomic_store(&f->cancel, true);
    return NULL;
}

/* Cancelled while waiting for bytes that never come (a third of the archive is there): stops
 * with -ECANCELED within a wake-up (0.1 s), the partial destination removed. */
static void cancel_while_waiting_for_bytes(void **state)
{
    fx *f = *state;
    size_t size = write_whole(f, "tar.gz");
    char cmd[PATH_MAX * 3];
    snprintf(cmd, sizeof cmd, "head -c %zu %s > %s", size / 3, f->whole, f->archive);
    assert_int_equal(system(cmd), 0);
    unpack_source_update(&f->src, size / 3, size, false, 0);
    pthread_t c;
    assert_int_equal(pthread_create(&c, NULL, canceller, f), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = unpack_archive_growing(f->archive, f->out, &f->lim, &f->cancel, &f->src, NULL, f->err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_join(c, NULL);
    assert_int_equal(rc, -ECANCELED);
    assert_int_equal(access(f->out, F_OK), -1);
    assert_true(t1.tv_sec - t0.tv_sec < 3);
}

/* A zip written in order, without an early tail: its central directory is at the end, so the
 * entries come out only once the prefix reaches it. */
static void zip_without_a_tail_waits_for_its_central_directory(void **state)
{
    fx *f = *state;
    write_whole(f, "zip");
    int rc = run(f);
    if (rc)
        fail_msg("rc %d: %s", rc, f->err);
    assert_int_equal(f->first_at, SIZE_MAX); /* not out while the prefix was growing */
    char first[PATH_MAX * 2];
    snprintf(first, sizeof first, "%s/first.txt", f->out);
    assert_int_equal(access(first, F_OK), 0);
}

/* A zip whose tail (end record and central directory) is written first: the first entry is on
 * disk while most of the prefix is still unwritten, and the whole archive comes out right. */
static void zip_is_unpacked_from_its_tail_while_the_prefix_arrives(void **state)
{
    fx *f = *state;
    size_t size = write_whole(f, "zip");
    f->tail = 128 << 10;
    int rc = run(f);
    if (rc)
        fail_msg("rc %d: %s", rc, f->err);
    print_message("first.txt out with %zu of %zu bytes of the prefix written\n", f->first_at,
                  size - f->tail);
    assert_true(f->first_at < (size - f->tail) / 2);
    struct stat st;
    char blob[PATH_MAX * 2];
    snprintf(blob, sizeof blob, "%s/blob.bin", f->out);
    assert_int_equal(stat(blob, &st), 0);
    assert_int_equal(st.st_size, 3 << 20);
}

/* The download of a zip fails after its tail and half its prefix: what was extracted is
 * removed and the writer's error returned. */
static void zip_failure_mid_stream_removes_the_destination(void **state)
{
    fx *f = *state;
    size_t size = write_whole(f, "zip");
    f->tail = 128 << 10;
    f->stop_at = size / 2;
    f->fail = -EIO;
    int rc = run(f);
    assert_int_equal(rc, -EIO);
    assert_true(f->first_at < size / 2 || f->saw_partial); /* something had been extracted */
    assert_int_equal(access(f->out, F_OK), -1);            /* ... and is gone */
    assert_non_null(strstr(f->err, "download"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(targz_is_unpacked_while_it_arrives, setup, teardown),
        cmocka_unit_test_setup_teardown(failure_mid_stream_removes_the_destination, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cancel_while_waiting_for_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(zip_without_a_tail_waits_for_its_central_directory, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(zip_is_unpacked_from_its_tail_while_the_prefix_arrives,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(zip_failure_mid_stream_removes_the_destination, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
