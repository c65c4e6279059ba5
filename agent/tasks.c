/* tasks.c - the DAG driver: feeds the pure plan (scheduler/) with process exits and time, starts
 * what it says may start as sandboxed processes, and turns every transition into a log line and
 * a task-run status item.
 *
 * Per-task cost is independent of the DAG's size: the base environment is built once, and a
 * task's inputs are assembled from its upstream tasks' stored results only (results.c). */
#include "agent/run.h"
#include "agent/durable.h"
#include "agent/log.h"
#include "agent/metrics.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#define PARAMETERS_FILE "parameters.json" /* in the run directory: DAGY_PARAMETERS_FILE */
#define KWARGS_DIR      "kwargs"          /* in the run directory: DAGY_KWARGS_FILE files */

/* DIR/SUB/NAMEEXT, or DIR/NAMEEXT when sub is NULL. */
static char *fmt_path(const char *dir, const char *sub, const char *name, const char *ext)
{
    size_t n = strlen(dir) + (sub ? strlen(sub) : 0) + strlen(name) + strlen(ext) + 4;
    char *s = malloc(n);
    snprintf(s, n, "%s/%s%s%s%s", dir, sub ? sub : "", sub ? "/" : "", name, ext);
    return s;
}

int agent__load_spec(run_state *r, char *err)
{
    agent_config *c = r->cfg;
    char *path = fmt_path(r->flow_dir, NULL, "flow_spec", ".json");
    int rc = flowspec_load(path, &r->spec, err);
    free(path);
    if (rc)
        return AGENT_EXIT_INVALID;
    if (!c->flow_name)
        c->flow_name = strdup(r->spec->name);
    if (!c->flow_version && r->spec->version && *r->spec->version)
        c->flow_version = strdup(r->spec->version);
    flowspec_vars vars = {c->parameters,   c->run_id, c->flow_name,
                          c->flow_version, c->org_id, c->environment};
    if (flowspec_render(r->spec, &vars, err))
        return AGENT_EXIT_INVALID;
    agent_log_context(NULL, c->flow_name, c->flow_version, NULL, NULL);

    char *meta_path = fmt_path(r->flow_dir, NULL, "metadata", ".json");
    char *meta = proto_read_file(meta_path, 1u << 20, NULL);
    if (!meta && errno != ENOENT)
        agent_log(LOG_WARNING, "metadata_invalid", "%s cannot be read (%s); ignored", meta_path,
                  errno == EINVAL  ? "not a regular file"
                  : errno == EFBIG ? "larger than 1 MiB"
                                   : strerror(errno));
    if (meta) {
        r->metadata = cJSON_Parse(meta);
        if (!r->metadata)
            agent_log(LOG_WARNING, "metadata_invalid", "%s is not valid JSON; ignored", meta_path);
    }
    free(meta);
    free(meta_path);
    return 0;
}

/* Finds dagy_runner.py: DAGY_PYTHON_RUNNER, beside the binary, or ../share/dagy. */
static char *find_runner(const agent_config *c)
{
    if (c->runner)
        return strdup(c->runner);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return strdup("dagy_runner.py");
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    *slash = '\0';
    static const char *const rel[] = {"/dagy_runner.py", "/../share/dagy/dagy_runner.py"};
    for (size_t i = 0; i < 2; i++) {
        char *p = malloc(strlen(exe) + strlen(rel[i]) + 1);
        sprintf(p, "%s%s", exe, rel[i]);
        if (access(p, R_OK) == 0)
            return p;
        free(p);
    }
    return strdup("dagy_runner.py");
}

/* Variables the agent sets for every task; an inherited value is dropped. */
static bool reserved_env(const char *kv)
{
    static const char *const names[] = {"DAGY_RUN_ID=",
                                        "DAGY_FLOW_NAME=",
                                        "DAGY_TASK_NAME=",
                                        "DAGY_TASK_RUN_ID=",
                                        "DAGY_ATTEMPT=",
                                        "DAGY_PARAMETERS=",
                                        "DAGY_TASK_OUTPUT=",
                                        "DAGY_TASK_INPUTS=",
                                        "DAGY_CALLABLE=",
                                        "DAGY_KWARGS=",
                                        "PYTHONPATH=",
                                        "DAGY_PARAMETERS_FILE=",
                                        "DAGY_KWARGS_FILE=",
                                        "DAGY_MAP_ITEM=",
                                        "DAGY_MAP_INDEX=",
                                        "DAGY_ONLY_TASK=",
                                        NULL};
    for (const char *const *n = names; *n; n++)
        if (!strncmp(kv, *n, strlen(*n)))
            return true;
    return false;
}

static char *kv(const char *k, const char *v)
{
    size_t n = strlen(k) + strlen(v) + 2;
    char *s = malloc(n);
    snprintf(s, n, "%s=%s", k, v);
    return s;
}

/* True when NAME=VALUE would be over exec()'s limit for one environment string. */
static bool too_big_for_env(const char *name, size_t value_len)
{
    return strlen(name) + 1 + value_len + 1 > SBX_ARG_STRLEN_MAX;
}

