"""diff and VMA grouping on report --json documents captured from real runs of
tests/workloads/diff_arena.c on kernel 6.18 (aligned: one 64 MiB MADV_HUGEPAGE arena;
split: the same 64 MiB as 32 misaligned 2 MiB mappings; plain: no madvise, THP madvise)."""
import copy
import json

import pytest
from click.testing import CliRunner

from pmemtrace import groups, policy
from pmemtrace.cli import cli
from pmemtrace.views import diff
from testkit import FIXTURES

MiB = 1 << 20
D = FIXTURES / "diff"


def load(name):
    return json.loads((D / f"report_{name}.json").read_text())


def test_aligned_vs_split_names_the_group_in_exact_bytes():
    d = diff.compare(load("aligned"), load("split"), 5.0)
    g = d["groups"][0]                                   # most huge bytes lost first
    assert g["key"] == "anon rw-p MADV_HUGEPAGE"
    assert (g["base"]["vmas"], g["new"]["vmas"]) == (1, 32)
    assert (g["base"]["huge_bytes"], g["new"]["huge_bytes"]) == (64 * MiB, 0)
    assert (g["base"]["small_bytes"], g["new"]["small_bytes"]) == (0, 64 * MiB)
    assert (g["base"]["misaligned_vmas"], g["new"]["misaligned_vmas"]) == (0, 32)
    assert g["huge_bytes_delta"] == -64 * MiB and g["regression"]
    assert d["regression"] and d["failing"][:2] == ["totals", "anon rw-p MADV_HUGEPAGE"]
    assert d["totals"]["huge_bytes"]["delta"] == -64 * MiB
    assert d["policy"] == []                              # same machine, same policy


def test_schema_1_keys():
    d = diff.compare(load("aligned"), load("split"), None)
    assert {"schema", "base", "new", "totals", "groups", "policy", "regression", "threshold_pct"} <= set(d)
    assert d["schema"] == 1 and d["threshold_pct"] is None and d["regression"] is False
    assert set(d["base"]) >= {"source", "pid", "comm", "kernel", "time"}
    for key in ("rss_bytes", "huge_bytes", "small_bytes", "huge_share"):
        assert set(d["totals"][key]) == {"base", "new", "delta"}
    for g in d["groups"]:
        assert {"key", "backing", "path", "base", "new", "huge_bytes_delta"} <= set(g)
        assert {"vmas", "rss_bytes", "huge_bytes", "small_bytes", "misaligned_vmas"} <= set(g["base"])
    json.dumps(d)


def test_threshold_is_in_percentage_points():
    base, new = load("aligned"), load("aligned")
    arena = next(v for v in new["vmas"] if v["rss_bytes"] == 64 * MiB)
    arena["huge_bytes"], arena["small_bytes"] = 60 * MiB, 4 * MiB     # 100% -> 93.75% in the group
    # the group fell 6.25 points, the totals (1.3 MiB more RSS) about 6.1
    assert diff.compare(base, new, 6.2)["failing"] == ["anon rw-p MADV_HUGEPAGE"]
    assert not diff.compare(base, new, 6.3)["regression"]


def test_small_groups_never_fail_the_gate():
    base, new = load("aligned"), load("aligned")
    heap = next(v for v in new["vmas"] if v["path"] == "[heap]")
    heap_b = next(v for v in base["vmas"] if v["path"] == "[heap]")
    heap_b["huge_bytes"], heap_b["small_bytes"] = heap_b["rss_bytes"], 0   # under 2 MiB of RSS
    d = diff.compare(base, new, 1.0)
    assert "[heap] rw-p" not in d["failing"]
    assert heap["rss_bytes"] < 2 * MiB


def test_policy_changes_listed():
    base, new = load("plain"), load("plain")
    new["policy"]["thp/enabled"] = "always"
    new["policy"]["kernel"] = new["kernel"] = "6.1.0-28-amd64"
    d = diff.compare(base, new)
    assert {"key": "thp/enabled", "base": "madvise", "new": "always"} in d["policy"]
    lines = diff.text_lines(d)
    assert "  thp/enabled: madvise -> always" in lines
    assert any(line.startswith("kernel: 6.18") and "-> 6.1.0-28-amd64" in line for line in lines)


