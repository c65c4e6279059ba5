/* results.c - the files of task attempts: where DAGY_TASK_OUTPUT and DAGY_TASK_INPUTS live, how a
 * task's result is read and validated, and how a task's inputs file is built from its upstream
 * tasks' results.
 *
 * Layout (all 0700/0600, one tree per agent process, so that a task left over from a dead agent
 * with the same run id can never reach the files of a restarted one):
 *
 *   RUN_DIR/exec/INSTANCE/out/TASK.ATTEMPT.json   DAGY_TASK_OUTPUT of one attempt (the task's)
 *   RUN_DIR/exec/INSTANCE/in/TASK.ATTEMPT.json    DAGY_TASK_INPUTS of one attempt (the agent's)
 *   RUN_DIR/exec/INSTANCE/results/TASK.json       a SUCCEEDED task's result, as validated
 *
 * INSTANCE is a fresh UUID per agent process; TASK is proto_name_encode(name), which never starts
 * with '.', so no task file can be "." / ".." or a temporary of proto_write_file_atomic (".~"),
 * and two tasks never share a file; the agent keeps no file of its own in these directories.
 * Per-attempt names mean a late writer from an earlier attempt cannot touch the current one's.
 * The inputs file of an ended attempt is recycled for a later one (inputs_file_recycle), so at
 * most about max_parallel inputs files exist at a time. */
#include "agent/log.h"
#include "agent/run.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/names.h"
#include "proto/util.h"

/* Deepest nesting a result may have: below cJSON's limit (1000) and Python's default recursion
 * limit, so every downstream reader can load what the agent accepted. */
#define RESULT_MAX_DEPTH 512

static const char *const dir_names[] = {"out", "in", "results"};

int agent__results_init(run_state *r, char *err)
{
    char id[40];
    agent_uuid(id);
    size_t n = strlen(r->run_dir) + strlen(id) + 16;
    r->exec_dir = malloc(n);
    if (!r->exec_dir) {
        snprintf(err, AGENT_ERR_MAX, "out of memory");
        return -ENOMEM;
    }
    snprintf(r->exec_dir, n, "%s/exec/%s", r->run_dir, id);
    for (size_t d = 0; d < sizeof dir_names / sizeof *dir_names; d++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", r->exec_dir, dir_names[d]);
        int rc = proto_mkdirs(path, 0700);
        if (rc) {
            snprintf(err, AGENT_ERR_MAX, "cannot create %.900s: %s", path, strerror(-rc));
            return rc;
        }
    }
    /* Kept open for the run: an inputs file's rename and open, and the probe of an attempt's
     * output, then walk one name instead of the eight or so components of the whole path (on
     * tmpfs a rename took 6.7 us by path, 4.2 us relative to its directory). Without them (out
     * of descriptors) the paths are used, with the same result. */
    for (size_t d = 0; d < 3; d++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", r->exec_dir, dir_names[d]);
        if ((r->exec_fd[d] = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
            while (d > 0)
                close(r->exec_fd[--d]);
            return 0;
        }
    }
    r->exec_fds = true;
    return 0;
}

void agent__results_close(run_state *r)
{
    for (size_t d = 0; r->exec_fds && d < 3; d++)
        close(r->exec_fd[d]);
    r->exec_fds = false;
}

/* Where to operate on `path`, a task file of `dir`: its directory's descriptor and its last
 * component, or AT_FDCWD and the whole path. */
static int file_at(const run_state *r, agent_dir dir, const char *path, const char **name)
{
    const char *slash = strrchr(path, '/');
    if (!r->exec_fds || !slash) {
        *name = path;
        return AT_FDCWD;
    }
    *name = slash + 1;
    return r->exec_fd[dir];
}

char *agent__task_file(const run_state *r, agent_dir dir, size_t i, int attempt)
{
    char enc[PROTO_NAME_ENCODED_MAX], num[16] = "";
    proto_name_encode(r->tasks[i].ft->name, enc, sizeof enc);
    if (attempt > 0)
        snprintf(num, sizeof num, ".%d", attempt);
    size_t n = strlen(r->exec_dir) + strlen(enc) + strlen(num) + 16;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s/%s%s.json", r->exec_dir, dir_names[dir], enc, num);
    return s;
}

/* First offset in s[0..n) that is a NUL byte or not valid UTF-8, or n. */
static size_t bad_utf8_at(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = u[i] ? proto_utf8_seq(u + i, n - i) : 0;
        if (!l)
            return i;
        i += l;
    }
    return n;
}

