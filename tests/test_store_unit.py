"""The record file: crash safety, change-only snapshots, bad files; and replay / diff on it.
The kill -9 test records a real process with top's Model and no probes (NoProbes); it drives a
THP workload, so it is in the live tier; tests/test_diff_live.py does the same with the probes."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pmemtrace import store
from pmemtrace.cli import cli
from pmemtrace.errors import BadInputFile
from pmemtrace.views import replay
from testkit import FIXTURES, ROOT

RECORD_NO_PROBES = """
import sys
from pmemtrace.interval import NoProbes
from pmemtrace.views import record
sys.exit(record.run(sys.argv[1], [int(sys.argv[2])], None, False, interval=float(sys.argv[3]),
                    duration=float(sys.argv[4]) if sys.argv[4] != "-" else None,
                    probes_factory=lambda features, pid: NoProbes()))
"""


def doc(rss, pid=7):
    return {"schema": 1, "pid": pid, "comm": "w", "kernel": "6.18", "time": 0.0, "policy": {"kernel": "6.18"},
            "vmas": [{"start": 0, "end": 4096, "perms": "rw-p", "backing": "anon", "path": "",
                      "rss_bytes": rss, "huge_bytes": 0, "small_bytes": rss}]}


def test_snapshots_only_when_they_change_and_policy_once(tmp_path):
    path = str(tmp_path / "r.db")
    w = store.Writer(path, {"pids": [7]}, "6.18", 1000.0)
    pol = {"kernel": "6.18", "thp/enabled": "madvise"}
    for i, rss in enumerate([4096, 4096, 4096, 8192, 8192]):
        w.write_interval(1001.0 + i, {"time": 1001.0 + i, "processes": []}, {7: doc(rss)}, pol)
    w.write_interval(1006.0, {"time": 1006.0, "processes": []}, {7: doc(8192)}, {**pol, "thp/enabled": "always"})
    w.close()
    with store.Reader(path) as r:
        assert r.interval_count() == 6
        assert [(t, pid) for t, pid, _ in r.snapshots()] == [(1001.0, 7), (1004.0, 7)]
        assert r.report_at("2.5")["vmas"][0]["rss_bytes"] == 4096        # in force at 1002.5
        assert r.report_at(None)["vmas"][0]["rss_bytes"] == 8192
        assert r.report_at(None)["policy"]["thp/enabled"] == "always"
        assert r.report_at("3")["policy"]["thp/enabled"] == "madvise"
        with pytest.raises(BadInputFile, match="no snapshot of pid 8"):
            r.report_at(None, 8)
    db = sqlite3.connect(path)
    assert db.execute("select count(*) from policy").fetchone()[0] == 2
    # readable with standard tools: the main counters are plain columns
    assert db.execute("select time from intervals where seq = 2").fetchone()[0] == 1002.0


@pytest.mark.parametrize("damage", ["truncate", "foreign_sqlite", "newer_schema", "text"])
def test_bad_files_one_line_exit_13(tmp_path, damage):
    path = tmp_path / "r.db"
    w = store.Writer(str(path), {}, "6.18", 1000.0)
    for i in range(200):
        w.write_interval(1001.0 + i, {"time": 1001.0 + i, "processes": [], "pad": "x" * 2000}, {7: doc(4096 * i)}, {})
    w.close()
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 3])
    elif damage == "foreign_sqlite":
        path.unlink()
        sqlite3.connect(str(path)).execute("create table t (x)").connection.commit()
    elif damage == "newer_schema":
        db = sqlite3.connect(str(path))
        db.execute("update meta set value = '2' where key = 'schema'")
        db.commit()
    else:
        path.write_text("time,rss\n1,2\n")
    for args in (["replay", str(path), "--json"], ["diff", str(path), str(path)], ["plot", str(path), "-o",
                                                                                   str(tmp_path / "o.svg")]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 13, (args, r.output, r.exception)
        assert r.output.startswith("pmemtrace: ") and len(r.output.strip().splitlines()) == 1


def test_replay_at_picks_the_frame_in_force():
    assert replay.index_at([10.0, 11.0, 12.0], 11.5) == 1
    assert replay.index_at([10.0, 11.0, 12.0], 9.0) == 0
    assert replay.index_at([10.0, 11.0, 12.0], 99.0) == 2


def test_replay_keys():
    c = replay.Cursor(5, 10)
    assert replay.step_key(c, "\x1b[C").pos == 6 and replay.step_key(c, "\x1b[D").pos == 4
    assert replay.step_key(c, "\x1b[6~").pos == 9 and replay.step_key(c, "\x1b[5~").pos == 0
    assert replay.step_key(c, "g").pos == 0 and replay.step_key(c, "G").pos == 9
    assert replay.step_key(c, " ").playing and replay.step_key(c, "q") is None


@pytest.fixture
def arena(build_workload):
    exe = build_workload("diff_arena")
    p = subprocess.Popen([exe, "aligned"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("ready ")
    yield p
    p.stdin.close()
    p.wait(timeout=10)


@pytest.mark.live            # a THP workload, root for map_files: the live tier, under the shared lock
def test_kill_9_during_record_keeps_every_complete_interval(tmp_path, arena):
    path = tmp_path / "r.db"
    rec = subprocess.Popen([sys.executable, "-c", RECORD_NO_PROBES, str(path), str(arena.pid), "0.2", "-"],
                           cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists():
            try:
                with store.Reader(str(path)) as r:
                    if r.interval_count() >= 8:
                        break
            except BadInputFile:
                pass                          # created but the schema not committed yet
        time.sleep(0.05)
    rec.send_signal(signal.SIGKILL)
    rec.wait(timeout=10)
    db = sqlite3.connect(str(path))
    committed = db.execute("select count(*) from intervals").fetchone()[0]
    db.close()
    assert committed >= 8
    r = CliRunner().invoke(cli, ["replay", str(path), "--json"])
    assert r.exit_code == 0, r.output
    frames = [json.loads(line) for line in r.output.splitlines()]
    assert len(frames) == committed
    assert [f["time"] for f in frames] == sorted(f["time"] for f in frames)
    row = [p for p in frames[-1]["processes"] if p["pid"] == arena.pid][0]
    assert row["huge_bytes"] == 64 << 20            # the aligned MADV_HUGEPAGE arena, all huge
    d = CliRunner().invoke(cli, ["diff", str(path), str(FIXTURES / "diff" / "report_split.json"), "--json",
                                 "--fail-on-drop", "5"])
    assert d.exit_code == 12
    g = json.loads(d.output)["groups"][0]
    assert (g["key"], g["base"]["huge_bytes"], g["new"]["huge_bytes"]) == ("anon rw-p MADV_HUGEPAGE", 64 << 20, 0)
    same = CliRunner().invoke(cli, ["diff", str(path), str(path), "--fail-on-drop", "0"])
    assert same.exit_code == 0, same.output


def test_snapshot_due_only_when_something_moved():
    from pmemtrace.views.record import SNAPSHOT_REFRESH, snapshot_due
    row = {"pid": 7, "faults": 0, "huge_faults": 0, "rss_bytes": 4096, "huge_bytes": 0, "madvise_calls": 0}
    assert snapshot_due(row, None, None, 100.0)                          # never read
    assert not snapshot_due(row, dict(row), 100.0, 101.0)               # quiet
    assert not snapshot_due(None, dict(row), 100.0, 101.0)              # not in the frame: quiet
    assert snapshot_due(None, dict(row), 100.0, 100.0 + SNAPSHOT_REFRESH)
    assert snapshot_due({**row, "faults": 3}, dict(row), 100.0, 101.0)
    assert snapshot_due({**row, "madvise_calls": 1}, dict(row), 100.0, 101.0)
    assert snapshot_due({**row, "huge_bytes": 2 << 20}, dict(row), 100.0, 101.0)


@pytest.mark.skipif(not __import__("shutil").which("tmux"), reason="tmux drives the terminal")
def test_replay_screen_steps_through_time(tmp_path):
    path = tmp_path / "r.db"
    w = store.Writer(str(path), {}, "6.18", 1000.0)
    for i in range(6):
        w.write_interval(1001.0 + i, {"time": 1001.0 + i, "interval": 1.0, "mode": "default", "lost_events": 0,
                                      "system": {"vmstat": {}, "mthp": {}, "dax": {}},
                                      "processes": [{"pid": 7, "comm": f"proc{i}", "faults": i, "huge_faults": 0,
                                                     "fallbacks": None, "huge_share": 0.5, "rss_bytes": 1,
                                                     "huge_bytes": 0, "exited": False}]}, {}, {"thp/enabled": "x"})
    w.close()
    session = f"pmemtrace-replay-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "30",
                    f"cd {ROOT} && {sys.executable} -m pmemtrace replay {path}; sleep 30"], check=True)

    def screen_has(text):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
            if text in out:
                return out
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never shown:\n{out}")
    try:
        assert "proc5" in screen_has("interval 6 of 6")
        subprocess.run(["tmux", "send-keys", "-t", session, "Left"], check=True)
        assert "proc4" in screen_has("interval 5 of 6")
        subprocess.run(["tmux", "send-keys", "-t", session, "g"], check=True)
        assert "proc0" in screen_has("interval 1 of 6")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_record_usage_errors(tmp_path):
    r = CliRunner().invoke(cli, ["record", "-o", str(tmp_path / "r.db")])
    assert r.exit_code == 2 and "exactly one of" in r.output
    with pytest.raises(store.BadOutputFile, match="cannot write the record file"):
        store.Writer(str(tmp_path / "no" / "such" / "dir.db"), {}, "6.18", 0.0)
    r = CliRunner().invoke(cli, ["plot", str(FIXTURES / "diff" / "report_split.json"), "-o",
                                 str(tmp_path / "no" / "x.svg")])
    assert r.exit_code == 14 and r.output.startswith("pmemtrace: plot: cannot write")


def test_record_refuses_an_existing_file_unless_force(tmp_path):
    """A recording is evidence: `record -o FILE` never silently replaces it (exit 18, one line,
    before any probe is loaded); --force replaces it with a fresh file."""
    path = tmp_path / "r.db"
    w = store.Writer(str(path), {}, "6.18", 1000.0)
    w.write_interval(1001.0, {"time": 1001.0, "processes": []}, {7: doc(4096)}, {"kernel": "6.18"})
    w.close()
    before = path.read_bytes()
    r = CliRunner().invoke(cli, ["record", "-o", str(path), "-p", str(os.getpid()), "--duration", "1"])
    assert r.exit_code == 18
    assert r.output == f"pmemtrace: {path} exists: give another -o FILE, or --force to replace it\n"
    assert path.read_bytes() == before
    with pytest.raises(store.OutputExists):
        store.Writer(str(path), {}, "6.18", 2000.0)
    # a dangling symlink is refused too (lexists): the write would land wherever it points
    link = tmp_path / "dangling.db"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(store.OutputExists):
        store.Writer(str(link), {}, "6.18", 2000.0)
    w = store.Writer(str(path), {}, "6.18", 2000.0, force=True)
    w.close()
    with store.Reader(str(path)) as r2:
        assert (r2.interval_count(), r2.started) == (0, 2000.0)
    r = CliRunner().invoke(cli, ["record", "-o", str(tmp_path), "-p", str(os.getpid()), "--force"])
    assert r.exit_code == 14 and "it is a directory" in r.output


def test_record_help_names_force():
    r = CliRunner().invoke(cli, ["record", "--help"])
    assert "--force" in r.output and "exit 18" in r.output


def test_wal_while_recording_one_file_after(tmp_path):
    """Commits go to FILE-wal while recording (no fsync an interval); a reader sees every committed
    interval meanwhile; a clean close leaves FILE alone, in rollback-journal mode."""
    path = tmp_path / "r.db"
    w = store.Writer(str(path), {}, "6.18", 1000.0)
    for i in range(3):
        w.write_interval(1001.0 + i, {"time": 1001.0 + i, "processes": []}, {7: doc(4096 * (i + 1))},
                         {"kernel": "6.18"})
    assert (tmp_path / "r.db-wal").exists()
    with store.Reader(str(path)) as r:
        assert r.interval_count() == 3
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db"]
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert db.execute("select count(*) from intervals").fetchone()[0] == 3


def test_snapshot_due_by_layout_in_pid_runs():
    """record -p PID: the frame's per-VMA rows decide: faults that changed no VMA's bytes cost no
    snapshot; a VMA that appeared or changed bytes does; LAYOUT_REFRESH bounds a quiet stretch."""
    from pmemtrace.views.record import LAYOUT_REFRESH, layout_of, snapshot_due
    vma = {"start": 4096, "end": 8192, "perms": "rw-p", "path": "", "huge_bytes": 0, "small_bytes": 4096,
           "vm_hugepage": False, "vm_nohugepage": False, "faults": 5}
    frame = {"pid": 7, "vmas": [vma], "processes": []}
    lay = layout_of(frame, 7)
    assert layout_of(frame, 8) is None and layout_of({"pid": 7, "processes": []}, 7) is None
    row = {"pid": 7, "faults": 9, "rss_bytes": 4096, "huge_bytes": 0}
    assert not snapshot_due(row, dict(row), 100.0, 101.0, lay, lay)
    assert not snapshot_due(row, dict(row), 100.0, 101.0, layout_of({**frame, "vmas": [{**vma, "faults": 0}]}, 7),
                            lay)
    assert snapshot_due(row, dict(row), 100.0, 101.0,
                        layout_of({**frame, "vmas": [{**vma, "small_bytes": 8192}]}, 7), lay)
    assert snapshot_due(row, dict(row), 100.0, 101.0, layout_of({**frame, "vmas": [vma, {**vma, "start": 0}]}, 7),
                        lay)
    assert snapshot_due(row, dict(row), 100.0, 100.0 + LAYOUT_REFRESH, lay, lay)
    assert not snapshot_due(row, dict(row), 100.0, 100.0 + LAYOUT_REFRESH - 1, lay, lay)


def test_progress_size_counts_the_wal(tmp_path):
    path = tmp_path / "r.db"
    w = store.Writer(str(path), {}, "6.18", 1000.0)
    w.write_interval(1001.0, {"time": 1001.0, "processes": []}, {7: doc(4096)}, {"kernel": "6.18"})
    assert w.size() == path.stat().st_size + (tmp_path / "r.db-wal").stat().st_size
    w.close()
    assert w.size() == path.stat().st_size


def test_record_waits_with_one_wakeup_an_interval():
    """record's wait: a blocking poll is called once for a quiet interval (top's loop wakes every
    100 ms); a burst of streamed events is drained poll after poll; probes whose poll does not
    block (NoProbes) get one sleep to the deadline, not a busy loop."""
    from pmemtrace.interval import NoProbes
    from pmemtrace.views.record import wait_for

    class Blocking:
        def __init__(self, burst=0):
            self.events, self.calls, self.burst = [], [], burst

        def poll(self, timeout_ms):
            self.calls.append(timeout_ms)
            if self.burst:
                self.burst -= 1
                self.events.append({})
                return
            time.sleep(timeout_ms / 1000)

    quiet = Blocking()
    t0 = time.monotonic()
    wait_for(quiet, t0 + 0.3)
    assert len(quiet.calls) == 1 and 250 <= quiet.calls[0] <= 301 and time.monotonic() >= t0 + 0.3
    busy = Blocking(burst=3)
    wait_for(busy, time.monotonic() + 0.2)
    assert len(busy.calls) == 4 and len(busy.events) == 3
    polls = []
    nop = NoProbes()
    nop.poll = lambda ms: polls.append(ms)
    t0 = time.monotonic()
    wait_for(nop, t0 + 0.3)
    assert len(polls) == 1 and time.monotonic() >= t0 + 0.3
