"""aggregate.py: address -> VMA lookup and per-VMA / per-process rows from hand-built
ProbeCounts, over the real VMA layout of tests/fixtures/proc-6.18/maps (8 MiB THP region at
0x7f06bb800000, a 20 KiB hole after it, then VMAs packed back to back)."""
import os

import pytest

from pmemtrace import aggregate, daxcause, procfs
from pmemtrace.aggregate import (EVENT_DAX_FALLBACK, EVENT_MADVISE, EVENT_MMAP, EVENT_MUNMAP, UNMAPPED,
                                 MincoreStats, ProbeCounts, VmaIndex)

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "proc-6.18")
KIB, MIB = 1024, 1 << 20
PMD = 2 * MIB
PID, OTHER_PID = 24376, 999

HG = 0x7f06bb800000            # 8 MiB anon, MADV_HUGEPAGE, ends at 0x7f06bc000000
HG_END = 0x7f06bc000000
AFTER_HOLE = 0x7f06bc005000    # anon 0x7f06bc005000-0x7f06bc138000
DELETED = 0x7f06bc138000       # /tmp/fx/dir/deleted.bin (deleted), 8 KiB, shared
BIG_ANON = 0x7f06bc1fd000      # anon 0x7f06bc1fd000-0x7f06bc53e000
HEAP = 0x5648ecb5f000

MAP_SHARED, MAP_SHARED_VALIDATE, MAP_SYNC = 0x01, 0x03, 0x80000
MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLLAPSE = 14, 15, 25


@pytest.fixture(scope="module")
def maps():
    with open(os.path.join(FIX, "maps")) as f:
        return procfs.parse_maps(f.read())


@pytest.fixture(scope="module")
def index(maps):
    return VmaIndex((m.start, m.end) for m in maps)


def end_of(maps, start):
    return [m.end for m in maps if m.start == start][0]


# ---------------------------------------------------------------- VmaIndex

def test_index_layout_assumptions(maps):
    assert end_of(maps, HG) == HG_END
    assert end_of(maps, AFTER_HOLE) == DELETED          # back to back
    assert not any(m.start <= HG_END < m.end for m in maps)


def test_find_edges(index, maps):
    assert index.find(HG) == HG
    assert index.find(HG_END - 1) == HG
    assert index.find(HG + 5 * MIB + 123) == HG
    assert index.find(HG_END) is None                   # end is exclusive, and a hole follows
    assert index.find(AFTER_HOLE - 1) is None
    assert index.find(AFTER_HOLE) == AFTER_HOLE
    assert index.find(DELETED - 1) == AFTER_HOLE        # adjacent VMAs: end belongs to the next one
    assert index.find(DELETED) == DELETED
    assert index.find(0) is None                        # below the first VMA
    assert index.find(0x5648de638000 - 1) is None
    assert index.find(0xffffffffff600000) == 0xffffffffff600000
    assert index.find(0xffffffffff601000) is None       # past the last
    for m in maps:                                      # every VMA found at both of its ends
        assert index.find(m.start) == m.start and index.find(m.end - 1) == m.start


def test_find_unsorted_input():
    idx = VmaIndex([(0x7000, 0x8000), (0x1000, 0x2000), (0x4000, 0x6000)])
    assert [idx.find(a) for a in (0x1000, 0x3000, 0x5fff, 0x6000, 0x7800)] == [0x1000, None, 0x4000, None, 0x7000]


def test_find_empty_index():
    idx = VmaIndex([])
    assert idx.find(HG) is None and idx.find_block(HG, PMD) is None


def test_find_block(index):
    assert index.find_block(HG, PMD) == HG                          # block at the VMA's start
    assert index.find_block(HG + 3 * PMD, PMD) == HG                # last block of the VMA
    # the block at HG_END starts in the 20 KiB hole; the next VMA begins inside it
    assert HG_END % PMD == 0
    assert index.find_block(HG_END, PMD) == AFTER_HOLE
    # 0x7f06bc200000 lies inside the anon VMA 0x7f06bc1fd000-0x7f06bc53e000
    assert index.find_block(0x7f06bc200000, PMD) == BIG_ANON


