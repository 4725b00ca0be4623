"""What `top` learns from /proc alone each interval, with no BPF on any fault path.

Per process (``ProcSampler``):
  - faults: minflt + majflt from /proc/PID/stat, read for every pid every interval
    (one small read each; nothing else is read for a process whose count did not move);
  - huge faults: the increase of PMD-mapped bytes (smaps_rollup AnonHugePages +
    ShmemPmdMapped + FilePmdMapped) divided by the PMD size, plus the increase of hugetlb
    bytes divided by the default hugetlb page size; smaps_rollup is read only for processes
    whose fault count moved (or that the caller names, e.g. because BPF saw them munmap);
  - huge share of RSS, from the same rollup.
A process that exits between two samples takes its last faults with it. What the global
counters (/proc/vmstat pgfault, thp_fault_alloc) counted beyond what live processes
account for goes to one "(exited)" row. That residual also absorbs huge pages a live
process freed and faulted again within one interval (its net gain hides them) and the
skew of reading many files at slightly different moments; `--exact` counts by tgid in BPF.

Per VMA of one process (``VmaSampler``, for ``top -p``): huge / small bytes per VMA from
smaps (or the page tables, for DAX, through pmemtrace.pagemap when it is there), gains
keyed by VMA start. System-wide (``read_globals``): /proc/vmstat and the mTHP per-size
stats under /sys/kernel/mm/transparent_hugepage/hugepages-*/stats.

Parsers and delta functions are pure (unit-tested on captured fixtures); the classes only
hold the previous sample.
"""
import os
import time
from dataclasses import dataclass, field
from typing import Mapping, Callable, Dict, Iterable, List, Optional, Tuple

from . import kernel, procfs
from .procfs import StatLine

KIB = 1024

# /proc/vmstat counters top reports as system-wide rates.
VMSTAT_KEYS = ("pgfault", "pgmajfault", "thp_fault_alloc", "thp_fault_fallback", "thp_fault_fallback_charge",
               "thp_collapse_alloc", "thp_collapse_alloc_failed", "thp_file_alloc", "thp_split_pmd")
# mTHP per-size counters (files under hugepages-<size>kB/stats/).
MTHP_KEYS = ("anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge", "shmem_alloc")


# ----------------------------------------------------------------- /proc/PID/stat

def scan_stats(proc: str = procfs.PROC) -> Dict[int, StatLine]:
    """Every user process's stat line (kernel threads left out); vanished pids skipped."""
    out = {}
    for name in os.listdir(proc):
        if name.isdigit():
            st = procfs.read_stat(int(name), proc)
            if st is not None and not st.kthread:
                out[st.pid] = st
    return out


class StatScanner:
    """scan_stats for a loop: each /proc/PID/stat is opened once and kept open, then read with
    one pread per interval; a process whose stat bytes did not change since the last pass is
    not parsed again (its StatLine is the same object as before). An idle process costs one
    pread and one bytes comparison. A pid that exits makes pread fail (ESRCH): its file is
    closed, and a new process that reuses the pid is opened afresh. At most ``max_open``
    files are kept; beyond that a process is opened, read and closed each pass as before."""

    def __init__(self, proc: str = procfs.PROC, max_open: Optional[int] = None):
        self.proc = proc
        self.max_open = open_file_budget() if max_open is None else max_open
        self.fds: Dict[int, int] = {}
        self.seen: Dict[int, Tuple[bytes, Optional[StatLine]]] = {}

    def _read(self, pid: int) -> Optional[bytes]:
        fd = self.fds.get(pid)
        if fd is not None:
            try:
                return os.pread(fd, 1024, 0)
            except OSError:              # the process is gone (the pid may come back as another)
                os.close(self.fds.pop(pid))
        try:
            fd = os.open(f"{self.proc}/{pid}/stat", os.O_RDONLY)
        except OSError:
            return None
        try:
            data = os.pread(fd, 1024, 0)
        except OSError:
            os.close(fd)
            return None
        if len(self.fds) < self.max_open:
            self.fds[pid] = fd
        else:
            os.close(fd)
        return data

    def scan(self) -> Dict[int, StatLine]:
        out: Dict[int, StatLine] = {}
        seen: Dict[int, Tuple[bytes, Optional[StatLine]]] = {}
        for name in os.listdir(self.proc):
            if not name.isdigit():
                continue
            pid = int(name)
            data = self._read(pid)
            if data is None:
                continue
            old = self.seen.get(pid)
            st = old[1] if old is not None and old[0] == data else procfs.parse_stat(data)
            seen[pid] = (data, st)
            if st is not None and not st.kthread:
                out[pid] = st
        for pid in [p for p in self.fds if p not in seen]:
            os.close(self.fds.pop(pid))
        self.seen = seen
        return out

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass


