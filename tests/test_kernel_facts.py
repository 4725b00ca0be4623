"""kernel.py on captured kernel files: tracefs format files of 6.18
(tests/fixtures/tracefs-6.18/) -> fields and the fixed-width C structs the probes use, and
THP / hugetlb sysfs trees copied from this machine (tests/fixtures/sysfs-6.18/) into tmp_path."""
import os
import re
import shutil
import subprocess

import pytest

from pmemtrace import kernel
from pmemtrace.kernel import Field

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
TRACEFS = os.path.join(FIX, "tracefs-6.18")
SYSFS = os.path.join(FIX, "sysfs-6.18")
MIB = 1 << 20


def fmt(name):
    with open(os.path.join(TRACEFS, f"{name}.format")) as f:
        return f.read()


COMMON = [Field("common_type", "unsigned short common_type", 0, 2, False),
          Field("common_flags", "unsigned char common_flags", 2, 1, False),
          Field("common_preempt_count", "unsigned char common_preempt_count", 3, 1, False),
          Field("common_pid", "int common_pid", 4, 4, True)]


# ---------------------------------------------------------------- parse_format

def test_parse_format_dax_pmd_fault_done():
    fields = kernel.parse_format(fmt("dax_pmd_fault_done"))
    assert fields[:4] == COMMON
    by_name = {f.name: f for f in fields}
    assert [f.name for f in fields[4:]] == ["ino", "vm_start", "vm_end", "vm_flags", "address", "pgoff",
                                            "max_pgoff", "dev", "flags", "result"]
    assert by_name["vm_flags"] == Field("vm_flags", "vm_flags_t vm_flags", 32, 8, False)
    assert by_name["address"] == Field("address", "unsigned long address", 40, 8, False)
    assert by_name["max_pgoff"].offset == 56
    assert by_name["dev"] == Field("dev", "dev_t dev", 64, 4, False)
    assert by_name["flags"] == Field("flags", "unsigned int flags", 68, 4, False)
    assert by_name["result"] == Field("result", "int result", 72, 4, True)
    assert all(f.array_len is None for f in fields)


def test_parse_format_ignores_print_fmt():
    # the print fmt mentions REC->vm_flags, REC->address ... none of which may become fields
    text = fmt("dax_pte_fault_done")
    assert "REC->address" in text
    names = [f.name for f in kernel.parse_format(text)]
    assert len(names) == len(set(names)) == 11


def test_parse_format_arrays_pointers_data_loc():
    sw = {f.name: f for f in kernel.parse_format(fmt("sched_switch"))}
    assert sw["prev_comm"].ctype == "char prev_comm[16]"
    assert sw["prev_comm"].array_len == 16 and sw["prev_comm"].size == 16
    assert sw["prev_state"] == Field("prev_state", "long prev_state", 32, 8, True)
    exe = {f.name: f for f in kernel.parse_format(fmt("sched_process_exec"))}
    assert exe["filename"] == Field("filename", "__data_loc char[] filename", 8, 4, False)
    assert exe["filename"].array_len is None
    mc = {f.name: f for f in kernel.parse_format(fmt("sys_enter_mincore"))}
    assert mc["vec"] == Field("vec", "unsigned char * vec", 32, 8, False)


def test_parse_format_sorts_by_offset():
    text = fmt("sys_enter_madvise")
    lines = text.splitlines()
    field_lines = [line for line in lines if "field:" in line]
    shuffled = "\n".join(reversed(field_lines))
    assert kernel.parse_format(shuffled) == kernel.parse_format(text)


def test_parse_format_empty():
    assert kernel.parse_format("name: nothing\nformat:\n") == []


# ---------------------------------------------------------------- c_struct

def struct_body(text):
    return text.split("};")[0].splitlines()[1:]


def test_c_struct_dax_pmd_fault_done():
    text = kernel.c_struct("tp_dax_pmd", kernel.parse_format(fmt("dax_pmd_fault_done")))
    assert struct_body(text) == [
        "\tu16 common_type;", "\tu8 common_flags;", "\tu8 common_preempt_count;", "\ts32 common_pid;",
        "\tu64 ino;", "\tu64 vm_start;", "\tu64 vm_end;",
        "\tu64 vm_flags;",                   # vm_flags_t: 6.18's type, unknown to 6.1 headers
        "\tu64 address;", "\tu64 pgoff;", "\tu64 max_pgoff;",
        "\tu32 dev;", "\tu32 flags;", "\ts32 result;"]
    assert "vm_flags_t" not in text and "dev_t" not in text
    asserts = [line for line in text.splitlines() if line.startswith("_Static_assert")]
    assert len(asserts) == 14
    assert ('_Static_assert(__builtin_offsetof(struct tp_dax_pmd, vm_flags) == 32, "tp_dax_pmd.vm_flags");'
            in asserts)
    assert ('_Static_assert(__builtin_offsetof(struct tp_dax_pmd, result) == 72, "tp_dax_pmd.result");'
            in asserts)


