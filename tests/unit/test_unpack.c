/* test_unpack.c - unpack_archive against normal archives and a corpus of hostile ones, all
 * generated here (libarchive's writer, or raw bytes where that writer would refuse): each
 * hostile case must fail with -EINVAL, name the entry, remove the destination and write nothing
 * outside it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>

#include "fetch/unpack.h"
#include "proto/sha256.h"
#include "proto/taskhash.h"

/* The extraction the corpus runs through: test_unpack_grow.c runs it through
 * unpack_archive_growing instead (tail first, then the prefix). */
#ifndef UNPACK_UNDER_TEST
#define UNPACK_UNDER_TEST unpack_archive
#endif

/* One test's scratch directory: the archive, the destination and any sentinels live here. */
typedef struct {
    char dir[PATH_MAX];
    char archive[PATH_MAX + 16];
    char out[PATH_MAX + 16];
    char err[UNPACK_ERR_MAX];
    unpack_limits lim;
    unpack_stats st;
} fx;

/* An entry for the archive writers. data == NULL with size > 0 means `size` zero bytes. */
typedef struct {
    const char *name;
    unsigned type; /* AE_IFREG etc.; 0 means AE_IFREG */
    unsigned mode; /* permission bits; 0 means 0644 / 0755 */
    const char *data;
    size_t size;
    const char *link;     /* symlink target */
    const char *hardlink; /* hardlink target */
} ent;

#define N(a) (sizeof(a) / sizeof((a)[0]))

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/unpack-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!f->dir[0] || !mkdtemp(f->dir))
        return -1;
    snprintf(f->archive, sizeof f->archive, "%s/archive.bin", f->dir);
    snprintf(f->out, sizeof f->out, "%s/out", f->dir);
    f->lim = (unpack_limits){8ULL << 30, 100000, 200};
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

