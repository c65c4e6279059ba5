/* http.c - libcurl multi socket API on libuv, following curl's docs/examples/multi-uv.c: curl
 * tells us which sockets to watch (on_socket) and when to wake it (on_timer_set); libuv polls
 * and calls curl_multi_socket_action; finished transfers are collected and reported.
 *
 * Concurrency is bounded: at most `max_active` transfers are in the multi handle at once (from
 * the descriptor limit, at most 64), the rest wait in a FIFO with no timer running, so a burst
 * of a thousand status writes queues instead of failing. A connect that fails for want of a
 * descriptor (EMFILE/ENFILE) is put back at the head of the queue and the bound lowered to what
 * fits, rather than reported as a transport error that would be retried with backoff. */
#include "fetch/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/util.h"

#define DEFAULT_MAX_BODY   (1u << 20)
#define DEFAULT_CONNECT_MS 10000L
/* Abort a transfer slower than 1 KiB/s for 30 s: a stalled connection, not a slow link. */
#define LOW_SPEED_BYTES 1024L
#define LOW_SPEED_SECS  30L
/* Transfers (so connections: HTTP/1.1, one each) at once, and the descriptors kept for the rest
 * of the agent (task pipes, files) when the limit comes from RLIMIT_NOFILE. */
#define MAX_TRANSFERS    64
#define FD_RESERVE       32
#define MAX_REQUEUES     1000 /* EMFILE requeues of one request before it fails */
#define RAISE_AFTER_OK   16   /* successes before a lowered bound goes up by one */
#define MAX_HEADER_VALUE 1024 /* longer ETag, Content-Range... values are dropped */
/* curl's receive buffer per transfer: streamed bodies, and in-memory ones (curl's default). */
#define STREAM_BUFFER (256L * 1024)
#define SMALL_BUFFER  (16L * 1024)

/* One watched socket: curl's socket is polled by a uv_poll handle. */
typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    struct fetch_http *h;
    struct sock_ctx *prev, *next;
} sock_ctx;

struct fetch_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char *ca_bundle;
    fetch_http_req *live;                  /* requests added to the multi, not yet reported */
    fetch_http_req *wait_head, *wait_tail; /* requests waiting for a slot, FIFO */
    int active;                            /* requests in the multi (the live list's length) */
    int limit;                             /* configured bound on active */
    int max_active;   /* current bound: lowered on EMFILE, raised back slowly */
    int ok_since_cut; /* successes since the bound was last changed */
    sock_ctx *socks;
    int open_handles; /* uv handles not yet closed (timer + polls) */
    int dispatching;  /* > 0 while done callbacks run */
    bool closing, torn_down;
};

struct fetch_http_req {
    fetch_http *h;
    CURL *easy;
    struct curl_slist *hdrs;
    fetch_http_req *prev, *next, *next_done;
    fetch_http_req *next_wait; /* in the wait queue */
    bool waiting;              /* in the wait queue, not in the multi */
    int requeues;
    int fd_errno; /* errno of a socket() that failed (EMFILE: no descriptor), else 0 */
    fetch_http_done_cb done;
    fetch_http_data_cb on_data;
    void *ud;
    /* request body: memory copy or a file region */
    char *body;
    size_t body_len, body_pos;
    int body_fd;
    uint64_t body_offset;
    /* response */
    char *buf;
    size_t buf_len, buf_cap, max_body;
    uint64_t streamed;
    bool decided, stream;
    bool finished;  /* collected by dispatch, callback pending */
    bool cancelled; /* cancelled while finished: dispatch frees it silently */
    int data_err;
    CURLcode result;
    char *etag, *content_range, *content_type, *request_id;
    int64_t content_length;
    char errbuf[CURL_ERROR_SIZE];
};

static void list_add(fetch_http_req **head, fetch_http_req *r)
{
    r->prev = NULL;
    r->next = *head;
    if (*head)
        (*head)->prev = r;
    *head = r;
}

