"""`pmemtrace top`: huge-page vs small-page faults per process (or per VMA with -p), live.

Default mode puts no BPF program on any per-fault path: faults come from /proc/PID/stat,
huge faults from the growth of PMD-mapped bytes (pmemtrace.sampler), system-wide rates
from /proc/vmstat; BPF only watches rare paths (DAX faults, mmap/munmap/madvise, mincore).
`--exact` adds the loader's "thp" feature: every THP fault attributed to its tgid and
address in kernel maps, so a process that exits keeps its counts. What each column means:
pmemtrace/interval.py.

Data flows: ProcSampler / VmaSampler + Probes.snapshot() -> interval.Model.step() -> a frame
(a JSON-ready dict) -> one of three renderers (views/top_render.py): rich screen (TTY), plain
lines, JSON lines. Key handling is a pure function (handle_key); the loop here only waits,
reads and renders.
"""
import os
import select
import sys
import time
from dataclasses import dataclass, replace
from typing import List, Optional

from .. import kernel, procfs, signals
from ..errors import Interrupted, ProcessExited
from ..interval import SORT_KEYS, Model, features_for
from .top_render import json_line, plain_lines, render

ASCENDING = {"pid", "comm"}          # natural order for these; counts sort largest first


# ----------------------------------------------------------------- keys (pure)

@dataclass(frozen=True)
class ViewState:
    sort_key: str = "huge_faults"
    reverse: bool = False
    paused: bool = False
    quit: bool = False
    cursor: int = 0           # highlighted row of the process list
    detail: bool = False      # show the VMAs of the highlighted process


KEYS_UP = ("k", "\x1b[A", "\x1bOA")
KEYS_DOWN = ("j", "\x1b[B", "\x1bOB")
KEYS_OPEN = ("\r", "\n")
KEYS_BACK = ("\x1b", "b", "h", "\x7f")


def handle_key(state: ViewState, key: str) -> ViewState:
    """q quits, < / > move the sort column, r reverses, space pauses, j/k or arrows move
    the cursor, Enter shows the VMAs of the process under it, Esc/b goes back."""
    if key in ("q", "Q"):
        return replace(state, quit=True)
    if key in KEYS_UP:
        return replace(state, cursor=max(0, state.cursor - 1))
    if key in KEYS_DOWN:
        return replace(state, cursor=state.cursor + 1)
    if key in KEYS_OPEN:
        return replace(state, detail=True)
    if key in KEYS_BACK:
        return replace(state, detail=False)
    if key in ("<", ">"):
        i = SORT_KEYS.index(state.sort_key) if state.sort_key in SORT_KEYS else 0
        i = (i + (1 if key == ">" else -1)) % len(SORT_KEYS)
        return replace(state, sort_key=SORT_KEYS[i])
    if key in ("r", "R"):
        return replace(state, reverse=not state.reverse)
    if key == " ":
        return replace(state, paused=not state.paused)
    return state


def sort_rows(rows: List[dict], key: str, reverse: bool = False) -> List[dict]:
    """Counts largest first, pid / comm ascending; `reverse` flips. Unknown (None) values last."""
    ascending = key in ASCENDING
    missing = [r for r in rows if r.get(key) is None]
    known = [r for r in rows if r.get(key) is not None]
    known.sort(key=lambda r: r[key], reverse=(not ascending) != reverse)   # stable: ties keep pid/address order
    return known + missing


def visible(frame: dict, state: ViewState, maxrows: Optional[int]):
    rows = sort_rows(frame["processes"], state.sort_key, state.reverse)
    if "pid" in frame:
        rows = [r for r in rows if r["pid"] == frame["pid"]]
    vmas = None
    if "vmas" in frame:
        key = state.sort_key if state.sort_key in ("faults", "huge_faults") else "huge_faults"
        vmas = sort_rows(frame["vmas"], key, state.reverse)
        vmas = vmas[:maxrows] if maxrows else vmas
    return (rows[:maxrows] if maxrows else rows), vmas


# ----------------------------------------------------------------- the loop

