/* cwlogs.c - the CloudWatch Logs shipper: the logger's sink copies each JSON line into a bounded
 * queue; a timer on the loop sends PutLogEvents batches (JSON 1.1, SigV4 service "logs", with
 * x-amzn-logs-format: json/emf so EMF lines become metrics), one request at a time, in
 * timestamp order; failures back off and retry the same batch; the end of the run ships the
 * rest within a budget, then reports (docs/agent.md "Logs in CloudWatch Logs").
 *
 * States: CREATING (CreateLogStream in flight or due), READY, DEAD (a permanent refusal: every
 * line goes to stdout from then on, the queue too, and one log_shipping_failed line says why). */
#include "agent/cwlogs.h"
#include "agent/log.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#define SEND_DELAY_MS  500   /* a new line waits this long for company before a batch goes */
#define BACKOFF_MIN_MS 500   /* after a batch failed (its own retries spent) */
#define BACKOFF_MAX_MS 30000 /* CloudWatch down for long: one try every 30 s at most */

typedef struct ev {
    struct ev *next;
    int64_t ts_ms;
    size_t len;
    bool on_stdout; /* already written to stdout: needs no fallback */
    char data[];
} ev;

enum { ST_OFF, ST_CREATING, ST_READY, ST_DEAD };

static struct {
    int state;
    uv_loop_t *loop;
    fetch_aws *aws;
    char *group, *stream;
    bool stdout_all, pretty;
    size_t cap;
    ev *head, *tail;
    size_t queued_bytes, queued_n;
    size_t batch_n;     /* the first batch_n queued events are in flight */
    ev *batch_last;     /* the last of them */
    bool batch_spilled; /* spill_inflight wrote them to stdout already */
    bool inflight, finishing, timer_on, closed;
    uv_timer_t timer;
    int64_t last_ts;
    char *seq_token; /* only from an InvalidSequenceTokenException's expectedSequenceToken */
    int fails;       /* consecutive failed sends */
    uint64_t shipped, diverted, rejected, truncated, unshipped;
    char last_err[FETCH_ERR_MAX];
} S;

/* ---- configuration ---- */

