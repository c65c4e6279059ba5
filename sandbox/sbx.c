/* sbx.c - task processes on the agent's libuv loop: a spawn into a new session (sbx_child.c),
 * stdout and stderr read through pipes, group kill with a grace period, one SIGCHLD reaper for
 * every child of the agent (a child subreaper, or PID 1), known or orphaned, and the kill of
 * what escaped an attempt's group when the attempt ends (sbx_escape.c).
 *
 * Spawning is cheap on purpose (a benchmark runs thousands of tiny tasks): the spawn is a
 * CLONE_VFORK, no per-task work depends on the size of the DAG, and per-process memory is
 * about 1 KiB until a task writes partial lines or stderr. */
#include "sandbox/sbx.h"
#include "sandbox/sbx_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PID_BUCKETS   256          /* running leaders are few (max_parallel): short chains */
#define READ_BUF_SIZE (64 * 1024)  /* shared by every pipe: each read is consumed at once */
#define CHILD_STACK   (256 * 1024) /* the spawned child's stack until exec (sanitizers need room) */
/* sbx_close(): how long to wait for killed processes to go (part of the 30 s stop budget). */
#define CLOSE_WAIT_MS 500

/* A proc's lifecycle; each state says where it is entered. */
typedef enum {
    PROC_FAILED,   /* the program could not be run; on_exit due on the zero timer (spawn) */
    PROC_RUNNING,  /* the leader is alive (spawn) */
    PROC_DRAINING, /* leader reaped, group and escapees killed; waiting for the pipes' EOF */
    PROC_DONE,     /* reported or abandoned; handles closing, freed by the last close callback */
} proc_state;

typedef struct {
    uv_pipe_t pipe; /* first member: the read callback casts the handle back to the stream */
    sbx__linebuf lines;
    sbx_proc *proc;
    int which; /* SBX_STDOUT or SBX_STDERR */
    bool open; /* handle initialised and not closing */
} stream;

struct sbx_proc {
    sbx_ctx *ctx;
    sbx_proc *prev, *next; /* ctx->procs: every proc not yet reported */
    sbx_proc *hnext;       /* ctx->buckets: running leaders by pid */
    pid_t pid;
    uint64_t seq;             /* the attempt's number in SBX_ID_ENV */
    unsigned long long start; /* the leader's start in /proc ticks, 0 until needed */
    proc_state state;
    bool term_sent;
    int closing; /* handles whose close callback is pending */
    int wstatus; /* the leader's wait status, between its reap and leader_exited() */
    int wd_slot; /* its group's slot in the watchdog's table, or -1 */
    stream out, err;
    uv_timer_t timer; /* exec failure report, or SIGKILL after grace, or the EOF wait */
    sbx__ring trace;
    sbx_callbacks cb;
    void *ud;
    sbx_result result;
};

#define PROG_CACHE 16

struct sbx_ctx {
    uv_loop_t *loop;
    uv_signal_t sigchld;
    int devnull;
    pthread_t thread; /* the loop's thread: the only one that may spawn (PR_SET_PDEATHSIG) */
    pid_t pid, tid;
    int children_fd[2]; /* /proc/self/task/{pid,tid}/children, kept open (sbx__list_children) */
    void *stack;        /* the spawned child's, reused by every spawn */
    char id[40];        /* "<pid>-<nonce>": this context's prefix of SBX_ID_ENV values */
    char marker[SBX_ID_ENV_MAX]; /* "SBX_ID_ENV=<id>-" */
    uint64_t seq;
    sbx__wd wd; /* the watchdog and its table of the running attempts' groups */
    size_t active;
    size_t line_max; /* sbx_set_line_max; 0 = SBX_LINE_MAX */
    uint64_t orphans, escaped;
    sbx_proc *procs;
    sbx_proc *buckets[PID_BUCKETS];
    /* Where recent programs were found in PATH: a DAG of 2000 `sh -c` tasks would otherwise
     * stat every PATH entry 2000 times. An entry is dropped when exec fails through it. */
    struct {
        char *name, *path_env, *found;
    } cache[PROG_CACHE];
    unsigned cache_next;
    char rbuf[READ_BUF_SIZE];
};

static void on_sigchld(uv_signal_t *h, int signum);
static void reap_exited(sbx_ctx *ctx);

