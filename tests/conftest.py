"""Shared test plumbing.

Tiers (markers): unit tests (no marker, no root), `live` (root: real probes, real
workloads), `dax` (QEMU guests, tests/dax/). A live test that cannot run here is
skipped on a developer's machine but FAILS under CI=true: a skipped live test in CI
would be a test that did not run.
"""
import os
import subprocess

import pytest

from testkit import WORKLOADS


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
