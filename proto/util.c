/* util.c - UTF-8, time, list, status and file helpers shared by every module (util.h). */
#include "proto/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

size_t proto_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

bool proto_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = u[i] ? proto_utf8_seq(u + i, n - i) : 0;
        if (!l)
            return false;
        i += l;
    }
    return true;
}

size_t proto_utf8_cut(const char *s, size_t n, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t l = proto_utf8_seq(u + i, n - i);
        if (!l)
            l = 1;
        if (i + l > max)
            break;
        i += l;
    }
    return i;
}

char *proto_utf8_clean(const char *s, size_t n, size_t max)
{
    static const char repl[] = "\xEF\xBF\xBD";
    const unsigned char *u = (const unsigned char *)s;
    size_t most = n > (SIZE_MAX - 8) / 3 ? SIZE_MAX - 8 : n * 3; /* every byte may become 3 */
    size_t limit = max && max < most ? max : most;
    char *out = malloc(limit + 4);
    if (!out)
        return NULL;
    size_t k = 0, i = 0;
    bool cut = false;
    while (i < n) {
        size_t l = u[i] ? proto_utf8_seq(u + i, n - i) : 0;
        size_t plen = l ? l : 3;
        if (k + plen > limit) {
            cut = true;
            break;
        }
        memcpy(out + k, l ? s + i : repl, plen);
        k += plen;
        i += l ? l : 1;
    }
    if (cut) {
        /* Make room for "..." by dropping whole characters (out is valid UTF-8 by now). */
        while (k > 0 && k + 3 > limit)
            k = proto_utf8_cut(out, k, k - 1);
        if (k + 3 <= limit)
            memcpy(out + k, "...", 3), k += 3;
    }
    out[k] = '\0';
    return out;
}

double proto_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Writes v (0 <= v < 10^n) as exactly n decimal digits at p. */
static void put_digits(char *p, int v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
}

const char *proto_iso_time(double epoch, char *buf)
{
    /* Round to whole milliseconds first, so that a time parsed from "...:00.123Z" prints back
     * as .123 (0.123 is not exact in binary) and .9996 carries into the next second. */
    double total = floor(epoch * 1000.0 + 0.5);
    time_t sec = (time_t)floor(total / 1000.0);
    int ms = (int)(total - (double)sec * 1000.0);
    if (ms < 0 || ms > 999)
        ms = 0;
    /* Every log line and status item takes a time: the date and time of the last second asked
     * for are kept (per thread), so most calls only write the milliseconds. */
    static _Thread_local time_t last_sec = -1;
    static _Thread_local char last[PROTO_ISO_LEN]; /* "YYYY-MM-DDTHH:MM:SS" of last_sec */
    if (sec != last_sec || last_sec < 0) {
        struct tm tm;
        if (!gmtime_r(&sec, &tm))
            memset(&tm, 0, sizeof tm), tm.tm_year = 70, tm.tm_mday = 1;
        int year = tm.tm_year + 1900;
        if (year < 0 || year > 9999) { /* not a time of a run: the slow, general way */
            char full[96];
            snprintf(full, sizeof full, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
            size_t n = strnlen(full, PROTO_ISO_LEN - 1);
            memcpy(buf, full, n);
            buf[n] = '\0';
            return buf;
        }
        memcpy(last, "0000-00-00T00:00:00", 20);
        put_digits(last, year, 4);
        put_digits(last + 5, tm.tm_mon + 1, 2);
        put_digits(last + 8, tm.tm_mday, 2);
        put_digits(last + 11, tm.tm_hour, 2);
        put_digits(last + 14, tm.tm_min, 2);
        put_digits(last + 17, tm.tm_sec, 2);
        last_sec = sec;
    }
    memcpy(buf, last, 19);
    buf[19] = '.';
    put_digits(buf + 20, ms, 3);
    buf[23] = 'Z';
    buf[24] = '\0';
    return buf;
}

/* Reads exactly `n` decimal digits at *p into *out and advances *p; false if any is missing. */
static bool fixed_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return false;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return true;
}