/* CloudWatch's rule for log group names: 1-512 of [.-_/#A-Za-z0-9]. */
static bool group_name_ok(const char *g)
{
    size_t n = strlen(g);
    return n >= 1 && n <= 512 &&
           strspn(g, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/#") == n;
}

int cwlogs_config_from_env(cwlogs_config *c, char *err, size_t err_max)
{
    const char *g = getenv("DAGY_LOG_GROUP"), *o = getenv("DAGY_LOG_STDOUT");
    const char *b = getenv("DAGY_LOG_BUFFER_BYTES");
    memset(c, 0, sizeof *c);
    c->cap_bytes = CWLOGS_QUEUE_DEFAULT;
    if (g && *g && !group_name_ok(g)) {
        snprintf(err, err_max,
                 "DAGY_LOG_GROUP=%.60s: not a CloudWatch log group name (1-512 characters of "
                 "letters, digits and . - _ / #)",
                 g);
        return -EINVAL;
    }
    if (o && *o && strcmp(o, "all") && strcmp(o, "lifecycle")) {
        snprintf(err, err_max, "DAGY_LOG_STDOUT=%.40s: expected all or lifecycle", o);
        return -EINVAL;
    }
    if (b && *b) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(b, &end, 10);
        if (errno || *end || b[0] == '-' || v < CWLOGS_QUEUE_MIN || v > (4ULL << 30)) {
            snprintf(err, err_max,
                     "DAGY_LOG_BUFFER_BYTES=%.40s: expected a number of bytes %u-%llu", b,
                     CWLOGS_QUEUE_MIN, 4ULL << 30);
            return -EINVAL;
        }
        c->cap_bytes = (size_t)v;
    }
    c->stdout_all = o && !strcmp(o, "all");
    if (g && *g && !(c->group = strdup(g))) {
        snprintf(err, err_max, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

void cwlogs_config_free(cwlogs_config *c)
{
    free(c->group);
    c->group = NULL;
}

/* ---- pure helpers ---- */

bool cwlogs_lifecycle_line(int level, const char *event_type)
{
    static const char *const kept[] = {
        "run_start",        "run_end",         "shutdown_requested",  "config_error",
        "cancel_requested", "status_takeover", "log_shipping_failed", "log_shipping_incomplete"};
    if (level >= LOG_WARNING)
        return true;
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        if (!strcmp(event_type, kept[i]))
            return true;
    return false;
}

int cwlogs_json_escape(char **out, size_t *out_len, size_t *out_cap, const char *s, size_t n)
{
    if (*out_len + 2 * n + 3 > *out_cap) { /* worst case of "" and \" pairs */
        size_t cap = *out_cap ? *out_cap : 4096;
        while (cap < *out_len + 2 * n + 3)
            cap *= 2;
        char *p = realloc(*out, cap);
        if (!p)
            return -ENOMEM;
        *out = p;
        *out_cap = cap;
    }
    char *d = *out + *out_len;
    *d++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *d++ = '\\';
            *d++ = (char)c;
        } else if (c < 0x20) { /* the logger escapes these; kept valid all the same */
            *d++ = ' ';
        } else {
            *d++ = (char)c;
        }
    }
    *d++ = '"';
    *d = '\0';
    *out_len = (size_t)(d - *out);
    return 0;
}

/* The longest string value of a top-level field, or NULL. */
static cJSON *longest_string(cJSON *obj)
{
    cJSON *best = NULL;
    for (cJSON *it = obj->child; it; it = it->next)
        if (cJSON_IsString(it) && (!best || strlen(it->valuestring) > strlen(best->valuestring)))
            best = it;
    return best;
}

char *cwlogs_fit_line(const char *json, size_t len, size_t max, size_t *out_len)
{
    cJSON *obj = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        return NULL;
    }
    cJSON_AddTrueToObject(obj, "log_truncated");
    cJSON_AddNumberToObject(obj, "log_original_bytes", (double)len);
    char *text = NULL;
    /* Each round cuts the longest string in proportion to what the line is over (escapes make
     * the printed form longer than the value; uneven content may need a few rounds); bounded. */
    for (int round = 0; round < 64; round++) {
        text = cJSON_PrintUnformatted(obj);
        size_t n = text ? strlen(text) : 0;
        if (!text || n <= max)
            break;
        cJSON *s = longest_string(obj);
        size_t sl = s ? strlen(s->valuestring) : 0;
        if (!s || sl < 16) {
            cJSON_free(text);
            text = NULL;
            break;
        }
        /* In proportion to the printed size, less a margin for the marker and rounding; a
         * marker from an earlier round is not content (cutting it would gain nothing). */
        if (sl >= 11 && !strcmp(s->valuestring + sl - 11, "[truncated]"))
            sl -= 11;
        size_t keep = (size_t)((double)sl * (double)(max > 64 ? max - 64 : 0) / (double)n);
        if (keep >= sl)
            keep = sl / 2;
        keep = proto_utf8_cut(s->valuestring, sl, keep);
        char *cut = malloc(keep + 16);
        if (!cut) {
            cJSON_free(text);
            text = NULL;
            break;
        }
        memcpy(cut, s->valuestring, keep);
        memcpy(cut + keep, "[truncated]", 12);
        cJSON_SetValuestring(s, cut);
        free(cut);
        cJSON_free(text);
        text = NULL;
    }
    cJSON_Delete(obj);
    if (text)
        *out_len = strlen(text);
    return text;
}

bool cwlogs_batch_fits(size_t n, size_t bytes, int64_t span_ms, size_t len)
{
    return n < CWLOGS_BATCH_EVENTS && bytes + len + CWLOGS_EVENT_OVERHEAD <= CWLOGS_BATCH_BYTES &&
           span_ms < CWLOGS_SPAN_MS;
}

/* ---- the queue ---- */

static void ev_pop(void)
{
    ev *e = S.head;
    S.head = e->next;
    if (!S.head)
        S.tail = NULL;
    S.queued_bytes -= e->len + CWLOGS_EVENT_OVERHEAD;
    S.queued_n--;
    free(e);
}

/* Writes a queued line to stdout unless it is there already (the fallback: nothing is lost). */
static void ev_to_stdout(const ev *e)
{
    if (e->on_stdout)
        return;
    char *t = malloc(e->len + 2);
    if (!t)
        return;
    memcpy(t, e->data, e->len);
    memcpy(t + e->len, "\n", 2);
    agent_log_raw(t);
    free(t);
}

/* Every queued line to stdout; the queue empties. */
static void queue_to_stdout(void)
{
    while (S.head) {
        ev_to_stdout(S.head);
        S.unshipped++;
        ev_pop();
    }
    S.batch_n = 0;
    S.batch_last = NULL;
}

