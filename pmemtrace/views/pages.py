"""`pmemtrace pages PID [RANGE]`: a mincore2 for any process.

For each VMA (or the part of it inside RANGE): a header, a map strip with one character
per PMD-size block (2 MiB on x86-64), and one row per run of pages in the same state.
Data from pmemtrace.pagemap (PAGEMAP_SCAN, else pagemap+kpageflags). The pure pieces,
``parse_range``, ``strip_segments``/``strip`` and ``to_json``, are unit-tested.
"""
import json
import operator
import re
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .. import pagemap, procfs, vmas
from ..errors import BadRange, NoSuchProcess, ProcessExited
from ..pagemap import PageRun, VmaFacts
from .text import aligned, console as text_console, human_bytes, print_plain, printable

# ---------------------------------------------------------------- range parsing

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_NUM = re.compile(r"^(0[xX][0-9a-fA-F]+|[0-9]+)([KMGTkmgt]?)(i?[bB])?$")


def parse_number(text: str, allow_suffix: bool = False) -> int:
    """'0x7f00', '4096', and with allow_suffix '2M', '1G', '64KiB'."""
    m = _NUM.match(text.strip())
    if not m or ((m.group(2) or m.group(3)) and not allow_suffix):
        raise BadRange(f"not an address or size: {text!r}")
    if m.group(3) and not m.group(2):
        raise BadRange(f"not an address or size: {text!r}")
    digits = m.group(1)
    number = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits, 10)   # int("010", 0) raises
    return number * _UNITS[m.group(2).upper()]


def parse_range(spec: str, page_size: int = pagemap.PAGE_SIZE) -> Tuple[int, int]:
    """START-END or START+LEN -> [start, end), widened to whole pages."""
    spec = spec.strip()
    if "+" in spec:
        a, _, b = spec.partition("+")
        start = parse_number(a)
        end = start + parse_number(b, allow_suffix=True)
    elif "-" in spec:
        a, _, b = spec.partition("-")
        start, end = parse_number(a), parse_number(b)
    else:
        raise BadRange(f"range {spec!r}: expected START-END or START+LEN")
    if end <= start:
        raise BadRange(f"range {spec!r} is empty: end must be above start")
    if end > 1 << 64:
        raise BadRange(f"range {spec!r} ends beyond 64-bit addresses")
    start -= start % page_size
    end += -end % page_size
    return start, end


# ---------------------------------------------------------------- VMAs to show

@dataclass(frozen=True)
class Target:
    """One VMA and the part of it to scan."""
    block: procfs.Smaps
    lo: int
    hi: int


@dataclass(frozen=True)
class Section:
    """What is shown for one VMA: the scanned part [lo, hi), its facts and its runs."""
    block: procfs.Smaps
    lo: int
    hi: int
    facts: VmaFacts
    runs: Sequence[PageRun]


def select_targets(blocks: Sequence[procfs.Smaps], rng: Optional[Tuple[int, int]] = None,
                   vma_addr: Optional[int] = None) -> List[Target]:
    """VMAs to show, clipped to the range; BadRange when nothing is selected."""
    chosen = list(blocks)
    if vma_addr is not None:
        chosen = [b for b in chosen if b.map.start <= vma_addr < b.map.end]
        if not chosen:
            raise BadRange(f"no VMA contains {vma_addr:#x}")
    lo, hi = rng if rng else (0, 1 << 64)
    out = [Target(b, max(lo, b.map.start), min(hi, b.map.end))
           for b in chosen if b.map.start < hi and b.map.end > lo and b.map.path != "[vsyscall]"]
    if not out:
        where = f"{lo:#x}-{hi:#x}" if rng else "this process"
        raise BadRange(f"no VMA in {where}" + (f" contains {vma_addr:#x}" if vma_addr is not None else ""))
    return out


def walked(block: procfs.Smaps) -> bool:
    """PAGEMAP_SCAN skips VM_PFNMAP VMAs ([vvar], device mappings): their page tables hold raw
    PFNs with no struct page behind. pages says so instead of showing them absent."""
    return "pf" not in block.vmflags


# ---------------------------------------------------------------- map strip

STRIP_LEGEND = (("H", "huge"), ("s", "small only"), ("m", "mixed"), (".", "absent"), ("?", "size unknown"))
_HUGE, _SMALL, _UNKNOWN = 1, 2, 4


