/* lambda.c - `dagy-launch lambda`: an AWS Lambda custom runtime (Runtime API 2018-06-01,
 * https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html). One process serves many
 * invocations: GET .../invocation/next (a long poll without timeout), then the answer with
 * POST .../invocation/ID/response or .../ID/error.
 *
 * Each invocation runs in a child process (fork) that computes the answer
 * (launch__lambda_event) and writes it to a pipe. The parent waits for it until the
 * invocation's deadline (Lambda-Runtime-Deadline-Ms) minus a margin; a child still busy then is
 * killed and the invocation answered with a Dagy.DeadlineExceeded error, so Lambda never has to
 * kill the runtime, and a crash or a hang in one invocation costs only that invocation. Work cut
 * short is what a killed `dagy-launch` leaves: every write is conditional and every launch
 * exactly-once by run id, and the reconciler closes a launch that stopped half-way. */
#include "launcher/launch.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/names.h"
#include "proto/util.h"

#define RT_MAX_EVENT    ((6u << 20) + (64u << 10)) /* Lambda's payload limit (6 MB) and a margin */
#define RT_MAX_ANSWER   (6u << 20)                 /* a larger response is refused by Lambda */
#define RT_POST_TIMEOUT 10000L                     /* ms for a response/error POST */
#define RT_MARGIN_MS    500L              /* default: answer this long before the deadline */
#define RT_NO_DEADLINE  (15L * 60 * 1000) /* ms granted when the deadline header is missing */

typedef struct {
    char *data;
    size_t len, max;
    bool too_big;
} rt_buf;

typedef struct {
    char request_id[PROTO_NAME_MAX + 1];
    bool have_id;
    long long deadline_ms; /* epoch ms, 0 = not given */
    char trace_id[256];
} rt_inv;

typedef struct {
    char base[300]; /* http://HOST:PORT/2018-06-01/runtime */
    long margin_ms;
    CURL *curl;
} rt;

/* The invocation's child while it runs (for the SIGTERM handler). */
static volatile sig_atomic_t current_child;

/* SIGTERM (Lambda's shutdown, or an operator): the child's process group goes first. */
static void on_term(int sig)
{
    pid_t pid = (pid_t)current_child;
    if (pid > 0)
        kill(-pid, SIGKILL);
    _exit(128 + sig);
}

/* Appends a response body chunk, bounded (a larger body is refused, not cut). */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    rt_buf *b = ud;
    size_t add = size * n;
    if (b->len + add > b->max) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    char *d = realloc(b->data, b->len + add + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, add);
    b->len += add;
    d[b->len] = '\0';
    b->data = d;
    return add;
}

/* A header value of `line` if it is `name` ("Name: value\r\n"), trimmed into out. */
static bool header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
    size_t k = strlen(name);
    if (n <= k + 1 || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return false;
    const char *v = line + k + 1;
    size_t len = n - k - 1;
    while (len && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
    if (len >= cap)
        return false;
    memcpy(out, v, len);
    out[len] = '\0';
    return true;
}

/* The invocation's headers: request id, deadline, X-Ray trace id. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    rt_inv *inv = ud;
    size_t len = size * n;
    char v[256];
    if (header_value(p, len, "Lambda-Runtime-Aws-Request-Id", v, sizeof v)) {
        char err[160];
        inv->have_id = proto_name_check(PROTO_NAME_RUN_ID, v, err, sizeof err);
        if (inv->have_id)
            launch__fmt(inv->request_id, sizeof inv->request_id, "%s", v);
    } else if (header_value(p, len, "Lambda-Runtime-Deadline-Ms", v, sizeof v)) {
        long d = 0;
        inv->deadline_ms = launch_parse_int(v, 1, 9000000000000000L, &d) == 0 ? d : 0;
    } else if (header_value(p, len, "Lambda-Runtime-Trace-Id", v, sizeof v)) {
        bool ok = true;
        for (const char *c = v; *c && ok; c++)
            ok = *c > 0x20 && *c < 0x7f;
        if (ok)
            launch__fmt(inv->trace_id, sizeof inv->trace_id, "%s", v);
    }
    return len;
}

static long long now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* One request to the Runtime API; 0 with the HTTP status, or -EIO with err. */
static int rt_request(rt *r, const char *path, const char *body, const char *err_type, rt_buf *resp,
                      rt_inv *inv, long *status, char *err)
{
    char url[600], hdr[160];
    launch__fmt(url, sizeof url, "%s%s", r->base, path);
    CURL *c = r->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, ""); /* the Runtime API is local: never via a proxy */
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    /* /next blocks until an invocation arrives (the process is frozen meanwhile): no timeout. */
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, body ? RT_POST_TIMEOUT : 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    if (inv) {
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, inv);
    }
    struct curl_slist *h = NULL;
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        h = curl_slist_append(h, "Content-Type: application/json");
        if (err_type) {
            launch__fmt(hdr, sizeof hdr, "Lambda-Runtime-Function-Error-Type: %s", err_type);
            h = curl_slist_append(h, hdr);
        }
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        launch__fmt(err, LAUNCH_ERR_MAX, "Runtime API %s: %s", path,
                    resp->too_big ? "the event is larger than 6 MB" : curl_easy_strerror(rc));
        return -EIO;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