/* Offset at which the nesting of JSON text s[0..n) first exceeds max, or n. Strings are skipped
 * (a bracket inside one does not count); malformed text is left to the parser. */
static size_t too_deep_at(const char *s, size_t n, int max)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return i;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return n;
}

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Checks that text[0..len) is exactly one JSON value (surrounding whitespace allowed), valid
 * UTF-8 without NUL, nested at most RESULT_MAX_DEPTH deep; trims the whitespace off. Returns
 * false with `why` saying what is wrong and where. */
static bool result_valid(char *text, size_t *len, char *why, size_t whylen)
{
    size_t n = *len, start = 0, at;
    while (start < n && json_space(text[start]))
        start++;
    while (n > start && json_space(text[n - 1]))
        n--;
    if (n == start) {
        snprintf(why, whylen, "is empty (write one JSON value, or do not create the file)");
        return false;
    }
    if ((at = bad_utf8_at(text, *len)) < *len) {
        snprintf(why, whylen, "%s at byte %zu", text[at] ? "is not valid UTF-8" : "has a NUL byte",
                 at);
        return false;
    }
    if ((at = too_deep_at(text, *len, RESULT_MAX_DEPTH)) < *len) {
        snprintf(why, whylen, "is nested deeper than %d levels (at byte %zu)", RESULT_MAX_DEPTH,
                 at);
        return false;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text + start, n - start, &end, false);
    size_t stop = end ? (size_t)(end - text) : start;
    cJSON_Delete(j);
    if (!j) {
        snprintf(why, whylen, "is not valid JSON (at byte %zu)", stop);
        return false;
    }
    while (stop < n && json_space(text[stop]))
        stop++;
    if (stop < n) {
        snprintf(why, whylen, "holds more than one JSON value (trailing data at byte %zu)", stop);
        return false;
    }
    memmove(text, text + start, n - start);
    text[n - start] = '\0';
    *len = n - start;
    return true;
}

/* Why proto_read_file refused the output file `path` (errno e), for the error message. */
static void read_error(const run_state *r, const char *path, int e, char *why, size_t whylen)
{
    struct stat st;
    if (e == ELOOP)
        snprintf(why, whylen, "is a symbolic link (write the result into the file itself)");
    else if (e == EINVAL && lstat(path, &st) == 0)
        snprintf(why, whylen, "is not a regular file (a %s)",
                 S_ISFIFO(st.st_mode)   ? "FIFO"
                 : S_ISDIR(st.st_mode)  ? "directory"
                 : S_ISSOCK(st.st_mode) ? "socket"
                                        : "device");
    else if (e == EFBIG)
        snprintf(why, whylen, "is larger than DAGY_MAX_RESULT_BYTES (%zu bytes)",
                 r->cfg->max_result_bytes);
    else
        snprintf(why, whylen, "cannot be read: %s", strerror(e));
}

int agent__task_result_read(run_state *r, size_t i, int attempt, char **text, size_t *len,
                            char *err, size_t errlen)
{
    *text = NULL;
    *len = 0;
    char *path = agent__task_file(r, AGENT_DIR_OUT, i, attempt);
    if (!path)
        return -ENOMEM;
    char why[256];
    bool ok = true;
    /* Never blocks: O_NONBLOCK|O_NOFOLLOW, regular files only, bounded (a task controls this
     * path, and this runs on the loop thread). */
    const char *name = path;
    int dfd = file_at(r, AGENT_DIR_OUT, path, &name);
    char *buf = proto_read_file_at(dfd, name, r->cfg->max_result_bytes, len);
    if (!buf && errno != ENOENT) {
        read_error(r, path, errno, why, sizeof why);
        ok = false;
    } else if (buf && !result_valid(buf, len, why, sizeof why)) {
        ok = false;
    }
    free(path);
    if (!ok) {
        free(buf);
        *len = 0;
        snprintf(err, errlen, "the result of task \"%s\" (attempt %d) in DAGY_TASK_OUTPUT %s",
                 r->tasks[i].ft->name, attempt, why);
        return -EBADMSG;
    }
    *text = buf;
    return 0;
}

