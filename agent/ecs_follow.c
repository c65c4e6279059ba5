/* ecs_follow.c - following the ECS children of a run (ecs_exec.c's FOLLOWING state): one poll
 * at a time reads each child's task-run item (the fast path) and describes the unsettled ones,
 * 100 ARNs a call; the outcome rule (the child's record wins, else ECS's stop) and the result's
 * fetch for downstream tasks live here. */
#include "agent/ecs_exec.h"
#include "agent/log.h"
#include "proto/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double item_seq(const cJSON *it)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "status_seq");
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* ---- following: the item first, DescribeTasks for the rest ---- */

static void on_result_fetched(void *ud, const fetch_aws_result *res)
{
    ecs_child *ch = ud;
    run_state *r = ch->r;
    if (!agent__ecs_live(r)) {
        agent__ecs_child_unref(ch);
        return;
    }
    char why[AGENT_ERR_MAX];
    if (res->err || res->http_status / 100 != 2) {
        snprintf(why, sizeof why, "infrastructure: cannot fetch the result of the ECS attempt: %s",
                 res->message ? res->message : "no answer");
        r->tasks[ch->i].infra = true;
        agent__ecs_child_end(ch, SCHED_EXIT_FAILED, why);
    } else {
        r->tasks[ch->i].has_result = true;
        agent__ecs_child_end(ch, SCHED_EXIT_OK, NULL);
    }
    agent__ecs_child_unref(ch);
}

/* SUCCEEDED: the result attributes go on the parent's copy of the item, and the stored result
 * is fetched (verified) for downstream tasks. */
static void end_succeeded(ecs_child *ch, const cJSON *stored, cJSON *it)
{
    run_state *r = ch->r;
    const char *uri = proto_json_str(stored, "result_s3_uri"),
               *sha = proto_json_str(stored, "result_sha256");
    static const char *const keep[] = {"result_s3_uri", "result_sha256", "task_hash"};
    for (size_t k = 0; k < sizeof keep / sizeof keep[0]; k++)
        status_set_str(it, keep[k], proto_json_str(stored, keep[k]));
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(stored, "result_bytes");
    if (cJSON_IsNumber(bytes))
        status_set_num(it, "result_bytes", bytes->valuedouble);
    if (!uri || !sha) {
        agent__ecs_child_end(ch, SCHED_EXIT_OK, NULL);
        return;
    }
    size_t n = strlen(uri) + strlen(sha) + 16;
    char *full = malloc(n), *path = agent__task_file(r, AGENT_DIR_RESULTS, ch->i, 0);
    snprintf(full, n, "%s#sha256=%s", uri, sha);
    ch->state = CH_ENDING;
    ch->refs++;
    int rc = fetch_s3_get_file(r->aws, full, path, NULL, on_result_fetched, ch);
    free(full);
    free(path);
    if (rc) {
        ch->refs--;
        r->tasks[ch->i].infra = true;
        agent__ecs_child_end(ch, SCHED_EXIT_FAILED,
                             "infrastructure: cannot fetch the result of the ECS attempt");
    }
}

/* The child recorded the end of this attempt: its record is the outcome. */
static void end_from_item(ecs_child *ch, const cJSON *stored, const char *st)
{
    run_state *r = ch->r;
    agent_task *t = &r->tasks[ch->i];
    const cJSON *ec = cJSON_GetObjectItemCaseSensitive(stored, "exit_code");
    const char *msg = proto_json_str(stored, "error_message");
    t->exit_code = cJSON_IsNumber(ec) ? ec->valueint : -1;
    status_seq_floor(r->status, t->item, (uint64_t)item_seq(stored));
    if (proto_json_str(stored, "trace_s3_uri"))
        status_set_str(t->item, "trace_s3_uri", proto_json_str(stored, "trace_s3_uri"));
    if (!strcmp(st, "SUCCEEDED")) {
        t->adopted = true; /* terminal: the child's write stands */
        end_succeeded(ch, stored, t->item);
        return;
    }
    /* FAILED is the child's last attempt (or one that cannot be retried): terminal too. */
    bool last = !strcmp(st, "FAILED");
    t->adopted = last;
    agent__ecs_child_end(ch, last ? SCHED_EXIT_FATAL : SCHED_EXIT_FAILED,
                         msg ? msg : "the attempt failed");
}

