"""Helpers for the in-guest DAX tests: run workloads, parse their lines, count tracepoint results."""
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[3]
TRACEFS = Path("/sys/kernel/tracing")

TRACEFS = Path("/sys/kernel/tracing")


def parse_kv(line):
    """'TAG a=1 b=0x2' -> {'a': '1', 'b': '0x2'}"""
    return dict(tok.split("=", 1) for tok in line.split()[1:] if "=" in tok)


def run_workload(exe, *args, check=True):
    p = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300)
    lines = {ln.split()[0]: ln for ln in p.stdout.splitlines() if ln.strip()}
    if check and p.returncode != 0:
        raise AssertionError(f"{exe} {args} rc={p.returncode}\n{p.stdout}\n{p.stderr}")
    return p, lines


class TraceInstance:
    """A private tracefs instance with a chosen set of events; counts dax results by name."""

    def __init__(self, name, events, pid=None, buffer_kb=16384):
        self.dir = TRACEFS / "instances" / name
        if self.dir.exists():
            self.dir.rmdir()
        self.dir.mkdir()
        (self.dir / "buffer_size_kb").write_text(str(buffer_kb))
        self.events = events
        for ev in events:
            if pid is not None:    # only the workload: the BPF compile's own faults would flood it
                (self.dir / "events" / ev / "filter").write_text(f"common_pid == {pid}")
            (self.dir / "events" / ev / "enable").write_text("1")

    def lines(self):
        return (self.dir / "trace").read_text().splitlines()

    def clear(self):
        (self.dir / "trace").write_text("")

    def close(self):
        for ev in self.events:
            (self.dir / "events" / ev / "enable").write_text("0")
        self.dir.rmdir()

    def event_lines(self, event, comm=None):
        for ln in self.lines():
            if ln.startswith("#") or f" {event}: " not in ln:
                continue
            if comm and not ln.lstrip().startswith(comm[:15] + "-"):
                continue
            yield ln

    def windows(self, event, comm=None, result=None):
        """Set of 2 MiB-aligned fault addresses of `event` lines (optionally with that result)."""
        out = set()
        for ln in self.event_lines(event, comm):
            m = re.search(r"address[= ](0x[0-9a-f]+)", ln)
            if m and (result is None or ln.split()[-1] == result):
                out.add(int(m.group(1), 16) & ~((2 << 20) - 1))
        return out

    def in_range(self, event, lo, hi, comm=None):
        """Counter of results of `event` lines whose fault address is in [lo, hi)."""
        c = Counter()
        for ln in self.event_lines(event, comm):
            m = re.search(r"address[= ](0x[0-9a-f]+)", ln)
            if m and lo <= int(m.group(1), 16) < hi:
                c[ln.split()[-1]] += 1
        return c

    def results(self, event, comm=None):
        """Counter of the trailing result name for `event` lines (e.g. {'NEEDDSYNC': 32})."""
        c = Counter()
        for ln in self.event_lines(event, comm):
            c[ln.split()[-1]] += 1
        return c


