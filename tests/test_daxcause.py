"""daxcause.classify: one fs_dax:dax_pmd_fault_done record per fallback cause, and the order
of fs/dax.c's dax_fault_check_fallback() when several causes apply at once.

Records are built the way the kernel fills them (field names from
tests/fixtures/tracefs-6.18/dax_pmd_fault_done.format): pgoff is the faulting page's file
offset (vm_pgoff + (address - vm_start) / 4 KiB), max_pgoff is i_size in pages, vm_flags
are those of an fs-dax VMA (VM_MIXEDMAP | VM_HUGEPAGE set by ext4/xfs), flags those of a
user fault (ALLOW_RETRY | KILLABLE | USER | INTERRUPTIBLE | VMA_LOCK, plus WRITE)."""

import pytest

from pmemtrace import daxcause, kernel
from pmemtrace.daxcause import COW, MISALIGNED, OTHER, OUTSIDE_VMA, PAST_EOF, PTE_PRESENT

MIB = 1 << 20
PMD = 2 * MIB
BASE = 0x7f3a40000000                     # a 2 MiB-aligned mmap address as x86-64 hands them out
FILE_64M = (64 * MIB) >> 12               # max_pgoff of a 64 MiB file

VM_READ, VM_WRITE, VM_SHARED, VM_MAYREAD, VM_MAYWRITE, VM_MAYEXEC, VM_MAYSHARE = 0x1, 0x2, 0x8, 0x10, 0x20, 0x40, 0x80
VM_MIXEDMAP, VM_HUGEPAGE = 0x10000000, 0x20000000
SHARED_RW = VM_READ | VM_WRITE | VM_SHARED | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_MAYSHARE \
    | VM_MIXEDMAP | VM_HUGEPAGE                                                  # 0x300000fb
PRIVATE_RW = SHARED_RW & ~(VM_SHARED | VM_MAYSHARE)                              # 0x30000073
READ_FAULT = 0x4 | 0x10 | 0x40 | 0x200 | 0x1000                                 # 0x1254
WRITE_FAULT = READ_FAULT | 0x1                                                   # 0x1255


def event(address, vm_start=BASE, vm_end=BASE + 64 * MIB, vm_pgoff=0, max_pgoff=FILE_64M,
          vm_flags=SHARED_RW, flags=WRITE_FAULT, **extra):
    e = {"ino": 0xc, "vm_start": vm_start, "vm_end": vm_end, "vm_flags": vm_flags, "address": address,
         "pgoff": vm_pgoff + ((address - vm_start) >> 12), "max_pgoff": max_pgoff, "dev": (259 << 20) | 0,
         "flags": flags, "result": 0x800}            # VM_FAULT_FALLBACK
    e.update(extra)
    return e


def test_constants_match_the_kernel():
    assert daxcause.PMD_SIZE == PMD == kernel.PAGE_SIZE * daxcause.PMD_PAGES
    assert daxcause.PG_PMD_COLOUR == 511
    assert daxcause.FAULT_FLAG_WRITE == 0x1 and daxcause.VM_SHARED == 0x8
    assert set(daxcause.CAUSES) == {MISALIGNED, COW, OUTSIDE_VMA, PAST_EOF, PTE_PRESENT, OTHER}
    assert len(daxcause.CAUSES) == 6


# ---------------------------------------------------------------- one cause each

def test_misaligned_address():
    # mmap at a 4 KiB-but-not-2 MiB-aligned address of offset 0: colours never match
    start = BASE + 0x1000
    assert daxcause.classify(event(start + 0x3456, vm_start=start, vm_end=start + 64 * MIB)) == MISALIGNED


def test_misaligned_file_offset():
    # 2 MiB-aligned address, but the mapping starts 4 KiB into the file
    assert daxcause.classify(event(BASE + 5 * PMD + 0x10, vm_pgoff=1)) == MISALIGNED


def test_aligned_offset_of_one_pmd_is_not_misaligned():
    assert daxcause.classify(event(BASE + 0x1000, vm_pgoff=512)) == OTHER


def test_cow_write_to_private_mapping():
    assert daxcause.classify(event(BASE + 0x1000, vm_flags=PRIVATE_RW)) == COW


