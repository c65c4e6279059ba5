#!/usr/bin/env python3
"""bench/ecs_poll.py - the figures of bench/ecs_poll.sh (issue 15, second benchmark): how many
DescribeTasks calls a parent dagy-agent makes while N ECS children run.

The parent runs in container mode against moto (signatures enforced), set up exactly as
tests/integration/test_ecs_exec_moto.py does (its EcsExecBase is reused here, not copied): a
flow whose map of N elements runs every child as its own ECS task (`"executor": {"type":
"ecs"}`, map max_parallel N). ECS and DynamoDB go through the suite's recording proxy
(recproxy.py), whose rewrite hook stamps every call's answer with the time here. Nobody plays
the children: moto keeps them RUNNING. From the first poll that follows every child on, the
calls of a window of WINDOW seconds are grouped into polls (a poll is a burst of reads; polls
are at least DAGY_ECS_POLL_SECONDS apart, the next armed after the last answer), then the
parent is SIGTERMed and must have StopTask'ed every child and recorded each CANCELLED. The peer
figure, a naive poller making one DescribeTasks per child per poll (Airflow's
EcsRunTaskOperator: one sensor per task), is computed from the same polls, not run.

Usage: ecs_poll.py [--children N] [--window S] [--poll S]. Prints one JSON object with the
figures on the last line of stdout (the shell script formats it); exit 1 when the run itself
went wrong (a child not launched, not stopped, not CANCELLED). Every process it starts (moto,
the parent) is stopped by its pid."""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("DAGY_AGENT", os.path.join(ROOT, "build", "dagy-agent"))
import agentenv  # noqa: E402
import awsenv  # noqa: E402
import test_agent_aws as base  # noqa: E402  (helpers only)
from test_ecs_exec_moto import EcsExecBase, EcsPlayer  # noqa: E402

READS = ("GetItem", "Query", "BatchGetItem", "Scan")
WRITES = ("UpdateItem", "PutItem", "BatchWriteItem")


