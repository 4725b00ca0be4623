"""Writing large JSON documents fast: the layout of ``json.dumps(data, indent=2)``, except that
the items of the long lists (one per VMA, one per page run) are written one per line.

``indent=`` makes the json module fall back to its pure-Python encoder: 60,000 VMAs took
seconds. Here every list item is encoded by json's C encoder, in batches, and written as it
goes; the result parses to exactly the same data.
"""
import json
from typing import IO, Any, Callable, Mapping, Sequence

_encode = json.JSONEncoder().encode
BATCH = 2000


def encode(value: Any) -> str:
    """Compact JSON of one value (json's C encoder)."""
    return _encode(value)


def _indented(value: Any, level: int) -> str:
    # a JSON string holds no raw newline, so indenting after each newline is safe
    return json.dumps(value, indent=2).replace("\n", "\n" + "  " * level)


def write_items(out: IO[str], items: Sequence[Any], level: int, encode: Callable[[Any], str] = _encode) -> None:
    """A JSON array whose items are one per line, each compact (``encode``), at ``level`` of indentation."""
    if not items:
        out.write("[]")
        return
    pad = ",\n" + "  " * (level + 1)
    out.write("[\n" + "  " * (level + 1))
    for i in range(0, len(items), BATCH):
        if i:
            out.write(pad)
        out.write(pad.join([encode(x) for x in items[i:i + BATCH]]))
    out.write("\n" + "  " * level + "]")


def write_document(out: IO[str], data: dict, long_lists: Mapping[str, Callable[[Any], str]]) -> None:
    """``data`` as an indented JSON object; the lists under the keys of ``long_lists`` one item a
    line, each encoded by the function given for that key."""
    long = long_lists
    out.write("{")
    for n, (key, value) in enumerate(data.items()):
        out.write(("," if n else "") + "\n  " + json.dumps(key) + ": ")
        if key in long and isinstance(value, list):
            write_items(out, value, 1, long[key])
        else:
            out.write(_indented(value, 1))
    out.write("\n}\n" if data else "}\n")
