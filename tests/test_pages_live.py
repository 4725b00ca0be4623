"""Live (root): `pmemtrace pages` against page tables the workload shaped on purpose.

tests/workloads/pages_workload.c builds a fully touched MADV_HUGEPAGE region, the same
with an mprotect of one page in the middle of a huge page (the kernel splits that PMD),
a sparse MADV_HUGEPAGE region, a MADV_NOHUGEPAGE region, hugetlb regions (2 MiB and
1 GiB pages, from pools this module sets and restores), a private file mapping with one
page copied on write, a memfd (shmem) mapping, the huge zero page, and a guard region.
`pages --json` must equal:
  - an independent PAGEMAP_SCAN reading written here (libc ioctl, struct.pack; it does
    not import pmemtrace.pagemap), run by run, byte for byte;
  - smaps: AnonHugePages / Rss / Anonymous / Private_Hugetlb per VMA;
  - the sizes the workload built (what this kernel does: a THP per touched aligned
    2 MiB block, one split PMD per mprotect).
"""
import ctypes
import json
import os
import struct
import subprocess
import sys
import time

import pytest

from pmemtrace import procfs

pytestmark = pytest.mark.live

MIB = 1 << 20
GIB = 1 << 30
K4 = 4096
HUGETLB_MIB = 4
HUGE_2M_POOL = "/proc/sys/vm/nr_hugepages"
HUGE_1G_POOL = "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, check=False):
    """`python -m pmemtrace ARGS` from the checkout. (Not imported from tests/conftest.py:
    with tests/dax/guest/conftest.py in the same run, `import conftest` may find that one.)"""
    p = subprocess.run([sys.executable, "-m", "pmemtrace", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"pmemtrace {args} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


# ---------------------------------------------------------------- independent PAGEMAP_SCAN

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
ARG_FMT = "=12Q"                          # struct pm_scan_arg: twelve __u64
REGION_FMT = "=3Q"                        # struct page_region: start, end, categories
SCAN_IOCTL = (3 << 30) | (struct.calcsize(ARG_FMT) << 16) | (ord("f") << 8) | 16   # _IOWR('f', 16, ...) x86-64
IS_PRESENT, IS_HUGE = 1 << 3, 1 << 6


def independent_scan(pid, start, end):
    """[(start, end, present, huge)] over [start, end), adjacent equal runs merged."""
    nvec = 256          # within the kernel's 512-entry bounce buffer: walk_end is exact then
    vec = ctypes.create_string_buffer(nvec * struct.calcsize(REGION_FMT))
    out = []
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        pos = start
        while pos < end:
            arg = ctypes.create_string_buffer(struct.pack(
                ARG_FMT, struct.calcsize(ARG_FMT), 0, pos, end, 0, ctypes.addressof(vec), nvec, 0,
                0, 0, 0, IS_PRESENT | IS_HUGE))
            n = _libc.ioctl(fd, SCAN_IOCTL, arg)
            assert n >= 0, os.strerror(ctypes.get_errno())
            for i in range(n):
                s, e, c = struct.unpack_from(REGION_FMT, vec, i * struct.calcsize(REGION_FMT))
                rec = (s, e, bool(c & IS_PRESENT), bool(c & IS_HUGE and c & IS_PRESENT))
                if out and out[-1][1] == s and out[-1][2:] == rec[2:]:
                    out[-1] = (out[-1][0], e) + rec[2:]
                else:
                    out.append(rec)
            walk_end = struct.unpack_from(ARG_FMT, arg)[4]
            assert walk_end > pos
            pos = walk_end
    finally:
        os.close(fd)
    return out


def project(runs, lo, hi):
    """pages --json runs inside [lo, hi) as (start, end, present, huge), merged like above."""
    out = []
    for r in runs:
        if r["start"] >= hi or r["end"] <= lo:
            continue
        rec = (r["start"], r["end"], r["present"], bool(r["huge"]) and r["present"])
        if out and out[-1][1] == rec[0] and out[-1][2:] == rec[2:]:
            out[-1] = (out[-1][0], rec[1]) + rec[2:]
        else:
            out.append(rec)
    return out


def sizes(runs):
    huge = sum(e - s for s, e, p, h in runs if p and h)
    small = sum(e - s for s, e, p, h in runs if p and not h)
    return huge, small


# ---------------------------------------------------------------- fixtures

def _read_int(path):
    with open(path) as f:
        return int(f.read())


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


@pytest.fixture(scope="module")
def hugetlb_pools():
    """Add 2 x 2 MiB and 1 x 1 GiB pages to the hugetlb pools; restore the counts after."""
    old2, old1g = _read_int(HUGE_2M_POOL), _read_int(HUGE_1G_POOL)
    want2 = old2 + HUGETLB_MIB // 2
    try:
        _write(HUGE_2M_POOL, want2)
        _write("/proc/sys/vm/compact_memory", 1)          # a 1 GiB page needs 1 GiB contiguous
        _write(HUGE_1G_POOL, old1g + 1)
        got2, got1g = _read_int(HUGE_2M_POOL), _read_int(HUGE_1G_POOL)
        assert got2 == want2, f"kernel gave {got2} of {want2} 2 MiB hugetlb pages"
        assert got1g == old1g + 1, "kernel could not allocate a 1 GiB hugetlb page (memory fragmented?)"
        yield
    finally:
        _write(HUGE_1G_POOL, old1g)
        _write(HUGE_2M_POOL, old2)


@pytest.fixture(scope="module")
def workload(build_workload, hugetlb_pools):
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        assert "[never]" not in f.read(), "THP is disabled: these shapes need enabled=madvise or always"
    exe = build_workload("pages_workload")
    proc = subprocess.Popen([exe, str(HUGETLB_MIB), "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    regions = {}
    try:
        for line in proc.stdout:
            f = line.split()
            if f == ["ready"]:
                break
            regions[f[0]] = (int(f[1], 16), int(f[1], 16) + int(f[2]))
        assert "hugetlb1g" in regions, f"workload failed: {proc.poll()}"
        assert "guard" in regions, "MADV_GUARD_INSTALL failed (guard regions are in 6.13+)"
        with open("/sys/kernel/mm/transparent_hugepage/use_zero_page") as f:
            assert f.read().strip() == "1", "the zero region expects THP's use_zero_page=1"
        yield proc.pid, regions
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pages_json(workload):
    pid, _ = workload
    doc = json.loads(run_cli("pages", pid, "--json", check=True).stdout)
    assert doc["pid"] == pid and doc["source"] == "PAGEMAP_SCAN"
    return doc


def smaps_in(pid, lo, hi):
    return [b for b in procfs.read_smaps(pid) if b.map.start < hi and b.map.end > lo]


# ---------------------------------------------------------------- tests

# name -> (huge bytes, small bytes) this kernel builds (see the module docstring)
EXPECTED = {
    "thp": (64 * MIB, 0),
    "split": (62 * MIB, 2 * MIB),          # one PMD split into PTEs by the mprotect
    "sparse": (32 * MIB, K4),              # a THP per touched block; the tail page cannot be huge
    "nohuge": (0, 16 * MIB),
    "hugetlb": (HUGETLB_MIB * MIB, 0),
    "hugetlb1g": (GIB, 0),
    "file": None,                          # (0, its length): every page read, all PTE-mapped
    "shmem": (0, 2 * MIB),
    "zero": (4 * MIB, 0),                  # the huge zero page, PMD-mapped twice (not in Rss)
    "guard": (0, 12 * K4),                 # 4 of 16 pages are a guard region
}
ZERO_PAGE_REGIONS = {"zero"}


def expected(name, regions, count_zero_page=True):
    lo, hi = regions[name]
    if name in ZERO_PAGE_REGIONS and not count_zero_page:
        return (0, 0)
    return EXPECTED[name] or (0, hi - lo)


def not_zero(runs):
    """The runs smaps counts: the shared zero page is in no Rss."""
    return [r for r in runs if not r["zero_pfn"]]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_runs_equal_independent_scan_and_expected_sizes(workload, pages_json, name):
    pid, regions = workload
    lo, hi = regions[name]
    mine = project(pages_json["runs"], lo, hi)
    theirs = independent_scan(pid, lo, hi)
    assert mine == theirs
    assert sizes(mine) == expected(name, regions)
    assert mine[0][0] == lo and mine[-1][1] == hi                 # every byte accounted for


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_runs_equal_smaps(workload, pages_json, name):
    pid, regions = workload
    lo, hi = regions[name]
    for b in smaps_in(pid, lo, hi):
        huge, small = sizes(project(not_zero(pages_json["runs"]), b.map.start, b.map.end))
        if "ht" in b.vmflags:
            assert (huge, small) == (b.get("Private_Hugetlb") + b.get("Shared_Hugetlb"), 0)
        else:
            assert huge == b.get("AnonHugePages")
            assert huge + small == b.get("Rss")
            anon = sum(r["end"] - r["start"] for r in not_zero(pages_json["runs"])
                       if b.map.start <= r["start"] < b.map.end and r["present"] and r["kind"] == "anon")
            assert anon == b.get("Anonymous")


def test_page_sizes_and_kinds(workload, pages_json):
    _, regions = workload

    def present(name):
        lo, hi = regions[name]
        return [r for r in pages_json["runs"] if lo <= r["start"] < hi and r["present"]]

    assert {(r["page_size"], r["kind"]) for r in present("thp")} == {(2 * MIB, "anon")}
    assert {(r["page_size"], r["huge"]) for r in present("split")} == {(2 * MIB, True), (K4, False)}
    assert {(r["page_size"], r["kind"]) for r in present("nohuge")} == {(K4, "anon")}
    assert {(r["page_size"], r["kind"]) for r in present("hugetlb")} == {(2 * MIB, "hugetlb")}
    assert {(r["page_size"], r["kind"]) for r in present("hugetlb1g")} == {(GIB, "hugetlb")}
    lo, hi = regions["file"]
    assert [(r["start"] - lo, r["end"] - lo, r["kind"], r["file"]) for r in present("file")] == [
        (0, K4, "anon", False), (K4, hi - lo, "file", True)]         # the written page is a private copy
    assert {(r["page_size"], r["kind"], r["file"]) for r in present("shmem")} == {(K4, "shmem", True)}
    assert {(r["page_size"], r["huge"], r["zero_pfn"]) for r in present("zero")} == {(2 * MIB, True, True)}
    lo, hi = regions["guard"]
    assert [(r["start"] - lo, r["end"] - lo, r["present"], r["guard"]) for r in pages_json["runs"]
            if lo <= r["start"] < hi] == [(0, 4 * K4, True, False), (4 * K4, 8 * K4, False, True),
                                          (8 * K4, 16 * K4, True, False)]


def test_strips(workload, pages_json):
    _, regions = workload
    strips = {}
    for v in pages_json["vmas"]:
        for name, (lo, hi) in regions.items():
            if lo <= v["start"] < hi:
                strips.setdefault(name, []).append(v["strip"])
    assert strips["thp"] == ["H" * 32]
    assert strips["split"] == ["H" * 16 + "s", "s", "s" + "H" * 15]
    assert strips["sparse"] == ["H" * 16 + "." * 16 + "s"]
    assert strips["nohuge"] == ["s" * 8]
    assert strips["hugetlb1g"] == ["H" * 512]
    assert set(strips["shmem"][0]) == {"s"}
    assert strips["zero"] == ["HH"]


def test_huge_small_bytes_equals_smaps(workload):
    from pmemtrace import pagemap
    pid, regions = workload
    for name, (lo, hi) in regions.items():
        assert pagemap.huge_small_bytes(pid, lo, hi) == expected(name, regions, count_zero_page=False), name
        assert pagemap.huge_small_bytes(pid, lo, hi, count_zero_page=True) == expected(name, regions), name


def test_fallback_reader_agrees_where_it_knows(workload):
    """pagemap+kpageflags: same present bytes; its huge/small verdicts, where not unknown,
    match PAGEMAP_SCAN's; THP mapping size is unknown to it, hugetlb and small folios known."""
    from pmemtrace import pagemap
    pid, regions = workload
    for name, (lo, hi) in regions.items():
        scan = pagemap.scan(pid, lo, hi)
        fb = pagemap.scan_fallback(pid, lo, hi)
        assert sum(r.length for r in fb if r.present) == sum(r.length for r in scan if r.present), name
        truth = {a: r.huge for r in scan if r.present for a in range(r.start, r.end, K4)}
        for r in fb:
            if r.present and r.huge is not None:
                assert all(truth[a] == r.huge for a in range(r.start, r.end, K4)), (name, r)
        known = {r.huge for r in fb if r.present}
        if name in ("hugetlb", "hugetlb1g"):
            assert known == {True}
        elif name == "nohuge":
            assert known == {False}
        elif name == "thp":
            assert known == {None}
        elif name == "zero":
            assert known == {True}                               # the huge zero page: always a PMD
        if name == "guard":
            assert [(r.start - lo, r.end - lo) for r in fb if r.guard] == [(4 * K4, 8 * K4)]


def test_text_output(workload):
    pid, regions = workload
    lo, _ = regions["thp"]
    out = run_cli("pages", pid, "--vma", hex(lo + 4096), check=True).stdout
    assert "source: PAGEMAP_SCAN" in out
    assert f"{lo:#x}" in out and "H" * 32 in out
    assert "legend:" in out and "\x1b[" not in out                # plain text in a pipe


def test_range_selection(workload):
    pid, regions = workload
    lo, _ = regions["sparse"]
    doc = json.loads(run_cli("pages", pid, f"{lo + 31 * MIB:#x}+4M", "--json", check=True).stdout)
    assert [(r["start"] - lo, r["end"] - lo, r["present"]) for r in doc["runs"]] == [
        (31 * MIB, 32 * MIB, True), (32 * MIB, 35 * MIB, False)]


def test_errors(workload):
    pid, _ = workload
    assert run_cli("pages", pid, "--vma", "0x1000").returncode == 11
    assert run_cli("pages", 0x7FFFFFF0).returncode == 3


def test_zombie_is_process_exited():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        for _ in range(100):                                    # until the child is a zombie
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        out = run_cli("pages", pid)
        assert out.returncode == 4, out.stderr
    finally:
        os.waitpid(pid, 0)


def test_huge_small_many_equals_smaps_for_every_vma(workload):
    from pmemtrace import pagemap
    pid, _ = workload
    blocks = [b for b in procfs.read_smaps(pid) if b.map.path != "[vsyscall]"]
    got = pagemap.huge_small_many(pid, [(b.map.start, b.map.end) for b in blocks])
    for b, (huge, small) in zip(blocks, got):
        if "ht" in b.vmflags:
            assert (huge, small) == (b.get("Private_Hugetlb") + b.get("Shared_Hugetlb"), 0), b.map
        else:
            assert huge == b.get("AnonHugePages") + b.get("ShmemPmdMapped") + b.get("FilePmdMapped"), b.map
            assert huge + small == b.get("Rss"), b.map


def test_fallback_chunks_join_seamlessly(workload):
    """Reading pagemap in 1 MiB chunks gives the same runs as one read per VMA."""
    from pmemtrace import pagemap
    pid, regions = workload
    for name in ("thp", "split", "sparse", "hugetlb"):
        lo, hi = regions[name]
        for b in smaps_in(pid, lo, hi):
            facts = pagemap.facts_from_smaps(b)
            s, e = max(lo, b.map.start), min(hi, b.map.end)
            assert pagemap.fallback_range(pid, s, e, facts, chunk=MIB) == pagemap.fallback_range(pid, s, e, facts)


def test_soft_dirty_unknown_iff_kernel_does_not_track_it(workload, pages_json):
    """This kernel's config decides: without CONFIG_MEM_SOFT_DIRTY every run says null."""
    import gzip
    with gzip.open("/proc/config.gz", "rt") as f:
        config = f.read()
    tracked = "CONFIG_MEM_SOFT_DIRTY=y" in config
    assert tracked or "# CONFIG_MEM_SOFT_DIRTY is not set" in config
    values = {r["soft_dirty"] for r in pages_json["runs"]}
    assert values <= ({True, False} if tracked else {None}) and values
    assert any("soft-dirty" in n for n in pages_json["notes"]) == (not tracked)
