/* sbx_child.c - the child side of a spawn: between clone() and execve() the new process gets a
 * session of its own, dies with the agent (PR_SET_PDEATHSIG), keeps no descriptor but 0, 1, 2,
 * and has the signal state of a fresh process. Also how the program is found in the task's PATH
 * and the limits of what execve() accepts.
 *
 * Why clone(CLONE_VM | CLONE_VFORK) and not posix_spawn(): glibc 2.36 has
 * posix_spawn_file_actions_addclosefrom_np(), which would close the descriptors, but posix_spawn
 * has no way to set PR_SET_PDEATHSIG or to check getppid() in the child. This is what glibc's
 * posix_spawn does inside (a child sharing our memory on its own stack, the parent suspended
 * until exec), so a spawn stays as cheap as before; fork() would copy the page tables of the
 * agent for every task. The child runs only async-signal-safe system calls: it shares the
 * agent's memory, so it never allocates, takes a lock, or runs a signal handler of the agent. */
#include "sandbox/sbx.h"
#include "sandbox/sbx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define RLIMIT_CLOSE_MAX (1 << 20) /* the last resort closes at most this many numbers */

/* Signals an ignored disposition of the agent must not pass on (an ignored signal survives
 * exec): SIGPIPE above all, which the agent ignores. */
static const int reset_to_default[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGPIPE, SIGALRM,
                                       SIGTERM, SIGCHLD, SIGUSR1, SIGUSR2, SIGTSTP,
                                       SIGTTIN, SIGTTOU, SIGXFSZ, SIGXCPU};

/* ---- closing descriptors ------------------------------------------------------------------ */

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Closes every fd >= lowfd but `keep` listed in /proc/self/fd, with raw getdents64 into a
 * stack buffer (readdir() allocates, which the child must not). */
static int close_from_procfs(int lowfd, int keep)
{
    int dfd =
        (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0)
        return -errno;
    char buf[1024] __attribute__((aligned(8)));
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n < 0) {
            int rc = -errno;
            syscall(SYS_close, dfd);
            return rc;
        }
        if (n == 0)
            break;
        for (long off = 0; off < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
            off += d->d_reclen;
            int fd = 0;
            const char *c = d->d_name;
            if (*c < '0' || *c > '9')
                continue; /* "." and ".." */
            while (*c >= '0' && *c <= '9')
                fd = fd * 10 + (*c++ - '0');
            if (fd >= lowfd && fd != dfd && fd != keep)
                syscall(SYS_close, fd);
        }
    }
    syscall(SYS_close, dfd);
    return 0;
}

/* The last resort without /proc: every number up to the soft RLIMIT_NOFILE (capped). */
static int close_from_rlimit(int lowfd, int keep)
{
    struct rlimit rl;
    long max = RLIMIT_CLOSE_MAX;
    if (syscall(SYS_getrlimit, RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)max)
        max = (long)rl.rlim_cur;
    for (long fd = lowfd; fd < max; fd++)
        if (fd != keep)
            syscall(SYS_close, (int)fd);
    return 0;
}

/* close_range() of [lowfd, ~0] without `keep`: 0 or -errno (-ENOSYS before Linux 5.9). */
static int close_from_range(int lowfd, int keep)
{
#ifdef SYS_close_range
    if (keep >= lowfd) {
        if (keep > lowfd && syscall(SYS_close_range, (unsigned)lowfd, (unsigned)keep - 1, 0) != 0)
            return -errno;
        lowfd = keep + 1;
    }
    return syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0) == 0 ? 0 : -errno;
#else
    return -ENOSYS;
#endif
}

int sbx__close_from(int lowfd, int keep, int method)
{
    if (method == SBX__CLOSE_ANY || method == SBX__CLOSE_RANGE) {
        /* ENOSYS before Linux 5.9, EPERM under an old seccomp profile: fall back. */
        int rc = close_from_range(lowfd, keep);
        if (rc == 0 || method == SBX__CLOSE_RANGE)
            return rc;
    }
    if (method == SBX__CLOSE_ANY || method == SBX__CLOSE_PROCFS) {
        int rc = close_from_procfs(lowfd, keep);
        if (rc == 0 || method == SBX__CLOSE_PROCFS)
            return rc;
    }
    return close_from_rlimit(lowfd, keep);
}

/* ---- finding the program ------------------------------------------------------------------ */

