/* test_ddbjson.c - DynamoDB JSON: marshal/unmarshal round trips, number text, and the exact
 * body of the conditional status UpdateItem (golden). */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/ddb.h"

/* Marshals `plain`, compares with `wire` (both JSON text), unmarshals back to `plain`. */
static void check_round_trip(const char *plain, const char *wire)
{
    cJSON *p = cJSON_Parse(plain), *w = cJSON_Parse(wire);
    assert_non_null(p);
    assert_non_null(w);
    cJSON *m = proto_ddb_marshal(p);
    assert_non_null(m);
    char *got = cJSON_PrintUnformatted(m);
    char *want = cJSON_PrintUnformatted(w);
    assert_string_equal(got, want);
    cJSON *back = proto_ddb_unmarshal(m);
    assert_true(cJSON_Compare(back, p, true));
    free(got);
    free(want);
    cJSON_Delete(back);
    cJSON_Delete(m);
    cJSON_Delete(p);
    cJSON_Delete(w);
}

static void marshal_scalars_and_containers(void **state)
{
    check_round_trip("{\"a\":\"x\",\"n\":3,\"l\":[\"p\",\"q\"],\"m\":{\"k\":true},\"z\":null}",
                     "{\"a\":{\"S\":\"x\"},\"n\":{\"N\":\"3\"},"
                     "\"l\":{\"L\":[{\"S\":\"p\"},{\"S\":\"q\"}]},"
                     "\"m\":{\"M\":{\"k\":{\"BOOL\":true}}},\"z\":{\"NULL\":true}}");
    check_round_trip("{}", "{}");
    check_round_trip("{\"e\":\"\",\"u\":\"h\\u00e9\\\"\",\"b\":false,\"l\":[]}",
                     "{\"e\":{\"S\":\"\"},\"u\":{\"S\":\"h\\u00e9\\\"\"},\"b\":{\"BOOL\":false},"
                     "\"l\":{\"L\":[]}}");
}

/* Numbers go out as the shortest text that reads back as the same double. */
static void marshal_numbers_shortest_round_trip(void **state)
{
    check_round_trip("{\"a\":0.1,\"b\":1.5,\"c\":-2,\"d\":1e300,\"e\":123456789012345}",
                     "{\"a\":{\"N\":\"0.1\"},\"b\":{\"N\":\"1.5\"},\"c\":{\"N\":\"-2\"},"
                     "\"d\":{\"N\":\"1e+300\"},\"e\":{\"N\":\"123456789012345\"}}");
    check_round_trip("{\"x\":0.30000000000000004,\"y\":4503599627370497}",
                     "{\"x\":{\"N\":\"0.30000000000000004\"},\"y\":{\"N\":\"4503599627370497\"}}");
}

/* Sets (SS, NS) come back as arrays; unknown types (B) are skipped. */
static void unmarshal_sets_and_unknown_types(void **state)
{
    cJSON *w = cJSON_Parse("{\"ss\":{\"SS\":[\"a\",\"b\"]},\"ns\":{\"NS\":[\"1\",\"2.5\"]},"
                           "\"bin\":{\"B\":\"AAEC\"},\"bad\":{},\"n\":{\"N\":\"7\"}}");
    cJSON *p = proto_ddb_unmarshal(w);
    char *got = cJSON_PrintUnformatted(p);
    assert_string_equal(got, "{\"ss\":[\"a\",\"b\"],\"ns\":[1,2.5],\"n\":7}");
    free(got);
    cJSON_Delete(p);
    cJSON_Delete(w);
}

static const char *const run_keys[] = {"run_id", NULL};
static const char *const task_keys[] = {"run_id", "task_name", NULL};

