"""vmas.py classification on smaps captured on this 6.18 VM:
tests/fixtures/proc-6.18/smaps (anon, MADV_HUGEPAGE THP, heap, stack, files, [vdso]/[vvar]),
tests/fixtures/proc-6.18-kinds/smaps (memfd, SYSV, /dev/zero shared and private, shared anon,
a /dev/shm file, MAP_HUGETLB, MADV_NOHUGEPAGE; see capture.py there) and
tests/fixtures/pagemap_workload_smaps.txt (a touched hugetlb VMA, THP regions).
FileFacts are what vmas.file_facts() returned for those kinds of mappings on this VM
(shared /dev/zero, memfd, SYSV: tmpfs magic; private /dev/zero: a character device)."""
import os

import pytest

from pmemtrace import kernel, procfs, vmas
from pmemtrace.errors import NotRoot
from pmemtrace.vmas import HUGETLBFS_MAGIC, TMPFS_MAGIC, FileFacts

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
KIB, MIB = 1024, 1 << 20
EXT4_MAGIC = 0xEF53
NONE = FileFacts()


def blocks(*parts):
    with open(os.path.join(FIX, *parts)) as f:
        return procfs.parse_smaps(f.read())


@pytest.fixture(scope="module")
def proc():
    return blocks("proc-6.18", "smaps")


@pytest.fixture(scope="module")
def kinds():
    return blocks("proc-6.18-kinds", "smaps")


@pytest.fixture(scope="module")
def workload():
    return blocks("pagemap_workload_smaps.txt")


def find(bs, path=None, start=None, perms=None):
    hits = [b for b in bs if (path is None or b.map.path == path) and (start is None or b.map.start == start)
            and (perms is None or b.map.perms == perms)]
    assert len(hits) == 1, (path, start, perms, [h.map for h in hits])
    return hits[0]


def backing(block, facts=NONE):
    return vmas.classify_backing(block.map, block.vmflags, facts)


# ---------------------------------------------------------------- classify_backing

def test_backing_anon(proc, kinds):
    assert backing(find(proc, start=0x7f06bb800000)) == "anon"               # the 8 MiB THP region
    assert backing(find(kinds, start=0x7fbabfa00000)) == "anon"              # MADV_NOHUGEPAGE region


def test_backing_private_dev_zero_is_anon(kinds):
    # mmap(MAP_PRIVATE) of /dev/zero: the kernel makes the VMA anonymous (vma_set_anonymous) but
    # keeps the file, so maps names /dev/zero; smaps counts its pages as Anonymous
    b = find(kinds, path="/dev/zero")
    assert b.map.perms == "rw-p" and b.map.inode == 4
    assert b.get("Anonymous") == b.get("Rss") == 12 * KIB
    assert backing(b, FileFacts("none", None)) == "anon"


def test_backing_heap_and_stack(proc):
    assert backing(find(proc, path="[heap]")) == "heap"
    assert backing(find(proc, path="[stack]")) == "stack"


def test_backing_file(proc):
    libc = find(proc, path="/usr/lib/x86_64-linux-gnu/libc.so.6", perms="r-xp")
    assert backing(libc, FileFacts("none", EXT4_MAGIC)) == "file"
    assert backing(libc) == "file"                      # facts unknown (no root): still a file
    for name in ("with space.bin", "new\nline.bin", "[red]markup[-red].bin", "esc\x1b[2J.bin",
                 "deleted.bin (deleted)"):
        b = find(proc, path="/tmp/fx/dir/" + name)
        assert backing(b, FileFacts("none", EXT4_MAGIC)) == "file", name


def test_backing_shmem_tmpfs_file(kinds):
    b = find(kinds, path="/dev/shm/pmt-tmpfs.bin")
    assert backing(b, FileFacts("none", TMPFS_MAGIC)) == "shmem"
    assert backing(b, FileFacts("none", EXT4_MAGIC)) == "file"   # the path alone proves nothing


def test_backing_shmem_memfd(kinds):
    b = find(kinds, path="/memfd:pmt-memfd (deleted)")
    assert backing(b, FileFacts("none", TMPFS_MAGIC)) == "shmem"
    assert backing(b) == "shmem"                          # by name when map_files cannot be read


