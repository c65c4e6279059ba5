/* test_results.c - the files of task attempts (agent/results.c) on a real temporary directory:
 * a result is accepted only as exactly one JSON value and never blocks the caller, inputs files
 * are built from the stored values (numbers kept digit for digit), and recycled inputs files
 * never carry one task's inputs to another, whatever the names. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/run.h"
#include "proto/util.h"

/* A run with the tasks `names` (task k > 0 depends on every task before it when `chain`). */
typedef struct {
    run_state r;
    agent_config cfg;
    flowspec spec;
    flowspec_task tasks[4];
    agent_task atasks[4];
    size_t ups[4][4];
    char dir[64];
} fx;

static fx *fx_new(const char *const *names, size_t n, bool chain)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/dagy-test-results.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->cfg.max_result_bytes = 1 << 20;
    f->r.cfg = &f->cfg;
    f->r.run_dir = f->dir;
    f->r.spec = &f->spec;
    f->spec.tasks = f->tasks;
    f->spec.n_tasks = n;
    f->r.tasks = f->atasks;
    sched_task_def defs[4];
    memset(defs, 0, sizeof defs);
    for (size_t k = 0; k < n; k++) {
        f->tasks[k].name = (char *)names[k];
        for (size_t u = 0; chain && u < k; u++)
            f->ups[k][f->tasks[k].n_upstream++] = u;
        f->tasks[k].upstream = f->ups[k];
        f->atasks[k].ft = &f->tasks[k]; /* what the driver sets in agent__tasks_init */
        defs[k] = (sched_task_def){.name = names[k],
                                   .upstream = f->ups[k],
                                   .n_upstream = f->tasks[k].n_upstream,
                                   .retry_backoff = 1};
    }
    assert_int_equal(sched_new(defs, n, 4, 1, NULL, NULL, &f->r.plan), 0);
    char err[AGENT_ERR_MAX];
    assert_int_equal(agent__results_init(&f->r, err), 0);
    return f;
}

static void fx_free(fx *f)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    agent__inputs_free(&f->r);
    agent__results_close(&f->r);
    sched_free(f->r.plan);
    free(f->r.exec_dir);
    free(f);
}

/* Writes `data` as task i's DAGY_TASK_OUTPUT of attempt 1. */
static void put_output(fx *f, size_t i, const char *data, size_t len)
{
    char *p = agent__task_file(&f->r, AGENT_DIR_OUT, i, 1);
    assert_int_equal(proto_write_file_atomic(p, data, len, 0600, false), 0);
    free(p);
}

/* Reads task i's result; returns the error (or "" and the text in *text). */
static const char *read_result(fx *f, size_t i, char **text)
{
    static char err[AGENT_ERR_MAX];
    size_t len = 0;
    err[0] = '\0';
    int rc = agent__task_result_read(&f->r, i, 1, text, &len, err, sizeof err);
    assert_true(rc == 0 || rc == -EBADMSG);
    assert_int_equal(rc == 0, err[0] == '\0');
    if (!rc && *text)
        assert_int_equal(len, strlen(*text));
    return err;
}

static void expect_bad(fx *f, const char *data, size_t len, const char *why)
{
    put_output(f, 0, data, len);
    char *text = NULL;
    const char *err = read_result(f, 0, &text);
    assert_null(text);
    if (!strstr(err, why))
        fail_msg("for %.40s: got \"%s\", want \"%s\"", data, err, why);
    assert_non_null(strstr(err, "the result of task \"a\" (attempt 1) in DAGY_TASK_OUTPUT "));
}

static void result_must_be_exactly_one_json_value(void **state)
{
    static const char *const names[] = {"a"};
    fx *f = fx_new(names, 1, false);
    char *text = NULL;
    assert_string_equal(read_result(f, 0, &text), ""); /* no file: no result */
    assert_null(text);
    expect_bad(f, "{\"x\":1} trailing, garbage", 25,
               "more than one JSON value (trailing data at "
               "byte 8)");
    expect_bad(f, "{\"x\":1}, \"b\": {\"fake\": 1}", 25, "more than one JSON value");
    expect_bad(f, "1 2", 3, "more than one JSON value");
    expect_bad(f, "{\"a\":\"x\0y\"}", 11, "has a NUL byte at byte 7");
    expect_bad(f, "\"\xC3\x28\"", 4, "is not valid UTF-8 at byte 1");
    expect_bad(f, "\"\xED\xA0\x80\"", 5, "is not valid UTF-8"); /* a UTF-16 surrogate */
    expect_bad(f, "{\"a\":}", 6, "is not valid JSON (at byte 5)");
    expect_bad(f, " \n\t", 3, "is empty");
    expect_bad(f, "", 0, "is empty");
    put_output(f, 0, "  {\"a\": [1, \"]\"]}\n\n", 19);
    assert_string_equal(read_result(f, 0, &text), "");
    assert_string_equal(text, "{\"a\": [1, \"]\"]}"); /* trimmed, otherwise as written */
    free(text);
    fx_free(f);
}

