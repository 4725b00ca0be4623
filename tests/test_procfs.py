"""procfs parsers on /proc files captured from a real 6.18 process (tests/fixtures/proc-6.18/):
it mapped files named "with space.bin", "new\\nline.bin" (the kernel prints \\012),
"[red]markup[-red].bin", "esc\\x1b[2J.bin" and a deleted file, plus an 8 MiB
MADV_HUGEPAGE anonymous region that was fully THP-backed. Values asserted here are the
ones in those files."""
import os

import pytest

from pmemtrace import procfs
from pmemtrace.errors import KernelThread, NoSuchProcess, ProcessExited

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "proc-6.18")
KIB, MIB = 1024, 1 << 20
DIR = "/tmp/fx/dir/"


def fixture(name):
    with open(os.path.join(FIX, name), encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


@pytest.fixture(scope="module")
def maps():
    return procfs.parse_maps(fixture("maps"))


@pytest.fixture(scope="module")
def smaps():
    return procfs.parse_smaps(fixture("smaps"))


def by_path(entries, path):
    found = [m for m in entries if m.path == path]
    assert len(found) == 1, (path, found)
    return found[0]


def block_at(blocks, start):
    found = [b for b in blocks if b.map.start == start]
    assert len(found) == 1
    return found[0]


# ---------------------------------------------------------------- maps

def test_maps_one_entry_per_line_in_order(maps):
    lines = fixture("maps").splitlines()
    assert len(maps) == len(lines) == 116
    for m, line in zip(maps, lines):
        assert line.startswith(f"{m.start:x}-{m.end:x} {m.perms} {m.offset:08x} ")
    assert [m.start for m in maps] == sorted(m.start for m in maps)


def test_maps_first_line_fields(maps):
    m = maps[0]
    assert (m.start, m.end) == (0x5648de638000, 0x5648de639000)
    assert m.size == 4096
    assert m.perms == "r--p" and not m.shared
    assert m.offset == 0
    assert m.dev == (0xfe, 0x00)
    assert m.inode == 26723
    assert m.path == "/root/.pyenv/versions/3.11.7/bin/python3.11"
    assert not m.deleted


def test_maps_offset_is_hex_bytes(maps):
    libc_text = [m for m in maps if m.path == "/usr/lib/x86_64-linux-gnu/libc.so.6" and m.perms == "r-xp"]
    assert len(libc_text) == 1
    assert libc_text[0].offset == 0x26000
    assert (libc_text[0].start, libc_text[0].end) == (0x7f06bc644000, 0x7f06bc79a000)


def test_maps_anonymous_and_named_special(maps):
    anon = [m for m in maps if m.start == 0x7f06bb800000][0]
    assert anon.path == "" and anon.inode == 0 and anon.dev == (0, 0)
    assert anon.size == 8 * MIB
    assert by_path(maps, "[heap]").start == 0x5648ecb5f000
    assert by_path(maps, "[stack]").perms == "rw-p"
    assert by_path(maps, "[vdso]").perms == "r-xp"
    vsyscall = by_path(maps, "[vsyscall]")
    assert (vsyscall.start, vsyscall.end) == (0xffffffffff600000, 0xffffffffff601000)


def test_maps_path_with_space(maps):
    m = by_path(maps, DIR + "with space.bin")
    assert m.shared and m.perms == "rw-s"
    assert m.inode == 2147533 and m.size == 8192


def test_maps_newline_in_path_is_unescaped(maps):
    assert "\\012" in fixture("maps")                 # how the kernel printed it
    m = by_path(maps, DIR + "new\nline.bin")         # a real newline after parsing
    assert m.inode == 2147537
    assert not any("\\012" in e.path for e in maps)


def test_maps_hostile_names_kept_verbatim(maps):
    assert by_path(maps, DIR + "[red]markup[-red].bin").inode == 2147531
    esc = by_path(maps, DIR + "esc\x1b[2J.bin")
    assert esc.inode == 2147548 and esc.shared


def test_maps_deleted_flag(maps):
    m = by_path(maps, DIR + "deleted.bin (deleted)")
    assert m.deleted and m.inode == 2147549
    assert [e.path for e in maps if e.deleted] == [DIR + "deleted.bin (deleted)"]


def test_parse_map_line_rejects_garbage():
    with pytest.raises(ValueError):
        procfs.parse_map_line("Rss:                   8 kB")


def test_unescape_path():
    assert procfs.unescape_path("/a/new\\012line") == "/a/new\nline"
    assert procfs.unescape_path("/plain") == "/plain"


# ---------------------------------------------------------------- smaps

def test_smaps_blocks_match_maps(maps, smaps):
    assert [b.map for b in smaps] == maps


def test_smaps_hg_region_fully_huge(smaps):
    b = block_at(smaps, 0x7f06bb800000)
    assert b.map.size == 8 * MIB
    assert b.get("Rss") == 8 * MIB
    assert b.get("AnonHugePages") == 8 * MIB
    assert b.get("Anonymous") == 8 * MIB
    assert b.counters["THPeligible"] == 1            # a bare number, not kB
    assert b.get("KernelPageSize") == 4 * KIB
    assert b.vmflags == frozenset({"rd", "wr", "mr", "mw", "me", "ac", "hg"})
    # the only THP in the process
    assert [x.map.start for x in smaps if x.get("AnonHugePages")] == [0x7f06bb800000]


def test_smaps_heap_and_specials(smaps):
    heap = [b for b in smaps if b.map.path == "[heap]"][0]
    assert heap.get("Rss") == 1584 * KIB and heap.get("AnonHugePages") == 0
    assert heap.counters["THPeligible"] == 0
    vvar = [b for b in smaps if b.map.path == "[vvar]"][0]
    assert {"pf", "io"} <= vvar.vmflags
    vsyscall = [b for b in smaps if b.map.path == "[vsyscall]"][0]
    assert vsyscall.vmflags == frozenset({"ex"})


def test_smaps_hostile_blocks(smaps):
    nl = [b for b in smaps if b.map.path == DIR + "new\nline.bin"][0]
    assert nl.get("Rss") == 8 * KIB and "sh" in nl.vmflags
    deleted = [b for b in smaps if b.map.deleted][0]
    assert deleted.get("Rss") == 8 * KIB
    assert deleted.map.path == DIR + "deleted.bin (deleted)"


def test_smaps_missing_key_is_zero(smaps):
    assert smaps[0].get("NoSuchCounter") == 0


def test_smaps_sums_equal_rollup(smaps):
    rollup = procfs.parse_smaps(fixture("smaps_rollup"))
    assert len(rollup) == 1
    r = rollup[0]
    assert r.map.path == "[rollup]"
    assert r.get("Rss") == 21948 * KIB
    assert r.get("AnonHugePages") == 8192 * KIB
    # smaps_rollup was read a moment after smaps: the capturing Python grew its anon memory in
    # between (68 KiB), so only counters of pages that did not change can agree exactly.
    for key in ("AnonHugePages", "Shared_Clean", "Private_Clean", "ShmemPmdMapped", "FilePmdMapped"):
        assert sum(b.get(key) for b in smaps) == r.get(key), key
    grew = r.get("Anonymous") - sum(b.get("Anonymous") for b in smaps)
    assert grew == 68 * KIB
    assert r.get("Rss") - sum(b.get("Rss") for b in smaps) == grew


def test_smaps_rollup_has_no_vmflags():
    r = procfs.parse_smaps(fixture("smaps_rollup"))[0]
    assert r.vmflags == frozenset()
    assert "THPeligible" not in r.counters


# ---------------------------------------------------------------- status / stat

def test_parse_status():
    st = procfs.parse_status(fixture("status"))
    assert st["Name"] == "python3"
    assert st["Pid"] == st["Tgid"] == "24376"
    assert st["THP_enabled"] == "1"
    assert st["VmRSS"] == "21948 kB"
    assert st["Kthread"] == "0"
    assert st["Uid"] == "0\t0\t0\t0"
    assert st["Groups"] == ""


def test_parse_stat():
    st = procfs.parse_stat(fixture("stat").encode())
    assert st == procfs.StatLine(pid=24376, comm="python3", state="R", minflt=2898, majflt=0,
                                 starttime=177444, rss_pages=5440, kthread=False)
    assert st.faults == 2898


@pytest.mark.parametrize("comm", ["a b", "x) (y", "))", "(", "[red]z) R 1"])
def test_parse_stat_hostile_comm(comm):
    text = fixture("stat").replace("(python3)", f"({comm})", 1)
    st = procfs.parse_stat(text.encode())
    assert st.comm == comm
    assert (st.pid, st.state, st.minflt, st.starttime, st.rss_pages) == \
        (24376, "R", 2898, 177444, 5440)


# ---------------------------------------------------------------- file access

def pid_above_max():
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


def test_read_text_no_such_process():
    pid = pid_above_max()
    with pytest.raises(NoSuchProcess, match=f"no such process: {pid}$"):
        procfs.read_text(pid, "maps")


def test_read_text_vanished_after_start_is_exited():
    with pytest.raises(ProcessExited):
        procfs.read_text(pid_above_max(), "maps", started=True)


def test_read_stat_missing_is_none():
    assert procfs.read_stat(pid_above_max()) is None


@pytest.mark.parametrize("pid", [0, -1])
def test_check_pid_non_positive(pid):
    with pytest.raises(NoSuchProcess, match=f"no such process: {pid}$"):
        procfs.check_pid(pid)


def test_check_pid_missing():
    with pytest.raises(NoSuchProcess):
        procfs.check_pid(pid_above_max())


def test_check_pid_self():
    with open("/proc/self/comm") as f:
        comm = f.read().rstrip("\n")
    assert procfs.check_pid(os.getpid()) == comm


def pid2_is_kthreadd():
    try:
        with open("/proc/2/comm") as f:
            return f.read() == "kthreadd\n"
    except OSError:
        return False


# kthreadd has no mm: its maps reads empty for any user, so this needs no root (only a host
# PID namespace, where pid 2 is kthreadd)
@pytest.mark.skipif(not pid2_is_kthreadd(), reason="pid 2 is not kthreadd here (a PID namespace)")
def test_check_pid_kernel_thread():
    with pytest.raises(KernelThread, match=r"pid 2 \('kthreadd'\) is a kernel thread"):
        procfs.check_pid(2)
    assert procfs.is_kernel_thread(2)
    assert not procfs.is_kernel_thread(os.getpid())


def test_map_file_path():
    m = procfs.parse_map_line("7f06bb800000-7f06bc000000 rw-p 00000000 00:00 0 ")
    assert procfs.map_file_path(42, m) == "/proc/42/map_files/7f06bb800000-7f06bc000000"


def test_read_maps_of_this_process_hostile_names(tmp_path):
    """The same parsing on live kernel output: files with a newline, an undecodable byte and a
    deleted one mapped into this very process (no root needed to read one's own maps)."""
    import mmap
    names = [b"new\nline.bin", b"bad\xff byte.bin", b"gone.bin"]
    maps_, files = [], []
    for raw in names:
        path = os.path.join(os.fsencode(str(tmp_path)), raw)
        with open(path, "wb") as f:
            f.write(b"x" * 4096)
        f = open(path, "r+b")
        files.append(f)
        maps_.append(mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED))
    os.unlink(os.path.join(os.fsencode(str(tmp_path)), b"gone.bin"))
    try:
        entries = procfs.read_maps(os.getpid())
        for raw in names[:2]:
            want = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), raw))
            hits = [e for e in entries if e.path == want]
            assert len(hits) == 1, want
            assert hits[0].shared and hits[0].size == 4096
            assert hits[0].inode == os.stat(want).st_ino
        gone = [e for e in entries if e.path == f"{tmp_path}/gone.bin (deleted)"]
        assert len(gone) == 1 and gone[0].deleted
    finally:
        for m in maps_:
            m.close()
        for f in files:
            f.close()


def test_read_own_rollup_status_and_pid_list():
    me = os.getpid()
    assert me in procfs.list_pids()
    rollup = procfs.read_smaps_rollup(me)
    assert {"Rss", "Anonymous", "AnonHugePages"} <= set(rollup)
    assert all(isinstance(v, int) and v % KIB == 0 for v in rollup.values())
    assert procfs.read_status(me)["Pid"] == str(me)
    st = procfs.read_stat(me)
    assert st.pid == me and st.state == "R"