def _block_char(flags: int) -> str:
    if flags & _UNKNOWN:
        return "?"
    if flags == _HUGE:
        return "H"
    if flags == _SMALL:
        return "s"
    if flags == _HUGE | _SMALL:
        return "m"
    return "."


def strip_segments(runs: Sequence[PageRun], lo: int, hi: int,
                   block: Optional[int] = None) -> List[Tuple[str, int]]:
    """Run-length map of [lo, hi): (char, number of blocks), one char per ``block`` bytes.

    Blocks are aligned to ``block`` (the PMD size by default); a block counts a run if
    any present page of it lies in the block. Cost is O(runs), not O(blocks), so a
    mostly-empty terabyte VMA stays cheap.
    """
    block = block or pagemap.pmd_size()
    first, last = lo // block, (hi - 1) // block + 1          # block indexes [first, last)
    if last - first == 1:          # the whole range in one block (most VMAs of a many-VMA process)
        flags = 0
        for r in runs:
            if r.present and r.end > lo and r.start < hi:
                flags |= _UNKNOWN if r.huge is None else (_HUGE if r.huge else _SMALL)
        return [(_block_char(flags), 1)]
    # Sweep line over block indexes: +1/-1 per flag at run edges.
    events: Dict[int, List[int]] = {}
    for r in runs:
        if not r.present or r.end <= lo or r.start >= hi:
            continue
        flag = _UNKNOWN if r.huge is None else (_HUGE if r.huge else _SMALL)
        a, b = max(r.start, lo) // block, (min(r.end, hi) - 1) // block + 1
        events.setdefault(a, [0, 0, 0])[flag.bit_length() - 1] += 1
        events.setdefault(b, [0, 0, 0])[flag.bit_length() - 1] -= 1
    segs: List[Tuple[str, int]] = []
    counts = [0, 0, 0]
    pos = first
    for idx in sorted(events) + [last]:
        if idx > pos:
            flags = sum(1 << i for i, c in enumerate(counts) if c > 0)
            ch = _block_char(flags)
            n = min(idx, last) - pos
            if n > 0:
                if segs and segs[-1][0] == ch:
                    segs[-1] = (ch, segs[-1][1] + n)
                else:
                    segs.append((ch, n))
            pos = idx
        if idx in events:
            counts = [c + d for c, d in zip(counts, events[idx])]
    return segs


def strip(runs: Sequence[PageRun], lo: int, hi: int, block: Optional[int] = None) -> str:
    return "".join(ch * n for ch, n in strip_segments(runs, lo, hi, block))


