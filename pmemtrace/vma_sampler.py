"""What `top -p` learns per VMA from /proc/PID/smaps each interval (VmaSampler), and how many
VMAs of a process are DAX or VM_SYNC (dax_sync_counts). The per-process side is pmemtrace.sampler.
"""
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from . import kernel, procfs
from .errors import PmemtraceError

from .sampler import HugeBytes, default_hugetlb_size, huge_from_counters, huge_gain


# ----------------------------------------------------------------- per-VMA deltas (top -p)

@dataclass
class VmaState:
    start: int
    end: int
    perms: str
    path: str
    inode: int
    huge: HugeBytes
    vmflags: frozenset
    dev: Tuple[int, int] = (0, 0)


@dataclass
class VmaDelta:
    start: int
    end: int
    perms: str
    path: str
    huge_bytes: int
    small_bytes: int
    faults: int          # pages that became resident (default mode) or counted by BPF (exact)
    huge_faults: int
    vm_sync: bool
    vmflags: frozenset
    dev: Tuple[int, int] = (0, 0)
    inode: int = 0


def vma_states(blocks: List[procfs.Smaps]) -> List[VmaState]:
    return [VmaState(b.map.start, b.map.end, b.map.perms, b.map.path, b.map.inode, huge_from_counters(b.counters),
                     b.vmflags, b.map.dev) for b in blocks]


def _overlap_baseline(prev: List[VmaState], v: VmaState) -> HugeBytes:
    """For a VMA new at this start address: what the previous VMAs it overlaps held,
    capped at what it holds now (a split or merge moves pages, it does not fault them)."""
    anon = shmem = filep = tlb = rss = 0
    for p in prev:
        if p.start < v.end and v.start < p.end:
            anon += p.huge.anon_pmd
            shmem += p.huge.shmem_pmd
            filep += p.huge.file_pmd
            tlb += p.huge.hugetlb
            rss += p.huge.rss
    h = v.huge
    return HugeBytes(min(anon, h.anon_pmd), min(shmem, h.shmem_pmd), min(filep, h.file_pmd), min(tlb, h.hugetlb),
                     min(rss, h.rss))


def vma_deltas(prev: Optional[List[VmaState]], cur: List[VmaState], pmd: int, hugetlb_page: int,
               page_size: int = kernel.PAGE_SIZE) -> List[VmaDelta]:
    """Per-VMA gains since prev (None: the baseline, so every gain is zero)."""
    by_start = {p.start: p for p in prev or []}
    out = []
    for v in cur:
        if prev is None:
            base = v.huge
        elif v.start in by_start and by_start[v.start].end == v.end:
            base = by_start[v.start].huge
        else:
            base = _overlap_baseline(prev, v)
        nhuge, _ = huge_gain(base, v.huge, pmd, hugetlb_page)
        small_pages = max(0, v.huge.small - base.small) // page_size
        out.append(VmaDelta(v.start, v.end, v.perms, v.path, v.huge.huge, v.huge.small, small_pages + nhuge, nhuge,
                            "sf" in v.vmflags, v.vmflags, v.dev, v.inode))
    return out


QUIET_SHARE = 0.02     # of one core: a quiet process's smaps is re-read once its last read's CPU is this
                       # share of the time since (a 1 ms read: every interval; 60,000 VMAs, 0.4 s: ~20 s)
