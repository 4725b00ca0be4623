"""Live: THP collapses per VMA with the kernel's reason (report --duration, probes/collapse.c).

MADV_COLLAPSE of 4 PMD ranges, each with 16 never-touched pages: 4 collapses, 4 x 16 PTEs filled.
khugepaged with max_ptes_none=0 on a range holding one page per PMD: every scan fails with
exceed_none_pte; the count must equal the kernel's own trace of those scans (a tracefs instance,
filtered to the PFNs of that range), taken between MADV_HUGEPAGE and MADV_NOHUGEPAGE on it, both
inside the probes' window. Every sysfs knob touched is restored.
"""
import contextlib
import json
import os
import re
import struct
import subprocess
import sys
import time

import pytest

from testkit import ROOT

pytestmark = pytest.mark.live
KiB, MiB = 1 << 10, 1 << 20
THP = "/sys/kernel/mm/transparent_hugepage"
TRACING = "/sys/kernel/tracing"


def _read(path):
    with open(path) as f:
        text = f.read().strip()
    return text.split("[")[1].split("]")[0] if "[" in text else text


@contextlib.contextmanager
def knobs(values):
    old = {p: _read(p) for p in values}
    try:
        for p, v in values.items():
            with open(p, "w") as f:
                f.write(str(v))
        yield
    finally:
        for p, v in old.items():
            with open(p, "w") as f:
                f.write(v)


@contextlib.contextmanager
def trace_instance(event):
    inst = f"{TRACING}/instances/pmemtrace-collapse-test"
    os.mkdir(inst)
    try:
        with open(f"{inst}/events/{event}/enable", "w") as f:
            f.write("1")
        yield inst
    finally:
        with contextlib.suppress(OSError):
            with open(f"{inst}/events/{event}/enable", "w") as f:
                f.write("0")
        os.rmdir(inst)


def pfns(pid, start, end):
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // 4096 * 8)
        words = struct.unpack(f"={(end - start) // 4096}Q", f.read((end - start) // 4096 * 8))
    return {w & ((1 << 55) - 1) for w in words if w >> 63}


def test_madv_collapse_and_khugepaged_failures(build_workload):
    exe = build_workload("collapse_workload")
    settings = {f"{THP}/enabled": "madvise", f"{THP}/khugepaged/max_ptes_none": 0,
                f"{THP}/khugepaged/scan_sleep_millisecs": 100}
    with knobs(settings):
        w = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        report = None
        try:
            vmas = {}
            for line in w.stdout:
                if line.startswith("ready"):
                    break
                name, s, e = line.split()
                vmas[name] = (int(s), int(e))

            def cmd(c):
                w.stdin.write(c + "\n")
                w.stdin.flush()
                assert w.stdout.readline().split() == [c, "0"]
            sparse_pfns = pfns(w.pid, *vmas["sparse"])
            assert len(sparse_pfns) == 2
            report = subprocess.Popen([sys.executable, "-m", "pmemtrace", "report", str(w.pid), "--duration", "6",
                                       "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(50):              # bcc may warn on stderr before the probes are attached
                line = report.stderr.readline()
                if not line or "Tracing pid" in line:
                    break
            assert "Tracing pid" in line, line
            cmd("collapse")
            with trace_instance("huge_memory/mm_khugepaged_scan_pmd") as inst:
                cmd("hugepage")
                time.sleep(2)
                cmd("nohugepage")
                with open(f"{inst}/trace") as f:
                    trace = f.read()
            out, err = report.communicate(timeout=60)
            assert report.returncode == 0, err
        finally:
            if report is not None and report.poll() is None:
                report.kill()
            w.stdin.close()
            w.wait(timeout=10)
    truth = sum(1 for m in re.finditer(r"scan_pfn=0x([0-9a-f]+),.*status=(\w+)", trace)
                if int(m.group(1), 16) in sparse_pfns and m.group(2) == "exceed_none_pte")
    assert truth > 0, "khugepaged never scanned the sparse range in 2 s"
    data = json.loads(out)
    by = {d["start"]: d for d in data["vmas"]}
    madv, sparse = by[vmas["madv"][0]], by[vmas["sparse"][0]]
    assert madv["thp_collapses"] == 4
    assert madv["thp_collapse_filled_bytes"] == 4 * 16 * 4096
    assert madv["thp_collapse_failures"] == {}
    assert madv["huge_bytes"] == 8 * MiB                    # and the kernel mapped them huge
    assert sparse["thp_collapses"] == 0
    assert sparse["thp_collapse_failures"] == {"exceed_none_pte": truth}
    assert data["totals"]["thp_collapses"] == 4
    assert data["lost_events"] == 0
