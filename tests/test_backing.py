"""backing.py: one classification of a VMA for report (BACKING), top (-p rows) and pages (page kind),
on the smaps captured on this VM (see tests/test_vmas.py for what each fixture holds)."""
import os

import pytest

from pmemtrace import backing, pagemap, procfs, vmas
from pmemtrace.backing import FileFacts

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def blocks(*parts):
    with open(os.path.join(FIX, *parts)) as f:
        return procfs.parse_smaps(f.read())


@pytest.fixture(scope="module")
def every_block():
    return (blocks("proc-6.18", "smaps") + blocks("proc-6.18-kinds", "smaps")
            + blocks("pagemap_workload_smaps.txt"))


def entry(line):
    return procfs.parse_map_line(line)


def test_vmas_uses_the_one_classifier():
    assert vmas.classify_backing is backing.classify_backing and vmas.FileFacts is backing.FileFacts


def test_page_kind_follows_backing_for_every_captured_vma(every_block):
    seen = set()
    for b in every_block:
        kind = backing.classify_backing(b.map, b.vmflags, FileFacts())
        facts = pagemap.facts_from_smaps(b)
        seen.add((kind, facts.kind))
        expected = {"anon": "anon", "heap": "anon", "stack": "anon", "file": "file", "shmem": "shmem",
                    "hugetlb": "hugetlb"}.get(kind)
        if kind == "special":
            expected = "file" if b.map.path.startswith("/") and b.map.inode else "anon"
        assert facts.kind == expected, (b.map, kind, facts)
    assert {k for k, _ in seen} >= {"anon", "heap", "stack", "file", "shmem", "hugetlb", "special"}


def test_private_dev_zero_is_anonymous_for_report_and_pages():
    """mmap_zero() makes a MAP_PRIVATE /dev/zero VMA anonymous; pages used to call its pages 'file'."""
    b = procfs.Smaps(entry("7f0000000000-7f0000003000 rw-p 00000000 00:06 4 /dev/zero"))
    assert backing.classify_backing(b.map, b.vmflags, FileFacts()) == "anon"
    assert pagemap.facts_from_smaps(b).kind == "anon"
    shared = procfs.Smaps(entry("7f0000000000-7f0000003000 rw-s 00000000 00:01 5 /dev/zero (deleted)"))
    assert backing.classify_backing(shared.map, shared.vmflags, FileFacts()) == "shmem"
    assert pagemap.facts_from_smaps(shared).kind == "shmem"


def test_named_shared_anon_is_shmem_without_statfs():
    """PR_SET_VMA_ANON_NAME on a shared anonymous mapping: '[anon_shmem:NAME]' with the shmem inode.
    report without root (no statfs through map_files) called it 'file'; pages said 'shmem'."""
    m = entry("7f0000000000-7f0000200000 rw-s 00000000 00:01 2058 [anon_shmem:db]")
    assert backing.classify_backing(m, frozenset({"rd", "wr", "sh"}), FileFacts()) == "shmem"
    assert pagemap.facts_from_smaps(procfs.Smaps(m)).kind == "shmem"


def test_dax_and_hugetlb_page_kinds():
    m = entry("7f0000000000-7f0000400000 rw-s 00000000 fd:00 12 /mnt/pmem/f")
    assert backing.page_kind("file", m, dax=True) == "dax"
    assert backing.page_kind("device-dax", entry("7f0000000000-7f0000400000 rw-s 00000000 00:06 9 /dev/dax0.0"),
                             dax=False) == "dax"
    assert backing.page_kind("hugetlb", m, dax=True) == "hugetlb"      # hugetlb first, as the kernel does
