/* logs.c - `dagy-launch logs RUN_ID [--follow] [--task NAME] [--since DURATION]`: the run's log
 * lines from the CloudWatch Logs stream the agent ships them to (stream = run id, group =
 * DAGY_LOG_GROUP, else DAGY_ECS_LOG_GROUP). GetLogEvents from the head, page by page until
 * nextForwardToken repeats; --follow polls until the run is terminal and its run_end line (or
 * a grace for the agent's final flush) has come. JSON lines on a pipe, a readable view on a
 * terminal (docs/launch.md "logs"). */
#include "launcher/launch.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 1000
/* --follow: after the run is terminal, how long to wait for its run_end line (the agent ships
 * it after its final status write, within its 20 s log flush budget). */
#define FINAL_GRACE_MS 30000
#define MAX_PAGES      1000000 /* a bound on one drain: 10,000 events a page */

int launch_parse_duration(const char *s, int64_t *ms)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    int64_t unit = !strcmp(end, "s")   ? 1000
                   : !strcmp(end, "m") ? 60000
                   : !strcmp(end, "h") ? 3600000
                   : !strcmp(end, "d") ? 86400000
                                       : 0;
    if (errno || !unit || v < 1 || v > 366LL * 86400000 / unit)
        return -EINVAL;
    *ms = (int64_t)v * unit;
    return 0;
}

typedef struct {
    launch__ctx *c;
    const launch_logs_opts *o;
    const char *group;
    bool tty;
    bool seen_run_end;
    char *token; /* the last nextForwardToken */
    int64_t start_ms;
    uint64_t printed;
} logs_job;

/* Writes text for the terminal (no control characters reach it). */
static void tty_out(const char *s)
{
    bool c2 = false;
    launch__tty_write(s, strlen(s), stdout, &c2);
    if (c2)
        fputc(0xc2, stdout);
}

/* One event for a person: "12:00:01 INFO    extract  message". */
static void print_pretty(const cJSON *line, int64_t ts_ms, const char *raw)
{
    const char *ts = launch__str(line, "timestamp"), *lv = launch__str(line, "level");
    const char *task = launch__str(line, "task_name"), *msg = launch__str(line, "line");
    char when[16];
    if (ts && strlen(ts) >= 19) {
        launch__fmt(when, sizeof when, "%.8s", ts + 11);
    } else {
        time_t t = (time_t)(ts_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%H:%M:%S", &tm);
    }
    if (!msg)
        msg = launch__str(line, "message");
    printf("%s %-7s ", when, lv ? lv : "-");
    tty_out(task ? task : "-");
    fputs(launch__str(line, "stream") && !strcmp(launch__str(line, "stream"), "stderr") ? " ! "
                                                                                        : "  ",
          stdout);
    tty_out(msg ? msg : raw);
    const char *err = launch__str(line, "error");
    if (err && msg && !strstr(msg, err)) {
        fputs(": ", stdout);
        tty_out(err);
    }
    fputc('\n', stdout);
}

/* One event: its message is the agent's JSON line. Anything else in the stream is printed as
 * a JSON object too ({"timestamp", "message"}), so the output stays one JSON value a line. */
static void print_event(logs_job *j, const cJSON *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "timestamp");
    if (!cJSON_IsString(m))
        return;
    int64_t ts = cJSON_IsNumber(t) ? (int64_t)t->valuedouble : 0;
    cJSON *line = cJSON_Parse(m->valuestring);
    if (!cJSON_IsObject(line)) {
        cJSON_Delete(line);
        line = cJSON_CreateObject();
        char iso[PROTO_ISO_LEN];
        cJSON_AddStringToObject(line, "timestamp", proto_iso_time((double)ts / 1000.0, iso));
        cJSON_AddStringToObject(line, "message", m->valuestring);
    }
    const char *ev = launch__str(line, "event_type");
    if (ev && !strcmp(ev, "run_end"))
        j->seen_run_end = true;
    const char *task = launch__str(line, "task_name");
    if (!j->o->task || (task && !strcmp(task, j->o->task))) {
        if (j->tty) {
            print_pretty(line, ts, m->valuestring);
        } else {
            char *text = cJSON_PrintUnformatted(line);
            if (text)
                printf("%s\n", text);
            free(text);
        }
        j->printed++;
    }
    cJSON_Delete(line);
}

