"""Fuzzing every parser of /proc, sysfs, tracefs, pagemap and BTF input with hypothesis.

Two kinds of input per parser:
  - structure-aware: text built the way the kernel writes it (names with spaces, ')' and
    newlines, huge numbers), parsed back to exactly what was written (round trips);
  - hostile: random text or bytes, and the real fixtures under tests/fixtures/ with bytes
    deleted, inserted or replaced. Then the only acceptable exceptions are pmemtrace's own
    documented errors (pmemtrace.errors), which the CLI turns into one line and an exit code.
About 12,000 examples in all, in well under a minute, without root.
"""
import os
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pmemtrace import btf, kernel, pagemap, procfs
from pmemtrace.errors import PmemtraceError

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
KIB = 1024
FAST = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fixture(*parts: str) -> str:
    with open(os.path.join(FIX, *parts), encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


@st.composite
def mutated(draw, text: str, max_edits: int = 8) -> str:
    """The text with a few characters deleted, inserted or replaced at random places."""
    chars = list(text)
    for _ in range(draw(st.integers(1, max_edits))):
        i = draw(st.integers(0, max(0, len(chars) - 1)))
        op = draw(st.sampled_from(("delete", "insert", "replace", "cut")))
        new = draw(st.text(alphabet=string.printable + "\x00\x7f\u202e\xff", min_size=1, max_size=4))
        if op == "delete" and chars:
            del chars[i]
        elif op == "insert":
            chars[i:i] = list(new)
        elif op == "replace" and chars:
            chars[i] = new
        elif op == "cut":
            chars = chars[:i]
    return "".join(chars)


def only_documented_errors(fn, *args):
    """Call a parser; anything but a result or a PmemtraceError fails the test."""
    try:
        return fn(*args)
    except PmemtraceError:
        return None


# ----------------------------------------------------------------- maps / smaps / smaps_rollup

HEX = st.integers(0, (1 << 64) - 1)
PERMS = st.builds(lambda r, w, x, s: r + w + x + s, st.sampled_from("r-"), st.sampled_from("w-"),
                  st.sampled_from("x-"), st.sampled_from("ps"))
# a path as the kernel prints it: no leading blank (indistinguishable from padding, as in the
# kernel's own output), a newline escaped as \012, anything else as is. No backslash: the kernel
# leaves a literal "\012" in a name as is, so such a name cannot round-trip (nor can it in the kernel).
PATHS = st.one_of(
    st.just(""), st.sampled_from(["[heap]", "[stack]", "[vdso]", "[anon:x y]", "/dev/zero (deleted)"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x0b\x0c\x1c\x1d\x1e"
                                   "\x85\u2028\u2029\\"),
            min_size=1, max_size=40).filter(lambda p: not p[0].isspace() and p.strip() == p))


@st.composite
def map_lines(draw):
    lo = draw(st.integers(0, (1 << 48) - 1))
    hi = draw(st.integers(lo, (1 << 48)))
    perms, offset = draw(PERMS), draw(HEX)
    major, minor, inode = draw(st.integers(0, 0xfff)), draw(st.integers(0, 0xfffff)), draw(st.integers(0, 1 << 63))
    path = draw(PATHS)
    printed = path.replace("\n", "\\012")
    line = f"{lo:08x}-{hi:08x} {perms} {offset:08x} {major:02x}:{minor:02x} {inode}"
    line += f"{' ' * draw(st.integers(1, 30))}{printed}" if path else " "
    return line, procfs.MapEntry(lo, hi, perms, offset, (major, minor), inode, path)


@FAST
@given(map_lines())
def test_maps_line_round_trip(case):
    line, want = case
    assert procfs.parse_map_line(line) == want
    assert procfs.parse_maps(line + "\n") == [want]


@FAST
@given(st.one_of(st.text(max_size=300), mutated(fixture("proc-6.18", "maps"))))
@example("1-2 rw-p 0 00:00")                       # five fields but a bad one
@example("zz-1 rw-p 0 00:00 0")
def test_maps_hostile(text):
    entries = only_documented_errors(procfs.parse_maps, text)
    for e in entries or []:
        assert isinstance(e.start, int) and isinstance(e.path, str)


COUNTER_NAMES = st.sampled_from(["Rss", "Pss", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped",
                                 "Private_Hugetlb", "Shared_Hugetlb", "Swap", "Locked", "KernelPageSize"])
VMFLAGS = st.lists(st.sampled_from(["rd", "wr", "mr", "mw", "me", "ac", "sf", "hg", "nh", "dd", "mg"]),
                   unique=True, max_size=8)


@st.composite
def smaps_blocks(draw):
    blocks, text = [], []
    for _ in range(draw(st.integers(0, 4))):
        line, entry = draw(map_lines())
        counters = draw(st.dictionaries(COUNTER_NAMES, st.integers(0, 1 << 40), max_size=6))
        flags = draw(VMFLAGS)
        eligible = draw(st.integers(0, 1))
        text.append(line)
        text += [f"{k + ':':<16}{v:>8} kB" for k, v in counters.items()]
        text.append(f"THPeligible:    {eligible}")
        text.append("VmFlags: " + " ".join(flags) + " ")
        blocks.append((entry, {**{k: v * KIB for k, v in counters.items()}, "THPeligible": eligible},
                       frozenset(flags)))
    return "\n".join(text) + "\n", blocks


@FAST
@given(smaps_blocks())
def test_smaps_round_trip(case):
    text, want = case
    got = procfs.parse_smaps(text)
    assert [(b.map, b.counters, b.vmflags) for b in got] == want


@FAST
@given(st.one_of(st.text(max_size=400), mutated(fixture("proc-6.18", "smaps")[:6000], 12),
                 mutated(fixture("proc-6.18", "smaps_rollup"))))
@example("7f0-7f1 rw-p 0 00:00 0\nRss: x kB\n")     # a counter that is not a number
@example("7f0-7f1 rw-p 0 00:00 0\nRss: \u00b2\n")     # isdigit() but not int()
@example("1-2 x\n")                                    # a header that is not a whole map line
def test_smaps_hostile(text):
    for b in only_documented_errors(procfs.parse_smaps, text) or []:
        assert all(isinstance(v, int) for v in b.counters.values())


# ----------------------------------------------------------------- status / stat

@FAST
@given(st.dictionaries(st.text(alphabet=string.ascii_letters + "_()", min_size=1, max_size=16),
                       st.text(alphabet=string.printable.replace("\n", "").replace("\r", "").replace("\x0b", "")
                               .replace("\x0c", ""), max_size=30), max_size=10))
def test_status_round_trip(fields):
    text = "".join(f"{k}:\t{v}\n" for k, v in fields.items())
    assert procfs.parse_status(text) == {k: v.strip() for k, v in fields.items()}


@FAST
@given(st.one_of(st.text(max_size=300), mutated(fixture("proc-6.18", "status"))))
def test_status_hostile(text):
    assert isinstance(procfs.parse_status(text), dict)


@st.composite
def stat_lines(draw):
    pid = draw(st.integers(1, 1 << 22))
    comm = draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=15))
    state = draw(st.sampled_from("RSDZTtXI"))
    minflt, majflt, start, rss = (draw(st.integers(0, 1 << 63)) for _ in range(4))
    flags = draw(st.integers(0, (1 << 32) - 1))
    # after the state: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice num_threads itrealvalue starttime vsize rss ...
    rest = ["1", "1", "0", "-1", "-1", str(flags), str(minflt), "0", str(majflt), "0", "3", "4", "0", "0",
            "20", "0", "1", "0", str(start), "100", str(rss)] + ["0"] * 30
    data = f"{pid} ({comm}) {state} " + " ".join(rest)
    return data.encode("utf-8", "surrogateescape"), (pid, comm, state, minflt, majflt, start, rss,
                                                      bool(flags & procfs.PF_KTHREAD))


