"""Text for every view: untrusted /proc text made inert, byte sizes for people.

The one escaping function is printable(); views hand its result to rich as Text (never as
markup), so brackets in a name are shown as they are. The one byte formatter is human_bytes():
the same number reads the same in report, top, pages and doctor."""
from typing import Optional

UNITS = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


def printable(text: str) -> str:
    """/proc text (comm, paths) made safe to show: undecodable bytes and control characters
    become escapes, so a name cannot move the cursor or clear the screen."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def human_bytes(n: Optional[int], exact: bool = False, unknown: str = "?") -> str:
    """Bytes in the largest binary unit not above them: 32 MiB -> '32M', 1536 -> '1.5K',
    0 -> '0', 512 -> '512B'; ``unknown`` for None.

    One decimal at most. A value that needs more is rounded ('3.0M' for 3 MiB + 4 KiB), unless
    ``exact``: then a smaller unit is used ('3076K'), and bytes if no unit is exact ('4097B')."""
    if n is None:
        return unknown
    for unit, size in UNITS:
        if n >= size:
            if n % size == 0:
                return f"{n // size}{unit}"
            if not exact or (n * 10) % size == 0:
                return f"{n / size:.1f}{unit}"
    return f"{n}B" if n else "0"
