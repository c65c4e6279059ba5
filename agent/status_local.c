/* status_local.c - the local state-directory status backend (contract section 3):
 * DIR/runs/RUN_ID.json (run item) and DIR/runs/RUN_ID/tasks/TASK_NAME.json (task-run items),
 * with the same conditions as the DynamoDB writes (newer status_seq; no terminal overwrite).
 *
 * Each write goes to a spare file in the target's directory, which is then exchanged with the
 * target (renameat2 RENAME_EXCHANGE), so a reader sees the old or the new item, never half of
 * one; the spare keeps the old content and takes the next write. No inode is freed per write:
 * on ext4 without a journal every file creation scans past the inodes freed in the last 30 s
 * (recently_deleted), which made a create-and-rename per write the largest per-task cost of
 * a big DAG of short tasks (half the agent's CPU). Where exchange is not supported, or for a
 * target that does not exist yet, the spare is renamed over (or onto) the target. There is no
 * fsync per write: rename is atomic against a crash of the agent, not against power loss, and a
 * local run's state directory is a convenience for people and tests, not a store of record; an
 * fsync per transition would cost more than the tasks of a fast DAG. Writes complete synchronously.
 */
#include "agent/status.h"
#include "proto/names.h"
#include "proto/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Changes to one item within this window leave as one file replacement: a task that ends
 * quickly gets one write instead of two (RUNNING, then its end). Creating files is the largest
 * per-task cost of big DAGs of short tasks (ext4 inode allocation); 100 ms is still well under
 * what a person watching the state directory notices. A flush writes at once. */
#define LOCAL_COALESCE_MS 100

/* Items wait here only the coalescing window: kept as trees unless many wait (status.h). */
#define LOCAL_PARK_ABOVE 256

/* A stored item larger than this is unreadable (items are a few KiB; DynamoDB allows 400 KB). */
#define LOCAL_ITEM_MAX (16u << 20)

/* Directories with a spare file of this process (the run's and its tasks' directories). */
#define LOCAL_SPARES 4

typedef struct {
    status_backend base;
    char *dir;
    unsigned long tmp_counter;     /* unique temporary names within this process */
    char *spare_dir[LOCAL_SPARES]; /* directories in which a spare of this process exists */
    int dir_fd[LOCAL_SPARES];      /* each one opened (O_PATH), or -1 until it exists */
    bool spare_present[LOCAL_SPARES];
    char spare_name[32]; /* .spare.PID, the same in every directory */
    bool no_exchange;    /* the file system refused RENAME_EXCHANGE once */
} local_backend;

/* Reads the stored item at `path`: 0 with *stored set (NULL when absent), or -errno. A file
 * that does not parse is treated as absent: atomic replacement means only an outside hand
 * could have broken it, and the new state is the better content. */
static int read_stored(int dirfd, const char *path, cJSON **stored)
{
    size_t len = 0;
    *stored = NULL;
    char *buf = proto_read_file_at(dirfd, path, LOCAL_ITEM_MAX, &len);
    if (!buf)
        return errno == ENOENT ? 0 : -errno;
    *stored = cJSON_ParseWithLength(buf, len);
    free(buf);
    return 0;
}

/* One write: the paths, the rendered file and what the condition needs. */
typedef struct {
    local_backend *b;
    char *dir, *path, *text;
    const char *name; /* the last component of path */
    double seq;
    bool has_seq;
    bool absent;  /* the condition check found no stored item */
    char *status; /* the new item's status, NULL if it has none */
    unsigned long id;
    int rc;
    char err[4400];
    status_write_cb done;
    void *ctx;
} local_job;

