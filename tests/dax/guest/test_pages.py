"""`pmemtrace pages` in the guest, on real fs-dax (ext4, xfs) and device-dax mappings.

Truth: a 2 MiB-aligned DAX mapping on 2 MiB-aligned storage, fully written, is mapped by
PMD leaves (the fs_dax tracepoints in test_dax_kernel.py show NOPAGE/NEEDDSYNC PMD
faults), so PAGEMAP_SCAN (6.7+) reports 2M runs; a mapping whose address is 4 KiB off
a 2 MiB boundary cannot use a PMD (every PMD fault falls back), so it is 4K runs. On
kernels without PAGEMAP_SCAN `pages` reads pagemap+kpageflags and must say the mapping
size of DAX pages is unknown (null), never guess it.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from guestlib import parse_kv

MiB = 1 << 20
K4 = 4096
CHECKOUT = Path(__file__).resolve().parents[3]


class Held:
    """dax_map ... hold: mapped, every page written, kept alive until closed."""

    def __init__(self, exe, *args):
        self.p = subprocess.Popen([exe, *map(str, args), "hold"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = {}
        while "TOUCHED" not in self.lines:
            ln = self.p.stdout.readline()
            if not ln:
                raise AssertionError(f"dax_map {args} ended early: rc={self.p.wait()} {self.lines} "
                                     f"{self.p.stderr.read()}")
            self.lines[ln.split()[0]] = ln.strip()
        m = parse_kv(self.lines["MAPPED"])
        self.addr, self.len = int(m["addr"], 16), int(m["len"])

    @property
    def pid(self):
        return self.p.pid

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def pages_json(pid, addr=None, range_spec=None):
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    where = ["--vma", hex(addr)] if addr is not None else [range_spec]
    p = subprocess.run([sys.executable, "-m", "pmemtrace", "pages", str(pid), *where, "--json"],
                       capture_output=True, text=True, cwd=CHECKOUT, env=env, timeout=300)
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return json.loads(p.stdout)


def shape(doc):
    """{(present, huge, page_size, kind)} of the runs, and the bytes they cover."""
    return ({(r["present"], r["huge"], r["page_size"], r["kind"]) for r in doc["runs"]},
            sum(r["end"] - r["start"] for r in doc["runs"]))


def expect(kernel_version, huge):
    """The run shape of a fully written DAX mapping on this kernel. Without PAGEMAP_SCAN a
    mapping whose address and PFNs are not congruent mod 2 MiB is provably 4 KiB; an aligned one
    may be PMD- or PTE-mapped: unknown."""
    if kernel_version >= (6, 7):
        return "PAGEMAP_SCAN", {(True, True, 2 * MiB, "dax")} if huge else {(True, False, K4, "dax")}
    if not huge:
        return "pagemap+kpageflags", {(True, False, K4, "dax")}
    if kernel_version >= (6, 1):     # pagemap's PMD path sets PM_FILE on DAX pages, its PTE path never
        return "pagemap+kpageflags", {(True, True, 2 * MiB, "dax")}
    return "pagemap+kpageflags", {(True, None, None, "dax")}


def test_pages_fsdax_aligned_is_2m(daxfs, dax_map, kernel_version):
    fs, dev, mnt = daxfs
    path = f"{mnt}/pages-aligned.dat"
    with Held(dax_map, path, 64) as w:
        doc = pages_json(w.pid, w.addr)
    os.unlink(path)
    source, runs = expect(kernel_version, huge=True)
    assert doc["source"] == source
    assert shape(doc) == (runs, 64 * MiB)
    assert doc["vmas"][0]["kind"] == "dax"
    if runs == {(True, True, 2 * MiB, "dax")}:
        assert doc["vmas"][0]["strip"] == "H" * 32
    else:
        assert doc["vmas"][0]["strip"] == "?" * 32


def test_pages_fsdax_misaligned_is_4k(daxfs, dax_map, kernel_version):
    fs, dev, mnt = daxfs
    path = f"{mnt}/pages-misaligned.dat"
    with Held(dax_map, path, 16, "misaligned") as w:
        assert w.addr % (2 * MiB) == K4
        doc = pages_json(w.pid, w.addr)
    os.unlink(path)
    source, runs = expect(kernel_version, huge=False)
    assert doc["source"] == source
    assert shape(doc) == (runs, 16 * MiB)
    assert set(doc["vmas"][0]["strip"]) == {"s"}


def test_pages_devdax_is_2m(devdax, dax_map, kernel_version):
    with Held(dax_map, devdax, 64) as w:
        doc = pages_json(w.pid, w.addr)
    source, runs = expect(kernel_version, huge=True)
    assert doc["source"] == source
    assert shape(doc) == (runs, 64 * MiB)


# ---------------------------------------------------------------- soft-dirty (Debian kernels track it)

def start_pages_workload(workload_dir):
    exe = workload_dir / "pages_workload"
    if not exe.exists():
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(CHECKOUT / "tests" / "workloads" /
                                                                   "pages_workload.c")], check=True)
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    regions = {}
    for line in p.stdout:
        f = line.split()
        if f == ["ready"]:
            return p, regions
        regions[f[0]] = (int(f[1], 16), int(f[1], 16) + int(f[2]))
    raise AssertionError(f"pages_workload ended early: rc={p.wait()}")


def smaps_counter(pid, start, key):
    lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith(f"{start:x}-"))
    for ln in lines[head + 1:]:
        if ln.startswith(key + ":"):
            return int(ln.split()[1]) * 1024
    raise AssertionError(f"no {key} for {start:#x}")


def test_pages_soft_dirty_after_clear_refs(workload_dir):
    """clear_refs 4 cleans every page; one write then dirties exactly its mapping unit:
    the whole 2 MiB PMD in a THP region (smaps says it is PMD-mapped), one 4K page in
    a NOHUGEPAGE region."""
    p, regions = start_pages_workload(workload_dir)
    try:
        thp_lo, thp_hi = regions["thp"]
        no_lo, no_hi = regions["nohuge"]
        Path(f"/proc/{p.pid}/clear_refs").write_text("4")
        for addr in (thp_lo + 4 * MiB + 123, no_lo + 8 * K4 + 5):
            p.stdin.write(f"write {addr:x}\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "done"
        thp_pmd_mapped = smaps_counter(p.pid, thp_lo, "AnonHugePages") == thp_hi - thp_lo
        print(f"thp region PMD-mapped: {thp_pmd_mapped}")
        runs = {}
        for name in ("thp", "nohuge"):
            lo, hi = regions[name]
            doc = pages_json(p.pid, lo)
            assert {r["soft_dirty"] for r in doc["runs"]} <= {True, False}, "soft-dirty unknown on this kernel"
            runs[name] = [(r["start"] - lo, r["end"] - lo) for r in doc["runs"] if r["soft_dirty"]]
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    assert runs["thp"] == ([(4 * MiB, 6 * MiB)] if thp_pmd_mapped else [(4 * MiB, 4 * MiB + K4)])
    assert runs["nohuge"] == [(8 * K4, 9 * K4)]


# ---------------------------------------------------------------- THP shapes, with and without PAGEMAP_SCAN

def test_pages_thp_shapes(workload_dir, kernel_version):
    """The host's THP shapes (tests/test_pages_live.py) on each guest kernel. With PAGEMAP_SCAN:
    exact huge/small bytes. Without (6.1): present bytes still equal smaps' Rss, a small folio is
    known to be 4K, and every page of a THP folio (PMD- or, after the split, PTE-mapped) has an
    unknown page size, as the notes say."""
    p, regions = start_pages_workload(workload_dir)
    try:
        docs, rss = {}, {}
        for name in ("thp", "split", "sparse", "nohuge"):
            lo, hi = regions[name]
            docs[name] = pages_json(p.pid, range_spec=f"{lo:#x}-{hi:#x}")
            rss[name] = sum(smaps_counter(p.pid, v["start"], "Rss") for v in docs[name]["vmas"])
    finally:
        p.stdin.close()
        p.wait(timeout=60)
    assert len(docs["split"]["vmas"]) == 3                       # the mprotect cut it in three
    for name, doc in docs.items():
        assert sum(r["end"] - r["start"] for r in doc["runs"] if r["present"]) == rss[name], name
    present = {name: [r for r in doc["runs"] if r["present"]] for name, doc in docs.items()}
    if kernel_version >= (6, 7):
        def sizes(runs):
            return (sum(r["end"] - r["start"] for r in runs if r["huge"]),
                    sum(r["end"] - r["start"] for r in runs if not r["huge"]))
        assert sizes(present["thp"]) == (64 * MiB, 0)
        assert sizes(present["split"]) == (62 * MiB, 2 * MiB)
        assert sizes(present["sparse"]) == (32 * MiB, K4)
        assert sizes(present["nohuge"]) == (0, 16 * MiB)
    else:
        assert docs["thp"]["source"] == "pagemap+kpageflags"
        assert any("THP" in n for n in docs["thp"]["notes"])
        assert {(r["huge"], r["page_size"]) for r in present["thp"]} == {(None, None)}
        assert {(r["huge"], r["page_size"]) for r in present["split"]} == {(None, None)}
        assert sorted((r["huge"] is None, r["page_size"] or 0, r["end"] - r["start"]) for r in present["sparse"]) \
            == [(False, K4, K4), (True, 0, 32 * MiB)]
        assert {(r["huge"], r["page_size"]) for r in present["nohuge"]} == {(False, K4)}
