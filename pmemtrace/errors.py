"""Errors a user can cause or meet, each with its own exit code.

The CLI prints ``pmemtrace: <message>`` on one line and exits with ``exit_code``;
nothing else in the package prints errors or calls sys.exit.
"""
from typing import Optional


class PmemtraceError(Exception):
    exit_code = 1


class NoSuchProcess(PmemtraceError):
    exit_code = 3


class ProcessExited(PmemtraceError):
    exit_code = 4
    frame: Optional[dict] = None     # top -p: what was counted in the process's last interval


class NotRoot(PmemtraceError):
    exit_code = 5


class BccMissing(PmemtraceError):
    exit_code = 6


class HeadersMissing(PmemtraceError):
    exit_code = 7


class KernelThread(PmemtraceError):
    exit_code = 8


class KernelFeatureMissing(PmemtraceError):
    exit_code = 9


class ProbeLoadFailed(PmemtraceError):
    exit_code = 10


class BadRange(PmemtraceError):
    exit_code = 11


class ProcFormatError(PmemtraceError, ValueError):
    """A /proc, sysfs or tracefs file in a shape pmemtrace cannot read (a kernel it does not know)."""
    exit_code = 15


class BadInputFile(PmemtraceError):
    """A file given to diff / replay / plot that is truncated, corrupt or not pmemtrace's."""
    exit_code = 13


class BadOutputFile(PmemtraceError):
    """An output file (record -o, plot -o) that cannot be written."""
    exit_code = 14


class OutputExists(PmemtraceError):
    """record -o FILE where FILE exists (a recording is evidence: never replaced without --force)."""
    exit_code = 18


class Interrupted(BaseException):
    """SIGINT / SIGTERM before the command finished: exit 128 + the signal number (130, 143).

    Not a PmemtraceError (nor an Exception), like KeyboardInterrupt: code that gives up on one
    process's unreadable /proc file (``except PmemtraceError``) must not swallow the signal. It
    did: top then never stopped, its signal spent on a smaps read it skipped."""
    exit_code = 130

    def __init__(self, signum: int):
        import signal
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


EXIT_CODES = {**{cls.__name__: cls.exit_code for cls in PmemtraceError.__subclasses__()},
              Interrupted.__name__: Interrupted.exit_code}