int agent__task_result_store(run_state *r, size_t i, const char *text, size_t len, char *err,
                             size_t errlen)
{
    char *path = agent__task_file(r, AGENT_DIR_RESULTS, i, 0);
    if (!path)
        return -ENOMEM;
    int rc = proto_write_file_atomic(path, text, len, 0600, false);
    if (rc)
        snprintf(err, errlen, "cannot write the result file %s: %s", path, strerror(-rc));
    else
        r->tasks[i].has_result = true;
    free(path);
    return rc;
}

/* Moves the inputs file of an attempt that has ended onto `path` (an unused name in in/), so
 * that the write that follows reuses its inode instead of allocating one: on ext4 a new inode
 * per task was the largest system-call cost of a big DAG of short tasks (bench/dag_bench.sh,
 * 0.45 ms a task). Safe whatever the task names: only files of in/ are recycled, in/ holds
 * nothing but TASK.ATTEMPT.json files (encoded names, never an internal file), a file is
 * recycled only once the attempt that read it has ended (its process group is gone), and
 * `path` is a name no file has yet (a new attempt). False if none is spare (or rename fails). */
static bool inputs_file_recycle(run_state *r, const char *path)
{
    const char *to = path, *from = path;
    int dfd = file_at(r, AGENT_DIR_IN, path, &to);
    while (r->n_spare_inputs > 0) {
        char *spare = r->spare_inputs[--r->n_spare_inputs];
        int sfd = file_at(r, AGENT_DIR_IN, spare, &from);
        int rc = renameat(sfd, from, dfd, to);
        free(spare);
        if (rc == 0)
            return true;
    }
    return false;
}

/* Appends s[0..n) to the growing buffer *buf (length *len, capacity *cap). */
static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t ncap = (*len + n + 1) * 2;
        char *nb = realloc(*buf, ncap);
        if (!nb)
            return -ENOMEM;
        *buf = nb, *cap = ncap;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return 0;
}

/* The inputs object of task i: {"UPSTREAM": result-or-null, ...} in upstream order. Each result
 * is the text the agent validated as exactly one JSON value and stored itself (results/), so
 * nothing a task wrote can add keys or break the object; the text is kept as the task wrote it
 * rather than re-printed, because cJSON holds numbers as doubles (2^53 + 1 would silently change
 * into 2^53, 1e400 into null). */
