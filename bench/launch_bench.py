#!/usr/bin/env python3
"""bench/launch_bench.py - `dagy-launch batch` of N launches vs N sequential `aws ecs run-task`
CLI calls, both against the same moto_server (signatures enforced), in the same run.

Each batch launch does the whole job (flow lookup, run item QUEUED, RunTask with the full
request, external_id recorded): 4 AWS calls per launch; each CLI call does one RunTask only.
Prints the figures and the speed-up; exit 1 with --strict when it is below the goal.

Usage: launch_bench.py [--n 100] [--batch-runs 3] [--goal 10] [--strict]
Environment: DAGY_LAUNCH (default build/dagy-launch), AWS_CLI (default aws)."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("DAGY_LAUNCH", os.path.join(ROOT, "build", "dagy-launch"))
import launchenv  # noqa: E402


def timed(argv, env, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit("command failed (%d): %s\n%s" % (p.returncode, " ".join(argv[:3]), p.stderr[-2000:]))
    return dt, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--batch-runs", type=int, default=3)
    ap.add_argument("--goal", type=float, default=10.0)
    ap.add_argument("--strict", action="store_true")
    a = ap.parse_args()
    launch = os.environ["DAGY_LAUNCH"]
    aws = os.environ.get("AWS_CLI", "aws")
    if not os.access(launch, os.X_OK):
        sys.exit("dagy-launch not found at %s (build it, or set DAGY_LAUNCH)" % launch)
    if not shutil.which(aws):
        sys.exit("the AWS CLI (%s) is not installed" % aws)

    with launchenv.LaunchEnv() as L:
        # ECS straight to moto: no recording proxy in the measured path.
        env = L.env(AWS_ENDPOINT_URL_ECS=L.moto.endpoint)
        for args in (["init-tables"],):
            timed([launch] + args, env)
        r, _ = L.register("bench_flow", "1.0.0", env=env)
        if r.returncode != 0:
            sys.exit("register-flow failed: " + r.stderr)
        # Warm-up: registers the dagy-worker task definition both sides use.
        _, out = timed([launch, "run", "--flow", "bench_flow", "--org", launchenv.ORG], env)
        task_arn = json.loads(out)["task_arn"]
        td = L.describe_task(task_arn)["taskDefinitionArn"]

        reqs = [{"flow_name": "bench_flow", "parameters": {"shard": str(i)}} for i in range(a.n)]
        f = L.path("requests.json")
        with open(f, "w") as fh:
            json.dump(reqs, fh)
        batch_times = []
        for _ in range(a.batch_runs):
            dt, out = timed([launch, "batch", "--file", f, "--org", launchenv.ORG], env)
            res = json.loads(out)
            if len(res) != a.n or not all(x["success"] for x in res):
                sys.exit("batch did not launch everything")
            batch_times.append(dt)

        cli_env = dict(env)
        net = "awsvpcConfiguration={subnets=[%s],securityGroups=[%s],assignPublicIp=DISABLED}" % (L.subnet, L.sg)
        t0 = time.perf_counter()
        for i in range(a.n):
            overrides = json.dumps({"containerOverrides": [{"name": "dagy-worker", "environment": [
                {"name": "DAGY_RUN_ID", "value": "cli-%d" % i}]}]})
            timed([aws, "ecs", "run-task", "--endpoint-url", L.moto.endpoint, "--region", L.moto.region,
                   "--cluster", L.cluster, "--task-definition", td, "--launch-type", "FARGATE",
                   "--network-configuration", net, "--overrides", overrides,
                   "--started-by", "bench-cli", "--output", "json"], cli_env)
        cli_total = time.perf_counter() - t0

    batch = statistics.median(batch_times)
    speedup = cli_total / batch
    print("launches:                 %d" % a.n)
    print("dagy-launch batch:        %.3f s median of %d (%s)" % (batch, len(batch_times),
                                                              ", ".join("%.3f" % t for t in batch_times)))
    print("  per launch:             %.1f ms (flow lookup + PutItem + RunTask + UpdateItem)" % (1000 * batch / a.n))
    print("aws ecs run-task x %d:    %.3f s sequential (%.1f ms per call, RunTask only)" % (a.n, cli_total, 1000 * cli_total / a.n))
    verdict = "PASS" if speedup >= a.goal else "MISS"
    print("speed-up:                 %.1fx (goal >= %gx): %s" % (speedup, a.goal, verdict))
    return 1 if a.strict and verdict == "MISS" else 0


if __name__ == "__main__":
    sys.exit(main())
