/* s3.c - S3 objects: s3:// URI parsing, downloads to a file (a first ranged GET learns the size
 * and ETag, the rest comes as parallel ranged GETs pinned with If-Match and written in place
 * with pwrite, so memory stays bounded), #sha256= verification, and PutObject. Error messages
 * name the s3:// URI and say what to fix. */
#include "fetch/creds.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fetch/unpack.h"
#include "proto/sigv4.h"
#include "proto/util.h"

#define PART_SIZE (8ull << 20)
/* A streamed zip's last bytes, fetched right after the probe: its end-of-central-directory
 * record and (for up to ~10000 entries) its central directory, so the reader can start on the
 * entries while the rest downloads. */
#define TAIL_SIZE      (1ull << 20)
#define MAX_INFLIGHT   8
#define PROGRESS_STEP  (1ull << 20)
#define S3_ERRBODY_MAX (64u << 10)

/* Uploads from a file (fetch_s3_put_fd): one PutObject up to S3's limit, multipart beyond. */
#define S3_SINGLE_PUT_MAX (5ull << 30) /* S3's PutObject limit */
#define MP_PART_MIN       (5ull << 20) /* S3's smallest part (but the last) */
#define MP_PART_MIN_AUTO  (64ull << 20)
#define MP_PARTS_MAX      10000
#define MP_INFLIGHT       4

/* Endpoint and encoded path of an object: path-style on custom endpoints and for bucket names
 * with dots (TLS wildcard certificates cover one label), virtual-hosted otherwise. */
static int s3_target(fetch_aws *a, const char *bucket, const char *key, fetch_endpoint *ep,
                     char **path)
{
    const fetch_endpoint *base = fetch__aws_endpoint(a, "s3");
    const char *region = fetch_aws_region(a);
    bool path_style = base->custom || strchr(bucket, '.');
    char *enc = sigv4_uri_encode(key, strlen(key), true);
    char buf[512];
    memset(ep, 0, sizeof *ep);
    if (!enc)
        return -ENOMEM;
    size_t plen = strlen(bucket) + strlen(enc) + 3;
    *path = malloc(plen);
    if (path_style) {
        ep->base = strdup(base->base);
        ep->host = strdup(base->host);
        if (*path)
            snprintf(*path, plen, "/%s/%s", bucket, enc);
    } else {
        snprintf(buf, sizeof buf, "%s.%s", bucket, base->host);
        ep->host = strdup(buf);
        snprintf(buf, sizeof buf, "https://%s.%s", bucket, base->host);
        ep->base = strdup(buf);
        if (*path)
            snprintf(*path, plen, "/%s", enc);
    }
    (void)region;
    free(enc);
    if (!ep->base || !ep->host || !*path) {
        fetch_endpoint_clear(ep);
        free(*path);
        *path = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* Copies the text of <tag>...</tag> from an S3 XML error body ("" when absent), cleaned and
 * bounded: the body is at most S3_ERRBODY_MAX bytes of anything. */
static void xml_tag(const fetch_http_resp *r, const char *tag, char *out, size_t n)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *s = memmem(r->body, r->body_len, open, strlen(open)), *e;
    out[0] = '\0';
    if (!s)
        return;
    s += strlen(open);
    if (!(e = memmem(s, r->body_len - (size_t)(s - r->body), close, strlen(close))))
        return;
    fetch_http__text(out, n, s, (size_t)(e - s));
}

/* The S3 error code of an answer: <Code> of the XML body, else derived from the status. */
void fetch__s3_error_code(const fetch_http_resp *r, char *code, size_t n, char *msg, size_t mn)
{
    xml_tag(r, "Code", code, n);
    xml_tag(r, "Message", msg, mn);
    if (code[0] || r->err)
        return;
    if (r->status == 404)
        snprintf(code, n, "NoSuchKey");
    else if (r->status == 403)
        snprintf(code, n, "AccessDenied");
    else if (r->status == 412)
        snprintf(code, n, "PreconditionFailed");
}

/* A sentence for the user: the URI, the code, what it means and what to check. */
static void s3_describe(fetch_aws *a, char *out, size_t n, const char *uri, const char *action,
                        const fetch_http_resp *r, const char *code, const char *awsmsg,
                        int attempts)
{
    const char *after = attempts > 1 ? " (gave up after retries)" : "";
    if (r->err) {
        snprintf(out, n, "%s: %s%s", uri, r->errmsg[0] ? r->errmsg : strerror(-r->err), after);
    } else if (strcmp(code, "NoSuchKey") == 0) {
        snprintf(out, n, "%s: NoSuchKey: the object does not exist", uri);
    } else if (strcmp(code, "NoSuchBucket") == 0) {
        snprintf(out, n, "%s: NoSuchBucket: the bucket does not exist", uri);
    } else if (strcmp(code, "AccessDenied") == 0) {
        snprintf(out, n, "%s: AccessDenied: %s; check the task role's s3:%s permission", uri,
                 awsmsg[0] ? awsmsg : "access denied", action);
    } else if (strcmp(code, "SignatureDoesNotMatch") == 0) {
        snprintf(out, n,
                 "%s: SignatureDoesNotMatch: S3 rejected the request signature; check "
                 "AWS_SECRET_ACCESS_KEY",
                 uri);
    } else if (strcmp(code, "InvalidAccessKeyId") == 0) {
        snprintf(out, n,
                 "%s: InvalidAccessKeyId: S3 does not know the access key; check "
                 "AWS_ACCESS_KEY_ID",
                 uri);
    } else if (strcmp(code, "ExpiredToken") == 0 || strcmp(code, "TokenRefreshRequired") == 0) {
        snprintf(out, n, "%s: %s: the session token has expired; refresh the credentials", uri,
                 code);
    } else if (strcmp(code, "PreconditionFailed") == 0) {
        snprintf(out, n,
                 "%s: PreconditionFailed: the object changed during the download (its ETag no "
                 "longer matches); retry",
                 uri);
    } else if (code[0]) {
        snprintf(out, n, "%s: %s: %s (HTTP %ld)%s", uri, code, awsmsg, r->status, after);
    } else {
        snprintf(out, n, "%s: HTTP %ld%s", uri, r->status, after);
    }
    fetch__redact(a, out, n);
}

static bool is_expired_code(const char *code)
{
    return strcmp(code, "ExpiredToken") == 0 || strcmp(code, "TokenRefreshRequired") == 0;
}

/* ---- download ---- */

typedef struct s3get s3get;

/* One ranged GET in flight (or waiting to retry) for bytes [start, end] of the object. */
typedef struct {
    s3get *g;
    uv_timer_t timer; /* retry backoff */
    bool active;
    bool first; /* the size-and-ETag probing request */
    bool tail;  /* the early tail [tail_from, total) of a streamed zip */
    uint64_t start, end, got;
    uint64_t from; /* first byte asked for by the current attempt */
    int attempt;
    bool refreshed;
    fetch__call *call;
} part;

struct s3get {
    fetch__op op;
    fetch_aws *a;
    fetch_retry retry;
    fetch_endpoint ep;
    char *uri, *path_enc, *file, *sha;
    int fd;
    uint64_t total, next_off, done, last_progress;
    bool total_known;
    char *etag;
    part parts[MAX_INFLIGHT];
    int inflight;
    int open_timers;
    bool finished, hashing, all_in;
    atomic_bool stop_hashing; /* set with finished: the hashing work stops at its next MiB */
    uv_work_t work;
    EVP_MD_CTX *hash_ctx; /* only touched by one work item at a time, or the loop between */
    int hash_fd;
    uint64_t hashed, hash_to;
    char hash_hex[65];
    int hash_err;
    int write_err; /* errno of a failed pwrite to `file` (a full disk, say), 0 if none */
    fetch_progress_cb progress;
    fetch_progress_cb prefix_cb; /* fetch_s3_get_file_streaming's reader, or NULL */
    fetch_progress_cb tail_cb;   /* told once the early tail is written, or NULL */
    uint64_t prefix_told;        /* the written prefix last given to it */
    unsigned char head[2];       /* the object's first two bytes ("PK": a zip) */
    bool tail_planned;           /* tail_from is decided (once the size is known) */
    bool tail_sent;
    uint64_t tail_from; /* the early tail's start; total when there is none */
    fetch_aws_cb cb;
    void *ud;
};

static void get_free(s3get *g)
{
    if (g->hash_fd >= 0)
        close(g->hash_fd);
    EVP_MD_CTX_free(g->hash_ctx);
    fetch_endpoint_clear(&g->ep);
    free(g->uri);
    free(g->path_enc);
    free(g->file);
    free(g->sha);
    free(g->etag);
    free(g);
}

static void part_timer_closed(uv_handle_t *h)
{
    part *p = h->data;
    s3get *g = p->g;
    if (--g->open_timers == 0 && !g->hashing)
        get_free(g);
}

/* Stops every part and closes the timers; memory goes when the last one (and any hashing
 * work) is done. */
static void get_release(s3get *g)
{
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        part *p = &g->parts[i];
        if (p->call)
            fetch__aws_cancel(p->call);
        p->call = NULL;
        p->active = false;
        uv_close((uv_handle_t *)&p->timer, part_timer_closed);
    }
}

