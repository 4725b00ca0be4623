"""`top` without root: delta computation on /proc text captured from a real run of
tests/workloads/top_thp.c (tests/fixtures/top/*_before.txt: mapped, not touched;
*_after.txt: 64 MiB THP + 16 MiB NOHUGEPAGE touched), sorting, key handling, rendering
of hostile names, JSON and plain output shapes."""
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console

from pmemtrace import aggregate, kernel, procfs, sampler, vma_sampler
from pmemtrace.errors import NoSuchProcess, ProcessExited
from pmemtrace import interval
from pmemtrace.views import top, top_render

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "top")
PMD = 2 << 20
MIB = 1 << 20


def fixture(name, mode="r"):
    with open(os.path.join(FIX, name), mode) as f:
        return f.read()


def stat(tag):
    return procfs.parse_stat(fixture(f"stat_{tag}.txt", "rb"))


def rollup(tag):
    return sampler.huge_from_counters(procfs.parse_smaps(fixture(f"smaps_rollup_{tag}.txt"))[0].counters)


def raw_faults(tag):
    """minflt + majflt straight from the text, independently of the parser under test."""
    text = fixture(f"stat_{tag}.txt")
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[7]) + int(rest[9])


# ----------------------------------------------------------------- /proc parsing

def test_stat_line_fields():
    before, after = stat("before"), stat("after")
    assert before.pid == after.pid and before.comm == "top_thp"
    assert before.starttime == after.starttime and not before.kthread
    assert after.faults - before.faults == raw_faults("after") - raw_faults("before")
    assert after.faults - before.faults >= 4096 + 32


def test_stat_line_hostile_comm_and_kthread():
    hostile = stat("hostile")
    assert hostile.comm == "x) (y [red]z"
    assert stat("kthread").kthread and stat("kthread").comm == "kthreadd"
    assert procfs.parse_stat(b"garbage") is None


def test_rollup_huge_bytes():
    before, after = rollup("before"), rollup("after")
    assert before.pmd == 0
    assert after.anon_pmd == 64 * MIB and after.pmd == 64 * MIB
    assert after.small >= 16 * MIB
    assert 0.7 < after.share < 0.8            # 64 MiB of ~82 MiB resident


# ----------------------------------------------------------------- per-process deltas

def test_process_deltas_from_fixtures():
    before, after = stat("before"), stat("after")
    rollups = {"before": rollup("before"), "after": rollup("after")}
    state, deltas, gone = sampler.process_deltas({}, {before.pid: before}, lambda p: rollups["before"], PMD, PMD,
                                                 baseline=True)
    assert deltas == [] and gone == []
    reads = []
    state, deltas, gone = sampler.process_deltas(state, {after.pid: after},
                                                 lambda p: reads.append(p) or rollups["after"], PMD, PMD)
    assert reads == [after.pid]
    (d,) = deltas
    assert d.huge_faults == 32 and d.anon_huge_faults == 32
    assert d.faults == raw_faults("after") - raw_faults("before")
    assert d.huge_bytes == 64 * MIB and not d.new


def test_unmoved_process_is_not_reread():
    before = stat("before")
    state, _, _ = sampler.process_deltas({}, {before.pid: before}, lambda p: rollup("before"), PMD, PMD, baseline=True)
    reads = []
    state, deltas, _ = sampler.process_deltas(state, {before.pid: before}, lambda p: reads.append(p), PMD, PMD)
    assert reads == [] and deltas == []
    # unless asked (BPF saw it munmap), and then a loss is no fault
    state, deltas, _ = sampler.process_deltas(state, {before.pid: before}, lambda p: reads.append(p) or
                                              sampler.HugeBytes(), PMD, PMD, also_read=[before.pid])
    assert reads == [before.pid] and deltas == []


