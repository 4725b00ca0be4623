"""Helpers the test files import (conftest.py is not importable by name: tests/dax has its own)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "tests" / "workloads"
FIXTURES = ROOT / "tests" / "fixtures"


def run_cli(*args, timeout=120, check=False, **kwargs) -> subprocess.CompletedProcess:
    """`python -m pmemtrace ARGS` from the checkout, as a user would run it."""
    proc = subprocess.run([sys.executable, "-m", "pmemtrace", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"pmemtrace {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def cannot_run(why: str) -> None:
    """A live test that cannot run here: a failure under CI (never a silent skip), else a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"live test cannot run under CI: {why}")
    pytest.skip(why)


def live_workloads(out: Path, names) -> dict:
    """Check what live THP tests need (root, gcc, bcc, THP not disabled), then compile
    tests/workloads/NAME.c for each name into out; name -> binary path."""
    if os.geteuid() != 0:
        cannot_run("needs root")
    if shutil.which("gcc") is None:
        cannot_run("needs gcc")
    try:
        import bcc  # noqa: F401
    except ImportError:
        cannot_run("needs bcc (python3-bpfcc)")
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        if "[never]" in f.read():
            cannot_run("THP is disabled (enabled=never)")
    paths = {}
    for name in names:
        dst = str(out / name)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", dst, str(WORKLOADS / f"{name}.c")], check=True)
        paths[name] = dst
    return paths


def assert_json_paths_agree(pid: int) -> list:
    """`report --json` writes its rows from the Vma objects (report.write_json); the text view and
    --duration build a dict per row (build_json + the folio pass). On one describe_process of pid,
    with and without --all: the same document (but its time), and each row's line is json's own
    compact text of that row's dict. Returns the rows (dicts) of the --all document."""
    import io
    import json
    from pmemtrace import folio_reader, kernel, procfs, vmas
    from pmemtrace.views import folios, report
    proc = vmas.describe_process(pid)
    policy = kernel.thp_policy()
    for show_all in (False, True):
        buf = io.StringIO()
        report.write_json(buf, proc, show_all, policy)
        data = report.build_json(proc, show_all, policy)
        folios.annotate(data, pid, proc.regions)
        text = buf.getvalue()
        written = json.loads(text)
        written_time = written.pop("time")
        assert written_time and data.pop("time")
        assert written == data
        lines = [line.strip().rstrip(",") for line in text.splitlines() if line.startswith('    {"start": ')]
        assert lines == [json.dumps(d) for d in data["vmas"]]
        # as `report --json` runs it: the regions and odd pages read ahead by a forked child,
        # smaps by another
        ahead = folio_reader.prefetch(pid, min_rss=0)
        smaps = procfs.start_smaps(pid)
        assert smaps is not None
        buf = io.StringIO()
        report.write_json(buf, vmas.describe_process(pid, scanned=ahead, smaps=smaps), show_all, policy, ahead)
        assert (ahead is not None and ahead() is not None) == (len(os.sched_getaffinity(0)) > 1)
        ahead_text = buf.getvalue()
        assert ahead_text.replace(str(json.loads(ahead_text)["time"]), "T") == text.replace(str(written_time), "T")
    return data["vmas"]