/* Does the condition of contract section 6 allow the job's item to replace `stored`? */
static bool condition_allows(const cJSON *stored, const local_job *j)
{
    if (!stored)
        return true;
    const cJSON *old_seq = cJSON_GetObjectItemCaseSensitive(stored, "status_seq");
    if (cJSON_IsNumber(old_seq) && !(j->has_seq && old_seq->valuedouble < j->seq))
        return false;
    const cJSON *old_st = cJSON_GetObjectItemCaseSensitive(stored, "status");
    if (cJSON_IsString(old_st) && proto_status_terminal(old_st->valuestring))
        return j->status && !strcmp(old_st->valuestring, j->status);
    return true;
}

/* The file's content: the item without its JSON-null ("removed") members, one member per line
 * (as cJSON_Print lays them out), written directly: copying the item to drop its nulls and
 * printing the copy with cJSON took ~5 % of the agent's CPU on a DAG of short tasks. Members
 * that are objects or arrays (rare) are printed by cJSON. */
static char *render(const cJSON *item)
{
    proto_sbuf b = {0};
    bool first = true;
    const cJSON *m;
    proto_sbuf_put(&b, "{", 1);
    cJSON_ArrayForEach(m, item)
    {
        if (cJSON_IsNull(m) || !m->string)
            continue;
        proto_sbuf_puts(&b, first ? "\n\t" : ",\n\t");
        first = false;
        proto_sbuf_json_str(&b, m->string);
        proto_sbuf_put(&b, ":\t", 2);
        if (cJSON_IsString(m)) {
            proto_sbuf_json_str(&b, m->valuestring ? m->valuestring : "");
        } else if (cJSON_IsNumber(m)) {
            char num[PROTO_NUM_MAX];
            proto_sbuf_put(&b, num, proto_fmt_json_num(num, m->valuedouble));
        } else if (cJSON_IsBool(m)) {
            proto_sbuf_puts(&b, cJSON_IsTrue(m) ? "true" : "false");
        } else {
            char *t = cJSON_PrintUnformatted(m);
            if (!t) {
                free(b.s);
                return NULL;
            }
            proto_sbuf_puts(&b, t);
            cJSON_free(t);
        }
    }
    proto_sbuf_puts(&b, first ? "}" : "\n}");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* Writes the job's text to a new temporary file in its directory (name in tmp) or -errno.
 * Names start with '.', which no run id or task name may, so they never meet a target. */
static int write_temp(const local_job *j, char *tmp, size_t n)
{
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        snprintf(tmp, n, "%s/.tmp.%ld.%lu.%d", j->dir, (long)getpid(), j->id, tries);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            return -errno;
    }
    if (fd < 0)
        return -EEXIST;
    size_t len = strlen(j->text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, j->text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int rc = -errno;
            close(fd);
            unlink(tmp);
            return rc;
        }
        off += (size_t)w;
    }
    if (close(fd)) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    return 0;
}

static int slot_fd(local_backend *b, int slot);
static int spare_slot(local_backend *b, const char *dir);

/* The condition check against the stored file (read through its directory's slot when there is
 * one). Returns 1 to write, 0 when refused (an answer), or -errno with j->err. */
static int check_stored(local_job *j)
{
    cJSON *stored = NULL;
    local_backend *b = j->b;
    int slot = b->no_exchange ? -1 : spare_slot(b, j->dir);
    int dfd = slot < 0 ? -1 : slot_fd(b, slot);
    int rc =
        dfd >= 0 ? read_stored(dfd, j->name, &stored) : read_stored(AT_FDCWD, j->path, &stored);
    bool allowed = rc == 0 && condition_allows(stored, j);
    j->absent = rc == 0 && !stored;
    cJSON_Delete(stored);
    if (rc)
        snprintf(j->err, sizeof j->err, "cannot read %s: %s", j->path, strerror(-rc));
    return rc ? rc : allowed;
}

/* The spare's slot for `dir` (claimed if free), or -1 when all are taken by other directories. */
static int spare_slot(local_backend *b, const char *dir)
{
    for (int i = 0; i < LOCAL_SPARES; i++)
        if (b->spare_dir[i] && !strcmp(b->spare_dir[i], dir))
            return i;
    for (int i = 0; i < LOCAL_SPARES; i++) {
        if (b->spare_dir[i])
            continue;
        if (!(b->spare_dir[i] = strdup(dir)))
            return -1;
        b->dir_fd[i] = -1;
        b->spare_present[i] = false;
        return i;
    }
    return -1;
}