static void list_del(fetch_http_req **head, fetch_http_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        *head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Appends to (or, at_head, puts first in) the wait queue. */
static void wait_push(fetch_http *h, fetch_http_req *r, bool at_head)
{
    r->waiting = true;
    r->next_wait = NULL;
    if (!h->wait_head) {
        h->wait_head = h->wait_tail = r;
    } else if (at_head) {
        r->next_wait = h->wait_head;
        h->wait_head = r;
    } else {
        h->wait_tail->next_wait = r;
        h->wait_tail = r;
    }
}

static fetch_http_req *wait_pop(fetch_http *h)
{
    fetch_http_req *r = h->wait_head;
    if (r) {
        h->wait_head = r->next_wait;
        if (!h->wait_head)
            h->wait_tail = NULL;
        r->next_wait = NULL;
        r->waiting = false;
    }
    return r;
}

/* Removes r from the wait queue (O(n): cancelling a waiting request is rare). */
static void wait_remove(fetch_http *h, fetch_http_req *r)
{
    fetch_http_req **pp = &h->wait_head, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->next_wait;
    }
    if (!*pp)
        return;
    *pp = r->next_wait;
    if (h->wait_tail == r)
        h->wait_tail = prev;
    r->next_wait = NULL;
    r->waiting = false;
}

/* The bound on transfers at once: MAX_TRANSFERS, or less when the descriptor limit is low. */
static int transfer_limit(void)
{
    struct rlimit rl;
    long n = MAX_TRANSFERS;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (long)rl.rlim_cur < (MAX_TRANSFERS + FD_RESERVE) * 4)
        n = ((long)rl.rlim_cur - FD_RESERVE) / 4;
    return n < 2 ? 2 : (int)n;
}

void fetch_http__text(char *out, size_t cap, const char *s, size_t n)
{
    char *c = cap > 1 ? proto_utf8_clean(s, n, cap - 1) : NULL;
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)c; p && *p; p++) {
        bool c1 = p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f; /* U+0080-U+009F */
        if (c1)
            out[k++] = ' ', p++;
        out[k++] = (*p < 0x20 || *p == 0x7f || c1) ? ' ' : (char)*p;
    }
    if (cap)
        out[k] = '\0';
    free(c);
}

int fetch_http__curl_errno(int code)
{
    switch ((CURLcode)code) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return -ECONNRESET;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
        return -EPROTO;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return -EINVAL;
    case CURLE_ABORTED_BY_CALLBACK:
        return -ECANCELED;
    default:
        return -EIO;
    }
}

static void free_req(fetch_http_req *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r->body);
    free(r->buf);
    free(r->etag);
    free(r->content_range);
    free(r->content_type);
    free(r->request_id);
    free(r);
}

/* Reports a finished (or cancelled) request to its owner and frees it. */
static void report(fetch_http_req *r, int err)
{
    fetch_http_resp resp;
    memset(&resp, 0, sizeof resp);
    resp.err = err;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
    resp.body = r->buf ? r->buf : "";
    resp.body_len = r->buf_len;
    resp.streamed = r->streamed;
    resp.etag = r->etag;
    resp.content_range = r->content_range;
    resp.content_type = r->content_type;
    resp.request_id = r->request_id;
    resp.content_length = r->content_length;
    /* curl's words may quote what the peer sent (a bad status line, say): cleaned. */
    const char *why = r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result);
    char text[FETCH_HTTP_ERR_MAX];
    fetch_http__text(text, sizeof text, why, strlen(why));
    if (err == -ECANCELED)
        snprintf(resp.errmsg, sizeof resp.errmsg, "request cancelled");
    else if (err == -EMFILE || err == -ENFILE)
        snprintf(resp.errmsg, sizeof resp.errmsg, "%s: %.200s", strerror(-err), text);
    else if (err && r->result != CURLE_OK && r->data_err == 0)
        snprintf(resp.errmsg, sizeof resp.errmsg, "%s", text);
    else if (err)
        snprintf(resp.errmsg, sizeof resp.errmsg, "%s", strerror(-err));
    r->done(r->ud, &resp);
    free_req(r);
}

