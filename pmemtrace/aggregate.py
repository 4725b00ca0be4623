"""Aggregation: probe counts (as read from BPF maps) in, per-process and per-VMA rows out.

Pure functions only: no /proc, no bcc. The loader fills ProbeCounts; views call
per_process() and per_vma() with the VMAs they read from /proc/PID/maps.
Addresses that fall in no current VMA are counted under UNMAPPED, never dropped.
"""
import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

UNMAPPED = "(unmapped)"
# the columns a frame's process rows can be sorted by (the CLI's -s choices, top's < > keys);
# here, not in interval.py, so the CLI offers them without importing the samplers
SORT_KEYS = ("faults", "huge_faults", "fallbacks", "huge_share", "pid", "comm")

# Constants shared with probes/*.c: this is their one source; the loader generates the C
# #defines from them (loader.shared_defines), so C and Python cannot drift apart.
# DAX fault outcomes: the C side gets DAX_PMD_HUGE 0, DAX_PMD_FALLBACK 1, ...
DAX_OUTCOMES = ("pmd_huge", "pmd_fallback", "pmd_needdsync", "pte", "pte_needdsync",
                "load_hole", "pmd_load_hole", "pmd_load_hole_fallback", "mkwrite")
# keys of events streamed by probes (EVENT_*)
EVENT_DAX_FALLBACK, EVENT_MMAP, EVENT_MUNMAP, EVENT_MADVISE = 1, 2, 3, 4
# why the probes dropped something (LOST_*: one slot each in the `lost` array, per epoch);
# "<map>_full" is a failed insert into that map
LOST_REASONS = ("thp_faults_full", "thp_unattributed_full", "thp_comm_full", "page_faults_full",
                "dax_counts_full", "dsync_latency_full", "pte_ranges_full", "dsync_start_full",
                "mincore_counts_full", "inflight_full", "collapse_counts_full", "collapse_madvise_full")


@dataclass
class MincoreStats:
    calls: int = 0
    errors: int = 0
    bytes: int = 0
    pages_examined: int = 0
    pages_resident: int = 0
    ns: int = 0

    def add(self, other: "MincoreStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ProbeCounts:
    """One interval's worth of what the probes counted (one epoch of the maps, see loader)."""
    thp_faults: Dict[Tuple[int, int], int] = field(default_factory=dict)      # (tgid, pmd addr) -> n
    thp_unattributed: Dict[int, int] = field(default_factory=dict)           # tgid -> n (no address)
    page_faults: Dict[Tuple[int, int], int] = field(default_factory=dict)     # (tgid, page addr) -> n
    dax: Dict[Tuple[int, str, int], int] = field(default_factory=dict)       # (tgid, outcome, where) -> n
    dsync_latency: Dict[Tuple[int, int, int], int] = field(default_factory=dict)  # (tgid, where, log2 ns) -> n
    mincore: Dict[int, MincoreStats] = field(default_factory=dict)
    comms: Dict[int, str] = field(default_factory=dict)
    events: List[dict] = field(default_factory=list)                          # streamed rare events
    lost: int = 0
    lost_by: Dict[str, int] = field(default_factory=dict)                     # LOST_REASONS / "perf" -> n
    maps: Dict[str, dict] = field(default_factory=dict)       # map name -> {"entries", "max_entries"}


@dataclass
class VmaCounts:
    faults: int = 0
    huge_faults: int = 0
    dax: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(DAX_OUTCOMES, 0))
    dsync_latency: Dict[int, int] = field(default_factory=dict)   # log2(ns) slot -> n
    mmap_calls: int = 0
    map_sync_requests: int = 0
    map_sync_refusals: int = 0
    madvise: Dict[str, int] = field(default_factory=dict)       # "HUGEPAGE" -> n
    fallback_causes: Dict[str, int] = field(default_factory=dict)


@dataclass
class ProcessCounts:
    tgid: int
    comm: str = ""
    faults: int = 0
    huge_faults: int = 0
    huge_unattributed: int = 0
    dax: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(DAX_OUTCOMES, 0))
    map_sync_refusals: int = 0
    madvise_calls: int = 0
    mincore: MincoreStats = field(default_factory=MincoreStats)


class VmaIndex:
    """Address -> VMA start for one process, by bisection over sorted (start, end)."""

    def __init__(self, ranges: Iterable[Tuple[int, int]]):
        self.ranges = sorted(ranges)
        self.starts = [r[0] for r in self.ranges]

    def find(self, addr: int) -> Optional[int]:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.ranges[i][1]:
            return self.ranges[i][0]
        return None

    def find_block(self, block: int, block_size: int) -> Optional[int]:
        """The VMA holding a 2 MiB block key: the one at its start, else the first that overlaps it."""
        hit = self.find(block)
        if hit is not None:
            return hit
        i = bisect.bisect_left(self.starts, block)
        if i < len(self.ranges) and self.ranges[i][0] < block + block_size:
            return self.ranges[i][0]
        return None


