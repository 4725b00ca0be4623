"""`pmemtrace top -p PID --json` against real DAX faults: per-VMA DAX PMD outcomes
(NEEDDSYNC, PMD, fallback) summed over its interval frames equal the fs_dax tracepoint's
own counts for each VMA, on ext4 and xfs (tests/workloads/dax_causes.c, one process)."""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from guestlib import CHECKOUT, HeldWorkload, TraceInstance, parse_kv

FILESYSTEMS = ["ext4", "xfs"]
SCENARIOS = ["sync_first", "sync_again", "misaligned", "pte_setup", "pte_present", "outside", "past_eof",
             "cow", "nohuge"]
# top's dax_faults keys (aggregate.DAX_OUTCOMES) for dax_pmd_fault_done results
PMD_KEYS = {"NEEDDSYNC": "pmd_needdsync", "NOPAGE": "pmd_huge", "FALLBACK": "pmd_fallback"}


@pytest.fixture(scope="session")
def top_observed(setup_facts, dax_causes):
    dirs = {}
    for fs in FILESYSTEMS:
        if f"fsdax-{fs}" not in setup_facts:
            pytest.fail(f"stage2 did not set up fs-dax {fs} (see guest.log)")
        dirs[fs] = os.path.join(setup_facts[f"fsdax-{fs}"][1], "top")
        os.makedirs(dirs[fs], exist_ok=True)
    t = None
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    try:
        with HeldWorkload(dax_causes, *dirs.values(), waits=True) as w:
            t = TraceInstance(f"pmttop{os.getpid()}", ["fs_dax/dax_pmd_fault_done"], pid=w.pid)
            top = subprocess.Popen([sys.executable, "-m", "pmemtrace", "top", "1", "-p", str(w.pid), "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=CHECKOUT, env=env)
            lines = queue.Queue()
            reader = threading.Thread(target=lambda: [lines.put(ln) for ln in top.stdout] + [lines.put("")],
                                      daemon=True)
            reader.start()
            frames = []

            def frame():
                ln = lines.get(timeout=600)
                assert ln, f"top ended early: rc={top.wait()} {top.stderr.read()[-3000:]}"
                frames.append(json.loads(ln))
                return frames[-1]
            try:
                frame()                            # the first frame: the probes are attached
                w.go()                             # returns once the workload printed TOUCHED
                touched = time.time()
                # a frame's time is when /proc was sampled, just after the probe maps were read
                # (the epoch flipped): the first frame sampled after TOUCHED may have flipped
                # before it; the frame after that one surely covers every fault
                while frame()["time"] <= touched:
                    pass
                frame()
            finally:
                top.send_signal(signal.SIGTERM)
                top.wait(timeout=60)
            vmas = [parse_kv(ln) for ln in w.all_lines if ln.startswith("VMA ")]
        sums, truth = {}, {}
        for kv in vmas:
            fs = next(f for f, d in dirs.items() if d == kv["dir"])
            a, n = int(kv["addr"], 16), int(kv["len"])
            c = Counter()
            for fr in frames:
                for v in fr.get("vmas", []):
                    if v["start"] == a:
                        c.update(v.get("dax_faults", {}))
            sums[(fs, kv["name"])] = c
            truth[(fs, kv["name"])] = t.in_range("dax_pmd_fault_done", a, a + n, comm="dax_causes")
        lost = sum(fr.get("lost_events", 0) for fr in frames)
    finally:
        if t:
            t.close()
    for d in dirs.values():
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    return sums, truth, lost


def test_top_lost_nothing(top_observed):
    assert top_observed[2] == 0


@pytest.mark.parametrize("fs", FILESYSTEMS)
@pytest.mark.parametrize("name", SCENARIOS)
def test_top_dax_pmd_outcomes_per_vma(top_observed, fs, name):
    sums, truth, _ = top_observed
    got = {k: sums[(fs, name)].get(k, 0) for k in PMD_KEYS.values()}
    want = {PMD_KEYS[r]: truth[(fs, name)].get(r, 0) for r in PMD_KEYS}
    assert set(truth[(fs, name)]) <= set(PMD_KEYS), dict(truth[(fs, name)])
    assert got == want
