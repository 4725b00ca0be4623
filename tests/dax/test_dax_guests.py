"""Host side of the DAX tier: one test per kernel that the guest booted and ran its pytest,
and one test per (kernel, in-guest test) carrying that test's outcome and failure text."""
import os

import pytest

from daxharness import GUEST_IDS

pytestmark = pytest.mark.dax


def test_guest_boots_and_runs_pytest(guest_run):
    g = guest_run
    if g.timed_out or g.rc != 0 or g.pytest_rc is None or not g.results:
        pytest.fail("the guest did not run its tests to the end\n" + g.diagnosis(), pytrace=False)
    # pytest exits 1 when some test failed (reported by test_in_guest); anything else is a crash
    assert g.pytest_rc in (0, 1), g.diagnosis()
    # a guest test the host did not collect (files changed during the run) must not fail unseen
    unseen = {k: v["outcome"] for k, v in g.results.items()
              if k.split("tests/dax/guest/", 1)[-1] not in GUEST_IDS and v["outcome"] == "failed"}
    assert not unseen, f"guest tests failed that the host did not collect: {unseen}"


def test_in_guest(guest_run, guest_test):
    g = guest_run
    rec = g.results.get(f"tests/dax/guest/{guest_test}")
    if rec is None:
        if os.environ.get("PMEMTRACE_DAX_GUEST_ARGS") and g.results:
            pytest.skip("not selected in the guest by PMEMTRACE_DAX_GUEST_ARGS")
        pytest.fail(f"{guest_test} has no result from the guest {g.kernel.abi}\n" + g.diagnosis(),
                    pytrace=False)
    if rec["outcome"] == "xfailed":
        pytest.xfail(f"in guest {g.kernel.abi}: {rec['longrepr']}")
    if rec["outcome"] == "skipped":
        pytest.skip(f"in guest {g.kernel.abi}: {rec['longrepr']}")
    if rec["outcome"] != "passed":
        pytest.fail(f"in guest {g.kernel.abi} ({g.out}):\n{rec['longrepr']}", pytrace=False)
