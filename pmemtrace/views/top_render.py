"""`top`'s renderers: a frame (pmemtrace.interval) to plain lines, JSON lines or a rich screen."""
import json
import time
from typing import TYPE_CHECKING, List, Optional

from .text import human_bytes, printable

if TYPE_CHECKING:
    from .top import ViewState

def fmt_count(v, seconds: float = 0.0) -> str:
    """A count, or a rate when seconds is given; '-' for unknown."""
    if v is None:
        return "-"
    if seconds:
        rate = v / seconds
        return f"{rate:.0f}" if rate >= 10 or rate == int(rate) else f"{rate:.1f}"
    return str(v)


def fmt_share(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def json_line(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"))


PROC_COLUMNS = (("PID", 7), ("COMM", 16), ("FAULTS", 9), ("HUGE", 7), ("FALLBK", 7), ("HUGE%", 6),
                ("DAX", 4), ("SYNC", 4))
VMA_COLUMNS = (("START", 12), ("END", 12), ("BACKING", 10), ("PATH", 40), ("HUGE", 8), ("SMALL", 8),
               ("FAULTS", 8), ("HUGEF", 6), ("DAX", 6), ("SYNC", 4), ("MADV", 5), ("SYNCREF", 7))


def _proc_cells(r: dict, seconds: float = 0.0) -> List[str]:
    return [("-" if r["pid"] is None else str(r["pid"])), printable(r["comm"] or ""), fmt_count(r["faults"], seconds),
            fmt_count(r["huge_faults"], seconds), fmt_count(r["fallbacks"], seconds), fmt_share(r["huge_share"]),
            fmt_count(r.get("dax_vmas")), fmt_count(r.get("vm_sync_vmas"))]


def _vma_cells(v: dict, seconds: float = 0.0) -> List[str]:
    start = "-" if v["start"] is None else f"{v['start']:x}"
    end = "-" if v["end"] is None else f"{v['end']:x}"
    path = printable(v["path"] or "")
    if len(path) > 40:
        path = "..." + path[-37:]
    return [start, end, v["backing"], path,
            human_bytes(v["huge_bytes"], unknown="-"), human_bytes(v["small_bytes"], unknown="-"),
            fmt_count(v["faults"], seconds), fmt_count(v["huge_faults"], seconds), v["dax"],
            "yes" if v["vm_sync"] else "no", _madv_cell(v), fmt_count(v["map_sync_refusals"])]


def _madv_cell(v: dict) -> str:
    """madvise calls seen in the interval; where madvise is not watched (null), the VMA's
    standing advice from smaps VmFlags instead: hg (MADV_HUGEPAGE), nh (MADV_NOHUGEPAGE) or -."""
    if v["madvise"] is not None:
        return str(sum(v["madvise"].values()))
    return "hg" if v.get("vm_hugepage") else "nh" if v.get("vm_nohugepage") else "-"


def _system_summary(frame: dict, seconds: float = 0.0) -> str:
    vm, dax = frame["system"]["vmstat"], frame["system"]["dax"]
    parts = [f"thp_fault_alloc {fmt_count(vm.get('thp_fault_alloc', 0), seconds)}",
             f"fallback {fmt_count(vm.get('thp_fault_fallback', 0), seconds)}",
             f"fallback_charge {fmt_count(vm.get('thp_fault_fallback_charge', 0), seconds)}",
             f"collapse {fmt_count(vm.get('thp_collapse_alloc', 0), seconds)}",
             f"dax pmd {fmt_count(dax.get('pmd_huge', 0), seconds)} pte {fmt_count(dax.get('pte', 0), seconds)}"
             f" fallback {fmt_count(dax.get('pmd_fallback', 0), seconds)}",
             f"lost {frame['lost_events']}"]
    mthp = frame["system"]["mthp"]
    if mthp:
        parts.append("mTHP " + " ".join(f"{human_bytes(int(size))}:{fmt_count(st.get('anon_fault_alloc', 0), seconds)}"
                                        for size, st in mthp.items() if st.get("anon_fault_alloc")))
    return "  ".join(parts)


def mincore_lines(rows: List[dict]) -> List[str]:
    """The mincore panel: callers in this interval, bytes queried, resident share of the answer
    (of the pages the probe read, at most 4096 a call), mean latency."""
    out = []
    for r in rows:
        mc = r.get("mincore")
        if not mc:
            continue
        resident = f"{100 * mc['pages_resident'] / mc['pages_examined']:.0f}%" if mc["pages_examined"] else "-"
        out.append(f"mincore {r['pid']} {printable(r['comm'])}: {mc['calls']} calls, "
                   f"{human_bytes(mc['bytes'])} queried, "
                   f"{resident} resident, {mc['ns'] / mc['calls'] / 1000:.1f} us/call"
                   + (f", {mc['errors']} errors" if mc["errors"] else ""))
    return out


def plain_lines(frame: dict, rows: List[dict], vmas: Optional[List[dict]] = None) -> List[str]:
    """bcc-style output for a pipe: a timestamped header line, then aligned rows (counts per interval)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(frame["time"]))
    lines = [f"{stamp} interval {frame['interval']:.2f}s  {_system_summary(frame)}"]

    def line(cells, cols):
        left = (1,) if cols is PROC_COLUMNS else (2, 3)     # COMM; BACKING, PATH
        return " ".join(c.ljust(w) if i in left else c.rjust(w)
                        for i, (c, (_, w)) in enumerate(zip(cells, cols))).rstrip()
    lines.append(line([c for c, _ in PROC_COLUMNS], PROC_COLUMNS))
    lines += [line(_proc_cells(r), PROC_COLUMNS) for r in rows]
    if vmas is not None:
        lines.append(line([c for c, _ in VMA_COLUMNS], VMA_COLUMNS))
        lines += [line(_vma_cells(v), VMA_COLUMNS) for v in vmas]
    lines += mincore_lines(rows)
    return lines + [""]


def render(frame: dict, rows: List[dict], vmas: Optional[List[dict]], state: "ViewState", policy, release: str):
    """The rich screen: header lines and a table (rates per second)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    seconds = frame["interval"] or 1.0
    stamp = time.strftime("%H:%M:%S", time.localtime(frame["time"]))
    head = Text()
    head.append(f"pmemtrace top - {stamp}  kernel {release}  mode {frame['mode']}", style="bold")
    if state.paused:
        head.append("  [paused]", style="yellow")
    head.append(f"\nTHP enabled={policy.enabled} defrag={policy.defrag} shmem_enabled={policy.shmem_enabled}")
    head.append(f"\n/s: {_system_summary(frame, seconds)}")
    arrow = "^" if state.reverse else "v"
    head.append(f"\nsort: {state.sort_key} {arrow}   keys: q quit  < > sort  r reverse  space pause"
                "  j/k Enter VMAs  Esc back")
    if frame.get("detail_exited") is not None:
        head.append(f"\npid {frame['detail_exited']} exited", style="yellow")
    elif state.detail and vmas is None:
        head.append("\nVMAs from the next interval on...", style="yellow")
    if vmas is None:
        table = Table(box=None, pad_edge=False, header_style="bold")
        names = ("PID", "COMM", "FAULTS/s", "HUGE/s", "FALLBK/s", "HUGE%", "DAX", "SYNC")
        keys = ("pid", "comm", "faults", "huge_faults", "fallbacks", "huge_share", None, None)
        for name, key in zip(names, keys):
            label = f"{name}{arrow}" if key == state.sort_key else name
            table.add_column(label, justify="left" if key == "comm" else "right", no_wrap=True)
        for i, r in enumerate(rows):
            table.add_row(*(Text(c) for c in _proc_cells(r, seconds)),
                          style="reverse" if i == min(state.cursor, len(rows) - 1) else None)
        return Group(head, table, *(Text(line) for line in mincore_lines(rows)))
    table = Table(box=None, pad_edge=False, header_style="bold")
    # PATH is cut to 40 characters (the end of a path is kept in plain output, an ellipsis here)
    for name in ("START", "END", "BACKING", "PATH", "HUGE", "SMALL", "FAULTS/s", "HUGE/s", "DAX", "SYNC",
                 "MADV", "SYNCREF"):
        if name == "PATH":
            table.add_column(name, justify="left", no_wrap=True, overflow="ellipsis", max_width=40, min_width=8)
        elif name == "BACKING":
            table.add_column(name, justify="left", no_wrap=True, min_width=len("device-dax"))
        else:
            table.add_column(name, justify="right", no_wrap=True,
                             min_width=12 if name in ("START", "END") else len(name))
    for v in vmas:
        table.add_row(*(Text(c) for c in _vma_cells(v, seconds)))
    proc = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("PID", "COMM", "FAULTS/s", "HUGE/s", "FALLBK/s", "HUGE%", "DAX", "SYNC"):
        proc.add_column(name, justify="left" if name == "COMM" else "right")
    for r in rows:
        proc.add_row(*(Text(c) for c in _proc_cells(r, seconds)))
    return Group(head, proc, Text(""), table)
