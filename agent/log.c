/* log.c - the agent's log lines: JSON objects (one per line, one write(2) each) or the pretty
 * terminal view with a live progress line.
 *
 * Single-threaded by design: the agent logs only from its loop thread, so one static line buffer
 * serves every call. JSON escaping validates UTF-8 and replaces invalid bytes with U+FFFD, which
 * keeps every line parseable whatever a task prints. */
#include "agent/log.h"
#include "proto/util.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct buf {
    char *p;
    size_t len, cap;
};

struct log_line {
    struct buf json;   /* the JSON object being built */
    struct buf pretty; /* extra fields for the pretty view ("key=value ...") */
    log_level level;
    char event[48];
    char task[136];
    char status[24];
    char stream[8];
    size_t msg_len; /* the message's length at the start of `pretty` */
    double ts;      /* the line's timestamp (UNIX seconds) */
    bool in_use;
};

static struct {
    log_format fmt;
    log_level min;
    int fd;
    char *run_id, *flow_name, *flow_version, *org_id, *correlation_id;
    char *progress;      /* pretty mode: the live progress line, redrawn under the log */
    agent_log_sink sink; /* also receives every JSON line (CloudWatch Logs shipper) */
    void *sink_ud;
    bool hold_run_end; /* keep run_end's stdout bytes until agent_log_release */
    bool capture;      /* writing the run_end line itself now: its bytes go to `held` */
    struct buf held;   /* those bytes */
    int batching;      /* agent_log_batch_begin depth: stdout bytes wait in `batch` */
    struct buf batch;
    bool flush_at_exit; /* atexit(flush_batch) registered */
    struct log_line line;
} L = {.fmt = LOG_FORMAT_JSON, .min = LOG_INFO, .fd = 1};

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        abort(); /* out of memory while logging: nothing sensible is left to do */
    b->p = p;
    b->cap = cap;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* Appends s as a JSON string literal (with quotes). */
static void buf_json_str(struct buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    buf_reserve(b, n + 2);
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x7F) {
            size_t j = i;
            while (j < n && u[j] >= 0x20 && u[j] != '"' && u[j] != '\\' && u[j] < 0x7F)
                j++;
            buf_add(b, s + i, j - i);
            i = j;
            continue;
        }
        char esc[8];
        switch (c) {
        case '"':
            buf_add(b, "\\\"", 2);
            i++;
            continue;
        case '\\':
            buf_add(b, "\\\\", 2);
            i++;
            continue;
        case '\n':
            buf_add(b, "\\n", 2);
            i++;
            continue;
        case '\r':
            buf_add(b, "\\r", 2);
            i++;
            continue;
        case '\t':
            buf_add(b, "\\t", 2);
            i++;
            continue;
        default:
            break;
        }
        if (c < 0x20 || c == 0x7F) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            buf_add(b, esc, 6);
            i++;
            continue;
        }
        size_t len = proto_utf8_seq(u + i, n - i);
        if (len == 2 && c == 0xC2 && u[i + 1] < 0xA0) {
            /* C1 controls (U+0080-U+009F) escaped too: `cat` of a log file must not drive the
             * terminal that shows it. */
            snprintf(esc, sizeof esc, "\\u%04x", u[i + 1]);
            buf_add(b, esc, 6);
            i += 2;
            continue;
        }
        if (len == 0) {
            buf_add(b, "\\ufffd", 6);
            i++;
        } else {
            buf_add(b, s + i, len);
            i += len;
        }
    }
    buf_add(b, "\"", 1);
}

/* Decodes the code point of a valid UTF-8 sequence of `len` bytes. */
static unsigned utf8_cp(const unsigned char *u, size_t len)
{
    unsigned cp = len == 1 ? u[0] : u[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++)
        cp = (cp << 6) | (u[i] & 0x3F);
    return cp;
}

/* Appends s for the operator's terminal: C0 controls (but tab), DEL, C1 controls, bidi
 * overrides and invalid bytes become visible escapes (\x1b, \r, \u009b, \u202e, \xff), so a
 * task cannot move the cursor, retitle the window or clear the screen through the pretty view. */
