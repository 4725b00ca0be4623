"""Live: the mincore path traced by report --duration gives the exact calls and bytes."""
import json
import os
import subprocess
import sys

import pytest

from testkit import ROOT

pytestmark = pytest.mark.live


def test_mincore_calls_and_bytes_are_exact(build_workload):
    calls, mib = 37, 8            # 8 MiB = 2048 pages: all of the answer is read (bound is 4096)
    w = subprocess.Popen([build_workload("mincore_calls"), str(calls), str(mib)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert w.stdout.readline().strip() == "ready"
        cli = subprocess.Popen([sys.executable, "-m", "pmemtrace", "report", str(w.pid), "--duration", "3",
                                "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cli.stderr.readline().startswith("Tracing pid")
        w.stdin.write("\n")
        w.stdin.flush()
        assert w.stdout.readline().strip() == "done"
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0, err
        mc = json.loads(out)["mincore"]
        pages = (mib << 20) // 4096
        assert mc["calls"] == calls
        assert mc["errors"] == 0
        assert mc["bytes"] == calls * (mib << 20)
        assert mc["pages_examined"] == calls * pages
        # the first half was touched (NOHUGEPAGE, so exactly those pages are resident)
        assert mc["pages_resident"] == calls * pages // 2
    finally:
        w.kill()
        w.wait()