double proto_parse_iso(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int year, mon, day, hour, min, sec, ms = 0;
    const char *p = s;
    if (!p || !fixed_digits(&p, 4, &year) || *p++ != '-' || !fixed_digits(&p, 2, &mon) ||
        *p++ != '-' || !fixed_digits(&p, 2, &day) || *p++ != 'T' || !fixed_digits(&p, 2, &hour) ||
        *p++ != ':' || !fixed_digits(&p, 2, &min) || *p++ != ':' || !fixed_digits(&p, 2, &sec))
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
        return -1;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        if (!digits)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return -1;
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != day) /* 2026-02-31 is not a date */
        return -1;
    return (double)t + ms / 1000.0;
}

char **proto_split_list(const char *s, char sep)
{
    size_t n = 1;
    for (const char *p = s; p && *p; p++)
        n += *p == sep;
    char **out = calloc(n + 1, sizeof *out);
    if (!out)
        return NULL;
    size_t k = 0;
    while (s && *s) {
        const char *e = strchr(s, sep);
        size_t len = e ? (size_t)(e - s) : strlen(s);
        while (len && (*s == ' ' || *s == '\t'))
            s++, len--;
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len && !(out[k++] = strndup(s, len))) {
            proto_list_free(out);
            return NULL;
        }
        s = e ? e + 1 : s + strlen(s);
    }
    return out;
}

void proto_list_free(char **list)
{
    for (char **p = list; p && *p; p++)
        free(*p);
    free(list);
}

const char *const proto_terminal_statuses[PROTO_TERMINAL_N] = {"SUCCEEDED", "FAILED", "CANCELLED",
                                                               "SKIPPED"};

bool proto_status_terminal(const char *st)
{
    for (size_t i = 0; st && i < PROTO_TERMINAL_N; i++)
        if (!strcmp(st, proto_terminal_statuses[i]))
            return true;
    return false;
}

/* mkdir -p on p (a writable copy): the deepest directory first, its parents only when it
 * answers ENOENT, so an existing tree costs one call instead of one per component. */
static int mkdirs_at(char *p, mode_t mode)
{
    if (mkdir(p, mode) == 0)
        return 0;
    if (errno == EEXIST) { /* also "a file of that name": only a directory will do */
        struct stat st;
        if (stat(p, &st))
            return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    }
    if (errno != ENOENT)
        return -errno;
    char *slash = strrchr(p, '/');
    while (slash && slash > p && slash[-1] == '/')
        slash--; /* "a//b": the parent is "a" */
    if (!slash || slash == p)
        return -ENOENT; /* no parent to make ("x" relative, or "/x" with no root) */
    *slash = '\0';
    int rc = mkdirs_at(p, mode);
    *slash = '/';
    if (rc)
        return rc;
    if (mkdir(p, mode) == 0)
        return 0;
    if (errno != EEXIST)
        return -errno;
    struct stat st; /* made meanwhile by someone else */
    if (stat(p, &st))
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int proto_mkdirs(const char *path, mode_t mode)
{
    char p[4096];
    if (!path || !*path)
        return -EINVAL;
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
        return -ENAMETOOLONG;
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0'; /* "a/b/" is "a/b" */
    return mkdirs_at(p, mode);
}

/* Reads fd to its end, at most max bytes (more is EFBIG); `hint` is the expected size. Returns
 * a NUL-terminated buffer or NULL with errno set. Does not close fd. */
static char *read_fd(int fd, size_t hint, size_t max, size_t *len)
{
    /* The file may grow while we read: read at most max + 1 bytes to notice. */
    size_t most = max < SIZE_MAX - 1 ? max + 1 : SIZE_MAX - 1;
    size_t cap = hint < most ? hint + 1 : most, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf)
        return errno = ENOMEM, NULL;
    for (;;) {
        if (n == cap) {
            if (n > max)
                break;
            size_t ncap = cap > most / 2 ? most : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                return errno = ENOMEM, NULL;
            }
            buf = nb, cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            return errno = e, NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        free(buf);
        return errno = EFBIG, NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Opens path with `flags` and reads it whole if fstat agrees: a regular file of at most max
 * bytes, or (if `streams`) also a pipe, socket or character device. */
static char *read_path(int dirfd, const char *path, int flags, bool streams, size_t max,
                       size_t *len)
{
    int fd = openat(dirfd, path, flags | O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *buf = NULL;
    int e = 0;
    if (fstat(fd, &st))
        e = errno;
    else if (S_ISDIR(st.st_mode))
        e = EISDIR;
    else if (!S_ISREG(st.st_mode) &&
             !(streams && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode))))
        e = EINVAL;
    else if (S_ISREG(st.st_mode) && (unsigned long long)st.st_size > max)
        e = EFBIG;
    else if (!(buf = read_fd(fd, S_ISREG(st.st_mode) ? (size_t)st.st_size : 4096, max, len)))
        e = errno;
    close(fd);
    errno = e;
    return buf;
}

char *proto_read_file(const char *path, size_t max, size_t *len)
{
    return read_path(AT_FDCWD, path, O_NOFOLLOW | O_NONBLOCK, false, max, len);
}

char *proto_read_file_at(int dirfd, const char *path, size_t max, size_t *len)
{
    return read_path(dirfd, path, O_NOFOLLOW | O_NONBLOCK, false, max, len);
}

char *proto_read_user_file(const char *path, size_t max, size_t *len)
{
    return read_path(AT_FDCWD, path, 0, true, max, len);
}

/* Creates the temporary beside `path` (name in tmp); a stale one of a dead process with our pid
 * is skipped over. Returns the fd or -errno. */
static int open_temp(const char *path, char *tmp, size_t n, mode_t mode)
{
    static unsigned counter; /* atomic: unpack threads may write files too */
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    for (int tries = 0; tries < 100; tries++) {
        /* The temporary's name starts with ".~": a name no encoded item name can take
         * (proto_name_encode never yields a leading '.'). */
        unsigned id = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
        if (snprintf(tmp, n, "%.*s.~%s.%ld.%u", dirlen, path, slash ? slash + 1 : path,
                     (long)getpid(), id) >= (int)n)
            return -ENAMETOOLONG;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd >= 0 || errno != EEXIST)
            return fd >= 0 ? fd : -errno;
    }
    return -EEXIST;
}

