"""Folio classification on pagemap / kpageflags captured from the 6.18 VM
(tests/fixtures/folios-6.18/capture.py; the workload is tests/workloads/folio_workload.c, whose
VMAs have the folios asserted here by construction)."""
import dataclasses
import json

import pytest
from rich.console import Console

from pmemtrace import folio_reader, folios, pagemap
from pmemtrace.kernel import pmd_size
from pmemtrace.views import folios as folio_view
from pmemtrace.views import report
from testkit import FIXTURES

KiB, MiB = 1 << 10, 1 << 20
CAPTURE = json.loads((FIXTURES / "folios-6.18" / "folios.json").read_text())
FLAGS = {int(p): f for p, f in CAPTURE["kpageflags"].items()}

# name -> folio_bytes, pmd_mapped, pte_mapped_thp, unaligned, partial (bytes), by construction
EXPECTED = {
    "mthp": ({65536: 1 * MiB}, 0, 1 * MiB, 0, 0),
    "unaligned": ({65536: 256 * KiB}, 0, 256 * KiB, 256 * KiB, 0),
    "partial": ({65536: 240 * KiB}, 0, 240 * KiB, 0, 48 * KiB),
    "thp": ({2 * MiB: 8 * MiB}, 8 * MiB, 0, 0, 0),
    "ptethp": ({2 * MiB: 2 * MiB}, 0, 2 * MiB, 0, 0),
    "small": ({4096: 1 * MiB}, 0, 0, 0, 0),
}


def classify(name, flags=FLAGS, words_map=lambda w: w):
    vma = CAPTURE["vmas"][name]
    pieces = [(start, [words_map(w) for w in words]) for start, words in vma["words"]]
    ptes = folios.classify_ptes(pieces, folios.KpageFlags.from_dict(flags))
    return folios.classify_vma([tuple(r) for r in vma["regions"]], CAPTURE["pmd_size"], ptes)


def test_fixture_was_captured_on_this_geometry():
    assert CAPTURE["page_size"] == 4096 and CAPTURE["pmd_size"] == pmd_size() == 2 * MiB


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_vma_is_classified_as_built(name):
    folio_bytes, pmd, pte_thp, unaligned, partial = EXPECTED[name]
    s = classify(name)
    assert s.folio_bytes == folio_bytes
    assert (s.pmd_mapped_bytes, s.pte_mapped_thp_bytes, s.unaligned_folio_bytes, s.partial_folio_bytes) == \
        (pmd, pte_thp, unaligned, partial)
    assert s.pud_mapped_bytes == 0
    present = sum(e - s_ for s_, e, _c in CAPTURE["vmas"][name]["regions"])
    assert sum(s.folio_bytes.values()) == present          # every present byte in exactly one folio


def test_contiguous_blocks():
    assert classify("mthp").cont_bytes == {8 * KiB: 1 * MiB, 16 * KiB: 1 * MiB, 32 * KiB: 1 * MiB, 64 * KiB: 1 * MiB}
    assert classify("unaligned").cont_bytes == {}            # 4 KiB off: no block matches physically
    # 3 whole folios (192 KiB) plus the partial one's runs [0, 16K) and [32K, 64K)
    assert classify("partial").cont_bytes == {8 * KiB: 240 * KiB, 16 * KiB: 240 * KiB,
                                              32 * KiB: 224 * KiB, 64 * KiB: 192 * KiB}
    assert classify("ptethp").cont_bytes[2 * MiB] == 2 * MiB
    assert classify("thp").cont_bytes == {} and classify("small").cont_bytes == {}


def test_cont_blocks_arithmetic():
    # a run of 6 pages at vfn 2 backed by pfn 2 (same alignment): 2-page blocks at 2,4,6; 4-page at 4
    assert folios.cont_blocks(2, 2, 6, 16) == {2: 6, 4: 4}
    assert folios.cont_blocks(2, 3, 6, 16) == {}              # physically off by one page
    assert folios.cont_blocks(0, 512, 16, 16) == {2: 16, 4: 16, 8: 16, 16: 16}


def test_without_kpageflags_only_the_leaves_are_known():
    vma = CAPTURE["vmas"]["thp"]
    s = folios.classify_vma([tuple(r) for r in vma["regions"]], CAPTURE["pmd_size"], None)
    assert s.pmd_mapped_bytes == 8 * MiB
    assert s.folio_bytes is None and s.pte_mapped_thp_bytes is None and s.partial_folio_bytes is None
    assert s.as_json()["folio_bytes"] is None and s.as_json()["cont_bytes"] is None


def test_pages_without_struct_page_are_unknown_not_guessed():
    # kpageflags says KPF_NOPAGE for every PFN (as for DAX memory): no folio size is claimed
    assert folios.classify_ptes([(0, [1 << 63 | 5])], folios.KpageFlags.from_dict({})) is None
    assert classify("small", flags={}).folio_bytes is None