def test_process_smaller_than_a_pmd_is_never_read():
    before = stat("before")                 # 339 resident pages: nothing can be PMD-mapped
    assert before.rss_pages * kernel.PAGE_SIZE < PMD
    reads = []
    state, _, _ = sampler.process_deltas({}, {before.pid: before}, lambda p: reads.append(p), PMD, PMD, baseline=True)
    moved = dataclasses.replace(before, minflt=before.minflt + 7)
    _, deltas, _ = sampler.process_deltas(state, {before.pid: moved}, lambda p: reads.append(p), PMD, PMD)
    assert reads == [] and [(d.faults, d.huge_faults) for d in deltas] == [(7, 0)]


def test_new_process_counts_everything_and_pid_reuse_is_new():
    after = stat("after")
    _, deltas, _ = sampler.process_deltas({}, {after.pid: after}, lambda p: rollup("after"), PMD, PMD)
    (d,) = deltas
    assert d.new and d.faults == raw_faults("after") and d.huge_faults == 32
    old = sampler.Tracked(after.pid, after.starttime - 1, "old", 10 ** 9, rollup("after"))
    _, deltas, gone = sampler.process_deltas({after.pid: old}, {after.pid: after}, lambda p: rollup("after"), PMD, PMD)
    assert deltas[0].new and deltas[0].huge_faults == 32 and gone == [after.pid]


def test_exited_residual_from_vmstat():
    vm_b = kernel.read_vmstat(os.path.join(FIX, "vmstat_before.txt"))
    vm_a = kernel.read_vmstat(os.path.join(FIX, "vmstat_after.txt"))
    g = sampler.globals_delta(sampler.Globals({k: vm_b[k] for k in sampler.VMSTAT_KEYS}, {}),
                              sampler.Globals({k: vm_a[k] for k in sampler.VMSTAT_KEYS}, {}))
    # the workload exited before the sample: everything the system counted is residual
    e = sampler.exited_residual(g, [], [123])
    assert e.comm == "(exited)" and e.pid is None
    assert e.huge_faults == vm_a["thp_fault_alloc"] - vm_b["thp_fault_alloc"] >= 32
    assert e.faults == vm_a["pgfault"] - vm_b["pgfault"]
    # the workload alive: its share is attributed, only the rest is residual
    live = sampler.ProcDelta(1, "w", 4129, 32, anon_huge_faults=32)
    e = sampler.exited_residual(g, [live], [])
    assert e is None or e.huge_faults == vm_a["thp_fault_alloc"] - vm_b["thp_fault_alloc"] - 32
    quiet = sampler.Globals(dict.fromkeys(sampler.VMSTAT_KEYS, 0), {})
    assert sampler.exited_residual(quiet, [], []) is None


def test_huge_gain_counts_hugetlb_by_its_page_size():
    a = sampler.HugeBytes()
    b = sampler.HugeBytes(anon_pmd=4 * MIB, shmem_pmd=2 * MIB, hugetlb=2 << 30)
    assert sampler.huge_gain(a, b, PMD, 1 << 30) == (3 + 2, 2)
    assert sampler.huge_gain(b, a, PMD, 1 << 30) == (0, 0)


def test_mthp_stats_reader(tmp_path):
    d = tmp_path / "hugepages-64kB" / "stats"
    d.mkdir(parents=True)
    (d / "anon_fault_alloc").write_text("7\n")
    (d / "anon_fault_fallback").write_text("1\n")
    (tmp_path / "enabled").write_text("[madvise]")
    assert sampler.read_mthp_stats(str(tmp_path)) == {65536: {"anon_fault_alloc": 7, "anon_fault_fallback": 1}}


# ----------------------------------------------------------------- per-VMA deltas

def vma_fixture(tag):
    return vma_sampler.vma_states(procfs.parse_smaps(fixture(f"smaps_{tag}.txt")))


def test_vma_deltas_from_fixtures():
    before, after = vma_fixture("before"), vma_fixture("after")
    assert vma_sampler.vma_deltas(None, before, PMD, PMD)[0].faults == 0          # baseline: nothing gained
    deltas = {(d.end - d.start): d for d in vma_sampler.vma_deltas(before, after, PMD, PMD)}
    thp, small = deltas[64 * MIB], deltas[16 * MIB]
    assert thp.huge_faults == 32 and thp.faults == 32 and thp.huge_bytes == 64 * MIB and thp.small_bytes == 0
    assert small.huge_faults == 0 and small.faults == 4096 and small.small_bytes == 16 * MIB
    assert "hg" in thp.vmflags and "nh" in small.vmflags and not thp.vm_sync


