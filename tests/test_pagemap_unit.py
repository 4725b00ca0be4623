"""Unit tests (no root) for pmemtrace.pagemap and the `pages` view.

Fixtures: tests/fixtures/pagemap_workload_smaps.txt and pagemap_workload.json were
captured from tests/workloads/pages_workload.c (with 4 MiB of hugetlb) on Linux 6.18:
the smaps of the process, the raw PAGEMAP_SCAN regions of its whole address space,
and raw /proc/PID/pagemap words + /proc/kpageflags for two small ranges.
"""
import ctypes
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from pmemtrace import pagemap as pm
from pmemtrace import procfs, vmas
from pmemtrace.errors import BadRange
from pmemtrace.pagemap import PageRun, VmaFacts
from pmemtrace.views import pages

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
MIB = 1 << 20
K4 = 4096


@pytest.fixture(scope="module")
def smaps():
    with open(os.path.join(FIX, "pagemap_workload_smaps.txt")) as f:
        return procfs.parse_smaps(f.read())


@pytest.fixture(scope="module")
def captured():
    with open(os.path.join(FIX, "pagemap_workload.json")) as f:
        return json.load(f)


def block_at(smaps, addr):
    return next(b for b in smaps if b.map.start <= addr < b.map.end)


def runs_in(regions, lo, hi):
    """Captured whole-address-space regions clipped to [lo, hi)."""
    return [(max(s, lo), min(e, hi), c) for s, e, c in regions if s < hi and e > lo]


def run(start, end, present=True, huge=False, page_size=K4, kind="anon", **kw):
    base = dict(written=True if present else None, soft_dirty=False, file=False if present else None)
    base.update(kw)
    return PageRun(start, end, present, huge, page_size if present else None, kind, **base)


# ---------------------------------------------------------------- uapi layout

def test_struct_layout_matches_uapi():
    assert ctypes.sizeof(pm.PageRegion) == 24
    assert ctypes.sizeof(pm.PmScanArg) == 12 * 8
    offsets = {name: getattr(pm.PmScanArg, name).offset for name, _ in pm.PmScanArg._fields_}
    assert offsets["size"] == 0 and offsets["walk_end"] == 32 and offsets["vec"] == 40
    assert offsets["max_pages"] == 56 and offsets["return_mask"] == 88


def test_ioctl_number_is_iowr_f_16():
    # asm-generic: dir (read|write = 3) << 30 | size << 16 | 'f' << 8 | 16
    assert pm.iowr(ord("f"), 16, 96, machine="x86_64") == (3 << 30) | (96 << 16) | (0x66 << 8) | 16
    # powerpc: 13 size bits, read=2 write=4 in the 3 bits above them
    assert pm.iowr(ord("f"), 16, 96, machine="ppc64le") == (6 << 29) | (96 << 16) | (0x66 << 8) | 16
    with pytest.raises(ValueError):
        pm.ioc(3, 1, 1, 1 << 14)
    assert pm.PAGEMAP_SCAN == pm.iowr(ord("f"), 16, ctypes.sizeof(pm.PmScanArg))


def test_category_bits():
    bits = [pm.PAGE_IS_WPALLOWED, pm.PAGE_IS_WRITTEN, pm.PAGE_IS_FILE, pm.PAGE_IS_PRESENT, pm.PAGE_IS_SWAPPED,
            pm.PAGE_IS_PFNZERO, pm.PAGE_IS_HUGE, pm.PAGE_IS_SOFT_DIRTY, pm.PAGE_IS_GUARD]
    assert bits == [1 << i for i in range(9)]
    assert set(pm.CATEGORY_NAMES) == set(bits)


