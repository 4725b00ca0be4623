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
import re
import shutil
import subprocess
import sys
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


def test_record_kernel_workload(setup_facts, workload_dir, tmp_path):
    if "fsdax-ext4" not in setup_facts:
        pytest.fail("stage2 did not set up fs-dax ext4 (see guest.log)")
    mnt = setup_facts["fsdax-ext4"][1]
    exe = str(workload_dir / "kernel_regress")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, str(CHECKOUT / "tests/workloads/kernel_regress.c")], check=True)
    db = tmp_path / "record-kernel.db"        # SQLite on the local overlay, copied to /out at the end
    w = subprocess.Popen([exe, mnt], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    rec = None
    try:
        vmas = {}
        for line in w.stdout:
            if line.startswith("VMA "):
                kv = parse_kv(line)
                vmas[kv["name"]] = (int(kv["addr"], 16), int(kv["len"]))
            if line.startswith("MAPPED"):
                break
        assert set(vmas) == set(SIZES), f"workload: {vmas} {w.stderr.read() if w.poll() is not None else ''}"
        env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
        rec = subprocess.Popen([sys.executable, "-m", "pmemtrace", "record", "-o", str(db), "-p", str(w.pid),
                                "--interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=CHECKOUT, env=env)
        first = rec.stderr.readline()              # printed once the probes are attached
        assert first.startswith("Recording to"), f"record: {first}{rec.stderr.read()[-3000:]}"
        w.stdin.write("go\n")
        w.stdin.flush()
        assert w.stdout.readline().startswith("TOUCHED")
        time.sleep(3)                              # intervals after the touches: their snapshot
        anon_huge = anon_huge_pages(w.pid, vmas["anon"][0])
        w.stdin.close()
        w.wait(timeout=60)
        _, err = rec.communicate(timeout=120)      # record stops once its -p process has exited
        assert rec.returncode == 0, f"record rc={rec.returncode}\n{err[-3000:]}"
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