def test_hidden_pfns_are_unknown():
    # pagemap read without CAP_SYS_ADMIN: present, PFN 0
    s = classify("small", words_map=lambda w: w & ~pagemap.PM_PFN_MASK)
    assert s.folio_bytes is None and s.pmd_mapped_bytes == 0


def test_hugetlb_leaves_take_the_hstate_size():
    regions = [(0, 4 << 30, pagemap.PAGE_IS_PRESENT | pagemap.PAGE_IS_HUGE)]
    s = folios.classify_vma(regions, 1 << 30, folios.FolioStats())
    assert s.folio_bytes == {1 << 30: 4 << 30} and s.pud_mapped_bytes == 4 << 30 and s.pmd_mapped_bytes == 0


def test_totals_keep_unknown_apart():
    known = classify("mthp")
    tot, unknown_n = folios.total([known, folios.unknown(), None, classify("thp")])
    assert unknown_n == 1
    assert tot.folio_bytes == {65536: 1 * MiB, 2 * MiB: 8 * MiB}
    assert tot.pmd_mapped_bytes == 8 * MiB
    assert folios.add(known, folios.unknown()).folio_bytes is None


def test_cgroup_pids_walks_descendants(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "cgroup.procs").write_text("1\n")
    (tmp_path / "a" / "cgroup.procs").write_text("30\n20\n")
    (tmp_path / "a" / "b" / "cgroup.procs").write_text("")
    assert folio_reader.cgroup_pids(str(tmp_path / "a")) == [20, 30]
    assert folio_reader.cgroup_pids(str(tmp_path)) == [1, 20, 30]
    with pytest.raises(folio_reader.NoSuchProcess):
        folio_reader.cgroup_pids(str(tmp_path / "missing"))


def test_cells():
    assert folio_view.cell({"4096": 4 * MiB, "2097152": 60 * MiB}) == "2M:60M 4K:4M"
    assert folio_view.cell(None) == "?"
    assert folio_view.cell({}) == ""
    assert folio_view.cell({"4096": 1, "8192": 2, "16384": 3}).endswith(" +")


def test_report_renders_the_folio_column_and_summary():
    stats = classify("partial").as_json()
    row = {"start": 0x1000, "end": 0x41000, "perms": "rw-p", "backing": "anon", "path": "[x]", "rss_bytes": 240 * KiB,
           "huge_bytes": 0, "small_bytes": 240 * KiB, "dax": "none", "vm_sync": False, "thp_eligible": True,
           "thp_reason": "enabled=always", **stats}
    data = {"pid": 1, "comm": "c", "kernel": "6.18", "source": "PAGEMAP_SCAN", "notes": [],
            "thp": {"enabled": "always", "defrag": "madvise", "shmem_enabled": "never"}, "vmas": [row],
            "totals": {"rss_bytes": 240 * KiB, "huge_bytes": 0, "small_bytes": 240 * KiB, **stats,
                       "folio_unknown_vmas": 0},
            "folio_source": folios.SOURCE}
    console = Console(record=True, width=200)
    report.render(console, data)
    text = console.export_text()
    assert "FOLIOS" in text and "64K:240K" in text
    assert "partial 48K" in text and "unaligned 0" in text


def test_doctor_says_when_folio_sizes_are_unknown(tmp_path):
    from pmemtrace.views import doctor
    (ok,) = doctor.check_folios("/proc/self/stat")     # any readable file stands in
    assert ok.status == doctor.OK
    (warn,) = doctor.check_folios(str(tmp_path / "missing"))
    assert warn.status == doctor.WARN and "unknown (null)" in warn.detail
    (fb,) = doctor.check_thp_fallback_attribution()
    assert fb.status == doctor.WARN and "THP_FAULT_FALLBACK" in fb.detail


# ---- property: any layout of folios, mapped in any order, is classified as built
from hypothesis import given, settings, strategies as st  # noqa: E402

HEAD, TAIL = pagemap.KPF_COMPOUND_HEAD, pagemap.KPF_COMPOUND_TAIL


