"""DAX tier (pytest -m dax): boot Debian stock kernels under QEMU TCG with emulated pmem and
run tests/dax/guest inside them; every guest test becomes one host test per kernel.

Environment:
  PMEMTRACE_DAX_KERNELS   comma list of bullseye (5.10), bookworm (6.1), backports (6.12), sid (newest), or all;
                          default all four, or bookworm,sid under CI=true
  PMEMTRACE_DAX_CACHE     kernel cache directory (default tests/dax/cache)
  PMEMTRACE_DAX_REFRESH=1 re-resolve the suites' current kernels now (else weekly)
  PMEMTRACE_DAX_TIMEOUT   seconds one guest may run before it is killed (default 600)
  PMEMTRACE_DAX_GUEST_ARGS extra pytest arguments for the in-guest run (e.g. "-k ext4")
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import daxharness  # noqa: E402
from daxharness import kernels, vm  # noqa: E402

# the kernel cache holds whole header trees (with Python scripts): never collect there
collect_ignore = ["cache", "out"]

HOST_TOOLS = ["qemu-system-x86_64", "cpio", "modprobe", "depmod", "dpkg", "apt-get", "ndctl",
              "mkfs.xfs", "mkfs.ext4", "xfs_io", "gcc"]
_runs = {}


def _dax_may_run(config):
    expr = config.getoption("markexpr", "") or ""
    return not expr or ("dax" in expr and "not dax" not in expr)


def guest_test_ids(config):
    """Node ids (relative to tests/dax/guest/) of the in-guest tests, collected on the host."""
    if not _dax_may_run(config):
        return ["(dax tier not selected)"]
    env = dict(os.environ, PMEMTRACE_IN_GUEST="1")
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "-o", "addopts=", str(HERE / "guest")], capture_output=True, text=True,
                       cwd=vm.CHECKOUT, env=env)
    ids = [ln.split("tests/dax/guest/", 1)[1] for ln in p.stdout.splitlines()
           if ln.startswith("tests/dax/guest/") and "::" in ln]
    if not ids:
        return [f"(collection of tests/dax/guest failed: {p.stdout[-300:]} {p.stderr[-300:]})"]
    daxharness.GUEST_IDS[:] = ids
    return ids


def pytest_generate_tests(metafunc):
    if "dax_kernel" not in metafunc.fixturenames:
        return
    names = kernels.selected_kernels()
    if "guest_test" in metafunc.fixturenames:
        ids = guest_test_ids(metafunc.config)
        metafunc.parametrize(["dax_kernel", "guest_test"], [(k, t) for k in names for t in ids],
                             ids=[f"{k}:{t}" for k in names for t in ids])
    else:
        metafunc.parametrize("dax_kernel", names)


def _require_host_tools():
    missing = [t for t in HOST_TOOLS if not shutil.which(t)]
    if missing:
        msg = f"DAX tier needs {missing} on the host (sudo make deps installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def _out_dir(name):
    """A per-session directory (several sessions may boot guests at once): out/<kernel>-<pid>,
    with out/<kernel> a symlink to the newest; directories of dead sessions are removed."""
    base = kernels.cache_dir() / "out" if "PMEMTRACE_DAX_CACHE" in os.environ else HERE / "out"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(f"{name}-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(old, ignore_errors=True)
    out = base / f"{name}-{os.getpid()}"
    out.mkdir(exist_ok=True)
    link = base / name
    try:
        if link.is_symlink() or not link.exists():
            tmp = base / f".{name}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(out.name)
            tmp.replace(link)
    except OSError:
        pass
    return out


def run_guest(dax_kernel):
    """The (one per kernel per session) GuestRun: fetch kernel, build initramfs, boot, run guest tests."""
    if dax_kernel not in _runs:
        _require_host_tools()
        try:
            k = kernels.fetch(dax_kernel)
        except kernels.FetchError as e:
            _runs[dax_kernel] = e
        else:
            _runs[dax_kernel] = vm.run(k, _out_dir(dax_kernel),
                                       guest_pytest_args=os.environ.get("PMEMTRACE_DAX_GUEST_ARGS", ""))
    r = _runs[dax_kernel]
    if isinstance(r, Exception):
        pytest.fail(f"{dax_kernel}: kernel fetch failed: {r}", pytrace=False)
    return r


@pytest.fixture
def guest_run(dax_kernel):
    return run_guest(dax_kernel)


@pytest.fixture
def guest_runs():
    """run_guest(name) for a test that needs several kernels' runs (the same runs, one per session)."""
    return run_guest


def pytest_terminal_summary(terminalreporter):
    if not _runs:
        return
    tr = terminalreporter
    tr.section("DAX guests")
    for name, r in _runs.items():
        if isinstance(r, Exception):
            tr.line(f"{name}: fetch failed: {str(r).splitlines()[0]}")
            continue
        from collections import Counter
        outcomes = Counter(v["outcome"] for v in r.results.values())
        tr.line(f"{name} {r.kernel.abi}: fetch {r.kernel.fetch_seconds:.0f}s, guest {r.wall_seconds:.0f}s "
                f"(qemu rc={r.rc}{', TIMED OUT' if r.timed_out else ''}), guest tests: "
                + (", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) or "none")
                + f"; logs {r.out}")
