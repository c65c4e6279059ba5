/* sched_int.h - internals shared by the scheduler's files (sched.c: the plan; sched_map.c: map
 * nodes and their children). Not for other modules. */
#ifndef DAGY_SCHED_INT_H
#define DAGY_SCHED_INT_H

#include "scheduler/sched.h"

#define NO_POS UINT32_MAX
/* Delays and timeouts are clamped here (about 142 years) so now + delay can never wrap. */
#define MAX_MS ((uint64_t)1 << 52)

/* One task run. Kept small: a 2000-task plan is ~100 bytes a task plus the edges. */
struct task {
    const char *name;        /* points into plan->names */
    double delay_s;          /* retry_delay_seconds */
    double backoff;          /* retry_backoff */
    double max_delay_s;      /* retry_max_delay_seconds */
    double timeout_s;        /* <= 0: no timeout */
    uint64_t due_ms;         /* RUNNING: timeout deadline; RETRYING: when eligible again */
    uint64_t retry_delay_ms; /* delay chosen for the pending retry */
    uint32_t n_up;           /* upstream count */
    uint32_t n_succ, n_fail, n_skip, n_cancel; /* finished upstreams by outcome */
    uint32_t heap_pos; /* index in whichever heap holds the task (at most one), or NO_POS */
    uint32_t cause;    /* PENDING: the finished upstream with the worst outcome so far;
                          SKIPPED: the upstream that decided it (NO_POS: none) */
    uint32_t root;     /* SKIPPED by a failure or cancel: the FAILED/CANCELLED task at its root */
    int attempt, max_attempts;
    uint8_t state;      /* sched_state */
    uint8_t trigger;    /* sched_trigger */
    uint8_t skip_cause; /* sched_skip_cause, once SKIPPED */
    bool jitter;
    bool finishing;  /* RUNNING, process ended, slot released (sched_finishing) */
    uint32_t parent; /* a map child: its map node; NO_POS otherwise */
    uint32_t map;    /* a map node: its slot in plan->maps; NO_POS otherwise */
};

/* A map node's fan-out (sched.h, "dynamic fan-out"). */
struct map_state {
    uint32_t node, over; /* the map node and the upstream it maps over */
    uint32_t first, n;   /* its children, once expanded */
    uint32_t next;       /* children released so far (in element order) */
    uint32_t admitted;   /* released and not yet terminal */
    uint32_t done, failed, cancelled, first_failed;
    int max_par, allow_fail, child_attempts;
    bool expanded;
    char *names; /* the children's names, NUL-separated */
};

/* A binary min-heap of task indices. Unkeyed heaps order by index (spec order); keyed ones by
 * (due_ms, index). A task sits in at most one heap at a time (ready: eligible to start; retry:
 * waiting out a delay; timeout: running with a deadline), so one heap_pos per task suffices. */
typedef struct {
    uint32_t *a;
    uint32_t n;
    bool keyed;
} heap;

struct sched_plan {
    struct task *tasks;
    size_t n;
    uint32_t *down_off; /* n + 1 offsets into down[] (CSR adjacency) */
    uint32_t *down;     /* downstream task indices */
    char *names;        /* all names, NUL-separated */
    uint32_t *work;     /* ring of tasks that just became terminal, awaiting propagation */
    size_t work_head, work_len;
    heap ready, retry, timeout;
    size_t n_static;        /* tasks from sched_new(); children follow them */
    struct map_state *maps; /* one per map node */
    size_t n_maps;
    uint32_t *joined; /* map nodes whose children are all terminal, to complete */
    size_t n_joined;
    size_t count[SCHED_CANCELLED + 1]; /* tasks per state */
    size_t n_terminal;
    size_t n_finishing; /* RUNNING tasks that no longer hold a max_parallel slot */
    int max_parallel;
    bool draining;
    uint64_t rng; /* splitmix64 state for jitter */
    char *msg;    /* reason buffer, valid during one callback */
    size_t msg_cap;
    size_t footprint;
    sched_transition_cb cb;
    void *ud;
};

/* sched.c */
void sched__heap_push(sched_plan *p, heap *h, uint32_t x);
/* Formats a reason into the plan's buffer (valid until the next one). */
const char *sched__reasonf(sched_plan *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* sched_map.c */
/* Counts the map nodes of defs, checks `over`, sets them up. 0, -EINVAL or -ENOMEM. */
int sched__init_maps(sched_plan *p, const sched_task_def *defs);
/* A map child became terminal (from set_state). */
void sched__child_done(sched_plan *p, uint32_t i);

#endif
