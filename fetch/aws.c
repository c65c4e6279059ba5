/* aws.c - the fetch_aws context (region, endpoints, credentials, HTTP engine), signed request
 * attempts (SigV4 with the hand-written signer of proto/sigv4.c), retry policy, JSON 1.0 API
 * calls (DynamoDB, ECS) and unsigned GETs. */
#include "fetch/creds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/rand.h>

#include "proto/sigv4.h"
#include "proto/util.h"

#define MAX_SIGNED_HEADERS 16

struct fetch_aws {
    uv_loop_t *loop;
    fetch_http *http;
    fetch_credsrc *creds;
    char region[64];
    fetch_endpoint s3, dynamodb, ecs, logs;
    fetch__op *ops;
    bool closing;
};

/* ---- context ---- */

int fetch_aws_new(uv_loop_t *loop, fetch_aws **out, char *err)
{
    fetch_aws *a = calloc(1, sizeof *a);
    int rc = -ENOMEM;
    if (!a) {
        snprintf(err, FETCH_ERR_MAX, "out of memory");
        return -ENOMEM;
    }
    a->loop = loop;
    if ((rc = fetch_region_from_env(a->region, sizeof a->region, err)) < 0)
        goto fail;
    if ((rc = fetch_endpoint_from_env("s3", a->region, &a->s3, err)) < 0 ||
        (rc = fetch_endpoint_from_env("dynamodb", a->region, &a->dynamodb, err)) < 0 ||
        (rc = fetch_endpoint_from_env("ecs", a->region, &a->ecs, err)) < 0 ||
        (rc = fetch_endpoint_from_env("logs", a->region, &a->logs, err)) < 0)
        goto fail;
    /* Configuration errors come first, before any libuv handle exists, so a failed call
     * leaves nothing behind on the loop. */
    if ((rc = fetch_credsrc_new(loop, &a->creds, err)) < 0)
        goto fail;
    if ((rc = fetch_http_new(loop, getenv("AWS_CA_BUNDLE"), &a->http)) < 0) {
        snprintf(err, FETCH_ERR_MAX, "cannot start the HTTP engine: %s", strerror(-rc));
        fetch_credsrc_free(a->creds); /* its timer closes on the next loop run */
        goto fail;
    }
    fetch_credsrc_set_http(a->creds, a->http);
    *out = a;
    return 0;
fail:
    fetch_endpoint_clear(&a->s3);
    fetch_endpoint_clear(&a->dynamodb);
    fetch_endpoint_clear(&a->ecs);
    fetch_endpoint_clear(&a->logs);
    free(a);
    return rc;
}

void fetch_aws_free(fetch_aws *a)
{
    if (!a || a->closing)
        return;
    a->closing = true;
    while (a->ops)
        a->ops->cancel(a->ops);
    fetch_credsrc_free(a->creds);
    fetch_http_free(a->http);
    fetch_endpoint_clear(&a->s3);
    fetch_endpoint_clear(&a->dynamodb);
    fetch_endpoint_clear(&a->ecs);
    fetch_endpoint_clear(&a->logs);
    free(a);
}

const char *fetch_aws_region(const fetch_aws *a)
{
    return a->region;
}

void fetch__op_register(fetch_aws *a, fetch__op *op)
{
    op->prev = NULL;
    op->next = a->ops;
    if (a->ops)
        a->ops->prev = op;
    a->ops = op;
}

