"""Live: `pmemtrace report` against a workload whose VMAs the kernel itself describes.

Each expected number is the kernel's (smaps, PAGEMAP_SCAN read here independently of
pmemtrace.pagemap) and also the number the workload was built to have.
"""
import contextlib
import ctypes
import fcntl
import json
import os
import subprocess
import time

import pytest

from testkit import assert_json_paths_agree, run_cli

pytestmark = pytest.mark.live
MiB = 1 << 20


# ---- an independent PAGEMAP_SCAN reading (written here, not imported from pmemtrace)
class _Region(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


class _Arg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("size", "flags", "start", "end", "walk_end", "vec", "vec_len",
                                                "max_pages", "category_inverted", "category_mask",
                                                "category_anyof_mask", "return_mask")]


PAGE_IS_PRESENT, PAGE_IS_PFNZERO, PAGE_IS_HUGE = 1 << 3, 1 << 5, 1 << 6
PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(_Arg) << 16) | (ord("f") << 8) | 16   # _IOWR('f', 16, pm_scan_arg)


def kernel_huge_small(pid, start, end):
    vec = (_Region * 512)()
    huge = small = 0
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        while start < end:
            arg = _Arg(size=ctypes.sizeof(_Arg), start=start, end=end, vec=ctypes.addressof(vec), vec_len=512,
                       category_mask=PAGE_IS_PRESENT | PAGE_IS_PFNZERO, category_inverted=PAGE_IS_PFNZERO,
                       return_mask=PAGE_IS_PRESENT | PAGE_IS_HUGE)
            n = fcntl.ioctl(f.fileno(), PAGEMAP_SCAN, arg)
            for r in vec[:n]:
                if r.categories & PAGE_IS_HUGE:
                    huge += r.end - r.start
                else:
                    small += r.end - r.start
            # a full vector: resume after the last region (6.18 can return a stale walk_end then)
            start = vec[n - 1].end if n == len(vec) else arg.walk_end
    return huge, small


