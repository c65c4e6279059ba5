/* test_status_local.c - the local state-directory backend: file layout, atomic replacement (no
 * temporary files left), the seq / terminal-status conditions, refusal of path tricks, and the
 * store + local backend end to end through a flush. */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/log.h"
#include "agent/status.h"

typedef struct {
    char dir[64];
    status_backend *be;
    int calls, rc;
    char err[1024];
} fixture;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/dagy-test-local.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    char sd[128];
    snprintf(sd, sizeof sd, "%s/state", fx->dir);
    assert_int_equal(status_local_new(sd, &fx->be), 0);
    assert_string_equal(fx->be->name, "local");
    agent_log_init(LOG_FORMAT_JSON, LOG_ERROR, 2);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (fx->be)
        fx->be->close(fx->be);
    nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static void on_done(void *ctx, int rc, const char *err)
{
    fixture *fx = ctx;
    fx->calls++;
    fx->rc = rc;
    snprintf(fx->err, sizeof fx->err, "%s", err ? err : "");
}

/* Writes item (JSON text) synchronously; returns the rc given to done. */
static int put(fixture *fx, status_kind kind, const char *json)
{
    cJSON *it = cJSON_Parse(json);
    assert_non_null(it);
    int before = fx->calls;
    int rc = fx->be->write(fx->be, kind, it, on_done, fx);
    cJSON_Delete(it);
    if (rc < 0)
        return rc;
    assert_int_equal(fx->calls, before + 1); /* completes before returning */
    return fx->rc;
}

/* The stored file under the state dir, parsed (NULL if absent). */
static cJSON *stored(fixture *fx, const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/state/%s", fx->dir, rel);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_ParseWithOpts(buf, NULL, true); /* the whole file is one item, no tail */
    assert_non_null(j);
    return j;
}

static double num(const cJSON *j, const char *k)
{
    return cJSON_GetObjectItem(j, k)->valuedouble;
}

