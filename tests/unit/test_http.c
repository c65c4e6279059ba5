/* test_http.c - the libcurl-on-libuv engine against an in-process loopback HTTP server: bodies
 * to memory or streamed, response headers, connection reuse, uploads from memory and from a
 * file, body bounds, connection errors, cancellation, and clean loop shutdown. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>

#include "fetch/http.h"

/* ---- a tiny HTTP/1.1 server on the same loop ---- */

typedef struct {
    uv_tcp_t tcp;
    int port;
    int accepted;
} server;

typedef struct {
    uv_tcp_t tcp;
    char buf[1 << 16];
    size_t len;
} conn;

static void on_conn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_written(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void send_text(conn *c, const char *status, const char *extra, const char *body,
                      size_t body_len)
{
    char *out = malloc(body_len + 512);
    int n =
        snprintf(out, 512, "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%s\r\n", status, body_len, extra);
    memcpy(out + n, body, body_len);
    uv_write_t *w = malloc(sizeof *w);
    w->data = out;
    uv_buf_t b = uv_buf_init(out, (unsigned)(n + body_len));
    uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

/* Answers one complete request; returns bytes consumed or 0 if incomplete. */
static size_t serve_one(conn *c)
{
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t hlen = (size_t)(end - c->buf) + 4, clen = 0;
    char *cl = strcasestr(c->buf, "content-length:");
    if (cl && cl < end)
        clen = strtoul(cl + 15, NULL, 10);
    if (c->len < hlen + clen)
        return 0;
    char path[64] = "";
    sscanf(c->buf, "%*s %63s", path);
    if (strcmp(path, "/ok") == 0) {
        send_text(c, "200 OK", "ETag: \"abc\"\r\nx-amz-request-id: REQ1\r\n", "hello", 5);
    } else if (strcmp(path, "/stream") == 0 || strcmp(path, "/big") == 0) {
        size_t n = 100000;
        char *body = malloc(n);
        memset(body, 'z', n);
        send_text(c, "206 Partial Content", "Content-Range: bytes 0-99999/100000\r\n", body, n);
        free(body);
    } else if (strcmp(path, "/err") == 0) {
        const char *b = "<Error><Code>NoSuchKey</Code></Error>";
        send_text(c, "404 Not Found", "", b, strlen(b));
    } else if (strcmp(path, "/echo") == 0) {
        char b[64];
        int n = snprintf(b, sizeof b, "%.*s %zu %.*s", 4, c->buf, clen, (int)(clen < 8 ? clen : 8),
                         c->buf + hlen);
        send_text(c, "200 OK", "", b, (size_t)n);
    } /* "/hang": never answered */
    return hlen + clen;
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    conn *c = h->data;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn *c = s->data;
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_conn_closed);
        return;
    }
    c->len += (size_t)n;
    size_t used;
    while ((used = serve_one(c)) > 0) {
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
    }
}

static void on_accept(uv_stream_t *s, int status)
{
    server *sv = s->data;
    conn *c = calloc(1, sizeof *c);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    assert_int_equal(uv_accept(s, (uv_stream_t *)&c->tcp), 0);
    sv->accepted++;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void server_start(uv_loop_t *loop, server *sv)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof got;
    memset(sv, 0, sizeof *sv);
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &sv->tcp);
    sv->tcp.data = sv;
    assert_int_equal(uv_tcp_bind(&sv->tcp, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&sv->tcp, 16, on_accept), 0);
    uv_tcp_getsockname(&sv->tcp, (struct sockaddr *)&got, &len);
    sv->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, h->type == UV_TCP && h->data && h->data != arg ? on_conn_closed : NULL);
}

/* Runs the loop (kept alive by the server) until *calls reaches n, with a bound. */
static void run_until(uv_loop_t *loop, const int *calls, int n)
{
    for (int i = 0; i < 100000 && *calls < n; i++)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(*calls, n);
}

/* Closes the server and its connections, runs the loop dry, and requires a clean close. */
static void finish_loop(uv_loop_t *loop, server *sv)
{
    uv_walk(loop, close_walk, sv);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- tests ---- */

typedef struct {
    fetch_http *h;
    int port;
    int calls;
    fetch_http_resp last;
    char body[256];
    uint64_t streamed_bytes;
    int data_calls;
} ctx;

static void url(char *out, size_t n, int port, const char *path)
{
    snprintf(out, n, "http://127.0.0.1:%d%s", port, path);
}

static void record(ctx *c, const fetch_http_resp *r)
{
    c->calls++;
    c->last = *r;
    snprintf(c->body, sizeof c->body, "%s", r->body);
    c->last.body = c->body;
    c->last.etag = c->last.request_id = c->last.content_range = c->last.content_type = NULL;
}

static void on_second(void *ud, const fetch_http_resp *r)
{
    record(ud, r);
}

static void on_first(void *ud, const fetch_http_resp *r)
{
    ctx *c = ud;
    assert_int_equal(r->err, 0);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "hello");
    assert_string_equal(r->etag, "\"abc\"");
    assert_string_equal(r->request_id, "REQ1");
    assert_int_equal(r->content_length, 5);
    record(c, r);
    char u[128];
    url(u, sizeof u, c->port, "/ok");
    fetch_http_opts o = {.method = "GET", .url = u, .body_fd = -1};
    assert_int_equal(fetch_http_request(c->h, &o, on_second, c, NULL), 0);
}

