/* fetch_probe.c - runs fetch_aws operations given on the command line and prints each result as
 * one JSON line, for integration tests and the download benchmark.
 *
 *   fetch_probe [--repeat N] [--interval-ms MS] [--cancel-after-ms MS] COMMAND ARGS...
 *     get URI PATH                 fetch_s3_get_file
 *     get-stream URI PATH          fetch_s3_get_file_streaming with prefix and tail callbacks
 *                                  (the result adds prefix, tail_from and prefix_at_tail)
 *     put BUCKET KEY DATA [TYPE]   fetch_s3_put (DATA is the literal body)
 *     put-file BUCKET KEY PATH     fetch_s3_put_file
 *     json SERVICE TARGET BODY     fetch_aws_json
 *     http-get URL                 fetch_http_get
 *     new                          fetch_aws_new only (prints the region)
 *
 * Exit status: 0 when every result succeeded, 1 on a failed result, 2 on usage or setup errors,
 * 3 if the loop could not be closed cleanly (a leaked handle). Every result line carries the peak
 * RSS so far (max_rss_kib) and the elapsed seconds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "fetch/aws.h"

typedef struct {
    uv_loop_t *loop;
    fetch_aws *aws;
    char **args;
    int nargs;
    int repeat, done;
    uint64_t interval_ms, started_ms;
    uv_timer_t again, cancel;
    int failed;
    uint64_t last_total;
    uint64_t prefix, tail_from, prefix_at_tail; /* get-stream's reports */
    bool tail_told;
} probe;

static const char *errno_name(int e)
{
    switch (e) {
    case 0:
        return "";
    case ECANCELED:
        return "ECANCELED";
    case EBADMSG:
        return "EBADMSG";
    case ETIMEDOUT:
        return "ETIMEDOUT";
    case ECONNREFUSED:
        return "ECONNREFUSED";
    case ECONNRESET:
        return "ECONNRESET";
    case EACCES:
        return "EACCES";
    case EIO:
        return "EIO";
    case EPROTO:
        return "EPROTO";
    default:
        return "other";
    }
}

/* Peak RSS of this process in KiB: VmHWM (getrusage's ru_maxrss survives execve, so it would
 * report the parent's peak when the parent was bigger). */
static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void print_result(probe *p, const fetch_aws_result *r)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = r->err == 0 && r->http_status >= 200 && r->http_status < 300;
    cJSON_AddBoolToObject(o, "ok", ok);
    cJSON_AddNumberToObject(o, "err", r->err);
    cJSON_AddStringToObject(o, "err_name", errno_name(-r->err));
    cJSON_AddNumberToObject(o, "http_status", (double)r->http_status);
    if (r->error_code)
        cJSON_AddStringToObject(o, "error_code", r->error_code);
    if (r->message)
        cJSON_AddStringToObject(o, "message", r->message);
    if (r->json)
        cJSON_AddItemToObject(o, "json", cJSON_Duplicate(r->json, true));
    else if (r->body && r->body_len)
        cJSON_AddStringToObject(o, "body", r->body);
    cJSON_AddNumberToObject(o, "total", (double)p->last_total);
    if (!strcmp(p->args[0], "get-stream")) {
        cJSON_AddNumberToObject(o, "prefix", (double)p->prefix);
        if (p->tail_told) {
            cJSON_AddNumberToObject(o, "tail_from", (double)p->tail_from);
            cJSON_AddNumberToObject(o, "prefix_at_tail", (double)p->prefix_at_tail);
        }
    }
    cJSON_AddNumberToObject(o, "max_rss_kib", (double)peak_rss_kib());
    cJSON_AddNumberToObject(o, "seconds", (double)(uv_now(p->loop) - p->started_ms) / 1000.0);
    char *s = cJSON_PrintUnformatted(o);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    cJSON_Delete(o);
    if (!ok)
        p->failed = 1;
}

static int start_op(probe *p);

static void on_again(uv_timer_t *t)
{
    probe *p = t->data;
    int rc = start_op(p);
    if (rc < 0) {
        fprintf(stderr, "fetch_probe: cannot start: %s\n", strerror(-rc));
        p->failed = 2;
        fetch_aws_free(p->aws);
        p->aws = NULL;
        uv_close((uv_handle_t *)&p->cancel, NULL);
    }
}

static void on_result(void *ud, const fetch_aws_result *r)
{
    probe *p = ud;
    print_result(p, r);
    if (++p->done < p->repeat && p->aws && r->err != -ECANCELED) {
        uv_timer_start(&p->again, on_again, p->interval_ms, 0);
        return;
    }
    if (p->aws && r->err != -ECANCELED) {
        /* Freeing from inside a callback is part of the contract being exercised. */
        fetch_aws_free(p->aws);
        p->aws = NULL;
        uv_close((uv_handle_t *)&p->cancel, NULL);
    }
}