/* Makes room by sending the oldest queued line that is not in flight to stdout (so stdout
 * keeps the lines in their order). Returns false if there is none. */
static bool evict_one(void)
{
    ev *prev = S.batch_n ? S.batch_last : NULL, *v = prev ? prev->next : S.head;
    if (!v)
        return false;
    if (prev)
        prev->next = v->next;
    else
        S.head = v->next;
    if (S.tail == v)
        S.tail = prev;
    S.queued_bytes -= v->len + CWLOGS_EVENT_OVERHEAD;
    S.queued_n--;
    ev_to_stdout(v);
    S.diverted++;
    free(v);
    return true;
}

/* The queue is full: the batch in flight is written to stdout now, before any newer line goes
 * there (it stays queued; if CloudWatch takes it, it is in both places), so stdout keeps the
 * order. */
static void spill_inflight(void)
{
    size_t i = 0;
    if (S.batch_spilled)
        return;
    S.batch_spilled = true;
    for (ev *e = S.head; e && i < S.batch_n; e = e->next, i++) {
        ev_to_stdout(e);
        e->on_stdout = true;
    }
}

static void schedule(uint64_t ms);

/* The logger's sink: queue the line (a copy), say whether stdout gets it too. */
static bool sink(void *ud, const char *json, size_t len, double ts, log_level level,
                 const char *event_type)
{
    (void)ud;
    /* EMF lines are ingested once: shipped, not printed too, even with DAGY_LOG_STDOUT=all
     * (both paths would count every metric twice); they reach stdout only when shipping has
     * given up (below) or cannot take them. */
    bool emf = !strcmp(event_type, "metrics");
    bool out = S.pretty || (S.stdout_all && !emf) || cwlogs_lifecycle_line(level, event_type);
    if (S.state == ST_DEAD || S.closed)
        return true;
    if (!strcmp(event_type, "run_end"))
        S.finishing = true; /* the shipper logs nothing of its own after run_end */
    char *fitted = NULL;
    if (len > CWLOGS_EVENT_MAX) {
        size_t fl;
        if ((fitted = cwlogs_fit_line(json, len, CWLOGS_EVENT_MAX, &fl))) {
            json = fitted;
            len = fl;
            S.truncated++;
        }
    }
    /* Over the cap (CloudWatch slower than the log, or down): the oldest lines go to stdout,
     * the batch in flight first. */
    if (len <= CWLOGS_EVENT_MAX && S.queued_bytes + len + CWLOGS_EVENT_OVERHEAD > S.cap)
        spill_inflight();
    while (len <= CWLOGS_EVENT_MAX && S.queued_bytes + len + CWLOGS_EVENT_OVERHEAD > S.cap &&
           evict_one())
        ;
    ev *e = len <= CWLOGS_EVENT_MAX && S.queued_bytes + len + CWLOGS_EVENT_OVERHEAD <= S.cap
                ? malloc(sizeof *e + len)
                : NULL;
    if (!e) { /* still no room (all in flight), unfit, or no memory: stdout keeps it */
        S.diverted++;
        cJSON_free(fitted);
        return true;
    }
    int64_t ms = (int64_t)(ts * 1000.0);
    e->ts_ms = ms > S.last_ts ? ms : S.last_ts; /* a clock stepping back keeps the order */
    S.last_ts = e->ts_ms;
    e->len = len;
    e->on_stdout = out;
    e->next = NULL;
    memcpy(e->data, json, len);
    cJSON_free(fitted);
    if (S.tail)
        S.tail->next = e;
    else
        S.head = e;
    S.tail = e;
    S.queued_bytes += len + CWLOGS_EVENT_OVERHEAD;
    S.queued_n++;
    if (S.state == ST_READY && !S.inflight && !S.timer_on)
        schedule(S.queued_n >= CWLOGS_BATCH_EVENTS || S.queued_bytes >= CWLOGS_BATCH_BYTES
                     ? 0
                     : SEND_DELAY_MS);
    return out;
}

/* ---- requests ---- */

typedef proto_sbuf sbuf;

/* Appends s[0..n) as the body of a JSON string (cwlogs_json_escape). */
static void sb_str(sbuf *b, const char *s, size_t n)
{
    if (!b->oom && cwlogs_json_escape(&b->s, &b->len, &b->cap, s, n) < 0)
        b->oom = true;
}

