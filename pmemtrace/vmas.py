"""The per-VMA model: what each mapping is (backing, DAX, VM_SYNC), whether THP may
back it and why, and how many of its bytes are mapped huge vs small.

classify_* functions are pure (unit-tested on smaps fixtures); describe_process()
is the one place that reads /proc, statx and the page tables for a pid.
"""
import ctypes
import operator
import os
import stat
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import kernel, pagemap, procfs
from .backing import HUGETLBFS_MAGIC, TMPFS_MAGIC, FileFacts, classify_backing  # noqa: F401  (vmas.* API)
from .errors import NotRoot, ProcessExited

STATX_ATTR_DAX = 0x00200000

SOURCE_PAGEMAP_SCAN = "PAGEMAP_SCAN"
SOURCE_SMAPS = "smaps"


@dataclass(slots=True)
class Vma:
    start: int
    end: int
    perms: str
    backing: str            # anon heap stack file shmem hugetlb device-dax special
    path: str
    rss_bytes: Optional[int]      # DAX: from the page tables, never smaps; None: unknown
    huge_bytes: Optional[int]     # None: unknown with this source (DAX without PAGEMAP_SCAN)
    small_bytes: Optional[int]
    dax: str                # fsdax / devdax / none
    vm_sync: bool
    thp_eligible: bool
    thp_reason: str
    vmflags: Tuple[str, ...] = ()
    offset: int = 0               # file offset of start (bytes)

    @property
    def size(self) -> int:
        return self.end - self.start


# ------------------------------------------------------------- statx / statfs

class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("__reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [("stx_mask", ctypes.c_uint32), ("stx_blksize", ctypes.c_uint32),
                ("stx_attributes", ctypes.c_uint64), ("stx_nlink", ctypes.c_uint32),
                ("stx_uid", ctypes.c_uint32), ("stx_gid", ctypes.c_uint32), ("stx_mode", ctypes.c_uint16),
                ("__spare0", ctypes.c_uint16), ("stx_ino", ctypes.c_uint64), ("stx_size", ctypes.c_uint64),
                ("stx_blocks", ctypes.c_uint64), ("stx_attributes_mask", ctypes.c_uint64),
                ("stx_atime", _StatxTimestamp), ("stx_btime", _StatxTimestamp),
                ("stx_ctime", _StatxTimestamp), ("stx_mtime", _StatxTimestamp),
                ("stx_rdev_major", ctypes.c_uint32), ("stx_rdev_minor", ctypes.c_uint32),
                ("stx_dev_major", ctypes.c_uint32), ("stx_dev_minor", ctypes.c_uint32),
                ("__spare2", ctypes.c_uint64 * 14)]


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("__rest", ctypes.c_long * 15)]


_libc = ctypes.CDLL(None, use_errno=True)     # libc, already loaded (find_library runs ldconfig: 2 ms a command)


def statx_dax(path: str) -> Optional[bool]:
    """STATX_ATTR_DAX of the file (through /proc/PID/map_files it is the mapped file itself)."""
    buf = _Statx()
    if _libc.statx(-100, os.fsencode(path), 0, 0x7FF, ctypes.byref(buf)) != 0:
        return None
    if not buf.stx_attributes_mask & STATX_ATTR_DAX:
        return False
    return bool(buf.stx_attributes & STATX_ATTR_DAX)


def fs_type(path: str) -> Optional[int]:
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return None
    return buf.f_type & 0xFFFFFFFF


def is_devdax_char(rdev: int) -> bool:
    """A character device whose sysfs subsystem is dax (/dev/daxX.Y)."""
    link = f"/sys/dev/char/{os.major(rdev)}:{os.minor(rdev)}/subsystem"
    try:
        return os.path.basename(os.readlink(link)) == "dax"
    except OSError:
        return False


def file_facts(pid: int, m: procfs.MapEntry) -> FileFacts:
    """DAX and filesystem of a file mapping, read through /proc/PID/map_files."""
    if m.inode == 0:
        return FileFacts()
    path = procfs.map_file_path(pid, m)
    try:
        st = os.stat(path)
    except PermissionError:
        raise NotRoot("reading /proc/PID/map_files needs root (CAP_SYS_ADMIN): run with sudo") from None
    except OSError:
        return FileFacts()
    if stat.S_ISCHR(st.st_mode):
        return FileFacts("devdax" if is_devdax_char(st.st_rdev) else "none")
    return FileFacts("fsdax" if statx_dax(path) else "none", fs_type(path))


