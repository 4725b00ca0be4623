"""`pmemtrace top`: huge-page vs small-page faults per process (or per VMA with -p), live.

Default mode puts no BPF program on any per-fault path: faults come from /proc/PID/stat,
huge faults from the growth of PMD-mapped bytes (pmemtrace.sampler), system-wide rates
from /proc/vmstat; BPF only watches rare paths (DAX faults, mmap/munmap/madvise, mincore).
`--exact` adds the loader's "thp" feature: every THP fault attributed to its tgid and
address in kernel maps, so a process that exits keeps its counts.

What each process row means (counts per interval in JSON and plain lines, per second on
the screen):
  faults       minflt + majflt of the whole process (/proc/PID/stat)
  huge_faults  default: PMD-mapped bytes gained (smaps_rollup) / PMD size, hugetlb bytes
               gained / hugetlb page size, plus DAX PMD faults; --exact: THP fault
               allocations counted in BPF by tgid (plus DAX PMD faults)
  fallbacks    DAX PMD faults that fell back to PTEs; anonymous THP fallbacks are only
               known system-wide (header), so without the DAX probe this is null
  huge_share   bytes mapped huge / resident bytes (hugetlb included)
  dax_vmas, vm_sync_vmas  from smaps (VmFlags 'sf') and statx; re-read every 10 s, or after
               a file / MAP_SYNC mmap; at most 32 processes an interval (busiest first),
               the others null until their turn
"(exited)": what /proc/vmstat counted (pgfault, thp_fault_alloc) beyond the live
processes' deltas: processes that exited before the sample took their last faults with
them. It also holds THPs a live process freed and faulted again within one interval and
the skew of reading many files at slightly different times. With --exact, THP faults of
exited processes stay on their own pid rows (BPF counts by tgid), marked exited.

Data flows: ProcSampler / VmaSampler + Probes.snapshot() -> Model.step() -> a frame (a
JSON-ready dict) -> one of three renderers: rich screen (TTY), plain lines, JSON lines.
Key handling is a pure function (handle_key); the loop only waits, reads and renders.
"""
import dataclasses
import json
import os
import re
import select
import signal
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional

from .. import aggregate, kernel, procfs, sampler
from ..errors import PmemtraceError, ProcessExited

from ..cli import TOP_SORT_KEYS as SORT_KEYS   # one list: the CLI validates -s with it
ASCENDING = {"pid", "comm"}          # natural order for these; counts sort largest first
VMA_REFRESH_SECONDS = 10.0           # DAX / VM_SYNC VMA counts of a process are re-read this often
VMA_BUDGET = 32                      # ... and at most this many processes' smaps are read an interval
DAX_FAULT_OUTCOMES = ("pmd_huge", "pmd_needdsync", "pte", "pte_needdsync", "load_hole", "pmd_load_hole")
MIB = 1 << 20


# ----------------------------------------------------------------- untrusted text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Control characters (escape sequences, newlines) shown as \\xNN, never sent to the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def safe_markup(text: str) -> str:
    """For a rich markup string: control characters and markup both shown as text."""
    from rich.markup import escape
    return escape(clean(text))


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


def check_sort_key(key: str) -> str:
    if key not in SORT_KEYS:
        raise PmemtraceError(f"unknown sort column {key!r}: choose one of {', '.join(SORT_KEYS)}")
    return key


def sort_rows(rows: List[dict], key: str, reverse: bool = False) -> List[dict]:
    """Counts largest first, pid / comm ascending; `reverse` flips. Unknown (None) values last."""
    ascending = key in ASCENDING
    missing = [r for r in rows if r.get(key) is None]
    known = [r for r in rows if r.get(key) is not None]
    known.sort(key=lambda r: r[key], reverse=(not ascending) != reverse)   # stable: ties keep pid/address order
    return known + missing


# ----------------------------------------------------------------- probes

def features_for(exact: bool, pid: Optional[int]) -> List[str]:
    """Loader features: rare paths always; the per-fault ones only with --exact."""
    feats = ["dax", "syscalls", "mincore"]
    if exact:
        feats = ["thp"] + (["faults"] if pid is not None else []) + feats
    return feats


