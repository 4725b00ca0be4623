#!/usr/bin/env python3
"""CPU per interval of `record -p PID` against `top --json -p PID` (issue 10: record at 1 Hz costs
no more than top), in the same run, both pinned to one CPU, both without probes (NoProbes: each
pays only for /proc, the model and its own output; the probes are the same for both).

Per round and command: one run of INTERVALS intervals; each child notes its process CPU time at
every interval (Model.step, called once an interval by both) and reports (last - sixth) /
(INTERVALS - 6) from the sixth: start-up, imports, the first snapshot and the first intervals
(5-15 ms each in both while caches fill) are left out; every later snapshot,
policy read, SQLite commit and JSON line is in. The configurations alternate within a round, the
order rotated each round. Prints min / median / max over the rounds and the ratio record / top.

    sudo python3 bench/record_bench.py [--rounds 3] [--intervals 40] [--interval 1] [--cpu 0]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Both children time themselves: process CPU at each Model.step (one per interval, in both), so
# interpreter start-up, the probes' (here: none) attach and the first snapshot are left out.
TIMED = """
import sys, time
WARMUP = 5      # the first intervals of either are 5-15 ms (caches filling, lazy imports)
from pmemtrace import interval
stamps = []
_step = interval.Model.step
def step(self, counts):
    stamps.append(time.process_time())
    return _step(self, counts)
interval.Model.step = step
"""
REPORT = """
with open(sys.argv[5], "w") as f:
    f.write(repr((stamps[-1] - stamps[WARMUP]) / (len(stamps) - 1 - WARMUP)))
"""

TOP = TIMED + """
from pmemtrace.interval import NoProbes
from pmemtrace.views import top
with open("/dev/null", "w") as out:
    top.run(interval=float(sys.argv[2]), count=int(sys.argv[3]), pid=int(sys.argv[1]), as_json=True,
            probes_factory=lambda features, pid: NoProbes(), out=out)
""" + REPORT

RECORD = TIMED + """
from pmemtrace.interval import NoProbes
from pmemtrace.views import record
with open("/dev/null", "w") as err:
    record.run(sys.argv[4], [int(sys.argv[1])], None, False, interval=float(sys.argv[2]),
               duration=float(sys.argv[2]) * int(sys.argv[3]), probes_factory=lambda features, pid: NoProbes(),
               err=err)
""" + REPORT


def target(sleep_only=False):
    """A process with a stable address space and resident THP memory: diff_arena aligned (64 MiB
    MADV_HUGEPAGE), as in the README's figure; `sleep` if gcc is missing."""
    exe = Path(tempfile.gettempdir()) / "pmemtrace-bench-diff_arena"
    if sleep_only:
        return subprocess.Popen(["sleep", "100000"], stdin=subprocess.PIPE)
    try:
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "tests/workloads/diff_arena.c")], check=True)
        p = subprocess.Popen([str(exe), "aligned"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
    except (OSError, subprocess.CalledProcessError):
        p = subprocess.Popen(["sleep", "100000"], stdin=subprocess.PIPE)
    return p


def cpu_of(code, pid, interval, count, cpu, tmp):
    """ms of CPU an interval, from the second interval to the last (the child's own clock)."""
    out = os.path.join(tmp, f"r{time.monotonic_ns()}.db")
    res = out + ".ms"
    subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-c", code, str(pid), str(interval), str(count),
                    out, res], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    with open(res) as f:
        ms = float(f.read()) * 1000
    for path in (out, res):
        if os.path.exists(path):
            os.unlink(path)
    return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--intervals", type=int, default=40)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--sleep", action="store_true", help="watch an idle `sleep` (no THP workload: a smoke run)")
    a = ap.parse_args()
    w = target(a.sleep)
    per = {"top": [], "record": []}
    ratios = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(a.rounds):
                order = [("top", TOP), ("record", RECORD)][:: 1 if r % 2 == 0 else -1]
                got = {}
                for name, code in order:
                    got[name] = cpu_of(code, w.pid, a.interval, a.intervals, a.cpu, tmp)
                    per[name].append(got[name])
                ratios.append(got["record"] / got["top"])
                print(f"round {r + 1}: top {got['top']:.2f} ms, record {got['record']:.2f} ms an interval, "
                      f"ratio {ratios[-1]:.3f}", flush=True)
    finally:
        if w.stdin:
            w.stdin.close()
        w.terminate()
        w.wait()

    def mmm(xs):
        return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"
    print(f"CPU per {a.interval:g} s interval, median (min-max) over {a.rounds} rounds: "
          f"top --json -p {mmm(per['top'])} ms, record -p {mmm(per['record'])} ms; "
          f"ratio record/top {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
