"""Helpers the test files import (conftest.py is not importable by name: tests/dax has its own)."""
import subprocess
import sys
from pathlib import Path

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
