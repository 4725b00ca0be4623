"""Folio sizes per VMA: which folio (order-0 page, 64 KiB mTHP, 2 MiB THP, hugetlb page) backs
each resident byte, and how it is mapped (PMD leaf or PTEs, aligned, partially).

Method (cheaper than tools/mm/thpmaps, which reads the pagemap word and kpageflags of every page
of every VMA):

1. PAGEMAP_SCAN lists the present ranges of a VMA (the shared zero page left out) and says which are
   mapped by a PMD leaf (PAGE_IS_HUGE). A PMD leaf maps exactly one whole, aligned folio of PMD
   size (for hugetlb: one page of the VMA's hstate), so those ranges need no further reading.
2. Only the PTE-mapped present ranges are read from /proc/PID/pagemap (their PFNs), and only the
   PFNs found there are looked up in /proc/kpageflags, a PFN block at a time
   (``KPF_BLOCK`` PFNs, naturally aligned: a folio never crosses a PMD-aligned block, so finding
   its head and its tail count reads no further).

A page whose kpageflags has neither COMPOUND_HEAD nor COMPOUND_TAIL is an order-0 folio; otherwise
its folio is [head, head + nr) where head is the COMPOUND_HEAD at or below it and nr counts the
head and the COMPOUND_TAILs that follow. Per VMA:

  folio_bytes            {folio size: resident bytes of this VMA in folios of that size}
  pmd_mapped_bytes       bytes mapped by PMD leaves (THP, DAX PMD, 2 MiB hugetlb)
  pud_mapped_bytes       bytes mapped by PUD leaves (1 GiB hugetlb)
  pte_mapped_thp_bytes   bytes of large (order >= 1, non-hugetlb) folios mapped by PTEs
  unaligned_folio_bytes  bytes of PTE-mapped large folios mapped whole and contiguously in this VMA
                         at a virtual address not aligned to the folio size
  partial_folio_bytes    bytes of PTE-mapped large folios of which this VMA maps only a part (or
                         maps the parts out of order)
  cont_bytes             {block size: PTE-mapped bytes in naturally aligned virtual blocks of that
                         size backed by one folio at the same physical alignment} -- the blocks a
                         contiguous-PTE (arm64 contpte) or coalescing TLB could map with one entry

What cannot be known is None, never guessed: without /proc/kpageflags (not root, kernel without
CONFIG_PROC_PAGE_MONITOR), with PFNs hidden (pagemap read without CAP_SYS_ADMIN), for memory
without a struct page (KPF_NOPAGE: DAX, PFN maps), and on kernels without PAGEMAP_SCAN. PMD/PUD
mapped bytes come from PAGEMAP_SCAN alone and stay known when kpageflags is not readable.

``classify_ptes`` and ``classify_vma`` are pure (fixtures in tests/fixtures/folios-6.18);
``read_process`` is the one place that reads a process.
"""
import bisect
import os
from array import array
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import pagemap, procfs
from .kernel import PAGE_SIZE, pmd_size
from .errors import KernelThread, NoSuchProcess, NotRoot, ProcessExited

# PFNs per kpageflags read: 512 (4 KiB), one PMD's worth of 4 KiB pages. The kernel computes every
# word read: 60,000 scattered order-0 pages took 0.31 s with 4096-PFN blocks, 0.24 s with these.
KPF_BLOCK_SHIFT = 9
KPF_BLOCK = 1 << KPF_BLOCK_SHIFT
_COMPOUND = pagemap.KPF_COMPOUND_HEAD | pagemap.KPF_COMPOUND_TAIL
_ODD = _COMPOUND | pagemap.KPF_NOPAGE
MAX_FOLIO_PAGES = 1 << 18            # a head search never walks further (1 GiB of 4 KiB pages)

SOURCE = "PAGEMAP_SCAN+kpageflags"
KEYS = ("folio_bytes", "pmd_mapped_bytes", "pud_mapped_bytes", "pte_mapped_thp_bytes",
        "unaligned_folio_bytes", "partial_folio_bytes", "cont_bytes")


