"""Readers for /proc/PID files: maps, smaps, status, stat, comm, map_files.

Parsers are pure functions over text (unit-tested on captured fixtures); the
``read_*`` functions open the files and turn a vanished pid into NoSuchProcess /
ProcessExited. Text from /proc (comm, paths) is untrusted and returned as is:
views escape it before rendering.
"""
import errno
import fcntl
import gc
import os
import re
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from .errors import KernelThread, NoSuchProcess, NotRoot, ProcessExited, ProcFormatError

PROC = "/proc"
KIB = 1024


class MapEntry(NamedTuple):
    """One line of /proc/PID/maps (a tuple: cheap to build for tens of thousands of VMAs)."""
    start: int
    end: int
    perms: str            # e.g. "rw-p"; the 4th char is 's' (shared) or 'p' (private)
    offset: int           # file offset in bytes
    dev: Tuple[int, int]  # (major, minor) of the backing file's device
    inode: int
    path: str             # "" for anonymous; "[heap]", "/dev/zero (deleted)", ...

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def shared(self) -> bool:
        return self.perms[3:4] == "s"

    @property
    def deleted(self) -> bool:
        return self.path.endswith(" (deleted)")


@dataclass(slots=True)
class Smaps:
    """One VMA's block of /proc/PID/smaps: the map line plus its counters (bytes) and VmFlags."""
    map: MapEntry
    counters: Mapping[str, int] = field(default_factory=dict)   # "Rss" -> bytes, "THPeligible" -> 0/1
    vmflags: frozenset = frozenset()

    def get(self, key: str) -> int:
        return self.counters.get(key, 0)


def unescape_path(raw: str) -> str:
    """The kernel prints a newline in a mapped file's name as the octal escape \\012."""
    return raw.replace("\\012", "\n")


def parse_map_line(line: str) -> MapEntry:
    """One maps line; ProcFormatError (a ValueError too) when it is not one."""
    parts = line.rstrip("\n").split(None, 5)
    try:
        if len(parts) < 5:
            raise ValueError("fewer than five fields")
        lo, hi = parts[0].split("-")
        major, minor = parts[3].split(":")
        path = ""
        if len(parts) == 6:
            # split(None, 5) already dropped the padding before the path; a path that itself
            # starts with spaces cannot be told apart from padding, as in the kernel's output.
            path = unescape_path(parts[5])
        return MapEntry(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16),
                        (int(major, 16), int(minor, 16)), int(parts[4]), path)
    except ValueError as e:
        raise ProcFormatError(f"not a /proc/PID/maps line ({e}): {line[:80]!r}") from None


def parse_maps(text: str) -> List[MapEntry]:
    return [parse_map_line(line) for line in text.splitlines() if line.strip()]


def _is_map_line(line: str) -> bool:
    head = line.split(" ", 1)[0]
    if "-" not in head:
        return False
    lo, _, hi = head.partition("-")
    try:
        int(lo, 16), int(hi, 16)
    except ValueError:
        return False
    return True


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def parse_smaps(text: str) -> List[Smaps]:
    """Parse /proc/PID/smaps (or smaps_rollup, whose single header has no VMA)."""
    blocks: List[Smaps] = []
    counters: Dict[str, int] = {}
    for line in text.splitlines():
        if not line:
            continue
        if _is_map_line(line):
            counters = {}
            blocks.append(Smaps(parse_map_line(line), counters))
            continue
        if not blocks:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "VmFlags":
            blocks[-1].vmflags = frozenset(value.split())
        elif value.endswith(" kB") and _is_number(value[:-3]):
            counters[key] = int(value[:-3]) * KIB
        elif _is_number(value):
            counters[key] = int(value)
    return blocks