def strip_lines(runs: Sequence[PageRun], lo: int, hi: int, width: int = 64,
                block: Optional[int] = None) -> List[Tuple[int, str]]:
    """The strip cut into (address, text) lines of ``width`` blocks; a stretch of wholly
    absent lines becomes one line reading '... N absent'."""
    block = block or pagemap.pmd_size()
    base = lo - lo % block
    lines: List[Tuple[int, str]] = []
    cur, cur_addr, absent_from, absent_blocks = "", base, None, 0
    addr = base
    for ch, n in strip_segments(runs, lo, hi, block):
        while n:
            take = min(n, width - len(cur))
            if ch == "." and not cur and take == width and n >= width:
                whole = (n // width) * width          # skip whole absent lines at once
                if absent_from is None:
                    absent_from, absent_blocks = addr, 0
                absent_blocks += whole
                addr += whole * block
                n -= whole
                continue
            if absent_from is not None:
                lines.append((absent_from, f"... {human(absent_blocks * block)} absent"))
                absent_from = None
            if not cur:
                cur_addr = addr
            cur += ch * take
            addr += take * block
            n -= take
            if len(cur) == width:
                lines.append((cur_addr, cur))
                cur = ""
    if absent_from is not None:
        lines.append((absent_from, f"... {human(absent_blocks * block)} absent"))
    if cur:
        lines.append((cur_addr, cur))
    return lines


# ---------------------------------------------------------------- text helpers

def human(n: Optional[int]) -> str:
    """Bytes, never rounded (run lengths and page sizes are exact): 4K, 2M, 1G, 1020K."""
    return human_bytes(n, exact=True)


def yes_no(v: Optional[bool]) -> str:
    return "?" if v is None else ("yes" if v else "no")


# ---------------------------------------------------------------- JSON

def run_dict(r: PageRun) -> dict:
    return {"start": r.start, "end": r.end, "length": r.length, "present": r.present,
            "page_size": r.page_size, "huge": r.huge, "kind": r.kind, "written": r.written,
            "soft_dirty": r.soft_dirty, "file": r.file, "swapped": r.swapped,
            "zero_pfn": r.zero_pfn, "guard": r.guard}


def source_notes(source: str, soft_dirty_tracked: bool) -> List[str]:
    """What this source cannot know, in words (shown as '?' in text, null in JSON)."""
    notes = []
    if source == pagemap.SOURCE_FALLBACK:
        notes.append("no PAGEMAP_SCAN on this kernel (6.7+): pagemap+kpageflags cannot tell a PMD-mapped "
                     "THP from a PTE-mapped one, nor the mapping size of DAX pages except where it is provable "
                     "(4K: no 2 MiB block can be one PMD leaf; 2M: pagemap flags the block PM_FILE, which only "
                     "its PMD path sets for DAX): page size unknown elsewhere")
    if not soft_dirty_tracked:
        notes.append("this kernel does not track soft-dirty (CONFIG_MEM_SOFT_DIRTY unset): soft-dirty unknown")
    return notes


def section_vma_dict(sec: Section) -> dict:
    m = sec.block.map
    return {"start": m.start, "end": m.end, "perms": m.perms, "path": m.path,
            "kind": sec.facts.kind, "hugetlb_page_size": sec.facts.hugetlb_page_size or None,
            "scanned_start": sec.lo, "scanned_end": sec.hi, "walked": walked(sec.block),
            "strip": strip(sec.runs, sec.lo, sec.hi) if walked(sec.block) else None}


def section_run_dicts(sec: Section) -> List[dict]:
    """run_dict of each run plus "vma_start" (built in one go: 60,000 VMAs have 60,000 runs or more)."""
    vma = sec.block.map.start
    return [{"start": r.start, "end": r.end, "length": r.end - r.start, "present": r.present,
             "page_size": r.page_size, "huge": r.huge, "kind": r.kind, "written": r.written,
             "soft_dirty": r.soft_dirty, "file": r.file, "swapped": r.swapped,
             "zero_pfn": r.zero_pfn, "guard": r.guard, "vma_start": vma} for r in sec.runs]


def to_json(pid: int, source: str, sections: Sequence[Section], notes: Sequence[str] = ()) -> dict:
    """{"pid", "source", "block_size", "runs": [...], "vmas": [...], "notes": [...]}: addresses
    and sizes as integers; each run names its VMA by "vma_start"; a VMA's "strip" uses
    STRIP_LEGEND; null means the source cannot know (see "notes")."""
    runs, vmas = [], []
    for sec in sections:
        vmas.append(section_vma_dict(sec))
        runs += section_run_dicts(sec)
    return {"pid": pid, "source": source, "block_size": pagemap.pmd_size(), "runs": runs, "vmas": vmas,
            "notes": list(notes)}


JSON_BATCH = 1000      # sections encoded per batch


def section_json_encoders() -> Tuple[Callable[[Section], List[str]], Callable[[Section], str]]:
    """(runs of a section, the section's VMA) as compact JSON text equal to json.dumps of
    section_run_dicts / section_vma_dict. Most runs and VMAs differ only in their addresses: the
    text of everything else is made by json.dumps once per distinct content (60,000 VMAs)."""
    run_state = operator.attrgetter(*RUN_STATE_KEYS)
    states: Dict[tuple, str] = {}
    middles: Dict[tuple, str] = {}
    strips: Dict[Optional[str], str] = {}

    def runs(sec: Section) -> List[str]:
        vma = sec.block.map.start
        out = []
        for r in sec.runs:
            key = run_state(r)
            mid = states.get(key)
            if mid is None:
                mid = states[key] = json.dumps(dict(zip(RUN_STATE_KEYS, key)))[1:-1]
            start, end = r.start, r.end
            out.append(f'{{"start": {start:d}, "end": {end:d}, "length": {end - start:d}, {mid}, "vma_start": {vma:d}}}')
        return out

    def vma(sec: Section) -> str:
        m, f = sec.block.map, sec.facts
        key = (m.perms, m.path, f.kind, f.hugetlb_page_size or None)
        mid = middles.get(key)
        if mid is None:
            mid = middles[key] = json.dumps(dict(zip(("perms", "path", "kind", "hugetlb_page_size"), key)))[1:-1]
        on = walked(sec.block)
        strip_text = strip(sec.runs, sec.lo, sec.hi) if on else None
        st = strips.get(strip_text)
        if st is None:
            st = strips[strip_text] = json.dumps(strip_text)
        return (f'{{"start": {m.start:d}, "end": {m.end:d}, {mid}, "scanned_start": {sec.lo:d}, '
                f'"scanned_end": {sec.hi:d}, "walked": {"true" if on else "false"}, "strip": {st}}}')
    return runs, vma


RUN_STATE_KEYS = ("present", "page_size", "huge", "kind", "written", "soft_dirty", "file", "swapped",
                  "zero_pfn", "guard")      # section_run_dicts' keys between "length" and "vma_start"


def write_json(out, pid: int, source: str, sections: Sequence[Section], notes: Sequence[str] = ()) -> None:
    """json.dumps(to_json(...)) byte for byte, written in batches of sections: the dicts of
    60,000 VMAs and their runs never exist (they took 170 MB); section_json_encoders makes the text."""
    run_text, vma_text = section_json_encoders()

    def items(make) -> None:
        first = True
        for i in range(0, len(sections), JSON_BATCH):
            batch: List[str] = []
            for sec in sections[i:i + JSON_BATCH]:
                got = make(sec)
                if isinstance(got, str):
                    batch.append(got)
                else:
                    batch += got
            if batch:
                out.write(("" if first else ", ") + ", ".join(batch))
                first = False

    head = json.dumps({"pid": pid, "source": source, "block_size": pagemap.pmd_size()})
    out.write(head[:-1] + ', "runs": [')
    items(run_text)
    out.write('], "vmas": [')
    items(vma_text)
    out.write('], "notes": ' + json.dumps(list(notes)) + "}\n")


# ---------------------------------------------------------------- runs table

RUN_COLUMNS = (("start", "<"), ("end", "<"), ("length", ">"), ("present", "<"), ("page size", ">"),
               ("kind", "<"), ("written", "<"), ("soft-dirty", "<"))


def presence(r: PageRun) -> str:
    """yes / zero-page / no / swapped / guard."""
    if r.present:
        return "zero-page" if r.zero_pfn else "yes"
    if r.guard:
        return "guard"
    return "swapped" if r.swapped else "no"


def run_cells(r: PageRun) -> Tuple[str, ...]:
    return (f"{r.start:#x}", f"{r.end:#x}", human(r.length), presence(r),
            human(r.page_size) if r.present else "-", r.kind,
            yes_no(r.written) if r.present or r.swapped else "-", yes_no(r.soft_dirty))


def run_table(runs: Sequence[PageRun]) -> List[str]:
    """Header and one aligned line per run (plain text: a rich Table is ~50x slower on
    thousands of runs, and this reads the same in a pipe)."""
    return aligned(RUN_COLUMNS, [run_cells(r) for r in runs])


# ---------------------------------------------------------------- rich rendering

def render(console, pid: int, comm: str, source: str,
           sections: Sequence[Section], notes: Sequence[str] = ()) -> None:
    """Everything as one rich Text, printed once (one print per line took seconds for
    thousands of VMAs). /proc text goes in through printable(), never as markup. The styles
    show on a terminal only: elsewhere the text is joined as plain str (rich builds and splits a
    Text piece by piece, style by style: 60,000 VMAs took 5 s)."""
    from rich.text import Text

    parts: List[Tuple[str, Optional[str]]] = [
        (f"pid {pid} ({printable(comm)})  source: {source}  "
         f"strip: one character per {human(pagemap.pmd_size())}\n", "bold"),
        ("legend: " + "  ".join(f"{ch} {name}" for ch, name in STRIP_LEGEND) + "\n", None)]
    add = parts.append
    for note in notes:
        add((f"note: {note}\n", "yellow"))
    for sec in sections:
        m, lo, hi, runs = sec.block.map, sec.lo, sec.hi, sec.runs
        add((f"\n{m.start:#x}-{m.end:#x} {m.perms} {human(m.size)} {sec.facts.kind}", "bold cyan"))
        tail = " " + printable(m.path) if m.path else ""
        if (lo, hi) != (m.start, m.end):
            tail += f"  (showing {lo:#x}-{hi:#x})"
        add((tail + "\n", None))
        if not walked(sec.block):
            add(("  not walked: a VM_PFNMAP mapping (raw PFNs, no pages behind them)\n", None))
            continue
        add(("".join(f"  {addr:#014x} {line}\n" for addr, line in strip_lines(runs, lo, hi)), None))
        lines = run_table(runs)
        add((lines[0] + "\n", "bold"))
        if len(lines) > 1:
            add(("\n".join(lines[1:]) + "\n", None))
    if not console.is_terminal:
        print_plain(console, "".join(text for text, _ in parts))
        return
    out = Text()
    for text, style in parts:
        out.append(text, style)
    console.print(out, soft_wrap=True, end="")


# ---------------------------------------------------------------- command

PAGES_KEYS = ("KernelPageSize",)      # the only smaps counter pages reads (facts_from_smaps)


def collect(pid: int, range_spec: Optional[str] = None, vma_addr: Optional[str] = None):
    """(comm, source, [Section]) for the command.

    Built for tens of thousands of VMAs: DAX is asked once per (device, inode), the facts once
    per distinct VMA description, and with PAGEMAP_SCAN the walked VMAs are read in one pass
    over their whole span, each VMA's runs cut from it (scan_split)."""
    rng = parse_range(range_spec) if range_spec else None
    addr = parse_number(vma_addr) if vma_addr is not None else None
    comm = procfs.check_pid(pid)
    with procfs.no_gc():
        blocks = procfs.read_smaps(pid, PAGES_KEYS, read_ahead=True)
        if not blocks and not pagemap.process_alive(pid):
            raise ProcessExited(f"pid {pid} has exited: no memory left to show")
        targets = select_targets(blocks, rng, addr)
        source = pagemap.SOURCE_SCAN if pagemap.scan_supported() else pagemap.SOURCE_FALLBACK
        dax_of: Dict[tuple, bool] = {}
        facts_of: Dict[tuple, VmaFacts] = {}

        def facts(block: procfs.Smaps) -> VmaFacts:
            m = block.map
            dax = False
            if m.inode:
                known = dax_of.get((m.dev, m.inode))
                if known is None:
                    known = dax_of[(m.dev, m.inode)] = vmas.file_facts(pid, m).dax != "none"
                dax = known
            key = (m.path, m.inode == 0, m.shared, block.vmflags, dax,
                   block.get("KernelPageSize") if "ht" in block.vmflags else 0)
            f = facts_of.get(key)
            if f is None:
                f = facts_of[key] = pagemap.facts_from_smaps(block, dax=dax)
            return f

        sections = []
        try:
            with pagemap.PageMap(pid) as pmap:               # one descriptor for every VMA
                chosen = [(t, facts(t.block)) for t in targets]
                if source == pagemap.SOURCE_SCAN:
                    walk = [(t.lo, t.hi, f) for t, f in chosen if walked(t.block)]
                    runs_of = iter(pagemap.scan_split(pid, walk, pmap=pmap))
                    for t, f in chosen:
                        sections.append(Section(t.block, t.lo, t.hi, f, next(runs_of) if walked(t.block) else []))
                else:
                    for t, f in chosen:
                        runs = pagemap.scan_fallback(pid, t.lo, t.hi, f, pmap=pmap) if walked(t.block) else []
                        sections.append(Section(t.block, t.lo, t.hi, f, runs))
                pmap.check_alive()
        except NoSuchProcess:
            raise ProcessExited(f"pid {pid} exited while being read") from None
    return comm, source, sections


def run(pid: int, range_spec: Optional[str] = None, vma_addr: Optional[str] = None,
        as_json: bool = False) -> None:
    comm, source, sections = collect(pid, range_spec, vma_addr)
    notes = source_notes(source, pagemap.soft_dirty_tracked())
    if as_json:
        with procfs.no_gc():
            write_json(sys.stdout, pid, source, sections, notes)
        return
    console = text_console(120)
    render(console, pid, comm, source, sections, notes)