def test_c_struct_real_gap_in_syscall_record():
    # sys_enter_*: int __syscall_nr at 8 (4 bytes), then the first argument at 16
    text = kernel.c_struct("tp_madvise", kernel.parse_format(fmt("sys_enter_madvise")))
    body = struct_body(text)
    assert body[4:] == ["\ts32 __syscall_nr;", "\tu8 __pad_12[4];", "\tu64 start;", "\tu64 len_in;",
                        "\tu64 behavior;"]      # 'int behavior' with size 8: the size wins


def test_c_struct_gap_from_removed_field():
    text = "\n".join(line for line in fmt("dax_pmd_fault_done").splitlines()
                     if "vm_end;" not in line and "common_flags" not in line)
    body = struct_body(kernel.c_struct("t", kernel.parse_format(text)))
    assert body[:3] == ["\tu16 common_type;", "\tu8 __pad_2[1];", "\tu8 common_preempt_count;"]
    assert body[5:8] == ["\tu64 vm_start;", "\tu8 __pad_24[8];", "\tu64 vm_flags;"]


def test_c_struct_arrays_and_odd_sizes_become_bytes():
    sw = kernel.c_struct("tp_sw", kernel.parse_format(fmt("sched_switch")))
    assert "\tu8 prev_comm[16];" in sw and "\tu8 next_comm[16];" in sw
    assert "\ts32 prev_pid;" in sw and "\ts64 prev_state;" in sw
    odd = [Field("x", "struct weird x", 8, 3, False)]
    assert struct_body(kernel.c_struct("o", odd)) == ["\tu8 __pad_0[8];", "\tu8 x[3];"]


FIXED_TYPES = ("typedef unsigned char u8; typedef signed char s8; typedef unsigned short u16; "
               "typedef short s16; typedef unsigned int u32; typedef int s32; "
               "typedef unsigned long long u64; typedef long long s64;\n")


def compile_c(tmp_path, source):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    src = tmp_path / "t.c"
    src.write_text(FIXED_TYPES + source + "\n")
    return subprocess.run([gcc, "-fsyntax-only", "-std=c11", str(src)], capture_output=True, text=True)


@pytest.mark.parametrize("name", ["dax_pmd_fault_done", "dax_pte_fault_done", "sys_enter_madvise",
                                  "sys_enter_mincore", "sched_switch", "sched_process_exec"])
def test_c_struct_layout_checked_by_compiler(tmp_path, name):
    fields = kernel.parse_format(fmt(name))
    text = kernel.c_struct("rec", fields)
    size = max(f.offset + f.size for f in fields)
    r = compile_c(tmp_path, text + f"\n_Static_assert(sizeof(struct rec) >= {size}, \"size\");")
    assert r.returncode == 0, r.stderr


def test_c_struct_static_asserts_catch_a_layout_the_compiler_would_move(tmp_path):
    # a u64 at offset 12 cannot exist in a naturally aligned struct: the assert must fire
    fields = [Field("a", "int a", 8, 4, True), Field("b", "unsigned long b", 12, 8, False)]
    r = compile_c(tmp_path, kernel.c_struct("bad", fields))
    assert r.returncode != 0
    assert "bad.b" in r.stderr


# ---------------------------------------------------------------- small facts

@pytest.mark.parametrize("line,choice", [
    ("always [madvise] never", "madvise"),
    ("always defer defer+madvise [madvise] never", "madvise"),
    ("always within_size advise [never] deny force", "never"),
    ("always [inherit] madvise never", "inherit"),
    ("2097152", "2097152"),          # a plain value passes through
    (None, None),
])
def test_selected(line, choice):
    assert kernel.selected(line) == choice


@pytest.mark.parametrize("rel,tup", [
    ("6.18.0", (6, 18)), ("6.1.0-28-amd64", (6, 1)), ("6.12.9+bpo-amd64", (6, 12)),
    ("7.2.0-rc1", (7, 2)), ("5.15.167.4-microsoft-standard-WSL2", (5, 15)), ("garbage", (0, 0)),
])
def test_release_tuple(rel, tup):
    assert kernel.release_tuple(rel) == tup


def test_release_tuple_defaults_to_running_kernel():
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert kernel.release_tuple() == (int(m.group(1)), int(m.group(2)))
    assert kernel.release() == os.uname().release


# ---------------------------------------------------------------- THP / hugetlb sysfs

@pytest.fixture
def thp_root(tmp_path):
    root = tmp_path / "transparent_hugepage"
    shutil.copytree(os.path.join(SYSFS, "transparent_hugepage"), root)
    return root


def test_thp_policy_as_captured(thp_root):
    p = kernel.thp_policy(str(thp_root))
    assert (p.enabled, p.defrag, p.shmem_enabled) == ("madvise", "madvise", "never")
    assert p.mthp == {8 << 10: "?",          # hugepages-8kB has only shmem_enabled: not an anon size
                      16 << 10: "never", 32 << 10: "never", 64 << 10: "never", 128 << 10: "never",
                      256 << 10: "never", 512 << 10: "never", 1 << 20: "never", 2 << 20: "inherit"}
    assert list(p.mthp) == sorted(p.mthp)