# ---------------------------------------------------------------- smaps at scale
#
# A process may have tens of thousands of VMAs (vm.max_map_count is 65,530 by default): 60,000
# VMAs make 43 MB of smaps text, 1.5 million lines. Going through it line by line in Python
# costs seconds and hundreds of MB. read_smaps() instead reads it in 64 KiB pieces (the kernel
# is slower with bigger reads), learns the block layout from the first block (the kernel prints
# the same lines in the same order for every VMA of a read) and matches whole blocks with one
# regular expression built for that layout, taking only the counters asked for; values are
# converted to int when read. A piece whose blocks do not all match is parsed line by line.

SMAPS_KEYS = ("Rss", "KernelPageSize", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped",
              "Shared_Hugetlb", "Private_Hugetlb", "THPeligible")     # every counter pmemtrace reads
SMAPS_READ_SIZE = 64 << 10
SMAPS_PIECE = 1 << 20          # bytes of smaps text parsed at once


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


class _Layout:
    """Where each counter sits in a block, shared by every block of one read."""
    __slots__ = ("index", "scale", "requested")

    def __init__(self, index: Dict[str, int], scale: Tuple[int, ...], requested: Optional[frozenset]):
        self.index, self.scale, self.requested = index, scale, requested


class Counters(Mapping):
    """The counters of one smaps block, read-only: raw digits kept, converted when read (bytes
    for "kB" lines, as parse_smaps gives them). Only the keys asked of read_smaps are there;
    asking for another is a KeyError naming the fix, never a silent 0."""
    __slots__ = ("_layout", "_raw")

    def __init__(self, layout: _Layout, raw: Tuple[bytes, ...]):
        self._layout, self._raw = layout, raw

    def _missing(self, key: str) -> bool:
        req = self._layout.requested
        if req is not None and key not in req:
            raise KeyError(f"smaps counter {key!r} was not read: add it to read_smaps(keys=...)")
        return True

    def __getitem__(self, key: str) -> int:
        i = self._layout.index.get(key)
        if i is None:
            self._missing(key)
            raise KeyError(key)
        return int(self._raw[i]) * self._layout.scale[i]

    def get(self, key, default=None):
        i = self._layout.index.get(key)
        if i is None:
            self._missing(key)
            return default
        return int(self._raw[i]) * self._layout.scale[i]

    def __contains__(self, key) -> bool:
        return key in self._layout.index

    def raw(self) -> tuple:
        """The counters as read (digits), in layout order: equal raws, equal counters (a cheap
        change test for samplers)."""
        return self._raw

    def __iter__(self):
        return iter(self._layout.index)

    def __len__(self) -> int:
        return len(self._layout.index)

    def __repr__(self) -> str:
        return f"Counters({dict(self)!r})"


_HEADER_RE = rb"([0-9a-f]+)-([0-9a-f]+) ([^ \n]+) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) ([0-9]+) *(.*)\n"


def smaps_layout(piece: bytes, keys: Optional[Sequence[str]]):
    """(compiled block pattern, _Layout) for the blocks of this read, from the first block of
    ``piece``; None when the text does not look like per-VMA smaps (no VmFlags line)."""
    end = piece.find(b"\nVmFlags:")
    if end < 0:
        return None
    lines = piece[:end].split(b"\n")[1:]
    parts = [_HEADER_RE]
    index: Dict[str, int] = {}
    scale: List[int] = []
    for line in lines:
        label, sep, rest = line.partition(b":")
        name = label.decode("ascii", "replace")
        if not sep or (keys is not None and name not in keys) or name in index:
            parts.append(rb".+\n")
            continue
        index[name] = len(scale)
        scale.append(KIB if rest.endswith(b" kB") else 1)
        parts.append(re.escape(label) + rb": *([0-9]+)(?: kB)?\n")
    parts.append(rb"VmFlags: (.*)\n")
    requested = frozenset(keys) if keys is not None else None
    return re.compile(b"".join(parts)), _Layout(index, tuple(scale), requested)