static void memory_body_headers_and_connection_reuse(void **state)
{
    uv_loop_t loop;
    server sv;
    ctx c = {0};
    uv_loop_init(&loop);
    server_start(&loop, &sv);
    assert_int_equal(fetch_http_new(&loop, NULL, &c.h), 0);
    c.port = sv.port;
    char u[128];
    url(u, sizeof u, sv.port, "/ok");
    fetch_http_opts o = {.method = "GET", .url = u, .body_fd = -1};
    assert_int_equal(fetch_http_request(c.h, &o, on_first, &c, NULL), 0);
    assert_int_equal(c.calls, 0); /* never inside the call */
    run_until(&loop, &c.calls, 2);
    assert_int_equal(c.calls, 2);
    assert_string_equal(c.body, "hello");
    assert_int_equal(sv.accepted, 1);
    fetch_http_free(c.h);
    finish_loop(&loop, &sv);
}

static int count_data(void *ud, const void *d, size_t n)
{
    ctx *c = ud;
    c->streamed_bytes += n;
    c->data_calls++;
    return 0;
}

static void on_record(void *ud, const fetch_http_resp *r)
{
    record(ud, r);
}

static void streams_2xx_and_keeps_errors_in_memory(void **state)
{
    uv_loop_t loop;
    server sv;
    ctx c = {0};
    char u[128];
    uv_loop_init(&loop);
    server_start(&loop, &sv);
    assert_int_equal(fetch_http_new(&loop, NULL, &c.h), 0);
    url(u, sizeof u, sv.port, "/stream");
    fetch_http_opts o = {.method = "GET", .url = u, .body_fd = -1, .on_data = count_data};
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 1);
    assert_int_equal(c.last.err, 0);
    assert_int_equal(c.last.status, 206);
    assert_int_equal(c.streamed_bytes, 100000);
    assert_int_equal(c.last.streamed, 100000);
    assert_int_equal(c.last.body_len, 0);
    c.data_calls = 0;
    url(u, sizeof u, sv.port, "/err");
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 2);
    assert_int_equal(c.last.status, 404);
    assert_int_equal(c.data_calls, 0);
    assert_string_equal(c.body, "<Error><Code>NoSuchKey</Code></Error>");
    /* a body over the in-memory bound fails the request */
    url(u, sizeof u, sv.port, "/big");
    fetch_http_opts small = {.method = "GET", .url = u, .body_fd = -1, .max_body = 1000};
    assert_int_equal(fetch_http_request(c.h, &small, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 3);
    assert_int_equal(c.last.err, -EFBIG);
    fetch_http_free(c.h);
    finish_loop(&loop, &sv);
}

static void uploads_from_memory_and_file(void **state)
{
    uv_loop_t loop;
    server sv;
    ctx c = {0};
    char u[128];
    uv_loop_init(&loop);
    server_start(&loop, &sv);
    assert_int_equal(fetch_http_new(&loop, NULL, &c.h), 0);
    url(u, sizeof u, sv.port, "/echo");
    const char *hdrs[] = {"Content-Type: application/x-amz-json-1.0", NULL};
    fetch_http_opts o = {.method = "POST",
                         .url = u,
                         .headers = hdrs,
                         .body = "{\"a\":1}",
                         .body_len = 7,
                         .body_fd = -1};
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 1);
    assert_string_equal(c.body, "POST 7 {\"a\":1}");
    char path[] = "/tmp/dagy-test-http-XXXXXX";
    int fd = mkstemp(path);
    assert_true(write(fd, "0123456789abcdef", 16) == 16);
    fetch_http_opts f = {
        .method = "PUT", .url = u, .body_fd = fd, .body_offset = 4, .body_len = 10};
    assert_int_equal(fetch_http_request(c.h, &f, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 2);
    assert_string_equal(c.body, "PUT  10 456789ab");
    close(fd);
    unlink(path);
    fetch_http_free(c.h);
    finish_loop(&loop, &sv);
}