def test_thp_policy_follows_the_files(thp_root):
    (thp_root / "enabled").write_text("[always] madvise never\n")
    (thp_root / "hugepages-64kB" / "enabled").write_text("always inherit [madvise] never\n")
    shutil.rmtree(thp_root / "hugepages-1024kB")
    (thp_root / "hugepages-junk").mkdir()
    p = kernel.thp_policy(str(thp_root))
    assert p.enabled == "always"
    assert p.mthp[64 << 10] == "madvise"
    assert 1 << 20 not in p.mthp and len(p.mthp) == 8


def test_thp_policy_without_thp(tmp_path):
    p = kernel.thp_policy(str(tmp_path / "missing"))
    assert p == kernel.ThpPolicy(None, None, None, {})


def test_hugetlb_pools_as_captured(tmp_path):
    root = tmp_path / "hugepages"
    shutil.copytree(os.path.join(SYSFS, "hugepages"), root)
    assert kernel.hugetlb_pools(str(root)) == [         # smallest page size first
        kernel.HugetlbPool(2 * MIB, 28, 4, 0, 0),
        kernel.HugetlbPool(1 << 30, 0, 0, 0, 0),
    ]
    (root / "hugepages-2048kB" / "surplus_hugepages").unlink()      # an unreadable leaf reads as 0
    (root / "hugepages-2048kB" / "resv_hugepages").write_text("3\n")
    (root / "not-a-pool").mkdir()
    assert kernel.hugetlb_pools(str(root))[0] == kernel.HugetlbPool(2 * MIB, 28, 4, 3, 0)


def test_hugetlb_pools_without_hugetlbfs(tmp_path):
    assert kernel.hugetlb_pools(str(tmp_path / "missing")) == []


def test_read_sysfs(tmp_path):
    (tmp_path / "v").write_text("  always [madvise] never \n")
    assert kernel.read_sysfs(str(tmp_path / "v")) == "always [madvise] never"
    assert kernel.read_sysfs(str(tmp_path / "nope")) is None


def test_read_vmstat_fixture():
    vm = kernel.read_vmstat(os.path.join(FIX, "proc-6.18", "vmstat"))
    with open(os.path.join(FIX, "proc-6.18", "vmstat")) as f:
        lines = f.read().splitlines()
    assert len(vm) == len(lines)
    first_key, first_value = lines[0].split()
    assert vm[first_key] == int(first_value)
    assert all(isinstance(v, int) for v in vm.values())
    assert "thp_fault_alloc" in vm


# ---------------------------------------------------------------- fake tracefs

def test_tracepoint_format_and_exists_on_fake_tracefs(tmp_path):
    ev = tmp_path / "events" / "fs_dax" / "dax_pmd_fault_done"
    ev.mkdir(parents=True)
    shutil.copy(os.path.join(TRACEFS, "dax_pmd_fault_done.format"), ev / "format")
    root = str(tmp_path)
    assert kernel.tracepoint_exists("fs_dax", "dax_pmd_fault_done", root)
    assert not kernel.tracepoint_exists("fs_dax", "dax_pte_fault_done", root)
    assert kernel.tracepoint_format("fs_dax", "dax_pmd_fault_done", root) == \
        kernel.parse_format(fmt("dax_pmd_fault_done"))
    assert kernel.tracepoint_format("fs_dax", "dax_pte_fault_done", root) is None


def test_tracepoint_catalogue():
    ids = [tp.id for tp in kernel.TRACEPOINTS]
    assert len(ids) == len(set(ids))
    assert "fs_dax:dax_pmd_fault_done" in ids and "exceptions:page_fault_user" in ids
    assert all(tp.feeds for tp in kernel.TRACEPOINTS)


def test_pmd_size_from_sysfs(thp_root, monkeypatch):
    monkeypatch.setattr(kernel, "THP_SYSFS", str(thp_root))
    assert kernel.read_pmd_size() == 2097152                 # hpage_pmd_size as captured
    (thp_root / "hpage_pmd_size").write_text("524288\n")     # whatever the kernel says, not 2 MiB by habit
    assert kernel.read_pmd_size() == 524288
    monkeypatch.setattr(kernel, "THP_SYSFS", str(thp_root / "missing"))
    assert kernel.read_pmd_size() == 2 << 20                 # no THP: 512 PTEs of 4 KiB (x86-64)
    assert kernel.read_pmd_size(str(thp_root)) == 524288
    from pmemtrace import pagemap
    assert pagemap.pmd_size is kernel.pmd_size               # one source for the PMD size


def test_tracefs_root_picks_the_first_with_events(tmp_path, monkeypatch):
    a, b = tmp_path / "tracing", tmp_path / "debug" / "tracing"
    a.mkdir()
    (b / "events").mkdir(parents=True)
    monkeypatch.setattr(kernel, "TRACEFS_CANDIDATES", (str(a), str(b)))
    assert kernel.tracefs_root() == str(b)                   # a is an empty mount point
    assert kernel.ensure_tracefs() == str(b)                 # already there: nothing mounted
    (a / "events").mkdir()
    assert kernel.tracefs_root() == str(a)
    assert kernel.tracepoint_format("fs_dax", "dax_pmd_fault_done") is None   # defaults to that root
