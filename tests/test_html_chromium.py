"""The HTML report renders in a real headless Chromium (Debian package: chromium).

Two runs: --dump-dom must show every matrix cell with its colour class, and --screenshot must
show the heatmap colours as pixels (decoded with a small stdlib PNG reader), which proves the
inline CSS applies, with no network and no scripts.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pvestrap.findings import Finding, Severity
from pvestrap.report.html import render_html
from pvestrap.report.model import Report, ReportSection

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1200,900"]
# The CSS custom properties of the heatmap (pvestrap/report/html.py).
OK, SLOW, BAD, BLOCKED = (0x2d, 0xa4, 0x4e), (0xe3, 0xb3, 0x41), (0xe5, 0x53, 0x4b), \
    (0x7d, 0x1a, 0x1a)


def report() -> Report:
    nodes = ["pve1", "pve2", "pve3"]
    return Report(
        "pvestrap preflight",
        (ReportSection("latency", "Latency", (
            Finding("latency-high", Severity.FAIL, "pve2 -> pve3 median 2.70 ms", "pve2/link0",
                    "latency", {"median_ms": 2.7}, remedy="find the slow hop"),)),),
        meta={"cluster": "lab"},
        matrices={"link0": {"nodes": nodes, "port": 5405,
                            "rtt_ms": [[None, 0.2, 1.5], [0.2, None, 2.7], [None, 1.4, None]],
                            "state": [[None, "open", "open"], ["open", None, "open"],
                                      ["filtered", "open", None]]}},
    )


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def page(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(render_html(report()), encoding="utf-8")
    return path


class Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-from" in a:
            self.cells[(a["data-from"], a["data-to"])] = a["class"]


def test_dom_in_chromium_has_every_matrix_cell(tmp_path, page):
    done = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    parser = Cells()
    parser.feed(done.stdout)
    assert parser.cells == {("pve1", "pve2"): "ok", ("pve1", "pve3"): "slow",
                            ("pve2", "pve1"): "ok", ("pve2", "pve3"): "bad",
                            ("pve3", "pve1"): "blocked", ("pve3", "pve2"): "slow"}
    assert 'data-code="latency-high"' in done.stdout


def read_png(path: Path) -> tuple[int, int, list[tuple[tuple[int, int, int], ...]]]:
    """Width, height and RGB pixel rows of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color_type = header[:4]
    assert depth == 8 and color_type in (2, 6)
    bpp = 3 if color_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        _unfilter(ftype, line, prev, bpp)
        rows.append(tuple(tuple(line[i:i + 3]) for i in range(0, stride, bpp)))
        prev = line
    return width, height, rows


def _unfilter(ftype: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    if ftype == 0:
        return
    if ftype == 2:
        line[:] = bytes((x + b) & 0xFF for x, b in zip(line, prev))
        return
    for x in range(len(line)):
        a = line[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if ftype == 1:
            line[x] = (line[x] + a) & 0xFF
        elif ftype == 3:
            line[x] = (line[x] + (a + b) // 2) & 0xFF
        else:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF


@pytest.mark.slow
def test_screenshot_shows_the_heatmap_colours(tmp_path, page):
    shot = tmp_path / "shot.png"
    done = chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    width, height, rows = read_png(shot)
    assert (width, height) == (1200, 900)
    counts = {c: 0 for c in (OK, SLOW, BAD, BLOCKED)}
    for row in rows:
        for px in row:
            if px in counts:
                counts[px] += 1
    # Each colour fills at least one whole cell (78 x 44 CSS pixels, minus the text).
    assert all(n > 2000 for n in counts.values()), counts