def append_line(path, line):
    """Append one line to a tracefs control file. Not open(..., "a"): Python seeks to the end
    on opening for append, and tracefs seq files refuse SEEK_END with EINVAL."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Kprobes:
    """kprobe events defined in tracefs for the lifetime of a test (group pmtdax)."""

    def __init__(self, *defs):
        self.names = []
        for d in defs:            # e.g. "p:pmtdax/devdax_fault dev_dax_huge_fault arg=%si:u32"
            try:
                append_line(TRACEFS / "kprobe_events", d)
            except OSError as e:
                log = (TRACEFS / "error_log").read_text()[-600:] if (TRACEFS / "error_log").exists() else ""
                self.close()
                raise OSError(e.errno, f"{d!r}: {e.strerror}; tracefs error_log: {log}") from None
            self.names.append(d.split()[0].split(":", 1)[1])

    def close(self):
        for n in self.names:
            try:
                append_line(TRACEFS / "kprobe_events", f"-:{n}")
            except OSError:
                pass


class HeldWorkload:
    """A dax_map process kept alive (`hold`) so pmemtrace can look at it; optionally
    stopped before touching (`wait`) until go() is called."""

    def __init__(self, exe, *args, waits=None):
        self.args = [exe, *map(str, args)]
        self.p = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.lines = {}
        self.all_lines = []
        self.read_until("MAPPED")
        if not (waits if waits is not None else "wait" in self.args):
            self.read_until("TOUCHED")

    @property
    def pid(self):
        return self.p.pid

    def read_until(self, tag):
        while tag not in self.lines:
            ln = self.p.stdout.readline()
            if not ln:
                raise AssertionError(f"{self.args} ended before {tag}: rc={self.p.wait()} "
                                     f"{self.lines} {self.p.stderr.read()}")
            self.lines[ln.split()[0]] = ln.strip()
            self.all_lines.append(ln.strip())
        return self.lines[tag]

    @property
    def addr(self):
        return int(parse_kv(self.lines["MAPPED"])["addr"], 16)

    def go(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        return self.read_until("TOUCHED")

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- pmemtrace from the checkout -------------------------------------------------------------
def pmemtrace(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    p = subprocess.run([sys.executable, "-m", "pmemtrace", *map(str, args)], capture_output=True,
                       text=True, cwd=CHECKOUT, env=env, timeout=timeout)
    assert p.returncode == 0, f"pmemtrace {args} rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def report_json(pid):
    return json.loads(pmemtrace("report", pid, "--json"))


def vma_at(data, start):
    rows = [v for v in data["vmas"] if v["start"] == start]
    assert rows, f"no VMA starting at {start:#x} in report: {[hex(v['start']) for v in data['vmas']]}"
    return rows[0]


def perf_event_fds(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "perf_event" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                n += 1
        except OSError:
            pass
    return n


POLL_SYSCALLS = {"7", "271", "232", "281", "441"}   # poll, ppoll, epoll_wait, epoll_pwait, epoll_pwait2


def waiting_in_poll(pid):
    try:
        return open(f"/proc/{pid}/syscall").read().split()[0] in POLL_SYSCALLS
    except (OSError, IndexError):
        return False


def observe(workload, duration=8):
    """Run `pmemtrace report PID --duration` around the workload's touch loop. The workload
    is released once pmemtrace is attached: its tracepoints' perf_event fds are open and
    its main thread sits in poll() (the observation loop; compiling never polls)."""
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    rep = subprocess.Popen([sys.executable, "-m", "pmemtrace", "report", str(workload.pid), "--duration",
                            str(duration), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=CHECKOUT, env=env)
    seen, deadline = 0, time.monotonic() + 600
    while time.monotonic() < deadline and rep.poll() is None and seen < 3:
        seen = seen + 1 if perf_event_fds(rep.pid) and waiting_in_poll(rep.pid) else 0
        time.sleep(0.05)
    assert rep.poll() is None, f"pmemtrace exited early rc={rep.returncode}: {rep.stderr.read()[-3000:]}"
    assert seen >= 3, "pmemtrace did not reach its observation loop within 600 s"
    workload.go()
    out, err = rep.communicate(timeout=duration + 120)
    assert rep.returncode == 0, f"rc={rep.returncode}\n{err[-3000:]}"
    data = json.loads(out)
    if os.path.isdir("/out"):     # the host's 9p share: keep what pmemtrace said, for diagnosis
        with open(f"/out/report-duration-{workload.pid}.json", "w") as f:
            f.write(out)
    assert data["lost_events"] == 0, f"pmemtrace lost {data['lost_events']} events"
    return data


FAULT_COLUMNS = ("dax_pmd_faults", "dax_pte_faults", "dax_fallbacks", "dax_needdsync")


def columns(v):
    missing = [k for k in FAULT_COLUMNS if k not in v]
    assert not missing, f"report --duration has no {missing} in its VMA rows"
    return {k: v[k] for k in FAULT_COLUMNS}
