"""/proc/PID/pagemap held open (PageMap) and the PAGEMAP_SCAN reader (Linux 6.7+): raw
regions, merged runs, huge/small bytes of ranges."""
import ctypes
import errno
import fcntl
import os
import platform
import struct
from array import array
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator, List, Optional, Sequence, Tuple

from .. import procfs
from ..errors import BadRange, KernelFeatureMissing, NoSuchProcess, NotRoot, ProcessExited
from ..kernel import PAGE_SIZE, pmd_size
from .uapi import (
    PAGEMAP_SCAN, PAGE_IS_HUGE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SOFT_DIRTY, PM_PRESENT,
    PM_SOFT_DIRTY, PageRegion, PmScanArg, _CATEGORY_GENERATIONS,
)
from .runs import PageRun, VmaFacts, classify, facts_from_smaps, merge_regions


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
    masks = _present_masks(count_zero_page)
    out = []
    with _pagemap(pid, None) as pm:
        if _sorted_disjoint(ranges):
            return split_huge_small(pm.regions(ranges[0][0], ranges[-1][1], **masks) if ranges else [],
                                    ranges)
        for start, end in ranges:
            out.append(split_huge_small(pm.regions(start, end, **masks), [(start, end)])[0])
    return out


def _present_masks(count_zero_page: bool = False) -> dict:
    known = _require_scan()
    mask, inverted = PAGE_IS_PRESENT, 0
    if not count_zero_page:
        mask |= PAGE_IS_PFNZERO
        inverted = PAGE_IS_PFNZERO
    return dict(category_mask=mask, category_inverted=inverted,
                return_mask=(PAGE_IS_PRESENT | PAGE_IS_HUGE) & known)


def present_regions(pid: int, start: int, end: int) -> List[Tuple[int, int, int]]:
    """Merged PAGEMAP_SCAN regions of [start, end): present pages but the shared zero page, with
    PAGE_IS_PRESENT|HUGE (what huge_small_many splits, and folio_reader reads)."""
    masks = _present_masks()
    with _pagemap(pid, None) as pm:
        return pm.regions(start, end, **masks)


def _sorted_disjoint(ranges: Sequence[Tuple[int, int]]) -> bool:
    return all(ranges[i][1] <= ranges[i + 1][0] for i in range(len(ranges) - 1))


def split_huge_small(regions: Sequence[Tuple[int, int, int]],
                     ranges: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """(huge bytes, small bytes) of each of the sorted, disjoint ``ranges`` from sorted regions
    (start, end, categories); the parts of regions outside every range are not counted."""
    out: List[Tuple[int, int]] = []
    append = out.append
    i, n = 0, len(regions)
    for start, end in ranges:
        while i < n and regions[i][1] <= start:
            i += 1
        if i < n:
            s, e, cat = regions[i]
            if s <= start and end <= e:     # inside one region: most VMAs (the kernel merges regions)
                append((end - start, 0) if cat & PAGE_IS_HUGE else (0, end - start))
                continue
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
        append((huge, small))
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
