"""Folio sizes: the keys `report` adds per VMA, and `pmemtrace folios` (thpmaps' view of many
processes: all, some pids, or a cgroup; per process or one system roll-up)."""
import json
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence

if TYPE_CHECKING:                    # rich is imported where text is drawn: report --json needs none of it
    from rich.console import Console

from .. import folio_reader, folios, procfs
from ..errors import NotRoot
from .text import human_bytes, printable

JSON_SCHEMA_VERSION = 1


def cell(d: Optional[Dict[str, int]], most: int = 2) -> str:
    """'2M:60M 4K:4M' -- the largest shares first, at most ``most``; '?' unknown, '' none."""
    if d is None:
        return "?"
    parts = sorted(((v, int(k)) for k, v in d.items() if v), reverse=True)
    text = " ".join(f"{human_bytes(size)}:{human_bytes(v)}" for v, size in parts[:most])
    return text + (" +" if len(parts) > most else "")


def summary_line(t: dict) -> str:
    def b(key):
        return "?" if t.get(key) is None else human_bytes(t[key])
    line = (f"folios: {cell(t.get('folio_bytes'), 6) or '-'}; PMD-mapped {b('pmd_mapped_bytes')}, "
            f"PTE-mapped THP {b('pte_mapped_thp_bytes')}, unaligned {b('unaligned_folio_bytes')}, "
            f"partial {b('partial_folio_bytes')}")
    if t.get("pud_mapped_bytes"):
        line += f", PUD-mapped {b('pud_mapped_bytes')}"
    if t.get("folio_unknown_vmas"):
        line += f"; unknown in {t['folio_unknown_vmas']} VMAs"
    return line


def stats_by_start(pid: int, specs: List[folio_reader.VmaSpec], hugetlb: bool,
                   regions: Optional[List[tuple]] = None, odd: Optional[folio_reader.OddPages] = None
                   ) -> folio_reader.ProcessFolios:
    """Folio facts of the VMAs ``specs`` (their leaf_size 0) of pid. With ``hugetlb`` VMAs among
    them, their page sizes come from smaps (specs_from_maps). ``regions``: the PAGEMAP_SCAN regions
    already read (vmas.ProcessVmas.regions), else scanned here; ``odd``: their odd pages, if read."""
    if hugetlb:
        leaf = {(s.start, s.end): s.leaf_size for s in folio_reader.specs_from_maps(pid)}
        specs = [s._replace(leaf_size=leaf.get((s.start, s.end), 0)) for s in specs]
    return folio_reader.read_process(pid, specs, regions=regions, odd=odd)


def annotate(data: dict, pid: int, regions: Optional[List[tuple]] = None) -> None:
    """Add the folio keys to a `report --json` document (every VMA row, totals, folio_source);
    ``regions``: describe_process's PAGEMAP_SCAN regions (ProcessVmas.regions), not scanned again."""
    rows = data["vmas"]
    got = stats_by_start(pid, [folio_reader.spec(d["start"], d["end"], d["path"]) for d in rows],
                         any(d["backing"] == "hugetlb" for d in rows), regions)
    as_json: Dict[tuple, dict] = {}    # one JSON form per distinct content, shared (tens of thousands of VMAs)
    by_id: Dict[int, dict] = {}         # read_process shares one object between many VMAs
    for d, (_spec, found) in zip(rows, got.vmas):
        j = by_id.get(id(found))
        if j is not None:
            d.update(j)
            continue
        st = found or folios.unknown()
        fb, cb = st.folio_bytes, st.cont_bytes
        key = (None if fb is None else tuple(fb.items()), st.pmd_mapped_bytes, st.pud_mapped_bytes,
               st.pte_mapped_thp_bytes, st.unaligned_folio_bytes, st.partial_folio_bytes,
               None if cb is None else tuple(cb.items()))
        j = as_json.get(key)
        if j is None:
            j = as_json[key] = st.as_json()
        if found is not None:
            by_id[id(found)] = j
        d.update(j)
    add_totals(data, [st for _spec, st in got.vmas], got.notes)