def smaps_of(pid):
    """{start: {key: bytes, 'VmFlags': set}} parsed here, independently of pmemtrace.procfs."""
    out, cur = {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                cur = out.setdefault(int(head.split("-")[0], 16), {})
            elif line.startswith("VmFlags:"):
                cur["VmFlags"] = set(line.split()[1:])
            elif line.rstrip().endswith("kB"):
                key, value = line.split(":")
                cur[key] = int(value.split()[0]) * 1024
    return out


@contextlib.contextmanager
def mounted(fstype, target, options="", source="none"):
    os.makedirs(target, exist_ok=True)
    cmd = ["mount", "-t", fstype] + (["-o", options] if options else []) + [source, str(target)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    try:
        yield str(target)
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def hugetlb_pages(extra):
    path = "/proc/sys/vm/nr_hugepages"
    before = int(open(path).read())
    with open(path, "w") as f:
        f.write(str(before + extra))
    try:
        if int(open(path).read()) < before + extra:
            pytest.fail(f"could not reserve {extra} hugetlb pages")
        yield
    finally:
        with open(path, "w") as f:
            f.write(str(before))


@pytest.fixture(scope="module")
def workload(build_workload, tmp_path_factory):
    exe = build_workload("report_workload")
    base = tmp_path_factory.mktemp("report")
    img = base / "ext4.img"
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
    with contextlib.ExitStack() as stack:
        tmpfs = stack.enter_context(mounted("tmpfs", base / "tmpfs", "huge=always,size=64M"))
        hugetlbfs = stack.enter_context(mounted("hugetlbfs", base / "hugetlbfs", "pagesize=2M"))
        ext4 = stack.enter_context(mounted("ext4", base / "ext4", "loop", str(img)))
        stack.enter_context(hugetlb_pages(4))
        proc = subprocess.Popen([exe, f"{tmpfs}/f", f"{hugetlbfs}/f", f"{ext4}/f"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        def stop():
            proc.kill()
            proc.wait()
        stack.callback(stop)
        regions = {}
        for line in proc.stdout:
            words = line.split()
            if words == ["ready"]:
                break
            regions[words[0]] = tuple(int(w) for w in words[1:])
        assert "late" in regions, "workload did not get ready"
        yield proc, regions


def report_json(pid, *args):
    out = run_cli("report", pid, "--json", *args, check=True)
    data = json.loads(out.stdout)
    return data, {v["start"]: v for v in data["vmas"]}


def test_json_written_from_the_vmas_equals_the_dict_rows(workload):
    """Every kind of VMA this workload has (THP, huge tmpfs, hugetlb, ext4, special): report --json's
    own writer and the dict rows agree to the byte."""
    proc, _regions = workload
    rows = assert_json_paths_agree(proc.pid)
    kinds = {d["backing"] for d in rows}
    assert {"anon", "file", "shmem", "hugetlb", "special"} <= kinds, kinds
    assert any(d["pmd_mapped_bytes"] for d in rows) and any(d["folio_bytes"] is None for d in rows)


def test_report_matches_kernel_truth(workload):
    proc, regions = workload
    data, by_start = report_json(proc.pid)
    assert data["pid"] == proc.pid and data["comm"] == "report_workload"
    assert data["source"] == "PAGEMAP_SCAN"

    thp = by_start[regions["thp"][0]]
    assert (thp["end"], thp["huge_bytes"], thp["small_bytes"]) == (regions["thp"][1], 64 * MiB, 0)
    assert thp["backing"] == "anon" and thp["thp_eligible"] is True

    nohuge = by_start[regions["nohuge"][0]]
    assert (nohuge["huge_bytes"], nohuge["small_bytes"]) == (0, 16 * MiB)
    assert nohuge["thp_eligible"] is False and "NOHUGEPAGE" in nohuge["thp_reason"]

    shm = by_start[regions["tmpfs"][0]]
    assert (shm["backing"], shm["huge_bytes"], shm["small_bytes"]) == ("shmem", 32 * MiB, 0)

    htlb = by_start[regions["hugetlb"][0]]
    assert (htlb["backing"], htlb["huge_bytes"], htlb["small_bytes"]) == ("hugetlb", 8 * MiB, 0)

    ext4 = by_start[regions["ext4"][0]]
    assert (ext4["dax"], ext4["vm_sync"], ext4["backing"]) == ("none", False, "file")
    assert ext4["huge_bytes"] == 0 and ext4["small_bytes"] == 4 * MiB

    # every VMA shown agrees with smaps and with an independent PAGEMAP_SCAN, byte for byte
    smaps = smaps_of(proc.pid)
    for start, v in by_start.items():
        assert v["rss_bytes"] == smaps[start]["Rss"], v
        assert (v["huge_bytes"], v["small_bytes"]) == kernel_huge_small(proc.pid, start, v["end"]), v
        assert v["vm_sync"] == ("sf" in smaps[start]["VmFlags"])
    assert data["totals"]["huge_bytes"] == sum(v["huge_bytes"] for v in data["vmas"])
    assert data["totals"]["rss_bytes"] == sum(v["rss_bytes"] for v in data["vmas"])


def test_map_sync_refused_on_ext4(workload):
    proc, regions = workload
    assert regions["mapsync_errno"] == (95,)     # EOPNOTSUPP: ext4 here is not DAX


def test_hidden_and_all(workload):
    proc, regions = workload
    _, shown = report_json(proc.pid)
    _, everything = report_json(proc.pid, "--all")
    late = regions["late"][0]
    assert late not in shown and late in everything       # no resident pages yet
    assert everything[late]["rss_bytes"] == 0


def test_duration_counts_thp_faults_on_the_vma(workload):
    proc, regions = workload
    cli = subprocess.Popen([os.sys.executable, "-m", "pmemtrace", "report",
                            str(proc.pid), "--duration", "4", "--json"],
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # fault only once the probes are attached: report says so on stderr
    assert cli.stderr.readline().startswith("Tracing pid")
    proc.stdin.write("fault\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "faulted"
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    data = json.loads(out)
    by_start = {v["start"]: v for v in data["vmas"]}
    late = by_start[regions["late"][0]]
    assert late["huge_faults"] == 32
    assert late["huge_bytes"] == 64 * MiB
    # 32 faults, one per 2 MiB: the faults column counts them too (all on this VMA)
    assert late["faults"] == 32
    assert data["lost_events"] == 0
    assert data["totals"]["huge_faults"] == 32
