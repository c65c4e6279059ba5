/* sbx_escape.c - finding the processes of an attempt that left its process group, and the
 * watchdog that kills an attempt's processes when the agent dies.
 *
 * Why /proc and not a cgroup: a cgroup per attempt would hold every descendant whatever it does,
 * but creating one needs a writable, delegated cgroup tree, which neither an ECS Fargate
 * container nor an ordinary user session gives. What works unprivileged everywhere: the agent is
 * a child subreaper (PR_SET_CHILD_SUBREAPER, or PID 1 in a container), so every descendant whose
 * parent dies becomes the agent's child. Whatever escaped an attempt that ended is therefore
 * among the agent's children, listed by /proc/self/task/TID/children (or a scan of /proc), and
 * is told apart from other attempts' processes by the SBX_ID_ENV marker in its environment.
 *
 * Why a watchdog process: PR_SET_PDEATHSIG kills a leader when the agent dies, but not the rest
 * of its group (the signal is not inherited across fork). Only a process that outlives the agent
 * can kill them: a small fork of the agent that reads a socket and acts when it ends. */
#include "sandbox/sbx.h"
#include "sandbox/sbx_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SBX__WD_BYE     3   /* the one message on the socket: the agent stops cleanly */
#define WD_SCAN_PASSES  10  /* /proc scans after the agent died, while one still finds some */
#define WD_STOP_WAIT_MS 200 /* sbx_close(): the watchdog exits at once; then SIGKILL */

/* ---- /proc readers (no allocation: the watchdog uses them after fork) ---------------------- */

/* Reads at most size-1 bytes of a small /proc file, NUL-terminated. */
static int read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;
    ssize_t n;
    while ((n = read(fd, buf, size - 1)) < 0 && errno == EINTR)
        ;
    int rc = n < 0 ? -errno : 0;
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return rc;
}

int sbx__read_stat(pid_t pid, sbx__stat *st)
{
    char path[48], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int rc = read_small(path, buf, sizeof buf);
    if (rc)
        return rc;
    /* "pid (comm) state ppid pgrp session tty tpgid flags 10x... starttime": comm may hold
     * spaces and parentheses, so fields are counted from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -EINVAL;
    p += 2;
    st->state = *p;
    unsigned long long v[20] = {0};
    int n = 0;
    for (char *tok = strchr(p, ' '); tok && n < 20; tok = strchr(tok + 1, ' '))
        v[n++] = strtoull(tok + 1, NULL, 10);
    if (n < 19)
        return -EINVAL;
    st->ppid = (pid_t)v[0];
    st->pgrp = (pid_t)v[1];
    st->session = (pid_t)v[2];
    st->start = v[18];
    return 0;
}

int sbx__environ_find(pid_t pid, const char *prefix, char *out, size_t out_len)
{
    char path[48], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    /* One pass over the NUL-separated entries: match `prefix` at each entry's start, then copy
     * the rest of that entry. */
    enum { MATCH, COPY, SKIP } mode = MATCH;
    size_t m = 0, o = 0;
    int found = 0;
    ssize_t n;
    while (!found && (n = read(fd, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (ssize_t i = 0; i < n && !found; i++) {
            char b = buf[i];
            if (mode == COPY) {
                if (b == '\0')
                    found = 1;
                else if (o + 1 < out_len)
                    out[o++] = b;
            } else if (b == '\0') {
                mode = MATCH;
                m = 0;
            } else if (mode == MATCH) {
                if (prefix[m] != b)
                    mode = SKIP;
                else if (prefix[++m] == '\0')
                    mode = COPY;
            }
        }
    }
    if (mode == COPY)
        found = 1; /* the last entry may lack its NUL */
    if (out_len)
        out[found ? o : 0] = '\0';
    close(fd);
    return found;
}

/* Calls fn for every pid in a /proc/.../children file; -errno if it cannot be read. */
/* The file is kept open in *fd (opened if -1) and read from offset 0 each time: it is a
 * seq_file, generated afresh by every read from its start, and opening it anew (a path through
 * /proc) cost more than reading it, once per ended attempt. */
static int children_file(pid_t tid, int *fd, void (*fn)(void *, pid_t), void *ud)
{
    char buf[4096];
    if (*fd < 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)tid);
        if ((*fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            return -errno;
    }
    long cur = -1; /* a pid may be split across two reads */
    ssize_t n;
    off_t off = 0;
    while ((n = pread(*fd, buf, sizeof buf, off)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        off += n;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] >= '0' && buf[i] <= '9') {
                cur = (cur < 0 ? 0 : cur * 10) + (buf[i] - '0');
            } else if (cur >= 0) {
                fn(ud, (pid_t)cur);
                cur = -1;
            }
        }
    }
    if (cur >= 0)
        fn(ud, (pid_t)cur);
    return 0;
}

