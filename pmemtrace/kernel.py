"""Facts about the running kernel, read, never assumed: release, page and PMD sizes,
THP and hugetlb policy, tracefs and the tracepoints pmemtrace uses (with their fields).

The tracepoint catalogue below is the one list of what the probes attach to and what a
user loses when one is missing; doctor and the loader both read it.
"""
import os
import re
import resource
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from .errors import KernelFeatureMissing

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
THP_SYSFS = "/sys/kernel/mm/transparent_hugepage"
HUGETLB_SYSFS = "/sys/kernel/mm/hugepages"

PAGE_SIZE = resource.getpagesize()


@dataclass(frozen=True)
class Tracepoint:
    category: str
    name: str
    feeds: str        # what pmemtrace shows from it; what is lost without it

    @property
    def id(self) -> str:
        return f"{self.category}:{self.name}"


# Every tracepoint the probes use. Classic tracepoints are read through structs
# generated from their tracefs format; raw tracepoints take scalar TP_PROTO arguments.
TRACEPOINTS: Tuple[Tracepoint, ...] = (
    Tracepoint("exceptions", "page_fault_user", "fault addresses for per-VMA fault counts (--duration, --exact)"),
    Tracepoint("memcg", "count_memcg_events", "THP fault allocations attributed to the faulting task (--duration, --exact)"),
    Tracepoint("fs_dax", "dax_pmd_fault_done", "DAX PMD fault outcomes: huge, fallback (with cause), NEEDDSYNC"),
    Tracepoint("fs_dax", "dax_pte_fault_done", "DAX PTE (4 KiB) faults"),
    Tracepoint("fs_dax", "dax_load_hole", "DAX read faults on holes (4 KiB zero page), which block later PMD faults"),
    Tracepoint("fs_dax", "dax_pmd_load_hole", "DAX PMD-size read faults on holes"),
    Tracepoint("fs_dax", "dax_pmd_load_hole_fallback", "DAX PMD hole loads that fell back"),
    Tracepoint("fs_dax", "dax_insert_pfn_mkwrite", "completion of a MAP_SYNC write fault (NEEDDSYNC latency)"),
    Tracepoint("syscalls", "sys_enter_mmap", "mmap calls, MAP_SYNC requests"),
    Tracepoint("syscalls", "sys_exit_mmap", "mmap results (MAP_SYNC refusals)"),
    Tracepoint("syscalls", "sys_enter_munmap", "munmap calls"),
    Tracepoint("syscalls", "sys_enter_madvise", "madvise(HUGEPAGE/NOHUGEPAGE/COLLAPSE) calls"),
    Tracepoint("syscalls", "sys_enter_mincore", "mincore callers: calls and bytes queried"),
    Tracepoint("syscalls", "sys_exit_mincore", "mincore latency and resident fraction"),
    Tracepoint("huge_memory", "mm_collapse_huge_page", "khugepaged collapses"),
)


def release() -> str:
    return os.uname().release


def release_tuple(rel: Optional[str] = None) -> Tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", rel or release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def read_sysfs(path: str) -> Optional[str]:
    try:
        with open(path, errors="replace") as f:      # not UTF-8: text with U+FFFD, never UnicodeDecodeError
            return f.read().strip()
    except OSError:
        return None


def selected(choice_line: Optional[str]) -> Optional[str]:
    """'always [madvise] never' -> 'madvise'."""
    if choice_line is None:
        return None
    m = re.search(r"\[([^\]]+)\]", choice_line)
    return m.group(1) if m else choice_line


def size_dirs(root: str) -> List[Tuple[int, str]]:
    """(page size in bytes, path) of each hugepages-<N>kB directory under root, smallest first
    (the layout of both /sys/kernel/mm/hugepages and the mTHP sizes under transparent_hugepage)."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    out = []
    for name in names:
        m = re.fullmatch(r"hugepages-([0-9]+)kB", name)     # ASCII digits: int() would take "٣"
        if m:
            out.append((int(m.group(1)) * 1024, f"{root}/{name}"))
    return sorted(out)


def read_pmd_size(root: Optional[str] = None) -> int:
    """Bytes mapped by one PMD leaf: THP's hpage_pmd_size, else (no THP in this kernel)
    PAGE_SIZE * the PTEs of one page table (2 MiB with 4 KiB pages)."""
    value = read_sysfs(f"{root or THP_SYSFS}/hpage_pmd_size")
    if value and value.isascii() and value.isdigit():
        size = int(value)
        if size >= PAGE_SIZE and size & (size - 1) == 0:     # a page size is a power of two
            return size
    return PAGE_SIZE * (PAGE_SIZE // 8)


@lru_cache(maxsize=1)
def pmd_size() -> int:
    """read_pmd_size() of the running kernel, read once (it cannot change until a reboot)."""
    return read_pmd_size()


@dataclass(frozen=True)
class ThpPolicy:
    enabled: Optional[str]        # always / madvise / never (None: no THP in this kernel)
    defrag: Optional[str]
    shmem_enabled: Optional[str]
    mthp: Dict[int, str]          # folio size in bytes -> its own enabled setting (inherit/always/...)


def thp_policy(root: str = THP_SYSFS) -> ThpPolicy:
    mthp = {size: selected(read_sysfs(f"{path}/enabled")) or "?" for size, path in size_dirs(root)}
    return ThpPolicy(selected(read_sysfs(f"{root}/enabled")), selected(read_sysfs(f"{root}/defrag")),
                     selected(read_sysfs(f"{root}/shmem_enabled")), mthp)


@dataclass(frozen=True)
class HugetlbPool:
    page_size: int
    total: int
    free: int
    reserved: int
    surplus: int


def hugetlb_pools(root: str = HUGETLB_SYSFS) -> List[HugetlbPool]:
    def count(path, leaf):
        return int(read_sysfs(f"{path}/{leaf}") or 0)
    return [HugetlbPool(size, count(path, "nr_hugepages"), count(path, "free_hugepages"),
                        count(path, "resv_hugepages"), count(path, "surplus_hugepages"))
            for size, path in size_dirs(root)]


def parse_vmstat(text: str) -> Dict[str, int]:
    """/proc/vmstat: one 'name value' a line. A line that is not one (a future format) is left
    out rather than guessed at; callers read the counters they know by name."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key and value.isascii() and value.isdigit():
            out[key] = int(value)
    return out