static void buf_add_visible(struct buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    char esc[8];
    for (size_t i = 0; i < n;) {
        size_t len = proto_utf8_seq(u + i, n - i);
        unsigned cp = len ? utf8_cp(u + i, len) : 0x100;
        bool c0 = len == 1 && ((cp < 0x20 && cp != '\t') || cp == 0x7F);
        bool c1_bidi = (cp >= 0x80 && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) ||
                       (cp >= 0x2066 && cp <= 0x2069);
        if (!len || c0) {
            if (cp == '\r' || cp == '\n')
                snprintf(esc, sizeof esc, "\\%c", cp == '\r' ? 'r' : 'n');
            else
                snprintf(esc, sizeof esc, "\\x%02x", u[i]);
            buf_adds(b, esc);
            i++;
        } else if (c1_bidi && len > 1) {
            snprintf(esc, sizeof esc, "\\u%04x", cp);
            buf_adds(b, esc);
            i += len;
        } else {
            buf_add(b, s + i, len);
            i += len;
        }
    }
}

/* n, less a character that a cut at n split in two (vsnprintf's truncation knows no UTF-8). */
static size_t drop_split_tail(const char *s, size_t n)
{
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n;
}

static void set_str(char **dst, const char *v)
{
    if (!v)
        return;
    free(*dst);
    *dst = strdup(v);
}

void agent_log_init(log_format fmt, log_level min_level, int fd)
{
    L.fmt = fmt;
    L.min = min_level;
    L.fd = fd;
}

int agent_log_parse_level(const char *s, log_level *out)
{
    static const struct {
        const char *name;
        log_level lv;
    } t[] = {{"DEBUG", LOG_DEBUG},
             {"INFO", LOG_INFO},
             {"WARNING", LOG_WARNING},
             {"WARN", LOG_WARNING},
             {"ERROR", LOG_ERROR}};
    for (size_t i = 0; s && i < sizeof t / sizeof t[0]; i++) {
        if (strcasecmp(s, t[i].name) == 0) {
            *out = t[i].lv;
            return 0;
        }
    }
    return -EINVAL;
}

void agent_log_context(const char *run_id, const char *flow_name, const char *flow_version,
                       const char *org_id, const char *correlation_id)
{
    set_str(&L.run_id, run_id);
    set_str(&L.flow_name, flow_name);
    set_str(&L.flow_version, flow_version);
    set_str(&L.org_id, org_id);
    set_str(&L.correlation_id, correlation_id);
}

/* Adds `"key":` to the JSON object being built. */
static void add_key(log_line *l, const char *key)
{
    buf_add(&l->json, ",", 1);
    buf_json_str(&l->json, key, strlen(key));
    buf_add(&l->json, ":", 1);
}

/* Records a field for the pretty view, skipping those the pretty header already shows. */
static void pretty_field(log_line *l, const char *key, const char *val, size_t len)
{
    if (L.fmt != LOG_FORMAT_PRETTY)
        return;
    if (!strcmp(key, "task_name")) {
        snprintf(l->task, sizeof l->task, "%.*s", (int)len, val);
        return;
    }
    if (!strcmp(key, "status")) {
        snprintf(l->status, sizeof l->status, "%.*s", (int)len, val);
        return;
    }
    if (!strcmp(key, "stream")) {
        snprintf(l->stream, sizeof l->stream, "%.*s", (int)len, val);
        return;
    }
    /* The human view shows the message plus only what it does not already say. */
    if (!strcmp(key, "duration_seconds") && strcmp(l->event, "run_end")) {
        buf_adds(&l->pretty, " (");
        buf_add(&l->pretty, val, len);
        buf_adds(&l->pretty, " s)");
    } else if (!strcmp(key, "attempt") && len > 0 && !(len == 1 && val[0] <= '1')) {
        buf_adds(&l->pretty, " [attempt ");
        buf_add(&l->pretty, val, len);
        buf_adds(&l->pretty, "]");
    }
}