/* POSTs a response or an error to `path`; failures are logged (the runtime goes on). */
static void rt_post(rt *r, const char *path, const cJSON *payload, const char *err_type)
{
    char *text = cJSON_PrintUnformatted(payload), err[LAUNCH_ERR_MAX];
    rt_buf resp = {.max = 1u << 20};
    long status = 0;
    if (!text)
        return;
    if (rt_request(r, path, text, err_type, &resp, NULL, &status, err) < 0)
        fprintf(stderr, "dagy-launch: lambda: %s\n", err);
    else if (status < 200 || status >= 300) {
        char *shown = proto_utf8_clean(resp.data ? resp.data : "", resp.len, 300);
        fprintf(stderr, "dagy-launch: lambda: Runtime API %s: HTTP %ld: %s\n", path, status,
                shown ? shown : "");
        free(shown);
    }
    free(resp.data);
    free(text);
}

/* {"errorType", "errorMessage"}. */
static cJSON *error_payload(const char *type, const char *msg)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "errorType", type);
    cJSON_AddStringToObject(e, "errorMessage", msg);
    return e;
}

/* The child: the answer to one event, as "R" or "E" then the JSON text, on fd `out`. */
static void child_main(const char *event, size_t len, const rt_inv *inv, int out)
{
    signal(SIGPIPE, SIG_DFL);
    if (inv->trace_id[0])
        setenv("_X_AMZN_TRACE_ID", inv->trace_id, 1);
    cJSON *a = NULL;
    int rc = launch__lambda_event(event, len, &a);
    char *text = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    int ok = 0;
    if (text) {
        char kind = rc == 0 ? 'R' : 'E';
        size_t n = strlen(text), off = 0;
        ok = write(out, &kind, 1) == 1;
        while (ok && off < n) {
            ssize_t w = write(out, text + off, n - off);
            if (w < 0 && errno == EINTR)
                continue;
            ok = w > 0;
            off += w > 0 ? (size_t)w : 0;
        }
        free(text);
    }
    close(out);
    fflush(stderr);
    exit(ok ? 0 : 1);
}

/* Reads the child's answer until EOF or the deadline; returns 0 at EOF, -ETIMEDOUT, -EFBIG. */
static int read_answer(int fd, long long until_ms, rt_buf *b)
{
    char chunk[65536];
    for (;;) {
        long long left = until_ms - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue; /* the loop re-checks the time */
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return 0;
        if (b->len + (size_t)got > b->max)
            return -EFBIG;
        if (on_body(chunk, 1, (size_t)got, b) != (size_t)got)
            return -ENOMEM;
    }
}

/* Reaps the child, killing it (and anything it started) first if `kill_it` or if it has not
 * exited by `until_ms` (a child that closed the pipe and then hangs must not hold the
 * invocation past its deadline). Returns its wait status. */
static int reap(pid_t pid, bool kill_it, long long until_ms)
{
    int st = 0;
    while (!kill_it) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            return st;
        if (w < 0 && errno != EINTR)
            return st;
        if (now_ms() >= until_ms)
            kill_it = true;
        else
            usleep(2000);
    }
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

