/* test_metrics.c - CloudWatch Embedded Metric Format lines (agent/metrics.h): every line the agent
 * prints for metrics is checked by a validator written from the EMF specification
 * (CloudWatch_Embedded_Metric_Format_Specification: root object with `_aws`; Timestamp integer
 * milliseconds; directives with Namespace, Dimensions (sets of at most 30 keys) and Metrics (at
 * most 100, names 1-255 characters, units from CloudWatch's list); every referenced dimension a
 * string member and every metric a number or an array of at most 100 numbers), and the
 * validator itself is shown to refuse documents that break each rule. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "agent/log.h"
#include "agent/metrics.h"
#include "proto/util.h"

/* ---- the validator (from the specification) ---- */

static const char *const units[] = {"Seconds",
                                    "Microseconds",
                                    "Milliseconds",
                                    "Bytes",
                                    "Kilobytes",
                                    "Megabytes",
                                    "Gigabytes",
                                    "Terabytes",
                                    "Bits",
                                    "Kilobits",
                                    "Megabits",
                                    "Gigabits",
                                    "Terabits",
                                    "Percent",
                                    "Count",
                                    "Bytes/Second",
                                    "Kilobytes/Second",
                                    "Megabytes/Second",
                                    "Gigabytes/Second",
                                    "Terabytes/Second",
                                    "Bits/Second",
                                    "Kilobits/Second",
                                    "Megabits/Second",
                                    "Gigabits/Second",
                                    "Terabits/Second",
                                    "Count/Second",
                                    "None"};

static bool name_ok(const cJSON *s)
{
    return cJSON_IsString(s) && strlen(s->valuestring) >= 1 && strlen(s->valuestring) <= 255;
}

/* Only the members `allowed` (NULL-terminated): spec objects carry no others. */
static bool only_members(const cJSON *o, const char *const *allowed)
{
    for (const cJSON *m = o->child; m; m = m->next) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok |= !strcmp(m->string, *a);
        if (!ok)
            return false;
    }
    return true;
}

static bool metric_def_ok(const cJSON *root, const cJSON *def, const char **why)
{
    static const char *const keys[] = {"Name", "Unit", "StorageResolution", NULL};
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(def, "Name");
    const cJSON *unit = cJSON_GetObjectItemCaseSensitive(def, "Unit");
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(def, "StorageResolution");
    if (!cJSON_IsObject(def) || !only_members(def, keys) || !name_ok(name))
        return *why = "MetricDefinition needs Name (1-255 characters) and nothing unknown", false;
    bool unit_known = !unit;
    for (size_t i = 0; unit && cJSON_IsString(unit) && i < sizeof units / sizeof units[0]; i++)
        unit_known |= !strcmp(unit->valuestring, units[i]);
    if (!unit_known)
        return *why = "Unit is not a CloudWatch unit", false;
    if (res && !(cJSON_IsNumber(res) && (res->valuedouble == 1 || res->valuedouble == 60)))
        return *why = "StorageResolution must be 1 or 60", false;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name->valuestring);
    if (cJSON_IsNumber(v))
        return true;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > 100)
        return *why = "a metric member must be a number or an array of at most 100", false;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) if (!cJSON_IsNumber(e)) return *why = "a value is not a number", false;
    return true;
}

static bool directive_ok(const cJSON *root, const cJSON *d, const char **why)
{
    static const char *const keys[] = {"Namespace", "Dimensions", "Metrics", NULL};
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(d, "Namespace");
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(d, "Dimensions");
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(d, "Metrics");
    if (!cJSON_IsObject(d) || !only_members(d, keys) || !name_ok(ns) || !cJSON_IsArray(dims) ||
        !cJSON_IsArray(ms))
        return *why = "MetricDirective needs Namespace, Dimensions and Metrics", false;
    if (cJSON_GetArraySize(ms) > 100)
        return *why = "more than 100 metrics in a directive", false;
    const cJSON *set, *key, *def;
    cJSON_ArrayForEach(set, dims)
    {
        if (!cJSON_IsArray(set) || cJSON_GetArraySize(set) > 30)
            return *why = "a DimensionSet is an array of at most 30 keys", false;
        cJSON_ArrayForEach(key, set)
        {
            const cJSON *v = cJSON_IsString(key)
                                 ? cJSON_GetObjectItemCaseSensitive(root, key->valuestring)
                                 : NULL;
            if (!cJSON_IsString(v) || !*v->valuestring || strlen(v->valuestring) > 1024)
                return *why = "a dimension's member is missing or not a 1-1024 char string", false;
        }
    }
    cJSON_ArrayForEach(def, ms) if (!metric_def_ok(root, def, why)) return false;
    return true;
}