def test_vma_split_moves_pages_without_faulting_them():
    after = vma_fixture("after")
    thp = next(v for v in after if v.end - v.start == 64 * MIB)
    half = thp.start + 32 * MIB
    split = [vma_sampler.VmaState(thp.start, half, thp.perms, "", 0, sampler.HugeBytes(anon_pmd=32 * MIB, rss=32 * MIB),
                              thp.vmflags),
             vma_sampler.VmaState(half, thp.end, thp.perms, "", 0, sampler.HugeBytes(anon_pmd=32 * MIB, rss=32 * MIB),
                              thp.vmflags)]
    out = vma_sampler.vma_deltas([thp], split, PMD, PMD)
    assert [d.huge_faults for d in out] == [0, 0]


# ----------------------------------------------------------------- keys and sorting

def test_handle_key():
    s = top.ViewState(sort_key="huge_faults")
    assert top.handle_key(s, ">").sort_key == "fallbacks"
    assert top.handle_key(s, "<").sort_key == "faults"
    assert top.handle_key(top.ViewState(sort_key="comm"), ">").sort_key == "faults"     # wraps
    assert top.handle_key(s, "r").reverse and not top.handle_key(top.handle_key(s, "r"), "r").reverse
    assert top.handle_key(s, " ").paused
    assert top.handle_key(s, "q").quit
    assert top.handle_key(s, "x") == s
    assert top.handle_key(s, "j").cursor == 1 and top.handle_key(s, "\x1b[B").cursor == 1
    assert top.handle_key(top.handle_key(s, "j"), "\x1b[A").cursor == 0 and top.handle_key(s, "k").cursor == 0
    assert top.handle_key(s, "\r").detail and not top.handle_key(top.handle_key(s, "\n"), "\x1b").detail


def test_sort_rows():
    rows = [{"pid": 3, "comm": "b", "faults": 5, "fallbacks": None},
            {"pid": 1, "comm": "c", "faults": 50, "fallbacks": 2},
            {"pid": 2, "comm": "a", "faults": 5, "fallbacks": 1}]
    assert [r["pid"] for r in top.sort_rows(rows, "faults")] == [1, 3, 2]
    assert [r["pid"] for r in top.sort_rows(rows, "faults", reverse=True)] == [3, 2, 1]
    assert [r["pid"] for r in top.sort_rows(rows, "pid")] == [1, 2, 3]
    assert [r["comm"] for r in top.sort_rows(rows, "comm")] == ["a", "b", "c"]
    assert [r["pid"] for r in top.sort_rows(rows, "fallbacks")] == [1, 2, 3]       # unknown last
    from pmemtrace import cli
    sort_option = next(p for p in cli.top.params if p.name == "sort_key")
    assert tuple(sort_option.type.choices) == interval.SORT_KEYS    # -s offers exactly the frame's columns


def test_top_escapes_what_report_escapes():
    """One escaping function for every view: a right-to-left override in a comm is shown inert."""
    frame, rows, vmas = hostile_frame()
    rows[0]["comm"] = "evil\u202egnp.exe"
    lines = top_render.plain_lines(frame, rows, vmas)
    assert "\u202e" not in "\n".join(lines)
    assert any("evil\\u202egnp.exe" in line for line in lines)


# ----------------------------------------------------------------- model with fakes

class FakeProcSampler:
    tick = None

    def __init__(self, samples):
        self.samples = list(samples)

    def start(self):
        pass

    def sample(self, also_read=()):
        return self.samples.pop(0)


class FakeVmaCache:
    def peek(self, pid, starttime, dirty=False):
        return None

    def get(self, pid, starttime, dirty=False):
        return vma_sampler.DaxSyncCounts(1, 2)

    def forget(self, pids):
        pass