static void free_ctx(uv_handle_t *h)
{
    free(h->data);
}

/* ---- context ---------------------------------------------------------------------------- */

/* Opens /dev/null for the tasks' stdin. A closed fd 0, 1 or 2 is filled with /dev/null first:
 * otherwise a pipe could get one of those numbers and the child's dup2()s would clobber it. */
static int open_devnull(int *out)
{
    for (;;) {
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        if (fd > 2) {
            *out = fd;
            return 0;
        }
        fcntl(fd, F_SETFD, 0); /* a standard descriptor is inherited as usual */
    }
}

/* What sbx_close() and a failed sbx_init() release besides the SIGCHLD handle. */
static void free_resources(sbx_ctx *ctx)
{
    sbx__watchdog_stop(&ctx->wd);
    if (ctx->stack)
        munmap(ctx->stack, CHILD_STACK);
    ctx->stack = NULL;
    close(ctx->devnull);
    for (int i = 0; i < 2; i++)
        if (ctx->children_fd[i] >= 0)
            close(ctx->children_fd[i]);
}

int sbx_init(uv_loop_t *loop, sbx_ctx **out)
{
    sbx_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return -ENOMEM;
    ctx->loop = loop;
    ctx->wd.fd = -1;
    ctx->thread = pthread_self();
    ctx->pid = getpid();
    ctx->tid = gettid();
    ctx->children_fd[0] = ctx->children_fd[1] = -1;
    snprintf(ctx->id, sizeof ctx->id, "%d-%" PRIx64, (int)ctx->pid, uv_hrtime());
    int rc = open_devnull(&ctx->devnull);
    if (rc)
        goto fail;
    /* Orphaned descendants become our children, so every one is reaped (PID 1 gets them
     * anyway), and what escaped an attempt is found among them. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        rc = -errno;
        goto fail_fd;
    }
    ctx->stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (ctx->stack == MAP_FAILED) {
        ctx->stack = NULL;
        rc = -errno;
        goto fail_fd;
    }
    snprintf(ctx->marker, sizeof ctx->marker, "%s=%s-", SBX_ID_ENV, ctx->id);
    if ((rc = sbx__watchdog_start(ctx->marker, &ctx->wd)))
        goto fail_res;
    /* Started before any spawn so no SIGCHLD is missed. Unreferenced while nothing runs: the
     * reaper alone must not keep the loop alive. */
    uv_signal_init(loop, &ctx->sigchld);
    ctx->sigchld.data = ctx;
    if ((rc = uv_signal_start(&ctx->sigchld, on_sigchld, SIGCHLD))) {
        free_resources(ctx);
        uv_close((uv_handle_t *)&ctx->sigchld, free_ctx);
        return rc;
    }
    uv_unref((uv_handle_t *)&ctx->sigchld);
    *out = ctx;
    return 0;
fail_res:
    free_resources(ctx);
    free(ctx);
    return rc;
fail_fd:
    close(ctx->devnull);
fail:
    free(ctx);
    return rc;
}

/* Keeps the loop alive exactly while some process has not been reported: a task may close its
 * pipes and keep running, and then only the SIGCHLD watcher is left to wait for it. */
static void update_ref(sbx_ctx *ctx)
{
    if (ctx->active)
        uv_ref((uv_handle_t *)&ctx->sigchld);
    else
        uv_unref((uv_handle_t *)&ctx->sigchld);
}

size_t sbx_active(const sbx_ctx *ctx)
{
    return ctx->active;
}

uint64_t sbx_orphans_reaped(const sbx_ctx *ctx)
{
    return ctx->orphans;
}

uint64_t sbx_escaped_killed(const sbx_ctx *ctx)
{
    return ctx->escaped;
}

/* ---- bookkeeping ------------------------------------------------------------------------ */

static void table_add(sbx_ctx *ctx, sbx_proc *p)
{
    sbx_proc **b = &ctx->buckets[(unsigned)p->pid % PID_BUCKETS];
    p->hnext = *b;
    *b = p;
}

