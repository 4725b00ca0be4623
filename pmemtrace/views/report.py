"""`pmemtrace report PID`: one row per VMA, huge vs small bytes, DAX, VM_SYNC, THP eligibility.

With --duration the probes are attached for that long and per-VMA fault columns are
added (faults, THP faults by address, DAX PMD / PTE / fallback / NEEDDSYNC faults).
"""
import dataclasses
import operator
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

if TYPE_CHECKING:                    # rich is imported where text is drawn: --json needs none of it
    from rich.console import Console

from .. import aggregate, collapse, daxcause, folios, jsonout, kernel, policy as policy_mod, procfs, signals, vmas as vmas_mod
from ..errors import ProcessExited
from . import folios as folio_view
from .text import aligned, console as text_console, human_bytes, print_plain, printable

JSON_SCHEMA_VERSION = 1
FAULT_KEYS = ("faults", "huge_faults", "dax_pmd_faults", "dax_pte_faults", "dax_fallbacks", "dax_needdsync")


def visible(v: vmas_mod.Vma, show_all: bool) -> bool:
    """Rows with resident pages, and every DAX VMA (its residency may be unknown or just faulted
    out: a DAX mapping is never hidden for what smaps cannot see)."""
    return show_all or v.dax != "none" or bool(v.rss_bytes) or bool(v.huge_bytes) or bool(v.small_bytes)


def fault_columns(vc: Optional[aggregate.VmaCounts]) -> Dict[str, object]:
    vc = vc or aggregate.VmaCounts()
    return {
        "faults": vc.faults,
        "huge_faults": vc.huge_faults,
        "dax_pmd_faults": vc.dax["pmd_huge"],
        "dax_pte_faults": vc.dax["pte"] + vc.dax["pte_needdsync"],
        "dax_fallbacks": vc.dax["pmd_fallback"],
        "dax_needdsync": vc.dax["pmd_needdsync"] + vc.dax["pte_needdsync"],
        "dax_fallback_causes": dict(vc.fallback_causes),
        "map_sync_latency_log2_ns": {str(k): v for k, v in sorted(vc.dsync_latency.items())},
        "madvise": dict(vc.madvise),
    }


def vma_dict(v: vmas_mod.Vma) -> dict:
    return {"start": v.start, "end": v.end, "perms": v.perms, "backing": v.backing, "path": v.path,
            "rss_bytes": v.rss_bytes, "huge_bytes": v.huge_bytes, "small_bytes": v.small_bytes,
            "dax": v.dax, "vm_sync": v.vm_sync, "thp_eligible": v.thp_eligible, "thp_reason": v.thp_reason,
            "offset": v.offset, "vmflags": list(v.vmflags)}


def vma_row_encoder() -> Callable[[Tuple[vmas_mod.Vma, Optional[folios.FolioStats]]], str]:
    """One row of `report --json`, a VMA and its folio facts, as compact JSON: json's text of
    {**vma_dict(v), **(st or unknown).as_json()} (tests/test_scale_unit.py), 2-3x as fast as
    building that dict for each of 60,000 VMAs. Only start, end and offset differ between most
    VMAs: the text between them is cut from json's text once per distinct content."""
    middle_of = operator.attrgetter("perms", "backing", "path", "rss_bytes", "huge_bytes", "small_bytes", "dax",
                                    "vm_sync", "thp_eligible", "thp_reason")
    texts: Dict[tuple, Tuple[str, str]] = {}    # by (middle_of(v), vmflags, id of the stats): read_process
                                                # shares one stats object between the VMAs with equal facts

    def make(v: vmas_mod.Vma, st: Optional[folios.FolioStats]) -> Tuple[str, str]:
        # vma_dict's keys run start, end, ..., offset, vmflags; a quote inside a JSON string is
        # escaped, so ', "offset": ' can only be the key itself
        full = jsonout.encode({**vma_dict(v), **(st or folios.unknown()).as_json()})
        head = f'{{"start": {v.start}, "end": {v.end}, '
        cut = full.index(', "offset": ', len(head))
        return full[len(head):cut], full[full.index(", ", cut + 12) + 2:]

    def encode(row: Tuple[vmas_mod.Vma, Optional[folios.FolioStats]]) -> str:
        v, st = row
        key = (middle_of(v), v.vmflags, id(st))
        text = texts.get(key)
        if text is None:
            text = texts[key] = make(v, st)
        return f'{{"start": {v.start}, "end": {v.end}, {text[0]}, "offset": {v.offset}, {text[1]}'     # ints
    return encode