/* True if `root` is a valid EMF document; *why says what is wrong otherwise. */
static bool emf_valid(const cJSON *root, const char **why)
{
    const cJSON *aws = cJSON_GetObjectItemCaseSensitive(root, "_aws");
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(aws, "Timestamp");
    const cJSON *cwm = cJSON_GetObjectItemCaseSensitive(aws, "CloudWatchMetrics");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(aws))
        return *why = "no _aws object at the root", false;
    if (!cJSON_IsNumber(ts) || ts->valuedouble != floor(ts->valuedouble) || ts->valuedouble < 0)
        return *why = "Timestamp must be an integer of milliseconds", false;
    if (!cJSON_IsArray(cwm) || !cJSON_GetArraySize(cwm))
        return *why = "CloudWatchMetrics must be an array of directives", false;
    const cJSON *d;
    cJSON_ArrayForEach(d, cwm) if (!directive_ok(root, d, why)) return false;
    return true;
}

/* ---- fixtures ---- */

static int out_fd = -1;

static int setup(void **state)
{
    (void)state;
    out_fd = memfd_create("metrics", 0);
    /* WARNING: metrics lines must not depend on DAGY_LOG_LEVEL. */
    agent_log_init(LOG_FORMAT_JSON, LOG_WARNING, out_fd);
    agent_log_context("run-1", "etl_pipeline", "1.0.0", "acme", "corr-1");
    assert_int_equal(agent_metrics_configure(NULL, NULL, 0), 0);
    return out_fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    close(out_fd);
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, 1);
    return 0;
}

/* Every line written so far, parsed (each must be one JSON object); *n gets the count. */
static cJSON **lines(size_t *n)
{
    off_t len = lseek(out_fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)len + 1);
    assert_int_equal(pread(out_fd, buf, (size_t)len, 0), len);
    cJSON **out = calloc(1024, sizeof *out);
    *n = 0;
    for (char *p = buf, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        assert_non_null(nl);
        out[*n] = cJSON_ParseWithLength(p, (size_t)(nl - p));
        assert_non_null(out[*n]);
        (*n)++;
    }
    free(buf);
    return out;
}

static void free_lines(cJSON **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(l[i]);
    free(l);
}

static cJSON *only_line(void)
{
    size_t n;
    cJSON **l = lines(&n);
    assert_int_equal(n, 1);
    cJSON *one = l[0];
    free(l);
    return one;
}

static void assert_emf(const cJSON *doc)
{
    const char *why = NULL;
    if (!emf_valid(doc, &why))
        fail_msg("not a valid EMF document: %s", why);
}

/* The names the directive declares, comma-separated. */
static void declared(const cJSON *doc, char *out, size_t cap)
{
    const cJSON *d = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "_aws"), "CloudWatchMetrics"), 0);
    const cJSON *m;
    out[0] = '\0';
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(d, "Metrics"))
    {
        snprintf(out + strlen(out), cap - strlen(out), "%s%s:%s", out[0] ? "," : "",
                 cJSON_GetObjectItem(m, "Name")->valuestring,
                 cJSON_GetObjectItem(m, "Unit")->valuestring);
    }
}

/* ---- the lines ---- */