def make_sample(deltas, current, exited=None, gone=(), vm=None):
    vm = vm or dict.fromkeys(sampler.VMSTAT_KEYS, 0)
    return sampler.Sample(1000.0, 1.0, deltas, exited, list(gone), sampler.Globals(vm, {2097152: {"anon_fault_alloc": 3}}),
                          current)


def tracked(pid, comm="w"):
    return sampler.Tracked(pid, 1, comm, 0, sampler.HugeBytes(anon_pmd=PMD, rss=2 * PMD))


def test_frame_json_shape_default_mode():
    d = sampler.ProcDelta(42, "[red]x", 5000, 32, 64 * MIB, 80 * MIB, 32, True)
    ex = sampler.ProcDelta(None, "(exited)", 10, 1, 0, 0, 1)
    m = interval.Model(proc_sampler=FakeProcSampler([make_sample([d], {42: tracked(42)}, ex)]), vma_cache=FakeVmaCache(),
                  fallbacks_known=True)
    counts = aggregate.ProbeCounts()
    counts.dax[(42, "pmd_fallback", 0x1000)] = 3
    counts.lost = 2
    frame = json.loads(top_render.json_line(m.step(counts)))
    assert {"time", "interval", "lost_events", "processes"} <= set(frame) and frame["lost_events"] == 2
    rows = {r["comm"]: r for r in frame["processes"]}
    r = rows["[red]x"]
    assert (r["pid"], r["faults"], r["huge_faults"], r["fallbacks"]) == (42, 5000, 32, 3)
    assert r["dax_vmas"] == 1 and r["vm_sync_vmas"] == 2
    e = rows["(exited)"]
    assert e["pid"] is None and e["faults"] == 10 and e["huge_faults"] == 1
    assert frame["system"]["mthp"] == {"2097152": {"anon_fault_alloc": 3}}


def test_exact_mode_keeps_counts_of_exited_process():
    counts = aggregate.ProbeCounts()
    counts.thp_faults[(77, 0x7f0000000000)] = 20
    counts.thp_faults[(77, 0x7f0000200000)] = 12
    counts.comms[77] = "gone"
    vm = dict.fromkeys(sampler.VMSTAT_KEYS, 0)
    vm["thp_fault_alloc"] = 32
    ex = sampler.ProcDelta(None, "(exited)", 4200, 32, 0, 0, 32)
    m = interval.Model(exact=True, proc_sampler=FakeProcSampler([make_sample([], {}, ex, [77], vm)]),
                  vma_cache=FakeVmaCache())
    rows = {r["comm"]: r for r in m.step(counts)["processes"]}
    assert rows["gone"]["pid"] == 77 and rows["gone"]["huge_faults"] == 32 and rows["gone"]["exited"]
    assert rows["gone"]["faults"] is None
    assert rows["(exited)"]["huge_faults"] == 0 and rows["(exited)"]["faults"] == 4200


def test_comm_and_dax_filters():
    a = sampler.ProcDelta(1, "alpha", 1, 0)
    b = sampler.ProcDelta(2, "beta", 1, 0)
    m = interval.Model(comm="alp", proc_sampler=FakeProcSampler([make_sample([a, b], {1: tracked(1), 2: tracked(2)})]),
                  vma_cache=FakeVmaCache())
    assert [r["pid"] for r in m.step(aggregate.ProbeCounts())["processes"]] == [1]

    class NoDax(FakeVmaCache):
        def peek(self, pid, starttime, dirty=False):
            return vma_sampler.DaxSyncCounts(0, 0)
    m = interval.Model(dax_only=True, proc_sampler=FakeProcSampler([make_sample([a, b], {1: tracked(1), 2: tracked(2)})]),
                  vma_cache=NoDax())
    assert m.step(aggregate.ProbeCounts())["processes"] == []


