"""What default `top` attaches, and what it reads, so that watching costs little (issue 13).

Unit tier: the loader's plan on a tracefs tree built from formats captured on 6.18
(tests/fixtures/tracefs-6.18), with and without kprobes; the null meaning of syscall counts
that were not watched; the first frame, shown before the first interval; the /proc/PID/stat
scanner that keeps files open and skips unchanged processes. Speed itself is measured in
bench/bench.py, not here."""
import io
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from pmemtrace import cli, interval, loader, procfs, program, sampler, vma_sampler
from pmemtrace.views import top

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
FORMATS = os.path.join(FIX, "tracefs-6.18")
ENUMS = {"THP_FAULT_ALLOC_ITEM": 3, "THP_FILE_ALLOC_ITEM": 7, "VM_FAULT_NOPAGE_MASK": 0x100,
         "VM_FAULT_FALLBACK_MASK": 0x800, "VM_FAULT_NEEDDSYNC_MASK": 0x2000}
SYSCALL_TPS = {"syscalls:sys_enter_mmap", "syscalls:sys_exit_mmap", "syscalls:sys_enter_munmap",
               "syscalls:sys_enter_madvise", "syscalls:sys_enter_mincore", "syscalls:sys_exit_mincore"}
KSYSCALLS = {"ksyscall:mmap", "ksyscall:munmap", "ksyscall:madvise", "ksyscall:mincore"}
KALLSYMS = "".join(f"ffffffff81000000 T __x64_sys_{c}\nffffffff81000100 T __ia32_sys_{c}\n"
                   for c in ("mmap", "munmap", "madvise", "mincore"))


@pytest.fixture
def tracefs(tmp_path):
    """A tracefs tree: every event pmemtrace uses, formats from 6.18; no kprobe_events (as here)."""
    root = tmp_path / "tracing"
    for name in os.listdir(FORMATS):
        if name.startswith(("sys_", "dax_")):
            cat = "syscalls" if name.startswith("sys_") else "fs_dax"
            d = root / "events" / cat / name[:-len(".format")]
            d.mkdir(parents=True)
            shutil.copy(os.path.join(FORMATS, name), d / "format")
    for raw in ("exceptions/page_fault_user", "memcg/count_memcg_events"):
        (root / "events" / raw).mkdir(parents=True)
    return root


def attached(tracefs_root, exact=False, pid=None, syscalls=False, kprobes=False):
    feats = interval.features_for(exact, pid, syscalls, kprobes)
    text, usable, missing = loader.build_text(feats, pid, str(tracefs_root), ENUMS)
    return {a.id for a in usable}, text, missing


def with_kprobes(tracefs_root, monkeypatch, kallsyms=KALLSYMS):
    (tracefs_root / "kprobe_events").write_text("")
    monkeypatch.setattr(program, "kallsyms_text", lambda path="/proc/kallsyms": kallsyms)   # where plan looks


# ----------------------------------------------------------------- what is attached in each mode

def test_default_top_without_kprobes_attaches_no_syscall_tracepoint(tracefs):
    ids, text, missing = attached(tracefs)
    assert ids == {i for i in ids if i.startswith("fs_dax:")} and len(ids) == 6
    assert not ids & SYSCALL_TPS and "on_sys_enter" not in text and "on_ksys_" not in text
    assert missing == {}


def test_syscalls_flag_opts_in_to_the_tracepoints(tracefs):
    ids, text, _ = attached(tracefs, syscalls=True)
    assert SYSCALL_TPS <= ids and not ids & KSYSCALLS
    assert "FEATURE_SYSCALLS 1" in text and "FEATURE_MINCORE 1" in text


def test_default_top_with_kprobes_probes_the_syscall_functions(tracefs, monkeypatch):
    with_kprobes(tracefs, monkeypatch)
    assert loader.syscall_kprobes(tracefs=str(tracefs)) == (
        True, "kprobes on __x64_sys_mmap, __x64_sys_munmap, __x64_sys_madvise, __x64_sys_mincore")
    for syscalls in (False, True):            # --syscalls changes nothing where kprobes exist
        ids, text, missing = attached(tracefs, syscalls=syscalls, kprobes=True)
        assert KSYSCALLS <= ids and not ids & SYSCALL_TPS
        assert "#define SYSCALL_WRAPPER 1" in text and "probes/ksyscalls.c" in text
        assert "probes/syscalls.c ----" not in text and missing == {}