/* Writes `n` entries with libarchive: fmt "zip", "tar", "tar.gz" or "tar.bz2". */
static void write_la(const char *path, const char *fmt, const ent *e, size_t n)
{
    struct archive *a = archive_write_new();
    if (!strcmp(fmt, "zip"))
        assert_int_equal(archive_write_set_format_zip(a), ARCHIVE_OK);
    else
        assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    if (!strcmp(fmt, "tar.gz"))
        assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    if (!strcmp(fmt, "tar.bz2"))
        assert_int_equal(archive_write_add_filter_bzip2(a), ARCHIVE_OK);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    static char zeros[65536];
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *ae = archive_entry_new();
        unsigned type = e[i].type ? e[i].type : AE_IFREG;
        archive_entry_set_pathname(ae, e[i].name);
        archive_entry_set_filetype(ae, type);
        archive_entry_set_perm(ae, e[i].mode ? e[i].mode : type == AE_IFDIR ? 0755 : 0644);
        archive_entry_set_mtime(ae, 1700000000, 0);
        if (type == AE_IFCHR)
            archive_entry_set_rdev(ae, makedev(1, 3));
        if (e[i].link)
            archive_entry_set_symlink(ae, e[i].link);
        if (e[i].hardlink)
            archive_entry_set_hardlink(ae, e[i].hardlink);
        size_t size = e[i].data ? strlen(e[i].data) : e[i].size;
        archive_entry_set_size(ae, type == AE_IFREG && !e[i].hardlink ? (la_int64_t)size : 0);
        assert_true(archive_write_header(a, ae) >= ARCHIVE_WARN);
        if (e[i].data)
            assert_int_equal(archive_write_data(a, e[i].data, size), (la_ssize_t)size);
        for (size_t left = e[i].data ? 0 : size; left > 0;) {
            size_t k = left < sizeof zeros ? left : sizeof zeros;
            assert_int_equal(archive_write_data(a, zeros, k), (la_ssize_t)k);
            left -= k;
        }
        archive_entry_free(ae);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* One raw ustar header + data, for entries libarchive's writer would tidy up. */
static size_t raw_tar_entry(unsigned char *buf, const char *name, char type, unsigned mode,
                            const char *data, const char *linkname)
{
    size_t size = data ? strlen(data) : 0;
    memset(buf, 0, 512);
    memcpy(buf, name, strlen(name));
    snprintf((char *)buf + 100, 8, "%07o", mode);
    snprintf((char *)buf + 108, 8, "%07o", 0);
    snprintf((char *)buf + 116, 8, "%07o", 0);
    snprintf((char *)buf + 124, 12, "%011o", (unsigned)size);
    snprintf((char *)buf + 136, 12, "%011o", 1700000000);
    buf[156] = (unsigned char)type;
    if (linkname)
        memcpy(buf + 157, linkname, strlen(linkname));
    memcpy(buf + 257, "ustar", 6);
    memcpy(buf + 263, "00", 2);
    snprintf((char *)buf + 329, 8, "%07o", 1);
    snprintf((char *)buf + 337, 8, "%07o", 3);
    memset(buf + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += buf[i];
    snprintf((char *)buf + 148, 8, "%06o", sum);
    if (size)
        memcpy(buf + 512, data, size);
    return 512 + (size + 511) / 512 * 512;
}

/* Writes a raw tar of one hostile entry (optionally after a harmless one). */
static void write_raw_tar(const char *path, const char *name, char type, unsigned mode,
                          const char *data)
{
    static unsigned char buf[8192];
    memset(buf, 0, sizeof buf);
    size_t n = raw_tar_entry(buf, "ok.txt", '0', 0644, "fine\n", NULL);
    n += raw_tar_entry(buf + n, name, type, mode, data, NULL);
    write_file(path, buf, n + 1024);
}

static void put16(unsigned char *p, unsigned v)
{
    p[0] = v & 0xff;
    p[1] = (v >> 8) & 0xff;
}

static void put32(unsigned char *p, uint32_t v)
{
    put16(p, v & 0xffff);
    put16(p + 2, v >> 16);
}

/* Raw single-entry zip. method 0: `data` stored; method 8: `zeros` zero bytes deflated, with
 * `claimed` as the declared uncompressed size (a liar if it differs). */
static void write_raw_zip(const char *path, const char *name, const char *data, int method,
                          size_t zeros, uint32_t claimed)
{
    size_t cap = zeros / 500 + 65536, clen, nlen = strlen(name);
    unsigned char *comp = malloc(cap);
    uint32_t crc = crc32(0, NULL, 0);
    if (method == 0) {
        clen = strlen(data);
        memcpy(comp, data, clen);
        crc = crc32(crc, (const Bytef *)data, (uInt)clen);
        claimed = (uint32_t)clen;
    } else {
        static unsigned char z[65536];
        z_stream s = {0};
        assert_int_equal(deflateInit2(&s, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
        s.next_out = comp;
        s.avail_out = (uInt)cap;
        for (size_t left = zeros; left > 0;) {
            size_t k = left < sizeof z ? left : sizeof z;
            crc = crc32(crc, z, (uInt)k);
            s.next_in = z;
            s.avail_in = (uInt)k;
            assert_int_equal(deflate(&s, Z_NO_FLUSH), Z_OK);
            left -= k;
        }
        assert_int_equal(deflate(&s, Z_FINISH), Z_STREAM_END);
        clen = s.total_out;
        deflateEnd(&s);
    }
    FILE *fp = fopen(path, "wb");
    unsigned char lh[30] = {'P', 'K', 3, 4, 20}, cd[46] = {'P', 'K', 1, 2, 20, 3, 20};
    unsigned char eocd[22] = {'P', 'K', 5, 6};
    put16(lh + 8, (unsigned)method);
    put32(lh + 14, crc);
    put32(lh + 18, (uint32_t)clen);
    put32(lh + 22, claimed);
    put16(lh + 26, (unsigned)nlen);
    put16(cd + 10, (unsigned)method);
    put32(cd + 16, crc);
    put32(cd + 20, (uint32_t)clen);
    put32(cd + 24, claimed);
    put16(cd + 28, (unsigned)nlen);
    put32(cd + 38, 0100644u << 16);
    put16(eocd + 8, 1);
    put16(eocd + 10, 1);
    put32(eocd + 12, (uint32_t)(46 + nlen));
    put32(eocd + 16, (uint32_t)(30 + nlen + clen));
    fwrite(lh, 1, 30, fp);
    fwrite(name, 1, nlen, fp);
    fwrite(comp, 1, clen, fp);
    fwrite(cd, 1, 46, fp);
    fwrite(name, 1, nlen, fp);
    fwrite(eocd, 1, 22, fp);
    assert_int_equal(fclose(fp), 0);
    free(comp);
}

/* Asserts err mentions `needle`. */
static void assert_err_has(const fx *f, const char *needle)
{
    if (!strstr(f->err, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", f->err, needle);
}

/* Asserts the scratch directory holds exactly the names given (NULL-terminated): nothing was
 * written beside the destination, and the destination is gone if not listed. */
static void assert_dir_holds(const fx *f, ...)
{
    const char *want[16];
    int nwant = 0;
    va_list ap;
    va_start(ap, f);
    for (const char *s; (s = va_arg(ap, const char *));)
        want[nwant++] = s;
    va_end(ap);
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    int seen = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        int ok = 0;
        for (int i = 0; i < nwant; i++)
            ok |= !strcmp(de->d_name, want[i]);
        if (!ok)
            fail_msg("unexpected %s/%s", f->dir, de->d_name);
        seen++;
    }
    closedir(d);
    assert_int_equal(seen, nwant);
}

/* Runs unpack_archive expecting -EINVAL, the message fragments, and no trace left. */
static void expect_refused(fx *f, const char *frag1, const char *frag2)
{
    f->err[0] = '\0';
    int rc = UNPACK_UNDER_TEST(f->archive, f->out, &f->lim, &f->st, f->err);
    if (rc != -EINVAL)
        fail_msg("rc %d, err \"%s\"", rc, f->err);
    print_message("refused: %s\n", f->err);
    assert_err_has(f, frag1);
    if (frag2)
        assert_err_has(f, frag2);
    assert_int_equal(access(f->out, F_OK), -1);
    assert_dir_holds(f, "archive.bin", NULL);
}

static void expect_ok(fx *f)
{
    f->err[0] = '\0';
    int rc = UNPACK_UNDER_TEST(f->archive, f->out, &f->lim, &f->st, f->err);
    if (rc)
        fail_msg("rc %d, err \"%s\"", rc, f->err);
}

/* Reads a file under the destination into a static buffer. */
static const char *slurp(const fx *f, const char *rel)
{
    static char buf[4096];
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", f->out, rel);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        fail_msg("cannot open %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static mode_t mode_of(const fx *f, const char *rel)
{
    char path[PATH_MAX * 2];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", f->out, rel);
    if (lstat(path, &st))
        fail_msg("cannot stat %s", path);
    return st.st_mode;
}

static const ent normal[] = {
    {.name = "flow_spec.json", .data = "{\"spec_version\": 1}\n"},
    {.name = "pkg/", .type = AE_IFDIR},
    {.name = "pkg/sub/deep/run.sh", .mode = 0755, .data = "#!/bin/sh\necho hi\n"},
    {.name = "pkg/data.txt", .mode = 0600, .data = "data\n"},
};

/* Unpacks the normal archive in `fmt` and checks files, modes and stats. */
static void check_normal(fx *f, const char *fmt)
{
    write_la(f->archive, fmt, normal, N(normal));
    expect_ok(f);
    assert_string_equal(slurp(f, "flow_spec.json"), "{\"spec_version\": 1}\n");
    assert_string_equal(slurp(f, "pkg/sub/deep/run.sh"), "#!/bin/sh\necho hi\n");
    assert_int_equal(mode_of(f, "pkg/sub/deep/run.sh") & 07777, 0755);
    assert_int_equal(mode_of(f, "pkg/data.txt") & 07777, 0600);
    assert_true(S_ISDIR(mode_of(f, "pkg/sub")));
    assert_int_equal(mode_of(f, ".") & 07777, 0755);
    assert_string_equal(f->st.format, fmt);
    assert_int_equal(f->st.entries, 4);
    assert_int_equal(f->st.bytes, strlen(normal[0].data) + strlen(normal[2].data) + 5);
    assert_dir_holds(f, "archive.bin", "out", NULL);
}

static void test_normal_zip(void **state)
{
    check_normal(*state, "zip");
}

static void test_normal_tar(void **state)
{
    check_normal(*state, "tar");
}

/* The archive is called archive.bin: the format comes from the content. */
static void test_normal_tar_gz_detected_by_content(void **state)
{
    check_normal(*state, "tar.gz");
}

static void test_stats_may_be_null_and_dot_slash_root_is_skipped(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "./", .type = AE_IFDIR, .mode = 0700}, {.name = "./a", .data = "x"}};
    write_la(f->archive, "tar", e, N(e));
    assert_int_equal(unpack_archive(f->archive, f->out, &f->lim, NULL, f->err), 0);
    assert_string_equal(slurp(f, "a"), "x");
    assert_int_equal(mode_of(f, ".") & 07777, 0755);
}

static void test_zip_slip_dotdot(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "ok.txt", .data = "ok"}, {.name = "../evil", .data = "pwned"}};
    write_la(f->archive, "zip", e, N(e));
    expect_refused(f, "entry \"../evil\"", "\"..\"");
}

static void test_raw_zip_slip_dotdot(void **state)
{
    fx *f = *state;
    write_raw_zip(f->archive, "../evil", "pwned", 0, 0, 0);
    expect_refused(f, "entry \"../evil\"", "\"..\"");
}

static void test_dotdot_inside_path(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "a/", .type = AE_IFDIR}, {.name = "a/../../evil", .data = "pwned"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"a/../../evil\"", "\"..\"");
}

static void test_absolute_path(void **state)
{
    fx *f = *state;
    char abs[PATH_MAX + 16];
    snprintf(abs, sizeof abs, "%s/abs_evil", f->dir);
    const ent e[] = {{.name = "ok", .data = "ok"}, {.name = abs, .data = "pwned"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, abs, "absolute path");
}

/* The link is refused before anything can be written through it. */
static void test_symlink_escape_then_file_through_it(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "link", .type = AE_IFLNK, .link = "../.."},
                     {.name = "link/evil", .data = "pwned"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"link\": symlink target \"../..\" points outside the archive", NULL);
}

static void test_zip_symlink_escape(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "a/link", .type = AE_IFLNK, .link = "../../etc"}};
    write_la(f->archive, "zip", e, N(e));
    expect_refused(f, "entry \"a/link\": symlink target \"../../etc\" points outside the archive",
                   NULL);
}