@FAST
@given(stat_lines())
@example((b"7 (a) b) ) S 1 1 0 -1 -1 4194560 5 0 6 0 3 4 0 0 20 0 1 0 8 100 9" + b" 0" * 30,
          (7, "a) b) ", "S", 5, 6, 8, 9, False)))
def test_stat_round_trip(case):
    data, want = case
    s = procfs.parse_stat(data)
    assert s is not None
    assert (s.pid, s.comm, s.state, s.minflt, s.majflt, s.starttime, s.rss_pages, s.kthread) == want


@FAST
@given(st.one_of(st.binary(max_size=300),
                 mutated(fixture("proc-6.18", "stat")).map(lambda t: t.encode("utf-8", "surrogateescape"))))
@example(b"1 (x) \xff 1 2")
def test_stat_hostile(data):
    s = procfs.parse_stat(data)
    assert s is None or isinstance(s, procfs.StatLine)


# ----------------------------------------------------------------- vmstat / THP sysfs

@FAST
@given(st.dictionaries(st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=24),
                       st.integers(0, (1 << 64) - 1), max_size=20))
def test_vmstat_round_trip(counters):
    text = "".join(f"{k} {v}\n" for k, v in counters.items())
    assert kernel.parse_vmstat(text) == counters


@FAST
@given(st.one_of(st.text(max_size=300), mutated(fixture("proc-6.18", "vmstat"))))
@example("thp_fault_alloc \u00b2\n")
@example("pgfault\n")
def test_vmstat_hostile(text):
    out = only_documented_errors(kernel.parse_vmstat, text)
    assert out is None or all(isinstance(v, int) for v in out.values())