def test_find_block_straddling_two_vmas(index):
    # block 0x7f06bc000000..0x7f06bc200000 holds the hole, then a dozen VMAs: it belongs to the
    # first VMA that overlaps it; a block whose start is covered belongs to the covering VMA
    assert index.find_block(0x7f06bc000000, PMD) == AFTER_HOLE
    idx = VmaIndex([(0x7f0000000000, 0x7f0000100000), (0x7f0000100000, 0x7f0000400000)])
    assert idx.find_block(0x7f0000000000, PMD) == 0x7f0000000000


def test_find_block_none_when_no_vma_overlaps():
    idx = VmaIndex([(0x7f0000000000, 0x7f0000200000), (0x7f0000600000, 0x7f0000800000)])
    assert idx.find_block(0x7f0000200000, PMD) is None
    assert idx.find_block(0x7f0000400000, PMD) is None              # next VMA starts exactly at block end
    assert idx.find_block(0x7f0000400000 + 0x1000, PMD) == 0x7f0000600000


# ---------------------------------------------------------------- per_vma

def mmap_event(tgid, addr, flags, ret, length=PMD, fd=3):
    return {"type": EVENT_MMAP, "tgid": tgid, "addr": addr, "len": length, "prot": 0x3, "flags": flags,
            "fd": fd, "off": 0, "ret": ret, "comm": "pmt-workload"}


def madvise_event(tgid, addr, behavior, length=8 * MIB):
    return {"type": EVENT_MADVISE, "tgid": tgid, "addr": addr, "len": length, "prot": 0, "flags": behavior,
            "fd": -1, "off": 0, "ret": 0, "comm": "pmt-workload"}


def fallback_event(tgid, vm_start, vm_end, address, **kw):
    e = {"type": EVENT_DAX_FALLBACK, "tgid": tgid, "vm_start": vm_start, "vm_end": vm_end,
         "vm_flags": 0x300000fb, "address": address, "pgoff": (address - vm_start) >> 12,
         "max_pgoff": (vm_end - vm_start) >> 12, "ino": 0xc, "dev": 259 << 20, "flags": 0x1255,
         "result": 0x800, "pte_seen": False, "comm": "pmt-workload"}
    e.update(kw)
    return e


@pytest.fixture
def counts():
    c = ProbeCounts()
    # THP: four PMD faults filling the 8 MiB hg region, one in a region of another process
    for i in range(4):
        c.thp_faults[(PID, HG + i * PMD)] = 1
    c.thp_faults[(OTHER_PID, HG)] = 7
    c.thp_unattributed[PID] = 2
    # 4 KiB faults: two pages of the deleted file, heap, one address in no VMA
    c.page_faults[(PID, DELETED)] = 1
    c.page_faults[(PID, DELETED + 0x1000)] = 3
    c.page_faults[(PID, HEAP + 0x10000)] = 5
    c.page_faults[(PID, HG_END + 0x1000)] = 1           # in the hole: unmapped
    c.page_faults[(OTHER_PID, HEAP)] = 100
    # DAX outcomes: PMD ones keyed by vm_start, PTE ones by 2 MiB block
    c.dax[(PID, "pmd_huge", HG)] = 3
    c.dax[(PID, "pmd_fallback", HG)] = 1
    c.dax[(PID, "pte", HG + PMD)] = 512
    c.dax[(PID, "pte_needdsync", HG_END)] = 2            # block starting in the hole -> AFTER_HOLE
    c.dax[(PID, "pte", 0x10000)] = 1                    # nowhere
    c.dsync_latency[(PID, HG, 14)] = 4
    c.dsync_latency[(PID, HG, 15)] = 1
    c.mincore[PID] = MincoreStats(calls=2, bytes=8 * MIB, pages_examined=4096, pages_resident=4096, ns=9000)
    c.comms[PID] = "python3"
    c.events = [
        mmap_event(PID, 0, MAP_SHARED_VALIDATE | MAP_SYNC, -95),               # refused: EOPNOTSUPP
        mmap_event(PID, 0, MAP_SHARED, DELETED),                              # plain mmap that worked
        mmap_event(PID, 0, MAP_SHARED_VALIDATE | MAP_SYNC, HG),                # MAP_SYNC that worked
        mmap_event(PID, 0, MAP_SHARED, -12),                                  # ENOMEM: not counted
        madvise_event(PID, HG, MADV_HUGEPAGE),
        madvise_event(PID, HG, MADV_HUGEPAGE),
        madvise_event(PID, AFTER_HOLE, MADV_NOHUGEPAGE),
        madvise_event(PID, HG_END, 99),                                       # unknown behaviour, unmapped
        {"type": EVENT_MUNMAP, "tgid": PID, "addr": BIG_ANON, "len": 4096, "prot": 0, "flags": 0,
         "fd": -1, "off": 0, "ret": 0, "comm": "pmt-workload"},
        fallback_event(PID, HG, HG_END, HG + 0x1000, flags=0x1254, pte_seen=True),       # PTE_PRESENT
        fallback_event(PID, HG, HG_END, HG + 0x1000, vm_flags=0x30000073),             # COW
        fallback_event(OTHER_PID, HG, HG_END, HG + 0x1000),
        mmap_event(OTHER_PID, 0, MAP_SHARED_VALIDATE | MAP_SYNC, -95),
    ]
    c.lost = 3
    return c