def test_kprobes_on_a_kernel_without_syscall_wrappers(tracefs, monkeypatch):
    with_kprobes(tracefs, monkeypatch, "".join(f"c0000000 T sys_{c}\n" for c in ("mmap", "munmap", "madvise",
                                                                                   "mincore")))
    ids, text, _ = attached(tracefs, kprobes=True)
    assert KSYSCALLS <= ids and "#define SYSCALL_WRAPPER" not in text


def test_a_missing_syscall_symbol_drops_only_that_call(tracefs, monkeypatch):
    with_kprobes(tracefs, monkeypatch, KALLSYMS.replace("__x64_sys_mincore\n", "__x64_sys_mincore_x\n"))
    assert loader.syscall_kprobes(tracefs=str(tracefs))[0] is False
    ids, _, missing = attached(tracefs, kprobes=True)
    assert "ksyscall:mincore" not in ids and "ksyscall:mmap" in ids
    assert missing == {"ksyscall:mincore": "kprobes, but no syscall function for mincore in /proc/kallsyms"}


def test_exact_adds_the_fault_path_only(tracefs):
    ids, _, _ = attached(tracefs, exact=True)
    assert {"exceptions:page_fault_user", "memcg:count_memcg_events"} <= ids and not ids & SYSCALL_TPS


def test_tracepoints_and_kprobes_are_alternatives(tracefs):
    with pytest.raises(ValueError, match="alternatives"):
        loader.build_text(["syscalls", "kmincore"], None, str(tracefs), ENUMS)


def test_syscall_symbol():
    assert loader.syscall_symbol("mmap", KALLSYMS) == "__x64_sys_mmap"
    assert loader.syscall_symbol("mmap", "ffff T __arm64_sys_mmap\n") == "__arm64_sys_mmap"
    assert loader.syscall_symbol("mmap", "ffff T __x64_sys_mmap_pgoff\n") is None
    assert loader.syscall_symbol("mmap", "") is None


def test_run_picks_the_mechanism(monkeypatch):
    """top.run asks the loader for kprobes and chooses the features from that and --syscalls."""
    seen = []

    def factory(features, pid):
        seen.append(list(features))
        return interval.NoProbes()
    for kprobes, syscalls, want in ((False, False, ["dax"]), (False, True, ["dax", "syscalls", "mincore"]),
                                    (True, False, ["dax", "ksyscalls", "kmincore"])):
        monkeypatch.setattr(top, "syscall_kprobes_here", lambda k=kprobes: k)
        top.run(interval=0.1, count=1, as_json=True, probes_factory=factory, out=io.StringIO(), syscalls=syscalls)
        assert seen[-1] == want


def test_cli_syscalls_flag(monkeypatch):
    got = {}
    monkeypatch.setattr(top, "run", lambda **kw: got.update(kw) or 0)
    r = CliRunner().invoke(cli.cli, ["top", "1", "1", "--syscalls"])
    assert r.exit_code == 0, r.output
    assert got["syscalls"] is True
    CliRunner().invoke(cli.cli, ["top", "1", "1"])
    assert got["syscalls"] is False
    help_text = CliRunner().invoke(cli.cli, ["top", "--help"]).output
    assert "--syscalls" in help_text and "getppid loop at" in help_text


# ----------------------------------------------------------------- null where not watched

class Attached(interval.NoProbes):
    """A stand-in whose probes say they attached what was asked for (and nothing is missing)."""

    def __init__(self, features):
        self.features = tuple(features)


