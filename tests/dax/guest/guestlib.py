"""Helpers for the in-guest DAX tests: run workloads, parse their lines, count tracepoint results."""
import re
import subprocess
from collections import Counter
from pathlib import Path

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

    def __init__(self, name, events):
        self.dir = TRACEFS / "instances" / name
        if self.dir.exists():
            self.dir.rmdir()
        self.dir.mkdir()
        (self.dir / "buffer_size_kb").write_text("8192")
        self.events = events
        for ev in events:
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
            m = re.search(r"address (0x[0-9a-f]+)", ln)
            if m and (result is None or ln.split()[-1] == result):
                out.add(int(m.group(1), 16) & ~((2 << 20) - 1))
        return out

    def results(self, event, comm=None):
        """Counter of the trailing result name for `event` lines (e.g. {'NEEDDSYNC': 32})."""
        c = Counter()
        for ln in self.event_lines(event, comm):
            c[ln.split()[-1]] += 1
        return c
