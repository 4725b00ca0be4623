"""`pmemtrace plot FILE -o OUT.svg|OUT.html`: a picture, self-contained (no script, font or
style from the network: plain SVG, wrapped in a minimal HTML page for .html).

- A record file: huge share over time, one lane per VMA group (pmemtrace.groups) of the
  watched processes, from the stored snapshots (a snapshot holds until the next one); under
  them the system's THP fault rates (/proc/vmstat thp_fault_alloc, thp_fault_fallback) and DAX
  fault rates (PMD, PTE, fallback) per interval.
- A `pages --json` document: the address space as lanes of 2 MiB blocks (one lane per VMA,
  wrapped), each block coloured huge / small / mixed / absent / DAX, from pages' own strip.
- A `report --json` document: one bar per VMA split into huge / small / not resident bytes
  (report knows how many bytes, not where: the bar shows proportions, not positions).
"""
import json
import os
from html import escape as _escape
from typing import Dict, List, Tuple

from .. import groups
from ..errors import BadInputFile, BadOutputFile
from .diff import SQLITE_MAGIC
from .text import human_bytes, printable

COLORS = {"huge": "#2e7d32", "small": "#f9a825", "mixed": "#ef6c00", "absent": "#e0e0e0", "dax": "#1565c0",
          "unknown": "#9e9e9e"}
STRIP_CLASS = {"H": "huge", "s": "small", "m": "mixed", ".": "absent", "?": "unknown"}
LANE_COLORS = ("#2e7d32", "#c62828", "#1565c0", "#6a1b9a", "#ef6c00", "#00838f", "#4e342e", "#ad1457")
MAX_LANES = 24
MAX_VMA_LANES = 200
BLOCKS_PER_ROW = 128
MIN_GROUP_RSS = 2 << 20
FONT = "font-family='DejaVu Sans, Arial, sans-serif' font-size='12'"


def esc(text: str) -> str:
    return _escape(printable(str(text)), quote=True)


def _svg(width: int, height: int, body: List[str], title: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' {FONT}>\n<title>{esc(title)}</title>\n"
            f"<rect x='0' y='0' width='{width}' height='{height}' fill='white'/>\n" + "\n".join(body) + "\n</svg>\n")


def _legend(x: int, y: int, items: List[Tuple[str, str]]) -> List[str]:
    out = []
    for label, color in items:
        out.append(f"<rect class='legend' x='{x}' y='{y - 10}' width='12' height='12' fill='{color}'/>"
                   f"<text x='{x + 16}' y='{y}'>{esc(label)}</text>")
        x += 24 + 7 * len(label)
    return out


# ----------------------------------------------------------------- record files

def group_series(snapshots: List[Tuple[float, int, dict]]) -> Dict[str, List[Tuple[float, int, int]]]:
    """{lane name: [(time, huge bytes, rss bytes)]} per group, one point per snapshot of its process."""
    pids = {pid for _, pid, _ in snapshots}
    series: Dict[str, List[Tuple[float, int, int]]] = {}
    last_keys: Dict[int, set] = {}
    for t, pid, doc in snapshots:
        prefix = f"{pid} {doc.get('comm', '')}: " if len(pids) > 1 else ""
        g = groups.group(doc.get("vmas", []))
        for key in last_keys.get(pid, set()) - set(g):          # a group that vanished: 0 from here on
            series[prefix + key].append((t, 0, 0))
        for key, grp in g.items():
            series.setdefault(prefix + key, []).append((t, grp.stats.huge_bytes, grp.stats.rss_bytes))
        last_keys[pid] = set(g)
    return series


def system_rates(frames: List[Tuple[float, dict]]) -> Dict[str, List[Tuple[float, float]]]:
    """Per-second rates of the system counters each frame carries (counts per interval)."""
    out: Dict[str, List[Tuple[float, float]]] = {k: [] for k in ("thp_fault_alloc", "thp_fault_fallback",
                                                                  "dax pmd", "dax pte", "dax fallback")}
    for t, f in frames:
        sec = f.get("interval") or 1.0
        vm, dax = f.get("system", {}).get("vmstat", {}), f.get("system", {}).get("dax", {})
        out["thp_fault_alloc"].append((t, (vm.get("thp_fault_alloc") or 0) / sec))
        out["thp_fault_fallback"].append((t, (vm.get("thp_fault_fallback") or 0) / sec))
        out["dax pmd"].append((t, (dax.get("pmd_huge") or 0) / sec))
        out["dax pte"].append((t, ((dax.get("pte") or 0) + (dax.get("pte_needdsync") or 0)) / sec))
        out["dax fallback"].append((t, (dax.get("pmd_fallback") or 0) / sec))
    return out