/* A symlink that stays inside is fine, but nothing may be written through it. */
static void test_file_through_inside_symlink(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "d/", .type = AE_IFDIR},
                     {.name = "d/up", .type = AE_IFLNK, .link = ".."},
                     {.name = "d/up/f", .data = "through"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"d/up/f\"", "goes through symlink \"d/up\"");
}

static void test_absolute_symlink_target(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "l", .type = AE_IFLNK, .link = "/etc"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"l\": symlink target \"/etc\" is absolute", NULL);
}

/* d/up -> ../.. would be fine lexically from a deeper place; a ".." after a name is refused
 * because it could be resolved through another link. */
static void test_symlink_dotdot_after_name(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "d/e/", .type = AE_IFDIR},
                     {.name = "d/e/up", .type = AE_IFLNK, .link = "../.."},
                     {.name = "x", .type = AE_IFLNK, .link = "d/e/up/.."}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"x\": symlink target \"d/e/up/..\"", "after a name");
}

static void test_symlinks_inside_are_allowed(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "d/f", .data = "target"},
                     {.name = "l", .type = AE_IFLNK, .link = "d/f"},
                     {.name = "d/e/l2", .type = AE_IFLNK, .link = "../../d/./f"},
                     {.name = "d/dangling", .type = AE_IFLNK, .link = "nothing/here"}};
    write_la(f->archive, "tar", e, N(e));
    expect_ok(f);
    assert_true(S_ISLNK(mode_of(f, "l")));
    assert_string_equal(slurp(f, "l"), "target");
    assert_string_equal(slurp(f, "d/e/l2"), "target");
    assert_true(S_ISLNK(mode_of(f, "d/dangling")));
}