# ------------------------------------------------------------- pure classification

def classify_thp(backing: str, dax: str, vmflags: frozenset, smaps_eligible: Optional[int],
                 policy: kernel.ThpPolicy, thp_disabled_by_prctl: bool) -> Tuple[bool, str]:
    """Whether THP may back this VMA, and why, in words."""
    if backing == "hugetlb":
        return False, "hugetlb: mapped with huge pages from the hugetlb pool, not THP"
    if dax != "none":
        if "nh" in vmflags:
            return False, ("DAX with MADV_NOHUGEPAGE (VmFlags nh): the kernel makes no PMD attempt, "
                           "every fault maps 4 KiB")
        return False, ("DAX: no THP; PMD mappings need 2 MiB alignment of address and file offset "
                       "and 2 MiB extents (see --duration for fallbacks)")
    if backing == "special":
        return False, "special mapping (vdso, PFN/IO map): never THP"
    if thp_disabled_by_prctl:
        return False, "THP disabled for this process by prctl(PR_SET_THP_DISABLE)"
    if "nh" in vmflags:
        return False, "MADV_NOHUGEPAGE on this VMA (VmFlags nh)"
    if backing == "shmem":
        if smaps_eligible:
            return True, f"shmem: eligible (shmem_enabled={policy.shmem_enabled} or tmpfs huge= mount option)"
        return False, (f"shmem: shmem_enabled={policy.shmem_enabled} and the mount's huge= option "
                       f"do not allow huge pages here")
    if backing == "file":
        if smaps_eligible:
            return True, "file: eligible (large folios on this filesystem)"
        return False, "file: page cache of this filesystem is not THP-eligible here"
    if policy.enabled == "never":
        return False, "THP disabled system-wide (enabled=never)"
    if smaps_eligible:
        if policy.enabled == "always":
            return True, "enabled=always"
        if "hg" in vmflags:
            return True, "MADV_HUGEPAGE on this VMA (VmFlags hg)"
        return True, "eligible (per-size mTHP policy)"
    if policy.enabled == "madvise" and "hg" not in vmflags:
        return False, "enabled=madvise and no MADV_HUGEPAGE on this VMA"
    return False, "no 2 MiB-aligned 2 MiB range inside this VMA (too small or misaligned)"


HUGE_KEYS = ("AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb")
DESCRIBE_KEYS = ("Rss", "THPeligible") + HUGE_KEYS        # the smaps counters describe_process reads


def smaps_huge_bytes(block: procfs.Smaps) -> int:
    return (block.get("AnonHugePages") + block.get("ShmemPmdMapped") + block.get("FilePmdMapped")
            + block.get("Shared_Hugetlb") + block.get("Private_Hugetlb"))


# ------------------------------------------------------------- gathering

@dataclass
class ProcessVmas:
    pid: int
    comm: str
    source: str                # PAGEMAP_SCAN or smaps
    vmas: List[Vma]
    notes: List[str]
    # the present, not zero-page PAGEMAP_SCAN regions (start, end, PAGE_IS_PRESENT|HUGE) over every
    # VMA but [vsyscall], as read for huge/small: the folio pass reads them instead of scanning again
    regions: Optional[List[Tuple[int, int, int]]] = None


Scanned = Callable[[], Optional[Any]]
"""folio_reader.prefetch's result: waits for what a child read ahead (its .top, .regions), or None."""


def describe_process(pid: int, use_pagemap_scan: Optional[bool] = None, scanned: Optional[Scanned] = None,
                     smaps: Optional[Iterator[bytes]] = None) -> ProcessVmas:
    """Every VMA of pid with its facts; raises NoSuchProcess / ProcessExited / KernelThread.
    Read ahead by the caller, not here: ``scanned``, the PAGEMAP_SCAN regions
    (folio_reader.prefetch); ``smaps``, the smaps text (procfs.start_smaps)."""
    with procfs.no_gc():
        return _describe_process(pid, use_pagemap_scan, scanned, smaps)