/* ECS stopped the task and the child recorded no end: the stop decides. */
void agent__ecs_end_from_ecs(ecs_child *ch)
{
    char why[AGENT_ERR_MAX];
    ch->r->tasks[ch->i].exit_code = ch->ecs_exit;
    if (ch->cancelled) {
        snprintf(why, sizeof why, "Worker shutdown requested via %s: ECS task stopped",
                 ch->r->stop_signal ? ch->r->stop_signal : "SIGTERM");
        agent__ecs_child_end(ch, SCHED_EXIT_CANCELLED, why);
    } else if (ch->timed_out) {
        agent__ecs_child_end(ch, SCHED_EXIT_TIMED_OUT, NULL);
    } else {
        char code[24] = "unknown";
        if (ch->ecs_exit >= 0)
            snprintf(code, sizeof code, "%d", ch->ecs_exit);
        snprintf(why, sizeof why,
                 "ECS task %s stopped without recording attempt %d (exit code %s%s%s)", ch->arn,
                 ch->attempt, code, ch->ecs_reason ? "; " : "",
                 ch->ecs_reason ? ch->ecs_reason : "");
        agent__ecs_child_end(ch, SCHED_EXIT_FAILED, why);
    }
}

static void tick_done(agent_ecs *e);
static void read_item(ecs_child *ch);

static void on_item(void *ctx, int rc, const cJSON *stored, const char *err)
{
    ecs_child *ch = ctx;
    run_state *r = ch->r;
    ch->reading = false;
    /* ENDING: an earlier read already decided (a second read, started when ECS said STOPPED,
     * must not fetch the result into the same file again). */
    if (!agent__ecs_live(r) || ch->detached || ch->state == CH_ENDING) {
        agent__ecs_child_unref(ch);
        if (agent__ecs_live(r))
            tick_done(r->ecs);
        return;
    }
    const char *st = proto_json_str(stored, "status");
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(stored, "attempt");
    bool mine = rc == 0 && st && cJSON_IsNumber(att) && att->valueint == ch->attempt &&
                item_seq(stored) > (double)ch->seq0 + 0.5 * ECS_CHILD_SEQ_GAP;
    bool ended =
        mine && (!strcmp(st, "SUCCEEDED") || !strcmp(st, "FAILED") || !strcmp(st, "RETRYING"));
    if (ended)
        end_from_item(ch, stored, st);
    else if (ch->stopped && !ch->reread)
        agent__ecs_end_from_ecs(ch);
    else if (ch->reread) { /* STOPPED came while this read was in flight: read once more */
        ch->reread = false;
        read_item(ch);
    }
    (void)err;
    tick_done(r->ecs);
    agent__ecs_child_unref(ch);
}

static void read_item(ecs_child *ch)
{
    run_state *r = ch->r;
    if (ch->reading)
        return;
    ch->reading = true;
    ch->refs++;
    r->ecs->tick_pending++;
    int rc = status_store_read(r->status, STATUS_TASK, r->cfg->run_id,
                               agent__ecs_item_name(r, ch->i), on_item, ch);
    if (rc < 0)
        on_item(ch, rc, NULL, NULL);
}

static ecs_child *by_arn(agent_ecs *e, const char *arn)
{
    for (ecs_child *ch = e->all; arn && ch; ch = ch->next)
        if (!ch->detached && ch->arn && !strcmp(ch->arn, arn))
            return ch;
    return NULL;
}