/* The oracle for the code digest: the tree walked afterwards, as agent/resume.c does. */
static proto_code_digest *walk_d;
static size_t walk_len;

static int walk_visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    const char *rel = path + walk_len + (path[walk_len] == '/');
    char hex[PROTO_HASH_HEX], buf[4096];
    if (!*rel || proto_code_digest_skip(rel))
        return 0;
    if (type == FTW_F && S_ISREG(st->st_mode)) {
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        proto_sha256 h;
        unsigned char md[PROTO_SHA256_LEN];
        proto_sha256_init(&h);
        for (size_t n; (n = fread(buf, 1, sizeof buf, fp)) > 0;)
            proto_sha256_update(&h, buf, n);
        fclose(fp);
        proto_sha256_final(&h, md);
        proto_hex(md, sizeof md, hex);
        proto_code_digest_add(walk_d, rel, hex);
    } else if (type == FTW_SL) {
        ssize_t n = readlink(path, buf, sizeof buf);
        assert_true(n >= 0);
        proto_sha256_hex(buf, (size_t)n, hex);
        char name[PATH_MAX + 16];
        snprintf(name, sizeof name, "%s -> (link)", rel);
        proto_code_digest_add(walk_d, name, hex);
    }
    return 0;
}

static void walked_digest(const fx *f, char out[PROTO_HASH_HEX])
{
    walk_d = proto_code_digest_new();
    walk_len = strlen(f->out);
    assert_int_equal(nftw(f->out, walk_visit, 16, FTW_PHYS), 0);
    proto_code_digest_finish(walk_d, out);
}

/* The code digest computed while unpacking equals the walk of the tree afterwards: files in
 * directories, a symlink, an empty file, and the names the digest leaves out. */
static void check_code_digest(fx *f, const char *fmt)
{
    static char big[300000];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = (char)('a' + i % 23);
    const ent e[] = {{.name = "flow_spec.json", .data = "{}"},
                     {.name = "metadata.json", .data = "{\"a\":1}"},
                     {.name = "lib/", .type = AE_IFDIR},
                     {.name = "lib/mod.py", .data = "X = 1\n"},
                     {.name = "lib/__pycache__/mod.cpython-311.pyc", .data = "junk"},
                     {.name = ".git/HEAD", .data = "ref"},
                     {.name = "empty"},
                     {.name = "big.txt", .data = big},
                     {.name = "ln", .type = AE_IFLNK, .link = "lib/mod.py"}};
    write_la(f->archive, fmt, e, N(e));
    expect_ok(f);
    char want[PROTO_HASH_HEX];
    walked_digest(f, want);
    assert_string_equal(f->st.code_digest, want);
}