/* One GetLogEvents page. Returns 1 if there may be more, 0 when caught up, or -1 with err
 * (code = the AWS error code). */
static int page(logs_job *j, char *code, char *err)
{
    cJSON *q = cJSON_CreateObject(), *ans = NULL;
    cJSON_AddStringToObject(q, "logGroupName", j->group);
    cJSON_AddStringToObject(q, "logStreamName", j->o->run_id);
    cJSON_AddBoolToObject(q, "startFromHead", true);
    if (j->start_ms)
        cJSON_AddNumberToObject(q, "startTime", (double)j->start_ms);
    if (j->token)
        cJSON_AddStringToObject(q, "nextToken", j->token);
    if (launch__call_sync(j->c, "logs", "GetLogEvents", q, &ans, code, err) < 0) {
        cJSON_Delete(ans);
        return -1;
    }
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(ans, "events"), *e;
    cJSON_ArrayForEach(e, evs) print_event(j, e);
    fflush(stdout);
    const char *next = launch__str(ans, "nextForwardToken");
    int more = next && (!j->token || strcmp(next, j->token)) && cJSON_GetArraySize(evs) > 0;
    if (next && (!j->token || strcmp(next, j->token))) {
        free(j->token);
        j->token = strdup(next);
    }
    cJSON_Delete(ans);
    return more;
}

/* Every page available now. Returns 0, 1 when the stream does not exist (yet), -1 with err. */
static int drain(logs_job *j, char *err)
{
    char code[LAUNCH_CODE_MAX];
    for (long n = 0; n < MAX_PAGES; n++) {
        int rc = page(j, code, err);
        if (rc < 0)
            return !strcmp(code, "ResourceNotFoundException") ? 1 : -1;
        if (rc == 0)
            return 0;
    }
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Is the run ended? -1 with err when it cannot be read. */
static int run_terminal(logs_job *j, char *err)
{
    cJSON *run = launch__read_run(j->c, j->o->run_id, err);
    if (!run)
        return -1;
    const char *st = launch__str(run, "status");
    int t = st && proto_status_terminal(st);
    cJSON_Delete(run);
    return t;
}

/* --follow: drain, poll, until the run ended and its last line came (or the grace passed). */
static int follow(logs_job *j, char *err)
{
    uint64_t ended_at = 0, now;
    for (;;) {
        int rc = drain(j, err);
        if (rc < 0)
            return -1;
        if (j->seen_run_end)
            return 0;
        int t = run_terminal(j, err);
        if (t < 0)
            return -1;
        now = (uint64_t)(proto_now() * 1000);
        if (t && !ended_at)
            ended_at = now;
        if (ended_at && now - ended_at >= FINAL_GRACE_MS) {
            if (rc == 1)
                launch__fmt(err, LAUNCH_ERR_MAX,
                            "run \"%s\" ended and no log stream %s exists in %s (its agent "
                            "ships lines there only with DAGY_LOG_GROUP set)",
                            j->o->run_id, j->o->run_id, j->group);
            return rc == 1 ? -1 : 0;
        }
        sleep_ms(POLL_MS);
    }
}

/* The log group: DAGY_LOG_GROUP, else DAGY_ECS_LOG_GROUP (the awslogs group, where the agent's
 * stream usually lives beside the driver's). NULL with err. */
static const char *log_group(char *err)
{
    const char *g = getenv("DAGY_LOG_GROUP");
    if (!g || !*g)
        g = getenv("DAGY_ECS_LOG_GROUP");
    if (!g || !*g) {
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "missing configuration: DAGY_LOG_GROUP (or DAGY_ECS_LOG_GROUP) is not set");
        return NULL;
    }
    return g;
}

