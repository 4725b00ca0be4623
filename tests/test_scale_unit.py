"""The many-VMA paths on captured /proc fixtures: the layout parser of smaps equals the line
parser, however the text is cut; the JSON writers equal json.dumps; region splitting."""
import array
import dataclasses
import io
import json
import os

import pytest
from hypothesis import given, strategies as st

from pmemtrace import folio_reader, folios, jsonout, pagemap, procfs, vmas
from pmemtrace.kernel import pmd_size
from pmemtrace.views import report

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
SMAPS = ["proc-6.18/smaps", "proc-6.18-kinds/smaps", "pagemap_workload_smaps.txt"]


def raw(name):
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


@pytest.mark.parametrize("name", SMAPS)
@pytest.mark.parametrize("read_size,piece", [(1, 1), (777, 100), (4096, 5000), (1 << 20, 1 << 20)])
def test_layout_parser_equals_line_parser(name, read_size, piece):
    data = raw(name)
    slow = procfs.parse_smaps(data.decode("utf-8", "surrogateescape"))
    parser = procfs.SmapsParser(None)
    chunks = [data[i:i + read_size] for i in range(0, len(data), read_size)]
    fast = [b for p in procfs.smaps_pieces(chunks, piece) for b in parser.parse(p)]
    assert parser.slow_pieces == 0
    assert [b.map for b in fast] == [b.map for b in slow]
    assert [dict(b.counters) for b in fast] == [b.counters for b in slow]
    assert [b.vmflags for b in fast] == [b.vmflags for b in slow]


@pytest.mark.parametrize("name", SMAPS)
def test_raw_rows_say_the_same_on_both_paths(name):
    """SmapsParser.rows: the regex's rows and the line parser's (rows_of, for a piece the layout
    does not fit) decode to the same VMAs and counters."""
    data = raw(name)
    parser = procfs.SmapsParser(vmas.DESCRIBE_KEYS)

    def decoded(layout, rows):
        return [(int(r[0], 16), int(r[1], 16), int(r[3], 16), parser.decode(r[2], r[4], r[-1]),
                 {k: int(r[procfs.ROW_COUNTERS + i]) * layout.scale[i] for k, i in layout.index.items()})
                for r in rows]
    fast = decoded(*parser.rows(data))
    slow = decoded(*procfs.rows_of(procfs.parse_smaps(data.decode("utf-8", "surrogateescape")), vmas.DESCRIBE_KEYS))
    assert parser.slow_pieces == 0
    assert fast == slow
    assert len(fast) == data.count(b"\nVmFlags:") and any(c["Rss"] for *_, c in fast)


def test_only_the_keys_asked_for():
    parser = procfs.SmapsParser(("Rss", "THPeligible"))
    blocks = parser.parse(raw("proc-6.18/smaps"))
    b = [x for x in blocks if x.get("Rss")][0]
    assert set(b.counters) == {"Rss", "THPeligible"}
    with pytest.raises(KeyError, match="was not read"):
        b.get("Anonymous")


def test_a_piece_that_does_not_fit_the_layout_is_parsed_line_by_line():
    data = raw("proc-6.18/smaps")
    first_end = data.index(b"\nVmFlags:")
    # a block with one line more than the layout learned from the first block
    odd = data[:first_end] + b"\nExtra:                 4 kB" + data[first_end:]
    parser = procfs.SmapsParser(None)
    parser.layout = procfs.smaps_layout(data, None)
    got = parser.parse(odd)
    assert parser.slow_pieces == 1
    assert got[0].get("Extra") == 4096
    assert len(got) == len(procfs.parse_smaps(data.decode("utf-8", "surrogateescape")))


def test_split_huge_small_cuts_regions_at_range_edges():
    H, S = pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_HUGE, pagemap.PAGE_IS_PRESENT
    regions = [(0, 100, S), (100, 300, H), (400, 500, S)]
    assert pagemap.split_huge_small(regions, [(0, 50), (50, 150), (150, 450), (600, 700)]) == [
        (0, 50), (50, 50), (150, 50), (0, 0)]