void fetch__op_unregister(fetch_aws *a, fetch__op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else if (a->ops == op)
        a->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

uv_loop_t *fetch__aws_loop(fetch_aws *a)
{
    return a->loop;
}

bool fetch__aws_closing(const fetch_aws *a)
{
    return a->closing;
}

fetch_credsrc *fetch__aws_creds(fetch_aws *a)
{
    return a->creds;
}

const fetch_endpoint *fetch__aws_endpoint(fetch_aws *a, const char *service)
{
    if (strcmp(service, "s3") == 0)
        return &a->s3;
    if (strcmp(service, "dynamodb") == 0)
        return &a->dynamodb;
    if (strcmp(service, "ecs") == 0)
        return &a->ecs;
    if (strcmp(service, "logs") == 0)
        return &a->logs;
    return NULL;
}

/* ---- what response text may go into a message ---- */

/* Puts "[redacted]" in place of msg[at, at + len), keeping msg within cap bytes (cut on a
 * character boundary). Returns the offset just past the replacement. */
static size_t replace_span(char *msg, size_t cap, size_t at, size_t len)
{
    static const char red[] = "[redacted]";
    size_t total = strlen(msg), rl = sizeof red - 1;
    char *tmp = malloc(total - len + rl + 1);
    if (!tmp) {
        memset(msg + at, '*', len); /* no memory: still never show it */
        return at + len;
    }
    memcpy(tmp, msg, at);
    memcpy(tmp + at, red, rl);
    memcpy(tmp + at + rl, msg + at + len, total - at - len + 1);
    size_t n = strlen(tmp);
    if (n > cap - 1)
        n = proto_utf8_cut(tmp, n, cap - 1);
    memcpy(msg, tmp, n);
    msg[n] = '\0';
    free(tmp);
    return at + rl < n ? at + rl : n;
}

void fetch__redact_value(char *msg, size_t cap, const char *needle)
{
    size_t nl = needle ? strlen(needle) : 0;
    if (nl < 8 || !cap)
        return;
    for (size_t from = 0; from < strlen(msg);) {
        const char *hit = strstr(msg + from, needle);
        if (!hit)
            break;
        from = replace_span(msg, cap, (size_t)(hit - msg), nl);
    }
}

/* Redacts the value that follows `key` (case-insensitive) up to a delimiter, wherever it is. */
static void redact_after(char *msg, size_t cap, const char *key)
{
    size_t kl = strlen(key);
    for (size_t from = 0; from < strlen(msg);) {
        const char *hit = strcasestr(msg + from, key);
        if (!hit)
            break;
        size_t at = (size_t)(hit - msg) + kl;
        while (msg[at] == ' ')
            at++;
        size_t len = strcspn(msg + at, " \t\r\n\"'&,;<>");
        from = len ? replace_span(msg, cap, at, len) : at;
    }
}

void fetch__redact(fetch_aws *a, char *msg, size_t cap)
{
    static const char *const keys[] = {
        "signature=", "x-amz-security-token=", "x-amz-security-token:", "authorization:"};
    const fetch_creds *cr = a && a->creds ? fetch_credsrc_get(a->creds) : NULL;
    if (cr) {
        fetch__redact_value(msg, cap, cr->secret);
        fetch__redact_value(msg, cap, cr->token);
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        redact_after(msg, cap, keys[i]);
}

/* ---- retry policy ---- */

fetch_retry fetch__retry_or_default(const fetch_retry *r)
{
    fetch_retry d = {8, 100, 5000};
    if (r) {
        if (r->max_attempts > 0)
            d.max_attempts = r->max_attempts;
        if (r->base_ms > 0)
            d.base_ms = r->base_ms;
        if (r->cap_ms > 0)
            d.cap_ms = r->cap_ms;
    }
    return d;
}

uint64_t fetch__backoff_ms(const fetch_retry *r, int attempt)
{
    uint64_t ceil = r->base_ms;
    for (int i = 1; i < attempt && ceil < r->cap_ms; i++)
        ceil *= 2;
    if (ceil > r->cap_ms)
        ceil = r->cap_ms;
    uint64_t rnd;
    if (RAND_bytes((unsigned char *)&rnd, sizeof rnd) != 1)
        rnd = (uint64_t)rand();
    return rnd % (ceil + 1);
}

bool fetch_aws_transient(int err, long http_status, const char *code)
{
    if (err)
        return err == -ETIMEDOUT || err == -ECONNRESET || err == -ECONNREFUSED ||
               err == -EHOSTUNREACH || err == -ENETUNREACH || err == -EIO || err == -EPIPE ||
               err == -EAGAIN;
    if (http_status >= 500 || http_status == 429)
        return true;
    static const char *const throttles[] = {"ThrottlingException",
                                            "ProvisionedThroughputExceededException",
                                            "RequestLimitExceeded",
                                            "TooManyRequestsException",
                                            "Throttling",
                                            "ThrottledException",
                                            "SlowDown",
                                            "RequestThrottled",
                                            "RequestThrottledException",
                                            "RequestTimeout",
                                            "RequestTimeoutException",
                                            "TransactionInProgressException",
                                            "InternalError",
                                            "InternalServerError",
                                            "ServiceUnavailable"};
    for (size_t i = 0; code && i < sizeof throttles / sizeof throttles[0]; i++)
        if (strcmp(code, throttles[i]) == 0)
            return true;
    return false;
}

bool fetch__retryable(const fetch_http_resp *r, const char *code)
{
    return fetch_aws_transient(r->err, r->status, code);
}

/* ---- one signed attempt ---- */

struct fetch__call {
    fetch_aws *a;
    fetch__call_cb cb;
    void *ud;
    char *service, *method, *path, *query, *host, *base;
    char *hdrs[MAX_SIGNED_HEADERS]; /* extra "name: value" */
    size_t n_hdrs;
    char *body;
    size_t body_len;
    int body_fd;
    uint64_t body_offset;
    char payload_hash[65];
    fetch_http_data_cb on_data;
    void *data_ud;
    size_t max_body;
    fetch_creds_waiter *waiter;
    fetch_http_req *req;
};

static void call_free(fetch__call *c)
{
    free(c->service);
    free(c->method);
    free(c->path);
    free(c->query);
    free(c->host);
    free(c->base);
    for (size_t i = 0; i < c->n_hdrs; i++)
        free(c->hdrs[i]);
    free(c->body);
    free(c);
}

static int call_on_data(void *ud, const void *data, size_t len)
{
    fetch__call *c = ud;
    return c->on_data(c->data_ud, data, len);
}

static void call_on_done(void *ud, const fetch_http_resp *r)
{
    fetch__call *c = ud;
    c->req = NULL;
    fetch__call_cb cb = c->cb;
    void *cud = c->ud;
    call_free(c);
    cb(cud, r);
}

/* Reports a failure that happened before any HTTP exchange (credentials). */
static void call_fail(fetch__call *c, int err, const char *msg)
{
    fetch_http_resp r;
    memset(&r, 0, sizeof r);
    r.err = err;
    r.body = "";
    r.content_length = -1;
    snprintf(r.errmsg, sizeof r.errmsg, "%s", msg ? msg : strerror(-err));
    fetch__call_cb cb = c->cb;
    void *cud = c->ud;
    call_free(c);
    cb(cud, &r);
}

/* Splits "name: value" into the signer's header view (pointers into a scratch copy). */
static void split_header(char *scratch, sigv4_header *h)
{
    char *colon = strchr(scratch, ':');
    h->name = scratch;
    h->value = "";
    if (colon) {
        *colon = '\0';
        h->value = colon + 1;
    }
}

/* Builds the header lines and the signed Authorization for c with creds; sends. */
static int call_sign_send(fetch__call *c, const fetch_creds *cr)
{
    char date[17], *auth = NULL;
    char *scratch[MAX_SIGNED_HEADERS] = {0};
    sigv4_header sh[MAX_SIGNED_HEADERS + 4];
    size_t n = 0;
    sigv4_amz_date((long long)time(NULL), date);
    sh[n++] = (sigv4_header){"host", c->host};
    sh[n++] = (sigv4_header){"x-amz-date", date};
    if (strcmp(c->service, "s3") == 0)
        sh[n++] = (sigv4_header){"x-amz-content-sha256", c->payload_hash};
    if (cr->token)
        sh[n++] = (sigv4_header){"x-amz-security-token", cr->token};
    size_t fixed = n;
    int rc = -ENOMEM;
    for (size_t i = 0; i < c->n_hdrs; i++) {
        if (!(scratch[i] = strdup(c->hdrs[i])))
            goto out;
        split_header(scratch[i], &sh[n++]);
    }
    sigv4_request sr = {c->method,       c->path, c->query,     sh,        n,
                        c->payload_hash, date,    c->a->region, c->service};
    if ((rc = sigv4_authorization(&sr, cr->key, cr->secret, &auth, NULL)) < 0)
        goto out;
    /* Header lines for curl: the same values as signed, then Authorization. */
    char *lines[MAX_SIGNED_HEADERS + 6] = {0};
    bool owned[MAX_SIGNED_HEADERS + 6] = {0};
    size_t nl = 0;
    for (size_t i = 0; i < fixed; i++) {
        size_t len = strlen(sh[i].name) + strlen(sh[i].value) + 3;
        if (!(lines[nl] = malloc(len)))
            goto lines_out;
        owned[nl] = true;
        snprintf(lines[nl++], len, "%s: %s", sh[i].name, sh[i].value);
    }
    for (size_t i = 0; i < c->n_hdrs; i++)
        lines[nl++] = c->hdrs[i];
    size_t alen = strlen(auth) + 16;
    if (!(lines[nl] = malloc(alen)))
        goto lines_out;
    owned[nl] = true;
    snprintf(lines[nl++], alen, "Authorization: %s", auth);
    size_t ulen = strlen(c->base) + strlen(c->path) + (c->query ? strlen(c->query) + 1 : 0) + 1;
    char *url = malloc(ulen);
    if (url) {
        snprintf(url, ulen, "%s%s%s%s", c->base, c->path, c->query ? "?" : "",
                 c->query ? c->query : "");
        fetch_http_opts o = {.method = c->method,
                             .url = url,
                             .headers = (const char *const *)lines,
                             .body = c->body,
                             .body_len = c->body_len,
                             .body_fd = c->body_fd,
                             .body_offset = c->body_offset,
                             .max_body = c->max_body,
                             .on_data = c->on_data ? call_on_data : NULL};
        rc = fetch_http_request(c->a->http, &o, call_on_done, c, &c->req);
        free(url);
    }
lines_out:
    /* Secrets (token, Authorization) leave no copies behind in freed memory. */
    for (size_t i = 0; i < nl; i++) {
        if (owned[i]) {
            memset(lines[i], 0, strlen(lines[i]));
            free(lines[i]);
        }
    }
    memset(auth, 0, strlen(auth));
out:
    free(auth);
    for (size_t i = 0; i < c->n_hdrs; i++)
        free(scratch[i]);
    return rc;
}

static void call_on_creds(void *ud, int err, const char *msg)
{
    fetch__call *c = ud;
    c->waiter = NULL;
    if (err) {
        char m[FETCH_HTTP_ERR_MAX];
        snprintf(m, sizeof m, "%s", msg ? msg : strerror(-err));
        call_fail(c, err == -ECANCELED ? err : -EACCES, m);
        return;
    }
    const fetch_creds *cr = fetch_credsrc_get(c->a->creds);
    int rc = cr ? call_sign_send(c, cr) : -EACCES;
    if (rc < 0)
        call_fail(c, rc, cr ? NULL : "AWS credentials expired before use");
}

/* Copies the request description so the attempt can wait for credentials. */
static int call_copy(fetch__call *c, const fetch__sreq *s)
{
    c->service = strdup(s->service);
    c->method = strdup(s->method);
    c->path = strdup(s->path && *s->path ? s->path : "/");
    c->query = s->query && *s->query ? strdup(s->query) : NULL;
    c->host = strdup(s->ep->host);
    c->base = strdup(s->ep->base);
    if (!c->service || !c->method || !c->path || !c->host || !c->base ||
        (s->query && *s->query && !c->query))
        return -ENOMEM;
    for (const char *const *h = s->headers; h && *h; h++) {
        if (c->n_hdrs == MAX_SIGNED_HEADERS)
            return -EINVAL;
        if (!(c->hdrs[c->n_hdrs++] = strdup(*h)))
            return -ENOMEM;
    }
    c->body_fd = s->body ? -1 : s->body_fd;
    c->body_offset = s->body_offset;
    c->body_len = (s->body || s->body_fd >= 0) ? s->body_len : 0;
    if (s->body) {
        if (!(c->body = malloc(s->body_len ? s->body_len : 1)))
            return -ENOMEM;
        memcpy(c->body, s->body, s->body_len);
    }
    if (s->payload_hash)
        snprintf(c->payload_hash, sizeof c->payload_hash, "%s", s->payload_hash);
    else
        sigv4_sha256_hex(c->body ? c->body : "", c->body_len, c->payload_hash);
    c->on_data = s->on_data;
    c->data_ud = s->data_ud;
    c->max_body = s->max_body;
    return 0;
}

int fetch__aws_send(fetch_aws *a, const fetch__sreq *s, fetch__call_cb cb, void *ud,
                    fetch__call **out)
{
    if (a->closing)
        return -ECANCELED;
    fetch__call *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->a = a;
    c->cb = cb;
    c->ud = ud;
    int rc = call_copy(c, s);
    if (rc == 0) {
        const fetch_creds *cr = fetch_credsrc_get(a->creds);
        rc =
            cr ? call_sign_send(c, cr) : fetch_credsrc_wait(a->creds, call_on_creds, c, &c->waiter);
    }
    if (rc < 0) {
        call_free(c);
        return rc;
    }
    if (out)
        *out = c;
    return 0;
}

void fetch__aws_cancel(fetch__call *c)
{
    if (c->waiter)
        fetch_credsrc_cancel_wait(c->a->creds, c->waiter);
    if (c->req)
        fetch_http_cancel(c->req);
    call_free(c);
}

/* ---- JSON 1.0 API calls and unsigned GETs ---- */

typedef struct {
    fetch__op op;
    fetch_aws *a;
    uv_timer_t timer;
    bool is_get; /* unsigned GET of `url` instead of a signed JSON call */
    char *service, *target, *body, *url;
    char *extra_hdr; /* one more signed header ("name: value") or NULL */
    bool json11;     /* application/x-amz-json-1.1 (CloudWatch Logs) instead of 1.0 */
    char label[160]; /* "DynamoDB UpdateItem" or "GET URL" */
    fetch_retry retry;
    int attempt;
    bool refreshed;
    fetch__call *call;
    fetch_http_req *req;
    fetch_aws_cb cb;
    void *ud;
} api_op;

static void api_op_closed(uv_handle_t *h)
{
    api_op *o = h->data;
    free(o->service);
    free(o->target);
    free(o->body);
    free(o->url);
    free(o->extra_hdr);
    free(o);
}

/* Delivers the final result once, then releases the op (after its timer closes). */
static void api_finish(api_op *o, const fetch_aws_result *res)
{
    fetch__op_unregister(o->a, &o->op);
    uv_timer_stop(&o->timer);
    o->cb(o->ud, res);
    uv_close((uv_handle_t *)&o->timer, api_op_closed);
}

static void api_cancel(fetch__op *op)
{
    api_op *o = (api_op *)op;
    if (o->call)
        fetch__aws_cancel(o->call);
    if (o->req)
        fetch_http_cancel(o->req);
    o->call = NULL;
    o->req = NULL;
    char msg[200];
    snprintf(msg, sizeof msg, "%s: cancelled", o->label);
    fetch_aws_result res = {.err = -ECANCELED, .message = msg, .body = ""};
    api_finish(o, &res);
}

/* AWS JSON error: code from "__type" without its "namespace#" prefix, message from
 * "message" or "Message"; both cleaned and bounded (any bytes may arrive). */
void fetch__json_error(const cJSON *j, char *code, size_t ncode, char *msg, size_t nmsg)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "__type");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (!cJSON_IsString(m))
        m = cJSON_GetObjectItemCaseSensitive(j, "Message");
    msg[0] = code[0] = '\0';
    if (cJSON_IsString(m))
        fetch_http__text(msg, nmsg, m->valuestring, strlen(m->valuestring));
    if (cJSON_IsString(t)) {
        const char *h = strrchr(t->valuestring, '#');
        h = h ? h + 1 : t->valuestring;
        fetch_http__text(code, ncode, h, strlen(h));
    }
}

