/* test_proto_util.c - the shared helpers of proto/util.h: UTF-8 checks, cutting and cleaning with
 * adversarial bytes, ISO times, comma lists, terminal statuses, mkdir -p, the bounded whole-file
 * readers (FIFO, symlink, too large, growing, directory) and the atomic write. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "proto/util.h"

#define U(s) ((const unsigned char *)(s))

/* ---- UTF-8 ---- */

static void utf8_seq_accepts_every_length(void **state)
{
    (void)state;
    assert_int_equal(proto_utf8_seq(U("a"), 1), 1);
    assert_int_equal(proto_utf8_seq(U("\0"), 1), 1); /* NUL is a character; _valid refuses it */
    assert_int_equal(proto_utf8_seq(U("\xc2\x80"), 2), 2);         /* U+0080 */
    assert_int_equal(proto_utf8_seq(U("\xdf\xbf"), 2), 2);         /* U+07FF */
    assert_int_equal(proto_utf8_seq(U("\xe0\xa0\x80"), 3), 3);     /* U+0800 */
    assert_int_equal(proto_utf8_seq(U("\xed\x9f\xbf"), 3), 3);     /* U+D7FF */
    assert_int_equal(proto_utf8_seq(U("\xee\x80\x80"), 3), 3);     /* U+E000 */
    assert_int_equal(proto_utf8_seq(U("\xef\xbf\xbf"), 3), 3);     /* U+FFFF */
    assert_int_equal(proto_utf8_seq(U("\xf0\x90\x80\x80"), 4), 4); /* U+10000 */
    assert_int_equal(proto_utf8_seq(U("\xf4\x8f\xbf\xbf"), 4), 4); /* U+10FFFF */
}