CHOICES = st.lists(st.text(alphabet=string.ascii_lowercase + "-_", min_size=1, max_size=12), min_size=1,
                   max_size=6, unique=True)


@FAST
@given(CHOICES, st.data())
def test_thp_choice_round_trip(choices, data):
    pick = data.draw(st.integers(0, len(choices) - 1))
    line = " ".join(f"[{c}]" if i == pick else c for i, c in enumerate(choices))
    assert kernel.selected(line) == choices[pick]


@FAST
@given(st.one_of(st.none(), st.text(max_size=100),
                 mutated(fixture("sysfs-6.18", "transparent_hugepage", "enabled")),
                 mutated(fixture("sysfs-6.18", "transparent_hugepage", "shmem_enabled"))))
def test_thp_choice_hostile(line):
    got = kernel.selected(line)
    assert got is None or isinstance(got, str)


@FAST
@given(st.one_of(st.text(max_size=30), st.integers(-5, 1 << 40).map(str),
                 mutated(fixture("sysfs-6.18", "transparent_hugepage", "hpage_pmd_size"))))
@example("\u00b2")
@example("0")
def test_pmd_size_file_hostile(tmp_path_factory, value):
    root = tmp_path_factory.mktemp("thp")
    with open(root / "hpage_pmd_size", "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(value)
    size = only_documented_errors(kernel.read_pmd_size, str(root))
    assert size is None or (isinstance(size, int) and size > 0)


# ----------------------------------------------------------------- tracefs formats

@st.composite
def format_files(draw):
    fields, lines, offset = [], ["name: x", "ID: 1", "format:"], 0
    names = draw(st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True), unique=True, max_size=10))
    for name in names:
        size = draw(st.sampled_from([1, 2, 4, 8]))
        offset += draw(st.integers(0, 8))
        signed = draw(st.booleans())
        ctype = draw(st.sampled_from(["unsigned long", "int", "vm_flags_t", "dev_t", "u8", "const char *"]))
        lines.append(f"\tfield:{ctype} {name};\toffset:{offset};\tsize:{size};\tsigned:{int(signed)};")
        fields.append(kernel.Field(name, f"{ctype} {name}", offset, size, signed))
        offset += size
    lines.append("")
    lines.append('print fmt: "x=%lu", REC->x')
    return "\n".join(lines) + "\n", fields


@FAST
@given(format_files())
def test_tracefs_format_round_trip(case):
    text, want = case
    got = kernel.parse_format(text)
    assert got == sorted(want, key=lambda f: f.offset)
    struct = kernel.c_struct("tp_x", got)
    assert struct.startswith("struct tp_x {")


@FAST
@given(st.one_of(st.text(max_size=400), mutated(fixture("tracefs-6.18", "dax_pmd_fault_done.format")),
                 mutated(fixture("tracefs-6.18", "sys_enter_mincore.format"))))
@example("field:int ;offset:0;size:4;signed:1;")      # a declaration without a name
def test_tracefs_format_hostile(text):
    fields = only_documented_errors(kernel.parse_format, text)
    if fields:
        only_documented_errors(kernel.c_struct, "tp_x", fields)


# ----------------------------------------------------------------- pagemap records

U64 = st.integers(0, (1 << 64) - 1)
FACTS = st.builds(pagemap.VmaFacts, st.sampled_from(["anon", "file", "shmem", "dax", "hugetlb"]),
                  st.sampled_from([0, 2 << 20, 1 << 30]))