static const char *str(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(j, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Counts files whose name starts with '.' anywhere below dir (temporaries). */
static int count_hidden(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.')
            n++;
        else if (e->d_type == DT_DIR)
            n += count_hidden(p);
    }
    closedir(d);
    return n;
}

static void writes_run_and_task_files(void **state)
{
    fixture *fx = *state;
    assert_int_equal(put(fx, STATUS_RUN,
                         "{\"run_id\":\"r1\",\"status\":\"RUNNING\",\"status_seq\":1,"
                         "\"error_message\":null,\"tasks_total\":2}"),
                     0);
    assert_int_equal(put(fx, STATUS_TASK,
                         "{\"run_id\":\"r1\",\"task_name\":\"extract\",\"status\":\"RUNNING\","
                         "\"status_seq\":1}"),
                     0);
    cJSON *run = stored(fx, "runs/r1.json");
    cJSON *task = stored(fx, "runs/r1/tasks/extract.json");
    assert_non_null(run);
    assert_non_null(task);
    assert_string_equal(str(run, "status"), "RUNNING");
    assert_int_equal(num(run, "tasks_total"), 2);
    assert_null(cJSON_GetObjectItem(run, "error_message")); /* null = removed */
    assert_string_equal(str(task, "task_name"), "extract");
    cJSON_Delete(run);
    cJSON_Delete(task);
    char top[128];
    snprintf(top, sizeof top, "%s/state", fx->dir);
    assert_int_equal(count_hidden(top), 0);
}

/* Stored seq 5: lower or equal seqs are refused (an answer: STATUS_REFUSED), higher ones
 * replace. */
static void refuses_lower_or_equal_seq(void **state)
{
    fixture *fx = *state;
    put(fx, STATUS_RUN,
        "{\"run_id\":\"r\",\"status\":\"RUNNING\",\"status_seq\":5,\"x\":\"five\"}");
    assert_int_equal(put(fx, STATUS_RUN,
                         "{\"run_id\":\"r\",\"status\":\"RUNNING\","
                         "\"status_seq\":3,\"x\":\"three\"}"),
                     STATUS_REFUSED);
    assert_int_equal(put(fx, STATUS_RUN,
                         "{\"run_id\":\"r\",\"status\":\"RUNNING\","
                         "\"status_seq\":5,\"x\":\"again\"}"),
                     STATUS_REFUSED);
    cJSON *j = stored(fx, "runs/r.json");
    assert_string_equal(str(j, "x"), "five");
    cJSON_Delete(j);
    put(fx, STATUS_RUN, "{\"run_id\":\"r\",\"status\":\"RUNNING\",\"status_seq\":6,\"x\":\"six\"}");
    j = stored(fx, "runs/r.json");
    assert_string_equal(str(j, "x"), "six");
    assert_null(cJSON_GetObjectItem(j, "five"));
    cJSON_Delete(j);
}

/* A terminal item is never replaced by another status; the same status may add attributes. */
static void terminal_status_is_final(void **state)
{
    fixture *fx = *state;
    put(fx, STATUS_TASK,
        "{\"run_id\":\"r\",\"task_name\":\"t\",\"status\":\"FAILED\","
        "\"status_seq\":4}");
    put(fx, STATUS_TASK,
        "{\"run_id\":\"r\",\"task_name\":\"t\",\"status\":\"CANCELLED\","
        "\"status_seq\":9}");
    put(fx, STATUS_TASK, "{\"run_id\":\"r\",\"task_name\":\"t\",\"status_seq\":10}");
    cJSON *j = stored(fx, "runs/r/tasks/t.json");
    assert_string_equal(str(j, "status"), "FAILED");
    assert_int_equal(num(j, "status_seq"), 4);
    cJSON_Delete(j);
    put(fx, STATUS_TASK,
        "{\"run_id\":\"r\",\"task_name\":\"t\",\"status\":\"FAILED\","
        "\"status_seq\":11,\"trace_s3_uri\":\"s3://b/k\"}");
    j = stored(fx, "runs/r/tasks/t.json");
    assert_string_equal(str(j, "status"), "FAILED");
    assert_string_equal(str(j, "trace_s3_uri"), "s3://b/k");
    assert_int_equal(num(j, "status_seq"), 11);
    cJSON_Delete(j);
}

/* The launcher's QUEUED item (seq 0) is replaced by the agent's first write. */
static void first_write_lands_on_queued(void **state)
{
    fixture *fx = *state;
    put(fx, STATUS_RUN, "{\"run_id\":\"q\",\"status\":\"QUEUED\",\"status_seq\":0}");
    put(fx, STATUS_RUN, "{\"run_id\":\"q\",\"status\":\"RUNNING\",\"status_seq\":1}");
    cJSON *j = stored(fx, "runs/q.json");
    assert_string_equal(str(j, "status"), "RUNNING");
    cJSON_Delete(j);
}

static void refuses_path_tricks(void **state)
{
    fixture *fx = *state;
    assert_int_equal(put(fx, STATUS_RUN, "{\"run_id\":\"../x\",\"status_seq\":1}"), -EINVAL);
    assert_int_equal(put(fx, STATUS_RUN, "{\"run_id\":\"..\",\"status_seq\":1}"), -EINVAL);
    assert_int_equal(put(fx, STATUS_RUN, "{\"run_id\":\".\",\"status_seq\":1}"), -EINVAL);
    assert_int_equal(put(fx, STATUS_RUN, "{\"run_id\":\"a:b\",\"status_seq\":1}"), -EINVAL);
    assert_int_equal(put(fx, STATUS_RUN, "{\"run_id\":\"\",\"status_seq\":1}"), -EINVAL);
    assert_int_equal(put(fx, STATUS_TASK,
                         "{\"run_id\":\"r\",\"task_name\":\"a/b\","
                         "\"status_seq\":1}"),
                     -EINVAL);
    assert_int_equal(put(fx, STATUS_TASK, "{\"run_id\":\"r\",\"status_seq\":1}"), -EINVAL);
    assert_int_equal(fx->calls, 0);
}

/* Names that start with '.' are valid: their files are named by proto_name_encode, so they
 * are written like any other (they were refused, and the run still exited 0: defect 6). */
static void dot_names_are_written_encoded(void **state)
{
    fixture *fx = *state;
    assert_int_equal(put(fx, STATUS_RUN, "{\"run_id\":\".r\",\"status_seq\":1}"), 0);
    const char *tasks[] = {".hidden", "a.b", "..x"};
    const char *files[] = {"runs/%2Er/tasks/%2Ehidden.json", "runs/%2Er/tasks/a.b.json",
                           "runs/%2Er/tasks/%2E.x.json"};
    for (size_t i = 0; i < 3; i++) {
        char item[200];
        snprintf(item, sizeof item, "{\"run_id\":\".r\",\"task_name\":\"%s\",\"status_seq\":1}",
                 tasks[i]);
        assert_int_equal(put(fx, STATUS_TASK, item), 0);
        cJSON *j = stored(fx, files[i]);
        assert_string_equal(str(j, "task_name"), tasks[i]);
        cJSON_Delete(j);
    }
    cJSON *j = stored(fx, "runs/%2Er.json");
    assert_string_equal(str(j, "run_id"), ".r");
    cJSON_Delete(j);
}

/* A write that cannot happen reports rc < 0 with the path in the message. */
static void unwritable_target_reports_path(void **state)
{
    fixture *fx = *state;
    char p[256];
    snprintf(p, sizeof p, "%s/state/runs/blocked", fx->dir);
    int fd = open(p, O_CREAT | O_WRONLY, 0644); /* a file where the run's directory should be */
    assert_true(fd >= 0);
    close(fd);
    int rc = put(fx, STATUS_TASK, "{\"run_id\":\"blocked\",\"task_name\":\"t\",\"status_seq\":1}");
    assert_true(rc < 0);
    assert_non_null(strstr(fx->err, "runs/blocked/tasks"));
}

static void bad_state_dir_fails_at_creation(void **state)
{
    fixture *fx = *state;
    char p[256];
    snprintf(p, sizeof p, "%s/file", fx->dir);
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    close(fd);
    status_backend *be = NULL;
    assert_int_equal(status_local_new(p, &be), -ENOTDIR);
    assert_int_equal(status_local_new("", &be), -EINVAL);
}

static bool flushed;
static void on_flush(void *ud, bool failed_run, int n_failed)
{
    assert_false(failed_run);
    assert_int_equal(n_failed, 0);
    flushed = true;
}

/* The store over the local backend: every item ends in its file with its final state. */
static void store_and_local_backend_end_to_end(void **state)
{
    fixture *fx = *state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    status_store *s;
    assert_int_equal(status_store_new(&loop, fx->be, &s), 0);
    fx->be = NULL; /* owned by the store now */
    cJSON *run = status_item(s, STATUS_RUN, "run-9", NULL);
    status_set_str(run, "status", "RUNNING");
    status_touch(s, run);
    char name[32];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "t%d", i);
        cJSON *t = status_item(s, STATUS_TASK, "run-9", name);
        status_set_str(t, "status", "RUNNING");
        status_touch(s, t);
        uv_run(&loop, UV_RUN_NOWAIT);
        status_set_str(t, "status", i % 2 ? "SUCCEEDED" : "FAILED");
        status_set_num(t, "exit_code", i % 2 ? 0 : 1);
        status_touch(s, t);
    }
    status_set_str(run, "status", "FAILED");
    status_touch(s, run);
    flushed = false;
    status_flush(s, 5000, on_flush, NULL);
    for (int i = 0; i < 100 && !flushed; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(flushed);
    status_store_free(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    /* The run item is written at once (RUNNING on its own turn, then FAILED with the flush);
     * task items wait for the local backend's 100 ms window, which merged their RUNNING into
     * the final state: one file replacement each. */
    cJSON *j = stored(fx, "runs/run-9.json");
    assert_string_equal(str(j, "status"), "FAILED");
    assert_int_equal(num(j, "status_seq"), 2);
    assert_non_null(str(j, "updated_at"));
    cJSON_Delete(j);
    j = stored(fx, "runs/run-9/tasks/t7.json");
    assert_string_equal(str(j, "status"), "SUCCEEDED");
    assert_int_equal(num(j, "exit_code"), 0);
    assert_int_equal(num(j, "status_seq"), 1);
    cJSON_Delete(j);
}

/* The inode of a file under the state dir. */
static ino_t inode_of(fixture *fx, const char *rel)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/state/%s", fx->dir, rel);
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

static void put_task_seq(fixture *fx, int seq)
{
    char json[256];
    snprintf(json, sizeof json,
             "{\"run_id\":\"r\",\"task_name\":\"x\",\"status\":\"RUNNING\",\"status_seq\":%d}",
             seq);
    assert_int_equal(put(fx, STATUS_TASK, json), 0);
}

/* A rewrite frees no inode (ext4 without a journal makes every later creation scan past
 * recently freed ones): the item is exchanged with the directory's spare, which keeps the old
 * inode for the next write; the spare is gone once the backend is closed. */
static void rewrites_free_no_inode(void **state)
{
    fixture *fx = *state;
    put_task_seq(fx, 1);
    ino_t first = inode_of(fx, "runs/r/tasks/x.json");
    put_task_seq(fx, 2);
    char top[128];
    snprintf(top, sizeof top, "%s/state", fx->dir);
    assert_int_equal(count_hidden(top), 1); /* the spare, holding the first inode */
    put_task_seq(fx, 3);
    assert_true(inode_of(fx, "runs/r/tasks/x.json") == first);
    cJSON *j = stored(fx, "runs/r/tasks/x.json");
    assert_int_equal(num(j, "status_seq"), 3);
    cJSON_Delete(j);
    fx->be->close(fx->be);
    fx->be = NULL;
    assert_int_equal(count_hidden(top), 0);
}

/* An item file that an outside hand hard-linked elsewhere is never written through: once
 * exchanged into the spare, its extra link makes the next write take a fresh spare. */
static void hard_linked_item_is_never_written_through(void **state)
{
    fixture *fx = *state;
    char item[512], outside[512];
    put_task_seq(fx, 1);
    snprintf(item, sizeof item, "%s/state/runs/r/tasks/x.json", fx->dir);
    snprintf(outside, sizeof outside, "%s/outside.json", fx->dir);
    assert_int_equal(link(item, outside), 0);
    for (int seq = 2; seq <= 5; seq++)
        put_task_seq(fx, seq);
    FILE *f = fopen(outside, "r");
    assert_non_null(f);
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    assert_int_equal(num(j, "status_seq"), 1);
    cJSON_Delete(j);
    j = stored(fx, "runs/r/tasks/x.json");
    assert_int_equal(num(j, "status_seq"), 5);
    cJSON_Delete(j);
}

/* The spare is written over, not emptied first: a shorter item written into the inode of a
 * longer one is cut to its own length (no tail of the old item), and an item as long or longer
 * needs no cut. */
static void shorter_rewrite_leaves_no_old_tail(void **state)
{
    fixture *fx = *state;
    char json[4096], pad[2048];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int seq = 1; seq <= 4; seq++) {
        snprintf(json, sizeof json,
                 "{\"run_id\":\"r\",\"task_name\":\"x\",\"status\":\"RUNNING\","
                 "\"status_seq\":%d,\"pad\":\"%s\"}",
                 seq, seq <= 2 ? pad : "");
        assert_int_equal(put(fx, STATUS_TASK, json), 0);
        cJSON *j = stored(fx, "runs/r/tasks/x.json"); /* parses: nothing after the object */
        assert_non_null(j);
        assert_int_equal(num(j, "status_seq"), seq);
        assert_int_equal(strlen(cJSON_GetObjectItem(j, "pad")->valuestring),
                         seq <= 2 ? sizeof pad - 1 : 0);
        cJSON_Delete(j);
    }
}