static void api_attempt(api_op *o);

static void api_on_timer(uv_timer_t *t)
{
    api_attempt(t->data);
}

/* Builds and delivers the final result for an HTTP answer or transport error. */
static void api_result(api_op *o, const fetch_http_resp *r, cJSON *j, const char *code,
                       const char *awsmsg)
{
    char msg[FETCH_ERR_MAX + 256];
    fetch_aws_result res = {.err = r->err,
                            .http_status = r->status,
                            .body = r->body,
                            .body_len = r->body_len,
                            .json = j};
    bool ok = r->err == 0 && r->status >= 200 && r->status < 300;
    const char *tries = o->attempt > 1 ? " (gave up after retries)" : "";
    if (!ok) {
        res.error_code = code && *code ? code : NULL;
        res.transient = r->err != -ECANCELED && fetch_aws_transient(r->err, r->status, code);
        if (r->err)
            snprintf(msg, sizeof msg, "%s: %s%s", o->label, r->errmsg, tries);
        else if (res.error_code)
            snprintf(msg, sizeof msg, "%s: %s: %s%s", o->label, code, awsmsg ? awsmsg : "", tries);
        else {
            char body[200];
            fetch_http__text(body, sizeof body, r->body, r->body_len);
            snprintf(msg, sizeof msg, "%s: HTTP %ld%s%s%s", o->label, r->status,
                     r->body_len ? ": " : "", body, tries);
        }
        fetch__redact(o->a, msg, sizeof msg);
        res.message = msg;
    }
    api_finish(o, &res);
}

