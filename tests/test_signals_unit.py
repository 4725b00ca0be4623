"""pmemtrace.signals without probes: a signal is recorded anywhere, raises only where allowed."""
import os
import signal

import pytest

from pmemtrace import signals
from pmemtrace.errors import Interrupted


@pytest.fixture
def installed():
    assert signals.install()
    yield
    signals.uninstall()


def test_recorded_outside_interruptible_blocks(installed):
    os.kill(os.getpid(), signal.SIGTERM)          # not armed: nothing raised here
    assert signals.received() == signal.SIGTERM
    with pytest.raises(Interrupted) as e:
        signals.check()
    assert e.value.exit_code == 143 and str(e.value) == "interrupted by SIGTERM"
    signals.check()                                # raised once only


def test_raises_inside_interruptible_but_not_in_deferred(installed):
    with pytest.raises(Interrupted) as e:
        with signals.interruptible():
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGINT)     # the detach goes on
                done = True
            assert done
            os.kill(os.getpid(), signal.SIGINT)         # raises here at the latest
            signals.check()
    assert e.value.exit_code == 130
    os.kill(os.getpid(), signal.SIGINT)                 # later signals are only recorded
    with signals.interruptible():
        pass


def test_a_signal_before_the_block_raises_on_entry(installed):
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(Interrupted):
        with signals.interruptible():
            raise AssertionError("not reached")


def test_install_is_once_and_uninstall_restores():
    before = signal.getsignal(signal.SIGTERM)
    assert signals.install() and not signals.install()
    signals.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_signal_during_a_read_that_gives_up_on_errors_still_stops(installed):
    """top's DAX/VM_SYNC counts skip a process whose smaps cannot be read (except PmemtraceError);
    a signal raised inside that read (60,000 VMAs: 0.4 s of it) must get through, not be spent
    there: top then never stopped."""
    from pmemtrace import interval

    def read_smaps(pid):
        os.kill(os.getpid(), signal.SIGTERM)       # arrives mid-read
        return []
    cache = interval.VmaCountCache(read_smaps=read_smaps)
    with pytest.raises(Interrupted):
        with signals.interruptible():
            cache.get(os.getpid(), 1)
    assert not issubclass(Interrupted, Exception)
