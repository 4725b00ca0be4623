"""`pmemtrace report PID --duration` against real DAX faults: MAP_SYNC first writes
(NEEDDSYNC) and re-faults (PMD), and every PMD fallback cause produced for real and named,
on ext4 and xfs.

One process (tests/workloads/dax_causes.c) holds one VMA per scenario on each dax mount,
so a single observation (one BPF compile under TCG) covers them all. Ground truth per VMA:
a private tracefs instance recording fs_dax:dax_pmd_fault_done and dax_pte_fault_done over
the same window, assigned to VMAs by fault address.
"""
import os

import pytest

from guestlib import HeldWorkload, Kprobes, TraceInstance, columns, observe, parse_kv, vma_at
from pmemtrace import daxcause

MiB = 1 << 20
FILESYSTEMS = ["ext4", "xfs"]
CAUSES = {
    "misaligned": daxcause.MISALIGNED,
    "pte_setup": daxcause.MISALIGNED,
    "pte_present": daxcause.PTE_PRESENT,
    "outside": daxcause.OUTSIDE_VMA,
    "past_eof": daxcause.PAST_EOF,
    "cow": daxcause.COW,
}


DEVDAX_KPROBES = ("p:pmtdax/devdax_fault dev_dax_huge_fault arg=%si:u32",
                  "r:pmtdax/devdax_ret dev_dax_huge_fault ret=$retval:x32")


@pytest.fixture(scope="session")
def observed(setup_facts, dax_causes):
    """fs -> {vma name: (report row, tracefs pmd results, tracefs pte results, length)}, plus
    "faults" -> {(fs, name): user page faults in that VMA} and "devdax" -> (row, kprobe lines)."""
    dirs = {}
    for fs in FILESYSTEMS:
        if f"fsdax-{fs}" not in setup_facts:
            pytest.fail(f"stage2 did not set up fs-dax {fs} (see guest.log)")
        dirs[fs] = os.path.join(setup_facts[f"fsdax-{fs}"][1], "causes")
        os.makedirs(dirs[fs], exist_ok=True)
    args = list(dirs.values())
    if "devdax" in setup_facts:
        args.append(setup_facts["devdax"][0])
    events = ["fs_dax/dax_pmd_fault_done", "fs_dax/dax_pte_fault_done", "fs_dax/dax_insert_pfn_mkwrite",
              "exceptions/page_fault_user"]
    kp = None
    try:
        kp = Kprobes(*DEVDAX_KPROBES)
        events += ["pmtdax/devdax_fault", "pmtdax/devdax_ret"]
    except OSError as e:       # truth for device-dax unavailable: its tests fail with this
        kprobe_error = f"kprobe on dev_dax_huge_fault: {e}"
    else:
        kprobe_error = None
    t = None
    try:
        with HeldWorkload(dax_causes, *args, waits=True) as w:
            t = TraceInstance(f"pmtcauses{os.getpid()}", events, pid=w.pid)
            data = observe(w)
            vmas = [parse_kv(ln) for ln in w.all_lines if ln.startswith("VMA ")]
        out = {fs: {} for fs in FILESYSTEMS}
        mkwrite, faults = {}, {}
        for kv in vmas:
            a, n = int(kv["addr"], 16), int(kv["len"])
            fs = next((f for f, d in dirs.items() if d == kv["dir"]), "devdax")
            faults[(fs, kv["name"])] = sum(t.in_range("page_fault_user", a, a + n, comm="dax_causes").values())
            if fs == "devdax":
                out["devdax"] = (vma_at(data, a), kprobe_error or list(t.event_lines("devdax_fault", "dax_causes")),
                                 kprobe_error or list(t.event_lines("devdax_ret", "dax_causes")), n)
                continue
            out[fs][kv["name"]] = (vma_at(data, a), t.in_range("dax_pmd_fault_done", a, a + n, comm="dax_causes"),
                                   t.in_range("dax_pte_fault_done", a, a + n, comm="dax_causes"), n)
            mkwrite[(fs, kv["name"])] = sum(t.in_range("dax_insert_pfn_mkwrite", a, a + n, comm="dax_causes").values())
    finally:
        if t:
            t.close()
        if kp:
            kp.close()
    for d in dirs.values():
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    out["mkwrite"] = mkwrite
    out["faults"] = faults
    out["probes_missing"] = data.get("probes_missing", {})
    return out


@pytest.mark.parametrize("fs", FILESYSTEMS)
def test_map_sync_first_write_needdsync(observed, fs):
    """64 MiB aligned MAP_SYNC over fresh blocks: 32 NEEDDSYNC, nothing else."""
    row, pmd, pte, n = observed[fs]["sync_first"]
    assert dict(pmd) == {"NEEDDSYNC": 32} and dict(pte) == {}
    assert columns(row) == {"dax_pmd_faults": 0, "dax_pte_faults": 0, "dax_fallbacks": 0, "dax_needdsync": 32}


@pytest.mark.parametrize("fs", FILESYSTEMS)
def test_map_sync_refault_is_pmd(observed, fs):
    """A second MAP_SYNC VMA over the now written blocks: 32 PMD faults (NOPAGE)."""
    row, pmd, pte, n = observed[fs]["sync_again"]
    assert dict(pmd) == {"NOPAGE": 32} and dict(pte) == {}
    assert columns(row) == {"dax_pmd_faults": 32, "dax_pte_faults": 0, "dax_fallbacks": 0, "dax_needdsync": 0}