/* The file is written member by member, not by cJSON: every member comes back exactly (escapes,
 * UTF-8, fractions, the largest exact integers, negatives, booleans, arrays and objects), in
 * order, and JSON-null members ("removed") are left out. */
static void stored_file_keeps_every_member_exactly(void **state)
{
    fixture *fx = *state;
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "run_id", "r");
    cJSON_AddStringToObject(it, "task_name", "x");
    cJSON_AddStringToObject(it, "status", "FAILED");
    cJSON_AddNumberToObject(it, "status_seq", 9007199254740991.0);
    cJSON_AddNumberToObject(it, "duration_seconds", 0.1 + 0.2);
    cJSON_AddNumberToObject(it, "exit_code", -1);
    cJSON_AddNumberToObject(it, "tiny", 5e-324);
    cJSON_AddStringToObject(it, "error_message", "l1\nl\"2\" \\ \t\x01 \xe2\x82\xac");
    cJSON_AddNullToObject(it, "trace_s3_uri");
    cJSON_AddTrueToObject(it, "t");
    cJSON_AddFalseToObject(it, "f");
    cJSON *a = cJSON_AddArrayToObject(it, "truncated_attributes");
    cJSON_AddItemToArray(a, cJSON_CreateString("big"));
    cJSON_AddItemToObject(it, "o", cJSON_Parse("{\"k\":[1,{\"z\":null}]}"));
    int before = fx->calls;
    assert_int_equal(fx->be->write(fx->be, STATUS_TASK, it, on_done, fx), 0);
    assert_int_equal(fx->calls, before + 1);
    assert_int_equal(fx->rc, 0);
    cJSON *j = stored(fx, "runs/r/tasks/x.json");
    cJSON_DeleteItemFromObject(it, "trace_s3_uri");
    assert_true(cJSON_Compare(j, it, true));
    assert_true(cJSON_GetObjectItem(j, "duration_seconds")->valuedouble == 0.1 + 0.2);
    assert_true(cJSON_GetObjectItem(j, "tiny")->valuedouble == 5e-324);
    const cJSON *m = j->child, *w = it->child;
    for (; m && w; m = m->next, w = w->next)
        assert_string_equal(m->string, w->string); /* the same order */
    assert_null(m);
    assert_null(w);
    cJSON_Delete(j);
    cJSON_Delete(it);
}