/* A task ECS says is STOPPED (or MISSING): its exit code, then one more read of its item. */
static void mark_stopped(ecs_child *ch, const cJSON *task)
{
    if (ch->stopped || ch->state != CH_FOLLOWING)
        return;
    ch->stopped = true;
    const cJSON *c, *cs = cJSON_GetObjectItemCaseSensitive(task, "containers");
    cJSON_ArrayForEach(c, cs)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        const cJSON *ec = cJSON_GetObjectItemCaseSensitive(c, "exitCode");
        bool ours = cJSON_IsString(name) && !strcmp(name->valuestring, ch->r->ecs->container);
        if (ours && cJSON_IsNumber(ec))
            ch->ecs_exit = ec->valueint;
    }
    const char *code = proto_json_str(task, "stopCode"),
               *why = proto_json_str(task, "stoppedReason");
    char buf[600];
    snprintf(buf, sizeof buf, "%s%s%s", code ? code : (task ? "" : "MISSING"),
             code && why ? ": " : "", why ? why : "");
    free(ch->ecs_reason);
    ch->ecs_reason = *buf ? strdup(buf) : NULL;
    log_line *l = agent_log_begin(LOG_INFO, "ecs_task_stopped", "ECS task %s STOPPED%s%s", ch->arn,
                                  *buf ? ": " : "", buf);
    agent_log_str(l, "task_name", agent__ecs_item_name(ch->r, ch->i));
    agent_log_int(l, "attempt", ch->attempt);
    agent_log_str(l, "task_arn", ch->arn);
    if (ch->ecs_exit >= 0)
        agent_log_int(l, "exit_code", ch->ecs_exit);
    agent_log_end(l);
    if (ch->reading)
        ch->reread = true;
    else
        read_item(ch);
}

typedef struct {
    agent_ecs *e;
    char **arns; /* the ARNs asked for */
    size_t n;
} describe_job;

static void on_describe(void *ud, const fetch_aws_result *res)
{
    describe_job *d = ud;
    agent_ecs *e = d->e;
    if (agent__ecs_live(e->r)) {
        bool ok = !res->err && res->http_status / 100 == 2;
        if (!ok) {
            /* Throttled (or failing) after fetch_aws's own retries: poll less often. */
            e->poll_ms = e->poll_ms * 2 > ECS_POLL_MAX_MS ? ECS_POLL_MAX_MS : e->poll_ms * 2;
            if (!e->describe_failing) {
                log_line *l = agent_log_begin(LOG_WARNING, "ecs_describe_failed",
                                              "DescribeTasks failed (%s); polling every %.1f s",
                                              res->message ? res->message : "no answer",
                                              (double)e->poll_ms / 1000);
                agent_log_str(l, "error", res->message);
                agent_log_end(l);
            }
            e->describe_failing = true;
        } else {
            e->describe_failing = false;
            e->poll_ms = (uint64_t)(e->r->cfg->ecs_poll_seconds * 1000);
        }
        const cJSON *t, *f;
        const cJSON *tasks = ok ? cJSON_GetObjectItemCaseSensitive(res->json, "tasks") : NULL;
        const cJSON *fails = ok ? cJSON_GetObjectItemCaseSensitive(res->json, "failures") : NULL;
        cJSON_ArrayForEach(t, tasks)
        {
            ecs_child *ch = by_arn(e, proto_json_str(t, "taskArn"));
            const char *last = proto_json_str(t, "lastStatus");
            if (ch && last && !strcmp(last, "STOPPED"))
                mark_stopped(ch, t);
        }
        cJSON_ArrayForEach(f, fails)
        {
            ecs_child *ch = by_arn(e, proto_json_str(f, "arn"));
            const char *why = proto_json_str(f, "reason");
            if (ch && why && !strcmp(why, "MISSING"))
                mark_stopped(ch, NULL);
        }
    }
    for (size_t k = 0; k < d->n; k++)
        free(d->arns[k]);
    free(d->arns);
    free(d);
    if (agent__ecs_live(e->r))
        tick_done(e);
}