static void run_metrics_are_one_valid_emf_line_in_the_log_envelope(void **state)
{
    (void)state;
    agent_metrics_run(12.5, 1, 2, 3, 0.012345);
    cJSON *doc = only_line();
    assert_emf(doc);
    char names[512];
    declared(doc, names, sizeof names);
    assert_string_equal(names, "RunDuration:Seconds,TasksFailed:Count,TasksRetried:Count,"
                               "TasksSkipped:Count,EstimatedCostUSD:None");
    assert_float_equal(cJSON_GetObjectItem(doc, "RunDuration")->valuedouble, 12.5, 1e-9);
    assert_int_equal(cJSON_GetObjectItem(doc, "TasksRetried")->valueint, 2);
    assert_float_equal(cJSON_GetObjectItem(doc, "EstimatedCostUSD")->valuedouble, 0.012345, 1e-12);
    /* Namespace, dimension and the envelope (contract section 7). */
    const cJSON *d = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "_aws"), "CloudWatchMetrics"), 0);
    assert_string_equal(cJSON_GetObjectItem(d, "Namespace")->valuestring, "Dagy");
    char *dims = cJSON_PrintUnformatted(cJSON_GetObjectItem(d, "Dimensions"));
    assert_string_equal(dims, "[[\"flow_name\"]]");
    free(dims);
    assert_string_equal(cJSON_GetObjectItem(doc, "flow_name")->valuestring, "etl_pipeline");
    assert_string_equal(cJSON_GetObjectItem(doc, "event_type")->valuestring, "metrics");
    assert_string_equal(cJSON_GetObjectItem(doc, "run_id")->valuestring, "run-1");
    /* No member the runbook's queries filter on (status, duration_seconds). */
    assert_null(cJSON_GetObjectItem(doc, "status"));
    assert_null(cJSON_GetObjectItem(doc, "duration_seconds"));
    double ts = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "_aws"), "Timestamp")->valuedouble;
    assert_true(fabs(ts - proto_now() * 1000.0) < 60000);
    cJSON_Delete(doc);
}

static void unknown_cost_is_not_declared(void **state)
{
    (void)state;
    agent_metrics_run(3, 0, 0, 0, -1);
    cJSON *doc = only_line();
    assert_emf(doc);
    char names[512];
    declared(doc, names, sizeof names);
    assert_null(strstr(names, "EstimatedCostUSD"));
    assert_null(cJSON_GetObjectItem(doc, "EstimatedCostUSD"));
    cJSON_Delete(doc);
}

static void task_and_phase_metrics_name_their_metric(void **state)
{
    (void)state;
    agent_metrics_task_attempt("extract", 2, 1.25);
    agent_metrics_phase("DownloadDuration", "s3://b/k.zip", 0.5);
    agent_metrics_phase("UnpackDuration", "s3://b/k.zip", 0.25);
    size_t n;
    cJSON **l = lines(&n);
    assert_int_equal(n, 3);
    const char *want[] = {"TaskDuration:Seconds", "DownloadDuration:Seconds",
                          "UnpackDuration:Seconds"};
    for (size_t i = 0; i < n; i++) {
        char names[128];
        assert_emf(l[i]);
        declared(l[i], names, sizeof names);
        assert_string_equal(names, want[i]);
    }
    assert_string_equal(cJSON_GetObjectItem(l[0], "task_name")->valuestring, "extract");
    assert_int_equal(cJSON_GetObjectItem(l[0], "attempt")->valueint, 2);
    free_lines(l, n);
}

/* A batch of lag samples is one array member of at most 100 values; more are cut, not split
 * into an invalid document. */
static void status_lag_is_an_array_of_at_most_100_values(void **state)
{
    (void)state;
    double v[150];
    for (int i = 0; i < 150; i++)
        v[i] = i;
    agent_metrics_status_lag(v, 100);
    agent_metrics_status_lag(v, 150);
    agent_metrics_status_lag(v, 0); /* nothing to say: no line */
    size_t n;
    cJSON **l = lines(&n);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_emf(l[i]);
        const cJSON *a = cJSON_GetObjectItem(l[i], "StatusWriteLag");
        assert_true(cJSON_IsArray(a));
        assert_int_equal(cJSON_GetArraySize(a), 100);
        assert_int_equal(cJSON_GetArrayItem(a, 99)->valueint, 99);
    }
    free_lines(l, n);
}

/* NaN or infinite values would print as null (an invalid metric value): they are left out,
 * and a metric with no value left is not declared. */
static void non_finite_values_are_left_out(void **state)
{
    (void)state;
    agent_metrics_run(NAN, 1, 0, 0, INFINITY);
    double v[] = {1, NAN, 3};
    agent_metrics_status_lag(v, 3);
    size_t n;
    cJSON **l = lines(&n);
    assert_int_equal(n, 2);
    char names[512];
    assert_emf(l[0]);
    declared(l[0], names, sizeof names);
    assert_string_equal(names, "TasksFailed:Count,TasksRetried:Count,TasksSkipped:Count");
    assert_null(cJSON_GetObjectItem(l[0], "RunDuration"));
    assert_emf(l[1]);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(l[1], "StatusWriteLag")), 2);
    free_lines(l, n);
}

