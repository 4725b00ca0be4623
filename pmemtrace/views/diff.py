"""`pmemtrace diff BASE NEW`: what changed in huge-page coverage between two runs, a CI gate.

BASE and NEW are each a `report --json` file, a `record` file (its last snapshot, or the
one in force at --at) or a live PID. VMAs are matched by identity (pmemtrace.groups), not by
address. compare() is pure: two report documents in, the schema-1 diff document out.
Exit 12 when the huge share of resident memory fell by more than --fail-on-drop percentage
points, in the totals or in a group holding at least 2 MiB of RSS.
"""
import json
import os
import sys
from typing import List, Optional

from .. import groups, policy as policy_mod
from ..errors import BadInputFile, NoSuchProcess
from .text import human_bytes, printable

SCHEMA = 1
EXIT_REGRESSION = 12
MIN_GROUP_RSS = 2 << 20          # groups smaller than this never fail the gate
SQLITE_MAGIC = b"SQLite format 3\x00"


# ----------------------------------------------------------------- sources

def describe_source(doc: dict, source: str) -> dict:
    return {"source": source, "pid": doc.get("pid"), "comm": doc.get("comm"), "kernel": doc.get("kernel"),
            "time": doc.get("time")}


def check_report(doc: object, name: str) -> dict:
    if not isinstance(doc, dict) or not isinstance(doc.get("vmas"), list) or "pid" not in doc:
        raise BadInputFile(f"{name}: not a `pmemtrace report --json` document or a record file")
    for v in doc["vmas"]:
        if not isinstance(v, dict) or not {"start", "end", "perms", "backing"} <= set(v):
            raise BadInputFile(f"{name}: a VMA without start/end/perms/backing: not a report --json document")
    return doc