static int inputs_text(run_state *r, size_t i, char **out, size_t *out_len, char *err,
                       size_t errlen)
{
    const flowspec_task *ft = r->tasks[i].ft;
    size_t len = 0, cap = 64;
    char *buf = malloc(cap);
    int rc = buf ? append(&buf, &len, &cap, "{", 1) : -ENOMEM;
    for (size_t k = 0; !rc && k < ft->n_upstream; k++) {
        size_t u = ft->upstream[k], rl = 0;
        char *res = NULL;
        /* Only a result this agent stored is read: no file probe per upstream, and a file
         * that a task planted in results/ for an upstream without a result is never used. */
        if (sched_task_state(r->plan, u) == SCHED_SUCCEEDED && r->tasks[u].has_result) {
            char *path = agent__task_file(r, AGENT_DIR_RESULTS, u, 0);
            res = path ? proto_read_file(path, r->cfg->max_result_bytes, &rl) : NULL;
            if (!res && errno != ENOENT) { /* ENOENT: the task wrote no result */
                rc = -errno;
                snprintf(err, errlen, "cannot read the result file %s: %s", path, strerror(errno));
            }
            free(path);
        }
        /* Task names are [A-Za-z0-9_.-] (proto_name_check): nothing to escape. */
        const char *name = r->spec->tasks[u].name;
        if (!rc)
            rc = append(&buf, &len, &cap, k ? ",\"" : "\"", k ? 2 : 1);
        if (!rc)
            rc = append(&buf, &len, &cap, name, strlen(name));
        if (!rc)
            rc = append(&buf, &len, &cap, "\":", 2);
        if (!rc)
            rc = append(&buf, &len, &cap, res ? res : "null", res ? rl : 4);
        free(res);
    }
    if (!rc)
        rc = append(&buf, &len, &cap, "}", 1);
    if (rc) {
        if (rc == -ENOMEM)
            snprintf(err, errlen, "out of memory building DAGY_TASK_INPUTS");
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* Opens `path` for writing: the recycled inode of an ended attempt's inputs file (kept
 * whole: truncating first would free its block, and with `discard` every freed block is a
 * synchronous discard), else a new file. A recycled file with another link (an attempt could
 * have linked it elsewhere) is dropped for a new one. fd or -errno; *size is the file's size. */
static int inputs_open(run_state *r, const char *path, off_t *size)
{
    bool recycled = inputs_file_recycle(r, path);
    const char *name = path;
    int dfd = file_at(r, AGENT_DIR_IN, path, &name);
    for (;;) {
        /* O_NONBLOCK|O_NOFOLLOW and the S_ISREG check: an earlier attempt knew the directory
         * and might have planted a FIFO or symlink here; that must fail, not block or be
         * followed. */
        int fd = openat(dfd, name,
                        O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK |
                            (recycled ? 0 : O_CREAT | O_EXCL),
                        0600);
        if (fd < 0)
            return -errno;
        struct stat st;
        if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
            close(fd);
            return -EINVAL;
        }
        *size = st.st_size;
        if (!recycled || st.st_nlink == 1)
            return fd;
        close(fd);
        if (unlinkat(dfd, name, 0))
            return -errno;
        recycled = false;
    }
}

/* Writes data[0..len) to `path`, which must not exist: into the inode of an ended attempt's
 * inputs file when one is spare (inputs_file_recycle), else into a new file; the old content's
 * tail is cut after the write. Every byte is checked; a failure leaves no file at `path` that
 * any attempt will read. 0 or -errno. */
static int inputs_write(run_state *r, const char *path, const char *data, size_t len)
{
    off_t size = 0;
    int fd = inputs_open(r, path, &size);
    if (fd < 0)
        return fd;
    int rc = 0;
    for (size_t off = 0; off < len && !rc;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            rc = w < 0 ? -errno : -ENOSPC;
        else
            off += (size_t)w;
    }
    if (!rc && size > (off_t)len && ftruncate(fd, (off_t)len)) /* an old tail to cut */
        rc = -errno;
    if (close(fd) && !rc)
        rc = -errno;
    if (rc) {
        const char *name = path;
        unlinkat(file_at(r, AGENT_DIR_IN, path, &name), name, 0);
    }
    return rc;
}

int agent__inputs_build(run_state *r, size_t i, int attempt, char **path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    *path = NULL;
    int rc = inputs_text(r, i, &text, &len, err, errlen);
    if (rc)
        return rc;
    char *p = agent__task_file(r, AGENT_DIR_IN, i, attempt);
    rc = p ? inputs_write(r, p, text, len) : -ENOMEM;
    free(text);
    if (rc) {
        snprintf(err, errlen, "cannot write DAGY_TASK_INPUTS file %s: %s", p ? p : "",
                 strerror(-rc));
        free(p);
        return rc;
    }
    *path = p;
    return 0;
}

void agent__inputs_done_transfer(run_state *r, char *path)
{
    if (!path)
        return;
    if (r->n_spare_inputs == r->cap_spare_inputs) {
        size_t cap = r->cap_spare_inputs ? r->cap_spare_inputs * 2 : 8;
        char **a = realloc(r->spare_inputs, cap * sizeof *a);
        if (!a) {
            free(path); /* the file just stays on disk */
            return;
        }
        r->spare_inputs = a, r->cap_spare_inputs = cap;
    }
    r->spare_inputs[r->n_spare_inputs++] = path;
}

void agent__inputs_free(run_state *r)
{
    for (size_t k = 0; k < r->n_spare_inputs; k++)
        free(r->spare_inputs[k]);
    free(r->spare_inputs);
    r->spare_inputs = NULL;
    r->n_spare_inputs = r->cap_spare_inputs = 0;
}
