/* cancel.c - telling a requested cancel from a crash (issue 10 item 5, agent part). On the
 * first SIGTERM/SIGINT the agent reads its own run item once (DynamoDB GetItem, or the state
 * file), at most CANCEL_WAIT_MS; the drain goes on meanwhile. If `dagy-launch cancel` wrote
 * cancel_requested_at, a run that ends by the signal is CANCELLED with stop_reason
 * "UserInitiated: REASON" (exit 143 still); otherwise it stays FAILED "Worker shutdown requested
 * via SIGTERM" with stop_reason SIGTERM. A finish that comes before the answer waits for it
 * (bounded by the same deadline). */
#include "agent/durable.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/util.h"

#define CANCEL_WAIT_MS 2000
#define REASON_MAX     512

static agent_durable *state(run_state *r)
{
    if (!r->durable)
        r->durable = calloc(1, sizeof *r->durable);
    return r->durable;
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

/* The answer is in (or the wait is over): a finish that was waiting proceeds. */
static void answered(run_state *r)
{
    agent_durable *d = r->durable;
    if (d->cancel_state == 2)
        return;
    d->cancel_state = 2;
    if (d->cancel_timer) {
        uv_close((uv_handle_t *)d->cancel_timer, timer_closed);
        d->cancel_timer = NULL;
    }
    if (d->deferred) {
        d->deferred = false;
        char *err = d->deferred_error;
        d->deferred_error = NULL;
        agent__finish(r, d->deferred_exit, err);
        free(err);
    }
}

static void on_wait_over(uv_timer_t *t)
{
    run_state *r = t->data;
    agent_log(LOG_WARNING, "cancel_check_timeout",
              "the run item could not be read within %d ms of the signal: the run ends as a "
              "shutdown, not as a requested cancel",
              CANCEL_WAIT_MS);
    answered(r);
}

static void on_run_item(void *ud, int rc, const char *err, const cJSON *run, const cJSON *tasks)
{
    run_state *r = ud;
    agent_durable *d = r->durable;
    if (!d || d->cancel_state != 1)
        return; /* the wait was over already */
    const cJSON *at = run ? cJSON_GetObjectItemCaseSensitive(run, "cancel_requested_at") : NULL;
    const cJSON *why = run ? cJSON_GetObjectItemCaseSensitive(run, "cancel_reason") : NULL;
    if (rc) {
        agent_log(LOG_WARNING, "cancel_check_failed", "cannot read the run item: %s",
                  err ? err : "");
    } else if (cJSON_IsString(at) && at->valuestring[0]) {
        const char *text =
            cJSON_IsString(why) && why->valuestring[0] ? why->valuestring : "cancel requested";
        char *clean = proto_utf8_clean(text, strlen(text), REASON_MAX);
        if (clean && asprintf(&d->cancel_text, "UserInitiated: %s", clean) < 0)
            d->cancel_text = NULL;
        free(clean);
        log_line *l = agent_log_begin(LOG_WARNING, "cancel_requested",
                                      "the run was cancelled (requested at %s): %s",
                                      at->valuestring, d->cancel_text ? d->cancel_text : "");
        agent_log_str(l, "stop_reason", d->cancel_text);
        agent_log_end(l);
    }
    answered(r);
}

void agent__cancel_check(run_state *r)
{
    agent_durable *d = state(r);
    if (!d || d->cancel_state)
        return;
    d->cancel_state = 1;
    d->cancel_timer = malloc(sizeof *d->cancel_timer);
    if (d->cancel_timer) {
        uv_timer_init(&r->loop, d->cancel_timer);
        d->cancel_timer->data = r;
        uv_timer_start(d->cancel_timer, on_wait_over, CANCEL_WAIT_MS, 0);
    }
    agent__read_run(r, r->cfg->run_id, false, on_run_item, r);
}

bool agent__cancel_defer(run_state *r, int exit_code, const char *error)
{
    agent_durable *d = r->durable;
    if (!d || d->cancel_state != 1 || exit_code != AGENT_EXIT_SIGTERM)
        return false;
    if (!d->deferred) {
        d->deferred = true;
        d->deferred_exit = exit_code;
        d->deferred_error = error ? strdup(error) : NULL;
    }
    return true;
}

const char *agent__cancel_text(const run_state *r)
{
    return r->durable ? r->durable->cancel_text : NULL;
}
