"""Real headless Chromium for page tests: find it, run it, read the DOM it rendered."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tools import require

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str:
    """The Chromium binary (fails under CI=true when missing, else skips)."""
    return require("chromium", "chromium-browser", package="chromium")


async def run_chromium(binary: str, profile: Path, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium to completion with its own profile; its stdout."""
    process = await asyncio.create_subprocess_exec(
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its renderer and GPU helpers share the group we kill
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        pytest.fail(f"chromium did not finish within {timeout}s: {args}")
    tail = stderr.decode(errors="replace")[-2000:]
    assert process.returncode == 0, f"chromium exited {process.returncode}:\n{tail}"
    return stdout.decode()


class RenderedPage(HTMLParser):
    """What a person would see in the dumped DOM: its text, scripts, and history bars."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.regions: list[str] = []
        self.bars: Counter[str] = Counter()
        self._endpoint = ""
        self._in_script = False
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self._in_script = tag == "script"
        if found.get("data-region"):
            self.regions.append(found["data-region"])
        if found.get("data-endpoint"):
            self._endpoint = found["data-endpoint"]
        if "bar" in (found.get("class") or "").split() and "data-day" in found:
            self.bars[self._endpoint] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


async def dump_dom(chromium: str, profile: Path, url: str, budget_ms: int = 5000) -> str:
    """The DOM after the page's scripts ran for budget_ms of virtual time."""
    budget = f"--virtual-time-budget={budget_ms}"
    return await run_chromium(chromium, profile, budget, "--dump-dom", url)
