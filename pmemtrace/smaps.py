"""The text of /proc/PID/maps and /proc/PID/smaps, parsed: the line parsers (MapEntry, Smaps)
and the fast block parser for tens of thousands of VMAs (SmapsParser; moved out of procfs.py,
which reads the files and re-exports these names).
"""
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from .errors import ProcFormatError

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
SMAPS_PIECE = 1 << 20          # bytes of smaps text parsed at once
ROW_COUNTERS = 5               # a raw row's fields before its counters: the header's (SmapsParser.rows)


class _Layout:
    """Where each counter sits in a block, shared by every block of one read."""
    __slots__ = ("index", "scale", "requested")

    def __init__(self, index: Dict[str, int], scale: Tuple[int, ...], requested: Optional[frozenset]):
        self.index, self.scale, self.requested = index, scale, requested

    def at(self, key: str) -> Optional[int]:
        """Where counter ``key`` is in a raw row (SmapsParser.rows); None: not read."""
        i = self.index.get(key)
        return None if i is None else ROW_COUNTERS + i

    def scale_of(self, key: str) -> int:
        """What counter ``key``'s digits are multiplied by (KIB for "kB" lines); 0 if not read."""
        i = self.index.get(key)
        return 0 if i is None else self.scale[i]


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


# start, end, perms, offset and the rest (device, inode, path), which decode() takes apart once per
# distinct text: each group costs findall a bytes object per VMA, a third of its time with eight
_HEADER_RE = rb"([0-9a-f]+)-([0-9a-f]+) ([^ \n]+) ([0-9a-f]+) ([^\n]*)\n"
_REST_RE = re.compile(rb"([0-9a-f]+):([0-9a-f]+) ([0-9]+) *(.*)")


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
        fast = self._fast_rows(piece)
        if fast is not None:
            rows, layout = fast
            return [self._block(row, layout) for row in rows]
        return parse_smaps(piece.decode("utf-8", "surrogateescape"))

    def rows(self, piece: bytes) -> Tuple[_Layout, list]:
        """The blocks of a piece as raw rows, for a caller that reads a few fields of tens of
        thousands of VMAs and builds no Smaps: (start, end, perms, offset, rest of the header, the
        layout's counters..., VmFlags), each the bytes of the text (hex where the text is; counter
        i of the layout at row[ROW_COUNTERS + i], digits, times the layout's scale); decode(perms,
        rest, VmFlags) turns the text fields. A piece the layout does not fit is parsed line by
        line and given back in the same shape."""
        fast = self._fast_rows(piece)
        if fast is not None:
            rows, layout = fast
            return layout, rows
        return rows_of(parse_smaps(piece.decode("utf-8", "surrogateescape")), self.keys)

    def _fast_rows(self, piece: bytes) -> Optional[Tuple[list, _Layout]]:
        """The regex's rows of the piece and their layout; None: the layout does not fit it."""
        if self.layout is None:
            self.layout = smaps_layout(piece, self.keys)
        if self.layout is not None:
            pattern, layout = self.layout
            rows = pattern.findall(piece)
            if len(rows) == piece.count(b"\nVmFlags:"):
                return rows, layout
        self.slow_pieces += 1
        return None

    def _block(self, row: tuple, layout: _Layout) -> Smaps:
        # row: the header's 5 fields, the counters, VmFlags; the text fields looked up at once
        key = (row[2], row[4], row[-1])
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = self.decode(*key)
        pm, d, ino, p, vf = shared
        entry = _new_tuple(MapEntry, (int(row[0], 16), int(row[1], 16), pm, int(row[3], 16), d, ino, p))
        return Smaps(entry, Counters(layout, row[ROW_COUNTERS:-1]), vf)

    def decode(self, perms: bytes, rest: bytes, flags: bytes) -> tuple:
        """(perms, (major, minor), inode, path, VmFlags set) of a row's text fields, decoded once per
        distinct text; ProcFormatError if the header's rest is no device, inode and path."""
        m = _REST_RE.fullmatch(rest)
        if m is None:
            raise ProcFormatError(f"not a /proc/PID/smaps header (device, inode, path): {rest[:80]!r}")
        major, minor, inode, path = m.groups()
        p = self._paths.get(path)
        if p is None:
            p = self._paths[path] = unescape_path(path.decode("utf-8", "surrogateescape"))
        vf = self._flags.get(flags)
        if vf is None:
            vf = self._flags[flags] = frozenset(flags.decode("ascii", "surrogateescape").split())
        return (perms.decode("ascii", "surrogateescape"), (int(major, 16), int(minor, 16)), int(inode), p, vf)


def rows_of(blocks: List[Smaps], keys: Optional[Sequence[str]]) -> Tuple[_Layout, list]:
    """Parsed blocks in SmapsParser.rows' shape (counters in bytes, scale 1): its slow path."""
    names = list(dict.fromkeys(k for b in blocks for k in b.counters if keys is None or k in keys))
    layout = _Layout({n: i for i, n in enumerate(names)}, (1,) * len(names),
                     frozenset(keys) if keys is not None else None)
    rows = []
    for b in blocks:
        m = b.map
        rows.append((b"%x" % m.start, b"%x" % m.end, m.perms.encode("ascii", "surrogateescape"), b"%x" % m.offset,
                     b"%x:%x %d " % (m.dev[0], m.dev[1], m.inode) + m.path.replace("\n", "\\012").encode(
                         "utf-8", "surrogateescape"),
                     *(b"%d" % b.counters.get(n, 0) for n in names),
                     " ".join(sorted(b.vmflags)).encode("ascii", "surrogateescape")))
    return layout, rows


_new_tuple = tuple.__new__
