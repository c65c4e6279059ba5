/* ddb.h - DynamoDB JSON wire format: plain JSON values <-> AttributeValue maps, and the
 * conditional UpdateItem request the status writers send. No I/O. */
#ifndef DAGY_DDB_H
#define DAGY_DDB_H

#include <cjson/cJSON.h>

/* {"a":"x","n":3,"l":["p","q"],"m":{...},"z":null} ->
 * {"a":{"S":"x"},"n":{"N":"3"},"l":{"L":[{"S":"p"},{"S":"q"}]},"m":{"M":{...}},"z":{"NULL":true}}.
 * Booleans become BOOL. Returns a new object (caller frees) or NULL on allocation failure. */
cJSON *proto_ddb_marshal(const cJSON *plain);
/* The reverse (S, N, BOOL, NULL, L, M, SS, NS); unknown types are skipped. */
cJSON *proto_ddb_unmarshal(const cJSON *item);

/* Builds the body of a status UpdateItem: sets every attribute of `item` except the key
 * attributes (REMOVE for JSON null members), with the condition that the write applies only if
 * the stored status_seq is absent or lower than the item's status_seq, and the stored status is
 * not terminal (SUCCEEDED, FAILED, CANCELLED, SKIPPED) unless equal to the new status.
 * key_names: NULL-terminated list ("run_id", NULL) or ("run_id", "task_name", NULL).
 * Returns a malloc'd JSON string, or NULL. */
char *proto_ddb_status_update(const char *table, const char *const *key_names, const cJSON *item);

/* The run-item attribute of the launcher's sparse active-runs index (docs/launch.md): present
 * ("1") only while a run is QUEUED or RUNNING; a terminal write removes it. Shared by the agent
 * and dagy-launch. */
#define PROTO_ACTIVE_RUNS_ATTR "active_shard"

#endif