/* DAGY_METRICS=0, the pretty view, or no flow name yet (an empty dimension value is refused
 * by CloudWatch): no metrics line at all. */
static void no_line_when_off_pretty_or_without_flow_name(void **state)
{
    (void)state;
    char err[128];
    assert_int_equal(agent_metrics_configure("0", err, sizeof err), 0);
    assert_false(agent_metrics_enabled());
    agent_metrics_run(1, 0, 0, 0, 0.1);
    assert_int_equal(agent_metrics_configure("1", err, sizeof err), 0);
    agent_log_init(LOG_FORMAT_PRETTY, LOG_INFO, out_fd);
    agent_metrics_run(1, 0, 0, 0, 0.1);
    agent_log_init(LOG_FORMAT_JSON, LOG_INFO, out_fd);
    agent_log_context(NULL, "", NULL, NULL, NULL);
    agent_metrics_run(1, 0, 0, 0, 0.1);
    assert_int_equal(lseek(out_fd, 0, SEEK_END), 0);
    agent_log_context(NULL, "etl_pipeline", NULL, NULL, NULL);
    assert_int_equal(agent_metrics_configure("maybe", err, sizeof err), -22);
    assert_non_null(strstr(err, "DAGY_METRICS"));
    assert_true(agent_metrics_enabled());
}

/* The metadata is written as text: values keep their precision (as cJSON prints them), a name
 * or unit that would need escaping is not declared rather than written raw, and a buffer too
 * small gives no text at all, never a cut one. */
static void metadata_text_is_exact_and_never_cut(void **state)
{
    (void)state;
    char buf[512];
    double third = 1.0 / 3, big = 1e300, one = 1;
    agent_metric m[] = {{"Third", "Seconds", &third, 1},
                        {"Bad\"Name", "Count", &one, 1},
                        {"Big", "No\\ne", &big, 1},
                        {"Big", "None", &big, 1}};
    size_t len =
        agent_metrics_emf_metadata(buf, sizeof buf, "Dagy", "flow_name", m, 4, 1700000000123);
    assert_int_equal(len, strlen(buf));
    cJSON *doc = cJSON_Parse(buf);
    assert_non_null(doc);
    assert_int_equal((int64_t)cJSON_GetObjectItem(doc, "Timestamp")->valuedouble, 1700000000123);
    const cJSON *defs = cJSON_GetObjectItem(
        cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "CloudWatchMetrics"), 0), "Metrics");
    assert_int_equal(cJSON_GetArraySize(defs), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(defs, 0), "Name")->valuestring,
                        "Third");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(defs, 1), "Unit")->valuestring,
                        "None");
    cJSON_Delete(doc);
    for (size_t cap = 0; cap <= len; cap++) /* cap == len: no room for the NUL */
        assert_int_equal(
            agent_metrics_emf_metadata(buf, cap, "Dagy", "flow_name", m, 4, 1700000000123), 0);
    assert_int_equal(agent_metrics_emf_metadata(buf, sizeof buf, "Da gy", "flow_name", m, 4, 1), 0);
    assert_int_equal(agent_metrics_emf_metadata(buf, sizeof buf, "Dagy", "flow_name", m + 1, 1, 1),
                     0);

    /* the printed values read back exactly */
    agent_metrics_task_attempt("t", 1, third);
    size_t n;
    cJSON **l = lines(&n);
    assert_int_equal(n, 1);
    assert_emf(l[0]);
    assert_true(cJSON_GetObjectItem(l[0], "TaskDuration")->valuedouble == third);
    free_lines(l, n);
}

/* ---- the validator refuses what the specification forbids ---- */

static bool valid_text(const char *json)
{
    const char *why;
    cJSON *doc = cJSON_Parse(json);
    assert_non_null(doc);
    bool ok = emf_valid(doc, &why);
    cJSON_Delete(doc);
    return ok;
}

/* A document with one directive: dimension sets `dims`, metric definitions `metrics`, and the
 * root members flow_name, M (1) and `extra`. */
