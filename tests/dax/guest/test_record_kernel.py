"""Issue 10's kernel case (c), the guest half: `pmemtrace record -p` of one workload holding
anonymous THP and fs-dax MAP_SYNC memory (tests/workloads/kernel_regress.c), run the same way
on every kernel. The record file goes to the run's out directory as record-kernel.db; the host
(tests/dax/test_record_kernel_diff.py) diffs the 6.1 one against the newest with `pmemtrace diff`.

Here, against the kernel's own truth: the recording finished cleanly, its last snapshot holds
the four VMAs at the addresses the workload printed, with RSS equal to the bytes written and
the anonymous huge bytes equal to smaps' AnonHugePages; the MAP_SYNC VMAs are fs-dax, VM_SYNC.
"""
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from guestlib import CHECKOUT, parse_kv

MiB = 1 << 20
SIZES = {"anon": 32 * MiB, "sync": 16 * MiB, "pte_a": 4 * MiB, "pte_b": 4 * MiB}


def anon_huge_pages(pid, start):
    """smaps' AnonHugePages of the VMA starting at start, in bytes."""
    text = open(f"/proc/{pid}/smaps").read()
    block = text.split(f"{start:x}-", 1)[1].split("VmFlags", 1)[0]
    return int(re.search(r"AnonHugePages:\s+(\d+) kB", block).group(1)) * 1024


class Lines:
    """A pipe's lines, read by a thread, waited for with a deadline (a hang fails with what was seen)."""

    def __init__(self, pipe):
        self.q, self.seen = queue.Queue(), []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe):
        for line in pipe:
            self.q.put(line)
        self.q.put(None)

    def until(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            self.seen.append(line)
            if line.startswith(prefix):
                return line


def where(pid):
    """Where a process sits in the kernel (for a hang's failure text)."""
    out = []
    for name in ("wchan", "stack", "status"):
        try:
            text = open(f"/proc/{pid}/{name}").read()
        except OSError as e:
            text = str(e)
        out.append(f"{name}: {text if name != 'status' else text.splitlines()[2]}")
    return "; ".join(out)


def progress(msg):
    line = f"[{time.monotonic():.1f}] {msg}"
    print(line, flush=True)
    if os.path.isdir("/out"):
        with open("/out/record-kernel-progress.log", "a") as f:
            f.write(line + "\n")


def test_record_kernel_workload(setup_facts, workload_dir, tmp_path):
    if "fsdax-ext4" not in setup_facts:
        pytest.fail("stage2 did not set up fs-dax ext4 (see guest.log)")
    mnt = setup_facts["fsdax-ext4"][1]
    exe = str(workload_dir / "kernel_regress")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, str(CHECKOUT / "tests/workloads/kernel_regress.c")], check=True)
    db = tmp_path / "record-kernel.db"        # SQLite on the local overlay, copied to /out at the end
    w = subprocess.Popen([exe, mnt], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    out = Lines(w.stdout)
    rec = None

    def hung(what, proc_lines=None):
        info = f"{what}: workload {where(w.pid)}; seen {out.seen}"
        if rec is not None:
            info += f"; record {where(rec.pid)}; its stderr {proc_lines.seen if proc_lines else ''}"
        progress(info)
        pytest.fail(info, pytrace=False)
    try:
        progress("workload started")
        if out.until("MAPPED", 120) is None:
            hung("no MAPPED")
        vmas = {}
        for line in out.seen:
            if line.startswith("VMA "):
                kv = parse_kv(line)
                vmas[kv["name"]] = (int(kv["addr"], 16), int(kv["len"]))
        assert set(vmas) == set(SIZES), f"workload: {vmas}"
        env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
        rec = subprocess.Popen([sys.executable, "-m", "pmemtrace", "record", "-o", str(db), "-p", str(w.pid),
                                "--interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=CHECKOUT, env=env)
        err = Lines(rec.stderr)
        if err.until("Recording to", 240) is None:     # printed once the probes are attached
            hung("record did not start", err)
        progress("record attached")
        w.stdin.write("go\n")
        w.stdin.flush()
        if out.until("TOUCHED", 120) is None:
            hung("no TOUCHED", err)
        progress("touched")
        time.sleep(3)                              # intervals after the touches: their snapshot
        anon_huge = anon_huge_pages(w.pid, vmas["anon"][0])
        w.stdin.close()
        w.wait(timeout=60)
        progress("workload exited")
        try:
            rec.wait(timeout=60)                   # record stops once its -p process has exited
        except subprocess.TimeoutExpired:
            hung("record did not stop after its process exited", err)
        err.until("\0", 5)
        assert rec.returncode == 0, f"record rc={rec.returncode}\n{''.join(err.seen)[-3000:]}"
        progress(f"record done: {err.seen[-1:]}")
    finally:
        if w.poll() is None:
            w.kill()
        if rec is not None and rec.poll() is None:
            rec.kill()
        for name in ("kr-sync.dat", "kr-pte.dat"):
            if os.path.exists(f"{mnt}/{name}"):
                os.unlink(f"{mnt}/{name}")
    if os.path.isdir("/out"):
        shutil.copy(db, "/out/record-kernel.db")
        with open("/out/record-kernel-vmas.json", "w") as f:
            json.dump({"kernel": os.uname().release, "vmas": vmas, "anon_huge_pages": anon_huge}, f)

    sys.path.insert(0, str(CHECKOUT))
    from pmemtrace import store
    with store.Reader(str(db)) as r:
        doc = r.report_at(None, w.pid)
        assert r.interval_count() >= 3
    by_start = {v["start"]: v for v in doc["vmas"]}
    for name, (start, size) in vmas.items():
        assert start in by_start, f"{name} at {start:#x} not in the last snapshot"
        v = by_start[start]
        assert v["end"] - v["start"] == size == SIZES[name]
        assert v["rss_bytes"] == size, f"{name}: RSS {v['rss_bytes']} != {size} written"
    anon = by_start[vmas["anon"][0]]
    assert anon["huge_bytes"] == anon_huge
    for name in ("sync", "pte_b"):
        v = by_start[vmas[name][0]]
        assert (v["dax"], v["vm_sync"]) == ("fsdax", True)
    assert (by_start[vmas["pte_a"][0]]["dax"], by_start[vmas["pte_a"][0]]["vm_sync"]) == ("fsdax", False)
