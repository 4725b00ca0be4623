"""Live: folio sizes per VMA against the kernel's own counters (root, shared lock).

The workload (tests/workloads/folio_workload.c) builds each VMA so its folios are known by
construction; the sysfs knobs it needs are set here and restored. The mTHP test checks
folio_bytes against hugepages-64kB/stats/anon_fault_alloc read just around the faults.
"""
import contextlib
import json
import os
import subprocess

import pytest

from testkit import assert_json_paths_agree, run_cli

pytestmark = pytest.mark.live
KiB, MiB = 1 << 10, 1 << 20
THP = "/sys/kernel/mm/transparent_hugepage"
KNOB_64K = f"{THP}/hugepages-64kB/enabled"
FAULTS_64K = f"{THP}/hugepages-64kB/stats/anon_fault_alloc"


def active(path):
    with open(path) as f:
        return f.read().split("[")[1].split("]")[0]


@contextlib.contextmanager
def sysfs(path, value):
    old = active(path)
    with open(path, "w") as f:
        f.write(value)
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


def read_int(path):
    with open(path) as f:
        return int(f.read())


class Workload:
    def __init__(self, exe, mthp_mib, tmpfs_file=None):
        args = [exe, str(mthp_mib)] + ([tmpfs_file] if tmpfs_file else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.vmas = {}
        for line in self.proc.stdout:
            if line.startswith("ready"):
                break
            name, start, end = line.split()
            self.vmas[name] = (int(start), int(end))
        assert self.vmas, "the workload printed no VMAs"

    def command(self, line, answer):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == answer

    def stop(self):
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("exit\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def report_vmas(pid):
    out = run_cli("report", pid, "--json", check=True)
    data = json.loads(out.stdout)
    assert data["folio_source"] == "PAGEMAP_SCAN+kpageflags"
    return data, {v["start"]: v for v in data["vmas"]}


def test_64k_mthp_vma_is_exactly_64k_folios(build_workload):
    """hugepages-64kB/enabled=always: a 64 MiB anonymous VMA faulted page by page is 1024 folios
    of 64 KiB, and the kernel's anon_fault_alloc for that size moved by exactly 1024."""
    exe = build_workload("folio_workload")
    attempts = []
    for _attempt in range(3):       # another process faulting anon memory meanwhile takes 64K folios too
        w = Workload(exe, -64)
        try:
            with sysfs(KNOB_64K, "always"):
                before = read_int(FAULTS_64K)
                w.command("touch", "touched")
                delta = read_int(FAULTS_64K) - before
            _data, vmas = report_vmas(w.proc.pid)
        finally:
            w.stop()
        start, end = w.vmas["mthp"]
        v = vmas[start]
        assert v["end"] == end
        assert v["folio_bytes"] == {"65536": 64 * MiB}
        assert v["pte_mapped_thp_bytes"] == 64 * MiB
        assert v["pmd_mapped_bytes"] == 0
        assert v["unaligned_folio_bytes"] == 0 and v["partial_folio_bytes"] == 0
        assert v["cont_bytes"]["65536"] == 64 * MiB
        attempts.append(delta)
        if delta == 64 * MiB // (64 * KiB):
            return
        assert delta > 1024, f"anon_fault_alloc moved by {delta}, fewer than the 1024 folios seen"
    pytest.fail(f"hugepages-64kB anon_fault_alloc deltas {attempts}: other 64K faults every time")


@pytest.fixture(scope="module")
def workload(build_workload, tmp_path_factory):
    exe = build_workload("folio_workload")
    base = tmp_path_factory.mktemp("folios")
    mnt = base / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "huge=always,size=32M", "none", str(mnt)], check=True)
    try:
        with sysfs(KNOB_64K, "always"), sysfs(f"{THP}/enabled", "madvise"):
            w = Workload(exe, 1, str(mnt / "file"))
        try:
            yield w
        finally:
            w.stop()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_every_kind_of_folio(workload):
    data, vmas = report_vmas(workload.proc.pid)
    v = {name: vmas[start] for name, (start, _end) in workload.vmas.items()}
    # tmpfs huge=always: PMD-mapped 2 MiB file folios
    assert v["tmpfs"]["folio_bytes"] == {"2097152": 8 * MiB}
    assert v["tmpfs"]["pmd_mapped_bytes"] == 8 * MiB and v["tmpfs"]["pte_mapped_thp_bytes"] == 0
    # MADV_HUGEPAGE anon: PMD-mapped THPs
    assert v["thp"]["folio_bytes"] == {"2097152": 8 * MiB} and v["thp"]["pmd_mapped_bytes"] == 8 * MiB
    # a THP whose PMD was split: the whole 2 MiB folio, PTE-mapped, aligned
    assert v["ptethp"]["folio_bytes"] == {"2097152": 2 * MiB}
    assert v["ptethp"]["pmd_mapped_bytes"] == 0 and v["ptethp"]["pte_mapped_thp_bytes"] == 2 * MiB
    assert v["ptethp"]["cont_bytes"]["2097152"] == 2 * MiB
    # 64 KiB folios moved 4 KiB off alignment: all unaligned, no contiguous block matches
    assert v["unaligned"]["folio_bytes"] == {"65536": 256 * KiB}
    assert v["unaligned"]["unaligned_folio_bytes"] == 256 * KiB and v["unaligned"]["cont_bytes"] == {}
    # 16 KiB dropped from the second 64 KiB folio: 48 KiB of it still mapped, partially
    assert v["partial"]["folio_bytes"] == {"65536": 240 * KiB}
    assert v["partial"]["partial_folio_bytes"] == 48 * KiB
    assert v["small"]["folio_bytes"] == {"4096": 1 * MiB} and v["small"]["pte_mapped_thp_bytes"] == 0
    # every resident byte PAGEMAP_SCAN sees is in exactly one folio, in every VMA of the process
    for d in data["vmas"]:
        if d["folio_bytes"] is not None:
            assert sum(d["folio_bytes"].values()) == d["huge_bytes"] + d["small_bytes"], d


def test_json_written_from_the_vmas_equals_the_dict_rows(workload):
    """With PTE-mapped, unaligned and partial large folios too (read_process's slow path)."""
    rows = assert_json_paths_agree(workload.proc.pid)
    assert any(d["partial_folio_bytes"] for d in rows) and any(d["unaligned_folio_bytes"] for d in rows)


def test_folios_command_rollup_and_cgroup(workload, tmp_path):
    """`folios PID` equals report's totals; a cgroup holding only the workload selects it alone."""
    _data, vmas = report_vmas(workload.proc.pid)
    one = json.loads(run_cli("folios", workload.proc.pid, "--json", check=True).stdout)
    assert [p["pid"] for p in one["processes"]] == [workload.proc.pid]
    assert one["rollup"]["folio_bytes"] == _data["totals"]["folio_bytes"]
    # any writable hierarchy: cgroup v2 at the root, v2 under unified/ or a v1 controller (thpmaps reads both)
    root = next(r for r in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids")
                if os.path.exists(f"{r}/cgroup.procs"))
    cg = f"{root}/pmemtrace-folios-test"
    os.mkdir(cg)
    try:
        with open(f"{cg}/cgroup.procs", "w") as f:
            f.write(str(workload.proc.pid))
        got = json.loads(run_cli("folios", "--cgroup", cg, "--json", check=True).stdout)
        assert [p["pid"] for p in got["processes"]] == [workload.proc.pid]
        rolled = json.loads(run_cli("folios", "--cgroup", cg, "--rollup", "--json", check=True).stdout)
        assert "processes" not in rolled and rolled["rollup"]["folio_bytes"] == _data["totals"]["folio_bytes"]
    finally:
        with open(f"{root}/cgroup.procs", "w") as f:
            f.write(str(workload.proc.pid))
        os.rmdir(cg)