def totals(rows: List[vmas_mod.Vma]) -> dict:
    """Sums over the rows shown; a sum with an unknown (None) term is unknown (None) too.
    huge_share: huge / (huge + small) of the present bytes (hugetlb included), None if unknown or empty."""
    def total(attr):
        values = list(map(operator.attrgetter(attr), rows))
        return None if None in values else sum(values)
    out = {"rss_bytes": total("rss_bytes"), "huge_bytes": total("huge_bytes"), "small_bytes": total("small_bytes")}
    huge, small = out["huge_bytes"], out["small_bytes"]
    out["huge_share"] = round(huge / (huge + small), 4) if huge is not None and small is not None and huge + small \
        else None
    return out


def shown_rows(proc: vmas_mod.ProcessVmas, show_all: bool,
               faults: Optional[Dict[object, aggregate.VmaCounts]] = None) -> List[vmas_mod.Vma]:
    """The VMAs a report shows: visible() ones, and those with faults in them."""
    if faults:
        return [v for v in proc.vmas if visible(v, show_all) or v.start in faults]
    # visible(), inlined: one call per VMA was a third of the time at 60,000 VMAs
    return [v for v in proc.vmas if show_all or v.dax != "none" or v.rss_bytes or v.huge_bytes or v.small_bytes]


def document(proc: vmas_mod.ProcessVmas, policy: kernel.ThpPolicy, rows: List[vmas_mod.Vma]) -> Dict[str, Any]:
    """A report's JSON document but its VMA rows (left empty) and what --duration adds."""
    return {
        "schema": JSON_SCHEMA_VERSION, "pid": proc.pid, "comm": proc.comm, "kernel": kernel.release(),
        "source": proc.source,
        "thp": {"enabled": policy.enabled, "defrag": policy.defrag, "shmem_enabled": policy.shmem_enabled},
        "notes": list(proc.notes),
        "vmas": [],
        "totals": totals(rows),
        "time": time.time(), "policy": policy_mod.read(),
    }


def write_json(out: IO[str], proc: vmas_mod.ProcessVmas, show_all: bool, policy: kernel.ThpPolicy,
               scanned: Optional[vmas_mod.Scanned] = None) -> None:
    """`report --json` without --duration: build_json + folio_view.annotate's document, written
    from the Vma objects with no dict per VMA (tens of thousands of VMAs). ``scanned``: what
    folio_reader.prefetch read, if describe_process used its regions."""
    with procfs.no_gc():                # tens of thousands of acyclic tuples: nothing to collect
        rows = shown_rows(proc, show_all)
        data = document(proc, policy, rows)
        spec = folio_view.folio_reader.spec
        ahead = scanned() if scanned is not None else None
        odd = ahead.odd if ahead is not None and ahead.regions is proc.regions else None
        got = folio_view.stats_by_start(proc.pid, [spec(v.start, v.end, v.path) for v in rows],
                                        any(v.backing == "hugetlb" for v in rows), proc.regions, odd)
        stats = [st for _spec, st in got.vmas]
        folio_view.add_totals(data, stats, got.notes)
        data["vmas"] = list(zip(rows, stats))
        jsonout.write_document(out, data, {"vmas": vma_row_encoder()})


