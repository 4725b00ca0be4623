"""Page-table reader: which pages of a range are present, and mapped by which page size.

Two sources, one result type (``PageRun``: a run of pages in the same state):

* ``PAGEMAP_SCAN`` (Linux 6.7+): an ioctl on /proc/PID/pagemap that walks the page
  tables and returns *merged* runs of pages with equal categories (PAGE_IS_*). It is
  the only interface that says whether a page is mapped by a PMD leaf (THP, DAX) or
  by a PTE: PAGE_IS_HUGE is set for PMD-mapped THP / DAX and for hugetlb entries.
* /proc/PID/pagemap (one 64-bit word per page) + /proc/kpageflags (one word per PFN),
  for older kernels. It knows present / swapped / soft-dirty / file and the folio type
  behind each PFN, but not the mapping size of a THP (a PMD-order folio may be mapped
  by PTEs) nor of DAX memory: those facts come back as ``None`` (unknown), never guessed.

The ioctl layer (``scan_regions``) returns raw ``(start, end, categories)`` triples;
``classify`` turns them into ``PageRun``s given what the caller knows about the VMA
(``VmaFacts``: backing kind, hugetlb page size). ``facts_from_smaps`` derives those facts
from a procfs.Smaps block.

Page size of a run (``PageRun.page_size``, bytes; None for absent pages):
  hugetlb VMA -> the VMA's KernelPageSize from smaps (the hstate size: 2 MiB, 1 GiB ...);
  PAGE_IS_HUGE in any other VMA -> the PMD size (hpage_pmd_size, 2 MiB on x86-64);
  otherwise the base page size.
A PUD leaf outside hugetlb (1 GiB device-DAX) is never reported as such: PAGEMAP_SCAN (and
the pagemap read) register no PUD callback, and mm/pagewalk.c then calls split_huge_pud()
before walking the PMDs below, which for DAX unmaps the PUD: the range reads as absent and
the next access faults it in again. So 1G is only reported for 1 GiB hugetlb VMAs.
"""
import ctypes
import errno
import fcntl
import os
import platform
import struct
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .errors import BadRange, KernelFeatureMissing, NoSuchProcess, NotRoot, ProcessExited
from . import backing, procfs
from .kernel import PAGE_SIZE, pmd_size

# ---------------------------------------------------------------- uapi: linux/fs.h

PAGE_IS_WPALLOWED = 1 << 0   # VMA has async userfaultfd write-protect
PAGE_IS_WRITTEN = 1 << 1     # not uffd-write-protected (present or swapped pages)
PAGE_IS_FILE = 1 << 2        # page-cache / shmem page (not PageAnon)
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
PAGE_IS_PFNZERO = 1 << 5     # the shared zero page
PAGE_IS_HUGE = 1 << 6        # PMD-mapped THP / DAX, or a hugetlb entry
PAGE_IS_SOFT_DIRTY = 1 << 7  # 6.8+
PAGE_IS_GUARD = 1 << 8       # MADV_GUARD_INSTALL region, 6.15+

CATEGORY_NAMES = {
    PAGE_IS_WPALLOWED: "wpallowed", PAGE_IS_WRITTEN: "written", PAGE_IS_FILE: "file",
    PAGE_IS_PRESENT: "present", PAGE_IS_SWAPPED: "swapped", PAGE_IS_PFNZERO: "pfnzero",
    PAGE_IS_HUGE: "huge", PAGE_IS_SOFT_DIRTY: "soft_dirty", PAGE_IS_GUARD: "guard",
}
# Category sets by kernel generation, newest first; the kernel rejects unknown bits (EINVAL).
_CATEGORY_GENERATIONS = (
    0x1FF,   # + PAGE_IS_GUARD (6.15)
    0x0FF,   # + PAGE_IS_SOFT_DIRTY (6.8)
    0x07F,   # PAGEMAP_SCAN as merged in 6.7
)


class PageRegion(ctypes.Structure):
    """struct page_region: [start, end) and the PAGE_IS_* categories of all its pages."""
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


class PmScanArg(ctypes.Structure):
    """struct pm_scan_arg: all fields __u64; ``size`` must equal sizeof(struct pm_scan_arg)."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


def _ioc_layout(machine: str) -> Tuple[int, int, int, int]:
    """(size bits, dir 'none', dir 'write', dir 'read') of the _IOC encoding on this architecture."""
    if machine.startswith(("ppc", "powerpc", "mips", "sparc", "alpha")):
        return 13, 1, 4, 2
    return 14, 0, 1, 2          # asm-generic (x86, arm64, riscv, s390, ...)


def ioc(direction: int, type_: int, nr: int, size: int, sizebits: int = 14) -> int:
    """The kernel's _IOC(): nr in bits 0-7, type in 8-15, size from 16, direction above it."""
    if size >= 1 << sizebits:
        raise ValueError("ioctl argument too large")
    return (direction << (16 + sizebits)) | (size << 16) | (type_ << 8) | nr


def iowr(type_: int, nr: int, size: int, machine: Optional[str] = None) -> int:
    sizebits, _none, write, read = _ioc_layout(machine or platform.machine())
    return ioc(read | write, type_, nr, size, sizebits)


PAGEMAP_MAGIC = ord("f")     # PROCFS_IOCTL_MAGIC
PAGEMAP_SCAN = iowr(PAGEMAP_MAGIC, 16, ctypes.sizeof(PmScanArg))

