"""The status page rendered by real headless Chromium against a sample /api/v1/status."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

import pytest
from aiohttp import web
from browser import RenderedPage, dump_dom, find_chromium, run_chromium

SAMPLE = json.loads(Path(__file__).with_name("status_sample.json").read_text())
PAGE = resources.files("healthcheck").joinpath("static/status.html").read_bytes()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def chromium() -> str:
    return find_chromium()


@pytest.fixture
async def serve_status():
    """Serve the page and a given API handler under a path prefix; yields the page's URL."""
    runners: list[web.AppRunner] = []

    async def serve(api: Handler, prefix: str = "/") -> str:
        async def page(_request: web.Request) -> web.Response:
            return web.Response(body=PAGE, content_type="text/html", charset="utf-8")

        app = web.Application()
        app.router.add_get(prefix, page)
        app.router.add_get(f"{prefix}api/v1/status", api)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}{prefix}"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def sample(_request: web.Request) -> web.Response:
    return web.json_response(SAMPLE)


async def unavailable(_request: web.Request) -> web.Response:
    return web.Response(status=503)


@pytest.mark.parametrize("prefix", ["/", "/status/"])
async def test_page_renders_every_region_endpoint_and_day(chromium, serve_status, tmp_path, prefix):
    url = await serve_status(sample, prefix)

    dom = await dump_dom(chromium, tmp_path / "profile", url)

    page = RenderedPage(dom)
    text = page.visible
    assert page.regions == ["us-west", "eu-central", "ap-south"]
    assert "Some systems degraded" in text
    assert "Regional failure in ap-south" in text
    for word in ("Healthy", "Degraded", "Unhealthy", "Unknown"):
        assert word in text
    assert text.count("REGIONAL FAILURE") == 1
    assert re.search(r"updated \d+s ago", text)
    expected = {
        f"{region['name']}/{endpoint['endpoint']}": 90
        for region in SAMPLE["regions"]
        for endpoint in region["endpoints"]
    }
    assert dict(page.bars) == expected
    assert 'title="2026-11-11: 93.00% (2880 checks)"' in dom
    assert 'title="2026-09-15: no data"' in dom
    assert "99.98%" in text  # us-west/api 30d
    assert "—" in text  # a null uptime


async def test_error_detail_is_shown_as_text_not_markup(chromium, serve_status, tmp_path):
    url = await serve_status(sample)

    dom = await dump_dom(chromium, tmp_path / "profile", url)

    page = RenderedPage(dom)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)" not in dom
    assert "HTTP 503 from upstream: <script>alert(1)</script>" in page.visible
    assert not any("alert(1)" in script for script in page.scripts)


async def test_failed_first_fetch_shows_a_banner(chromium, serve_status, tmp_path):
    url = await serve_status(unavailable)

    page = RenderedPage(await dump_dom(chromium, tmp_path / "profile", url))

    assert "Could not refresh status (HTTP 503)" in page.visible
    assert "Status is unavailable right now." in page.visible


async def test_failed_refresh_keeps_the_last_data_on_screen(chromium, serve_status, tmp_path):
    served = 0

    async def then_unavailable(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        return await (sample(request) if served == 1 else unavailable(request))

    url = await serve_status(then_unavailable)

    # virtual time runs past the 30 s refresh without the test waiting for it
    page = RenderedPage(await dump_dom(chromium, tmp_path / "profile", url, budget_ms=35000))

    assert served >= 2
    assert "Could not refresh status (HTTP 503) — showing data from" in page.visible
    assert page.regions == ["us-west", "eu-central", "ap-south"]


async def test_screenshot_is_a_full_rendered_page(chromium, serve_status, tmp_path):
    url = await serve_status(sample)
    png = tmp_path / "page.png"

    await run_chromium(
        chromium,
        tmp_path / "profile",
        "--virtual-time-budget=5000",
        "--hide-scrollbars",
        "--window-size=1280,1600",
        f"--screenshot={png}",
        url,
    )

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 1600)
    assert len(data) > 50_000, f"screenshot is only {len(data)} bytes: likely a blank page"