def test_read_of_private_mapping_is_not_cow():
    assert daxcause.classify(event(BASE + 0x1000, vm_flags=PRIVATE_RW, flags=READ_FAULT)) == OTHER


def test_outside_vma_at_the_end():
    # a 3 MiB VMA: the second 2 MiB block would run 1 MiB past vm_end
    e = event(BASE + PMD + 0x8000, vm_end=BASE + 3 * MIB)
    assert daxcause.classify(e) == OUTSIDE_VMA


def test_outside_vma_at_the_start():
    # VMA starts 1 MiB into a 2 MiB block (offset 1 MiB keeps the colours equal)
    start = BASE + MIB
    e = event(start + 0x1000, vm_start=start, vm_end=BASE + 8 * MIB, vm_pgoff=256)
    assert e["pgoff"] & 511 == (e["address"] >> 12) & 511
    assert daxcause.classify(e) == OUTSIDE_VMA


def test_block_ending_exactly_at_vm_end_fits():
    e = event(BASE + PMD + 0x8000, vm_end=BASE + 2 * PMD)
    assert daxcause.classify(e) == OTHER


def test_past_eof():
    # a 3 MiB file mapped whole into a 4 MiB VMA: the second block crosses i_size
    e = event(BASE + PMD + 0x1000, vm_end=BASE + 4 * MIB, max_pgoff=(3 * MIB) >> 12)
    assert daxcause.classify(e) == PAST_EOF


def test_file_ending_on_a_block_boundary_fits():
    e = event(BASE + PMD + 0x1000, vm_end=BASE + 4 * MIB, max_pgoff=(4 * MIB) >> 12)
    assert daxcause.classify(e) == OTHER


def test_pte_present():
    assert daxcause.classify(event(BASE + 7 * PMD, pte_seen=True)) == PTE_PRESENT


def test_other():
    assert daxcause.classify(event(BASE + 7 * PMD)) == OTHER
    assert daxcause.classify(event(BASE + 7 * PMD, pte_seen=False)) == OTHER


# ---------------------------------------------------------------- kernel order

def test_misaligned_before_cow():
    start = BASE + 0x1000
    e = event(start + 0x1000, vm_start=start, vm_end=start + 64 * MIB, vm_flags=PRIVATE_RW)
    assert daxcause.classify(e) == MISALIGNED


def test_cow_before_outside_vma():
    e = event(BASE + PMD + 0x8000, vm_end=BASE + 3 * MIB, vm_flags=PRIVATE_RW)
    assert daxcause.classify(e) == COW


def test_outside_vma_before_past_eof():
    e = event(BASE + PMD + 0x8000, vm_end=BASE + 3 * MIB, max_pgoff=(3 * MIB) >> 12)
    assert daxcause.classify(e) == OUTSIDE_VMA


def test_past_eof_before_pte_present():
    e = event(BASE + PMD + 0x1000, vm_end=BASE + 4 * MIB, max_pgoff=(3 * MIB) >> 12, pte_seen=True)
    assert daxcause.classify(e) == PAST_EOF


def test_every_cause_at_once_is_misaligned():
    start = BASE + MIB + 0x1000
    e = event(start, vm_start=start, vm_end=start + MIB, vm_flags=PRIVATE_RW, max_pgoff=1, pte_seen=True)
    assert daxcause.classify(e) == MISALIGNED


@pytest.mark.parametrize("peel,cause", [(0, MISALIGNED), (1, COW), (2, OUTSIDE_VMA), (3, PAST_EOF),
                                        (4, PTE_PRESENT), (5, OTHER)])
def test_peeling_causes_in_kernel_order(peel, cause):
    """Start with every cause present and remove them one by one in fs/dax.c's order."""
    start, vm_pgoff = (BASE, 0) if peel >= 1 else (BASE + 0x1000, 0)
    vm_end = BASE + 16 * MIB if peel >= 3 else BASE + 3 * MIB
    e = event(BASE + PMD + 0x1000 if peel >= 1 else start + PMD, vm_start=start, vm_end=vm_end,
              vm_pgoff=vm_pgoff,
              vm_flags=SHARED_RW if peel >= 2 else PRIVATE_RW,
              max_pgoff=FILE_64M if peel >= 4 else (3 * MIB) >> 12,
              pte_seen=peel < 5)
    assert daxcause.classify(e) == cause
