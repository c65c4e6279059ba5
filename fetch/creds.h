/* creds.h - fetch-module internals shared by aws.c, creds.c, creds_uri.c and s3.c (not for
 * other modules): the credential chain (environment keys, ECS container credentials endpoint with
 * refresh, shared credentials file), region and endpoint selection, signed single-attempt requests
 * and retry helpers. Pure parsers are exposed for unit tests. */
#ifndef DAGY_FETCH_CREDS_H
#define DAGY_FETCH_CREDS_H

#include <stdbool.h>
#include <stdint.h>

#include "fetch/aws.h"
#include "fetch/http.h"

/* A set of credentials; expires is UNIX seconds, 0 = never (static keys). */
typedef struct {
    char *key;
    char *secret;
    char *token; /* NULL without a session token */
    int64_t expires;
} fetch_creds;

void fetch_creds_clear(fetch_creds *c);

/* Parses a shared credentials file's text and picks `profile` ([name] sections, key = value,
 * '#'/';' comments). Returns 0, -ENOENT if the profile is absent, or -EINVAL with err saying what
 * the profile lacks. */
int fetch_creds_parse_file(const char *text, const char *profile, fetch_creds *out, char *err);
/* Parses the container endpoint's JSON (AccessKeyId, SecretAccessKey, Token, Expiration).
 * Returns 0 or -EINVAL with err naming the missing field (never a value). */
int fetch_creds_parse_container_json(const char *json, fetch_creds *out, char *err);
/* "2026-03-14T09:00:00Z" (fraction and numeric offset allowed) -> UNIX seconds, or -1. */
int64_t fetch_parse_iso8601(const char *s);
/* Milliseconds from `now` until credentials expiring at `expires` should be refreshed: 5 minutes
 * before expiry, or at half the remaining lifetime when that is shorter; at least 1000. */
uint64_t fetch_creds_refresh_delay_ms(int64_t now, int64_t expires);
/* Checks a container credentials URI from environment variable `var` as the AWS SDKs do, parsed
 * by libcurl's URL API (the parser that makes the connection): https:// to any host; http://
 * only to a loopback address (127.0.0.0/8 in any form libcurl reads as one, [::1],
 * [::ffff:127.x.y.z], "localhost"), or the ECS/EKS agents (169.254.170.2, 169.254.170.23,
 * [fd00:ec2::23]); never user info, never an IPv6 zone id. On success *url (malloc'd) is
 * libcurl's normalised form, the one to fetch, and *plain_http (may be NULL) says http://.
 * Returns 0, -ENOMEM, or -EINVAL with err naming `var` (and never the user info). */
int fetch_creds_check_uri(const char *var, const char *uri, char **url, bool *plain_http,
                          char *err);
/* fetch_creds_check_uri as a yes/no. */
bool fetch_creds_uri_allowed(const char *uri);

/* Where one service's requests go. base: "scheme://host[:port]" (no trailing slash); host: the
 * Host header value; custom: from AWS_ENDPOINT_URL[_SERVICE] (S3 then uses path-style). */
typedef struct {
    char *base;
    char *host;
    bool custom;
} fetch_endpoint;

/* Endpoint for service "s3", "dynamodb" or "ecs" in region: AWS_ENDPOINT_URL_<SERVICE>, then
 * AWS_ENDPOINT_URL, else https://SERVICE.REGION.amazonaws.com. Returns 0 or -EINVAL + err. */
int fetch_endpoint_from_env(const char *service, const char *region, fetch_endpoint *out,
                            char *err);
void fetch_endpoint_clear(fetch_endpoint *e);
/* AWS_REGION, then AWS_DEFAULT_REGION; else -EINVAL with err naming both. */
int fetch_region_from_env(char *out, size_t n, char *err);

/* The credential source of one fetch_aws. */
typedef struct fetch_credsrc fetch_credsrc;
/* err 0: credentials are ready (fetch_credsrc_get); else msg says why there are none. */
typedef void (*fetch_creds_wait_cb)(void *ud, int err, const char *msg);
typedef struct fetch_creds_waiter fetch_creds_waiter;

/* Picks the first source of the chain that is configured (contract section 5). Returns 0 or
 * -EINVAL with err naming the variables or file to fix. */
int fetch_credsrc_new(uv_loop_t *loop, fetch_credsrc **out, char *err);
/* The engine used for container endpoint fetches (set once, before any wait). */
void fetch_credsrc_set_http(fetch_credsrc *s, fetch_http *http);
/* Cancels waiters (cb with -ECANCELED) and the fetch in flight; memory goes in a close cb. */
void fetch_credsrc_free(fetch_credsrc *s);
/* Credentials usable now, or NULL (then wait). */
const fetch_creds *fetch_credsrc_get(fetch_credsrc *s);
/* Calls cb (later, from the loop) once credentials are ready or failed; starts a fetch if
 * needed. *out lets the caller cancel the wait. Returns 0 or -ENOMEM. */