/* Where a callable task's kwargs go when they do not fit DAGY_KWARGS: kwargs/TASK.json. */
static char *kwargs_path(run_state *r, const char *task)
{
    char enc[PROTO_NAME_ENCODED_MAX];
    proto_name_encode(task, enc, sizeof enc);
    return fmt_path(r->run_dir, KWARGS_DIR, enc, ".json");
}

/* The environment every task starts from: the agent's, plus the run-wide DAGY_* variables and
 * PYTHONPATH (flow directory first, then every package, then the inherited PYTHONPATH). */
static void build_base_env(run_state *r)
{
    agent_config *c = r->cfg;
    size_t n = 0;
    while (environ[n])
        n++;
    r->base_env = calloc(n + 8, sizeof *r->base_env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!reserved_env(environ[i]))
            r->base_env[k++] = strdup(environ[i]);
    size_t plen = strlen(r->flow_dir) + 1;
    for (char **d = r->dep_dirs; d && *d; d++)
        plen += strlen(*d) + 1;
    const char *inherited = getenv("PYTHONPATH");
    plen += inherited ? strlen(inherited) + 1 : 0;
    char *pp = malloc(plen + 1);
    strcpy(pp, r->flow_dir);
    for (char **d = r->dep_dirs; d && *d; d++)
        strcat(strcat(pp, ":"), *d);
    if (inherited && *inherited)
        strcat(strcat(pp, ":"), inherited);
    char *params = cJSON_PrintUnformatted(c->parameters);
    char *params_file = fmt_path(r->run_dir, NULL, PARAMETERS_FILE, "");
    r->base_env[k++] = kv("PYTHONPATH", pp);
    r->base_env[k++] = kv("DAGY_RUN_ID", c->run_id);
    r->base_env[k++] = kv("DAGY_FLOW_NAME", c->flow_name ? c->flow_name : "");
    /* Over one exec() string, the parameters are only in the file (written by tasks_init). */
    if (!too_big_for_env("DAGY_PARAMETERS", strlen(params)))
        r->base_env[k++] = kv("DAGY_PARAMETERS", params);
    r->base_env[k++] = kv("DAGY_PARAMETERS_FILE", params_file);
    r->n_base_env = k;
    free(pp);
    free(params_file);
    cJSON_free(params);
}

int agent__tasks_init(run_state *r, char *err);
static void on_transition(void *ud, size_t task, sched_state from, sched_state to,
                          const char *reason);
static int write_large_values(run_state *r, char *err);
static int check_exec_sizes(run_state *r, char *err);

int agent__tasks_init(run_state *r, char *err)
{
    flowspec *s = r->spec;
    agent_config *c = r->cfg;
    sched_task_def *defs = calloc(s->n_tasks, sizeof *defs);
    for (size_t i = 0; i < s->n_tasks; i++)
        defs[i] = s->tasks[i].def;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int maxp = c->max_parallel   ? c->max_parallel
               : s->max_parallel ? s->max_parallel
                                 : (int)(cpus > 0 ? cpus : 1);
    uint64_t seed = uv_hrtime() ^ (uint64_t)getpid();
    r->tasks = calloc(s->n_tasks, sizeof *r->tasks);
    int rc = sched_new(defs, s->n_tasks, maxp, seed, on_transition, r, &r->plan);
    free(defs);
    if (rc) {
        snprintf(err, AGENT_ERR_MAX, "cannot build the plan: %s", strerror(-rc));
        return AGENT_EXIT_INFRA;
    }
    for (size_t i = 0; i < s->n_tasks; i++) {
        r->tasks[i].run = r;
        r->tasks[i].index = i;
        r->tasks[i].exit_code = -1;
        r->tasks[i].ft = &s->tasks[i];
    }
    if ((rc = agent__results_init(r, err)))
        return AGENT_EXIT_INFRA;
    if ((rc = agent__ecs_init(r, err)))
        return rc;
    r->runner = find_runner(c);
    if ((rc = write_large_values(r, err)))
        return rc;
    build_base_env(r);
    return check_exec_sizes(r, err);
}

static void log_progress(run_state *r)
{
    if (!agent_log_is_pretty())
        return;
    char line[160];
    size_t n = sched_count(r->plan);
    size_t done = sched_count_in(r->plan, SCHED_SUCCEEDED) + sched_count_in(r->plan, SCHED_FAILED) +
                  sched_count_in(r->plan, SCHED_SKIPPED) + sched_count_in(r->plan, SCHED_CANCELLED);
    snprintf(line, sizeof line,
             "\033[1m[%zu/%zu done · %zu running · %zu failed · %zu skipped]\033[0m", done, n,
             sched_running(r->plan), sched_count_in(r->plan, SCHED_FAILED),
             sched_count_in(r->plan, SCHED_SKIPPED));
    agent_log_progress(line);
}

