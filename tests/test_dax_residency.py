"""DAX residency from the page tables without root: pagemap words -> RSS, and which pages are
provably PTE-mapped (no PAGEMAP_SCAN: 5.10, 6.1), on words built like the kernel's and on words
captured in the DAX guests (tests/fixtures/dax-*)."""
import json
import os

import pytest

from pmemtrace import pagemap as pm
from pmemtrace.pagemap import PM_FILE, PM_PRESENT, PM_SOFT_DIRTY, VmaFacts

PAGE = 4096
PMD = 2 << 20
PER = PMD // PAGE
MIB = 1 << 20
BASE = 0x7F0000000000          # PMD-aligned
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def words(n, pfn0=None, present=True, file=False):
    """n pagemap words: present (with contiguous PFNs from pfn0, or none visible) or absent;
    ``file``: PM_FILE, as 6.1's PMD path reports a DAX page (its PTE path never does)."""
    if not present:
        return [0] * n
    flags = PM_PRESENT | PM_SOFT_DIRTY | (PM_FILE if file else 0)
    return [flags | ((pfn0 + i) if pfn0 is not None else 0) for i in range(n)]


def test_aligned_contiguous_blocks_are_unknowable():
    w = words(32 * PER, pfn0=0x100000)                 # 64 MiB, PFNs 2 MiB aligned (a MAP_SYNC 64M)
    r = pm.dax_residency_from_words(BASE, w, pmd=PMD, page_size=PAGE)
    assert r.rss == 64 * MIB
    assert (r.huge, r.small, r.candidate_blocks) == (None, None, 32)