int fetch_credsrc_wait(fetch_credsrc *s, fetch_creds_wait_cb cb, void *ud,
                       fetch_creds_waiter **out);
void fetch_credsrc_cancel_wait(fetch_credsrc *s, fetch_creds_waiter *w);
/* After an ExpiredToken answer: drops the current credentials if they can be refreshed and
 * returns true (the caller retries once), false for static keys. */
bool fetch_credsrc_invalidate(fetch_credsrc *s);
/* Short description of the source ("environment", "container endpoint", "profile default"). */
const char *fetch_credsrc_name(const fetch_credsrc *s);

/* ---- signed requests (aws.c) ---- */

typedef struct fetch__call fetch__call;
typedef void (*fetch__call_cb)(void *ud, const fetch_http_resp *r);

typedef struct {
    const char *service; /* signing name: "s3", "dynamodb", "ecs" */
    const char *method;
    const fetch_endpoint *ep;
    const char *path;           /* URI-encoded, starts with '/' */
    const char *query;          /* encoded, or NULL */
    const char *const *headers; /* extra signed "name: value" headers, NULL-terminated */
    const void *body;           /* copied */
    size_t body_len;
    int body_fd; /* >= 0: upload body_len bytes from the fd at body_offset */
    uint64_t body_offset;
    const char *payload_hash;   /* hex SHA-256 of the body; NULL = computed from `body` */
    fetch_http_data_cb on_data; /* streams 2xx bodies */
    void *data_ud;
    size_t max_body;
} fetch__sreq;

/* One signed attempt: waits for credentials, signs with the current time, sends. cb runs once
 * (later), unless cancelled; a credentials failure arrives as err -EACCES with errmsg set. */
int fetch__aws_send(fetch_aws *a, const fetch__sreq *s, fetch__call_cb cb, void *ud,
                    fetch__call **out);
void fetch__aws_cancel(fetch__call *c);

/* Every outstanding operation registers itself so fetch_aws_free can cancel it. */
typedef struct fetch__op fetch__op;
struct fetch__op {
    fetch__op *prev, *next;
    void (*cancel)(fetch__op *op); /* report -ECANCELED, release; must unregister */
};
void fetch__op_register(fetch_aws *a, fetch__op *op);
void fetch__op_unregister(fetch_aws *a, fetch__op *op);

uv_loop_t *fetch__aws_loop(fetch_aws *a);
bool fetch__aws_closing(const fetch_aws *a); /* fetch_aws_free has begun */
const fetch_endpoint *fetch__aws_endpoint(fetch_aws *a, const char *service);
fetch_credsrc *fetch__aws_creds(fetch_aws *a);

/* Replaces every copy of `needle` (ignored when shorter than 8 bytes) in msg, a NUL-terminated
 * string in a buffer of cap bytes, with "[redacted]". */
void fetch__redact_value(char *msg, size_t cap, const char *needle);
/* Redacts from a message built from response text what an echoing endpoint could send back of
 * a signed request: the current secret key and session token, and the values after
 * "Signature=", "X-Amz-Security-Token=" / ":" and "Authorization:". a may be NULL. */
void fetch__redact(fetch_aws *a, char *msg, size_t cap);

/* The error parsers, callable on any buffer (fuzzing): the S3 error of an answer (<Code> and
 * <Message> of an XML body of r->body_len bytes, else a code from the status: NoSuchKey,
 * AccessDenied, PreconditionFailed), and an AWS JSON error (__type without its "namespace#",
 * message or Message). Outputs are cleaned (fetch_http__text) and fit their sizes. */
void fetch__s3_error_code(const fetch_http_resp *r, char *code, size_t n, char *msg, size_t mn);
void fetch__json_error(const cJSON *j, char *code, size_t ncode, char *msg, size_t nmsg);

/* Full-jitter backoff before retry number `attempt` (1-based): uniform in
 * [0, min(cap, base * 2^(attempt-1))]. */
uint64_t fetch__backoff_ms(const fetch_retry *r, int attempt);
/* The defaults (8 attempts, 100 ms, 5 s) where r is NULL or has zeros. */
fetch_retry fetch__retry_or_default(const fetch_retry *r);
/* Whether an answer is worth retrying: transport errors (timeouts, resets, refused), 5xx, 429
 * and throttling error codes. */
bool fetch__retryable(const fetch_http_resp *r, const char *error_code);

#endif
