"""Reading folio facts of processes: PAGEMAP_SCAN for the present ranges of each VMA, pagemap
words and /proc/kpageflags only where PTE-mapped pages need them, by pid, cgroup or the whole
system. The classification itself (pure) is pmemtrace.folios.
"""
import bisect
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from . import forked, pagemap, procfs
from .kernel import PAGE_SIZE, pmd_size
from .errors import KernelThread, NoSuchProcess, NotRoot, PmemtraceError, ProcessExited

from .folios import KPF_BLOCK, KPF_BLOCK_SHIFT, FolioStats, KpageFlags, _ODD, classify_ptes, classify_vma, unknown


# ---------------------------------------------------------------- reading a process

class VmaSpec(NamedTuple):
    """A VMA to read (a tuple: report builds one per VMA, tens of thousands)."""
    start: int
    end: int
    leaf_size: int = 0          # 0: the PMD size; hugetlb: its page size
    skip: bool = False          # outside the user address space ([vsyscall]): nothing to read


def spec(start: int, end: int, path: str) -> VmaSpec:
    """The VMA [start, end) mapping ``path``, to read with the PMD leaf size ([vsyscall]: skipped)."""
    return _new_tuple(VmaSpec, (start, end, 0, path == "[vsyscall]"))


_new_tuple = tuple.__new__          # a VmaSpec without NamedTuple's Python-level __new__: one per VMA


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


def read_process(pid: int, specs: Sequence[VmaSpec], kflags: Optional[KpageFlags] = None,
                 regions: Optional[Sequence[Tuple[int, int, int]]] = None,
                 odd: Optional["OddPages"] = None) -> ProcessFolios:
    """Folio facts of every VMA in ``specs``; the caller may share one KpageFlags across processes
    (pass it; it is not closed here). ``regions``: the present, not zero-page PAGEMAP_SCAN regions
    (return mask PRESENT|HUGE, sorted) over all of ``specs`` when the caller already scanned them
    (vmas.describe_process keeps its scan): not scanned again then; ``odd``: their odd pages,
    read with them (prefetch).
    Raises NoSuchProcess / ProcessExited / NotRoot."""
    own = kflags is None
    if own:
        kflags = KpageFlags.open()
    try:
        return _read(pid, specs, kflags, regions, odd if regions is not None else None)
    finally:
        if own and kflags is not None:
            kflags.close()


def _read(pid: int, specs: Sequence[VmaSpec], kflags: Optional[KpageFlags],
          regions: Optional[Sequence[Tuple[int, int, int]]], odd: Optional["OddPages"]) -> ProcessFolios:
    why = unavailable_reason(kflags)
    out = ProcessFolios(pid, [], [why] if why else [])
    if not pagemap.scan_supported():
        out.vmas = [(s, None if s.skip else unknown()) for s in specs]
        return out
    if kflags is not None:
        kflags.blocks.clear()        # flags change as memory is reused: never carry them across reads
    order0: Dict[int, FolioStats] = {}
    with pagemap.PageMap(pid) as pm:
        walk = [(s.start, s.end) for s in specs if not s.skip]
        if regions is None:
            regions = scan_present(pm, walk)
        words = PagemapWords(pm, [(s, e) for s, e, cat in regions if not cat & pagemap.PAGE_IS_HUGE])
        # the common case, settled for all VMAs at once: no PMD leaf, every present page an order-0 folio
        if odd is None and kflags is not None:
            odd = odd_pages(regions, words, kflags)
        elif kflags is None:
            odd = None
        # (huge, small) bytes of each VMA of walk, in its order; None: read each VMA the long way
        huge_small = iter(pagemap.split_huge_small(regions, walk)) \
            if odd is not None and pagemap._sorted_disjoint(walk) else None
        no_odd = odd is not None and not odd.starts
        clip = RegionClipper(regions)
        for spec in specs:
            if spec.skip:
                out.vmas.append((spec, None))
                continue
            hs = next(huge_small) if huge_small is not None else None
            if hs is not None and not hs[0] and (no_odd or (odd is not None and not odd.touches(spec.start, spec.end))):
                small = hs[1] // PAGE_SIZE
                out.pages_read += small
                st = order0.get(small)      # shared by the VMAs with as many pages: read only
                if st is None:
                    st = order0[small] = FolioStats({PAGE_SIZE: small * PAGE_SIZE} if small else {},
                                                    0, 0, 0, 0, 0, {})
                out.vmas.append((spec, st))
                continue
            mine = clip(spec.start, spec.end)
            ptes: Optional[FolioStats] = None
            if kflags is not None and _leaves_have_pages(pm, mine, kflags):
                pieces = [(s, words.get(s, e)) for s, e, cat in mine if not cat & pagemap.PAGE_IS_HUGE]
                out.pages_read += sum(len(w) for _, w in pieces)
                ptes = classify_ptes(pieces, kflags)
            out.vmas.append((spec, classify_vma(mine, spec.leaf_size or pmd_size(), ptes)))
        pm.check_alive()
    if kflags is not None:
        out.kpageflags_reads = kflags.reads
    if any(s is not None and s.folio_bytes is None for _, s in out.vmas) and not why:
        out.notes.append("some VMAs map memory without struct pages (DAX, PFN maps) or hide PFNs: "
                         "their folio sizes are unknown")
    return out