/* Delivers the one final result and releases the download. */
static void get_finish(s3get *g, int err, long status, const char *code, const char *msg)
{
    if (g->finished)
        return;
    g->finished = true;
    atomic_store(&g->stop_hashing, true);
    fetch__op_unregister(g->a, &g->op);
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        if (g->parts[i].call)
            fetch__aws_cancel(g->parts[i].call);
        g->parts[i].call = NULL;
        uv_timer_stop(&g->parts[i].timer);
    }
    if (g->fd >= 0)
        close(g->fd);
    g->fd = -1;
    bool failed = err || (status && (status < 200 || status >= 300));
    if (failed)
        unlink(g->file);
    fetch_aws_result res = {.err = err,
                            .http_status = status,
                            .error_code = code,
                            .message = failed ? msg : NULL,
                            .body = ""};
    fetch_aws_cb cb = g->cb;
    void *ud = g->ud;
    get_release(g);
    cb(ud, &res);
}

static void get_cancel(fetch__op *op)
{
    s3get *g = (s3get *)op;
    char msg[FETCH_ERR_MAX];
    snprintf(msg, sizeof msg, "%s: download cancelled", g->uri);
    get_finish(g, -ECANCELED, 0, NULL, msg);
}

static void report_progress(s3get *g, bool force)
{
    if (!g->progress)
        return;
    if (force || g->done - g->last_progress >= PROGRESS_STEP) {
        g->last_progress = g->done;
        g->progress(g->ud, g->done, g->total_known ? g->total : 0);
    }
}

static uint64_t written_prefix(const s3get *g);

/* Tells the streaming reader how much of the file is final, when that grew. */
static void report_prefix(s3get *g)
{
    if (!g->prefix_cb || !g->total_known)
        return;
    uint64_t prefix = written_prefix(g);
    if (prefix > g->prefix_told) {
        g->prefix_told = prefix;
        g->prefix_cb(g->ud, prefix, g->total);
    }
}

static int part_on_data(void *ud, const void *data, size_t len)
{
    part *p = ud;
    s3get *g = p->g;
    uint64_t off = p->start + p->got;
    /* A server that ignores Range on the first request sends the whole object: accept it. */
    if (!p->first && off + len > p->end + 1)
        return -EIO;
    const char *d = data;
    for (uint64_t i = off; i < sizeof g->head && i < off + len; i++)
        g->head[i] = (unsigned char)d[i - off];
    size_t left = len;
    while (left) {
        ssize_t w = pwrite(g->fd, d, left, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            /* Remembered so the message names the file rather than the transfer. */
            g->write_err = w < 0 ? errno : EIO;
            return -g->write_err;
        }
        d += w;
        left -= (size_t)w;
        off += (uint64_t)w;
    }
    p->got += len;
    g->done += len;
    report_progress(g, false);
    report_prefix(g);
    return 0;
}

static void part_send(part *p);
static void get_schedule(s3get *g);
static void hash_kick(s3get *g);

static void part_on_timer(uv_timer_t *t)
{
    part_send(t->data);
}

/* "bytes 0-8388607/41943040" -> total; false if malformed. */
static bool parse_content_range(const char *cr, uint64_t *start, uint64_t *end, uint64_t *total)
{
    return cr && sscanf(cr, "bytes %" SCNu64 "-%" SCNu64 "/%" SCNu64, start, end, total) == 3 &&
           *start <= *end && *end < *total;
}