static void nesting_is_bounded_at_512_levels(void **state)
{
    static const char *const names[] = {"a"};
    fx *f = fx_new(names, 1, false);
    char buf[2 * 600 + 8];
    for (int depth = 512; depth <= 513; depth++) {
        memset(buf, '[', (size_t)depth);
        memset(buf + depth, ']', (size_t)depth);
        put_output(f, 0, buf, 2 * (size_t)depth);
        char *text = NULL;
        const char *err = read_result(f, 0, &text);
        if (depth == 512) {
            assert_string_equal(err, "");
            free(text);
        } else {
            assert_non_null(strstr(err, "nested deeper than 512 levels (at byte 512)"));
        }
    }
    /* brackets inside strings do not count */
    memset(buf, 0, sizeof buf);
    buf[0] = '"';
    memset(buf + 1, '[', 1000);
    buf[1001] = '"';
    put_output(f, 0, buf, 1002);
    char *text = NULL;
    assert_string_equal(read_result(f, 0, &text), "");
    free(text);
    fx_free(f);
}

static void fifo_symlink_and_oversized_output_fail_without_blocking(void **state)
{
    static const char *const names[] = {"a"};
    fx *f = fx_new(names, 1, false);
    char *p = agent__task_file(&f->r, AGENT_DIR_OUT, 0, 1);
    assert_int_equal(mkfifo(p, 0600), 0); /* no writer: a blocking open would hang here */
    char *text = NULL;
    assert_non_null(strstr(read_result(f, 0, &text), "is not a regular file (a FIFO)"));
    unlink(p);
    assert_int_equal(symlink("/etc/hostname", p), 0);
    assert_non_null(strstr(read_result(f, 0, &text), "is a symbolic link"));
    unlink(p);
    f->cfg.max_result_bytes = 8;
    put_output(f, 0, "[1,2,3,4,5]", 11);
    assert_non_null(
        strstr(read_result(f, 0, &text), "is larger than DAGY_MAX_RESULT_BYTES (8 bytes)"));
    free(p);
    fx_free(f);
}

/* Runs task i to SUCCEEDED in the plan. */
static void succeed(fx *f, size_t i)
{
    assert_int_equal(sched_next(f->r.plan, 0), (long)i);
    sched_exited(f->r.plan, i, SCHED_EXIT_OK, NULL, 0);
}

static char *inputs_of(fx *f, size_t i, int attempt)
{
    char *path = NULL, err[AGENT_ERR_MAX];
    assert_int_equal(agent__inputs_build(&f->r, i, attempt, &path, err, sizeof err), 0);
    char *text = proto_read_file(path, 1 << 20, NULL);
    assert_non_null(text);
    agent__inputs_done_transfer(&f->r, path); /* the attempt ends: its file may be reused */
    return text;
}

static void inputs_built_from_stored_values_keep_every_digit(void **state)
{
    static const char *const names[] = {"a", "_none", ".x", "down"};
    fx *f = fx_new(names, 4, true);
    char err[AGENT_ERR_MAX];
    char *t = inputs_of(f, 0, 1);
    assert_string_equal(t, "{}");
    free(t);
    const char *big = "{\"id\": 9007199254740993, \"huge\": 1e400}";
    assert_int_equal(agent__task_result_store(&f->r, 0, big, strlen(big), err, sizeof err), 0);
    succeed(f, 0);
    t = inputs_of(f, 1, 1); /* reuses a's inputs file */
    assert_string_equal(t, "{\"a\":{\"id\": 9007199254740993, \"huge\": 1e400}}");
    free(t);
    succeed(f, 1); /* _none: no result */
    t = inputs_of(f, 2, 1);
    assert_string_equal(t, "{\"a\":{\"id\": 9007199254740993, \"huge\": 1e400},\"_none\":null}");
    free(t);
    succeed(f, 2);
    t = inputs_of(f, 3, 2);
    assert_string_equal(t, "{\"a\":{\"id\": 9007199254740993, \"huge\": 1e400},\"_none\":null,"
                           "\".x\":null}");
    free(t);
    /* a shorter inputs file written into the longest one's inode is cut to its own length */
    t = inputs_of(f, 0, 2);
    assert_string_equal(t, "{}");
    free(t);
    /* ".x" is stored as %2Ex: never a hidden file, never a temporary's ".~" name */
    char *p = agent__task_file(&f->r, AGENT_DIR_IN, 2, 1);
    assert_non_null(strstr(p, "/in/%2Ex.1.json"));
    free(p);
    /* at most one inputs file is on disk: each new one reused the last ended one's inode */
    char in[128];
    snprintf(in, sizeof in, "ls %s/in | wc -l | grep -qx 1", f->r.exec_dir);
    assert_int_equal(system(in), 0);
    fx_free(f);
}

