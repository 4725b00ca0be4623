"""In-guest test support (runs INSIDE the DAX QEMU guest only).

On the host these files are not collected (collect_ignore_glob); the host side
(tests/dax/test_dax_guests.py) boots the guest, which runs pytest here and writes
one JSON record per test to $PMEMTRACE_DAX_RESULTS; the host turns each into a result.
Setup facts (devices, mounts, headers) come from $PMEMTRACE_DAX_SETUP, written by stage2.sh.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from guestlib import TraceInstance

IN_GUEST = os.environ.get("PMEMTRACE_IN_GUEST") == "1"
if not IN_GUEST:
    collect_ignore_glob = ["test_*.py"]

CHECKOUT = Path(__file__).resolve().parents[3]
WORKLOADS = CHECKOUT / "tests" / "workloads"
FILESYSTEMS = ["ext4", "xfs"]
# vm_fault_t bits as printed by the fs_dax tracepoints
VM_FAULT_NAMES = {0x2: "SIGBUS", 0x4: "MAJOR", 0x100: "NOPAGE", 0x200: "LOCKED", 0x400: "RETRY",
                  0x800: "FALLBACK", 0x1000: "DONE_COW", 0x2000: "NEEDDSYNC"}


def pytest_configure(config):
    config.addinivalue_line("markers", "guest: runs inside the DAX QEMU guest (tests/dax/guest)")


# ---- results back to the host -------------------------------------------------------------
_results = {}


def pytest_runtest_logreport(report):
    rec = _results.setdefault(report.nodeid, {"outcome": "passed", "longrepr": "", "duration": 0.0})
    rec["duration"] += report.duration
    if hasattr(report, "wasxfail") and report.when == "call":
        if report.skipped:
            rec["outcome"] = "xfailed"
            rec["longrepr"] = report.wasxfail
        # a strict XPASS is report.failed and handled below; a non-strict one passes
    if report.skipped and report.when in ("setup", "call") and rec["outcome"] == "passed":
        rec["outcome"] = "skipped"
        lr = report.longrepr
        rec["longrepr"] = lr[2] if isinstance(lr, tuple) else str(lr)
    elif report.failed:
        rec["outcome"] = "failed"
        rec["longrepr"] += f"[{report.when}] {report.longreprtext}\n"
    if report.when == "call" and report.capstdout:
        rec["stdout"] = report.capstdout[-4000:]


def pytest_sessionfinish(session, exitstatus):
    dest = os.environ.get("PMEMTRACE_DAX_RESULTS")
    if IN_GUEST and dest:
        Path(dest).write_text(json.dumps(_results, indent=1))


# ---- guest facts ---------------------------------------------------------------------------
def read_setup():
    facts = {}
    path = os.environ.get("PMEMTRACE_DAX_SETUP", "/run/pmemtrace-dax.setup")
    if os.path.exists(path):
        for line in Path(path).read_text().splitlines():
            k, _, v = line.partition(" ")
            facts[k] = v.split()
    return facts


@pytest.fixture(scope="session")
def setup_facts():
    return read_setup()


@pytest.fixture(scope="session")
def kernel_version():
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2)))


@pytest.fixture(scope="session", params=FILESYSTEMS)
def daxfs(request, setup_facts):
    """(fs, device, mountpoint) of a filesystem mounted -o dax on pmem; fails if stage2 could not make it."""
    fs = request.param
    if f"fsdax-{fs}" not in setup_facts:
        pytest.fail(f"stage2 did not set up fs-dax {fs} (see guest.log)")
    dev, mnt = setup_facts[f"fsdax-{fs}"]
    return fs, dev, mnt


@pytest.fixture(scope="session")
def devdax(setup_facts):
    if "devdax" not in setup_facts:
        pytest.fail("stage2 did not set up device-dax (see guest.log)")
    return setup_facts["devdax"][0]


@pytest.fixture(scope="session")
def workload_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("workloads")


def compile_workload(workload_dir, name):
    exe = workload_dir / name
    if not exe.exists():
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(WORKLOADS / f"{name}.c")], check=True)
    return str(exe)


@pytest.fixture(scope="session")
def dax_map(workload_dir):
    """Path of the compiled tests/workloads/dax_map.c."""
    return compile_workload(workload_dir, "dax_map")


@pytest.fixture(scope="session")
def dax_causes(workload_dir):
    """Path of the compiled tests/workloads/dax_causes.c."""
    return compile_workload(workload_dir, "dax_causes")


@pytest.fixture
def trace():
    made = []

    def make(*events):
        t = TraceInstance(f"pmt{os.getpid()}_{len(made)}", list(events))
        made.append(t)
        return t
    yield make
    for t in made:
        t.close()
