"""views/report.py without root: the JSON document and the rich rendering of a ProcessVmas built
from the smaps captured on this VM (tests/fixtures/proc-6.18/smaps: 116 VMAs, an 8 MiB THP
region, files named with markup, an escape sequence, a newline, a space, a deleted file),
the way vmas.describe_process() builds it with the smaps source; fault columns from
hand-built probe counts through aggregate.per_vma."""
import io
import os
import re

import pytest
from rich.console import Console

from pmemtrace import aggregate, daxcause, kernel, procfs, vmas
from pmemtrace.aggregate import EVENT_MMAP, ProbeCounts, VmaIndex
from pmemtrace.views import report

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "proc-6.18")
KIB, MIB = 1024, 1 << 20
PMD = 2 * MIB
PID = 24376
HG = 0x7f06bb800000
HOSTILE_COMM = "[red]x[/red]\x1b[2J\nevil"
POLICY = kernel.ThpPolicy("madvise", "madvise", "never", {2 * MIB: "inherit"})

VMA_KEYS = {"start", "end", "perms", "backing", "path", "rss_bytes", "huge_bytes", "small_bytes", "dax",
            "vm_sync", "thp_eligible", "thp_reason", "offset", "vmflags"}
FAULT_COLUMNS = {"faults", "huge_faults", "dax_pmd_faults", "dax_pte_faults", "dax_fallbacks", "dax_needdsync",
                 "dax_fallback_causes", "map_sync_latency_log2_ns", "madvise"}


def fixture_blocks():
    with open(os.path.join(FIX, "smaps")) as f:
        return procfs.parse_smaps(f.read())


def vma_from_block(b, facts=vmas.FileFacts()):
    """What describe_process does for one smaps block with the smaps source."""
    kind = vmas.classify_backing(b.map, b.vmflags, facts)
    eligible, reason = vmas.classify_thp(kind, facts.dax, b.vmflags, b.counters.get("THPeligible"), POLICY, False)
    huge = vmas.smaps_huge_bytes(b)
    return vmas.Vma(b.map.start, b.map.end, b.map.perms, kind, b.map.path, b.get("Rss"), huge,
                    max(b.get("Rss") - huge, 0), facts.dax, "sf" in b.vmflags, eligible, reason,
                    tuple(sorted(b.vmflags)))


@pytest.fixture
def proc():
    return vmas.ProcessVmas(PID, HOSTILE_COMM, vmas.SOURCE_SMAPS, [vma_from_block(b) for b in fixture_blocks()], [])


def by_start(data, start):
    hits = [v for v in data["vmas"] if v["start"] == start]
    assert len(hits) == 1
    return hits[0]


# ---------------------------------------------------------------- visible

def vma(rss, huge, small):
    return vmas.Vma(0x7f0000000000, 0x7f0000400000, "rw-p", "anon", "", rss, huge, small, "none", False,
                    False, "x")


def test_visible():
    assert not report.visible(vma(0, 0, 0), False)
    assert report.visible(vma(0, 0, 0), True)
    assert report.visible(vma(4096, 0, 4096), False)
    assert report.visible(vma(0, 4 * MIB, 0), False)          # hugetlb pages are not counted in Rss
    assert report.visible(vma(0, None, 8192), False)


def test_dax_vma_is_never_hidden():
    """A DAX VMA shows even with nothing resident or residency unknown (smaps before 6.15 counts
    no DAX pages: the 6.1 guest once lost a 16 MiB fs-dax VMA this way)."""
    for rss, huge, small in ((0, 0, 0), (None, None, None), (0, None, None)):
        v = vma(rss, huge, small)
        assert not report.visible(v, False)
        v.dax = "fsdax"
        assert report.visible(v, False)


# ---------------------------------------------------------------- JSON