/* Writes go through the directory the backend opened: when an outside hand removes it, the next
 * write makes it again; when it is replaced by another directory holding an ended item, the write
 * checks the new directory again and is refused (no write lands in the removed directory, and no
 * condition is skipped). */
static void removed_or_replaced_directory_is_made_and_checked_again(void **state)
{
    fixture *fx = *state;
    char cmd[4096], dir[512];
    snprintf(dir, sizeof dir, "%s/state/runs/r/tasks", fx->dir);
    put_task_seq(fx, 1);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    put_task_seq(fx, 2);
    cJSON *j = stored(fx, "runs/r/tasks/x.json");
    assert_int_equal(num(j, "status_seq"), 2);
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s' && mkdir '%s' && printf '%%s' '{\"run_id\":\"r\",\"task_name\":\"x\","
             "\"status\":\"SUCCEEDED\",\"status_seq\":9}' > '%s/x.json'",
             dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(put(fx, STATUS_TASK,
                         "{\"run_id\":\"r\",\"task_name\":\"x\",\"status\":\"RUNNING\","
                         "\"status_seq\":3}"),
                     STATUS_REFUSED);
    j = stored(fx, "runs/r/tasks/x.json");
    assert_int_equal(num(j, "status_seq"), 9);
    assert_string_equal(cJSON_GetObjectItem(j, "status")->valuestring, "SUCCEEDED");
    cJSON_Delete(j);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(writes_run_and_task_files),
        T(refuses_lower_or_equal_seq),
        T(terminal_status_is_final),
        T(first_write_lands_on_queued),
        T(refuses_path_tricks),
        T(dot_names_are_written_encoded),
        T(unwritable_target_reports_path),
        T(bad_state_dir_fails_at_creation),
        T(store_and_local_backend_end_to_end),
        T(rewrites_free_no_inode),
        T(shorter_rewrite_leaves_no_old_tail),
        T(stored_file_keeps_every_member_exactly),
        T(removed_or_replaced_directory_is_made_and_checked_again),
        T(hard_linked_item_is_never_written_through),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
