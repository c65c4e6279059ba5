/* sbx_int.h - internals shared by the sandbox's files: the line splitter and the stderr trace
 * ring. Both are plain data and functions (no libuv, no processes) so they are tested directly. */
#ifndef DAGY_SBX_INT_H
#define DAGY_SBX_INT_H

#include <stdbool.h>
#include <stddef.h>

/* Receives one line (or a piece of a long one); `line` is valid only during the call. */
typedef void (*sbx__emit_fn)(void *ud, const char *line, size_t len);

/* The unfinished last line of a stream. Zero-initialised is empty; the buffer is allocated on
 * the first partial line and grows to SBX_LINE_MAX + 1 at most (most output never needs it). */
typedef struct {
    char *buf;
    size_t len, cap;
} sbx__linebuf;

/* Splits `data` at '\n' (a trailing '\r' is dropped) and emits every complete line; the rest is
 * kept in `lb` for the next call. Lines longer than SBX_LINE_MAX are emitted in pieces of
 * SBX_LINE_MAX bytes. Complete lines are emitted straight from `data` without copying. */
void sbx__lines_feed(sbx__linebuf *lb, const char *data, size_t n, sbx__emit_fn emit, void *ud);
/* At end of stream: emits the unfinished last line, if any. */
void sbx__lines_flush(sbx__linebuf *lb, sbx__emit_fn emit, void *ud);
void sbx__lines_free(sbx__linebuf *lb);

/* The last `max` bytes written. Grows by doubling while it holds less than `max` (a task that
 * writes 100 bytes of stderr costs about 1 KiB), then wraps. Zero-initialised is empty. */
typedef struct {
    char *buf;
    size_t len;  /* valid bytes, <= cap */
    size_t cap;  /* allocated bytes */
    size_t head; /* where the next byte goes; when len == cap also the oldest byte */
    size_t max;  /* 0 means SBX_TRACE_MAX */
} sbx__ring;

void sbx__ring_append(sbx__ring *r, const char *data, size_t n);
/* The content, oldest byte first, as one contiguous block (rotates the buffer in place). */
const char *sbx__ring_view(sbx__ring *r, size_t *len);
void sbx__ring_free(sbx__ring *r);

#endif