@dataclass(slots=True)
class FolioStats:
    """One VMA's (or a sum's) folio facts; None = unknown. Dict keys are sizes in bytes."""
    folio_bytes: Optional[Dict[int, int]] = field(default_factory=dict)
    pmd_mapped_bytes: Optional[int] = 0
    pud_mapped_bytes: Optional[int] = 0
    pte_mapped_thp_bytes: Optional[int] = 0
    unaligned_folio_bytes: Optional[int] = 0
    partial_folio_bytes: Optional[int] = 0
    cont_bytes: Optional[Dict[int, int]] = field(default_factory=dict)

    def forget_ptes(self) -> None:
        """The PTE-mapped part cannot be classified: everything but PMD/PUD leaves is unknown."""
        self.folio_bytes = self.pte_mapped_thp_bytes = None
        self.unaligned_folio_bytes = self.partial_folio_bytes = self.cont_bytes = None

    def as_json(self) -> dict:
        def sizes(d):
            return None if d is None else {str(k): v for k, v in sorted(d.items())}
        return {"folio_bytes": sizes(self.folio_bytes), "pmd_mapped_bytes": self.pmd_mapped_bytes,
                "pud_mapped_bytes": self.pud_mapped_bytes, "pte_mapped_thp_bytes": self.pte_mapped_thp_bytes,
                "unaligned_folio_bytes": self.unaligned_folio_bytes,
                "partial_folio_bytes": self.partial_folio_bytes, "cont_bytes": sizes(self.cont_bytes)}


def unknown() -> FolioStats:
    s = FolioStats(pmd_mapped_bytes=None, pud_mapped_bytes=None)
    s.forget_ptes()
    return s


def _add_dict(a: Optional[Dict[int, int]], b: Optional[Dict[int, int]]) -> Optional[Dict[int, int]]:
    if a is None or b is None:
        return None
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def add(a: FolioStats, b: FolioStats) -> FolioStats:
    """The sum; a key unknown in either is unknown in the sum."""
    def plus(x, y):
        return None if x is None or y is None else x + y
    return FolioStats(_add_dict(a.folio_bytes, b.folio_bytes), plus(a.pmd_mapped_bytes, b.pmd_mapped_bytes),
                      plus(a.pud_mapped_bytes, b.pud_mapped_bytes),
                      plus(a.pte_mapped_thp_bytes, b.pte_mapped_thp_bytes),
                      plus(a.unaligned_folio_bytes, b.unaligned_folio_bytes),
                      plus(a.partial_folio_bytes, b.partial_folio_bytes), _add_dict(a.cont_bytes, b.cont_bytes))


def total(stats: Iterable[Optional[FolioStats]]) -> Tuple[FolioStats, int]:
    """(sum of the known, number of entries that were wholly or partly unknown).
    One pass, no object per entry: report sums tens of thousands of VMAs."""
    folio: Dict[int, int] = {}
    cont: Dict[int, int] = {}
    pmd = pud = pte = unaligned = partial = 0
    unknown_n = 0
    for s in stats:
        if s is None:
            continue
        fb, cb = s.folio_bytes, s.cont_bytes
        a, b, c, d, e = (s.pmd_mapped_bytes, s.pud_mapped_bytes, s.pte_mapped_thp_bytes,
                         s.unaligned_folio_bytes, s.partial_folio_bytes)
        if fb is None or cb is None or a is None or b is None or c is None or d is None or e is None:
            unknown_n += 1
        if fb:
            for k, v in fb.items():
                folio[k] = folio.get(k, 0) + v
        if cb:
            for k, v in cb.items():
                cont[k] = cont.get(k, 0) + v
        pmd += a or 0
        pud += b or 0
        pte += c or 0
        unaligned += d or 0
        partial += e or 0
    return FolioStats(folio, pmd, pud, pte, unaligned, partial, cont), unknown_n


# ---------------------------------------------------------------- kpageflags, a block at a time

