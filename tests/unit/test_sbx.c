/* test_sbx.c - the sandbox against real processes: exit status, output lines, cwd/env/PATH,
 * exec failures, group kill with grace, no orphan outliving an attempt, orphan reaping, the
 * stderr trace, and no descriptor leak. Every test runs its own loop to completion and requires
 * uv_loop_close() to succeed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/sbx.h"
#include "sandbox/sbx_int.h"

#define MAX_LINES 50000

/* What one process produced. */
typedef struct {
    char **lines[3]; /* by stream */
    size_t *lens[3];
    size_t n[3];
    sbx_result res;
    char *trace;
    size_t tlen;
    int exits;
    uint64_t exit_ms;
    const char *pidfile; /* set by a test: the pid in it is checked when on_exit runs */
    bool alive_at_exit;
    uint64_t terminate_ms; /* > 0: sbx_terminate(p, this) on the first "ready" stdout line */
    bool escalate;         /* then also sbx_terminate(p, 0) */
} capture;

typedef struct {
    uv_loop_t loop;
    sbx_ctx *ctx;
    char dir[64]; /* scratch directory */
} env;

static bool in_spawn; /* on_exit must never run inside sbx_spawn() */

static void on_line(void *ud, sbx_proc *p, int stream, const char *line, size_t len)
{
    capture *c = ud;
    assert_true(stream == SBX_STDOUT || stream == SBX_STDERR);
    assert_true(len <= SBX_LINE_MAX);
    assert_true(c->n[stream] < MAX_LINES);
    if (!c->lines[stream]) {
        c->lines[stream] = calloc(MAX_LINES, sizeof(char *));
        c->lens[stream] = calloc(MAX_LINES, sizeof(size_t));
    }
    char *copy = malloc(len + 1);
    memcpy(copy, line, len);
    copy[len] = 0;
    c->lines[stream][c->n[stream]] = copy;
    c->lens[stream][c->n[stream]++] = len;
    if (c->terminate_ms && stream == SBX_STDOUT && !strcmp(copy, "ready")) {
        sbx_terminate(p, c->terminate_ms);
        if (c->escalate)
            sbx_terminate(p, 0);
    }
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void on_exit_cb(void *ud, sbx_proc *p, const sbx_result *r)
{
    capture *c = ud;
    assert_false(in_spawn);
    c->res = *r;
    c->exits++;
    c->exit_ms = now_ms();
    const char *t = sbx_trace(p, &c->tlen);
    c->trace = malloc(c->tlen + 1);
    memcpy(c->trace, t, c->tlen);
    int pid;
    FILE *f = c->pidfile ? fopen(c->pidfile, "r") : NULL;
    if (f && fscanf(f, "%d", &pid) == 1)
        c->alive_at_exit = kill(pid, 0) == 0;
    if (f)
        fclose(f);
}

static const sbx_callbacks callbacks = {.on_line = on_line, .on_exit = on_exit_cb};

static void capture_free(capture *c)
{
    for (int s = 1; s <= 2; s++) {
        for (size_t i = 0; i < c->n[s]; i++)
            free(c->lines[s][i]);
        free(c->lines[s]);
        free(c->lens[s]);
    }
    free(c->trace);
    memset(c, 0, sizeof *c);
}

static int env_setup(void **state)
{
    env *e = calloc(1, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    assert_int_equal(sbx_init(&e->loop, &e->ctx), 0);
    strcpy(e->dir, "/tmp/test_sbx.XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    *state = e;
    return 0;
}

static int env_teardown(void **state)
{
    env *e = *state;
    assert_int_equal(sbx_active(e->ctx), 0);
    sbx_close(e->ctx);
    assert_int_equal(uv_run(&e->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    assert_int_equal(system(cmd), 0);
    free(e);
    return 0;
}

/* Starts argv with the given environment (NULL: the test's) and cwd. */
static sbx_proc *start(env *e, capture *c, char *const *argv, char *const *envp, const char *cwd)
{
    sbx_spec spec = {.argv = argv, .envp = envp, .cwd = cwd};
    sbx_proc *p = NULL;
    in_spawn = true;
    assert_int_equal(sbx_spawn(e->ctx, &spec, &callbacks, c, &p), 0);
    in_spawn = false;
    assert_non_null(p);
    return p;
}

/* Runs `sh -c script` to completion. */
static void run_sh(env *e, capture *c, const char *script)
{
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    start(e, c, argv, NULL, e->dir);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c->exits, 1);
}

static void tick(uv_timer_t *h)
{
}

/* Runs the loop until pred(arg) holds; fails after timeout_ms. */
static void run_until(env *e, bool (*pred)(void *), void *arg, uint64_t timeout_ms)
{
    uv_timer_t t;
    uv_timer_init(&e->loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    uint64_t deadline = now_ms() + timeout_ms;
    while (!pred(arg) && now_ms() < deadline)
        uv_run(&e->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    assert_true(pred(arg));
}

/* True once the pid is gone entirely: neither running nor a zombie. */
static bool pid_gone(void *arg)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", (int)(intptr_t)arg);
    return access(path, F_OK) != 0;
}

/* Reads whitespace-separated pids from a file; returns how many. */
static int read_pids(const char *path, pid_t *pids, int max)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0, v;
    while (n < max && fscanf(f, "%d", &v) == 1)
        pids[n++] = v;
    fclose(f);
    return n;
}

static void assert_line(const capture *c, int stream, size_t i, const char *want)
{
    assert_true(i < c->n[stream]);
    assert_string_equal(c->lines[stream][i], want);
}

static void test_exit_codes(void **state)
{
    env *e = *state;
    capture c = {0};
    char *argv[] = {"true", NULL};
    start(e, &c, argv, NULL, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.exits, 1);
    assert_int_equal(c.res.exit_code, 0);
    assert_int_equal(c.res.term_signal, 0);
    assert_int_equal(c.res.spawn_error, 0);
    assert_false(c.res.killed);
    capture_free(&c);
    run_sh(e, &c, "exit 3");
    assert_int_equal(c.res.exit_code, 3);
    assert_int_equal(c.res.term_signal, 0);
    capture_free(&c);
}

static void test_lines_in_order_per_stream(void **state)
{
    env *e = *state;
    capture c = {0};
    run_sh(e, &c, "echo o1; echo e1 >&2; echo o2; echo e2 >&2; echo; printf 'crlf\\r\\n'");
    assert_int_equal(c.n[SBX_STDOUT], 4);
    assert_int_equal(c.n[SBX_STDERR], 2);
    assert_line(&c, SBX_STDOUT, 0, "o1");
    assert_line(&c, SBX_STDOUT, 1, "o2");
    assert_line(&c, SBX_STDOUT, 2, "");
    assert_line(&c, SBX_STDOUT, 3, "crlf");
    assert_line(&c, SBX_STDERR, 0, "e1");
    assert_line(&c, SBX_STDERR, 1, "e2");
    assert_int_equal(c.tlen, 6);
    assert_memory_equal(c.trace, "e1\ne2\n", 6);
    capture_free(&c);
}

static void test_last_line_without_newline(void **state)
{
    env *e = *state;
    capture c = {0};
    run_sh(e, &c, "printf 'a\\nb'; printf 'tail' >&2");
    assert_int_equal(c.n[SBX_STDOUT], 2);
    assert_line(&c, SBX_STDOUT, 0, "a");
    assert_line(&c, SBX_STDOUT, 1, "b");
    assert_int_equal(c.n[SBX_STDERR], 1);
    assert_line(&c, SBX_STDERR, 0, "tail");
    capture_free(&c);
}

static void test_long_line_split(void **state)
{
    env *e = *state;
    capture c = {0};
    run_sh(e, &c, "head -c 102400 /dev/zero | tr '\\0' a; echo; echo next");
    /* 100 KiB = 6 pieces of 16 KiB + 4 KiB, then the next line intact. */
    assert_int_equal(c.n[SBX_STDOUT], 8);
    size_t total = 0;
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(c.lens[SBX_STDOUT][i], i < 6 ? SBX_LINE_MAX : 4096);
        for (size_t j = 0; j < c.lens[SBX_STDOUT][i]; j++)
            assert_int_equal(c.lines[SBX_STDOUT][i][j], 'a');
        total += c.lens[SBX_STDOUT][i];
    }
    assert_int_equal(total, 102400);
    assert_line(&c, SBX_STDOUT, 7, "next");
    capture_free(&c);
}

static void test_invalid_utf8_passed_through(void **state)
{
    env *e = *state;
    capture c = {0};
    run_sh(e, &c, "printf '\\377\\376ok\\303\\n'");
    assert_int_equal(c.n[SBX_STDOUT], 1);
    assert_int_equal(c.lens[SBX_STDOUT][0], 5);
    assert_memory_equal(c.lines[SBX_STDOUT][0], "\xff\xfeok\xc3", 5);
    capture_free(&c);
}

static void test_cwd_and_env(void **state)
{
    env *e = *state;
    capture c = {0};
    char *argv[] = {"sh", "-c", "pwd; echo \"$FOO\"; echo \"${HOME-unset}\"", NULL};
    char *envp[] = {"FOO=bar baz", "PATH=/usr/bin:/bin", NULL};
    start(e, &c, argv, envp, e->dir);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    char real[4096];
    assert_non_null(realpath(e->dir, real));
    assert_int_equal(c.res.exit_code, 0);
    assert_line(&c, SBX_STDOUT, 0, real);
    assert_line(&c, SBX_STDOUT, 1, "bar baz");
    assert_line(&c, SBX_STDOUT, 2, "unset"); /* only the given environment */
    capture_free(&c);
}

/* memcheck runs posix_spawn's CLONE_VFORK child as a plain fork, so glibc cannot hand an exec
 * failure back to the parent: spawn errors are invisible under valgrind (the valgrind label
 * sets DAGY_UNDER_VALGRIND), not a defect of the sandbox. */
static bool under_valgrind(void)
{
    return getenv("DAGY_UNDER_VALGRIND") != NULL;
}

static void test_path_from_envp(void **state)
{
    if (under_valgrind())
        skip();
    env *e = *state;
    char bin[128], tool[256], pathvar[320];
    snprintf(bin, sizeof bin, "%s/bin", e->dir);
    assert_int_equal(mkdir(bin, 0755), 0);
    snprintf(tool, sizeof tool, "%s/dagy-test-tool", bin);
    FILE *f = fopen(tool, "w");
    fputs("#!/bin/sh\necho \"tool-ran $1\"\n", f);
    fclose(f);
    assert_int_equal(chmod(tool, 0755), 0);
    snprintf(pathvar, sizeof pathvar, "PATH=/nonexistent::%s:/usr/bin:/bin", bin);
    capture c = {0};
    char *argv[] = {"dagy-test-tool", "x", NULL};
    char *envp[] = {pathvar, NULL};
    start(e, &c, argv, envp, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.res.spawn_error, 0);
    assert_int_equal(c.res.exit_code, 0);
    assert_line(&c, SBX_STDOUT, 0, "tool-ran x");
    capture_free(&c);
    /* Not found with the agent's PATH, which lacks that directory. */
    start(e, &c, argv, NULL, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.res.spawn_error, -ENOENT);
    capture_free(&c);
    /* Found but not executable. */
    assert_int_equal(chmod(tool, 0644), 0);
    if (geteuid() != 0 || access(tool, X_OK) != 0) {
        start(e, &c, argv, envp, NULL);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        assert_int_equal(c.res.spawn_error, -EACCES);
        assert_int_equal(c.res.exit_code, 127);
        capture_free(&c);
    }
}

static void test_spawn_errors_reported_async(void **state)
{
    if (under_valgrind())
        skip();
    env *e = *state;
    capture c = {0};
    char *missing[] = {"dagy-no-such-command-xyz", NULL};
    start(e, &c, missing, NULL, NULL);
    assert_int_equal(c.exits, 0);
    assert_int_equal(sbx_active(e->ctx), 1);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.exits, 1);
    assert_int_equal(c.res.spawn_error, -ENOENT);
    assert_int_equal(c.res.exit_code, 127);
    assert_int_equal(c.n[SBX_STDOUT] + c.n[SBX_STDERR], 0);
    capture_free(&c);
    char *abs[] = {"/nonexistent/prog", NULL};
    start(e, &c, abs, NULL, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.res.spawn_error, -ENOENT);
    capture_free(&c);
    char *ok[] = {"true", NULL};
    start(e, &c, ok, NULL, "/nonexistent-cwd");
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.res.spawn_error, -ENOENT);
    assert_int_equal(c.res.exit_code, 127);
    capture_free(&c);
}

/* The child's exec errors come back on a pipe until a child has been seen to share the agent's
 * memory, and in that memory from then on: the first spawn of the process (this test runs first)
 * and every later one report a failure in the child (chdir) alike. */
static void test_child_errors_reported_on_first_and_later_spawns(void **state)
{
    env *e = *state;
    char *ok[] = {"true", NULL};
    for (int i = 0; i < 3; i++) {
        capture c = {0};
        start(e, &c, ok, NULL, i == 1 ? NULL : "/nonexistent-cwd");
        uv_run(&e->loop, UV_RUN_DEFAULT);
        assert_int_equal(c.exits, 1);
        assert_int_equal(c.res.spawn_error, i == 1 ? 0 : -ENOENT);
        assert_int_equal(c.res.exit_code, i == 1 ? 0 : 127);
        capture_free(&c);
    }
}

static void test_killed_by_signal(void **state)
{
    env *e = *state;
    capture c = {0};
    run_sh(e, &c, "kill -9 $$");
    assert_int_equal(c.res.term_signal, SIGKILL);
    assert_false(c.res.killed);
    capture_free(&c);
}

/* Every pid in the file must disappear (dead and reaped). */
static void assert_pids_gone(env *e, const char *file, int want)
{
    pid_t pids[8];
    int n = read_pids(file, pids, 8);
    assert_int_equal(n, want);
    for (int i = 0; i < n; i++)
        run_until(e, pid_gone, (void *)(intptr_t)pids[i], 3000);
}

static void test_terminate_kills_tree(void **state)
{
    env *e = *state;
    capture c = {.terminate_ms = 200};
    /* Leader and children all ignore SIGTERM: only the SIGKILL after the grace ends them. */
    run_sh(e, &c,
           "trap '' TERM; sleep 100 & echo $! > pids; sleep 100 & echo $! >> pids;"
           " echo $$ >> pids; echo ready; wait");
    assert_true(c.res.killed);
    assert_int_equal(c.res.term_signal, SIGKILL);
    char file[128];
    snprintf(file, sizeof file, "%s/pids", e->dir);
    assert_pids_gone(e, file, 3);
    capture_free(&c);
}

static void test_terminate_graceful_exit(void **state)
{
    env *e = *state;
    capture c = {.terminate_ms = 10000};
    uint64_t t0 = now_ms();
    run_sh(e, &c, "trap 'echo got-term; exit 7' TERM; sleep 100 & echo ready; wait");
    assert_true(now_ms() - t0 < 5000); /* did not wait for the grace */
    assert_true(c.res.killed);
    assert_int_equal(c.res.term_signal, 0);
    assert_int_equal(c.res.exit_code, 7);
    assert_line(&c, SBX_STDOUT, 1, "got-term");
    capture_free(&c);
}

static void test_terminate_zero_grace_escalates(void **state)
{
    env *e = *state;
    capture c = {.terminate_ms = 60000, .escalate = true};
    uint64_t t0 = now_ms();
    run_sh(e, &c, "trap '' TERM; echo ready; sleep 100; echo survived");
    assert_true(now_ms() - t0 < 5000);
    assert_true(c.res.killed);
    assert_int_equal(c.res.term_signal, SIGKILL);
    assert_int_equal(c.n[SBX_STDOUT], 1);
    capture_free(&c);
}

static void test_background_child_killed_when_leader_exits(void **state)
{
    env *e = *state;
    capture c = {0};
    uint64_t t0 = now_ms();
    run_sh(e, &c, "sleep 100 & echo $! > pids; echo done");
    assert_true(now_ms() - t0 < 1500); /* the pipes closed with the group, no 2 s wait */
    assert_int_equal(c.res.exit_code, 0);
    assert_false(c.res.killed);
    char file[128];
    snprintf(file, sizeof file, "%s/pids", e->dir);
    assert_pids_gone(e, file, 1);
    capture_free(&c);
}

/* True once `pid` in the file named by arg exists and is gone. */
static bool pidfile_gone(void *arg)
{
    pid_t pid = 0;
    FILE *f = fopen(arg, "r");
    if (!f)
        return false;
    int n = fscanf(f, "%d", &pid);
    fclose(f);
    return n == 1 && pid > 0 && pid_gone((void *)(intptr_t)pid);
}

/* Issue 8 defect 5, exactly: `setsid sleep 4 & sleep 0.2; echo done`. The daemon left the
 * group and holds stdout; the attempt still ends when its leader does, with the leader's exit
 * (not killed, no wait for the output), and the daemon is killed and reaped with it. */
static void test_setsid_daemon_holding_stdout_ends_with_leader(void **state)
{
    env *e = *state;
    char file[128];
    snprintf(file, sizeof file, "%s/pids", e->dir);
    capture c = {0};
    char script[1024];
    snprintf(script, sizeof script,
             "setsid sh -c 'echo $$ > %s.tmp; mv %s.tmp %s; exec sleep 4' & sleep 0.2; echo done",
             file, file, file);
    uint64_t killed_before = sbx_escaped_killed(e->ctx);
    uint64_t t0 = now_ms();
    run_sh(e, &c, script);
    uint64_t took = now_ms() - t0;
    print_message("leader exit to report: %llu ms\n", (unsigned long long)took);
    assert_true(took < 1000); /* not the output grace, not the daemon's 4 s */
    assert_int_equal(c.res.exit_code, 0);
    assert_int_equal(c.res.term_signal, 0);
    assert_false(c.res.killed);
    assert_line(&c, SBX_STDOUT, 0, "done");
    assert_true(sbx_escaped_killed(e->ctx) > killed_before);
    run_until(e, pidfile_gone, file, 3000);
    capture_free(&c);
}

/* A double fork (the daemon(3) way) with output to /dev/null: the grandchild is re-parented
 * to the agent before the attempt ends, and is killed when it ends. */
static void test_double_forked_daemon_killed_when_attempt_ends(void **state)
{
    env *e = *state;
    char file[128];
    snprintf(file, sizeof file, "%s/pids", e->dir);
    capture c = {0};
    char script[1024];
    snprintf(script, sizeof script,
             "(setsid sh -c 'echo $$ > %s.tmp; mv %s.tmp %s; exec sleep 100' </dev/null"
             " >/dev/null 2>&1 &); while [ ! -s %s ]; do sleep 0.01; done; sleep 0.1",
             file, file, file, file);
    run_sh(e, &c, script);
    assert_int_equal(c.res.exit_code, 0);
    run_until(e, pidfile_gone, file, 3000);
    capture_free(&c);
}

/* A task that leaves 300 daemons behind (each its own session, all holding stdout): every one
 * is killed and reaped when the leader exits, and the attempt ends at once (one sweep per
 * SIGCHLD batch, not per child). */
static void test_hundreds_of_escaped_daemons_all_killed(void **state)
{
    env *e = *state;
    capture c = {0};
    uint64_t before = sbx_escaped_killed(e->ctx), t0 = now_ms();
    run_sh(e, &c,
           "i=0; while [ $i -lt 300 ]; do setsid sleep 100 & echo $! >> pids; i=$((i+1));"
           " done; echo started");
    uint64_t took = now_ms() - t0;
    print_message("300 daemons: attempt reported %llu ms after start, %llu killed\n",
                  (unsigned long long)took,
                  (unsigned long long)(sbx_escaped_killed(e->ctx) - before));
    assert_int_equal(c.res.exit_code, 0);
    assert_line(&c, SBX_STDOUT, 0, "started");
    char file[128];
    snprintf(file, sizeof file, "%s/pids", e->dir);
    static pid_t pids[300];
    FILE *f = fopen(file, "r");
    assert_non_null(f);
    int n = 0;
    while (n < 300 && fscanf(f, "%d", &pids[n]) == 1)
        n++;
    fclose(f);
    assert_int_equal(n, 300);
    for (int i = 0; i < n; i++)
        run_until(e, pid_gone, (void *)(intptr_t)pids[i], 5000);
    /* Those that had not reached setsid() yet died with the group; the others were found. */
    assert_true(sbx_escaped_killed(e->ctx) > before);
    capture_free(&c);
}

typedef struct {
    capture *c;
    int want;
} exits_wait;

static bool exits_reached(void *arg)
{
    exits_wait *w = arg;
    return w->c->exits >= w->want;
}

/* A holder of the output that cannot be told apart from another running attempt's processes
 * (it cleared its environment, so it has no marker, and started after that attempt did) is
 * left alone while that attempt runs: the output is cut after SBX_OUTPUT_GRACE_MS, the result
 * is still the leader's, and the holder is killed when the other attempt ends. */
static void test_unattributable_holder_cut_after_grace(void **state)
{
    env *e = *state;
    char file[128];
    snprintf(file, sizeof file, "%s/pids", e->dir);
    capture other = {0}, c = {0};
    char *sleeper[] = {"sleep", "30", NULL};
    sbx_proc *op = start(e, &other, sleeper, NULL, NULL);
    char script[1024];
    snprintf(script, sizeof script,
             "env -i /usr/bin/setsid sh -c 'echo $$ > %s.tmp; mv %s.tmp %s; exec sleep 30' &"
             " while [ ! -s %s ]; do sleep 0.01; done; echo done",
             file, file, file, file);
    char *argv[] = {"sh", "-c", script, NULL};
    uint64_t t0 = now_ms();
    start(e, &c, argv, NULL, e->dir);
    exits_wait w = {&c, 1};
    run_until(e, exits_reached, &w, 5000);
    uint64_t took = now_ms() - t0;
    assert_true(took >= SBX_OUTPUT_GRACE_MS - 50 && took < SBX_OUTPUT_GRACE_MS + 2000);
    assert_int_equal(c.res.exit_code, 0);
    assert_false(c.res.killed);
    assert_line(&c, SBX_STDOUT, 0, "done");
    assert_false(pidfile_gone(file)); /* still there: it might be the sleeper's */
    assert_true(sbx_terminate(op, 0));
    run_until(e, pidfile_gone, file, 3000);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(other.exits, 1);
    capture_free(&c);
    capture_free(&other);
}

static void test_trace_keeps_last_64k(void **state)
{
    env *e = *state;
    capture c = {0};
    run_sh(e, &c, "seq 1 40000 >&2; exit 1");
    assert_int_equal(c.res.exit_code, 1);
    assert_int_equal(c.n[SBX_STDERR], 40000);
    assert_line(&c, SBX_STDERR, 39999, "40000");
    size_t cap = 300 * 1024, n = 0;
    char *all = malloc(cap);
    for (int i = 1; i <= 40000; i++)
        n += (size_t)snprintf(all + n, cap - n, "%d\n", i);
    assert_true(n > 200 * 1024);
    assert_int_equal(c.tlen, SBX_TRACE_MAX);
    assert_memory_equal(c.trace, all + n - SBX_TRACE_MAX, SBX_TRACE_MAX);
    free(all);
    capture_free(&c);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

typedef struct {
    env *e;
    int left;
    int failures;
} chain;

static void chain_next(chain *ch);

static void chain_exit(void *ud, sbx_proc *p, const sbx_result *r)
{
    chain *ch = ud;
    if (r->exit_code != 0 || r->spawn_error || r->term_signal)
        ch->failures++;
    chain_next(ch);
}

/* Spawns the next `true` from the previous one's on_exit, as the agent does. */
static void chain_next(chain *ch)
{
    if (ch->left == 0)
        return;
    ch->left--;
    static char *argv[] = {"true", NULL};
    static const sbx_callbacks cb = {.on_line = NULL, .on_exit = chain_exit};
    sbx_spec spec = {.argv = argv, .envp = NULL, .cwd = NULL};
    assert_int_equal(sbx_spawn(ch->e->ctx, &spec, &cb, ch, NULL), 0);
}

static void test_sequential_spawns_no_fd_leak(void **state)
{
    env *e = *state;
    /* Warm up: the loop opens a reserve descriptor with its first stream. */
    chain ch = {.e = e, .left = 1};
    chain_next(&ch);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    int before = count_fds();
    ch.left = 200;
    uint64_t t0 = uv_hrtime();
    chain_next(&ch);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uint64_t us = (uv_hrtime() - t0) / 1000;
    assert_int_equal(ch.left, 0);
    assert_int_equal(ch.failures, 0);
    assert_int_equal(count_fds(), before);
    print_message("200 sequential spawns of true: %llu us each\n", (unsigned long long)us / 200);
    assert_true(us < 20 * 1000 * 1000);
}

static void test_fifty_concurrent(void **state)
{
    env *e = *state;
    enum { N = 50 };
    capture *c = calloc(N, sizeof *c);
    uint32_t pids[N];
    char *argv[] = {"sh", "-c", "sleep 0.2; echo $$; echo err$$ >&2", NULL};
    for (int i = 0; i < N; i++)
        pids[i] = sbx_pid(start(e, &c[i], argv, NULL, NULL));
    assert_int_equal(sbx_active(e->ctx), N);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(sbx_active(e->ctx), 0);
    for (int i = 0; i < N; i++) {
        char want[32];
        assert_int_equal(c[i].exits, 1);
        assert_int_equal(c[i].res.exit_code, 0);
        assert_int_equal(c[i].n[SBX_STDOUT], 1);
        snprintf(want, sizeof want, "%u", pids[i]);
        assert_line(&c[i], SBX_STDOUT, 0, want);
        snprintf(want, sizeof want, "err%u", pids[i]);
        assert_line(&c[i], SBX_STDERR, 0, want);
        capture_free(&c[i]);
    }
    free(c);
}

/* A task that closes its output and keeps running must still keep the loop alive. */
static void test_running_without_pipes_keeps_loop(void **state)
{
    env *e = *state;
    capture c = {0};
    run_sh(e, &c, "exec >&- 2>&-; sleep 0.3; exit 4");
    assert_int_equal(c.res.exit_code, 4);
    capture_free(&c);
}

/* sbx_close() on an early exit kills what still runs and reports nothing. */
static void test_close_kills_running(void **state)
{
    uv_loop_t loop;
    sbx_ctx *ctx;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(sbx_init(&loop, &ctx), 0);
    capture c = {0};
    char *argv[] = {"sleep", "100", NULL};
    sbx_spec spec = {.argv = argv};
    sbx_proc *p;
    assert_int_equal(sbx_spawn(ctx, &spec, &callbacks, &c, &p), 0);
    pid_t pid = (pid_t)sbx_pid(p);
    uv_run(&loop, UV_RUN_NOWAIT);
    sbx_close(ctx);
    assert_true(pid_gone((void *)(intptr_t)pid)); /* killed and reaped by sbx_close() */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(c.exits, 0);
}

/* The fd number of an `ls -l /proc/self/fd` line ("lrwx------ 1 u g 64 date N -> target"), or -1
 * for the "total" line; *target gets what it points to. */
static int ls_fd(const char *line, const char **target)
{
    const char *arrow = strstr(line, " -> ");
    if (!arrow)
        return -1;
    const char *p = arrow;
    while (p > line && p[-1] != ' ')
        p--;
    *target = arrow + 4;
    return atoi(p);
}

/* No descriptor of the agent reaches a task but 0, 1 and 2, even one opened without O_CLOEXEC
 * (as a library may do) and a socket: the child closes everything else before exec. */
static void test_only_std_fds_reach_the_task(void **state)
{
    env *e = *state;
    int plain = open("/dev/null", O_RDONLY); /* deliberately without O_CLOEXEC */
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    int high = fcntl(plain, F_DUPFD, 200);
    assert_true(plain > 2 && sock > 2 && high >= 200);
    capture c = {0};
    char *argv[] = {"ls", "-l", "/proc/self/fd", NULL};
    start(e, &c, argv, NULL, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.res.exit_code, 0);
    bool seen[4] = {false};
    for (size_t i = 0; i < c.n[SBX_STDOUT]; i++) {
        const char *target = NULL;
        int fd = ls_fd(c.lines[SBX_STDOUT][i], &target);
        if (fd < 0)
            continue;
        print_message("task fd %d -> %s\n", fd, target);
        assert_null(strstr(target, "socket:"));
        /* 0-2, and the directory ls itself opened to read /proc/self/fd. */
        assert_true(fd >= 0 && fd <= 3);
        if (fd == 3)
            assert_non_null(strstr(target, "/fd"));
        seen[fd] = true;
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    close(plain);
    close(sock);
    close(high);
    capture_free(&c);
}

/* Waits (without running the loop) until `pid` is a zombie: it exited, nobody reaped it yet. */
static void wait_zombie(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 500; i++) {
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *rp = strrchr(buf, ')');
        if (rp && rp[1] == ' ' && rp[2] == 'Z')
            return;
        usleep(2000);
    }
    fail_msg("pid %d never exited", (int)pid);
}

/* A timeout that fires in the same loop turn as the leader's natural exit (exited, SIGCHLD not
 * yet handled) must not turn the exit into a kill: no signal is sent and `killed` stays false. */
static void test_terminate_after_natural_exit_is_not_a_kill(void **state)
{
    env *e = *state;
    capture c = {0};
    char *argv[] = {"sh", "-c", "echo bye; exit 0", NULL};
    sbx_proc *p = start(e, &c, argv, NULL, NULL);
    wait_zombie((pid_t)sbx_pid(p));
    assert_false(sbx_terminate(p, 1000));
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(c.exits, 1);
    assert_false(c.res.killed);
    assert_int_equal(c.res.term_signal, 0);
    assert_int_equal(c.res.exit_code, 0);
    assert_line(&c, SBX_STDOUT, 0, "bye");
    capture_free(&c);
}

/* Every way of closing the descriptors (close_range, /proc/self/fd, up to RLIMIT_NOFILE) keeps
 * 0, 1, 2 and the one asked for, and closes everything else, non-CLOEXEC fds and sockets
 * included. In a forked child, since it closes the test's own descriptors. */
static void test_close_from_every_method(void **state)
{
    for (int m = SBX__CLOSE_ANY; m <= SBX__CLOSE_RLIMIT; m++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int a = open("/dev/null", O_RDONLY);
            int b = socket(AF_UNIX, SOCK_STREAM, 0);
            int c = fcntl(a, F_DUPFD, 300);
            if (a < 3 || b < 3 || c < 300)
                _exit(10);
            int keep = fcntl(a, F_DUPFD, 100);
            if (sbx__close_from(3, keep, m) != 0)
                _exit(11);
            for (int fd = 3; fd < 4096; fd++)
                if ((fcntl(fd, F_GETFD) != -1) != (fd == keep))
                    _exit(12);
            for (int fd = 0; fd < 3; fd++)
                if (fcntl(fd, F_GETFD) == -1)
                    _exit(13);
            _exit(0);
        }
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        if (WEXITSTATUS(st) != 0)
            fail_msg("method %d: child exit %d", m, WEXITSTATUS(st));
    }
}

/* Dead for this test: gone, or a zombie (reaped here if it became our child). */
static bool pid_dead(pid_t pid)
{
    waitpid(pid, NULL, WNOHANG);
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *rp = strrchr(buf, ')');
    return !rp || rp[2] == 'Z' || rp[2] == 'X';
}

/* The body of a forked "agent": a sandbox running one task until it is killed. */
static _Noreturn void agent_with_task(const char *script, const char *dir)
{
    uv_loop_t loop;
    sbx_ctx *ctx;
    if (uv_loop_init(&loop) || sbx_init(&loop, &ctx))
        _exit(20);
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    sbx_spec spec = {.argv = argv, .cwd = dir};
    capture c = {0};
    if (sbx_spawn(ctx, &spec, &callbacks, &c, NULL))
        _exit(21);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(22);
}

/* Issue 9 defect 5: kill -9 of the agent. Within a second the leader (PR_SET_PDEATHSIG), a
 * child in its group, one in its group that dropped its environment (only the group kill, from
 * the table the agent shares with the watchdog, can find it) and a descendant that left the
 * group with setsid (the watchdog's marker scan) are all dead, and none writes the file it was
 * about to. */
static void test_tasks_die_with_the_agent_kill_9(void **state)
{
    env *e = *state;
    char script[1024], pids[128];
    snprintf(pids, sizeof pids, "%s/pids", e->dir);
    snprintf(script, sizeof script,
             "(sleep 1.5; echo x > m_group) & echo $! >> pids.tmp;"
             " setsid sh -c 'sleep 1.5; echo x > m_escaped' & echo $! >> pids.tmp;"
             " env -i /bin/sh -c 'sleep 1.5; echo x > m_scrubbed' & echo $! >> pids.tmp;"
             " echo $$ >> pids.tmp; mv pids.tmp pids; sleep 1.5; echo x > m_leader");
    pid_t agent = fork();
    assert_true(agent >= 0);
    if (agent == 0)
        agent_with_task(script, e->dir);
    for (int i = 0; i < 500 && access(pids, F_OK) != 0; i++)
        usleep(10000);
    pid_t p[4];
    assert_int_equal(read_pids(pids, p, 4), 4);
    assert_int_equal(kill(agent, SIGKILL), 0);
    assert_int_equal(waitpid(agent, NULL, 0), agent);
    uint64_t t0 = now_ms();
    for (int i = 0; i < 4; i++)
        while (!pid_dead(p[i]) && now_ms() - t0 < 1000)
            usleep(5000);
    print_message("all gone %llu ms after the kill\n", (unsigned long long)(now_ms() - t0));
    for (int i = 0; i < 4; i++)
        if (!pid_dead(p[i]))
            fail_msg("process %d (#%d in pids) outlived the agent", (int)p[i], i + 1);
    usleep(2000 * 1000); /* past the moment they would have written */
    static const char *const files[] = {"m_group", "m_escaped", "m_scrubbed", "m_leader"};
    for (int i = 0; i < 4; i++) {
        char path[160];
        snprintf(path, sizeof path, "%s/%s", e->dir, files[i]);
        if (access(path, F_OK) == 0)
            fail_msg("%s was written after the agent died", files[i]);
    }
}

#define T(name) cmocka_unit_test_setup_teardown(name, env_setup, env_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_child_errors_reported_on_first_and_later_spawns), /* first: the first spawn */
        T(test_exit_codes),
        T(test_lines_in_order_per_stream),
        T(test_last_line_without_newline),
        T(test_long_line_split),
        T(test_invalid_utf8_passed_through),
        T(test_cwd_and_env),
        T(test_path_from_envp),
        T(test_spawn_errors_reported_async),
        T(test_killed_by_signal),
        T(test_terminate_kills_tree),
        T(test_terminate_graceful_exit),
        T(test_terminate_zero_grace_escalates),
        T(test_background_child_killed_when_leader_exits),
        T(test_setsid_daemon_holding_stdout_ends_with_leader),
        T(test_double_forked_daemon_killed_when_attempt_ends),
        T(test_unattributable_holder_cut_after_grace),
        T(test_hundreds_of_escaped_daemons_all_killed),
        T(test_trace_keeps_last_64k),
        T(test_only_std_fds_reach_the_task),
        T(test_terminate_after_natural_exit_is_not_a_kill),
        T(test_close_from_every_method),
        T(test_tasks_die_with_the_agent_kill_9),
        T(test_sequential_spawns_no_fd_leak),
        T(test_fifty_concurrent),
        T(test_running_without_pipes_keeps_loop),
        cmocka_unit_test(test_close_kills_running),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