def test_vma_reads_are_budgeted_busiest_first():
    a = sampler.ProcDelta(1, "quiet", 1, 0)
    b = sampler.ProcDelta(2, "busy", 1, 5)
    m = interval.Model(proc_sampler=FakeProcSampler([make_sample([a, b], {1: tracked(1), 2: tracked(2)})]),
                  vma_cache=FakeVmaCache(), vma_budget=1)
    rows = {r["pid"]: r for r in m.step(aggregate.ProbeCounts())["processes"]}
    assert rows[2]["dax_vmas"] == 1 and rows[1]["dax_vmas"] is None


def test_vma_set_changers():
    c = aggregate.ProbeCounts()
    anon = {"type": aggregate.EVENT_MMAP, "tgid": 1, "fd": 2 ** 64 - 1, "flags": 0x22, "ret": 0x7f0000000000}
    c.events = [anon, dict(anon, tgid=2, fd=3), dict(anon, tgid=3, flags=0x22 | aggregate.MAP_SYNC),
                {"type": aggregate.EVENT_MUNMAP, "tgid": 4}, {"type": aggregate.EVENT_MUNMAP, "tgid": 2},
                {"type": aggregate.EVENT_MADVISE, "tgid": 5, "flags": 14}]
    assert interval._vma_set_changers(c) == {2: "add", 3: "add", 4: "unmap"}
    assert interval._syscall_pids(c) == {1, 2, 3, 4, 5}


def test_p_mode_exit_raises_process_exited_with_its_last_counts():
    m = interval.Model(pid=5, exact=True, proc_sampler=FakeProcSampler([make_sample([], {})]), vma_sampler=False,
                  vma_cache=FakeVmaCache())
    with pytest.raises(ProcessExited):
        m.step(aggregate.ProbeCounts())

    class LastVmas:
        prev = vma_fixture("after")
    thp = next(v for v in LastVmas.prev if v.end - v.start == 64 * MIB)
    m = interval.Model(pid=5, exact=True, proc_sampler=FakeProcSampler([make_sample([], {}, gone=[5])]),
                  vma_sampler=LastVmas(), vma_cache=FakeVmaCache())
    counts = aggregate.ProbeCounts()
    counts.thp_faults[(5, thp.start)] = 3
    counts.comms[5] = "w"
    with pytest.raises(ProcessExited) as e:
        m.step(counts)
    final = e.value.frame
    assert final["exited"] and final["pid"] == 5
    assert [(r["pid"], r["huge_faults"], r["exited"]) for r in final["processes"]] == [(5, 3, True)]
    assert [(v["start"], v["huge_faults"]) for v in final["vmas"]] == [(thp.start, 3)]
    assert (final["vmas"][0]["backing"], final["vmas"][0]["path"]) == ("anon", "")


def test_p_mode_vma_rows_have_reports_backing_and_a_path(monkeypatch):
    """`backing` means in top -p what it means in report (a category); the file name is `path`."""
    monkeypatch.setattr(vma_sampler, "vma_dax", lambda pid, m: "none")

    class Vmas:
        def sample(self):
            return vma_sampler.vma_deltas(None, vma_fixture("after"), PMD, PMD)
    m = interval.Model(pid=5, proc_sampler=FakeProcSampler([make_sample([], {5: tracked(5)})]), vma_sampler=Vmas(),
                       vma_cache=FakeVmaCache())
    rows = {v["start"]: v for v in m.step(aggregate.ProbeCounts())["vmas"]}
    got = {(v["backing"], v["path"]) for v in rows.values()}
    assert {("file", "/tmp/top_thp"), ("heap", "[heap]"), ("anon", ""), ("stack", "[stack]"), ("special", "[vdso]"),
            ("file", "/usr/lib/x86_64-linux-gnu/libc.so.6")} <= got
    assert rows[0x7fe85de00000]["backing"] == "anon" and rows[0x7fe85de00000]["huge_bytes"] == 64 * MIB
    lines = top_render.plain_lines({"time": 0, "interval": 1.0, "mode": "default", "lost_events": 0,
                                    "system": {"vmstat": {}, "mthp": {}, "dax": {}}}, [], list(rows.values()))
    head = lines[2].split()
    assert head[2:4] == ["BACKING", "PATH"]
    libc = next(line for line in lines if line.startswith("7fe862048000")).split()
    assert libc[2:4] == ["file", "/usr/lib/x86_64-linux-gnu/libc.so.6"] and libc[4:6] == ["0", "928K"]