/* The task-run item, created on first use (PENDING is implied by its absence). */
static cJSON *task_item(run_state *r, size_t i)
{
    agent_task *t = &r->tasks[i];
    if (!t->item) {
        if (r->cfg->only_task) /* an ECS child: the parent's task run */
            snprintf(t->task_run_id, sizeof t->task_run_id, "%s", r->cfg->only_task_run_id);
        else
            agent_uuid(t->task_run_id);
        t->item = status_item(r->status, STATUS_TASK, r->cfg->run_id, r->tasks[i].ft->name);
        status_set_str(t->item, "task_run_id", t->task_run_id);
        status_set_num(t->item, "max_attempts", sched_task_max_attempts(r->plan, i));
        if (r->cfg->only_task && r->external_id) /* an ECS child: its own task ARN */
            status_set_str(t->item, "external_id", r->external_id);
        long parent = sched_task_parent(r->plan, i);
        if (parent >= 0) { /* a map child: which map, which element */
            status_set_str(t->item, "map_parent", r->tasks[parent].ft->name);
            status_set_num(t->item, "map_index", (double)sched_task_map_index(r->plan, i));
        }
        agent__durable_item(r, i, t->item);
    }
    return t->item;
}

/* Opens a log line about task i with the fields every task line carries. */
static log_line *task_line(run_state *r, size_t i, log_level lv, const char *event,
                           const char *status, const char *fmt, const char *a, const char *b)
{
    log_line *l = agent_log_begin(lv, event, fmt, r->tasks[i].ft->name, a ? a : "", b ? b : "");
    agent_log_str(l, "task_name", r->tasks[i].ft->name);
    agent_log_str(l, "task_run_id", r->tasks[i].task_run_id);
    agent_log_int(l, "attempt", sched_task_attempt(r->plan, i));
    agent_log_str(l, "status", status);
    return l;
}

/* The end of a task that ran: the item's end fields, `task_end` for every such task (so
 * `filter event_type = "task_end" | sort duration_seconds` covers failures too) and, for a
 * failure, `task_failed` with the same fields (contract section 10). */
static void task_ended(run_state *r, size_t i, sched_state to, const char *reason, cJSON *it,
                       const char *ts)
{
    agent_task *t = &r->tasks[i];
    bool failed = to == SCHED_FAILED;
    const char *st = sched_state_name(to);
    double dur = (double)(uv_now(&r->loop) - t->first_start_ms) / 1000.0;
    t->duration = dur;
    status_set_str(it, "ended_at", ts);
    status_set_num(it, "duration_seconds", dur);
    status_set_str(it, "error_message", failed ? reason : NULL);
    if (t->exit_code >= 0)
        status_set_num(it, "exit_code", t->exit_code);
    static const char *const events[] = {"task_end", "task_failed"};
    for (int e = 0; e < (failed ? 2 : 1); e++) {
        log_line *l =
            task_line(r, i, failed ? LOG_ERROR : LOG_INFO, events[e], st, "task \"%s\" %s%s",
                      failed ? "FAILED: " : "SUCCEEDED", failed ? reason : "");
        agent_log_num(l, "duration_seconds", dur);
        if (t->exit_code >= 0)
            agent_log_int(l, "exit_code", t->exit_code);
        agent_log_str(l, "error", failed ? reason : NULL);
        agent_log_end(l);
    }
    /* A map child's failure counts for the run only through its map (allow_failures may
     * tolerate it): map.c passes infra on, and the map's own failure names the first child. */
    if (sched_task_parent(r->plan, i) >= 0)
        return;
    if (failed && t->infra)
        r->infra_failed = true;
    if (failed && !r->error) {
        size_t n = strlen(reason ? reason : "") + strlen(r->tasks[i].ft->name) + 32;
        r->error = malloc(n);
        snprintf(r->error, n, "task \"%s\" failed: %s", r->tasks[i].ft->name, reason ? reason : "");
    }
}

