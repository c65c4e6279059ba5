/* sbx_int.h - internals shared by the sandbox's files: the line splitter and the stderr trace
 * ring (plain data and functions, tested directly), the child side of a spawn (sbx_child.c),
 * and finding escaped descendants and the watchdog (sbx_escape.c). */
#ifndef DAGY_SBX_INT_H
#define DAGY_SBX_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Receives one line (or a piece of a long one); `line` is valid only during the call. */
typedef void (*sbx__emit_fn)(void *ud, const char *line, size_t len);

/* The unfinished last line of a stream. Zero-initialised is empty; the buffer is allocated on
 * the first partial line and grows to SBX_LINE_MAX + 1 at most (most output never needs it). */
typedef struct {
    char *buf;
    size_t len, cap;
    size_t max; /* longest line emitted whole; 0 means SBX_LINE_MAX */
} sbx__linebuf;

/* Splits `data` at '\n' (a trailing '\r' is dropped) and emits every complete line; the rest is
 * kept in `lb` for the next call. Lines longer than lb->max (SBX_LINE_MAX) are emitted in pieces of
 * that many bytes. Complete lines are emitted straight from `data` without copying. */
void sbx__lines_feed(sbx__linebuf *lb, const char *data, size_t n, sbx__emit_fn emit, void *ud);
/* At end of stream: emits the unfinished last line, if any. */
void sbx__lines_flush(sbx__linebuf *lb, sbx__emit_fn emit, void *ud);
void sbx__lines_free(sbx__linebuf *lb);

/* The last `max` bytes written. Grows by doubling while it holds less than `max` (a task that
 * writes 100 bytes of stderr costs about 1 KiB), then wraps. Zero-initialised is empty. */
typedef struct {
    char *buf;
    size_t len;  /* valid bytes, <= cap */
    size_t cap;  /* allocated bytes */
    size_t head; /* where the next byte goes; when len == cap also the oldest byte */
    size_t max;  /* 0 means SBX_TRACE_MAX */
} sbx__ring;

void sbx__ring_append(sbx__ring *r, const char *data, size_t n);
/* The content, oldest byte first, as one contiguous block (rotates the buffer in place). */
const char *sbx__ring_view(sbx__ring *r, size_t *len);
void sbx__ring_free(sbx__ring *r);

/* ---- sbx_escape.c: escaped descendants and the watchdog ---- */

/* What /proc/PID/stat says of a process. */
typedef struct {
    char state; /* 'R', 'S', 'Z', ... */
    pid_t ppid, pgrp, session;
    unsigned long long start; /* clock ticks after boot */
} sbx__stat;

/* Reads /proc/PID/stat; 0 or -errno (-ESRCH once the process is gone). */
int sbx__read_stat(pid_t pid, sbx__stat *st);
/* Finds the entry of /proc/PID/environ that starts with `prefix` and copies the rest of it
 * (at most out_len - 1 bytes, NUL-terminated) to `out`. Returns 1 if found, 0 if not, -errno if
 * unreadable. Allocates nothing (the watchdog uses it after fork()). */
int sbx__environ_find(pid_t pid, const char *prefix, char *out, size_t out_len);
/* Calls fn(ud, pid) for every child of the calling process: /proc/self/task/TID/children of
 * the main thread and of `loop_tid` (orphans go to the main thread, our own children belong
 * to the thread that created them), or, without CONFIG_PROC_CHILDREN, a scan of /proc for
 * processes whose parent we are. Returns 0 or -errno. */
/* `self` is getpid(); fds[0] and fds[1] (-1 at first) keep the two files open between calls,
 * closed by the caller when done: each call reads them again from their start. */
int sbx__list_children(pid_t self, pid_t loop_tid, int fds[2], void (*fn)(void *ud, pid_t pid),
                       void *ud);