/* {"logGroupName":G,"logStreamName":S — the start of every request body. */
static void sb_target(sbuf *b)
{
    proto_sbuf_put(b, "{\"logGroupName\":", 16);
    sb_str(b, S.group, strlen(S.group));
    proto_sbuf_put(b, ",\"logStreamName\":", 17);
    sb_str(b, S.stream, strlen(S.stream));
}

/* The next PutLogEvents body: queued events from the head within the batch limits (bytes,
 * count, 24 h span). *n = how many. NULL when out of memory. */
static char *batch_body(size_t *n, ev **last)
{
    sbuf b = {0};
    size_t bytes = 0;
    *n = 0;
    sb_target(&b);
    proto_sbuf_put(&b, ",\"logEvents\":[", 14);
    int64_t first = S.head ? S.head->ts_ms : 0;
    *last = NULL;
    for (ev *e = S.head; e; e = e->next) {
        if (!cwlogs_batch_fits(*n, bytes, e->ts_ms - first, e->len))
            break;
        *last = e;
        size_t add = e->len + CWLOGS_EVENT_OVERHEAD;
        char ts[48];
        int tl = snprintf(ts, sizeof ts, "%s{\"timestamp\":%lld,\"message\":", *n ? "," : "",
                          (long long)e->ts_ms);
        proto_sbuf_put(&b, ts, (size_t)tl);
        sb_str(&b, e->data, e->len);
        proto_sbuf_put(&b, "}", 1);
        bytes += add;
        (*n)++;
    }
    proto_sbuf_put(&b, "]", 1);
    if (S.seq_token) {
        proto_sbuf_put(&b, ",\"sequenceToken\":", 17);
        sb_str(&b, S.seq_token, strlen(S.seq_token));
    }
    proto_sbuf_put(&b, "}", 1);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

static void on_timer(uv_timer_t *t);

static void schedule(uint64_t ms)
{
    uv_timer_start(&S.timer, on_timer, ms, 0);
    S.timer_on = true;
}

/* A permanent refusal: every line to stdout from now on, the queue first, then why. */
static void die(const char *why)
{
    S.state = ST_DEAD;
    snprintf(S.last_err, sizeof S.last_err, "%s", why);
    queue_to_stdout();
    log_line *l = agent_log_begin(LOG_ERROR, "log_shipping_failed",
                                  "shipping log lines to CloudWatch Logs stopped: %s; every line "
                                  "goes to stdout from now on",
                                  why);
    agent_log_str(l, "error", why);
    agent_log_str(l, "log_group", S.group);
    agent_log_end(l);
}

/* A failure that may pass: try again later (longer each time, at most BACKOFF_MAX_MS). */
static void backoff(const char *why)
{
    S.fails++;
    snprintf(S.last_err, sizeof S.last_err, "%s", why);
    uint64_t ms = BACKOFF_MIN_MS;
    for (int i = 1; i < S.fails && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    if (S.finishing && ms > 1000)
        ms = 1000;
    if (S.fails == 1 && !S.finishing) {
        log_line *l = agent_log_begin(LOG_WARNING, "log_shipping_degraded",
                                      "CloudWatch Logs is failing (%s); lines are kept (up to %zu "
                                      "bytes) and sent again",
                                      why, S.cap);
        agent_log_str(l, "error", why);
        agent_log_end(l);
    }
    schedule(ms);
}

/* A request answered (or given up): the shared part of the two callbacks. */
static void recovered(void)
{
    if (S.fails > 0 && !S.finishing)
        agent_log(LOG_INFO, "log_shipping_recovered",
                  "CloudWatch Logs works again after %d failed attempt%s", S.fails,
                  S.fails == 1 ? "" : "s");
    S.fails = 0;
}

static bool answered_ok(const fetch_aws_result *r)
{
    return r->err == 0 && r->http_status >= 200 && r->http_status < 300;
}

static void send_batch(void);
static void create_stream(void);

static void on_created(void *ud, const fetch_aws_result *r)
{
    (void)ud;
    S.inflight = false;
    if (S.closed || S.state != ST_CREATING)
        return;
    const char *code = r->error_code ? r->error_code : "";
    if (answered_ok(r) || !strcmp(code, "ResourceAlreadyExistsException")) {
        recovered();
        S.state = ST_READY;
        if (S.head)
            schedule(0);
    } else if (!strcmp(code, "ResourceNotFoundException")) {
        char why[FETCH_ERR_MAX + 160];
        snprintf(why, sizeof why,
                 "log group %.512s does not exist (the agent does not create it: create it "
                 "with its retention policy): %s",
                 S.group, r->message ? r->message : code);
        die(why);
    } else if (r->transient || r->err == -ECANCELED) {
        backoff(r->message ? r->message : "CreateLogStream failed");
    } else {
        die(r->message ? r->message : "CreateLogStream refused");
    }
}

/* The events of an accepted batch that CloudWatch still rejected (too old, too new, expired):
 * counted, and written to stdout so they are not lost. */
static void count_rejected(const cJSON *j, size_t n)
{
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(j, "rejectedLogEventsInfo");
    if (!cJSON_IsObject(info))
        return;
    const cJSON *tn = cJSON_GetObjectItemCaseSensitive(info, "tooNewLogEventStartIndex");
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(info, "tooOldLogEventEndIndex");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(info, "expiredLogEventEndIndex");
    double new_from = cJSON_IsNumber(tn) ? tn->valuedouble : (double)n;
    double old_to = cJSON_IsNumber(to) ? to->valuedouble : -1;
    if (cJSON_IsNumber(ex) && ex->valuedouble > old_to)
        old_to = ex->valuedouble;
    size_t i = 0;
    for (ev *e = S.head; e && i < n; e = e->next, i++) {
        if ((double)i <= old_to || (double)i >= new_from) {
            ev_to_stdout(e);
            S.rejected++;
        }
    }
}

/* The sequence token CloudWatch says it expects, from an InvalidSequenceTokenException. */
static void take_expected_token(const cJSON *j)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "expectedSequenceToken");
    free(S.seq_token);
    S.seq_token = cJSON_IsString(t) && t->valuestring[0] ? strdup(t->valuestring) : NULL;
}