static void on_transition(void *ud, size_t i, sched_state from, sched_state to, const char *reason)
{
    run_state *r = ud;
    agent_task *t = &r->tasks[i];
    /* An ECS child records its one task only, and never CANCELLED: a stopped child's attempt
     * is the parent's to record (retried, timed out or cancelled). */
    bool child = r->cfg->only_task != NULL;
    if (child && ((long)i != r->only_index || to == SCHED_CANCELLED))
        return;
    cJSON *it = task_item(r, i);
    const char *st = sched_state_name(to);
    char ts[32];
    proto_iso_time(proto_now(), ts);
    uint64_t now = uv_now(&r->loop);
    status_set_str(it, "status", st);
    status_set_num(it, "attempt", sched_task_attempt(r->plan, i));
    log_line *l = NULL;
    switch (to) {
    case SCHED_RUNNING:
        t->attempt_start_ms = now;
        if (from == SCHED_PENDING) {
            t->first_start_ms = now;
            if (!child) /* the parent recorded the first attempt's start */
                status_set_str(it, "started_at", ts);
        }
        l = task_line(r, i, LOG_INFO, "task_start", st, "task \"%s\" started%s%s", NULL, NULL);
        break;
    case SCHED_RETRYING: {
        char delay[64];
        snprintf(delay, sizeof delay, " (retrying in %.1f s)",
                 (double)sched_retry_delay_ms(r->plan, i) / 1000.0);
        status_set_str(it, "error_message", reason);
        l = task_line(r, i, LOG_WARNING, "task_retry", st, "task \"%s\" attempt failed: %s%s",
                      reason, delay);
        agent_log_str(l, "error", reason);
        agent_log_num(l, "retry_delay_seconds", (double)sched_retry_delay_ms(r->plan, i) / 1e3);
        break;
    }
    case SCHED_SUCCEEDED:
        if (from == SCHED_PENDING) { /* reused from an earlier run, not run (resume.c) */
            l = agent__durable_reused(r, i, it);
            break;
        }
        /* fallthrough */
    case SCHED_FAILED:
        task_ended(r, i, to, reason, it, ts);
        break;
    case SCHED_SKIPPED:
    case SCHED_CANCELLED: {
        /* Why a task was skipped, for people and queries: upstream_failed / trigger_rule ... */
        const char *why = sched_skip_cause_name(sched_task_skip_cause(r->plan, i));
        status_set_str(it, "ended_at", ts);
        status_set_str(it, "error_message", reason);
        status_set_str(it, "skip_reason", why);
        l = task_line(r, i, LOG_WARNING, to == SCHED_SKIPPED ? "task_skipped" : "task_cancelled",
                      st, "task \"%s\" %s: %s", st, reason);
        agent_log_str(l, "error", reason);
        agent_log_str(l, "skip_reason", why);
        break;
    }
    case SCHED_PENDING:
        break;
    }
    agent_log_end(l);
    /* An attempt's TaskDuration: an attempt on its own ECS task reports its own, from the child
     * agent (one figure per attempt: CloudWatch would sum both). */
    if (from == SCHED_RUNNING && to != SCHED_RUNNING && !r->tasks[i].ft->executor)
        agent_metrics_task_attempt(r->tasks[i].ft->name, sched_task_attempt(r->plan, i),
                                   (double)(now - t->attempt_start_ms) / 1000.0);
    if (!t->adopted) /* else the ECS child's terminal write stands (ecs_exec.c) */
        status_touch(r->status, it);
    if (sched_state_terminal(to))
        agent__release_task(r, i);
    log_progress(r);
}

void agent__release_task(run_state *r, size_t i)
{
    agent_task *t = &r->tasks[i];
    if (!r->status || !t->item || t->uploads > 0 ||
        !sched_state_terminal(sched_task_state(r->plan, i)))
        return;
    status_release(r->status, t->item);
    t->item = NULL;
}

/* What a running attempt's callbacks are given: an index, since r->tasks may move (map.c). */
typedef struct {
    run_state *r;
    size_t i;
} attempt_ref;

static void on_task_line(void *ud, sbx_proc *p, int stream, const char *line, size_t len)
{
    attempt_ref *ref = ud;
    run_state *r = ref->r;
    size_t i = ref->i;
    /* The line's bytes as they came (a NUL does not end it), cut on a character for the
     * message; a longer line also goes whole into "line". */
    log_line *l = agent_log_begin_text(LOG_INFO, "task_output", line,
                                       len > 1900 ? proto_utf8_cut(line, len, 1900) : len);
    if (!l)
        return;
    agent_log_str(l, "task_name", r->tasks[i].ft->name);
    agent_log_str(l, "task_run_id", r->tasks[i].task_run_id);
    agent_log_int(l, "attempt", sched_task_attempt(r->plan, i));
    agent_log_str(l, "stream", stream == SBX_STDERR ? "stderr" : "stdout");
    if (len > 1900)
        agent_log_strn(l, "line", line, len);
    agent_log_end(l);
}

/* argv for the attempt: the command, or the Python runner for a callable. */
static char **task_argv(run_state *r, const flowspec_task *ft, char **tmp)
{
    if (ft->command)
        return ft->command;
    tmp[0] = r->cfg->python;
    tmp[1] = r->runner;
    tmp[2] = NULL;
    return tmp;
}

/* The attempt's environment: base + the task's env + its own DAGY_* variables. Entries are
 * borrowed from base_env and the spec; only the per-attempt ones are allocated (freed by the
 * caller through `owned`). */
