"""forked.start: work read ahead in a child; any failure there is None, never an error here."""
import os

from pmemtrace import forked


def test_the_value_comes_back_from_the_child():
    parent = os.getpid()
    got = forked.start(lambda: (os.getpid(), list(range(100000))))
    pid, big = got()                       # more than a pipe holds: read while the child writes
    assert pid != parent and big == list(range(100000))
    assert got() == (pid, big)             # asked again: the same value, no second wait


def test_an_error_in_the_child_is_none():
    def fails():
        raise OSError("the child could not read")
    assert forked.start(fails)() is None


def test_no_fork_is_none(monkeypatch):
    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", no_fork)
    assert forked.start(lambda: 1)() is None
