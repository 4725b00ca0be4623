"""Readers of /proc/PID/pagemap words plus /proc/kpageflags by PFN: the fallback for kernels
without PAGEMAP_SCAN (what they cannot tell comes back as None), and DAX residency on any
kernel (RSS from the page tables; huge/small where it can be proven)."""
import os
from array import array
from dataclasses import dataclass, replace
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import KernelFeatureMissing, NotRoot
from ..kernel import PAGE_SIZE, pmd_size
from .uapi import (
    KPAGEFLAGS, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_HUGE, KPF_NOPAGE, KPF_THP, KPF_ZERO_PAGE, PM_FILE,
    PM_GUARD_REGION, PM_PFN_MASK, PM_PRESENT, PM_SOFT_DIRTY, PM_SWAP, PM_UFFD_WP, SOURCE_SCAN,
)
from .runs import PageRun, VmaFacts, facts_from_smaps, merge_runs, run_page_size
from .scanner import (
    PageMap, _pagemap, _pread_all, _vmas_in, _words, huge_small_many, scan_supported, soft_dirty_tracked,
)


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