def open_file_budget(reserve: int = 256) -> int:
    """How many /proc/PID/stat files a scanner may keep open: the soft RLIMIT_NOFILE, raised to
    the hard limit when allowed, less a reserve for everything else (bcc's maps and buffers)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    limit = 1 << 20 if soft == resource.RLIM_INFINITY else soft
    return max(0, min(limit, 1 << 20) - reserve)


# ----------------------------------------------------------------- huge bytes

@dataclass(frozen=True)
class HugeBytes:
    """PMD-mapped and hugetlb bytes of a process (or a VMA), and its RSS."""
    anon_pmd: int = 0
    shmem_pmd: int = 0
    file_pmd: int = 0
    hugetlb: int = 0
    rss: int = 0            # Rss (PMD-mapped included, hugetlb not)

    @property
    def pmd(self) -> int:
        return self.anon_pmd + self.shmem_pmd + self.file_pmd

    @property
    def huge(self) -> int:
        return self.pmd + self.hugetlb

    @property
    def small(self) -> int:
        return max(0, self.rss - self.pmd)

    @property
    def share(self) -> float:
        """Share of the resident memory mapped huge (0.0 when nothing is resident)."""
        total = self.rss + self.hugetlb
        return self.huge / total if total else 0.0


def huge_from_counters(c: Mapping[str, int]) -> HugeBytes:
    """From smaps / smaps_rollup counters (bytes), as procfs.parse_smaps returns them."""
    return HugeBytes(c.get("AnonHugePages", 0), c.get("ShmemPmdMapped", 0), c.get("FilePmdMapped", 0),
                     c.get("Shared_Hugetlb", 0) + c.get("Private_Hugetlb", 0), c.get("Rss", 0))


def read_rollup(pid: int, proc: str = procfs.PROC) -> Optional[HugeBytes]:
    """smaps_rollup of PID, or None when it is gone (or has no mm)."""
    try:
        with open(f"{proc}/{pid}/smaps_rollup", "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None
    blocks = procfs.parse_smaps(text)
    return huge_from_counters(blocks[0].counters) if blocks else None


def huge_gain(before: HugeBytes, after: HugeBytes, pmd: int, hugetlb_page: int) -> Tuple[int, int]:
    """(huge faults, of which anonymous) implied by the growth from before to after."""
    anon = max(0, after.anon_pmd - before.anon_pmd) // pmd
    other = (max(0, after.shmem_pmd - before.shmem_pmd) + max(0, after.file_pmd - before.file_pmd)) // pmd
    tlb = max(0, after.hugetlb - before.hugetlb) // hugetlb_page
    return anon + other + tlb, anon


def default_hugetlb_size(meminfo: str = "/proc/meminfo") -> int:
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("Hugepagesize:"):
                    return int(line.split()[1]) * KIB
    except OSError:
        pass
    return kernel.pmd_size()


# ----------------------------------------------------------------- global counters

@dataclass(frozen=True)
class Globals:
    vmstat: Dict[str, int]
    mthp: Dict[int, Dict[str, int]]      # folio size in bytes -> counter -> value


def read_mthp_stats(root: str = kernel.THP_SYSFS, keys: Iterable[str] = MTHP_KEYS) -> Dict[int, Dict[str, int]]:
    out = {}
    for size, path in kernel.size_dirs(root):
        stats = {}
        for key in keys:
            value = kernel.read_sysfs(f"{path}/stats/{key}")
            if value is not None and value.isascii() and value.isdigit():
                stats[key] = int(value)
        if stats:
            out[size] = stats
    return out


def read_globals(vmstat_path: str = "/proc/vmstat", thp_root: str = kernel.THP_SYSFS) -> Globals:
    vm = kernel.read_vmstat(vmstat_path)
    return Globals({k: vm.get(k, 0) for k in VMSTAT_KEYS}, read_mthp_stats(thp_root))


def globals_delta(before: Globals, after: Globals) -> Globals:
    vm = {k: after.vmstat.get(k, 0) - before.vmstat.get(k, 0) for k in after.vmstat}
    mthp = {}
    for size, stats in after.mthp.items():
        prev = before.mthp.get(size, {})
        mthp[size] = {k: v - prev.get(k, 0) for k, v in stats.items()}
    return Globals(vm, mthp)


# ----------------------------------------------------------------- per-process deltas

@dataclass
class Tracked:
    """What we remember of a live process between samples."""
    pid: int
    starttime: int
    comm: str
    faults: int
    huge: HugeBytes
    rss_pages: int = -1     # from stat; -1: not known


@dataclass
class ProcDelta:
    pid: Optional[int]              # None for the "(exited)" row
    comm: str
    faults: int                     # this interval
    huge_faults: int
    huge_bytes: int = 0
    rss_bytes: int = 0
    anon_huge_faults: int = 0
    new: bool = False               # started during the interval

    @property
    def huge_share(self) -> float:
        total = self.rss_bytes
        return self.huge_bytes / total if total else 0.0


EXITED_COMM = "(exited)"


def process_deltas(prev: Dict[int, Tracked], stats: Dict[int, StatLine],
                   read_huge: Callable[[int], Optional[HugeBytes]],
                   pmd: int, hugetlb_page: int, baseline: bool = False,
                   also_read: Iterable[int] = ()) -> Tuple[Dict[int, Tracked], List[ProcDelta], List[int]]:
    """Turn the previous state and this interval's stat lines into per-process deltas.

    Returns (new state, deltas of processes with activity, pids that are gone).
    A pid seen for the first time (or reused: different starttime) started during the
    interval unless ``baseline`` (the first sample), so everything it has is new.
    ``read_huge`` is called only for processes whose faults or RSS moved (an munmap lowers
    RSS without a fault), new processes, and ``also_read``; on the baseline sample for every
    process with at least one PMD resident. A process with nothing new keeps its Tracked."""
    also = set(also_read)
    state: Dict[int, Tracked] = {}
    deltas: List[ProcDelta] = []
    for pid, st in stats.items():
        old = prev.get(pid)
        if old is not None and old.starttime != st.starttime:
            old = None
        if old is None:
            if baseline:
                small_rss = st.rss_pages * kernel.PAGE_SIZE
                huge = HugeBytes(rss=small_rss) if small_rss < pmd else (read_huge(pid) or HugeBytes())
                state[pid] = Tracked(pid, st.starttime, st.comm, st.faults, huge, st.rss_pages)
                continue
            old = Tracked(pid, st.starttime, st.comm, 0, HugeBytes())
            is_new = True
        else:
            is_new = False
        moved = (st.faults != old.faults or pid in also or is_new
                 or (old.rss_pages >= 0 and st.rss_pages != old.rss_pages))
        if not moved and st.comm == old.comm:
            state[pid] = old                 # idle: nothing to read, nothing to report
            continue
        huge = old.huge
        # Nothing can be PMD-mapped in less resident memory than one PMD: skip the read
        # (hugetlb pages are not in RSS: a process with only hugetlb would be read anyway
        # once its small RSS grows; see the docs).
        tiny = st.rss_pages * kernel.PAGE_SIZE < pmd and old.huge.huge == 0 and pid not in also
        if moved and tiny:
            huge = HugeBytes(rss=st.rss_pages * kernel.PAGE_SIZE)
        elif moved:
            got = read_huge(pid)
            if got is not None:
                huge = got
        state[pid] = Tracked(pid, st.starttime, st.comm, st.faults, huge, st.rss_pages)
        nfaults = max(0, st.faults - old.faults)
        nhuge, nanon = huge_gain(old.huge, huge, pmd, hugetlb_page)
        if nfaults or nhuge:
            deltas.append(ProcDelta(pid, st.comm, nfaults, nhuge, huge.huge, huge.rss + huge.hugetlb,
                                    nanon, is_new))
    gone = [pid for pid in prev if pid not in state or state[pid].starttime != prev[pid].starttime]
    return state, deltas, gone


def exited_residual(g: Globals, deltas: List[ProcDelta], gone: List[int]) -> Optional[ProcDelta]:
    """What the global counters saw beyond the live processes' deltas, or None if nothing.

    Faults: pgfault minus live faults; huge faults: thp_fault_alloc minus the anonymous
    PMD gains of live processes (both clamped at zero)."""
    faults = g.vmstat.get("pgfault", 0) - sum(d.faults for d in deltas)
    huge = g.vmstat.get("thp_fault_alloc", 0) - sum(d.anon_huge_faults for d in deltas)
    faults, huge = max(0, faults), max(0, huge)
    if not faults and not huge and not gone:
        return None
    return ProcDelta(None, EXITED_COMM, faults, huge, 0, 0, huge, False)


@dataclass
class Sample:
    """One interval of /proc truth."""
    time: float                      # wall clock at the end of the interval
    seconds: float                   # its length
    processes: List[ProcDelta]
    exited: Optional[ProcDelta]
    gone: List[int]
    globals: Globals                 # deltas over the interval
    current: Dict[int, Tracked] = field(default_factory=dict)


class ProcSampler:
    """Holds the previous sample; ``sample()`` returns the deltas since the last call."""

    def __init__(self, proc: str = procfs.PROC, vmstat_path: str = "/proc/vmstat",
                 thp_root: str = kernel.THP_SYSFS, pid: Optional[int] = None):
        self.proc, self.vmstat_path, self.thp_root = proc, vmstat_path, thp_root
        self.pid = pid              # only this process (top -p), else all
        self.tick: Optional[Callable[[], None]] = None
        self.pmd = kernel.pmd_size()
        self.hugetlb_page = default_hugetlb_size()
        self.state: Dict[int, Tracked] = {}
        self.stats = StatScanner(proc) if pid is None else None
        self.globals: Optional[Globals] = None
        self.last = 0.0

    def _read(self, also_read: Iterable[int] = (), baseline: bool = False):
        """One pass over /proc; ``self.tick`` (if set) is called every 32 rollup reads, so
        a caller can drain its probe buffers while a large pass runs."""
        g = read_globals(self.vmstat_path, self.thp_root)
        reads = [0]

        def read_huge(p):
            reads[0] += 1
            if self.tick is not None and reads[0] % 32 == 0:
                self.tick()
            return read_rollup(p, self.proc)
        if self.pid is None:
            stats = self.stats.scan() if self.stats is not None else scan_stats(self.proc)
        else:
            st = procfs.read_stat(self.pid, self.proc)
            stats = {} if st is None else {st.pid: st}
        if self.tick is not None:
            self.tick()
        state, deltas, gone = process_deltas(self.state, stats, read_huge,
                                             self.pmd, self.hugetlb_page, baseline, also_read)
        self.state = state
        return g, deltas, gone

    def start(self) -> None:
        """The baseline: every process's counters and huge bytes as they are now."""
        self.globals, _, _ = self._read(baseline=True)
        self.last = time.monotonic()

    def sample(self, also_read: Iterable[int] = ()) -> Sample:
        if self.globals is None:
            self.start()
        assert self.globals is not None
        g, deltas, gone = self._read(also_read)
        now = time.monotonic()
        gd = globals_delta(self.globals, g)
        self.globals = g
        seconds, self.last = now - self.last, now
        exited = exited_residual(gd, deltas, gone) if self.pid is None else None
        return Sample(time.time(), seconds, deltas, exited, gone, gd, self.state)