def build_json(proc: vmas_mod.ProcessVmas, show_all: bool, policy: kernel.ThpPolicy,
               faults: Optional[Dict[object, aggregate.VmaCounts]] = None, duration: Optional[float] = None,
               probe_notes: Optional[Dict[str, str]] = None, lost: int = 0, unattributed: int = 0,
               mincore: Optional[aggregate.MincoreStats] = None) -> dict:
    rows = shown_rows(proc, show_all, faults)
    out = document(proc, policy, rows)
    for v in rows:
        d = vma_dict(v)
        if faults is not None:
            d.update(fault_columns(faults.get(v.start)))
        out["vmas"].append(d)
    if faults is not None:
        out["duration"] = duration
        out["lost_events"] = lost
        out["unmapped"] = fault_columns(faults.get(aggregate.UNMAPPED))
        out["probes_missing"] = dict(probe_notes or {})
        # THP faults whose address could not be carried to the allocation (its thread's stash word was taken by another thread)
        out["huge_faults_unattributed"] = unattributed
        out["mincore"] = dataclasses.asdict(mincore or aggregate.MincoreStats())
        for key in FAULT_KEYS:
            out["totals"][key] = sum(d[key] for d in out["vmas"]) + out["unmapped"][key]
        out["totals"]["huge_faults"] += unattributed
    return out


def yes_no(b: bool) -> str:
    return "yes" if b else "no"


def render(console: "Console", data: dict) -> None:
    from rich.text import Text
    thp = data["thp"]
    header = Text.assemble(
        ("pid ", "bold"), str(data["pid"]), "  ", ("comm ", "bold"), printable(data["comm"]), "  ",
        ("kernel ", "bold"), data["kernel"], "  ",
        ("THP ", "bold"), f"enabled={thp['enabled']} defrag={thp['defrag']} shmem={thp['shmem_enabled']}", "  ",
        ("page sizes from ", "bold"), data["source"])
    console.print(header)
    with_faults = "duration" in data
    with_folios = "folio_source" in data
    columns = [("START", ">"), ("END", ">"), ("SIZE", ">"), ("PERM", "<"), ("BACKING", "<"), ("RSS", ">"),
               ("HUGE", ">"), ("SMALL", ">"), ("DAX", "<"), ("SYNC", "<")]
    if with_faults:
        columns += [(name, ">") for name in ("FAULTS", "THP", "DAXPMD", "DAXPTE", "FALLBK", "DSYNC")]
    columns += [("FOLIOS", "<")] * with_folios + [("THP", "<"), ("PATH", "<")]
    reasons: Dict[str, int] = {}      # each distinct THP reason printed once, as a numbered note

    def fault_cells(d):
        return [str(d[k]) for k in FAULT_KEYS] if with_faults else []

    rows = [[f"{d['start']:x}", f"{d['end']:x}", human_bytes(d["end"] - d["start"]), d["perms"], d["backing"],
             human_bytes(d["rss_bytes"]), human_bytes(d["huge_bytes"]), human_bytes(d["small_bytes"]), d["dax"],
             yes_no(d["vm_sync"]), *fault_cells(d), *([folio_view.cell(d["folio_bytes"])] if with_folios else []),
             f"{yes_no(d['thp_eligible'])} [{reasons.setdefault(d['thp_reason'], len(reasons) + 1)}]",
             printable(d["path"])] for d in data["vmas"]]
    if with_faults and any(data["unmapped"][k] for k in FAULT_KEYS):
        u = data["unmapped"]
        rows.append(["", "", "", "", "(unmapped)", "", "", "", "", "", *fault_cells(u), *([""] * with_folios), "", ""])
    t = data["totals"]
    notes = list(data["notes"])
    if any(t[k] is None for k in ("rss_bytes", "huge_bytes", "small_bytes")):
        notes.append("a total shown ? includes a VMA whose value is unknown on this kernel")
    rows.append(["total", "", "", "", "", human_bytes(t["rss_bytes"]), human_bytes(t["huge_bytes"]),
                 human_bytes(t["small_bytes"]), "", "", *(fault_cells(t) if with_faults else []),
                 *([folio_view.cell(t["folio_bytes"])] if with_folios else []), "", ""])
    # one Text for the whole table, printed once: a rich Table took 36 s for 60,000 VMAs
    lines = aligned(columns, rows)
    console.print(Text(lines[0], style="bold"), soft_wrap=True)
    if len(lines) > 2:
        print_plain(console, "\n".join(lines[1:-1]) + "\n")
    console.print(Text(lines[-1], style="bold"), soft_wrap=True)
    for reason, n in reasons.items():
        console.print(Text(f"[{n}] THP {reason}"))
    for note in notes:
        console.print(Text(f"note: {note}"))
    if with_folios:
        console.print(Text(folio_view.summary_line(t)))
    for line in collapse.notes(data):
        console.print(Text(line))
    if with_faults:
        console.print(Text(f"probes attached {data['duration']:g}s; lost events: {data['lost_events']}"))
        mc = data["mincore"]
        if mc["calls"]:
            resident = f"{100 * mc['pages_resident'] / mc['pages_examined']:.1f}%" if mc["pages_examined"] else "?"
            console.print(Text(f"mincore: {mc['calls']} calls, {human_bytes(mc['bytes'])} queried, "
                               f"{resident} of examined pages resident, "
                               f"{mc['ns'] / mc['calls'] / 1000:.1f} us per call"))
        for tp, why in data["probes_missing"].items():
            console.print(Text(f"note: {tp} {why}"))