static void connection_refused(void **state)
{
    uv_loop_t loop;
    server sv;
    ctx c = {0};
    char u[128];
    uv_loop_init(&loop);
    server_start(&loop, &sv);
    int port = sv.port;
    uv_close((uv_handle_t *)&sv.tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(fetch_http_new(&loop, NULL, &c.h), 0);
    url(u, sizeof u, port, "/ok");
    fetch_http_opts o = {.method = "GET", .url = u, .body_fd = -1};
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.last.err, -ECONNREFUSED);
    assert_true(strlen(c.last.errmsg) > 0);
    fetch_http_free(c.h);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void on_free_timer(uv_timer_t *t)
{
    ctx *c = t->data;
    fetch_http_free(c->h);
    uv_close((uv_handle_t *)t, NULL);
}

static void on_never(void *ud, const fetch_http_resp *r)
{
    fail_msg("a cancelled request must not call back");
}

static void free_cancels_and_cancel_is_silent(void **state)
{
    uv_loop_t loop;
    server sv;
    ctx c = {0};
    char u[128];
    uv_timer_t t;
    uv_loop_init(&loop);
    server_start(&loop, &sv);
    assert_int_equal(fetch_http_new(&loop, NULL, &c.h), 0);
    url(u, sizeof u, sv.port, "/hang");
    fetch_http_opts o = {.method = "GET", .url = u, .body_fd = -1};
    fetch_http_req *r;
    assert_int_equal(fetch_http_request(c.h, &o, on_never, &c, &r), 0);
    fetch_http_cancel(r);
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    uv_timer_init(&loop, &t);
    t.data = &c;
    uv_timer_start(&t, on_free_timer, 100, 0);
    run_until(&loop, &c.calls, 2);
    assert_int_equal(c.last.err, -ECANCELED);
    uv_walk(&loop, close_walk, &sv);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* no_proxy requests (credentials endpoints on loopback) never go through http_proxy: the token
 * they carry must not reach a proxy in clear. Without it, the variable applies. */
static void no_proxy_ignores_the_proxy_variables(void **state)
{
    uv_loop_t loop;
    server sv, dead;
    ctx c = {0};
    char u[128], proxy[64];
    uv_loop_init(&loop);
    server_start(&loop, &dead);
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", dead.port);
    uv_close((uv_handle_t *)&dead.tcp, NULL);
    server_start(&loop, &sv);
    setenv("http_proxy", proxy, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    assert_int_equal(fetch_http_new(&loop, NULL, &c.h), 0);
    url(u, sizeof u, sv.port, "/ok");
    fetch_http_opts o = {.method = "GET", .url = u, .body_fd = -1, .no_proxy = true};
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 1);
    assert_int_equal(c.last.err, 0);
    assert_int_equal(c.last.status, 200);
    o.no_proxy = false;
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 2);
    assert_int_equal(c.last.err, -ECONNREFUSED); /* the dead proxy */
    unsetenv("http_proxy");
    fetch_http_free(c.h);
    finish_loop(&loop, &sv);
}

/* A burst far above the bound: every request succeeds, the rest waiting their turn, and no
 * more connections than the bound are ever opened. */
static void burst_is_queued_within_the_connection_bound(void **state)
{
    uv_loop_t loop;
    server sv;
    ctx c = {0};
    char u[128];
    uv_loop_init(&loop);
    server_start(&loop, &sv);
    assert_int_equal(fetch_http_new(&loop, NULL, &c.h), 0);
    url(u, sizeof u, sv.port, "/ok");
    fetch_http_opts o = {.method = "GET", .url = u, .body_fd = -1, .connect_timeout_ms = 2000};
    for (int i = 0; i < 300; i++)
        assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 300);
    assert_int_equal(c.last.status, 200);
    print_message("connections: %d\n", sv.accepted);
    assert_true(sv.accepted >= 1 && sv.accepted <= 64);
    fetch_http_free(c.h);
    finish_loop(&loop, &sv);
}

/* Takes every free descriptor (a soft limit just above the highest one open, holes filled);
 * returns how many were taken into fds[], or -1 if the limit cannot be lowered. */
static int exhaust_fds(struct rlimit *saved, int *fds, int cap)
{
    int top = 0, n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        if (atoi(e->d_name) > top)
            top = atoi(e->d_name);
    closedir(d);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, saved), 0);
    struct rlimit low = {(rlim_t)top + 1, saved->rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &low))
        return -1; /* not allowed here (valgrind keeps its own descriptors up there) */
    for (int fd; n < cap && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
        fds[n++] = fd;
    assert_true(n < cap);
    return n;
}