class Timeline:
    """Wraps the proxy's rewrite hook: (monotonic time of the answer, operation, request) of
    every JSON call, ECS and DynamoDB alike."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self._lock = threading.Lock()

    def rewrite(self, op, req, resp):
        with self._lock:
            self.calls.append((time.monotonic(), op, req))
        return self.inner(op, req, resp)

    def last(self):
        with self._lock:
            return self.calls[-1][0] if self.calls else 0.0

    def between(self, t0, t1):
        with self._lock:
            return [c for c in self.calls if t0 <= c[0] < t1]


def polls_of(calls, gap):
    """Groups the parent's reads (DescribeTasks and task-item reads) into polls: a new poll
    starts after a pause longer than `gap` seconds."""
    polls = []
    for c in calls:
        if c[1] != "DescribeTasks" and c[1] not in READS:
            continue
        if not polls or c[0] - polls[-1][-1][0] > gap:
            polls.append([])
        polls[-1].append(c)
    return polls


class Bench(EcsExecBase):
    """The benchmark as one run of the suite's fixture (setUpClass/setUp/tearDown: moto, the
    tables, buckets, VPC, cluster, metadata servers, the proxy; tearDown validates every ECS
    request body with botocore)."""

    def runTest(self):  # unittest needs one; the benchmark is measure()
        pass

    def measure(self, n, window, poll):
        tasks = [
            {"name": "list", "command": ["sh", "-c", "echo '%s' > \"$DAGY_TASK_OUTPUT\""
                                         % json.dumps(list(range(n)))]},
            {"name": "child", "upstream": ["list"], "map": {"over": "list", "max_parallel": n},
             "executor": {"type": "ecs"}, "command": ["sleep", "3600"]},
        ]
        run_id = "ecs-poll-bench"
        env = self.parent_env(run_id, self.artifact(tasks, name="ecs_poll"),
                              AWS_ENDPOINT_URL_DYNAMODB=self.proxy.endpoint,
                              DAGY_ECS_POLL_SECONDS=str(poll), DAGY_MAX_PARALLEL=str(n),
                              DAGY_DRAIN_SECONDS="1", DAGY_LOG_LEVEL="INFO")
        env.setdefault("DAGY_ECS_RUNTASK_BURST", os.environ.get("DAGY_ECS_RUNTASK_BURST",
                                                                str(max(100, n))))
        player = EcsPlayer(self, lambda test, arn, body: None)  # nobody plays the children
        tl = Timeline(player.rewrite)
        self.proxy.rewrite = tl.rewrite
        out_path = os.path.join(self.tmp, "parent.out")
        with open(out_path, "w") as out:
            p = subprocess.Popen([base.AGENT, "--log-format", "json"], env=env, cwd=self.tmp,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
        self.addCleanup(awsenv.stop_process, p)
        t_start = time.monotonic()
        if not agentenv.wait_for(lambda: len(player.started) == n or p.poll() is not None,
                                 timeout=120) or p.poll() is not None:
            _, err = p.communicate(timeout=60)
            with open(out_path) as f:
                tail = (f.read() + err)[-2000:]
            raise SystemExit("only %d of %d children were launched (parent: exit %s)\n%s"
                             % (len(player.started), n, p.returncode, tail))
        launch_s = time.monotonic() - t_start
        t0 = self.first_full_poll(out_path, n, tl, poll)
        t1 = t0 + window
        time.sleep(max(0.0, t1 - time.monotonic()))
        # The poll under way at t1 is counted whole: wait for its last answer.
        agentenv.wait_for(lambda: time.monotonic() - tl.last() > poll / 2, timeout=60 + poll)
        t_quiet = time.monotonic()
        arns = sorted(arn for arn, _ in player.started)
        states = {t["lastStatus"] for k in range(0, n, 100) for t in self.ecs.describe_tasks(
            cluster="dagy-cluster", tasks=arns[k:k + 100])["tasks"]}
        os.kill(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=120)
        with open(out_path) as f:
            res = base.Result(p.returncode, f.read(), err)
        self.assert_no_secrets(res, env)
        return self.figures(n, window, poll, tl.between(t0, t_quiet), t1, res, arns, states,
                            run_id, launch_s)

    @staticmethod
    def first_full_poll(out_path, n, tl, poll):
        """When the window starts: the parent logged every child's ecs_task_started, then a
        poll answered (it may have been sent before the last child was followed), and the next
        one began: that one follows all n."""
        def started():
            with open(out_path) as f:
                return sum('"ecs_task_started"' in line for line in f)
        if not agentenv.wait_for(lambda: started() >= n, timeout=60):
            raise SystemExit("the parent logged ecs_task_started for fewer than %d children" % n)
        t_log = time.monotonic()
        if not agentenv.wait_for(lambda: len(polls_of(tl.between(t_log, 1e18), poll / 2)) >= 2,
                                 timeout=10 * poll + 60, interval=0.01):
            raise SystemExit("the parent did not poll twice after launching every child")
        return polls_of(tl.between(t_log, 1e18), poll / 2)[1][0][0] - 1e-6

    def figures(self, n, window, poll, calls, t1, res, arns, states, run_id, launch_s):
        polls = [pl for pl in polls_of(calls, poll / 2) if pl[0][0] < t1]
        calls = [c for pl in polls for c in pl] + [c for c in calls
                                                   if c[0] < t1 and c[1] in WRITES]
        describes = [c for c in calls if c[1] == "DescribeTasks"]
        per_poll = [sum(c[1] == "DescribeTasks" for c in pl) for pl in polls]
        reads = {op: sum(c[1] == op for c in calls) for op in READS}
        writes = [c for c in calls if c[1] in WRITES]
        late = [c for c in writes if c[0] >= polls[0][0][0] + 2 * poll] if polls else []
        starts = [pl[0][0] for pl in polls]
        stopped = sorted(s["task"] for s in self.proxy.calls("StopTask"))
        items = [self.get(run_id, "child[%d]" % k) for k in range(n)]
        cancelled = sum(1 for it in items if it and it["status"] == "CANCELLED"
                        and it.get("external_id") in arns)
        left = set(self.ecs.list_tasks(cluster="dagy-cluster",
                                       desiredStatus="RUNNING")["taskArns"]) & set(arns)
        child_minutes = n * window / 60.0
        npolls = len(polls)
        return {
            "children": n, "window_s": window, "poll_s": poll, "launch_s": launch_s,
            "runtasks": len(self.proxy.calls("RunTask")), "ecs_states": sorted(states),
            "polls": npolls, "describe_calls": len(describes),
            "calls_per_poll_max": max(per_poll) if per_poll else 0,
            "calls_per_poll": len(describes) / npolls if npolls else 0.0,
            "arns_per_call": (sum(len(c[2].get("tasks", [])) for c in describes) / len(describes)
                              if describes else 0.0),
            "calls_per_child_minute": len(describes) / child_minutes,
            "goal_calls_per_poll": math.ceil(n / 100),
            "naive_calls": n * npolls, "naive_per_child_minute": n * npolls / child_minutes,
            "reads": reads,
            "read_tables": sorted({c[2].get("TableName", "?") for c in calls if c[1] in READS}),
            "reads_per_poll": sum(reads.values()) / npolls if npolls else 0.0,
            "poll_interval_s": ((starts[-1] - starts[0]) / (npolls - 1) if npolls > 1 else 0.0),
            "poll_answer_s": (sum(pl[-1][0] - pl[0][0] for pl in polls) / npolls
                              if npolls else 0.0),
            "writes_in_window": len(writes), "writes_after_2_polls": len(late),
            "exit_code": res.code, "stoptask_arns": len(set(stopped) & set(arns)),
            "stoptask_calls": len(stopped), "cancelled": cancelled, "still_running": len(left),
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=100)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--poll", type=float, default=5.0)
    a = ap.parse_args()
    Bench.setUpClass()
    try:
        b = Bench()
        b.setUp()
        try:
            fig = b.measure(a.children, a.window, a.poll)
            b.tearDown()  # every ECS request body valid for botocore
        finally:
            b.doCleanups()
    finally:
        Bench.tearDownClass()
    print(json.dumps(fig))
    ok = (fig["exit_code"] == 143 and fig["runtasks"] == a.children
          and fig["stoptask_arns"] == a.children and fig["cancelled"] == a.children
          and fig["still_running"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