/* Runs one invocation in a child; returns the payload and sets *err_type for an error. */
static cJSON *invoke(rt *r, const rt_buf *event, const rt_inv *inv, const char **err_type)
{
    long long deadline = inv->deadline_ms ? inv->deadline_ms : now_ms() + RT_NO_DEADLINE;
    long long until = deadline - r->margin_ms;
    char msg[LAUNCH_ERR_MAX];
    *err_type = "Dagy.Failed";
    if (until <= now_ms()) {
        *err_type = "Dagy.DeadlineExceeded";
        launch__fmt(msg, sizeof msg,
                    "the invocation's deadline leaves less than %ld ms: nothing "
                    "was done",
                    r->margin_ms);
        return error_payload(*err_type, msg);
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return error_payload(*err_type, "cannot create a pipe for the invocation");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return error_payload(*err_type, "cannot start the invocation (fork failed)");
    }
    if (pid == 0) {
        close(fds[0]);
        setpgid(0, 0);
        signal(SIGTERM, SIG_DFL);
        child_main(event->data ? event->data : "", event->len, inv, fds[1]);
    }
    setpgid(pid, pid);
    current_child = pid;
    close(fds[1]);
    rt_buf ans = {.max = RT_MAX_ANSWER + 1};
    int rc = read_answer(fds[0], until, &ans);
    close(fds[0]);
    int st = reap(pid, rc < 0, until);
    current_child = 0;
    cJSON *out = NULL;
    if (rc == -ETIMEDOUT) {
        *err_type = "Dagy.DeadlineExceeded";
        launch__fmt(msg, sizeof msg,
                    "the invocation did not finish %ld ms before its deadline and was stopped; "
                    "work in progress may be half-done (launches are exactly-once by run id; "
                    "dagy-launch reconcile closes what stopped half-way)",
                    r->margin_ms);
    } else if (rc < 0) {
        launch__fmt(msg, sizeof msg, "the answer is larger than Lambda's 6 MB limit");
    } else if (ans.len < 2 || (ans.data[0] != 'R' && ans.data[0] != 'E') ||
               !(out = cJSON_ParseWithLength(ans.data + 1, ans.len - 1))) {
        launch__fmt(msg, sizeof msg, "the invocation ended without an answer (%s %d)",
                    WIFSIGNALED(st) ? "signal" : "exit status",
                    WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    } else if (ans.data[0] == 'E') {
        const char *t = launch__str(out, "errorType");
        *err_type = t && strncmp(t, "Dagy.", 5) == 0 && strlen(t) < 48 ? t : "Dagy.Failed";
    } else {
        *err_type = NULL;
    }
    if (out && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) /* answered, then failed (a sanitizer) */
        fprintf(stderr,
                "dagy-launch: lambda: request %s: the invocation's process ended with %s %d\n",
                inv->request_id, WIFSIGNALED(st) ? "signal" : "exit status",
                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    free(ans.data);
    if (!out) {
        fprintf(stderr, "dagy-launch: lambda: request %s: %s\n", inv->request_id, msg);
        return error_payload(*err_type, msg);
    }
    return out;
}

/* An event over the payload limit: its invocation is answered, not left to time out. */
static void answer_too_big(rt *r, const rt_inv *inv)
{
    char path[PROTO_NAME_MAX + 40], msg[128];
    launch__fmt(msg, sizeof msg, "the event is larger than %u bytes", RT_MAX_EVENT);
    launch__fmt(path, sizeof path, "/invocation/%s/error", inv->request_id);
    fprintf(stderr, "dagy-launch: lambda: request %s: %s\n", inv->request_id, msg);
    cJSON *e = error_payload("Dagy.InvalidEvent", msg);
    rt_post(r, path, e, "Dagy.InvalidEvent");
    cJSON_Delete(e);
}

/* The Runtime API's base URL from AWS_LAMBDA_RUNTIME_API (host:port). */
static int runtime_base(rt *r, char *err)
{
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    if (!api || !*api) {
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "AWS_LAMBDA_RUNTIME_API is not set (dagy-launch lambda "
                    "runs inside AWS Lambda, or under a Runtime API "
                    "emulator)");
        return -EINVAL;
    }
    bool ok = strlen(api) < 200;
    for (const char *c = api; *c && ok; c++)
        ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
             strchr(".-:[]", *c);
    if (!ok) {
        launch__fmt(err, LAUNCH_ERR_MAX, "AWS_LAMBDA_RUNTIME_API must be HOST:PORT");
        return -EINVAL;
    }
    launch__fmt(r->base, sizeof r->base, "http://%s/2018-06-01/runtime", api);
    return 0;
}

/* What every invocation needs, checked once: a bad value is an init error, not N failures. */
static int runtime_config(rt *r, char *err)
{
    const char *m = getenv("DAGY_LAMBDA_MARGIN_MS");
    r->margin_ms = RT_MARGIN_MS;
    if (m && *m && launch_parse_int(m, 0, 600000, &r->margin_ms) < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "DAGY_LAMBDA_MARGIN_MS must be 0-600000 (ms)");
        return -EINVAL;
    }
    launch_config cfg;
    return launch_config_from_env(&cfg, 0, err);
}

