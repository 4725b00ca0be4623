"""What `pmemtrace diff` must say about issue 10's kernel case (c): tests/workloads/kernel_regress.c
recorded (`record -p`) in the 6.1 DAX guest and in the newest (7.2). Shared by the unit tier (on the
two recordings kept in tests/fixtures/record-kernel/, from the DAX tier's run of 2026-11-30) and by
the DAX tier (tests/dax/test_record_kernel_diff.py, on the recordings its guests just made).

The kernels' own facts behind each number:
- anonymous 32 MiB MADV_HUGEPAGE, 2 MiB aligned: 16 THP faults, all huge on both; folio sizes only
  where PAGEMAP_SCAN exists (7.2: 16 x 2 MiB folios); 6.1 cannot read them: null, "?", no change;
- fs-dax MAP_SYNC 16 MiB of a fallocated, unwritten file: 8 PMD faults that each return NEEDDSYNC
  (the sync, then the PMD), 16 MiB huge on both (6.1 tells PMD leaves by pagemap's PM_FILE, 7.2
  by PAGEMAP_SCAN);
- the same 4 MiB file mapped at 2 MiB + 4 KiB (shared) and 2 MiB aligned (MAP_SYNC): 2 x 1024 PTE
  faults, all small; the PMD attempts that fell back (misaligned, then 4 KiB entries present)
  doubled from 6.1 to 7.2 (5 -> 10), as tests/dax/guest/test_fallback_causes.py sees on ext4;
- the kernel line changed; nothing else regressed (--fail-on-drop 1: exit 0, both ways).
"""
MiB = 1 << 20
ANON, SYNC, PTE = "anon rw-p MADV_HUGEPAGE", "/mnt/ext4/kr-sync.dat @0x0 rw-s", "/mnt/ext4/kr-pte.dat @0x0 rw-s"


def side(g, which, **want):
    got = {k: g[which][k] for k in want}
    assert got == want, f"{g['key']} {which}: {got} != {want}"


def check(d: dict, text: str, base_kernel: str, new_kernel: str) -> None:
    assert (d["base"]["kernel"], d["new"]["kernel"]) == (base_kernel, new_kernel)
    assert base_kernel.startswith("6.1.") and new_kernel.startswith("7.2.")
    assert f"kernel: {base_kernel} -> {new_kernel}" in text.splitlines()
    assert (d["base"]["folios_readable"], d["new"]["folios_readable"]) == (False, True)
    assert d["regression"] is False and d["failing"] == []
    assert d["totals"]["unknown_bytes"] == {"base": 0, "new": 0, "delta": 0}
    groups = {g["key"]: g for g in d["groups"]}
    anon, sync, pte = groups[ANON], groups[SYNC], groups[PTE]
    for which in ("base", "new"):
        side(anon, which, vmas=1, rss_bytes=32 * MiB, huge_bytes=32 * MiB, small_bytes=0, huge_share=1.0, dax={},
             vm_sync_vmas=0, unknown_bytes=0)
        side(sync, which, vmas=1, rss_bytes=16 * MiB, huge_bytes=16 * MiB, small_bytes=0, huge_share=1.0,
             dax={"fsdax": 1}, vm_sync_vmas=1, unknown_bytes=0)
        side(pte, which, vmas=2, rss_bytes=8 * MiB, huge_bytes=0, small_bytes=8 * MiB, huge_share=0.0,
             dax={"fsdax": 2}, vm_sync_vmas=1, unknown_bytes=0)
    # what 6.1 cannot know: folio sizes, null there, numbers on 7.2
    side(anon, "base", folio_bytes=None, pmd_mapped_bytes=None)
    side(anon, "new", folio_bytes={"2097152": 32 * MiB}, pmd_mapped_bytes=32 * MiB)
    side(sync, "base", folio_bytes=None, pmd_mapped_bytes=None)
    side(sync, "new", folio_bytes={"2097152": 16 * MiB}, pmd_mapped_bytes=16 * MiB)
    side(pte, "new", folio_bytes={"4096": 8 * MiB}, pmd_mapped_bytes=0)
    # faults over the recording, per group
    def faults(g):
        return {k: (p["base"], p["new"]) for k, p in g["faults"].items() if p["base"] or p["new"]}
    assert faults(anon) == {"faults": (16, 16), "huge_faults": (16, 16)}
    assert faults(sync) == {"faults": (8, 8), "dax_needdsync": (8, 8)}
    assert faults(pte) == {"faults": (2048, 2048), "dax_pte_faults": (2048, 2048), "dax_fallbacks": (5, 10)}
    lines = text.splitlines()
    assert lines[0] == "OK: no huge-share drop beyond 1 points"
    row = next(i for i, line in enumerate(lines) if line.endswith(f"{PTE}  [fsdax MAP_SYNC 1/2]"))
    assert "    DAX fallbacks 5 -> 10" in lines[row + 1:row + 3]
    assert any(line.endswith(f"{SYNC}  [fsdax MAP_SYNC]") for line in lines)
    assert "    folios ? -> 32M in 2M (? = unknown on that side's kernel, not a change)" in lines
    assert any(line.startswith("  folio sizes: unknown on the base side (6.1.") for line in lines)