def _describe_process(pid: int, use_pagemap_scan: Optional[bool], scanned: Optional[Scanned],
                      smaps: Optional[Iterator[bytes]]) -> ProcessVmas:
    """describe_process, with the cyclic GC paused.

    Built for tens of thousands of VMAs: the file facts (stat, statx, statfs through map_files)
    are read once per (device, inode), the pure classifications are computed once per distinct
    input, and the page sizes come from one PAGEMAP_SCAN pass over all VMAs."""
    comm = procfs.check_pid(pid)
    status = procfs.read_status(pid)
    prctl_off = status.get("THP_enabled", "1").strip() == "0"
    policy = kernel.thp_policy()
    if use_pagemap_scan is None:
        use_pagemap_scan = pagemap.scan_supported()
    source = SOURCE_PAGEMAP_SCAN if use_pagemap_scan else SOURCE_SMAPS
    files: Dict[Tuple[Tuple[int, int], int], FileFacts] = {}
    none = FileFacts()

    def facts_for(m: procfs.MapEntry) -> FileFacts:
        if m.inode == 0:
            return none
        key = (m.dev, m.inode)
        f = files.get(key)
        if f is None:
            f = files[key] = file_facts(pid, m)
        return f

    parser = procfs.SmapsParser(DESCRIBE_KEYS)

    def kind(row: tuple, eligible_at: Optional[int]) -> tuple:
        # what a VMA is (backing, DAX, VM_SYNC, THP verdict, sorted flags) follows from the text
        # fields of its row alone: worked out once per distinct combination, not once per VMA
        perms, dev, inode, path, vf = parser.decode(row[2], row[4], row[-1])
        m = procfs.MapEntry(int(row[0], 16), int(row[1], 16), perms, int(row[3], 16), dev, inode, path)
        smaps_eligible = int(row[eligible_at]) if eligible_at is not None else None
        f = facts_for(m)
        backing = classify_backing(m, vf, f)
        eligible, reason = classify_thp(backing, f.dax, vf, smaps_eligible, policy, prctl_off)
        return (perms, backing, path, f.dax, "sf" in vf, eligible, reason, tuple(sorted(vf)))

    # the rows of smaps, not Smaps objects: tens of thousands of VMAs, each read for a few fields
    vmas: List[Vma] = []
    walk: List[Vma] = []                # what PAGEMAP_SCAN sizes: all but special VMAs ([vsyscall] is one)
    dax: List[Vma] = []
    kinds: Dict[tuple, tuple] = {}
    pieces = procfs.smaps_pieces(smaps) if smaps is not None else procfs.smaps_text(pid, read_ahead=True)
    for piece in pieces:
        layout, rows = parser.rows(piece)
        eligible_at, rss_at, rss_scale = layout.at("THPeligible"), layout.at("Rss"), layout.scale_of("Rss")
        kind_key = operator.itemgetter(2, 4, -1, *([eligible_at] if eligible_at is not None else []))
        huge_at = [(layout.at(k), layout.scale_of(k)) for k in HUGE_KEYS if k in layout.index]
        for row in rows:
            key = kind_key(row)
            k = kinds.get(key)
            if k is None:
                k = kinds[key] = kind(row, eligible_at)
            perms, backing, path, dax_kind, sync, eligible, reason, flags = k
            rss = int(row[rss_at]) * rss_scale if rss_at is not None else 0
            huge = small = None         # from the PAGEMAP_SCAN walk below, but for what it cannot walk
            walked = use_pagemap_scan and backing != "special"
            if not walked:
                huge = sum(int(row[i]) * scale for i, scale in huge_at)
                small = max(rss - huge, 0)
            v = Vma(int(row[0], 16), int(row[1], 16), perms, backing, path, rss, huge, small,
                    dax_kind, sync, eligible, reason, flags, int(row[3], 16))
            vmas.append(v)
            if walked:
                walk.append(v)
            if dax_kind != "none":
                dax.append(v)
    regions, huge_small = scan_huge_small(pid, vmas, walk, scanned) if walk else (None, [])
    for v, (huge, small) in zip(walk, huge_small):
        v.huge_bytes, v.small_bytes = huge, small
    # DAX: RSS from the page tables on every kernel (smaps does not count DAX pages before ~6.15)
    res = dax_residency(pid, dax, use_pagemap_scan)
    for v, r in zip(dax, res):
        v.rss_bytes, v.huge_bytes, v.small_bytes = r.rss, r.huge, r.small
    notes = dax_notes(res, use_pagemap_scan)
    if not os.path.exists(f"/proc/{pid}"):
        raise ProcessExited(f"pid {pid} exited while being read")
    return ProcessVmas(pid, comm, source, vmas, notes, regions)


