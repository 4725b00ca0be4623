"""`pmemtrace replay FILE`: a recorded run on top's screen, stepped through time.

--json prints the recorded frames in top's JSON schema (one object a line), --at TIME only the
frame in force at TIME. In a pipe the frames come as top's plain lines. On a terminal: left /
right (or , .) one interval, PgUp / PgDn ten, g / G first / last, space plays and pauses, and
top's keys (< > sort, r reverse, q quit) work as in top.
"""
import sys
import types
from dataclasses import dataclass, replace
from typing import List, Optional

from .. import store
from ..errors import BadInputFile
from .top import Keys, ViewState, handle_key, visible
from .top_render import json_line, plain_lines, render

KEYS_NEXT = ("\x1b[C", "\x1bOC", ".", "l")
KEYS_PREV = ("\x1b[D", "\x1bOD", ",", "h")
KEYS_PGDN = ("\x1b[6~",)
KEYS_PGUP = ("\x1b[5~",)


@dataclass(frozen=True)
class Cursor:
    pos: int
    count: int
    playing: bool = False


def step_key(c: Cursor, key: str) -> Optional[Cursor]:
    """The cursor after key, or None if the key is not a time key."""
    moves = {**{k: 1 for k in KEYS_NEXT}, **{k: -1 for k in KEYS_PREV},
             **{k: 10 for k in KEYS_PGDN}, **{k: -10 for k in KEYS_PGUP}}
    if key in moves:
        return replace(c, pos=min(max(c.pos + moves[key], 0), c.count - 1), playing=False)
    if key == "g":
        return replace(c, pos=0, playing=False)
    if key == "G":
        return replace(c, pos=c.count - 1, playing=False)
    if key == " ":
        return replace(c, playing=not c.playing)
    return None


def index_at(times: List[float], t: float) -> int:
    """The last frame at or before t (the first if t is earlier than all)."""
    best = 0
    for i, when in enumerate(times):
        if when <= t:
            best = i
    return best


def run(path: str, as_json: bool = False, at: Optional[str] = None, maxrows: int = 20, out=None) -> int:
    out = out or sys.stdout
    with store.Reader(path) as reader:
        frames = [f for _, _, f in reader.frames()]
        times = [t for _, t, _ in reader.frames()]
        if not frames:
            raise BadInputFile(f"{path}: no complete interval recorded")
        t_at = store.parse_at(at, reader.started)
        policy = reader.policy_at(times[-1] if t_at is None else t_at)
        release = reader.meta.get("kernel", "?")
    if t_at is not None:
        frames = [frames[index_at(times, t_at)]]
    state = ViewState()
    if as_json or not out.isatty():
        for f in frames:
            if as_json:
                out.write(json_line(f) + "\n")
            else:
                rows, vmas = visible(f, state, maxrows)
                out.write("\n".join(plain_lines(f, rows, vmas)) + "\n")
        out.flush()
        return 0
    _screen(frames, policy, release, state, maxrows, out)
    return 0


def _screen(frames: List[dict], policy: dict, release: str, state: ViewState, maxrows: int, out) -> None:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text
    pol = types.SimpleNamespace(enabled=policy.get("thp/enabled"), defrag=policy.get("thp/defrag"),
                                shmem_enabled=policy.get("thp/shmem_enabled"))
    cursor = Cursor(len(frames) - 1, len(frames))
    console = Console(file=out)

    def draw():
        f = frames[cursor.pos]
        rows, vmas = visible(f, state, maxrows)
        where = Text(f"replay: interval {cursor.pos + 1} of {cursor.count}"
                     f"{'  playing' if cursor.playing else ''}   keys: <- -> step  PgUp PgDn 10  g G ends  "
                     "space play  q quit", style="bold cyan")
        return Group(where, render(f, rows, vmas, state, pol, release))

    with Keys() as keys, Live(draw(), console=console, screen=True, auto_refresh=False, transient=True) as live:
        while True:
            wait = (frames[cursor.pos]["interval"] or 1.0) if cursor.playing else 3600.0
            key = keys.wait(wait)
            if key is None:
                if cursor.playing:
                    if cursor.pos + 1 >= cursor.count:
                        cursor = replace(cursor, playing=False)
                    else:
                        cursor = replace(cursor, pos=cursor.pos + 1)
            else:
                moved = step_key(cursor, key)
                if moved is not None:
                    cursor = moved
                else:
                    state = replace(handle_key(state, key), paused=False, detail=False)
                    if state.quit:
                        return
            live.update(draw(), refresh=True)
