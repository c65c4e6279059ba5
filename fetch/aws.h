/* aws.h - AWS requests on the agent's libuv loop: credentials, region, endpoints, SigV4, retries.
 * Built on the HTTP engine (fetch/http.h: libcurl multi driven by libuv).
 *
 * One fetch_aws per process. Every call is asynchronous; a call that returns an error never
 * invokes its callback. Nothing here logs secrets: error strings carry the AWS error code and
 * message, the URI, never a header or a signature. */
#ifndef DAGY_AWS_H
#define DAGY_AWS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <uv.h>
#include <cjson/cJSON.h>

#define FETCH_ERR_MAX 512

typedef struct fetch_aws fetch_aws;

/* Retry policy for one request: up to max_attempts tries, full-jitter exponential backoff from
 * base_ms capped at cap_ms, on throttling, 5xx, timeouts and connection errors (see
 * fetch_aws_transient). A request the service refuses as invalid is never retried. */
typedef struct {
    int max_attempts; /* default 8 */
    uint64_t base_ms; /* default 100 */
    uint64_t cap_ms;  /* default 5000 */
} fetch_retry;

typedef struct {
    int err;                /* 0 = an HTTP answer arrived (check http_status), else -errno */
    long http_status;       /* 0 if none */
    const char *error_code; /* AWS error code: "ConditionalCheckFailedException", "NoSuchKey",
                               "AccessDenied", ... or NULL */
    const char *message;    /* human-readable, ready for a log line: names the URI or target,
                               the code and AWS's message; NULL on success */
    const char *body;       /* response body (NUL-terminated), may be empty */
    size_t body_len;
    cJSON *json;    /* parsed JSON body for JSON APIs, or NULL */
    bool transient; /* a failure that may pass with time (network, timeout, 5xx, throttling:
                       still failing after the retries); false for a request refused as it is
                       (ValidationException, SerializationException, AccessDenied, NoSuchKey,
                       ResourceNotFoundException, ConditionalCheckFailedException, other 4xx):
                       sending it again cannot help */
} fetch_aws_result;

typedef void (*fetch_aws_cb)(void *ud, const fetch_aws_result *r);

/* The one classification of a failed answer: true if the same request may succeed later
 * (transport errors, HTTP 5xx and 429, throttling codes such as ThrottlingException,
 * ProvisionedThroughputExceededException, RequestLimitExceeded, SlowDown, RequestTimeout);
 * false for everything the service refused as it is. err is the transport error (0 if an HTTP
 * answer came), code the AWS error code or NULL. */
bool fetch_aws_transient(int err, long http_status, const char *code);

/* Reads region, endpoints and the credential chain from the environment (contract section 5).
 * Returns 0, or -EINVAL with err naming the variable that is wrong or missing. */
int fetch_aws_new(uv_loop_t *loop, fetch_aws **out, char *err);
/* Cancels everything in flight (callbacks get err -ECANCELED) and frees; the loop must run once
 * more to close the handles. */
void fetch_aws_free(fetch_aws *a);

const char *fetch_aws_region(const fetch_aws *a);

/* A JSON 1.0 API call (DynamoDB: target "DynamoDB_20120810.UpdateItem"; ECS:
 * "AmazonEC2ContainerServiceV20141113.RunTask"). service is "dynamodb" or "ecs". The body is
 * copied. retry NULL = defaults. The callback sees the final answer: an AWS error code such as
 * ConditionalCheckFailedException is delivered, not retried. */
int fetch_aws_json(fetch_aws *a, const char *service, const char *target, const char *body,
                   const fetch_retry *retry, fetch_aws_cb cb, void *ud);

/* Options of fetch_aws_json_opts: the retry policy (NULL = defaults), the JSON protocol
 * version (CloudWatch Logs speaks JSON 1.1: content type application/x-amz-json-1.1) and one
 * more signed header ("x-amzn-logs-format: json/emf"), or NULL. */
typedef struct {
    const fetch_retry *retry;
    bool json11;
    const char *header;
} fetch_json_opts;

/* fetch_aws_json with options; service may also be "logs" (CloudWatch Logs, target
 * "Logs_20140328.PutLogEvents", endpoint AWS_ENDPOINT_URL_LOGS or AWS_ENDPOINT_URL). */
int fetch_aws_json_opts(fetch_aws *a, const char *service, const char *target, const char *body,
                        const fetch_json_opts *opts, fetch_aws_cb cb, void *ud);

