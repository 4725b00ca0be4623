"""The per-interval model: /proc samples and probe counts in, one frame (a JSON-ready dict) out.

This is what `top` shows, `record` stores, `replay` reads back and the exporter turns into
metrics: ProcSampler / VmaSampler (pmemtrace.sampler) + Probes.snapshot() -> Model.step() -> a
frame. No screen, no terminal: the views in pmemtrace/views/ render frames.

What each process row of a frame means (counts per interval):
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
"""
import dataclasses
import time
from typing import Callable, Dict, List, Optional, Tuple

from . import aggregate, kernel, procfs, sampler
from . import vma_sampler as vma_sampling
from .backing import FileFacts, classify_backing
from .errors import PmemtraceError, ProcessExited

SORT_KEYS = aggregate.SORT_KEYS
VMA_REFRESH_SECONDS = 10.0           # DAX / VM_SYNC VMA counts of a process are re-read this often
VMA_BUDGET = 32                      # ... and at most this many processes' smaps are read an interval
DAX_FAULT_OUTCOMES = ("pmd_huge", "pmd_needdsync", "pte", "pte_needdsync", "load_hole", "pmd_load_hole")


def features_for(exact: bool, pid: Optional[int], syscalls: bool = False, kprobes: bool = False) -> List[str]:
    """Loader features: DAX outcomes always; THP attribution only with --exact; with -p, every
    fault of that one process per page in both modes (per-VMA `faults` are real fault counts;
    other processes pay one early return in the pid-filtered page_fault_user program).

    mmap / munmap / madvise / mincore: through kprobes on the syscall functions where the
    kernel has them (``kprobes``: only those calls pay); else through syscall tracepoints,
    only when asked (``syscalls``, top --syscalls), because any syscall tracepoint puts every
    syscall of every task on the slow path. Without either, MAP_SYNC and madvise state come
    from smaps VmFlags (sf, hg, nh) and the syscall counts are null."""
    feats = ((["faults"] if pid is not None else []) + ["dax"]
             + (["ksyscalls", "kmincore"] if kprobes else ["syscalls", "mincore"] if syscalls else []))
    if exact:
        feats = ["thp"] + feats
    return feats


