"""Live: the installed command (what `sudo make install` put on PATH) works outside the checkout.

The other tests run `python -m pmemtrace` from the checkout; this one runs the console script
from the venv with the working directory elsewhere, so a file missing from the install (such
as probes/common.h) fails here and not only for users.
"""
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.live


def installed_command():
    exe = os.path.join(os.path.dirname(sys.executable), "pmemtrace")
    if not os.path.exists(exe):
        pytest.fail(f"{exe} is missing: run `sudo make install` before `make test`")
    return exe


def test_installed_report_builds_its_probes():
    r = subprocess.run([installed_command(), "report", str(os.getpid()), "--ebpf"], cwd="/",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for part in ("probes/faults.c", "probes/dax.c", "probes/syscalls.c", "probes/common.h"):
        assert part in r.stdout


def test_installed_doctor_loads_the_probes():
    r = subprocess.run([installed_command(), "doctor"], cwd="/", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "probes load" in r.stdout


def test_command_on_path_is_the_installed_one():
    on_path = shutil.which("pmemtrace")
    assert on_path and os.path.realpath(on_path) == os.path.realpath(installed_command())