def json_frames(probes=lambda f, p: interval.NoProbes(), **kw):
    out = io.StringIO()
    top.run(interval=0.1, count=1, as_json=True, probes_factory=probes, out=out, **kw)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_unwatched_syscall_counts_are_null(monkeypatch):
    monkeypatch.setattr(top, "syscall_kprobes_here", lambda: False)
    frames = json_frames(pid=os.getpid())
    rows = [r for f in frames for r in f["processes"] if r["pid"] == os.getpid()]
    assert rows and all(r["map_sync_refusals"] is None and r["madvise_calls"] is None for r in rows)
    vmas = [v for f in frames for v in f.get("vmas", [])]
    assert vmas and all(v["madvise"] is None and v["map_sync_refusals"] is None for v in vmas)
    assert all(isinstance(v["vm_hugepage"], bool) and isinstance(v["vm_nohugepage"], bool) for v in vmas)
    frames = json_frames(lambda f, p: Attached(f), pid=os.getpid(), syscalls=True)
    rows = [r for f in frames for r in f["processes"] if r["pid"] == os.getpid()]
    assert rows and all(r["map_sync_refusals"] == 0 and r["madvise_calls"] == 0 for r in rows)
    # asked for, but the probes say it is not attached (NoProbes): unknown, so null
    frames = json_frames(pid=os.getpid(), syscalls=True)
    rows = [r for f in frames for r in f["processes"] if r["pid"] == os.getpid()]
    assert rows and all(r["madvise_calls"] is None for r in rows)


def test_madv_cell_falls_back_to_vmflags():
    from pmemtrace.views import top_render
    v = {"madvise": None, "vm_hugepage": True, "vm_nohugepage": False}
    assert top_render._madv_cell(v) == "hg"
    assert top_render._madv_cell({**v, "vm_hugepage": False, "vm_nohugepage": True}) == "nh"
    assert top_render._madv_cell({**v, "vm_hugepage": False}) == "-"
    assert top_render._madv_cell({**v, "madvise": {"HUGEPAGE": 2, "COLLAPSE": 1}}) == "3"


def test_vma_counts_count_hg_and_nh():
    text = open(os.path.join(FIX, "proc-6.18-kinds", "smaps")).read()
    blocks = procfs.parse_smaps(text)
    vc = vma_sampler.dax_sync_counts(1, blocks, dax_of=lambda pid, m: "none")
    assert vc.hugepage == sum("hg" in b.vmflags for b in blocks)
    assert vc.nohugepage == sum("nh" in b.vmflags for b in blocks)
    assert vc.hugepage + vc.nohugepage > 0


# ----------------------------------------------------------------- the first frame at once

def test_first_frame_is_the_state_at_start(monkeypatch):
    monkeypatch.setattr(top, "syscall_kprobes_here", lambda: False)
    frames = json_frames()
    assert len(frames) == 2                     # the state at start, then COUNT intervals
    first, second = frames
    assert first["initial"] is True and first["interval"] == 0.0 and "initial" not in second
    assert all(r["faults"] == 0 and r["huge_faults"] == 0 and r["huge_bytes"] > 0 for r in first["processes"])
    assert set(first["system"]["vmstat"]) == set(sampler.VMSTAT_KEYS)
    assert not any(first["system"]["vmstat"].values())


def test_first_frame_of_top_p_has_the_vmas():
    frames = json_frames(pid=os.getpid(), kprobes=False)
    first = frames[0]
    assert first["initial"] and first["pid"] == os.getpid() and first["vmas"]
    assert all(v["faults"] == 0 and v["huge_faults"] == 0 for v in first["vmas"])
    assert sum(v["small_bytes"] + v["huge_bytes"] for v in first["vmas"]) > 0


# ----------------------------------------------------------------- /proc/PID/stat kept open

def fake_proc(tmp_path, stats):
    for pid, line in stats.items():
        d = tmp_path / str(pid)
        d.mkdir(exist_ok=True)
        (d / "stat").write_bytes(line)
    return str(tmp_path)


def stat_line(pid, comm="sleep", minflt=10, rss=100, flags=0x400100):
    rest = ["S", "1", str(pid), str(pid), "0", "-1", str(flags), str(minflt), "0", "0", "0", "0", "0", "0", "0",
            "20", "0", "1", "0", "1234", "8192", str(rss)] + ["0"] * 30
    return f"{pid} ({comm}) {' '.join(rest)}\n".encode()