/* Removes and returns the running proc whose leader is `pid`, or NULL (an orphan). */
static sbx_proc *table_take(sbx_ctx *ctx, pid_t pid)
{
    for (sbx_proc **b = &ctx->buckets[(unsigned)pid % PID_BUCKETS]; *b; b = &(*b)->hnext) {
        if ((*b)->pid == pid) {
            sbx_proc *p = *b;
            *b = p->hnext;
            return p;
        }
    }
    return NULL;
}

static void list_add(sbx_ctx *ctx, sbx_proc *p)
{
    p->next = ctx->procs;
    if (ctx->procs)
        ctx->procs->prev = p;
    ctx->procs = p;
    ctx->active++;
    update_ref(ctx);
}

static void list_remove(sbx_ctx *ctx, sbx_proc *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        ctx->procs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    ctx->active--;
    update_ref(ctx);
}

/* Signals the attempt's process group; falls back to the leader alone if it left its group. */
static void kill_group(pid_t pid, int sig)
{
    if (kill(-pid, sig) != 0 && errno == ESRCH)
        kill(pid, sig);
}

/* ---- output ----------------------------------------------------------------------------- */

static void emit_line(void *ud, const char *line, size_t len)
{
    stream *s = ud;
    sbx_proc *p = s->proc;
    if (p->cb.on_line && p->state != PROC_DONE)
        p->cb.on_line(p->ud, p, s->which, line, len);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sbx_ctx *ctx = ((sbx_proc *)h->data)->ctx;
    *buf = uv_buf_init(ctx->rbuf, sizeof ctx->rbuf);
}

/* Frees the proc with its last handle. A pipe closed at EOF while the leader runs is not last:
 * the timer is closed only by release(), which also sets PROC_DONE. */
static void on_handle_closed(uv_handle_t *h)
{
    sbx_proc *p = h->data;
    if (--p->closing > 0 || p->state != PROC_DONE)
        return;
    sbx__lines_free(&p->out.lines);
    sbx__lines_free(&p->err.lines);
    sbx__ring_free(&p->trace);
    free(p);
}

/* Emits the stream's unfinished line and closes its pipe (which closes the read end). */
static void end_stream(stream *s)
{
    if (!s->open)
        return;
    sbx__lines_flush(&s->lines, emit_line, s);
    s->open = false;
    s->proc->closing++;
    uv_close((uv_handle_t *)&s->pipe, on_handle_closed);
}

/* Closes every handle of `p`; the last close callback frees it. */
static void release(sbx_proc *p)
{
    p->state = PROC_DONE;
    end_stream(&p->out);
    end_stream(&p->err);
    p->closing++;
    uv_close((uv_handle_t *)&p->timer, on_handle_closed);
}

/* Reports the end of the attempt once: the leader is reaped and both pipes are at EOF (or the
 * wait for them is over, or the program never ran). Then frees it. */
static void finish(sbx_proc *p)
{
    uv_timer_stop(&p->timer);
    end_stream(&p->out); /* still open only after the EOF wait: flushes its last line */
    end_stream(&p->err);
    p->state = PROC_DONE;
    list_remove(p->ctx, p);
    p->cb.on_exit(p->ud, p, &p->result);
    release(p);
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    stream *s = (stream *)h;
    sbx_proc *p = s->proc;
    if (nread > 0) {
        if (s->which == SBX_STDERR)
            sbx__ring_append(&p->trace, buf->base, (size_t)nread);
        sbx__lines_feed(&s->lines, buf->base, (size_t)nread, emit_line, s);
        return;
    }
    if (nread == 0)
        return;
    /* EOF, or a read error, which ends the stream just the same. */
    end_stream(s);
    if (p->out.open || p->err.open)
        return;
    if (p->state == PROC_DRAINING)
        finish(p);
    else if (p->state == PROC_RUNNING)
        /* Both pipes end when the leader's files are closed, just before it becomes a zombie
         * and SIGCHLD is sent: reaping now, if it is one already, saves the loop turn that
         * libuv's signal pipe takes to deliver SIGCHLD, between a task's end and the next
         * spawn. Not a zombie yet: SIGCHLD reaps it as always. */
        reap_exited(p->ctx);
}

/* ---- spawning --------------------------------------------------------------------------- */