log_line *agent_log_begin_text(log_level level, const char *event_type, const char *msg, size_t len)
{
    if (level < L.min)
        return NULL;
    log_line *l = &L.line;
    assert(!l->in_use); /* lines are never nested */
    l->in_use = true;
    l->level = level;
    l->json.len = 0;
    l->pretty.len = 0;
    l->task[0] = l->status[0] = l->stream[0] = '\0';
    snprintf(l->event, sizeof l->event, "%s", event_type);

    char ts[PROTO_ISO_LEN];
    l->ts = proto_now();
    buf_adds(&l->json, "{\"timestamp\":\"");
    buf_adds(&l->json, proto_iso_time(l->ts, ts));
    buf_adds(&l->json, "\",\"level\":\"");
    buf_adds(&l->json, level_names[level]);
    buf_adds(&l->json, "\"");
    buf_add(&l->pretty, msg, len); /* the pretty view starts with the message */
    l->msg_len = l->pretty.len;
    agent_log_str(l, "event_type", event_type);
    agent_log_strn(l, "message", msg, len);
    agent_log_str(l, "run_id", L.run_id ? L.run_id : "");
    agent_log_str(l, "flow_name", L.flow_name ? L.flow_name : "");
    agent_log_str(l, "correlation_id", L.correlation_id ? L.correlation_id : "");
    agent_log_str(l, "flow_version", L.flow_version);
    agent_log_str(l, "org_id", L.org_id);
    return l;
}

log_line *agent_log_begin(log_level level, const char *event_type, const char *fmt, ...)
{
    if (level < L.min)
        return NULL;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = n < 0                    ? 0
                 : (size_t)n < sizeof msg ? (size_t)n
                                          : drop_split_tail(msg, sizeof msg - 1);
    return agent_log_begin_text(level, event_type, msg, len);
}

/* Metrics lines are data, not diagnostics: DAGY_LOG_LEVEL does not filter them (the minimum
 * level is lifted for this one line). JSON format only, and only with a flow name, the value of
 * their dimension (agent/metrics.h). */
log_line *agent_log_begin_metrics(const char *msg)
{
    if (L.fmt != LOG_FORMAT_JSON || !L.flow_name || !*L.flow_name)
        return NULL;
    log_level min = L.min;
    L.min = LOG_DEBUG;
    log_line *l = agent_log_begin_text(LOG_INFO, "metrics", msg, strlen(msg));
    L.min = min;
    return l;
}

void agent_log_strn(log_line *l, const char *key, const char *val, size_t len)
{
    if (!l || !val)
        return;
    add_key(l, key);
    buf_json_str(&l->json, val, len);
    pretty_field(l, key, val, len);
}

void agent_log_str(log_line *l, const char *key, const char *val)
{
    if (val)
        agent_log_strn(l, key, val, strlen(val));
}

void agent_log_int(log_line *l, const char *key, int64_t val)
{
    if (!l)
        return;
    char num[PROTO_NUM_MAX];
    size_t n = proto_fmt_int(num, val);
    add_key(l, key);
    buf_add(&l->json, num, n);
    pretty_field(l, key, num, n);
}

void agent_log_num(log_line *l, const char *key, double val)
{
    if (!l)
        return;
    char num[32];
    int n = isfinite(val) ? snprintf(num, sizeof num, "%.3f", val) : snprintf(num, 5, "null");
    add_key(l, key);
    buf_add(&l->json, num, (size_t)n);
    pretty_field(l, key, num, (size_t)n);
}

void agent_log_bool(log_line *l, const char *key, bool val)
{
    if (!l)
        return;
    add_key(l, key);
    buf_adds(&l->json, val ? "true" : "false");
    pretty_field(l, key, val ? "true" : "false", val ? 4 : 5);
}

void agent_log_json_text(log_line *l, const char *key, const char *json, size_t len)
{
    if (!l || !json)
        return;
    add_key(l, key);
    buf_add(&l->json, json, len);
    pretty_field(l, key, json, len);
}

void agent_log_json(log_line *l, const char *key, const cJSON *val)
{
    if (!l || !val)
        return;
    char *s = cJSON_PrintUnformatted(val);
    if (!s)
        return;
    agent_log_json_text(l, key, s, strlen(s));
    cJSON_free(s);
}

#define LOG_BATCH_MAX (64 * 1024) /* a batch is written once it holds this much */

static void write_out(const char *p, size_t n);

/* Writes the lines a batch gathered, in one write(2). */
static void flush_batch(void)
{
    if (!L.batch.len)
        return;
    size_t n = L.batch.len;
    L.batch.len = 0;
    write_out(L.batch.p, n);
}

/* Writes all of p (retrying on EINTR and short writes). A failed stdout is ignored: logging must
 * never stop the run. A held run_end line collects the bytes instead, and a batch gathers them. */
