/* ecs_exec.h - internals shared by the two sides of the per-task ECS executor: ecs_exec.c (the
 * parent: RunTask, following, StopTask) and ecs_child.c (DAGY_ONLY_TASK). The hooks the rest of
 * the agent calls are the agent__ecs_* declarations in run.h. Not a public interface. */
#ifndef DAGY_ECS_EXEC_H
#define DAGY_ECS_EXEC_H

#include "agent/run.h"
#include "agent/durable.h"

typedef struct agent_ecs agent_ecs;

/* A child writes its task's item from the stored status_seq + ECS_CHILD_SEQ_GAP on; a parent
 * whose attempt ended writes from (its seq when the child started) + 2 * ECS_CHILD_SEQ_GAP on:
 * a child writes an item a handful of times, so the two ranges never meet, and a late write of
 * a stopped child never replaces what the parent recorded after it. */
#define ECS_CHILD_SEQ_GAP 1000

#endif