/* Wraps a pipe's read end in the stream's handle (libuv makes it non-blocking). */
static int open_stream(sbx_proc *p, stream *s, int which, int fd)
{
    s->proc = p;
    s->which = which;
    uv_pipe_init(p->ctx->loop, &s->pipe, 0);
    s->pipe.data = p;
    s->open = true;
    int rc = uv_pipe_open(&s->pipe, fd);
    if (rc)
        close(fd);
    return rc;
}

/* Two pipes, O_CLOEXEC on every end: the child gets the write ends only through dup2(). */
static int make_pipes(int rd[2], int wr[2])
{
    int o[2], e[2];
    if (pipe2(o, O_CLOEXEC))
        return -errno;
    if (pipe2(e, O_CLOEXEC)) {
        int rc = -errno;
        close(o[0]);
        close(o[1]);
        return rc;
    }
    rd[0] = o[0], wr[0] = o[1];
    rd[1] = e[0], wr[1] = e[1];
    return 0;
}

/* The cache slot for `name` looked up in `path_env`, or -1. */
static int cache_find(const sbx_ctx *ctx, const char *name, const char *path_env)
{
    for (int i = 0; i < PROG_CACHE; i++)
        if (ctx->cache[i].name && !strcmp(ctx->cache[i].name, name) &&
            !strcmp(ctx->cache[i].path_env, path_env))
            return i;
    return -1;
}

static void cache_drop(sbx_ctx *ctx, int i)
{
    free(ctx->cache[i].name);
    free(ctx->cache[i].path_env);
    free(ctx->cache[i].found);
    ctx->cache[i].name = ctx->cache[i].path_env = ctx->cache[i].found = NULL;
}

/* Remembers an absolute result of a PATH search (relative ones depend on the cwd). */
static void cache_put(sbx_ctx *ctx, const char *name, const char *path_env, const char *found)
{
    if (found[0] != '/' || strchr(name, '/'))
        return;
    int i = (int)(ctx->cache_next++ % PROG_CACHE);
    cache_drop(ctx, i);
    ctx->cache[i].name = strdup(name);
    ctx->cache[i].path_env = strdup(path_env);
    ctx->cache[i].found = strdup(found);
    if (!ctx->cache[i].name || !ctx->cache[i].path_env || !ctx->cache[i].found)
        cache_drop(ctx, i);
}

/* Starts the child with the program at `path`: 0 and p->pid, or the child's -errno. */
static int exec_child(sbx_proc *p, const char *path, char *const *argv, char *const *envp,
                      const char *cwd, const int wr[2])
{
    sbx__child c = {.path = path,
                    .argv = argv,
                    .envp = envp,
                    .cwd = cwd,
                    .fd = {p->ctx->devnull, wr[0], wr[1]},
                    .parent = p->ctx->pid,
                    .stack = p->ctx->stack,
                    .stack_size = CHILD_STACK};
    return sbx__spawn_child(&c, &p->pid);
}

/* envp without any inherited SBX_ID_ENV, plus this attempt's; NULL if out of memory. The
 * strings are borrowed, except `mark` which the caller provides. */
static char **mark_env(char *const *envp, char *mark)
{
    size_t n = 0;
    while (envp[n])
        n++;
    char **out = malloc((n + 2) * sizeof *out);
    if (!out)
        return NULL;
    size_t k = 0, plen = strlen(SBX_ID_ENV);
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], SBX_ID_ENV, plen) || envp[i][plen] != '=')
            out[k++] = envp[i];
    out[k++] = mark;
    out[k] = NULL;
    return out;
}

/* Starts the leader. Returns -errno if the agent is short of resources or the spec is over
 * exec()'s limits (-E2BIG); a program that cannot be run is not an error here but sets
 * result.spawn_error, reported later through on_exit. */
