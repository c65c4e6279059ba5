/* status.h - run and task-run status items (contract sections 3, 4, 6) and how they reach a
 * store: an item cache that sequences and coalesces writes, in front of a swappable backend
 * (local state directory, DynamoDB).
 *
 * Items are cJSON objects whose members are the item's attributes: strings are DynamoDB S,
 * numbers N, JSON null means "remove". The store stamps `status_seq` (base+1, base+2, ... per
 * item; see status_store_set_seq_base) and `updated_at` on each write it sends. At most one write
 * per item is in flight; changes made while one is in flight are coalesced into the next. At most
 * backend.max_inflight task-item writes are in flight in all; the rest wait as ready items (the
 * run item never waits) and each leaves with its state at the time it is sent. Nothing here
 * blocks the loop but the local backend's small file writes. */
#ifndef DAGY_STATUS_H
#define DAGY_STATUS_H

#include <stdint.h>
#include <stdbool.h>
#include <uv.h>
#include <cjson/cJSON.h>

typedef enum { STATUS_RUN = 0, STATUS_TASK = 1 } status_kind;

typedef struct status_backend status_backend;
typedef struct status_store status_store;

/* Completion of one backend write. rc 0: applied. rc STATUS_REFUSED: refused by the item's
 * condition (a newer or terminal item is stored: an answer, not an error; the store then reads
 * the stored item to tell its own newer write from someone else's). rc < 0: failed after the
 * backend's own retries; `err` says why (no secrets). -EAGAIN (and -ETIMEDOUT, -ECONNREFUSED...)
 * may pass with time; -EINVAL (refused as invalid), -EACCES, -ENOENT, -ENOSPC, -EROFS, -EDQUOT,
 * -EFBIG (item too large) will not. */
#define STATUS_REFUSED 1
typedef void (*status_write_cb)(void *ctx, int rc, const char *err);

/* Completion of a read: rc 0 with `stored` the item as stored (plain JSON values; NULL when
 * absent; valid only during the call), or rc < 0 with `err`. */
typedef void (*status_read_cb)(void *ctx, int rc, const cJSON *stored, const char *err);

/* A backend. `write` gets the whole item (with status_seq and updated_at already set) and must
 * call done exactly once, possibly before returning; it must not keep `item` after returning
 * (serialize it). `close` frees the backend once nothing is in flight. `coalesce_ms`: how long
 * the store gathers changes before writing them (0: on the next loop turn); a flush writes at
 * once (the local backend uses 100 ms: its writes create files). `park_above`: a released
 * item that waits is kept as text instead of a tree once more than this many items wait (0:
 * always; the DynamoDB backend, behind which thousands may wait; the local backend 256). */
struct status_backend {
    const char *name; /* "local", "dynamodb" */
    int (*write)(status_backend *b, status_kind kind, const cJSON *item, status_write_cb done,
                 void *ctx);
    /* Reads one stored item (strongly consistent); done exactly once, possibly before
     * returning. A failed call (rc < 0) never invokes done. */
    int (*read)(status_backend *b, status_kind kind, const char *run_id, const char *task_name,
                status_read_cb done, void *ctx);
    void (*close)(status_backend *b);
    uint32_t coalesce_ms;
    uint32_t max_item_bytes; /* larger items lose their largest attributes (0: no limit) */
    /* At most this many task-item writes in flight at once (0: no bound); the rest wait in
     * the store as ready items, with no request built, and are sent as writes complete. */
    uint32_t max_inflight;
    uint32_t park_above;
};

/* The local state directory backend: DIR/runs/RUN_ID.json and DIR/runs/RUN_ID/tasks/TASK.json,
 * each replaced atomically (write to a temporary file, rename). Writes a file only if the stored
 * status_seq is lower and the stored status is not terminal, like the DynamoDB conditions. */
int status_local_new(const char *state_dir, status_backend **out);

/* The DynamoDB backend: conditional UpdateItem on the runs and task-runs tables. */
struct fetch_aws;
int status_ddb_new(struct fetch_aws *aws, const char *runs_table, const char *task_runs_table,
                   status_backend **out);

/* Creates a store on `loop` writing through `backend` (ownership of the backend passes to the
 * store). */
int status_store_new(uv_loop_t *loop, status_backend *backend, status_store **out);