static char **task_envp(run_state *r, size_t i, const char *inputs, char **owned)
{
    const flowspec_task *ft = r->tasks[i].ft;
    char **envp = calloc(r->n_base_env + ft->env_len + 10, sizeof *envp);
    size_t k = 0, o = 0;
    for (size_t b = 0; b < r->n_base_env; b++) {
        bool overridden = false;
        const char *eq = strchr(r->base_env[b], '=');
        for (size_t e = 0; e < ft->env_len && !overridden; e++)
            overridden = !strncmp(r->base_env[b], ft->env[e], (size_t)(eq - r->base_env[b]) + 1);
        if (!overridden)
            envp[k++] = r->base_env[b];
    }
    for (size_t e = 0; e < ft->env_len; e++)
        envp[k++] = ft->env[e];
    char attempt[16];
    snprintf(attempt, sizeof attempt, "%d", sched_task_attempt(r->plan, i));
    char *out = agent__task_file(r, AGENT_DIR_OUT, i, sched_task_attempt(r->plan, i));
    envp[k++] = owned[o++] = kv("DAGY_TASK_NAME", ft->name);
    envp[k++] = owned[o++] = kv("DAGY_TASK_RUN_ID", r->tasks[i].task_run_id);
    envp[k++] = owned[o++] = kv("DAGY_ATTEMPT", attempt);
    envp[k++] = owned[o++] = kv("DAGY_TASK_OUTPUT", out);
    envp[k++] = owned[o++] = kv("DAGY_TASK_INPUTS", inputs);
    if (ft->callable) {
        char *kw = ft->kwargs ? cJSON_PrintUnformatted(ft->kwargs) : strdup("{}");
        envp[k++] = owned[o++] = kv("DAGY_CALLABLE", ft->callable);
        if (!too_big_for_env("DAGY_KWARGS", strlen(kw))) {
            envp[k++] = owned[o++] = kv("DAGY_KWARGS", kw);
        } else {
            char *path = kwargs_path(r, ft->name); /* written by write_large_kwargs() */
            envp[k++] = owned[o++] = kv("DAGY_KWARGS_FILE", path);
            free(path);
        }
        cJSON_free(kw);
    }
    owned[o] = NULL;
    free(out);
    return envp;
}

static void on_task_exit(void *ud, sbx_proc *p, const sbx_result *res);

/* Fails the running attempt of task i because the agent's own file system failed it (a full
 * disk, a read-only or broken work directory): retried like any failure, and a task that fails
 * for good this way makes the run exit 3 (infrastructure), not 1. */
static void attempt_infra_failed(run_state *r, size_t i, const char *why)
{
    char msg[AGENT_ERR_MAX + 32];
    snprintf(msg, sizeof msg, "infrastructure: %s", why);
    r->tasks[i].infra = true;
    sched_exited(r->plan, i, SCHED_EXIT_FAILED, msg, uv_now(&r->loop));
}

/* Starts the attempt the plan just marked RUNNING. A failure to start fails the attempt. */
static void spawn_task(run_state *r, size_t i)
{
    const flowspec_task *ft = r->tasks[i].ft;
    agent_task *t = &r->tasks[i];
    t->timed_out = t->cancelled = t->infra = false;
    t->exit_code = -1;
    if (agent__ecs_task(r, i)) {
        agent__ecs_start(r, i, NULL, NULL);
        return;
    }
    t->ran = true;
    char *inputs = NULL, err[AGENT_ERR_MAX];
    int attempt = sched_task_attempt(r->plan, i);
    if (agent__inputs_build(r, i, attempt, &inputs, err, sizeof err)) {
        attempt_infra_failed(r, i, err);
        return;
    }
    char *owned[12], *tmp[3];
    char **envp = task_envp(r, i, inputs, owned);
    sbx_spec spec = {.argv = task_argv(r, ft, tmp), .envp = envp, .cwd = r->flow_dir};
    static const sbx_callbacks cb = {.on_line = on_task_line, .on_exit = on_task_exit};
    attempt_ref *ref = malloc(sizeof *ref);
    int rc = ref ? 0 : -ENOMEM;
    if (ref) {
        *ref = (attempt_ref){r, i};
        rc = sbx_spawn(r->sbx, &spec, &cb, ref, &t->proc);
    }
    for (char **o = owned; *o; o++)
        free(*o);
    free(envp);
    t->inputs = inputs;
    if (rc) {
        free(ref);
        char why[160];
        snprintf(why, sizeof why, "cannot start the task's process: %s%s", strerror(-rc),
                 rc == -E2BIG ? " (command and environment over exec()'s limit; not retried)" : "");
        t->proc = NULL;
        agent__inputs_done_transfer(r, t->inputs);
        t->inputs = NULL;
        /* The same command and environment would be refused again: no retry for E2BIG. */
        sched_exited(r->plan, i, rc == -E2BIG ? SCHED_EXIT_FATAL : SCHED_EXIT_FAILED, why,
                     uv_now(&r->loop));
    }
}

/* ---- values over exec()'s limits (issue 8 defect 10) ---- */

int agent__write_kwargs_file(run_state *r, const flowspec_task *ft, char *err)
{
    char *kw = ft->callable && ft->kwargs ? cJSON_PrintUnformatted(ft->kwargs) : NULL;
    int rc = 0;
    if (kw && too_big_for_env("DAGY_KWARGS", strlen(kw))) {
        char *path = kwargs_path(r, ft->name);
        char *dir = fmt_path(r->run_dir, NULL, KWARGS_DIR, "");
        rc = mkdir(dir, 0700) && errno != EEXIST ? -errno : 0;
        free(dir);
        if (!rc)
            rc = proto_write_file_atomic(path, kw, strlen(kw), 0600, false);
        if (rc)
            snprintf(err, AGENT_ERR_MAX, "cannot write %s: %s", path, strerror(-rc));
        free(path);
    }
    cJSON_free(kw);
    return rc ? AGENT_EXIT_INFRA : 0;
}

/* Writes the parameters to DAGY_PARAMETERS_FILE (always: a task may rely on the file), and the
 * kwargs of every callable task that do not fit DAGY_KWARGS to its DAGY_KWARGS_FILE. 0600. */
