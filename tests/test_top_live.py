"""`pmemtrace top` against the running kernel (root; real probes and workloads).

The workload (tests/workloads/top_thp.c) faults 64 MiB of THP (2 MiB aligned,
MADV_HUGEPAGE: 32 PMD faults) and 16 MiB of MADV_NOHUGEPAGE 4 KiB pages (4096 faults)
while `top` runs; the counts top reports must be exactly those. Under CI=true these
tests fail instead of skipping when they cannot run.
"""
import ctypes
import errno
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

import pytest
from testkit import cannot_run, live_workloads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = os.path.join(ROOT, "tests", "workloads")
PYTHON = sys.executable
MIB = 1 << 20

pytestmark = pytest.mark.live



@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    return live_workloads(tmp_path_factory.mktemp("top_workloads"), ("top_thp", "top_comm", "top_churn"))


# ----------------------------------------------------------------- BPF programs held by a process

def prog_ids_of(pid):
    """BPF program ids behind the fds of pid (fdinfo 'prog_id:' lines)."""
    ids = set()
    fddir = f"/proc/{pid}/fdinfo"
    try:
        names = os.listdir(fddir)
    except OSError:
        return ids
    for name in names:
        try:
            with open(f"{fddir}/{name}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            pass
    return ids


_libc = ctypes.CDLL(None, use_errno=True)
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
BPF_PROG_GET_FD_BY_ID = 13


def prog_exists(prog_id):
    """bpf(BPF_PROG_GET_FD_BY_ID): is a program with this id still loaded anywhere?"""
    attr = (ctypes.c_uint32 * 32)()
    attr[0] = prog_id
    fd = _libc.syscall(SYS_BPF, BPF_PROG_GET_FD_BY_ID, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd >= 0:
        os.close(fd)
        return True
    assert ctypes.get_errno() == errno.ENOENT, os.strerror(ctypes.get_errno())
    return False


# ----------------------------------------------------------------- running top

class Top:
    """`python -m pmemtrace top ARGS`, stdout lines collected by a thread."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([PYTHON, "-m", "pmemtrace", "top", *map(str, args)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.progs = set()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def frame(self, timeout=30):
        line = self.lines.get(timeout=timeout)
        if line is None:
            return None
        self.progs |= prog_ids_of(self.proc.pid)
        return json.loads(line)

    def rest(self, timeout=60):
        frames = []
        while True:
            f = self.frame(timeout)
            if f is None:
                break
            frames.append(f)
        self.proc.wait(timeout=timeout)
        return frames

    def finish(self, timeout=60):
        frames = self.rest(timeout)
        err = self.proc.stderr.read()
        return frames, self.proc.returncode, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def assert_unloaded(top, grace=10.0):
    """After top exits its programs go away; the kernel frees a detached program after an RCU
    grace period (seen: still listed right after exit, under CI load), so allow a few seconds."""
    assert top.progs, "top held no BPF program while it ran"
    deadline = time.monotonic() + grace
    while [p for p in top.progs if prog_exists(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in top.progs if prog_exists(p)] == []


def rows_of(frames, pid):
    return [r for f in frames for r in f["processes"] if r["pid"] == pid]


def start_workload(binary, *args):
    w = subprocess.Popen([binary, *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return w


def read_ranges(w):
    ranges = {}
    while True:
        line = w.stdout.readline()
        assert line, "workload ended early"
        parts = line.split()
        if parts[0] in ("thp", "small"):
            ranges[parts[0]] = (int(parts[1], 16), int(parts[2], 16))
        if parts[0] == "ready":
            return ranges


# ----------------------------------------------------------------- tests

@pytest.mark.parametrize("mode", ["default", "exact"])
def test_workload_rows_sum_to_its_faults(bins, mode):
    extra = ["--exact"] if mode == "exact" else []
    top = Top(1, 7, "--json", *extra)
    try:
        first = top.frame()
        assert first["lost_events"] == 0
        w = start_workload(bins["top_thp"], "-")
        read_ranges(w)
        frames = [first, top.frame(), top.frame()]
        w.stdin.close()
        w.wait()
        more, rc, err = top.finish()
    finally:
        top.kill()
    assert rc == 0, err
    frames += more
    rows = rows_of(frames, w.pid)
    assert sum(r["huge_faults"] for r in rows) == 32
    assert sum(r["faults"] or 0 for r in rows) - 32 >= 4096
    assert all(f["lost_events"] == 0 for f in frames)
    for f in frames:
        for r in f["processes"]:
            assert {"pid", "comm", "faults", "huge_faults", "fallbacks"} <= set(r)
    assert_unloaded(top)


@pytest.mark.parametrize("mode", ["default", "exact"])
def test_p_attributes_to_the_right_vmas(bins, mode):
    extra = ["--exact"] if mode == "exact" else []
    w = start_workload(bins["top_thp"], "-", "gate")
    try:
        assert w.stdout.readline().strip() == "mapped"
        top = Top(1, 30, "--json", "-p", w.pid, *extra)
        first = top.frame()
        w.stdin.write("go\n")
        w.stdin.flush()
        ranges = read_ranges(w)
        frames = [first, top.frame(), top.frame(), top.frame()]
        w.stdin.close()
        w.wait()
        frames += top.rest()
        rc, err = top.proc.returncode, top.proc.stderr.read()
    finally:
        top.kill()
        if w.poll() is None:
            w.kill()
    # the process went away: one line saying so, ProcessExited's exit code
    from pmemtrace.errors import ProcessExited
    assert rc == ProcessExited.exit_code
    assert err.strip().splitlines() == [f"pmemtrace: pid {w.pid} exited"]

    def vma_sum(rng, key):
        return sum(v[key] for f in frames for v in f["vmas"] if (v["start"], v["end"]) == rng)
    assert vma_sum(ranges["thp"], "huge_faults") == 32
    # faults: page faults counted by the pid-filtered page_fault_user program in both modes
    # (one per PMD fault); what smaps saw become resident is resident_pages_gained
    assert vma_sum(ranges["thp"], "faults") == 32
    assert vma_sum(ranges["thp"], "resident_pages_gained") == 32
    assert vma_sum(ranges["small"], "huge_faults") == 0
    assert vma_sum(ranges["small"], "faults") == 4096
    assert sum(r["huge_faults"] for r in rows_of(frames, w.pid)) == 32
    assert all(f["lost_events"] == 0 for f in frames)
    assert_unloaded(top)


def run_short_lived(bins, extra):
    """Frames of `top 0.5 3` after its first one: the workload starts right after the first
    frame, faults for ~0.1 s and exits, all within those two short intervals."""
    top = Top(0.5, 3, "--json", *extra)
    try:
        top.frame()
        w = start_workload(bins["top_thp"], 0)
        w.communicate(timeout=30)
        frames, rc, err = top.finish()
    finally:
        top.kill()
    assert rc == 0, err
    return top, w.pid, frames


@pytest.mark.parametrize("mode", ["default", "exact"])
def test_process_exiting_mid_interval_keeps_its_counts(bins, mode):
    """A process that faults 64 MiB of THP and exits between two samples.

    In the default mode what /proc could not see goes to "(exited)"; that row holds
    every THP fault of processes that exited, so it is exact only while no other
    process THP-faults and exits: an attempt counts when the system-wide
    thp_fault_alloc over the run is exactly the workload's 32 (up to 10 attempts)."""
    extra = ["--exact"] if mode == "exact" else []
    for attempt in range(10):
        top, pid, frames = run_short_lived(bins, extra)
        assert_unloaded(top)
        if sum(f["system"]["vmstat"]["thp_fault_alloc"] for f in frames) == 32:
            break
    else:
        cannot_run("another process kept faulting THPs during every attempt (system not quiet)")
    own = sum(r["huge_faults"] for r in rows_of(frames, pid))
    exited = sum(r["huge_faults"] for f in frames for r in f["processes"] if r["comm"] == "(exited)")
    if mode == "exact":
        assert own == 32 and exited == 0        # BPF counted it by tgid; exit does not lose it
        assert rows_of(frames, pid)[-1]["exited"] is True
    else:
        assert own + exited == 32               # whatever /proc could not see went to "(exited)"


def test_hostile_comm_names_render_as_text(bins):
    names = ["[red]x", "\x1b[2Jz"]
    ws = [subprocess.Popen([bins["top_comm"], n, "30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE) for n in names]
    try:
        for w in ws:
            w.stdout.readline()
        js = subprocess.run([PYTHON, "-m", "pmemtrace", "top", "1", "2", "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
        plain = subprocess.run([PYTHON, "-m", "pmemtrace", "top", "1", "2", "-r", "1000"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
    finally:
        for w in ws:
            w.stdin.close()
            w.wait()
    assert js.returncode == 0 and plain.returncode == 0
    comms = {r["comm"] for line in js.stdout.splitlines() for r in json.loads(line)["processes"]}
    assert set(names) <= comms
    assert "\x1b" not in plain.stdout
    assert "[red]x" in plain.stdout and "\\x1b[2Jz" in plain.stdout


def tmux(*args, check=True):
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=check)


def wait_for_screen(session, needle, timeout=20):
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session).stdout
        if needle in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not on screen:\n{screen}")


def test_interactive_screen_in_tmux(bins, tmp_path):
    if shutil.which("tmux") is None:
        cannot_run("needs tmux")
    session = f"pmemtrace-top-{os.getpid()}"
    rcfile = tmp_path / "rc"
    hostile = subprocess.Popen([bins["top_comm"], "[red]x", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    hostile.stdout.readline()
    cmd = f"cd {ROOT} && {PYTHON} -m pmemtrace top 1 -r 200 -s pid; echo $? > {rcfile}; sleep 60"
    tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "300", cmd)
    try:
        screen = wait_for_screen(session, "THP enabled=")
        assert "pmemtrace top" in screen and "sort: pid" in screen
        screen = wait_for_screen(session, "[red]x")          # markup in a comm is shown as text
        assert "\x1b" not in screen
        tmux("send-keys", "-t", session, ">")
        wait_for_screen(session, "sort: comm")
        tmux("send-keys", "-t", session, "r")
        wait_for_screen(session, "sort: comm ^")
        # Enter on the only row (--comm keeps just the workload) shows its VMAs; Esc goes back
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while not rcfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rcfile.read_text().strip() == "0"
        rcfile.unlink()
        tmux("kill-session", "-t", session, check=False)
        cmd = f"cd {ROOT} && {PYTHON} -m pmemtrace top 1 --comm [red]x; echo $? > {rcfile}; sleep 60"
        tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "100", cmd)
        wait_for_screen(session, "[red]x")
        tmux("send-keys", "-t", session, "Enter")
        screen = wait_for_screen(session, "BACKING")
        assert "START" in screen and "[heap]" in screen, screen
        tmux("send-keys", "-t", session, "Escape")
        deadline = time.monotonic() + 10
        while "BACKING" in tmux("capture-pane", "-p", "-t", session).stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "BACKING" not in tmux("capture-pane", "-p", "-t", session).stdout
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while not rcfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rcfile.read_text().strip() == "0"
        # the terminal is restored: the shell's echo is back and the alternate screen is gone
        screen = tmux("capture-pane", "-p", "-t", session).stdout
        assert "THP enabled=" not in screen
    finally:
        tmux("kill-session", "-t", session, check=False)
        hostile.stdin.close()
        hostile.wait()


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.parametrize("mode", ["default", "exact"])
def test_fork_churn(bins, mode):
    extra = ["--exact"] if mode == "exact" else []
    top = Top(1, 33, "--json", *extra)
    try:
        top.frame()
        churn = subprocess.Popen([bins["top_churn"], "200", "30"], stdout=subprocess.PIPE, text=True)
        frames = [top.frame() for _ in range(3)]
        rss_early = vm_rss_kib(top.proc.pid)
        out, _ = churn.communicate(timeout=60)
        rss_late = vm_rss_kib(top.proc.pid)
        more, rc, err = top.finish()
    finally:
        top.kill()
    frames += more
    assert churn.returncode == 0 and int(out.split()[1]) > 1000
    assert rc == 0, err
    assert [f["lost_events"] for f in frames] == [0] * len(frames)
    assert rss_late - rss_early < 16 * 1024, (rss_early, rss_late)
    assert_unloaded(top)


def raw_tracepoints_of(pid):
    """tp_name of every raw tracepoint link held by pid (fdinfo)."""
    names = set()
    for name in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{name}") as f:
                for line in f:
                    if line.startswith("tp_name:"):
                        names.add(line.split()[1])
        except OSError:
            pass
    return names


@pytest.mark.parametrize("mode", ["default", "exact"])
def test_only_exact_mode_probes_the_fault_path(bins, mode):
    """Default top: no BPF program on the page-fault path (per-fault tracepoints), only rare
    paths; --exact: the two raw tracepoints that attribute THP faults by address."""
    from pmemtrace import loader
    from pmemtrace import interval
    extra = ["--exact"] if mode == "exact" else []
    t = Top(1, 3, "--json", *extra)
    try:
        t.frame()
        raw = raw_tracepoints_of(t.proc.pid)
        t.finish()
    finally:
        t.kill()
    usable, _, _ = loader.plan(interval.features_for(mode == "exact", None))
    classic = {a.id for a in usable if not a.raw}
    fault_path = {"exceptions:page_fault_user", "exceptions:page_fault_kernel", "memcg:count_memcg_events"}
    assert not classic & fault_path
    if mode == "default":
        assert raw == set()
    else:
        assert raw == {"page_fault_user", "count_memcg_events"}
    assert_unloaded(t)


BPF_TASK_FD_QUERY = 20
BPF_FD_TYPES = {0: "raw_tracepoint", 1: "tracepoint", 2: "kprobe", 3: "kretprobe", 4: "uprobe", 5: "uretprobe"}


def bpf_attachments_of(pid):
    """(kind, name) of every BPF attachment held through pid's fds: bpf(BPF_TASK_FD_QUERY),
    what bpftool perf shows (tracepoint, raw_tracepoint, kprobe names)."""
    out = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        buf = ctypes.create_string_buffer(256)
        attr = (ctypes.c_uint8 * 48)()
        ctypes.c_uint32.from_buffer(attr, 0).value = pid
        ctypes.c_uint32.from_buffer(attr, 4).value = int(name)
        ctypes.c_uint32.from_buffer(attr, 12).value = len(buf)
        ctypes.c_uint64.from_buffer(attr, 16).value = ctypes.addressof(buf)
        if _libc.syscall(SYS_BPF, BPF_TASK_FD_QUERY, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
            kind = BPF_FD_TYPES.get(ctypes.c_uint32.from_buffer(attr, 28).value, "?")
            out.add((kind, buf.value.decode()))
    return out


@pytest.mark.parametrize("mode", ["default", "syscalls"])
def test_syscall_tracepoints_only_with_the_flag(mode):
    """Default top puts no program on any syscall tracepoint (each one slows every syscall of
    every task) where the kernel has no kprobes; --syscalls attaches exactly the six, and
    kprobes on the syscall functions replace them where the kernel has kprobes."""
    from pmemtrace import loader
    extra = ["--syscalls"] if mode == "syscalls" else []
    t = Top(1, 2, "--json", *extra)
    try:
        first = t.frame()
        held = bpf_attachments_of(t.proc.pid)
        frames, rc, err = t.finish()
    finally:
        t.kill()
    assert rc == 0, err
    assert first["initial"] is True
    syscall_tps = {n for k, n in held if k == "tracepoint" and n.startswith("sys_")}
    kprobes = {n for k, n in held if k in ("kprobe", "kretprobe")}
    assert {n for k, n in held if k == "tracepoint" and n.startswith("dax_")} >= {"dax_pmd_fault_done"}
    if loader.syscall_kprobes()[0]:
        assert syscall_tps == set() and {"__x64_sys_mmap", "__x64_sys_mincore"} <= kprobes
    elif mode == "default":
        assert syscall_tps == set() and kprobes == set()
        rows = [r for f in frames for r in f["processes"]]
        assert rows and all(r["madvise_calls"] is None and r["map_sync_refusals"] is None for r in rows)
    else:
        assert syscall_tps == {"sys_enter_mmap", "sys_exit_mmap", "sys_enter_munmap", "sys_enter_madvise",
                               "sys_enter_mincore", "sys_exit_mincore"}
        rows = [r for f in frames for r in f["processes"]]
        assert rows and all(r["madvise_calls"] is not None for r in rows if not r["exited"])
    assert_unloaded(t)