static void test_code_digest_zip(void **state)
{
    check_code_digest(*state, "zip");
}

static void test_code_digest_tar_gz(void **state)
{
    check_code_digest(*state, "tar.gz");
}

/* A hardlink would be counted once by the unpack and twice by the walk: no digest, so the
 * agent walks the tree; a refused archive has none either. */
static void test_code_digest_unknown_with_a_hardlink_or_on_failure(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "f", .data = "same"}, {.name = "hl", .hardlink = "f"}};
    write_la(f->archive, "tar", e, N(e));
    expect_ok(f);
    assert_string_equal(f->st.code_digest, "");
    assert_int_equal(unpack_rmtree(f->out), 0);
    const ent bad[] = {{.name = "ok", .data = "x"}, {.name = "../evil", .data = "x"}};
    write_la(f->archive, "zip", bad, N(bad));
    expect_refused(f, "\"..\"", NULL);
    assert_string_equal(f->st.code_digest, "");
}

static void test_hardlink_escape(void **state)
{
    fx *f = *state;
    char sentinel[PATH_MAX + 16];
    snprintf(sentinel, sizeof sentinel, "%s/x", f->dir);
    write_file(sentinel, "secret", 6);
    const ent e[] = {{.name = "hl", .hardlink = "../x"}};
    write_la(f->archive, "tar", e, N(e));
    f->err[0] = '\0';
    assert_int_equal(unpack_archive(f->archive, f->out, &f->lim, NULL, f->err), -EINVAL);
    assert_err_has(f, "entry \"hl\": hardlink target \"../x\"");
    struct stat st;
    assert_int_equal(stat(sentinel, &st), 0);
    assert_int_equal(st.st_nlink, 1);
    assert_dir_holds(f, "archive.bin", "x", NULL);
}

static void test_hardlink_to_later_entry(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "hl", .hardlink = "later"}, {.name = "later", .data = "x"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"hl\": hardlink target \"later\" is not a file extracted earlier",
                   NULL);
}

static void test_hardlink_through_symlink(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "d/f", .data = "x"},
                     {.name = "s", .type = AE_IFLNK, .link = "d"},
                     {.name = "hl", .hardlink = "s/f"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"hl\"", "goes through symlink \"s\"");
}

static void test_hardlink_inside_is_allowed(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "d/f", .data = "same"}, {.name = "hl", .hardlink = "./d/f"}};
    write_la(f->archive, "tar", e, N(e));
    expect_ok(f);
    char a[PATH_MAX * 2], b[PATH_MAX * 2];
    struct stat sa, sb;
    snprintf(a, sizeof a, "%s/d/f", f->out);
    snprintf(b, sizeof b, "%s/hl", f->out);
    assert_int_equal(lstat(a, &sa), 0);
    assert_int_equal(lstat(b, &sb), 0);
    assert_int_equal(sa.st_ino, sb.st_ino);
}

static void test_char_device_entry(void **state)
{
    fx *f = *state;
    write_raw_tar(f->archive, "dev/null", '3', 0666, NULL);
    expect_refused(f, "entry \"dev/null\" is a character device", NULL);
}

static void test_block_device_entry(void **state)
{
    fx *f = *state;
    write_raw_tar(f->archive, "sda", '4', 0660, NULL);
    expect_refused(f, "entry \"sda\" is a block device", NULL);
}

static void test_fifo_entry(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "ok", .data = "ok"}, {.name = "pipe", .type = AE_IFIFO}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"pipe\" is a FIFO", NULL);
}

static void test_setuid_setgid_sticky_dropped(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "suid", .mode = 04755, .data = "#!/bin/sh\n"},
                     {.name = "sgid/", .type = AE_IFDIR, .mode = 03775},
                     {.name = "sgid/f", .mode = 02640, .data = "x"}};
    write_la(f->archive, "tar", e, N(e));
    expect_ok(f);
    assert_int_equal(mode_of(f, "suid") & 07777, 0755);
    assert_int_equal(mode_of(f, "sgid") & 07777, 0775);
    assert_int_equal(mode_of(f, "sgid/f") & 07777, 0640);
}

/* 50 MiB of zeros deflate to ~50 KiB: far past 200x. */
static void test_zip_bomb(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "zeros", .size = 50u << 20}};
    write_la(f->archive, "zip", e, N(e));
    expect_refused(f, "archive expands more than 200x (zip bomb?) at entry \"zeros\"", NULL);
}