def test_stat_scanner_keeps_files_and_skips_unchanged(tmp_path, monkeypatch):
    proc = fake_proc(tmp_path, {10: stat_line(10), 11: stat_line(11, "kworker/0:1", flags=0x00208040),
                                12: stat_line(12, "a b) c")})
    parsed = []
    real = procfs.parse_stat
    monkeypatch.setattr(procfs, "parse_stat", lambda data: parsed.append(data) or real(data))
    sc = sampler.StatScanner(proc, max_open=100)
    first = sc.scan()
    assert sorted(first) == [10, 12] and first[12].comm == "a b) c"     # kernel threads left out
    assert len(parsed) == 3 and sorted(sc.fds) == [10, 11, 12]
    fds = dict(sc.fds)
    second = sc.scan()
    assert len(parsed) == 3 and second[10] is first[10] and sc.fds == fds   # nothing re-parsed or re-opened
    (tmp_path / "10" / "stat").write_bytes(stat_line(10, minflt=11))    # same file, new content
    third = sc.scan()
    assert third[10].minflt == 11 and len(parsed) == 4
    shutil.rmtree(tmp_path / "12")                                     # exited: its file is closed
    assert sorted(sc.scan()) == [10] and 12 not in sc.fds
    sc.close()
    assert sc.fds == {}


def test_stat_scanner_beyond_its_open_budget(tmp_path):
    proc = fake_proc(tmp_path, {p: stat_line(p) for p in range(20, 30)})
    sc = sampler.StatScanner(proc, max_open=4)
    assert sorted(sc.scan()) == list(range(20, 30)) and len(sc.fds) == 4
    assert sorted(sc.scan()) == list(range(20, 30)) and len(sc.fds) == 4
    sc.close()


def test_stat_scanner_sees_pid_reuse_on_real_proc():
    """A real exited process: pread on its kept file fails (ESRCH) and the file is closed."""
    import subprocess
    p = subprocess.Popen(["sleep", "30"])
    sc = sampler.StatScanner(max_open=100000)
    try:
        assert p.pid in sc.scan() and p.pid in sc.fds
        p.kill()
        p.wait()
        assert p.pid not in sc.scan() and p.pid not in sc.fds
    finally:
        sc.close()


def test_idle_process_keeps_its_state_and_rss_change_rereads():
    pmd, reads = 2 << 20, []
    st = procfs.parse_stat(stat_line(10, rss=1024))          # 4 MiB resident: at least one PMD
    huge = sampler.HugeBytes(anon_pmd=pmd, rss=4 << 20)

    def read_huge(pid):
        reads.append(pid)
        return huge
    state, _, _ = sampler.process_deltas({}, {10: st}, read_huge, pmd, pmd, baseline=True)
    assert reads == [10]
    again, deltas, gone = sampler.process_deltas(state, {10: st}, read_huge, pmd, pmd)
    assert again[10] is state[10] and deltas == [] and gone == [] and reads == [10]
    shrunk = procfs.parse_stat(stat_line(10, rss=600))      # munmap: RSS fell, no fault
    huge = sampler.HugeBytes(rss=600 * 4096)
    after, _, _ = sampler.process_deltas(again, {10: shrunk}, read_huge, pmd, pmd)
    assert reads == [10, 10] and after[10].huge.anon_pmd == 0


def test_screen_draws_the_initial_frame_before_the_first_interval(monkeypatch):
    """The terminal loop draws the state at start at once, before waiting for the interval."""
    drawn = []
    model = interval.Model()
    model.start()
    first = model.initial_frame()
    real_render = top.render

    def render(frame, *a, **kw):
        drawn.append(frame)
        return real_render(frame, *a, **kw)
    monkeypatch.setattr(top, "render", render)
    waits = []
    monkeypatch.setattr(top, "_wait", lambda probes, deadline, keys=None, on_key=None: waits.append(len(drawn)))
    top._loop_tty(model, interval.NoProbes(), 0.05, 1, True, 5, top.ViewState(), io.StringIO(), first)
    assert drawn[0] is first and waits[0] == 1          # drawn before the first wait
    assert len(drawn) == 2 and "initial" not in drawn[1]
