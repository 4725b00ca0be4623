"""Issue 10's kernel case (c), the host half: the same workload (tests/workloads/kernel_regress.c:
anonymous THP plus fs-dax MAP_SYNC) recorded in the 6.1 guest and in the newest
(tests/dax/guest/test_record_kernel.py, record-kernel.db in each run's out directory), then
diffed here with `pmemtrace diff --fail-on-drop 1`; what it must say: tests/kernel_diff.py
(the unit tier checks the same on two kept recordings, tests/fixtures/record-kernel/)."""
import json
import subprocess
import sys

import pytest

import kernel_diff
from daxharness import kernels, vm

pytestmark = pytest.mark.dax
BASE, NEW = "bookworm", "sid"


def recorded(run):
    db = run.out / "record-kernel.db"
    rec = run.results.get("tests/dax/guest/test_record_kernel.py::test_record_kernel_workload", {})
    if not db.exists():
        pytest.fail(f"{run.kernel.abi} wrote no record-kernel.db (guest test: {rec.get('outcome')}: "
                    f"{rec.get('longrepr', '')[-2000:]})", pytrace=False)
    return db


def diff(*args):
    p = subprocess.run([sys.executable, "-m", "pmemtrace", "diff", *map(str, args), "--fail-on-drop", "1"],
                       capture_output=True, text=True, cwd=vm.CHECKOUT)
    assert not p.stderr, p.stderr
    return p.returncode, p.stdout


def test_kernel_upgrade_diff(guest_runs):
    if not {BASE, NEW} <= set(kernels.selected_kernels()):
        pytest.skip(f"needs both {BASE} and {NEW} in PMEMTRACE_DAX_KERNELS")
    b, n = guest_runs(BASE), guest_runs(NEW)
    base, new = recorded(b), recorded(n)
    rc_json, out = diff(base, new, "--json")
    rc_text, text = diff(base, new)
    assert (rc_json, rc_text) == (0, 0)
    # the kernels as the guests report them (uname -r of each guest = the kernel it booted)
    kernel_diff.check(json.loads(out), text, b.kernel.abi, n.kernel.abi)
    assert diff(new, base)[0] == 0           # known folio sizes against unknown ones: no loss either way