static int result_err(fetch_http_req *r)
{
    if (r->data_err)
        return r->data_err;
    if (r->fd_errno == EMFILE || r->fd_errno == ENFILE)
        return -r->fd_errno;
    return fetch_http__curl_errno(r->result);
}

/* Forgets a response that never started (a connect that failed), so the request can go again. */
static void reset_response(fetch_http_req *r)
{
    free(r->etag);
    free(r->content_range);
    free(r->content_type);
    free(r->request_id);
    r->etag = r->content_range = r->content_type = r->request_id = NULL;
    r->content_length = -1;
    r->buf_len = 0;
    r->body_pos = 0;
    r->decided = r->stream = false;
    r->data_err = r->fd_errno = 0;
    r->errbuf[0] = '\0';
}

/* A transfer whose connect failed for want of a descriptor goes back to the head of the queue
 * and the bound drops to the transfers still running (their descriptors are what fits), unless
 * none is running (then nothing of ours will free one: it fails with -EMFILE). */
static bool requeue_for_fds(fetch_http *h, fetch_http_req *r, CURLcode res)
{
    if (res == CURLE_OK || h->closing || (r->fd_errno != EMFILE && r->fd_errno != ENFILE))
        return false;
    if (h->active == 0 || r->requeues >= MAX_REQUEUES || r->buf_len || r->streamed)
        return false;
    reset_response(r);
    r->requeues++;
    h->max_active = h->active;
    h->ok_since_cut = 0;
    wait_push(h, r, true);
    return true;
}

/* A finished transfer lets a lowered bound grow back, one slot per RAISE_AFTER_OK successes. */
static void note_success(fetch_http *h)
{
    if (h->max_active < h->limit && ++h->ok_since_cut >= RAISE_AFTER_OK) {
        h->max_active++;
        h->ok_since_cut = 0;
    }
}

/* Moves waiting requests into the multi while the bound allows. Runs from the loop only (never
 * inside fetch_http_request), so a failure may be reported at once. */
static void pump(fetch_http *h)
{
    while (!h->closing && h->wait_head && h->active < h->max_active) {
        fetch_http_req *r = wait_pop(h);
        if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
            r->result = CURLE_OUT_OF_MEMORY;
            report(r, -ENOMEM);
            continue;
        }
        list_add(&h->live, r);
        h->active++;
    }
}

static void on_timeout(uv_timer_t *t);

/* Has the loop call pump soon (a slot freed outside dispatch): curl's timer, fired now, ends in
 * dispatch; curl re-arms it as it needs after its socket action. */
static void kick(fetch_http *h)
{
    if (h->wait_head && !h->closing && !h->torn_down)
        uv_timer_start(&h->timer, on_timeout, 0, 0);
}

static void teardown(fetch_http *h);

/* Moves finished transfers to a local list first, then runs their callbacks, which may start
 * new requests or even free the engine. */
static void dispatch(fetch_http *h)
{
    fetch_http_req *done = NULL, **tail = &done;
    CURLMsg *m;
    int left;
    while (h->multi && (m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode res = m->data.result;
        fetch_http_req *r = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(h->multi, e);
        list_del(&h->live, r);
        h->active--;
        if (requeue_for_fds(h, r, res))
            continue;
        if (res == CURLE_OK)
            note_success(h);
        r->result = res;
        r->finished = true;
        r->next_done = NULL;
        *tail = r;
        tail = &r->next_done;
    }
    h->dispatching++;
    while (done) {
        fetch_http_req *r = done;
        done = r->next_done;
        if (r->cancelled)
            free_req(r);
        else
            report(r, h->closing ? -ECANCELED : result_err(r));
    }
    pump(h);
    h->dispatching--;
    if (h->closing && !h->dispatching)
        teardown(h);
}

static void on_timeout(uv_timer_t *t)
{
    fetch_http *h = t->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    dispatch(h);
}

static int on_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    fetch_http *h = userp;
    if (h->torn_down)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx *c = p->data;
    fetch_http *h = c->h;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(h->multi, c->fd, flags, &running);
    dispatch(h);
}

