"""What `pmemtrace top` costs the machine it watches (a benchmark, not a test).

    sudo make bench        # or: sudo /opt/pmemtrace/venv/bin/python bench/bench.py [--seconds 3] [--rounds 3]

One run alternates phases so drift (other load, thermal, page cache) hits every
configuration alike: each traced phase is compared with the mean of the untraced phases
run just before and after it.

Workloads (tests/workloads/top_toucher.c, single-threaded):
  4k       mmap 256 MiB MADV_NOHUGEPAGE, touch every 4 KiB page, munmap, repeat: faults/s
  thp      the same MADV_HUGEPAGE and 2 MiB aligned, one touch per PMD: THP faults/s
  syscall  getppid() in a loop: syscalls/s (syscall tracepoints put every syscall on the slow path)
Configurations:
  untraced
  top      `pmemtrace top 1 --json` system-wide, default mode (no BPF on the fault path)
  exact    `pmemtrace top 1 --json --exact` (raw tracepoints on the fault path)
  top-p    `pmemtrace top 1 --json -p PID` of an idle process (`sleep`): the pid-filtered
           page_fault_user raw tracepoint; what it costs the other processes (one early return)
  bpftrace `bpftrace -e 'tracepoint:exceptions:page_fault_user { @[pid] = count(); }'`
           (the classic-tracepoint equivalent, when bpftrace is installed)
Then top's own CPU share at 1 Hz with 1,000 idle processes (target: <= 5% of one core).
Prints median ratios and lost events; the last line is the 4 KiB ratio of default top.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
TOUCHER = os.path.join(ROOT, "tests", "workloads", "top_toucher.c")
BPFTRACE_PROG = "tracepoint:exceptions:page_fault_user { @[pid] = count(); }"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTLE = 1.0            # seconds between stopping a tracer and the next untraced phase


def build(tmp):
    exe = os.path.join(tmp, "top_toucher")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, TOUCHER], check=True)
    return exe


class Tracer:
    """A tracer process started before a phase and stopped after it."""

    def __init__(self, kind):
        self.kind = kind
        self.proc = None
        self.frames = []
        self.ready = threading.Event()
        self.target = None

    def start(self):
        if self.kind == "untraced":
            return self
        if self.kind == "top-p":
            self.target = subprocess.Popen(["sleep", "3600"])
            cmd = [PYTHON, "-m", "pmemtrace", "top", "1", "--json", "-p", str(self.target.pid)]
        elif self.kind in ("top", "exact"):
            cmd = [PYTHON, "-m", "pmemtrace", "top", "1", "--json"] + (["--exact"] if self.kind == "exact" else [])
        else:
            cmd = ["bpftrace", "-e", BPFTRACE_PROG]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.ready.wait(60):
            raise SystemExit(f"bench: {self.kind} did not start: {self.proc.stderr.read()}")
        return self

    def _pump(self):
        for line in self.proc.stdout:
            if self.kind == "bpftrace":
                if line.startswith("Attaching"):
                    time.sleep(1.0)     # printed just before it attaches
                    self.ready.set()
                continue
            self.frames.append(json.loads(line))
            self.ready.set()      # the first interval is out: probes attached, baseline taken
        self.ready.set()

    def stop(self):
        if self.target is not None:
            self.target.kill()
            self.target.wait()
        if self.proc is None:
            return 0
        if self.kind == "bpftrace":
            # it prints its map on the way out; only its throughput phase matters here
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(10)
                    break
                except subprocess.TimeoutExpired:
                    pass
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if rc != 0 and not (self.kind == "top-p" and self.target is not None):
            raise SystemExit(f"bench: {self.kind} exited {rc}: {self.proc.stderr.read()}")
        return sum(f["lost_events"] for f in self.frames)


PIN: list = []         # ["taskset", "-c", CPU] with --pin: the workload stays on one CPU


def run_workload(toucher, workload, seconds):
    """(operations per wall-clock second, operations per CPU second of the toucher itself).

    The second is what a probe in the faulting task's context costs, and it stays steady
    when other load takes the CPUs; the first also sees lock waits and CPU stolen by the
    tracer's own process (both matter on a quiet machine)."""
    out = subprocess.run([*PIN, toucher, {"4k": "small"}.get(workload, workload), str(seconds)], capture_output=True,
                         text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]) / max(float(out[2]), 1e-6)


