"""Kernel ABI of the page-table readers: PAGEMAP_SCAN's PAGE_IS_* categories, its ioctl
structures and number, the /proc/PID/pagemap word bits and /proc/kpageflags flags."""
import ctypes
import platform
from typing import Optional, Tuple


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