def test_vma_count_cache_refresh():
    now = [0.0]
    reads = []
    cache = interval.VmaCountCache(read_smaps=lambda pid: reads.append(pid) or [], refresh=10, clock=lambda: now[0])
    cache.get(1, 5)
    cache.get(1, 5)
    assert reads == [1]
    cache.get(1, 5, dirty=True)
    now[0] = 11
    cache.get(1, 5)
    cache.get(1, 6)                 # pid reused
    assert reads == [1, 1, 1, 1]


# ----------------------------------------------------------------- rendering

HOSTILE = ["[red]x", "\x1b[2J", "a\nb", "[bold]", "x) (y [red]z"]


def hostile_frame():
    rows = []
    for i, comm in enumerate(HOSTILE):
        rows.append({"pid": 100 + i, "comm": comm, "faults": 10, "huge_faults": 1, "fallbacks": None,
                     "huge_share": 0.5, "dax_vmas": 0, "vm_sync_vmas": 0})
    vmas = [{"start": 0x1000, "end": 0x2000, "perms": "rw-p", "backing": "file", "path": "/tmp/[red]evil\x1b]0;t\x07",
             "huge_bytes": 0,
             "small_bytes": 4096, "faults": 1, "huge_faults": 0, "dax": "none", "vm_sync": False, "madvise": {},
             "map_sync_refusals": 0}]
    frame = {"time": time.time(), "interval": 1.0, "mode": "default", "lost_events": 0,
             "system": {"vmstat": {}, "mthp": {}, "dax": {}}, "processes": rows}
    return frame, rows, vmas


def test_rich_render_shows_hostile_names_as_text():
    frame, rows, vmas = hostile_frame()
    policy = kernel.ThpPolicy("madvise", "madvise", "never", {})
    for v in (None, vmas):
        console = Console(record=True, width=200, file=io.StringIO(), force_terminal=True)
        console.print(top_render.render(frame, rows, v, top.ViewState(), policy, "6.18"))
        text = console.export_text()
        assert "[red]x" in text and "[bold]" in text and "\\x1b[2J" in text and "a\\nb" in text
        assert "\x1b" not in text
        if v:
            assert "/tmp/[red]evil\\x1b]0;t\\x07" in text


def test_plain_lines_escape_and_align():
    frame, rows, vmas = hostile_frame()
    lines = top_render.plain_lines(frame, rows, vmas)
    assert all("\x1b" not in line and "\n" not in line for line in lines)
    header = lines[1]
    assert header.split() == ["PID", "COMM", "FAULTS", "HUGE", "FALLBK", "HUGE%", "DAX", "SYNC"]
    assert len(lines[2]) <= len(lines[3]) + 40 and lines[2].split()[0] == "100"
    assert time.strftime("%H:%M:%S", time.localtime(frame["time"])) == lines[0].split()[0]
    assert top_render.printable("[red]x\x1b") == "[red]x\\x1b"      # shown through Text, never as markup


# ----------------------------------------------------------------- run() without probes