static void api_on_resp(void *ud, const fetch_http_resp *r)
{
    api_op *o = ud;
    o->call = NULL;
    o->req = NULL;
    cJSON *j = r->body_len ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
    char code[128] = "", awsmsg[FETCH_ERR_MAX] = "";
    bool ok = r->err == 0 && r->status >= 200 && r->status < 300;
    if (!ok && j)
        fetch__json_error(j, code, sizeof code, awsmsg, sizeof awsmsg);
    if (!ok && !o->is_get && !o->refreshed &&
        (strcmp(code, "ExpiredTokenException") == 0 || strcmp(code, "ExpiredToken") == 0) &&
        fetch_credsrc_invalidate(o->a->creds)) {
        o->refreshed = true;
        cJSON_Delete(j);
        api_attempt(o);
        return;
    }
    if (!ok && r->err != -ECANCELED && o->attempt < o->retry.max_attempts &&
        fetch__retryable(r, code)) {
        cJSON_Delete(j);
        uv_timer_start(&o->timer, api_on_timer, fetch__backoff_ms(&o->retry, o->attempt), 0);
        return;
    }
    api_result(o, r, j, code, awsmsg);
    cJSON_Delete(j);
}

static void api_attempt(api_op *o)
{
    int rc;
    o->attempt++;
    if (o->is_get) {
        fetch_http_opts h = {.method = "GET", .url = o->url, .body_fd = -1, .timeout_ms = 10000};
        rc = fetch_http_request(o->a->http, &h, api_on_resp, o, &o->req);
    } else {
        char tgt[300];
        snprintf(tgt, sizeof tgt, "x-amz-target: %s", o->target);
        const char *hdrs[] = {o->json11 ? "content-type: application/x-amz-json-1.1"
                                        : "content-type: application/x-amz-json-1.0",
                              tgt, o->extra_hdr, NULL};
        fetch__sreq s = {.service = o->service,
                         .method = "POST",
                         .ep = fetch__aws_endpoint(o->a, o->service),
                         .path = "/",
                         .headers = hdrs,
                         .body = o->body,
                         .body_len = strlen(o->body),
                         .body_fd = -1,
                         .max_body = 16u << 20};
        rc = fetch__aws_send(o->a, &s, api_on_resp, o, &o->call);
    }
    if (rc < 0) {
        fetch_http_resp r = {.err = rc, .body = "", .content_length = -1};
        snprintf(r.errmsg, sizeof r.errmsg, "%s", strerror(-rc));
        api_result(o, &r, NULL, NULL, NULL);
    }
}

