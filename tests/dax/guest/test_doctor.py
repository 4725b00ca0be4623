"""`pmemtrace doctor` in the guest describes the guest truly: its dax mounts, its device-dax
device, which fs_dax tracepoints exist, PAGEMAP_SCAN by kernel version, and how device-dax
faults are observed (kprobes where the kernel has them)."""
import os
import re

from guestlib import pmemtrace

TRACEFS = "/sys/kernel/tracing"


def blocks(text):
    """'OK  name  detail' lines with their wrapped continuation lines, by verdict+name text."""
    out, cur = [], None
    for ln in text.splitlines():
        if re.match(r"^[A-Z]{2,5}\s{2}", ln):
            cur = [ln]
            out.append(cur)
        elif cur is not None and ln.startswith(" "):
            cur.append(ln.strip())
    return [" ".join(b) for b in out]


def find(bs, name):
    hits = [b for b in bs if re.match(rf"^[A-Z]+\s+{re.escape(name)}\s", b)]
    assert hits, f"doctor has no '{name}' line"
    return hits[0]


def test_doctor_sees_the_guest(setup_facts, kernel_version):
    text = pmemtrace("doctor")
    bs = blocks(text)
    mounts = find(bs, "dax mounts")
    for fs in ("ext4", "xfs"):
        assert setup_facts[f"fsdax-{fs}"][1] in mounts, mounts
    dev = find(bs, "device-dax")
    assert os.path.basename(setup_facts["devdax"][0]) in dev, dev
    for ev in sorted(os.listdir(f"{TRACEFS}/events/fs_dax")):
        if os.path.isdir(f"{TRACEFS}/events/fs_dax/{ev}"):
            b = [x for x in bs if f"fs_dax:{ev} " in x + " "]
            if b:       # doctor lists the tracepoints pmemtrace uses; each listed one must be right
                assert b[0].startswith("OK") and "present" in b[0], b[0]
    assert any(f"fs_dax:dax_pmd_fault_done" in b for b in bs)
    scan = find(bs, "PAGEMAP_SCAN")
    if kernel_version >= (6, 7):
        assert "supported" in scan and "not supported" not in scan and "unsupported" not in scan, scan
    else:
        assert "supported" not in scan.replace("not supported", "").replace("unsupported", ""), scan
    btf_line = find(bs, "BTF")
    assert "THP_FAULT_ALLOC=" in btf_line and "TASK_STORAGE" not in btf_line, btf_line    # no stash needs it
    faults = find(bs, "device-dax faults")
    if os.path.exists(f"{TRACEFS}/kprobe_events"):
        assert "no kprobes" not in faults and "kprobe" in faults, faults
    else:
        assert "no kprobes" in faults, faults
    # top's syscall watch: kprobes on the syscall functions here, never the syscall tracepoints
    mech = find(bs, "top: mmap/munmap/madvise/mincore")
    if os.path.exists(f"{TRACEFS}/kprobe_events"):
        assert mech.startswith("OK") and "kprobes on __x64_sys_mmap" in mech and "only these calls pay" in mech, mech
    else:
        assert mech.startswith("WARN") and "--syscalls" in mech, mech
    assert find(bs, "probes load").startswith("OK")
