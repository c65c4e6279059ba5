/* sbx.h - task processes: each attempt in its own session/process group, output read line by
 * line, the tail of stderr kept as the trace, group kill with a grace period, and reaping of
 * every child (the agent is a child subreaper, and reaps orphans as PID 1).
 *
 * The sandbox owns SIGCHLD for the whole process: do not use uv_spawn() alongside it, because its
 * reaper calls waitpid(-1) and would steal libuv's children. */
#ifndef DAGY_SBX_H
#define DAGY_SBX_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <uv.h>

#define SBX_TRACE_MAX (64 * 1024) /* tail of stderr kept per attempt */
#define SBX_LINE_MAX  (16 * 1024) /* longer lines are split into pieces of this size */

typedef struct sbx_ctx sbx_ctx;
typedef struct sbx_proc sbx_proc;

enum { SBX_STDOUT = 1, SBX_STDERR = 2 };

/* How a process ended. */
typedef struct {
    int exit_code;   /* valid when term_signal == 0 (else 128 + signal, as a shell shows it) */
    int term_signal; /* signal that killed the leader, 0 if it exited */
    int spawn_error; /* -errno if exec/spawn failed (then exit_code is 127), else 0 */
    bool killed;     /* the sandbox sent a kill (sbx_terminate) before it ended */
} sbx_result;

typedef struct {
    /* One line of output, without its newline, valid only during the call. Invalid UTF-8 is
     * passed as is; the logger escapes it. Lines over SBX_LINE_MAX arrive in pieces. */
    void (*on_line)(void *ud, sbx_proc *p, int stream, const char *line, size_t len);
    /* The leader exited and both pipes reached EOF (or were closed after a short wait because an
     * escaped descendant still holds them). When the leader exits, the rest of its process group
     * is sent SIGKILL: no process of an attempt outlives it. Never called from inside
     * sbx_spawn(). After this returns the sandbox frees `p`. */
    void (*on_exit)(void *ud, sbx_proc *p, const sbx_result *r);
} sbx_callbacks;

typedef struct {
    char *const *argv; /* argv[0] looked up in PATH of envp (or of the agent if no PATH) */
    char *const *envp; /* full environment, NULL-terminated; NULL = the agent's environ */
    const char *cwd;   /* working directory, NULL = inherit */
} sbx_spec;

/* Sets up the reaper on `loop` (SIGCHLD watcher, PR_SET_CHILD_SUBREAPER). One per process.
 * Returns 0 or -errno. Free with sbx_close() after every process has exited; the loop then
 * needs one more run for the handles to close. */
int sbx_init(uv_loop_t *loop, sbx_ctx **out);
/* If processes are still running (an early exit), their groups are sent SIGKILL and they are
 * forgotten without callbacks. */
void sbx_close(sbx_ctx *ctx);

/* Starts a process in a new session (pgid = pid), stdin /dev/null, stdout/stderr piped, no
 * inherited descriptors (every fd of the agent must be O_CLOEXEC), signal mask and common
 * dispositions reset. Returns 0 and *out, or -errno (then no callback is called). A program that
 * cannot be run (not found: -ENOENT, not executable, bad cwd, exec failure) is reported through
 * on_exit with spawn_error set and exit_code 127, on a later loop turn. */
int sbx_spawn(sbx_ctx *ctx, const sbx_spec *spec, const sbx_callbacks *cb, void *ud,
              sbx_proc **out);

/* Sends SIGTERM to the process group, then SIGKILL to it after grace_ms if the leader has not
 * exited. Idempotent; a second call with grace_ms 0 escalates at once. */
void sbx_terminate(sbx_proc *p, uint64_t grace_ms);

/* The last SBX_TRACE_MAX bytes of stderr so far (not NUL-terminated). Valid until on_exit
 * returns. */
const char *sbx_trace(const sbx_proc *p, size_t *len);

/* The leader's pid (= its process group and session id); 0 if the program could not be run. */
uint32_t sbx_pid(const sbx_proc *p);
/* Number of processes started and not yet reported through on_exit. While it is non-zero the
 * context keeps the loop alive. */
size_t sbx_active(const sbx_ctx *ctx);
/* Number of children reaped that were not attempt leaders (orphans re-parented to the agent). */
uint64_t sbx_orphans_reaped(const sbx_ctx *ctx);

#endif