def test_backing_shmem_sysv(kinds):
    b = find(kinds, path="/SYSV00000000 (deleted)")
    assert b.map.inode == 0                               # the shm id, 0 for the first segment
    assert backing(b) == "shmem"
    other = procfs.Smaps(procfs.parse_map_line(
        "7fbac00ea000-7fbac00ec000 rw-s 00000000 00:01 5                          /SYSV00000000 (deleted)"),
        vmflags=b.vmflags)
    assert backing(other, FileFacts("none", TMPFS_MAGIC)) == "shmem"
    assert backing(other) == "shmem"


def test_backing_shmem_dev_zero_and_shared_anon(kinds):
    shared = [b for b in kinds if b.map.path == "/dev/zero (deleted)"]
    assert len(shared) == 2                               # mmap of /dev/zero MAP_SHARED, and MAP_SHARED|MAP_ANONYMOUS
    for b in shared:
        assert b.map.shared and "sh" in b.vmflags
        assert backing(b, FileFacts("none", TMPFS_MAGIC)) == "shmem"
        assert backing(b) == "shmem"


def test_backing_shared_inode_zero_is_shmem():
    m = procfs.parse_map_line("7f0000000000-7f0000200000 rw-s 00000000 00:00 0 ")
    assert vmas.classify_backing(m, frozenset({"rd", "wr", "sh"}), NONE) == "shmem"


def test_backing_hugetlb(kinds, workload):
    b = find(kinds, path="/anon_hugepage (deleted)")
    assert "ht" in b.vmflags
    assert backing(b, FileFacts("none", HUGETLBFS_MAGIC)) == "hugetlb"
    assert backing(find(workload, path="/anon_hugepage (deleted)")) == "hugetlb"


def test_backing_device_dax():
    # No pmem on this VM, so this line is built: a MAP_SHARED mapping of /dev/dax0.0 as the DAX
    # guests set it up (devtmpfs device 00:06 here, as the /dev/zero capture shows).
    m = procfs.parse_map_line("7f4c00000000-7f4c40000000 rw-s 00000000 00:06 612"
                              "                        /dev/dax0.0")
    flags = frozenset("rd wr sh mr mw me ms hg".split())
    assert vmas.classify_backing(m, flags, FileFacts("devdax")) == "device-dax"
    assert vmas.classify_backing(m, flags, NONE) == "file"       # a character device that is not dax


def test_backing_fsdax_file_is_file():
    m = procfs.parse_map_line("7f4c00000000-7f4c04000000 rw-s 00000000 103:01 12"
                              "                        /mnt/ext4/data")
    assert vmas.classify_backing(m, frozenset({"rd", "wr", "sh"}), FileFacts("fsdax", EXT4_MAGIC)) == "file"


def test_backing_special(proc):
    for name in ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"):
        assert backing(find(proc, path=name)) == "special", name
    vvar = find(proc, path="[vvar]")
    assert {"pf", "io"} <= vvar.vmflags
    # a PFN / IO map with an ordinary name (a driver's mmap): the flags decide
    m = procfs.parse_map_line("7f06bce56000-7f06bce5a000 rw-s 00000000 00:06 9  /dev/fb0")
    assert vmas.classify_backing(m, frozenset({"rd", "wr", "pf", "io"}), NONE) == "special"
    assert vmas.classify_backing(m, frozenset({"rd", "wr", "io"}), NONE) == "special"
    assert vmas.classify_backing(m, frozenset({"rd", "wr", "pf"}), NONE) == "special"


def test_every_block_of_the_captures_classifies(proc, kinds, workload):
    seen = {backing(b) for b in proc + kinds + workload}
    assert seen == {"anon", "heap", "stack", "file", "shmem", "hugetlb", "special"}


# ---------------------------------------------------------------- classify_thp

MADVISE = kernel.ThpPolicy("madvise", "madvise", "never", {2 * MIB: "inherit"})
ALWAYS = kernel.ThpPolicy("always", "madvise", "never", {2 * MIB: "inherit"})
NEVER = kernel.ThpPolicy("never", "madvise", "never", {2 * MIB: "inherit"})
SHMEM_ADVISE = kernel.ThpPolicy("madvise", "madvise", "advise", {2 * MIB: "inherit"})