class FakeKernel:
    """PAGEMAP_SCAN over a fixed list of regions, with 6.18's stale walk_end after an
    intermediate bounce-buffer flush (seen on this kernel), for the ioctl loop."""

    def __init__(self, regions, bounce=4):
        self.regions, self.bounce, self.calls = regions, bounce, 0

    def __call__(self, fd, arg):
        self.calls += 1
        todo = [r for r in self.regions if r[1] > arg.start and r[0] < arg.end]
        todo = [(max(s, arg.start), e, c) for s, e, c in todo]
        out = todo[:arg.vec_len]
        walk_end = 0
        if len(todo) > arg.vec_len:
            walk_end = todo[arg.vec_len][0]                   # the vector filled: stop there
        elif len(out) > self.bounce:
            walk_end = out[(len(out) - 1) // self.bounce * self.bounce][0]   # stale: an earlier flush
        arg.walk_end = walk_end or arg.end
        vec = (pm.PageRegion * arg.vec_len).from_address(arg.vec)
        for i, r in enumerate(out):
            vec[i].start, vec[i].end, vec[i].categories = r
        return len(out)


@pytest.mark.parametrize("vec_len", [1, 3, 4, 5, 8, 100])
def test_scan_loop_covers_range_once(monkeypatch, vec_len):
    regions = [(i * K4, (i + 1) * K4, 8 if i % 2 else 0) for i in range(11)]
    fake = FakeKernel(regions)
    monkeypatch.setattr(pm.scanner, "_ioctl_scan", fake)   # where scan_regions_fd looks it up
    got = list(pm.scan_regions_fd(-1, 0, 11 * K4, return_mask=0xFF, vec_len=vec_len))
    assert got == regions
    assert fake.calls == -(-11 // vec_len)                     # ceil: each call fills the vector


def test_default_vec_len_is_bounce_buffer():
    assert pm.default_vec_len() == pm.pmd_size() // pm.PAGE_SIZE


# ---------------------------------------------------------------- merging and classification

def test_merge_regions_joins_only_adjacent_equal():
    r = [(0, 4096, 8), (4096, 8192, 8), (8192, 12288, 72), (16384, 20480, 72)]
    assert pm.merge_regions(r) == [(0, 8192, 8), (8192, 12288, 72), (16384, 20480, 72)]


def test_merge_runs():
    a = run(0, K4)
    b = run(K4, 2 * K4)
    c = run(2 * K4, 3 * K4, soft_dirty=True)
    d = run(4 * K4, 5 * K4, soft_dirty=True)
    assert pm.merge_runs([a, b, c, d]) == [run(0, 2 * K4), c, d]


def test_classify_thp_and_holes():
    P, H, W, F = pm.PAGE_IS_PRESENT, pm.PAGE_IS_HUGE, pm.PAGE_IS_WRITTEN, pm.PAGE_IS_FILE
    regions = [(0, 4 * MIB, P | H | W), (4 * MIB, 6 * MIB, 0), (6 * MIB, 6 * MIB + K4, P | W),
               (6 * MIB + K4, 7 * MIB, W)]   # a none PTE in an existing table reports WRITTEN
    runs = pm.classify(regions, VmaFacts("anon"))
    assert [(r.start, r.end, r.present, r.huge, r.page_size) for r in runs] == [
        (0, 4 * MIB, True, True, pm.pmd_size()),
        (4 * MIB, 6 * MIB, False, False, None),
        (6 * MIB, 6 * MIB + K4, True, False, K4),
        (6 * MIB + K4, 7 * MIB, False, False, None),
    ]
    # absent pages have no "written", whatever the kernel says of a none PTE
    assert [r.written for r in runs] == [True, None, True, None]
    assert all(r.kind == "anon" for r in runs)


def test_classify_absent_runs_merge_regardless_of_written():
    P, W = pm.PAGE_IS_PRESENT, pm.PAGE_IS_WRITTEN
    runs = pm.classify([(0, K4, P | W), (K4, 2 * K4, W), (2 * K4, 3 * K4, 0)], VmaFacts("anon"))
    assert [(r.start, r.end, r.present, r.written) for r in runs] == [(0, K4, True, True), (K4, 3 * K4, False, None)]


def test_classify_kinds():
    P, F, H = pm.PAGE_IS_PRESENT, pm.PAGE_IS_FILE, pm.PAGE_IS_HUGE
    # private file mapping: page-cache pages are "file", COW copies are "anon"
    r = pm.classify([(0, K4, P | F), (K4, 2 * K4, P), (2 * K4, 3 * K4, 0)], VmaFacts("file"))
    assert [x.kind for x in r] == ["file", "anon", "file"]
    assert [x.file for x in r] == [True, False, None]
    r = pm.classify([(0, K4, P | F), (K4, 2 * K4, 0)], VmaFacts("shmem"))
    assert [x.kind for x in r] == ["shmem", "shmem"]
    r = pm.classify([(0, 2 * MIB, P | F | H)], VmaFacts("dax"))
    assert (r[0].kind, r[0].huge, r[0].page_size) == ("dax", True, pm.pmd_size())
    r = pm.classify([(0, 1 << 30, P | H), (1 << 30, 2 << 30, H)], VmaFacts("hugetlb", 1 << 30))
    assert [(x.kind, x.present, x.huge, x.page_size) for x in r] == [
        ("hugetlb", True, True, 1 << 30), ("hugetlb", False, False, None)]


def test_classify_unknown_categories_are_none():
    r = pm.classify([(0, K4, pm.PAGE_IS_PRESENT)], VmaFacts(), known=0x7F)
    assert r[0].soft_dirty is None and r[0].guard is None
    r = pm.classify([(0, K4, pm.PAGE_IS_PRESENT)], VmaFacts(), known=0x1FF)
    assert r[0].soft_dirty is False and r[0].guard is False


def test_facts_from_captured_smaps(smaps, captured):
    reg = captured["regions"]
    assert pm.facts_from_smaps(block_at(smaps, reg["hugetlb"]["start"])) == VmaFacts("hugetlb", 2 * MIB)
    assert pm.facts_from_smaps(block_at(smaps, reg["thp"]["start"])) == VmaFacts("anon")
    exe = next(b for b in smaps if b.map.path.endswith("/pw"))
    assert pm.facts_from_smaps(exe) == VmaFacts("file")
    assert pm.facts_from_smaps(exe, dax=True) == VmaFacts("dax")
    memfd = procfs.Smaps(procfs.parse_map_line("7f0000000000-7f0000200000 rw-s 00000000 00:01 7 /memfd:x (deleted)"))
    assert pm.facts_from_smaps(memfd).kind == "shmem"


def test_classify_captured_workload(smaps, captured):
    """The captured raw regions, classified, give the shapes the workload built."""
    reg = captured["regions"]
    known = captured["scan_known"]

    def vma_runs(name):
        lo, hi = reg[name]["start"], reg[name]["end"]
        out = []
        for b in smaps:
            if b.map.start < hi and b.map.end > lo:
                s, e = max(lo, b.map.start), min(hi, b.map.end)
                out += pm.classify(runs_in(captured["scan"], s, e), pm.facts_from_smaps(b), known)
        return out

    def sizes(runs):
        huge = sum(r.length for r in runs if r.present and r.huge)
        small = sum(r.length for r in runs if r.present and not r.huge)
        return huge, small

    assert sizes(vma_runs("thp")) == (64 * MIB, 0)
    assert sizes(vma_runs("split")) == (62 * MIB, 2 * MIB)
    assert sizes(vma_runs("sparse")) == (32 * MIB, K4)
    assert sizes(vma_runs("nohuge")) == (0, 16 * MIB)
    h = vma_runs("hugetlb")
    assert sizes(h) == (4 * MIB, 0) and {r.kind for r in h} == {"hugetlb"} and {r.page_size for r in h} == {2 * MIB}


# ---------------------------------------------------------------- pagemap + kpageflags

def test_fallback_page_state():
    f = VmaFacts("anon")
    small = pm.PM_PRESENT | 1234
    assert pm.fallback_page_state(small, 0x800, f)[:3] == (True, False, K4)              # plain page
    assert pm.fallback_page_state(small, pm.KPF_THP | pm.KPF_COMPOUND_TAIL, f)[:3] == (True, None, None)
    assert pm.fallback_page_state(small, pm.KPF_COMPOUND_HEAD, f)[:3] == (True, None, None)
    assert pm.fallback_page_state(small, None, f)[:3] == (True, None, None)                # no PFN seen
    hug = pm.fallback_page_state(small, pm.KPF_HUGE | pm.KPF_COMPOUND_HEAD, VmaFacts("hugetlb", 1 << 30))
    assert hug[:4] == (True, True, 1 << 30, "hugetlb")
    assert pm.fallback_page_state(small, 0, VmaFacts("dax"))[:4] == (True, None, None, "dax")
    zero = pm.fallback_page_state(small | pm.PM_FILE, pm.KPF_ZERO_PAGE | pm.KPF_THP, VmaFacts("anon"))
    assert zero[:4] == (True, True, pm.pmd_size(), "anon") and zero[6] is False and zero[8] is True
    absent = pm.fallback_page_state(pm.PM_SOFT_DIRTY, None, f)
    assert absent == (False, False, None, "anon", None, True, None, False, None, None)
    guard = pm.fallback_page_state(pm.PM_SWAP | pm.PM_GUARD_REGION, None, f)     # as 6.18 reports it
    assert (guard[0], guard[7], guard[9]) == (False, False, True)
    wp = pm.fallback_page_state(small | pm.PM_UFFD_WP, 0, f)
    assert wp[4] is False
    # a kernel without CONFIG_MEM_SOFT_DIRTY: bit 55 means nothing, say unknown
    assert pm.fallback_page_state(small | pm.PM_SOFT_DIRTY, 0, f, soft_dirty_known=False)[5] is None


def test_fallback_classify_captured(captured):
    sparse_tail, split_mid = captured["fallback"]
    kf = {int(k): v for k, v in sparse_tail["kpageflags"].items()}
    runs = pm.fallback_classify(sparse_tail["start"], sparse_tail["words"], kf, VmaFacts("anon"))
    # last 3 MiB of "sparse": an untouched 2 MiB block, the 4K page written past the last
    # whole block (a small folio: pagemap+kpageflags does know it is PTE-mapped), 1020K absent
    assert [(r.length, r.present, r.huge, r.page_size) for r in runs] == [
        (2 * MIB, False, False, None), (K4, True, False, K4), (MIB - K4, False, False, None)]
    assert runs[0].start == sparse_tail["start"] and runs[-1].end == sparse_tail["end"]
    kf = {int(k): v for k, v in split_mid["kpageflags"].items()}
    runs = pm.fallback_classify(split_mid["start"], split_mid["words"], kf, VmaFacts("anon"))
    # the PMD split by the mprotect: its pages are PTE-mapped now (PAGEMAP_SCAN knows), but
    # they still sit in a THP folio, so pagemap+kpageflags cannot tell: unknown, not guessed
    assert [(r.length, r.present, r.huge, r.page_size) for r in runs] == [(2 * MIB, True, None, None)]


# ---------------------------------------------------------------- range parsing

@pytest.mark.parametrize("spec,expect", [
    ("0x1000-0x3000", (0x1000, 0x3000)),
    ("4096-8192", (4096, 8192)),
    ("0x1000+8K", (0x1000, 0x3000)),
    ("0x200000+2M", (0x200000, 0x400000)),
    ("0x40000000+1G", (1 << 30, 2 << 30)),
    ("0x1000+4096", (0x1000, 0x2000)),
    ("0x1000+64KiB", (0x1000, 0x11000)),
    (" 0x1001-0x1002 ", (0x1000, 0x2000)),        # widened to whole pages
    ("0X7F00000000+1m", (0x7F00000000, 0x7F00100000)),
])
def test_parse_range_good(spec, expect):
    assert pages.parse_range(spec, page_size=4096) == expect


@pytest.mark.parametrize("spec", [
    "", "abc", "0x1000", "0x3000-0x1000", "0x1000-0x1000", "0x1000+0", "0x1000+2X", "1K-2K", "0x1000+-1",
    "-0x1000", "0x-1", "0xg000-0x2000", "0x1000+1.5M", "0x1000+MiB", "0xffffffffffffffff+2M",
])
def test_parse_range_bad(spec):
    with pytest.raises(BadRange):
        pages.parse_range(spec)


def test_select_targets(smaps, captured):
    reg = captured["regions"]
    t = pages.select_targets(smaps, vma_addr=reg["thp"]["start"] + 5)
    assert [(x.lo, x.hi) for x in t] == [(reg["thp"]["start"], reg["thp"]["end"])]
    lo = reg["split"]["start"] + 31 * MIB
    t = pages.select_targets(smaps, rng=(lo, lo + 3 * MIB))
    cut = reg["split"]["start"] + 33 * MIB                        # the mprotected page
    assert [(x.lo, x.hi) for x in t] == [(lo, cut), (cut, cut + K4), (cut + K4, lo + 3 * MIB)]
    with pytest.raises(BadRange):
        pages.select_targets(smaps, vma_addr=0x1000)
    with pytest.raises(BadRange):
        pages.select_targets(smaps, rng=(0x1000, 0x2000))
    every = pages.select_targets(smaps)
    assert len(every) == len(smaps) - sum(b.map.path == "[vsyscall]" for b in smaps)


# ---------------------------------------------------------------- strip

def test_strip_chars():
    B = 2 * MIB
    runs = [run(0, 2 * B, huge=True, page_size=B),        # HH
            run(2 * B, 3 * B, present=False),              # .
            run(3 * B, 3 * B + K4),                        # s (rest of block absent)
            run(3 * B + K4, 5 * B, present=False),         # . for block 4
            run(5 * B, 6 * B, huge=None, page_size=None)]  # ? (fallback, unknown)
    assert pages.strip(runs, 0, 6 * B, block=B) == "HH.s.?"
    # 4 MiB blocks: a block counts its present pages only; unknown wins
    assert pages.strip(runs, 0, 6 * B, block=2 * B) == "Hs?"


def test_strip_mixed_and_clipping():
    B = 2 * MIB
    runs = [run(0, B, huge=True, page_size=B), run(B, B + K4)]
    assert pages.strip(runs, 0, 2 * B, block=2 * B) == "m"
    # range starting mid-block still shows that block
    assert pages.strip(runs, B // 2, B + K4, block=B) == "Hs"
    assert pages.strip([], 0, 3 * B, block=B) == "..."


def test_strip_segments_terabyte_is_cheap():
    B = 2 * MIB
    T = 1 << 40
    runs = [run(0, B, huge=True, page_size=B), run(B, T - B, present=False), run(T - B, T - B + K4)]
    segs = pages.strip_segments(runs, 0, T, block=B)
    assert segs == [("H", 1), (".", T // B - 2), ("s", 1)]
    lines = pages.strip_lines(runs, 0, T, width=64, block=B)
    assert lines[0] == (0, "H" + "." * 63)
    assert lines[1][1].startswith("... ") and lines[1][1].endswith(" absent")
    assert lines[-1][1].endswith("s")
    assert len(lines) <= 4


# ---------------------------------------------------------------- JSON and rendering

def test_to_json_shape(smaps, captured):
    reg = captured["regions"]
    b = block_at(smaps, reg["thp"]["start"])
    runs = pm.classify(runs_in(captured["scan"], b.map.start, b.map.end), pm.facts_from_smaps(b))
    doc = pages.to_json(42, pm.SOURCE_SCAN, [pages.Section(b, b.map.start, b.map.end, pm.facts_from_smaps(b), runs)])
    assert set(doc) >= {"pid", "source", "runs"}
    assert doc["pid"] == 42 and doc["source"] == "PAGEMAP_SCAN"
    r = doc["runs"][0]
    assert {"start", "end", "present", "page_size", "huge", "kind"} <= set(r)
    assert isinstance(r["start"], int) and isinstance(r["end"], int) and isinstance(r["page_size"], int)
    assert (r["end"] - r["start"], r["huge"], r["page_size"], r["kind"]) == (64 * MIB, True, 2 * MIB, "anon")
    assert doc["vmas"][0]["strip"] == "H" * 32 and doc["vmas"][0]["kind"] == "anon"
    assert doc["notes"] == []
    json.dumps(doc)


HOSTILE = "/tmp/[red]x[/red]\x1b[2J\nline2 \udcff"


def test_render_hostile_path_as_text():
    m = procfs.MapEntry(0x7f0000000000, 0x7f0000400000, "rw-s", 0, (0, 1), 7, HOSTILE)
    b = procfs.Smaps(m)
    runs = [run(m.start, m.start + 2 * MIB, huge=True, page_size=2 * MIB, kind="file"),
            run(m.start + 2 * MIB, m.end, present=False, kind="file")]
    console = Console(record=True, width=160, force_terminal=True)
    pages.render(console, 1, "bad[b]comm\x07", pm.SOURCE_SCAN, [pages.Section(b, m.start, m.end, VmaFacts("file"), runs)])
    text = console.export_text(styles=False)
    assert "[red]x[/red]" in text
    assert "\\x1b[2J" in text and "\x1b" not in text
    assert "\\nline2" in text and "\nline2" not in text
    assert "\\xff" in text
    assert "bad[b]comm\\x07" in text
    assert "H." in text


def test_human_and_printable():
    assert [pages.human(n) for n in (4096, 2 * MIB, 1 << 30, 1020 * 1024, 33 * MIB, 512, None)] == [
        "4K", "2M", "1G", "1020K", "33M", "512B", "?"]
    assert pages.printable("a\tb\x00") == "a\\tb\\x00"


def test_cli_bad_range_exit_code():
    out = subprocess.run([sys.executable, "-m", "pmemtrace", "pages", str(os.getpid()), "0x3000-0x1000"],
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == BadRange.exit_code
    assert out.stderr.strip().startswith("pmemtrace: ") and len(out.stderr.strip().splitlines()) == 1


def test_collect_pid_gone_mid_read_is_process_exited(monkeypatch, smaps):
    from pmemtrace.errors import NoSuchProcess, ProcessExited

    def vanished(pid, lo, hi, facts=None, pmap=None):
        raise NoSuchProcess(f"no such process: {pid}")

    class OpenPageMap:
        def __init__(self, pid):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(pm, "PageMap", OpenPageMap)
    monkeypatch.setattr(procfs, "check_pid", lambda pid: "pw")
    monkeypatch.setattr(procfs, "read_smaps", lambda pid, *args, **kwargs: smaps)
    monkeypatch.setattr(pm, "scan", vanished)
    monkeypatch.setattr(pm, "scan_split", lambda pid, ranges, pmap=None: vanished(pid, 0, 0))
    monkeypatch.setattr(pm, "scan_fallback", vanished)
    monkeypatch.setattr(vmas, "file_facts", lambda pid, m: vmas.FileFacts())
    with pytest.raises(ProcessExited):
        pages.collect(1234)
    monkeypatch.setattr(procfs, "read_smaps", lambda pid, *args, **kwargs: [])
    monkeypatch.setattr(pm, "process_alive", lambda pid: False)
    with pytest.raises(ProcessExited):
        pages.collect(1234)


def test_run_table_aligned():
    runs = [run(0x7f0000000000, 0x7f0000200000, huge=True, page_size=2 * MIB),
            run(0x7f0000200000, 0x7f0000201000),
            run(0x7f0000201000, 0x7f0000400000, present=False)]
    lines = pages.run_table(runs)
    assert lines[0].split() == ["start", "end", "length", "present", "page", "size", "kind", "written", "soft-dirty"]
    assert lines[1].split() == ["0x7f0000000000", "0x7f0000200000", "2M", "yes", "2M", "anon", "yes", "no"]
    assert lines[3].split() == ["0x7f0000201000", "0x7f0000400000", "2044K", "no", "-", "anon", "-", "no"]
    col = lines[0].index("kind")
    assert all(line[col:col + 4] == "anon" for line in lines[1:])
    assert len({line.index(" 2M") + 3 for line in lines[1:2]} | {lines[0].index("length") + 6}) == 1


def test_source_notes():
    assert pages.source_notes(pm.SOURCE_SCAN, True) == []
    fb = pages.source_notes(pm.SOURCE_FALLBACK, True)
    assert len(fb) == 1 and "THP" in fb[0] and "DAX" in fb[0] and "unknown" in fb[0]
    assert any("soft-dirty" in n for n in pages.source_notes(pm.SOURCE_SCAN, False))


def test_pfnmap_vma_is_not_walked(smaps):
    vvar = next(b for b in smaps if b.map.path == "[vvar]")
    assert not pages.walked(vvar) and pages.walked(smaps[0])
    doc = pages.to_json(1, pm.SOURCE_SCAN, [pages.Section(vvar, vvar.map.start, vvar.map.end, VmaFacts(), [])])
    assert doc["vmas"][0]["walked"] is False and doc["vmas"][0]["strip"] is None and doc["runs"] == []
    console = Console(record=True, width=120)
    pages.render(console, 1, "x", pm.SOURCE_SCAN, [pages.Section(vvar, vvar.map.start, vvar.map.end, VmaFacts(), [])])
    assert "not walked: a VM_PFNMAP mapping" in console.export_text()


def test_pfn_spans():
    assert pm.pfn_spans([]) == []
    assert pm.pfn_spans([5, 6, 7, 100, 5000, 9000], gap=4096) == [(5, 100), (5000, 9000)]
    assert pm.pfn_spans([1, 2, 3, 10], gap=1) == [(1, 3), (10, 10)]


def test_presence_words():
    assert pages.presence(run(0, K4)) == "yes"
    assert pages.presence(run(0, K4, zero_pfn=True)) == "zero-page"
    assert pages.presence(run(0, K4, present=False)) == "no"
    assert pages.presence(run(0, K4, present=False, guard=True)) == "guard"
    assert pages.presence(run(0, K4, present=False, swapped=True)) == "swapped"