/* The probing request answered 2xx: learn total and ETag, or finish on a full-body 200. */
static int first_part_ok(s3get *g, part *p, const fetch_http_resp *r)
{
    uint64_t s, e, total;
    if (r->etag && !g->etag && !(g->etag = strdup(r->etag)))
        return -ENOMEM;
    if (r->status == 200) {
        if (p->from != 0)
            return -EPROTO; /* a resumed request must not restart the object */
        g->total = p->got;
        g->total_known = true;
        g->next_off = g->total;
        return 0;
    }
    if (!parse_content_range(r->content_range, &s, &e, &total) || s != p->from)
        return -EPROTO;
    g->total = total;
    g->total_known = true;
    p->end = e;
    g->next_off = e + 1;
    return 0;
}

/* The download cannot be written locally: no retry helps; say which file and how much room. */
static void local_write_failed(s3get *g)
{
    char msg[FETCH_ERR_MAX + 300], room[96] = "";
    int e = g->write_err;
    if (e == ENOSPC || e == EDQUOT)
        unpack_free_space_note(g->file, room, sizeof room);
    snprintf(msg, sizeof msg, "%s: cannot write %s: %s%s", g->uri, g->file, strerror(e), room);
    get_finish(g, -e, 0, NULL, msg);
}

/* Handles a failed part: retry (resuming after the bytes already written) or fail. */
static void part_failed(s3get *g, part *p, const fetch_http_resp *r)
{
    char code[128], awsmsg[256], msg[FETCH_ERR_MAX + 300];
    if (g->write_err) {
        local_write_failed(g);
        return;
    }
    fetch__s3_error_code(r, code, sizeof code, awsmsg, sizeof awsmsg);
    if (is_expired_code(code) && !p->refreshed &&
        fetch_credsrc_invalidate(fetch__aws_creds(g->a))) {
        p->refreshed = true;
        part_send(p);
        return;
    }
    bool retry = r->status != 412 && fetch__retryable(r, code);
    if (retry && p->attempt < g->retry.max_attempts) {
        uv_timer_start(&p->timer, part_on_timer, fetch__backoff_ms(&g->retry, p->attempt), 0);
        return;
    }
    s3_describe(g->a, msg, sizeof msg, g->uri, "GetObject", r, code, awsmsg, p->attempt);
    get_finish(g, r->err, r->status, code[0] ? code : NULL, msg);
}

static void part_on_done(void *ud, const fetch_http_resp *r)
{
    part *p = ud;
    s3get *g = p->g;
    p->call = NULL;
    if (r->err == -ECANCELED)
        return; /* the whole download is being cancelled */
    /* S3 answers a Range on a zero-byte object with 416 InvalidRange. */
    bool empty = r->err == 0 && r->status == 416 && p->first && p->got == 0;
    if (!empty && (r->err || r->status < 200 || r->status >= 300)) {
        part_failed(g, p, r);
        return;
    }
    if (empty) {
        g->total = g->next_off = 0;
        g->total_known = true;
    } else if (p->first && !g->total_known) {
        int rc = first_part_ok(g, p, r);
        if (rc < 0) {
            char msg[FETCH_ERR_MAX], range[80];
            fetch_http__text(range, sizeof range, r->content_range ? r->content_range : "",
                             r->content_range ? strlen(r->content_range) : 0);
            snprintf(msg, sizeof msg,
                     "%s: unexpected answer to a ranged GET (HTTP %ld, Content-Range '%s')", g->uri,
                     r->status, range);
            get_finish(g, rc, r->status, NULL, msg);
            return;
        }
    }
    uint64_t want = (p->first && r->status == 200) ? g->total : p->end + 1;
    if (!empty && p->start + p->got < want) {
        /* Short body (connection closed early): resume the rest of this part. */
        fetch_http_resp shortr = *r;
        shortr.err = -ECONNRESET;
        snprintf(shortr.errmsg, sizeof shortr.errmsg,
                 "connection closed before the end of the part");
        part_failed(g, p, &shortr);
        return;
    }
    p->active = false;
    g->inflight--;
    if (p->tail && g->tail_cb)
        g->tail_cb(g->ud, g->tail_from, g->total);
    get_schedule(g);
    if (!g->finished)
        hash_kick(g);
}

/* Sends (or re-sends after a failure) the remaining bytes of a part. */
static void part_send(part *p)
{
    s3get *g = p->g;
    char range[80], ifmatch[300];
    const char *hdrs[3] = {range, NULL, NULL};
    p->from = p->start + p->got;
    p->attempt++;
    snprintf(range, sizeof range, "range: bytes=%" PRIu64 "-%" PRIu64, p->from, p->end);
    if (g->etag) {
        snprintf(ifmatch, sizeof ifmatch, "if-match: %s", g->etag);
        hdrs[1] = ifmatch;
    }
    fetch__sreq s = {.service = "s3",
                     .method = "GET",
                     .ep = &g->ep,
                     .path = g->path_enc,
                     .headers = hdrs,
                     .body_fd = -1,
                     .payload_hash = SIGV4_EMPTY_SHA256,
                     .on_data = part_on_data,
                     .data_ud = p,
                     .max_body = S3_ERRBODY_MAX};
    int rc = fetch__aws_send(g->a, &s, part_on_done, p, &p->call);
    if (rc < 0) {
        fetch_http_resp r = {.err = rc, .body = "", .content_length = -1};
        snprintf(r.errmsg, sizeof r.errmsg, "%s", strerror(-rc));
        p->attempt = g->retry.max_attempts;
        part_failed(g, p, &r);
    }
}

/* Lowest offset not yet written: every active part has written [start, start + got), parts
 * below next_off and the tail (sent before them) were started. */
static uint64_t written_prefix(const s3get *g)
{
    uint64_t low = !g->total_known ? 0 : g->next_off < g->tail_from ? g->next_off : g->total;
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        const part *p = &g->parts[i];
        if (p->active && p->start + p->got < low)
            low = p->start + p->got;
    }
    return low;
}

