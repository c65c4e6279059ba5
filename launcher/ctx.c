/* ctx.c - what every dagy-launch command shares: the configuration, one libuv loop with one AWS
 * client, JSON 1.0 calls with a cJSON body, and JSON output. */
#include "launcher/launch.h"
#include "proto/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void launch__fmt(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

int launch__ctx_open(launch__ctx *c, unsigned need, char *err)
{
    memset(c, 0, sizeof *c);
    int rc = launch_config_from_env(&c->cfg, need, err);
    if (rc < 0)
        return rc;
    if ((rc = uv_loop_init(&c->loop)) < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "cannot start the event loop: %s", uv_strerror(rc));
        return rc;
    }
    c->loop_ok = true;
    char ferr[FETCH_ERR_MAX] = "";
    if ((rc = fetch_aws_new(&c->loop, &c->aws, ferr)) < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "%s", ferr[0] ? ferr : strerror(-rc));
        launch__ctx_close(c);
        return rc;
    }
    return 0;
}

/* Closes whatever handle is still open (a timer of a command that stopped early). */
static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void launch__ctx_close(launch__ctx *c)
{
    if (c->aws)
        fetch_aws_free(c->aws);
    c->aws = NULL;
    if (!c->loop_ok)
        return;
    uv_run(&c->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&c->loop) == UV_EBUSY) {
        uv_walk(&c->loop, close_walk, NULL);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        uv_loop_close(&c->loop);
    }
    c->loop_ok = false;
}

int launch__call(launch__ctx *c, const char *service, const char *op, cJSON *body, fetch_aws_cb cb,
                 void *ud)
{
    char target[128];
    bool ddb = strcmp(service, "dynamodb") == 0, logs = strcmp(service, "logs") == 0;
    launch__fmt(target, sizeof target, "%s.%s",
                ddb    ? "DynamoDB_20120810"
                : logs ? "Logs_20140328"
                       : "AmazonEC2ContainerServiceV20141113",
                op);
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (!text)
        return -ENOMEM;
    fetch_json_opts o = {.json11 = logs}; /* CloudWatch Logs speaks JSON 1.1 */
    int rc = fetch_aws_json_opts(c->aws, service, target, text, &o, cb, ud);
    free(text);
    return rc;
}

void launch__aws_reason(const fetch_aws_result *r, char *buf, size_t n)
{
    const char *m = launch__str(r->json, "message");
    if (!m)
        m = launch__str(r->json, "Message");
    if (r->error_code && m)
        launch__fmt(buf, n, "%s: %s", r->error_code, m);
    else if (r->message)
        launch__fmt(buf, n, "%s", r->message);
    else if (r->err)
        launch__fmt(buf, n, "%s", strerror(-r->err));
    else
        launch__fmt(buf, n, "HTTP %ld", r->http_status);
}

size_t launch__tty_write(const char *s, size_t n, FILE *out, bool *c2)
{
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        if (*c2) {
            *c2 = false;
            if (b >= 0x80 && b <= 0x9f) { /* a C1 control (U+0080-U+009F) as UTF-8 */
                fprintf(out, "\\u%04x", b);
                done++;
                continue;
            }
            fputc(0xc2, out);
        }
        if (b == 0xc2) {
            *c2 = true;
            continue;
        }
        if ((b < 0x20 && b != '\n' && b != '\t') || b == 0x7f)
            fprintf(out, "\\u%04x", b);
        else
            fputc(b, out);
        done++;
    }
    return done;
}

void launch__print_json(const cJSON *j)
{
    bool tty = isatty(STDOUT_FILENO), c2 = false;
    char *text = tty ? cJSON_Print(j) : cJSON_PrintUnformatted(j);
    if (text) {
        /* cJSON escapes C0 controls in strings but keeps DEL and C1 raw: on a terminal a stored
         * error message must not be able to drive it. */
        if (tty)
            launch__tty_write(text, strlen(text), stdout, &c2);
        else
            fputs(text, stdout);
        if (c2)
            fputc(0xc2, stdout);
        fputc('\n', stdout);
        free(text);
    }
    fflush(stdout);
}

cJSON *launch__key(const char *name, const char *value, const char *name2, const char *value2)
{
    cJSON *k = cJSON_CreateObject();
    cJSON_AddStringToObject(cJSON_AddObjectToObject(k, name), "S", value);
    if (name2)
        cJSON_AddStringToObject(cJSON_AddObjectToObject(k, name2), "S", value2);
    return k;
}

const char *launch__str(const cJSON *obj, const char *name)
{
    return proto_json_str(obj, name);
}

typedef struct {
    uv_loop_t *loop;
    bool done;
    int rc;
    cJSON *json;
    char *code, *err;
} sync_call;

static void on_sync(void *ud, const fetch_aws_result *r)
{
    sync_call *s = ud;
    s->done = true;
    s->json = r->json ? cJSON_Duplicate(r->json, true) : NULL;
    bool ok = r->err == 0 && r->http_status >= 200 && r->http_status < 300;
    s->rc = ok ? 0 : -EIO;
    if (!ok && s->code)
        launch__fmt(s->code, LAUNCH_CODE_MAX, "%s", r->error_code ? r->error_code : "");
    if (!ok)
        launch__aws_reason(r, s->err, LAUNCH_ERR_MAX);
    uv_stop(s->loop);
}

int launch__call_sync(launch__ctx *c, const char *service, const char *op, cJSON *body, cJSON **out,
                      char *code, char *err)
{
    sync_call s = {.loop = &c->loop, .code = code, .err = err};
    *out = NULL;
    if (code)
        code[0] = '\0';
    int rc = launch__call(c, service, op, body, on_sync, &s);
    if (rc < 0) {
        launch__fmt(err, LAUNCH_ERR_MAX, "%s %s: %s", service, op, strerror(-rc));
        return rc;
    }
    while (!s.done) {
        if (uv_run(&c->loop, UV_RUN_DEFAULT) == 0 && !s.done) {
            launch__fmt(err, LAUNCH_ERR_MAX, "%s %s: no answer", service, op);
            return -EIO; /* nothing left to wait for: never spin */
        }
    }
    *out = s.json;
    return s.rc;
}
