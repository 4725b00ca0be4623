#!/usr/bin/env python3
"""CPU per interval of `record -p PID` against `top --json -p PID` (issue 10: record at 1 Hz costs
no more than top), in the same run, both pinned to one CPU, both without probes (NoProbes: each
pays only for /proc, the model and its own output; the probes are the same for both).

Per round and command: two runs of SHORT and LONG intervals; CPU per interval = (user+sys of the
long run - of the short run) / (LONG - SHORT), so interpreter start-up and imports cancel out.
The configurations alternate within a round, the order rotated each round. Prints min / median /
max over the rounds and the ratio record / top per round.

    sudo python3 bench/record_bench.py [--rounds 3] [--short 5] [--long 35] [--interval 1] [--cpu 0]
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

TOP = """
import sys
from pmemtrace.interval import NoProbes
from pmemtrace.views import top
with open("/dev/null", "w") as out:
    top.run(interval=float(sys.argv[2]), count=int(sys.argv[3]), pid=int(sys.argv[1]), as_json=True,
            probes_factory=lambda features, pid: NoProbes(), out=out)
"""

RECORD = """
import sys
from pmemtrace.interval import NoProbes
from pmemtrace.views import record
with open("/dev/null", "w") as err:
    record.run(sys.argv[4], [int(sys.argv[1])], None, False, interval=float(sys.argv[2]),
               duration=float(sys.argv[2]) * int(sys.argv[3]), probes_factory=lambda features, pid: NoProbes(),
               err=err)
"""


def target():
    """A process with a stable address space and resident THP memory: diff_arena aligned (64 MiB
    MADV_HUGEPAGE), as in the README's figure; `sleep` if gcc is missing."""
    exe = Path(tempfile.gettempdir()) / "pmemtrace-bench-diff_arena"
    try:
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "tests/workloads/diff_arena.c")], check=True)
        p = subprocess.Popen([str(exe), "aligned"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
    except (OSError, subprocess.CalledProcessError):
        p = subprocess.Popen(["sleep", "100000"], stdin=subprocess.PIPE)
    return p


def cpu_of(code, pid, interval, count, cpu, tmp):
    out = os.path.join(tmp, f"r{time.monotonic_ns()}.db")
    p = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", code, str(pid), str(interval), str(count),
                          out], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    _, status, ru = os.wait4(p.pid, 0)
    if status:
        raise SystemExit(f"bench child failed: status {status}")
    if os.path.exists(out):
        os.unlink(out)
    return ru.ru_utime + ru.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--short", type=int, default=5)
    ap.add_argument("--long", type=int, default=35)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--cpu", type=int, default=0)
    a = ap.parse_args()
    w = target()
    per = {"top": [], "record": []}
    ratios = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(a.rounds):
                order = [("top", TOP), ("record", RECORD)][:: 1 if r % 2 == 0 else -1]
                got = {}
                for name, code in order:
                    short = cpu_of(code, w.pid, a.interval, a.short, a.cpu, tmp)
                    long_ = cpu_of(code, w.pid, a.interval, a.long, a.cpu, tmp)
                    got[name] = (long_ - short) / (a.long - a.short) * 1000
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
