/* creds.c - AWS credentials, region and endpoints from the environment, as the AWS SDKs read
 * them: static keys (AWS_ACCESS_KEY_ID...), the ECS container credentials endpoint (fetched on
 * the loop, refreshed before Expiration) and the shared credentials file. No secret is ever put
 * in an error message. */
#include "fetch/creds.h"
#include "proto/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define ECS_AGENT_BASE     "http://169.254.170.2"
#define CREDS_FETCH_TRIES  3
#define CREDS_TIMEOUT_MS   5000
#define CREDS_SKEW_SECONDS 5

void fetch_creds_clear(fetch_creds *c)
{
    /* Wipe the secret parts before freeing: they must not linger in freed heap memory. */
    if (c->secret)
        memset(c->secret, 0, strlen(c->secret));
    if (c->token)
        memset(c->token, 0, strlen(c->token));
    free(c->key);
    free(c->secret);
    free(c->token);
    memset(c, 0, sizeof *c);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Applies one "name = value" line of the wanted profile. */
static int creds_file_kv(fetch_creds *c, char *line)
{
    char *eq = strchr(line, '=');
    if (!eq)
        return 0;
    *eq = '\0';
    char *k = trim(line), *v = trim(eq + 1);
    char **slot = NULL;
    if (strcasecmp(k, "aws_access_key_id") == 0)
        slot = &c->key;
    else if (strcasecmp(k, "aws_secret_access_key") == 0)
        slot = &c->secret;
    else if (strcasecmp(k, "aws_session_token") == 0)
        slot = &c->token;
    if (slot && *v) {
        free(*slot);
        if (!(*slot = strdup(v)))
            return -ENOMEM;
    }
    return 0;
}

/* Keys, secrets and tokens go into request headers: printable ASCII without spaces only (a CR
 * or LF would add headers of its own), of a sane length. */
static bool credential_text_ok(const char *v)
{
    size_t n = 0;
    for (; v[n]; n++)
        if ((unsigned char)v[n] < 0x21 || (unsigned char)v[n] > 0x7e)
            return false;
    return n > 0 && n <= 8192;
}

/* The first of key, secret, token (token may be NULL) that is not credential_text_ok, named as
 * in `names`, or NULL. */
static const char *bad_credential(const fetch_creds *c, const char *const names[3])
{
    if (!credential_text_ok(c->key))
        return names[0];
    if (!credential_text_ok(c->secret))
        return names[1];
    if (c->token && !credential_text_ok(c->token))
        return names[2];
    return NULL;
}

int fetch_creds_parse_file(const char *text, const char *profile, fetch_creds *out, char *err)
{
    fetch_creds c = {0};
    char *copy = strdup(text);
    bool found = false, in = false;
    int rc = 0;
    if (!copy)
        return -ENOMEM;
    for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l && rc == 0;
         l = strtok_r(NULL, "\n", &save)) {
        char *t = trim(l);
        if (*t == '#' || *t == ';' || *t == '\0')
            continue;
        if (*t == '[') {
            char *end = strchr(t, ']');
            if (end)
                *end = '\0';
            in = strcmp(trim(t + 1), profile) == 0;
            found |= in;
            continue;
        }
        if (in)
            rc = creds_file_kv(&c, t);
    }
    free(copy);
    if (rc == 0 && !found)
        rc = -ENOENT;
    if (rc == 0 && (!c.key || !c.secret)) {
        snprintf(err, FETCH_ERR_MAX,
                 "profile [%s] has no %s (only aws_access_key_id/aws_secret_access_key/"
                 "aws_session_token are supported, not role_arn, sso or credential_process)",
                 profile, c.key ? "aws_secret_access_key" : "aws_access_key_id");
        rc = -EINVAL;
    }
    static const char *const file_names[3] = {"aws_access_key_id", "aws_secret_access_key",
                                              "aws_session_token"};
    const char *bad = rc == 0 ? bad_credential(&c, file_names) : NULL;
    if (bad) {
        snprintf(err, FETCH_ERR_MAX, "profile [%s]: %s holds characters other than printable ASCII",
                 profile, bad);
        rc = -EINVAL;
    }
    if (rc < 0)
        fetch_creds_clear(&c);
    else
        *out = c;
    return rc;
}