def test_json_schema(proc):
    data = report.build_json(proc, False, POLICY)
    assert {"schema", "pid", "comm", "kernel", "source", "thp", "notes", "vmas", "totals"} <= set(data)
    assert data["schema"] == report.JSON_SCHEMA_VERSION == 1
    assert data["pid"] == PID and data["comm"] == HOSTILE_COMM       # JSON carries the raw name
    assert data["kernel"] == os.uname().release
    assert data["source"] == "smaps"
    assert data["thp"] == {"enabled": "madvise", "defrag": "madvise", "shmem_enabled": "never"}
    assert set(data["totals"]) == {"rss_bytes", "huge_bytes", "small_bytes", "huge_share"}
    for v in data["vmas"]:
        assert set(v) == VMA_KEYS
        assert isinstance(v["start"], int) and isinstance(v["end"], int) and v["start"] < v["end"]
        assert isinstance(v["vm_sync"], bool) and isinstance(v["thp_eligible"], bool)
    assert "duration" not in data and "unmapped" not in data
    assert data["policy"]["kernel"] == os.uname().release and isinstance(data["time"], float)


def test_json_hides_vmas_without_resident_pages(proc):
    shown = report.build_json(proc, False, POLICY)["vmas"]
    everything = report.build_json(proc, True, POLICY)["vmas"]
    assert len(everything) == 116 and len(shown) == 110
    hidden = {v["path"] for v in everything} - {v["path"] for v in shown}
    assert {"[vvar]", "[vvar_vclock]", "[vsyscall]"} <= hidden
    assert all(v["rss_bytes"] > 0 for v in shown)
    assert [v["start"] for v in everything] == sorted(v["start"] for v in everything)


def test_json_values_from_smaps(proc):
    data = report.build_json(proc, False, POLICY)
    hg = by_start(data, HG)
    assert hg == {"start": HG, "end": HG + 8 * MIB, "perms": "rw-p", "backing": "anon", "path": "",
                  "rss_bytes": 8 * MIB, "huge_bytes": 8 * MIB, "small_bytes": 0, "dax": "none",
                  "vm_sync": False, "thp_eligible": True, "thp_reason": "MADV_HUGEPAGE on this VMA (VmFlags hg)",
                  "offset": 0, "vmflags": ["ac", "hg", "me", "mr", "mw", "rd", "wr"]}
    nl = [v for v in data["vmas"] if v["path"] == "/tmp/fx/dir/new\nline.bin"][0]
    assert (nl["backing"], nl["rss_bytes"], nl["small_bytes"], nl["perms"]) == ("file", 8 * KIB, 8 * KIB, "rw-s")
    # totals: the whole process, as smaps_rollup-style sums of what is shown
    blocks = fixture_blocks()
    rss = sum(b.get("Rss") for b in blocks)
    assert data["totals"] == {"rss_bytes": rss, "huge_bytes": 8 * MIB, "small_bytes": rss - 8 * MIB,
                              "huge_share": round(8 * MIB / rss, 4)}
    assert data["totals"]["rss_bytes"] == 21880 * KIB


def test_json_totals_unknown_when_a_term_is_unknown(proc):
    dax = vmas.Vma(0x7f4c00000000, 0x7f4c40000000, "rw-s", "device-dax", "/dev/dax0.0", 64 * MIB, None, None,
                   "devdax", True, False, "DAX: ...")
    proc.vmas.append(dax)
    proc.notes.append("no PAGEMAP_SCAN")
    data = report.build_json(proc, False, POLICY)
    d = by_start(data, 0x7f4c00000000)
    assert d["huge_bytes"] is None and d["small_bytes"] is None and d["vm_sync"] is True
    assert d["rss_bytes"] == 64 * MIB
    t = data["totals"]
    assert t["rss_bytes"] == 21880 * KIB + 64 * MIB
    assert t["huge_bytes"] is None and t["small_bytes"] is None and t["huge_share"] is None
    assert data["notes"] == ["no PAGEMAP_SCAN"]
    text = render_text(data)[1]
    assert "a total shown ? includes a VMA whose value is unknown" in text
    row = [ln for ln in text.splitlines() if "7f4c00000000" in ln][0]
    assert re.search(r"device-dax\s+64M\s+\?\s+\?\s+devdax", row), row


