"""VMAs grouped by identity, so two runs of a program can be compared although ASLR moved
every address: pure functions over the VMA dicts of `report --json`.

- File-backed VMAs (and named shmem, hugetlbfs files, device-dax): by path and perms, and
  within those by file offset: VMAs whose offset ranges touch or overlap form one group,
  keyed by its first offset. A file mapping split into many VMAs is therefore compared with
  the single VMA it replaced, while the separate segments of a library (r--p at 0, r--p at
  0x1c0000) stay apart.
- Anonymous VMAs: by kind and advice: [heap], [stack], [anon:NAME], then perms and
  MADV_HUGEPAGE / MADV_NOHUGEPAGE (VmFlags hg / nh). All private anonymous rw-p memory
  with MADV_HUGEPAGE is one group however many VMAs it is made of.
"""
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

PMD_SIZE = 2 << 20
PATH_BACKINGS = ("file", "shmem", "hugetlb", "device-dax")
# backings where a VMA without a PMD-aligned PMD-sized range inside it can never be mapped huge
PMD_BACKINGS = ("anon", "heap", "stack", "file", "shmem", "device-dax")


def advice(v: dict) -> Optional[str]:
    """MADV_HUGEPAGE / MADV_NOHUGEPAGE from VmFlags; documents without "vmflags" fall back to
    the THP reason, which names the flag."""
    flags = v.get("vmflags")
    if flags is None:
        reason = v.get("thp_reason") or ""
        flags = [f for f in ("hg", "nh") if f"VmFlags {f}" in reason]
    if "nh" in flags:
        return "MADV_NOHUGEPAGE"
    if "hg" in flags:
        return "MADV_HUGEPAGE"
    return None


def anon_key(v: dict) -> str:
    backing, path = v.get("backing", "anon"), v.get("path") or ""
    if backing in ("heap", "stack") and path:
        name = path
    elif path.startswith("[anon"):
        name = path                       # [anon:NAME], [anon_shmem:NAME] (PR_SET_VMA_ANON_NAME)
    elif backing == "special":
        name = path or "special"
    else:
        name = backing if not path else f"{backing} {path}"
    words = [name, v.get("perms", "")]
    adv = advice(v)
    if adv:
        words.append(adv)
    return " ".join(words)


def is_path_backed(v: dict) -> bool:
    path = v.get("path") or ""
    return v.get("backing") in PATH_BACKINGS and bool(path) and not path.startswith("[")


