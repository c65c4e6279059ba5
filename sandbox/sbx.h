/* sbx.h - task processes: each attempt in its own session/process group, output read line by
 * line, the tail of stderr kept as the trace, group kill with a grace period, and reaping of
 * every child (the agent is a child subreaper, and reaps orphans as PID 1).
 *
 * An attempt's processes never outlive it: when the leader exits, its process group is killed
 * and so is every descendant that left the group (found among the orphans re-parented to the
 * agent, see sbx_escape.c); a task gets no descriptor but 0, 1 and 2; and every leader dies
 * with the agent (PR_SET_PDEATHSIG), its group and marked descendants too (a watchdog process
 * kills them when the agent is gone, even by SIGKILL).
 *
 * The sandbox owns SIGCHLD for the whole process: do not use uv_spawn() alongside it, because its
 * reaper calls waitpid(-1) and would steal libuv's children. */
#ifndef DAGY_SBX_H
#define DAGY_SBX_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <uv.h>

#define SBX_TRACE_MAX      (64 * 1024)   /* tail of stderr kept per attempt */
#define SBX_LINE_MAX       (16 * 1024)   /* longer lines are split into pieces of this size */
#define SBX_LINE_MAX_LIMIT (1024 * 1024) /* the most sbx_set_line_max accepts */
/* After the leader exits, how long its output may stay open (held by a process that escaped
 * the attempt and could not be found) before the pipes are cut and the attempt is reported. */
#define SBX_OUTPUT_GRACE_MS 1000
/* Linux's MAX_ARG_STRLEN: one argument or environment string, with its NUL, is at most this. */
#define SBX_ARG_STRLEN_MAX 131072
/* Every process of an attempt gets SBX_ID_ENV=<agent pid>-<context>-<attempt> in its
 * environment (an inherited one is replaced): it finds escaped descendants of the attempt and,
 * after a kill -9 of the agent, of all of them. At most SBX_ID_ENV_MAX bytes with its NUL. */
#define SBX_ID_ENV     "DAGY_SANDBOX_ID"
#define SBX_ID_ENV_MAX 64

typedef struct sbx_ctx sbx_ctx;
typedef struct sbx_proc sbx_proc;

enum { SBX_STDOUT = 1, SBX_STDERR = 2 };

/* How a process ended. */
typedef struct {
    int exit_code;   /* valid when term_signal == 0 (else 128 + signal, as a shell shows it) */
    int term_signal; /* signal that killed the leader, 0 if it exited */
    int spawn_error; /* -errno if exec/spawn failed (then exit_code is 127), else 0 */
    bool killed;     /* the sandbox signalled the leader (sbx_terminate) while it was alive */
} sbx_result;

typedef struct {
    /* One line of output, without its newline, valid only during the call. Invalid UTF-8 is
     * passed as is; the logger escapes it. Lines over SBX_LINE_MAX (sbx_set_line_max) arrive in
     * pieces. */
    void (*on_line)(void *ud, sbx_proc *p, int stream, const char *line, size_t len);
    /* The leader exited and both pipes reached EOF (or were cut SBX_OUTPUT_GRACE_MS after the
     * leader's exit because something still holds them). When the leader exits, the rest of its
     * process group and its escaped descendants are sent SIGKILL: no process of an attempt
     * outlives it. The result is the leader's: a descendant holding the output does not change
     * it. Never called from inside sbx_spawn(). After this returns the sandbox frees `p`. */
    void (*on_exit)(void *ud, sbx_proc *p, const sbx_result *r);
} sbx_callbacks;

typedef struct {
    char *const *argv; /* argv[0] looked up in PATH of envp (or of the agent if no PATH) */
    char *const *envp; /* full environment, NULL-terminated; NULL = the agent's environ */
    const char *cwd;   /* working directory, NULL = inherit */
} sbx_spec;

