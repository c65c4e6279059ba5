/* fuzz_ddb.c - libFuzzer harness for the DynamoDB answers dagy reads: an item (GetItem "Item",
 * Scan/Query "Items" elements) as AttributeValue JSON, and a JSON error body (__type, message).
 * Checks: unmarshal never crashes; marshal(unmarshal(x)) unmarshals to the same value (one
 * normalisation is enough); the conditional UpdateItem built from any unmarshalled item with a
 * key and a status_seq is valid JSON with a condition; the error parser's outputs are bounded
 * C strings and the code has no "namespace#" prefix left. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fetch/creds.h"
#include "proto/ddb.h"

static const char *const run_keys[] = {"run_id", NULL};
static const char *const task_keys[] = {"run_id", "task_name", NULL};

/* Round trip of one item: plain -> AttributeValues -> plain is stable after one pass. */
static void check_item(const cJSON *item)
{
    cJSON *p1 = proto_ddb_unmarshal(item);
    if (!p1)
        return;
    cJSON *m1 = proto_ddb_marshal(p1);
    cJSON *p2 = m1 ? proto_ddb_unmarshal(m1) : NULL;
    cJSON *m2 = p2 ? proto_ddb_marshal(p2) : NULL;
    cJSON *p3 = m2 ? proto_ddb_unmarshal(m2) : NULL;
    /* Compared as text: cJSON_Compare looks members up by name, which duplicate names defeat. */
    char *t2 = p2 ? cJSON_PrintUnformatted(p2) : NULL, *t3 = p3 ? cJSON_PrintUnformatted(p3) : NULL;
    if (t2 && t3 && strcmp(t2, t3) != 0)
        abort(); /* marshalling is not a fixed point after one normalisation */
    cJSON_free(t2);
    cJSON_free(t3);
    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(p1, "run_id")) &&
        cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(p1, "status_seq"))) {
        const char *const *keys = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(p1, "task_name"))
                                      ? task_keys
                                      : run_keys;
        char *body = proto_ddb_status_update("DAGY_RUNS", keys, p1);
        if (body) {
            cJSON *b = cJSON_Parse(body);
            if (!b || !cJSON_GetObjectItemCaseSensitive(b, "ConditionExpression"))
                abort(); /* the request body must be JSON and always conditional */
            cJSON_Delete(b);
            free(body);
        }
    }
    cJSON_Delete(p1);
    cJSON_Delete(m1);
    cJSON_Delete(p2);
    cJSON_Delete(m2);
    cJSON_Delete(p3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char code[128], msg[512];
    cJSON *ej = cJSON_ParseWithLength((const char *)data, size);
    code[0] = msg[0] = '\0';
    if (ej)
        fetch__json_error(ej, code, sizeof code, msg, sizeof msg);
    cJSON_Delete(ej);
    if (strnlen(code, sizeof code) == sizeof code || strnlen(msg, sizeof msg) == sizeof msg)
        abort();
    if (strchr(code, '#'))
        abort(); /* the namespace prefix is cut at the last '#' */

    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    if (!j)
        return 0;
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "Items"), *e;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(j, "Item");
    if (item)
        check_item(item);
    cJSON_ArrayForEach(e, items) check_item(e);
    if (!item && !items)
        check_item(j);
    cJSON_Delete(j);
    return 0;
}
