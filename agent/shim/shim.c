/* shim.c - dagy-agent's first instructions: block SIGTERM and SIGINT, then exec the agent proper
 * (dagy-agent-core, beside this binary) with the same arguments and environment.
 *
 * Why: the agent links libcurl, OpenSSL, libarchive and libuv (46 shared objects); the dynamic
 * loader spends milliseconds on them before main() (over 10 ms on a loaded machine), and a
 * SIGTERM in that window killed the agent with no record (issue 9 defect 8). This shim is
 * static: it reaches main() in well under a millisecond. A blocked signal stays pending across
 * execve(2) until the agent's handlers exist (agent/run.c unblocks it); as PID 1 in a container
 * a blocked signal is queued, not discarded. Same pid: the agent stays PID 1. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CORE "dagy-agent-core"

int main(int argc, char **argv)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigprocmask(SIG_BLOCK, &stop, NULL);

    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - sizeof CORE - 1);
    if (n <= 0 && argv[0] && strlen(argv[0]) < sizeof path - sizeof CORE - 1) {
        n = (ssize_t)strlen(argv[0]); /* no /proc: the path it was started by, if it has one */
        memcpy(path, argv[0], (size_t)n);
    }
    char *slash = n > 0 ? memrchr(path, '/', (size_t)n) : NULL;
    if (!slash) {
        fprintf(stderr, "dagy-agent: cannot find its own directory (/proc/self/exe, argv[0])\n");
        return 3;
    }
    memcpy(slash + 1, CORE, sizeof CORE);
    (void)argc;
    execv(path, argv);
    fprintf(stderr, "dagy-agent: cannot run %s: %s\n", path, strerror(errno));
    return 3;
}