static int launch(sbx_proc *p, const sbx_spec *spec, const int wr[2])
{
    char path[PATH_MAX], mark[SBX_ID_ENV_MAX];
    char *const *given = spec->envp ? spec->envp : environ;
    const char *path_env = sbx__env_path(given);
    if (sbx_check_size(spec->argv, given, NULL))
        return -E2BIG;
    p->seq = ++p->ctx->seq;
    snprintf(mark, sizeof mark, "%s=%s-%" PRIu64, SBX_ID_ENV, p->ctx->id, p->seq);
    char **envp = mark_env(given, mark);
    if (!envp)
        return -ENOMEM;
    int slot = strchr(spec->argv[0], '/') ? -1 : cache_find(p->ctx, spec->argv[0], path_env);
    int rc = 0;
    if (slot >= 0)
        snprintf(path, sizeof path, "%s", p->ctx->cache[slot].found);
    else if (!(rc = sbx__find_program(spec->argv[0], given, spec->cwd, path, sizeof path)))
        cache_put(p->ctx, spec->argv[0], path_env, path);
    if (!rc) {
        rc = exec_child(p, path, spec->argv, envp, spec->cwd, wr);
        if ((rc == -ENOENT || rc == -EACCES) && slot >= 0) {
            /* The cached program went away: search PATH again, once. */
            cache_drop(p->ctx, slot);
            rc = sbx__find_program(spec->argv[0], given, spec->cwd, path, sizeof path);
            if (!rc && !(rc = exec_child(p, path, spec->argv, envp, spec->cwd, wr)))
                cache_put(p->ctx, spec->argv[0], path_env, path);
        }
    }
    free(envp);
    if (rc == -E2BIG || rc == -ENOMEM || rc == -EAGAIN || rc == -EMFILE || rc == -ENFILE)
        return rc; /* the agent's limits, not the program's: no on_exit */
    p->result.spawn_error = rc;
    return 0;
}

static void on_failed_report(uv_timer_t *h)
{
    finish(h->data);
}

void sbx_set_line_max(sbx_ctx *ctx, size_t max)
{
    ctx->line_max = max > SBX_LINE_MAX_LIMIT ? SBX_LINE_MAX_LIMIT : max;
}

int sbx_spawn(sbx_ctx *ctx, const sbx_spec *spec, const sbx_callbacks *cb, void *ud, sbx_proc **out)
{
    assert(spec && spec->argv && spec->argv[0] && cb && cb->on_exit);
    /* A leader's PR_SET_PDEATHSIG fires when the thread that spawned it ends. */
    assert(pthread_equal(pthread_self(), ctx->thread));
    sbx_proc *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->wd_slot = -1;
    int rd[2] = {-1, -1}, wr[2] = {-1, -1};
    int rc = make_pipes(rd, wr);
    if (rc) {
        free(p);
        return rc;
    }
    p->ctx = ctx;
    p->cb = *cb;
    p->ud = ud;
    p->out.lines.max = p->err.lines.max = ctx->line_max;
    /* From here on `p` owns handles, so a failure frees it through release(). */
    uv_timer_init(ctx->loop, &p->timer);
    p->timer.data = p;
    if ((rc = open_stream(p, &p->out, SBX_STDOUT, rd[0]))) {
        close(rd[1]);
    } else if (!(rc = open_stream(p, &p->err, SBX_STDERR, rd[1]))) {
        rc = launch(p, spec, wr);
    }
    close(wr[0]);
    close(wr[1]);
    if (rc) {
        release(p);
        return rc;
    }
    list_add(ctx, p);
    if (p->result.spawn_error) {
        /* Never call back from inside sbx_spawn(): the zero timer reports on the next turn. */
        p->state = PROC_FAILED;
        p->result.exit_code = 127;
        uv_timer_start(&p->timer, on_failed_report, 0, 0);
    } else {
        p->state = PROC_RUNNING;
        table_add(ctx, p);
        p->wd_slot = sbx__watchdog_add(&ctx->wd, p->pid);
        uv_read_start((uv_stream_t *)&p->out.pipe, on_alloc, on_read);
        uv_read_start((uv_stream_t *)&p->err.pipe, on_alloc, on_read);
    }
    if (out)
        *out = p;
    return 0;
}

/* ---- escaped descendants ---------------------------------------------------------------- */

/* The running proc whose leader is `pid`, or NULL. */
static sbx_proc *table_find(sbx_ctx *ctx, pid_t pid)
{
    sbx_proc *p = ctx->buckets[(unsigned)pid % PID_BUCKETS];
    while (p && p->pid != pid)
        p = p->hnext;
    return p;
}

/* The leader's start time in /proc ticks, read once; 0 if unknown. */
static unsigned long long leader_start(sbx_proc *p)
{
    sbx__stat st;
    if (!p->start && sbx__read_stat(p->pid, &st) == 0)
        p->start = st.start;
    return p->start;
}

