"""DAX residency from the page tables on every kernel (issue 14), in the guest.

The workload of the issue, every page written and held: 64 MiB fs-dax MAP_SYNC at a 2 MiB
aligned address; 16 MiB fs-dax plain MAP_SHARED at an address 4 KiB off the file offset's 2 MiB
alignment; 64 MiB of device-dax. Truth: the bytes written (every page of the mapping, all held
resident: DAX pages are the media, nothing reclaims them) and the kernel's own rules: a PMD
needs address and file offset congruent mod 2 MiB, so the misaligned mapping is all 4 KiB.
Asserted per VMA: the VMA is in the table (no --all), RSS exact from the page tables, huge/small
exact where the kernel can tell (PAGEMAP_SCAN, 6.7+; or provably PTE-only) and null where not,
and huge + small == rss wherever all three are known.

Each run also keeps the raw pagemap words of these VMAs (run-length encoded) in /out as
dax-residency-<kernel>-<case>.json: the unit tier's fixtures (tests/fixtures/dax-*) come from there.
"""
import json
import os

from guestlib import HeldWorkload, report_json, vma_at

MiB = 1 << 20
PAGE = 4096
PM_PRESENT = 1 << 63
PM_PFN = (1 << 55) - 1
# pagemap's PMD path sets PM_FILE on DAX pages (its PTE path never does before 6.15): seen on 6.1,
# not on 5.10 (the guest tier's kernels); before it, aligned DAX blocks are undecidable
PMD_PM_FILE = (6, 1)


def encode_words(pid, start, end):
    """/proc/PID/pagemap words of [start, end) as [(count, first word, pfn step)] runs."""
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        raw = f.read((end - start) // PAGE * 8)
    words = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
    runs = []
    for w in words:
        if runs:
            count, first, step = runs[-1]
            if count == 1 and w == first + 1 and w & PM_PRESENT and w & PM_PFN:
                runs[-1] = [2, first, 1]
                continue
            if w == first + count * step:
                runs[-1][0] += 1
                continue
        runs.append([1, w, 0])
    return runs


def keep_capture(name, pid, v, written, expect_huge, expect_small):
    if not os.path.isdir("/out"):
        return
    rec = {"kernel": os.uname().release, "vmas": [{
        "name": name, "start": v["start"], "end": v["end"], "written_bytes": written,
        "expect_huge": expect_huge, "expect_small": expect_small,
        "words": encode_words(pid, v["start"], v["end"])}]}
    with open(f"/out/dax-residency-{name}.json", "w") as f:
        json.dump(rec, f)


def check(data, v, size, exact, kernel_version):
    """The common assertions; ``exact``: (huge, small) the kernel's rules give for this mapping."""
    assert v["end"] - v["start"] == size
    assert v["rss_bytes"] == size, f"RSS {v['rss_bytes']} != {size} written"
    if kernel_version >= (6, 7):
        assert data["source"] == "PAGEMAP_SCAN"
        assert (v["huge_bytes"], v["small_bytes"]) == exact
    elif exact[0] == 0 or kernel_version >= PMD_PM_FILE:
        # provably PTE-mapped (no 2 MiB block can be one PMD leaf), or told by pagemap's PM_FILE
        assert (v["huge_bytes"], v["small_bytes"]) == exact
    else:
        assert (v["huge_bytes"], v["small_bytes"]) == (None, None)
        assert any("PAGEMAP_SCAN" in n and "unavailable" in n and "--duration" in n for n in data["notes"]), \
            data["notes"]
    if v["huge_bytes"] is not None:
        assert v["huge_bytes"] + v["small_bytes"] == v["rss_bytes"]
    t = data["totals"]
    if None not in (t["rss_bytes"], t["huge_bytes"], t["small_bytes"]):
        assert t["huge_bytes"] + t["small_bytes"] <= t["rss_bytes"] + sum(
            x["huge_bytes"] for x in data["vmas"] if x["backing"] == "hugetlb")
    assert t["rss_bytes"] is None or t["rss_bytes"] >= size


def test_residency_fsdax_map_sync_aligned(daxfs, dax_map, kernel_version):
    fs, dev, mnt = daxfs
    path = f"{mnt}/resid-sync.dat"
    with HeldWorkload(dax_map, path, 64, "hold") as w:
        data = report_json(w.pid)            # no --all: the VMA must be shown
        v = vma_at(data, w.addr)
        known = kernel_version >= PMD_PM_FILE
        keep_capture(f"{kernel_version[0]}.{kernel_version[1]}-{fs}-sync", w.pid, v, 64 * MiB,
                     64 * MiB if known else None, 0 if known else None)
    os.unlink(path)
    assert (v["dax"], v["vm_sync"]) == ("fsdax", True)
    check(data, v, 64 * MiB, (64 * MiB, 0), kernel_version)


def test_residency_fsdax_shared_misaligned(daxfs, dax_map, kernel_version):
    fs, dev, mnt = daxfs
    path = f"{mnt}/resid-shared.dat"
    with HeldWorkload(dax_map, path, 16, "nosync", "misaligned", "hold") as w:
        assert w.addr % (2 * MiB) == PAGE
        data = report_json(w.pid)
        v = vma_at(data, w.addr)
        keep_capture(f"{kernel_version[0]}.{kernel_version[1]}-{fs}-misaligned", w.pid, v, 16 * MiB, 0, 16 * MiB)
    os.unlink(path)
    assert (v["dax"], v["vm_sync"]) == ("fsdax", False)
    check(data, v, 16 * MiB, (0, 16 * MiB), kernel_version)


def test_residency_devdax(devdax, dax_map, kernel_version):
    with HeldWorkload(dax_map, devdax, 64, "hold") as w:
        data = report_json(w.pid)
        v = vma_at(data, w.addr)
        known = kernel_version >= PMD_PM_FILE
        keep_capture(f"{kernel_version[0]}.{kernel_version[1]}-devdax", w.pid, v, 64 * MiB,
                     64 * MiB if known else None, 0 if known else None)
    assert v["dax"] == "devdax"
    check(data, v, 64 * MiB, (64 * MiB, 0), kernel_version)


def test_residency_devdax_nothing_resident_still_shown(devdax, dax_map):
    """A DAX VMA with nothing resident yet is still in the table (no --all), RSS exactly 0."""
    with HeldWorkload(dax_map, devdax, 8, "wait", "hold") as w:
        data = report_json(w.pid)
        v = vma_at(data, w.addr)
        w.go()
    assert v["dax"] == "devdax"
    assert (v["rss_bytes"], v["huge_bytes"], v["small_bytes"]) == (0, 0, 0)