int64_t fetch_parse_iso8601(const char *s)
{
    struct tm tm = {0};
    int n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -1;
    const char *p = s + n;
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++)
            ;
    long off = 0;
    if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
            return -1;
        off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
    } else if (*p != 'Z' && *p != '\0') {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) - off;
}

int fetch_creds_parse_container_json(const char *json, fetch_creds *out, char *err)
{
    cJSON *j = cJSON_Parse(json);
    fetch_creds c = {0};
    const char *missing = NULL;
    if (!j) {
        snprintf(err, FETCH_ERR_MAX, "response is not JSON");
        return -EINVAL;
    }
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "AccessKeyId");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "SecretAccessKey");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "Token");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "Expiration");
    if (!cJSON_IsString(k) || !*k->valuestring)
        missing = "AccessKeyId";
    else if (!cJSON_IsString(s) || !*s->valuestring)
        missing = "SecretAccessKey";
    if (!missing) {
        c.key = strdup(k->valuestring);
        c.secret = strdup(s->valuestring);
        if (cJSON_IsString(t) && *t->valuestring)
            c.token = strdup(t->valuestring);
        if (cJSON_IsString(e) && (c.expires = fetch_parse_iso8601(e->valuestring)) < 0)
            missing = "a valid Expiration";
    }
    /* Clear the parsed document's copies of the secret before it is freed. */
    if (cJSON_IsString(s))
        memset(s->valuestring, 0, strlen(s->valuestring));
    if (cJSON_IsString(t))
        memset(t->valuestring, 0, strlen(t->valuestring));
    cJSON_Delete(j);
    if (!missing && (!c.key || !c.secret))
        missing = "memory";
    static const char *const json_names[3] = {"well-formed AccessKeyId",
                                              "well-formed SecretAccessKey", "well-formed Token"};
    if (!missing)
        missing = bad_credential(&c, json_names);
    if (missing) {
        snprintf(err, FETCH_ERR_MAX, "response has no %s", missing);
        fetch_creds_clear(&c);
        return -EINVAL;
    }
    *out = c;
    return 0;
}

uint64_t fetch_creds_refresh_delay_ms(int64_t now, int64_t expires)
{
    int64_t left = expires - now;
    if (left <= 2)
        return 1000;
    int64_t lead = left / 2 < 300 ? left / 2 : 300;
    int64_t ms = (left - lead) * 1000;
    return ms < 1000 ? 1000 : (uint64_t)ms;
}

/* ---- region and endpoints ---- */

int fetch_region_from_env(char *out, size_t n, char *err)
{
    const char *r = getenv("AWS_REGION");
    if (!r || !*r)
        r = getenv("AWS_DEFAULT_REGION");
    if (!r || !*r) {
        snprintf(err, FETCH_ERR_MAX, "no AWS region: set AWS_REGION or AWS_DEFAULT_REGION");
        return -EINVAL;
    }
    for (const char *p = r; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-') {
            snprintf(err, FETCH_ERR_MAX, "AWS region '%.64s' is not valid", r);
            return -EINVAL;
        }
    snprintf(out, n, "%s", r);
    return 0;
}

void fetch_endpoint_clear(fetch_endpoint *e)
{
    free(e->base);
    free(e->host);
    memset(e, 0, sizeof *e);
}

/* Fills base/host from "scheme://host[:port][/]"; a path beyond '/' is not supported. */
static int endpoint_parse(const char *url, const char *var, fetch_endpoint *out, char *err)
{
    const char *h = NULL;
    if (strncasecmp(url, "http://", 7) == 0)
        h = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        h = url + 8;
    size_t hl = h ? strcspn(h, "/?#") : 0;
    if (!h || hl == 0 || (h[hl] && strcmp(h + hl, "/") != 0)) {
        snprintf(err, FETCH_ERR_MAX,
                 "%s='%.200s' is not an endpoint URL (expected http[s]://HOST[:PORT])", var, url);
        return -EINVAL;
    }
    out->base = strndup(url, (size_t)(h - url) + hl);
    out->host = strndup(h, hl);
    if (!out->base || !out->host) {
        fetch_endpoint_clear(out);
        return -ENOMEM;
    }
    return 0;
}