static void maybe_free_engine(fetch_http *h)
{
    if (h->torn_down && h->open_handles == 0 && !h->multi) {
        free(h->ca_bundle);
        free(h);
    }
}

static void on_sock_closed(uv_handle_t *hd)
{
    sock_ctx *c = hd->data;
    fetch_http *h = c->h;
    free(c);
    h->open_handles--;
    maybe_free_engine(h);
}

static void close_sock(fetch_http *h, sock_ctx *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        h->socks = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, on_sock_closed);
}

/* curl's CURLMOPT_SOCKETFUNCTION: start, change or stop watching one socket. */
static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    fetch_http *h = userp;
    sock_ctx *c = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (c) {
            curl_multi_assign(h->multi, s, NULL);
            close_sock(h, c);
        }
        return 0;
    }
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c || uv_poll_init_socket(h->loop, &c->poll, s) != 0) {
            free(c);
            return -1;
        }
        c->fd = s;
        c->h = h;
        c->poll.data = c;
        c->next = h->socks;
        if (h->socks)
            h->socks->prev = c;
        h->socks = c;
        h->open_handles++;
        curl_multi_assign(h->multi, s, c);
    }
    int ev = ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    uv_poll_start(&c->poll, ev, on_poll);
    return 0;
}

static void on_timer_closed(uv_handle_t *hd)
{
    fetch_http *h = hd->data;
    h->open_handles--;
    maybe_free_engine(h);
}

int fetch_http_new(uv_loop_t *loop, const char *ca_bundle, fetch_http **out)
{
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return -EIO;
        curl_ready = true;
    }
    fetch_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->loop = loop;
    if (ca_bundle && *ca_bundle && !(h->ca_bundle = strdup(ca_bundle)))
        goto fail;
    if (!(h->multi = curl_multi_init()))
        goto fail;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    /* curl's limits equal ours. MAXCONNECTS counts busy connections too: below the bound, every
     * transfer ending while the others run would close its connection and the next would open
     * one (a connection per request). The total limit makes curl close an idle connection to
     * make room, rather than ever hold more descriptors than transfers may use. */
    h->limit = h->max_active = transfer_limit();
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)h->limit);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)h->limit);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)h->limit);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->open_handles = 1;
    *out = h;
    return 0;
fail:
    free(h->ca_bundle);
    free(h);
    return -ENOMEM;
}