/* Threadpool: hashes [hashed, hash_to) of the file, read back from the page cache. */
static void hash_work(uv_work_t *w)
{
    s3get *g = w->data;
    unsigned char *buf = malloc(1 << 20);
    uint64_t off = g->hashed;
    if (!buf) {
        g->hash_err = -ENOMEM;
        return;
    }
    while (off < g->hash_to && !g->hash_err && !atomic_load(&g->stop_hashing)) {
        size_t want = g->hash_to - off < (1u << 20) ? (size_t)(g->hash_to - off) : (1u << 20);
        ssize_t n = pread(g->hash_fd, buf, want, (off_t)off);
        if (n <= 0)
            g->hash_err = n < 0 ? -errno : -EIO;
        else if (EVP_DigestUpdate(g->hash_ctx, buf, (size_t)n) != 1)
            g->hash_err = -ENOMEM;
        else
            off += (uint64_t)n;
    }
    free(buf);
}

static void hash_done(uv_work_t *w, int status)
{
    s3get *g = w->data;
    g->hashing = false;
    if (g->finished) {
        /* Cancelled or failed while hashing: the result was delivered; only memory is left. */
        if (g->open_timers == 0)
            get_free(g);
        return;
    }
    g->hashed = g->hash_to;
    hash_kick(g);
}

/* The checksum verdict once every byte is hashed. */
static void hash_final(s3get *g)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    char msg[FETCH_ERR_MAX];
    if (g->hash_err) {
        snprintf(msg, sizeof msg, "%s: cannot read back %s: %s", g->uri, g->file,
                 strerror(-g->hash_err));
        get_finish(g, g->hash_err, 200, NULL, msg);
        return;
    }
    EVP_DigestFinal_ex(g->hash_ctx, md, &mdlen);
    sigv4_hex(md, 32, g->hash_hex);
    if (strcmp(g->hash_hex, g->sha) != 0) {
        snprintf(msg, sizeof msg, "%s: sha256 mismatch: expected %s, got %s", g->uri, g->sha,
                 g->hash_hex);
        get_finish(g, -EBADMSG, 200, NULL, msg);
    } else {
        get_finish(g, 0, 200, NULL, NULL);
    }
}

/* Hashes the written prefix on the threadpool while the download goes on, so verifying a
 * large artifact costs little more than the download itself. One work item at a time keeps
 * the digest sequential. */
static void hash_kick(s3get *g)
{
    if (!g->sha || g->hashing || g->finished)
        return;
    uint64_t prefix = g->all_in ? g->total : written_prefix(g);
    if (g->hash_err || (g->all_in && g->hashed >= g->total)) {
        if (g->all_in || g->hash_err)
            hash_final(g);
        return;
    }
    if (prefix <= g->hashed || (!g->all_in && prefix - g->hashed < PART_SIZE))
        return;
    g->hash_to = prefix;
    g->work.data = g;
    int rc = uv_queue_work(fetch__aws_loop(g->a), &g->work, hash_work, hash_done);
    if (rc < 0) {
        g->hash_err = -ENOMEM;
        hash_final(g);
        return;
    }
    g->hashing = true;
}

/* All bytes are in: check the length, then let the checksum finish. */
static void get_verify(s3get *g)
{
    struct stat st;
    char msg[FETCH_ERR_MAX];
    report_progress(g, true);
    report_prefix(g);
    if (fstat(g->fd, &st) < 0 || (uint64_t)st.st_size != g->total) {
        snprintf(msg, sizeof msg, "%s: incomplete download: %" PRIu64 " of %" PRIu64 " bytes",
                 g->uri, (uint64_t)st.st_size, g->total);
        get_finish(g, -EIO, 200, NULL, msg);
        return;
    }
    if (!g->sha) {
        get_finish(g, 0, 200, NULL, NULL);
        return;
    }
    g->all_in = true;
    hash_kick(g);
}

/* Starts the request for bytes [start, end] in the free slot p. */
static void part_start(s3get *g, part *p, uint64_t start, uint64_t end, bool tail)
{
    p->active = true;
    p->first = p->refreshed = false;
    p->tail = tail;
    p->start = start;
    p->end = end;
    p->got = 0;
    p->attempt = 0;
    g->inflight++;
    part_send(p);
}

/* Once the size is known: a streamed zip larger than the probe plus a tail gets its tail
 * fetched first, in parallel with the parts in order. The hashing still goes in order (the
 * tail is hashed when the prefix reaches it). */
static void plan_tail(s3get *g)
{
    g->tail_planned = true;
    g->tail_from = g->total;
    bool zip = g->head[0] == 'P' && g->head[1] == 'K';
    if (g->tail_cb && zip && g->total > g->next_off && g->total - g->next_off > TAIL_SIZE)
        g->tail_from = g->total - TAIL_SIZE;
}

/* Starts parts while slots are free and bytes remain (the tail first, then in order up to
 * it); verifies when everything arrived. */
static void get_schedule(s3get *g)
{
    if (!g->tail_planned && g->total_known)
        plan_tail(g);
    for (int i = 0; i < MAX_INFLIGHT && !g->finished; i++) {
        part *p = &g->parts[i];
        if (p->active)
            continue;
        if (!g->tail_sent && g->tail_from < g->total) {
            g->tail_sent = true;
            part_start(g, p, g->tail_from, g->total - 1, true);
            continue;
        }
        if (g->next_off >= g->tail_from)
            break;
        uint64_t end = g->next_off + PART_SIZE - 1;
        end = end < g->tail_from ? end : g->tail_from - 1;
        uint64_t start = g->next_off;
        g->next_off = end + 1;
        part_start(g, p, start, end, false);
    }
    report_prefix(g);
    if (!g->finished && g->inflight == 0 && g->next_off >= g->tail_from)
        get_verify(g);
}

