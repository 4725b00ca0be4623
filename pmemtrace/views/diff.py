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
from typing import Dict, List, Optional

from .. import groups, policy as policy_mod
from ..errors import BadInputFile, NoSuchProcess
from .text import human_bytes, printable

SCHEMA = 1
EXIT_REGRESSION = 12
MIN_GROUP_RSS = 2 << 20          # groups smaller than this never fail the gate
SQLITE_MAGIC = b"SQLite format 3\x00"


# ----------------------------------------------------------------- sources

def describe_source(doc: dict, source: str) -> dict:
    """folios_readable: whether that kernel could read folio sizes (report's folio_source);
    None for documents without folio keys."""
    return {"source": source, "pid": doc.get("pid"), "comm": doc.get("comm"), "kernel": doc.get("kernel"),
            "time": doc.get("time"),
            "folios_readable": (doc["folio_source"] is not None) if "folio_source" in doc else None}


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
                doc = reader.report_at(at, pid)
                faults = reader.vma_faults(at, doc["pid"])
            for v in doc["vmas"]:
                if v["start"] in faults:
                    v.update(faults[v["start"]])
            return doc, "record"
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


def _dropped(base: groups.GroupStats, new: groups.GroupStats, threshold_pct: Optional[float]) -> bool:
    """The huge share fell by more than threshold_pct points for certain: the base's lowest
    possible share (its unknown bytes all small) against the new one's highest (all huge). A side
    whose page sizes are unknown (6.1's DAX) can therefore never make a drop that did not happen."""
    if threshold_pct is None:
        return False
    b, n = base.share_bounds, new.share_bounds
    return b is not None and n is not None and (b[0] - n[1]) * 100 > threshold_pct


def _totals(vmas: list, pmd: int) -> groups.GroupStats:
    t = groups.GroupStats()
    for v in vmas:
        t.add(v, pmd)
    return t


def compare(base: dict, new: dict, threshold_pct: Optional[float] = None,
            base_source: str = "report", new_source: str = "report") -> dict:
    pmd = int(policy_mod.from_report(new).get("thp/hpage_pmd_size") or groups.PMD_SIZE)
    gb, gn = groups.group(base["vmas"], pmd), groups.group(new["vmas"], pmd)
    tb, tn = _totals(base["vmas"], pmd), _totals(new["vmas"], pmd)
    totals: Dict[str, Optional[dict]] = {key: _pair(getattr(tb, key), getattr(tn, key))
              for key in ("rss_bytes", "huge_bytes", "small_bytes", "huge_share", "unknown_bytes")}
    totals["vmas"] = _pair(len(base["vmas"]), len(new["vmas"]))
    totals["faults"] = _faults_pair(tb.faults, tn.faults)
    regression = _dropped(tb, tn, threshold_pct)
    failing: List[str] = ["totals"] if regression else []
    rows = []
    for key in sorted(set(gb) | set(gn)):
        b = gb[key].stats if key in gb else groups.GroupStats()
        n = gn[key].stats if key in gn else groups.GroupStats()
        g = gb.get(key) or gn[key]
        share = _pair(b.huge_share, n.huge_share)
        failed = max(b.rss_bytes, n.rss_bytes) >= MIN_GROUP_RSS and _dropped(b, n, threshold_pct)
        if failed:
            failing.append(key)
        rows.append({"key": key, "backing": g.backing, "path": g.path, "base": b.as_dict(), "new": n.as_dict(),
                     "huge_bytes_delta": n.huge_bytes - b.huge_bytes, "huge_share": share,
                     "faults": _faults_pair(b.faults, n.faults), "regression": failed})
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


def _faults_pair(base: Optional[dict], new: Optional[dict]) -> Optional[dict]:
    """{fault key: {base, new, delta}}; None when neither side counted faults."""
    if base is None and new is None:
        return None
    return {k: _pair(None if base is None else base[k], None if new is None else new[k])
            for k in groups.FAULT_KEYS}


# ----------------------------------------------------------------- text

def _pct(share: Optional[float]) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _share_text(side: dict) -> str:
    """A side's huge share: "?" where some of its RSS has an unknown page size, "-" without RSS."""
    return "?" if side.get("unknown_bytes") else _pct(side.get("huge_share"))


FAULT_NAMES = {"faults": "faults", "huge_faults": "huge", "dax_pmd_faults": "DAX PMD", "dax_pte_faults": "DAX PTE",
               "dax_fallbacks": "DAX fallbacks", "dax_needdsync": "NEEDDSYNC"}


def _folios(fb: Optional[dict]) -> str:
    if fb is None:
        return "?"
    return " + ".join(f"{human_bytes(n)} in {human_bytes(int(size))}" for size, n in fb.items() if n) or "none"


