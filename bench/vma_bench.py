"""Cost of pmemtrace against the number of VMAs: `report` and `pages` (--json and text, into a
pipe) and one `top -p` interval on a process with 1,000 / 10,000 / 60,000 VMAs (bench/many_vmas.c: one
anonymous mapping split by mprotect, every page resident).

    sudo /opt/pmemtrace/venv/bin/python bench/vma_bench.py [--counts 1000,10000,60000] [--runs 3] [--cpu 1]

Every command runs pinned to one CPU (taskset), RUNS times; the script prints min / median /
max of wall time and peak RSS (the command and its children, from wait4). The baseline in the
same run is `cat /proc/PID/smaps` (what the kernel alone takes to produce the text). `report
--json` is also run on two CPUs (--cpus2, default 0,1): its helper process then reads smaps (the
kernel's share of the work) while the command parses, as it does for a user who does not pin it.
A `top -p` interval is measured as (CPU of `top 1 11 -p PID`) - (CPU of `top 1 1 -p PID`),
divided by 10: the per-interval cost without the probes' compile and attach (real probes, so
root); "wall" is the wall time of `top 1 11` less that of `top 1 1`, over 10: the interval kept.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def build():
    out = os.path.join(tempfile.mkdtemp(prefix="vma_bench"), "many_vmas")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", out, os.path.join(ROOT, "bench", "many_vmas.c")], check=True)
    return out


def measure(cmd, cpu):
    """(wall seconds, peak RSS MB, CPU seconds) of one run of cmd pinned to cpu (one CPU or a
    taskset list), output discarded."""
    t = time.perf_counter()
    p = subprocess.Popen(["taskset", "-c", str(cpu), *cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read().decode()
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err}")
    return wall, ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime


def spread(values, fmt):
    return "/".join(fmt % v for v in (min(values), statistics.median(values), max(values)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1000,10000,60000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--cpus2", default="0,1", help="CPUs of the unpinned report --json row")
    ap.add_argument("--no-top", action="store_true", help="skip the top -p interval (it loads BPF)")
    ap.add_argument("--busy", action="store_true",
                    help="also a top -p interval on a process that faults all the time (no quiet interval)")
    a = ap.parse_args()
    binary = build()
    pm = [PYTHON, "-m", "pmemtrace"]
    print("min/median/max over %d runs, pinned to CPU %d" % (a.runs, a.cpu))
    print(f"{'VMAs':>7} {'what':<16} {'wall s':>20} {'peak RSS MB':>16} {'x cat smaps':>12}")
    for n in map(int, a.counts.split(",")):
        w = subprocess.Popen([binary, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert w.stdout.readline().startswith("ready")
        pid = str(w.pid)
        try:
            base = [measure(["cat", f"/proc/{pid}/smaps"], a.cpu) for _ in range(a.runs)]
            base_med = statistics.median(b[0] for b in base)
            rows = [("cat smaps", base)]
            for what, args in (("report --json", ["report", "--json", pid]),
                               ("pages --json", ["pages", "--json", pid]),
                               ("report (text)", ["report", pid]),
                               ("pages (text)", ["pages", pid])):
                rows.append((what, [measure(pm + args, a.cpu) for _ in range(a.runs)]))
            rows.append((f"report, CPUs {a.cpus2}", [measure(pm + ["report", "--json", pid], a.cpus2)
                                                     for _ in range(a.runs)]))
            for what, runs in rows:
                walls = [r[0] for r in runs]
                print(f"{n:>7} {what:<16} {spread(walls, '%.3f'):>20} {spread([r[1] for r in runs], '%.0f'):>16} "
                      f"{statistics.median(walls) / base_med:>12.1f}")
            if not a.no_top:
                top_interval(pm, pid, n, "top -p interval", a)
        finally:
            w.stdin.close()
            w.wait()
        if a.busy and not a.no_top:
            w = subprocess.Popen([binary, str(n), "busy"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert w.stdout.readline().startswith("ready")
            try:
                top_interval(pm, str(w.pid), n, "top -p, busy", a)
            finally:
                w.stdin.close()
                w.wait()


def top_interval(pm, pid, n, label, a):
    per, walls = [], []
    for _ in range(a.runs):
        long = measure(pm + ["top", "1", "11", "-p", pid], a.cpu)
        short = measure(pm + ["top", "1", "1", "-p", pid], a.cpu)
        per.append(max(0.0, long[2] - short[2]) / 10)
        walls.append((long[0] - short[0]) / 10)
    print(f"{n:>7} {label:<16} {'CPU ' + spread(per, '%.3f') + ' s':>20} "
          f"{'(' + spread([100 * p for p in per], '%.0f') + '% of a core at 1 s)':>30} "
          f"wall {spread(walls, '%.3f')} s", flush=True)


if __name__ == "__main__":
    main()