static int write_large_values(run_state *r, char *err)
{
    char *params = cJSON_PrintUnformatted(r->cfg->parameters);
    char *path = fmt_path(r->run_dir, NULL, PARAMETERS_FILE, "");
    int rc = params ? proto_write_file_atomic(path, params, strlen(params), 0600, false) : -ENOMEM;
    cJSON_free(params);
    if (rc)
        snprintf(err, AGENT_ERR_MAX, "cannot write %s: %s", path, strerror(-rc));
    free(path);
    if (rc)
        return AGENT_EXIT_INFRA;
    for (size_t i = 0; i < r->spec->n_tasks; i++)
        if ((rc = agent__write_kwargs_file(r, r->tasks[i].ft, err)))
            return rc;
    return 0;
}

int agent__tasks_grow(run_state *r, size_t n)
{
    size_t old = sched_count(r->plan);
    agent_task *t = realloc(r->tasks, n * sizeof *t);
    if (!t)
        return -ENOMEM;
    memset(t + old, 0, (n - old) * sizeof *t);
    r->tasks = t;
    agent_durable *d = r->durable;
    if (!d || !d->tasks)
        return 0;
    durable_task *dt = realloc(d->tasks, n * sizeof *dt);
    if (!dt)
        return -ENOMEM;
    memset(dt + old, 0, (n - old) * sizeof *dt);
    d->tasks = dt;
    char(*h)[PROTO_HASH_HEX] = realloc(d->hashes, n * sizeof *h);
    if (!h)
        return -ENOMEM;
    memset(h + old, 0, (n - old) * sizeof *h);
    d->hashes = h;
    return 0;
}

/* "command[N]", or "env \"NAME\"" for an environment string (cut at its '='). */
static void exec_field(const flowspec_task *ft, const sbx_size_error *e, char *const *argv,
                       char *const *envp, char *out, size_t len)
{
    if (!e->in_env) {
        if (ft->command)
            snprintf(out, len, "command[%zu]", e->index);
        else
            snprintf(out, len, "the runner's argument %.100s", argv[e->index]);
        return;
    }
    const char *kv = envp[e->index], *eq = strchr(kv, '=');
    int n = eq ? (int)(eq - kv) : (int)strlen(kv);
    snprintf(out, len, "env \"%.*s\"", n > 128 ? 128 : n, kv);
}

/* Refuses up front (exit 2, naming the task and the field) a task whose command and
 * environment exec() would refuse: it could never start, and every attempt would fail alike. */
static int check_exec_sizes(run_state *r, char *err)
{
    for (size_t i = 0; i < r->spec->n_tasks; i++) {
        const flowspec_task *ft = r->tasks[i].ft;
        char *owned[12], *tmp[3], field[200];
        char **argv = task_argv(r, ft, tmp);
        /* An inputs path at least as long as any attempt's. */
        char *inputs = agent__task_file(r, AGENT_DIR_IN, i, 999999);
        char **envp = task_envp(r, i, inputs, owned);
        sbx_size_error e;
        int rc = sbx_check_size(argv, envp, &e);
        if (rc) {
            exec_field(ft, &e, argv, envp, field, sizeof field);
            if (e.kind == SBX_SIZE_TOTAL)
                snprintf(err, AGENT_ERR_MAX,
                         "task \"%s\": command and environment are %zu bytes, over exec()'s "
                         "limit of %zu bytes (the largest is %s); pass large values through "
                         "parameters (DAGY_PARAMETERS_FILE) or files",
                         ft->name, e.size, e.limit, field);
            else
                snprintf(err, AGENT_ERR_MAX,
                         "task \"%s\": %s is %zu bytes, over exec()'s limit of %zu bytes for "
                         "one string; pass large values through parameters "
                         "(DAGY_PARAMETERS_FILE) or files",
                         ft->name, field, e.size, e.limit);
        }
        for (char **o = owned; *o; o++)
            free(*o);
        free(envp);
        free(inputs);
        if (rc)
            return AGENT_EXIT_INVALID;
    }
    return 0;
}

static void on_sched_timer(uv_timer_t *h);

static void on_timeout(void *ud, size_t i)
{
    run_state *r = ud;
    agent_task *t = &r->tasks[i];
    if (t->ecs)
        agent__ecs_timeout(r, i);
    if (!t->proc)
        return;
    t->timed_out = true;
    sbx_terminate(t->proc, (uint64_t)(r->cfg->kill_grace_seconds * 1000));
}

/* Whether a task of the spec FAILED: map children count through their map, which fails unless
 * allow_failures tolerates them. */
static bool spec_task_failed(const run_state *r)
{
    for (size_t i = 0; i < r->spec->n_tasks; i++)
        if (sched_task_state(r->plan, i) == SCHED_FAILED)
            return true;
    return false;
}