def test_json_unknown_rss_is_null_and_shown_as_question_mark(proc):
    dax = vmas.Vma(0x7f4c00000000, 0x7f4c01000000, "rw-s", "file", "/mnt/x", None, None, None,
                   "fsdax", False, False, "DAX: ...")
    proc.vmas.append(dax)
    data = report.build_json(proc, False, POLICY)
    assert by_start(data, 0x7f4c00000000)["rss_bytes"] is None
    assert data["totals"]["rss_bytes"] is None
    row = [ln for ln in render_text(data)[1].splitlines() if "7f4c00000000" in ln][0]
    assert re.search(r"file\s+\?\s+\?\s+\?\s+fsdax", row), row


def test_huge_plus_small_is_rss_for_every_known_vma(proc):
    """The invariant on the captured smaps (smaps source: small = Rss - huge)."""
    data = report.build_json(proc, True, POLICY)
    known = [v for v in data["vmas"] if None not in (v["rss_bytes"], v["huge_bytes"], v["small_bytes"])]
    assert len(known) == 116
    for v in known:
        if v["backing"] != "hugetlb":
            assert v["huge_bytes"] + v["small_bytes"] == v["rss_bytes"], v


@pytest.fixture
def faults(proc):
    c = ProbeCounts()
    for i in range(4):
        c.thp_faults[(PID, HG + i * PMD)] = 1
    c.page_faults[(PID, HG)] = 4
    c.page_faults[(PID, 0x7f06bc138000)] = 2              # the deleted file
    c.page_faults[(PID, 0x7f06bce56000)] = 1              # [vvar]: no Rss, shown because it faulted
    c.page_faults[(PID, 0x1000)] = 3                      # nowhere
    c.dax[(PID, "pmd_huge", HG)] = 2
    c.dax[(PID, "pmd_fallback", HG)] = 1
    c.dax[(PID, "pmd_needdsync", HG)] = 5
    c.dax[(PID, "pte", HG + PMD)] = 7
    c.dax[(PID, "pte_needdsync", HG + 2 * PMD)] = 1
    c.dsync_latency[(PID, HG, 12)] = 5
    c.thp_unattributed[PID] = 2
    c.events = [{"type": EVENT_MMAP, "tgid": PID, "addr": 0, "len": PMD, "prot": 3, "flags": 0x80003, "fd": 3,
                 "off": 0, "ret": -95, "comm": "x"},
                {"type": aggregate.EVENT_DAX_FALLBACK, "tgid": PID, "vm_start": HG, "vm_end": HG + 8 * MIB,
                 "vm_flags": 0x300000fb, "address": HG + 0x1000, "pgoff": 1, "max_pgoff": 2048, "ino": 1,
                 "dev": 0, "flags": 0x1255, "result": 0x800, "pte_seen": True, "comm": "x"}]
    index = VmaIndex((v.start, v.end) for v in proc.vmas)
    return c, aggregate.per_vma(c, PID, index, PMD, daxcause.classify)


