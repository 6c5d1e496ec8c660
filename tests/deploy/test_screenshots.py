"""deploy/screenshots.py, run as people run it: the demo fleet, seeded, shot by Chromium."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from browser import find_chromium

ROOT = Path(__file__).resolve().parents[2]


def test_screenshots_of_the_overview_and_detail_views(tmp_path) -> None:
    chromium = find_chromium()
    out = tmp_path / "shots"

    done = subprocess.run(
        [sys.executable, "deploy/screenshots.py", "--out", str(out), "--chromium", chromium],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    sizes = {}
    for png in sorted(out.iterdir()):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        sizes[png.name] = struct.unpack(">II", data[16:24])
        # a blank or error page compresses to a few kB
        assert len(data) > 40_000, f"{png.name} is only {len(data)} bytes"
    assert sizes == {
        "endpoint-phone-dark.png": (390, 2300),
        "endpoint.png": (1280, 2100),
        "overview.png": (1280, 1900),
        "region.png": (1280, 1500),
    }
    assert "endpoints/eu-west/api" in done.stdout