void agent__tasks_pump(run_state *r)
{
    if (r->phase != RUN_EXECUTING)
        return;
    uint64_t now = uv_now(&r->loop);
    int child_exit;
    if (agent__ecs_child_done(r, &child_exit)) {
        agent__finish(r, child_exit, r->error);
        return;
    }
    sched_tick(r->plan, now, on_timeout, r);
    long i;
    /* Joined maps first (their results free downstream tasks), then whatever may start; a map
     * node started is expanded rather than spawned; an empty map joins at once, so loop. */
    for (bool again = true; again;) {
        again = false;
        while ((i = sched_next_joined(r->plan)) >= 0) {
            again = true;
            agent__map_complete(r, (size_t)i);
        }
        while ((i = sched_next(r->plan, now)) >= 0) {
            again = true;
            if (sched_task_is_map(r->plan, (size_t)i)) {
                agent__map_expand(r, (size_t)i);
                agent__ecs_child_expanded(r, (size_t)i);
            } else
                spawn_task(r, (size_t)i);
        }
    }
    if (sched_done(r->plan)) {
        bool failed = spec_task_failed(r);
        bool cancelled = sched_count_in(r->plan, SCHED_CANCELLED) > 0;
        if (r->signals && cancelled)
            agent__finish(r, AGENT_EXIT_SIGTERM, "Worker shutdown requested via SIGTERM");
        else if (r->infra_failed) /* the agent's disk, not the task, failed the run */
            agent__finish(r, AGENT_EXIT_INFRA, r->error);
        else
            agent__finish(r, failed ? AGENT_EXIT_TASK_FAILED : AGENT_EXIT_OK, r->error);
        return;
    }
    uint64_t dl = sched_next_deadline(r->plan);
    if (dl == UINT64_MAX)
        uv_timer_stop(&r->sched_timer);
    else
        uv_timer_start(&r->sched_timer, on_sched_timer, dl > now ? dl - now : 0, 0);
}

static void on_sched_timer(uv_timer_t *h)
{
    agent__tasks_pump(h->data);
}

/* The attempt's error message: what ended it and the last line it wrote on stderr. */
static void attempt_error(run_state *r, size_t i, const sbx_result *res, const char *trace,
                          size_t tlen, char *out, size_t outlen)
{
    const flowspec_task *ft = r->tasks[i].ft;
    const char *prog = ft->command ? ft->command[0] : r->cfg->python;
    int n;
    if (res->spawn_error == -ENOENT)
        n = snprintf(out, outlen, "command not found: %s", prog);
    else if (res->spawn_error)
        n = snprintf(out, outlen, "cannot execute %s: %s", prog, strerror(-res->spawn_error));
    else if (res->term_signal)
        n = snprintf(out, outlen, "killed by signal %d (%s)", res->term_signal,
                     strsignal(res->term_signal));
    else
        n = snprintf(out, outlen, "exited with code %d", res->exit_code);
    /* Append the last non-empty stderr line: usually the exception or the tool's complaint. */
    size_t end = tlen;
    while (end > 0 && (trace[end - 1] == '\n' || trace[end - 1] == '\r' || trace[end - 1] == ' '))
        end--;
    size_t start = end;
    while (start > 0 && trace[start - 1] != '\n')
        start--;
    if (end > start && n > 0 && (size_t)n < outlen - 8) {
        size_t room = outlen - (size_t)n - 3;
        size_t len = end - start < room ? end - start : room;
        snprintf(out + n, outlen - (size_t)n, ": %.*s", (int)len, trace + start);
    }
}

/* A successful attempt's result: read and validated from DAGY_TASK_OUTPUT, then stored where
 * inputs are built from. Returns SCHED_EXIT_OK, or SCHED_EXIT_FAILED with err set (t->infra
 * when the agent's own write failed rather than the task's result). */
static sched_exit attempt_result(run_state *r, size_t i, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc =
        agent__task_result_read(r, i, sched_task_attempt(r->plan, i), &text, &len, err, errlen);
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory reading the result");
    if (!rc && text && agent__task_result_store(r, i, text, len, err, errlen)) {
        char why[AGENT_ERR_MAX];
        snprintf(why, sizeof why, "infrastructure: %s", err);
        snprintf(err, errlen, "%s", why);
        r->tasks[i].infra = true;
        rc = -EIO;
    }
    free(text);
    return rc ? SCHED_EXIT_FAILED : SCHED_EXIT_OK;
}

static void task_exited(void *ud, sbx_proc *p, const sbx_result *res);

/* The lines of an ended attempt (task_end, metrics) and of what it starts (task_start) are
 * written in one write(2), after the next spawn (agent/log.h). */
static void on_task_exit(void *ud, sbx_proc *p, const sbx_result *res)
{
    agent_log_batch_begin();
    task_exited(ud, p, res);
    agent_log_batch_end();
}