/* The headers claim 100 bytes; the bytes actually written are what count. */
static void test_zip_bomb_with_lying_sizes(void **state)
{
    fx *f = *state;
    write_raw_zip(f->archive, "liar", NULL, 8, 50u << 20, 100);
    expect_refused(f, "at entry \"liar\"", NULL);
}

static void test_tar_gz_bomb(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "zeros", .size = 50u << 20}};
    write_la(f->archive, "tar.gz", e, N(e));
    expect_refused(f, "(zip bomb?) at entry \"zeros\"", NULL);
}

static void test_ratio_applies_only_above_1mib(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "zeros", .size = 1u << 20}};
    write_la(f->archive, "tar.gz", e, N(e));
    expect_ok(f);
    assert_int_equal(f->st.bytes, 1u << 20);
}

static void test_max_entries_tar(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "1", .data = "1"},
                     {.name = "2", .data = "2"},
                     {.name = "3", .data = "3"},
                     {.name = "4", .data = "4"}};
    write_la(f->archive, "tar", e, N(e));
    f->lim.max_entries = 3;
    expect_refused(f, "more than 3 entries", "at entry \"4\"");
}

/* A zip's entries are counted before libarchive loads the central directory. */
static void test_max_entries_zip(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "1", .data = "1"},
                     {.name = "2", .data = "2"},
                     {.name = "3", .data = "3"},
                     {.name = "4", .data = "4"}};
    write_la(f->archive, "zip", e, N(e));
    f->lim.max_entries = 3;
    expect_refused(f, "more than 3 entries", NULL);
    f->lim.max_entries = 4;
    expect_ok(f);
    assert_int_equal(f->st.entries, 4);
}

static void test_max_bytes(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "small", .size = 600}, {.name = "big", .size = 5000}};
    write_la(f->archive, "tar", e, N(e));
    f->lim.max_total_bytes = 1000;
    expect_refused(f, "more than 1000 bytes", "at entry \"big\"");
}

/* Deterministic incompressible bytes, so truncation lands inside the data. */
static char *noise(size_t n)
{
    char *p = malloc(n + 1);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (char)('A' + (x >> 16) % 26);
    }
    p[n] = '\0';
    return p;
}

static void truncate_half(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size / 2), 0);
}

static void check_truncated(fx *f, const char *fmt)
{
    char *data = noise(256 * 1024);
    const ent e[] = {{.name = "big.txt", .data = data}};
    write_la(f->archive, fmt, e, N(e));
    free(data);
    truncate_half(f->archive);
    expect_refused(f, "corrupt archive at entry \"big.txt\": ", NULL);
}

static void test_truncated_tar_gz(void **state)
{
    check_truncated(*state, "tar.gz");
}

static void test_truncated_zip(void **state)
{
    check_truncated(*state, "zip");
}

static void test_garbage_input(void **state)
{
    fx *f = *state;
    char *data = noise(10000);
    write_file(f->archive, data, 10000);
    free(data);
    expect_refused(f, "not a zip, tar or tar.gz archive", NULL);
    write_file(f->archive, "", 0);
    expect_refused(f, "not a zip, tar or tar.gz archive", NULL);
}

/* gzip is only accepted around a tar; bzip2 is not accepted at all. */
static void test_other_formats_refused(void **state)
{
    fx *f = *state;
    gzFile gz = gzopen(f->archive, "wb");
    assert_non_null(gz);
    gzputs(gz, "just some text, not a tar\n");
    gzclose(gz);
    expect_refused(f, "not a zip, tar or tar.gz archive", NULL);
    const ent e[] = {{.name = "a", .data = "a"}};
    write_la(f->archive, "tar.bz2", e, N(e));
    expect_refused(f, "not a zip, tar or tar.gz archive", NULL);
}

static void test_non_utf8_name_tar(void **state)
{
    fx *f = *state;
    write_raw_tar(f->archive, "bad\xff\xfe.txt", '0', 0644, "x");
    expect_refused(f, "entry name is not valid UTF-8: \"bad\\xff\\xfe.txt\"", NULL);
}

static void test_non_utf8_name_zip(void **state)
{
    fx *f = *state;
    write_raw_zip(f->archive, "caf\xe9.txt", "x", 0, 0, 0);
    expect_refused(f, "entry name is not valid UTF-8: \"caf\\xe9.txt\"", NULL);
}

static void test_utf8_name_ok(void **state)
{
    fx *f = *state;
    write_raw_tar(f->archive, "caf\xc3\xa9.txt", '0', 0644, "x");
    expect_ok(f);
    assert_string_equal(slurp(f, "caf\xc3\xa9.txt"), "x");
}