static void on_progress(void *ud, uint64_t done, uint64_t total)
{
    probe *p = ud;
    p->last_total = total;
}

/* get-stream: the written prefix only grows, within the object. */
static void on_prefix(void *ud, uint64_t written, uint64_t total)
{
    probe *p = ud;
    if (written <= p->prefix || written > total) {
        fprintf(stderr, "fetch_probe: prefix went from %llu to %llu of %llu\n",
                (unsigned long long)p->prefix, (unsigned long long)written,
                (unsigned long long)total);
        abort();
    }
    p->prefix = written;
}

/* get-stream: the tail is told once, with the object's size. */
static void on_tail(void *ud, uint64_t from, uint64_t total)
{
    probe *p = ud;
    if (p->tail_told || from == 0 || from >= total)
        abort();
    p->tail_told = true;
    p->tail_from = from;
    p->prefix_at_tail = p->prefix;
}

static void on_cancel(uv_timer_t *t)
{
    probe *p = t->data;
    fprintf(stderr, "fetch_probe: cancelling\n");
    fetch_aws *a = p->aws;
    p->aws = NULL;
    uv_close((uv_handle_t *)&p->cancel, NULL);
    fetch_aws_free(a);
}

static int start_op(probe *p)
{
    const char *cmd = p->args[0];
    int n = p->nargs;
    if (strcmp(cmd, "get") == 0 && n == 3)
        return fetch_s3_get_file(p->aws, p->args[1], p->args[2], on_progress, on_result, p);
    if (strcmp(cmd, "get-stream") == 0 && n == 3)
        return fetch_s3_get_file_streaming(p->aws, p->args[1], p->args[2], on_progress, on_prefix,
                                           on_tail, on_result, p);
    if (strcmp(cmd, "put") == 0 && (n == 4 || n == 5))
        return fetch_s3_put(p->aws, p->args[1], p->args[2], p->args[3], strlen(p->args[3]),
                            n == 5 ? p->args[4] : NULL, on_result, p);
    if (strcmp(cmd, "put-file") == 0 && n == 4)
        return fetch_s3_put_file(p->aws, p->args[1], p->args[2], p->args[3], on_result, p);
    if (strcmp(cmd, "json") == 0 && n == 4)
        return fetch_aws_json(p->aws, p->args[1], p->args[2], p->args[3], NULL, on_result, p);
    if (strcmp(cmd, "http-get") == 0 && n == 2)
        return fetch_http_get(p->aws, p->args[1], on_result, p);
    return -EINVAL;
}

int main(int argc, char **argv)
{
    probe p = {.repeat = 1};
    long cancel_ms = -1;
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--repeat") == 0)
            p.repeat = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--interval-ms") == 0)
            p.interval_ms = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--cancel-after-ms") == 0)
            cancel_ms = atol(argv[i + 1]);
        else
            break;
    }
    if (i >= argc) {
        fprintf(stderr,
                "usage: fetch_probe [--repeat N] [--interval-ms MS] "
                "[--cancel-after-ms MS] get|get-stream|put|put-file|json|http-get|new ARGS...\n");
        return 2;
    }
    p.args = argv + i;
    p.nargs = argc - i;
    uv_loop_t loop;
    uv_loop_init(&loop);
    p.loop = &loop;
    p.started_ms = uv_now(&loop);
    char err[FETCH_ERR_MAX] = "";
    int rc = fetch_aws_new(&loop, &p.aws, err);
    if (rc < 0) {
        printf("{\"ok\":false,\"setup_error\":\"%s\"}\n", err);
        uv_loop_close(&loop);
        return 2;
    }
    uv_timer_init(&loop, &p.again);
    uv_timer_init(&loop, &p.cancel);
    p.again.data = p.cancel.data = &p;
    if (strcmp(p.args[0], "new") == 0) {
        printf("{\"ok\":true,\"region\":\"%s\"}\n", fetch_aws_region(p.aws));
        fetch_aws_free(p.aws);
        p.aws = NULL;
        uv_close((uv_handle_t *)&p.cancel, NULL);
    } else if ((rc = start_op(&p)) < 0) {
        fprintf(stderr, "fetch_probe: cannot start %s: %s\n", p.args[0], strerror(-rc));
        fetch_aws_free(p.aws);
        uv_close((uv_handle_t *)&p.cancel, NULL);
        p.failed = 2;
    } else if (cancel_ms >= 0) {
        uv_timer_start(&p.cancel, on_cancel, (uint64_t)cancel_ms, 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&p.again, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "fetch_probe: uv_loop_close failed: a handle was left open\n");
        return 3;
    }
    return p.failed;
}