# uapi (include/uapi/asm-generic/mman-common.h): the madvise advice the probes stream
# (the C side gets MADV_HUGEPAGE_NR 14, ...)
MADVISE_NAMES = {14: "HUGEPAGE", 15: "NOHUGEPAGE", 25: "COLLAPSE"}
MAP_SYNC = 0x80000
EOPNOTSUPP = 95


def per_vma(counts: ProbeCounts, tgid: int, index: VmaIndex, block_size: int = 2 << 20,
            classify_fallback=None) -> Dict[object, VmaCounts]:
    """Counts of one process keyed by VMA start (or UNMAPPED)."""
    out: Dict[object, VmaCounts] = defaultdict(VmaCounts)

    def where(addr: int, is_block: bool = False):
        hit = index.find_block(addr, block_size) if is_block else index.find(addr)
        return UNMAPPED if hit is None else hit

    for (pid, page), n in counts.page_faults.items():
        if pid == tgid:
            out[where(page)].faults += n
    for (pid, pmd), n in counts.thp_faults.items():
        if pid == tgid:
            out[where(pmd, True)].huge_faults += n
    for (pid, outcome, addr), n in counts.dax.items():
        if pid == tgid:
            # PMD events carry the VMA start itself; PTE events a 2 MiB block
            out[where(addr, True)].dax[outcome] += n
    for (pid, addr, slot), n in counts.dsync_latency.items():
        if pid == tgid:
            hist = out[where(addr, True)].dsync_latency
            hist[slot] = hist.get(slot, 0) + n
    for e in counts.events:
        if e["tgid"] != tgid:
            continue
        if e["type"] == EVENT_MMAP and e["ret"] >= 0:
            vc = out[where(e["ret"])]
            vc.mmap_calls += 1
            if e["flags"] & MAP_SYNC:
                vc.map_sync_requests += 1
        elif e["type"] == EVENT_MMAP and e["flags"] & MAP_SYNC and e["ret"] == -EOPNOTSUPP:
            out[UNMAPPED].map_sync_refusals += 1
        elif e["type"] == EVENT_MADVISE:
            name = MADVISE_NAMES.get(e["flags"], str(e["flags"]))
            vc = out[where(e["addr"])]
            vc.madvise[name] = vc.madvise.get(name, 0) + 1
        elif e["type"] == EVENT_DAX_FALLBACK and classify_fallback is not None:
            cause = classify_fallback(e)
            vc = out[where(e["vm_start"])]
            vc.fallback_causes[cause] = vc.fallback_causes.get(cause, 0) + 1
    return dict(out)


def per_process(counts: ProbeCounts) -> Dict[int, ProcessCounts]:
    out: Dict[int, ProcessCounts] = {}

    def row(tgid: int) -> ProcessCounts:
        if tgid not in out:
            out[tgid] = ProcessCounts(tgid, counts.comms.get(tgid, ""))
        return out[tgid]

    for (tgid, _), n in counts.page_faults.items():
        row(tgid).faults += n
    for (tgid, _), n in counts.thp_faults.items():
        row(tgid).huge_faults += n
    for tgid, n in counts.thp_unattributed.items():
        row(tgid).huge_faults += n
        row(tgid).huge_unattributed += n
    for (tgid, outcome, _), n in counts.dax.items():
        row(tgid).dax[outcome] += n
    for tgid, st in counts.mincore.items():
        row(tgid).mincore.add(st)
    for e in counts.events:
        r = row(e["tgid"])
        if e.get("comm") and not r.comm:
            r.comm = e["comm"]
        if e["type"] == EVENT_MMAP and e["flags"] & MAP_SYNC and e["ret"] == -EOPNOTSUPP:
            r.map_sync_refusals += 1
        elif e["type"] == EVENT_MADVISE:
            r.madvise_calls += 1
    return out


def merge(into: ProbeCounts, more: ProbeCounts) -> ProbeCounts:
    """Add one interval's counts to a running total (report --duration reads several times)."""
    for name in ("thp_faults", "thp_unattributed", "page_faults", "dax", "dsync_latency"):
        dst, src = getattr(into, name), getattr(more, name)
        for k, v in src.items():
            dst[k] = dst.get(k, 0) + v
    for tgid, st in more.mincore.items():
        into.mincore.setdefault(tgid, MincoreStats()).add(st)
    into.comms.update(more.comms)
    into.events.extend(more.events)
    into.lost += more.lost
    for k, v in more.lost_by.items():
        into.lost_by[k] = into.lost_by.get(k, 0) + v
    into.maps.update(more.maps)
    return into