def observe(pid: int, duration: float, ebpf: bool):
    """Attach the probes for `duration` seconds; per-VMA counts keyed by VMA start."""
    from ..loader import Probes      # only here: plain report needs no bcc
    probes = Probes(["thp", "faults", "dax", "syscalls", "mincore", "devdax", "collapse"], pid=pid)
    if ebpf:
        print(probes.text)
        return None
    with probes:
        # like bcc tools: say when tracing starts (on stderr, so --json stays clean)
        print(f"Tracing pid {pid} for {duration:g}s...", file=sys.stderr, flush=True)
        deadline = time.monotonic() + duration
        with signals.interruptible():           # SIGINT/SIGTERM: detach (with probes) and exit 130/143
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                probes.poll(int(min(left, 0.2) * 1000))
                if not os.path.exists(f"/proc/{pid}"):
                    raise ProcessExited(f"pid {pid} exited during the {duration:g}s observation")
        counts = probes.snapshot()
        collapses = probes.collapse_counts()
    return counts, probes.missing, collapses


def make_console() -> "Console":
    """A terminal gets rich's own width; a pipe gets lines wide enough not to cut columns."""
    return text_console(250)


def run(pid: int, show_all: bool = False, as_json: bool = False, duration: Optional[float] = None,
        ebpf: bool = False, scanned: Optional[vmas_mod.Scanned] = None,
        smaps: Optional[Iterator[bytes]] = None) -> None:
    """``scanned``, ``smaps``: for --json, folio_reader.prefetch(pid) and procfs.start_smaps(pid),
    started by cli as early as it can (None: read here, in turn)."""
    policy = kernel.thp_policy()
    faults = lost = missing = None
    if duration is not None or ebpf:
        vmas_mod.describe_process(pid)          # fail fast on a bad pid before attaching
        observed = observe(pid, duration or 0.0, ebpf)
        if observed is None:
            return
        counts, missing, collapse_entries = observed
        lost = counts.lost
    if as_json and duration is None:
        write_json(sys.stdout, vmas_mod.describe_process(pid, scanned=scanned, smaps=smaps), show_all, policy,
                   scanned)
        return
    proc = vmas_mod.describe_process(pid)
    if duration is not None:
        index = aggregate.VmaIndex((v.start, v.end) for v in proc.vmas)
        faults = aggregate.per_vma(counts, pid, index, kernel.pmd_size(), daxcause.classify)
    unattributed = counts.thp_unattributed.get(pid, 0) if duration is not None else 0
    mincore = counts.mincore.get(pid) if duration is not None else None
    data = build_json(proc, show_all, policy, faults, duration, missing, lost or 0, unattributed, mincore)
    regions = proc.regions              # its PAGEMAP_SCAN: the folio pass needs no second one
    del proc                            # its Vma objects: tens of MB at 60,000 VMAs, no longer needed
    folio_view.annotate(data, pid, regions)     # folio sizes per VMA (pmemtrace/folios.py)
    if duration is not None:
        collapse.annotate(data, pid, collapse_entries)
    if as_json:                         # with --duration: its fault keys, so json's encoder
        with procfs.no_gc():
            jsonout.write_document(sys.stdout, data, {"vmas": jsonout.encode})
    else:
        render(make_console(), data)
