/* test_sbx_output.c - the sandbox's line splitter and stderr trace ring, without processes: every
 * way of cutting the same bytes into reads must give the same lines, and the ring must hold
 * exactly the last bytes written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "sandbox/sbx.h"
#include "sandbox/sbx_int.h"

#define L SBX_LINE_MAX

/* Lines received, concatenated with their lengths. */
typedef struct {
    char *data;
    size_t len, cap;
    size_t *lens;
    size_t n, ncap;
} lines;

static void collect(void *ud, const char *line, size_t len)
{
    lines *c = ud;
    assert_true(len <= L);
    if (c->len + len > c->cap) {
        c->cap = (c->len + len) * 2 + 16;
        c->data = realloc(c->data, c->cap);
    }
    if (c->n == c->ncap) {
        c->ncap = c->ncap * 2 + 16;
        c->lens = realloc(c->lens, c->ncap * sizeof *c->lens);
    }
    if (len)
        memcpy(c->data + c->len, line, len);
    c->len += len;
    c->lens[c->n++] = len;
}

static void lines_free(lines *c)
{
    free(c->data);
    free(c->lens);
}

/* The specification, written the obvious way over the whole input at once. */
static void model(const char *in, size_t n, lines *out)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        bool end = i == n;
        if (!end && in[i] != '\n')
            continue;
        size_t len = i - start;
        if (end && len == 0)
            break;
        if (!end && len > 0 && in[i - 1] == '\r')
            len--;
        size_t off = 0;
        do {
            size_t piece = len - off > L ? L : len - off;
            collect(out, in + start + off, piece);
            off += piece;
        } while (off < len);
        start = i + 1;
    }
}

/* Feeds `in` in reads of random sizes (1..maxchunk) and compares with the model. */
static void check_chunked(const char *in, size_t n, size_t maxchunk, unsigned seed)
{
    lines want = {0}, got = {0};
    model(in, n, &want);
    sbx__linebuf lb = {0};
    srand(seed);
    for (size_t off = 0; off < n;) {
        size_t k = 1 + (size_t)rand() % maxchunk;
        if (k > n - off)
            k = n - off;
        sbx__lines_feed(&lb, in + off, k, collect, &got);
        off += k;
    }
    sbx__lines_flush(&lb, collect, &got);
    assert_int_equal(got.n, want.n);
    assert_memory_equal(got.lens, want.lens, want.n * sizeof *want.lens);
    assert_int_equal(got.len, want.len);
    if (want.len)
        assert_memory_equal(got.data, want.data, want.len);
    assert_true(lb.cap <= L + 1);
    sbx__lines_free(&lb);
    lines_free(&want);
    lines_free(&got);
}

/* Appends a line of `len` bytes of 'a' with the given ending to buf. */
static size_t put_line(char *buf, size_t at, size_t len, const char *ending)
{
    memset(buf + at, 'a' + (char)(at % 7), len);
    memcpy(buf + at + len, ending, strlen(ending));
    return at + len + strlen(ending);
}

static void test_lines_simple(void **state)
{
    const char in[] = "one\ntwo\r\n\nthree\rx\n";
    lines got = {0};
    sbx__linebuf lb = {0};
    sbx__lines_feed(&lb, in, sizeof in - 1, collect, &got);
    /* Whole lines inside one read never touch the pending buffer. */
    assert_null(lb.buf);
    sbx__lines_feed(&lb, "la", 2, collect, &got);
    sbx__lines_feed(&lb, "st", 2, collect, &got);
    sbx__lines_flush(&lb, collect, &got);
    assert_int_equal(got.n, 5);
    size_t lens[] = {3, 3, 0, 7, 4};
    assert_memory_equal(got.lens, lens, sizeof lens);
    assert_memory_equal(got.data, "onetwothree\rxlast", got.len);
    sbx__lines_free(&lb);
    lines_free(&got);
}

static void test_lines_boundaries_any_chunking(void **state)
{
    static const size_t sizes[] = {0, 1, L - 1, L, L + 1, L + 2, 2 * L, 2 * L + 1, 3 * L + 5};
    static const char *endings[] = {"\n", "\r\n", "\r\r\n", "\rb\n"};
    size_t cap = 40 * (3 * L + 16);
    char *in = malloc(cap);
    size_t n = 0;
    for (size_t e = 0; e < 4; e++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            n = put_line(in, n, sizes[s], endings[e]);
    n = put_line(in, n, L + 1, "\r"); /* unterminated last line, over the limit, ends in \r */
    static const size_t chunks[] = {1, 3, 7, 100, L - 1, L + 1, 65536};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++)
        for (unsigned seed = 1; seed <= 3; seed++)
            check_chunked(in, n, chunks[c], seed);
    free(in);
}