def smaps_pieces(chunks: Iterable[bytes], piece: int = SMAPS_PIECE) -> Iterator[bytes]:
    """Re-cut a stream of smaps reads into pieces of whole blocks (each ends with a VmFlags line)."""
    buf: List[bytes] = []
    size = 0
    for chunk in chunks:
        buf.append(chunk)
        size += len(chunk)
        if size < piece:
            continue
        data = b"".join(buf)
        cut = data.rfind(b"\nVmFlags:")
        cut = data.find(b"\n", cut + 1) + 1 if cut >= 0 else 0
        if cut <= 0:
            buf, size = [data], len(data)
            continue
        yield data[:cut]
        rest = data[cut:]
        buf, size = ([rest], len(rest)) if rest else ([], 0)
    if buf:
        data = b"".join(buf)
        if data:
            yield data


class SmapsParser:
    """Turns smaps pieces into Smaps blocks; map fields, paths and VmFlags sets shared between
    blocks that have equal ones (tens of thousands of VMAs have few distinct values)."""

    def __init__(self, keys: Optional[Sequence[str]] = SMAPS_KEYS):
        self.keys = keys
        self.layout = None
        self._paths: Dict[bytes, str] = {}
        self._flags: Dict[bytes, frozenset] = {}
        self._shared: Dict[tuple, tuple] = {}     # (perms, major, minor, path, flags) -> decoded
        self.slow_pieces = 0         # pieces parsed line by line (the layout did not fit)

    def parse(self, piece: bytes) -> List[Smaps]:
        if self.layout is None:
            self.layout = smaps_layout(piece, self.keys)
        if self.layout is not None:
            pattern, layout = self.layout
            rows = pattern.findall(piece)
            if len(rows) == piece.count(b"\nVmFlags:"):
                return [self._block(row, layout) for row in rows]
        self.slow_pieces += 1
        return parse_smaps(piece.decode("utf-8", "surrogateescape"))

    def _block(self, row: tuple, layout: _Layout) -> Smaps:
        # row: the header's 8 fields, the counters, VmFlags; the text fields looked up at once
        key = (row[2], row[4], row[5], row[7], row[-1])
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = self._decode(*key)
        pm, d, p, vf = shared
        entry = _new_tuple(MapEntry, (int(row[0], 16), int(row[1], 16), pm, int(row[3], 16), d, int(row[6]), p))
        return Smaps(entry, Counters(layout, row[8:-1]), vf)

    def _decode(self, perms: bytes, major: bytes, minor: bytes, path: bytes, flags: bytes) -> tuple:
        p = self._paths.get(path)
        if p is None:
            p = self._paths[path] = unescape_path(path.decode("utf-8", "surrogateescape"))
        vf = self._flags.get(flags)
        if vf is None:
            vf = self._flags[flags] = frozenset(flags.decode("ascii", "surrogateescape").split())
        return (perms.decode("ascii", "surrogateescape"), (int(major, 16), int(minor, 16)), p, vf)


_new_tuple = tuple.__new__


def _open_proc(pid: int, name: str) -> int:
    try:
        return os.open(proc_path(pid, name), os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessExited(f"pid {pid} exited while being read") from None
    except PermissionError:
        raise NotRoot(f"permission denied reading /proc/{pid}/{name}: run as root") from None


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
        raise NotRoot(f"permission denied reading /proc/{pid}/{name}: run as root") from None
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise ProcessExited(f"pid {pid} exited while being read") from None
        raise


def check_pid(pid: int) -> str:
    """The comm of a user process, or a clear error for a missing pid or a kernel thread."""
    if pid <= 0:
        raise NoSuchProcess(f"no such process: {pid}")
    comm = read_text(pid, "comm").rstrip("\n")
    if not read_text(pid, "maps", started=True) and is_kernel_thread(pid):
        raise KernelThread(f"pid {pid} ({comm!r}) is a kernel thread: it has no user memory to report")
    return comm


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
    ahead = READ_AHEAD_AFTER if read_ahead else None
    with no_gc():
        for piece in smaps_pieces(read_chunks(pid, "smaps", ahead_after=ahead)):
            blocks += parser.parse(piece)
    return blocks


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
