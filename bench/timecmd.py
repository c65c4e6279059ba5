#!/usr/bin/env python3
"""Minimal hyperfine stand-in for the bench scripts: runs a command N times (an optional prepare
command before each run, untimed, through the shell) and prints as JSON the wall-clock median, min
and max and the mean user and system CPU time per run (command and children), in seconds. A run
that exits non-zero aborts the measurement. The command is split as the shell would (shlex) and
run without a shell, as lib.sh runs hyperfine (-N): a shell's own start-up (~0.5 ms) is not the
command's, and it matters to a cold-start figure of a few milliseconds.

Usage: timecmd.py --runs N [--prepare CMD] [--warmup N] -- CMD"""

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time


def once(cmd):
    t0 = time.perf_counter()
    rc = subprocess.call(shlex.split(cmd), stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    if rc != 0:
        sys.exit("timecmd: command exited %d: %s" % (rc, cmd))
    return dt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--prepare")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = " ".join(a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd)
    if not cmd:
        p.error("no command")
    times, user, system = [], 0.0, 0.0
    for i in range(a.warmup + a.runs):
        if a.prepare:
            subprocess.check_call(a.prepare, shell=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        dt = once(cmd)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i >= a.warmup:
            times.append(dt)
            user += after.ru_utime - before.ru_utime
            system += after.ru_stime - before.ru_stime
    print(json.dumps({"command": cmd, "median": statistics.median(times), "min": min(times),
                      "max": max(times), "user": user / a.runs, "system": system / a.runs,
                      "times": times}))


if __name__ == "__main__":
    main()