def thp(block, policy=MADVISE, kind=None, dax="none", prctl=False):
    return vmas.classify_thp(kind or backing(block), dax, block.vmflags, block.counters.get("THPeligible"),
                             policy, prctl)


def test_thp_hg_region_eligible(proc):
    assert thp(find(proc, start=0x7f06bb800000)) == (True, "MADV_HUGEPAGE on this VMA (VmFlags hg)")


def test_thp_madvise_without_hg(proc):
    assert thp(find(proc, path="[heap]")) == (False, "enabled=madvise and no MADV_HUGEPAGE on this VMA")


def test_thp_nohugepage(kinds):
    b = find(kinds, start=0x7fbabfa00000)
    assert thp(b) == (False, "MADV_NOHUGEPAGE on this VMA (VmFlags nh)")
    assert thp(b, ALWAYS) == (False, "MADV_NOHUGEPAGE on this VMA (VmFlags nh)")


def test_thp_enabled_never(proc):
    assert thp(find(proc, start=0x7f06bb800000), NEVER) == (False, "THP disabled system-wide (enabled=never)")


def test_thp_enabled_always(proc):
    # under enabled=always the kernel reports THPeligible 1 for an anon VMA holding an aligned 2 MiB
    b = find(proc, start=0x7f06bb800000)
    assert vmas.classify_thp("anon", "none", frozenset({"rd", "wr"}), 1, ALWAYS, False) == (True, "enabled=always")
    assert thp(b, ALWAYS) == (True, "enabled=always")


def test_thp_eligible_by_mthp_policy():
    policy = kernel.ThpPolicy("madvise", "madvise", "never", {64 * KIB: "always", 2 * MIB: "inherit"})
    assert vmas.classify_thp("anon", "none", frozenset({"rd", "wr"}), 1, policy, False) == \
        (True, "eligible (per-size mTHP policy)")


def test_thp_too_small_or_misaligned(proc):
    # [stack] is 132 KiB: under enabled=always its THPeligible is still 0
    stack = find(proc, path="[stack]")
    assert stack.counters["THPeligible"] == 0 and stack.map.size == 132 * KIB
    assert thp(stack, ALWAYS) == (False, "no 2 MiB-aligned 2 MiB range inside this VMA (too small or misaligned)")
    # MADV_HUGEPAGE on a VMA too small for a PMD
    small = vmas.classify_thp("anon", "none", frozenset({"rd", "wr", "hg"}), 0, MADVISE, False)
    assert small == (False, "no 2 MiB-aligned 2 MiB range inside this VMA (too small or misaligned)")


def test_thp_prctl(proc):
    with open(os.path.join(FIX, "proc-6.18-kinds", "status_thp_disabled")) as f:
        status = procfs.parse_status(f.read())
    prctl_off = status["THP_enabled"] == "0"
    assert prctl_off
    b = find(proc, start=0x7f06bb800000)
    assert thp(b, prctl=prctl_off) == (False, "THP disabled for this process by prctl(PR_SET_THP_DISABLE)")


def test_thp_hugetlb(kinds, workload):
    reason = "hugetlb: mapped with huge pages from the hugetlb pool, not THP"
    assert thp(find(kinds, path="/anon_hugepage (deleted)")) == (False, reason)
    assert thp(find(workload, path="/anon_hugepage (deleted)"), ALWAYS, prctl=True) == (False, reason)


def test_thp_dax():
    flags = frozenset("rd wr sh mr mw me ms hg".split())
    for kind, dax in (("file", "fsdax"), ("device-dax", "devdax")):
        eligible, reason = vmas.classify_thp(kind, dax, flags, 0, MADVISE, False)
        assert not eligible and reason.startswith("DAX: no THP; PMD mappings need 2 MiB alignment")
        assert vmas.classify_thp(kind, dax, flags, 0, NEVER, True) == (eligible, reason)


def test_thp_special(proc):
    assert thp(find(proc, path="[vdso]"), ALWAYS) == (False, "special mapping (vdso, PFN/IO map): never THP")