/* Calls fn(ud, pid) for every numeric entry of /proc (every process we can see). */
static int each_process(void (*fn)(void *, pid_t), void *ud)
{
    int dfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    char buf[4096] __attribute__((aligned(8)));
    long n;
    while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            struct {
                uint64_t ino;
                int64_t off;
                unsigned short reclen;
                unsigned char type;
                char name[];
            } *d = (void *)(buf + off);
            off += d->reclen;
            long pid = 0;
            const char *c = d->name;
            for (; *c >= '0' && *c <= '9'; c++)
                pid = pid * 10 + (*c - '0');
            if (*c == '\0' && pid > 0)
                fn(ud, (pid_t)pid);
        }
    }
    close(dfd);
    return 0;
}

typedef struct {
    void (*fn)(void *, pid_t);
    void *ud;
    pid_t self;
} ppid_filter;

static void if_our_child(void *ud, pid_t pid)
{
    ppid_filter *f = ud;
    sbx__stat st;
    if (sbx__read_stat(pid, &st) == 0 && st.ppid == f->self)
        f->fn(f->ud, pid);
}

int sbx__list_children(pid_t self, pid_t loop_tid, int fds[2], void (*fn)(void *ud, pid_t pid),
                       void *ud)
{
    int rc = children_file(self, &fds[0], fn, ud);
    if (rc == 0) {
        if (loop_tid != self)
            children_file(loop_tid, &fds[1], fn, ud);
        return 0;
    }
    /* No CONFIG_PROC_CHILDREN: every process whose parent is us. */
    ppid_filter f = {fn, ud, self};
    return each_process(if_our_child, &f);
}

/* ---- the watchdog ------------------------------------------------------------------------- */

typedef struct {
    const char *marker;
    pid_t self;
    int killed;
} wd_scan;

static void wd_kill_marked(void *ud, pid_t pid)
{
    wd_scan *s = ud;
    char v[8];
    if (pid != s->self && sbx__environ_find(pid, s->marker, v, sizeof v) == 1 &&
        kill(pid, SIGKILL) == 0)
        s->killed++;
}

/* The watchdog's whole life, in the forked child: only async-signal-safe calls. */
static _Noreturn void wd_main(int rfd, const char *marker, const int32_t *groups)
{
    static const int ignore[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGTERM, SIGPIPE, SIGALRM,
                                 SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof ignore / sizeof ignore[0]; i++)
        signal(ignore[i], SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid(); /* out of the agent's group: a terminal's ^C or a group kill does not reach it */
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0) {
        dup2(nul, 0);
        dup2(nul, 1); /* must not hold the agent's stdout open after the agent is gone */
        dup2(nul, 2);
    }
    if (rfd != 3)
        dup2(rfd, 3);
    sbx__close_from(4, -1, SBX__CLOSE_ANY);
    /* Blocks until the agent says BYE or is gone: nothing else comes on the socket. */
    int32_t msg[2];
    bool bye = false;
    for (;;) {
        ssize_t n = read(3, msg, sizeof msg);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (n == (ssize_t)sizeof msg && msg[0] == SBX__WD_BYE)
            bye = true;
    }
    if (bye)
        _exit(0);
    /* The agent is gone without saying goodbye: its attempts' groups (every store it made is
     * visible: it has exited), then every process that carries its marker, scanning again
     * while a pass still finds some (they may fork). */
    for (size_t i = 0; i < SBX__WD_SLOTS; i++) {
        int32_t g = __atomic_load_n(&groups[i], __ATOMIC_ACQUIRE);
        if (g > 1)
            kill(-g, SIGKILL);
    }
    wd_scan s = {marker, getpid(), 0};
    for (int pass = 0; pass < WD_SCAN_PASSES; pass++) {
        s.killed = 0;
        each_process(wd_kill_marked, &s);
        if (s.killed == 0)
            break;
    }
    _exit(0);
}