# ---------------------------------------------------------------- uapi: /proc/PID/pagemap, kpageflags

PM_PFN_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_UFFD_WP = 1 << 57
PM_GUARD_REGION = 1 << 58    # 6.15+; a guard marker is a swap-type entry, so PM_SWAP is set too
PM_FILE = 1 << 61            # file page or shared anon
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63

KPF_COMPOUND_HEAD = 1 << 15
KPF_COMPOUND_TAIL = 1 << 16
KPF_HUGE = 1 << 17           # hugetlb folio
KPF_NOPAGE = 1 << 20
KPF_THP = 1 << 22            # transparent huge (or large anon/file) folio
KPF_ZERO_PAGE = 1 << 24

KPAGEFLAGS = "/proc/kpageflags"

SOURCE_SCAN = "PAGEMAP_SCAN"
SOURCE_FALLBACK = "pagemap+kpageflags"


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class PageRun:
    """A run of pages [start, end) in one state.

    ``None`` means the source cannot know the fact (pagemap+kpageflags: the mapping size
    of THP and DAX pages; written/soft-dirty/file of absent pages there too).
    """
    start: int
    end: int
    present: bool
    huge: Optional[bool]         # mapped by a PMD/PUD leaf or a hugetlb entry
    page_size: Optional[int]     # bytes mapped by one page-table entry; None if absent or unknown
    kind: str                    # anon | file | shmem | dax | hugetlb
    written: Optional[bool]      # PAGE_IS_WRITTEN: not uffd write-protected (None when absent)
    soft_dirty: Optional[bool]
    file: Optional[bool]         # page-cache/shmem page (False: anonymous, e.g. COW of a file page)
    swapped: bool = False
    zero_pfn: Optional[bool] = None
    guard: Optional[bool] = None

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def state(self) -> tuple:
        """Every field but the addresses: runs with equal state merge."""
        return (self.present, self.huge, self.page_size, self.kind, self.written, self.soft_dirty,
                self.file, self.swapped, self.zero_pfn, self.guard)

    def same_state(self, other: "PageRun") -> bool:
        return self.state == other.state


@dataclass(frozen=True)
class VmaFacts:
    """What the caller knows about the VMA a range lies in."""
    kind: str = "anon"              # anon | file | shmem | dax | hugetlb
    hugetlb_page_size: int = 0      # smaps KernelPageSize of a hugetlb VMA


def merge_runs(runs: Iterable[PageRun]) -> List[PageRun]:
    """Join adjacent runs of equal state (the kernel merges within one ioctl call only)."""
    out: List[PageRun] = []
    for r in runs:
        if out and out[-1].end == r.start and out[-1].state == r.state:
            out[-1] = replace(out[-1], end=r.end)
        else:
            out.append(r)
    return out


def merge_regions(regions: Iterable[Tuple[int, int, int]]) -> List[Tuple[int, int, int]]:
    out: List[Tuple[int, int, int]] = []
    for start, end, cat in regions:
        if out and out[-1][1] == start and out[-1][2] == cat:
            out[-1] = (out[-1][0], end, cat)
        else:
            out.append((start, end, cat))
    return out


def run_page_size(huge: bool, facts: VmaFacts) -> int:
    if facts.kind == "hugetlb" and facts.hugetlb_page_size:
        return facts.hugetlb_page_size
    return pmd_size() if huge else PAGE_SIZE


def classify(regions: Iterable[Tuple[int, int, int]], facts: VmaFacts = VmaFacts(),
             known: int = 0x1FF, states: Optional[dict] = None) -> List[PageRun]:
    """PAGEMAP_SCAN regions -> PageRuns. ``known``: the categories this kernel reports.
    ``states``: a cache of region_state shared by the calls of one scan (few distinct values)."""
    if states is None:
        states = {}
    out: List[Tuple[int, int, tuple]] = []
    for start, end, cat in regions:
        st = states.get((cat, facts))
        if st is None:
            st = states[(cat, facts)] = region_state(cat, facts, known)
        if out and out[-1][1] == start and out[-1][2] == st:
            out[-1] = (out[-1][0], end, st)
        else:
            out.append((start, end, st))
    return [_page_run(s, e, st) for s, e, st in out]


_STATE_FIELDS = ("present", "huge", "page_size", "kind", "written", "soft_dirty", "file", "swapped",
                 "zero_pfn", "guard")       # PageRun's fields after start, end: PageRun.state


def _page_run(start: int, end: int, st: tuple) -> PageRun:
    """PageRun(start, end, *st) without the frozen dataclass's per-field object.__setattr__ calls
    (a third of pages' time at 60,000 VMAs); the instance is the same."""
    r = object.__new__(PageRun)
    d = r.__dict__
    d["start"], d["end"] = start, end
    d.update(zip(_STATE_FIELDS, st))
    return r


