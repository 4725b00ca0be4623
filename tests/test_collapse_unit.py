"""Collapse results -> per-VMA counts (pmemtrace/collapse.py), and the probe's program text."""
from pmemtrace import collapse, loader
from testkit import FIXTURES

FORMAT = (FIXTURES / "tracefs-6.18" / "mm_khugepaged_scan_pmd.format").read_text()
NAMES = collapse.parse_status_names(FORMAT)
MiB = 1 << 20


def key(**kw):
    k = {"mm": 0, "addr": 0, "pfn": 0, "tgid": 0, "status": 0, "file": 0, "madvise": 0}
    k.update(kw)
    return k


def test_status_names_come_from_the_format():
    assert NAMES[1] == "succeeded" and NAMES[5] == "exceed_none_pte" and NAMES[0] == "failed"
    assert len(NAMES) == 31


def test_madvise_results_by_tgid_and_address():
    vmas = {0x40000000: 0x40800000}

    def find(addr):
        return next((s for s, e in vmas.items() if s <= addr < e), None)
    entries = [(key(madvise=1, tgid=7, addr=0x40000000 + i * 2 * MiB, status=1), 1, 16) for i in range(4)]
    entries += [(key(madvise=1, tgid=7, addr=0x50000000, status=1), 1, 0),       # no VMA there now
                (key(madvise=1, tgid=8, addr=0x40000000, status=1), 1, 0)]       # another process
    got = collapse.attribute(entries, 7, find, lambda pfn: None, NAMES)
    v = got.vmas[0x40000000]
    assert v.as_json() == {"thp_collapses": 4, "thp_collapse_failures": {}, "thp_collapse_filled_bytes": 4 * 16 * 4096}
    assert got.unattributed.collapses == 1
    assert got.total().collapses == 5


def test_khugepaged_results_by_pfn_then_by_mm():
    def find(addr):
        return 0x1000 if 0x1000 <= addr < 0x9000 else None
    mapped = {1234: 0x2000}
    entries = [(key(mm=0xAA, pfn=1234, status=5), 3, 0),              # failure, PFN still mapped: the VMA
               (key(mm=0xAA, pfn=999, status=1), 2, 100),             # success, PFN freed: this mm, no VMA
               (key(mm=0xBB, pfn=555, status=5), 9, 0),               # another process's mm
               (key(mm=0xAA, pfn=collapse.NO_PFN, status=3), 1, 0)]   # pmd_none, no PFN
    got = collapse.attribute(entries, 7, find, mapped.get, NAMES)
    assert got.vmas[0x1000].failures == {"exceed_none_pte": 3}
    assert got.unattributed.collapses == 2 and got.unattributed.filled_bytes == 100 * 4096
    assert got.unattributed.failures == {"pmd_none": 1}
    assert got.total().failures == {"exceed_none_pte": 3, "pmd_none": 1}      # not the 9 of mm 0xBB


def test_notes_name_the_reason():
    data = {"vmas": [{"start": 0x1000, "thp_collapses": 1, "thp_collapse_filled_bytes": 65536,
                      "thp_collapse_failures": {"exceed_none_pte": 2}}],
            "thp_collapses_unattributed": {"thp_collapses": 0, "thp_collapse_failures": {},
                                           "thp_collapse_filled_bytes": 0}}
    assert collapse.notes(data) == ["THP collapses at 1000: 1 collapsed, 64K filled in, 2 exceed_none_pte"]


def test_program_text_for_this_kernel(tmp_path):
    """The collapse feature's structs come from tracefs formats; alone it owns sys_enter_madvise."""
    events = tmp_path / "events"
    for cat, ev in (("huge_memory", "mm_khugepaged_scan_pmd"), ("huge_memory", "mm_khugepaged_scan_file"),
                    ("syscalls", "sys_enter_madvise"), ("syscalls", "sys_exit_madvise")):
        d = events / cat / ev
        d.mkdir(parents=True)
        (d / "format").write_text((FIXTURES / "tracefs-6.18" / f"{ev}.format").read_text())
    text, usable, missing = loader.build_text(["collapse"], pid=42, tracefs=str(tmp_path), enums={})
    assert missing == {}
    assert {a.id for a in usable} == {"huge_memory:mm_khugepaged_scan_pmd", "huge_memory:mm_khugepaged_scan_file",
                                      "syscalls:sys_enter_madvise", "syscalls:sys_exit_madvise"}
    assert "#define FEATURE_COLLAPSE 1" in text and "#define PMD_SHIFT_BITS 21" in text
    assert "struct tp_huge_memory__mm_khugepaged_scan_pmd {" in text
    assert "int on_sys_enter_madvise(" in text and "#define PID_FILTER 42" in text
