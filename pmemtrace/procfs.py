"""Readers for /proc/PID files: maps, smaps, status, stat, comm, map_files.

Parsers are pure functions over text (unit-tested on captured fixtures); the
``read_*`` functions open the files and turn a vanished pid into NoSuchProcess /
ProcessExited. Text from /proc (comm, paths) is untrusted and returned as is:
views escape it before rendering.
"""
import errno
import fcntl
import gc
import itertools
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

from .errors import KernelThread, NoSuchProcess, NotRoot, PmemtraceError, ProcessExited
from .smaps import (  # noqa: F401  (the procfs.* API: callers and tests use these names)
    KIB, ROW_COUNTERS, SMAPS_KEYS, SMAPS_PIECE, Counters, MapEntry, Smaps, SmapsParser, _Layout, parse_map_line, parse_maps,
    rows_of,
    parse_smaps, smaps_layout, smaps_pieces, unescape_path)

PROC = "/proc"
SMAPS_READ_SIZE = 64 << 10


@contextmanager
def no_gc():
    """Pause the cyclic garbage collector while tens of thousands of small acyclic objects are
    built: its passes over them cost a third of the parsing time and collect nothing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()




def denied(pid: int, name: str) -> NotRoot:
    """Permission denied on /proc/PID/NAME: as root too, where another PID namespace, ptrace
    rules or an LSM refuse it, so "run as root" is said only to a user who is not."""
    why = ("refused even to root (ptrace rules, an LSM or another PID namespace)" if os.geteuid() == 0
           else "run as root")
    return NotRoot(f"permission denied reading /proc/{pid}/{name}: {why}")


def _open_proc(pid: int, name: str) -> int:
    try:
        return os.open(proc_path(pid, name), os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessExited(f"pid {pid} exited while being read") from None
    except PermissionError:
        raise denied(pid, name) from None


def _read(fd: int, pid: int, size: int) -> bytes:
    try:
        return os.read(fd, size)
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise ProcessExited(f"pid {pid} exited while being read") from None
        raise


READ_AHEAD_AFTER = 4 << 20      # a process with more smaps than this (~5,500 VMAs) is read by a helper
_PIPE_SIZE = 1 << 20
_BATCH = 256 << 10
_CHILD_ESRCH, _CHILD_ERROR = 3, 4


def read_chunks(pid: int, name: str, size: int = SMAPS_READ_SIZE,
                ahead_after: Optional[int] = None) -> Iterator[bytes]:
    """/proc/PID/NAME in reads of ``size`` bytes (errors as read_text's).

    With ``ahead_after``, once that many bytes came in, a forked helper reads the rest (the
    same open file, so from the same position) into a pipe while the caller parses what it has:
    the kernel's work of writing 43 MB of smaps for 60,000 VMAs then runs on another CPU
    instead of before the parsing. The helper does nothing but read and write, and leaves with
    os._exit; it dies with the pipe if the caller stops early."""
    fd = _open_proc(pid, name)
    try:
        got = 0
        while ahead_after is None or got < ahead_after:
            b = _read(fd, pid, size)
            if not b:
                return
            got += len(b)
            yield b
        yield from _read_ahead(fd, pid, size)
    finally:
        os.close(fd)


def _read_ahead(fd: int, pid: int, size: int) -> Iterator[bytes]:
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except (OSError, AttributeError):
        pass
    try:
        child = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        while True:
            b = _read(fd, pid, size)
            if not b:
                return
            yield b
    if child == 0:                       # the helper: read, write, leave; never return into Python code
        code = _CHILD_ERROR
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            os.close(r)
            batch: List[bytes] = []
            held = 0
            while True:
                try:
                    b = os.read(fd, size)
                except OSError as e:
                    code = _CHILD_ESRCH if e.errno == errno.ESRCH else _CHILD_ERROR
                    break
                batch.append(b)
                held += len(b)
                if held >= _BATCH or not b:          # few big writes: the reader wakes up rarely
                    os.write(w, b"".join(batch))
                    batch, held = [], 0
                if not b:
                    code = 0
                    break
        finally:
            os._exit(code)
    os.close(w)
    status = None
    try:
        while True:
            b = os.read(r, _PIPE_SIZE)
            if not b:
                break
            yield b
        status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    finally:
        os.close(r)                      # an early stop: the helper's next write kills it (SIGPIPE)
        if status is None:
            os.waitpid(child, 0)
    if status == _CHILD_ESRCH:
        raise ProcessExited(f"pid {pid} exited while being read")
    if status != 0:
        raise OSError(f"reading /proc/{pid}: helper exited with {status}")


def parse_status(text: str) -> Dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value.strip()
    return out


PF_KTHREAD = 0x00200000     # in /proc/PID/stat's flags field (9th): a kernel thread


@dataclass(frozen=True)
class StatLine:
    """The fields of /proc/PID/stat pmemtrace uses."""
    pid: int
    comm: str
    state: str           # R, S, D, Z, ...
    minflt: int          # the whole thread group, dead threads included
    majflt: int
    starttime: int       # clock ticks after boot: tells a reused pid apart
    rss_pages: int
    kthread: bool

    @property
    def faults(self) -> int:
        return self.minflt + self.majflt


def parse_stat(data: bytes) -> Optional[StatLine]:
    """/proc/PID/stat, or None if data is not one. comm may hold spaces and ')': split at the last ')'."""
    try:
        lpar = data.index(b"(")
        rpar = data.rindex(b")")
        rest = data[rpar + 2:].split()
        return StatLine(int(data[:lpar]), data[lpar + 1:rpar].decode("utf-8", "surrogateescape"),
                        rest[0].decode("ascii"), int(rest[7]), int(rest[9]), int(rest[19]), int(rest[21]),
                        bool(int(rest[6]) & PF_KTHREAD))
    except (ValueError, IndexError):
        return None


# ---------------------------------------------------------------- file access

def proc_path(pid: int, name: str) -> str:
    return f"{PROC}/{pid}/{name}"


def read_text(pid: int, name: str, *, started: bool = False) -> str:
    """Read /proc/PID/NAME; a missing pid is NoSuchProcess, or ProcessExited once we had seen it."""
    try:
        with open(proc_path(pid, name), "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, ProcessLookupError):
        if started:
            raise ProcessExited(f"pid {pid} exited while being read") from None
        raise NoSuchProcess(f"no such process: {pid}") from None
    except PermissionError:
        raise denied(pid, name) from None
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise ProcessExited(f"pid {pid} exited while being read") from None
        raise


def check_pid(pid: int) -> str:
    """The comm of a user process, or a clear error for a missing pid or a kernel thread."""
    if pid <= 0:
        raise NoSuchProcess(f"no such process: {pid}")
    comm = read_text(pid, "comm").rstrip("\n")
    if not has_maps(pid) and is_kernel_thread(pid):
        raise KernelThread(f"pid {pid} ({comm!r}) is a kernel thread: it has no user memory to report")
    return comm


def has_maps(pid: int) -> bool:
    """Does pid map anything? One read of its first maps line (the whole file of a process with
    60,000 VMAs is 4 MB)."""
    fd = _open_proc(pid, "maps")
    try:
        return bool(_read(fd, pid, 256))
    finally:
        os.close(fd)


def is_kernel_thread(pid: int) -> bool:
    st = parse_stat(read_text(pid, "stat", started=True).encode("utf-8", "surrogateescape"))
    return st is not None and st.kthread


def read_maps(pid: int) -> List[MapEntry]:
    return parse_maps(read_text(pid, "maps", started=True))


def read_smaps(pid: int, keys: Optional[Sequence[str]] = None, read_ahead: bool = False) -> List[Smaps]:
    """Every VMA's smaps block: all its counters, or (faster, smaller) only those in ``keys``.
    ``read_ahead``: a big smaps is read by a helper process while this one parses (read_chunks)."""
    parser = SmapsParser(keys)
    blocks: List[Smaps] = []
    with no_gc():
        for piece in smaps_text(pid, read_ahead):
            blocks += parser.parse(piece)
    return blocks


def smaps_text(pid: int, read_ahead: bool = False) -> Iterator[bytes]:
    """/proc/PID/smaps in pieces of whole blocks, for SmapsParser (read_smaps, or a caller that
    wants the parser's raw rows). ``read_ahead``: see read_smaps."""
    return smaps_pieces(read_chunks(pid, "smaps", ahead_after=READ_AHEAD_AFTER if read_ahead else None))


def start_smaps(pid: int) -> Optional[Iterator[bytes]]:
    """/proc/PID/smaps, read from now on by a forked helper (read_chunks), for a caller that parses
    it later: the kernel writes the text (0.15 s for 60,000 VMAs) while the caller still starts
    up. None when it cannot be read now: the caller reads it the usual way, which reports why."""
    try:
        chunks = read_chunks(pid, "smaps", ahead_after=0)
        first = next(chunks)            # the helper is running
    except (StopIteration, PmemtraceError, OSError):
        return None
    return itertools.chain([first], chunks)


def read_smaps_layout_only(pid: int) -> List[Smaps]:
    """smaps with no counter: map lines and VmFlags (what DAX / VM_SYNC counts need)."""
    return read_smaps(pid, ())


def read_smaps_rollup(pid: int) -> Mapping[str, int]:
    blocks = parse_smaps(read_text(pid, "smaps_rollup", started=True))
    return blocks[0].counters if blocks else {}


def read_status(pid: int) -> Dict[str, str]:
    return parse_status(read_text(pid, "status", started=True))


def read_stat(pid: int, proc: str = PROC) -> Optional[StatLine]:
    """/proc/PID/stat, or None when the pid is gone (for scanners that expect churn; one read,
    no file object: top reads this for every process every interval)."""
    try:
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        return parse_stat(os.read(fd, 4096))
    except OSError:
        return None
    finally:
        os.close(fd)


def list_pids() -> List[int]:
    return [int(n) for n in os.listdir(PROC) if n.isdigit()]


def map_file_path(pid: int, m: MapEntry) -> str:
    """/proc/PID/map_files/START-END: opens the mapped file itself, even when deleted or renamed."""
    return proc_path(pid, f"map_files/{m.start:x}-{m.end:x}")
