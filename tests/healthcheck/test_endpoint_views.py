"""Endpoint and region detail views: their API and the page, in real headless Chromium, against
a real daemon whose database holds three days of history with a staged outage."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from datetime import UTC, datetime
from importlib import resources
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from browser import find_chromium
from cdp import chromium_tab
from staged_history import OUTAGE_ERROR, Staged, stage

from healthcheck.config import parse_config
from healthcheck.daemon import Daemon, open_writer
from healthcheck.front import HttpFront

PROBE_TOKEN = "probe-secret-token-4711"
API_TOKEN = "api-secret-token-0815"
PAGE = resources.files("healthcheck").joinpath("static/status.html").read_bytes()
ENDPOINTS = [("eu-west", "api"), ("eu-west", "web"), ("us-east", "api")]


async def _ok(_r: web.Request) -> web.Response:
    return web.json_response({"status": "UP"})


@pytest.fixture
async def target_url():
    app = web.Application()
    app.router.add_get("/ok", _ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def start_daemon(tmp_path, target_url):
    """A daemon on a database with staged history; yields (base URL, what was staged)."""
    started: list[tuple[asyncio.Event, asyncio.Task]] = []

    async def start(**exporter) -> tuple[str, Staged]:
        path = str(tmp_path / "hc.db")
        staged = stage(path, time.time(), ENDPOINTS)
        endpoint = {
            "name": "api",
            "url": f"{target_url}/ok",
            "headers": {"Authorization": "Bearer ${PROBE_TOKEN}"},
            "conditions": ["[STATUS] == 200", "[BODY].status == UP"],
        }
        document = {
            "defaults": {
                "interval": "1s",
                "timeout": "900ms",
                "retries": 0,
                "latency": {"warning": "200ms", "critical": "1s"},
            },
            "scheduler": {"workers": 1},
            "storage": {"path": path},
            "exporter": {"listen": "127.0.0.1:0", **exporter},
            "regions": {
                "eu-west": {"endpoints": [endpoint, {"name": "web", "url": f"{target_url}/ok"}]},
                "us-east": {"endpoints": [{"name": "api", "url": f"{target_url}/ok"}]},
            },
        }
        env = {"PROBE_TOKEN": PROBE_TOKEN, "API_TOKEN": API_TOKEN}
        config = parse_config(json.dumps(document), "test", env)
        daemon = Daemon(config, open_writer(config.storage), front=HttpFront)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        started.append((stop, task))
        deadline = asyncio.get_running_loop().time() + 30
        while daemon.listening is None or len(daemon.board.latest) < 3:
            assert not task.done(), task.exception() if task.done() else None
            assert asyncio.get_running_loop().time() < deadline, "daemon did not get going"
            await asyncio.sleep(0.05)
        await daemon.uptime.refresh()
        return f"http://127.0.0.1:{daemon.listening[1]}", staged

    yield start
    for stop, _task in started:
        stop.set()
    for _stop, task in started:
        await task


@pytest.fixture
async def api(start_daemon):
    base, staged = await start_daemon()
    async with aiohttp.ClientSession(base) as session:
        session.staged = staged  # type: ignore[attr-defined]
        yield session


async def get_json(session: aiohttp.ClientSession, path: str, status: int = 200, **kw):
    async with session.get(path, **kw) as response:
        text = await response.text()
        assert response.status == status, text
        assert response.content_type == "application/json"
        return json.loads(text)


# -- API -----------------------------------------------------------------------------------------
async def test_endpoint_detail_has_config_last_result_and_uptime_against_the_sla(api) -> None:
    async with api.get("/api/v1/endpoints/eu-west/api") as response:
        raw = await response.text()
    assert PROBE_TOKEN not in raw
    body = json.loads(raw)
    assert (body["region"], body["endpoint"], body["kind"]) == ("eu-west", "api", "http")
    check = body["check"]
    assert check["settings"]["url"].endswith("/ok")
    assert check["settings"]["headers"] == [["Authorization", "Bearer ***"]] or check["settings"][
        "headers"
    ] == [["Authorization", "***"]]
    assert check["interval_s"] == 1.0 and check["retries"] == 0
    assert check["thresholds"] == {"warning_ms": 200.0, "critical_ms": 1000.0}
    assert check["conditions"] == ["[STATUS] == 200", "[BODY].status == UP"]
    last = body["last_result"]
    assert last["source"] == "live" and last["ok"] is True and last["http_status"] == 200
    assert [(c["condition"], c["passed"]) for c in last["conditions"]] == [
        ("[STATUS] == 200", True),
        ("[BODY].status == UP", True),
    ]
    assert set(last["phases_ms"]) >= {"total"}
    assert body["sla_target"] == 0.999
    assert set(body["uptime"]) == {"1h", "24h", "7d", "30d"}
    day = body["uptime"]["24h"]
    staged = api.staged
    # 6 of the 288 staged checks of the last day failed: 97.9% < 99.9%, budget overspent
    assert 0.97 < day["uptime"] < 0.99 and day["met"] is False
    assert day["error_budget_remaining"] < 0
    # Rounded to 4 decimals, not the float's noise.
    assert day["error_budget_remaining"] == round(1 - (1 - day["uptime"]) / 0.001, 4)
    assert body["uptime"]["1h"]["met"] is True
    assert body["uptime"]["1h"]["error_budget_remaining"] == 1.0
    assert staged.failed == 6
    assert body["links"] == {
        "page": "/endpoints/eu-west/api",
        "api": "/api/v1/endpoints/eu-west/api",
    }


@pytest.mark.parametrize(
    ("window", "points", "width"), [("24h", 24, 3600), ("7d", 7, 86400), ("30d", 30, 86400)]
)
async def test_latency_has_one_point_per_bucket_and_the_failures(
    api, window, points, width
) -> None:
    body = await get_json(api, f"/api/v1/endpoints/eu-west/api/latency?window={window}")
    assert body["window"] == window and body["bucket_s"] == width
    assert len(body["points"]) == points
    assert body["thresholds"] == {"warning_ms": 200.0, "critical_ms": 1000.0}
    with_checks = [p for p in body["points"] if p["checks"]]
    assert with_checks[-1]["p50_ms"] is not None
    assert all(p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] <= p["max_ms"] for p in with_checks)
    assert sum(p["failures"] for p in body["points"]) == api.staged.failed
    assert len(body["failures"]) == api.staged.failed
    assert {f["error_detail"] for f in body["failures"]} == {OUTAGE_ERROR}
    assert body["failures_truncated"] is False
    if window == "24h":
        assert all(p["checks"] for p in body["points"])  # three days staged: every hour


async def test_events_list_the_staged_outage_and_its_delivered_alert(api) -> None:
    body = await get_json(api, "/api/v1/endpoints/eu-west/api/events")
    status = [e for e in body["events"] if e["type"] == "status"]
    down = [e for e in status if not e["ok"]]
    assert len(down) == 1
    outage = down[0]
    assert outage["duration_s"] == 1800 and outage["ongoing"] is False
    assert (outage["status"], outage["error"]) == ("unhealthy", "connection_refused")
    assert outage["error_detail"] == OUTAGE_ERROR
    assert status[0]["ok"] is True and status[0]["ongoing"] is True  # newest first
    alerts = [e for e in body["events"] if e["type"] == "alert"]
    assert [a["event"] for a in alerts] == ["resolved", "fired"]
    assert alerts[1]["rule"] == "endpoint_down" and alerts[1]["severity"] == "critical"
    assert all(a["delivered"] is True for a in alerts)
    assert alerts[1]["deliveries"][0]["channel"] == "email"


async def test_region_detail_latency_and_regional_failure_history(api) -> None:
    body = await get_json(api, "/api/v1/regions/eu-west")
    assert body["region"] == "eu-west" and body["regional_failure"] is False
    assert [e["endpoint"] for e in body["endpoints"]] == ["api", "web"]
    assert body["endpoints"][0]["links"]["page"] == "/endpoints/eu-west/api"
    assert body["uptime"]["24h"]["met"] is False
    assert body["latency"]["24h"]["p50_ms"] is not None
    series = await get_json(api, "/api/v1/regions/eu-west/latency?window=24h")
    assert len(series["points"]) == 24
    assert sum(p["failures"] for p in series["points"]) == 2 * api.staged.failed
    events = await get_json(api, "/api/v1/regions/eu-west/events")
    failures = [e for e in events["events"] if e["type"] == "regional_failure"]
    assert len(failures) == 1 and failures[0]["duration_s"] == 1800
    assert failures[0]["endpoints"] == ["api", "web"]
    assert failures[0]["errors"] == ["api: connection_refused", "web: connection_refused"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/endpoints/eu-west/nope",
        "/api/v1/endpoints/nowhere/api",
        "/api/v1/endpoints/nowhere/api/latency?window=24h",
        "/api/v1/endpoints/eu-west/nope/events",
        "/api/v1/regions/nowhere",
        "/api/v1/regions/nowhere/events",
    ],
)
async def test_unknown_ids_are_a_404_that_reveals_nothing(api, path) -> None:
    assert await get_json(api, path, 404) == {"error": "not found"}


async def test_unknown_ids_get_a_plain_404_page(api) -> None:
    async with api.get("/endpoints/eu-west/nope") as response:
        assert response.status == 404
    async with api.get("/regions/nowhere") as response:
        assert response.status == 404


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/api/v1/endpoints/eu-west/api/latency?window=5m", "got '5m'"),
        ("/api/v1/regions/eu-west/latency?window=1h", "got '1h'"),
        ("/api/v1/endpoints/eu-west/api/latency?windw=24h", "unknown query parameter 'windw'"),
        ("/api/v1/endpoints/eu-west/api?x=1", "unknown query parameter 'x'"),
    ],
)
async def test_bad_query_is_a_400_naming_the_value(api, path, fragment) -> None:
    body = await get_json(api, path, 400)
    assert fragment in body["error"]
    assert "24h, 7d, 30d" in body["error"] or "unknown query" in body["error"]


async def test_detail_api_and_pages_need_the_same_auth(start_daemon) -> None:
    base, _ = await start_daemon(auth={"bearer_token": "${API_TOKEN}"})
    paths = [
        "/api/v1/endpoints/eu-west/api",
        "/api/v1/endpoints/eu-west/api/latency",
        "/api/v1/endpoints/eu-west/api/events",
        "/api/v1/regions/eu-west",
        "/endpoints/eu-west/api",
        "/regions/eu-west",
        "/api/v1/endpoints/eu-west/nope",  # 401 before 404: no guessing ids unauthenticated
    ]
    async with aiohttp.ClientSession(base) as session:
        for path in paths:
            async with session.get(path) as response:
                assert response.status == 401, path
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        for path in paths[:-1]:
            async with session.get(path, headers=headers) as response:
                assert response.status == 200, path


# -- the page in Chromium ------------------------------------------------------------------------
@pytest.fixture
def chromium() -> str:
    return find_chromium()


CHART = "document.querySelector('svg.chart')"


async def _assert_endpoint_view(tab, window_points: int = 24) -> None:
    await tab.until(f"{CHART} && {CHART}.dataset.points === '{window_points}'")
    assert await tab.js(f"{CHART}.querySelectorAll('circle.pt.p95').length") == window_points
    assert await tab.js(f"{CHART}.querySelectorAll('path.series').length") == 3
    thresholds = await tab.js(
        f"[...{CHART}.querySelectorAll('line.threshold')].map(l => l.dataset.threshold)"
    )
    assert thresholds == ["warning", "critical"]
    assert await tab.js(f"{CHART}.querySelectorAll('rect.fail.bucket').length") == 1
    timeline = await tab.js("document.querySelector('.timeline').innerText")
    assert "Unhealthy" in timeline and OUTAGE_ERROR in timeline and "for 30m" in timeline
    assert "Alert fired: endpoint_down (critical)" in timeline
    assert "delivered to email" in timeline
    text = await tab.js("document.body.innerText")
    assert "Bearer ***" in text or "***" in text
    assert PROBE_TOKEN not in await tab.js("document.documentElement.outerHTML")
    assert "✓ [BODY].status == UP" in text
    # times are the viewer's; UTC on hover
    assert await tab.js("document.querySelector('.timeline time').title.endsWith(' UTC')")


async def test_detail_opens_from_a_click_on_the_overview(start_daemon, chromium, tmp_path) -> None:
    base, _ = await start_daemon()
    async with chromium_tab(chromium, tmp_path / "profile") as tab:
        await tab.open(base + "/")
        # keyboard: a history strip is one tab stop; arrows move between its days
        strip = "document.querySelector('[data-endpoint=\"eu-west/api\"] .history')"
        await tab.until(strip)
        await tab.js(f"{strip}.querySelector('.bar[tabindex=\"0\"]').focus()")
        today = await tab.js("document.activeElement.dataset.day")
        await tab.key("ArrowLeft")
        before = await tab.js("document.activeElement.getAttribute('aria-label')")
        assert before.endswith(("no data", "checks)")) and today not in before
        assert await tab.js(f"{strip}.querySelectorAll('.bar[tabindex=\"0\"]').length") == 1
        await tab.click('a[href="#/eu-west/api"]')
        await tab.until("location.hash === '#/eu-west/api'")
        await _assert_endpoint_view(tab)
        # keyboard: the chart takes focus and steps through its buckets
        await tab.js(f"{CHART}.focus()")
        await tab.key("ArrowRight")
        readout = await tab.until(
            "document.querySelector('[aria-live=polite].chart-legend').innerText"
        )
        assert "p95" in readout and "checks" in readout
        # the 30 s refresh redraws the view; the keyboard focus stays on the (new) chart
        await tab.js(f"(window.old = {CHART}, refresh())")
        await tab.until(f"{CHART} !== window.old && document.activeElement === {CHART}")
        # the window switch
        await tab.click('button[data-window="7d"]')
        await tab.until(f"{CHART} && {CHART}.dataset.points === '7'")
        # back to the overview, then a region from its heading
        await tab.click('a[href="#/"]')
        await tab.until("document.querySelectorAll('[data-region]').length === 2")
        await tab.click('a[href="#/eu-west"]')
        await tab.until("document.querySelector('.detail-head[data-region=\"eu-west\"]')")
        # the window chosen stays chosen
        await tab.until(f"{CHART} && {CHART}.dataset.points === '7'")
        timeline = await tab.until("document.querySelector('.timeline')?.innerText")
        assert "Regional failure: every endpoint down" in timeline and "for 30m" in timeline
        rows = await tab.js(
            "[...document.querySelectorAll('tr[data-endpoint]')].map(r => r.dataset.endpoint)"
        )
        assert rows == ["eu-west/api", "eu-west/web"]
        assert tab.console == []


async def test_detail_opens_from_its_url(start_daemon, chromium, tmp_path) -> None:
    base, _ = await start_daemon()
    async with chromium_tab(chromium, tmp_path / "profile") as tab:
        await tab.open(base + "/endpoints/eu-west/api")
        await _assert_endpoint_view(tab)
        await tab.open(base + "/#/eu-west/api")
        await _assert_endpoint_view(tab)
        await tab.open(base + "/regions/us-east")
        await tab.until("document.querySelector('.detail-head[data-region=\"us-east\"]')")
        await tab.open(base + "/#/eu-west/nope")
        await tab.until("document.body.innerText.includes('No such endpoint.')")
        assert tab.console == []


@pytest.mark.parametrize("path", ["/", "/endpoints/eu-west/api", "/regions/eu-west"])
async def test_a_390px_screen_needs_no_horizontal_scroll(
    start_daemon, chromium, tmp_path, path
) -> None:
    base, _ = await start_daemon()
    async with chromium_tab(chromium, tmp_path / "profile") as tab:
        await tab.size(390, 844)
        await tab.open(base + path)
        await tab.until("document.querySelector('#page .card:not(.placeholder)')")
        if path != "/":
            await tab.until(CHART)
        widths = await tab.js("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths == [390, 390], f"page is {widths[0]}px wide at {widths[1]}px"
        wide = await tab.js(
            "[...document.querySelectorAll('#page *')]"
            ".filter(n => n.getBoundingClientRect().right > 391)"
            ".map(n => n.tagName + '.' + (n.className.baseVal ?? n.className)).slice(0, 5)"
        )
        assert wide == []
        png = await tab.screenshot(tmp_path / "narrow.png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24])[0] == 390


async def test_dark_mode_follows_the_browser(start_daemon, chromium, tmp_path) -> None:
    base, _ = await start_daemon()
    async with chromium_tab(chromium, tmp_path / "profile") as tab:
        background = "getComputedStyle(document.body).backgroundColor"
        await tab.open(base + "/endpoints/eu-west/api")
        await tab.until(CHART)
        assert await tab.js(background) == "rgb(245, 246, 248)"
        await tab.send(
            "Emulation.setEmulatedMedia",
            features=[{"name": "prefers-color-scheme", "value": "dark"}],
        )
        assert await tab.js(background) == "rgb(13, 17, 23)"
        label = await tab.js(f"{CHART}.getAttribute('aria-label')")
        assert "warning threshold 200 ms" in label and "critical threshold 1000 ms" in label


async def test_times_are_the_viewers_with_utc_on_hover(start_daemon, chromium, tmp_path) -> None:
    base, staged = await start_daemon()
    async with chromium_tab(chromium, tmp_path / "profile") as tab:
        # +13:45 (+12:45 in its winter): no hour of it reads like UTC's
        await tab.send("Emulation.setTimezoneOverride", timezoneId="Pacific/Chatham")
        await tab.open(base + "/endpoints/eu-west/api")
        await tab.until("document.querySelector('.timeline time')")
        times = await tab.js(
            "[...document.querySelectorAll('.timeline li[data-type=status] time')]"
            ".map(t => [t.dateTime, t.textContent, t.title])"
        )
        down = datetime.fromtimestamp(staged.outage_start, UTC)
        iso = down.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        shown = {when: (text, title) for when, text, title in times}
        assert iso in shown, times
        text, title = shown[iso]
        local = down.astimezone(ZoneInfo("Pacific/Chatham"))
        assert f"{local.hour % 12 or 12}:{local.minute:02d}" in text
        assert title == down.strftime("%Y-%m-%d %H:%M:%S UTC")


async def test_ten_thousand_points_stay_readable(chromium, tmp_path) -> None:
    """An API with 10,000 buckets and 10,000 failed checks: the page bins them to its width,
    keeps the one spike, and draws no more marks than there are pixels."""
    start = int(time.time() // 60 * 60) - 10_000 * 60
    points = [
        {
            "start": datetime.fromtimestamp(start + i * 60, UTC).isoformat(),
            "checks": 1,
            "failures": 1,
            "p50_ms": 10.0,
            "p95_ms": 5000.0 if i == 4321 else 20.0,
            "p99_ms": 5000.0 if i == 4321 else 30.0,
            "max_ms": 30.0,
        }
        for i in range(10_000)
    ]
    failures = [
        {"ts": p["start"], "latency_ms": 900.0, "error": "timeout", "error_detail": "x"}
        for p in points
    ]
    series = {
        "window": "24h",
        "bucket_s": 60,
        "points": points,
        "failures": failures,
        "thresholds": {"warning_ms": 200.0, "critical_ms": 1000.0},
    }
    info = {"region": "r", "endpoint": "e", "kind": "http", "status": "healthy", "check": {}}
    answers = {"": info, "/latency": series, "/events": {"events": []}}

    async def page(_request: web.Request) -> web.Response:
        return web.Response(body=PAGE, content_type="text/html", charset="utf-8")

    async def api(request: web.Request) -> web.Response:
        return web.json_response(answers[request.match_info["rest"]])

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/api/v1/endpoints/r/e{rest:(|/latency|/events)}", api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/#/r/e"
        async with chromium_tab(chromium, tmp_path / "profile") as tab:
            await tab.size(1280, 1000)
            await tab.open(base)
            await tab.until(f"{CHART} && {CHART}.dataset.points === '10000'")
            width = await tab.js(f"{CHART}.viewBox.baseVal.width")
            drawn = int(await tab.js(f"{CHART}.dataset.drawn"))
            assert 100 < drawn <= width / 2
            vertices = await tab.js(
                f"{CHART}.querySelector('path.p99').getAttribute('d').split(/[ML]/).length - 1"
            )
            assert vertices == drawn
            assert await tab.js(f"{CHART}.querySelectorAll('circle').length") == 0
            ticks = await tab.js(f"{CHART}.querySelectorAll('rect.fail.tick').length")
            assert 0 < ticks <= width
            counted = await tab.js(
                f"[...{CHART}.querySelectorAll('rect.fail.tick')]"
                ".reduce((n, r) => n + Number(r.dataset.count), 0)"
            )
            assert counted == 10_000
            label = await tab.js(f"{CHART}.getAttribute('aria-label')")
            assert "highest p99 5000 ms" in label and "10000 failed checks" in label
            assert tab.console == []
    finally:
        await runner.cleanup()