/* Waits for the next invocation; 0 with the event, or -EIO (the loop retries, bounded). */
static int next_invocation(rt *r, rt_buf *event, rt_inv *inv, char *err)
{
    long status = 0;
    memset(inv, 0, sizeof *inv);
    *event = (rt_buf){.max = RT_MAX_EVENT};
    int rc = rt_request(r, "/invocation/next", NULL, NULL, event, inv, &status, err);
    if (rc == 0 && status != 200) {
        launch__fmt(err, LAUNCH_ERR_MAX, "Runtime API /invocation/next: HTTP %ld", status);
        rc = -EIO;
    }
    if (rc < 0 && event->too_big && inv->have_id)
        return -EFBIG; /* answerable: the request id came with the headers */
    if (rc == 0 && !inv->have_id) {
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "Runtime API /invocation/next: no valid "
                    "Lambda-Runtime-Aws-Request-Id");
        rc = -EIO;
    }
    return rc;
}

int launch_cmd_lambda(void)
{
    rt r = {0};
    char err[LAUNCH_ERR_MAX];
    if (runtime_base(&r, err) < 0) {
        fprintf(stderr, "dagy-launch: lambda: %s\n", err);
        return LAUNCH_EXIT_INVALID;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (!(r.curl = curl_easy_init())) {
        fprintf(stderr, "dagy-launch: lambda: cannot initialise libcurl\n");
        return LAUNCH_EXIT_FAILED;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_term);
    if (runtime_config(&r, err) < 0) {
        fprintf(stderr, "dagy-launch: lambda: %s\n", err);
        cJSON *e = error_payload("Dagy.InvalidConfiguration", err);
        rt_post(&r, "/init/error", e, "Runtime.ConfigError");
        cJSON_Delete(e);
        curl_easy_cleanup(r.curl);
        return LAUNCH_EXIT_INVALID;
    }
    /* Lambda freezes the process between invocations; it never asks it to stop. A Runtime API
     * that keeps failing (or an emulator that went away) ends the process after a few tries. */
    int failures = 0;
    while (failures < 5) {
        rt_buf event;
        rt_inv inv;
        int rc = next_invocation(&r, &event, &inv, err);
        if (rc == -EFBIG) {
            free(event.data);
            answer_too_big(&r, &inv);
            continue;
        }
        if (rc < 0) {
            fprintf(stderr, "dagy-launch: lambda: %s\n", err);
            free(event.data);
            failures++;
            usleep(200000u << failures);
            continue;
        }
        failures = 0;
        const char *err_type = NULL;
        cJSON *payload = invoke(&r, &event, &inv, &err_type);
        free(event.data);
        char path[PROTO_NAME_MAX + 40];
        launch__fmt(path, sizeof path, "/invocation/%s/%s", inv.request_id,
                    err_type ? "error" : "response");
        rt_post(&r, path, payload, err_type);
        cJSON_Delete(payload);
    }
    curl_easy_cleanup(r.curl);
    curl_global_cleanup();
    return LAUNCH_EXIT_FAILED;
}