int launch_cmd_logs(const launch_logs_opts *o)
{
    char err[LAUNCH_ERR_MAX];
    const char *group;
    if (!proto_name_check(PROTO_NAME_RUN_ID, o->run_id, err, sizeof err) ||
        !(group = log_group(err))) {
        fprintf(stderr, "dagy-launch logs: %s\n", err);
        return LAUNCH_EXIT_INVALID;
    }
    launch__ctx c;
    if (launch__ctx_open(&c, 0, err) < 0) {
        fprintf(stderr, "dagy-launch logs: %s\n", err);
        return LAUNCH_EXIT_INVALID;
    }
    logs_job j = {.c = &c, .o = o, .group = group, .tty = isatty(STDOUT_FILENO)};
    if (o->since_ms)
        j.start_ms = (int64_t)(proto_now() * 1000) - o->since_ms;
    int rc = run_terminal(&j, err) < 0 ? -1 : o->follow ? follow(&j, err) : drain(&j, err);
    if (rc == 1)
        launch__fmt(err, LAUNCH_ERR_MAX,
                    "no log stream %s in log group %s: the run's agent ships its lines there only "
                    "with DAGY_LOG_GROUP set, once it has started (--follow waits for it)",
                    o->run_id, group);
    launch__ctx_close(&c);
    free(j.token);
    if (rc != 0) {
        fprintf(stderr, "dagy-launch logs: %s\n", err);
        return LAUNCH_EXIT_FAILED;
    }
    return LAUNCH_EXIT_OK;
}

static const char usage_logs[] =
    "usage: dagy-launch logs RUN_ID [--follow] [--task NAME] [--since DURATION]\n"
    "\n"
    "Prints the run's log lines from the CloudWatch Logs stream named RUN_ID in DAGY_LOG_GROUP\n"
    "(else DAGY_ECS_LOG_GROUP), where the agent ships them when DAGY_LOG_GROUP is set: JSON\n"
    "lines on a pipe, \"TIME LEVEL TASK MESSAGE\" on a terminal.\n"
    "\n"
    "  --follow             keep polling until the run has ended and its run_end line came\n"
    "  --task NAME          only the lines of task NAME\n"
    "  --since DURATION     only lines of the last DURATION: 30s, 10m, 2h, 1d\n"
    "\n"
    "Exit 0 printed, 1 no such run / no log stream / AWS failure, 2 invalid arguments.\n";

/* `dagy-launch logs ARGS` (argv[0] is "logs"): options, then launch_cmd_logs. */
int launch_logs_main(int argc, char **argv)
{
    launch_logs_opts o = {0};
    const char *since = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_logs, stdout);
            return LAUNCH_EXIT_OK;
        } else if (!strcmp(a, "--follow") || !strcmp(a, "-f")) {
            o.follow = true;
        } else if ((!strcmp(a, "--task") || !strcmp(a, "--since")) && i + 1 < argc) {
            *(a[2] == 't' ? &o.task : &since) = argv[++i];
        } else if (!strncmp(a, "--task=", 7)) {
            o.task = a + 7;
        } else if (!strncmp(a, "--since=", 8)) {
            since = a + 8;
        } else if (a[0] == '-' || o.run_id) {
            fprintf(stderr, "dagy-launch logs: %s: %s\n(see dagy-launch logs --help)\n", a,
                    a[0] == '-' ? "unknown option or missing value" : "unexpected argument");
            return LAUNCH_EXIT_INVALID;
        } else {
            o.run_id = a;
        }
    }
    char err[LAUNCH_ERR_MAX];
    if (!o.run_id) {
        fputs("dagy-launch logs: expected a RUN_ID\n(see dagy-launch logs --help)\n", stderr);
        return LAUNCH_EXIT_INVALID;
    }
    if (since && launch_parse_duration(since, &o.since_ms) < 0) {
        fprintf(stderr,
                "dagy-launch logs: --since %.40s: expected a duration such as 30s, 10m, "
                "2h or 1d\n",
                since);
        return LAUNCH_EXIT_INVALID;
    }
    if (o.task && !proto_name_check(PROTO_NAME_TASK, o.task, err, sizeof err)) {
        fprintf(stderr, "dagy-launch logs: --task: %s\n", err);
        return LAUNCH_EXIT_INVALID;
    }
    return launch_cmd_logs(&o);
}
