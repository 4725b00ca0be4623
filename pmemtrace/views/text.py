"""Text helpers every view shares: untrusted /proc text made safe, byte sizes for people."""
from typing import Optional

from rich.markup import escape


def printable(text: str) -> str:
    """/proc text (comm, paths) made safe to show: undecodable bytes and control characters
    become escapes, so a name cannot move the cursor or clear the screen."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def safe(text: str) -> str:
    """printable() and rich markup escaped: for text placed inside rich markup strings."""
    return escape(printable(text))


def human_bytes(n: Optional[int]) -> str:
    """1536 -> '1.5K', 67108864 -> '64M'; None (unknown) -> '?'."""
    if n is None:
        return "?"
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B" if n else "0"