int fetch_endpoint_from_env(const char *service, const char *region, fetch_endpoint *out, char *err)
{
    char var[64];
    snprintf(var, sizeof var, "AWS_ENDPOINT_URL_%s", service);
    for (char *p = var; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    memset(out, 0, sizeof *out);
    const char *url = getenv(var);
    if (!url || !*url) {
        snprintf(var, sizeof var, "AWS_ENDPOINT_URL");
        url = getenv(var);
    }
    if (url && *url) {
        out->custom = true;
        return endpoint_parse(url, var, out, err);
    }
    char def[256];
    const char *suffix = strncmp(region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com";
    snprintf(def, sizeof def, "https://%s.%s.%s", service, region, suffix);
    return endpoint_parse(def, "default endpoint", out, err);
}

/* ---- the credential source ---- */

enum src_kind { SRC_STATIC, SRC_CONTAINER };

struct fetch_creds_waiter {
    fetch_creds_waiter *prev, *next;
    fetch_creds_wait_cb cb;
    void *ud;
};

struct fetch_credsrc {
    uv_loop_t *loop;
    fetch_http *http;
    enum src_kind kind;
    char name[160];
    fetch_creds cur;
    bool have;
    char *uri;        /* container endpoint, as libcurl normalised it */
    bool plain_http;  /* http:// (loopback or agent): never through a proxy */
    char *token;      /* AWS_CONTAINER_AUTHORIZATION_TOKEN */
    char *token_file; /* AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read at every fetch) */
    char *sent_token; /* the token of the fetch in flight, to redact from its answer */
    uv_timer_t timer; /* refresh / retry / deferred failure */
    fetch_http_req *inflight;
    int tries;
    char last_err[FETCH_ERR_MAX];
    bool fail_pending; /* timer reports last_err to the waiters */
    fetch_creds_waiter *waiters;
};

const char *fetch_credsrc_name(const fetch_credsrc *s)
{
    return s->name;
}

/* Wipes and frees a copy of a secret. */
static void free_secret(char **p)
{
    if (*p)
        memset(*p, 0, strlen(*p));
    free(*p);
    *p = NULL;
}

static void on_src_closed(uv_handle_t *h)
{
    free(h->data);
}

void fetch_credsrc_free(fetch_credsrc *s)
{
    if (!s)
        return;
    if (s->inflight)
        fetch_http_cancel(s->inflight);
    s->inflight = NULL;
    while (s->waiters) {
        fetch_creds_waiter *w = s->waiters;
        s->waiters = w->next;
        w->cb(w->ud, -ECANCELED, "cancelled");
        free(w);
    }
    fetch_creds_clear(&s->cur);
    free(s->uri);
    free_secret(&s->token);
    free_secret(&s->sent_token);
    free(s->token_file);
    uv_close((uv_handle_t *)&s->timer, on_src_closed);
}

const fetch_creds *fetch_credsrc_get(fetch_credsrc *s)
{
    if (!s->have)
        return NULL;
    if (s->cur.expires && (int64_t)time(NULL) + CREDS_SKEW_SECONDS >= s->cur.expires)
        return NULL;
    return &s->cur;
}

/* The timer keeps the loop alive only while someone waits for credentials. */
static void arm_timer(fetch_credsrc *s, uint64_t ms);

/* Pops waiters one at a time: a callback may cancel other waits or free the source (whose
 * memory lives until the timer's close callback). */
static void notify(fetch_credsrc *s, int err, const char *msg)
{
    while (s->waiters) {
        fetch_creds_waiter *w = s->waiters;
        s->waiters = w->next;
        if (s->waiters)
            s->waiters->prev = NULL;
        w->cb(w->ud, err, msg);
        free(w);
    }
}

static void start_fetch(fetch_credsrc *s);

/* Plans the next refresh of expiring credentials (the timer alone never keeps the loop alive). */
static void schedule_refresh(fetch_credsrc *s)
{
    if (s->kind != SRC_CONTAINER || !s->have || !s->cur.expires || s->inflight || s->waiters)
        return;
    arm_timer(s, fetch_creds_refresh_delay_ms(time(NULL), s->cur.expires));
}

static void on_timer(uv_timer_t *t)
{
    fetch_credsrc *s = t->data;
    if (s->fail_pending) {
        s->fail_pending = false;
        notify(s, -EACCES, s->last_err);
        return;
    }
    if (s->waiters && (s->kind == SRC_STATIC || fetch_credsrc_get(s))) {
        notify(s, 0, NULL);
        schedule_refresh(s);
        return;
    }
    start_fetch(s);
}

static void arm_timer(fetch_credsrc *s, uint64_t ms)
{
    uv_timer_start(&s->timer, on_timer, ms, 0);
    if (s->waiters)
        uv_ref((uv_handle_t *)&s->timer);
    else
        uv_unref((uv_handle_t *)&s->timer);
}

/* A failed fetch: retry a few times quickly, then tell the waiters. */
static void fetch_failed(fetch_credsrc *s)
{
    if (++s->tries < CREDS_FETCH_TRIES) {
        arm_timer(s, 200u << s->tries);
        return;
    }
    s->tries = 0;
    notify(s, -EACCES, s->last_err);
    /* Keep trying in the background while the current credentials are still valid. */
    if (fetch_credsrc_get(s))
        schedule_refresh(s);
}

static void on_fetch_done(void *ud, const fetch_http_resp *r)
{
    fetch_credsrc *s = ud;
    fetch_creds c = {0};
    char why[FETCH_ERR_MAX];
    s->inflight = NULL;
    if (r->err) {
        snprintf(s->last_err, sizeof s->last_err, "ECS container credentials %.200s: %.250s",
                 s->uri, r->errmsg);
    } else if (r->status != 200) {
        /* The endpoint may echo the request: its token never reaches the message. */
        char body[160];
        fetch_http__text(body, sizeof body, r->body, r->body_len);
        snprintf(s->last_err, sizeof s->last_err, "ECS container credentials %.200s: HTTP %ld: %s",
                 s->uri, r->status, body);
        fetch__redact_value(s->last_err, sizeof s->last_err, s->sent_token);
        fetch__redact(NULL, s->last_err, sizeof s->last_err);
        free_secret(&s->sent_token);
    } else if (fetch_creds_parse_container_json(r->body, &c, why) < 0) {
        snprintf(s->last_err, sizeof s->last_err, "ECS container credentials %.200s: %.250s",
                 s->uri, why);
    } else {
        free_secret(&s->sent_token);
        fetch_creds_clear(&s->cur);
        s->cur = c;
        s->have = true;
        s->tries = 0;
        notify(s, 0, NULL);
        schedule_refresh(s);
        return;
    }
    fetch_failed(s);
}

/* Reads the authorization token (the file wins, as in the SDKs, and is re-read every time
 * because EKS rotates it). Returns a malloc'd "Authorization: ..." header or NULL. */
static char *auth_header(fetch_credsrc *s, int *err)
{
    char buf[4096];
    const char *tok = s->token;
    *err = 0;
    if (s->token_file) {
        /* Non-blocking and regular files only: a FIFO there must not stall the loop. Symlinks
         * are followed (EKS projects the token through ..data links). */
        struct stat st;
        int fd = open(s->token_file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        ssize_t n = -1;
        if (fd >= 0 && fstat(fd, &st) == 0)
            n = S_ISREG(st.st_mode) ? read(fd, buf, sizeof buf - 1) : (errno = EINVAL, -1);
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (n < 0) {
            *err = -e;
            snprintf(s->last_err, sizeof s->last_err,
                     "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %.300s: %s", s->token_file,
                     e == EINVAL ? "not a regular file" : strerror(e));
            return NULL;
        }
        buf[n] = '\0';
        tok = trim(buf);
    }
    if (!tok || !*tok)
        return NULL;
    for (const char *p = tok; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            /* A CR or LF would add headers of its own to the request. */
            *err = -EINVAL;
            snprintf(s->last_err, sizeof s->last_err, "%s holds a control character",
                     s->token_file ? "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
                                   : "AWS_CONTAINER_AUTHORIZATION_TOKEN");
            memset(buf, 0, sizeof buf);
            return NULL;
        }
    }
    free(s->sent_token);
    s->sent_token = strdup(tok);
    size_t len = strlen(tok) + 16;
    char *h = malloc(len);
    if (h)
        snprintf(h, len, "Authorization: %s", tok);
    memset(buf, 0, sizeof buf);
    return h;
}

static void start_fetch(fetch_credsrc *s)
{
    if (s->inflight || s->kind != SRC_CONTAINER)
        return;
    int err;
    char *auth = auth_header(s, &err);
    if (err) {
        fetch_failed(s);
        return;
    }
    const char *hdrs[] = {auth, NULL};
    fetch_http_opts o = {.method = "GET",
                         .url = s->uri,
                         .headers = auth ? hdrs : NULL,
                         .body_fd = -1,
                         .max_body = 64 * 1024,
                         .connect_timeout_ms = 2000,
                         .timeout_ms = CREDS_TIMEOUT_MS,
                         .no_proxy = s->plain_http};
    int rc = fetch_http_request(s->http, &o, on_fetch_done, s, &s->inflight);
    if (auth) {
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    if (rc < 0) {
        s->inflight = NULL;
        snprintf(s->last_err, sizeof s->last_err, "ECS container credentials %.200s: %s", s->uri,
                 strerror(-rc));
        s->fail_pending = true;
        arm_timer(s, 0);
    }
}

int fetch_credsrc_wait(fetch_credsrc *s, fetch_creds_wait_cb cb, void *ud, fetch_creds_waiter **out)
{
    fetch_creds_waiter *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->cb = cb;
    w->ud = ud;
    w->next = s->waiters;
    if (s->waiters)
        s->waiters->prev = w;
    s->waiters = w;
    *out = w;
    if (s->kind == SRC_STATIC || fetch_credsrc_get(s)) {
        /* Ready already: report from the loop, never inside this call. */
        arm_timer(s, 0);
    } else if (!s->inflight && !s->fail_pending && s->tries == 0) {
        uv_timer_stop(&s->timer);
        start_fetch(s);
    } else {
        uv_ref((uv_handle_t *)&s->timer); /* a retry or a failure report is due */
    }
    return 0;
}

void fetch_credsrc_cancel_wait(fetch_credsrc *s, fetch_creds_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        s->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    free(w);
    if (!s->waiters)
        uv_unref((uv_handle_t *)&s->timer);
}

bool fetch_credsrc_invalidate(fetch_credsrc *s)
{
    if (s->kind != SRC_CONTAINER)
        return false;
    s->have = false;
    return true;
}

/* Static keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN]: 1 if used. */
static int src_env(fetch_credsrc *s, char *err)
{
    const char *k = getenv("AWS_ACCESS_KEY_ID"), *sec = getenv("AWS_SECRET_ACCESS_KEY");
    const char *tok = getenv("AWS_SESSION_TOKEN");
    if ((!k || !*k) && (!sec || !*sec))
        return 0;
    if (!k || !*k || !sec || !*sec) {
        snprintf(err, FETCH_ERR_MAX, "%s is set but %s is not",
                 k && *k ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                 k && *k ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        return -EINVAL;
    }
    s->cur.key = strdup(k);
    s->cur.secret = strdup(sec);
    s->cur.token = tok && *tok ? strdup(tok) : NULL;
    if (!s->cur.key || !s->cur.secret || (tok && *tok && !s->cur.token))
        return -ENOMEM;
    static const char *const env_names[3] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_SESSION_TOKEN"};
    const char *bad = bad_credential(&s->cur, env_names);
    if (bad) {
        snprintf(err, FETCH_ERR_MAX, "%s holds characters other than printable ASCII", bad);
        return -EINVAL;
    }
    s->kind = SRC_STATIC;
    s->have = true;
    snprintf(s->name, sizeof s->name, "environment (AWS_ACCESS_KEY_ID)");
    return 1;
}

/* The ECS container credentials endpoint: 1 if configured. Both variables go through the
 * same URI policy (a relative URI cannot change the host, but checking costs nothing). */
static int src_container(fetch_credsrc *s, char *err)
{
    const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    int rc;
    if (rel && *rel) {
        size_t n = strlen(ECS_AGENT_BASE) + strlen(rel) + 2;
        char *uri = malloc(n);
        if (!uri)
            return -ENOMEM;
        snprintf(uri, n, "%s%s%s", ECS_AGENT_BASE, rel[0] == '/' ? "" : "/", rel);
        rc = fetch_creds_check_uri("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", uri, &s->uri,
                                   &s->plain_http, err);
        free(uri);
    } else if (full && *full) {
        rc = fetch_creds_check_uri("AWS_CONTAINER_CREDENTIALS_FULL_URI", full, &s->uri,
                                   &s->plain_http, err);
    } else {
        return 0;
    }
    if (rc < 0)
        return rc;
    const char *tf = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *t = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    if (tf && *tf && !(s->token_file = strdup(tf)))
        return -ENOMEM;
    if (t && *t && !(s->token = strdup(t)))
        return -ENOMEM;
    s->kind = SRC_CONTAINER;
    snprintf(s->name, sizeof s->name, "ECS container credentials endpoint");
    return 1;
}

/* The shared credentials file's profile: 1 if used, 0 if absent and not asked for. */
static int src_file(fetch_credsrc *s, char *err)
{
    const char *prof = getenv("AWS_PROFILE");
    const char *path = getenv("AWS_SHARED_CREDENTIALS_FILE");
    bool explicit_profile = prof && *prof;
    char def[1024];
    if (!explicit_profile)
        prof = "default";
    if (!path || !*path) {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return 0;
        snprintf(def, sizeof def, "%s/.aws/credentials", home);
        path = def;
    }
    size_t len = 0; /* an unreadable or oversized file counts as absent, as a missing one */
    char *text = proto_read_user_file(path, 1u << 20, &len);
    int rc = text ? fetch_creds_parse_file(text, prof, &s->cur, err) : -ENOENT;
    if (text)
        memset(text, 0, len);
    free(text);
    if (rc == -ENOENT && explicit_profile) {
        snprintf(err, FETCH_ERR_MAX, "AWS_PROFILE=%.100s: no such profile in %.300s", prof, path);
        return -EINVAL;
    }
    if (rc == -ENOENT)
        return 0;
    if (rc < 0) {
        char why[FETCH_ERR_MAX];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, FETCH_ERR_MAX, "%.150s: %.340s", path, why);
        return rc;
    }
    s->kind = SRC_STATIC;
    s->have = true;
    snprintf(s->name, sizeof s->name, "profile %.64s in %.80s", prof, path);
    return 1;
}

void fetch_credsrc_set_http(fetch_credsrc *s, fetch_http *http)
{
    s->http = http;
}

int fetch_credsrc_new(uv_loop_t *loop, fetch_credsrc **out, char *err)
{
    fetch_credsrc *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    int rc = src_env(s, err);
    if (rc == 0)
        rc = src_container(s, err);
    if (rc == 0)
        rc = src_file(s, err);
    if (rc == 0) {
        snprintf(err, FETCH_ERR_MAX,
                 "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, run with "
                 "an ECS task role (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI), or add a profile to "
                 "the shared credentials file (AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE)");
        rc = -EINVAL;
    }
    if (rc == -ENOMEM)
        snprintf(err, FETCH_ERR_MAX, "out of memory reading AWS credentials");
    if (rc < 0) {
        fetch_creds_clear(&s->cur);
        free(s->uri);
        free(s->token);
        free(s->token_file);
        free(s);
        return rc;
    }
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_unref((uv_handle_t *)&s->timer);
    *out = s;
    return 0;
}