/* Why `name` is not a valid S3 bucket name (a phrase such as "it must be 3 to 63 characters
 * long"), or NULL if it is one: 3-63 of [a-z0-9.-], starting and ending with a letter or digit,
 * no "..", not an IPv4 address, not xn--/sthree-. The one rule for bucket names: URIs, uploads
 * and the agent's bucket variables all use it. */
const char *fetch_s3_bucket_problem(const char *name);

/* Parses "s3://bucket/key[#sha256=HEX]". Returns 0 or -EINVAL. Outputs are malloc'd;
 * sha256_hex is NULL when there is no fragment. */
int fetch_s3_parse_uri(const char *uri, char **bucket, char **key, char **sha256_hex);

/* Progress of a download: bytes so far and total (0 if unknown yet). */
typedef void (*fetch_progress_cb)(void *ud, uint64_t done, uint64_t total);

/* Downloads an S3 object to `path` (created/truncated, mode 0600; a regular file, not a link,
 * else -ELOOP / -EINVAL and the path is left alone): parallel ranged GETs pinned to
 * the ETag for large objects, retries per part, length and #sha256= verified. On a checksum
 * mismatch the result has err -EBADMSG and the file is removed. */
int fetch_s3_get_file(fetch_aws *a, const char *uri, const char *path, fetch_progress_cb progress,
                      fetch_aws_cb cb, void *ud);

/* fetch_s3_get_file that also calls `prefix` (on the loop thread) each time the written prefix
 * grows: bytes [0, written) of the file are final as received, not yet verified (the result
 * says that); total is the object's size. For a reader that consumes the file while it
 * downloads (unpack_archive_growing). With `tail` (which needs `prefix`), an object that starts
 * with "PK" (a zip) and is larger than the first part plus 1 MiB has its last 1 MiB fetched
 * first, beside the parts in order, and `tail` is called once with (from, total) when bytes
 * [from, total) are final: a zip's central directory is at its end. The checksum is computed
 * in order all the same. */
int fetch_s3_get_file_streaming(fetch_aws *a, const char *uri, const char *path,
                                fetch_progress_cb progress, fetch_progress_cb prefix,
                                fetch_progress_cb tail, fetch_aws_cb cb, void *ud);

/* PutObject of a memory buffer (copied) or of a file. The file must be a regular file and not
 * a symlink (-ELOOP; -EINVAL for a FIFO, device or directory): it is opened without blocking
 * and without following links, since a task may have written the path. Keys must be valid
 * UTF-8 of at most 1024 bytes (-EINVAL). */
int fetch_s3_put(fetch_aws *a, const char *bucket, const char *key, const void *data, size_t len,
                 const char *content_type, fetch_aws_cb cb, void *ud);
int fetch_s3_put_file(fetch_aws *a, const char *bucket, const char *key, const char *path,
                      fetch_aws_cb cb, void *ud);
/* PutObject streamed from an open file: `len` bytes from offset 0 of `fd`, whose SHA-256 the
 * caller already computed (hex, the signed payload hash: S3 refuses the upload if the bytes
 * sent differ, so a file changed meanwhile cannot be stored under the wrong hash). The fd is
 * duplicated (the caller keeps and closes its own). Nothing is read on the loop thread but the
 * transfer itself. Up to 5 GiB this is one PutObject; larger files go as a multipart upload
 * (fetch_s3_put_fd_parts, parts of at least 64 MiB, at most 10000 of them). */
int fetch_s3_put_fd(fetch_aws *a, const char *bucket, const char *key, int fd, uint64_t len,
                    const char *sha256_hex, const char *content_type, fetch_aws_cb cb, void *ud);
/* Multipart upload of `len` bytes of `fd` in parts of `part_size` bytes (>= 5 MiB, S3's
 * minimum; at most 10000 parts, else -EFBIG), up to 4 parts in flight, each retried on its own;
 * a failure aborts the upload (AbortMultipartUpload) before the callback. Parts are sent with
 * an UNSIGNED-PAYLOAD hash (TLS protects them in transit; the caller verifies the whole
 * object's SHA-256 when it reads it back). The fd is duplicated. */
int fetch_s3_put_fd_parts(fetch_aws *a, const char *bucket, const char *key, int fd, uint64_t len,
                          uint64_t part_size, const char *content_type, fetch_aws_cb cb, void *ud);

/* A plain GET of an unsigned URL (ECS task metadata endpoint). */
int fetch_http_get(fetch_aws *a, const char *url, fetch_aws_cb cb, void *ud);

#endif