/* The whole request, byte for byte: placeholders for every name and value, REMOVE for null. */
static void status_update_golden(void **state)
{
    cJSON *it = cJSON_Parse("{\"run_id\":\"r-1\",\"task_name\":\"extract\",\"status\":\"FAILED\","
                            "\"attempt\":2,\"error_message\":null,\"duration_seconds\":1.25,"
                            "\"status_seq\":7}");
    char *body = proto_ddb_status_update("DAGY_TASK_RUNS", task_keys, it);
    assert_non_null(body);
    assert_string_equal(
        body,
        "{\"TableName\":\"DAGY_TASK_RUNS\","
        "\"Key\":{\"run_id\":{\"S\":\"r-1\"},\"task_name\":{\"S\":\"extract\"}},"
        "\"UpdateExpression\":\"SET #a0 = :v0, #a1 = :v1, #a3 = :v3, #a4 = :v4 REMOVE #a2\","
        "\"ConditionExpression\":\"(attribute_not_exists(#seq) OR #seq < :seq) AND "
        "(attribute_not_exists(#st) OR NOT (#st IN (:t0, :t1, :t2, :t3)) OR #st = :st)\","
        "\"ExpressionAttributeNames\":{\"#a0\":\"status\",\"#a1\":\"attempt\","
        "\"#a2\":\"error_message\",\"#a3\":\"duration_seconds\",\"#a4\":\"status_seq\","
        "\"#seq\":\"status_seq\",\"#st\":\"status\"},"
        "\"ExpressionAttributeValues\":{\":v0\":{\"S\":\"FAILED\"},\":v1\":{\"N\":\"2\"},"
        "\":v3\":{\"N\":\"1.25\"},\":v4\":{\"N\":\"7\"},\":seq\":{\"N\":\"7\"},"
        "\":t0\":{\"S\":\"SUCCEEDED\"},\":t1\":{\"S\":\"FAILED\"},\":t2\":{\"S\":\"CANCELLED\"},"
        "\":t3\":{\"S\":\"SKIPPED\"},\":st\":{\"S\":\"FAILED\"}}}");
    free(body);
    cJSON_Delete(it);
}

/* Without a status in the item, a terminal stored item is never replaced (no ":st" escape). */
static void status_update_without_status(void **state)
{
    cJSON *it = cJSON_Parse("{\"run_id\":\"r\",\"last_heartbeat_at\":\"t\",\"status_seq\":2}");
    char *body = proto_ddb_status_update("DAGY_RUNS", run_keys, it);
    assert_non_null(body);
    cJSON *req = cJSON_Parse(body);
    const cJSON *cond = cJSON_GetObjectItem(req, "ConditionExpression");
    assert_null(strstr(cond->valuestring, ":st)"));
    assert_null(strstr(cond->valuestring, "#st = :st"));
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(req, "ExpressionAttributeValues"), ":st"));
    assert_string_equal(cJSON_GetObjectItem(req, "UpdateExpression")->valuestring,
                        "SET #a0 = :v0, #a1 = :v1");
    cJSON_Delete(req);
    free(body);
    cJSON_Delete(it);
}

/* Missing key attributes or status_seq: no request (a write must always be sequenced). */
static void status_update_refuses_incomplete_items(void **state)
{
    cJSON *no_seq = cJSON_Parse("{\"run_id\":\"r\",\"status\":\"RUNNING\"}");
    cJSON *no_task = cJSON_Parse("{\"run_id\":\"r\",\"status_seq\":1}");
    cJSON *num_key = cJSON_Parse("{\"run_id\":5,\"status_seq\":1}");
    assert_null(proto_ddb_status_update("T", run_keys, no_seq));
    assert_null(proto_ddb_status_update("T", task_keys, no_task));
    assert_null(proto_ddb_status_update("T", run_keys, num_key));
    assert_null(proto_ddb_status_update("", run_keys, no_task));
    char *ok = proto_ddb_status_update("T", run_keys, no_task);
    assert_non_null(ok);
    free(ok);
    cJSON_Delete(no_seq);
    cJSON_Delete(no_task);
    cJSON_Delete(num_key);
}

/* Attribute values that look like expression syntax stay values (placeholders only). */
static void status_update_never_splices_text(void **state)
{
    cJSON *it = cJSON_Parse("{\"run_id\":\"r\",\"name\":\"x = :v0 REMOVE #a0\",\"status_seq\":1}");
    char *body = proto_ddb_status_update("T", run_keys, it);
    cJSON *req = cJSON_Parse(body);
    assert_string_equal(cJSON_GetObjectItem(req, "UpdateExpression")->valuestring,
                        "SET #a0 = :v0, #a1 = :v1");
    cJSON_Delete(req);
    free(body);
    cJSON_Delete(it);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(marshal_scalars_and_containers),
        cmocka_unit_test(marshal_numbers_shortest_round_trip),
        cmocka_unit_test(unmarshal_sets_and_unknown_types),
        cmocka_unit_test(status_update_golden),
        cmocka_unit_test(status_update_without_status),
        cmocka_unit_test(status_update_refuses_incomplete_items),
        cmocka_unit_test(status_update_never_splices_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