static bool valid_doc(const char *dims, const char *metrics, const char *extra)
{
    size_t cap = strlen(dims) + strlen(metrics) + strlen(extra) + 256;
    char *buf = malloc(cap);
    snprintf(buf, cap,
             "{\"_aws\":{\"Timestamp\":1700000000000,\"CloudWatchMetrics\":[{\"Namespace\":"
             "\"Dagy\",\"Dimensions\":%s,\"Metrics\":%s}]},\"flow_name\":\"f\",\"M\":1%s}",
             dims, metrics, extra);
    bool ok = valid_text(buf);
    free(buf);
    return ok;
}

static void validator_refuses_each_broken_rule(void **state)
{
    (void)state;
    const char *dim = "[[\"flow_name\"]]";
    assert_true(valid_doc(dim, "[{\"Name\":\"M\",\"Unit\":\"Count\"}]", ""));
    /* referenced metric absent, dimension absent, metric a string, unknown unit */
    assert_false(valid_doc(dim, "[{\"Name\":\"X\"}]", ""));
    assert_false(valid_doc("[[\"nope\"]]", "[{\"Name\":\"M\"}]", ""));
    assert_false(valid_doc(dim, "[{\"Name\":\"S\"}]", ",\"S\":\"1\""));
    assert_false(valid_doc(dim, "[{\"Name\":\"M\",\"Unit\":\"Sec\"}]", ""));
    /* an empty dimension value, an unknown member in a directive or a definition */
    assert_false(valid_doc("[[\"e\"]]", "[]", ",\"e\":\"\""));
    assert_false(valid_doc(dim, "[{\"Name\":\"M\",\"Extra\":1}]", ""));
    assert_false(valid_doc(dim, "[],\"Extra\":1", ""));
    /* Timestamp as a string, or with a fraction */
    assert_false(valid_text("{\"_aws\":{\"Timestamp\":\"1\",\"CloudWatchMetrics\":[]}}"));
    assert_false(valid_text("{\"_aws\":{\"Timestamp\":1.5,\"CloudWatchMetrics\":[{\"Namespace\":"
                            "\"D\",\"Dimensions\":[],\"Metrics\":[]}]}}"));
    /* 101 metrics, 31 dimension keys, a 256-character name, 101 values */
    char buf[8192];
    size_t o = 0;
    for (int i = 0; i < 101; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s{\"Name\":\"M\"}", i ? "," : "[");
    snprintf(buf + o, sizeof buf - o, "]");
    assert_false(valid_doc(dim, buf, ""));
    buf[strlen(buf) - strlen(",{\"Name\":\"M\"}]")] = '\0'; /* 100 are allowed */
    strcat(buf, "]");
    assert_true(valid_doc(dim, buf, ""));
    o = 0;
    for (int i = 0; i < 31; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"flow_name\"", i ? "," : "[[");
    snprintf(buf + o, sizeof buf - o, "]]");
    assert_false(valid_doc(buf, "[]", ""));
    char longname[300], extra[400];
    memset(longname, 'n', 256);
    longname[256] = '\0';
    snprintf(buf, sizeof buf, "[{\"Name\":\"%s\"}]", longname);
    snprintf(extra, sizeof extra, ",\"%s\":1", longname);
    assert_false(valid_doc(dim, buf, extra));
    o = (size_t)snprintf(extra, sizeof extra, ",\"A\":");
    for (int i = 0; i < 101; i++)
        o += (size_t)snprintf(extra + o, sizeof extra - o, "%s%d", i ? "," : "[", i % 10);
    snprintf(extra + o, sizeof extra - o, "]");
    assert_false(valid_doc(dim, "[{\"Name\":\"A\"}]", extra));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(run_metrics_are_one_valid_emf_line_in_the_log_envelope,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_cost_is_not_declared, setup, teardown),
        cmocka_unit_test_setup_teardown(task_and_phase_metrics_name_their_metric, setup, teardown),
        cmocka_unit_test_setup_teardown(status_lag_is_an_array_of_at_most_100_values, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(non_finite_values_are_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(no_line_when_off_pretty_or_without_flow_name, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(metadata_text_is_exact_and_never_cut, setup, teardown),
        cmocka_unit_test(validator_refuses_each_broken_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
