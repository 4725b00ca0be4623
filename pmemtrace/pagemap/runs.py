"""Runs of pages in the same state (PageRun) and their classification from PAGEMAP_SCAN
categories and what is known of the VMA (VmaFacts, facts_from_smaps)."""
from dataclasses import dataclass, replace
from typing import Iterable, List, Optional, Tuple

from .. import backing, procfs
from ..kernel import PAGE_SIZE, pmd_size
from .uapi import (
    PAGE_IS_FILE, PAGE_IS_GUARD, PAGE_IS_HUGE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SOFT_DIRTY,
    PAGE_IS_SWAPPED, PAGE_IS_WRITTEN,
)


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