def test_run_json_with_no_probes():
    out = io.StringIO()
    assert top.run(interval=0.2, count=2, as_json=True, probes_factory=lambda f, p: interval.NoProbes(), out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 3                     # the state at start, then two intervals
    assert json.loads(lines[0])["initial"] is True
    for line in lines[1:]:
        frame = json.loads(line)
        assert frame["interval"] > 0 and frame["lost_events"] == 0
        for r in frame["processes"]:
            assert {"pid", "comm", "faults", "huge_faults", "fallbacks"} <= set(r)
            assert r["fallbacks"] is None                   # no DAX probe: not known, not 0


def test_run_fallbacks_known_from_what_the_probes_attached():
    """run() asks the probes object what is attached; it never type-checks a test double."""
    class DaxAttached(interval.NoProbes):
        features = ("dax", "syscalls", "mincore")

    class DaxMissing(DaxAttached):
        missing = {"fs_dax:dax_pmd_fault_done": "DAX PMD faults"}
    for probes, want in ((DaxAttached(), {0}), (DaxMissing(), {None})):
        out = io.StringIO()
        assert top.run(interval=0.1, count=1, pid=os.getpid(), as_json=True, probes_factory=lambda f, p: probes,
                       out=out) == 0
        frames = [json.loads(line) for line in out.getvalue().splitlines()]
        assert len(frames) == 2 and frames[0]["initial"]          # the state at start, then one interval
        for rows in (f["processes"] for f in frames):
            assert [r["pid"] for r in rows] == [os.getpid()] and {r["fallbacks"] for r in rows} == want


def test_run_p_of_a_missing_pid():
    with pytest.raises(NoSuchProcess):
        top.run(pid=2 ** 22 + 1, probes_factory=lambda f, p: interval.NoProbes(), out=io.StringIO())


def test_features():
    assert interval.features_for(False, None) == ["dax"]
    assert interval.features_for(False, None, syscalls=True) == ["dax", "syscalls", "mincore"]
    assert interval.features_for(False, None, kprobes=True) == ["dax", "ksyscalls", "kmincore"]
    assert interval.features_for(True, None)[0] == "thp" and "faults" not in interval.features_for(True, None)
    assert "faults" in interval.features_for(True, 1)


SIGTERM_SCRIPT = """
import sys
from pmemtrace import interval
from pmemtrace.views import top, top_render
class P(interval.NoProbes):
    def close(self):
        print("closed", flush=True)
print("start", flush=True)
sys.exit(top.run(interval=0.2, as_json=True, probes_factory=lambda f, p: P(), out=open("/dev/null", "w")))
"""


def test_sigterm_detaches_cleanly():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT], cwd=root, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "start"
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 0 and out.strip() == "closed"


def test_mincore_panel_lines():
    rows = [{"pid": 7, "comm": "db\x1b[2J", "mincore": {"calls": 4, "errors": 0, "bytes": 32 << 20,
                                                      "pages_examined": 8192, "pages_resident": 2048,
                                                      "ns": 8000}},
            {"pid": 8, "comm": "idle"}]
    assert top_render.mincore_lines(rows) == [
        "mincore 7 db\\x1b[2J: 4 calls, 32M queried, 25% resident, 2.0 us/call"]


def test_p_vma_faults_are_fault_counts_in_both_modes():
    """One key, one meaning: under -p a VMA's `faults` is what the pid-filtered page-fault
    probe counted, in default and --exact mode alike; pages that became resident (smaps) are
    `resident_pages_gained`. Without that probe, `faults` is null, not another quantity."""
    d = vma_sampler.VmaDelta(0x10000, 0x20000, "rw-p", "", 0, 16 * 4096, 16, 0, False, frozenset())

    class Vmas:
        def sample(self):
            return [d]
    for exact in (False, True):
        counts = aggregate.ProbeCounts()
        counts.page_faults[(5, 0x11000)] = 200000
        counts.page_faults[(5, 0x1f000)] = 1
        counts.page_faults[(6, 0x11000)] = 9          # another process: not this VMA's
        m = interval.Model(pid=5, exact=exact, proc_sampler=FakeProcSampler([make_sample([], {5: tracked(5)})]),
                           vma_sampler=Vmas(), vma_cache=FakeVmaCache())
        vma = m.step(counts)["vmas"][0]
        assert (vma["faults"], vma["resident_pages_gained"]) == (200001, 16)
    assert interval.features_for(False, 5)[0] == "faults" and "faults" in interval.features_for(True, 5)
    assert "faults" not in interval.features_for(False, None) + interval.features_for(True, None)
    m = interval.Model(pid=5, proc_sampler=FakeProcSampler([make_sample([], {5: tracked(5)})]), vma_sampler=Vmas(),
                       vma_cache=FakeVmaCache())
    m.page_faults_counted = False                     # page_fault_user missing on this kernel
    assert m.step(aggregate.ProbeCounts())["vmas"][0]["faults"] is None