/* libarchive's writers mark these names as UTF-8 (zip flag, pax header); the process locale
 * (C here) must not mangle them. */
static void test_utf8_names_from_libarchive_writers(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "d\xc3\xa9j\xc3\xa0/\xe2\x82\xac.txt", .data = "euro"}};
    write_la(f->archive, "zip", e, N(e));
    expect_ok(f);
    assert_string_equal(slurp(f, "d\xc3\xa9j\xc3\xa0/\xe2\x82\xac.txt"), "euro");
    assert_int_equal(unpack_rmtree(f->out), 0);
    write_la(f->archive, "tar", e, N(e));
    expect_ok(f);
    assert_string_equal(slurp(f, "d\xc3\xa9j\xc3\xa0/\xe2\x82\xac.txt"), "euro");
}

static void test_control_character_name(void **state)
{
    fx *f = *state;
    write_raw_tar(f->archive, "a\nb", '0', 0644, "x");
    expect_refused(f, "entry \"a\\x0ab\" contains a control character", NULL);
}

static void test_duplicate_entry(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "f", .data = "first"}, {.name = "f", .data = "second"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"f\": duplicate name", NULL);
}

static void test_file_then_file_inside_it(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "f", .data = "x"}, {.name = "f/g", .data = "y"}};
    write_la(f->archive, "tar", e, N(e));
    expect_refused(f, "entry \"f/g\"", "not a directory");
}

static void test_repeated_directory_is_fine(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "d/f", .data = "x"},
                     {.name = "d/", .type = AE_IFDIR},
                     {.name = "d/", .type = AE_IFDIR}};
    write_la(f->archive, "tar", e, N(e));
    expect_ok(f);
    assert_int_equal(f->st.entries, 3);
}

static void test_destination_must_not_exist(void **state)
{
    fx *f = *state;
    const ent e[] = {{.name = "a", .data = "a"}};
    write_la(f->archive, "tar", e, N(e));
    assert_int_equal(mkdir(f->out, 0700), 0);
    char keep[PATH_MAX * 2];
    snprintf(keep, sizeof keep, "%s/keep", f->out);
    write_file(keep, "k", 1);
    assert_int_equal(unpack_archive(f->archive, f->out, &f->lim, NULL, f->err), -EEXIST);
    assert_err_has(f, "already exists");
    assert_int_equal(access(keep, F_OK), 0);
    char missing[PATH_MAX * 2];
    snprintf(missing, sizeof missing, "%s/no/such/out", f->dir);
    assert_int_equal(unpack_archive(f->archive, missing, &f->lim, NULL, f->err), -ENOENT);
}

static void test_missing_archive(void **state)
{
    fx *f = *state;
    assert_int_equal(unpack_archive(f->archive, f->out, &f->lim, NULL, f->err), -ENOENT);
    assert_int_equal(access(f->out, F_OK), -1);
    assert_int_equal(mkdir(f->archive, 0755), 0);
    assert_int_equal(unpack_archive(f->archive, f->out, &f->lim, NULL, f->err), -EINVAL);
    assert_err_has(f, "not a regular file");
    assert_int_equal(access(f->out, F_OK), -1);
}