class _Stop(Exception):
    """SIGTERM: leave the loop the same way Ctrl-C and 'q' do."""


class Keys:
    """Single keys from a terminal in cbreak mode, read without blocking; restores the terminal."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdin
        self.fd = None
        self.saved = None

    def __enter__(self):
        try:
            if self.stream.isatty():
                import termios
                import tty
                self.fd = self.stream.fileno()
                self.saved = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)
        except (OSError, ValueError, AttributeError):
            self.fd = None
        return self

    def __exit__(self, *exc):
        if self.fd is not None and self.saved is not None:
            import termios
            with signals.deferred():         # a signal now must not leave the terminal in cbreak mode
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def wait(self, timeout: float) -> Optional[str]:
        """A key pressed within timeout seconds, or None."""
        if self.fd is None:
            time.sleep(max(0.0, timeout))
            return None
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if ready:
            data = os.read(self.fd, 1)
            if data == b"\x1b":                     # an arrow key arrives as one burst: ESC [ A
                more, _, _ = select.select([self.fd], [], [], 0.02)
                if more:
                    data += os.read(self.fd, 7)
            return data.decode("latin-1") if data else None
        return None


def open_probes(features: List[str], pid: Optional[int]):
    from .. import loader
    return loader.Probes(features, pid).start()


def ebpf_text(features: List[str], pid: Optional[int]) -> str:
    from .. import loader
    return loader.build_text(features, pid, kernel.ensure_tracefs())[0]


def watched(features: List[str], missing: dict, names) -> bool:
    """One of the loader features in names is on and none of its attachments is missing."""
    from .. import loader
    on = [f for f in names if f in features]
    return bool(on) and not any(a.id in missing for f in on for a in loader.ATTACHMENTS[f])


def make_model(probes, exact: bool, pid: Optional[int], comm: Optional[str], dax_only: bool = False) -> Model:
    """top's interval model for these probes; record builds its frames with it too, so they are top's.
    What the probes do not watch is unknown (null), not zero (loader.Probes and NoProbes say)."""
    try:
        from .. import pagemap
        huge_small = pagemap.dax_huge_small     # DAX: page tables on every kernel (None: unknown)
    except (ImportError, AttributeError, OSError):
        huge_small = None
    features, missing = list(getattr(probes, "features", ())), getattr(probes, "missing", {}) or {}
    return Model(exact=exact, pid=pid, comm=comm, dax_only=dax_only, huge_small=huge_small,
                 fallbacks_known="dax" in features and "fs_dax:dax_pmd_fault_done" not in missing,
                 syscalls_known=watched(features, missing, ("syscalls", "ksyscalls")),
                 mincore_known=watched(features, missing, ("mincore", "kmincore")))


def syscall_kprobes_here() -> bool:
    """Can mmap/munmap/madvise/mincore be kprobed here (so default top watches them for free)?"""
    from .. import loader
    return loader.syscall_kprobes()[0]


def run(interval=1.0, count=None, noclear=False, maxrows=20, sort_key="huge_faults", pid=None, comm=None,
        dax_only=False, exact=False, as_json=False, ebpf=False, probes_factory=open_probes, out=None,
        syscalls=False, kprobes=None):
    if kprobes is None:
        kprobes = syscall_kprobes_here()
    features = features_for(exact, pid, syscalls, kprobes)
    out = out or sys.stdout
    if ebpf:
        out.write(ebpf_text(features, pid))
        return 0
    if pid is not None:
        procfs.check_pid(pid)
    tty = out.isatty() and not as_json
    # SIGINT/SIGTERM: recorded at any moment, acted on only where it is safe (pmemtrace.signals)
    installed = signals.install()
    probes = None
    try:
        probes = probes_factory(features, pid)      # a signal during attach waits for it, then we detach
        signals.check()
        model = make_model(probes, exact, pid, comm, dax_only)
        model.procs.tick = lambda: probes.poll(0)
        model.start()
        probes.snapshot()          # start the first interval with empty maps
        state = ViewState(sort_key=sort_key)
        first = model.initial_frame()     # the state now, at once; then one frame per interval
        with signals.interruptible():
            if tty:
                _loop_tty(model, probes, interval, count, noclear, maxrows, state, out, first)
            else:
                _emit(out, first, state, maxrows, as_json)
                _loop_lines(model, probes, interval, count, maxrows, state, as_json, out)
    except (KeyboardInterrupt, _Stop, Interrupted):
        pass
    finally:
        with signals.deferred():
            if probes is not None:
                probes.close()
            if installed:
                signals.uninstall()
    return 0


def _wait(probes, deadline: float, keys: Optional[Keys] = None, on_key=None) -> None:
    """Sleep until deadline, draining streamed probe events every 100 ms and handing keys over."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        step = min(left, 0.1)
        if keys is not None:
            key = keys.wait(step)
            if key is not None and on_key is not None and on_key(key):
                return
        else:
            time.sleep(step)
        probes.poll(0)


