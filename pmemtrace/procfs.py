"""Readers for /proc/PID files: maps, smaps, status, stat, comm, map_files.

Parsers are pure functions over text (unit-tested on captured fixtures); the
``read_*`` functions open the files and turn a vanished pid into NoSuchProcess /
ProcessExited. Text from /proc (comm, paths) is untrusted and returned as is:
views escape it before rendering.
"""
import errno
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .errors import KernelThread, NoSuchProcess, NotRoot, ProcessExited, ProcFormatError

PROC = "/proc"
KIB = 1024


@dataclass(frozen=True)
class MapEntry:
    """One line of /proc/PID/maps."""
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


@dataclass
class Smaps:
    """One VMA's block of /proc/PID/smaps: the map line plus its counters (bytes) and VmFlags."""
    map: MapEntry
    counters: Dict[str, int] = field(default_factory=dict)   # "Rss" -> bytes, "THPeligible" -> 0/1
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
    for line in text.splitlines():
        if not line:
            continue
        if _is_map_line(line):
            blocks.append(Smaps(parse_map_line(line)))
            continue
        if not blocks:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "VmFlags":
            blocks[-1].vmflags = frozenset(value.split())
        elif value.endswith(" kB") and _is_number(value[:-3]):
            blocks[-1].counters[key] = int(value[:-3]) * KIB
        elif _is_number(value):
            blocks[-1].counters[key] = int(value)
    return blocks


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


def read_smaps(pid: int) -> List[Smaps]:
    return parse_smaps(read_text(pid, "smaps", started=True))


def read_smaps_rollup(pid: int) -> Dict[str, int]:
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