def test_write_document_parses_to_the_same_data():
    data = {"schema": 1, "notes": ["a\nb"], "vmas": [{"x": 1}, {"y": [1, 2]}] * 3000, "totals": {"t": 2},
            "empty": []}
    out = io.StringIO()
    jsonout.write_document(out, data, {"vmas": jsonout.encode, "empty": jsonout.encode})
    assert json.loads(out.getvalue()) == data
    assert out.getvalue().count("\n") > 6000          # one line per item


class FakePageMap:
    """regions() of a fixed list of PAGEMAP_SCAN regions, clipped to the range asked, as the kernel
    would return them (it merges equal neighbours, even across VMAs)."""

    def __init__(self, regions):
        self.all = regions
        self.calls = 0

    def regions(self, start, end, **masks):
        self.calls += 1
        return [(max(s, start), min(e, end), c) for s, e, c in self.all if s < end and e > start]


def test_scan_split_equals_one_scan_per_range(monkeypatch):
    monkeypatch.setattr(pagemap.scanner, "_require_scan", lambda: 0x1FF)   # where scan and scan_split look it up
    P, H = pagemap.PAGE_IS_PRESENT, pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_HUGE
    K = 4096
    regions = [(0, 8 * K, P), (8 * K, 520 * K, H), (520 * K, 600 * K, 0), (700 * K, 710 * K, P)]
    anon, shmem = pagemap.VmaFacts("anon"), pagemap.VmaFacts("shmem")
    ranges = [(0, 4 * K, anon), (4 * K, 10 * K, shmem), (10 * K, 560 * K, anon), (690 * K, 710 * K, anon)]
    whole = FakePageMap(regions)
    split = pagemap.scan_split(1, ranges, pmap=whole)
    assert whole.calls == 1
    one_by_one = [pagemap.scan(1, lo, hi, f, pmap=FakePageMap(regions)) for lo, hi, f in ranges]
    assert split == one_by_one
    assert [r.start for r in split[1]] == [4 * K, 8 * K]        # cut at the VMA edges


def test_fast_page_run_is_a_page_run():
    import dataclasses
    assert tuple(f.name for f in dataclasses.fields(pagemap.PageRun))[2:] == pagemap._STATE_FIELDS
    st = (True, False, 4096, "anon", True, None, False, False, False, None)
    fast, slow = pagemap._page_run(0, 4096, st), pagemap.PageRun(0, 4096, *st)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)


def test_section_run_dicts_equal_run_dict():
    from pmemtrace.views import pages
    st = (True, True, 2 << 20, "anon", True, None, False, False, False, None)
    runs = [pagemap.PageRun(0, 2 << 20, *st), pagemap.PageRun(2 << 20, 4 << 20, *st)]
    block = procfs.Smaps(procfs.MapEntry(0, 4 << 20, "rw-p", 0, (0, 0), 0, ""))
    sec = pages.Section(block, 0, 4 << 20, pagemap.VmaFacts("anon"), runs)
    assert pages.section_run_dicts(sec) == [dict(pages.run_dict(r), vma_start=0) for r in runs]


def _report_vma(**kw):
    v = vmas.Vma(0x7f0000000000, 0x7f0000400000, "rw-p", "file", 'a "b"\n\x1b[2J\udcff', 4 << 20, 2 << 20,
                 2 << 20, "none", True, False, "x", ("rd", "wr", "sf"), 8192)
    return dataclasses.replace(v, **kw)


@pytest.mark.parametrize("stats", [
    folios.FolioStats({4096: 8192, 65536: 1 << 20, 2 << 20: 2 << 20}, 2 << 20, 0, 1 << 20, 65536, 4096,
                      {65536: 1 << 20, 8192: 4096}),
    folios.FolioStats(),                                  # nothing present: empty dicts, zeros
    folios.unknown(),                                     # no PAGEMAP_SCAN: every folio key null
    folios.FolioStats(None, 2 << 20, 0, None, None, None, None),     # DAX: PTE part unknown
])
@pytest.mark.parametrize("vma", [{}, {"rss_bytes": None, "huge_bytes": None, "small_bytes": None, "dax": "fsdax"},
                                 {"path": 'p, "offset": 1, "q', "thp_reason": ', "offset": '}])   # the cut's marker