/* 0 if `cand` (relative ones resolve in the task's cwd) is an executable regular file. */
static int check_exec(const char *cand, const char *cwd)
{
    char full[PATH_MAX];
    const char *path = cand;
    if (cand[0] != '/' && cwd) {
        int n = snprintf(full, sizeof full, "%s/%s", cwd, cand);
        if (n < 0 || (size_t)n >= sizeof full)
            return -ENAMETOOLONG;
        path = full;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return -ENOENT;
    if (faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) != 0)
        return -EACCES;
    return 0;
}

const char *sbx__env_path(char *const *envp)
{
    for (char *const *e = envp; e && *e; e++)
        if (!strncmp(*e, "PATH=", 5))
            return *e + 5;
    const char *path = getenv("PATH");
    return path ? path : "/usr/local/bin:/usr/bin:/bin";
}

int sbx__find_program(const char *name, char *const *envp, const char *cwd, char *buf, size_t size)
{
    if (strchr(name, '/') || !*name) {
        int n = snprintf(buf, size, "%s", name);
        return !*name ? -ENOENT : (size_t)n >= size ? -ENAMETOOLONG : 0;
    }
    int err = -ENOENT;
    const char *dir = sbx__env_path(envp);
    for (;;) {
        const char *end = strchrnul(dir, ':');
        int dlen = (int)(end - dir);
        /* An empty PATH entry means the current directory, as in execvp(). */
        int n = dlen ? snprintf(buf, size, "%.*s/%s", dlen, dir, name)
                     : snprintf(buf, size, "%s", name);
        if (n >= 0 && (size_t)n < size) {
            int rc = check_exec(buf, cwd);
            if (rc == 0)
                return 0;
            if (rc == -EACCES)
                err = rc;
        }
        if (!*end)
            return err;
        dir = end + 1;
    }
}

/* ---- the child ---------------------------------------------------------------------------- */

static bool in_reset_list(int sig)
{
    for (size_t i = 0; i < sizeof reset_to_default / sizeof reset_to_default[0]; i++)
        if (reset_to_default[i] == sig)
            return true;
    return false;
}

/* Every signal the agent handles goes back to its default before the mask is lifted: a handler
 * of the agent running in this child would act on the agent's memory. */
static void reset_signals(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction old;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &old) != 0)
            continue; /* glibc's internal signals answer EINVAL */
        if (old.sa_handler == SIG_DFL)
            continue;
        if (old.sa_handler == SIG_IGN && !in_reset_list(sig))
            continue; /* other ignored signals are inherited, as posix_spawn() does */
        sigaction(sig, &dfl, NULL);
    }
}

/* Reports why the child cannot run the program (in the memory it shares with the parent, and
 * on the O_CLOEXEC error pipe if there is one, which exec closes: the parent reads EOF on
 * success) and ends it. */
static _Noreturn void child_fail(sbx__child *c, int err)
{
    int e = err ? err : EINVAL;
    c->err = e;
    while (c->errfd >= 0 && write(c->errfd, &e, sizeof e) < 0 && errno == EINTR)
        ;
    _exit(127);
}

static int child_main(void *arg)
{
    sbx__child *c = arg;
    c->ran = 1;
    reset_signals();
    if (setsid() < 0)
        child_fail(c, errno);
    /* Dies with the agent. The signal is sent when the thread that created us ends: sbx_spawn()
     * runs only on the loop thread, which lives as long as the agent. If the agent died before
     * the prctl, nobody would send it: the parent pid tells. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        child_fail(c, errno);
    if (getppid() != c->parent)
        _exit(127);
    if (dup2(c->fd[0], 0) < 0 || dup2(c->fd[1], 1) < 0 || dup2(c->fd[2], 2) < 0)
        child_fail(c, errno);
    /* No descriptor but 0, 1 and 2 reaches the task, whatever flags their owner set (the
     * error pipe is O_CLOEXEC: exec closes it). */
    int rc = sbx__close_from(3, c->errfd, SBX__CLOSE_ANY);
    if (rc)
        child_fail(c, -rc);
    if (c->cwd && chdir(c->cwd) != 0)
        child_fail(c, errno);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(c->path, c->argv, c->envp);
    child_fail(c, errno);
}

/* Reads the child's report: 0 (EOF: it exec'd) or its errno. */
static int read_report(int fd)
{
    int e = 0;
    ssize_t n;
    while ((n = read(fd, &e, sizeof e)) < 0 && errno == EINTR)
        ;
    return n == (ssize_t)sizeof e ? e : 0;
}