static void task_exited(void *ud, sbx_proc *p, const sbx_result *res)
{
    attempt_ref *ref = ud;
    run_state *r = ref->r;
    size_t i = ref->i;
    agent_task *t = &r->tasks[i];
    free(ref);
    size_t tlen = 0;
    const char *trace = sbx_trace(p, &tlen);
    char err[1024] = "";
    t->proc = NULL;
    agent__inputs_done_transfer(r, t->inputs);
    t->inputs = NULL;
    t->exit_code = res->term_signal || res->spawn_error ? -1 : res->exit_code;
    sched_exit how = SCHED_EXIT_OK;
    /* The leader's exit decides, unless the agent killed it while it ran: a timeout or a drain
     * that came after the exit (in the same loop turn, or while a descendant still held the
     * output) leaves `killed` false and changes nothing. */
    if (t->cancelled && res->killed) {
        how = SCHED_EXIT_CANCELLED;
        snprintf(err, sizeof err, "Worker shutdown requested via %s: task terminated",
                 r->stop_signal ? r->stop_signal : "SIGTERM");
    } else if (t->timed_out && res->killed) {
        how = SCHED_EXIT_TIMED_OUT;
    } else if (res->spawn_error || res->term_signal || res->exit_code) {
        how = SCHED_EXIT_FAILED;
        attempt_error(r, i, res, trace, tlen, err, sizeof err);
    } else {
        how = attempt_result(r, i, err, sizeof err);
    }
    if (how == SCHED_EXIT_FAILED || how == SCHED_EXIT_TIMED_OUT)
        agent__upload_trace(r, i, sched_task_attempt(r->plan, i), trace, tlen);
    /* A success counts once its result is stored (durable_results.c ends the attempt then). */
    if (how == SCHED_EXIT_OK && agent__result_store(r, i)) {
        agent__tasks_pump(r); /* its slot is free meanwhile */
        return;
    }
    agent__attempt_end(r, i, how, how == SCHED_EXIT_OK || how == SCHED_EXIT_TIMED_OUT ? NULL : err);
}

void agent__attempt_end(run_state *r, size_t i, sched_exit how, const char *err)
{
    sched_exited(r->plan, i, how, err, uv_now(&r->loop));
    agent__tasks_pump(r);
}

void agent__tasks_drain(run_state *r)
{
    char reason[96];
    snprintf(reason, sizeof reason, "Worker shutdown requested via %s",
             r->stop_signal ? r->stop_signal : "SIGTERM");
    sched_drain(r->plan, reason);
    agent__ecs_drain(r);
}

void agent__tasks_kill(run_state *r)
{
    if (!r->plan)
        return;
    for (size_t i = 0; i < sched_count(r->plan); i++) {
        agent_task *t = &r->tasks[i];
        if (!t->proc)
            continue;
        t->cancelled = true;
        sbx_terminate(t->proc, (uint64_t)(r->cfg->kill_grace_seconds * 1000));
    }
    agent__ecs_kill(r);
    agent__results_abandon(r);
}

void agent__execute(run_state *r)
{
    char err[AGENT_ERR_MAX];
    if (agent__durable_begin(r)) /* task hashes, resume: calls back when done */
        return;
    int code = agent__tasks_init(r, err);
    if (code) {
        agent__finish(r, code, err);
        return;
    }
    if (r->cfg->only_task) {
        agent__ecs_child_begin(r); /* upstream results from S3 first */
        return;
    }
    agent__execute_dag(r);
}

void agent__execute_dag(run_state *r)
{
    agent__set_phase(r, RUN_EXECUTING);
    uv_update_time(&r->loop);
    status_set_num(r->run_item, "tasks_total", (double)r->spec->n_tasks);
    status_set_str(r->run_item, "flow_name", r->cfg->flow_name);
    status_set_str(r->run_item, "flow_version", r->cfg->flow_version);
    status_touch(r->status, r->run_item);
    log_line *l = agent_log_begin(LOG_INFO, "run_start", "run started: flow %s, %zu tasks",
                                  r->cfg->flow_name, r->spec->n_tasks);
    agent_log_str(l, "status", "RUNNING");
    agent_log_int(l, "tasks_total", (int64_t)r->spec->n_tasks);
    agent_log_str(l, "environment", r->cfg->environment);
    agent_log_str(l, "external_id", r->external_id);
    agent_log_str(l, "executor", r->cfg->container_mode ? "ecs" : "local");
    agent_log_str(l, "flow_dir", r->flow_dir);
    char *results = agent__task_file(r, AGENT_DIR_RESULTS, 0, 0);
    if (results)
        *strrchr(results, '/') = '\0';
    agent_log_str(l, "results_dir", results);
    free(results);
    agent_log_json(l, "parameters", r->cfg->parameters);
    agent_log_json(l, "metadata", r->metadata);
    agent_log_end(l);
    agent__durable_apply(r);
    agent__tasks_pump(r);
}

void agent__tasks_free(run_state *r)
{
    agent__ecs_free(r);
    agent__durable_free(r);
    free(r->exec_dir);
    r->exec_dir = NULL;
    agent__results_close(r);
    agent__inputs_free(r);
    for (size_t i = 0; r->tasks && r->plan && i < sched_count(r->plan); i++) {
        free(r->tasks[i].inputs);
        if (r->tasks[i].own)
            flowspec_task_clear(r->tasks[i].own);
        free(r->tasks[i].own);
    }
    for (size_t i = 0; i < r->n_base_env; i++)
        free(r->base_env[i]);
    free(r->base_env);
    r->base_env = NULL;
    free(r->tasks);
    r->tasks = NULL;
    if (r->plan)
        sched_free(r->plan);
    r->plan = NULL;
}