static void test_lines_exact_max_is_one_line(void **state)
{
    char *in = malloc(L + 2);
    memset(in, 'x', L);
    memcpy(in + L, "\r\n", 2);
    lines got = {0};
    sbx__linebuf lb = {0};
    /* "\r" at the end of one read, "\n" at the start of the next. */
    sbx__lines_feed(&lb, in, L + 1, collect, &got);
    sbx__lines_feed(&lb, in + L + 1, 1, collect, &got);
    sbx__lines_flush(&lb, collect, &got);
    assert_int_equal(got.n, 1);
    assert_int_equal(got.lens[0], L);
    sbx__lines_free(&lb);
    lines_free(&got);
    free(in);
}

/* Writes `total` bytes in random pieces into a ring of `max` and checks it holds the tail. */
static void check_ring(size_t max, size_t total, size_t maxchunk, unsigned seed)
{
    char *all = malloc(total);
    for (size_t i = 0; i < total; i++)
        all[i] = (char)('0' + (i * 7 + i / 13) % 61);
    sbx__ring r = {.max = max};
    srand(seed);
    for (size_t off = 0; off < total;) {
        size_t k = 1 + (size_t)rand() % maxchunk;
        if (k > total - off)
            k = total - off;
        sbx__ring_append(&r, all + off, k);
        off += k;
        if (rand() % 5 == 0) { /* viewing in between must not disturb later appends */
            size_t len;
            const char *v = sbx__ring_view(&r, &len);
            size_t want = off < max ? off : max;
            assert_int_equal(len, want);
            assert_memory_equal(v, all + off - want, want);
        }
    }
    size_t len;
    const char *v = sbx__ring_view(&r, &len);
    size_t want = total < max ? total : max;
    assert_int_equal(len, want);
    assert_memory_equal(v, all + total - want, want);
    assert_true(r.cap <= max);
    sbx__ring_free(&r);
    free(all);
}

/* Records line lengths: got[0] = count, got[1..7] = lengths. */
static void collect_len(void *ud, const char *line, size_t len)
{
    size_t *got = ud;
    (void)line;
    if (got[0] < 7)
        got[1 + got[0]] = len;
    got[0]++;
}

/* A raised limit (sbx_set_line_max, when the agent ships to CloudWatch Logs): a 40 KiB line is
 * one line, a longer one than the limit comes in pieces of the limit, memory stays bounded. */
static void test_lines_raised_max(void **state)
{
    size_t max = 64 * 1024, n = 40 * 1024 + 1 + 150 * 1024 + 1;
    char *in = malloc(n);
    memset(in, 'x', n);
    in[40 * 1024] = '\n';
    in[n - 1] = '\n';
    size_t got[8] = {0};
    sbx__linebuf lb = {.max = max};
    for (size_t off = 0; off < n; off += 4096)
        sbx__lines_feed(&lb, in + off, n - off < 4096 ? n - off : 4096, collect_len, got);
    sbx__lines_flush(&lb, collect_len, got);
    assert_int_equal(got[0], 4);
    size_t lens[] = {40 * 1024, max, max, 150 * 1024 - 2 * max};
    assert_memory_equal(got + 1, lens, sizeof lens);
    assert_true(lb.cap <= max + 1);
    sbx__lines_free(&lb);
    assert_int_equal(lb.max, max); /* free keeps the limit for the next stream */
    free(in);
}

static void test_ring_keeps_tail(void **state)
{
    check_ring(100, 1000, 7, 1);
    check_ring(100, 1000, 250, 2);
    check_ring(100, 60, 7, 3);
    check_ring(SBX_TRACE_MAX, 200 * 1024, 5000, 4);
    check_ring(SBX_TRACE_MAX, 200 * 1024, 100 * 1024, 5);
}

static void test_ring_small_output_small_memory(void **state)
{
    sbx__ring r = {0};
    size_t len;
    assert_int_equal(strlen(sbx__ring_view(&r, &len)), 0);
    assert_int_equal(len, 0);
    sbx__ring_append(&r, "boom\n", 5);
    assert_true(r.cap <= 1024);
    const char *v = sbx__ring_view(&r, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(v, "boom\n", 5);
    sbx__ring_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_simple),
        cmocka_unit_test(test_lines_boundaries_any_chunking),
        cmocka_unit_test(test_lines_exact_max_is_one_line),
        cmocka_unit_test(test_lines_raised_max),
        cmocka_unit_test(test_ring_keeps_tail),
        cmocka_unit_test(test_ring_small_output_small_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
