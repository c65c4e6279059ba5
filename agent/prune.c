/* prune.c - keeps the work and state directories from growing forever (DAGY_KEEP_RUNS): at the
 * end of a run, all but the newest N run directories under DAGY_WORK_DIR are removed, and so are
 * the task-item directories (STATE/runs/RUN_ID/) and run items (STATE/runs/RUN_ID.json) of all but
 * the newest N ended runs: the history a local state directory keeps is the last N runs (a soak of
 * 200 runs grew the state directory by one 4 KiB block a run while items were all kept).
 *
 * A live agent holds a shared flock on its work run directory (agent__hold_run_dir); pruning
 * takes an exclusive one without waiting and skips what it cannot get, so agents sharing a work
 * directory never remove each other's runs. A state directory is only pruned when its run item
 * says the run ended. */
#include "agent/run.h"
#include "agent/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/unpack.h"
#include "proto/names.h"
#include "proto/util.h"

/* A run id as a directory name: raw, or encoded by proto_name_encode (%XX escapes). */
static bool run_dir_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= PROTO_NAME_ENCODED_MAX || s[0] == '.')
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-%") == n;
}

typedef struct {
    char *name;
    double mtime;
} run_dir;

static int newest_first(const void *a, const void *b)
{
    double x = ((const run_dir *)a)->mtime, y = ((const run_dir *)b)->mtime;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The run directories under `dir` (subdirectories whose name is a valid run id) or, with
 * `items`, the run items (NAME.json regular files, listed as NAME), newest first. Returns the
 * count (0 on any error: pruning is best effort). */
static size_t list_runs(const char *dir, bool items, run_dir **out)
{
    DIR *d = opendir(dir);
    size_t n = 0, cap = 0;
    *out = NULL;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));) {
        struct stat st;
        char name[PROTO_NAME_ENCODED_MAX + 8];
        size_t len = strlen(e->d_name);
        if (items && (len <= 5 || len >= sizeof name || strcmp(e->d_name + len - 5, ".json")))
            continue;
        snprintf(name, sizeof name, "%.*s", (int)(items ? len - 5 : len), e->d_name);
        if (!run_dir_name(name) || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
            !(items ? S_ISREG(st.st_mode) : S_ISDIR(st.st_mode)))
            continue;
        if (n == cap) {
            run_dir *p = realloc(*out, (cap = cap ? cap * 2 : 32) * sizeof *p);
            if (!p)
                break;
            *out = p;
        }
        (*out)[n].name = strdup(name);
        (*out)[n].mtime = (double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9;
        if ((*out)[n].name)
            n++;
    }
    closedir(d);
    if (n > 1)
        qsort(*out, n, sizeof **out, newest_first);
    return n;
}

/* May the work run directory `path` go? Not while an agent holds its lock. */
static bool work_dir_unused(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool free_ = flock(fd, LOCK_EX | LOCK_NB) == 0;
    close(fd);
    return free_;
}

/* May the state directory of run `name` go? Only once its run item says it ended. */
static bool state_dir_ended(const char *runs, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.json", runs, name);
    char *text = proto_read_file(path, 1u << 20, NULL);
    cJSON *item = text ? cJSON_Parse(text) : NULL;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(item, "status");
    bool ended = cJSON_IsString(st) && proto_status_terminal(st->valuestring);
    cJSON_Delete(item);
    free(text);
    return ended;
}

/* Removes all but the newest `keep` run directories under `dir` (never `current`). */
static int prune_dir(const char *dir, const char *current, int keep, bool state)
{
    run_dir *runs;
    size_t n = list_runs(dir, false, &runs);
    int removed = 0, others = keep - 1; /* the current run is always one of the kept */
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, runs[i].name);
        if (!strcmp(runs[i].name, current))
            ;
        else if (others > 0)
            others--;
        else if ((state ? state_dir_ended(dir, runs[i].name) : work_dir_unused(path)) &&
                 unpack_rmtree(path) == 0)
            removed++;
        free(runs[i].name);
    }
    free(runs);
    return removed;
}

/* Removes the run items (and task directories) of all but the newest `keep` ended runs under the
 * state's `runs`, newest by item (a run that ended before any task has an item only); never
 * `current`'s. */
static int prune_items(const char *runs_dir, const char *current, int keep)
{
    run_dir *runs;
    size_t n = list_runs(runs_dir, true, &runs);
    int removed = 0, others = keep - 1;
    for (size_t i = 0; i < n; i++) {
        char dir[4200], item[4300];
        struct stat st;
        if (snprintf(dir, sizeof dir, "%s/%s", runs_dir, runs[i].name) >= (int)sizeof dir ||
            snprintf(item, sizeof item, "%s.json", dir) >= (int)sizeof item) {
            free(runs[i].name);
            continue;
        }
        if (!strcmp(runs[i].name, current))
            ;
        else if (others > 0)
            others--;
        else if (state_dir_ended(runs_dir, runs[i].name) &&
                 (lstat(dir, &st) != 0 || unpack_rmtree(dir) == 0) && !unlink(item))
            removed++;
        free(runs[i].name);
    }
    free(runs);
    return removed;
}

bool agent__run_dir_busy(const agent_config *c)
{
    char enc[PROTO_NAME_ENCODED_MAX], path[4200];
    proto_name_encode(c->run_id, enc, sizeof enc);
    snprintf(path, sizeof path, "%s/%s", c->work_dir, enc);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool busy = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return busy;
}

void agent__hold_run_dir(run_state *r)
{
    r->run_dir_lock = open(r->run_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (r->run_dir_lock >= 0 && flock(r->run_dir_lock, LOCK_SH | LOCK_NB)) {
        close(r->run_dir_lock);
        r->run_dir_lock = -1;
    }
}

void agent__prune_runs(run_state *r)
{
    agent_config *c = r->cfg;
    if (c->keep_runs <= 0)
        return;
    int w = prune_dir(c->work_dir, c->run_id, c->keep_runs, false);
    int s = 0;
    if (!strcmp(c->status_backend, "local")) {
        char runs[4200];
        snprintf(runs, sizeof runs, "%s/runs", c->state_dir);
        s = prune_dir(runs, c->run_id, c->keep_runs, true);
        s += prune_items(runs, c->run_id, c->keep_runs);
    }
    if (w || s)
        agent_log(LOG_DEBUG, "runs_pruned",
                  "removed %d work and %d state run directories beyond DAGY_KEEP_RUNS=%d", w, s,
                  c->keep_runs);
}