class NoProbes:
    """Stands in for loader.Probes where no BPF is wanted (tests, or a fake): no feature attached."""
    features: Tuple[str, ...] = ()
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

    def __init__(self, read_smaps=procfs.read_smaps_layout_only, refresh: float = VMA_REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.read_smaps, self.refresh, self.clock = read_smaps, refresh, clock
        self.cache: Dict[int, tuple] = {}
        self.dax_cache: dict = {}

    def peek(self, pid: int, starttime: int, dirty: bool = False) -> Optional[vma_sampling.DaxSyncCounts]:
        """The cached counts if still fresh, else None (no read)."""
        hit = self.cache.get(pid)
        if hit and hit[0] == starttime and not dirty and self.clock() - hit[1] < self.refresh:
            return hit[2]
        return None

    def get(self, pid: int, starttime: int, dirty: bool = False) -> Optional[vma_sampling.DaxSyncCounts]:
        hit = self.cache.get(pid)
        now = self.clock()
        if hit and hit[0] == starttime and not dirty and now - hit[1] < self.refresh:
            return hit[2]
        try:
            counts = vma_sampling.dax_sync_counts(pid, self.read_smaps(pid), cache=self.dax_cache)
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
                 huge_small=None, fallbacks_known: bool = False, vma_budget: int = VMA_BUDGET,
                 syscalls_known: bool = True, mincore_known: bool = True):
        self.vma_budget = vma_budget
        # mmap/munmap/madvise (and mincore) are watched: their counts are numbers, else null
        self.syscalls_known, self.mincore_known = syscalls_known, mincore_known
        self.fallbacks_known = fallbacks_known   # the DAX PMD probe is attached: its fallbacks are counted
        self.exact, self.pid, self.comm, self.dax_only = exact, pid, comm, dax_only
        self.detail = pid                  # whose VMAs are shown: -p PID, or chosen on the screen
        self.page_faults_counted = pid is not None   # the loader's "faults" feature is on (features_for)
        self.procs = proc_sampler or sampler.ProcSampler(pid=pid)
        self.vmas = vma_sampler if vma_sampler is not None else (vma_sampling.VmaSampler(pid) if pid else None)
        self.vma_cache = vma_cache or VmaCountCache()
        self.huge_small = huge_small       # pagemap.huge_small_bytes, for DAX VMAs (smaps cannot see them)
        self.dax_kind: Dict[tuple, str] = {}
        self.comms: Dict[int, str] = {}

    def start(self) -> None:
        self.procs.start()
        if self.vmas is not None:
            self.vmas.sample()

    def initial_frame(self) -> dict:
        """The state at start (after start()), shown at once instead of after one interval: the
        processes that have memory mapped huge now, with their huge bytes and share; every count
        is zero (an interval of length 0). Marked "initial": true. No smaps is read for it."""
        state = self.procs.state
        deltas = [sampler.ProcDelta(t.pid, t.comm, 0, 0, t.huge.huge, t.huge.rss + t.huge.hugetlb)
                  for t in state.values() if t.huge.huge and (self.pid is None or t.pid == self.pid)]
        g = sampler.Globals({k: 0 for k in sampler.VMSTAT_KEYS}, {})
        s = sampler.Sample(time.time(), 0.0, deltas, None, [], g, state)
        budget, self.vma_budget = self.vma_budget, 0
        try:
            rows = self._process_rows(s, {}, {})
        finally:
            self.vma_budget = budget
        frame = {"time": round(s.time, 3), "interval": 0.0, "mode": "exact" if self.exact else "default",
                 "lost_events": 0, "system": self._system(s, aggregate.ProbeCounts()), "processes": rows,
                 "initial": True}
        prev = getattr(self.vmas, "prev", None)
        if self.detail is not None and prev is not None:
            frame["pid"] = self.detail
            vmas = []
            for v in prev:
                if not (v.huge.huge or v.huge.small):
                    continue
                m = procfs.MapEntry(v.start, v.end, v.perms, 0, v.dev, v.inode, v.path)
                dax = self._dax_of(m) if v.inode else "none"
                vmas.append(self._vma_row(v.start, v.end, v.perms, vma_backing(v, dax), v.path, v.huge.huge,
                                          v.huge.small, 0, 0, dax, "sf" in v.vmflags, aggregate.VmaCounts(),
                                          v.vmflags))
            frame["vmas"] = vmas
        return frame

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
            "lost_by_reason": dict(counts.lost_by),
            "maps": dict(counts.maps),
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
        assert self.pid is not None
        rows = self._process_rows(s, aggregate.per_process(counts), {})
        vmas = []
        prev = getattr(self.vmas, "prev", None)
        if prev:
            index = aggregate.VmaIndex((v.start, v.end) for v in prev)
            bpf = aggregate.per_vma(counts, self.pid, index, kernel.pmd_size())
            for v in prev:
                vc = bpf.get(v.start)
                if vc is not None:
                    vmas.append(self._vma_row(v.start, v.end, v.perms, vma_backing(v), v.path, 0, 0,
                                              vc.faults, vc.huge_faults, "none", "sf" in v.vmflags, vc, v.vmflags))
            if aggregate.UNMAPPED in bpf:
                vc = bpf[aggregate.UNMAPPED]
                vmas.append(self._vma_row(None, None, "", aggregate.UNMAPPED, None, 0, 0, vc.faults,
                                          vc.huge_faults, "none", False, vc))
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
        vmas = vma_sampling.VmaSampler(pid)
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
            assert d.pid is not None        # live rows; the exited one is s.exited
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
                if t is not None:           # alive
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
            r.setdefault("map_sync_refusals", 0 if self.syscalls_known else None)
            r.setdefault("madvise_calls", 0 if self.syscalls_known else None)
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
                                                            and bool(vc.dax or vc.vm_sync))
                if dirty:
                    vc = None
                if vc is None and budget > 0:
                    budget -= 1
                    vc = self.vma_cache.get(r["pid"], t.starttime, dirty)
                    if self.procs.tick is not None:
                        self.procs.tick()
            r["dax_vmas"] = vc.dax if vc else None
            r["vm_sync_vmas"] = vc.vm_sync if vc else None
            r["hugepage_vmas"] = vc.hugepage if vc else None        # VmFlags hg: MADV_HUGEPAGE
            r["nohugepage_vmas"] = vc.nohugepage if vc else None    # VmFlags nh: MADV_NOHUGEPAGE
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
                            "new": False, "exited": True, "dax_faults": {},
                            "map_sync_refusals": 0 if self.syscalls_known else None,
                            "madvise_calls": 0 if self.syscalls_known else None, "dax_vmas": None,
                            "vm_sync_vmas": None, "hugepage_vmas": None, "nohugepage_vmas": None})
        return [r for r in out if self._wanted(r)]

    def _wanted(self, r: dict) -> bool:
        if self.comm is not None and self.comm not in (r["comm"] or ""):
            return False
        if self.dax_only and not (r.get("dax_vmas") or r.get("dax_faults")):
            return False
        return True

    # -- per VMA (top -p)
    def _dax_of(self, b) -> str:
        assert self.detail is not None
        key = (b.dev, b.inode)
        if key not in self.dax_kind:
            self.dax_kind[key] = vma_sampling.vma_dax(self.detail, b) if b.inode else "none"
        return self.dax_kind[key]

    def _vma_rows(self, counts: aggregate.ProbeCounts) -> List[dict]:
        assert self.vmas is not None and self.detail is not None
        deltas = self.vmas.sample()
        last = getattr(self, "_index_of", None)     # the sampler's same list: the same VMAs
        index = last[1] if last is not None and last[0] is deltas else aggregate.VmaIndex(
            (d.start, d.end) for d in deltas)
        self._index_of = (deltas, index)
        bpf = aggregate.per_vma(counts, self.detail, index, kernel.pmd_size())
        rows = []
        # a VMA the sampler saw unchanged (same VmaDelta object) and the probes did not see: its
        # last row, and whether it was shown (tens of thousands of VMAs, most unchanged)
        cache, self._row_cache = getattr(self, "_row_cache", {}), {}
        for d in deltas:
            hit = cache.get(id(d))
            if hit is not None and hit[0] is d and d.start not in bpf:
                self._row_cache[id(d)] = hit
                if hit[2]:
                    rows.append(hit[1])
                continue
            m = procfs.MapEntry(d.start, d.end, d.perms, 0, d.dev, d.inode, d.path)
            dax = self._dax_of(m) if m.inode else "none"
            huge_b, small_b = d.huge_bytes, d.small_bytes
            if dax != "none" and self.huge_small is not None:
                try:
                    huge_b, small_b = self.huge_small(self.detail, d.start, d.end)
                except (PmemtraceError, OSError):
                    huge_b = small_b = None        # smaps does not count DAX pages: unknown, not 0
            vc = bpf.get(d.start, aggregate.VmaCounts())
            # faults: page faults counted in BPF (pid-filtered page_fault_user), in both modes;
            # null where that tracepoint is missing. What /proc can tell (pages that became
            # resident) is resident_pages_gained.
            faults = vc.faults if self.page_faults_counted else None
            huge = d.huge_faults
            if self.exact:
                huge = vc.huge_faults
            if dax != "none":
                huge = vc.dax.get("pmd_huge", 0)
                faults = sum(vc.dax.get(k, 0) for k in DAX_FAULT_OUTCOMES)
            row = self._vma_row(d.start, d.end, d.perms, vma_backing(d, dax), d.path, huge_b, small_b,
                                faults, huge, dax, d.vm_sync, vc, d.vmflags)
            row["resident_pages_gained"] = d.faults
            shown = _shown(row)
            if dax == "none" and d.start not in bpf:
                self._row_cache[id(d)] = (d, row, shown)
            if shown:
                rows.append(row)
        if aggregate.UNMAPPED in bpf:
            vc = bpf[aggregate.UNMAPPED]
            row = self._vma_row(None, None, "", aggregate.UNMAPPED, None, 0, 0, vc.faults, vc.huge_faults, "none",
                                False, vc)
            if _shown(row):
                rows.append(row)
        return rows

    def _vma_row(self, start, end, perms, back, path, huge_b, small_b, faults, huge, dax, vm_sync, vc,
                 vmflags=None) -> dict:
        row = {"start": start, "end": end, "perms": perms, "backing": back, "path": path, "huge_bytes": huge_b,
               "small_bytes": small_b, "faults": faults, "huge_faults": huge, "dax": dax, "vm_sync": vm_sync,
                # smaps VmFlags hg / nh: the VMA's madvise(MADV_HUGEPAGE / NOHUGEPAGE) state, in every mode
                "vm_hugepage": None if vmflags is None else "hg" in vmflags,
                "vm_nohugepage": None if vmflags is None else "nh" in vmflags,
                "dax_faults": {k: v for k, v in vc.dax.items() if v}, "map_sync_requests": vc.map_sync_requests,
                "map_sync_refusals": vc.map_sync_refusals, "madvise": dict(vc.madvise)}
        if not self.syscalls_known:     # mmap / madvise not watched: their counts are unknown (null), not zero
            row["map_sync_requests"] = row["map_sync_refusals"] = row["madvise"] = None
        return row


def _shown(r: dict) -> bool:
    """A top -p VMA row worth a line: pages, faults, calls, or DAX."""
    return bool(r["huge_bytes"] or r["small_bytes"] or r["faults"] or r["huge_faults"] or r["madvise"]
                or r["map_sync_refusals"] or r["dax_faults"] or r["dax"] != "none")


def vma_backing(v, dax: str = "none") -> str:
    """report's BACKING category for a sampled VMA (vma_sampling.VmaState / VmaDelta); by name where
    report also asks statfs (top does not read map_files for every VMA)."""
    m = procfs.MapEntry(v.start, v.end, v.perms, 0, v.dev, v.inode, v.path)
    return classify_backing(m, v.vmflags, FileFacts(dax))