def folio_text(b: dict, n: dict) -> Optional[str]:
    """Folio sizes base -> new where they differ; "?" for a side that cannot tell (no PAGEMAP_SCAN
    before 6.7, or DAX memory without struct pages): unknown, not a loss."""
    fb, fn = b.get("folio_bytes"), n.get("folio_bytes")
    if fb == fn or ("folio_bytes" not in b and "folio_bytes" not in n):
        return None
    text = f"folios {_arrow(_folios(fb), _folios(fn))}"
    if fb is None or fn is None:
        text += " (? = unknown on that side's kernel, not a change)"
    return text


def dax_tag(side: dict) -> str:
    """ "fsdax MAP_SYNC" for a group of DAX / MAP_SYNC VMAs ("MAP_SYNC 1/2" where only some are)."""
    words = list(side.get("dax") or {})
    sync, n = side.get("vm_sync_vmas") or 0, side.get("vmas") or 0
    if sync:
        words.append("MAP_SYNC" if sync == n else f"MAP_SYNC {sync}/{n}")
    return " ".join(words)


def fault_text(faults: Optional[dict]) -> Optional[str]:
    """The fault counts that differ, "faults 8192 -> 16, DAX PMD 0 -> 8"; "?" for a side that counted none."""
    if faults is None:
        return None
    changed = [f"{FAULT_NAMES[k]} {_arrow(p['base'], p['new'], lambda x: '?' if x is None else str(x))}"
               for k, p in faults.items() if p["base"] != p["new"]]
    return ", ".join(changed) or None


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
            or max(b["rss_bytes"], n["rss_bytes"]) >= MIN_GROUP_RSS or b.get("unknown_bytes") != n.get("unknown_bytes")
            or fault_text(g.get("faults")) is not None
            or (b.get("folio_bytes") is not None and n.get("folio_bytes") is not None
                and b["folio_bytes"] != n["folio_bytes"]))


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
    share_b = _share_text({"huge_share": share["base"], "unknown_bytes": t["unknown_bytes"]["base"]})
    share_n = _share_text({"huge_share": share["new"], "unknown_bytes": t["unknown_bytes"]["new"]})
    lines = [verdict,
             f"huge {_arrow(t['huge_bytes']['base'], t['huge_bytes']['new'], human_bytes)}  "
             f"share {_arrow(share_b, share_n)}  "
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
                     f"{_arrow(_share_text(b), _share_text(n)):>15} "
                     f"{_arrow(b['misaligned_vmas'], n['misaligned_vmas']):>10}  {printable(g['key'])}"
                     + (f"  [{_arrow(dax_tag(b), dax_tag(n))}]" if dax_tag(b) or dax_tag(n) else ""))
        if b["unknown_vmas"] or n["unknown_vmas"]:
            lines.append(f"    page size unknown (DAX on a kernel without PAGEMAP_SCAN) for "
                         f"{_arrow(b['unknown_vmas'], n['unknown_vmas'])} VMAs, "
                         f"{_arrow(b['unknown_bytes'], n['unknown_bytes'], human_bytes)}: counted neither huge nor "
                         f"small, and never as a drop")
        folios = folio_text(b, n)
        if folios:
            lines.append(f"    {folios}")
        faults = fault_text(g.get("faults"))
        if faults:
            lines.append(f"    {faults}")
        if set(b["thp_reasons"]) != set(n["thp_reasons"]):
            for reason in sorted(set(b["thp_reasons"]) - set(n["thp_reasons"])):
                lines.append(f"    THP reason gone: {printable(reason)}")
            for reason in sorted(set(n["thp_reasons"]) - set(b["thp_reasons"])):
                lines.append(f"    THP reason new:  {printable(reason)}")
    if quiet:
        lines.append(f"  ... and {len(quiet)} unchanged groups under {human_bytes(MIN_GROUP_RSS)} of RSS "
                     "(all of them in --json)")
    for side in ("base", "new"):
        if d[side].get("folios_readable") is False:
            lines.append(f"  folio sizes: unknown on the {side} side ({printable(str(d[side]['kernel']))} has no "
                         f"PAGEMAP_SCAN, 6.7+): shown as ?, never as a change")
    changes = [p for p in d["policy"] if p["key"] != "kernel"]
    lines.append("")
    lines.append("policy: unchanged" if not changes else "policy:")
    def value(v: Optional[str]) -> str:
        return "(absent)" if v is None else printable(str(v))
    for p in changes:
        lines.append(f"  {printable(p['key'])}: {value(p['base'])} -> {value(p['new'])}")
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