def region_state(cat: int, facts: VmaFacts, known: int) -> tuple:
    """PageRun.state of pages with PAGE_IS_* categories ``cat`` in a VMA with ``facts``."""
    present = bool(cat & PAGE_IS_PRESENT)
    huge = bool(cat & PAGE_IS_HUGE) and present
    if facts.kind in ("hugetlb", "dax"):
        kind = facts.kind
    elif present:
        kind = ("shmem" if facts.kind == "shmem" else "file") if cat & PAGE_IS_FILE else "anon"
    else:
        kind = facts.kind
    mapped = present or bool(cat & PAGE_IS_SWAPPED)
    return (present, huge,
            run_page_size(huge, facts) if present else None,
            kind,
            bool(cat & PAGE_IS_WRITTEN) if mapped else None,
            bool(cat & PAGE_IS_SOFT_DIRTY) if known & PAGE_IS_SOFT_DIRTY else None,
            bool(cat & PAGE_IS_FILE) if mapped else None,
            bool(cat & PAGE_IS_SWAPPED),
            bool(cat & PAGE_IS_PFNZERO) if present else None,
            bool(cat & PAGE_IS_GUARD) if known & PAGE_IS_GUARD else None)


def facts_from_smaps(block: "procfs.Smaps", dax: bool = False) -> VmaFacts:
    """VMA facts from its smaps block (backing.classify_backing, by name: no statfs); DAX must be
    told by the caller (statx / sysfs)."""
    kind = backing.page_kind(backing.classify_backing(block.map, block.vmflags, backing.FileFacts()),
                             block.map, dax)
    if kind == "hugetlb":
        return VmaFacts("hugetlb", block.get("KernelPageSize") or pmd_size())
    return VmaFacts(kind)


# ---------------------------------------------------------------- file access

