#!/usr/bin/env python3
"""resume_bench.py - the figures of bench/resume.sh (durable runs, issue 10):

  resume   a 200-task layered flow (20 layers x 10, each task `sleep 0.05` and a small result),
           max_parallel 2, local status: a full run; a run SIGTERMed once half of its tasks
           SUCCEEDED (drain 15 s: running tasks finish); the resume of that run. Prints the
           resumed run's wall time as a fraction of the full run's (goal <= 0.55).
  results  the 2000-task layered DAG of dag_bench.sh (bench/gen_layered.py), each task writing a
           small result, local status: results kept in the run directory vs stored in S3 on
           moto (DAGY_RESULTS_BUCKET; signatures not checked) - the makespan ratio (goal
           <= 1.3), and the check that every task item carries its result_s3_uri.

Usage: resume_bench.py WORK_DIR AGENT [--runs N]. Prints one JSON object with the figures on the
last line of stdout (the shell script formats it). Every process it starts is stopped by pid."""

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import awsenv  # noqa: E402

RESULT_CMD = "printf '{\"task\": \"%s\"}' \"$DAGY_TASK_NAME\" > \"$DAGY_TASK_OUTPUT\""


def layered(path, layers, width, cmd, max_parallel=2):
    """A layered DAG like gen_layered.py's, with `cmd` as every task's shell command."""
    tasks = []
    for k in range(layers):
        for i in range(width):
            t = {"name": "t%d_%d" % (k, i), "command": ["sh", "-c", cmd]}
            if k:
                t["upstream"] = sorted({"t%d_%d" % (k - 1, i), "t%d_%d" % (k - 1, (i + 1) % width)})
            tasks.append(t)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "flow_spec.json"), "w") as f:
        json.dump({"spec_version": 1, "name": "bench_resume", "version": "1",
                   "max_parallel": max_parallel, "tasks": tasks}, f)
    return path


def base_env(work, extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGY_", "AWS_"))}
    env.update({"DAGY_WORK_DIR": os.path.join(work, "work"), "DAGY_STATUS_BACKEND": "local"})
    env.update(extra or {})
    return env


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_of(pid):
    """CPU seconds (user + system) a running process used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_timed(argv, env, cpu=None):
    """Runs the agent to its end; returns (seconds, exit code). With a list `cpu`, appends the
    CPU seconds of the agent and its tasks."""
    c0, t0 = cpu_children(), time.monotonic()
    p = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=600)
    if cpu is not None:
        cpu.append(cpu_children() - c0)
    return time.monotonic() - t0, p.returncode


def interrupted(argv, env, n_tasks):
    """Starts the agent, SIGTERMs it once half of the tasks SUCCEEDED, waits for its exit."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, start_new_session=True)
    done = 0
    try:
        for line in p.stdout:
            ev = json.loads(line)
            if ev.get("event_type") == "task_end" and ev.get("status") == "SUCCEEDED":
                done += 1
                if done == n_tasks // 2:
                    os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=60)
    finally:
        awsenv.stop_process(p)
    return done, p.returncode


def bench_resume(work, agent, runs):
    flow = layered(os.path.join(work, "flow200"), 20, 10, "sleep 0.05; " + RESULT_CMD)
    state = os.path.join(work, "state200")
    cmd = [agent, "--flow", flow, "--state-dir", state, "--log-format", "json"]
    env = base_env(work)
    full, resumed = [], []
    done_at_stop = []
    for n in range(runs):
        t, code = run_timed(cmd + ["--run-id", "full-%d" % n], env)
        if code != 0:
            raise SystemExit("full run failed (exit %d)" % code)
        full.append(t)
        done, code = interrupted(cmd + ["--run-id", "cut-%d" % n], env, 200)
        if code != 143:
            raise SystemExit("interrupted run exited %d, not 143" % code)
        done_at_stop.append(done)
        t, code = run_timed(cmd + ["--run-id", "resumed-%d" % n, "--resume-from", "cut-%d" % n],
                            env)
        if code != 0:
            raise SystemExit("resumed run failed (exit %d)" % code)
        resumed.append(t)
        with open(os.path.join(state, "runs", "resumed-%d.json" % n)) as f:
            reused = json.load(f).get("tasks_reused", 0)
    return {"full_s": statistics.median(full), "resumed_s": statistics.median(resumed),
            "ratio": statistics.median(resumed) / statistics.median(full),
            "succeeded_at_sigterm": done_at_stop, "reused_last": reused}


def bench_results(work, agent, runs, layers, width):
    flow = layered(os.path.join(work, "flow2000"), layers, width, RESULT_CMD)
    n_tasks = layers * width
    state = os.path.join(work, "state2000")
    cmd = [agent, "--flow", flow, "--state-dir", state, "--log-format", "json",
           "--max-parallel", "2"]
    with awsenv.Moto(auth=False) as m:
        m.client("s3").create_bucket(Bucket="bench-results")
        s3_env = base_env(work, {"AWS_ENDPOINT_URL": m.endpoint, "AWS_REGION": m.region,
                                 "AWS_ACCESS_KEY_ID": "AKIDBENCH",
                                 "AWS_SECRET_ACCESS_KEY": "bench-secret",
                                 "AWS_CONFIG_FILE": "/dev/null",
                                 "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                                 "AWS_EC2_METADATA_DISABLED": "true",
                                 "DAGY_RESULTS_BUCKET": "bench-results"})
        local_env = base_env(work)
        loc, s3, loc_cpu, s3_cpu, moto_cpu = [], [], [], [], []
        for n in range(runs + 1):  # the first pair is a warm-up
            t, code = run_timed(cmd + ["--run-id", "loc-%d" % n], local_env, loc_cpu)
            if code:
                raise SystemExit("local run failed (exit %d)" % code)
            loc.append(t)
            m0 = cpu_of(m.proc.pid)
            t, code = run_timed(cmd + ["--run-id", "s3-%d" % n], s3_env, s3_cpu)
            if code:
                raise SystemExit("S3-results run failed (exit %d)" % code)
            moto_cpu.append(cpu_of(m.proc.pid) - m0)
            s3.append(t)
        tasks_dir = os.path.join(state, "runs", "s3-%d" % runs, "tasks")
        stored = 0
        for fn in os.listdir(tasks_dir):
            with open(os.path.join(tasks_dir, fn)) as f:
                it = json.load(f)
            stored += it.get("status") == "SUCCEEDED" and "result_s3_uri" in it
    loc, s3, loc_cpu, s3_cpu, moto_cpu = loc[1:], s3[1:], loc_cpu[1:], s3_cpu[1:], moto_cpu[1:]
    return {"local_s": statistics.median(loc), "s3_s": statistics.median(s3),
            "ratio": statistics.median(s3) / statistics.median(loc), "tasks": n_tasks,
            "stored": stored, "local_cpu_s": statistics.median(loc_cpu),
            "s3_cpu_s": statistics.median(s3_cpu),
            "cpu_ratio": statistics.median(s3_cpu) / statistics.median(loc_cpu),
            "moto_cpu_s": statistics.median(moto_cpu), "ncpu": os.cpu_count()}


def main():
    work, agent = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
    layers = int(os.environ.get("LAYERS", "20"))
    width = int(os.environ.get("WIDTH", "100"))
    out = {"resume": bench_resume(work, agent, runs),
           "results": bench_results(work, agent, runs, layers, width)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
