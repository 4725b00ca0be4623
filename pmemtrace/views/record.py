"""`pmemtrace record -o FILE`: top's frames and the watched processes' VMA snapshots, over time,
into one SQLite file (pmemtrace.store) that replay, diff and plot read.

Each interval: interval.Model.step() makes the frame `top --json` prints; for each watched
process (-p, --comm, or with --all the largest processes of the frame) report's per-VMA
document is built (views.report.build_json) and stored when it changed; the policy
(pmemtrace.policy) is stored when it changed. One transaction per interval.
"""
import math
import os
import signal
import sys
import time
from typing import Dict, List, Optional

from .. import kernel, policy as policy_mod, procfs, sampler, vmas as vmas_mod
from ..errors import KernelThread, NoSuchProcess, NotRoot, ProcessExited
from ..interval import features_for
from .text import human_bytes
from . import folios as folio_view, report

ALL_BUDGET = 16                 # --all: snapshots of at most this many processes an interval ...
ALL_MIN_RSS = 2 << 20           # ... each holding at least one PMD of RSS
SNAPSHOT_REFRESH = 30.0         # a quiet process's VMAs are re-read this often (a snapshot: 10-50 ms) ...
LAYOUT_REFRESH = 120.0          # ... or, where the frame has its per-VMA rows (record -p PID), this often
POLICY_REFRESH = 10.0           # and the sysfs policy


class _Stop(Exception):
    pass


def open_probes(features: List[str], pid: Optional[int]):
    from .. import loader
    return loader.Probes(features, pid).start()


def watched(pids: List[int], comm: Optional[str], all_: bool) -> List[int]:
    """Whose VMAs may be snapshotted this interval: the -p processes still alive, the processes
    whose comm contains --comm, or with --all the ALL_BUDGET largest holding ALL_MIN_RSS."""
    if pids:
        return [p for p in pids if os.path.exists(f"/proc/{p}")]
    if comm is not None:
        return sorted(p for p, c in procfs_comms().items() if comm in c)
    if not all_:
        return []
    page = os.sysconf("SC_PAGE_SIZE")
    big = [(st.rss_pages * page, pid) for pid, st in sampler.scan_stats().items()
           if st.rss_pages * page >= ALL_MIN_RSS]
    return [pid for _, pid in sorted(big, key=lambda x: (-x[0], x[1]))[:ALL_BUDGET]]


def procfs_comms() -> Dict[int, str]:
    out = {}
    for name in os.listdir(procfs.PROC):
        if name.isdigit():
            try:
                with open(f"{procfs.PROC}/{name}/comm", encoding="utf-8", errors="surrogateescape") as f:
                    out[int(name)] = f.read().rstrip("\n")
            except OSError:
                continue
    return out


def snapshot_due(row: Optional[dict], last_row: Optional[dict], last_time: Optional[float], now: float,
                 layout: Optional[tuple] = None, last_layout: Optional[tuple] = None) -> bool:
    """Re-read a process's VMAs (10-50 ms: smaps, page tables, folio sizes) only when its frame
    row says something moved: faults, RSS or huge bytes, madvise calls; with `layout` (the
    frame's per-VMA rows of a `-p PID` run) only when a VMA shown appeared, went, moved or
    changed bytes; or after SNAPSHOT_REFRESH (LAYOUT_REFRESH with layouts) seconds."""
    refresh = SNAPSHOT_REFRESH if layout is None else LAYOUT_REFRESH
    if last_time is None or now - last_time >= refresh:
        return True
    if layout is not None:
        return layout != last_layout         # faults that changed no VMA's bytes change no snapshot
    if row is None:
        return False
    if row.get("faults") or row.get("huge_faults") or row.get("madvise_calls") or row.get("dax_faults"):
        return True
    return last_row is None or any(row.get(k) != last_row.get(k) for k in ("rss_bytes", "huge_bytes"))


def layout_of(frame: dict, pid: int) -> Optional[tuple]:
    """The VMAs a `top -p PID` frame shows (those with bytes, faults or DAX: report's rows), as
    (start, end, perms, path, huge, small, MADV_HUGEPAGE, MADV_NOHUGEPAGE); None for other frames."""
    if frame.get("pid") != pid or not isinstance(frame.get("vmas"), list):
        return None
    return tuple((r.get("start"), r.get("end"), r.get("perms"), r.get("path"), r.get("huge_bytes"),
                  r.get("small_bytes"), r.get("vm_hugepage"), r.get("vm_nohugepage")) for r in frame["vmas"])


POLL_CAP = 1.0      # seconds one blocking poll may last: a signal is acted on after it returns


def _streamed(probes) -> tuple:
    """(identity, length) of the probes' list of streamed events, to tell whether a poll drained any."""
    events = getattr(probes, "events", None)
    return (id(events), len(events)) if isinstance(events, list) else (0, 0)