/* fsync of the directory holding `path`, so that a rename survives a power loss. */
static int sync_dir(const char *path)
{
    char dir[4200];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

int proto_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                            bool durable)
{
    char tmp[4200];
    int fd = open_temp(path, tmp, sizeof tmp, mode);
    if (fd < 0)
        return fd;
    const char *p = data;
    size_t left = len;
    int rc = 0;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -ENOSPC;
            break;
        }
        p += w, left -= (size_t)w;
    }
    if (!rc && durable && fsync(fd))
        rc = -errno;
    if (close(fd) && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path))
        rc = -errno;
    if (rc) {
        unlink(tmp);
        return rc;
    }
    return durable ? sync_dir(path) : 0;
}

/* ---- growable strings ---- */

void proto_sbuf_put(proto_sbuf *b, const void *data, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, data, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void proto_sbuf_puts(proto_sbuf *b, const char *s)
{
    proto_sbuf_put(b, s, strlen(s));
}

const char *proto_json_str(const cJSON *obj, const char *key)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

size_t proto_fmt_int(char *buf, int64_t v)
{
    char tmp[24], *e = tmp + sizeof tmp, *p = e; /* digits from the end */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--p = '-';
    memcpy(buf, p, (size_t)(e - p));
    return (size_t)(e - p);
}

size_t proto_fmt_json_num(char *buf, double v)
{
    if (!isfinite(v)) {
        memcpy(buf, "null", 4);
        return 4;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        return proto_fmt_int(buf, (int64_t)v);
    int n = snprintf(buf, PROTO_NUM_MAX, "%1.15g", v);
    if (strtod(buf, NULL) != v)
        n = snprintf(buf, PROTO_NUM_MAX, "%1.17g", v);
    return n > 0 ? (size_t)n : 0;
}

void proto_sbuf_json_str(proto_sbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    proto_sbuf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        const unsigned char *run = p;
        while (*p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        if (p > run)
            proto_sbuf_put(b, run, (size_t)(p - run));
        if (!*p)
            break;
        char esc[6] = {'\\', (char)*p};
        if (*p < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
        }
        proto_sbuf_put(b, esc, *p < 0x20 ? 6 : 2);
        p++;
    }
    proto_sbuf_put(b, "\"", 1);
}
