"""Why a DAX PMD fault fell back to 4 KiB pages, in words.

A pure function over one fs_dax:dax_pmd_fault_done event (fields as the probe
streams them) plus remembered history (pte_seen: a 4 KiB entry was faulted or a
hole loaded earlier in the same 2 MiB of the same file, by any process). The
checks follow the kernel's own order in fs/dax.c (dax_fault_check_fallback, then
the entry lookup). VM_NOHUGEPAGE never reaches here: the kernel makes no PMD
attempt at all, so report shows it from the VMA's flags instead.
"""
PAGE_SHIFT = 12
PMD_PAGES = 512                # 2 MiB / 4 KiB on x86-64
PMD_SIZE = PMD_PAGES << PAGE_SHIFT
PG_PMD_COLOUR = PMD_PAGES - 1
FAULT_FLAG_WRITE = 0x1
VM_SHARED = 0x8

MISALIGNED = "virtual address and file offset not congruent modulo 2 MiB"
COW = "write to a private (copy-on-write) mapping"
OUTSIDE_VMA = "2 MiB block extends outside the VMA"
PAST_EOF = "2 MiB block crosses end of file"
PTE_PRESENT = "4 KiB entry already present for this 2 MiB of the file (earlier PTE fault or hole load)"
OTHER = "other: no 2 MiB extent from the filesystem, or the entry was busy"

CAUSES = (MISALIGNED, COW, OUTSIDE_VMA, PAST_EOF, PTE_PRESENT, OTHER)


def classify(e: dict) -> str:
    pgoff, address = e["pgoff"], e["address"]
    if (pgoff & PG_PMD_COLOUR) != ((address >> PAGE_SHIFT) & PG_PMD_COLOUR):
        return MISALIGNED
    if e["flags"] & FAULT_FLAG_WRITE and not e["vm_flags"] & VM_SHARED:
        return COW
    pmd_addr = address & ~(PMD_SIZE - 1)
    if pmd_addr < e["vm_start"] or pmd_addr + PMD_SIZE > e["vm_end"]:
        return OUTSIDE_VMA
    if (pgoff | PG_PMD_COLOUR) >= e["max_pgoff"]:
        return PAST_EOF
    if e.get("pte_seen"):
        return PTE_PRESENT
    return OTHER
