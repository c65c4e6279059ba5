/* http.h - the HTTP engine: one libcurl multi handle driven by a libuv loop (the wiring of
 * curl's docs/examples/multi-uv.c: CURLMOPT_SOCKETFUNCTION + CURLMOPT_TIMERFUNCTION, one
 * uv_poll per socket, one uv_timer). Connections are pooled in the multi handle and reused.
 *
 * Concurrency: at most 64 transfers run at once (fewer when RLIMIT_NOFILE is low: (limit - 32)
 * / 4), and never more connections than that; further requests wait in FIFO order, and their
 * timeouts start only when they leave the queue. A connect that finds no free descriptor
 * (EMFILE) waits for a running transfer instead of failing, and the bound adapts; with nothing
 * of the engine's own running, the request fails with -EMFILE. Sockets are close-on-exec.
 *
 * Lifetimes: fetch_http_new allocates; fetch_http_free cancels every request in flight (each
 * done callback runs once with err -ECANCELED) and closes the handles; the engine's memory is
 * released in the last close callback, so the loop must run once more. A request's done
 * callback runs exactly once unless the request is cancelled with fetch_http_cancel (then never);
 * the request is freed right after its done callback returns. */
#ifndef DAGY_FETCH_HTTP_H
#define DAGY_FETCH_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct fetch_http fetch_http;
typedef struct fetch_http_req fetch_http_req;

#define FETCH_HTTP_ERR_MAX 256

typedef struct {
    int err;     /* 0 = an HTTP response arrived; else -errno (-ETIMEDOUT,
                    -ECONNREFUSED, -ECONNRESET, -EHOSTUNREACH, -EIO, -ECANCELED, -EMFILE,
                    -EFBIG when the in-memory body exceeded its bound, or the error
                    a data callback returned) */
    long status; /* HTTP status, 0 if none */
    char *body;  /* in-memory body, NUL-terminated (never NULL in a callback) */
    size_t body_len;
    uint64_t streamed; /* bytes handed to the data callback */
    const char *etag;  /* response headers (NULL when absent, or not short printable ASCII) */
    const char *content_range;
    const char *content_type;
    const char *request_id;          /* x-amz-request-id or x-amzn-RequestId */
    int64_t content_length;          /* -1 when absent */
    char errmsg[FETCH_HTTP_ERR_MAX]; /* transport error in words ("" if none); never secrets */
} fetch_http_resp;

/* Receives a 2xx response body as it arrives; returns 0 or -errno to abort the transfer (the
 * done callback then gets that err). Non-2xx bodies always go to memory (for error parsing). */
typedef int (*fetch_http_data_cb)(void *ud, const void *data, size_t len);
typedef void (*fetch_http_done_cb)(void *ud, const fetch_http_resp *r);

typedef struct {
    const char *method;         /* "GET", "PUT", "POST", "HEAD", "DELETE" */
    const char *url;            /* already percent-encoded */
    const char *const *headers; /* "Name: value" strings, NULL-terminated; may be NULL */
    const void *body;           /* request body (copied), or NULL */
    size_t body_len;
    int body_fd; /* >= 0: upload body_len bytes from this fd at body_offset
                    (pread; the fd must stay open until done) */
    uint64_t body_offset;
    size_t max_body;            /* in-memory body bound; 0 = 1 MiB */
    fetch_http_data_cb on_data; /* NULL = 2xx bodies go to memory too */
    long connect_timeout_ms;    /* 0 = 10 s */
    long timeout_ms;            /* whole transfer; 0 = none (low-speed limit still applies) */
    bool no_proxy;              /* never use a proxy (credentials endpoints on loopback) */
} fetch_http_opts;

/* Creates the engine on loop. ca_bundle (may be NULL) is used as CURLOPT_CAINFO; TLS peer and
 * host verification are always on; libcurl's proxy variables (https_proxy, no_proxy, ...) apply.
 * Returns 0, -ENOMEM or -EIO. */
int fetch_http_new(uv_loop_t *loop, const char *ca_bundle, fetch_http **out);
/* Cancels all requests (done callbacks with -ECANCELED), then closes; see lifetimes above.
 * Safe to call from inside a done callback. */
void fetch_http_free(fetch_http *h);

/* Starts a request; the done callback always runs later, never inside this call. Returns 0,
 * -EINVAL, -ENOMEM or -ECANCELED (engine being freed). *out (may be NULL) receives the handle,
 * valid until the done callback returns. */
int fetch_http_request(fetch_http *h, const fetch_http_opts *o, fetch_http_done_cb done, void *ud,
                       fetch_http_req **out);
/* Aborts a request without calling its done callback, and frees it. */
void fetch_http_cancel(fetch_http_req *r);

/* Response text (a body, an error string) made fit for a message: into out (cap bytes), at most
 * cap - 1 bytes of valid UTF-8 (invalid bytes become U+FFFD, a cut ends in "..."), control
 * characters (C0, DEL, C1) turned into spaces. Module-internal (fetch/). */
void fetch_http__text(char *out, size_t cap, const char *s, size_t n);

/* Maps a libcurl CURLcode to a negative errno (exposed for tests). */
int fetch_http__curl_errno(int curlcode);

#endif