def _loop_lines(model, probes, interval, count, maxrows, state, as_json, out) -> None:
    n = 0
    deadline = time.monotonic()
    while count is None or n < count:
        deadline += interval
        _wait(probes, deadline)
        try:
            frame = model.step(probes.snapshot())
        except ProcessExited as e:
            final = getattr(e, "frame", None)
            if final is not None and (final["processes"] or final["vmas"]):
                _emit(out, final, state, maxrows, as_json)
            raise
        n += 1
        _emit(out, frame, state, maxrows, as_json)


def _emit(out, frame, state, maxrows, as_json) -> None:
    if as_json:
        out.write(json_line(frame) + "\n")
    else:
        rows, vmas = visible(frame, state, maxrows)
        out.write("\n".join(plain_lines(frame, rows, vmas)) + "\n")
    out.flush()


def _loop_tty(model, probes, interval, count, noclear, maxrows, state, out, first=None) -> None:
    from rich.console import Console
    from rich.live import Live
    console = Console(file=out)
    policy, release = kernel.thp_policy(), kernel.release()
    holder = {"state": state, "frame": first, "redraw": False}

    def on_key(key):
        before = holder["state"]
        state = handle_key(before, key)
        if state.detail != before.detail and holder["frame"] is not None:
            if state.detail:
                rows, _ = visible(holder["frame"], state, maxrows)
                pick = rows[min(state.cursor, len(rows) - 1)]["pid"] if rows else None
                model.select(pick)
                if pick is None or model.detail != pick:
                    state = replace(state, detail=False)
            else:
                model.select(None)
        holder["state"] = state
        holder["redraw"] = state != before
        return state.quit or holder["redraw"]

    def draw():
        rows, vmas = visible(holder["frame"], holder["state"], maxrows)
        return render(holder["frame"], rows, vmas, holder["state"], policy, release)

    from rich.text import Text
    n = 0
    deadline = time.monotonic()
    with Keys() as keys:
        live = None
        if not noclear:
            live = Live(Text("pmemtrace top: first sample in progress..."), console=console, screen=True,
                        auto_refresh=False, transient=True)
            live.start()
        try:
            if first is not None:        # the state at start, at once
                if live is not None:
                    live.update(draw(), refresh=True)
                else:
                    console.print(draw())
            deadline += interval
            while count is None or n < count:
                _wait(probes, deadline, keys, on_key)
                if holder["state"].quit:
                    return
                if time.monotonic() >= deadline:
                    deadline += interval
                    counts = probes.snapshot()
                    frame = model.step(counts)
                    n += 1
                    if frame.get("detail_exited") is not None:
                        holder["state"] = replace(holder["state"], detail=False)
                    if not holder["state"].paused or holder["frame"] is None:
                        holder["frame"] = frame
                elif not holder["redraw"] or holder["frame"] is None:
                    continue
                holder["redraw"] = False
                if live is not None:
                    live.update(draw(), refresh=True)
                else:
                    console.print(draw())
        finally:
            if live is not None:
                with signals.deferred():     # leave the alternate screen even if a signal comes now
                    live.stop()