def test_json_with_faults(proc, faults):
    counts, per_vma = faults
    data = report.build_json(proc, False, POLICY, per_vma, 2.0, {"fs_dax:dax_load_hole": "missing"}, 3,
                             counts.thp_unattributed[PID])
    assert data["duration"] == 2.0 and data["lost_events"] == 3
    assert data["probes_missing"] == {"fs_dax:dax_load_hole": "missing"}
    assert data["huge_faults_unattributed"] == 2
    for v in data["vmas"]:
        assert set(v) == VMA_KEYS | FAULT_COLUMNS
    hg = by_start(data, HG)
    assert (hg["faults"], hg["huge_faults"], hg["dax_pmd_faults"], hg["dax_pte_faults"], hg["dax_fallbacks"],
            hg["dax_needdsync"]) == (4, 4, 2, 8, 1, 6)
    assert hg["dax_fallback_causes"] == {daxcause.PTE_PRESENT: 1}
    assert hg["map_sync_latency_log2_ns"] == {"12": 5}
    assert by_start(data, 0x7f06bce56000)["faults"] == 1       # [vvar] shown: it faulted
    assert len(data["vmas"]) == 111
    assert data["unmapped"]["faults"] == 3
    t = data["totals"]
    assert (t["faults"], t["huge_faults"], t["dax_pmd_faults"], t["dax_pte_faults"], t["dax_fallbacks"],
            t["dax_needdsync"]) == (10, 6, 2, 8, 1, 6)
    untouched = by_start(data, 0x7f06bc005000)
    assert all(untouched[k] == 0 for k in report.FAULT_KEYS) and untouched["madvise"] == {}


# ---------------------------------------------------------------- rendering

def render_text(data, **console_kw):
    console = Console(record=True, width=250, file=io.StringIO(), **console_kw)
    report.render(console, data)
    return console, console.export_text()


def test_render_hostile_names_are_text(proc):
    data = report.build_json(proc, False, POLICY)
    console, text = render_text(data)
    assert "comm [red]x[/red]\\x1b[2J\\nevil" in text
    assert "/tmp/fx/dir/[red]markup[-red].bin" in text
    assert "/tmp/fx/dir/esc\\x1b[2J.bin" in text
    assert "/tmp/fx/dir/new\\nline.bin" in text
    assert "/tmp/fx/dir/with space.bin" in text
    assert "/tmp/fx/dir/deleted.bin (deleted)" in text
    assert "\x1b" not in text
    # one table line per VMA shown: the newline in a path did not split a row
    assert sum(1 for line in text.splitlines() if re.match(r"\s*[0-9a-f]{12,16}\s+[0-9a-f]{12,16}\s", line)) == 110


def test_render_to_a_terminal_emits_no_escape_from_names(proc):
    data = report.build_json(proc, False, POLICY)
    buf = io.StringIO()
    console = Console(file=buf, width=250, force_terminal=True, color_system="truecolor")
    report.render(console, data)
    raw = buf.getvalue()
    assert "\x1b[" in raw                                 # styles are emitted (bold header) ...
    assert "\x1b[2J" not in raw                           # ... but never the name's clear-screen
    assert re.search(r"\x1b\[[0-9;]*[A-HJKSTfsu]", raw) is None   # no cursor movement or erase at all
    assert "[red]x[/red]" in raw and "[red]markup[-red].bin" in raw
    assert "\x1b[31m" not in raw                          # the markup was not turned into red


def test_render_header_and_columns(proc):
    _, text = render_text(report.build_json(proc, False, POLICY))
    first = text.splitlines()[0]
    assert first.startswith(f"pid {PID}  comm ")
    assert f"kernel {os.uname().release}" in first
    assert "THP enabled=madvise defrag=madvise shmem=never" in first
    assert first.rstrip().endswith("page sizes from smaps")
    head = text.splitlines()[1].split()
    assert head == ["START", "END", "SIZE", "PERM", "BACKING", "RSS", "HUGE", "SMALL", "DAX", "SYNC", "THP", "PATH"]
    row = [line for line in text.splitlines() if line.lstrip().startswith("7f06bb800000")][0].split()
    assert row == ["7f06bb800000", "7f06bc000000", "8M", "rw-p", "anon", "8M", "8M", "0", "none", "no", "yes",
                   row[11]]
    total = [line for line in text.splitlines() if line.lstrip().startswith("total")][0].split()
    assert total == ["total", "21.4M", "8M", "13.4M"]