def test_self_diff_exits_0(tmp_path):
    r = CliRunner().invoke(cli, ["diff", str(D / "report_split.json"), str(D / "report_split.json"),
                                 "--fail-on-drop", "0"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "OK: no huge-share drop beyond 0 points"


def test_cli_regression_exits_12_and_verdict_first():
    r = CliRunner().invoke(cli, ["diff", str(D / "report_aligned.json"), str(D / "report_split.json"),
                                 "--fail-on-drop", "5"])
    assert r.exit_code == 12, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("REGRESSION: huge share fell more than 5 points in: totals")
    assert lines[1].startswith("huge 64M -> 0  share ")
    r = CliRunner().invoke(cli, ["diff", str(D / "report_aligned.json"), str(D / "report_split.json"), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["groups"][0]["huge_bytes_delta"] == -64 * MiB


@pytest.mark.parametrize("content", [b"", b"{\"schema\": 1", b"[1, 2]", b"{\"pid\": 1, \"vmas\": [3]}",
                                     b"\xff\xfe garbage", b"SQLite format 3\x00" + b"\x00" * 50])
def test_foreign_or_truncated_input_exits_13(tmp_path, content):
    bad = tmp_path / "bad"
    bad.write_bytes(content)
    r = CliRunner().invoke(cli, ["diff", str(bad), str(D / "report_split.json")])
    assert r.exit_code == 13, r.output
    assert r.output.startswith("pmemtrace: ") and len(r.output.strip().splitlines()) == 1


def test_missing_file_is_no_such_process():
    r = CliRunner().invoke(cli, ["diff", "/nonexistent/base.json", str(D / "report_split.json")])
    assert r.exit_code == 3 and r.output.startswith("pmemtrace: ")


# ----------------------------------------------------------------- groups

def vma(start, end, perms="rw-p", backing="anon", path="", offset=0, vmflags=(), **kw):
    d = {"start": start, "end": end, "perms": perms, "backing": backing, "path": path, "offset": offset,
         "vmflags": list(vmflags), "rss_bytes": end - start, "huge_bytes": 0, "small_bytes": end - start}
    d.update(kw)
    return d


def test_file_split_into_many_vmas_groups_with_the_single_one():
    one = [vma(0x7f0000000000, 0x7f0004000000, "rw-s", "file", "/data/db", 0)]
    many = [vma(0x7e0000000000 + k * 0x400000, 0x7e0000000000 + k * 0x400000 + 0x200000, "rw-s", "file",
                "/data/db", k * 0x200000) for k in range(32)]
    (k1,) = {key for key, _, _ in groups.group_keys(one)}
    assert {key for key, _, _ in groups.group_keys(many)} == {k1} == {"/data/db @0x0 rw-s"}


def test_library_segments_stay_apart():
    libc = [vma(0x1000, 0x2000, "r--p", "file", "/lib/libc.so.6", 0),
            vma(0x2000, 0x9000, "r-xp", "file", "/lib/libc.so.6", 0x1000),
            vma(0x9000, 0xa000, "r--p", "file", "/lib/libc.so.6", 0x8000)]
    assert [k for k, _, _ in groups.group_keys(libc)] == [
        "/lib/libc.so.6 @0x0 r--p", "/lib/libc.so.6 @0x1000 r-xp", "/lib/libc.so.6 @0x8000 r--p"]


def test_anon_keys_by_kind_and_advice():
    assert groups.anon_key(vma(0, 1, vmflags=["rd", "wr", "hg"])) == "anon rw-p MADV_HUGEPAGE"
    assert groups.anon_key(vma(0, 1, vmflags=["nh"])) == "anon rw-p MADV_NOHUGEPAGE"
    assert groups.anon_key(vma(0, 1, path="[anon:jemalloc]")) == "[anon:jemalloc] rw-p"
    assert groups.anon_key(vma(0, 1, backing="heap", path="[heap]")) == "[heap] rw-p"
    # documents without vmflags: the THP reason names the flag
    old = vma(0, 1, thp_reason="MADV_NOHUGEPAGE on this VMA (VmFlags nh)")
    del old["vmflags"]
    assert groups.anon_key(old) == "anon rw-p MADV_NOHUGEPAGE"


def test_misaligned():
    assert groups.misaligned(vma(0x100000, 0x300000))            # 2 MiB, 1 MiB off the grid
    assert not groups.misaligned(vma(0x100000, 0x400000))        # holds [2M, 4M)
    assert groups.misaligned(vma(0x200000, 0x3ff000))            # too small
    assert not groups.misaligned(vma(0x0, 0x1000, backing="special"))


def test_cmdline_params():
    line = ("console=ttyS0 transparent_hugepage=always hugepages=4 hugepagesz=1G hugepages=2 "
            "thp_anon=64K:always -- hugepages=9")
    assert policy.cmdline_params(line) == {"cmdline/transparent_hugepage": "always", "cmdline/hugepages": "4,2",
                                           "cmdline/hugepagesz": "1G", "cmdline/thp_anon": "64K:always"}


def test_policy_read_from_sysfs_fixture():
    p = policy.read(thp_root=str(FIXTURES / "sysfs-6.18" / "transparent_hugepage"),
                    hugetlb_root=str(FIXTURES / "sysfs-6.18" / "hugepages"), cmdline_path="/nonexistent",
                    release="6.18.0")
    assert p["kernel"] == "6.18.0"
    assert not any("/stats/" in k for k in p)


def test_policy_from_old_report_without_policy_key():
    doc = copy.deepcopy(load("plain"))
    del doc["policy"]
    assert policy.from_report(doc) == {"kernel": doc["kernel"], "thp/enabled": "madvise",
                                       "thp/defrag": "madvise", "thp/shmem_enabled": "never"}


def test_tens_of_thousands_of_vmas():
    """30,000 VMAs each side (2,000 libraries of 5 segments, 20,000 anonymous 2 MiB + 4 KiB pieces)."""
    def side(shift, huge):
        vmas, addr = [], 0x7f0000000000 + shift
        for lib in range(2000):
            for seg, perms in enumerate(("r--p", "r-xp", "r--p", "rw-p", "---p")):
                vmas.append(vma(addr, addr + 0x1000, perms, "file", f"/usr/lib/lib{lib}.so", seg * 0x10000))
                addr += 0x1000
        for _ in range(20000):
            start = (addr + (2 * MiB - 1)) & ~(2 * MiB - 1)
            vmas.append(vma(start, start + 2 * MiB + 4096, vmflags=["hg"],
                            huge_bytes=2 * MiB if huge else 0, small_bytes=4096 if huge else 2 * MiB + 4096))
            addr = start + 4 * MiB
        return {"pid": 1, "comm": "x", "kernel": "6.18", "vmas": vmas}
    d = diff.compare(side(0, True), side(0x100000000, False), 5.0)
    assert len(d["groups"]) == 2000 * 5 + 1
    g = d["groups"][0]
    assert (g["key"], g["base"]["vmas"], g["huge_bytes_delta"]) == ("anon rw-p MADV_HUGEPAGE", 20000, -20000 * 2 * MiB)
    assert d["regression"] and d["totals"]["vmas"] == {"base": 30000, "new": 30000, "delta": 0}


def test_unknown_page_sizes_are_said():
    base, new = load("aligned"), load("aligned")
    arena = next(v for v in base["vmas"] if v["rss_bytes"] == 64 * MiB)
    arena["huge_bytes"] = arena["small_bytes"] = None          # as 6.1 reports a DAX VMA
    d = diff.compare(base, new)
    g = next(g for g in d["groups"] if g["key"] == "anon rw-p MADV_HUGEPAGE")
    assert (g["base"]["unknown_vmas"], g["new"]["unknown_vmas"]) == (1, 0)
    assert any("page size unknown" in line and "1 -> 0 VMAs" in line for line in diff.text_lines(d))


def test_unknown_page_sizes_never_count_as_a_drop():
    """6.1's DAX VMA (huge/small null) against the newest kernel's known bytes: the share is
    unknown ("?", null), not 0, and --fail-on-drop does not fire on it; a drop that is certain
    whatever the unknown bytes are (their bound) still does."""
    base, new = load("aligned"), load("aligned")
    arena_b = next(v for v in base["vmas"] if v["rss_bytes"] == 64 * MiB)
    arena_n = next(v for v in new["vmas"] if v["rss_bytes"] == 64 * MiB)
    arena_b["huge_bytes"] = arena_b["small_bytes"] = None
    arena_n["huge_bytes"], arena_n["small_bytes"] = 0, 64 * MiB          # all of it small now
    d = diff.compare(base, new, 1.0)
    g = next(g for g in d["groups"] if g["key"] == "anon rw-p MADV_HUGEPAGE")
    assert (g["base"]["unknown_bytes"], g["new"]["unknown_bytes"]) == (64 * MiB, 0)
    assert g["huge_share"] == {"base": None, "new": 0.0, "delta": None}
    assert d["totals"]["huge_share"]["base"] is None and d["totals"]["huge_share"]["delta"] is None
    assert d["totals"]["unknown_bytes"] == {"base": 64 * MiB, "new": 0, "delta": -64 * MiB}
    assert not g["regression"] and not d["regression"]
    lines = diff.text_lines(d)
    assert lines[1].startswith("huge ") and "share ? -> " in lines[1]
    row = next(line for line in lines if line.endswith("anon rw-p MADV_HUGEPAGE"))
    assert "? -> 0.0%" in row and not row.startswith("!")
    assert any("1 -> 0 VMAs, 64M -> 0: counted neither huge nor small, and never as a drop" in line
               for line in lines)
    # unknown on the new side, known huge on the base: the new share may be anything: no drop either
    assert not diff.compare(load("aligned"), base, 1.0)["regression"]
    # a certain drop: base known 100% huge in the group, new half unknown, half small: at most 50%
    half = copy.deepcopy(load("aligned"))
    arena = next(v for v in half["vmas"] if v["rss_bytes"] == 64 * MiB)
    arena["huge_bytes"], arena["small_bytes"] = 0, 32 * MiB
    twin = dict(arena, start=arena["end"], end=arena["end"] + 32 * MiB, rss_bytes=32 * MiB,
                huge_bytes=None, small_bytes=None)
    arena["end"], arena["rss_bytes"] = arena["start"] + 32 * MiB, 32 * MiB
    half["vmas"].append(twin)
    d = diff.compare(load("aligned"), half, 40.0)
    assert d["failing"][-1] == "anon rw-p MADV_HUGEPAGE"              # 100% -> at most 50%: a drop of >= 50
    assert not diff.compare(load("aligned"), half, 55.0)["regression"]


def test_faults_and_folios_per_group_from_report_duration_columns():
    base, new = load("aligned"), load("aligned")
    arena_b = next(v for v in base["vmas"] if v["rss_bytes"] == 64 * MiB)
    arena_n = next(v for v in new["vmas"] if v["rss_bytes"] == 64 * MiB)
    for v in base["vmas"] + new["vmas"]:
        v.update(faults=0, huge_faults=0, dax_pmd_faults=0, dax_pte_faults=0, dax_fallbacks=0, dax_needdsync=0,
                 folio_bytes={}, pmd_mapped_bytes=0)
    arena_b.update(faults=32, huge_faults=32, folio_bytes=None, pmd_mapped_bytes=None)
    arena_n.update(faults=16384, huge_faults=0, folio_bytes={"4096": 64 * MiB}, pmd_mapped_bytes=0)
    d = diff.compare(base, new)
    g = next(g for g in d["groups"] if g["key"] == "anon rw-p MADV_HUGEPAGE")
    assert g["faults"]["faults"] == {"base": 32, "new": 16384, "delta": 16352}
    assert g["faults"]["huge_faults"] == {"base": 32, "new": 0, "delta": -32}
    assert (g["base"]["folio_bytes"], g["new"]["folio_bytes"]) == (None, {"4096": 64 * MiB})
    lines = diff.text_lines(d)
    assert "    faults 32 -> 16384, huge 32 -> 0" in lines
    assert "    folios ? -> 64M in 4K (? = unknown on that side's kernel, not a change)" in lines
    # plain report --json documents (no fault columns): null, not zeros
    assert diff.compare(load("aligned"), load("split"))["groups"][0]["faults"] is None


def test_kernel_case_c_on_the_dax_guests_recordings():
    """Issue 10 (c) on the recordings the DAX tier made in the 6.1 and 7.2 guests (see tests/kernel_diff.py)."""
    import io
    import kernel_diff
    base, new = str(FIXTURES / "record-kernel" / "6.1.db"), str(FIXTURES / "record-kernel" / "7.2.db")
    out = io.StringIO()
    assert diff.run(base, new, as_json=True, fail_on_drop=1.0, out=out) == 0
    text = io.StringIO()
    assert diff.run(base, new, fail_on_drop=1.0, out=text) == 0
    kernel_diff.check(json.loads(out.getvalue()), text.getvalue(), "6.1.0-50-amd64", "7.2.13+deb14-amd64")
    # the other way round: 7.2's folio sizes against 6.1's unknown are no loss either
    assert diff.run(new, base, fail_on_drop=0.1, out=io.StringIO()) == 0