/* Opens the target file and prepares the endpoint; 0 or -errno. */
static int get_prepare(s3get *g, const char *uri, const char *path)
{
    char *bucket = NULL, *key = NULL;
    int rc = fetch_s3_parse_uri(uri, &bucket, &key, &g->sha);
    if (rc == 0)
        rc = s3_target(g->a, bucket, key, &g->ep, &g->path_enc);
    free(bucket);
    free(key);
    if (rc < 0)
        return rc;
    /* Messages name the URI without its fragment: the checksum is said separately. */
    const char *hash = strchr(uri, '#');
    g->uri = strndup(uri, hash ? (size_t)(hash - uri) : strlen(uri));
    g->file = strdup(path);
    if (!g->uri || !g->file)
        return -ENOMEM;
    /* Only a regular file (a failed download is unlinked): never a device, a FIFO or a link
     * planted at the path. */
    struct stat st;
    g->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (g->fd < 0)
        return -errno;
    if (fstat(g->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(g->fd);
        g->fd = -1;
        return -EINVAL;
    }
    if (g->sha) {
        g->hash_ctx = EVP_MD_CTX_new();
        if (!g->hash_ctx || EVP_DigestInit_ex(g->hash_ctx, EVP_sha256(), NULL) != 1)
            return -ENOMEM;
        if ((g->hash_fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            return -errno;
    }
    return 0;
}

int fetch_s3_get_file(fetch_aws *a, const char *uri, const char *path, fetch_progress_cb progress,
                      fetch_aws_cb cb, void *ud)
{
    return fetch_s3_get_file_streaming(a, uri, path, progress, NULL, NULL, cb, ud);
}

int fetch_s3_get_file_streaming(fetch_aws *a, const char *uri, const char *path,
                                fetch_progress_cb progress, fetch_progress_cb prefix,
                                fetch_progress_cb tail, fetch_aws_cb cb, void *ud)
{
    if (!uri || !path || !cb || (tail && !prefix))
        return -EINVAL;
    if (fetch__aws_closing(a))
        return -ECANCELED;
    s3get *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->a = a;
    g->fd = g->hash_fd = -1;
    g->cb = cb;
    g->ud = ud;
    g->progress = progress;
    g->prefix_cb = prefix;
    g->tail_cb = tail;
    g->tail_from = UINT64_MAX; /* planned once the size is known */
    g->retry = fetch__retry_or_default(NULL);
    g->op.cancel = get_cancel;
    int rc = get_prepare(g, uri, path);
    if (rc < 0) {
        if (g->fd >= 0) {
            close(g->fd);
            unlink(path);
        }
        get_free(g);
        return rc;
    }
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        g->parts[i].g = g;
        uv_timer_init(fetch__aws_loop(a), &g->parts[i].timer);
        g->parts[i].timer.data = &g->parts[i];
    }
    g->open_timers = MAX_INFLIGHT;
    fetch__op_register(a, &g->op);
    /* The probe: its answer gives the size (Content-Range) and the ETag that pins the rest. */
    part *p = &g->parts[0];
    p->active = p->first = true;
    p->start = 0;
    p->end = PART_SIZE - 1;
    g->inflight = 1;
    uv_timer_start(&p->timer, part_on_timer, 0, 0);
    return 0;
}

/* ---- upload ---- */

typedef struct {
    fetch__op op;
    fetch_aws *a;
    uv_timer_t timer;
    fetch_retry retry;
    fetch_endpoint ep;
    char *uri, *path_enc, *content_type;
    char *body;
    size_t len;
    int fd;
    char hash[65];
    int attempt;
    bool refreshed;
    fetch__call *call;
    fetch_aws_cb cb;
    void *ud;
} s3put;

static void put_closed(uv_handle_t *h)
{
    s3put *u = h->data;
    if (u->fd >= 0)
        close(u->fd);
    fetch_endpoint_clear(&u->ep);
    free(u->uri);
    free(u->path_enc);
    free(u->content_type);
    free(u->body);
    free(u);
}

static void put_finish(s3put *u, const fetch_aws_result *res)
{
    fetch__op_unregister(u->a, &u->op);
    uv_timer_stop(&u->timer);
    u->cb(u->ud, res);
    uv_close((uv_handle_t *)&u->timer, put_closed);
}

static void put_cancel(fetch__op *op)
{
    s3put *u = (s3put *)op;
    char msg[FETCH_ERR_MAX];
    if (u->call)
        fetch__aws_cancel(u->call);
    u->call = NULL;
    snprintf(msg, sizeof msg, "%s: upload cancelled", u->uri);
    fetch_aws_result res = {.err = -ECANCELED, .message = msg, .body = ""};
    put_finish(u, &res);
}

static void put_send(s3put *u);

static void put_on_timer(uv_timer_t *t)
{
    put_send(t->data);
}

static void put_on_done(void *ud, const fetch_http_resp *r)
{
    s3put *u = ud;
    char code[128], awsmsg[256], msg[FETCH_ERR_MAX + 300];
    u->call = NULL;
    bool ok = r->err == 0 && r->status >= 200 && r->status < 300;
    fetch_aws_result res = {
        .err = r->err, .http_status = r->status, .body = r->body, .body_len = r->body_len};
    if (ok) {
        put_finish(u, &res);
        return;
    }
    fetch__s3_error_code(r, code, sizeof code, awsmsg, sizeof awsmsg);
    if (is_expired_code(code) && !u->refreshed &&
        fetch_credsrc_invalidate(fetch__aws_creds(u->a))) {
        u->refreshed = true;
        put_send(u);
        return;
    }
    if (r->err != -ECANCELED && fetch__retryable(r, code) && u->attempt < u->retry.max_attempts) {
        uv_timer_start(&u->timer, put_on_timer, fetch__backoff_ms(&u->retry, u->attempt), 0);
        return;
    }
    s3_describe(u->a, msg, sizeof msg, u->uri, "PutObject", r, code, awsmsg, u->attempt);
    res.error_code = code[0] ? code : NULL;
    res.message = msg;
    put_finish(u, &res);
}

static void put_send(s3put *u)
{
    char ct[300];
    snprintf(ct, sizeof ct, "content-type: %s", u->content_type);
    const char *hdrs[] = {ct, NULL};
    u->attempt++;
    fetch__sreq s = {.service = "s3",
                     .method = "PUT",
                     .ep = &u->ep,
                     .path = u->path_enc,
                     .headers = hdrs,
                     .body = u->fd >= 0 ? NULL : (u->body ? u->body : ""),
                     .body_len = u->len,
                     .body_fd = u->fd,
                     .payload_hash = u->hash,
                     .max_body = S3_ERRBODY_MAX};
    int rc = fetch__aws_send(u->a, &s, put_on_done, u, &u->call);
    if (rc < 0) {
        fetch_http_resp r = {.err = rc, .body = "", .content_length = -1};
        snprintf(r.errmsg, sizeof r.errmsg, "%s", strerror(-rc));
        u->attempt = u->retry.max_attempts;
        put_on_done(u, &r);
    }
}

/* Common part of both uploads: target, names, registration, first attempt from the loop. */
static int put_start(fetch_aws *a, s3put *u, const char *bucket, const char *key,
                     const char *content_type)
{
    size_t n = strlen(bucket) + strlen(key) + 8;
    if (fetch__aws_closing(a))
        return -ECANCELED;
    if (fetch_s3_bucket_problem(bucket) || !*key || strlen(key) > 1024 ||
        !proto_utf8_valid(key, strlen(key)))
        return -EINVAL;
    int rc = s3_target(a, bucket, key, &u->ep, &u->path_enc);
    if (rc < 0)
        return rc;
    u->uri = malloc(n);
    u->content_type = strdup(content_type ? content_type : "application/octet-stream");
    if (!u->uri || !u->content_type)
        return -ENOMEM;
    snprintf(u->uri, n, "s3://%s/%s", bucket, key);
    u->a = a;
    u->retry = fetch__retry_or_default(NULL);
    u->op.cancel = put_cancel;
    uv_timer_init(fetch__aws_loop(a), &u->timer);
    u->timer.data = u;
    fetch__op_register(a, &u->op);
    uv_timer_start(&u->timer, put_on_timer, 0, 0);
    return 0;
}

static void put_discard(s3put *u)
{
    if (u->fd >= 0)
        close(u->fd);
    fetch_endpoint_clear(&u->ep);
    free(u->uri);
    free(u->path_enc);
    free(u->content_type);
    free(u->body);
    free(u);
}

int fetch_s3_put(fetch_aws *a, const char *bucket, const char *key, const void *data, size_t len,
                 const char *content_type, fetch_aws_cb cb, void *ud)
{
    if (!bucket || !key || (!data && len) || !cb)
        return -EINVAL;
    s3put *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->fd = -1;
    u->cb = cb;
    u->ud = ud;
    u->len = len;
    if (!(u->body = malloc(len ? len : 1))) {
        free(u);
        return -ENOMEM;
    }
    if (len)
        memcpy(u->body, data, len);
    sigv4_sha256_hex(u->body, len, u->hash);
    int rc = put_start(a, u, bucket, key, content_type);
    if (rc < 0)
        put_discard(u);
    return rc;
}

/* SHA-256 of a whole file (the payload hash must be known before signing). */
static int file_sha256(int fd, char out[65])
{
    unsigned char md[32], *buf = malloc(1 << 20);
    unsigned int mdlen;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = (!buf || !ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) ? -ENOMEM : 0;
    ssize_t n;
    off_t off = 0;
    while (rc == 0 && (n = pread(fd, buf, 1 << 20, off)) != 0) {
        if (n < 0) {
            rc = -errno;
            break;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)n);
        off += n;
    }
    if (rc == 0) {
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        sigv4_hex(md, 32, out);
    }
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}

int fetch_s3_put_file(fetch_aws *a, const char *bucket, const char *key, const char *path,
                      fetch_aws_cb cb, void *ud)
{
    if (!bucket || !key || !path || !cb)
        return -EINVAL;
    s3put *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->cb = cb;
    u->ud = ud;
    struct stat st;
    int rc = 0;
    /* A task may control the path: never block on a FIFO, never follow a link out. */
    if ((u->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) < 0 ||
        fstat(u->fd, &st) < 0)
        rc = -errno;
    else if (!S_ISREG(st.st_mode))
        rc = -EINVAL;
    if (rc == 0) {
        u->len = (size_t)st.st_size;
        rc = file_sha256(u->fd, u->hash);
    }
    if (rc == 0)
        rc = put_start(a, u, bucket, key, "application/octet-stream");
    if (rc < 0)
        put_discard(u);
    return rc;
}

int fetch_s3_put_fd_parts(fetch_aws *a, const char *bucket, const char *key, int fd, uint64_t len,
                          uint64_t part_size, const char *content_type, fetch_aws_cb cb, void *ud);

int fetch_s3_put_fd(fetch_aws *a, const char *bucket, const char *key, int fd, uint64_t len,
                    const char *sha256_hex, const char *content_type, fetch_aws_cb cb, void *ud)
{
    if (!bucket || !key || fd < 0 || !sha256_hex || strlen(sha256_hex) != 64 || !cb)
        return -EINVAL;
    if (len > S3_SINGLE_PUT_MAX) {
        uint64_t psize = len / 9000 + 1;
        psize = psize < MP_PART_MIN_AUTO ? MP_PART_MIN_AUTO : psize;
        return fetch_s3_put_fd_parts(a, bucket, key, fd, len, psize, content_type, cb, ud);
    }
    s3put *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->cb = cb;
    u->ud = ud;
    u->len = (size_t)len;
    memcpy(u->hash, sha256_hex, 65);
    u->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int rc = u->fd < 0 ? -errno : put_start(a, u, bucket, key, content_type);
    if (rc < 0)
        put_discard(u);
    return rc;
}

/* ---- multipart upload ----
 * One explicit state machine per upload: CREATE (CreateMultipartUpload) -> PARTS (UploadPart,
 * MP_INFLIGHT at a time, each retried) -> COMPLETE (CompleteMultipartUpload) -> done; any
 * failure -> ABORT (AbortMultipartUpload, best effort) -> done with the first error. */

typedef enum { MP_CREATE, MP_PARTS, MP_COMPLETE, MP_ABORT } mp_state;

typedef struct s3mp s3mp;

typedef struct {
    s3mp *m;
    uv_timer_t timer;
    int number; /* 1-based part number, 0 = slot free */
    int attempt;
    fetch__call *call;
} mp_slot;

struct s3mp {
    fetch__op op;
    fetch_aws *a;
    fetch_retry retry;
    fetch_endpoint ep;
    mp_state state;
    char *uri, *path_enc, *content_type, *upload_id;
    int fd;
    uint64_t len, part_size;
    int n_parts, next_part, parts_done;
    char **etags;
    mp_slot slots[MP_INFLIGHT];
    uv_timer_t timer; /* CREATE/COMPLETE/ABORT retries */
    int attempt;
    fetch__call *call;
    int open_timers;
    bool finished;
    fetch_aws_result fail; /* first failure, delivered after the abort */
    char fail_msg[FETCH_ERR_MAX + 300];
    char fail_code[128];
    fetch_aws_cb cb;
    void *ud;
};

static void mp_free(s3mp *m)
{
    if (m->fd >= 0)
        close(m->fd);
    for (int i = 0; m->etags && i < m->n_parts; i++)
        free(m->etags[i]);
    free(m->etags);
    fetch_endpoint_clear(&m->ep);
    free(m->uri);
    free(m->path_enc);
    free(m->content_type);
    free(m->upload_id);
    free(m);
}

static void mp_handle_closed(uv_handle_t *h)
{
    s3mp *m = h->data;
    if (--m->open_timers == 0)
        mp_free(m);
}

/* Delivers the one result and releases everything (memory goes with the last timer). */
static void mp_finish(s3mp *m, const fetch_aws_result *res)
{
    if (m->finished)
        return;
    m->finished = true;
    fetch__op_unregister(m->a, &m->op);
    if (m->call)
        fetch__aws_cancel(m->call);
    m->call = NULL;
    for (int i = 0; i < MP_INFLIGHT; i++) {
        if (m->slots[i].call)
            fetch__aws_cancel(m->slots[i].call);
        m->slots[i].call = NULL;
    }
    m->cb(m->ud, res);
    for (int i = 0; i < MP_INFLIGHT; i++) {
        m->slots[i].timer.data = m;
        uv_close((uv_handle_t *)&m->slots[i].timer, mp_handle_closed);
    }
    m->timer.data = m;
    uv_close((uv_handle_t *)&m->timer, mp_handle_closed);
}

static void mp_send(s3mp *m);

/* Records the first failure and aborts the upload (or finishes at once if none exists). */
static void mp_fail(s3mp *m, const fetch_http_resp *r, const char *action, int attempts)
{
    char awsmsg[256];
    if (m->state == MP_ABORT || m->finished)
        return;
    fetch__s3_error_code(r, m->fail_code, sizeof m->fail_code, awsmsg, sizeof awsmsg);
    s3_describe(m->a, m->fail_msg, sizeof m->fail_msg, m->uri, action, r, m->fail_code, awsmsg,
                attempts);
    m->fail = (fetch_aws_result){.err = r->err ? r->err : -EIO,
                                 .http_status = r->status,
                                 .error_code = m->fail_code[0] ? m->fail_code : NULL,
                                 .message = m->fail_msg,
                                 .body = ""};
    for (int i = 0; i < MP_INFLIGHT; i++) {
        if (m->slots[i].call)
            fetch__aws_cancel(m->slots[i].call);
        m->slots[i].call = NULL;
        m->slots[i].number = 0;
        uv_timer_stop(&m->slots[i].timer);
    }
    if (!m->upload_id) {
        mp_finish(m, &m->fail);
        return;
    }
    m->state = MP_ABORT;
    m->attempt = 0;
    mp_send(m);
}

static void mp_cancel(fetch__op *op)
{
    s3mp *m = (s3mp *)op;
    char msg[FETCH_ERR_MAX];
    snprintf(msg, sizeof msg, "%s: upload cancelled", m->uri);
    fetch_aws_result res = {.err = -ECANCELED, .message = msg, .body = ""};
    mp_finish(m, &res);
}

static void mp_part_send(mp_slot *sl);
static void mp_schedule(s3mp *m);

static void mp_part_timer(uv_timer_t *t)
{
    mp_part_send(t->data);
}

static void mp_part_done(void *ud, const fetch_http_resp *r)
{
    mp_slot *sl = ud;
    s3mp *m = sl->m;
    char code[128], awsmsg[256];
    sl->call = NULL;
    if (r->err == -ECANCELED || m->finished)
        return;
    if (r->err == 0 && r->status / 100 == 2 && r->etag) {
        m->etags[sl->number - 1] = strdup(r->etag);
        m->parts_done++;
        sl->number = 0;
        mp_schedule(m);
        return;
    }
    fetch__s3_error_code(r, code, sizeof code, awsmsg, sizeof awsmsg);
    if (fetch__retryable(r, code) && sl->attempt < m->retry.max_attempts) {
        uv_timer_start(&sl->timer, mp_part_timer, fetch__backoff_ms(&m->retry, sl->attempt), 0);
        return;
    }
    mp_fail(m, r, "PutObject (UploadPart)", sl->attempt);
}

/* One UploadPart of part sl->number, straight from the fd at its offset. */
static void mp_part_send(mp_slot *sl)
{
    s3mp *m = sl->m;
    uint64_t off = (uint64_t)(sl->number - 1) * m->part_size;
    uint64_t n = m->len - off < m->part_size ? m->len - off : m->part_size;
    char *id = sigv4_uri_encode(m->upload_id, strlen(m->upload_id), false), query[1200];
    snprintf(query, sizeof query, "partNumber=%d&uploadId=%s", sl->number, id ? id : "");
    free(id);
    sl->attempt++;
    fetch__sreq s = {.service = "s3",
                     .method = "PUT",
                     .ep = &m->ep,
                     .path = m->path_enc,
                     .query = query,
                     .body_len = (size_t)n,
                     .body_fd = m->fd,
                     .body_offset = off,
                     .payload_hash = "UNSIGNED-PAYLOAD",
                     .max_body = S3_ERRBODY_MAX};
    int rc = fetch__aws_send(m->a, &s, mp_part_done, sl, &sl->call);
    if (rc < 0) {
        fetch_http_resp r = {.err = rc, .body = "", .content_length = -1};
        snprintf(r.errmsg, sizeof r.errmsg, "%s", strerror(-rc));
        mp_fail(m, &r, "PutObject (UploadPart)", sl->attempt);
    }
}

/* Fills the free slots with the next parts; completes once every part is in. */
static void mp_schedule(s3mp *m)
{
    for (int i = 0; i < MP_INFLIGHT && m->next_part <= m->n_parts; i++) {
        mp_slot *sl = &m->slots[i];
        if (sl->number)
            continue;
        sl->number = m->next_part++;
        sl->attempt = 0;
        mp_part_send(sl);
        if (m->state != MP_PARTS)
            return; /* the send failed and aborted */
    }
    if (m->parts_done == m->n_parts) {
        m->state = MP_COMPLETE;
        m->attempt = 0;
        mp_send(m);
    }
}

/* The CompleteMultipartUpload body: every part's number and ETag, in order. */
static char *mp_complete_body(s3mp *m, size_t *len)
{
    size_t cap = 128 + (size_t)m->n_parts * 160, n = 0;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    n += (size_t)snprintf(b + n, cap - n, "<CompleteMultipartUpload>");
    for (int i = 0; i < m->n_parts; i++)
        n += (size_t)snprintf(b + n, cap - n,
                              "<Part><PartNumber>%d</PartNumber><ETag>%.120s</ETag></Part>", i + 1,
                              m->etags[i]);
    n += (size_t)snprintf(b + n, cap - n, "</CompleteMultipartUpload>");
    *len = n;
    return b;
}

static void mp_timer_cb(uv_timer_t *t)
{
    mp_send(t->data);
}

static void mp_done(void *ud, const fetch_http_resp *r)
{
    s3mp *m = ud;
    char code[128], awsmsg[256], id[512];
    m->call = NULL;
    if (r->err == -ECANCELED || m->finished)
        return;
    /* CompleteMultipartUpload can answer 200 with an <Error> body (AWS docs). */
    bool ok = r->err == 0 && r->status / 100 == 2 && !strstr(r->body, "<Error>");
    if (m->state == MP_ABORT) {
        mp_finish(m, &m->fail); /* best effort: the first error is what the caller needs */
        return;
    }
    if (ok && m->state == MP_CREATE) {
        xml_tag(r, "UploadId", id, sizeof id);
        if (!id[0] || !(m->upload_id = strdup(id))) {
            fetch_http_resp bad = *r;
            bad.err = -EPROTO;
            snprintf(bad.errmsg, sizeof bad.errmsg, "no UploadId in the answer");
            mp_fail(m, &bad, "PutObject (CreateMultipartUpload)", m->attempt);
            return;
        }
        m->state = MP_PARTS;
        mp_schedule(m);
        return;
    }
    if (ok) {
        fetch_aws_result res = {.http_status = r->status, .body = r->body, .body_len = r->body_len};
        mp_finish(m, &res);
        return;
    }
    fetch__s3_error_code(r, code, sizeof code, awsmsg, sizeof awsmsg);
    if (fetch__retryable(r, code) && m->attempt < m->retry.max_attempts) {
        uv_timer_start(&m->timer, mp_timer_cb, fetch__backoff_ms(&m->retry, m->attempt), 0);
        return;
    }
    mp_fail(m, r,
            m->state == MP_CREATE ? "PutObject (CreateMultipartUpload)"
                                  : "PutObject (CompleteMultipartUpload)",
            m->attempt);
}

/* Sends the request of the current state (CREATE, COMPLETE or ABORT). */
static void mp_send(s3mp *m)
{
    char ct[300], query[1200];
    const char *hdrs[] = {ct, NULL};
    char *body = NULL, *id = NULL;
    size_t blen = 0;
    const char *method = "POST";
    snprintf(ct, sizeof ct, "content-type: %s",
             m->state == MP_CREATE ? m->content_type : "application/xml");
    if (m->state == MP_CREATE) {
        snprintf(query, sizeof query, "uploads=");
    } else {
        id = sigv4_uri_encode(m->upload_id, strlen(m->upload_id), false);
        snprintf(query, sizeof query, "uploadId=%s", id ? id : "");
        free(id);
        if (m->state == MP_ABORT)
            method = "DELETE";
        else
            body = mp_complete_body(m, &blen);
    }
    m->attempt++;
    fetch__sreq s = {.service = "s3",
                     .method = method,
                     .ep = &m->ep,
                     .path = m->path_enc,
                     .query = query,
                     .headers = hdrs,
                     .body = body                   ? body
                             : m->state == MP_ABORT ? NULL
                                                    : "",
                     .body_len = blen,
                     .body_fd = -1,
                     .payload_hash = m->state == MP_ABORT ? SIGV4_EMPTY_SHA256 : NULL,
                     .max_body = S3_ERRBODY_MAX};
    int rc = fetch__aws_send(m->a, &s, mp_done, m, &m->call); /* DELETE: no body at all */
    free(body);
    if (rc < 0) {
        fetch_http_resp r = {.err = rc, .body = "", .content_length = -1};
        snprintf(r.errmsg, sizeof r.errmsg, "%s", strerror(-rc));
        m->attempt = m->retry.max_attempts;
        if (m->state == MP_ABORT)
            mp_finish(m, &m->fail);
        else
            mp_fail(m, &r, "PutObject", m->attempt);
    }
}

int fetch_s3_put_fd_parts(fetch_aws *a, const char *bucket, const char *key, int fd, uint64_t len,
                          uint64_t part_size, const char *content_type, fetch_aws_cb cb, void *ud)
{
    if (!bucket || !key || fd < 0 || !cb || part_size < MP_PART_MIN || !*key)
        return -EINVAL;
    if (fetch__aws_closing(a))
        return -ECANCELED;
    if (fetch_s3_bucket_problem(bucket))
        return -EINVAL;
    uint64_t n = len ? (len + part_size - 1) / part_size : 1;
    if (n > MP_PARTS_MAX)
        return -EFBIG;
    s3mp *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->a = a;
    m->cb = cb;
    m->ud = ud;
    m->len = len;
    m->part_size = part_size;
    m->n_parts = (int)n;
    m->next_part = 1;
    m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    m->etags = calloc(n, sizeof *m->etags);
    size_t ulen = strlen(bucket) + strlen(key) + 8;
    m->uri = malloc(ulen);
    m->content_type = strdup(content_type ? content_type : "application/octet-stream");
    int rc = m->fd < 0 ? -errno : 0;
    if (!rc && (!m->etags || !m->uri || !m->content_type))
        rc = -ENOMEM;
    if (!rc)
        rc = s3_target(a, bucket, key, &m->ep, &m->path_enc);
    if (rc) {
        mp_free(m);
        return rc;
    }
    snprintf(m->uri, ulen, "s3://%s/%s", bucket, key);
    m->retry = fetch__retry_or_default(NULL);
    m->op.cancel = mp_cancel;
    m->state = MP_CREATE;
    uv_loop_t *loop = fetch__aws_loop(a);
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    for (int i = 0; i < MP_INFLIGHT; i++) {
        m->slots[i].m = m;
        uv_timer_init(loop, &m->slots[i].timer);
        m->slots[i].timer.data = &m->slots[i];
    }
    m->open_timers = MP_INFLIGHT + 1;
    fetch__op_register(a, &m->op);
    uv_timer_start(&m->timer, mp_timer_cb, 0, 0);
    return 0;
}