def read_vmstat(path: str = "/proc/vmstat") -> Dict[str, int]:
    with open(path) as f:
        return parse_vmstat(f.read())


# ------------------------------------------------------------------ tracefs

def tracefs_root() -> Optional[str]:
    for root in TRACEFS_CANDIDATES:
        if os.path.isdir(f"{root}/events"):
            return root
    return None


def ensure_tracefs() -> str:
    """Mount tracefs at /sys/kernel/tracing when nothing has (a fresh boot often hasn't)."""
    root = tracefs_root()
    if root:
        return root
    result = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS_CANDIDATES[0]],
                            capture_output=True, text=True)
    root = tracefs_root()
    if root is None:
        why = (result.stderr.strip().splitlines() or ["mount -t tracefs failed"])[0]
        raise KernelFeatureMissing(f"tracefs is not available ({why}); pmemtrace needs it to attach tracepoints")
    return root


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str      # as the kernel declares it, e.g. "unsigned long", "vm_flags_t", "char comm[16]"
    offset: int
    size: int
    signed: bool

    @property
    def array_len(self) -> Optional[int]:
        m = re.search(r"\[(\d+)\]$", self.ctype)
        return int(m.group(1)) if m else None


FIELD_RE = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d)")


def parse_format(text: str) -> List[Field]:
    """Fields of a tracefs format file, common_* included, in offset order."""
    fields = []
    for m in FIELD_RE.finditer(text):
        decl = m.group("decl").strip()
        name_m = re.search(r"(\w+)(\[\d*\])?$", decl)
        if name_m is None:        # a declaration with no name: not a field pmemtrace can read
            continue
        name = name_m.group(1)
        fields.append(Field(name, decl, int(m.group("off")), int(m.group("size")), m.group("signed") == "1"))
    return sorted(fields, key=lambda f: f.offset)


def tracepoint_format(category: str, name: str, root: Optional[str] = None) -> Optional[List[Field]]:
    root = root or tracefs_root()
    if root is None:
        return None
    try:
        with open(f"{root}/events/{category}/{name}/format") as f:
            return parse_format(f.read())
    except OSError:
        return None


def tracepoint_exists(category: str, name: str, root: Optional[str] = None) -> bool:
    root = root or tracefs_root()
    return bool(root) and os.path.isdir(f"{root}/events/{category}/{name}")


SCALAR_TYPES = {(1, False): "u8", (1, True): "s8", (2, False): "u16", (2, True): "s16",
                (4, False): "u32", (4, True): "s32", (8, False): "u64", (8, True): "s64"}


def c_struct(struct_name: str, fields: List[Field]) -> str:
    """A C struct with the record's layout, using only fixed-width types.

    Kernel type names (vm_flags_t, dev_t, ...) are replaced by the integer of the same
    size and signedness, so the struct compiles against any kernel's headers. Gaps
    between fields become explicit padding; static asserts pin every offset.
    Natural alignment is kept (no packing) so the verifier sees aligned ctx loads."""
    lines = [f"struct {struct_name} {{"]
    pos = 0
    for f in fields:
        if f.offset > pos:
            lines.append(f"\tu8 __pad_{pos}[{f.offset - pos}];")
        if f.array_len is not None or (f.size, f.signed) not in SCALAR_TYPES:
            lines.append(f"\tu8 {f.name}[{f.size}];")
        else:
            lines.append(f"\t{SCALAR_TYPES[(f.size, f.signed)]} {f.name};")
        pos = f.offset + f.size
    lines.append("};")
    for f in fields:   # the compiler checks our layout against the kernel's
        lines.append(f'_Static_assert(__builtin_offsetof(struct {struct_name}, {f.name}) == {f.offset}, '
                     f'"{struct_name}.{f.name}");')
    return "\n".join(lines)