def test_address_4k_off_the_pfn_alignment_is_small_exactly():
    # 16 MiB at an address 4 KiB past a PMD boundary, file offset 0, extent 2 MiB aligned:
    # address and PFN differ mod 2 MiB, no block can be one PMD leaf
    start = BASE + PAGE
    w = words(16 * MIB // PAGE, pfn0=0x200000)
    r = pm.dax_residency_from_words(start, w, pmd=PMD, page_size=PAGE)
    assert (r.rss, r.huge, r.small, r.candidate_blocks) == (16 * MIB, 0, 16 * MIB, 0)
    assert r.huge + r.small == r.rss


def test_pfn_misaligned_even_with_aligned_address_is_small():
    w = words(4 * PER, pfn0=0x100000 + 1)              # extent not 2 MiB aligned on the device
    r = pm.dax_residency_from_words(BASE, w, pmd=PMD, page_size=PAGE)
    assert (r.huge, r.small) == (0, 4 * PMD)


def test_partly_present_block_is_small_full_block_is_unknown():
    w = words(PER, pfn0=0x100000) + words(PER - 1, pfn0=0x100000 + PER) + [0]
    assert pm.dax_candidate_blocks(BASE, w, PMD, PAGE) == [0]
    r = pm.dax_residency_from_words(BASE, w, pmd=PMD, page_size=PAGE)
    assert (r.rss, r.huge, r.small) == (2 * PMD - PAGE, None, None)


def test_non_contiguous_pfns_are_small():
    w = words(PER, pfn0=0x100000)
    w[7] = PM_PRESENT | 0x300000
    assert pm.dax_residency_from_words(BASE, w, pmd=PMD, page_size=PAGE).huge == 0


def test_pfns_hidden_only_address_and_presence_count():
    w = words(2 * PER)                                 # no CAP_SYS_ADMIN: PFNs read as 0
    assert pm.dax_candidate_blocks(BASE, w, PMD, PAGE) == [0, PER]
    assert pm.dax_residency_from_words(BASE + PAGE, words(PER), pmd=PMD, page_size=PAGE).huge == 0
    assert pm.dax_residency_from_words(BASE + PAGE, words(2 * PER), pmd=PMD, page_size=PAGE).huge is None


def test_nothing_resident_is_zero_not_unknown():
    r = pm.dax_residency_from_words(BASE, words(PER, present=False), pmd=PMD, page_size=PAGE)
    assert (r.rss, r.huge, r.small) == (0, 0, 0)


def test_zero_page_is_not_resident():
    w = words(4, pfn0=0x100000)
    w[2] = PM_PRESENT | 0x5000
    r = pm.dax_residency_from_words(BASE, w, frozenset({0x5000}), pmd=PMD, page_size=PAGE)
    assert (r.rss, r.huge, r.small) == (3 * PAGE, 0, 3 * PAGE)


def test_pm_file_on_a_candidate_block_is_a_pmd_leaf():
    """5.10: no PM_FILE anywhere, aligned blocks unknown; 6.1: PM_FILE only from the PMD path."""
    w = words(2 * PER, pfn0=0x100000, file=True) + words(2 * PER, pfn0=0x100000 + 2 * PER)
    r = pm.dax_residency_from_words(BASE, w, pmd=PMD, page_size=PAGE)
    assert (r.rss, r.huge, r.small) == (4 * PMD, 2 * PMD, 2 * PMD)
    # the same PTE-mapped blocks alone: no PM_FILE seen, so no proof that this kernel would show it
    r = pm.dax_residency_from_words(BASE, w[2 * PER:], pmd=PMD, page_size=PAGE)
    assert (r.huge, r.small, r.candidate_blocks) == (None, None, 2)
    # ... unless PM_FILE was seen on another DAX VMA of the process
    r = pm.dax_residency_from_words(BASE, w[2 * PER:], pmd=PMD, page_size=PAGE, pmd_sets_file=True)
    assert (r.huge, r.small) == (0, 2 * PMD)


def test_mixed_pm_file_in_one_block_is_unknown():
    w = words(PER, pfn0=0x100000, file=True)
    w[3] &= ~PM_FILE
    r = pm.dax_residency_from_words(BASE, w, pmd=PMD, page_size=PAGE)
    assert (r.huge, r.small, r.candidate_blocks) == (None, None, 1)


def test_dax_fallback_classify_marks_provably_small_runs():
    start = BASE + PAGE
    w = words(2 * PER, pfn0=0x100000)
    runs = pm.dax_fallback_classify(start, w, {}, VmaFacts("dax"))
    assert [(r.huge, r.page_size, r.length) for r in runs] == [(False, PAGE, 2 * PMD)]
    runs = pm.dax_fallback_classify(BASE, words(2 * PER, pfn0=0x100000), {}, VmaFacts("dax"))
    assert [(r.huge, r.page_size) for r in runs] == [(None, None)]
    runs = pm.dax_fallback_classify(BASE, words(2 * PER, pfn0=0x100000, file=True), {}, VmaFacts("dax"))
    assert [(r.huge, r.page_size, r.length) for r in runs] == [(True, PMD, 2 * PMD)]


def test_chunks_never_split_a_pmd_block():
    chunks = list(pm._chunks(BASE + PAGE, BASE + 9 * PMD, 4 * PMD))
    assert chunks[0] == (BASE + PAGE, BASE + 4 * PMD)
    assert all(lo % PMD == 0 for lo, _ in chunks[1:]) and chunks[-1][1] == BASE + 9 * PMD


# ---------------------------------------------------------------- captured in the DAX guests

def captured():
    out = []
    for d in sorted(os.listdir(FIXTURES)):
        path = os.path.join(FIXTURES, d, "dax_residency.json")
        if d.startswith("dax-") and os.path.exists(path):
            with open(path) as f:
                out.append(pytest.param(json.load(f), id=d))
    return out


def expand(runs):
    """[(count, word0, pfn_step)] -> words (the capture's run-length encoding)."""
    w = []
    for count, first, step in runs:
        w += [first + i * step for i in range(count)]
    return w


@pytest.mark.parametrize("cap", captured())
def test_captured_guest_words(cap):
    """Each captured DAX VMA: RSS from the present bits equals the bytes the workload wrote, and
    huge/small are what the guest's kernel truth (tracefs fault outcomes) says, or None."""
    assert cap["vmas"], "empty capture"
    for v in cap["vmas"]:
        w = expand(v["words"])
        assert len(w) == (v["end"] - v["start"]) // PAGE
        r = pm.dax_residency_from_words(v["start"], w, pmd=PMD, page_size=PAGE)
        assert r.rss == v["written_bytes"], v["name"]
        assert (r.huge, r.small) == (v["expect_huge"], v["expect_small"]), v["name"]
        if r.huge is not None:
            assert r.huge + r.small == r.rss
