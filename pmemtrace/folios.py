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
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import pagemap
from .kernel import PAGE_SIZE, pmd_size

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
    Each distinct object is added once, times the entries that are it: read_process shares one
    object between the VMAs with equal facts (tens of thousands of VMAs, a few distinct facts)."""
    folio: Dict[int, int] = {}
    cont: Dict[int, int] = {}
    pmd = pud = pte = unaligned = partial = 0
    unknown_n = 0
    known = [s for s in stats if s is not None]       # alive while counted: their ids stay unique
    by_id = {id(s): s for s in known}
    for key, n in Counter(map(id, known)).items():
        s = by_id[key]
        fb, cb = s.folio_bytes, s.cont_bytes
        a, b, c, d, e = (s.pmd_mapped_bytes, s.pud_mapped_bytes, s.pte_mapped_thp_bytes,
                         s.unaligned_folio_bytes, s.partial_folio_bytes)
        if fb is None or cb is None or a is None or b is None or c is None or d is None or e is None:
            unknown_n += n
        if fb:
            for k, v in fb.items():
                folio[k] = folio.get(k, 0) + v * n
        if cb:
            for k, v in cb.items():
                cont[k] = cont.get(k, 0) + v * n
        pmd += (a or 0) * n
        pud += (b or 0) * n
        pte += (c or 0) * n
        unaligned += (d or 0) * n
        partial += (e or 0) * n
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