def test_thp_shmem(kinds):
    b = find(kinds, path="/memfd:pmt-memfd (deleted)")
    eligible, reason = thp(b)
    assert not eligible
    assert reason == "shmem: shmem_enabled=never and the mount's huge= option do not allow huge pages here"
    assert thp(b, SHMEM_ADVISE, kind="shmem") == (False, "shmem: shmem_enabled=advise and the mount's huge= "
                                                         "option do not allow huge pages here")
    eligible_block = procfs.Smaps(b.map, dict(b.counters, THPeligible=1), b.vmflags)
    assert thp(eligible_block, kind="shmem") == \
        (True, "shmem: eligible (shmem_enabled=never or tmpfs huge= mount option)")


def test_thp_file(proc):
    libc = find(proc, path="/usr/lib/x86_64-linux-gnu/libc.so.6", perms="r-xp")
    assert thp(libc, ALWAYS) == (False, "file: page cache of this filesystem is not THP-eligible here")
    eligible = procfs.Smaps(libc.map, dict(libc.counters, THPeligible=1), libc.vmflags)
    assert thp(eligible) == (True, "file: eligible (large folios on this filesystem)")


def test_thp_no_thpeligible_line_reads_as_not_eligible(proc):
    b = find(proc, start=0x7f06bb800000)
    assert vmas.classify_thp("anon", "none", b.vmflags, None, MADVISE, False) == \
        (False, "no 2 MiB-aligned 2 MiB range inside this VMA (too small or misaligned)")


def test_thp_check_order():
    everything = frozenset({"rd", "wr", "hg", "nh", "ht"})
    assert vmas.classify_thp("hugetlb", "fsdax", everything, 1, NEVER, True)[1].startswith("hugetlb:")
    # DAX: with VM_NOHUGEPAGE the kernel makes no PMD attempt, and the reason says so
    assert vmas.classify_thp("special", "devdax", everything, 1, NEVER, True)[1].startswith(
        "DAX with MADV_NOHUGEPAGE")
    assert vmas.classify_thp("special", "devdax", everything - {"nh"}, 1, NEVER, True)[1].startswith("DAX:")
    assert vmas.classify_thp("special", "none", everything, 1, NEVER, True)[1].startswith("special")
    assert vmas.classify_thp("shmem", "none", everything, 1, NEVER, True)[1].startswith("THP disabled for this")
    assert vmas.classify_thp("shmem", "none", everything, 1, NEVER, False)[1].startswith("MADV_NOHUGEPAGE")
    assert vmas.classify_thp("anon", "none", frozenset({"hg"}), 1, NEVER, False)[1].startswith(
        "THP disabled system-wide")


# ---------------------------------------------------------------- smaps_huge_bytes

def test_smaps_huge_bytes(proc, workload):
    assert vmas.smaps_huge_bytes(find(proc, start=0x7f06bb800000)) == 8 * MIB
    assert sum(vmas.smaps_huge_bytes(b) for b in proc) == 8 * MIB
    hugetlb = find(workload, path="/anon_hugepage (deleted)")
    assert hugetlb.get("Rss") == 0                                 # hugetlb pages are not in Rss
    assert vmas.smaps_huge_bytes(hugetlb) == 4 * MIB               # Private_Hugetlb
    assert vmas.smaps_huge_bytes(find(workload, start=0x7f7cff400000)) == 32 * MIB
    assert vmas.smaps_huge_bytes(find(workload, start=0x7f7cfe200000)) == 0      # nh region


def test_smaps_huge_bytes_adds_every_huge_counter():
    m = procfs.parse_map_line("7f0000000000-7f0010000000 rw-s 00000000 00:01 7  /x")
    b = procfs.Smaps(m, {"AnonHugePages": 1, "ShmemPmdMapped": 10, "FilePmdMapped": 100,
                         "Shared_Hugetlb": 1000, "Private_Hugetlb": 10000, "Rss": 99999})
    assert vmas.smaps_huge_bytes(b) == 11111


# ---------------------------------------------------------------- small /proc helpers (no root)

def test_fs_type_and_statx():
    assert vmas.fs_type("/proc") == 0x9FA0                         # PROC_SUPER_MAGIC
    assert vmas.fs_type("/nonexistent/pmemtrace") is None
    assert vmas.statx_dax(__file__) is False                      # no pmem on this VM
    assert vmas.statx_dax("/nonexistent/pmemtrace") is None
    assert not vmas.is_devdax_char(os.stat("/dev/null").st_rdev)   # subsystem mem, not dax