def throughput(toucher, workloads, configs, seconds, rounds, log):
    """Ratios traced/untraced per (workload, config), wall and CPU-time based; lost events per
    config; untraced rates per workload."""
    ratios = {(w, c, k): [] for w in workloads for c in configs for k in ("wall", "cpu")}
    lost = dict.fromkeys(configs, 0)
    base = {w: [] for w in workloads}
    for w in workloads:
        run_workload(toucher, w, 1)           # warm-up: page cache, allocator state
    for r in range(rounds):
        for w in workloads:
            before = run_workload(toucher, w, seconds)
            base[w].append(before[0])
            for c in configs:
                t = Tracer(c).start()
                try:
                    traced = run_workload(toucher, w, seconds)
                finally:
                    lost[c] += t.stop()
                time.sleep(SETTLE)                # let the tracer's teardown (unload, exit) finish
                after = run_workload(toucher, w, seconds)
                base[w].append(after[0])
                wall = traced[0] / ((before[0] + after[0]) / 2)
                cpu = traced[1] / ((before[1] + after[1]) / 2)
                ratios[(w, c, "wall")].append(wall)
                ratios[(w, c, "cpu")].append(cpu)
                log(f"round {r + 1} {w:8s} {c:9s} {traced[0]:11.0f}/s ({traced[1]:.0f}/cpu-s)  untraced "
                    f"{before[0]:.0f} / {after[0]:.0f}/s  ratio wall {wall:.3f} cpu {cpu:.3f}")
                before = after
    return ratios, lost, base


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def idle_cpu_share(kind, nproc, seconds, log):
    """top's CPU time over `seconds` of steady state (after two intervals), with nproc idle sleepers."""
    sleepers = []
    try:
        for _ in range(nproc):
            sleepers.append(subprocess.Popen(["sleep", "3600"]))
        t = Tracer(kind).start()
        try:
            while len(t.frames) < 2:
                time.sleep(0.1)
            c0, w0 = cpu_ticks(t.proc.pid), time.monotonic()
            time.sleep(seconds)
            c1, w1 = cpu_ticks(t.proc.pid), time.monotonic()
            rows = len(t.frames[-1]["processes"]) if t.frames else 0
        finally:
            lost = t.stop()
        share = (c1 - c0) / CLK_TCK / (w1 - w0)
        log(f"idle {kind:6s} {nproc} sleepers: top used {100 * share:.2f}% of one core "
            f"({rows} active rows in its last interval, {lost} lost events)")
        return share
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each phase")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=int, default=1000, help="idle processes for the CPU-share phase")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--workloads", default="4k,thp,syscall")
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness of the bench, its workloads and tracers (all alike), so unrelated "
                         "load on the machine disturbs the phases less (0: leave as is)")
    ap.add_argument("--pin", type=int, default=None, help="run the workload on this CPU only (taskset)")
    ap.add_argument("--configs", default=None, help="comma-separated subset of top,exact,top-p,bpftrace")
    args = ap.parse_args(argv)
    if args.pin is not None:
        PIN[:] = ["taskset", "-c", str(args.pin)]
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (sudo make bench)")
    if args.nice:
        os.nice(args.nice)

    def log(msg):
        print(msg, flush=True)
    configs = ["top", "exact", "top-p"] + (["bpftrace"] if shutil.which("bpftrace") else [])
    if args.configs:
        configs = args.configs.split(",")
    workloads = args.workloads.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        toucher = build(tmp)
        log(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
            f"phases of {args.seconds:g} s, {args.rounds} rounds, nice {args.nice}; configs: {', '.join(configs)}")
        ratios, lost, base = throughput(toucher, workloads, configs, args.seconds, args.rounds, log)
    shares = {k: idle_cpu_share(k, args.idle, args.idle_seconds, log) for k in ("top", "exact")
              if args.idle_seconds > 0}

    log("")
    for kind, what in (("wall", "per wall-clock second"), ("cpu", "per CPU second of the workload")):
        log(f"median ratio of untraced throughput, {what} (1.00 = no cost):")
        log(f"{'':9s}" + "".join(f"{c:>10s}" for c in configs) + f"{'untraced/s':>14s}")
        for w in workloads:
            log(f"{w:9s}" + "".join(f"{statistics.median(ratios[(w, c, kind)]):10.3f}" for c in configs)
                + f"{statistics.median(base[w]):14.0f}")
    log("lost events: " + ", ".join(f"{c} {lost[c]}" for c in configs if c not in ("bpftrace", "top-p")))
    log("top CPU share at 1 Hz with %d idle processes: %s (target <= 5%% of one core)"
        % (args.idle, ", ".join(f"{k} {100 * v:.2f}%" for k, v in shares.items())))
    if "4k" in workloads:
        log(f"4 KiB fault throughput ratio, default top: wall {statistics.median(ratios[('4k', 'top', 'wall')]):.3f}"
            f" cpu {statistics.median(ratios[('4k', 'top', 'cpu')]):.3f}")


if __name__ == "__main__":
    main()