static void restore_fds(const struct rlimit *saved, int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, saved), 0);
}

static void on_tick(uv_timer_t *t)
{
}

/* A connect that finds no descriptor while other transfers run is not an error to retry: the
 * request waits at the head of the queue and goes once a transfer ends (here: is cancelled).
 * With nothing of ours running, nothing would free one: it fails at once with -EMFILE. */
static void emfile_waits_for_a_running_transfer(void **state)
{
    uv_loop_t loop;
    server sv;
    ctx c = {0};
    char u[128], hang[128];
    struct rlimit saved;
    int fds[4096], nfds;
    fetch_http_req *hung[3];
    uv_loop_init(&loop);
    server_start(&loop, &sv);
    assert_int_equal(fetch_http_new(&loop, NULL, &c.h), 0);
    url(u, sizeof u, sv.port, "/ok");
    url(hang, sizeof hang, sv.port, "/hang");
    fetch_http_opts o = {.method = "GET", .url = u, .body_fd = -1};
    fetch_http_opts oh = {.method = "GET", .url = hang, .body_fd = -1};
    uv_timer_t tick; /* every turn of run_until must end: here, not every turn brings I/O */
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);

    if ((nfds = exhaust_fds(&saved, fds, 4096)) < 0) {
        uv_close((uv_handle_t *)&tick, NULL);
        fetch_http_free(c.h);
        finish_loop(&loop, &sv);
        skip();
    }
    assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    run_until(&loop, &c.calls, 1);
    assert_int_equal(c.last.err, -EMFILE);
    assert_non_null(strstr(c.last.errmsg, "Too many open files"));
    restore_fds(&saved, fds, nfds);

    for (int i = 0; i < 3; i++)
        assert_int_equal(fetch_http_request(c.h, &oh, on_never, &c, &hung[i]), 0);
    for (int i = 0; i < 100000 && sv.accepted < 3; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true((nfds = exhaust_fds(&saved, fds, 4096)) >= 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(fetch_http_request(c.h, &o, on_record, &c, NULL), 0);
    for (uint64_t until = uv_now(&loop) + 300; uv_now(&loop) < until;)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(c.calls, 1); /* waiting, not failed */
    restore_fds(&saved, fds, nfds);
    for (int i = 0; i < 3; i++)
        fetch_http_cancel(hung[i]);
    run_until(&loop, &c.calls, 5);
    assert_int_equal(c.last.err, 0);
    assert_int_equal(c.last.status, 200);
    fetch_http_free(c.h);
    finish_loop(&loop, &sv);
}

/* Response text for messages: valid UTF-8, no control characters (C0, DEL, C1), bounded. */
static void response_text_is_cleaned_and_bounded(void **state)
{
    char out[64];
    const char in[] = "ok\xff\n\x1b[2J\xc2\x9b"
                      "x\x7f\xe2\x82\xac";
    fetch_http__text(out, sizeof out, in, sizeof in - 1);
    assert_string_equal(out, "ok\xef\xbf\xbd  [2J  x \xe2\x82\xac");
    char small[8];
    fetch_http__text(small, sizeof small, "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", 9);
    assert_string_equal(small, "\xe2\x82\xac..."); /* cut on a character, marked */
    fetch_http__text(small, sizeof small, "a\0b", 3);
    assert_string_equal(small, "a\xef\xbf\xbd"
                               "b");
}

static void errno_mapping(void **state)
{
    assert_int_equal(fetch_http__curl_errno(0), 0);
    assert_int_equal(fetch_http__curl_errno(28), -ETIMEDOUT);   /* OPERATION_TIMEDOUT */
    assert_int_equal(fetch_http__curl_errno(7), -ECONNREFUSED); /* COULDNT_CONNECT */
    assert_int_equal(fetch_http__curl_errno(56), -ECONNRESET);  /* RECV_ERROR */
    assert_int_equal(fetch_http__curl_errno(60), -EPROTO);      /* PEER_FAILED_VERIFICATION */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(memory_body_headers_and_connection_reuse),
        cmocka_unit_test(streams_2xx_and_keeps_errors_in_memory),
        cmocka_unit_test(uploads_from_memory_and_file),
        cmocka_unit_test(connection_refused),
        cmocka_unit_test(free_cancels_and_cancel_is_silent),
        cmocka_unit_test(no_proxy_ignores_the_proxy_variables),
        cmocka_unit_test(burst_is_queued_within_the_connection_bound),
        cmocka_unit_test(emfile_waits_for_a_running_transfer),
        cmocka_unit_test(response_text_is_cleaned_and_bounded),
        cmocka_unit_test(errno_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