int sbx__watchdog_start(const char *marker, sbx__wd *wd)
{
    wd->pid = 0;
    wd->fd = -1;
    wd->next_free = 0;
    wd->groups = mmap(NULL, SBX__WD_SLOTS * sizeof *wd->groups, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (wd->groups == MAP_FAILED) {
        wd->groups = NULL;
        return -errno;
    }
    int p[2];
    /* A socket, not a pipe: send(MSG_NOSIGNAL) to a dead watchdog must not raise SIGPIPE in a
     * program that does not ignore it, and SEQPACKET keeps the 8-byte BYE whole. */
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p)) {
        int rc = -errno;
        sbx__watchdog_stop(wd);
        return rc;
    }
    /* Blocked across fork(): no handler of the agent may run in the watchdog before it resets
     * its dispositions (libuv's would write to the agent's signal pipe). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid_t child = fork();
    if (child != 0)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (child < 0) {
        int rc = -errno;
        close(p[0]);
        close(p[1]);
        sbx__watchdog_stop(wd);
        return rc;
    }
    if (child == 0) {
        close(p[1]);
        wd_main(p[0], marker, wd->groups);
    }
    close(p[0]);
    wd->pid = child;
    wd->fd = p[1];
    return 0;
}

int sbx__watchdog_add(sbx__wd *wd, pid_t pgid)
{
    if (!wd->groups || pgid <= 1)
        return -1;
    /* A slot is freed when its attempt ends, so at most the running attempts hold one: the
     * search from the last free slot found ends at once in practice. */
    for (size_t k = 0; k < SBX__WD_SLOTS; k++) {
        size_t i = (wd->next_free + k) % SBX__WD_SLOTS;
        if (wd->groups[i] == 0) {
            __atomic_store_n(&wd->groups[i], (int32_t)pgid, __ATOMIC_RELEASE);
            wd->next_free = (i + 1) % SBX__WD_SLOTS;
            return (int)i;
        }
    }
    return -1;
}

void sbx__watchdog_del(sbx__wd *wd, int slot)
{
    if (wd->groups && slot >= 0 && slot < SBX__WD_SLOTS)
        __atomic_store_n(&wd->groups[slot], 0, __ATOMIC_RELEASE);
}

/* CLOCK_MONOTONIC in milliseconds. */
static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Waits up to ms milliseconds for the child pid to exit and reaps it: true once it is reaped
 * (or is not our child). With a pidfd (Linux 5.3+) the wait ends when the child exits; without
 * one it looks every millisecond (which cost every run about a millisecond). */
static bool reap_within(pid_t pid, int ms)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0), err = 0;
    int64_t end = mono_ms() + ms, now;
    pid_t w;
    while ((w = waitpid(pid, NULL, WNOHANG)) == 0 || (w < 0 && errno == EINTR)) {
        if ((now = mono_ms()) >= end)
            break;
        struct pollfd pw = {.fd = pfd, .events = POLLIN};
        if (pfd < 0 || poll(&pw, 1, (int)(end - now)) < 0)
            nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    err = w < 0 ? errno : 0;
    if (pfd >= 0)
        close(pfd);
    return w == pid || (w < 0 && err != EINTR);
}

void sbx__watchdog_stop(sbx__wd *wd)
{
    if (wd->fd >= 0) {
        int32_t bye[2] = {SBX__WD_BYE, 0};
        (void)!send(wd->fd, bye, sizeof bye, MSG_NOSIGNAL | MSG_DONTWAIT);
        close(wd->fd);
        wd->fd = -1;
    }
    /* It exits as soon as it reads BYE; never wait on it for more than WD_STOP_WAIT_MS. */
    if (wd->pid > 0 && !reap_within(wd->pid, WD_STOP_WAIT_MS)) {
        kill(wd->pid, SIGKILL);
        waitpid(wd->pid, NULL, 0);
    }
    wd->pid = 0;
    if (wd->groups)
        munmap(wd->groups, SBX__WD_SLOTS * sizeof *wd->groups);
    wd->groups = NULL;
}