CPU_SHARE = 0.1        # of one core, at most, for re-reading smaps of a process that never goes quiet
VMA_KEYS = ("Rss", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb")


def _block_key(b: procfs.Smaps) -> tuple:
    """Everything a VmaState is made of: equal keys, equal states."""
    c = b.counters
    raw = c.raw() if isinstance(c, procfs.Counters) else tuple(c.get(k, 0) for k in VMA_KEYS)
    return (b.map, b.vmflags, raw)


class VmaSampler:
    """One process's VMAs, sampled from /proc/PID/smaps each interval.

    Built for tens of thousands of VMAs sampled every second: only the counters it needs are
    read, and a VMA whose map line, flags and counters did not change since the last interval
    costs a tuple comparison: its VmaState and its (zero) VmaDelta are the previous objects
    (callers may cache what they derive from a VmaDelta by its identity)."""

    def __init__(self, pid: int, read_smaps: Optional[Callable[..., List[procfs.Smaps]]] = None):
        self.pid = pid
        self.read_smaps = read_smaps if read_smaps is not None else _read_vma_smaps
        self.detect_quiet = read_smaps is None     # an injected reader (tests) is always read
        self.pmd = kernel.pmd_size()
        self.hugetlb_page = default_hugetlb_size()
        self.prev: Optional[List[VmaState]] = None
        self._seen: Dict[int, Tuple[tuple, VmaState, VmaDelta]] = {}    # start -> key, state, zero delta
        self._signature: Optional[tuple] = None
        self._full_at = 0.0
        self._zeros: List[VmaDelta] = []
        self._read_cpu = 0.0       # CPU seconds (user + system) the last full read took

    def _quiet(self) -> Optional[tuple]:
        """What tells an interval in which none of the process's pages changed: its fault counts
        (/proc/PID/stat) and its smaps_rollup counters (collapses, reclaim, unmaps move them
        without a fault). Cheap: 20 ms of smaps_rollup for 60,000 VMAs, against 0.4 s of smaps."""
        st = procfs.read_stat(self.pid)
        if st is None:
            return None
        try:
            rollup = procfs.read_smaps_rollup(self.pid)
        except PmemtraceError:
            return None
        return (st.starttime, st.minflt, st.majflt, tuple(rollup.get(k, 0) for k in VMA_KEYS))

    def sample(self) -> List[VmaDelta]:
        """Raises ProcessExited when the process is gone.

        When neither the faults nor the rollup of the process moved, smaps is not read again (for
        until the last read's CPU time is QUIET_SHARE of the time since it: a small process is read
        every interval): every VMA's delta is zero. A VMA split or merged by mprotect alone,
        or a madvise that changes only VmFlags, with no page touched, then shows at the next full
        read (60,000 VMAs: ~20 s).

        A process that changes all the time is read again only once the last read's CPU time is at
        most CPU_SHARE of the time since it: 60,000 VMAs take ~0.4 s of CPU to read, so their rows
        are refreshed every ~4 s instead of taking 40% of a core; in between every delta is zero
        and the next read's deltas hold all the gains since the last one (none is lost)."""
        signature = self._quiet() if self.detect_quiet else None
        now = time.monotonic()
        if self.prev is not None and signature is not None:
            if signature == self._signature and now - self._full_at < self._read_cpu / QUIET_SHARE:
                return self._zeros
            if self._read_cpu > CPU_SHARE * (now - self._full_at):
                return self._zeros          # over budget: _signature stays, so the change is still seen
        self._signature, self._full_at = signature, now
        cpu = time.process_time()
        out = self._sample()
        self._read_cpu = time.process_time() - cpu
        self._zeros = [self._seen[d.start][2] for d in out]
        return out

    def _sample(self) -> List[VmaDelta]:
        with procfs.no_gc():
            blocks = self.read_smaps(self.pid)
            keys = [_block_key(b) for b in blocks]
            seen = self._seen
            reuse = self.prev is not None
            same = [reuse and (hit := seen.get(b.map.start)) is not None and hit[0] == k
                    for b, k in zip(blocks, keys)]
            if all(same):
                cur = [seen[b.map.start][1] for b in blocks]
                out = [seen[b.map.start][2] for b in blocks]
            else:
                cur = [seen[b.map.start][1] if ok else vma_states([b])[0] for b, ok in zip(blocks, same)]
                changed = [v for v, ok in zip(cur, same) if not ok]
                fresh = iter(vma_deltas(self.prev, changed, self.pmd, self.hugetlb_page))
                out = [seen[b.map.start][2] if ok else next(fresh) for b, ok in zip(blocks, same)]
            self._seen = {v.start: (k, v, d if ok else _zero(d)) for v, k, d, ok in zip(cur, keys, out, same)}
            self.prev = cur
        return out


def _zero(d: VmaDelta) -> VmaDelta:
    """The delta of this VMA in an interval where nothing about it changed."""
    if d.faults == 0 and d.huge_faults == 0:
        return d
    return VmaDelta(d.start, d.end, d.perms, d.path, d.huge_bytes, d.small_bytes, 0, 0, d.vm_sync, d.vmflags,
                    d.dev, d.inode)


def _read_vma_smaps(pid: int) -> List[procfs.Smaps]:
    return procfs.read_smaps(pid, VMA_KEYS)


# ----------------------------------------------------------------- DAX / VM_SYNC VMA counts

def vma_dax(pid: int, m: procfs.MapEntry) -> str:
    """'fsdax', 'devdax' or 'none' for one mapping of pid (pmemtrace.vmas decides)."""
    from . import vmas
    from .errors import PmemtraceError
    try:
        return vmas.file_facts(pid, m).dax
    except PmemtraceError:
        return "none"


@dataclass(frozen=True)
class DaxSyncCounts:
    """How many VMAs of a process are DAX, and how many VM_SYNC (not aggregate.VmaCounts, which
    holds one VMA's probe counts)."""
    dax: int
    vm_sync: int
    hugepage: int = 0       # VmFlags hg: madvise(MADV_HUGEPAGE)
    nohugepage: int = 0     # VmFlags nh: madvise(MADV_NOHUGEPAGE)


def dax_sync_counts(pid: int, blocks: List[procfs.Smaps], dax_of: Callable[[int, procfs.MapEntry], str] = vma_dax,
               cache: Optional[Dict[Tuple[Tuple[int, int], int], str]] = None) -> DaxSyncCounts:
    """How many VMAs of pid are DAX, and how many carry VM_SYNC (VmFlags 'sf').

    ``cache`` maps (device, inode) to the DAX verdict across calls (one statx per file)."""
    cache = {} if cache is None else cache
    dax = 0
    for b in blocks:
        if not b.map.inode:
            continue
        key = (b.map.dev, b.map.inode)
        if key not in cache:
            cache[key] = dax_of(pid, b.map)
        dax += cache[key] != "none"
    sync = sum(1 for b in blocks if "sf" in b.vmflags)
    return DaxSyncCounts(dax, sync, sum(1 for b in blocks if "hg" in b.vmflags),
                         sum(1 for b in blocks if "nh" in b.vmflags))