/* The watchdog. Which process groups it must kill is not sent to it task by task: the agent
 * writes them into a table in memory shared with the watchdog (MAP_SHARED, made before the
 * fork), which the watchdog reads only once the agent is gone. A socket tells it that (EOF) or
 * that the agent stopped cleanly (BYE): a DAG of 2000 short tasks woke it 4000 times before,
 * about 6 % of the agent's CPU (bench/dag_bench.sh), and a full socket dropped registrations. */
typedef struct {
    pid_t pid;        /* the watchdog's; 0 when there is none */
    int fd;           /* the agent's end of the socket (O_CLOEXEC); -1 when none */
    int32_t *groups;  /* SBX__WD_SLOTS slots, shared: a process group id, or 0 for free */
    size_t next_free; /* agent side: where the search for a free slot starts */
} sbx__wd;

#define SBX__WD_SLOTS 16384 /* live groups remembered; more are not tracked (never seen) */

/* Forks the watchdog: when its socket ends without BYE (the agent died, even by SIGKILL) it
 * sends SIGKILL to every process group in the table and to every process whose environment
 * has `marker` (SBX_ID_ENV=ID-, the agent's prefix), then exits. 0 or -errno. */
int sbx__watchdog_start(const char *marker, sbx__wd *wd);
/* Records process group pgid in the table (no system call). Returns its slot, or -1 when the
 * table is full (the group is then found by the marker scan only). */
int sbx__watchdog_add(sbx__wd *wd, pid_t pgid);
/* Frees a slot sbx__watchdog_add() returned (a negative slot is ignored). */
void sbx__watchdog_del(sbx__wd *wd, int slot);
/* Sends BYE, closes the socket, reaps the watchdog (SIGKILL after 0.2 s), unmaps the table. */
void sbx__watchdog_stop(sbx__wd *wd);

/* ---- sbx_child.c: the child between clone() and execve() ---- */

/* One spawn. Filled by the caller except `errfd`, `err` and `ran`. Lives on the caller's stack,
 * which the child shares until it execs. */
typedef struct {
    const char *path; /* what to execve() */
    char *const *argv, *const *envp;
    const char *cwd; /* NULL: inherit */
    int fd[3];       /* dup2()ed onto 0, 1, 2 */
    void *stack;     /* the child's stack (>= 16 KiB), not used by anything else */
    size_t stack_size;
    pid_t parent; /* getpid() of the agent, for the child's PDEATHSIG race check */
    int errfd;    /* the child reports its errno on this pipe, if not -1 (sbx__spawn_child) */
    int err;      /* and here, in the memory it shares with us (0: it exec'd) */
    int ran;      /* set by the child first thing: whether it shares our memory */
} sbx__child;

/* Starts the child (a new session, PR_SET_PDEATHSIG(SIGKILL), only fds 0-2, default signal
 * dispositions for what the agent handles, empty mask) and returns when it has exec'd: 0 and
 * *pid, or -errno of why it could not (the child is then already reaped). Call only from the
 * loop thread. */
int sbx__spawn_child(sbx__child *c, pid_t *pid);

/* The PATH a task's program is looked up in: the task's own, else the agent's, else a default. */
const char *sbx__env_path(char *const *envp);
/* Finds `name` like execvp() does, but in the PATH of the task's environment (execvp() would use
 * the agent's); relative candidates resolve in `cwd`. Returns 0 and the path to exec in buf, or
 * -ENOENT, -EACCES or -ENAMETOOLONG. */
int sbx__find_program(const char *name, char *const *envp, const char *cwd, char *buf, size_t size);

enum { SBX__CLOSE_ANY = 0, SBX__CLOSE_RANGE, SBX__CLOSE_PROCFS, SBX__CLOSE_RLIMIT };
/* Closes every descriptor >= lowfd except `keep` (-1: none): close_range(), else by listing
 * /proc/self/fd, else every number below RLIMIT_NOFILE (capped at 2^20); `method` forces one
 * way (for tests). Only raw system calls: safe in a vfork-like child. Returns 0 or -errno. */
int sbx__close_from(int lowfd, int keep, int method);

#endif