/* True if the orphan `pid` (our child, but no attempt's leader) may belong to an attempt that
 * still runs: its SBX_ID_ENV names one; or, when its environment has no marker of ours (a
 * task may clear it), it is in a running leader's group or session, or started after one did
 * (then it may be that attempt's: it is left until no such attempt runs, or sbx_close()). */
static bool claimed(sbx_ctx *ctx, pid_t pid, const sbx__stat *st)
{
    char v[32];
    if (sbx__environ_find(pid, ctx->marker, v, sizeof v) == 1) {
        uint64_t seq = strtoull(v, NULL, 10);
        for (sbx_proc *p = ctx->procs; p; p = p->next)
            if (p->seq == seq)
                return p->state == PROC_RUNNING;
        return false;
    }
    for (sbx_proc *p = ctx->procs; p; p = p->next) {
        if (p->state != PROC_RUNNING)
            continue;
        unsigned long long ls = leader_start(p);
        if (st->pgrp == p->pid || st->session == p->pid || (ls && st->start >= ls))
            return true;
    }
    return false;
}

typedef struct {
    sbx_ctx *ctx;
    bool all;       /* sbx_close(): every child but the watchdog */
    size_t live;    /* children found alive and killed */
    size_t zombies; /* children found dead, not reaped yet */
} sweep_state;

static void sweep_one(void *ud, pid_t pid)
{
    sweep_state *w = ud;
    sbx_ctx *ctx = w->ctx;
    sbx__stat st;
    if (pid == ctx->wd.pid || table_find(ctx, pid) || sbx__read_stat(pid, &st))
        return;
    if (st.state == 'Z' || st.state == 'X') {
        w->zombies++; /* dead already; reaped by the SIGCHLD handler or kill_leftovers() */
        return;
    }
    if (!w->all && claimed(ctx, pid, &st))
        return;
    /* Our child (alive or a zombie) keeps its pid and group id from reuse: these name it. */
    if (st.pgrp == pid)
        kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    w->live++;
    if (!w->all)
        ctx->escaped++;
}

/* Kills the orphans no running attempt claims (all of them with `all`). Their own children
 * become ours when they die, and are swept when they are reaped in turn. Returns how many
 * orphans it found, alive (now killed) or dead. */
static size_t sweep(sbx_ctx *ctx, bool all)
{
    sweep_state w = {ctx, all, 0, 0};
    sbx__list_children(ctx->pid, ctx->tid, ctx->children_fd, sweep_one, &w);
    return w.live + w.zombies;
}

/* ---- ending ----------------------------------------------------------------------------- */

static void on_output_grace_over(uv_timer_t *h)
{
    finish(h->data); /* something we could not find still holds a pipe: stop waiting for it */
}

/* Records how the leader ended and waits for the pipes' EOF. */
static void leader_exited(sbx_proc *p, int status)
{
    if (WIFSIGNALED(status)) {
        p->result.term_signal = WTERMSIG(status);
        p->result.exit_code = 128 + p->result.term_signal;
    } else {
        p->result.exit_code = WEXITSTATUS(status);
    }
    uv_timer_stop(&p->timer);
    if (!p->out.open && !p->err.open)
        finish(p);
    else
        uv_timer_start(&p->timer, on_output_grace_over, SBX_OUTPUT_GRACE_MS, 0);
}

/* Reaps one exited child, which waitid(WNOWAIT) reported but left a zombie. A leader is
 * returned (state DRAINING, its wait status in *status) for the caller to finish; NULL for
 * any other child. */
static sbx_proc *reap(sbx_ctx *ctx, pid_t pid, int *status)
{
    sbx_proc *p = table_take(ctx, pid);
    /* The contract: no process of an attempt outlives it. Killed before the leader is reaped,
     * because its zombie keeps the pid (= pgid) from being reused, so -pid names only its group. */
    if (p) {
        kill_group(pid, SIGKILL);
        sbx__watchdog_del(&ctx->wd, p->wd_slot);
        p->wd_slot = -1;
    }
    *status = 0;
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
    if (p)
        p->state = PROC_DRAINING;
    else if (pid == ctx->wd.pid)
        ctx->wd.pid = 0; /* it should never die first; the leaders still die with us */
    else
        ctx->orphans++; /* an orphan re-parented to us (subreaper or PID 1): just reaped */
    return p;
}