def _open_pagemap(pid: int) -> int:
    try:
        return os.open(procfs.proc_path(pid, "pagemap"), os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise NoSuchProcess(f"no such process: {pid}") from None
    except PermissionError:
        raise NotRoot(f"permission denied opening /proc/{pid}/pagemap: run as root") from None


def process_alive(pid: int) -> bool:
    """The pid exists and is not a zombie (a zombie has no memory left to read)."""
    st = procfs.read_stat(pid)
    return st is not None and st.state not in ("Z", "X", "x")


def _exited(pid: int) -> ProcessExited:
    return ProcessExited(f"pid {pid} exited while being read")


class PageMap:
    """/proc/PID/pagemap held open: PAGEMAP_SCAN regions and raw pagemap words of any range.

    A context manager, so the descriptor always closes; open one for many ranges (every VMA of
    a process) instead of one per range. ``check_alive`` after reading turns an empty answer
    from a process that died meanwhile into ProcessExited.
    """

    def __init__(self, pid: int):
        self.pid = pid
        self.fd = _open_pagemap(pid)

    def __enter__(self) -> "PageMap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def check_alive(self) -> None:
        if not process_alive(self.pid):
            raise _exited(self.pid)

    def regions(self, start: int, end: int, **masks) -> List[Tuple[int, int, int]]:
        """PAGEMAP_SCAN regions of [start, end), merged across ioctl calls (see scan_regions_fd)."""
        try:
            return merge_regions(scan_regions_fd(self.fd, start, end, **masks))
        except OSError as e:
            raise _scan_errors(self.pid, e, start, end) from None

    def words(self, start: int, end: int) -> array:
        """The pagemap word of every page of [start, end): one pread."""
        n = (end - start) // PAGE_SIZE
        try:
            data = _pread_all(self.fd, n * 8, start // PAGE_SIZE * 8)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise _exited(self.pid) from None
            if e.errno in (errno.EPERM, errno.EACCES):
                raise NotRoot(f"permission denied reading /proc/{self.pid}/pagemap: run as root") from None
            raise
        out = _words(data)
        if len(out) < n:
            self.check_alive()
        return out


@contextmanager
def _pagemap(pid: int, pmap: Optional[PageMap]):
    """The caller's open PageMap, or one of our own that is closed and alive-checked after."""
    if pmap is not None:
        yield pmap
        return
    with PageMap(pid) as own:
        yield own
        own.check_alive()


# ---------------------------------------------------------------- PAGEMAP_SCAN

def _ioctl_scan(fd: int, arg: PmScanArg) -> int:
    return fcntl.ioctl(fd, PAGEMAP_SCAN, arg, True)


@lru_cache(maxsize=1)
def supported_categories() -> int:
    """The PAGE_IS_* bits this kernel's PAGEMAP_SCAN accepts; 0 when it has no PAGEMAP_SCAN."""
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for mask in _CATEGORY_GENERATIONS:
            arg = PmScanArg(size=ctypes.sizeof(PmScanArg), return_mask=mask)
            try:
                _ioctl_scan(fd, arg)        # empty range, no vector: validates arguments only
                return mask
            except OSError as e:
                if e.errno == errno.EINVAL:
                    continue
                if e.errno == errno.ENOTTY:      # pagemap without an ioctl: before 6.7
                    return 0
                raise
        return 0
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def soft_dirty_tracked() -> bool:
    """Does this kernel track soft-dirty (CONFIG_MEM_SOFT_DIRTY)? A page we just wrote is
    soft-dirty then (pagemap bit 55); without the option the bit, and PAGE_IS_SOFT_DIRTY,
    are always 0 and mean nothing."""
    import mmap
    m = mmap.mmap(-1, PAGE_SIZE)
    try:
        m[0:1] = b"x"
        cell = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(cell)
        del cell
        fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            (entry,) = struct.unpack("=Q", os.pread(fd, 8, addr // PAGE_SIZE * 8))
        finally:
            os.close(fd)
        return bool(entry & PM_PRESENT and entry & PM_SOFT_DIRTY)
    except OSError:
        return False
    finally:
        m.close()


def scan_supported() -> bool:
    return supported_categories() != 0


def _require_scan() -> int:
    """The categories worth reporting here: what PAGEMAP_SCAN accepts, minus soft-dirty
    when the kernel does not track it."""
    known = supported_categories()
    if known and not soft_dirty_tracked():
        known &= ~PAGE_IS_SOFT_DIRTY
    if not known:
        raise KernelFeatureMissing(
            f"PAGEMAP_SCAN is missing (Linux 6.7+; this is {platform.release()}): "
            f"use the pagemap+kpageflags reader")
    return known


def default_vec_len() -> int:
    """Regions per ioctl: the kernel's bounce buffer size (PAGEMAP_WALK_SIZE >> PAGE_SHIFT).

    Linux 6.18 (seen here) returns a stale ``walk_end`` when, within one call, the bounce
    buffer filled (ENOSPC, walk_end set), was flushed, and the walk then finished: walk_end
    still names the earlier stop although regions up to the end were returned. A vector no
    longer than the bounce buffer never fills it twice in one call.
    """
    return max(1, pmd_size() // PAGE_SIZE)


def scan_regions_fd(fd: int, start: int, end: int, *, return_mask: int,
                    category_mask: int = 0, category_inverted: int = 0,
                    category_anyof_mask: int = 0, vec_len: Optional[int] = None) -> Iterator[Tuple[int, int, int]]:
    """Raw PAGEMAP_SCAN over [start, end) of an open pagemap fd: (start, end, categories).

    The kernel stops when the vector is full and says where in ``walk_end``; we go on
    from there (or from the end of the last region returned, if that is further: see
    default_vec_len) until the whole range is walked. Pages outside any VMA are not reported.
    """
    vec_len = vec_len or default_vec_len()
    vec = (PageRegion * vec_len)()
    arg = PmScanArg(size=ctypes.sizeof(PmScanArg), vec=ctypes.addressof(vec),
                    category_inverted=category_inverted, category_mask=category_mask,
                    category_anyof_mask=category_anyof_mask, return_mask=return_mask)
    pos = start
    while pos < end:
        arg.start, arg.end, arg.walk_end, arg.vec_len, arg.max_pages = pos, end, 0, vec_len, 0
        n = _ioctl_scan(fd, arg)
        resume = arg.walk_end
        if n:
            regions = list(struct.iter_unpack("=QQQ", ctypes.string_at(vec, n * ctypes.sizeof(PageRegion))))
            yield from regions
            resume = max(resume, regions[-1][1])
        if resume <= pos:                # no progress: never loop forever on a kernel surprise
            break
        pos = resume


def _scan_errors(pid: int, e: OSError, start: int, end: int):
    if e.errno == errno.ESRCH:
        return _exited(pid)
    if e.errno == errno.EPERM or e.errno == errno.EACCES:
        return NotRoot(f"PAGEMAP_SCAN on pid {pid}: permission denied (run as root)")
    if e.errno == errno.EFAULT:
        return BadRange(f"{start:#x}-{end:#x} is not in the user address space")
    return e


def scan_regions(pid: int, start: int, end: int, pmap: Optional[PageMap] = None,
                 **masks) -> List[Tuple[int, int, int]]:
    """PAGEMAP_SCAN on /proc/PID/pagemap, regions merged across ioctl calls."""
    _require_scan()
    with _pagemap(pid, pmap) as pm:
        return pm.regions(start, end, **masks)


def _vmas_in(pid: int, start: int, end: int) -> List["procfs.Smaps"]:
    try:
        blocks = procfs.read_smaps(pid)
    except ProcessExited:
        raise NoSuchProcess(f"no such process: {pid}") from None
    return [b for b in blocks if b.map.start < end and b.map.end > start]


def scan(pid: int, start: int, end: int, facts: Optional[VmaFacts] = None,
         pmap: Optional[PageMap] = None) -> List[PageRun]:
    """Merged runs of [start, end) from PAGEMAP_SCAN (KernelFeatureMissing if absent).

    With ``facts`` the range is taken as one VMA's; without, smaps is read and each VMA
    overlapping the range is classified with facts_from_smaps (no DAX detection).
    ``pmap``: an open PageMap of pid to reuse (the caller then checks it is alive).
    """
    known = _require_scan()
    with _pagemap(pid, pmap) as pm:
        if facts is not None:
            return classify(pm.regions(start, end, return_mask=known), facts, known)
        runs: List[PageRun] = []
        for b in _vmas_in(pid, start, end):
            lo, hi = max(start, b.map.start), min(end, b.map.end)
            runs += classify(pm.regions(lo, hi, return_mask=known), facts_from_smaps(b), known)
        return runs


def scan_split(pid: int, ranges: Sequence[Tuple[int, int, VmaFacts]],
               pmap: Optional[PageMap] = None) -> List[List[PageRun]]:
    """scan() of each (start, end, facts) in ``ranges`` (sorted, disjoint: VMAs or parts of them),
    equal to one scan() per range but read in one PAGEMAP_SCAN pass over their whole span: one
    ioctl per 512 regions, not one per VMA. The regions are cut at the range edges."""
    known = _require_scan()
    if not ranges:
        return []
    if not _sorted_disjoint([(lo, hi) for lo, hi, _ in ranges]):
        return [scan(pid, lo, hi, f, pmap) for lo, hi, f in ranges]
    with _pagemap(pid, pmap) as pm:
        regions = pm.regions(ranges[0][0], ranges[-1][1], return_mask=known)
    out = []
    states: dict = {}
    i, n = 0, len(regions)
    for lo, hi, f in ranges:
        while i < n and regions[i][1] <= lo:
            i += 1
        mine = []
        j = i
        while j < n and regions[j][0] < hi:
            s, e, cat = regions[j]
            mine.append((max(s, lo), min(e, hi), cat))
            j += 1
        out.append(classify(mine, f, known, states))
    return out


def huge_small_bytes(pid: int, start: int, end: int, count_zero_page: bool = False) -> Tuple[int, int]:
    """(bytes present and mapped by a PMD leaf or hugetlb entry, bytes present and mapped by PTEs).

    One ioctl loop; only present pages are returned and only PRESENT|HUGE is kept, so the
    kernel merges a fully THP-backed range into one region. The shared zero page (small, or
    the huge zero page, which 6.18 flags PFNZERO) is left out unless asked for, so the sum
    matches smaps' Rss.
    """
    return huge_small_many(pid, [(start, end)], count_zero_page)[0]


def huge_small_many(pid: int, ranges: Sequence[Tuple[int, int]],
                    count_zero_page: bool = False) -> List[Tuple[int, int]]:
    """huge_small_bytes for each (start, end) in ``ranges`` (e.g. every VMA), one pagemap fd.

    Sorted, disjoint ranges (VMAs) are walked with one PAGEMAP_SCAN pass from the first start to
    the last end, and the regions cut at the range edges: one ioctl per 512 regions rather than
    one per VMA (60,000 VMAs: 60,000 ioctls). Pages between the ranges are not counted."""
    known = _require_scan()
    mask, inverted = PAGE_IS_PRESENT, 0
    if not count_zero_page:
        mask |= PAGE_IS_PFNZERO
        inverted = PAGE_IS_PFNZERO
    masks = dict(category_mask=mask, category_inverted=inverted,
                 return_mask=(PAGE_IS_PRESENT | PAGE_IS_HUGE) & known)
    out = []
    with _pagemap(pid, None) as pm:
        if _sorted_disjoint(ranges):
            return split_huge_small(pm.regions(ranges[0][0], ranges[-1][1], **masks) if ranges else [],
                                    ranges)
        for start, end in ranges:
            out.append(split_huge_small(pm.regions(start, end, **masks), [(start, end)])[0])
    return out


def _sorted_disjoint(ranges: Sequence[Tuple[int, int]]) -> bool:
    return all(ranges[i][1] <= ranges[i + 1][0] for i in range(len(ranges) - 1))


def split_huge_small(regions: Sequence[Tuple[int, int, int]],
                     ranges: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """(huge bytes, small bytes) of each of the sorted, disjoint ``ranges`` from sorted regions
    (start, end, categories); the parts of regions outside every range are not counted."""
    out = []
    i, n = 0, len(regions)
    for start, end in ranges:
        while i < n and regions[i][1] <= start:
            i += 1
        huge = small = 0
        j = i
        while j < n and regions[j][0] < end:
            s, e, cat = regions[j]
            length = min(e, end) - max(s, start)
            if cat & PAGE_IS_HUGE:
                huge += length
            else:
                small += length
            j += 1
        out.append((huge, small))
    return out


# ---------------------------------------------------------------- pagemap + kpageflags

def _pread_all(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        b = os.pread(fd, min(size, 64 << 20), offset)
        if not b:
            break
        chunks.append(b)
        size -= len(b)
        offset += len(b)
    return b"".join(chunks)


def _words(data: bytes) -> array:
    a = array("Q")
    a.frombytes(data[: len(data) // 8 * 8])
    return a


KPF_GAP = 4096       # PFNs: read across a gap up to 32 KiB of kpageflags rather than pread again


def pfn_spans(pfns: Sequence[int], gap: int = KPF_GAP) -> List[Tuple[int, int]]:
    """Sorted unique PFNs -> [first, last] spans to read, joining spans less than ``gap`` apart
    (one pread per span: scattered small pages cost a few reads, not one per page)."""
    spans: List[Tuple[int, int]] = []
    for pfn in pfns:
        if spans and pfn - spans[-1][1] <= gap:
            spans[-1] = (spans[-1][0], pfn)
        else:
            spans.append((pfn, pfn))
    return spans


def _read_kpageflags(pfns: Sequence[int]) -> dict:
    """Flags of each PFN in ``pfns`` (sorted, unique), read in spans (see pfn_spans)."""
    try:
        fd = os.open(KPAGEFLAGS, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        raise NotRoot(f"permission denied reading {KPAGEFLAGS}: run as root") from None
    except FileNotFoundError:
        raise KernelFeatureMissing(f"{KPAGEFLAGS} is missing (CONFIG_PROC_PAGE_MONITOR)") from None
    flags = {}
    try:
        i = 0
        for first, last in pfn_spans(pfns):
            try:
                words = _words(_pread_all(fd, (last - first + 1) * 8, first * 8))
            except OSError:
                words = array("Q")
            while i < len(pfns) and pfns[i] <= last:
                k = pfns[i] - first
                if k < len(words):
                    flags[pfns[i]] = words[k]
                i += 1
    finally:
        os.close(fd)
    return flags


def fallback_page_state(entry: int, kflags: Optional[int], facts: VmaFacts,
                        soft_dirty_known: bool = True) -> tuple:
    """(present, huge, page_size, kind, written, soft_dirty, file, swapped, zero_pfn, guard) of one
    page. Guard: True where pagemap says so (6.15+), else unknown (None) rather than a claim."""
    present = bool(entry & PM_PRESENT)
    guard = True if entry & PM_GUARD_REGION else None
    swapped = bool(entry & PM_SWAP) and not guard
    file = bool(entry & PM_FILE) if present or swapped else None
    if facts.kind in ("hugetlb", "dax"):
        kind = facts.kind
    elif present:
        kind = ("shmem" if facts.kind == "shmem" else "file") if file else "anon"
    else:
        kind = facts.kind
    huge: Optional[bool] = False
    size: Optional[int] = None
    zero = None
    if present:
        if facts.kind == "dax" or kflags is None or kflags & KPF_NOPAGE:
            huge, size = None, None              # DAX / no PFN: mapping size unknown
        elif kflags & KPF_HUGE or facts.kind == "hugetlb":
            huge, size = True, run_page_size(True, facts)
        elif kflags & KPF_ZERO_PAGE and kflags & KPF_THP:
            huge, size, zero = True, pmd_size(), True   # the huge zero page is only ever PMD-mapped
        elif kflags & (KPF_THP | KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL):
            huge, size = None, None              # large folio: PTE- or PMD-mapped, pagemap can't tell
        else:
            huge, size = False, PAGE_SIZE        # a small folio can only be PTE-mapped
        if zero is None:
            zero = bool(kflags & KPF_ZERO_PAGE) if kflags is not None else None
        if zero:                                  # pagemap flags the huge zero page PM_FILE;
            file = False                          # PAGEMAP_SCAN does not: follow PAGEMAP_SCAN
            kind = facts.kind if facts.kind in ("hugetlb", "dax") else "anon"
    written = (not entry & PM_UFFD_WP) if present or swapped else None
    soft = bool(entry & PM_SOFT_DIRTY) if soft_dirty_known else None
    return (present, huge, size, kind, written, soft, file, swapped, zero, guard)


def fallback_classify(start: int, entries: Sequence[int], kflags: dict, facts: VmaFacts,
                      soft_dirty_known: bool = True) -> List[PageRun]:
    """Per-page pagemap words (+ kpageflags by PFN) -> merged PageRuns."""
    runs: List[PageRun] = []
    cur_state, cur_start = None, start
    cache: Dict[tuple, tuple] = {}
    addr = start
    for entry in entries:
        pfn = entry & PM_PFN_MASK if entry & PM_PRESENT else 0
        kf = kflags.get(pfn) if pfn else None
        key = (entry & (PM_PRESENT | PM_SWAP | PM_FILE | PM_SOFT_DIRTY | PM_UFFD_WP | PM_GUARD_REGION), kf)
        state = cache.get(key)
        if state is None:
            state = cache[key] = fallback_page_state(entry, kf, facts, soft_dirty_known)
        if state != cur_state:
            if cur_state is not None:
                runs.append(_run_from_state(cur_start, addr, cur_state))
            cur_state, cur_start = state, addr
        addr += PAGE_SIZE
    if cur_state is not None:
        runs.append(_run_from_state(cur_start, addr, cur_state))
    return runs


def _run_from_state(start: int, end: int, st: tuple) -> PageRun:
    return PageRun(start, end, *st)


def fallback_regions(pid: int, start: int, end: int, pmap: Optional[PageMap] = None) -> Tuple[array, dict]:
    """pagemap words of [start, end) (one pread) and kpageflags of their PFNs."""
    with _pagemap(pid, pmap) as pm:
        entries = pm.words(start, end)
    pfns = sorted({e & PM_PFN_MASK for e in entries if e & PM_PRESENT and e & PM_PFN_MASK})
    return entries, _read_kpageflags(pfns)


FALLBACK_CHUNK = 4 << 30     # address space per pread: 8 MiB of pagemap words with 4K pages


def fallback_range(pid: int, start: int, end: int, facts: VmaFacts,
                   chunk: int = FALLBACK_CHUNK, pmap: Optional[PageMap] = None) -> List[PageRun]:
    """Runs of [start, end) inside one VMA: one pread of pagemap per ``chunk`` of address
    space (so a terabyte VMA does not need gigabytes of buffer), kpageflags for its PFNs."""
    runs: List[PageRun] = []
    with _pagemap(pid, pmap) as pm:
        for lo, hi in _chunks(start, end, chunk):
            if facts.kind == "dax":
                runs += _dax_fallback_chunk(pm, lo, hi, facts)
                continue
            entries, kflags = fallback_regions(pid, lo, hi, pm)
            runs += fallback_classify(lo, entries, kflags, facts, soft_dirty_tracked())
    return merge_runs(runs)


def _dax_fallback_chunk(pm: PageMap, lo: int, hi: int, facts: VmaFacts) -> List[PageRun]:
    """Runs of [lo, hi) in a DAX VMA: the words of the enclosing PMD-aligned range are read, so
    a PMD block cut by the range's edges is judged whole (pages outside any VMA read absent)."""
    pmd = pmd_size()
    elo, ehi = lo // pmd * pmd, -(-hi // pmd) * pmd
    words = pm.words(elo, ehi)
    a, b = (lo - elo) // PAGE_SIZE, (hi - elo) // PAGE_SIZE
    if len(words) < b:                     # cut short: judge only what was read
        elo, words, a, b = lo, pm.words(lo, hi), 0, (hi - lo) // PAGE_SIZE
    entries = words[a:b]
    pfns = sorted({e & PM_PFN_MASK for e in entries if e & PM_PRESENT and e & PM_PFN_MASK})
    classes = dax_size_classes(elo, words, dax_pmd_sets_file(words))[0][a:b]
    return dax_fallback_classify(lo, entries, _read_kpageflags(pfns), facts, soft_dirty_tracked(), classes)


def _chunks(start: int, end: int, chunk: int) -> Iterator[Tuple[int, int]]:
    """[start, end) cut at multiples of ``chunk`` (a multiple of the PMD size), so no PMD block
    is split between two reads."""
    lo = start
    while lo < end:
        hi = min(end, (lo // chunk + 1) * chunk)
        yield lo, hi
        lo = hi


def scan_fallback(pid: int, start: int, end: int, facts: Optional[VmaFacts] = None,
                  pmap: Optional[PageMap] = None) -> List[PageRun]:
    """Merged runs of [start, end) from /proc/PID/pagemap + /proc/kpageflags.

    With ``facts`` the range is taken as one VMA's; without, each VMA overlapping it is read
    with facts_from_smaps. Pages outside VMAs are skipped, as PAGEMAP_SCAN does.
    """
    with _pagemap(pid, pmap) as pm:
        if facts is not None:
            return fallback_range(pid, start, end, facts, pmap=pm)
        runs: List[PageRun] = []
        for b in _vmas_in(pid, start, end):
            lo, hi = max(start, b.map.start), min(end, b.map.end)
            runs += fallback_range(pid, lo, hi, facts_from_smaps(b), pmap=pm)
        return runs


# ---------------------------------------------------------------- DAX residency (any kernel)
#
# smaps does not count DAX pages before ~6.15 (its walker skips devmap/special entries), so the
# RSS of a DAX VMA is read from the page tables: PAGEMAP_SCAN where the kernel has it, else the
# present bits of /proc/PID/pagemap. Without PAGEMAP_SCAN pagemap has no mapping-size bit and
# /proc/kpageflags has no flags for ZONE_DEVICE PFNs (KPF_NOPAGE), but two facts decide many pages:
#  1. A PMD leaf maps a whole PMD-aligned block of the address space, inside one VMA, all present,
#     onto PMD-aligned contiguous PFNs. A page in no such candidate block is PTE-mapped.
#  2. pagemap's PM_FILE. Its PTE path takes the page from vm_normal_page(), which returns NULL for
#     a DAX (devmap, special) PTE before 6.15, so a PTE-mapped DAX page never has PM_FILE; its PMD
#     path takes pmd_page() and sets PM_FILE for any page that is not anonymous (6.1 does; 5.10's
#     PMD path sets no PM_FILE at all: seen in the guests). So PM_FILE on a DAX block means a PMD
#     leaf; no PM_FILE means PTEs only where this kernel's PMD path is known to set it, i.e. where
#     PM_FILE was seen on a DAX page of the same process.
# What stays undecided is unknown (None), never guessed.

SOURCE_PAGEMAP_PRESENT = "pagemap"
DAX_PTE, DAX_PMD, DAX_UNKNOWN = 0, 1, 2      # mapping size class of a present DAX page


@dataclass(frozen=True)
class DaxResidency:
    rss: Optional[int]           # present bytes (the shared zero page left out); None: unknown
    huge: Optional[int]          # present bytes mapped by a PMD leaf; None: unknown
    small: Optional[int]         # present bytes mapped by PTEs; None: unknown
    source: str                  # PAGEMAP_SCAN | pagemap
    candidate_blocks: int = 0    # pagemap: PMD blocks whose mapping size could not be decided


def dax_candidate_blocks(start: int, entries: Sequence[int], pmd: Optional[int] = None,
                         page_size: int = PAGE_SIZE, pfns_known: Optional[bool] = None) -> List[int]:
    """Indexes (into ``entries``) of the PMD blocks that may be one PMD leaf (fact 1 above), for the
    pagemap words of [start, start + len(entries) * page_size), taken as one whole VMA (or a range
    whose words beyond the VMA read absent). ``pfns_known``: None = decide from the words (all
    present PFNs zero means the reader lacked CAP_SYS_ADMIN, and the PFN test is skipped)."""
    pmd = pmd or pmd_size()
    per = pmd // page_size
    if pfns_known is None:
        pfns_known = any(e & PM_PRESENT and e & PM_PFN_MASK for e in entries)
    first = -(-start // pmd) * pmd               # first PMD-aligned address at or after start
    out = []
    for i in range((first - start) // page_size, len(entries) - per + 1, per):
        block = entries[i:i + per]
        if not all(e & PM_PRESENT for e in block):
            continue
        if pfns_known:
            base = block[0] & PM_PFN_MASK
            if base % per or any((e & PM_PFN_MASK) != base + k for k, e in enumerate(block)):
                continue
        out.append(i)
    return out


def dax_size_classes(start: int, entries: Sequence[int], pmd_sets_file: bool, pmd: Optional[int] = None,
                     page_size: int = PAGE_SIZE) -> Tuple[List[int], int]:
    """(DAX_PTE / DAX_PMD / DAX_UNKNOWN for each page, number of undecided blocks). Absent pages
    are DAX_PTE (they count nowhere). ``pmd_sets_file``: PM_FILE was seen on a DAX page here."""
    per = (pmd or pmd_size()) // page_size
    classes = [DAX_PTE] * len(entries)
    undecided = 0
    for i in dax_candidate_blocks(start, entries, pmd, page_size):
        files = [bool(e & PM_FILE) for e in entries[i:i + per]]
        if all(files):
            cls = DAX_PMD
        elif not any(files) and pmd_sets_file:
            cls = DAX_PTE
        else:
            cls, undecided = DAX_UNKNOWN, undecided + 1
        classes[i:i + per] = [cls] * per
    return classes, undecided


def dax_pmd_sets_file(entries: Iterable[int]) -> bool:
    """Fact 2: a present DAX page with PM_FILE shows this kernel's PMD path sets it."""
    return any(e & PM_PRESENT and e & PM_FILE for e in entries)


def dax_residency_from_words(start: int, entries: Sequence[int], zero_pfns: frozenset = frozenset(),
                             pmd: Optional[int] = None, page_size: int = PAGE_SIZE,
                             pmd_sets_file: Optional[bool] = None) -> DaxResidency:
    """DaxResidency of one whole DAX VMA from its pagemap words (pure; see dax_size_classes)."""
    if pmd_sets_file is None:
        pmd_sets_file = dax_pmd_sets_file(entries)
    classes, undecided = dax_size_classes(start, entries, pmd_sets_file, pmd, page_size)
    resident = [bool(e & PM_PRESENT) and (e & PM_PFN_MASK) not in zero_pfns for e in entries]
    rss = sum(resident) * page_size
    if undecided:
        return DaxResidency(rss, None, None, SOURCE_PAGEMAP_PRESENT, undecided)
    huge = sum(1 for r, c in zip(resident, classes) if r and c == DAX_PMD) * page_size
    return DaxResidency(rss, huge, rss - huge, SOURCE_PAGEMAP_PRESENT, 0)


def _zero_pfns(pfns: Sequence[int]) -> frozenset:
    """The PFNs among ``pfns`` (sorted) that are the shared zero page or the huge zero page.
    DAX memory has no flags in kpageflags (KPF_NOPAGE): only RAM PFNs can be zero pages."""
    try:
        flags = _read_kpageflags(pfns)
    except KernelFeatureMissing:
        return frozenset()
    return frozenset(p for p, f in flags.items() if f & KPF_ZERO_PAGE)


def dax_residency_many(pid: int, ranges: Sequence[Tuple[int, int]],
                       use_scan: Optional[bool] = None) -> List[DaxResidency]:
    """DaxResidency of each (start, end) in ``ranges`` (whole DAX VMAs of pid), one pagemap fd."""
    if use_scan is None:
        use_scan = scan_supported()
    if use_scan:
        return [DaxResidency(h + s, h, s, SOURCE_SCAN) for h, s in huge_small_many(pid, ranges)]
    with _pagemap(pid, None) as pm:
        read = [(start, end, pm.words(start, end)) for start, end in ranges]
    pmd_sets_file = any(dax_pmd_sets_file(w) for _s, _e, w in read)
    out = []
    for start, end, words in read:
        if len(words) < (end - start) // PAGE_SIZE:
            out.append(DaxResidency(None, None, None, SOURCE_PAGEMAP_PRESENT))
            continue
        pfns = sorted({w & PM_PFN_MASK for w in words if w & PM_PFN_MASK and w & PM_PRESENT})
        out.append(dax_residency_from_words(start, words, _zero_pfns(pfns), pmd_sets_file=pmd_sets_file))
    return out


def dax_huge_small(pid: int, start: int, end: int) -> Tuple[Optional[int], Optional[int]]:
    """(huge, small) bytes of one whole DAX VMA on any kernel (None: unknown here); for top -p."""
    r = dax_residency_many(pid, [(start, end)])[0]
    return r.huge, r.small


def dax_fallback_classify(start: int, entries: Sequence[int], kflags: dict, facts: VmaFacts,
                          soft_dirty_known: bool = True, classes: Optional[Sequence[int]] = None) -> List[PageRun]:
    """fallback_classify for a DAX range: present pages whose mapping size is decided
    (``classes``, by default dax_size_classes of the range taken as a whole VMA) get it; the
    others stay unknown."""
    if classes is None:
        classes = dax_size_classes(start, entries, dax_pmd_sets_file(entries))[0]
    out: List[PageRun] = []
    for run in fallback_classify(start, entries, kflags, facts, soft_dirty_known):
        if not (run.present and run.huge is None):
            out.append(run)
            continue
        i = (run.start - start) // PAGE_SIZE
        j = (run.end - start) // PAGE_SIZE
        k = i
        while k < j:                      # split the run where the size class changes
            m = k
            while m < j and classes[m] == classes[k]:
                m += 1
            part = replace(run, start=start + k * PAGE_SIZE, end=start + m * PAGE_SIZE)
            if classes[k] == DAX_PTE:
                part = replace(part, huge=False, page_size=PAGE_SIZE)
            elif classes[k] == DAX_PMD:
                part = replace(part, huge=True, page_size=pmd_size())
            out.append(part)
            k = m
    return merge_runs(out)
