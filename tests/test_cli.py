"""The command line through click's CliRunner: help of every command, version, and bad input
mapped to one line on stderr and the exit code of pmemtrace.errors (no traceback, nothing on
stdout). Needs no root; the two cases whose answer depends on privilege assert both answers."""
import json
import os
import subprocess
import time

import pytest
from click.testing import CliRunner

from pmemtrace import __version__, errors
from pmemtrace.cli import cli


def runner():
    try:
        return CliRunner(mix_stderr=False)       # click 8.0 / 8.1
    except TypeError:
        return CliRunner()                       # click >= 8.2 keeps stderr apart by itself


def invoke(*args):
    return runner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def pid_above_max():
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


def assert_one_line_error(result, exit_code, message):
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert result.stderr == f"pmemtrace: {message}\n"
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- help / version

def test_version():
    r = invoke("--version")
    assert r.exit_code == 0
    assert r.stdout == f"pmemtrace, version {__version__}\n"


def test_group_help_lists_commands():
    for flag in ("--help", "-h"):
        r = invoke(flag)
        assert r.exit_code == 0
        assert r.stdout.startswith("Usage: ")
        commands = r.stdout.split("Commands:")[1].split()
        for name in ("doctor", "pages", "report", "top"):
            assert name in commands


@pytest.mark.parametrize("command,expect", [
    ("report", ["PID", "--all", "--json", "--duration"]),
    ("top", ["[INTERVAL] [COUNT]", "--noclear", "--maxrows", "--sort", "--pid", "--comm", "--dax-only",
             "--exact", "--json", "Examples:", "pmemtrace top -p 1234"]),
    ("pages", ["PID [RANGE]", "--vma", "--json", "START-END or START+LEN"]),
    ("doctor", ["doctor [OPTIONS]"]),
])
def test_command_help(command, expect):
    r = invoke(command, "--help")
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout.startswith(f"Usage: cli {command}") or r.stdout.startswith(f"Usage: pmemtrace {command}")
    for text in expect:
        assert text in r.stdout, text
    assert "--ebpf" not in r.stdout                       # hidden, as in bcc tools


def test_every_command_has_help_with_examples():
    """README: every command has --help with examples (each line a runnable pmemtrace command)."""
    assert set(cli.commands) >= {"report", "top", "pages", "doctor"}
    for name in cli.commands:
        r = invoke(name, "--help")
        assert r.exit_code == 0
        examples = r.stdout.split("Examples:\n", 1)[1].splitlines()
        commands = [line.split("#")[0].split() for line in examples if line.strip()]
        assert commands, name
        for words in commands:
            words = words[1:] if words[0] == "sudo" else words
            assert words[:2] == ["pmemtrace", name], (name, words)
            cli.commands[name].make_context(name, words[2:])     # parses: raises on bad usage


# ---------------------------------------------------------------- report

@pytest.mark.parametrize("pid", [0, -1])
def test_report_non_positive_pid(pid):
    assert_one_line_error(invoke("report", "--", pid), errors.NoSuchProcess.exit_code, f"no such process: {pid}")


def test_report_missing_pid():
    pid = pid_above_max()
    r = invoke("report", pid)
    assert errors.NoSuchProcess.exit_code == 3
    assert_one_line_error(r, 3, f"no such process: {pid}")
    assert_one_line_error(invoke("report", pid, "--json"), 3, f"no such process: {pid}")


def test_report_kernel_thread():
    with open("/proc/2/comm") as f:
        if f.read() != "kthreadd\n":
            pytest.skip("pid 2 is not kthreadd here (a PID namespace)")
    assert_one_line_error(invoke("report", 2), errors.KernelThread.exit_code,
                          "pid 2 ('kthreadd') is a kernel thread: it has no user memory to report")


def test_report_bad_arguments_are_usage_errors():
    for args in (("report", "abc"), ("report", "1", "--duration", "0"), ("report",)):
        r = invoke(*args)
        assert r.exit_code == 2, args
        assert "Usage:" in r.stderr and "Error:" in r.stderr and r.stdout == ""