class NoProbes:
    """Stands in for loader.Probes where no BPF is wanted (tests, or a fake)."""
    missing: Dict[str, str] = {}

    def snapshot(self) -> aggregate.ProbeCounts:
        return aggregate.ProbeCounts()

    def poll(self, timeout_ms: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


# ----------------------------------------------------------------- the model

def _dax_totals(counts: aggregate.ProbeCounts) -> Dict[str, int]:
    out = dict.fromkeys(aggregate.DAX_OUTCOMES, 0)
    for (_, outcome, _), n in counts.dax.items():
        out[outcome] = out.get(outcome, 0) + n
    return out


def _syscall_pids(counts: aggregate.ProbeCounts) -> set:
    """Processes that mapped, unmapped or madvised: their huge bytes may have dropped."""
    return {e["tgid"] for e in counts.events
            if e.get("type") in (aggregate.EVENT_MMAP, aggregate.EVENT_MUNMAP, aggregate.EVENT_MADVISE)}


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _vma_set_changers(counts: aggregate.ProbeCounts) -> Dict[int, str]:
    """Processes whose DAX / VM_SYNC VMA counts may have changed: a file mmap (or one with
    MAP_SYNC) can add such a VMA ('add'); any munmap can remove one ('unmap')."""
    out: Dict[int, str] = {}
    for e in counts.events:
        if e.get("type") == aggregate.EVENT_MMAP and (_signed(e["fd"]) >= 0 or e["flags"] & aggregate.MAP_SYNC):
            out[e["tgid"]] = "add"
        elif e.get("type") == aggregate.EVENT_MUNMAP:
            out.setdefault(e["tgid"], "unmap")
    return out


class VmaCountCache:
    """DAX and VM_SYNC VMA counts per process, re-read when stale or after mmap/munmap."""

    def __init__(self, read_smaps=procfs.read_smaps, refresh: float = VMA_REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.read_smaps, self.refresh, self.clock = read_smaps, refresh, clock
        self.cache: Dict[int, tuple] = {}
        self.dax_cache: dict = {}

    def peek(self, pid: int, starttime: int, dirty: bool = False) -> Optional[sampler.VmaCounts]:
        """The cached counts if still fresh, else None (no read)."""
        hit = self.cache.get(pid)
        if hit and hit[0] == starttime and not dirty and self.clock() - hit[1] < self.refresh:
            return hit[2]
        return None

    def get(self, pid: int, starttime: int, dirty: bool = False) -> Optional[sampler.VmaCounts]:
        hit = self.cache.get(pid)
        now = self.clock()
        if hit and hit[0] == starttime and not dirty and now - hit[1] < self.refresh:
            return hit[2]
        try:
            counts = sampler.vma_counts(pid, self.read_smaps(pid), cache=self.dax_cache)
        except PmemtraceError:
            return hit[2] if hit else None
        self.cache[pid] = (starttime, now, counts)
        return counts

    def forget(self, pids) -> None:
        for pid in pids:
            self.cache.pop(pid, None)


class Model:
    """Turns one interval of /proc samples and probe counts into a frame (a dict)."""

    def __init__(self, exact: bool = False, pid: Optional[int] = None, comm: Optional[str] = None,
                 dax_only: bool = False, proc_sampler=None, vma_sampler=None, vma_cache=None,
                 huge_small=None, fallbacks_known: bool = False, vma_budget: int = VMA_BUDGET):
        self.vma_budget = vma_budget
        self.fallbacks_known = fallbacks_known   # the DAX PMD probe is attached: its fallbacks are counted
        self.exact, self.pid, self.comm, self.dax_only = exact, pid, comm, dax_only
        self.detail = pid                  # whose VMAs are shown: -p PID, or chosen on the screen
        self.page_faults_counted = exact and pid is not None   # the loader's "faults" feature is on
        self.procs = proc_sampler or sampler.ProcSampler(pid=pid)
        self.vmas = vma_sampler if vma_sampler is not None else (sampler.VmaSampler(pid) if pid else None)
        self.vma_cache = vma_cache or VmaCountCache()
        self.huge_small = huge_small       # pagemap.huge_small_bytes, for DAX VMAs (smaps cannot see them)
        self.dax_kind: Dict[tuple, str] = {}
        self.comms: Dict[int, str] = {}

    def start(self) -> None:
        self.procs.start()
        if self.vmas is not None:
            self.vmas.sample()

    def step(self, counts: aggregate.ProbeCounts) -> dict:
        touched = _syscall_pids(counts)
        s = self.procs.sample(also_read=touched)
        if self.pid is not None and self.pid not in s.current:
            err = ProcessExited(f"pid {self.pid} exited")
            err.frame = self._final_frame(s, counts)
            raise err
        gone_detail = None
        if self.detail is not None and self.detail not in s.current:
            gone_detail, self.detail, self.vmas = self.detail, None, None
        self.vma_cache.forget(s.gone)
        bpf = aggregate.per_process(counts)
        rows = self._process_rows(s, bpf, _vma_set_changers(counts))
        for pid in s.gone:                  # names are kept one interval past exit, no longer
            self.comms.pop(pid, None)
        frame = {
            "time": round(s.time, 3),
            "interval": round(s.seconds, 3),
            "mode": "exact" if self.exact else "default",
            "lost_events": counts.lost,
            "system": self._system(s, counts),
            "processes": rows,
        }
        if self.detail is not None:
            frame["pid"] = self.detail
            try:
                frame["vmas"] = self._vma_rows(counts)
            except ProcessExited:
                if self.pid is not None:
                    raise
                gone_detail, self.detail, self.vmas = self.detail, None, None
                del frame["pid"]
        if gone_detail is not None:
            frame["detail_exited"] = gone_detail
        return frame

    def _final_frame(self, s: sampler.Sample, counts: aggregate.ProbeCounts) -> dict:
        """The -p process is gone: what the probes still counted for it in its last interval
        (by tgid and by address in the VMAs it had), for the plain and JSON outputs."""
        rows = self._process_rows(s, aggregate.per_process(counts), {})
        vmas = []
        prev = getattr(self.vmas, "prev", None)
        if prev:
            index = aggregate.VmaIndex((v.start, v.end) for v in prev)
            bpf = aggregate.per_vma(counts, self.pid, index, kernel.pmd_size())
            for v in prev:
                vc = bpf.get(v.start)
                if vc is not None:
                    vmas.append(self._vma_row(v.start, v.end, v.perms, backing(v.path, v.perms), 0, 0,
                                              vc.faults, vc.huge_faults, "none", "sf" in v.vmflags, vc))
            if aggregate.UNMAPPED in bpf:
                vc = bpf[aggregate.UNMAPPED]
                vmas.append(self._vma_row(None, None, "", aggregate.UNMAPPED, 0, 0, vc.faults, vc.huge_faults,
                                          "none", False, vc))
        return {"time": round(s.time, 3), "interval": round(s.seconds, 3),
                "mode": "exact" if self.exact else "default", "lost_events": counts.lost,
                "system": self._system(s, counts), "processes": rows, "pid": self.pid, "vmas": vmas,
                "exited": True}

    def select(self, pid: Optional[int]) -> None:
        """Show the VMAs of pid from the next interval on (None: back to the process list)."""
        if pid is None or self.pid is not None:
            if self.pid is None:
                self.detail, self.vmas = None, None
            return
        vmas = sampler.VmaSampler(pid)
        try:
            vmas.sample()
        except PmemtraceError:
            return
        self.detail, self.vmas = pid, vmas

    # -- system-wide
    def _system(self, s: sampler.Sample, counts: aggregate.ProbeCounts) -> dict:
        vm = s.globals.vmstat
        mthp = {}
        for size, stats in s.globals.mthp.items():
            nonzero = {k: v for k, v in stats.items() if v}
            if nonzero:
                mthp[str(size)] = nonzero
        return {"vmstat": dict(vm), "mthp": mthp, "dax": _dax_totals(counts)}

    # -- per process
    def _process_rows(self, s: sampler.Sample, bpf: Dict[int, aggregate.ProcessCounts],
                      changers: Dict[int, str]) -> List[dict]:
        rows: Dict[int, dict] = {}
        for d in s.processes:
            rows[d.pid] = {
                "pid": d.pid, "comm": d.comm, "faults": d.faults,
                "huge_faults": None if self.exact else d.huge_faults,
                "fallbacks": 0 if self.fallbacks_known else None, "huge_share": round(d.huge_share, 4),
                "rss_bytes": d.rss_bytes, "huge_bytes": d.huge_bytes, "new": d.new, "exited": False,
            }
            self.comms[d.pid] = d.comm
        for tgid, pc in bpf.items():
            if self.pid is not None and tgid != self.pid:
                continue
            activity = pc.huge_faults or any(pc.dax.values()) or pc.map_sync_refusals or pc.madvise_calls \
                or pc.mincore.calls
            if tgid not in rows and not activity:
                continue
            if tgid not in rows:
                alive = tgid in s.current
                t = s.current.get(tgid)
                rows[tgid] = {"pid": tgid, "comm": (t.comm if t else pc.comm or self.comms.get(tgid, "?")),
                              "faults": 0 if alive else None, "huge_faults": None,
                              "fallbacks": 0 if self.fallbacks_known else None,
                              "huge_share": None, "rss_bytes": None, "huge_bytes": None, "new": False,
                              "exited": not alive}
                if alive:
                    h = t.huge
                    rows[tgid].update(huge_share=round(h.share, 4), rss_bytes=h.rss + h.hugetlb,
                                      huge_bytes=h.huge)
            r = rows[tgid]
            dax_huge = pc.dax.get("pmd_huge", 0)
            if self.exact:
                r["huge_faults"] = pc.huge_faults + dax_huge
            else:
                r["huge_faults"] = (r["huge_faults"] or 0) + dax_huge
            if self.fallbacks_known:
                r["fallbacks"] = pc.dax.get("pmd_fallback", 0)
            r["dax_faults"] = {k: v for k, v in pc.dax.items() if v}
            r["map_sync_refusals"] = pc.map_sync_refusals
            r["madvise_calls"] = pc.madvise_calls
            if pc.mincore.calls:
                r["mincore_calls"] = pc.mincore.calls
                r["mincore"] = dataclasses.asdict(pc.mincore)
        if self.pid is not None and self.pid not in rows and self.pid in s.current:
            t = s.current[self.pid]
            rows[self.pid] = {"pid": self.pid, "comm": t.comm, "faults": 0, "huge_faults": 0,
                              "fallbacks": 0 if self.fallbacks_known else None,
                              "huge_share": round(t.huge.share, 4), "rss_bytes": t.huge.rss + t.huge.hugetlb,
                              "huge_bytes": t.huge.huge, "new": False, "exited": False}
        for r in rows.values():
            if r["huge_faults"] is None:
                r["huge_faults"] = 0
            r.setdefault("dax_faults", {})
            r.setdefault("map_sync_refusals", 0)
            r.setdefault("madvise_calls", 0)
        # DAX / VM_SYNC VMA counts need a full smaps read: busiest processes first, at
        # most vma_budget reads an interval (cached counts are free); the rest show null.
        budget = self.vma_budget
        for r in sorted(rows.values(), key=lambda r: (r["huge_faults"], r["faults"] or 0), reverse=True):
            t = s.current.get(r["pid"])
            vc = None
            if t is not None:
                vc = self.vma_cache.peek(r["pid"], t.starttime)
                # an unmap can only lower counts that are not zero already
                dirty = changers.get(r["pid"]) == "add" or (changers.get(r["pid"]) == "unmap" and vc is not None
                                                            and (vc.dax or vc.vm_sync))
                if dirty:
                    vc = None
                if vc is None and budget > 0:
                    budget -= 1
                    vc = self.vma_cache.get(r["pid"], t.starttime, dirty)
                    if self.procs.tick is not None:
                        self.procs.tick()
            r["dax_vmas"] = vc.dax if vc else None
            r["vm_sync_vmas"] = vc.vm_sync if vc else None
        out = list(rows.values())
        if s.exited is not None and self.pid is None:
            e = s.exited
            huge = e.huge_faults
            if self.exact:
                # BPF counted exited processes by tgid: they have rows of their own
                huge = max(0, s.globals.vmstat.get("thp_fault_alloc", 0)
                           - sum(pc.huge_faults for pc in bpf.values()))
            if e.faults or huge:
                out.append({"pid": None, "comm": sampler.EXITED_COMM, "faults": e.faults, "huge_faults": huge,
                            "fallbacks": None, "huge_share": None, "rss_bytes": None, "huge_bytes": None,
                            "new": False, "exited": True, "dax_faults": {}, "map_sync_refusals": 0,
                            "madvise_calls": 0, "dax_vmas": None, "vm_sync_vmas": None})
        return [r for r in out if self._wanted(r)]

    def _wanted(self, r: dict) -> bool:
        if self.comm is not None and self.comm not in (r["comm"] or ""):
            return False
        if self.dax_only and not (r.get("dax_vmas") or r.get("dax_faults")):
            return False
        return True

    # -- per VMA (top -p)
    def _dax_of(self, b) -> str:
        key = (b.dev, b.inode)
        if key not in self.dax_kind:
            self.dax_kind[key] = sampler.vma_dax(self.detail, b) if b.inode else "none"
        return self.dax_kind[key]

    def _vma_rows(self, counts: aggregate.ProbeCounts) -> List[dict]:
        deltas = self.vmas.sample()
        index = aggregate.VmaIndex((d.start, d.end) for d in deltas)
        bpf = aggregate.per_vma(counts, self.detail, index, kernel.pmd_size())
        rows = []
        for d in deltas:
            m = procfs.MapEntry(d.start, d.end, d.perms, 0, d.dev, d.inode, d.path)
            dax = self._dax_of(m) if m.inode else "none"
            huge_b, small_b = d.huge_bytes, d.small_bytes
            if dax != "none" and self.huge_small is not None:
                try:
                    huge_b, small_b = self.huge_small(self.detail, d.start, d.end)
                except (PmemtraceError, OSError):
                    pass
            vc = bpf.get(d.start, aggregate.VmaCounts())
            faults, huge = d.faults, d.huge_faults
            if self.exact:
                huge = vc.huge_faults
                if self.page_faults_counted:
                    faults = vc.faults
            if dax != "none":
                huge = vc.dax.get("pmd_huge", 0)
                faults = sum(vc.dax.get(k, 0) for k in DAX_FAULT_OUTCOMES)
            rows.append(self._vma_row(d.start, d.end, d.perms, backing(d.path, d.perms), huge_b, small_b,
                                      faults, huge, dax, d.vm_sync, vc))
        if aggregate.UNMAPPED in bpf:
            vc = bpf[aggregate.UNMAPPED]
            rows.append(self._vma_row(None, None, "", aggregate.UNMAPPED, 0, 0, vc.faults, vc.huge_faults,
                                      "none", False, vc))
        return [r for r in rows if r["huge_bytes"] or r["small_bytes"] or r["faults"] or r["huge_faults"]
                or r["madvise"] or r["map_sync_refusals"] or r["dax_faults"]]

    @staticmethod
    def _vma_row(start, end, perms, back, huge_b, small_b, faults, huge, dax, vm_sync, vc) -> dict:
        return {"start": start, "end": end, "perms": perms, "backing": back, "huge_bytes": huge_b,
                "small_bytes": small_b, "faults": faults, "huge_faults": huge, "dax": dax, "vm_sync": vm_sync,
                "dax_faults": {k: v for k, v in vc.dax.items() if v}, "map_sync_requests": vc.map_sync_requests,
                "map_sync_refusals": vc.map_sync_refusals, "madvise": dict(vc.madvise)}


def backing(path: str, perms: str) -> str:
    if not path:
        return "anon (shared)" if perms[3:4] == "s" else "anon"
    return path


# ----------------------------------------------------------------- renderers

def fmt_count(v, seconds: float = 0.0) -> str:
    """A count, or a rate when seconds is given; '-' for unknown."""
    if v is None:
        return "-"
    if seconds:
        rate = v / seconds
        return f"{rate:.0f}" if rate >= 10 or rate == int(rate) else f"{rate:.1f}"
    return str(v)


def fmt_share(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def fmt_size(n: int) -> str:
    return f"{n >> 20}M" if n >= MIB else f"{n >> 10}K"


def json_line(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"))


PROC_COLUMNS = (("PID", 7), ("COMM", 16), ("FAULTS", 9), ("HUGE", 7), ("FALLBK", 7), ("HUGE%", 6),
                ("DAX", 4), ("SYNC", 4))
VMA_COLUMNS = (("START", 12), ("END", 12), ("BACKING", 40), ("HUGE", 8), ("SMALL", 8), ("FAULTS", 8),
               ("HUGEF", 6), ("DAX", 6), ("SYNC", 4), ("MADV", 5), ("SYNCREF", 7))


def _proc_cells(r: dict, seconds: float = 0.0) -> List[str]:
    return [("-" if r["pid"] is None else str(r["pid"])), clean(r["comm"] or ""), fmt_count(r["faults"], seconds),
            fmt_count(r["huge_faults"], seconds), fmt_count(r["fallbacks"], seconds), fmt_share(r["huge_share"]),
            fmt_count(r.get("dax_vmas")), fmt_count(r.get("vm_sync_vmas"))]


def _vma_cells(v: dict, seconds: float = 0.0) -> List[str]:
    start = "-" if v["start"] is None else f"{v['start']:x}"
    end = "-" if v["end"] is None else f"{v['end']:x}"
    back = clean(v["backing"])
    if len(back) > 40:
        back = "..." + back[-37:]
    return [start, end, back, fmt_bytes(v["huge_bytes"]), fmt_bytes(v["small_bytes"]),
            fmt_count(v["faults"], seconds), fmt_count(v["huge_faults"], seconds), v["dax"],
            "yes" if v["vm_sync"] else "no", str(sum(v["madvise"].values())), str(v["map_sync_refusals"])]


def _system_summary(frame: dict, seconds: float = 0.0) -> str:
    vm, dax = frame["system"]["vmstat"], frame["system"]["dax"]
    parts = [f"thp_fault_alloc {fmt_count(vm.get('thp_fault_alloc', 0), seconds)}",
             f"fallback {fmt_count(vm.get('thp_fault_fallback', 0), seconds)}",
             f"fallback_charge {fmt_count(vm.get('thp_fault_fallback_charge', 0), seconds)}",
             f"collapse {fmt_count(vm.get('thp_collapse_alloc', 0), seconds)}",
             f"dax pmd {fmt_count(dax.get('pmd_huge', 0), seconds)} pte {fmt_count(dax.get('pte', 0), seconds)}"
             f" fallback {fmt_count(dax.get('pmd_fallback', 0), seconds)}",
             f"lost {frame['lost_events']}"]
    mthp = frame["system"]["mthp"]
    if mthp:
        parts.append("mTHP " + " ".join(f"{fmt_size(int(size))}:{fmt_count(st.get('anon_fault_alloc', 0), seconds)}"
                                        for size, st in mthp.items() if st.get("anon_fault_alloc")))
    return "  ".join(parts)


def mincore_lines(rows: List[dict]) -> List[str]:
    """The mincore panel: callers in this interval, bytes queried, resident share of the answer
    (of the pages the probe read, at most 4096 a call), mean latency."""
    out = []
    for r in rows:
        mc = r.get("mincore")
        if not mc:
            continue
        resident = f"{100 * mc['pages_resident'] / mc['pages_examined']:.0f}%" if mc["pages_examined"] else "-"
        out.append(f"mincore {r['pid']} {clean(r['comm'])}: {mc['calls']} calls, {fmt_bytes(mc['bytes'])} queried, "
                   f"{resident} resident, {mc['ns'] / mc['calls'] / 1000:.1f} us/call"
                   + (f", {mc['errors']} errors" if mc["errors"] else ""))
    return out


def plain_lines(frame: dict, rows: List[dict], vmas: Optional[List[dict]] = None) -> List[str]:
    """bcc-style output for a pipe: a timestamped header line, then aligned rows (counts per interval)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(frame["time"]))
    lines = [f"{stamp} interval {frame['interval']:.2f}s  {_system_summary(frame)}"]

    def line(cells, cols):
        return " ".join(c.rjust(w) if i != 1 and not (cols is VMA_COLUMNS and i == 2) else c.ljust(w)
                        for i, (c, (_, w)) in enumerate(zip(cells, cols))).rstrip()
    lines.append(line([c for c, _ in PROC_COLUMNS], PROC_COLUMNS))
    lines += [line(_proc_cells(r), PROC_COLUMNS) for r in rows]
    if vmas is not None:
        lines.append(line([c for c, _ in VMA_COLUMNS], VMA_COLUMNS))
        lines += [line(_vma_cells(v), VMA_COLUMNS) for v in vmas]
    lines += mincore_lines(rows)
    return lines + [""]


def render(frame: dict, rows: List[dict], vmas: Optional[List[dict]], state: ViewState, policy, release: str):
    """The rich screen: header lines and a table (rates per second)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    seconds = frame["interval"] or 1.0
    stamp = time.strftime("%H:%M:%S", time.localtime(frame["time"]))
    head = Text()
    head.append(f"pmemtrace top - {stamp}  kernel {release}  mode {frame['mode']}", style="bold")
    if state.paused:
        head.append("  [paused]", style="yellow")
    head.append(f"\nTHP enabled={policy.enabled} defrag={policy.defrag} shmem_enabled={policy.shmem_enabled}")
    head.append(f"\n/s: {_system_summary(frame, seconds)}")
    arrow = "^" if state.reverse else "v"
    head.append(f"\nsort: {state.sort_key} {arrow}   keys: q quit  < > sort  r reverse  space pause"
                "  j/k Enter VMAs  Esc back")
    if frame.get("detail_exited") is not None:
        head.append(f"\npid {frame['detail_exited']} exited", style="yellow")
    elif state.detail and vmas is None:
        head.append("\nVMAs from the next interval on...", style="yellow")
    if vmas is None:
        table = Table(box=None, pad_edge=False, header_style="bold")
        names = ("PID", "COMM", "FAULTS/s", "HUGE/s", "FALLBK/s", "HUGE%", "DAX", "SYNC")
        keys = ("pid", "comm", "faults", "huge_faults", "fallbacks", "huge_share", None, None)
        for name, key in zip(names, keys):
            label = f"{name}{arrow}" if key == state.sort_key else name
            table.add_column(label, justify="left" if key == "comm" else "right", no_wrap=True)
        for i, r in enumerate(rows):
            table.add_row(*(Text(c) for c in _proc_cells(r, seconds)),
                          style="reverse" if i == min(state.cursor, len(rows) - 1) else None)
        return Group(head, table, *(Text(line) for line in mincore_lines(rows)))
    table = Table(box=None, pad_edge=False, header_style="bold")
    # on a narrow terminal BACKING gives up its width first; numbers are never cut
    for name in ("START", "END", "BACKING", "HUGE", "SMALL", "FAULTS/s", "HUGE/s", "DAX", "SYNC", "MADV",
                 "SYNCREF"):
        if name == "BACKING":
            table.add_column(name, justify="left", no_wrap=True, overflow="ellipsis", max_width=40, min_width=8)
        else:
            table.add_column(name, justify="right", no_wrap=True,
                             min_width=12 if name in ("START", "END") else len(name))
    for v in vmas:
        table.add_row(*(Text(c) for c in _vma_cells(v, seconds)))
    proc = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("PID", "COMM", "FAULTS/s", "HUGE/s", "FALLBK/s", "HUGE%", "DAX", "SYNC"):
        proc.add_column(name, justify="left" if name == "COMM" else "right")
    for r in rows:
        proc.add_row(*(Text(c) for c in _proc_cells(r, seconds)))
    return Group(head, proc, Text(""), table)


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


def run(interval=1.0, count=None, noclear=False, maxrows=20, sort_key="huge_faults", pid=None, comm=None,
        dax_only=False, exact=False, as_json=False, ebpf=False, probes_factory=open_probes, out=None):
    check_sort_key(sort_key)
    features = features_for(exact, pid)
    out = out or sys.stdout
    if ebpf:
        out.write(ebpf_text(features, pid))
        return 0
    if pid is not None:
        procfs.check_pid(pid)
    try:
        from .. import pagemap
        huge_small = pagemap.huge_small_bytes if pagemap.scan_supported() else None
    except (ImportError, AttributeError, OSError):
        huge_small = None
    tty = out.isatty() and not as_json
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Stop()
    signal.signal(signal.SIGTERM, on_term)
    probes = None
    try:
        probes = probes_factory(features, pid)
        missing = getattr(probes, "missing", {}) or {}
        model = Model(exact=exact, pid=pid, comm=comm, dax_only=dax_only, huge_small=huge_small,
                      fallbacks_known=("fs_dax:dax_pmd_fault_done" not in missing and "dax" in features
                                       and not isinstance(probes, NoProbes)))
        model.procs.tick = lambda: probes.poll(0)
        model.start()
        probes.snapshot()          # start the first interval with empty maps
        state = ViewState(sort_key=sort_key)
        if tty:
            _loop_tty(model, probes, interval, count, noclear, maxrows, state, out)
        else:
            _loop_lines(model, probes, interval, count, maxrows, state, as_json, out)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if probes is not None:
            probes.close()
        signal.signal(signal.SIGTERM, old_term)
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


def _loop_tty(model, probes, interval, count, noclear, maxrows, state, out) -> None:
    from rich.console import Console
    from rich.live import Live
    console = Console(file=out)
    policy, release = kernel.thp_policy(), kernel.release()
    holder = {"state": state, "frame": None, "redraw": False}

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
                live.stop()