/* Sets up the reaper on `loop` (SIGCHLD watcher, PR_SET_CHILD_SUBREAPER) and starts the
 * watchdog process. One per process, created on the thread that runs the loop for as long as
 * processes run (a leader's PR_SET_PDEATHSIG fires when the thread that spawned it ends).
 * Returns 0 or -errno. Free with sbx_close() after every process has exited; the loop then
 * needs one more run for the handles to close. */
int sbx_init(uv_loop_t *loop, sbx_ctx **out);
/* If processes are still running (an early exit), their groups are sent SIGKILL and they are
 * forgotten without callbacks. Every other child of the agent but the watchdog (escaped
 * descendants) is killed too, and reaped (waiting at most 0.5 s), then the watchdog
 * is told to exit. */
void sbx_close(sbx_ctx *ctx);

/* Lines of the processes spawned from now on are emitted whole up to `max` bytes (1 ..
 * SBX_LINE_MAX_LIMIT; 0 = SBX_LINE_MAX), in pieces beyond. The agent raises it when its lines
 * go to CloudWatch Logs directly, where an event may hold 256 KiB (docs/agent.md). */
void sbx_set_line_max(sbx_ctx *ctx, size_t max);

/* Starts a process in a new session (pgid = pid), stdin /dev/null, stdout/stderr piped, no
 * descriptor of the agent but those (all others are closed in the child, whatever their
 * flags), signal mask and dispositions reset, PR_SET_PDEATHSIG(SIGKILL), SBX_ID_ENV added to
 * its environment. Only on the loop's thread. Returns 0 and *out, or -errno (then no callback
 * is called): -E2BIG when argv and envp are over exec()'s limits (sbx_check_size()), which no
 * retry can change. A program that cannot be run (not found: -ENOENT, not executable, bad cwd,
 * exec failure) is reported through on_exit with spawn_error set and exit_code 127, on a later
 * loop turn. */
int sbx_spawn(sbx_ctx *ctx, const sbx_spec *spec, const sbx_callbacks *cb, void *ud,
              sbx_proc **out);

/* Sends SIGTERM to the process group, then SIGKILL to it after grace_ms if the leader has not
 * exited. Idempotent; a second call with grace_ms 0 escalates at once. Returns true if the
 * leader was still running: false once it has exited, even if its exit is not handled yet
 * (a timeout and a natural exit in the same loop turn: the exit wins, nothing is sent). */
bool sbx_terminate(sbx_proc *p, uint64_t grace_ms);

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
/* Number of escaped descendants the sandbox killed (they had left their attempt's group). */
uint64_t sbx_escaped_killed(const sbx_ctx *ctx);

/* What exec() refuses (E2BIG), as sbx_check_size() finds it. */
typedef enum {
    SBX_SIZE_OK = 0,
    SBX_SIZE_ARG,   /* argv[index] is over SBX_ARG_STRLEN_MAX - 1 bytes */
    SBX_SIZE_ENV,   /* envp[index] is over SBX_ARG_STRLEN_MAX - 1 bytes */
    SBX_SIZE_TOTAL, /* all strings and pointers are over the limit; index = the largest */
} sbx_size_kind;

typedef struct {
    sbx_size_kind kind;
    bool in_env; /* index names an envp entry, else an argv one */
    size_t index;
    size_t size;  /* the string's length (ARG, ENV) or the total bytes (TOTAL) */
    size_t limit; /* what it may be at most */
} sbx_size_error;

/* Checks argv and envp against exec()'s limits, counting what sbx_spawn() adds (SBX_ID_ENV and
 * the program's path). Returns 0, or -E2BIG with *err (if not NULL) saying which. */
int sbx_check_size(char *const *argv, char *const *envp, sbx_size_error *err);
/* The bytes exec() accepts for all argument and environment strings with their pointers:
 * a quarter of RLIMIT_STACK, between 128 KiB and 6 MiB. */
size_t sbx_exec_limit(void);

#endif
