"""diff and record on real regressions (root; run under the shared lock):

(a) policy: the same workload (64 MiB anonymous, no madvise) under THP enabled=always, then
    under enabled=madvise: diff names the group that lost its huge pages and the policy line.
(b) alignment: release A maps one aligned 64 MiB MADV_HUGEPAGE arena, release B the same bytes
    as 32 misaligned 2 MiB mappings (the cactusBSSN pattern): VMA count up, coverage down, in
    exact bytes.
And `record` with the real probes, killed with SIGKILL: replay shows every committed interval.
The kernel's own smaps is the truth every number is checked against.
"""
import json
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from pmemtrace import procfs
from testkit import ROOT, run_cli

pytestmark = pytest.mark.live
MiB = 1 << 20
THP = "/sys/kernel/mm/transparent_hugepage"


def smaps_anon_huge(pid, start, end):
    """AnonHugePages the kernel reports for the VMAs inside [start, end)."""
    return sum(b.get("AnonHugePages") for b in procfs.read_smaps(pid) if start <= b.map.start and b.map.end <= end)


class Workload:
    def __init__(self, exe, mode):
        self.p = subprocess.Popen([exe, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        word, start, end = self.p.stdout.readline().split()
        assert word == "ready"
        self.pid, self.start, self.end = self.p.pid, int(start), int(end)

    def stop(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)


@pytest.fixture
def thp_setting():
    """Set THP sysfs files for a test; the originals are restored whatever happens."""
    saved = {}

    def set_(name, value):
        path = f"{THP}/{name}"
        if name not in saved:
            with open(path) as f:
                saved[name] = f.read().split("[")[1].split("]")[0]
        with open(path, "w") as f:
            f.write(value)
    yield set_
    for name, value in saved.items():
        with open(f"{THP}/{name}", "w") as f:
            f.write(value)


def report_json(pid, path):
    r = run_cli("report", pid, "--json", check=True)
    path.write_text(r.stdout)
    return json.loads(r.stdout)


def test_a_policy_always_to_madvise(build_workload, thp_setting, tmp_path):
    exe = build_workload("diff_arena")
    thp_setting("defrag", "always")           # both runs: the allocation may compact, so always means huge
    thp_setting("enabled", "always")
    w = Workload(exe, "plain")
    try:
        base = report_json(w.pid, tmp_path / "base.json")
        assert smaps_anon_huge(w.pid, w.start, w.end) == 64 * MiB
    finally:
        w.stop()
    thp_setting("enabled", "madvise")
    w = Workload(exe, "plain")
    try:
        assert smaps_anon_huge(w.pid, w.start, w.end) == 0
        r = run_cli("diff", tmp_path / "base.json", w.pid, "--fail-on-drop", "5", "--json")
        text = run_cli("diff", tmp_path / "base.json", w.pid, "--fail-on-drop", "5")
    finally:
        w.stop()
    assert r.returncode == 12, r.stderr
    d = json.loads(r.stdout)
    g = d["groups"][0]
    assert g["key"] == "anon rw-p" and g["regression"]
    assert g["base"]["huge_bytes"] - g["new"]["huge_bytes"] == 64 * MiB
    assert g["new"]["huge_bytes"] == 0 and g["base"]["vmas"] == g["new"]["vmas"]
    assert d["base"]["source"] == "report" and d["new"]["source"] == "live"
    assert [p for p in d["policy"] if p["key"].startswith("thp/")] == [
        {"key": "thp/enabled", "base": "always", "new": "madvise"}]
    assert base["policy"]["thp/enabled"] == "always"
    assert text.returncode == 12
    lines = text.stdout.splitlines()
    assert lines[0].startswith("REGRESSION: huge share fell more than 5 points in: totals, anon rw-p")
    assert "  thp/enabled: always -> madvise" in lines


def test_b_alignment_many_small_misaligned_mappings(build_workload, tmp_path):
    exe = build_workload("diff_arena")
    a = Workload(exe, "aligned")
    b = Workload(exe, "split")
    try:
        report_json(a.pid, tmp_path / "a.json")
        report_json(b.pid, tmp_path / "b.json")
        truth_a = smaps_anon_huge(a.pid, a.start, a.end)
        truth_b = smaps_anon_huge(b.pid, b.start, b.end)
    finally:
        a.stop()
        b.stop()
    assert (truth_a, truth_b) == (64 * MiB, 0)
    r = run_cli("diff", tmp_path / "a.json", tmp_path / "b.json", "--fail-on-drop", "5", "--json")
    assert r.returncode == 12, r.stderr
    d = json.loads(r.stdout)
    g = d["groups"][0]
    assert g["key"] == "anon rw-p MADV_HUGEPAGE"
    assert (g["base"]["vmas"], g["new"]["vmas"]) == (1, 32)
    assert (g["base"]["huge_bytes"], g["new"]["huge_bytes"]) == (truth_a, truth_b)
    assert (g["base"]["small_bytes"], g["new"]["small_bytes"]) == (0, 64 * MiB)
    assert (g["base"]["misaligned_vmas"], g["new"]["misaligned_vmas"]) == (0, 32)
    assert d["totals"]["huge_bytes"]["delta"] == -64 * MiB
    assert d["totals"]["vmas"]["delta"] == 31
    assert run_cli("diff", tmp_path / "b.json", tmp_path / "b.json", "--fail-on-drop", "0").returncode == 0


def test_record_with_probes_kill_9_then_replay_and_diff(build_workload, tmp_path):
    exe = build_workload("diff_arena")
    w = Workload(exe, "aligned")
    out = tmp_path / "run.db"
    try:
        rec = subprocess.Popen([sys.executable, "-m", "pmemtrace", "record",
                                "-o", str(out), "-p", str(w.pid), "--interval", "0.5"],
                               cwd=str(ROOT), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        committed = 0
        while time.monotonic() < deadline and committed < 6:
            time.sleep(0.2)
            if out.exists():
                try:
                    db = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
                    committed = db.execute("select count(*) from intervals").fetchone()[0]
                    db.close()
                except sqlite3.Error:
                    pass
            assert rec.poll() is None, rec.stderr.read()
        rec.send_signal(signal.SIGKILL)
        rec.wait(timeout=10)
        r = run_cli("replay", out, "--json", check=True)
        frames = [json.loads(line) for line in r.stdout.splitlines()]
        db = sqlite3.connect(str(out))
        assert len(frames) == db.execute("select count(*) from intervals").fetchone()[0] >= 6
        row = [p for p in frames[-1]["processes"] if p["pid"] == w.pid][0]
        assert row["huge_bytes"] == smaps_anon_huge(w.pid, w.start, w.end) == 64 * MiB
        assert frames[-1]["pid"] == w.pid and frames[-1]["vmas"]          # top -p's per-VMA rows
        d = run_cli("diff", out, w.pid, "--json", "--fail-on-drop", "0")
        assert d.returncode == 0, d.stdout + d.stderr
        assert json.loads(d.stdout)["base"]["source"] == "record"
    finally:
        w.stop()
