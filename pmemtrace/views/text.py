"""Text for every view: untrusted /proc text made inert, byte sizes for people.

The one escaping function is printable(); views hand its result to rich as Text (never as
markup), so brackets in a name are shown as they are. The one byte formatter is human_bytes():
the same number reads the same in report, top, pages and doctor."""
import functools
import os
import sys
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from rich.console import Console

UNITS = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


def printable(text: str) -> str:
    """/proc text (comm, paths) made safe to show: undecodable bytes and control characters
    become escapes, so a name cannot move the cursor or clear the screen."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@functools.lru_cache(maxsize=4096)        # tens of thousands of VMAs repeat few sizes
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


def aligned(columns: Sequence[Tuple[str, str]], rows: Sequence[Sequence[str]]) -> List[str]:
    """A header and one line per row, each column as wide as its widest cell, two spaces apart
    (rich's Table without borders, ~50x as fast on tens of thousands of rows). ``columns``: (name,
    "<" left or ">" right). Cells are plain text: untrusted ones go through printable() first."""
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, (name, _) in enumerate(columns)]
    formats = [f"{{:{align}{w}}}" for (_, align), w in zip(columns, widths)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join([f.format(c) for f, c in zip(formats, cells)]).rstrip()
    return [line([name for name, _ in columns])] + [line(row) for row in rows]


def print_plain(console: "Console", text: str) -> None:
    """Unstyled text of up to hundreds of thousands of lines (60,000 VMAs): written as it is
    where it is not shown on a terminal (rich splits and measures every line: seconds), through
    rich otherwise. Untrusted parts went through printable() already."""
    if console.is_terminal or console.record:
        from rich.text import Text
        console.print(Text(text), soft_wrap=True, end="")
    else:
        console.file.write(text)


def console(pipe_width: int) -> "Console":
    """rich's Console for the one-shot views: a terminal (or COLUMNS) gets its own width, a pipe
    `pipe_width` columns (rich would pick 80 and cut columns). A reader that closes the pipe early
    (`| head`) ends the command like any closed pipe (cli.handle_errors: exit 0), not with
    rich's own exit 1, which the exit-code table keeps for unexpected failures."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # nothing left to flush
            raise BrokenPipeError

    wide = PipeConsole()
    return wide if wide.is_terminal or os.environ.get("COLUMNS") else PipeConsole(width=pipe_width)