def add_totals(data: dict, stats: List[Optional[folios.FolioStats]], notes: List[str]) -> None:
    """The folio keys of a `report --json` document's totals, its folio_source and notes, from
    the stats of its VMA rows (None: [vsyscall], outside the user address space: not counted)."""
    tot, unknown_n = folios.total(stats)
    data["totals"].update(tot.as_json())
    data["totals"]["folio_unknown_vmas"] = unknown_n
    data["folio_source"] = folios.SOURCE if folios.pagemap.scan_supported() else None
    data["notes"].extend(notes)


# ---------------------------------------------------------------- `pmemtrace folios`

def select_pids(pids: Sequence[int], cgroup: Optional[str]) -> List[int]:
    if cgroup:
        chosen = folio_reader.cgroup_pids(cgroup)
        return [p for p in chosen if p in set(pids)] if pids else chosen
    return list(pids) if pids else sorted(procfs.list_pids())


def process_json(pid: int, comm: str, pf: folio_reader.ProcessFolios, with_vmas: bool) -> dict:
    tot, unknown_n = folios.total(st for _s, st in pf.vmas)
    out: Dict[str, Any] = {"pid": pid, "comm": comm, **tot.as_json(), "folio_unknown_vmas": unknown_n}
    if with_vmas:
        out["vmas"] = [{"start": s.start, "end": s.end, **(st or folios.unknown()).as_json()}
                       for s, st in pf.vmas if st is not None]
    return out


def build(pids: Iterable[int], rollup: bool, with_vmas: bool) -> dict:
    kflags = folios.KpageFlags.open()
    try:
        done, gone, denied = folio_reader.read_pids(pids, kflags)
    finally:
        if kflags is not None:
            kflags.close()
    procs = [process_json(pid, comm, pf, with_vmas and not rollup) for pid, comm, pf in done]
    tot, unknown_n = folios.total(folios.FolioStats(**{k: _from_json(k, p[k]) for k in folios.KEYS})
                                  for p in procs)
    notes = sorted({n for _p, _c, pf in done for n in pf.notes})
    out: Dict[str, Any] = {"schema": JSON_SCHEMA_VERSION, "source": folios.SOURCE, "notes": notes,
                           "processes_read": len(done), "processes_gone": gone, "processes_denied": denied,
                           "rollup": {**tot.as_json(), "folio_unknown_processes": unknown_n}}
    if not rollup:
        out["processes"] = procs
    return out


def _from_json(key: str, v):
    if isinstance(v, dict):
        return {int(k): n for k, n in v.items()}
    return v


def render(console: "Console", data: dict) -> None:
    from rich.table import Table
    from rich.text import Text
    if "processes" in data:
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for name in ("PID", "COMM", "FOLIOS", "PMD", "PTE-THP", "UNALIGNED", "PARTIAL"):
            table.add_column(name, justify="left" if name in ("COMM", "FOLIOS") else "right", no_wrap=True)
        for p in data["processes"]:
            if not any((p["folio_bytes"] or {}).values()) and p["folio_bytes"] is not None:
                continue
            table.add_row(str(p["pid"]), Text(printable(p["comm"])), cell(p["folio_bytes"], 3),
                          human_bytes(p["pmd_mapped_bytes"]), human_bytes(p["pte_mapped_thp_bytes"]),
                          human_bytes(p["unaligned_folio_bytes"]), human_bytes(p["partial_folio_bytes"]))
        console.print(table)
    skipped = f" ({data['processes_denied']} not readable)" if data["processes_denied"] else ""
    console.print(Text(f"{data['processes_read']} processes{skipped}; " + summary_line(data["rollup"])))
    cont = data["rollup"].get("cont_bytes")
    if cont:
        console.print(Text("contiguous PTE blocks: " + " ".join(
            f"{human_bytes(int(k))}:{human_bytes(v)}" for k, v in cont.items())))
    for note in data["notes"]:
        console.print(Text(f"note: {note}"))


def run(pids: Sequence[int], cgroup: Optional[str], rollup: bool, as_json: bool, with_vmas: bool) -> None:
    if os.geteuid() != 0:
        raise NotRoot("reading other processes' pagemap PFNs and /proc/kpageflags needs root: run with sudo")
    data = build(select_pids(pids, cgroup), rollup, with_vmas)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        from .report import make_console
        render(make_console(), data)