/* SIGCHLD: reaps every exited child (signals coalesce, so until none is left), then kills what
 * escaped the attempts that ended, or came to us with an orphan that died: one sweep per
 * batch, not per child, so a task that leaves a thousand orphans costs a few sweeps. The
 * leaders reaped are finished last (on a local list: on_exit may spawn and reap anew). */
static void reap_exited(sbx_ctx *ctx)
{
    sbx_proc *ended = NULL;
    bool reaped = false;
    for (;;) {
        siginfo_t si;
        si.si_pid = 0;
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
            if (errno == EINTR)
                continue;
            break; /* ECHILD: no children at all */
        }
        if (si.si_pid == 0)
            break;
        int status;
        sbx_proc *p = reap(ctx, si.si_pid, &status);
        reaped = true;
        if (p) {
            p->wstatus = status;
            p->hnext = ended;
            ended = p;
        }
    }
    if (reaped)
        sweep(ctx, false);
    while (ended) {
        sbx_proc *p = ended;
        ended = p->hnext;
        leader_exited(p, p->wstatus);
    }
}

static void on_sigchld(uv_signal_t *h, int signum)
{
    (void)signum;
    reap_exited(h->data);
}

static void on_grace_over(uv_timer_t *h)
{
    sbx_proc *p = h->data;
    if (p->state == PROC_RUNNING)
        kill_group(p->pid, SIGKILL);
}

/* True once the leader has exited, even if its SIGCHLD is not handled yet. */
static bool leader_gone(const sbx_proc *p)
{
    siginfo_t si;
    si.si_pid = 0;
    return waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid != 0;
}

bool sbx_terminate(sbx_proc *p, uint64_t grace_ms)
{
    /* The leader's exit decides the attempt: a kill that comes after it (even in the same loop
     * turn, before the reaper ran) must not make it look killed. */
    if (p->state != PROC_RUNNING || leader_gone(p))
        return false;
    p->result.killed = true;
    if (grace_ms == 0) {
        uv_timer_stop(&p->timer);
        kill_group(p->pid, SIGKILL);
        return true;
    }
    if (p->term_sent)
        return true;
    p->term_sent = true;
    kill_group(p->pid, SIGTERM);
    kill_group(p->pid, SIGCONT); /* a stopped process would not act on SIGTERM */
    uv_timer_start(&p->timer, on_grace_over, grace_ms, 0);
    return true;
}

const char *sbx_trace(const sbx_proc *p, size_t *len)
{
    /* Logically const: linearising the ring does not change its content. `p` was allocated
     * non-const by sbx_spawn(), so casting the qualifier away is well defined. */
    return sbx__ring_view(&((sbx_proc *)p)->trace, len);
}

uint32_t sbx_pid(const sbx_proc *p)
{
    return (uint32_t)p->pid;
}

/* Kills and forgets a process without reporting it (sbx_close() on an early exit). */
static void abandon(sbx_proc *p)
{
    if (p->state == PROC_RUNNING) {
        table_take(p->ctx, p->pid);
        kill_group(p->pid, SIGKILL);
    }
    list_remove(p->ctx, p);
    release(p);
}

/* sbx_close(): kills every child but the watchdog and reaps them, for CLOSE_WAIT_MS at most. */
static void kill_leftovers(sbx_ctx *ctx)
{
    for (int i = 0; i < CLOSE_WAIT_MS; i++) {
        pid_t w;
        while ((w = waitpid(-1, NULL, WNOHANG)) > 0)
            if (w == ctx->wd.pid)
                ctx->wd.pid = 0;
        if (sweep(ctx, true) == 0)
            return;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

void sbx_close(sbx_ctx *ctx)
{
    /* Normally nothing is left. On an early exit kill what is: no task outlives the agent. */
    while (ctx->procs)
        abandon(ctx->procs);
    uv_signal_stop(&ctx->sigchld);
    kill_leftovers(ctx);
    for (int i = 0; i < PROG_CACHE; i++)
        cache_drop(ctx, i);
    free_resources(ctx);
    uv_close((uv_handle_t *)&ctx->sigchld, free_ctx);
}
