/* sbx_output.c - what the sandbox does with a task's output bytes: split them into lines (long
 * lines in pieces, bytes passed as they are) and keep the tail of stderr as the attempt's trace.
 * Memory is taken only when a task needs it: a partial line or stderr output. */
#include "sandbox/sbx.h"
#include "sandbox/sbx_int.h"

#include <stdlib.h>
#include <string.h>

/* The longest line lb emits whole. */
static size_t lb_max(const sbx__linebuf *lb)
{
    return lb->max ? lb->max : SBX_LINE_MAX;
}

/* Makes room for `need` (<= lb_max + 1) bytes of pending line; false if out of memory. */
static bool lb_reserve(sbx__linebuf *lb, size_t need)
{
    if (need <= lb->cap)
        return true;
    size_t cap = lb->cap ? lb->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > lb_max(lb) + 1)
        cap = lb_max(lb) + 1;
    char *b = realloc(lb->buf, cap);
    if (!b)
        return false;
    lb->buf = b;
    lb->cap = cap;
    return true;
}

/* Emits the first `want` bytes of (pending line + data) as one line and consumes them. */
static void emit_head(sbx__linebuf *lb, const char **data, size_t *n, size_t want,
                      sbx__emit_fn emit, void *ud)
{
    if (lb->len == 0) {
        emit(ud, *data, want); /* the common case: no copy */
        *data += want;
        *n -= want;
        return;
    }
    if (lb->len >= want) {
        emit(ud, lb->buf, want);
        lb->len -= want;
        memmove(lb->buf, lb->buf + want, lb->len);
        return;
    }
    size_t take = want - lb->len;
    if (lb_reserve(lb, want)) {
        memcpy(lb->buf + lb->len, *data, take);
        emit(ud, lb->buf, want);
    } else {
        /* Out of memory: the line comes out in two pieces rather than not at all. */
        emit(ud, lb->buf, lb->len);
        emit(ud, *data, take);
    }
    lb->len = 0;
    *data += take;
    *n -= take;
}

/* Ends the line made of the pending bytes and data[0..n). */
static void finish_line(sbx__linebuf *lb, const char *data, size_t n, bool strip_cr,
                        sbx__emit_fn emit, void *ud)
{
    if (strip_cr) {
        if (n > 0 && data[n - 1] == '\r')
            n--;
        else if (n == 0 && lb->len > 0 && lb->buf[lb->len - 1] == '\r')
            lb->len--;
    }
    while (lb->len + n > lb_max(lb))
        emit_head(lb, &data, &n, lb_max(lb), emit, ud);
    emit_head(lb, &data, &n, lb->len + n, emit, ud);
}

/* Keeps data[0..n) (no newline in it) as the start of the next line, emitting full pieces. */
static void keep_partial(sbx__linebuf *lb, const char *data, size_t n, sbx__emit_fn emit, void *ud)
{
    /* Hold one byte more when it is '\r': it may be the first half of a "\r\n" split by a read,
     * and a line of exactly lb_max bytes must not come out as a piece plus an empty line. */
    size_t keep = data[n - 1] == '\r' ? lb_max(lb) + 1 : lb_max(lb);
    while (lb->len + n > keep)
        emit_head(lb, &data, &n, lb_max(lb), emit, ud);
    if (n == 0)
        return;
    if (!lb_reserve(lb, lb->len + n)) {
        if (lb->len)
            emit(ud, lb->buf, lb->len);
        emit(ud, data, n);
        lb->len = 0;
        return;
    }
    memcpy(lb->buf + lb->len, data, n);
    lb->len += n;
}

void sbx__lines_feed(sbx__linebuf *lb, const char *data, size_t n, sbx__emit_fn emit, void *ud)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        if (!nl) {
            keep_partial(lb, data, n, emit, ud);
            return;
        }
        size_t seg = (size_t)(nl - data);
        finish_line(lb, data, seg, true, emit, ud);
        data = nl + 1;
        n -= seg + 1;
    }
}

void sbx__lines_flush(sbx__linebuf *lb, sbx__emit_fn emit, void *ud)
{
    if (lb->len > 0)
        finish_line(lb, NULL, 0, false, emit, ud);
}

void sbx__lines_free(sbx__linebuf *lb)
{
    free(lb->buf);
    *lb = (sbx__linebuf){.max = lb->max};
}

/* Grows the ring towards `max` to hold `need` bytes, only while its content is linear. */
static void ring_grow(sbx__ring *r, size_t need, size_t max)
{
    if (need <= r->cap || r->cap >= max || (r->head != r->len && r->head != 0))
        return;
    size_t cap = r->cap ? r->cap : 1024;
    while (cap < need)
        cap *= 2;
    if (cap > max)
        cap = max;
    char *b = realloc(r->buf, cap);
    if (!b)
        return; /* keep wrapping within what we have: a shorter trace, not a failure */
    r->buf = b;
    r->cap = cap;
    r->head = r->len;
}

void sbx__ring_append(sbx__ring *r, const char *data, size_t n)
{
    size_t max = r->max ? r->max : SBX_TRACE_MAX;
    if (n == 0)
        return;
    ring_grow(r, r->len + n, max);
    if (r->cap == 0)
        return;
    if (n > r->cap) {
        data += n - r->cap;
        n = r->cap;
    }
    size_t first = r->cap - r->head < n ? r->cap - r->head : n;
    memcpy(r->buf + r->head, data, first);
    memcpy(r->buf, data + first, n - first);
    r->head = (r->head + n) % r->cap;
    r->len = r->len + n > r->cap ? r->cap : r->len + n;
}

/* Reverses buf[a..b). */
static void reverse(char *buf, size_t a, size_t b)
{
    while (a + 1 < b) {
        char c = buf[a];
        buf[a++] = buf[--b];
        buf[b] = c;
    }
}

const char *sbx__ring_view(sbx__ring *r, size_t *len)
{
    *len = r->len;
    if (!r->buf)
        return "";
    if (r->len == r->cap && r->head != 0) {
        /* Rotate left by head with three reversals: no second 64 KiB buffer. */
        reverse(r->buf, 0, r->head);
        reverse(r->buf, r->head, r->cap);
        reverse(r->buf, 0, r->cap);
        r->head = 0;
    }
    return r->buf;
}

void sbx__ring_free(sbx__ring *r)
{
    free(r->buf);
    *r = (sbx__ring){.max = r->max};
}