static void on_put(void *ud, const fetch_aws_result *r)
{
    (void)ud;
    S.inflight = false;
    if (S.closed || S.state != ST_READY)
        return;
    const char *code = r->error_code ? r->error_code : "";
    size_t n = S.batch_n;
    S.batch_n = 0;
    S.batch_last = NULL;
    if (answered_ok(r) || !strcmp(code, "DataAlreadyAcceptedException")) {
        recovered();
        if (answered_ok(r))
            count_rejected(r->json, n);
        const cJSON *nt = cJSON_GetObjectItemCaseSensitive(r->json, "nextSequenceToken");
        free(S.seq_token);
        S.seq_token = cJSON_IsString(nt) ? strdup(nt->valuestring) : NULL;
        for (size_t i = 0; i < n && S.head; i++)
            ev_pop();
        S.shipped += n;
        if (S.head)
            schedule(S.finishing || S.queued_n >= CWLOGS_BATCH_EVENTS ||
                             S.queued_bytes >= CWLOGS_BATCH_BYTES
                         ? 0
                         : SEND_DELAY_MS);
    } else if (!strcmp(code, "InvalidSequenceTokenException") && S.fails < 8) {
        take_expected_token(r->json);
        S.fails++;
        schedule(0);
    } else if (!strcmp(code, "ResourceNotFoundException") && S.fails < 8) {
        S.fails++; /* the stream went away (deleted by hand): create it again */
        S.state = ST_CREATING;
        schedule(0);
    } else if (r->transient || r->err == -ECANCELED || S.fails < 1) {
        /* Some refusals pass too (a clock jump, a stream being recreated): one more try. */
        backoff(r->message ? r->message : "PutLogEvents failed");
    } else {
        die(r->message ? r->message : "PutLogEvents refused");
    }
}

static const fetch_retry RETRY = {3, 200, 2000};

static void create_stream(void)
{
    sbuf b = {0};
    sb_target(&b);
    proto_sbuf_put(&b, "}", 1);
    fetch_json_opts o = {.retry = &RETRY, .json11 = true};
    int rc = b.oom ? -ENOMEM
                   : fetch_aws_json_opts(S.aws, "logs", "Logs_20140328.CreateLogStream", b.s, &o,
                                         on_created, NULL);
    free(b.s);
    if (rc < 0) {
        backoff(strerror(-rc));
        return;
    }
    S.inflight = true;
}

