"""Shared test plumbing.

Tiers (markers): unit tests (no marker, no root), `live` (root: real probes, real
workloads), `dax` (QEMU guests, tests/dax/). A live test that cannot run here is
skipped on a developer's machine but FAILS under CI=true: a skipped live test in CI
would be a test that did not run.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "tests" / "workloads"
FIXTURES = ROOT / "tests" / "fixtures"


def live_unavailable_reason():
    if os.geteuid() != 0:
        return "live tests need root"
    return None


def pytest_runtest_setup(item):
    if "live" not in item.keywords:
        return
    reason = live_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run live tests, and this one cannot: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def build_workload(tmp_path_factory):
    """Compile tests/workloads/NAME.c once per session; returns the binary's path."""
    out_dir = tmp_path_factory.mktemp("workloads")
    built = {}

    def build(name: str) -> str:
        if name not in built:
            exe = out_dir / name
            subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(WORKLOADS / f"{name}.c")],
                           check=True, capture_output=True, text=True)
            built[name] = str(exe)
        return built[name]
    return build


def run_cli(*args, timeout=120, check=False, **kwargs) -> subprocess.CompletedProcess:
    """`python -m pmemtrace ARGS` from the checkout, as a user would run it."""
    proc = subprocess.run([sys.executable, "-m", "pmemtrace", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"pmemtrace {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc
