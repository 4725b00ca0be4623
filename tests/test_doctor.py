"""`pmemtrace doctor`: checks built from fakes and temp dirs, rendering through a recording
rich Console, and a live run whose lines must state this machine's truth."""
import importlib.machinery
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from pmemtrace import btf, headers, kernel
from pmemtrace.errors import HeadersMissing, KernelFeatureMissing
from pmemtrace.views import doctor as D

from test_btf import Blob

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def statuses(checks):
    return [(c.name, c.status) for c in checks]


# ------------------------------------------------------------------ root, bcc, headers, tracefs

def test_root():
    assert statuses(D.check_root(0)) == [("root", "OK")]
    c = D.check_root(1000)[0]
    assert c.status == "FAIL" and "uid 1000" in c.detail and "sudo" in c.fix


def _spec(location):
    spec = importlib.machinery.ModuleSpec("bcc", None, is_package=True)
    spec.submodule_search_locations = [str(location)]
    return spec


def test_bcc(tmp_path):
    real = tmp_path / "dist-packages" / "bcc"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("")
    (real / "libbcc.py").write_text("")
    found = lambda name: _spec(real)
    c = D.check_bcc(found, lambda name: "libbcc.so.0")[0]
    assert (c.status, c.detail) == ("OK", f"bcc importable from {real}")

    c = D.check_bcc(lambda name: None)[0]
    assert c.status == "FAIL" and "python3-bpfcc" in c.fix and "sudo make install" in c.fix

    impostor = tmp_path / "site-packages" / "bcc"
    impostor.mkdir(parents=True)
    c = D.check_bcc(lambda name: _spec(impostor), lambda name: "libbcc.so.0")[0]
    assert c.status == "FAIL" and "unrelated" in c.detail and "pip uninstall bcc" in c.fix

    c = D.check_bcc(found, lambda name: None)[0]
    assert c.status == "FAIL" and "libbcc.so is missing" in c.detail


def test_headers_verdicts():
    exact = headers.Headers("/lib/modules/x/build", "exact", "headers for the running kernel x")
    fallback = headers.Headers("/var/cache/pmemtrace/kernel-headers-6.1.0-56-amd64", "fallback", "merged tree")
    missing = headers.Headers(None, "missing", "no headers for kernel x")
    c = D.check_headers(False, find=lambda: exact)[0]
    assert (c.status, c.detail) == ("OK", "headers for the running kernel x")
    c = D.check_headers(False, find=lambda: fallback)[0]
    assert c.status == "OK" and c.detail.startswith("fallback: merged tree") and headers.SAFE_WHY in c.detail
    c = D.check_headers(False, find=lambda: missing)[0]
    assert c.status == "FAIL" and "run `sudo make install` (installs linux-headers-" in c.fix

    def broken():
        raise HeadersMissing("no headers for kernel x: run `sudo make install` (installs linux-headers-amd64)")
    c = D.check_headers(True, ensure=broken)[0]
    assert c.status == "FAIL" and c.detail.startswith("no headers for kernel x")
    # as root the tree is built (ensure), not only found
    c = D.check_headers(True, find=lambda: missing, ensure=lambda: fallback)[0]
    assert c.status == "OK"


def test_tracefs(tmp_path):
    checks, root = D.check_tracefs(True, ensure=lambda: str(tmp_path))
    assert statuses(checks) == [("tracefs", "OK")] and root == str(tmp_path)

    def cannot():
        raise KernelFeatureMissing("tracefs is not available (mount failed)")
    checks, root = D.check_tracefs(True, ensure=cannot)
    assert checks[0].status == "FAIL" and root is None and "mount -t tracefs" in checks[0].fix

    def must_not_mount():
        raise AssertionError("doctor must not try to mount tracefs without root")
    checks, root = D.check_tracefs(False, ensure=must_not_mount,
                                   mountinfo=os.path.join(FIXTURES, "mountinfo_dax.txt"))
    assert checks[0].status == "OK" and "/sys/kernel/tracing" in checks[0].detail and root is None
    empty = tmp_path / "mountinfo"
    empty.write_text("22 27 0:21 / /proc rw,relatime - proc proc rw\n")
    checks, _ = D.check_tracefs(False, ensure=must_not_mount, mountinfo=str(empty))
    assert checks[0].status == "WARN"


def test_tracepoints_present_and_absent(tmp_path):
    root = tmp_path / "tracing"
    for tp in kernel.TRACEPOINTS:
        if tp.category != "fs_dax":
            (root / "events" / tp.category / tp.name).mkdir(parents=True)
    checks = D.check_tracepoints(str(root))
    assert len(checks) == len(kernel.TRACEPOINTS)
    for tp, c in zip(kernel.TRACEPOINTS, checks):
        assert c.name == f"tracepoint {tp.id}"
        if tp.category == "fs_dax":
            assert c.status == "WARN" and c.detail == f"absent: lost: {tp.feeds}"
            assert "CONFIG_FS_DAX" in c.fix
        else:
            assert c.status == "OK" and c.detail == f"present: {tp.feeds}"


def test_tracepoints_without_tracefs_is_one_line():
    checks = D.check_tracepoints(None)
    assert statuses(checks) == [("tracepoints", "WARN")]
    assert f"{len(kernel.TRACEPOINTS)} tracepoints not checked" in checks[0].detail


# ------------------------------------------------------------------ BTF, PAGEMAP_SCAN

def test_btf_values(tmp_path):
    b = Blob()
    b.int_("int")
    b.enum("vm_event_item", [("PGPGIN", 0), ("THP_FAULT_ALLOC", 3), ("THP_FILE_ALLOC", 5)])
    b.enum("other", [("VM_FAULT_NOPAGE", 7)])     # same name elsewhere: the named enum is used
    b.enum("vm_fault_reason", [("VM_FAULT_NOPAGE", 0x100), ("VM_FAULT_FALLBACK", 0x800),
                               ("VM_FAULT_NEEDDSYNC", 0x2000)])
    p = tmp_path / "vmlinux"
    p.write_bytes(b.bytes())
    c = D.check_btf(str(p))[0]
    assert c.status == "OK"
    assert c.detail == (f"{p}: THP_FAULT_ALLOC=3, THP_FILE_ALLOC=5, VM_FAULT_NOPAGE=0x100, "
                        "VM_FAULT_FALLBACK=0x800, VM_FAULT_NEEDDSYNC=0x2000")


def test_btf_without_thp(tmp_path):
    b = Blob()
    b.enum("vm_fault_reason", [("VM_FAULT_NOPAGE", 0x100), ("VM_FAULT_FALLBACK", 0x800),
                               ("VM_FAULT_NEEDDSYNC", 0x2000)])
    p = tmp_path / "vmlinux"
    p.write_bytes(b.bytes())
    c = D.check_btf(str(p))[0]
    assert c.status == "WARN"
    assert "not in this kernel's BTF: THP_FAULT_ALLOC (lost: THP fault allocations" in c.detail
    assert "THP_FILE_ALLOC (lost: file/shmem THP" in c.detail
    assert "VM_FAULT_NEEDDSYNC=0x2000" in c.detail


def test_btf_missing(tmp_path):
    c = D.check_btf(str(tmp_path / "absent"))[0]
    assert c.status == "WARN" and "CONFIG_DEBUG_INFO_BTF" in c.fix and "lost:" in c.detail


def test_pagemap_scan():
    assert D.check_pagemap_scan(lambda: True)[0].status == "OK"
    c = D.check_pagemap_scan(lambda: False)[0]
    assert c.status == "WARN" and "6.7" in c.detail and "DAX RSS from the present bits" in c.detail


# ------------------------------------------------------------------ THP, hugetlb

def test_thp_madvise_with_mthp():
    policy = kernel.ThpPolicy("madvise", "defer", "within_size",
                              {8192: "?", 16384: "never", 65536: "always", 2 << 20: "inherit"})
    checks = D.check_thp(policy)
    by = {c.name: c for c in checks}
    assert by["THP enabled"].status == "OK" and by["THP enabled"].detail.startswith("madvise: only regions")
    assert by["THP defrag"].detail == "defer"
    assert by["THP shmem_enabled"].detail.startswith("within_size")
    assert by["THP sizes (anon)"].detail == ("not for anon: 8K; never: 16K; always: 64K; inherit: 2M "
                                             "(inherit = the global 'madvise')")


def test_thp_never_and_absent():
    c = D.check_thp(kernel.ThpPolicy("never", "madvise", "never", {}))[0]
    assert c.status == "WARN" and c.fix == f"echo madvise > {kernel.THP_SYSFS}/enabled"
    c = D.check_thp(kernel.ThpPolicy(None, None, None, {}))[0]
    assert c.status == "WARN" and "no transparent huge pages" in c.detail


def test_hugetlb_pools():
    checks = D.check_hugetlb([kernel.HugetlbPool(2 << 20, 8, 3, 1, 0), kernel.HugetlbPool(1 << 30, 0, 0, 0, 0)])
    assert [(c.name, c.detail.split(":")[0]) for c in checks] == [
        ("hugetlb 2M", "8 pages, 3 free, 1 reserved, 0 surplus"),
        ("hugetlb 1G", "0 pages, 0 free, 0 reserved, 0 surplus")]
    assert checks[0].fix == "" and "hugepages-1048576kB/nr_hugepages" in checks[1].fix
    assert D.check_hugetlb([])[0].detail.startswith("no hugetlb page sizes")


# ------------------------------------------------------------------ DAX

def test_dax_mounts_from_mountinfo():
    """The dax lines of this fixture follow the kernel's mountinfo format (this machine has no
    pmem to capture them from): ext4/xfs `dax=always`, the older bare `dax`, `dax=inode`,
    `dax=never` (not DAX), an escaped space and rich markup in a mount point."""
    text = open(os.path.join(FIXTURES, "mountinfo_dax.txt")).read()
    assert D.dax_mounts(text) == [
        ("/mnt/pmem0", "ext4", "dax=always"),
        ("/mnt/pmem 1", "xfs", "dax=always"),
        ("/mnt/old", "ext4", "dax"),
        ("/mnt/perfile", "ext4", "dax=inode"),
        ("/mnt/[red]x[/red]", "ext4", "dax=always"),
    ]
    assert D.tracefs_mounts(text) == ["/sys/kernel/tracing"]


def test_device_dax_and_fault_attribution(tmp_path):
    bus, dev, tracing = tmp_path / "bus", tmp_path / "dev", tmp_path / "tracing"
    (bus / "dax0.0").mkdir(parents=True)
    (bus / "dax0.0" / "size").write_text(f"{4 << 30}\n")
    (bus / "dax1.0").mkdir()
    (bus / "dax1.0" / "size").write_text(f"{1 << 30}\n")
    dev.mkdir()
    (dev / "dax0.0").write_text("")
    tracing.mkdir()
    mi = os.path.join(FIXTURES, "mountinfo_dax.txt")
    checks = D.check_dax(str(bus), str(dev), mi, tracefs=str(tracing))
    by = {c.name: c for c in checks}
    assert by["device-dax"].detail == f"dax0.0 (4G, /dev/dax0.0), dax1.0 (1G, no /dev node: kmem/system-ram)"
    assert by["dax mounts"].detail.startswith("/mnt/pmem0 (ext4, dax=always), /mnt/pmem 1 (xfs, dax=always)")
    assert by["device-dax faults"].detail == ("no kprobes here: device-dax faults seen through page-fault "
                                              "counts and PAGEMAP_SCAN")
    (tracing / "kprobe_events").write_text("")
    by = {c.name: c for c in D.check_dax(str(bus), str(dev), mi, tracefs=str(tracing))}
    assert by["device-dax faults"].detail == "dev_dax_huge_fault kprobe possible"


def test_no_dax_anywhere(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n")
    checks = D.check_dax(str(tmp_path / "nobus"), str(tmp_path / "nodev"), str(mi), tracefs=None)
    assert [c.status for c in checks] == ["OK", "OK", "WARN"]
    assert checks[1].detail.startswith("no filesystem mounted with dax")


# ------------------------------------------------------------------ top's mechanisms

def _tracing(tmp_path, events=("syscalls/sys_enter_mmap", "fs_dax/dax_pmd_fault_done"), kprobes=False):
    tracing = tmp_path / "tracing"
    tracing.mkdir()
    for e in events:
        (tracing / "events" / e).mkdir(parents=True)
    if kprobes:
        (tracing / "kprobe_events").write_text("")
    return str(tracing)


def test_top_mechanisms_with_kprobes(tmp_path):
    tracing = _tracing(tmp_path, kprobes=True)
    from pmemtrace import loader
    kallsyms = "".join(f"ffffffff81000000 T __x64_sys_{c}\n" for c in ("mmap", "munmap", "madvise", "mincore"))
    checks = {c.name: c for c in D.check_top_mechanisms(loader.syscall_kprobes(tracefs=tracing,
                                                                               kallsyms=kallsyms), tracing)}
    c = checks["top: mmap/munmap/madvise/mincore"]
    assert c.status == "OK" and c.fix == ""
    assert c.detail.startswith("kprobes on __x64_sys_mmap, __x64_sys_munmap, __x64_sys_madvise, "
                               "__x64_sys_mincore: only these calls pay, so default top watches them")
    assert checks["top: DAX faults"].status == "OK"
    assert checks["top: MAP_SYNC / madvise state"].detail.startswith("smaps VmFlags sf (VM_SYNC")


def test_top_mechanisms_tracepoints_only(tmp_path):
    """This development machine: no kprobes; the syscall watch is opt-in (--syscalls), and says why."""
    tracing = _tracing(tmp_path)
    from pmemtrace import loader
    checks = {c.name: c for c in D.check_top_mechanisms(loader.syscall_kprobes(tracefs=tracing, kallsyms=""),
                                                        tracing)}
    c = checks["top: mmap/munmap/madvise/mincore"]
    assert c.status == "WARN"
    assert c.detail.startswith("this kernel has no kprobes (no kprobe_events in tracefs), and fentry is not used")
    assert "slow every syscall of every task (a getppid loop at about 0.7 of untraced" in c.detail
    assert c.fix == "`pmemtrace top --syscalls` when that cost is acceptable"
    # --exact's probes fire on every fault: doctor says so, with the floor bench measures
    faults = checks["top: faults"]
    assert faults.status == "OK" and "no BPF on the fault path" in faults.detail
    assert "fire on every fault (the kernel's call into BPF costs ~8% of 4 KiB fault throughput" in faults.detail


def test_top_mechanisms_kprobes_without_symbols_and_no_tracepoints(tmp_path):
    tracing = _tracing(tmp_path, events=(), kprobes=True)
    from pmemtrace import loader
    kallsyms = "ffffffff81000000 T __x64_sys_mmap\n"
    checks = {c.name: c for c in D.check_top_mechanisms(loader.syscall_kprobes(tracefs=tracing,
                                                                               kallsyms=kallsyms), tracing)}
    c = checks["top: mmap/munmap/madvise/mincore"]
    assert c.status == "WARN"
    assert c.detail.startswith("kprobes, but no syscall function for munmap, madvise, mincore in /proc/kallsyms")
    assert checks["top: DAX faults"].status == "WARN"
    assert D.check_top_mechanisms((True, "x"), None)[0].status == "WARN"


# ------------------------------------------------------------------ probes

def test_probes_not_tried_after_a_fail():
    def must_not_load():
        raise AssertionError("doctor must not load probes when a prerequisite failed")
    assert statuses(D.check_probes(False, must_not_load)) == [("probes load", "WARN")]


def test_probes_load_and_skipped_ones():
    checks = D.check_probes(True, lambda: (12, {"fs_dax:dax_load_hole": "format lacks ino: no x"},
                                           ["thp", "dax"]))
    assert statuses(checks) == [("probes load", "OK"), ("probes skipped", "WARN")]
    assert checks[0].detail == "12 probes compiled, loaded and attached (thp, dax), then detached"
    assert checks[1].detail == "fs_dax:dax_load_hole: format lacks ino: no x"
    assert statuses(D.check_probes(True, lambda: (14, {}, ["thp"]))) == [("probes load", "OK")]


def test_probes_failing_to_load_is_fail():
    from pmemtrace.errors import ProbeLoadFailed

    def broken():
        raise ProbeLoadFailed("BPF program failed to compile or load: error: x")
    c = D.check_probes(True, broken)[0]
    assert (c.status, c.detail) == ("FAIL", "BPF program failed to compile or load: error: x")
    assert D.exit_status([c]) == 1


# ------------------------------------------------------------------ rendering and exit status

def render(checks, width=200):
    console = Console(record=True, width=width, color_system=None)
    D.render(checks, console)
    return console.export_text()


def test_render_escapes_system_text():
    checks = [D.Check("dax mounts", "OK", "/mnt/[bold red]evil[/] (ext4, dax=always)"),
              D.Check("bcc", "FAIL", "path with \x1b[31mescape\x1b[0m and\nnewline", "fix [link=x]it[/link]")]
    out = render(checks)
    assert "/mnt/[bold red]evil[/] (ext4, dax=always)" in out
    assert "\x1b" not in out and "\\x1b[31mescape\\x1b[0m and\\nnewline" in out
    assert "fix: fix [link=x]it[/link]" in out
    assert "pmemtrace cannot run here: fix bcc" in out


def test_render_lines_and_summary():
    checks = [D.Check("root", "OK", "running as root"), D.Check("BTF", "WARN", "lost: x", "get BTF")]
    lines = render(checks).splitlines()
    assert re.match(r"^OK\s+root\s+running as root\s*$", lines[1])
    assert re.match(r"^WARN\s+BTF\s+lost: x\s*$", lines[2])
    assert re.match(r"^\s+fix: get BTF\s*$", lines[3])
    assert lines[-1] == "pmemtrace can run here; 1 WARN line(s) say what is lost"


def test_exit_status():
    assert D.exit_status([D.Check("a", "OK", ""), D.Check("b", "WARN", "")]) == 0
    assert D.exit_status([D.Check("a", "OK", ""), D.Check("b", "FAIL", "")]) == 1


def test_not_root_exits_1_with_a_fail_line(monkeypatch):
    monkeypatch.setattr(D.os, "geteuid", lambda: 1000)
    checks = D.collect()
    assert checks[0].status == "FAIL" and D.exit_status(checks) == 1


def test_cli_exit_codes(monkeypatch):
    from click.testing import CliRunner
    from pmemtrace.cli import cli
    monkeypatch.setattr(D, "collect", lambda: [D.Check("root", "OK", "running as root"),
                                               D.Check("bcc", "FAIL", "no bcc", "install it")])
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1
    assert re.search(r"^FAIL\s+bcc\s+no bcc", result.output, re.M)
    monkeypatch.setattr(D, "collect", lambda: [D.Check("root", "OK", "running as root")])
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0 and result.output.rstrip().endswith("pmemtrace can run here")


# ------------------------------------------------------------------ live

def _need_root():
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("live doctor test needs root under CI")
        pytest.skip("needs root")


def _rows(out):
    """{check name: (status, finding)} from doctor's output (wide enough not to wrap)."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(OK|WARN|FAIL)\s+(.+?)\s{2,}(.*?)\s*$", line)
        if m:
            rows[m.group(2)] = (m.group(1), m.group(3))
    return rows


@pytest.mark.live
def test_doctor_tells_this_machines_truth():
    _need_root()
    env = dict(os.environ, COLUMNS="1000")
    p = subprocess.run([sys.executable, "-m", "pmemtrace", "doctor"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = _rows(p.stdout)
    assert rows["root"][0] == "OK"
    assert rows["bcc"][0] == "OK"

    rel = os.uname().release
    if os.path.isdir(f"/lib/modules/{rel}/build"):
        assert rows["kernel headers"][0] == "OK"
    else:
        status, finding = rows["kernel headers"]
        assert status == "OK" and finding.startswith("fallback: no headers for kernel " + rel)
        assert headers.SAFE_WHY in finding

    tracing = kernel.tracefs_root()
    assert rows["tracefs"] == ("OK", f"mounted at {tracing}")
    for tp in kernel.TRACEPOINTS:
        present = os.path.isdir(f"{tracing}/events/{tp.category}/{tp.name}")
        assert rows[f"tracepoint {tp.id}"] == (("OK", f"present: {tp.feeds}") if present
                                               else ("WARN", f"absent: lost: {tp.feeds}"))

    names = [line.split()[0] for line in open("/proc/vmstat")]
    first_event = names.index("pgpgin")       # vm_event_item order, from 0
    status, finding = rows["BTF"]
    assert status == "OK"
    assert (f"THP_FAULT_ALLOC={names.index('thp_fault_alloc') - first_event}, "
            f"THP_FILE_ALLOC={names.index('thp_file_alloc') - first_event}, ") in finding
    assert "VM_FAULT_NOPAGE=0x100, VM_FAULT_FALLBACK=0x800, VM_FAULT_NEEDDSYNC=0x2000" in finding

    scan = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", rel).groups()) >= (6, 7)
    assert rows["PAGEMAP_SCAN"][0] == ("OK" if scan else "WARN")
    assert rows["PAGEMAP_SCAN"][1].startswith("supported" if scan else "not supported")

    thp = "/sys/kernel/mm/transparent_hugepage"
    for leaf in ("enabled", "defrag", "shmem_enabled"):
        want = re.search(r"\[(\w[\w-]*)\]", open(f"{thp}/{leaf}").read()).group(1)
        assert rows[f"THP {leaf}"][1].split(":")[0].split(" ")[0] == want, leaf

    for name in sorted(os.listdir("/sys/kernel/mm/hugepages")):
        kb = int(re.match(r"hugepages-(\d+)kB", name).group(1))
        total = int(open(f"/sys/kernel/mm/hugepages/{name}/nr_hugepages").read())
        free = int(open(f"/sys/kernel/mm/hugepages/{name}/free_hugepages").read())
        label = f"{kb >> 20}G" if kb >= 1 << 20 else f"{kb >> 10}M"
        assert rows[f"hugetlb {label}"][1].startswith(f"{total} pages, {free} free"), name

    devices = os.listdir("/sys/bus/dax/devices") if os.path.isdir("/sys/bus/dax/devices") else []
    assert rows["device-dax"][1].startswith("no device-dax devices") == (not devices)
    kprobes = os.path.exists(f"{tracing}/kprobe_events")
    assert (rows["device-dax faults"][1] == "dev_dax_huge_fault kprobe possible") == kprobes
    from pmemtrace import loader
    kprobes, why = loader.syscall_kprobes()
    alt = ("syscalls", "mincore") if kprobes else ("ksyscalls", "kmincore")
    wanted = {a.id for f in loader.FEATURES if f not in alt for a in loader.ATTACHMENTS[f]}
    here = sorted(i for i in wanted if os.path.isdir(f"{tracing}/events/{i.replace(':', '/')}")
                  or (i.startswith("ksyscall:") and kprobes))
    status, finding = rows["probes load"]
    assert status == "OK" and finding.startswith(f"{len(here)} probes compiled, loaded and attached")
    # which mechanism top's syscall watch uses here, and why
    status, finding = rows["top: mmap/munmap/madvise/mincore"]
    assert (status, finding.startswith(why)) == ("OK" if kprobes else "WARN", True)
    assert ("only these calls pay" in finding) == kprobes
    assert rows["top: faults"][0] == "OK"
    assert ("probes skipped" in rows) == (len(here) < len(wanted))
    assert p.stdout.rstrip().splitlines()[-1].startswith("pmemtrace can run here")


@pytest.mark.live
def test_doctor_mounts_tracefs_on_a_fresh_boot():
    """A fresh boot may have no tracefs: in a private mount namespace (the machine's own
    mounts are untouched) unmount it and debugfs, then doctor must mount it and say so."""
    _need_root()
    script = ("umount /sys/kernel/debug/tracing 2>/dev/null; umount /sys/kernel/tracing 2>/dev/null; "
              "umount /sys/kernel/debug 2>/dev/null; "
              "echo before=$(grep -c ' - tracefs ' /proc/self/mountinfo); "
              f"{sys.executable} -m pmemtrace doctor; echo rc=$?; "
              "echo after=$(grep ' - tracefs ' /proc/self/mountinfo | cut -d' ' -f5)")
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=REPO,
                       env=dict(os.environ, COLUMNS="1000"), capture_output=True, text=True, timeout=120)
    out = p.stdout
    assert "before=0\n" in out, out + p.stderr
    assert "rc=0\n" in out, out + p.stderr
    assert _rows(out)["tracefs"] == ("OK", "mounted at /sys/kernel/tracing")
    assert out.rstrip().splitlines()[-1] == "after=/sys/kernel/tracing"
