"""Folio sizes in the guest kernels: tmpfs huge=always gives PMD-mapped 2 MiB file folios. fs-dax
memory is PMD-mapped; whether it has folios depends on the kernel (7.2 has 2 MiB DAX folios; where
kpageflags says KPF_NOPAGE there is no struct page and the folio keys are null, never guessed): the
test asks kpageflags itself. Before 6.7 (no PAGEMAP_SCAN) every folio key is null.
"""
import os
import struct
import subprocess

from guestlib import HeldWorkload, report_json, vma_at

MiB = 1 << 20


def test_tmpfs_huge_always_is_pmd_mapped_2m_folios(dax_map, kernel_version, tmp_path):
    mnt = tmp_path / "thp-tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "huge=always,size=32M", "none", str(mnt)], check=True)
    try:
        with HeldWorkload(dax_map, f"{mnt}/folios.dat", 8, "nosync", "hold") as w:
            data = report_json(w.pid)
            v = vma_at(data, w.addr)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
    if kernel_version >= (6, 7):
        assert data["folio_source"] == "PAGEMAP_SCAN+kpageflags"
        assert v["folio_bytes"] == {"2097152": 8 * MiB}
        assert v["pmd_mapped_bytes"] == 8 * MiB and v["pte_mapped_thp_bytes"] == 0
    else:
        assert data["folio_source"] is None
        assert v["folio_bytes"] is None and v["pmd_mapped_bytes"] is None


def test_fsdax_folio_sizes_are_unknown(daxfs, dax_map, kernel_version):
    fs, dev, mnt = daxfs
    path = f"{mnt}/folios-dax.dat"
    with HeldWorkload(dax_map, path, 64, "hold") as w:          # MAP_SYNC: 32 PMD faults (test_report)
        v = vma_at(report_json(w.pid), w.addr)
        with open(f"/proc/{w.pid}/pagemap", "rb") as f:
            (word,) = struct.unpack("=Q", os.pread(f.fileno(), 8, w.addr // 4096 * 8))
        with open("/proc/kpageflags", "rb") as f:
            (flags,) = struct.unpack("=Q", os.pread(f.fileno(), 8, (word & ((1 << 55) - 1)) * 8))
    os.unlink(path)
    if kernel_version < (6, 7):
        assert v["folio_bytes"] is None and v["pmd_mapped_bytes"] is None
        return
    assert v["pmd_mapped_bytes"] == v["huge_bytes"] == 64 * MiB
    if flags & (1 << 20):          # KPF_NOPAGE: no struct page behind DAX memory on this kernel
        assert v["folio_bytes"] is None and v["partial_folio_bytes"] is None
    else:                          # DAX folios (7.2): 2 MiB, PMD-mapped
        assert v["folio_bytes"] == {"2097152": 64 * MiB} and v["partial_folio_bytes"] == 0