def test_render_thp_reasons_numbered_once(proc):
    data = report.build_json(proc, False, POLICY)
    _, text = render_text(data)
    notes = re.findall(r"^\[(\d+)\] THP (.*)$", text, re.M)
    reasons = [r for _, r in notes]
    assert len(reasons) == len(set(reasons)) == len({v["thp_reason"] for v in data["vmas"]})
    assert [int(n) for n, _ in notes] == list(range(1, len(notes) + 1))
    number = {r.rstrip(): int(n) for n, r in notes}
    # every row points at its own reason's number
    for v in data["vmas"]:
        line = [x for x in text.splitlines() if x.lstrip().startswith(f"{v['start']:x} ")][0]
        assert f"{'yes' if v['thp_eligible'] else 'no'} [{number[v['thp_reason']]}]" in line
    assert number["MADV_HUGEPAGE on this VMA (VmFlags hg)"] >= 1


def test_render_with_faults(proc, faults):
    counts, per_vma = faults
    data = report.build_json(proc, False, POLICY, per_vma, 2.0, {"fs_dax:dax_load_hole": "is missing"}, 3, 2)
    _, text = render_text(data)
    head = text.splitlines()[1].split()
    assert head[10:16] == ["FAULTS", "THP", "DAXPMD", "DAXPTE", "FALLBK", "DSYNC"]
    row = [line for line in text.splitlines() if line.lstrip().startswith("7f06bb800000")][0].split()
    assert row[10:16] == ["4", "4", "2", "8", "1", "6"]
    unmapped = [line for line in text.splitlines() if "(unmapped)" in line][0].split()
    assert unmapped == ["(unmapped)", "3", "0", "0", "0", "0", "0"]
    total = [line for line in text.splitlines() if line.lstrip().startswith("total")][0].split()
    assert total == ["total", "21.4M", "8M", "13.4M", "10", "6", "2", "8", "1", "6"]
    assert "probes attached 2s; lost events: 3" in text
    assert "note: fs_dax:dax_load_hole is missing" in text


def test_render_notes(proc):
    proc.notes.append("this kernel has no PAGEMAP_SCAN")
    _, text = render_text(report.build_json(proc, False, POLICY))
    assert "note: this kernel has no PAGEMAP_SCAN" in text


def test_render_undecodable_path_bytes(proc):
    # procfs decodes /proc text with surrogateescape: a 0xff byte in a file name arrives as
    # U+DCFF and must be shown as \xff, not crash the console's encoder
    path = b"/tmp/fx/dir/bad\xff\x07.bin".decode("utf-8", "surrogateescape")
    proc.vmas.append(vmas.Vma(0x7f4c00000000, 0x7f4c00002000, "rw-s", "file", path, 8192, 0, 8192, "none",
                              False, False, "file: page cache of this filesystem is not THP-eligible here"))
    data = report.build_json(proc, False, POLICY)
    _, text = render_text(data)
    assert "/tmp/fx/dir/bad\\xff\\x07.bin" in text
    assert "\x07" not in text and "\udcff" not in text


def test_json_and_render_mincore(proc, faults):
    counts, per_vma = faults
    data = report.build_json(proc, False, POLICY, per_vma, 2.0, {}, 0, 0)
    assert data["mincore"] == {"calls": 0, "errors": 0, "bytes": 0, "pages_examined": 0, "pages_resident": 0,
                               "ns": 0}
    _, text = render_text(data)
    assert "mincore:" not in text                         # no calls, no line
    mc = aggregate.MincoreStats(calls=4, errors=1, bytes=64 * MIB, pages_examined=16384, pages_resident=4096,
                                ns=10000)
    data = report.build_json(proc, False, POLICY, per_vma, 2.0, {}, 0, 0, mc)
    assert data["mincore"] == {"calls": 4, "errors": 1, "bytes": 64 * MIB, "pages_examined": 16384,
                               "pages_resident": 4096, "ns": 10000}
    _, text = render_text(data)
    assert "mincore: 4 calls, 64M queried, 25.0% of examined pages resident, 2.5 us per call" in text
