"""views/text.py: the one escaping function and the one byte formatter every view uses."""
import io

from rich.console import Console
from rich.text import Text

from pmemtrace.views import doctor, pages, report, text, top_render

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


def test_human_bytes_whole_units():
    assert [text.human_bytes(n) for n in (0, 512, KIB, 4 * KIB, 2 * MIB, 32 * MIB, GIB, 3 << 40)] == [
        "0", "512B", "1K", "4K", "2M", "32M", "1G", "3T"]


def test_human_bytes_rounds_to_one_decimal_unless_exact():
    assert text.human_bytes(1536) == "1.5K"
    assert text.human_bytes(MIB + MIB // 2) == "1.5M"
    assert text.human_bytes(3 * MIB + 4 * KIB) == "3.0M"              # rounded for a summary
    assert text.human_bytes(3 * MIB + 4 * KIB, exact=True) == "3076K"  # a run length is never rounded
    assert text.human_bytes(MIB + MIB // 2, exact=True) == "1.5M"      # exact already: same string
    assert text.human_bytes(4097, exact=True) == "4097B"
    assert text.human_bytes(1020 * KIB, exact=True) == "1020K"


def test_human_bytes_unknown():
    assert text.human_bytes(None) == "?"
    assert text.human_bytes(None, unknown="-") == "-"


def test_every_view_writes_32_mib_the_same_way():
    """report, top, pages and doctor used five formatters that disagreed ('32M' vs '32.0M')."""
    n = 32 * MIB
    frame_row = {"pid": 7, "comm": "db", "mincore": {"calls": 1, "errors": 0, "bytes": n, "pages_examined": 0,
                                                      "pages_resident": 0, "ns": 1000}}
    assert "32M queried" in top_render.mincore_lines([frame_row])[0]
    assert pages.human(n) == "32M"
    assert report.human_bytes is text.human_bytes and doctor.human_bytes is text.human_bytes
    assert text.human_bytes(n) == text.human_bytes(n, exact=True) == "32M"


def test_printable_escapes_control_characters_and_bad_bytes():
    assert text.printable("a\tb\x00") == "a\\tb\\x00"
    assert text.printable("x\x1b[2J") == "x\\x1b[2J"
    assert text.printable("evil\u202egnp") == "evil\\u202egnp"           # right-to-left override
    assert text.printable(b"bad\xff".decode("utf-8", "surrogateescape")) == "bad\\xff"
    assert text.printable("plain name (deleted)") == "plain name (deleted)"
    assert text.printable("日本語") == "日本語"


def test_printable_text_is_not_markup_for_rich():
    console = Console(record=True, width=80, file=io.StringIO(), force_terminal=True)
    console.print(Text(text.printable("[bold red]x[/] [link=y]z\x07")))
    out = console.export_text()
    assert out.strip() == "[bold red]x[/] [link=y]z\\x07"


def test_one_escaping_function():
    """No view keeps a second copy or a markup-escaping variant."""
    assert not hasattr(text, "safe")
    for view in (doctor, pages, report, top_render):
        assert view.printable is text.printable


def test_print_plain_writes_straight_to_a_pipe_and_through_rich_elsewhere():
    import io
    from rich.console import Console
    from pmemtrace.views.text import print_plain
    pipe = Console(file=io.StringIO(), width=20)                 # not a terminal, not recording
    print_plain(pipe, "a line longer than the twenty columns of this console\n[b]x[/b]\n")
    assert pipe.file.getvalue() == "a line longer than the twenty columns of this console\n[b]x[/b]\n"
    recorded = Console(file=io.StringIO(), width=20, record=True)
    print_plain(recorded, "[b]x[/b]\n")
    assert recorded.export_text() == "[b]x[/b]\n"                # text, never markup
    tty = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    print_plain(tty, text.printable("\x1b[2J") + "\n")          # untrusted text: printable() first
    assert tty.file.getvalue() == "\\x1b[2J\n"