class KpageFlags:
    """Flags of any PFN, read from /proc/kpageflags (or given, for tests) in aligned blocks."""

    def __init__(self, read_block: Callable[[int], Sequence[int]]):
        self.read_block = read_block          # block number -> KPF_BLOCK flag words (short at the end)
        self.blocks: Dict[int, Sequence[int]] = {}
        self.reads = 0
        self.fd = -1

    def block(self, n: int) -> Sequence[int]:
        b = self.blocks.get(n)
        if b is None:
            b = self.blocks[n] = self.read_block(n)
            self.reads += 1
        return b

    def get(self, pfn: int) -> int:
        b = self.blocks.get(pfn >> KPF_BLOCK_SHIFT)
        if b is None:
            b = self.block(pfn >> KPF_BLOCK_SHIFT)
        i = pfn & (KPF_BLOCK - 1)
        return b[i] if i < len(b) else pagemap.KPF_NOPAGE

    @classmethod
    def from_dict(cls, flags: Dict[int, int]) -> "KpageFlags":
        """Tests: PFNs not in ``flags`` read as KPF_NOPAGE (no page there)."""
        def read(n: int) -> List[int]:
            base = n << KPF_BLOCK_SHIFT
            return [flags.get(base + i, pagemap.KPF_NOPAGE) for i in range(KPF_BLOCK)]
        return cls(read)

    @classmethod
    def open(cls) -> Optional["KpageFlags"]:
        """The system's /proc/kpageflags, or None where it cannot be read."""
        try:
            fd = os.open(pagemap.KPAGEFLAGS, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

        def read(n: int) -> Sequence[int]:
            try:
                data = os.pread(fd, KPF_BLOCK * 8, (n << KPF_BLOCK_SHIFT) * 8)
            except OSError:
                return ()
            words = array("Q")
            words.frombytes(data[: len(data) // 8 * 8])
            return words
        kf = cls(read)
        kf.fd = fd
        return kf

    def close(self) -> None:
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            os.close(fd)
            self.fd = -1


def folio_of(pfn: int, flags: KpageFlags) -> Optional[Tuple[int, int]]:
    """(head PFN, pages) of the large folio holding ``pfn``; None if its head cannot be found.

    Folios are naturally aligned powers of two and their tails follow the head without a gap, so
    the head is the first COMPOUND_HEAD among pfn aligned down to 1, 2, 4, ... pages, and the size
    is the first power of two 2^m past pfn at which head + 2^m is no tail: O(log size) reads."""
    head = -1
    size = 1
    while size <= MAX_FOLIO_PAGES:
        h = pfn & ~(size - 1)
        f = flags.get(h)
        if f & pagemap.KPF_NOPAGE:
            return None
        if f & pagemap.KPF_COMPOUND_HEAD:
            head = h
            break
        if not f & pagemap.KPF_COMPOUND_TAIL:
            return None
        size <<= 1
    if head < 0:
        return None
    n = 1
    while n <= pfn - head:
        n <<= 1
    while n < MAX_FOLIO_PAGES and flags.get(head + n) & pagemap.KPF_COMPOUND_TAIL:
        n <<= 1
    return head, n


# ---------------------------------------------------------------- classification (pure)

@dataclass(slots=True)
class _Folio:
    pages: int
    hugetlb: bool
    mapped: int = 0
    runs: List[List[int]] = field(default_factory=list)     # [vfn, pfn, length]


def cont_blocks(vfn: int, pfn: int, length: int, max_pages: int) -> Dict[int, int]:
    """{block pages: pages} of one virtually and physically contiguous run inside one folio:
    the pages in naturally aligned virtual blocks whose physical alignment matches."""
    out = {}
    b = 2
    while b <= max_pages:
        if (vfn - pfn) % b == 0:
            first = -(-vfn // b) * b
            last = (vfn + length) // b * b
            if last > first:
                out[b] = last - first
        b <<= 1
    return out


def classify_ptes(pieces: Iterable[Tuple[int, Sequence[int]]], flags: KpageFlags) -> Optional[FolioStats]:
    """PTE-mapped present pages of one VMA -> their folio facts (PMD keys 0), or None if unknown.

    ``pieces``: (start address, pagemap words of the pages from there on). A word without
    PM_PRESENT (the page went away since PAGEMAP_SCAN) is skipped; a PFN of 0 (PFNs hidden) or a
    page without struct page makes the whole answer unknown.
    """
    order0 = 0
    folios: Dict[int, _Folio] = {}
    cur_head = cur_end = -1
    cur: Optional[_Folio] = None
    get, pfn_mask, present = flags.get, pagemap.PM_PFN_MASK, pagemap.PM_PRESENT
    for start, words in pieces:
        vfn = start // PAGE_SIZE - 1
        i = -1
        skip = 0
        for w in words:
            vfn += 1
            i += 1
            if skip:                 # pages already counted by the whole-run check below
                skip -= 1
                continue
            if not w & present:
                continue
            p = w & pfn_mask
            if cur_head <= p < cur_end:
                pass
            else:
                f = get(p)
                if not f & _ODD:
                    if p == 0:
                        return None
                    order0 += 1
                    continue
                if f & pagemap.KPF_NOPAGE:
                    return None
                found = folio_of(p, flags)
                if found is None:
                    return None
                cur_head, n = found
                cur_end = cur_head + n
                cur = folios.get(cur_head)
                if cur is None:
                    cur = folios[cur_head] = _Folio(n, bool(f & pagemap.KPF_HUGE))   # every page of it says
            assert cur is not None
            # the rest of the folio mapped in order by the next words (same flag bits): one C-level compare
            r = min(cur_end - p, len(words) - i)
            if r < 2 or words[i:i + r] != array("Q", range(w, w + r)):
                r = 1
            skip = r - 1
            cur.mapped += r
            runs = cur.runs
            if runs and runs[-1][0] + runs[-1][2] == vfn and runs[-1][1] + runs[-1][2] == p:
                runs[-1][2] += r
            else:
                runs.append([vfn, p, r])
    out = FolioStats(folio_bytes={PAGE_SIZE: order0 * PAGE_SIZE} if order0 else {})
    assert out.folio_bytes is not None and out.cont_bytes is not None
    pte_thp = unaligned = partial = 0
    for fo in folios.values():
        size = fo.pages * PAGE_SIZE
        out.folio_bytes[size] = out.folio_bytes.get(size, 0) + fo.mapped * PAGE_SIZE
        if not fo.hugetlb:
            pte_thp += fo.mapped
        whole = fo.mapped == fo.pages and len(fo.runs) == 1
        if not whole:
            partial += fo.mapped
        elif fo.runs[0][0] % fo.pages:
            unaligned += fo.pages
        for vfn, pfn, length in fo.runs:
            for b, n in cont_blocks(vfn, pfn, length, fo.pages).items():
                out.cont_bytes[b * PAGE_SIZE] = out.cont_bytes.get(b * PAGE_SIZE, 0) + n * PAGE_SIZE
    out.pte_mapped_thp_bytes = pte_thp * PAGE_SIZE
    out.unaligned_folio_bytes = unaligned * PAGE_SIZE
    out.partial_folio_bytes = partial * PAGE_SIZE
    return out


def classify_vma(regions: Iterable[Tuple[int, int, int]], leaf_size: int,
                 ptes: Optional[FolioStats]) -> FolioStats:
    """A VMA's facts from its present PAGEMAP_SCAN regions and its PTE-mapped classification.

    ``leaf_size``: bytes one PAGE_IS_HUGE entry maps here (the hstate size for hugetlb, else PMD).
    ``ptes`` None: the PTE-mapped part is unknown (PMD / PUD leaves stay known).
    """
    huge = sum(e - s for s, e, cat in regions if cat & pagemap.PAGE_IS_HUGE)
    out = FolioStats() if ptes is None else ptes        # classify_ptes' answer is ours to fill in
    if ptes is None:
        out.forget_ptes()
    elif huge:
        assert out.folio_bytes is not None
        out.folio_bytes[leaf_size] = out.folio_bytes.get(leaf_size, 0) + huge
    out.pmd_mapped_bytes, out.pud_mapped_bytes = (0, huge) if leaf_size > pmd_size() else (huge, 0)
    return out


# ---------------------------------------------------------------- reading a process

@dataclass(frozen=True, slots=True)
class VmaSpec:
    start: int
    end: int
    leaf_size: int = 0          # 0: the PMD size; hugetlb: its page size
    skip: bool = False          # outside the user address space ([vsyscall]): nothing to read


PRESENT_NOT_ZERO = dict(category_mask=pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_PFNZERO,
                        category_inverted=pagemap.PAGE_IS_PFNZERO)


@dataclass
class ProcessFolios:
    """``vmas``: (spec, facts) per VMA; facts may be one object shared by several VMAs: read only."""
    pid: int
    vmas: List[Tuple[VmaSpec, Optional[FolioStats]]]
    notes: List[str]
    pages_read: int = 0          # pagemap words read (PTE-mapped present pages only)
    kpageflags_reads: int = 0


def unavailable_reason(kflags: Optional[KpageFlags]) -> Optional[str]:
    if not pagemap.scan_supported():
        return "folio sizes need PAGEMAP_SCAN (Linux 6.7+): unknown here"
    if kflags is None:
        return (f"{pagemap.KPAGEFLAGS} cannot be read (needs root and CONFIG_PROC_PAGE_MONITOR): "
                f"folio sizes of PTE-mapped memory are unknown")
    return None


def read_process(pid: int, specs: Sequence[VmaSpec], kflags: Optional[KpageFlags] = None) -> ProcessFolios:
    """Folio facts of every VMA in ``specs``; the caller may share one KpageFlags across processes
    (pass it; it is not closed here). Raises NoSuchProcess / ProcessExited / NotRoot."""
    own = kflags is None
    if own:
        kflags = KpageFlags.open()
    try:
        return _read(pid, specs, kflags)
    finally:
        if own and kflags is not None:
            kflags.close()


def _read(pid: int, specs: Sequence[VmaSpec], kflags: Optional[KpageFlags]) -> ProcessFolios:
    why = unavailable_reason(kflags)
    out = ProcessFolios(pid, [], [why] if why else [])
    if not pagemap.scan_supported():
        out.vmas = [(s, None if s.skip else unknown()) for s in specs]
        return out
    if kflags is not None:
        kflags.blocks.clear()        # flags change as memory is reused: never carry them across reads
    mask = (pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_HUGE) & pagemap.supported_categories()
    order0: Dict[int, FolioStats] = {}
    with pagemap.PageMap(pid) as pm:
        regions_of = regions_per_vma(pm, specs, mask)
        words = PagemapWords(pm, sorted((s, e) for rs in regions_of for s, e, cat in rs
                                        if not cat & pagemap.PAGE_IS_HUGE))
        for spec, regions in zip(specs, regions_of):
            if spec.skip:
                out.vmas.append((spec, None))
                continue
            if kflags is not None:
                small = _order0_only(regions, words, kflags)
                if small is not None:       # the common case: no large folio, no PMD leaf
                    out.pages_read += small
                    st = order0.get(small)      # shared by the VMAs with as many pages: read only
                    if st is None:
                        st = order0[small] = FolioStats({PAGE_SIZE: small * PAGE_SIZE} if small else {},
                                                        0, 0, 0, 0, 0, {})
                    out.vmas.append((spec, st))
                    continue
            ptes: Optional[FolioStats] = None
            if kflags is not None and _leaves_have_pages(pm, regions, kflags):
                pieces = [(s, words.get(s, e)) for s, e, cat in regions if not cat & pagemap.PAGE_IS_HUGE]
                out.pages_read += sum(len(w) for _, w in pieces)
                ptes = classify_ptes(pieces, kflags)
            out.vmas.append((spec, classify_vma(regions, spec.leaf_size or pmd_size(), ptes)))
        pm.check_alive()
    if kflags is not None:
        out.kpageflags_reads = kflags.reads
    if any(s is not None and s.folio_bytes is None for _, s in out.vmas) and not why:
        out.notes.append("some VMAs map memory without struct pages (DAX, PFN maps) or hide PFNs: "
                         "their folio sizes are unknown")
    return out


def _order0_only(regions: Iterable[Tuple[int, int, int]], words: "PagemapWords", flags: KpageFlags) -> Optional[int]:
    """Present pages of a VMA's present regions if none is a PMD/PUD leaf and every page is an
    order-0 folio with a struct page (classify_ptes' answer is then just {4K: pages}); None if
    not: ask classify_ptes."""
    get, pfn_mask, present, huge = flags.get, pagemap.PM_PFN_MASK, pagemap.PM_PRESENT, pagemap.PAGE_IS_HUGE
    n = 0
    for s, e, cat in regions:
        if cat & huge:
            return None
        for w in words.get(s, e):
            if not w & present:
                continue
            p = w & pfn_mask
            if not p or get(p) & _ODD:
                return None
            n += 1
    return n


class PagemapWords:
    """pagemap words of many small ranges, read in few preads: ranges less than ``gap`` apart
    share one read (pagemap reads the hole between as zeros, cheaply), up to ``span`` bytes of
    address space per read."""

    def __init__(self, pm: pagemap.PageMap, ranges: Sequence[Tuple[int, int]],
                 gap: int = 256 << 10, span: int = 256 << 20):
        self.pm = pm
        self.spans: List[Tuple[int, int]] = []
        for s, e in ranges:
            if self.spans and s - self.spans[-1][1] <= gap and e - self.spans[-1][0] <= span:
                self.spans[-1] = (self.spans[-1][0], max(e, self.spans[-1][1]))
            else:
                self.spans.append((s, e))
        self.starts = [s for s, _e in self.spans]
        self.cache: Dict[int, Sequence[int]] = {}

    def get(self, start: int, end: int) -> Sequence[int]:
        i = bisect.bisect_right(self.starts, start) - 1
        if i < 0 or end > self.spans[i][1]:
            return self.pm.words(start, end)
        lo = self.spans[i][0]
        words = self.cache.get(lo)
        if words is None:
            self.cache.clear()               # spans are asked for in order: keep one
            words = self.cache[lo] = self.pm.words(lo, self.spans[i][1])
        first = (start - lo) // PAGE_SIZE
        return words[first:first + (end - start) // PAGE_SIZE]


def split_regions(regions: Sequence[Tuple[int, int, int]], ranges: Sequence[Tuple[int, int]]
                  ) -> List[List[Tuple[int, int, int]]]:
    """Regions of one scan over many VMAs -> each range's regions, clipped to it (the kernel merges
    equal neighbours across VMA boundaries). Both inputs sorted by address, ranges disjoint."""
    out: List[List[Tuple[int, int, int]]] = []
    i = 0
    for lo, hi in ranges:
        while i < len(regions) and regions[i][1] <= lo:
            i += 1
        mine, j = [], i
        while j < len(regions) and regions[j][0] < hi:
            s, e, cat = regions[j]
            mine.append((max(s, lo), min(e, hi), cat))
            j += 1
        out.append(mine)
    return out


def regions_per_vma(pm: pagemap.PageMap, specs: Sequence[VmaSpec], mask: int) -> List[List[Tuple[int, int, int]]]:
    """Present (not zero-page) PAGEMAP_SCAN regions of each VMA: one scan over all of them (the walk
    skips the gaps between VMAs), not one per VMA -- processes have tens of thousands."""
    walk = sorted((s.start, s.end) for s in specs if not s.skip)
    if not walk:
        return [[] for _ in specs]
    regions = pm.regions(walk[0][0], walk[-1][1], return_mask=mask, **PRESENT_NOT_ZERO)
    by_range = dict(zip(walk, split_regions(regions, walk)))
    return [by_range.get((s.start, s.end), []) for s in specs]


def _leaves_have_pages(pm: pagemap.PageMap, regions: Sequence[Tuple[int, int, int]], kflags: KpageFlags) -> bool:
    """Do the PMD/PUD-mapped regions map struct pages (folios)? DAX memory has none on most
    kernels (kpageflags says KPF_NOPAGE): its leaves are then no folio of any size. One pagemap
    word and one kpageflags word per region."""
    for s, _e, cat in regions:
        if cat & pagemap.PAGE_IS_HUGE:
            words = pm.words(s, s + PAGE_SIZE)
            pfn = words[0] & pagemap.PM_PFN_MASK if words and words[0] & pagemap.PM_PRESENT else 0
            if not pfn or kflags.get(pfn) & pagemap.KPF_NOPAGE:
                return False
    return True


def specs_from_maps(pid: int) -> List[VmaSpec]:
    """The VMAs of pid from /proc/PID/maps; smaps is read only when the process has hugetlb
    pages (status HugetlbPages), for their page size (KernelPageSize)."""
    try:
        hugetlb_kb = int(procfs.read_status(pid).get("HugetlbPages", "0 kB").split()[0])
    except (ValueError, IndexError):
        hugetlb_kb = 0
    if hugetlb_kb:
        return [VmaSpec(b.map.start, b.map.end,
                        b.get("KernelPageSize") if "ht" in b.vmflags else 0, _outside(b.map))
                for b in procfs.read_smaps(pid)]
    return [VmaSpec(m.start, m.end, 0, _outside(m)) for m in procfs.read_maps(pid)]


def _outside(m: procfs.MapEntry) -> bool:
    return m.path == "[vsyscall]"


def cgroup_pids(path: str) -> List[int]:
    """Every pid in the cgroup (v2 or a v1 hierarchy) at ``path`` and its descendants."""
    if not os.path.isdir(path):
        raise NoSuchProcess(f"no such cgroup directory: {path}")
    pids: set = set()
    for d, _dirs, files in os.walk(path):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids.update(int(x) for x in f.read().split())
            except OSError:
                continue
    return sorted(pids)


def read_pids(pids: Iterable[int], kflags: Optional[KpageFlags]) -> Tuple[List[Tuple[int, str, ProcessFolios]], int, int]:
    """(folio facts of each process, processes that exited meanwhile, processes whose memory may not
    be read). Kernel threads are left out."""
    done, gone, denied = [], 0, 0
    for pid in pids:
        try:
            if procfs.is_kernel_thread(pid):
                continue
            comm = procfs.check_pid(pid)
            done.append((pid, comm, read_process(pid, specs_from_maps(pid), kflags)))
        except (NoSuchProcess, ProcessExited, KernelThread):
            gone += 1
        except NotRoot:
            denied += 1
    return done, gone, denied