/* DescribeTasks for the children in [from, from+n) of the unsettled list. */
static void describe(agent_ecs *e, ecs_child **list, size_t n)
{
    static const fetch_retry retry = {.max_attempts = 5, .base_ms = 200, .cap_ms = 5000};
    describe_job *d = calloc(1, sizeof *d);
    d->e = e;
    d->arns = calloc(n, sizeof *d->arns);
    cJSON *b = cJSON_CreateObject(), *arns = cJSON_CreateArray();
    cJSON_AddStringToObject(b, "cluster", e->cluster);
    for (size_t k = 0; k < n; k++) {
        d->arns[d->n++] = strdup(list[k]->arn);
        cJSON_AddItemToArray(arns, cJSON_CreateString(list[k]->arn));
    }
    cJSON_AddItemToObject(b, "tasks", arns);
    char *text = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    e->tick_pending++;
    int rc = text ? fetch_aws_json(e->r->aws, "ecs", ECS_TARGET "DescribeTasks", text, &retry,
                                   on_describe, d)
                  : -ENOMEM;
    free(text);
    if (rc) {
        fetch_aws_result fail = {.err = rc, .message = "DescribeTasks could not be sent"};
        on_describe(d, &fail);
    }
}

/* One poll: every followed child's item (the fast path), and DescribeTasks, 100 ARNs a call,
 * for those ECS has not yet said are STOPPED. A StopTask that ECS never confirms is given up
 * on after ECS_STOP_WAIT_MS. */
static void on_poll(uv_timer_t *h)
{
    run_state *r = h->data;
    agent_ecs *e = r->ecs;
    e->poll_armed = false;
    if (!agent__ecs_live(r))
        return;
    uint64_t now = uv_now(&r->loop);
    size_t n = 0, cap = 16;
    ecs_child **list = malloc(cap * sizeof *list);
    e->tick_pending++; /* this function's own share, released at the end */
    /* Held (refs) while this runs: a read answered at once may end a child, and the plan
     * other children with it. */
    for (ecs_child *ch = e->all; ch; ch = ch->next) {
        if (ch->detached || ch->state != CH_FOLLOWING)
            continue;
        if (n == cap)
            list = realloc(list, (cap *= 2) * sizeof *list);
        ch->refs++;
        list[n++] = ch;
    }
    size_t m = 0; /* the unsettled ones, described below, packed at the front */
    for (size_t k = 0; k < n; k++) {
        ecs_child *ch = list[k];
        if (!ch->detached && ch->stop_sent && !ch->stopped && now - ch->stop_ms > ECS_STOP_WAIT_MS)
            mark_stopped(ch, NULL);
        if (!ch->detached && !ch->stopped)
            read_item(ch);
        if (!ch->detached && !ch->stopped && ch->state == CH_FOLLOWING)
            list[m++] = ch;
        else
            agent__ecs_child_unref(ch);
    }
    for (size_t k = 0; k < m; k += ECS_DESCRIBE_MAX)
        describe(e, list + k, m - k < ECS_DESCRIBE_MAX ? m - k : ECS_DESCRIBE_MAX);
    for (size_t k = 0; k < m; k++)
        agent__ecs_child_unref(list[k]);
    free(list);
    tick_done(e);
}

/* The poll's last answer came: the next one in poll_ms (no overlap between polls). */
static void tick_done(agent_ecs *e)
{
    if (e->tick_pending > 0 && --e->tick_pending > 0)
        return;
    agent__ecs_poll_arm(e);
}

void agent__ecs_poll_arm(agent_ecs *e)
{
    bool any = false;
    for (ecs_child *ch = e->all; ch && !any; ch = ch->next)
        any = !ch->detached && ch->state == CH_FOLLOWING;
    if (!any || e->poll_armed || e->tick_pending > 0 || !agent__ecs_live(e->r))
        return;
    e->poll_armed = true;
    uv_timer_start(&e->r->ecs_poll_timer, on_poll, e->poll_ms, 0);
}