def record_svg(snapshots, frames, started: float, title: str) -> str:
    times = [t for t, _ in frames] + [t for t, _, _ in snapshots]
    t0 = started
    t1 = max(times) if times else started + 1
    t1 = max(t1, t0 + 1)
    lanes = group_series(snapshots)
    lanes = {k: v for k, v in lanes.items() if max(r for _, _, r in v) >= MIN_GROUP_RSS}
    order = sorted(lanes, key=lambda k: -max(r for _, _, r in lanes[k]))[:MAX_LANES]
    left, width, lane_h, gap = 330, 760, 44, 10
    x = lambda t: left + (t - t0) / (t1 - t0) * width          # noqa: E731
    body = [f"<text x='10' y='22' font-size='16' font-weight='bold'>{esc(title)}</text>",
            f"<text x='10' y='40'>huge share of resident memory per VMA group over "
            f"{t1 - t0:.0f} s (a snapshot holds until the next)</text>"]
    y = 60
    if not order:
        body.append(f"<text class='empty' x='{left}' y='{y + 20}'>no VMA group with 2 MiB of RSS recorded</text>")
        y += lane_h + gap
    for i, key in enumerate(order):
        pts = lanes[key]
        color = LANE_COLORS[i % len(LANE_COLORS)]
        body.append(f"<g class='lane' data-group='{esc(key)}'>")
        body.append(f"<rect x='{left}' y='{y}' width='{width}' height='{lane_h}' fill='#f5f5f5' stroke='#bdbdbd'/>")
        last_share = 0.0
        for j, (t, huge, rss) in enumerate(pts):
            t_next = pts[j + 1][0] if j + 1 < len(pts) else t1
            share = huge / rss if rss else 0.0
            last_share = share
            h = share * lane_h
            body.append(f"<rect class='share' x='{x(t):.1f}' y='{y + lane_h - h:.1f}' "
                        f"width='{max(x(t_next) - x(t), 1.0):.1f}' height='{h:.1f}' fill='{color}'/>")
        last = pts[-1]
        body.append(f"<text x='10' y='{y + 18}'>{esc(key[:44])}</text>")
        body.append(f"<text x='10' y='{y + 34}' fill='#616161'>{human_bytes(last[1])} huge of "
                    f"{human_bytes(last[2])} ({100 * last_share:.0f}% at the end)</text>")
        body.append("</g>")
        y += lane_h + gap
    rates = system_rates(frames)
    for name, keys in (("THP faults /s", ("thp_fault_alloc", "thp_fault_fallback")),
                       ("DAX faults /s", ("dax pmd", "dax pte", "dax fallback"))):
        top = max([v for k in keys for _, v in rates[k]] + [1.0])
        body.append(f"<g class='rates' data-rates='{esc(name)}'>")
        body.append(f"<rect x='{left}' y='{y}' width='{width}' height='{lane_h * 2}' fill='#fafafa' stroke='#bdbdbd'/>")
        body.append(f"<text x='10' y='{y + 18}'>{esc(name)} (max {top:.0f})</text>")
        for n, k in enumerate(keys):
            line = " ".join(f"{x(t):.1f},{y + 2 * lane_h - v / top * 2 * lane_h:.1f}" for t, v in rates[k])
            color = LANE_COLORS[n]
            if line:
                body.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{line}'/>")
            body.append(f"<text x='10' y='{y + 36 + 16 * n}' fill='{color}'>{esc(k)}</text>")
        body.append("</g>")
        y += 2 * lane_h + gap
    body.append(f"<text x='{left}' y='{y + 14}'>0 s</text>"
                f"<text x='{left + width}' y='{y + 14}' text-anchor='end'>{t1 - t0:.0f} s</text>")
    return _svg(left + width + 20, y + 30, body, title)


# ----------------------------------------------------------------- pages / report documents

def pages_svg(doc: dict, title: str) -> str:
    block = doc.get("block_size") or groups.PMD_SIZE
    dax_vmas = {r.get("vma_start") for r in doc.get("runs", []) if r.get("kind") == "dax" and r.get("present")}
    vmas = sorted(doc.get("vmas", []), key=lambda v: -(v["end"] - v["start"]))[:MAX_VMA_LANES]
    vmas.sort(key=lambda v: v["start"])
    cell, left = 6, 330
    body = [f"<text x='10' y='22' font-size='16' font-weight='bold'>{esc(title)}</text>",
            f"<text x='10' y='40'>address space, one cell per {human_bytes(block)} block</text>"]
    body += _legend(left, 40, [(k, COLORS[k]) for k in ("huge", "small", "mixed", "absent", "dax")])
    y = 56
    for v in vmas:
        strip = v.get("strip") or ""
        rows = max(1, -(-len(strip) // BLOCKS_PER_ROW))
        body.append(f"<g class='vma' data-start='{v['start']:#x}'>")
        body.append(f"<text x='10' y='{y + 9}'>{v['start']:#x} {human_bytes(v['end'] - v['start'])} "
                    f"{esc((v.get('path') or v.get('kind') or '')[-28:])}</text>")
        for i, ch in enumerate(strip):
            cls = STRIP_CLASS.get(ch, "unknown")
            if v["start"] in dax_vmas and cls != "absent":
                cls = "dax"
            bx, by = left + (i % BLOCKS_PER_ROW) * cell, y + (i // BLOCKS_PER_ROW) * cell
            body.append(f"<rect class='block {cls}' x='{bx}' y='{by}' width='{cell - 1}' height='{cell - 1}' "
                        f"fill='{COLORS[cls]}'/>")
        body.append("</g>")
        y += rows * cell + 8
    return _svg(left + BLOCKS_PER_ROW * cell + 20, y + 20, body, title)


def report_svg(doc: dict, title: str) -> str:
    vmas = sorted(doc.get("vmas", []), key=lambda v: -(v["end"] - v["start"]))[:MAX_VMA_LANES]
    vmas.sort(key=lambda v: v["start"])
    left, width, h = 330, 600, 14
    body = [f"<text x='10' y='22' font-size='16' font-weight='bold'>{esc(title)}</text>",
            "<text x='10' y='40'>per VMA: bytes huge / small / not resident (proportions, not positions)</text>"]
    body += _legend(left, 56, [(k, COLORS[k]) for k in ("huge", "small", "absent", "dax")])
    y = 66
    for v in vmas:
        size = v["end"] - v["start"]
        huge, small = v.get("huge_bytes") or 0, v.get("small_bytes") or 0
        dax = v.get("dax", "none") != "none"
        body.append(f"<g class='vma' data-start='{v['start']:#x}'>")
        body.append(f"<text x='10' y='{y + 11}'>{v['start']:#x} {human_bytes(size)} "
                    f"{esc((v.get('path') or v.get('backing') or '')[-28:])}</text>")
        xpos = float(left)
        for cls, n in (("dax" if dax else "huge", huge), ("dax" if dax else "small", small),
                       ("absent", max(size - huge - small, 0))):
            w = width * n / size if size else 0
            if w > 0:
                body.append(f"<rect class='block {cls}' x='{xpos:.1f}' y='{y}' width='{w:.1f}' height='{h}' "
                            f"fill='{COLORS[cls]}'/>")
            xpos += w
        body.append("</g>")
        y += h + 4
    return _svg(left + width + 20, y + 20, body, title)


# ----------------------------------------------------------------- entry

def html_page(svg: str, title: str) -> str:
    return ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>" + esc(title) + "</title></head>\n"
            "<body style='margin:8px;background:white'>\n" + svg + "</body></html>\n")


def render_file(path: str) -> Tuple[str, str]:
    """(svg, title) for a record file, a pages --json or a report --json document."""
    try:
        with open(path, "rb") as raw:
            head = raw.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise BadInputFile(f"{path}: cannot read: {e.strerror}") from None
    name = os.path.basename(path)
    if head == SQLITE_MAGIC:
        from .. import store
        with store.Reader(path) as r:
            frames = [(t, f) for _, t, f in r.frames()]
            snaps = r.snapshots()
            if not frames:
                raise BadInputFile(f"{path}: no complete interval recorded")
            title = f"pmemtrace record {name}: kernel {r.meta.get('kernel', '?')}, {len(frames)} intervals"
            return record_svg(snaps, frames, r.started, title), title
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (UnicodeDecodeError, ValueError):
        raise BadInputFile(f"{path}: not a record file, pages --json or report --json document") from None
    if isinstance(doc, dict) and isinstance(doc.get("runs"), list) and isinstance(doc.get("vmas"), list):
        title = f"pmemtrace pages: pid {doc.get('pid')} ({doc.get('source')})"
        return pages_svg(doc, title), title
    if isinstance(doc, dict) and isinstance(doc.get("vmas"), list) and "totals" in doc:
        title = f"pmemtrace report: pid {doc.get('pid')} ({doc.get('comm')}), kernel {doc.get('kernel')}"
        return report_svg(doc, title), title
    raise BadInputFile(f"{path}: not a record file, pages --json or report --json document")


def run(path: str, output: str) -> int:
    svg, title = render_file(path)
    text = svg if output.endswith(".svg") else html_page(svg, title)
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise BadOutputFile(f"plot: cannot write {output}: {e.strerror}") from None
    return 0