def test_vma_row_encoder_equals_json(stats, vma):
    """Every key report --json emits per VMA (folio keys included, nulls, dicts, an untrusted path):
    its row writer's text is json's of the dict the text view builds, byte for byte."""
    enc = report.vma_row_encoder()
    v = _report_vma(**vma)
    d = report.vma_dict(v)
    d.update(stats.as_json())                             # what views/folios.annotate adds
    assert enc((v, stats)) == json.dumps(d)
    assert enc((v, stats)) == json.dumps(d)               # again, from its caches
    assert enc((dataclasses.replace(v, start=0, end=4096, offset=0), stats)) == \
        json.dumps(dict(d, start=0, end=4096, offset=0))
    assert enc((v, None)) == json.dumps({**report.vma_dict(v), **folios.unknown().as_json()})   # [vsyscall]


class Words:
    """PagemapWords' get() over fixed pieces {start: words}."""

    def __init__(self, pieces):
        self.pieces = dict(pieces)

    def get(self, start, end):
        return self.pieces[start][: (end - start) // 4096]


def test_order0_fast_path_equals_classify_ptes():
    """The folio facts of a VMA of order-0 pages only, as read_process's short cut gives them
    ({4K: its present bytes}), are classify_ptes' (+ classify_vma's) answer; a large folio, a hidden
    PFN, a page without struct page or one gone since the scan is an odd page, which sends its
    VMA (and only it) the long way."""
    S = pagemap.PAGE_IS_PRESENT
    kf = folios.KpageFlags.from_dict({100: 0, 101: 1 << 5, 102: 0, 300: 0})     # no COMPOUND, no NOPAGE bits
    present = pagemap.PM_PRESENT
    pieces = [(0x1000, [present | 100, present | 102, present | 101]), (0x9000, [present | 300])]
    regions = [(0x1000, 0x4000, S), (0x9000, 0xa000, S)]
    slow = folios.classify_vma(regions, pmd_size(), folios.classify_ptes(pieces, kf))
    assert slow == folios.FolioStats({4096: 4 * 4096}, 0, 0, 0, 0, 0, {})
    odd = folio_reader.odd_pages(regions, Words(pieces), kf)
    assert (odd.starts, odd.ends) == ([], []) and not odd.touches(0x1000, 0xa000)
    one = [(0x1000, 0x2000, S)]
    big = folios.KpageFlags.from_dict({7: pagemap.KPF_COMPOUND_HEAD})
    for flags, word in ((kf, present | 0),          # PFNs hidden
                        (big, present | 7),         # a large folio
                        (big, present | 8),         # KPF_NOPAGE
                        (kf, 0)):                   # gone since PAGEMAP_SCAN
        odd = folio_reader.odd_pages(one, Words([(0x1000, [word])]), flags)
        assert odd.touches(0x1000, 0x2000) and odd.touches(0, 0x1001)
        assert not odd.touches(0x2000, 0x3000) and not odd.touches(0, 0x1000)
    short = folio_reader.odd_pages([(0x1000, 0x4000, S)], Words([(0x1000, [present | 100])]), kf)
    assert (short.starts, short.ends) == ([0x2000], [0x4000])       # words cut short: the rest is odd


def test_read_process_with_the_callers_regions_equals_its_own_scan(monkeypatch):
    """report hands describe_process's PAGEMAP_SCAN regions to the folio pass: the answer is the one
    read_process gives when it scans itself (fake page map, one VMA of each kind)."""
    S, H = pagemap.PAGE_IS_PRESENT, pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_HUGE
    present = pagemap.PM_PRESENT
    M = pmd_size()
    regions = [(0x1000, 0x3000, S), (0x3000, 0x4000, S), (M, 2 * M, H), (2 * M, 2 * M + 0x2000, S)]
    pfn = {0x1000: 100, 0x2000: 101, 0x3000: 7, M: 512, 2 * M: 300, 2 * M + 0x1000: 0}
    flags = {100: 0, 101: 0, 7: pagemap.KPF_COMPOUND_HEAD, 8: pagemap.KPF_COMPOUND_TAIL, 300: 0,
             **{512 + i: (pagemap.KPF_COMPOUND_HEAD if i == 0 else pagemap.KPF_COMPOUND_TAIL) for i in range(512)}}
    scans = []

    class FakePM:
        def __init__(self, pid):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def regions(self, start, end, **masks):
            scans.append((start, end))
            return [r for r in regions if r[0] < end and r[1] > start]

        def words(self, s, e):
            return array.array("Q", [present | pfn[a] if a in pfn else 0 for a in range(s, e, 4096)])

        def check_alive(self):
            pass
    monkeypatch.setattr(pagemap, "PageMap", FakePM)
    monkeypatch.setattr(pagemap, "supported_categories", lambda: 0x1FF)
    specs = [folio_reader.VmaSpec(0x1000, 0x3000), folio_reader.VmaSpec(0x3000, 0x5000),
             folio_reader.VmaSpec(M, 2 * M), folio_reader.VmaSpec(2 * M, 2 * M + 0x2000),
             folio_reader.VmaSpec(3 * M, 3 * M + 0x1000, skip=True)]
    own = folio_reader.read_process(1, specs, folios.KpageFlags.from_dict(flags))
    assert len(scans) == 1
    given = folio_reader.read_process(1, specs, folios.KpageFlags.from_dict(flags), regions)
    assert len(scans) == 1                    # not scanned again
    assert given.vmas == own.vmas
    got = [st for _s, st in given.vmas]
    assert got[0] == folios.FolioStats({4096: 0x2000}, 0, 0, 0, 0, 0, {})        # the short cut
    assert got[1].partial_folio_bytes == 4096                                   # one page of a 2-page folio
    assert got[2].pmd_mapped_bytes == M and got[2].folio_bytes == {M: M}
    assert got[3].folio_bytes is None                                           # a hidden PFN
    assert got[4] is None


def test_pages_write_json_equals_json_dumps_of_to_json():
    """pages --json's text encoders give json.dumps(to_json(...)) byte for byte: runs of every
    state, a walked and an unwalked (VM_PFNMAP) VMA, hostile paths, hugetlb page sizes."""
    from pmemtrace.views import pages
    states = [(True, True, 2 << 20, "anon", True, None, False, False, False, None),
              (True, False, 4096, "file", False, True, True, False, True, False),
              (False, None, None, "shmem", None, False, None, True, None, True),
              (True, True, 1 << 30, "hugetlb", True, None, False, False, False, None)]
    sections = []
    for i, path in enumerate(['', 'a "b"\n\x1b[2J\udcff', '[vvar]', '/dev/hugepages/x', '']):
        lo = 0x7f0000000000 + i * (8 << 20)
        runs = [pagemap.PageRun(lo + j * (2 << 20), lo + (j + 1) * (2 << 20), *states[(i + j) % len(states)])
                for j in range(i % 3 + 1)]
        flags = frozenset({"rd", "pf"} if path == "[vvar]" else {"rd", "wr"})
        block = procfs.Smaps(procfs.MapEntry(lo, lo + (8 << 20), "rw-p" if i % 2 else "r--s", 0, (0, 0), i, path),
                             {}, flags)
        facts = pagemap.VmaFacts("hugetlb", 1 << 30) if "hugepages" in path else pagemap.VmaFacts("anon")
        sections.append(pages.Section(block, lo, lo + (2 << 20) * len(runs), facts, runs))
    for batch in (1, 2, 1000):
        out = io.StringIO()
        pages.JSON_BATCH, saved = batch, pages.JSON_BATCH
        try:
            pages.write_json(out, 7, pagemap.SOURCE_SCAN, sections, ["n\u00e9"])
        finally:
            pages.JSON_BATCH = saved
        assert out.getvalue() == json.dumps(pages.to_json(7, pagemap.SOURCE_SCAN, sections, ["n\u00e9"])) + "\n"


def fake_clock(monkeypatch, now: float) -> dict:
    """vma_sampler's monotonic and process time, set by the test: {"now": s, "cpu": s}."""
    from pmemtrace import vma_sampler
    clock = {"now": now, "cpu": 0.0}

    class FakeTime:
        @staticmethod
        def monotonic():
            return clock["now"]

        @staticmethod
        def process_time():
            return clock["cpu"]
    monkeypatch.setattr(vma_sampler, "time", FakeTime)
    return clock


def test_top_p_rereads_a_busy_process_within_its_cpu_budget(monkeypatch):
    """VmaSampler on a process whose faults move every interval: a read that cost 0.4 s of CPU
    (60,000 VMAs) is repeated only after 0.4 / CPU_SHARE s; the intervals between give zero deltas
    and the next read's deltas hold every gain since the last read."""
    from pmemtrace import vma_sampler
    blocks = [procfs.parse_smaps(raw(f"top/smaps_{tag}.txt").decode()) for tag in ("before", "after", "after")]
    clock = fake_clock(monkeypatch, 100.0)
    reads = []

    def read(pid):
        clock["cpu"] += 0.4
        reads.append(clock["now"])
        return blocks[len(reads) - 1]
    s = vma_sampler.VmaSampler(5, read_smaps=read)
    s.detect_quiet = True
    faults = iter(range(1000))
    monkeypatch.setattr(s, "_quiet", lambda: (1, next(faults)))         # faults moved: never quiet
    got = []
    for _ in range(5):
        got.append(s.sample())
        clock["now"] += 1.0
    assert reads == [100.0, 104.0]
    assert vma_sampler.CPU_SHARE * 4.0 >= 0.4
    assert all(d.faults == 0 for d in got[0] + got[1] + got[2] + got[3])
    want = vma_sampler.vma_deltas(vma_sampler.vma_states(blocks[0]), vma_sampler.vma_states(blocks[1]),
                                  s.pmd, s.hugetlb_page)
    assert [(d.start, d.faults, d.huge_faults) for d in got[4]] == [(d.start, d.faults, d.huge_faults) for d in want]
    assert sum(d.faults for d in got[4]) > 0


@pytest.mark.parametrize("cost, want", [(0.001, [float(t) for t in range(24)]), (0.4, [0.0, 20.0])])
def test_top_p_rereads_a_quiet_costly_process_rarely(monkeypatch, cost, want):
    """A quiet process is read again once read CPU / QUIET_SHARE s have passed: every interval
    when its smaps is cheap (1 ms), rarely when it is costly (60,000 VMAs: 0.4 s of CPU, every 20 s): then its unchanged VMAs cost ~nothing."""
    from pmemtrace import vma_sampler
    blocks = procfs.parse_smaps(raw("top/smaps_before.txt").decode())
    clock = fake_clock(monkeypatch, 0.0)
    reads = []

    def read(pid):
        clock["cpu"] += cost
        reads.append(clock["now"])
        return blocks
    s = vma_sampler.VmaSampler(5, read_smaps=read)
    s.detect_quiet = True
    monkeypatch.setattr(s, "_quiet", lambda: (1, 7))        # nothing moved
    for _ in range(24):
        s.sample()
        clock["now"] += 1.0
    assert reads == want


def _runs(draw_list):
    """Sorted, disjoint (start, end, flag) from (gap, length, flag) steps."""
    out, at = [], 0
    for gap, length, flag in draw_list:
        at += gap
        out.append((at, at + length, flag))
        at += length
    return out


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4), st.booleans()), max_size=12),
       st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5), st.booleans()), max_size=12))
def test_split_huge_small_equals_summing_every_overlap(region_steps, range_steps):
    H, S = pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_HUGE, pagemap.PAGE_IS_PRESENT
    regions = [(s, e, H if huge else S) for s, e, huge in _runs(region_steps)]
    ranges = [(s, e) for s, e, _ in _runs(range_steps)]

    def overlap(a, b, c, d):
        return max(0, min(b, d) - max(a, c))
    expected = [(sum(overlap(s, e, rs, re_) for rs, re_, cat in regions if cat == H),
                 sum(overlap(s, e, rs, re_) for rs, re_, cat in regions if cat == S)) for s, e in ranges]
    assert pagemap.split_huge_small(regions, ranges) == expected