static void utf8_seq_refuses_overlong_surrogates_and_truncation(void **state)
{
    (void)state;
    const char *bad[] = {
        "\xc0\x80",         /* overlong NUL */
        "\xc1\xbf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong '/' */
        "\xe0\x9f\xbf",     /* overlong U+07FF */
        "\xf0\x8f\xbf\xbf", /* overlong U+FFFF */
        "\xed\xa0\x80",     /* U+D800, a surrogate */
        "\xed\xbf\xbf",     /* U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xf8\x88\x80\x80\x80",
        "\xff",
        "\xfe",
        "\x80",     /* a lone continuation byte */
        "\xc3\x28", /* continuation missing */
        "\xe2\x82\x28",
        "\xf0\x9f\x98\x28",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (proto_utf8_seq(U(bad[i]), strlen(bad[i])))
            fail_msg("case %zu accepted", i);
    /* Truncated: the bytes are right but fewer are available. */
    assert_int_equal(proto_utf8_seq(U("\xe2\x82\xac"), 2), 0);
    assert_int_equal(proto_utf8_seq(U("\xf0\x9f\x98\x80"), 3), 0);
    assert_int_equal(proto_utf8_seq(U("\xc3\xa9"), 1), 0);
}

static void utf8_valid_refuses_nul_and_bad_bytes(void **state)
{
    (void)state;
    assert_true(proto_utf8_valid("", 0));
    assert_true(proto_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
    assert_false(proto_utf8_valid("abc\0def", 7));
    assert_false(proto_utf8_valid("abc\xc3", 4));
    assert_false(proto_utf8_valid("\xed\xa0\x80", 3));
    assert_true(proto_utf8_valid("abc\xc3", 3)); /* only n bytes are looked at */
}

static void utf8_cut_never_splits_a_character(void **state)
{
    (void)state;
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; /* 1 + 2 + 3 + 4 bytes */
    size_t n = strlen(s);
    size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10, 10};
    for (size_t max = 0; max <= n + 1; max++)
        assert_int_equal(proto_utf8_cut(s, n, max), want[max]);
    /* Invalid bytes count as one character each. */
    assert_int_equal(proto_utf8_cut("\xff\xff\xff", 3, 2), 2);
    /* A truncated sequence at the end is cut byte by byte. */
    assert_int_equal(proto_utf8_cut("ab\xe2\x82", 4, 3), 3);
}

static void utf8_clean_replaces_bad_bytes_and_nul(void **state)
{
    (void)state;
    char *c = proto_utf8_clean("a\xff"
                               "b\0c\xed\xa0\x80",
                               8, 0);
    assert_string_equal(c, "a\xef\xbf\xbd"
                           "b\xef\xbf\xbd"
                           "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_true(proto_utf8_valid(c, strlen(c)));
    free(c);
    c = proto_utf8_clean("", 0, 0);
    assert_string_equal(c, "");
    free(c);
    c = proto_utf8_clean("plain", 5, 5);
    assert_string_equal(c, "plain"); /* fits exactly: nothing cut, no "..." */
    free(c);
}

static void utf8_clean_cuts_on_a_boundary_within_max(void **state)
{
    (void)state;
    const char *s = "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"; /* three 3-byte characters */
    for (size_t max = 1; max <= 12; max++) {
        char *c = proto_utf8_clean(s, 9, max);
        size_t len = strlen(c);
        if (len > max || !proto_utf8_valid(c, len))
            fail_msg("max %zu: \"%s\" (%zu bytes)", max, c, len);
        if (max < 9 && max >= 3)
            assert_memory_equal(c + len - 3, "...", 3);
        if (max >= 9)
            assert_string_equal(c, s);
        free(c);
    }
    /* A limit larger than any input (SIZE_MAX) is no limit, not an overflow. */
    char *c = proto_utf8_clean("abc", 3, SIZE_MAX);
    assert_string_equal(c, "abc");
    free(c);
    /* Cut exactly at the boundary of an invalid byte. */
    c = proto_utf8_clean("ab\xff"
                         "cd",
                         5, 6);
    assert_true(strlen(c) <= 6);
    assert_true(proto_utf8_valid(c, strlen(c)));
    free(c);
}

/* ---- time ---- */

static void iso_time_round_trips_milliseconds(void **state)
{
    (void)state;
    char buf[PROTO_ISO_LEN];
    assert_string_equal(proto_iso_time(1700000000.5, buf), "2023-11-14T22:13:20.500Z");
    assert_true(proto_parse_iso(buf) == 1700000000.5);
    /* 0.123 is not exact in binary: the text must still say .123 after a round trip. */
    for (int ms = 0; ms < 1000; ms++) {
        char want[PROTO_ISO_LEN];
        snprintf(want, sizeof want, "2023-11-14T22:13:20.%03dZ", ms);
        proto_iso_time(proto_parse_iso(want), buf);
        assert_string_equal(buf, want);
    }
    /* .9996 carries into the next second instead of printing .1000 or going back. */
    assert_string_equal(proto_iso_time(1700000000.9996, buf), "2023-11-14T22:13:21.000Z");
    assert_string_equal(proto_iso_time(0, buf), "1970-01-01T00:00:00.000Z");
    /* The date of the last second is cached: alternating seconds, and times outside years
     * 0..9999 or before 1970, still print their own date. */
    for (int i = 0; i < 4; i++) {
        assert_string_equal(proto_iso_time(1700000000.25, buf), "2023-11-14T22:13:20.250Z");
        assert_string_equal(proto_iso_time(1700000001.75, buf), "2023-11-14T22:13:21.750Z");
        assert_string_equal(proto_iso_time(-0.5, buf), "1969-12-31T23:59:59.500Z");
    }
    assert_string_equal(proto_iso_time(253402300800.0, buf), "10000-01-01T00:00:00.000Z");
    assert_string_equal(proto_iso_time(253402300799.0, buf), "9999-12-31T23:59:59.000Z");
    double now = proto_now();
    proto_iso_time(now, buf);
    assert_int_equal(strlen(buf), 24);
    double back = proto_parse_iso(buf);
    assert_true(back - now < 0.002 && now - back < 0.002);
}

static void parse_iso_is_strict(void **state)
{
    (void)state;
    assert_true(proto_parse_iso("2023-11-14T22:13:20Z") == 1700000000.0);
    assert_true(proto_parse_iso("2023-11-14T22:13:20+00:00") == 1700000000.0);
    assert_true(proto_parse_iso("2023-11-14T22:13:20.1Z") == 1700000000.1);
    double d = proto_parse_iso("2023-11-14T22:13:20.123456+00:00");
    assert_true(d > 1700000000.1229 && d < 1700000000.1231);
    const char *bad[] = {NULL,
                         "",
                         "yesterday",
                         "2023-11-14T22:13:20", /* no zone: local time is not ours */
                         "2023-11-14T22:13:20+01:00",
                         "2023-11-14 22:13:20Z",
                         "2023-11-14T22:13:20.Z", /* a dot without digits */
                         "2023-13-14T22:13:20Z",
                         "2023-02-30T22:13:20Z", /* not a date */
                         "2023-11-14T24:00:00Z",
                         "2023-11-14T22:60:00Z",
                         "+023-11-14T22:13:20Z",
                         " 2023-11-14T22:13:20Z",
                         "2023-1-14T22:13:20Z",
                         "2023-11-14T22:13:20Zjunk"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (proto_parse_iso(bad[i]) != -1)
            fail_msg("accepted \"%s\"", bad[i] ? bad[i] : "(null)");
}

/* ---- lists and statuses ---- */

static void split_list_trims_and_drops_empty_items(void **state)
{
    (void)state;
    char **l = proto_split_list(" a,b , \tc\t,,  ,d", ',');
    assert_non_null(l);
    assert_string_equal(l[0], "a");
    assert_string_equal(l[1], "b");
    assert_string_equal(l[2], "c");
    assert_string_equal(l[3], "d");
    assert_null(l[4]);
    proto_list_free(l);
    l = proto_split_list(NULL, ',');
    assert_non_null(l);
    assert_null(l[0]);
    proto_list_free(l);
    l = proto_split_list(",,,", ',');
    assert_null(l[0]);
    proto_list_free(l);
    l = proto_split_list("x;y", ';');
    assert_string_equal(l[1], "y");
    proto_list_free(l);
    proto_list_free(NULL);
}

static void terminal_statuses_are_the_contracts_four(void **state)
{
    (void)state;
    const char *yes[] = {"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"};
    const char *no[] = {"QUEUED", "RUNNING", "PENDING", "RETRYING", "succeeded", "", "FAILED "};
    for (size_t i = 0; i < 4; i++) {
        assert_true(proto_status_terminal(yes[i]));
        assert_string_equal(proto_terminal_statuses[i], yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_false(proto_status_terminal(no[i]));
    assert_false(proto_status_terminal(NULL));
}

/* ---- files ---- */

typedef struct {
    char dir[64];
    char path[128];
} tmpdir;

static int setup_dir(void **state)
{
    tmpdir *t = calloc(1, sizeof *t);
    snprintf(t->dir, sizeof t->dir, "/tmp/test_proto_util-XXXXXX");
    if (!mkdtemp(t->dir))
        return -1;
    *state = t;
    return 0;
}

static int teardown_dir(void **state)
{
    tmpdir *t = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    int rc = system(cmd);
    free(t);
    return rc == 0 ? 0 : -1;
}

static const char *at(tmpdir *t, const char *name)
{
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, name);
    return t->path;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mkdirs_creates_parents_and_refuses_files(void **state)
{
    tmpdir *t = *state;
    struct stat st;
    assert_int_equal(proto_mkdirs(at(t, "a/b/c"), 0700), 0);
    assert_int_equal(stat(t->path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(proto_mkdirs(at(t, "a/b/c"), 0700), 0); /* exists: fine */
    assert_int_equal(proto_mkdirs(at(t, "a//b/d/"), 0700), 0);
    write_text(at(t, "file"), "x");
    assert_int_equal(proto_mkdirs(at(t, "file"), 0700), -ENOTDIR);
    assert_int_equal(proto_mkdirs(at(t, "file/sub"), 0700), -ENOTDIR);
    assert_int_equal(proto_mkdirs("", 0700), -EINVAL);
    char longp[5000];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(proto_mkdirs(longp, 0700), -ENAMETOOLONG);
}

static void read_file_reads_regular_files_whole(void **state)
{
    tmpdir *t = *state;
    size_t len = 99;
    write_text(at(t, "f"), "hello");
    char *s = proto_read_file(t->path, 5, &len);
    assert_string_equal(s, "hello");
    assert_int_equal(len, 5);
    free(s);
    write_text(at(t, "empty"), "");
    s = proto_read_file(t->path, 0, &len);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
    /* Bytes after a NUL are kept; the length says how many. */
    FILE *f = fopen(at(t, "nul"), "w");
    fwrite("a\0b", 1, 3, f);
    fclose(f);
    s = proto_read_file(t->path, 100, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 4);
    free(s);
}

static void read_file_refuses_too_large_missing_and_directories(void **state)
{
    tmpdir *t = *state;
    write_text(at(t, "big"), "123456");
    errno = 0;
    assert_null(proto_read_file(t->path, 5, NULL));
    assert_int_equal(errno, EFBIG);
    assert_null(proto_read_file(at(t, "missing"), 5, NULL));
    assert_int_equal(errno, ENOENT);
    assert_null(proto_read_file(t->dir, 5, NULL));
    assert_int_equal(errno, EISDIR);
    assert_null(proto_read_user_file(t->dir, 5, NULL));
    assert_int_equal(errno, EISDIR);
}

static void read_file_refuses_symlinks_user_file_follows_them(void **state)
{
    tmpdir *t = *state;
    char target[128];
    write_text(at(t, "target"), "secret");
    snprintf(target, sizeof target, "%s", t->path);
    assert_int_equal(symlink(target, at(t, "link")), 0);
    assert_null(proto_read_file(t->path, 100, NULL));
    assert_int_equal(errno, ELOOP);
    char *s = proto_read_user_file(t->path, 100, NULL);
    assert_string_equal(s, "secret");
    free(s);
}

/* A FIFO a task planted, with no writer, must not block the reader. */
static void read_file_on_a_fifo_does_not_block(void **state)
{
    tmpdir *t = *state;
    assert_int_equal(mkfifo(at(t, "fifo"), 0600), 0);
    alarm(10); /* a blocked open or read fails the test instead of hanging it */
    assert_null(proto_read_file(t->path, 100, NULL));
    assert_int_equal(errno, EINVAL);
    alarm(0);
    assert_null(proto_read_file("/dev/zero", 100, NULL));
    assert_int_equal(errno, EINVAL);
}

/* The operator's "@/dev/stdin" idiom: a pipe is read to its end, bounded. */
static void read_user_file_reads_a_pipe_bounded(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "{\"a\":1}", 7), 7);
    close(p[1]);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", p[0]);
    size_t len = 0;
    char *s = proto_read_user_file(path, 100, &len);
    assert_string_equal(s, "{\"a\":1}");
    assert_int_equal(len, 7);
    free(s);
    close(p[0]);
    /* An endless stream stops at the bound. */
    assert_null(proto_read_user_file("/dev/zero", 1000, NULL));
    assert_int_equal(errno, EFBIG);
}

typedef struct {
    const char *path;
    volatile int stop;
} grower;

static void *grow(void *arg)
{
    grower *g = arg;
    int fd = open(g->path, O_WRONLY | O_APPEND);
    char block[4096];
    memset(block, 'g', sizeof block);
    for (int i = 0; i < 20000 && !g->stop; i++)
        if (write(fd, block, sizeof block) < 0)
            break;
    close(fd);
    return NULL;
}

/* A file that grows while it is read is never returned larger than max. */
static void read_file_on_a_growing_file_stays_bounded(void **state)
{
    tmpdir *t = *state;
    write_text(at(t, "grow"), "start");
    grower g = {.path = t->path};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, grow, &g), 0);
    size_t max = 1u << 20;
    for (int i = 0; i < 200; i++) {
        size_t len = 0;
        char *s = proto_read_file(t->path, max, &len);
        if (s) {
            assert_true(len <= max);
            free(s);
        } else {
            assert_int_equal(errno, EFBIG);
        }
    }
    g.stop = 1;
    pthread_join(th, NULL);
    assert_int_equal(truncate(t->path, (off_t)max + 1), 0);
    assert_null(proto_read_file(t->path, max, NULL));
    assert_int_equal(errno, EFBIG);
}

/* Names in dir that start with ".~" (temporaries of proto_write_file_atomic). */
static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += !strncmp(e->d_name, ".~", 2);
    if (d)
        closedir(d);
    return n;
}

static void write_atomic_replaces_whole_files(void **state)
{
    tmpdir *t = *state;
    assert_int_equal(proto_write_file_atomic(at(t, "item.json"), "old", 3, 0600, false), 0);
    assert_int_equal(proto_write_file_atomic(t->path, "newer", 5, 0600, true), 0);
    char *s = proto_read_file(t->path, 100, NULL);
    assert_string_equal(s, "newer");
    free(s);
    struct stat st;
    assert_int_equal(stat(t->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(count_temps(t->dir), 0);
}

/* A failed write (file size limit reached: the write is short, then EFBIG) leaves the old file
 * as it was and no temporary behind. */
static void write_atomic_leaves_no_temp_on_failure(void **state)
{
    tmpdir *t = *state;
    assert_int_equal(proto_write_file_atomic(at(t, "keep.json"), "old", 3, 0600, false), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {1000, 1000};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        static char big[5000];
        memset(big, 'x', sizeof big);
        int rc = proto_write_file_atomic(t->path, big, sizeof big, 0600, false);
        _exit(rc == -EFBIG ? 0 : 1);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *s = proto_read_file(t->path, 100, NULL);
    assert_string_equal(s, "old");
    free(s);
    assert_int_equal(count_temps(t->dir), 0);
    /* A missing directory: an error, nothing created. */
    assert_int_equal(proto_write_file_atomic(at(t, "no/such/x"), "a", 1, 0600, false), -ENOENT);
    /* The target is a directory: rename fails, the temporary goes. */
    assert_int_equal(mkdir(at(t, "adir"), 0700), 0);
    assert_int_equal(proto_write_file_atomic(t->path, "a", 1, 0600, false), -EISDIR);
    assert_int_equal(count_temps(t->dir), 0);
}

/* proto_sbuf: appends of every size grow it, keep it NUL-terminated, and keep embedded bytes. */
static void sbuf_grows_and_keeps_every_byte(void **state)
{
    (void)state;
    proto_sbuf b = {0};
    char want[5000];
    size_t n = 0;
    for (size_t k = 0; k < 60; k++) { /* pieces of 0..118 bytes, some with a NUL inside */
        char piece[120];
        for (size_t j = 0; j < 2 * k; j++)
            piece[j] = (char)(j % 7 == 3 ? '\0' : 'a' + (k + j) % 26);
        proto_sbuf_put(&b, piece, 2 * k);
        memcpy(want + n, piece, 2 * k);
        n += 2 * k;
    }
    proto_sbuf_puts(&b, "end");
    memcpy(want + n, "end", 3);
    n += 3;
    assert_false(b.oom);
    assert_int_equal(b.len, n);
    assert_true(b.cap > b.len);
    assert_memory_equal(b.s, want, n);
    assert_int_equal(b.s[b.len], '\0');
    free(b.s);
}

/* A JSON string with the minimal escapes: every control character as \u00xx (lowercase), the
 * quote and the backslash escaped, every other byte (UTF-8 included) as it is. */
static void sbuf_json_str_escapes_only_what_json_requires(void **state)
{
    (void)state;
    char in[64];
    for (int c = 1; c < 0x20; c++)
        in[c - 1] = (char)c;
    strcpy(in + 31, "\"\\/\x7f\xc3\xa9z");
    proto_sbuf b = {0};
    proto_sbuf_json_str(&b, in);
    proto_sbuf_json_str(&b, "");
    assert_false(b.oom);
    const char *want = "\"\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\u0008\\u0009"
                       "\\u000a\\u000b\\u000c\\u000d\\u000e\\u000f\\u0010\\u0011\\u0012"
                       "\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b"
                       "\\u001c\\u001d\\u001e\\u001f\\\"\\\\/\x7f\xc3\xa9z\"\"\"";
    assert_string_equal(b.s, want);
    free(b.s);
}

/* Integers digit for digit at both ends; JSON numbers as cJSON prints them, reading back
 * exactly, integers below 2^53 in plain decimal, non-finite values as null. */
static void numbers_are_formatted_exactly(void **state)
{
    (void)state;
    char b[PROTO_NUM_MAX + 1];
    b[proto_fmt_int(b, INT64_MIN)] = '\0';
    assert_string_equal(b, "-9223372036854775808");
    b[proto_fmt_int(b, INT64_MAX)] = '\0';
    assert_string_equal(b, "9223372036854775807");
    b[proto_fmt_int(b, 0)] = '\0';
    assert_string_equal(b, "0");
    b[proto_fmt_json_num(b, 9007199254740991.0)] = '\0';
    assert_string_equal(b, "9007199254740991");
    b[proto_fmt_json_num(b, -3)] = '\0';
    assert_string_equal(b, "-3");
    b[proto_fmt_json_num(b, NAN)] = '\0';
    assert_string_equal(b, "null");
    b[proto_fmt_json_num(b, INFINITY)] = '\0';
    assert_string_equal(b, "null");
    const double v[] = {0.1 + 0.2,          0.001, 5e-324, -1.7976931348623157e308,
                        9007199254740992.0, 1e21};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n = proto_fmt_json_num(b, v[i]);
        assert_true(n > 0 && n < PROTO_NUM_MAX);
        b[n] = '\0';
        assert_true(strtod(b, NULL) == v[i]);
    }
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(utf8_seq_accepts_every_length),
        cmocka_unit_test(utf8_seq_refuses_overlong_surrogates_and_truncation),
        cmocka_unit_test(utf8_valid_refuses_nul_and_bad_bytes),
        cmocka_unit_test(utf8_cut_never_splits_a_character),
        cmocka_unit_test(utf8_clean_replaces_bad_bytes_and_nul),
        cmocka_unit_test(utf8_clean_cuts_on_a_boundary_within_max),
        cmocka_unit_test(iso_time_round_trips_milliseconds),
        cmocka_unit_test(parse_iso_is_strict),
        cmocka_unit_test(split_list_trims_and_drops_empty_items),
        cmocka_unit_test(terminal_statuses_are_the_contracts_four),
        cmocka_unit_test(sbuf_grows_and_keeps_every_byte),
        cmocka_unit_test(sbuf_json_str_escapes_only_what_json_requires),
        cmocka_unit_test(numbers_are_formatted_exactly),
        T(mkdirs_creates_parents_and_refuses_files),
        T(read_file_reads_regular_files_whole),
        T(read_file_refuses_too_large_missing_and_directories),
        T(read_file_refuses_symlinks_user_file_follows_them),
        T(read_file_on_a_fifo_does_not_block),
        cmocka_unit_test(read_user_file_reads_a_pipe_bounded),
        T(read_file_on_a_growing_file_stays_bounded),
        T(write_atomic_replaces_whole_files),
        T(write_atomic_leaves_no_temp_on_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