/* Status_seq ranges. An agent's writes carry base+1, base+2, ... with `base` chosen at start
 * (status_store_set_seq_base): 0 for a new run, above everything stored for a run taken over
 * from an agent that died (STATUS_SEQ_STRIDE more than the stored run item's seq: no item of a
 * run is written that many times by one agent). A stored seq in (base, base+STRIDE) is this
 * agent's own. The reconciler writes 10^12 (launcher/launch.h), above every agent's range. */
#define STATUS_SEQ_STRIDE 1048576ULL
#define STATUS_SEQ_MAX    (1000000000000ULL - 2 * STATUS_SEQ_STRIDE)
void status_store_set_seq_base(status_store *s, uint64_t base);
/* The next write of `item` carries a status_seq above `seq`: another writer of the same item
 * (an ECS child writing its own attempt, agent/ecs_exec.c) has written up to there. */
void status_seq_floor(status_store *s, cJSON *item, uint64_t seq);
/* The status_seq of the item's latest write sent (the seq base while none was). */
uint64_t status_item_seq(status_store *s, const cJSON *item);

/* Reads a stored item through the backend (see status_backend.read). */
int status_store_read(status_store *s, status_kind kind, const char *run_id, const char *task_name,
                      status_read_cb done, void *ctx);

/* Items. The store owns them; callers change attributes with the setters below, then call
 * status_touch() to schedule a write. `task_name` is NULL for the run item. Asking again for an
 * item that was released and is not yet written takes it back (no longer released); the
 * pointer may then differ from the one released (see status_release). */
cJSON *status_item(status_store *s, status_kind kind, const char *run_id, const char *task_name);
void status_touch(status_store *s, cJSON *item);

/* The caller is done with `item`: the store frees it as soon as its latest state is written
 * (at once if it already is). The pointer must not be used after this call. Keeps the agent's
 * memory flat on large DAGs: a finished task's item leaves memory once it is stored, and while
 * it waits for its write it is kept as compact text. An item that cannot be written stays until
 * a flush reports it. */
void status_release(status_store *s, cJSON *item);

/* Attribute setters (replace the member). The one door for strings into an item: every string
 * stored is valid UTF-8 (invalid bytes become U+FFFD; a cut copy ends on a boundary), so no
 * store can refuse an item for its encoding. */
void status_set_str(cJSON *item, const char *key, const char *val); /* NULL val removes */
void status_set_num(cJSON *item, const char *key, double val);

/* Writes everything still pending, then calls done(ud, failed_run, n_failed): failed_run is true
 * if the run item's latest state could not be written. Items still unwritten at `timeout_ms` are
 * given up; each unwritten item is logged as a `status_write_failed` event with the full item
 * (once: an item already reported for a permanent error is not logged again). Errors that will
 * not pass (see status_write_cb) end an item's wait at once.
 *
 * Outside a flush, the store reports an outage within seconds: the first failed write, or a
 * write unanswered for STATUS_DEGRADED_MS, logs `status_store_degraded` (once per outage;
 * `status_store_recovered` when a write succeeds again). A permanent error is logged as
 * `status_write_failed` at once and the item waits for its next change instead of retrying. */
#define STATUS_DEGRADED_MS 5000
void status_flush(status_store *s, uint64_t timeout_ms,
                  void (*done)(void *ud, bool failed_run, int n_failed), void *ud);

/* The last error of the run item's write (NULL if none): for the run's final line. */
const char *status_run_error(status_store *s, const cJSON *run_item);

/* True while the store is degraded (a failure and no success since). */
bool status_store_degraded(const status_store *s);

/* Status-write lag: for each write the backend confirms, the time from the oldest change it
 * carries (the status_touch that made the item due) to the confirmation, in milliseconds of loop
 * time. Samples go to `cb` in batches of STATUS_LAG_BATCH (from inside the write's completion);
 * status_store_lag_flush hands over the rest. No callback: samples are not kept. */
#define STATUS_LAG_BATCH 100
typedef void (*status_lag_cb)(void *ud, const double *lag_ms, size_t n);
void status_store_on_lag(status_store *s, status_lag_cb cb, void *ud);
void status_store_lag_flush(status_store *s);

/* Frees the store and its backend; call after status_flush completed. The loop must run once
 * more to close the store's handles. */
void status_store_free(status_store *s);

#endif
