"""THP collapses per VMA and per process, with the kernel's reason (probes/collapse.c).

The probe counts scan results in the kernel: MADV_COLLAPSE results keyed by the caller's tgid and
the PMD range's address; khugepaged results keyed by the mm and the PFN of the last page examined.
Here those become, for one traced process:

  thp_collapses              ranges collapsed into a THP (result "succeeded")
  thp_collapse_failures      {reason: n}, reason = the kernel's scan_result name, from the
                             tracepoint's print fmt (never hard-coded)
  thp_collapse_filled_bytes  memory a successful collapse added by filling empty (or zero-page)
                             PTEs of the range: none_or_zero pages (the max_ptes_none bloat)

A khugepaged result belongs to the process when the PFN it examined is mapped by the process
(its pagemap), and then at that address; the mm of such a result is then the process's, so its
other khugepaged results (a success's PFN is freed by the collapse) count for the process but
under no VMA (``unattributed``). ``attribute`` is pure; the caller supplies the PFN lookup.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from . import kernel, pagemap

SUCCEEDED = "succeeded"
NO_PFN = (1 << 64) - 1
Entry = Tuple[Dict[str, int], int, int]        # loader.Probes.collapse_counts(): key fields, count, filled


def parse_status_names(format_text: str) -> Dict[int, str]:
    """{value: name} from a tracefs format's __print_symbolic(REC->status|result, {0, "failed"}, ...)."""
    return {int(v): name for v, name in re.findall(r'\{\s*(-?\d+)\s*,\s*"([^"]+)"\s*\}', format_text)}


def status_names(root: Optional[str] = None) -> Dict[int, str]:
    root = root or kernel.tracefs_root()
    try:
        with open(f"{root}/events/huge_memory/mm_khugepaged_scan_pmd/format") as f:
            return parse_status_names(f.read())
    except OSError:
        return {}


@dataclass
class CollapseCounts:
    collapses: int = 0
    failures: Dict[str, int] = field(default_factory=dict)
    filled_bytes: int = 0

    def add(self, reason: str, n: int, filled_pages: int) -> None:
        if reason == SUCCEEDED:
            self.collapses += n
            self.filled_bytes += filled_pages * kernel.PAGE_SIZE
        else:
            self.failures[reason] = self.failures.get(reason, 0) + n

    def as_json(self) -> dict:
        return {"thp_collapses": self.collapses, "thp_collapse_failures": dict(sorted(self.failures.items())),
                "thp_collapse_filled_bytes": self.filled_bytes}


@dataclass
class ProcessCollapses:
    vmas: Dict[int, CollapseCounts] = field(default_factory=dict)     # VMA start -> counts
    unattributed: CollapseCounts = field(default_factory=CollapseCounts)   # the process's, VMA unknown

    def vma(self, start: int) -> CollapseCounts:
        return self.vmas.setdefault(start, CollapseCounts())

    def total(self) -> CollapseCounts:
        out = CollapseCounts()
        for c in [*self.vmas.values(), self.unattributed]:
            out.collapses += c.collapses
            out.filled_bytes += c.filled_bytes
            for k, v in c.failures.items():
                out.failures[k] = out.failures.get(k, 0) + v
        return out


def attribute(entries: Iterable[Entry], pid: int, find_vma: Callable[[int], Optional[int]],
              addr_of_pfn: Callable[[int], Optional[int]], names: Dict[int, str]) -> ProcessCollapses:
    """Collapse results of process ``pid`` per VMA. ``find_vma(addr)`` -> VMA start or None;
    ``addr_of_pfn(pfn)`` -> an address where pid maps that PFN, or None."""
    out = ProcessCollapses()
    khugepaged: List[Entry] = []
    mms = set()
    for key, n, filled in entries:
        if key["madvise"]:
            if key["tgid"] != pid:
                continue
            reason = names.get(key["status"], str(key["status"]))
            start = find_vma(key["addr"])
            (out.vma(start) if start is not None else out.unattributed).add(reason, n, filled)
        else:
            khugepaged.append((key, n, filled))
    placed = []
    for key, n, filled in khugepaged:
        addr = addr_of_pfn(key["pfn"]) if key["pfn"] not in (0, NO_PFN) else None
        start = find_vma(addr) if addr is not None else None
        if start is not None:
            mms.add(key["mm"])
            placed.append(id(key))
            out.vma(start).add(names.get(key["status"], str(key["status"])), n, filled)
    for key, n, filled in khugepaged:
        if id(key) not in placed and key["mm"] in mms:
            out.unattributed.add(names.get(key["status"], str(key["status"])), n, filled)
    return out


def pfn_lookup(pid: int, entries: Iterable[Entry]) -> Callable[[int], Optional[int]]:
    """addr_of_pfn for ``attribute``: the PFNs khugepaged reported, found in pid's PTE-mapped pages
    (PAGEMAP_SCAN for the present ranges, pagemap words for their PFNs). Empty if none reported."""
    wanted = {k["pfn"] for k, _n, _f in entries if not k["madvise"] and k["pfn"] not in (0, NO_PFN)}
    found: Dict[int, int] = {}
    if wanted and pagemap.scan_supported():
        mask = (pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_HUGE) & pagemap.supported_categories()
        with pagemap.PageMap(pid) as pm:
            for m in _maps(pid):
                for s, e, cat in pm.regions(m[0], m[1], return_mask=mask,
                                            category_mask=pagemap.PAGE_IS_PRESENT):
                    if cat & pagemap.PAGE_IS_HUGE:
                        continue
                    for i, w in enumerate(pm.words(s, e)):
                        pfn = w & pagemap.PM_PFN_MASK
                        if pfn in wanted and w & pagemap.PM_PRESENT:
                            found.setdefault(pfn, s + i * kernel.PAGE_SIZE)
    return found.get


def _maps(pid: int) -> List[Tuple[int, int]]:
    from . import procfs
    return [(m.start, m.end) for m in procfs.read_maps(pid) if m.path != "[vsyscall]"]


def annotate(data: dict, pid: int, entries: List[Entry]) -> None:
    """Add the collapse keys to a `report --duration --json` document: per VMA, in totals, and the
    process's results at no known VMA under thp_collapses_unattributed."""
    starts = sorted((d["start"], d["end"]) for d in data["vmas"])

    def find_vma(addr: int) -> Optional[int]:
        for s, e in starts:
            if s <= addr < e:
                return s
        return None
    got = attribute(entries, pid, find_vma, pfn_lookup(pid, entries), status_names())
    for d in data["vmas"]:
        d.update(got.vmas.get(d["start"], CollapseCounts()).as_json())
    data["thp_collapses_unattributed"] = got.unattributed.as_json()
    data["totals"].update(got.total().as_json())


def notes(data: dict) -> List[str]:
    """One line per VMA with collapse results, and one for the unattributed ones."""
    def line(c: dict) -> str:
        parts = [f"{c['thp_collapses']} collapsed"]
        if c["thp_collapse_filled_bytes"]:
            parts.append(f"{c['thp_collapse_filled_bytes'] >> 10}K filled in")
        parts += [f"{n} {reason}" for reason, n in c["thp_collapse_failures"].items()]
        return ", ".join(parts)
    out = [f"THP collapses at {d['start']:x}: {line(d)}" for d in data["vmas"]
           if d.get("thp_collapses") or d.get("thp_collapse_failures")]
    u = data.get("thp_collapses_unattributed")
    if u and (u["thp_collapses"] or u["thp_collapse_failures"]):
        out.append(f"THP collapses by khugepaged at no known VMA: {line(u)}")
    return out