/* Releases the multi handle and closes every uv handle; memory goes in the last close cb. */
static void teardown(fetch_http *h)
{
    if (h->torn_down)
        return;
    h->torn_down = true;
    uv_timer_stop(&h->timer);
    /* curl_multi_cleanup may still report sockets through on_socket: keep h valid meanwhile. */
    curl_multi_cleanup(h->multi);
    h->multi = NULL;
    while (h->socks)
        close_sock(h, h->socks);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

void fetch_http_free(fetch_http *h)
{
    if (!h || h->closing)
        return;
    h->closing = true;
    h->dispatching++;
    while (h->live) {
        fetch_http_req *r = h->live;
        list_del(&h->live, r);
        h->active--;
        curl_multi_remove_handle(h->multi, r->easy);
        r->result = CURLE_ABORTED_BY_CALLBACK;
        report(r, -ECANCELED);
    }
    for (fetch_http_req *r; (r = wait_pop(h));) {
        r->result = CURLE_ABORTED_BY_CALLBACK;
        report(r, -ECANCELED);
    }
    h->dispatching--;
    if (!h->dispatching)
        teardown(h);
}

void fetch_http_cancel(fetch_http_req *r)
{
    fetch_http *h = r->h;
    if (r->finished) {
        /* Already collected by dispatch (a sibling's callback cancels it): freed there. */
        r->cancelled = true;
        return;
    }
    if (r->waiting) {
        wait_remove(h, r);
        free_req(r);
        return;
    }
    list_del(&h->live, r);
    h->active--;
    curl_multi_remove_handle(h->multi, r->easy);
    free_req(r);
    kick(h);
}

/* A header value we keep must be short printable ASCII: the ETag goes back into If-Match (a
 * CR in it would inject a header), every value may end up in a message. Others are dropped
 * (reported absent). */
static bool header_value_ok(const char *v, size_t n)
{
    if (n > MAX_HEADER_VALUE)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
            return false;
    return true;
}

/* Keeps the response headers we report; a new status line (after 100 Continue) resets them. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    fetch_http_req *r = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        free(r->etag);
        free(r->content_range);
        free(r->content_type);
        free(r->request_id);
        r->etag = r->content_range = r->content_type = r->request_id = NULL;
        r->content_length = -1;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return len;
    size_t nlen = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    char **slot = NULL;
#define HDR_IS(name) (nlen == sizeof(name) - 1 && strncasecmp(p, name, nlen) == 0)
    if (HDR_IS("etag"))
        slot = &r->etag;
    else if (HDR_IS("content-range"))
        slot = &r->content_range;
    else if (HDR_IS("content-type"))
        slot = &r->content_type;
    else if (HDR_IS("x-amz-request-id") || HDR_IS("x-amzn-requestid"))
        slot = &r->request_id;
    else if (HDR_IS("content-length"))
        r->content_length = strtoll(v, NULL, 10);
#undef HDR_IS
    if (slot) {
        free(*slot);
        *slot = header_value_ok(v, (size_t)(end - v)) ? strndup(v, (size_t)(end - v)) : NULL;
    }
    return len;
}

/* 2xx bodies go to the data callback when there is one; everything else to bounded memory. */
static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    fetch_http_req *r = ud;
    size_t len = size * n;
    if (!r->decided) {
        long st = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &st);
        r->stream = r->on_data && st >= 200 && st < 300;
        r->decided = true;
    }
    if (r->stream) {
        int e = r->on_data(r->ud, p, len);
        if (e) {
            r->data_err = e;
            return 0;
        }
        r->streamed += len;
        return len;
    }
    if (r->buf_len + len > r->max_body) {
        r->data_err = -EFBIG;
        return 0;
    }
    if (r->buf_len + len + 1 > r->buf_cap) {
        size_t cap = r->buf_cap ? r->buf_cap : 4096;
        while (cap < r->buf_len + len + 1)
            cap *= 2;
        char *b = realloc(r->buf, cap);
        if (!b) {
            r->data_err = -ENOMEM;
            return 0;
        }
        r->buf = b;
        r->buf_cap = cap;
    }
    memcpy(r->buf + r->buf_len, p, len);
    r->buf_len += len;
    r->buf[r->buf_len] = '\0';
    return len;
}

/* Upload body from memory or pread from the file, so a rewind (curl re-sending on a reused
 * connection that died) is just a position change. */
static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    fetch_http_req *r = ud;
    size_t want = size * n, left = r->body_len - r->body_pos;
    if (want > left)
        want = left;
    if (want == 0)
        return 0;
    if (r->body_fd >= 0) {
        ssize_t got = pread(r->body_fd, buf, want, (off_t)(r->body_offset + r->body_pos));
        if (got <= 0) {
            r->data_err = got < 0 ? -errno : -EIO;
            return CURL_READFUNC_ABORT;
        }
        want = (size_t)got;
    } else {
        memcpy(buf, r->body + r->body_pos, want);
    }
    r->body_pos += want;
    return want;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
    fetch_http_req *r = ud;
    if (origin != SEEK_SET || off < 0 || (size_t)off > r->body_len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->body_pos = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

/* CURLOPT_OPENSOCKETFUNCTION: the socket is close-on-exec from its creation (no task ever
 * inherits it), and a failure's errno is kept: libcurl reports a socket() that failed for want
 * of a descriptor only as "Couldn't connect". */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    fetch_http_req *r = ud;
    curl_socket_t s = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (s == CURL_SOCKET_BAD)
        r->fd_errno = errno;
    return s;
}