static void write_all(const char *p, size_t n)
{
    if (L.capture) {
        buf_add(&L.held, p, n);
        return;
    }
    if (L.batching) {
        buf_add(&L.batch, p, n);
        if (L.batch.len >= LOG_BATCH_MAX) /* a map's thousand task_start lines: bounded memory */
            flush_batch();
        return;
    }
    write_out(p, n);
}

static void write_out(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(L.fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* The pretty view of one line: "12:00:01 ✓ extract  task_end  message  key=value". */
static void write_pretty(log_line *l)
{
    static const char *const colors[] = {"\033[2m", "", "\033[33m", "\033[31m"};
    struct buf out = {0};
    char ts[32];
    proto_iso_time(proto_now(), ts);
    buf_adds(&out, "\r\033[K");
    buf_add(&out, ts + 11, 8);
    buf_adds(&out, " ");
    buf_adds(&out, colors[l->level]);
    if (!strcmp(l->event, "task_output")) {
        buf_adds(&out, l->task);
        buf_adds(&out, !strcmp(l->stream, "stderr") ? " ! " : " | ");
        buf_add_visible(&out, l->pretty.p, l->msg_len); /* a task's own line, made visible */
    } else {
        const char *mark = !strcmp(l->status, "SUCCEEDED") ? "\033[32m✓\033[0m "
                           : !strcmp(l->status, "FAILED")  ? "\033[31m✗\033[0m "
                                                           : "";
        buf_adds(&out, mark);
        buf_add_visible(&out, l->pretty.p, l->pretty.len);
    }
    buf_adds(&out, "\033[0m\n");
    if (L.progress)
        buf_adds(&out, L.progress);
    write_all(out.p, out.len);
    free(out.p);
}

void agent_log_end(log_line *l)
{
    if (!l)
        return;
    buf_add(&l->json, "}", 1);
    bool to_stdout = true;
    if (L.sink) /* the JSON object as is, without its newline */
        to_stdout = L.sink(L.sink_ud, l->json.p, l->json.len, l->ts, l->level, l->event);
    /* Only the run_end line's own bytes are held (what the sink wrote meanwhile is older). */
    L.capture = L.hold_run_end && !strcmp(l->event, "run_end");
    if (to_stdout && L.fmt == LOG_FORMAT_PRETTY) {
        write_pretty(l);
    } else if (to_stdout) {
        buf_add(&l->json, "\n", 1);
        write_all(l->json.p, l->json.len);
    }
    L.capture = false;
    l->in_use = false;
    /* An error or the run's end is never left waiting in a batch: whatever follows may be the
     * process's end. */
    if (L.batching && (l->level >= LOG_ERROR || !strcmp(l->event, "run_end")))
        flush_batch();
}

void agent_log_batch_begin(void)
{
    if (!L.flush_at_exit) {
        L.flush_at_exit = true;
        atexit(flush_batch);
    }
    L.batching++;
}

void agent_log_batch_end(void)
{
    if (L.batching > 0 && --L.batching == 0)
        flush_batch();
}

void agent_log(log_level level, const char *event_type, const char *fmt, ...)
{
    if (level < L.min)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    agent_log_end(agent_log_begin(level, event_type, "%s", msg));
}

void agent_log_set_sink(agent_log_sink sink, void *ud)
{
    L.sink = sink;
    L.sink_ud = ud;
}

void agent_log_hold_run_end(bool hold)
{
    L.hold_run_end = hold;
}

void agent_log_release(void)
{
    L.hold_run_end = false;
    flush_batch(); /* older than the held line */
    if (L.held.len)
        write_out(L.held.p, L.held.len);
    free(L.held.p);
    L.held = (struct buf){0};
}

bool agent_log_is_pretty(void)
{
    return L.fmt == LOG_FORMAT_PRETTY;
}

void agent_log_progress(const char *line)
{
    if (L.fmt != LOG_FORMAT_PRETTY)
        return;
    struct buf out = {0}, shown = {0};
    buf_add_visible(&shown, line ? line : "", line ? strlen(line) : 0);
    set_str(&L.progress, shown.p ? shown.p : "");
    free(shown.p);
    buf_adds(&out, "\r\033[K");
    buf_adds(&out, L.progress);
    write_all(out.p, out.len);
    free(out.p);
}

void agent_log_raw(const char *text)
{
    if (L.progress && L.fmt == LOG_FORMAT_PRETTY)
        write_all("\r\033[K", 4);
    write_all(text, strlen(text));
}
