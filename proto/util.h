/* util.h - the small helpers every module needs, written once: UTF-8 checks and repair, times
 * in the contract's format, comma lists, terminal statuses, and two file-system helpers
 * (mkdir -p, bounded whole-file read). */
#ifndef DAGY_UTIL_H
#define DAGY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <cjson/cJSON.h>

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (n bytes available, n >= 1), or 0 if invalid
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). */
size_t proto_utf8_seq(const unsigned char *s, size_t n);

/* True if s[0..n) is valid UTF-8 with no NUL byte. */
bool proto_utf8_valid(const char *s, size_t n);

/* The largest length <= max at which s[0..n) can be cut without splitting a character
 * (for valid UTF-8; invalid bytes count as one character each). */
size_t proto_utf8_cut(const char *s, size_t n, size_t max);

/* A new NUL-terminated copy of s[0..n) that is valid UTF-8: every invalid byte becomes U+FFFD,
 * every NUL byte becomes U+FFFD as well, and the result is cut on a character
 * boundary so that it holds at most `max` bytes (excluding the NUL; 0 = no limit). If anything
 * was cut, "..." is appended within the limit. Caller frees. NULL only on out of memory. */
char *proto_utf8_clean(const char *s, size_t n, size_t max);

/* ---- time ---- */

/* Wall-clock seconds since the epoch, with sub-second precision. */
double proto_now(void);

/* `epoch` as the contract's ISO 8601 UTC with milliseconds, "2026-03-14T09:00:00.123Z".
 * buf holds at least PROTO_ISO_LEN bytes; returns buf. */
#define PROTO_ISO_LEN 32
const char *proto_iso_time(double epoch, char *buf);

/* Parses proto_iso_time's format strictly (milliseconds optional, any number of fraction
 * digits, "Z" or "+00:00"; fields in range, a real date); returns epoch seconds, or -1. */
double proto_parse_iso(const char *s);

/* ---- growable strings ---- */

/* A growable NUL-terminated string for request and hash builders. Zero-initialise; `oom` sticks
 * once an allocation failed, so a builder appends freely and checks once at the end; free(s). */
typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} proto_sbuf;

/* Appends n bytes (doubling the capacity, from 256). */
void proto_sbuf_put(proto_sbuf *b, const void *data, size_t n);
/* Appends a NUL-terminated string. */
void proto_sbuf_puts(proto_sbuf *b, const char *s);
/* Appends s as a JSON string with the minimal escapes: \" \\ and \u00XX (lowercase) for every
 * control character below 0x20; every other byte as it is (s is expected to be valid UTF-8).
 * The canonical JSON of task fingerprints depends on this exact form. */
void proto_sbuf_json_str(proto_sbuf *b, const char *s);

/* Number text without a terminating NUL; both return its length. An integer in decimal (buf of
 * PROTO_NUM_MAX bytes is enough). A JSON number as cJSON prints it: an integer below 2^53 in
 * decimal, else 15 significant digits, or 17 when 15 do not read back the same; "null" for a
 * non-finite value. Per log line and status item, hence no snprintf for the integers. */
#define PROTO_NUM_MAX 32

/* The string member `key` of JSON object `obj` (NULL obj allowed), or NULL if absent or not a
 * string. The one such getter of the agent and the launcher. */
const char *proto_json_str(const cJSON *obj, const char *key);
size_t proto_fmt_int(char *buf, int64_t v);
size_t proto_fmt_json_num(char *buf, double v);

/* ---- lists and statuses ---- */

/* Splits "a,b , c" at `sep` into a NULL-terminated array of trimmed, non-empty strings (an
 * empty or NULL s gives an empty array). Caller frees with proto_list_free. NULL on ENOMEM. */
char **proto_split_list(const char *s, char sep);
void proto_list_free(char **list);

/* The statuses no write may ever replace (contract section 4), for conditions that list them. */
#define PROTO_TERMINAL_N 4
extern const char *const proto_terminal_statuses[PROTO_TERMINAL_N];

/* True for the statuses no write may ever replace: SUCCEEDED, FAILED, CANCELLED, SKIPPED. */
bool proto_status_terminal(const char *status);

/* ---- files ---- */

/* mkdir -p: creates every missing directory of `path` with `mode` (directories that exist are
 * left as they are). Returns 0, or -errno: -ENOTDIR if `path` exists but is not a directory,
 * -EINVAL for an empty path. */
int proto_mkdirs(const char *path, mode_t mode);

/* Reads a whole regular file of at most `max` bytes into a new NUL-terminated buffer (caller
 * frees); *len (if not NULL) gets its length. Opens with O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC and
 * refuses anything that is not a regular file, so a FIFO or device a task planted never blocks.
 * Returns NULL with errno set: ENOENT, ELOOP (a symlink), EINVAL (not a regular file),
 * EISDIR, EFBIG (larger than max, also if it grew past max while read), or the read error.
 * For every path a task, an archive or another process could have planted. */
char *proto_read_file(const char *path, size_t max, size_t *len);
/* The same for `path` relative to the directory `dirfd` (AT_FDCWD: proto_read_file). */
char *proto_read_file_at(int dirfd, const char *path, size_t max, size_t *len);

/* The same for a path the operator named (--params-json @FILE, --file, --spec): follows
 * symbolic links and also reads a pipe or character device to its end ("@/dev/stdin",
 * "@<(cmd)"), at most `max` bytes (more is EFBIG). Blocks while a pipe's writer is silent. */
char *proto_read_user_file(const char *path, size_t max, size_t *len);

/* Writes `len` bytes to `path` atomically: a temporary file in the same directory (mode
 * `mode`, O_EXCL, fsync'd if `durable`), then rename(2) (and, if durable, an fsync of the
 * directory). A short write or ENOSPC is an error,
 * never a truncated file: the temporary is removed. Returns 0 or -errno. */
int proto_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                            bool durable);

#endif