static void send_batch(void)
{
    size_t n;
    ev *last;
    char *body = batch_body(&n, &last);
    fetch_json_opts o = {.retry = &RETRY, .json11 = true, .header = "x-amzn-logs-format: json/emf"};
    int rc = !body ? -ENOMEM
                   : fetch_aws_json_opts(S.aws, "logs", "Logs_20140328.PutLogEvents", body, &o,
                                         on_put, NULL);
    free(body);
    if (rc < 0) {
        backoff(strerror(-rc));
        return;
    }
    S.batch_n = n;
    S.batch_last = last;
    S.batch_spilled = false;
    S.inflight = true;
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    S.timer_on = false;
    if (S.inflight || S.closed)
        return;
    if (S.state == ST_CREATING)
        create_stream();
    else if (S.state == ST_READY && S.head)
        send_batch();
}

/* ---- lifecycle ---- */

int cwlogs_start(uv_loop_t *loop, fetch_aws *aws, const cwlogs_config *c, const char *stream,
                 bool pretty)
{
    if (!c->group || S.state != ST_OFF)
        return 0;
    memset(&S, 0, sizeof S);
    S.loop = loop;
    S.aws = aws;
    S.group = strdup(c->group);
    S.stream = strdup(stream);
    if (!S.group || !S.stream) {
        free(S.group);
        free(S.stream);
        return -ENOMEM;
    }
    S.stdout_all = c->stdout_all;
    S.pretty = pretty;
    S.cap = c->cap_bytes;
    uv_timer_init(loop, &S.timer);
    S.state = ST_CREATING;
    agent_log_set_sink(sink, NULL);
    agent_log_hold_run_end(true);
    schedule(0);
    return 0;
}

static void on_deadline(uv_timer_t *t)
{
    (void)t; /* wakes the loop: cwlogs_finish looks at the clock */
}

/* What missed CloudWatch, said on stdout (the sink is detached: stdout only). */
static void report(void)
{
    if (!S.diverted && !S.unshipped && !S.rejected && !S.truncated && S.state != ST_DEAD)
        return;
    uint64_t missed = S.diverted + S.unshipped + S.rejected;
    log_line *l = agent_log_begin(
        missed || S.state == ST_DEAD ? LOG_WARNING : LOG_INFO, "log_shipping_incomplete",
        "%llu log line%s did not reach CloudWatch Logs stream %s (written to stdout instead), "
        "%llu line%s truncated to fit an event%s%s",
        (unsigned long long)missed, missed == 1 ? "" : "s", S.stream,
        (unsigned long long)S.truncated, S.truncated == 1 ? " was" : "s were",
        S.last_err[0] && missed ? "; last error: " : "", S.last_err[0] && missed ? S.last_err : "");
    agent_log_int(l, "lines_shipped", (int64_t)S.shipped);
    agent_log_int(l, "lines_not_shipped", (int64_t)missed);
    agent_log_int(l, "lines_over_queue_cap", (int64_t)S.diverted);
    agent_log_int(l, "lines_unshipped_at_exit", (int64_t)S.unshipped);
    agent_log_int(l, "lines_rejected", (int64_t)S.rejected);
    agent_log_int(l, "lines_truncated", (int64_t)S.truncated);
    agent_log_str(l, "log_group", S.group);
    if (S.last_err[0] && missed)
        agent_log_str(l, "error", S.last_err);
    agent_log_end(l);
}

void cwlogs_finish(uint64_t budget_ms)
{
    if (S.state == ST_OFF || S.closed)
        return;
    S.finishing = true;
    uv_timer_t deadline;
    uv_timer_init(S.loop, &deadline);
    uv_timer_start(&deadline, on_deadline, budget_ms, 0);
    uint64_t end = uv_now(S.loop) + budget_ms;
    /* A backoff may have up to 30 s to go: the end does not wait for it. */
    if (!S.inflight && (S.state == ST_CREATING || (S.state == ST_READY && S.head)))
        schedule(0);
    while (S.state != ST_DEAD && (S.head || S.inflight) && uv_now(S.loop) < end)
        if (!uv_run(S.loop, UV_RUN_ONCE))
            break;
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(S.loop, UV_RUN_NOWAIT); /* the deadline handle closes */
    S.closed = true;
    uv_timer_stop(&S.timer);
    agent_log_set_sink(NULL, NULL);
    queue_to_stdout();
    report();
    agent_log_release();
    free(S.group);
    free(S.stream);
    free(S.seq_token);
    S.group = S.stream = S.seq_token = NULL;
}
