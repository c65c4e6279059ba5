/* status_local.c - the local state-directory status backend (contract section 3):
 * DIR/runs/RUN_ID.json (run item) and DIR/runs/RUN_ID/tasks/TASK_NAME.json (task-run items),
 * with the same conditions as the DynamoDB writes (newer status_seq; no terminal overwrite).
 *
 * Each write goes to a fresh temporary file in the target's directory and is renamed over the
 * target, so a reader sees the old or the new item, never half of one. There is no fsync per
 * write: rename is atomic against a crash of the agent, not against power loss, and a local
 * run's state directory is a convenience for people and tests, not a store of record; an fsync
 * per transition would cost more than the tasks of a fast DAG. Writes complete synchronously. */
#include "agent/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    status_backend base;
    char *dir;
    unsigned long tmp_counter; /* unique temporary names within this process */
} local_backend;

static const char *const terminal[] = {"SUCCEEDED", "FAILED", "CANCELLED", "SKIPPED"};

static bool is_terminal(const char *st)
{
    for (size_t i = 0; i < sizeof terminal / sizeof *terminal; i++)
        if (!strcmp(st, terminal[i]))
            return true;
    return false;
}

/* Run ids and task names are validated upstream; refuse path tricks anyway. */
static bool safe_name(const char *s)
{
    return s && *s && s[0] != '.' && !strchr(s, '/') && strlen(s) <= 255;
}

/* mkdir -p for `path` (the directories only), mode 0755. */
static int mkdirs(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    int rc = 0;
    for (char *c = p + 1; !rc; c++) {
        if (*c != '/' && *c != '\0')
            continue;
        char save = *c;
        *c = '\0';
        if (mkdir(p, 0755) && errno != EEXIST)
            rc = -errno;
        *c = save;
        if (!save)
            break;
    }
    free(p);
    return rc;
}

/* Reads the stored item at `path`: 0 with *stored set (NULL when absent), or -errno. A file
 * that does not parse is treated as absent: atomic replacement means only an outside hand
 * could have broken it, and the new state is the better content. */
static int read_stored(const char *path, cJSON **stored)
{
    *stored = NULL;
    FILE *f = fopen(path, "re");
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len + 4096 > cap) {
            char *p = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (!p) {
                rc = -ENOMEM;
                break;
            }
            buf = p;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f))
                rc = -EIO;
            break;
        }
    }
    fclose(f);
    if (!rc && buf)
        *stored = cJSON_ParseWithLength(buf, len);
    free(buf);
    return rc;
}

/* Does the condition of contract section 6 allow `item` to replace `stored`? */
static bool condition_allows(const cJSON *stored, const cJSON *item)
{
    if (!stored)
        return true;
    const cJSON *old_seq = cJSON_GetObjectItemCaseSensitive(stored, "status_seq");
    const cJSON *new_seq = cJSON_GetObjectItemCaseSensitive(item, "status_seq");
    if (cJSON_IsNumber(old_seq) &&
        !(cJSON_IsNumber(new_seq) && old_seq->valuedouble < new_seq->valuedouble))
        return false;
    const cJSON *old_st = cJSON_GetObjectItemCaseSensitive(stored, "status");
    const cJSON *new_st = cJSON_GetObjectItemCaseSensitive(item, "status");
    if (cJSON_IsString(old_st) && is_terminal(old_st->valuestring))
        return cJSON_IsString(new_st) && !strcmp(old_st->valuestring, new_st->valuestring);
    return true;
}

/* The file's content: the item without its JSON-null ("removed") members, pretty-printed. */
static char *render(const cJSON *item)
{
    cJSON *copy = cJSON_CreateObject();
    const cJSON *m;
    cJSON_ArrayForEach(m, item)
    {
        if (cJSON_IsNull(m))
            continue;
        cJSON *d = cJSON_Duplicate(m, true);
        if (!copy || !d || !cJSON_AddItemToObject(copy, m->string, d)) {
            cJSON_Delete(d);
            cJSON_Delete(copy);
            return NULL;
        }
    }
    char *text = cJSON_Print(copy);
    cJSON_Delete(copy);
    return text;
}

/* Writes `text` to a new temporary file in `dir`; returns its fd's path in tmp or -errno. */
static int write_temp(local_backend *b, const char *dir, const char *text, char *tmp, size_t n)
{
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        snprintf(tmp, n, "%s/.tmp.%ld.%lu", dir, (long)getpid(), b->tmp_counter++);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            return -errno;
    }
    if (fd < 0)
        return -EEXIST;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
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

/* The check-and-replace of one item file. Returns 0 (written or refused) or -errno with err. */
static int replace_file(local_backend *b, const char *dir, const char *path, const cJSON *item,
                        char *err, size_t nerr)
{
    cJSON *stored = NULL;
    int rc = read_stored(path, &stored);
    bool allowed = rc == 0 && condition_allows(stored, item);
    cJSON_Delete(stored);
    if (rc) {
        snprintf(err, nerr, "cannot read %s: %s", path, strerror(-rc));
        return rc;
    }
    if (!allowed)
        return 0;
    char *text = render(item);
    char tmp[4200];
    if (!text)
        rc = -ENOMEM;
    else if ((rc = write_temp(b, dir, text, tmp, sizeof tmp)) == -ENOENT && !mkdirs(dir))
        rc = write_temp(b, dir, text, tmp, sizeof tmp);
    if (!rc && rename(tmp, path)) {
        rc = -errno;
        unlink(tmp);
    }
    free(text);
    if (rc)
        snprintf(err, nerr, "cannot write %s: %s", path, strerror(-rc));
    return rc;
}

static int local_write(status_backend *be, status_kind kind, const cJSON *item,
                       status_write_cb done, void *ctx)
{
    local_backend *b = (local_backend *)be;
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(item, "run_id");
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(item, "task_name");
    const char *r = cJSON_IsString(run) ? run->valuestring : NULL;
    const char *t = cJSON_IsString(task) ? task->valuestring : NULL;
    if (!safe_name(r) || (kind == STATUS_TASK && !safe_name(t)))
        return -EINVAL;
    char dir[4096], path[4096], err[8400];
    int nd, np;
    if (kind == STATUS_RUN) {
        nd = snprintf(dir, sizeof dir, "%s/runs", b->dir);
        np = snprintf(path, sizeof path, "%s/%s.json", dir, r);
    } else {
        nd = snprintf(dir, sizeof dir, "%s/runs/%s/tasks", b->dir, r);
        np = snprintf(path, sizeof path, "%s/%s.json", dir, t);
    }
    if (nd < 0 || np < 0 || (size_t)nd >= sizeof dir || (size_t)np >= sizeof path)
        return -ENAMETOOLONG;
    int rc = replace_file(b, dir, path, item, err, sizeof err);
    done(ctx, rc, rc ? err : NULL);
    return 0;
}

static void local_close(status_backend *be)
{
    local_backend *b = (local_backend *)be;
    free(b->dir);
    free(b);
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
    int rc = mkdirs(runs); /* fail now, with a clear error, on an unwritable state directory */
    if (rc) {
        free(b->dir);
        free(b);
        return rc;
    }
    b->base.name = "local";
    b->base.write = local_write;
    b->base.close = local_close;
    *out = &b->base;
    return 0;
}