def test_report_of_a_child_process():
    """A real `sleep`: as root the JSON document; as a user map_files needs root: exit 5."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        for _ in range(500):            # wait for the exec (comm is 'python' until then)
            with open(f"/proc/{child.pid}/comm") as f:
                if f.read() == "sleep\n":
                    break
            time.sleep(0.01)
        r = invoke("report", child.pid, "--json")
        if os.geteuid() == 0:
            assert r.exit_code == 0, r.stderr
            data = json.loads(r.stdout)
            assert data["pid"] == child.pid and data["comm"] == "sleep"
            assert any(v["backing"] == "stack" for v in data["vmas"])
            assert data["totals"]["rss_bytes"] == sum(v["rss_bytes"] for v in data["vmas"])
        else:
            assert_one_line_error(r, errors.NotRoot.exit_code,
                                  "reading /proc/PID/map_files needs root (CAP_SYS_ADMIN): run with sudo")
    finally:
        child.kill()
        child.wait()


def test_report_other_users_process_needs_root():
    if os.geteuid() != 0:
        result = invoke("report", 1)
        assert_one_line_error(result, errors.NotRoot.exit_code, "permission denied reading /proc/1/maps: run as root")
        return
    # as root, run the real CLI as nobody: the same one line and exit code
    import subprocess
    import sys
    from testkit import ROOT
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                        "pmemtrace", "report", "1"], cwd="/", env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (
        errors.NotRoot.exit_code, "", "pmemtrace: permission denied reading /proc/1/maps: run as root\n")


# ---------------------------------------------------------------- pages

@pytest.mark.parametrize("spec,message", [
    ("bogus", "range 'bogus': expected START-END or START+LEN"),
    ("0x2000-0x1000", "range '0x2000-0x1000' is empty: end must be above start"),
    ("0x1000-zz", "not an address or size: 'zz'"),
    ("0x1000+2Q", "not an address or size: '2Q'"),
    ("0xffffffffffff0000+1G", "range '0xffffffffffff0000+1G' ends beyond 64-bit addresses"),
])
def test_pages_bad_range(spec, message):
    # the range is checked before the pid is even looked at
    assert_one_line_error(invoke("pages", 1, spec), errors.BadRange.exit_code, message)
    assert errors.BadRange.exit_code == 11


def test_pages_bad_vma_address():
    assert_one_line_error(invoke("pages", 1, "--vma", "2M"), 11, "not an address or size: '2M'")


def test_pages_missing_pid():
    pid = pid_above_max()
    assert_one_line_error(invoke("pages", pid), 3, f"no such process: {pid}")


# ---------------------------------------------------------------- top

def test_top_unknown_sort_column():
    # a usage error (exit 2) from click, before any probe is loaded: no root or bcc needed
    result = invoke("top", "-s", "bogus")
    assert result.exit_code == 2
    assert "Invalid value for '-s' / '--sort': 'bogus' is not one of 'faults', 'huge_faults'" in result.stderr


def test_top_missing_pid():
    pid = pid_above_max()
    assert_one_line_error(invoke("top", "-p", pid), 3, f"no such process: {pid}")


def test_top_bad_interval_and_count():
    for args in (("top", "0.05"), ("top", "1", "0"), ("top", "-r", "0")):
        r = invoke(*args)
        assert r.exit_code == 2, args
        assert "Error:" in r.stderr


# ---------------------------------------------------------------- exit codes

def test_exit_codes_distinct():
    codes = [cls.exit_code for cls in errors.PmemtraceError.__subclasses__()]
    assert len(codes) == len(set(codes))
    assert 0 not in codes and 1 not in codes and 2 not in codes      # 1: generic, 2: click usage
    assert errors.EXIT_CODES["NoSuchProcess"] == 3 and errors.EXIT_CODES["BadRange"] == 11


@pytest.mark.parametrize("args", [["report", "{pid}"], ["pages", "{pid}"]])
def test_a_reader_closing_the_pipe_early_is_not_a_failure(args):
    """`pmemtrace report PID | head -1`: rich would exit 1 (an unexpected failure in the exit-code
    table); a closed pipe ends the command quietly with 0, as with --json."""
    import sys
    argv = [a.format(pid=os.getpid()) for a in args]
    p = subprocess.Popen([sys.executable, "-m", "pmemtrace", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.stdout.read(10)
    p.stdout.close()
    assert p.wait(timeout=60) == 0
    assert p.stderr.read() == b""
