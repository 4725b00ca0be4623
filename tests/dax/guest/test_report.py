"""`pmemtrace report` in the guest, against real fs-dax (ext4, xfs) and device-dax mappings.

Exact numbers: the workload maps 64 MiB at a 2 MiB-aligned address and touches every
4 KiB page; ground truth for the static columns is the kernel version (PAGEMAP_SCAN
exists from 6.7). The --duration fault columns are tested in test_fallback_causes.py.
"""
import os

from guestlib import HeldWorkload, report_json, vma_at

MiB = 1 << 20


def test_report_fsdax_map_sync(daxfs, dax_map, kernel_version):
    fs, dev, mnt = daxfs
    path = f"{mnt}/report-sync.dat"
    with HeldWorkload(dax_map, path, 64, "hold") as w:
        data = report_json(w.pid)
        v = vma_at(data, w.addr)
    os.unlink(path)
    assert v["end"] - v["start"] == 64 * MiB
    assert v["path"] == path
    assert v["dax"] == "fsdax"
    assert v["vm_sync"] is True
    if kernel_version >= (6, 7):
        assert data["source"] == "PAGEMAP_SCAN"
        assert (v["huge_bytes"], v["small_bytes"]) == (64 * MiB, 0)
    elif kernel_version >= (6, 1):             # pagemap's PM_FILE tells PMD leaves (see test_residency)
        assert data["source"] == "smaps"
        assert (v["huge_bytes"], v["small_bytes"]) == (64 * MiB, 0)
    else:
        assert data["source"] == "smaps"
        assert v["huge_bytes"] is None and v["small_bytes"] is None
        assert any("PAGEMAP_SCAN" in n and "unavailable" in n and "--duration" in n for n in data["notes"]), \
            data["notes"]


def test_report_fsdax_plain_shared(daxfs, dax_map):
    fs, dev, mnt = daxfs
    path = f"{mnt}/report-shared.dat"
    with HeldWorkload(dax_map, path, 8, "nosync", "hold") as w:
        v = vma_at(report_json(w.pid), w.addr)
    os.unlink(path)
    assert (v["dax"], v["vm_sync"]) == ("fsdax", False)


def test_report_devdax(devdax, dax_map, kernel_version):
    with HeldWorkload(dax_map, devdax, 64, "hold") as w:
        data = report_json(w.pid)
        v = vma_at(data, w.addr)
    assert v["dax"] == "devdax"
    assert v["vm_sync"] is True
    assert v["end"] - v["start"] == 64 * MiB
    if kernel_version >= (6, 7):
        assert (v["huge_bytes"], v["small_bytes"]) == (64 * MiB, 0)