def wait_for(probes, deadline: float) -> None:
    """Until deadline, draining the probes' streamed events as they arrive. Their poll blocks in
    epoll until an event or its timeout, so a quiet second costs one wakeup (top's 100 ms sleep
    steps cost ten, ~50 us of CPU each, about a third of a frame's cost). A poll that returns at
    once having drained nothing does not block (no streamed table; NoProbes): one sleep instead."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        before = _streamed(probes)
        t0 = time.monotonic()
        probes.poll(max(1, math.ceil(min(left, POLL_CAP) * 1000)))   # rounded up: no 1 ms tail poll
        drained = _streamed(probes) != before
        if not drained and time.monotonic() - t0 < 0.001:
            time.sleep(max(0.0, min(deadline - time.monotonic(), POLL_CAP)))


def snapshot(pid: int, strict: bool = True) -> Optional[dict]:
    """report's document for pid; None if it is gone or a kernel thread (or, not strict: unreadable)."""
    try:
        proc = vmas_mod.describe_process(pid)
    except (ProcessExited, NoSuchProcess, KernelThread):
        return None
    except NotRoot:
        if strict:
            raise
        return None
    doc = report.build_json(proc, False, kernel.thp_policy())
    del proc
    try:
        folio_view.annotate(doc, pid)      # report --json's folio keys: null where the kernel cannot tell
    except (ProcessExited, NoSuchProcess):
        return None
    return doc


def run(output: str, pids: List[int], comm: Optional[str], all_: bool, interval: float = 1.0,
        duration: Optional[float] = None, exact: bool = False, probes_factory=open_probes, err=None,
        force: bool = False, kprobes: Optional[bool] = None) -> int:
    """The frames are the ones `top --json` prints with the same options: the same features
    (mmap / madvise / mincore through kprobes where the kernel has them) and the same model."""
    from .. import store
    from . import top
    err = err or sys.stderr
    store.check_output(output, force)          # before the probes: a refusal costs nothing
    for p in pids:
        procfs.check_pid(p)
    one = pids[0] if len(pids) == 1 else None
    if kprobes is None:
        kprobes = probes_factory is open_probes and top.syscall_kprobes_here()
    features = features_for(exact, one, False, kprobes)
    options = {"pids": pids, "comm": comm, "all": all_, "interval": interval, "duration": duration, "exact": exact}
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Stop()
    signal.signal(signal.SIGTERM, on_term)
    probes = writer = None
    tty = err.isatty()
    try:
        probes = probes_factory(features, one)
        model = top.make_model(probes, exact, one, comm)
        model.procs.tick = lambda: probes.poll(0)
        model.start()
        probes.snapshot()
        started = time.time()
        writer = store.Writer(output, options, kernel.release(), started, force=force)
        print(f"Recording to {output} every {interval:g}s" + (f" for {duration:g}s" if duration else "")
              + "... Ctrl-C to stop", file=err, flush=True)
        deadline = time.monotonic()
        end = None if duration is None else deadline + duration
        done = False
        last_read: Dict[int, float] = {}
        last_rows: Dict[int, Optional[dict]] = {}
        last_layouts: Dict[int, Optional[tuple]] = {}
        policy: Optional[dict] = None
        policy_read = 0.0
        while not done:
            deadline += interval
            wait_for(probes, deadline)
            try:
                frame: Optional[dict] = model.step(probes.snapshot())
            except ProcessExited as e:
                frame = getattr(e, "frame", None)      # the -p process is gone: its last interval
                done = True
            if frame is None:
                break
            now = time.monotonic()
            rows = {r["pid"]: r for r in frame.get("processes", []) if isinstance(r.get("pid"), int)}
            reports = {}
            for p in watched(pids, comm, all_):
                layout = layout_of(frame, p)
                if not snapshot_due(rows.get(p), last_rows.get(p), last_read.get(p), now, layout,
                                    last_layouts.get(p)):
                    continue
                doc = snapshot(p, strict=bool(pids))
                if doc is not None:
                    reports[p] = doc
                    last_read[p], last_rows[p], last_layouts[p] = now, rows.get(p), layout
            if policy is None or now - policy_read >= POLICY_REFRESH:
                policy, policy_read = policy_mod.read(), now
            writer.write_interval(time.time(), frame, reports, policy)
            n = writer.seq
            if tty or n % 10 == 0 or done:
                line = f"record: {n} intervals, {writer.snapshots_written} snapshots, {human_bytes(writer.size())}"
                print(("\r" + line) if tty else line, end="" if tty else "\n", file=err, flush=True)
            if pids and not any(os.path.exists(f"/proc/{p}") for p in pids):
                done = True
            if end is not None and time.monotonic() >= end - interval / 2:
                done = True
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if probes is not None:
            probes.close()
        if writer is not None:
            if tty:
                print(file=err)
            print(f"record: {writer.seq} intervals, {writer.snapshots_written} snapshots, "
                  f"{human_bytes(writer.size())} in {output}", file=err, flush=True)
            writer.close()
        signal.signal(signal.SIGTERM, old_term)
    return 0
