"""What backs a VMA, from its maps line, VmFlags and the mapped file's facts (pure).

One source for report's BACKING column, top's per-VMA rows and the page kind `pages` gives
each run (pagemap.facts_from_smaps): they cannot disagree about what a mapping is."""
from dataclasses import dataclass
from typing import Optional

from .procfs import MapEntry

TMPFS_MAGIC = 0x01021994
HUGETLBFS_MAGIC = 0x958458F6
SPECIAL_NAMES = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]", "[sigpage]", "[vectors]")
# shmem by name when the file system cannot be asked: memfd, SysV, shared /dev/zero, named shared anon
SHMEM_PATHS = ("/memfd:", "/SYSV", "/dev/zero", "[anon_shmem")

BACKINGS = ("anon", "heap", "stack", "file", "shmem", "hugetlb", "device-dax", "special")


@dataclass(frozen=True)
class FileFacts:
    dax: str = "none"         # fsdax / devdax / none
    fs_magic: Optional[int] = None


def classify_backing(m: MapEntry, vmflags: frozenset, facts: FileFacts) -> str:
    """One of BACKINGS."""
    if "ht" in vmflags:
        return "hugetlb"
    if facts.dax == "devdax":
        return "device-dax"
    if m.path == "[heap]":
        return "heap"
    if m.path.startswith("[stack"):
        return "stack"
    if m.path in SPECIAL_NAMES or "pf" in vmflags or "io" in vmflags:
        return "special"
    if m.inode == 0:
        return "shmem" if m.shared else "anon"
    if m.path == "/dev/zero" and not m.shared:
        return "anon"       # MAP_PRIVATE of /dev/zero: mmap_zero() makes the VMA anonymous (keeps the file)
    if facts.fs_magic == TMPFS_MAGIC or m.path.startswith(SHMEM_PATHS):
        return "shmem"
    return "file"


def page_kind(backing: str, m: MapEntry, dax: bool) -> str:
    """The kind of page a VMA of this backing holds: anon | file | shmem | dax | hugetlb."""
    if backing == "hugetlb":
        return "hugetlb"
    if dax or backing == "device-dax":
        return "dax"
    if backing in ("file", "shmem"):
        return backing
    if backing == "special":            # [vdso] and friends, or a PFN map of a device file
        return "file" if m.path.startswith("/") and m.inode else "anon"
    return "anon"                       # anon, heap, stack
