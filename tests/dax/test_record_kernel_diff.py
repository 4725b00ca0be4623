"""Issue 10's kernel case (c), the host half: the same workload (tests/workloads/kernel_regress.c:
anonymous THP plus fs-dax MAP_SYNC) recorded in the 6.1 guest and in the newest
(tests/dax/guest/test_record_kernel.py, record-kernel.db in each run's out directory), then
diffed here with `pmemtrace diff --json --fail-on-drop 1`."""
import json
import subprocess
import sys

import pytest

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


def test_kernel_upgrade_diff(guest_runs):
    if not {BASE, NEW} <= set(kernels.selected_kernels()):
        pytest.skip(f"needs both {BASE} and {NEW} in PMEMTRACE_DAX_KERNELS")
    base, new = recorded(guest_runs(BASE)), recorded(guest_runs(NEW))
    p = subprocess.run([sys.executable, "-m", "pmemtrace", "diff", str(base), str(new), "--json",
                        "--fail-on-drop", "1"], capture_output=True, text=True, cwd=vm.CHECKOUT)
    assert p.returncode in (0, 12), p.stderr
    d = json.loads(p.stdout)
    assert d["base"]["kernel"].startswith("6.1.") and d["new"]["kernel"].startswith("7.")