def load(spec: str, at: Optional[str] = None, pid: Optional[int] = None):
    """(report document, source name) for a file or a live pid."""
    if os.path.exists(spec):
        try:
            with open(spec, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as e:
            raise BadInputFile(f"{spec}: cannot read: {e.strerror}") from None
        if head == SQLITE_MAGIC:
            from .. import store
            with store.Reader(spec) as reader:
                return reader.report_at(at, pid), "record"
        try:
            with open(spec, encoding="utf-8") as f:
                doc = json.load(f)
        except (UnicodeDecodeError, ValueError):
            raise BadInputFile(f"{spec}: neither a report --json document nor a record file") from None
        return check_report(doc, spec), "report"
    if spec.isdigit():
        from .. import kernel, vmas
        from . import report
        proc = vmas.describe_process(int(spec))
        return report.build_json(proc, False, kernel.thp_policy()), "live"
    raise NoSuchProcess(f"{spec}: no such file, and not a pid")


# ----------------------------------------------------------------- compare (pure)

def _pair(base, new) -> dict:
    delta = None if base is None or new is None else new - base
    return {"base": base, "new": new, "delta": delta}


def _share(huge: int, rss: int) -> Optional[float]:
    return huge / rss if rss else None


def _dropped(share: dict, threshold_pct: Optional[float]) -> bool:
    return threshold_pct is not None and share["delta"] is not None and -share["delta"] * 100 > threshold_pct


def compare(base: dict, new: dict, threshold_pct: Optional[float] = None,
            base_source: str = "report", new_source: str = "report") -> dict:
    pmd = int(policy_mod.from_report(new).get("thp/hpage_pmd_size") or groups.PMD_SIZE)
    gb, gn = groups.group(base["vmas"], pmd), groups.group(new["vmas"], pmd)
    totals = {}
    for key in ("rss_bytes", "huge_bytes", "small_bytes"):
        totals[key] = _pair(sum(v.get(key) or 0 for v in base["vmas"]), sum(v.get(key) or 0 for v in new["vmas"]))
    totals["huge_share"] = _pair(_share(totals["huge_bytes"]["base"], totals["rss_bytes"]["base"]),
                                 _share(totals["huge_bytes"]["new"], totals["rss_bytes"]["new"]))
    totals["vmas"] = _pair(len(base["vmas"]), len(new["vmas"]))
    regression = _dropped(totals["huge_share"], threshold_pct)
    failing: List[str] = ["totals"] if regression else []
    rows = []
    for key in sorted(set(gb) | set(gn)):
        b = gb[key].stats if key in gb else groups.GroupStats()
        n = gn[key].stats if key in gn else groups.GroupStats()
        g = gb.get(key) or gn[key]
        share = _pair(b.huge_share, n.huge_share)
        failed = max(b.rss_bytes, n.rss_bytes) >= MIN_GROUP_RSS and _dropped(share, threshold_pct)
        if failed:
            failing.append(key)
        rows.append({"key": key, "backing": g.backing, "path": g.path, "base": b.as_dict(), "new": n.as_dict(),
                     "huge_bytes_delta": n.huge_bytes - b.huge_bytes, "huge_share": share,
                     "regression": failed})
    rows.sort(key=lambda r: (r["huge_bytes_delta"], r["key"]))       # most huge bytes lost first
    return {
        "schema": SCHEMA,
        "base": describe_source(base, base_source),
        "new": describe_source(new, new_source),
        "totals": totals,
        "groups": rows,
        "policy": policy_mod.changes(policy_mod.from_report(base), policy_mod.from_report(new)),
        "regression": bool(failing),
        "threshold_pct": threshold_pct,
        "failing": failing,
    }


# ----------------------------------------------------------------- text

def _pct(share: Optional[float]) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _arrow(b, n, fmt=str) -> str:
    return fmt(b) if b == n else f"{fmt(b)} -> {fmt(n)}"


def _side(s: dict) -> str:
    where = f"pid {s['pid']} ({printable(str(s['comm']))})" if s.get("pid") is not None else "?"
    return f"{where} from {s['source']}"


def shown(g: dict) -> bool:
    """Text output lists a group if it changed (VMAs, bytes, alignment, THP reasons) or is big."""
    b, n = g["base"], g["new"]
    keys = ("vmas", "huge_bytes", "small_bytes", "misaligned_vmas")
    return (any(b[k] != n[k] for k in keys) or set(b["thp_reasons"]) != set(n["thp_reasons"])
            or max(b["rss_bytes"], n["rss_bytes"]) >= MIN_GROUP_RSS)


def text_lines(d: dict) -> List[str]:
    t = d["totals"]
    share = t["huge_share"]
    if d["threshold_pct"] is None:
        verdict = "no threshold given (--fail-on-drop PCT makes this a gate)"
    elif d["regression"]:
        where = ", ".join(printable(k) for k in d["failing"])
        verdict = f"REGRESSION: huge share fell more than {d['threshold_pct']:g} points in: {where}"
    else:
        verdict = f"OK: no huge-share drop beyond {d['threshold_pct']:g} points"
    lines = [verdict,
             f"huge {_arrow(t['huge_bytes']['base'], t['huge_bytes']['new'], human_bytes)}  "
             f"share {_arrow(share['base'], share['new'], _pct)}  "
             f"rss {_arrow(t['rss_bytes']['base'], t['rss_bytes']['new'], human_bytes)}  "
             f"vmas {_arrow(t['vmas']['base'], t['vmas']['new'])}",
             f"base: {_side(d['base'])}   new: {_side(d['new'])}",
             "",
             f"  {'VMAS':>9} {'RSS':>13} {'HUGE':>13} {'SMALL':>13} {'HUGE%':>15} {'MISALIGNED':>10}  GROUP"]
    quiet = [g for g in d["groups"] if not shown(g)]
    for g in d["groups"]:
        if not shown(g):
            continue
        b, n = g["base"], g["new"]
        mark = "!" if g["regression"] else " "
        lines.append(f"{mark} {_arrow(b['vmas'], n['vmas']):>9} "
                     f"{_arrow(b['rss_bytes'], n['rss_bytes'], human_bytes):>13} "
                     f"{_arrow(b['huge_bytes'], n['huge_bytes'], human_bytes):>13} "
                     f"{_arrow(b['small_bytes'], n['small_bytes'], human_bytes):>13} "
                     f"{_arrow(b['huge_share'], n['huge_share'], _pct):>15} "
                     f"{_arrow(b['misaligned_vmas'], n['misaligned_vmas']):>10}  {printable(g['key'])}")
        if b["unknown_vmas"] or n["unknown_vmas"]:
            lines.append(f"    page size unknown (DAX on a kernel without PAGEMAP_SCAN) for "
                         f"{_arrow(b['unknown_vmas'], n['unknown_vmas'])} VMAs: their bytes count as neither")
        if set(b["thp_reasons"]) != set(n["thp_reasons"]):
            for reason in sorted(set(b["thp_reasons"]) - set(n["thp_reasons"])):
                lines.append(f"    THP reason gone: {printable(reason)}")
            for reason in sorted(set(n["thp_reasons"]) - set(b["thp_reasons"])):
                lines.append(f"    THP reason new:  {printable(reason)}")
    if quiet:
        lines.append(f"  ... and {len(quiet)} unchanged groups under {human_bytes(MIN_GROUP_RSS)} of RSS "
                     "(all of them in --json)")
    changes = [p for p in d["policy"] if p["key"] != "kernel"]
    lines.append("")
    lines.append("policy: unchanged" if not changes else "policy:")
    for p in changes:
        lines.append(f"  {printable(p['key'])}: {printable(str(p['base']))} -> {printable(str(p['new']))}")
    kb, kn = d["base"]["kernel"], d["new"]["kernel"]
    lines.append(f"kernel: {printable(str(kb))} -> {printable(str(kn))}" if kb != kn
                 else f"kernel: unchanged ({printable(str(kb))})")
    return lines


def run(base: str, new: str, as_json: bool = False, fail_on_drop: Optional[float] = None,
        at: Optional[str] = None, pid: Optional[int] = None, out=None) -> int:
    out = out or sys.stdout
    base_doc, base_source = load(base, at, pid)
    new_doc, new_source = load(new, at, pid)
    d = compare(base_doc, new_doc, fail_on_drop, base_source, new_source)
    if as_json:
        out.write(json.dumps(d, indent=2) + "\n")
    else:
        out.write("\n".join(text_lines(d)) + "\n")
    out.flush()
    return EXIT_REGRESSION if d["regression"] else 0