def test_file_facts_anonymous_needs_nothing():
    m = procfs.parse_map_line("7f06bb800000-7f06bc000000 rw-p 00000000 00:00 0 ")
    assert vmas.file_facts(os.getpid(), m) == NONE


def test_file_facts_own_file_mapping():
    # this interpreter's own executable mapping: as root the facts come from map_files;
    # without CAP_SYS_ADMIN map_files cannot be followed and the user is told to use sudo
    ms = procfs.read_maps(os.getpid())
    exe = os.path.realpath("/proc/self/exe")
    m = [e for e in ms if e.path == exe][0]
    if os.geteuid() == 0:
        assert vmas.file_facts(os.getpid(), m) == FileFacts("none", vmas.fs_type(exe))
    else:
        with pytest.raises(NotRoot):
            vmas.file_facts(os.getpid(), m)


def test_file_facts_and_backing_of_live_mappings():
    """The FileFacts assumed above, measured: a memfd and a private /dev/zero mapping of this
    process. As root map_files is followed; as a user the answer is NotRoot."""
    import mmap
    fd = os.memfd_create("pmt-test")
    os.ftruncate(fd, 8192)
    shm = mmap.mmap(fd, 8192, mmap.MAP_SHARED)
    shm[:1] = b"x"
    with open("/dev/zero", "r+b") as z:
        zero = mmap.mmap(z.fileno(), 12288, mmap.MAP_PRIVATE)
    zero[:1] = b"x"
    try:
        blocks_ = {b.map.path: b for b in procfs.read_smaps(os.getpid())
                   if b.map.path in ("/memfd:pmt-test (deleted)", "/dev/zero")}
        assert set(blocks_) == {"/memfd:pmt-test (deleted)", "/dev/zero"}
        if os.geteuid() != 0:
            with pytest.raises(NotRoot):
                vmas.file_facts(os.getpid(), blocks_["/dev/zero"].map)
            return
        memfd, dz = blocks_["/memfd:pmt-test (deleted)"], blocks_["/dev/zero"]
        assert vmas.file_facts(os.getpid(), memfd.map) == FileFacts("none", TMPFS_MAGIC)
        assert vmas.file_facts(os.getpid(), dz.map) == FileFacts("none", None)     # a character device
        assert backing(memfd, vmas.file_facts(os.getpid(), memfd.map)) == "shmem"
        assert backing(dz, vmas.file_facts(os.getpid(), dz.map)) == "anon"
        assert dz.get("Anonymous") == dz.get("Rss") == 4 * KIB
    finally:
        shm.close()
        zero.close()
        os.close(fd)


# ---------------------------------------------------------------- DAX residency, any kernel

def test_dax_residency_with_pagemap_scan_is_huge_plus_small():
    from pmemtrace import pagemap
    def dax_vma(huge, small):           # as the PAGEMAP_SCAN walk left it
        return vmas.Vma(0, 1 << 30, "rw-s", "file", "/mnt/pmem/f", 0, huge, small, "fsdax", False, False, "")
    res = vmas.dax_residency(1, [dax_vma(64 << 20, 0), dax_vma(0, 16 << 20)], True)
    assert [(r.rss, r.huge, r.small, r.source) for r in res] == [
        (64 << 20, 64 << 20, 0, pagemap.SOURCE_SCAN), (16 << 20, 0, 16 << 20, pagemap.SOURCE_SCAN)]


def test_dax_notes_say_what_is_known():
    from pmemtrace.pagemap import DaxResidency
    assert vmas.dax_notes([DaxResidency(1, 1, 0, "PAGEMAP_SCAN")], True) == []
    assert vmas.dax_notes([], False) == []
    notes = vmas.dax_notes([DaxResidency(64 << 20, None, None, "pagemap", 32),
                            DaxResidency(16 << 20, 0, 16 << 20, "pagemap")], False)
    text = " ".join(notes)
    assert "present bits of /proc/PID/pagemap" in notes[0]
    assert "PAGEMAP_SCAN" in text and "unavailable" in text and "--duration" in text and "32 " in text
    assert "4 KiB where no 2 MiB block can be one PMD leaf" in text and "PM_FILE" in text
    assert "unknown (?)" in " ".join(vmas.dax_notes([DaxResidency(None, None, None, "pagemap")], False))
