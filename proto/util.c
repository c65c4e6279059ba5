/* util.c - UTF-8, time, list, status and file helpers shared by every module (util.h). */
#include "proto/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    /* Worst case every byte becomes 3 bytes. */
    size_t cap = n * 3 + 4;
    if (max && cap > max + 1)
        cap = max + 1;
    char *out = malloc(cap < 4 ? 4 : cap);
    if (!out)
        return NULL;
    size_t limit = max ? max : n * 3;
    size_t k = 0, i = 0;
    bool cut = false;
    while (i < n) {
        size_t l = u[i] ? proto_utf8_seq(u + i, n - i) : 0;
        const char *piece = l ? s + i : repl;
        size_t plen = l ? l : 3;
        /* Keep room for "..." if more input follows this piece. */
        size_t reserve = (max && i + (l ? l : 1) < n) ? 3 : 0;
        if (k + plen + reserve > limit) {
            cut = true;
            break;
        }
        memcpy(out + k, piece, plen);
        k += plen;
        i += l ? l : 1;
    }
    if (cut) {
        while (k + 3 > limit && k > 0) /* only when max < 3 + content: back off a character */
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

const char *proto_iso_time(double epoch, char *buf)
{
    time_t sec = (time_t)epoch;
    int ms = (int)((epoch - (double)sec) * 1000.0);
    if (ms > 999)
        ms = 999;
    if (ms < 0)
        ms = 0;
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(buf, PROTO_ISO_LEN - 6, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, PROTO_ISO_LEN - n, ".%03dZ", ms);
    return buf;
}

double proto_parse_iso(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = 0, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -1;
    const char *p = s + n;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        while (digits > 0 && digits < 3)
            ms *= 10, digits++;
    }
    if (*p != 'Z' && strcmp(p, "+00:00") != 0)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
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

bool proto_status_terminal(const char *st)
{
    static const char *const terminal[] = {"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"};
    for (size_t i = 0; st && i < sizeof terminal / sizeof terminal[0]; i++)
        if (!strcmp(st, terminal[i]))
            return true;
    return false;
}

int proto_mkdirs(const char *path, mode_t mode)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
        return -ENAMETOOLONG;
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0')
            continue;
        char save = *c;
        *c = '\0';
        if (mkdir(p, mode) && errno != EEXIST)
            return -errno;
        *c = save;
        if (!save)
            return 0;
    }
}

char *proto_read_file(const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *buf = NULL;
    int e = 0;
    if (fstat(fd, &st)) {
        e = errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        e = EINVAL;
        goto out;
    }
    if ((unsigned long long)st.st_size > max) {
        e = EFBIG;
        goto out;
    }
    /* The file may grow while we read: read at most max + 1 bytes to notice. */
    size_t cap = (size_t)st.st_size + 1, n = 0;
    buf = malloc(cap + 1);
    if (!buf) {
        e = ENOMEM;
        goto out;
    }
    for (;;) {
        if (n == cap) {
            if (n > max)
                break;
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                e = ENOMEM;
                goto out;
            }
            buf = nb, cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            e = errno;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        e = EFBIG;
        goto out;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    close(fd);
    return buf;
out:
    free(buf);
    close(fd);
    errno = e;
    return NULL;
}

int proto_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                            bool durable)
{
    char tmp[4200];
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    /* The temporary's name starts with ".~" and ends in a pid and counter: a name no encoded
     * item name can take (proto_name_encode never yields a leading '.'). */
    static unsigned counter;
    if (snprintf(tmp, sizeof tmp, "%.*s.~%s.%ld.%u", dirlen, path, slash ? slash + 1 : path,
                 (long)getpid(), counter++) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
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
    if (rc)
        unlink(tmp);
    return rc;
}