/* Whether the clone shares our memory: 0 not known yet, 1 yes, -1 no (valgrind runs a
 * CLONE_VM|CLONE_VFORK clone as a plain fork). Only the loop thread spawns. */
static int shared_vm;

int sbx__spawn_child(sbx__child *c, pid_t *pid)
{
    if (!c->stack || c->stack_size < 16384)
        return -EINVAL;
    /* Until a child was seen to share our memory, its errors also come back on a pipe, so that
     * they arrive under valgrind just the same; after that, the memory is enough (a pipe is 4
     * system calls and 2 files per spawn). */
    int ep[2] = {-1, -1};
    if (shared_vm <= 0 && pipe2(ep, O_CLOEXEC))
        return -errno;
    c->errfd = ep[1];
    c->err = 0;
    c->ran = 0;
    /* All signals blocked across clone(): a handler must not run in the child before
     * reset_signals() (glibc's own internal signals cannot be blocked, and are never sent). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    char *top = (char *)c->stack + c->stack_size;
    /* CLONE_VFORK: we continue once the child has exec'd or exited. */
    pid_t p = clone(child_main, top, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int err = 0;
    if (ep[0] >= 0) {
        close(ep[1]);
        err = p < 0 ? 0 : read_report(ep[0]);
        close(ep[0]);
    } else {
        err = c->err;
    }
    if (p < 0)
        return -clone_errno;
    if (!shared_vm)
        shared_vm = c->ran ? 1 : -1;
    if (err) {
        /* The child never ran the program: reap it here, before the SIGCHLD handler sees it. */
        while (waitpid(p, NULL, 0) < 0 && errno == EINTR)
            ;
        return -err;
    }
    *pid = p;
    return 0;
}

/* ---- limits of execve() ------------------------------------------------------------------- */

size_t sbx_exec_limit(void)
{
    /* Linux (fs/exec.c): the strings and their pointers may take a quarter of the stack limit,
     * at most 3/4 of _STK_LIM (6 MiB), at least ARG_MAX (128 KiB). The limit is read once: every
     * spawn checks its size, and nothing in the agent changes its RLIMIT_STACK (were it changed
     * from outside, execve() itself still refuses with E2BIG, reported as the spawn's error). */
    static size_t limit;
    if (!limit) {
        const size_t cap = 6u << 20, floor = 128u << 10;
        struct rlimit rl;
        size_t l = cap;
        if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            rl.rlim_cur / 4 < cap)
            l = (size_t)(rl.rlim_cur / 4);
        limit = l < floor ? floor : l;
    }
    return limit;
}

/* The bytes execve() counts for a NULL-terminated string array; the longest string's index and
 * size (with its NUL) go to *longest / *longest_size. */
static size_t strings_size(char *const *v, size_t *count, size_t *longest, size_t *longest_size)
{
    size_t total = 0, n = 0;
    for (; v && v[n]; n++) {
        size_t len = strlen(v[n]) + 1;
        total += len;
        if (len > *longest_size) {
            *longest_size = len;
            *longest = n;
        }
    }
    *count = n;
    return total;
}

int sbx_check_size(char *const *argv, char *const *envp, sbx_size_error *err)
{
    sbx_size_error e = {0};
    size_t argc, envc, ai = 0, asz = 0, ei = 0, esz = 0;
    size_t total = strings_size(argv, &argc, &ai, &asz);
    total += strings_size(envp, &envc, &ei, &esz);
    /* What sbx_spawn() adds: DAGY_SANDBOX_ID, and the program's path (the kernel copies it
     * too; PATH_MAX bounds it). */
    total += SBX_ID_ENV_MAX + PATH_MAX;
    total += (argc + envc + 1) * sizeof(char *);
    e.limit = sbx_exec_limit();
    e.size = total;
    if (asz > SBX_ARG_STRLEN_MAX) {
        e.kind = SBX_SIZE_ARG;
        e.index = ai;
        e.size = asz - 1;
        e.limit = SBX_ARG_STRLEN_MAX - 1;
    } else if (esz > SBX_ARG_STRLEN_MAX) {
        e.kind = SBX_SIZE_ENV;
        e.in_env = true;
        e.index = ei;
        e.size = esz - 1;
        e.limit = SBX_ARG_STRLEN_MAX - 1;
    } else if (total > e.limit) {
        e.kind = SBX_SIZE_TOTAL;
        e.in_env = esz >= asz;
        e.index = e.in_env ? ei : ai;
    }
    if (err)
        *err = e;
    return e.kind ? -E2BIG : 0;
}