@FAST
@given(st.integers(0, (1 << 40)).map(lambda a: a << 12), st.lists(U64, max_size=64),
       st.dictionaries(st.integers(0, (1 << 55) - 1), U64, max_size=16), FACTS, st.booleans())
def test_pagemap_records_hostile(start, entries, kflags, facts, soft_dirty_known):
    """Any 64-bit pagemap words with any kpageflags: runs that tile the range exactly, in order."""
    runs = pagemap.fallback_classify(start, entries, kflags, facts, soft_dirty_known)
    addr = start
    for r in runs:
        assert r.start == addr and r.end > r.start
        addr = r.end
    assert addr == start + len(entries) * kernel.PAGE_SIZE
    assert all(not (a.end == b.start and a.state == b.state) for a, b in zip(runs, runs[1:]))


@FAST
@given(st.lists(st.tuples(st.integers(1, 64), st.integers(0, 0x1FF)), max_size=40), FACTS,
       st.integers(0, 0x1FF))
def test_pagemap_scan_regions_hostile(spans, facts, known):
    """PAGEMAP_SCAN region records (start, end, categories), any categories: contiguous runs."""
    regions, addr = [], 0x7f0000000000
    for pages, cat in spans:
        regions.append((addr, addr + pages * kernel.PAGE_SIZE, cat))
        addr += pages * kernel.PAGE_SIZE
    runs = pagemap.merge_runs(pagemap.classify(pagemap.merge_regions(regions), facts, known))
    assert sum(r.length for r in runs) == addr - 0x7f0000000000
    for r in runs:
        assert r.present in (True, False) and r.kind in ("anon", "file", "shmem", "dax", "hugetlb")


# ----------------------------------------------------------------- BTF

@pytest.fixture(scope="module")
def vmlinux_btf():
    try:
        with open(btf.VMLINUX, "rb") as f:
            return f.read()
    except OSError:
        pytest.skip("no /sys/kernel/btf/vmlinux on this machine")


@FAST
@given(st.binary(max_size=200))
@example(b"\x9f\xeb\x01\x00" + b"\x00" * 20)                 # BTF magic, then nonsense
def test_btf_random_bytes(data):
    only_documented_errors(btf.parse, data)