/* Method and body options. */
static int setup_method(fetch_http_req *r, const fetch_http_opts *o)
{
    CURL *e = r->easy;
    bool has_body = o->body || o->body_fd >= 0;
    /* A POST from memory is handed to curl as it is: a small one leaves with the headers, with
     * no 64 KiB upload buffer allocated per transfer (curl rewinds it itself on a resend). */
    bool fields = o->body && strcmp(o->method, "POST") == 0;
    if (fields) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    } else if (has_body) {
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, r);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
    }
    if (strcmp(o->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(o->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(o->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(o->method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (!has_body) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    } else {
        return -EINVAL;
    }
    return 0;
}

/* Transport options shared by every request. */
static void setup_transport(fetch_http_req *r, const fetch_http_opts *o)
{
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r);
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    /* Send the path exactly as given: by default curl removes "/../" and "/./" (RFC 3986 dot
     * segments), so an S3 key "a/../b" would be signed as one key and sent as another. S3 takes
     * keys literally (like the Go SDK's DisableRestProtocolURICleaning for S3). */
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     o->connect_timeout_ms > 0 ? o->connect_timeout_ms : DEFAULT_CONNECT_MS);
    if (o->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_BYTES);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, LOW_SPEED_SECS);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* "" disables the proxy even when http_proxy is set: a token in clear must not leave the
     * host for a proxy. */
    if (o->no_proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    /* One transfer per connection: parallel parts must spread over connections (S3 scales
     * per connection), so no HTTP/2 multiplexing. */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* A large receive buffer only where bodies stream (S3 downloads: fewer, larger writes);
     * an API call's answer is small, and every transfer in flight holds its buffer. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, o->on_data ? STREAM_BUFFER : SMALL_BUFFER);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (r->h->ca_bundle)
        curl_easy_setopt(e, CURLOPT_CAINFO, r->h->ca_bundle);
}

int fetch_http_request(fetch_http *h, const fetch_http_opts *o, fetch_http_done_cb done, void *ud,
                       fetch_http_req **out)
{
    if (h->closing)
        return -ECANCELED;
    if (!o->method || !o->url || !done)
        return -EINVAL;
    fetch_http_req *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->h = h;
    r->done = done;
    r->ud = ud;
    r->on_data = o->on_data;
    r->body_fd = o->body ? -1 : o->body_fd;
    r->body_offset = o->body_offset;
    r->body_len = (o->body || o->body_fd >= 0) ? o->body_len : 0;
    r->max_body = o->max_body ? o->max_body : DEFAULT_MAX_BODY;
    r->content_length = -1;
    int rc = -ENOMEM;
    if (o->body && !(r->body = malloc(o->body_len ? o->body_len : 1)))
        goto fail;
    if (o->body)
        memcpy(r->body, o->body, o->body_len);
    if (!(r->easy = curl_easy_init()))
        goto fail;
    setup_transport(r, o);
    if ((rc = setup_method(r, o)) < 0)
        goto fail;
    rc = -ENOMEM;
    for (const char *const *hd = o->headers; hd && *hd; hd++) {
        struct curl_slist *l = curl_slist_append(r->hdrs, *hd);
        if (!l)
            goto fail;
        r->hdrs = l;
    }
    /* No "Expect: 100-continue" round trip: our uploads are signed, so a rejection costs only
     * the body bytes already sent, and the wait would add latency to every PUT. */
    struct curl_slist *l = curl_slist_append(r->hdrs, "Expect:");
    if (!l)
        goto fail;
    r->hdrs = l;
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->hdrs);
    if (h->wait_head || h->active >= h->max_active) {
        /* No timer runs while it waits: its timeouts start when it enters the multi. */
        wait_push(h, r, false);
        if (out)
            *out = r;
        return 0;
    }
    if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
        rc = -EIO;
        goto fail;
    }
    list_add(&h->live, r);
    h->active++;
    if (out)
        *out = r;
    return 0;
fail:
    free_req(r);
    return rc;
}