static void test_limits_from_env(void **state)
{
    unpack_limits l;
    char err[UNPACK_ERR_MAX];
    unsetenv("DAGY_UNPACK_MAX_BYTES");
    unsetenv("DAGY_UNPACK_MAX_ENTRIES");
    unsetenv("DAGY_UNPACK_MAX_RATIO");
    assert_int_equal(unpack_limits_from_env(&l, err), 0);
    assert_int_equal(l.max_total_bytes, 8ULL << 30);
    assert_int_equal(l.max_entries, 100000);
    assert_true(l.max_ratio == 200.0);
    setenv("DAGY_UNPACK_MAX_BYTES", "1048576", 1);
    setenv("DAGY_UNPACK_MAX_ENTRIES", "12", 1);
    setenv("DAGY_UNPACK_MAX_RATIO", "2.5", 1);
    assert_int_equal(unpack_limits_from_env(&l, err), 0);
    assert_int_equal(l.max_total_bytes, 1048576);
    assert_int_equal(l.max_entries, 12);
    assert_true(l.max_ratio == 2.5);
    static const struct {
        const char *var, *val;
    } bad[] = {
        {"DAGY_UNPACK_MAX_BYTES", "abc"},   {"DAGY_UNPACK_MAX_BYTES", "12x"},
        {"DAGY_UNPACK_MAX_BYTES", "-5"},    {"DAGY_UNPACK_MAX_BYTES", "0"},
        {"DAGY_UNPACK_MAX_BYTES", " 5"},    {"DAGY_UNPACK_MAX_BYTES", "99999999999999999999999"},
        {"DAGY_UNPACK_MAX_ENTRIES", "1e3"}, {"DAGY_UNPACK_MAX_RATIO", "nan"},
        {"DAGY_UNPACK_MAX_RATIO", "inf"},   {"DAGY_UNPACK_MAX_RATIO", "1e999"},
        {"DAGY_UNPACK_MAX_RATIO", "0"},     {"DAGY_UNPACK_MAX_RATIO", "-3"},
        {"DAGY_UNPACK_MAX_RATIO", "2x"},
    };
    for (size_t i = 0; i < N(bad); i++) {
        char old[64];
        snprintf(old, sizeof old, "%s", getenv(bad[i].var));
        setenv(bad[i].var, bad[i].val, 1);
        err[0] = '\0';
        l.max_entries = 777;
        if (unpack_limits_from_env(&l, err) != -EINVAL)
            fail_msg("%s=%s accepted", bad[i].var, bad[i].val);
        assert_non_null(strstr(err, bad[i].var));
        assert_int_equal(l.max_entries, 777);
        setenv(bad[i].var, old, 1);
    }
    unsetenv("DAGY_UNPACK_MAX_BYTES");
    unsetenv("DAGY_UNPACK_MAX_ENTRIES");
    unsetenv("DAGY_UNPACK_MAX_RATIO");
}

/* rmtree removes links, not what they point at, and copes with unreadable directories. */
static void test_rmtree_does_not_follow_symlinks(void **state)
{
    fx *f = *state;
    char p[PATH_MAX * 2], q[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/outside", f->dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/outside/keep", f->dir);
    write_file(p, "k", 1);
    snprintf(p, sizeof p, "%s/tree", f->dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(q, sizeof q, "%s/outside", f->dir);
    snprintf(p, sizeof p, "%s/tree/link", f->dir);
    assert_int_equal(symlink(q, p), 0);
    snprintf(p, sizeof p, "%s/tree/locked", f->dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/tree/locked/f", f->dir);
    write_file(p, "f", 1);
    snprintf(p, sizeof p, "%s/tree/locked", f->dir);
    assert_int_equal(chmod(p, 0), 0);
    snprintf(p, sizeof p, "%s/tree", f->dir);
    assert_int_equal(unpack_rmtree(p), 0);
    assert_int_equal(access(p, F_OK), -1);
    snprintf(p, sizeof p, "%s/outside/keep", f->dir);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(unpack_rmtree(p), 0);
    assert_int_equal(unpack_rmtree(p), -ENOENT);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_normal_zip),
        T(test_code_digest_zip),
        T(test_code_digest_tar_gz),
        T(test_code_digest_unknown_with_a_hardlink_or_on_failure),
        T(test_normal_tar),
        T(test_normal_tar_gz_detected_by_content),
        T(test_stats_may_be_null_and_dot_slash_root_is_skipped),
        T(test_zip_slip_dotdot),
        T(test_raw_zip_slip_dotdot),
        T(test_dotdot_inside_path),
        T(test_absolute_path),
        T(test_symlink_escape_then_file_through_it),
        T(test_zip_symlink_escape),
        T(test_file_through_inside_symlink),
        T(test_absolute_symlink_target),
        T(test_symlink_dotdot_after_name),
        T(test_symlinks_inside_are_allowed),
        T(test_hardlink_escape),
        T(test_hardlink_to_later_entry),
        T(test_hardlink_through_symlink),
        T(test_hardlink_inside_is_allowed),
        T(test_char_device_entry),
        T(test_block_device_entry),
        T(test_fifo_entry),
        T(test_setuid_setgid_sticky_dropped),
        T(test_zip_bomb),
        T(test_zip_bomb_with_lying_sizes),
        T(test_tar_gz_bomb),
        T(test_ratio_applies_only_above_1mib),
        T(test_max_entries_tar),
        T(test_max_entries_zip),
        T(test_max_bytes),
        T(test_truncated_tar_gz),
        T(test_truncated_zip),
        T(test_garbage_input),
        T(test_other_formats_refused),
        T(test_non_utf8_name_tar),
        T(test_non_utf8_name_zip),
        T(test_utf8_name_ok),
        T(test_utf8_names_from_libarchive_writers),
        T(test_control_character_name),
        T(test_duplicate_entry),
        T(test_file_then_file_inside_it),
        T(test_repeated_directory_is_fine),
        T(test_destination_must_not_exist),
        T(test_missing_archive),
        T(test_limits_from_env),
        T(test_rmtree_does_not_follow_symlinks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