@pytest.mark.parametrize("fs", FILESYSTEMS)
@pytest.mark.parametrize("name", list(CAUSES))
def test_fallback_cause(observed, fs, name):
    """The kernel really fell back here, pmemtrace counted every fallback and named the cause."""
    row, pmd, pte, n = observed[fs][name]
    fallbacks = pmd.get("FALLBACK", 0)
    assert fallbacks > 0, f"{fs} {name}: the kernel made no PMD fallback here: {dict(pmd)}"
    assert set(pmd) <= {"FALLBACK", "NOPAGE"}, dict(pmd)
    assert (columns(row)["dax_fallbacks"], columns(row)["dax_pmd_faults"]) == (fallbacks, pmd.get("NOPAGE", 0))
    assert row.get("dax_fallback_causes") == {CAUSES[name]: fallbacks}


@pytest.mark.parametrize("fs", FILESYSTEMS)
@pytest.mark.parametrize("name", list(CAUSES))
def test_fallback_vma_pte_faults(observed, fs, name):
    """Every 4 KiB DAX fault of the VMA is counted on it, including those in a 2 MiB block
    that starts before the VMA (a misaligned VMA's first block)."""
    row, pmd, pte, n = observed[fs][name]
    assert columns(row)["dax_pte_faults"] == sum(pte.values()), dict(pte)
    assert columns(row)["dax_needdsync"] == 0


@pytest.mark.parametrize("fs", FILESYSTEMS)
def test_nohugepage_makes_no_pmd_attempt(observed, fs):
    row, pmd, pte, n = observed[fs]["nohuge"]
    assert dict(pmd) == {}
    assert sum(pte.values()) == n // 4096
    assert columns(row) == {"dax_pmd_faults": 0, "dax_pte_faults": n // 4096, "dax_fallbacks": 0,
                            "dax_needdsync": 0}


@pytest.mark.parametrize("fs", FILESYSTEMS)
def test_nohugepage_reason_in_words(observed, fs):
    """The kernel makes no PMD attempt on a VM_NOHUGEPAGE DAX VMA, so no fallback cause can
    say why it is all 4 KiB: the VMA's THP reason must."""
    row = observed[fs]["nohuge"][0]
    assert row["thp_eligible"] is False
    assert "nohugepage" in row["thp_reason"].lower().replace("_", "").replace(" ", ""), row["thp_reason"]


@pytest.mark.parametrize("fs", FILESYSTEMS)
def test_map_sync_latency_histogram(observed, fs):
    """Each NEEDDSYNC ends in dax_insert_pfn_mkwrite: the per-VMA latency histogram holds
    exactly as many samples as the tracepoint fired for that VMA (32)."""
    row = observed[fs]["sync_first"][0]
    assert observed["mkwrite"][(fs, "sync_first")] == 32
    hist = row.get("map_sync_latency_log2_ns")
    assert hist is not None, "report --duration has no map_sync_latency_log2_ns"
    assert sum(hist.values()) == 32, hist


SCENARIOS = ["sync_first", "sync_again", *CAUSES, "nohuge"]


@pytest.mark.parametrize("fs", FILESYSTEMS)
@pytest.mark.parametrize("name", SCENARIOS)
def test_faults_column_is_user_page_faults(observed, fs, name):
    """The per-VMA `faults` column equals exceptions:page_fault_user in that VMA's range."""
    row = observed[fs][name][0]
    assert row["faults"] == observed["faults"][(fs, name)]


def test_devdax_pmd_faults_seen_as_faults(observed, kernel_version):
    """/dev/dax0.0, 64 MiB MAP_SYNC, 2 MiB aligned: the kernel takes 32 PMD-size device-dax
    faults (kprobe on dev_dax_huge_fault: size argument PMD, result NOPAGE), and without
    device-dax tracepoints pmemtrace still counts the 32 user page faults on that VMA."""
    if "devdax" not in observed:
        pytest.fail("no device-dax VMA (stage2 made no /dev/daxX.Y)")
    row, calls, rets, n = observed["devdax"]
    assert not isinstance(calls, str), calls
    pmd = "9" if kernel_version >= (6, 6) else "1"     # order 9 (6.6+) or enum PE_SIZE_PMD
    pud = "18" if kernel_version >= (6, 6) else "2"    # order 18 or enum PE_SIZE_PUD
    assert len(calls) == len(rets), (calls[:3], rets[:3])
    pairs = [(c.split("arg=")[-1], r.split("ret=")[-1]) for c, r in zip(calls, rets)]
    # where ASLR places the mapping 1 GiB aligned, the kernel first tries a PUD fault, which falls
    # back (VM_FAULT_FALLBACK): part of the same user fault, not a device-dax PMD fault
    assert all(ret == "0x800" for arg, ret in pairs if arg == pud), pairs[:3]
    assert [p for p in pairs if p[0] != pud] == [(pmd, "0x100")] * 32, pairs[:3]
    assert row["dax"] == "devdax"
    assert row["faults"] == 32


def test_devdax_pmd_fault_column(observed):
    """Where the kernel has kprobes, pmemtrace counts device-dax PMD faults per VMA (32)."""
    row = observed["devdax"][0]
    assert (row["dax_pmd_faults"], row["dax_pte_faults"]) == (32, 0)