def misaligned(v: dict, pmd: int = PMD_SIZE) -> bool:
    """No pmd-aligned pmd-sized range inside the VMA: it can never be mapped by a PMD
    (too small, or placed off the 2 MiB grid)."""
    if v.get("backing") not in PMD_BACKINGS:
        return False
    first = -(-v["start"] // pmd) * pmd
    return first + pmd > v["end"]


def group_keys(vmas: List[dict]) -> List[Tuple[str, str, str]]:
    """(key, backing, path) for each VMA, in the same order."""
    out: List[Tuple[str, str, str]] = [("", "", "")] * len(vmas)
    by_file: Dict[Tuple[str, str], List[int]] = {}
    for i, v in enumerate(vmas):
        if is_path_backed(v):
            by_file.setdefault((v["path"], v.get("perms", "")), []).append(i)
        else:
            out[i] = (anon_key(v), v.get("backing", "anon"), v.get("path") or "")
    for (path, perms), idx in by_file.items():
        idx.sort(key=lambda i: vmas[i].get("offset", 0))
        run_start = run_end = None
        for i in idx:
            v = vmas[i]
            off = v.get("offset", 0)
            if run_end is None or off > run_end:
                run_start, run_end = off, off + v["end"] - v["start"]
            else:
                run_end = max(run_end, off + v["end"] - v["start"])
            out[i] = (f"{path} @{run_start:#x} {perms}", v.get("backing", "file"), path)
    return out


FAULT_KEYS = ("faults", "huge_faults", "dax_pmd_faults", "dax_pte_faults", "dax_fallbacks", "dax_needdsync")


@dataclass
class GroupStats:
    vmas: int = 0
    rss_bytes: int = 0
    huge_bytes: int = 0                    # of the VMAs whose page sizes are known
    small_bytes: int = 0
    misaligned_vmas: int = 0
    unknown_vmas: int = 0                  # huge/small unknown (DAX without PAGEMAP_SCAN)
    unknown_bytes: int = 0                 # their RSS: rss = huge + small + unknown
    thp_reasons: Counter = field(default_factory=Counter)
    dax: Counter = field(default_factory=Counter)      # VMAs per DAX kind (fsdax, devdax); "none" left out
    vm_sync_vmas: int = 0                              # VMAs mapped MAP_SYNC (VmFlags sf)
    # fault counts over the observed time (report --duration columns, or a record's frames);
    # None where the source counted none
    faults: Optional[Dict[str, int]] = None
    # report's folio keys summed ({folio size: bytes}, PMD-mapped bytes): None when the documents have
    # none or some VMA's are unknown (no PAGEMAP_SCAN before 6.7; DAX has no struct pages)
    folio_bytes: Optional[Dict[str, int]] = None
    pmd_mapped_bytes: Optional[int] = None
    _folios_unknown: bool = False

    def add(self, v: dict, pmd: int = PMD_SIZE) -> None:
        self.vmas += 1
        if "folio_bytes" in v:
            self._add_folios(v)
        rss = v.get("rss_bytes") or 0
        self.rss_bytes += rss
        if v.get("huge_bytes") is None:
            self.unknown_vmas += 1
            self.unknown_bytes += rss
        self.huge_bytes += v.get("huge_bytes") or 0
        self.small_bytes += v.get("small_bytes") or 0
        self.misaligned_vmas += misaligned(v, pmd)
        if v.get("thp_reason"):
            self.thp_reasons[v["thp_reason"]] += 1
        if v.get("dax") not in (None, "none"):
            self.dax[v["dax"]] += 1
        self.vm_sync_vmas += bool(v.get("vm_sync"))
        if any(v.get(k) is not None for k in FAULT_KEYS):
            if self.faults is None:
                self.faults = dict.fromkeys(FAULT_KEYS, 0)
            for k in FAULT_KEYS:
                self.faults[k] += v.get(k) or 0

    def _add_folios(self, v: dict) -> None:
        if self._folios_unknown:
            return
        fb, pmd_mapped = v.get("folio_bytes"), v.get("pmd_mapped_bytes")
        if fb is None or pmd_mapped is None:
            self._folios_unknown, self.folio_bytes, self.pmd_mapped_bytes = True, None, None
            return
        total = self.folio_bytes or {}
        for size, n in fb.items():
            total[str(size)] = total.get(str(size), 0) + n
        self.folio_bytes = dict(sorted(total.items(), key=lambda kv: int(kv[0])))
        self.pmd_mapped_bytes = (self.pmd_mapped_bytes or 0) + pmd_mapped

    @property
    def huge_share(self) -> Optional[float]:
        """huge / rss; unknown (None) when some of the RSS has an unknown page size."""
        return self.huge_bytes / self.rss_bytes if self.rss_bytes and not self.unknown_bytes else None

    @property
    def share_bounds(self) -> Optional[Tuple[float, float]]:
        """The huge share's possible range: the unknown bytes all small, or all huge."""
        if not self.rss_bytes:
            return None
        return self.huge_bytes / self.rss_bytes, (self.huge_bytes + self.unknown_bytes) / self.rss_bytes

    def as_dict(self) -> dict:
        return {"vmas": self.vmas, "rss_bytes": self.rss_bytes, "huge_bytes": self.huge_bytes,
                "small_bytes": self.small_bytes, "misaligned_vmas": self.misaligned_vmas,
                "unknown_vmas": self.unknown_vmas, "unknown_bytes": self.unknown_bytes,
                "huge_share": self.huge_share, "thp_reasons": dict(sorted(self.thp_reasons.items())),
                "dax": dict(sorted(self.dax.items())), "vm_sync_vmas": self.vm_sync_vmas,
                "faults": None if self.faults is None else dict(self.faults),
                "folio_bytes": self.folio_bytes, "pmd_mapped_bytes": self.pmd_mapped_bytes}


@dataclass
class Group:
    key: str
    backing: str
    path: str
    stats: GroupStats


def group(vmas: Iterable[dict], pmd: int = PMD_SIZE) -> Dict[str, Group]:
    vmas = list(vmas)
    out: Dict[str, Group] = {}
    for v, (key, backing, path) in zip(vmas, group_keys(vmas)):
        g = out.get(key)
        if g is None:
            g = out[key] = Group(key, backing, path, GroupStats())
        g.stats.add(v, pmd)
    return out