def test_per_vma_thp_and_page_faults(counts, index):
    rows = aggregate.per_vma(counts, PID, index, PMD, daxcause.classify)
    assert rows[HG].huge_faults == 4                    # other pid's 7 not here; unattributed not per VMA
    assert rows[DELETED].faults == 4
    assert rows[HEAP].faults == 5
    assert rows[UNMAPPED].faults == 1
    assert sum(r.faults for r in rows.values()) == 10
    assert sum(r.huge_faults for r in rows.values()) == 4


def test_per_vma_dax_outcomes(counts, index):
    rows = aggregate.per_vma(counts, PID, index, PMD, daxcause.classify)
    assert rows[HG].dax["pmd_huge"] == 3
    assert rows[HG].dax["pmd_fallback"] == 1
    assert rows[HG].dax["pte"] == 512
    assert rows[AFTER_HOLE].dax["pte_needdsync"] == 2
    assert rows[UNMAPPED].dax["pte"] == 1
    assert rows[HG].dsync_latency == {14: 4, 15: 1}
    assert set(rows[HG].dax) == set(aggregate.DAX_OUTCOMES)


def test_per_vma_events(counts, index):
    rows = aggregate.per_vma(counts, PID, index, PMD, daxcause.classify)
    assert rows[UNMAPPED].map_sync_refusals == 1
    assert rows[DELETED].mmap_calls == 1 and rows[DELETED].map_sync_requests == 0
    assert rows[HG].mmap_calls == 1 and rows[HG].map_sync_requests == 1
    assert sum(r.mmap_calls for r in rows.values()) == 2          # the ENOMEM one is not a mapping
    assert rows[HG].madvise == {"HUGEPAGE": 2}
    assert rows[AFTER_HOLE].madvise == {"NOHUGEPAGE": 1}
    assert rows[UNMAPPED].madvise == {"99": 1}
    assert rows[HG].fallback_causes == {daxcause.PTE_PRESENT: 1, daxcause.COW: 1}
    assert BIG_ANON not in rows                                   # munmap counts nothing per VMA


def test_per_vma_without_classifier_skips_fallback_events(counts, index):
    rows = aggregate.per_vma(counts, PID, index, PMD)
    assert rows[HG].fallback_causes == {}
    assert rows[HG].dax["pmd_fallback"] == 1


def test_per_vma_other_process(counts, index):
    rows = aggregate.per_vma(counts, OTHER_PID, index, PMD, daxcause.classify)
    assert rows[HG].huge_faults == 7
    assert rows[HEAP].faults == 100
    assert rows[HG].fallback_causes == {daxcause.OTHER: 1}
    assert rows[UNMAPPED].map_sync_refusals == 1
    assert set(rows) == {HG, HEAP, UNMAPPED}


