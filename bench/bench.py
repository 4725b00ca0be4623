"""What `pmemtrace top` costs the machine it watches (a benchmark, not a test).

    sudo make bench        # or: sudo /opt/pmemtrace/venv/bin/python bench/bench.py [--seconds 2] [--rounds 5]

Pinning: the workload runs on one CPU (--workload-cpu, default the last), the tracer and
this script on another (--tracer-cpu, default 0), so the tracer's own CPU time does not
compete with the workload and what is left is what probes cost in the workload's context.

One run alternates phases so drift (other load, page cache) hits every configuration alike:
untraced, traced, untraced, traced, ...; each traced phase is compared with the mean of the
untraced phases just before and after it. The order of the configurations rotates each round.
Every ratio is printed as min / median / max over the rounds.

Workloads (tests/workloads/top_toucher.c, single-threaded):
  4k       mmap 256 MiB MADV_NOHUGEPAGE, touch every 4 KiB page, munmap, repeat: faults/s
  thp      the same MADV_HUGEPAGE and 2 MiB aligned, one touch per PMD: THP faults/s
  syscall  getppid() in a loop: syscalls/s (a syscall tracepoint puts every syscall on the slow path)
Configurations:
  untraced
  top       `pmemtrace top 1 --json` system-wide, default mode
  syscalls  `pmemtrace top 1 --json --syscalls` (the opt-in syscall tracepoints where there are no kprobes)
  exact     `pmemtrace top 1 --json --exact` (raw tracepoints on the fault path)
  top-p     `pmemtrace top 1 --json -p PID` of an idle process (`sleep`): the pid-filtered
            page_fault_user raw tracepoint; what it costs the other processes (one early return)
  bpftrace  `bpftrace -e 'tracepoint:exceptions:page_fault_user { @[pid] = count(); }'`, the
            classic-tracepoint equivalent of --exact's fault probe (Debian: apt-get install bpftrace)
  floor     bench/floor_probes.py: empty programs on --exact's two raw tracepoints
            (page_fault_user, count_memcg_events), the least any probe there can cost
Also measured:
  start     seconds from starting `pmemtrace top` to its first frame on stdout (Python start,
            bcc compile, attach, the first /proc pass), once per traced phase
  idle      top's own CPU share at 1 Hz with 1,000 idle processes (goal: <= 2% of one core),
            in windows of --idle-window seconds
The last lines are a Markdown table for README.md.
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
TOP_ARGS = {"top": [], "syscalls": ["--syscalls"], "exact": ["--exact"], "top-p": []}
# tracers that print no frames: the line that says they are attached, and how long after it they are
READY_LINE = {"bpftrace": ("Attaching", 1.0), "floor": ("Attached", 0.0)}
GOALS = {("4k", "top"): 0.98, ("syscall", "top"): 0.98, ("4k", "exact"): 0.95}


def build(tmp):
    exe = os.path.join(tmp, "top_toucher")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, TOUCHER], check=True)
    return exe


def spread(values, fmt="{:.3f}"):
    """'median (min-max)' of a list."""
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


class Tracer:
    """A tracer process started before a phase and stopped after it, pinned to cpu."""

    def __init__(self, kind, cpu):
        self.kind, self.cpu = kind, cpu
        self.proc = None
        self.frames = []
        self.ready = threading.Event()
        self.started = 0.0
        self.first_frame = None       # seconds from start to the first frame
        self.target = None            # top-p: the idle process it watches

    def start(self):
        if self.kind == "untraced":
            return self
        if self.kind == "top-p":
            self.target = subprocess.Popen(["sleep", "3600"])
            cmd = [PYTHON, "-m", "pmemtrace", "top", "1", "--json", "-p", str(self.target.pid)]
        elif self.kind in TOP_ARGS:
            cmd = [PYTHON, "-m", "pmemtrace", "top", "1", "--json"] + TOP_ARGS[self.kind]
        elif self.kind == "floor":
            cmd = [PYTHON, os.path.join(ROOT, "bench", "floor_probes.py")]
        else:
            cmd = ["bpftrace", "-e", BPFTRACE_PROG]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["taskset", "-c", str(self.cpu)] + cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.ready.wait(60) or self.proc.poll() is not None:
            raise SystemExit(f"bench: {self.kind} did not start: {self.proc.stderr.read()}")
        return self

    def _pump(self):
        for line in self.proc.stdout:
            if self.kind in READY_LINE:
                text, delay = READY_LINE[self.kind]
                if line.startswith(text):
                    time.sleep(delay)       # bpftrace prints it just before it attaches
                    self.ready.set()
                continue
            if self.first_frame is None:
                self.first_frame = time.monotonic() - self.started
            self.frames.append(json.loads(line))
            self.ready.set()      # the first frame is out: probes attached, baseline taken
        self.ready.set()

    def stop(self):
        if self.target is not None:
            self.target.kill()
            self.target.wait()
        if self.proc is None:
            return 0
        if self.kind in READY_LINE:
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
        if rc != 0 and not (self.kind == "top-p" and self.target is not None):   # -p: its process exited
            raise SystemExit(f"bench: {self.kind} exited {rc}: {self.proc.stderr.read()}")
        return sum(f["lost_events"] for f in self.frames)


def run_workload(toucher, workload, seconds, cpu):
    """(operations per wall-clock second, operations per CPU second of the toucher itself)."""
    out = subprocess.run(["taskset", "-c", str(cpu), toucher, {"4k": "small"}.get(workload, workload),
                          str(seconds)], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1]) / max(float(out[2]), 1e-6)


def throughput(toucher, workloads, configs, args, log):
    """Ratios traced/untraced per (workload, config, wall|cpu); lost events and start-to-first-frame
    times per config; untraced rates per workload."""
    ratios = {(w, c, k): [] for w in workloads for c in configs for k in ("wall", "cpu")}
    lost = dict.fromkeys(configs, 0)
    starts = {c: [] for c in configs}
    base = {w: [] for w in workloads}
    for w in workloads:
        run_workload(toucher, w, 1, args.workload_cpu)           # warm-up: page cache, allocator state
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for w in workloads:
            before = run_workload(toucher, w, args.seconds, args.workload_cpu)
            base[w].append(before[0])
            for c in order:
                t = Tracer(c, args.tracer_cpu).start()
                try:
                    traced = run_workload(toucher, w, args.seconds, args.workload_cpu)
                finally:
                    lost[c] += t.stop()
                if t.first_frame is not None:
                    starts[c].append(t.first_frame)
                time.sleep(SETTLE)                # let the tracer's teardown (unload, exit) finish
                after = run_workload(toucher, w, args.seconds, args.workload_cpu)
                base[w].append(after[0])
                wall = traced[0] / ((before[0] + after[0]) / 2)
                cpu = traced[1] / ((before[1] + after[1]) / 2)
                ratios[(w, c, "wall")].append(wall)
                ratios[(w, c, "cpu")].append(cpu)
                log(f"round {r + 1} {w:8s} {c:9s} {traced[0]:11.0f}/s ({traced[1]:.0f}/cpu-s)  untraced "
                    f"{before[0]:.0f} / {after[0]:.0f}/s  ratio wall {wall:.3f} cpu {cpu:.3f}"
                    + (f"  first frame {t.first_frame:.2f} s" if t.first_frame is not None else ""))
                before = after
    return ratios, lost, starts, base


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def idle_cpu_share(kind, nproc, seconds, window, cpu, log):
    """top's CPU share in windows of `window` seconds over `seconds` of steady state (after two
    intervals), with nproc idle sleepers."""
    sleepers = []
    try:
        for _ in range(nproc):
            sleepers.append(subprocess.Popen(["sleep", "3600"]))
        t = Tracer(kind, cpu).start()
        shares = []
        try:
            while len(t.frames) < 3:
                time.sleep(0.1)
            top_pid = t.proc.pid          # taskset execs the tracer: same pid
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                c0, w0 = cpu_ticks(top_pid), time.monotonic()
                time.sleep(window)
                c1, w1 = cpu_ticks(top_pid), time.monotonic()
                shares.append((c1 - c0) / CLK_TCK / (w1 - w0))
            rows = len(t.frames[-1]["processes"]) if t.frames else 0
        finally:
            lost = t.stop()
        log(f"idle {kind:8s} {nproc} sleepers: top used {spread([100 * s for s in shares], '{:.2f}')} % of one "
            f"core ({rows} active rows in its last interval, {lost} lost events)")
        return shares
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, kernel {os.uname().release}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each phase")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--idle", type=int, default=1000, help="idle processes for the CPU-share phase")
    ap.add_argument("--idle-seconds", type=float, default=20.0, help="0: no idle phase")
    ap.add_argument("--idle-window", type=float, default=5.0)
    ap.add_argument("--workloads", default="4k,thp,syscall")
    ap.add_argument("--configs", default=None,
                    help="default: top,syscalls,exact,floor,top-p and bpftrace when installed")
    ap.add_argument("--tracer-cpu", type=int, default=0)
    ap.add_argument("--workload-cpu", "--pin", type=int, default=(os.cpu_count() or 1) - 1)
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness of the bench, its workloads and tracers (all alike), so unrelated "
                         "load on the machine disturbs the phases less (0: leave as is)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (sudo make bench)")
    if args.nice:
        os.nice(args.nice)
    os.sched_setaffinity(0, {args.tracer_cpu})

    def log(msg):
        print(msg, flush=True)
    configs = (args.configs.split(",") if args.configs else
               ["top", "syscalls", "exact", "floor", "top-p"] + (["bpftrace"] if shutil.which("bpftrace") else []))
    workloads = args.workloads.split(",")
    log(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    log(f"workload on CPU {args.workload_cpu}, tracers and bench on CPU {args.tracer_cpu}; phases of "
        f"{args.seconds:g} s, {args.rounds} rounds, nice {args.nice}; configs: {', '.join(configs)}"
        + ("" if shutil.which("bpftrace") else " (no bpftrace: apt-get install bpftrace)"))
    with tempfile.TemporaryDirectory() as tmp:
        toucher = build(tmp)
        ratios, lost, starts, base = throughput(toucher, workloads, configs, args, log)
    idle_kinds = [c for c in ("top", "exact") if c in configs and args.idle_seconds > 0]
    shares = {k: idle_cpu_share(k, args.idle, args.idle_seconds, args.idle_window, args.tracer_cpu, log)
              for k in idle_kinds}

    log("")
    for kind, what in (("wall", "per wall-clock second"), ("cpu", "per CPU second of the workload")):
        log(f"ratio of untraced throughput, {what}: median (min-max) of {args.rounds} rounds, 1.000 = no cost")
        log(f"{'':9s}" + "".join(f"{c:>22s}" for c in configs) + f"{'untraced/s':>26s}")
        for w in workloads:
            log(f"{w:9s}" + "".join(f"{spread(ratios[(w, c, kind)]):>22s}" for c in configs)
                + f"{spread(base[w], '{:.0f}'):>26s}")
    log("lost events: " + ", ".join(f"{c} {lost[c]}" for c in configs if c not in READY_LINE and c != "top-p"))
    log("start to first frame (s): " + ", ".join(f"{c} {spread(starts[c], '{:.2f}')}" for c in configs
                                                 if c in TOP_ARGS) + "  (goal <= 1.0 s)")
    log(f"top CPU share at 1 Hz with {args.idle} idle processes (%): "
        + ", ".join(f"{k} {spread([100 * s for s in v], '{:.2f}')}" for k, v in shares.items())
        + "  (goal <= 2% of one core)")
    for (w, c), goal in GOALS.items():
        if (w, c, "wall") in ratios and ratios[(w, c, "wall")]:
            med = statistics.median(ratios[(w, c, "wall")])
            log(f"goal {w} {c} >= {goal}: median {med:.3f} {'met' if med >= goal else 'NOT met'}")

    # Markdown for README.md
    names = {"top": "default `top`", "syscalls": "`top --syscalls`", "exact": "`top --exact`",
             "top-p": "`top -p` (idle pid)", "bpftrace": "bpftrace",
             "floor": "empty programs on `--exact`'s tracepoints"}
    labels = {"4k": "4 KiB faults (C toucher)", "thp": "THP faults", "syscall": "syscall loop (getppid)"}
    units = {"4k": "faults/s", "thp": "faults/s", "syscall": "calls/s"}
    log("")
    log("| ratio of untraced throughput (wall), median (min–max) | "
        + " | ".join(names.get(c, c) for c in configs) + " | untraced |")
    log("| --- " * (len(configs) + 2) + "|")
    for w in workloads:
        med = statistics.median(base[w])
        rate = f"{med / 1e6:.1f}M" if med >= 1e6 else f"{med / 1e3:.0f}k" if med >= 1e4 else f"{med / 1e3:.1f}k"
        cells = [spread(ratios[(w, c, "wall")]).replace("-", "–") for c in configs]
        log(f"| {labels.get(w, w)} | " + " | ".join(cells) + f" | {rate} {units.get(w, '/s')} |")
    log("| start to first frame (s) | " + " | ".join(
        spread(starts[c], "{:.2f}").replace("-", "–") if c in TOP_ARGS else "-" for c in configs) + " | |")
    log("| CPU share at 1 Hz, 1,000 idle processes (% of a core) | " + " | ".join(
        spread([100 * s for s in shares[c]], "{:.2f}").replace("-", "–") if c in shares else "-"
        for c in configs) + " | |")


if __name__ == "__main__":
    main()
