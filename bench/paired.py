#!/usr/bin/env python3
"""Paired, alternating timing of several commands: round r runs every command once, in turn
(A B C A B C ...), so a burst of load on a shared machine hits all of them alike. Each run gets an
untimed prepare command first. For every run the wall time and the CPU time (user + system of
the command and every descendant it waited for, from wait4's rusage: no intermediate shell when
the command is a plain argv) are kept; printed as JSON: per command the medians of wall and CPU,
the min and max wall, and every run's figures. A run that exits non-zero aborts everything.

Usage: paired.py --runs N [--warmup N] NAME PREPARE CMD [NAME PREPARE CMD ...]
(PREPARE and CMD are shell command lines; CMD is split with shlex and run without a shell when
it has no shell syntax, PREPARE always through /bin/sh.)"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

SHELL_CHARS = set("|&;<>()$`\\\"'*?[#~")


def argv_of(cmd):
    """The argv to exec: the split command, or sh -c CMD when it needs a shell."""
    if SHELL_CHARS & set(cmd):
        return ["/bin/sh", "-c", cmd]
    return shlex.split(cmd)


def run_once(argv):
    """Runs argv (stdout to /dev/null) and returns (wall seconds, cpu seconds)."""
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=null)
        _, status, ru = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit("paired: command exited %d: %s" % (proc.returncode, " ".join(argv)))
    return dt, ru.ru_utime + ru.ru_stime


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("triples", nargs="+")
    a = p.parse_args()
    if len(a.triples) % 3 or a.runs < 1:
        p.error("expected NAME PREPARE CMD triples and --runs >= 1")
    cmds = [a.triples[i:i + 3] for i in range(0, len(a.triples), 3)]
    res = {name: {"command": cmd, "wall": [], "cpu": []} for name, _, cmd in cmds}
    for r in range(a.warmup + a.runs):
        for name, prep, cmd in cmds:
            subprocess.check_call(["/bin/sh", "-c", prep])
            wall, cpu = run_once(argv_of(cmd))
            if r >= a.warmup:
                res[name]["wall"].append(wall)
                res[name]["cpu"].append(cpu)
            print("paired: run %d %-12s wall %.3f s cpu %.3f s%s" %
                  (r, name, wall, cpu, " (warm-up)" if r < a.warmup else ""), file=sys.stderr)
    for d in res.values():
        d["median"] = statistics.median(d["wall"])
        d["cpu_median"] = statistics.median(d["cpu"])
        d["min"], d["max"] = min(d["wall"]), max(d["wall"])
    print(json.dumps(res))


if __name__ == "__main__":
    main()
