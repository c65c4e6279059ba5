/* test_unpack_io.c - unpack_archive against its environment rather than its input: a stop asked
 * for by another thread, and a file system that fills up (a 1 MiB tmpfs mounted for the test
 * when the test may mount; skipped otherwise). Each must fail with the right code, say where and
 * why, and leave no partial destination behind. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/unpack.h"

typedef struct {
    char dir[PATH_MAX];
    char archive[PATH_MAX + 16];
    char out[PATH_MAX + 16];
    char err[UNPACK_ERR_MAX];
    unpack_limits lim;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/unpack-io-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->archive, sizeof f->archive, "%s/archive.tar", f->dir);
    snprintf(f->out, sizeof f->out, "%s/out", f->dir);
    f->lim = (unpack_limits){8ULL << 30, 100000, 1e6};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    int rc = unpack_rmtree(f->dir);
    free(f);
    return rc;
}

/* A tar of `n` files f0, f1, ... of `size` bytes each ('x'), preceded by flow_spec.json. */
static void write_tar(const char *path, int n, size_t size)
{
    struct archive *a = archive_write_new();
    static char block[65536];
    memset(block, 'x', sizeof block);
    assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (int i = -1; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        char name[32];
        size_t len = i < 0 ? 2 : size;
        snprintf(name, sizeof name, i < 0 ? "flow_spec.json" : "f%d", i);
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t)len);
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        for (size_t left = len; left;) {
            size_t k = left < sizeof block ? left : sizeof block;
            assert_int_equal(archive_write_data(a, i < 0 ? "{}" : block, k), (la_ssize_t)k);
            left -= k;
        }
        archive_entry_free(e);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

/* A stop already asked for: nothing is extracted, the destination does not stay. */
static void cancelled_unpack_removes_the_destination(void **state)
{
    fx *f = *state;
    atomic_bool cancel;
    atomic_init(&cancel, true);
    write_tar(f->archive, 3, 1000);
    int rc = unpack_archive_cancellable(f->archive, f->out, &f->lim, &cancel, NULL, f->err);
    assert_int_equal(rc, -ECANCELED);
    assert_non_null(strstr(f->err, "cancelled"));
    assert_int_equal(access(f->out, F_OK), -1);
    atomic_store(&cancel, false);
    assert_int_equal(unpack_archive_cancellable(f->archive, f->out, &f->lim, &cancel, NULL, f->err),
                     0);
    assert_int_equal(access(f->out, F_OK), 0);
}

/* Mounts a 1 MiB tmpfs at DIR/small and unpacks there; skips when this process may not mount
 * (not root, no CAP_SYS_ADMIN). The teardown unmounts it by path. */
static bool mount_small_with(fx *f, const char *opts)
{
    char small[PATH_MAX + 16];
    snprintf(small, sizeof small, "%s/small", f->dir);
    assert_int_equal(mkdir(small, 0700), 0);
    if (mount("tmpfs", small, "tmpfs", MS_NOSUID | MS_NODEV, opts)) {
        print_message("cannot mount a tmpfs (%s): skipped\n", strerror(errno));
        return false;
    }
    snprintf(f->out, sizeof f->out, "%s/small/out", f->dir);
    return true;
}

static bool mount_small(fx *f)
{
    return mount_small_with(f, "size=1m");
}

static int teardown_small(void **state)
{
    fx *f = *state;
    char small[PATH_MAX + 16];
    snprintf(small, sizeof small, "%s/small", f->dir);
    umount2(small, MNT_DETACH);
    return teardown(state);
}

/* A full disk is not a success with zero-filled files (libarchive reports a failed write as a
 * mere ARCHIVE_WARN): -ENOSPC, the message names the entry, its path and the free space, and
 * the partial destination is removed. */
static void full_disk_while_unpacking_is_enospc(void **state)
{
    fx *f = *state;
    if (!mount_small(f))
        skip();
    write_tar(f->archive, 1, 3u << 20);
    int rc = unpack_archive(f->archive, f->out, &f->lim, NULL, f->err);
    print_message("error: %s\n", f->err);
    assert_int_equal(rc, -ENOSPC);
    assert_non_null(strstr(f->err, "\"f0\""));
    assert_non_null(strstr(f->err, f->out));
    assert_non_null(strstr(f->err, "No space left on device"));
    assert_non_null(strstr(f->err, "free"));
    assert_int_equal(access(f->out, F_OK), -1);
}

/* Many small files fill the disk too (the failure may come at a header or a finish). */
static void full_disk_with_many_small_files_is_enospc(void **state)
{
    fx *f = *state;
    if (!mount_small(f))
        skip();
    write_tar(f->archive, 400, 6000);
    int rc = unpack_archive(f->archive, f->out, &f->lim, NULL, f->err);
    print_message("error: %s\n", f->err);
    assert_int_equal(rc, -ENOSPC);
    assert_non_null(strstr(f->err, "No space left on device"));
    assert_int_equal(access(f->out, F_OK), -1);
}

/* No inode left for the destination itself: -ENOSPC, the message says so and where. */
static void full_disk_at_the_destination_is_enospc(void **state)
{
    fx *f = *state;
    if (!mount_small_with(f, "size=1m,nr_inodes=1"))
        skip();
    write_tar(f->archive, 1, 10);
    int rc = unpack_archive(f->archive, f->out, &f->lim, NULL, f->err);
    print_message("error: %s\n", f->err);
    assert_int_equal(rc, -ENOSPC);
    assert_non_null(strstr(f->err, f->out));
    assert_non_null(strstr(f->err, "No space left on device"));
    assert_non_null(strstr(f->err, "free"));
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(cancelled_unpack_removes_the_destination),
        cmocka_unit_test_setup_teardown(full_disk_while_unpacking_is_enospc, setup, teardown_small),
        cmocka_unit_test_setup_teardown(full_disk_with_many_small_files_is_enospc, setup,
                                        teardown_small),
        cmocka_unit_test_setup_teardown(full_disk_at_the_destination_is_enospc, setup,
                                        teardown_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