def scan_huge_small(pid: int, vmas: List[Vma], walk: List[Vma], scanned: Optional[Scanned] = None
                    ) -> Tuple[Optional[List[Tuple[int, int, int]]], List[Tuple[int, int]]]:
    """(the PAGEMAP_SCAN regions, (huge, small) bytes of each VMA of walk). One scan over every
    VMA but [vsyscall] (outside the user address space), so the folio pass finds the special VMAs
    it reads too; smaps lists VMAs in address order. ``scanned``: regions read ahead, used when
    they cover all those VMAs."""
    ranges = [(v.start, v.end) for v in walk]
    # [vsyscall] lies outside the user address space, where PAGEMAP_SCAN refuses to walk
    lo = next((v.start for v in vmas if v.path != "[vsyscall]"), None)
    hi = next((v.end for v in reversed(vmas) if v.path != "[vsyscall]"), None)
    if not pagemap._sorted_disjoint(ranges) or lo is None or hi is None:
        return None, pagemap.huge_small_many(pid, ranges)
    ahead = scanned() if scanned is not None else None
    if ahead is not None and hi <= ahead.top:
        regions = ahead.regions
    else:
        regions = pagemap.present_regions(pid, lo, hi)
    return regions, pagemap.split_huge_small(regions, ranges)


def dax_residency(pid: int, dax: List[Vma], use_pagemap_scan: bool) -> List[pagemap.DaxResidency]:
    """Residency of DAX VMAs: with PAGEMAP_SCAN the walk already done (RSS = huge + small, in the
    VMA), else the present bits of /proc/PID/pagemap (pagemap.dax_residency_many)."""
    if use_pagemap_scan:
        return [pagemap.DaxResidency((v.huge_bytes or 0) + (v.small_bytes or 0), v.huge_bytes or 0,
                                     v.small_bytes or 0, pagemap.SOURCE_SCAN) for v in dax]
    return pagemap.dax_residency_many(pid, [(v.start, v.end) for v in dax], use_scan=False) if dax else []


def dax_notes(res: List[pagemap.DaxResidency], use_pagemap_scan: bool) -> List[str]:
    """What the report can and cannot say about DAX VMAs on this kernel, in words."""
    if use_pagemap_scan or not res:
        return []
    notes = ["RSS of DAX VMAs is read from the present bits of /proc/PID/pagemap (smaps does not "
             "count DAX pages before Linux 6.15)"]
    if any(r.rss is None for r in res):
        notes.append("the page tables of some DAX VMAs could not be read: their RSS is unknown (?)")
    unknown = sum(r.candidate_blocks for r in res if r.huge is None)
    if unknown:
        notes.append(f"this kernel has no PAGEMAP_SCAN (6.7+): the mapping size of DAX VMAs is unavailable "
                     f"statically for {unknown} fully present, aligned 2 MiB blocks (PMD- or PTE-mapped: pagemap "
                     f"has no size bit, kpageflags no flags for DAX memory, and this kernel's pagemap sets no "
                     f"PM_FILE on DAX PMDs), HUGE/SMALL show ?; `--duration N` observes their PMD/PTE faults instead")
    if any(r.huge is not None and r.rss for r in res):
        notes.append("HUGE/SMALL of DAX VMAs without PAGEMAP_SCAN: 4 KiB where no 2 MiB block can be one PMD leaf "
                     "(address, file offset or extent not 2 MiB aligned, block partly present); 2 MiB where "
                     "pagemap flags the block PM_FILE, which only its PMD path sets for DAX pages")
    return notes