@st.composite
def layouts(draw):
    """Physical folios (sizes 1..512 pages, naturally aligned), and a virtual mapping of some of
    their pages: whole folios at aligned or shifted addresses, pieces, pages dropped."""
    flags, folio_of_pfn, pages = {}, {}, []
    pfn = 1 << 20
    for _ in range(draw(st.integers(1, 12))):
        size = 1 << draw(st.integers(0, 9))
        pfn = -(-pfn // size) * size
        for i in range(size):
            flags[pfn + i] = 0 if size == 1 else (HEAD if i == 0 else TAIL)
            folio_of_pfn[pfn + i] = (pfn, size)
        mapped = list(range(pfn, pfn + size))
        if draw(st.booleans()):                      # drop a run of pages
            a = draw(st.integers(0, size - 1))
            b = draw(st.integers(a, size))
            mapped = mapped[:a] + mapped[b:]
        pages.append((size, mapped))
        pfn += size
    # lay the folios out virtually, one after the other, each at an aligned address plus a shift
    vfn, pieces = 1 << 24, []
    for size, mapped in pages:
        vfn = -(-vfn // 512) * 512 + draw(st.sampled_from([0, 0, 1, 3]))
        if mapped:
            base = vfn - (mapped[0] & (size - 1))
            words = []
            for p in range(mapped[0], mapped[-1] + 1):
                words.append((1 << 63) | p if p in mapped else 0)
            pieces.append(((base + (mapped[0] & (size - 1))) * 4096, words))
        vfn += size + 1
    return flags, folio_of_pfn, pieces


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_any_layout_is_classified_as_built(layout):
    flags, folio_of_pfn, pieces = layout
    s = folios.classify_ptes(pieces, folios.KpageFlags.from_dict(flags))
    want_bytes, mapped_of = {}, {}
    for start, words in pieces:
        for i, w in enumerate(words):
            if w:
                head, size = folio_of_pfn[w & pagemap.PM_PFN_MASK]
                mapped_of.setdefault(head, []).append((start // 4096 + i, w & pagemap.PM_PFN_MASK))
                want_bytes[size * 4096] = want_bytes.get(size * 4096, 0) + 4096
    partial = unaligned = pte_thp = 0
    for head, pairs in mapped_of.items():
        size = folio_of_pfn[head][1]
        if size == 1:
            continue
        pte_thp += len(pairs)
        whole = len(pairs) == size and len({v - p for v, p in pairs}) == 1
        if not whole:
            partial += len(pairs)
        elif pairs[0][0] % size:
            unaligned += size
    assert s.folio_bytes == want_bytes
    assert (s.pte_mapped_thp_bytes, s.partial_folio_bytes, s.unaligned_folio_bytes) == \
        (pte_thp * 4096, partial * 4096, unaligned * 4096)


def test_one_scan_split_per_vma_and_coalesced_pagemap_reads():
    P = pagemap.PAGE_IS_PRESENT
    regions = [(0x1000, 0x5000, P), (0x9000, 0xB000, P)]          # the first spans two VMAs
    clip = folio_reader.RegionClipper(regions)
    assert [clip(lo, hi) for lo, hi in [(0x1000, 0x3000), (0x3000, 0x8000), (0x8000, 0xA000), (0xC000, 0xD000)]] \
        == [[(0x1000, 0x3000, P)], [(0x3000, 0x5000, P)], [(0x9000, 0xA000, P)], []]

    class FakePM:
        reads = []

        def words(self, s, e):
            self.reads.append((s, e))
            return [s // 4096 + i for i in range((e - s) // 4096)]
    pm = FakePM()
    w = folio_reader.PagemapWords(pm, [(0x1000, 0x3000), (0x5000, 0x6000), (0x10000000, 0x10001000)], gap=0x4000)
    assert w.get(0x5000, 0x6000) == [5] and w.get(0x1000, 0x3000) == [1, 2]
    assert w.get(0x10000000, 0x10001000) == [0x10000]
    assert pm.reads == [(0x1000, 0x6000), (0x10000000, 0x10001000)]     # two preads for three ranges


def test_folios_command_line(tmp_path):
    from click.testing import CliRunner
    from pmemtrace.cli import cli
    r = CliRunner().invoke(cli, ["folios", "--help"])
    assert r.exit_code == 0 and "--cgroup" in r.output and "--rollup" in r.output
    r = CliRunner().invoke(cli, ["folios", "--cgroup", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_total_counts_a_shared_object_once_per_entry():
    """read_process shares one FolioStats between VMAs with equal facts: total adds it per entry."""
    a = folios.FolioStats({4096: 8192}, 0, 0, 0, 0, 0, {})
    c = folios.FolioStats({2 << 20: 2 << 20, 4096: 4096}, 2 << 20, 0, 4096, 0, 4096, {16384: 4096})
    u = folios.unknown()
    shared = [a, u, a, None, c, a, c]
    tot, unknown_n = folios.total(shared)
    assert unknown_n == 1
    assert tot == folios.FolioStats({4096: 3 * 8192 + 2 * 4096, 2 << 20: 4 << 20}, 4 << 20, 0, 8192, 0, 8192,
                                    {16384: 8192})
    copies = [None if s is None else dataclasses.replace(s) for s in shared]
    assert folios.total(iter(copies)) == (tot, unknown_n)
