"""Default `pmemtrace top` on a kernel with kprobes (Debian's stock kernels): mmap / madvise /
mincore are watched through kprobes on the syscall functions, not syscall tracepoints, and
the counts stay exact (tests/workloads/top_syscalls.c makes a known number of each call).

Also prints (not asserts: speed is for bench/) a getppid loop's throughput untraced, under
default top, and under one enabled syscall tracepoint, so the guest log shows what the
kprobe path saves; written to /out/top-kprobes-ratio.txt when the host share is there."""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from guestlib import CHECKOUT, TraceInstance

MINCORE, MADVISE, MAPSYNC = 17, 5, 3


@pytest.fixture(scope="module")
def bins(workload_dir):
    out = {}
    for name in ("top_syscalls", "top_toucher"):
        out[name] = str(workload_dir / name)
        if not os.path.exists(out[name]):
            subprocess.run(["gcc", "-O2", "-Wall", "-o", out[name], str(CHECKOUT / "tests" / "workloads" / f"{name}.c")],
                           check=True)
    return out


def env():
    return dict(os.environ, PYTHONPATH=str(CHECKOUT))


def start_top(*extra):
    top = subprocess.Popen([sys.executable, "-m", "pmemtrace", "top", "1", "--json", *extra], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=CHECKOUT, env=env())
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in top.stdout] + [lines.put("")], daemon=True).start()

    def frame():
        ln = lines.get(timeout=600)
        assert ln, f"top ended early: rc={top.wait()} {top.stderr.read()[-3000:]}"
        return json.loads(ln)
    return top, frame


def stop(top):
    top.send_signal(signal.SIGTERM)
    return top.wait(timeout=120)


def test_kprobes_detected_and_used_by_default():
    sys.path.insert(0, str(CHECKOUT))
    from pmemtrace import loader
    ok, why = loader.syscall_kprobes()
    assert ok, why
    assert why.startswith("kprobes on __x64_sys_mmap, ")
    text = subprocess.run([sys.executable, "-m", "pmemtrace", "top", "--ebpf"], capture_output=True, text=True,
                          cwd=CHECKOUT, env=env(), check=True).stdout
    assert "on_ksys_enter_mincore" in text and "on_ksys_exit_mmap" in text
    assert "on_sys_enter_" not in text          # no syscall tracepoint program at all


def test_default_top_counts_are_exact(bins, tmp_path):
    w = subprocess.Popen([bins["top_syscalls"], str(MINCORE), str(MADVISE), str(MAPSYNC), str(tmp_path / "f")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    top, rc = None, None
    try:
        assert w.stdout.readline().strip() == "ready"
        top, frame = start_top()
        frames = [frame()]                     # the initial frame: probes attached
        w.stdin.write("go\n")
        w.stdin.flush()
        done = w.stdout.readline().split()
        finished = time.time()
        assert done == ["done", f"refused={MAPSYNC}"]
        while frames[-1]["time"] <= finished + 0.5:
            frames.append(frame())
    finally:
        if top is not None:
            rc = stop(top)
        w.stdin.close()
        w.wait(timeout=60)
    assert rc == 0
    rows = [r for f in frames for r in f["processes"] if r["pid"] == w.pid]
    assert sum(r["madvise_calls"] or 0 for r in rows) == MADVISE
    assert sum(r["map_sync_refusals"] or 0 for r in rows) == MAPSYNC
    assert sum(r["mincore"]["calls"] for r in rows if "mincore" in r) == MINCORE
    assert sum(r["mincore"]["bytes"] for r in rows if "mincore" in r) == MINCORE << 20
    assert sum(r["mincore"]["pages_resident"] for r in rows if "mincore" in r) == MINCORE * 128
    assert all(r["madvise_calls"] is not None for r in rows)        # watched: numbers, not null
    assert sum(f["lost_events"] for f in frames) == 0


def getppid_rate(toucher, seconds=3):
    out = subprocess.run([toucher, "syscall", str(seconds)], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), int(out[1]) / max(float(out[2]), 1e-6)


def test_getppid_ratio_printed(bins):
    """untraced / default top (kprobes) / one syscall tracepoint enabled, alternated twice."""
    toucher = bins["top_toucher"]
    getppid_rate(toucher, 1)
    rows, codes = [], []
    for _ in range(2):
        base = getppid_rate(toucher)
        top, frame = start_top()
        try:
            frame()
            traced = getppid_rate(toucher)
        finally:
            codes.append(stop(top))
        t = TraceInstance(f"pmtsys{os.getpid()}", ["syscalls/sys_enter_mincore"])
        try:
            tp = getppid_rate(toucher)
        finally:
            t.close()
        after = getppid_rate(toucher)
        mid = [(b + a) / 2 for b, a in zip(base, after)]
        rows.append((traced[0] / mid[0], traced[1] / mid[1], tp[0] / mid[0], tp[1] / mid[1], mid[0]))
    text = "\n".join(f"{os.uname().release}: getppid untraced {m:.0f}/s; default top (kprobes) wall {a:.3f} "
                     f"cpu {b:.3f}; one syscall tracepoint wall {c:.3f} cpu {d:.3f}" for a, b, c, d, m in rows)
    print(text)
    if os.path.isdir("/out"):
        with open("/out/top-kprobes-ratio.txt", "w") as f:
            f.write(text + "\n")
    assert codes == [0, 0]          # top detached cleanly on SIGTERM each time