USER_TOP = (1 << 47) - PAGE_SIZE
"""The top of the user address space with 4-level page tables: what prefetch scans. A VMA above
it (5-level paging, mapped there on request) makes describe_process scan for itself."""
PREFETCH_RSS = 32 << 20
"""A process with less resident memory than this reads its odd pages in well under 0.02 s: no fork."""


class Prefetched(NamedTuple):
    """What prefetch read: the present, not zero-page PAGEMAP_SCAN regions (PRESENT|HUGE) of
    [0, top) and the odd pages among them."""
    top: int
    regions: List[Tuple[int, int, int]]
    odd: "OddPages"


def prefetch(pid: int, min_rss: int = PREFETCH_RSS) -> Optional[Callable[[], Optional[Prefetched]]]:
    """Start reading, in a forked child on another CPU, what `report --json` of a big process
    otherwise reads after parsing its smaps: the PAGEMAP_SCAN regions of pid's whole user address
    space and their odd pages (a pagemap word and kpageflags of every PTE-mapped present page,
    most of the folio pass's time). The function returned waits for them (None: read them as
    usual); no function when this process may run on one CPU only or pid has little resident
    memory (nothing to gain)."""
    def read() -> Optional[Prefetched]:
        kflags = KpageFlags.open()
        if kflags is None:
            return None
        try:
            with pagemap.PageMap(pid) as pm:
                regions = scan_present(pm, [(0, USER_TOP)])
                words = PagemapWords(pm, [(s, e) for s, e, cat in regions if not cat & pagemap.PAGE_IS_HUGE])
                return Prefetched(USER_TOP, regions, odd_pages(regions, words, kflags))
        finally:
            kflags.close()
    try:
        rss_kb = int(procfs.read_status(pid).get("VmRSS", "0 kB").split()[0])
    except (ValueError, IndexError, OSError, PmemtraceError):     # describe_process says what is wrong
        rss_kb = 0
    if len(os.sched_getaffinity(0)) < 2 or rss_kb << 10 < min_rss or not pagemap.scan_supported():
        return None
    return forked.start(read)


def scan_present(pm: pagemap.PageMap, walk: Sequence[Tuple[int, int]]) -> List[Tuple[int, int, int]]:
    """Present (not zero-page) PAGEMAP_SCAN regions, PRESENT|HUGE, over all of ``walk``: one scan
    from the lowest start to the highest end (the walk skips the gaps between VMAs), not one per
    VMA -- processes have tens of thousands."""
    if not walk:
        return []
    mask = (pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_HUGE) & pagemap.supported_categories()
    return pm.regions(min(s for s, _e in walk), max(e for _s, e in walk), return_mask=mask, **PRESENT_NOT_ZERO)


class OddPages:
    """Sorted, disjoint address ranges of PTE-mapped pages that are not a present order-0 folio
    with a struct page (a large folio, no struct page, a hidden PFN, gone since the scan)."""
    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: List[int] = []
        self.ends: List[int] = []

    def add(self, start: int, end: int) -> None:
        if self.ends and self.ends[-1] == start:
            self.ends[-1] = end
        else:
            self.starts.append(start)
            self.ends.append(end)

    def touches(self, start: int, end: int) -> bool:
        if not self.starts:
            return False
        i = bisect.bisect_right(self.ends, start)
        return i < len(self.starts) and self.starts[i] < end


def odd_pages(regions: Iterable[Tuple[int, int, int]], words: "PagemapWords", flags: KpageFlags) -> OddPages:
    """The pages of the PTE-mapped present ``regions`` that classify_ptes must look at: a VMA
    with none of them and no PMD/PUD leaf holds order-0 folios only ({4K: its present bytes})."""
    pfn_mask, present, huge = pagemap.PM_PFN_MASK, pagemap.PM_PRESENT, pagemap.PAGE_IS_HUGE
    cached, read, last = flags.blocks, flags.block, KPF_BLOCK - 1
    odd = OddPages()
    for s, e, cat in regions:
        if cat & huge:
            continue
        ws = words.get(s, e)
        for i, w in enumerate(ws):
            p = w & pfn_mask
            if w & present and p:            # KpageFlags.get, inlined: one call per page was half the time
                b = cached.get(p >> KPF_BLOCK_SHIFT)
                if b is None:
                    b = read(p >> KPF_BLOCK_SHIFT)
                j = p & last
                if j < len(b) and not b[j] & _ODD:
                    continue
            odd.add(s + i * PAGE_SIZE, s + (i + 1) * PAGE_SIZE)
        if len(ws) < (e - s) // PAGE_SIZE:
            odd.add(s + len(ws) * PAGE_SIZE, e)
    return odd


class RegionClipper:
    """The regions inside [start, end), clipped to it (the kernel merges equal neighbours across
    VMA boundaries); regions sorted by address."""

    def __init__(self, regions: Sequence[Tuple[int, int, int]]):
        self.regions = regions
        self.ends: Optional[List[int]] = None

    def __call__(self, lo: int, hi: int) -> List[Tuple[int, int, int]]:
        if self.ends is None:
            self.ends = [e for _s, e, _c in self.regions]
        out = []
        j = bisect.bisect_right(self.ends, lo)
        while j < len(self.regions) and self.regions[j][0] < hi:
            s, e, cat = self.regions[j]
            out.append((max(s, lo), min(e, hi), cat))
            j += 1
        return out


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
