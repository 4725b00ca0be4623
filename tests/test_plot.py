"""plot: the SVG's elements, and the picture as headless Chromium (Debian's package) draws it:
not blank, the colours of its elements where they should be. No network: Chromium is started
with every background fetch off, and the page has no external reference."""
import os
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from pmemtrace import store
from pmemtrace.cli import cli
from pmemtrace.views import plot
from testkit import FIXTURES

D = FIXTURES / "diff"
MiB = 1 << 20
CHROMIUM = shutil.which("chromium")


def screenshot(page, tmp_path):
    """PNG of page as headless Chromium renders it, as a PIL image."""
    from PIL import Image
    png = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={png}", "--window-size=1200,900", "--hide-scrollbars", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return Image.open(png).convert("RGB")


def colour_count(img, hex_colour):
    want = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return sum(n for n, c in img.getcolors(maxcolors=1 << 20) if c == want)


def record_file(tmp_path):
    """A record file: the arena at 100% huge for 3 intervals, then 0% (the split release) for 3."""
    import json
    aligned, split = (json.loads((D / f"report_{n}.json").read_text()) for n in ("aligned", "split"))
    path = tmp_path / "r.db"
    w = store.Writer(str(path), {}, "6.18", 1000.0)
    for i in range(6):
        frame = {"time": 1001.0 + i, "interval": 1.0, "system": {"vmstat": {"thp_fault_alloc": 32 if i < 3 else 0,
                                                                            "thp_fault_fallback": 0 if i < 3 else 32},
                                                                 "dax": {}}, "processes": []}
        w.write_interval(1001.0 + i, frame, {7: aligned if i < 3 else split}, {"kernel": "6.18"})
    w.close()
    return path


def test_record_svg_lanes_and_rates(tmp_path):
    out = tmp_path / "r.svg"
    r = CliRunner().invoke(cli, ["plot", str(record_file(tmp_path)), "-o", str(out)])
    assert r.exit_code == 0, r.output
    svg = out.read_text()
    assert "data-group='anon rw-p MADV_HUGEPAGE'" in svg
    assert svg.count("class='rates'") == 2 and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    # 3 intervals at 100% (a full-height bar), then the split release at 0% (a zero-height bar)
    lane = svg.split("data-group='anon rw-p MADV_HUGEPAGE'")[1].split("</g>")[0]
    assert lane.count("class='share'") == 2 and "height='0.0'" in lane and "height='44.0'" in lane


def test_series_per_group():
    snaps = [(1.0, 7, {"vmas": [{"start": 0, "end": 4 * MiB, "perms": "rw-p", "backing": "anon", "path": "",
                                 "rss_bytes": 4 * MiB, "huge_bytes": 4 * MiB, "small_bytes": 0}]}),
             (2.0, 7, {"vmas": []})]
    assert plot.group_series(snaps) == {"anon rw-p": [(1.0, 4 * MiB, 4 * MiB), (2.0, 0, 0)]}


def test_bad_suffix_is_usage_error(tmp_path):
    r = CliRunner().invoke(cli, ["plot", str(D / "report_split.json"), "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 2


@pytest.mark.parametrize("kind", ["record", "pages", "report"])
def test_chromium_draws_it(tmp_path, kind):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must look at the picture: Debian's chromium is not installed (make test-deps)")
        pytest.skip("Debian's chromium is not installed (make test-deps)")
    src = {"record": lambda: record_file(tmp_path), "pages": lambda: D / "pages_aligned.json",
           "report": lambda: D / "report_split.json"}[kind]()
    out = tmp_path / ("plot.html" if kind != "pages" else "plot.svg")
    r = CliRunner().invoke(cli, ["plot", str(src), "-o", str(out)])
    assert r.exit_code == 0, r.output
    img = screenshot(out, tmp_path)
    total = img.width * img.height
    white = colour_count(img, "#ffffff")
    assert white < total * 0.995, "blank picture"
    huge, small = colour_count(img, plot.COLORS["huge"]), colour_count(img, plot.COLORS["small"])
    if kind == "record":
        # the huge lane: 3 of 6 intervals at full height across 760 px * 44 px
        assert huge > 0.3 * 760 * 44
    elif kind == "pages":
        # the 64 MiB arena: 32 huge cells of 5x5 px, plus the legend swatch (12x12)
        assert huge >= 32 * 25 and small > 0
    else:
        assert small > 0.9 * 600 * 14                # the 64 MiB of 2 MiB chunks, all small
