"""SIGINT and SIGTERM for commands that attach probes (top, report --duration).

A signal may arrive at any moment: while bcc compiles and attaches, mid-interval, while the
probes detach, while the last output is written. Raising KeyboardInterrupt at an arbitrary
point leaves bcc half-detached ("Failed to detach BPF from tracepoint" and a traceback). So,
once ``install()`` ran, a signal is only *recorded*; it raises ``Interrupted`` where the command
said that is safe (``interruptible()`` blocks: waiting, sampling, drawing) or where it asks
(``check()``). Attach and detach run outside those blocks, so they always finish, and the
command then leaves by its usual path: top exits 0, report --duration exits 128 + the signal
number with one line (README, exit codes).
"""
import signal
from contextlib import contextmanager
from typing import Iterator, Optional

from .errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    received: Optional[int] = None     # the first signal seen
    raised = False                     # Interrupted was raised once already: later signals only recorded
    armed = 0                          # depth of interruptible() blocks
    installed = False
    keep_until_exit = False            # cli.main: stay recording until the process ignores signals at exit


_state = _State()


def keep_until_exit() -> None:
    _state.keep_until_exit = True


def ignore_from_now() -> None:
    """The process is leaving: a signal now must not kill it (its exit code is decided)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _interrupted(signum: int) -> Interrupted:
    _state.raised = True
    return Interrupted(signum)


def _handler(signum, frame) -> None:
    if _state.received is None:
        _state.received = signum
    if _state.armed and not _state.raised:
        raise _interrupted(signum)


_saved: dict = {}


def install() -> bool:
    """From now on SIGINT/SIGTERM are recorded, and raise only inside interruptible() or check().
    False when already installed (the caller then leaves uninstalling to whoever installed)."""
    if _state.installed:
        return False
    _state.received, _state.raised, _state.armed = None, False, 0
    for sig in SIGNALS:
        _saved[sig] = signal.signal(sig, _handler)
    _state.installed = True
    return True


def uninstall() -> None:
    """The handlers from before install(); nothing when the process keeps them to its end
    (keep_until_exit: the real command line, see cli.main)."""
    if _state.keep_until_exit:
        return
    for sig, old in _saved.items():
        signal.signal(sig, old)
    _saved.clear()
    _state.installed = False


def received() -> Optional[int]:
    return _state.received


def check() -> None:
    """Raise Interrupted now if a signal came (once)."""
    if _state.received is not None and not _state.raised:
        raise _interrupted(_state.received)


@contextmanager
def interruptible() -> Iterator[None]:
    """A block a signal may cut short (raising Interrupted in it); one that came before it raises at once."""
    if not _state.installed:
        yield
        return
    check()
    _state.armed += 1
    try:
        yield
    finally:
        _state.armed -= 1


@contextmanager
def deferred() -> Iterator[None]:
    """A block no signal interrupts, even inside an interruptible() one (detaching probes)."""
    saved = _state.armed
    _state.armed = 0
    try:
        yield
    finally:
        _state.armed = saved