/* A results/ file that a task planted for an upstream that stored no result is never read
 * into a downstream's inputs (the agent knows which results it stored, and probes no file). */
static void planted_result_of_an_upstream_without_result_is_ignored(void **state)
{
    static const char *const names[] = {"quiet", "down"};
    fx *f = fx_new(names, 2, true);
    succeed(f, 0); /* quiet: no result */
    char *p = agent__task_file(&f->r, AGENT_DIR_RESULTS, 0, 0);
    assert_non_null(p);
    FILE *w = fopen(p, "w");
    assert_non_null(w);
    fputs("\"forged\"", w);
    fclose(w);
    free(p);
    char *t = inputs_of(f, 1, 1);
    assert_string_equal(t, "{\"quiet\":null}");
    free(t);
    fx_free(f);
}

/* The inputs file is written relative to the in/ directory the agent made: once that directory
 * is removed (a file now stands at its path), the write fails with ENOENT, named with its path,
 * and nothing is written through the new file. */
static void failed_inputs_write_names_path_and_errno(void **state)
{
    static const char *const names[] = {"a"};
    fx *f = fx_new(names, 1, false);
    char in[128], *path = NULL, err[AGENT_ERR_MAX];
    snprintf(in, sizeof in, "%s/in", f->r.exec_dir);
    assert_int_equal(rmdir(in), 0);
    int fd = open(in, O_CREAT | O_WRONLY, 0600); /* a file where the directory was */
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(agent__inputs_build(&f->r, 0, 1, &path, err, sizeof err), -ENOENT);
    assert_null(path);
    assert_non_null(strstr(err, "cannot write DAGY_TASK_INPUTS file "));
    assert_non_null(strstr(err, "/in/a.1.json: No such file or directory"));
    struct stat st;
    assert_int_equal(stat(in, &st), 0);
    assert_int_equal(st.st_size, 0); /* the file at the old path is untouched */
    fx_free(f);
}

/* An earlier attempt knows in/ and may plant a FIFO at the next attempt's name: the write fails
 * (no spare file) or replaces it (a spare is renamed over it), and never blocks. */
static void planted_fifo_at_the_next_inputs_name_never_blocks(void **state)
{
    static const char *const names[] = {"a"};
    fx *f = fx_new(names, 1, false);
    char *p2 = agent__task_file(&f->r, AGENT_DIR_IN, 0, 2), *path = NULL, err[AGENT_ERR_MAX];
    assert_int_equal(mkfifo(p2, 0600), 0);
    assert_int_equal(agent__inputs_build(&f->r, 0, 2, &path, err, sizeof err), -EEXIST);
    assert_non_null(strstr(err, "/in/a.2.json: File exists"));
    char *t = inputs_of(f, 0, 1); /* attempt 1's file becomes spare */
    free(t);
    t = inputs_of(f, 0, 2); /* renamed over the FIFO, then written */
    assert_string_equal(t, "{}");
    free(t);
    free(p2);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(result_must_be_exactly_one_json_value),
        cmocka_unit_test(nesting_is_bounded_at_512_levels),
        cmocka_unit_test(fifo_symlink_and_oversized_output_fail_without_blocking),
        cmocka_unit_test(inputs_built_from_stored_values_keep_every_digit),
        cmocka_unit_test(planted_result_of_an_upstream_without_result_is_ignored),
        cmocka_unit_test(failed_inputs_write_names_path_and_errno),
        cmocka_unit_test(planted_fifo_at_the_next_inputs_name_never_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