static api_op *api_new(fetch_aws *a, fetch_aws_cb cb, void *ud)
{
    api_op *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->a = a;
    o->cb = cb;
    o->ud = ud;
    o->op.cancel = api_cancel;
    uv_timer_init(a->loop, &o->timer);
    o->timer.data = o;
    return o;
}

static const char *service_label(const char *service)
{
    if (strcmp(service, "dynamodb") == 0)
        return "DynamoDB";
    if (strcmp(service, "ecs") == 0)
        return "ECS";
    if (strcmp(service, "logs") == 0)
        return "CloudWatch Logs";
    return service;
}

int fetch_aws_json(fetch_aws *a, const char *service, const char *target, const char *body,
                   const fetch_retry *retry, fetch_aws_cb cb, void *ud)
{
    fetch_json_opts o = {.retry = retry};
    return fetch_aws_json_opts(a, service, target, body, &o, cb, ud);
}

int fetch_aws_json_opts(fetch_aws *a, const char *service, const char *target, const char *body,
                        const fetch_json_opts *opts, fetch_aws_cb cb, void *ud)
{
    if (a->closing)
        return -ECANCELED;
    if (!service || !target || !body || !cb || !fetch__aws_endpoint(a, service) ||
        strcmp(service, "s3") == 0 || strlen(target) > 256 ||
        (opts->header && (!strchr(opts->header, ':') || strpbrk(opts->header, "\r\n"))))
        return -EINVAL;
    api_op *o = api_new(a, cb, ud);
    if (!o)
        return -ENOMEM;
    o->service = strdup(service);
    o->target = strdup(target);
    o->body = strdup(body);
    o->json11 = opts->json11;
    o->extra_hdr = opts->header ? strdup(opts->header) : NULL;
    o->retry = fetch__retry_or_default(opts->retry);
    const char *dot = strrchr(target, '.');
    snprintf(o->label, sizeof o->label, "%s %s", service_label(service), dot ? dot + 1 : target);
    if (!o->service || !o->target || !o->body || (opts->header && !o->extra_hdr)) {
        uv_close((uv_handle_t *)&o->timer, api_op_closed);
        return -ENOMEM;
    }
    fetch__op_register(a, &o->op);
    /* The first attempt starts from the loop so the callback can never run inside this call. */
    o->attempt = 0;
    uv_timer_start(&o->timer, api_on_timer, 0, 0);
    return 0;
}

int fetch_http_get(fetch_aws *a, const char *url, fetch_aws_cb cb, void *ud)
{
    if (a->closing)
        return -ECANCELED;
    if (!url || !cb || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8)))
        return -EINVAL;
    api_op *o = api_new(a, cb, ud);
    if (!o)
        return -ENOMEM;
    o->is_get = true;
    o->url = strdup(url);
    o->retry = fetch__retry_or_default(&(fetch_retry){3, 100, 1000});
    char shown[150];
    fetch_http__text(shown, sizeof shown, url, strlen(url));
    snprintf(o->label, sizeof o->label, "GET %s", shown);
    if (!o->url) {
        uv_close((uv_handle_t *)&o->timer, api_op_closed);
        return -ENOMEM;
    }
    fetch__op_register(a, &o->op);
    uv_timer_start(&o->timer, api_on_timer, 0, 0);
    return 0;
}