def test_per_vma_unknown_pid_is_empty(counts, index):
    assert aggregate.per_vma(counts, 1, index, PMD, daxcause.classify) == {}


def test_per_vma_process_gone_everything_unmapped(counts):
    rows = aggregate.per_vma(counts, PID, VmaIndex([]), PMD, daxcause.classify)
    assert set(rows) == {UNMAPPED}
    u = rows[UNMAPPED]
    assert (u.faults, u.huge_faults, u.map_sync_refusals, u.mmap_calls) == (10, 4, 1, 2)
    assert u.dax["pte"] == 513


# ---------------------------------------------------------------- per_process

def test_per_process(counts):
    rows = aggregate.per_process(counts)
    assert set(rows) == {PID, OTHER_PID}
    p = rows[PID]
    assert p.comm == "python3"                    # from the comm map, not the event
    assert p.faults == 10
    assert p.huge_faults == 4 + 2 and p.huge_unattributed == 2
    assert p.dax["pmd_huge"] == 3 and p.dax["pte"] == 513 and p.dax["pte_needdsync"] == 2
    assert p.map_sync_refusals == 1
    assert p.madvise_calls == 4
    assert p.mincore == MincoreStats(calls=2, bytes=8 * MIB, pages_examined=4096, pages_resident=4096, ns=9000)
    o = rows[OTHER_PID]
    assert o.comm == "pmt-workload"               # learned from its events
    assert (o.faults, o.huge_faults, o.huge_unattributed, o.map_sync_refusals) == (100, 7, 0, 1)


def test_per_process_empty():
    assert aggregate.per_process(ProbeCounts()) == {}


# ---------------------------------------------------------------- merge

def test_merge(counts):
    more = ProbeCounts()
    more.thp_faults[(PID, HG)] = 1
    more.thp_faults[(PID, 0x7f0000000000)] = 2
    more.page_faults[(PID, DELETED)] = 10
    more.dax[(PID, "pmd_huge", HG)] = 1
    more.dsync_latency[(PID, HG, 14)] = 1
    more.thp_unattributed[OTHER_PID] = 5
    more.mincore[PID] = MincoreStats(calls=1, errors=1, bytes=4096, pages_examined=1, pages_resident=0, ns=100)
    more.mincore[OTHER_PID] = MincoreStats(calls=1)
    more.comms[OTHER_PID] = "other"
    more.events = [madvise_event(PID, HG, MADV_COLLAPSE)]
    more.lost = 4
    n_events = len(counts.events)

    out = aggregate.merge(counts, more)
    assert out is counts
    assert counts.thp_faults[(PID, HG)] == 2 and counts.thp_faults[(PID, 0x7f0000000000)] == 2
    assert counts.page_faults[(PID, DELETED)] == 11
    assert counts.dax[(PID, "pmd_huge", HG)] == 4
    assert counts.dsync_latency[(PID, HG, 14)] == 5
    assert counts.thp_unattributed == {PID: 2, OTHER_PID: 5}
    assert counts.mincore[PID] == MincoreStats(calls=3, errors=1, bytes=8 * MIB + 4096, pages_examined=4097,
                                               pages_resident=4096, ns=9100)
    assert counts.mincore[OTHER_PID] == MincoreStats(calls=1)
    assert counts.comms == {PID: "python3", OTHER_PID: "other"}
    assert len(counts.events) == n_events + 1
    assert counts.lost == 7
    # merged counts aggregate like one long interval
    rows = aggregate.per_process(counts)
    assert rows[PID].madvise_calls == 5 and rows[PID].huge_faults == 4 + 2 + 3


def test_merge_does_not_alias_the_source_mincore():
    a, b = ProbeCounts(), ProbeCounts()
    b.mincore[PID] = MincoreStats(calls=1)
    aggregate.merge(a, b)
    aggregate.merge(a, b)
    assert a.mincore[PID].calls == 2 and b.mincore[PID].calls == 1