@FEW
@given(st.data())
def test_btf_truncated_and_corrupted(vmlinux_btf, data):
    """The real BTF cut short or with a few bytes changed: parsed, or BtfError, nothing else."""
    blob = bytearray(vmlinux_btf[:data.draw(st.integers(0, len(vmlinux_btf)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if blob:
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    only_documented_errors(btf.parse, bytes(blob))


# ----------------------------------------------------------------- line-level mutations of every fixture

FIXTURE_PARSERS = [
    (("proc-6.18", "maps"), procfs.parse_maps), (("proc-6.18-kinds", "maps"), procfs.parse_maps),
    (("proc-6.18", "smaps"), procfs.parse_smaps), (("proc-6.18-kinds", "smaps"), procfs.parse_smaps),
    (("proc-6.18", "smaps_rollup"), procfs.parse_smaps), (("proc-6.18", "status"), procfs.parse_status),
    (("proc-6.18", "vmstat"), kernel.parse_vmstat),
    (("tracefs-6.18", "dax_pmd_fault_done.format"), kernel.parse_format),
    (("tracefs-6.18", "sys_enter_madvise.format"), kernel.parse_format),
    (("proc-6.18", "stat"), lambda text: procfs.parse_stat(text.encode("utf-8", "surrogateescape"))),
]
HOSTILE_TOKENS = st.sampled_from(["", "-1", "1_0", "\u0663", "\u00b2", "0x", "9" * 25, "kB", ":", "-", ")(",
                                  "\x00", "\u202e", "[", "]", ";", "field:", "offset:"])


@st.composite
def line_mutated(draw, text: str) -> str:
    """Whole lines dropped, duplicated, swapped or joined, one field replaced by a hostile token."""
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(("drop", "dup", "swap", "join", "token", "number")))
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "join" and i + 1 < len(lines):
            lines[i:i + 2] = [lines[i] + lines[i + 1]]
        elif op in ("token", "number"):
            words = lines[i].split(" ")
            k = draw(st.integers(0, len(words) - 1))
            words[k] = draw(HOSTILE_TOKENS) if op == "token" else str(draw(st.integers(-(1 << 70), 1 << 70)))
            lines[i] = " ".join(words)
    return "\n".join(lines)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fixture_line_mutations(data):
    names, parse = data.draw(st.sampled_from(FIXTURE_PARSERS))
    only_documented_errors(parse, data.draw(line_mutated(fixture(*names))))


# ----------------------------------------------------------------- pages RANGE (typed by users)

@FAST
@given(st.text(max_size=40) | st.from_regex(r"(0x[0-9a-f]{1,17}|[0-9]{1,20})[-+](0x[0-9a-f]{1,17}|[0-9]{1,20})"
                                            r"[KMGT]?(i?B)?", fullmatch=True))
@example("010-020")          # int("010", 0) raised ValueError: a traceback for `pmemtrace pages PID 010-020`
@example("0x10+01M")
def test_pages_range(spec):
    from pmemtrace.views import pages as pages_view
    rng = only_documented_errors(pages_view.parse_range, spec)
    if rng is not None:
        start, end = rng
        assert start < end and start % pagemap.PAGE_SIZE == 0 and end % pagemap.PAGE_SIZE == 0


# ----------------------------------------------------------------- THP / mTHP sysfs trees

SYSFS_FILES = ("enabled", "defrag", "shmem_enabled", "hugepages-64kB/enabled", "hugepages-2048kB/enabled",
               "hugepages-64kB/stats/anon_fault_alloc", "hugepages-2048kB/stats/anon_fault_fallback",
               "hugepages-\u0663kB/stats/anon_fault_alloc", "hugepages-x/enabled")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.dictionaries(st.sampled_from(SYSFS_FILES),
                             st.binary(max_size=60) | st.integers(0, 1 << 64).map(lambda n: str(n).encode())
                             | st.sampled_from([b"\xb2", "\u00b2".encode(), b"always [madvise] never"])))
@example(files={"hugepages-64kB/stats/anon_fault_alloc": "\u00b2".encode()})   # isdigit() True, int() raises
@example(files={"hugepages-\u0663kB/stats/anon_fault_alloc": b"0"})            # not a size the kernel writes
@example(files={"enabled": b"\x80"})                                         # not UTF-8: UnicodeDecodeError
def test_thp_sysfs_tree(files):
    """kernel.thp_policy, hugetlb_pools and sampler.read_mthp_stats over any file contents; the
    mTHP counters read back are exactly the numbers written."""
    import tempfile
    from pmemtrace import sampler
    with tempfile.TemporaryDirectory() as root:
        for rel, content in files.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "wb") as f:
                f.write(content)
        only_documented_errors(kernel.thp_policy, root)
        only_documented_errors(kernel.hugetlb_pools, root)
        stats = only_documented_errors(sampler.read_mthp_stats, root)
    for size, counters in (stats or {}).items():
        for key, value in counters.items():
            assert value == int(files[f"hugepages-{size // KIB}kB/stats/{key}"].decode().strip())


# ----------------------------------------------------------------- PAGEMAP_SCAN regions: what the runs add up to

@st.composite
def scan_records(draw):
    addr = draw(st.integers(0, 1 << 35)) * 4096
    out = []
    for _ in range(draw(st.integers(0, 30))):
        addr += draw(st.sampled_from([0, 0, 0, 4096, 2 << 20]))
        length = draw(st.integers(1, 1024)) * 4096
        out.append((addr, addr + length, draw(st.integers(0, 0x1FF))))
        addr += length
    return out


@FAST
@given(scan_records(), st.builds(pagemap.VmaFacts, st.sampled_from(["anon", "file", "shmem", "dax", "hugetlb"]),
                                 st.sampled_from([0, 2 << 20, 1 << 30])), st.sampled_from([0x07F, 0x0FF, 0x1FF]))
def test_scan_runs_add_up(regions, facts, known):
    """Runs cover exactly the regions' bytes; huge bytes are exactly the present+huge regions'."""
    runs = pagemap.classify(regions, facts, known)
    assert sum(r.length for r in runs) == sum(e - s for s, e, _ in regions)
    want_huge = sum(e - s for s, e, c in regions if c & pagemap.PAGE_IS_HUGE and c & pagemap.PAGE_IS_PRESENT)
    assert sum(r.length for r in runs if r.huge) == want_huge
    merged = pagemap.merge_regions(regions)
    assert pagemap.merge_regions(merged) == merged and pagemap.merge_runs(runs) == runs