/* The slot's directory, opened the first time it is needed (every file operation of a write is
 * relative to it: one name to walk instead of the whole path, ~2.4 us less per rename on
 * tmpfs). -errno when it cannot be opened (-ENOENT: it does not exist yet). */
static int slot_fd(local_backend *b, int slot)
{
    if (b->dir_fd[slot] < 0 &&
        (b->dir_fd[slot] = open(b->spare_dir[slot], O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -errno;
    return b->dir_fd[slot];
}

/* Forgets a slot whose directory may have gone (a write in it answered ENOENT): the next write
 * opens the directory again by its path, once the caller has made it again. */
static void slot_drop(local_backend *b, int slot)
{
    if (b->dir_fd[slot] >= 0) {
        if (b->spare_present[slot])
            unlinkat(b->dir_fd[slot], b->spare_name, 0);
        close(b->dir_fd[slot]);
    }
    free(b->spare_dir[slot]);
    b->spare_dir[slot] = NULL;
    b->dir_fd[slot] = -1;
    b->spare_present[slot] = false;
}

/* Opens the spare at `spare` for writing (cut to length after the write, not before: freeing
 * its block and allocating one again costs a synchronous discard on a `discard` mount): the
 * existing one when it is still a regular file
 * of ours with a single link (after an exchange it is the target's former inode, which an outside
 * hand may have linked elsewhere: then it is left alone and replaced), else a new one. */
static int open_spare(int dfd, const char *spare, bool present, off_t *size)
{
    *size = 0;
    if (present) {
        int fd = openat(dfd, spare, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && !fstat(fd, &st) && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
            st.st_uid == geteuid()) {
            *size = st.st_size;
            return fd;
        }
        if (fd >= 0)
            close(fd);
    }
    for (int tries = 0; tries < 2; tries++) {
        int fd = openat(dfd, spare, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd >= 0 ? fd : -errno;
        unlinkat(dfd, spare, 0); /* a stale one (ours, or of an earlier process with our pid) */
    }
    return -EEXIST;
}

/* Writes the job's text to fd from its start, cuts the file there if it was longer (`size`)
 * and closes it: 0 or -errno. */
static int write_close(int fd, const char *text, off_t size)
{
    size_t len = strlen(text), off = 0;
    int rc = 0;
    while (off < len && !rc) {
        ssize_t w = write(fd, text + off, len - off);
        if (w > 0)
            off += (size_t)w;
        else if (w == 0 || errno != EINTR)
            rc = w < 0 ? -errno : -ENOSPC;
    }
    if (!rc && size > (off_t)len && ftruncate(fd, (off_t)len))
        rc = -errno;
    if (close(fd) && !rc)
        rc = -errno;
    return rc;
}

/* The replacement through the directory's spare. 0, -errno, or 1 when no spare could be used
 * (every slot taken, exchange unsupported, the directory not openable): then the caller uses a
 * fresh temporary. -ENOENT: the directory is missing (the caller makes it and tries again). */
static int replace_by_spare(local_job *j)
{
    local_backend *b = j->b;
    int slot = b->no_exchange ? -1 : spare_slot(b, j->dir);
    if (slot < 0)
        return 1;
    int dfd = slot_fd(b, slot);
    if (dfd < 0)
        return dfd == -ENOENT ? -ENOENT : 1;
    const char *spare = b->spare_name;
    off_t size;
    int fd = open_spare(dfd, spare, b->spare_present[slot], &size);
    b->spare_present[slot] = fd >= 0;
    int rc = fd < 0 ? fd : write_close(fd, j->text, size);
    /* No stored item at the check: nothing to exchange with, the spare becomes the target (an
     * item stored since then is replaced, as an exchange would replace it). */
    if (!rc && j->absent) {
        rc = renameat(dfd, spare, dfd, j->name) ? -errno : 0;
        b->spare_present[slot] = false;
    } else if (!rc && renameat2(dfd, spare, dfd, j->name, RENAME_EXCHANGE)) {
        rc = -errno;
        if (rc == -EINVAL || rc == -ENOSYS || rc == -EOPNOTSUPP)
            b->no_exchange = true;
        if (rc == -ENOENT || b->no_exchange) /* no target yet: the spare becomes it */
            rc = renameat(dfd, spare, dfd, j->name) ? -errno : 0;
        b->spare_present[slot] = false;
    }
    if (rc && fd >= 0)
        unlinkat(dfd, spare, 0);
    if (rc == -ENOENT) /* the directory went away: opened again once made again */
        slot_drop(b, slot);
    return rc;
}

/* The atomic replacement of one item file. Sets j->rc: 0 or -errno with j->err. */
static void replace_file(local_job *j)
{
    char tmp[4200];
    int rc = replace_by_spare(j);
    if (rc == -ENOENT && (rc = proto_mkdirs(j->dir, 0700)) == 0) { /* else mkdir's (EROFS...) */
        /* A directory made again may hold items the check did not see: check again. */
        if ((rc = check_stored(j)) <= 0) {
            j->rc = rc ? rc : STATUS_REFUSED;
            return;
        }
        rc = replace_by_spare(j);
    }
    if (rc == 1) {
        rc = write_temp(j, tmp, sizeof tmp);
        if (rc == -ENOENT && (rc = proto_mkdirs(j->dir, 0700)) == 0)
            rc = write_temp(j, tmp, sizeof tmp);
        if (!rc && rename(tmp, j->path)) {
            rc = -errno;
            unlink(tmp);
        }
    }
    if (rc)
        snprintf(j->err, sizeof j->err, "cannot write %s: %s", j->path, strerror(-rc));
    j->rc = rc;
}

static void job_free(local_job *j)
{
    free(j->dir);
    free(j->path);
    free(j->text);
    free(j->status);
    free(j);
}

/* Frees the backend and removes its spares (each holds an old copy of some item). */
static void local_free(local_backend *b)
{
    for (int i = 0; i < LOCAL_SPARES; i++)
        if (b->spare_dir[i])
            slot_drop(b, i);
    free(b->dir);
    free(b);
}

/* The paths of an item's file and directory, or -errno. Run ids and task names were checked
 * upstream; they are checked again here (a bad one never becomes a path) and encoded, so that
 * ".hidden" is a file like any other and never meets the temporaries (which start with '.'). */
static int item_paths(local_backend *b, status_kind kind, const cJSON *item, local_job *j)
{
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(item, "run_id");
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(item, "task_name");
    const char *r = cJSON_IsString(run) ? run->valuestring : NULL;
    const char *t = cJSON_IsString(task) ? task->valuestring : NULL;
    char re[PROTO_NAME_ENCODED_MAX], te[PROTO_NAME_ENCODED_MAX];
    if (!proto_name_check(PROTO_NAME_RUN_ID, r, j->err, sizeof j->err) ||
        (kind == STATUS_TASK &&
         !proto_name_check(PROTO_NAME_TASK_INSTANCE, t, j->err, sizeof j->err)))
        return -EINVAL;
    proto_name_encode(r, re, sizeof re);
    if (kind == STATUS_RUN) {
        if (asprintf(&j->dir, "%s/runs", b->dir) < 0 ||
            asprintf(&j->path, "%s/%s.json", j->dir, re) < 0)
            return -ENOMEM;
    } else {
        proto_name_encode(t, te, sizeof te);
        if (asprintf(&j->dir, "%s/runs/%s/tasks", b->dir, re) < 0 ||
            asprintf(&j->path, "%s/%s.json", j->dir, te) < 0)
            return -ENOMEM;
    }
    j->name = strrchr(j->path, '/') + 1;
    return strlen(j->path) >= 4096 ? -ENAMETOOLONG : 0;
}

/* Checks the condition and replaces the file, before returning. Synchronous on purpose: a
 * thread pool kept the loop free of file I/O but cost ~1 MiB of resident memory (the agent's
 * peak RSS is a benchmark goal) for a few percent of speed; each write is one small file. */
static int local_write(status_backend *be, status_kind kind, const cJSON *item,
                       status_write_cb done, void *ctx)
{
    local_backend *b = (local_backend *)be;
    local_job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->b = b;
    j->id = b->tmp_counter++;
    j->done = done;
    j->ctx = ctx;
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(item, "status_seq");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(item, "status");
    j->has_seq = cJSON_IsNumber(seq);
    j->seq = j->has_seq ? seq->valuedouble : 0;
    int rc = item_paths(b, kind, item, j);
    if (!rc && cJSON_IsString(st) && !(j->status = strdup(st->valuestring)))
        rc = -ENOMEM;
    if (!rc && !(j->text = render(item)))
        rc = -ENOMEM;
    if (!rc && (rc = check_stored(j)) <= 0) { /* refused, or unreadable: answer now */
        done(ctx, rc ? rc : STATUS_REFUSED, rc ? j->err : NULL);
        job_free(j);
        return 0;
    }
    if (rc < 0) {
        job_free(j);
        return rc;
    }
    replace_file(j);
    done(ctx, j->rc, j->rc && j->rc != STATUS_REFUSED ? j->err : NULL);
    job_free(j);
    return 0;
}

/* Reads the stored item file (synchronously, like the writes). */
static int local_read(status_backend *be, status_kind kind, const char *run_id,
                      const char *task_name, status_read_cb done, void *ctx)
{
    local_backend *b = (local_backend *)be;
    cJSON *key = cJSON_CreateObject();
    local_job j = {.b = b};
    cJSON_AddStringToObject(key, "run_id", run_id);
    if (task_name)
        cJSON_AddStringToObject(key, "task_name", task_name);
    int rc = key ? item_paths(b, kind, key, &j) : -ENOMEM;
    cJSON_Delete(key);
    cJSON *stored = NULL;
    if (!rc && (rc = read_stored(AT_FDCWD, j.path, &stored)) < 0)
        snprintf(j.err, sizeof j.err, "cannot read %s: %s", j.path, strerror(-rc));
    free(j.dir);
    free(j.path);
    if (rc == -EINVAL || rc == -ENOMEM || rc == -ENAMETOOLONG)
        return rc;
    done(ctx, rc, stored, rc ? j.err : NULL);
    cJSON_Delete(stored);
    return 0;
}

static void local_close(status_backend *be)
{
    local_free((local_backend *)be);
}

int status_local_new(const char *state_dir, status_backend **out)
{
    if (!state_dir || !*state_dir || strlen(state_dir) > 3000)
        return -EINVAL;
    local_backend *b = calloc(1, sizeof *b);
    if (!b || !(b->dir = strdup(state_dir))) {
        free(b);
        return -ENOMEM;
    }
    char runs[3100];
    snprintf(runs, sizeof runs, "%s/runs", state_dir);
    /* Fail now, with a clear error, on an unwritable state directory. */
    int rc = proto_mkdirs(runs, 0700);
    if (rc) {
        local_free(b);
        return rc;
    }
    b->base.name = "local";
    b->base.write = local_write;
    b->base.read = local_read;
    b->base.close = local_close;
    b->base.coalesce_ms = LOCAL_COALESCE_MS;
    b->base.park_above = LOCAL_PARK_ABOVE;
    snprintf(b->spare_name, sizeof b->spare_name, ".spare.%ld", (long)getpid());
    for (int i = 0; i < LOCAL_SPARES; i++)
        b->dir_fd[i] = -1;
    *out = &b->base;
    return 0;
}
