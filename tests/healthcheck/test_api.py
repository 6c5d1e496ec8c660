"""The daemon's HTTP API against a running daemon with real storage on a random port."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sqlite3

import aiohttp
import pytest
from aiohttp import web

from healthcheck.config import parse_config
from healthcheck.daemon import Daemon, open_writer
from healthcheck.front import HttpFront


async def _ok(_r: web.Request) -> web.Response:
    return web.json_response({"status": "UP"})


async def _fail(_r: web.Request) -> web.Response:
    return web.Response(status=503)


@pytest.fixture
async def target_url():
    app = web.Application()
    app.router.add_get("/ok", _ok)
    app.router.add_get("/fail", _fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def start_daemon(tmp_path, target_url):
    """Start an in-process daemon with extra config; yields its base URL once results are stored."""
    started: list[tuple[Daemon, asyncio.Event, asyncio.Task]] = []

    async def start(**extra) -> str:
        document = {
            "defaults": {"interval": "100ms", "timeout": "90ms", "retries": 0},
            # Checks on this loop, as the targets are: with probe workers, a 90 ms timeout ran
            # in another process while this loop served the target and spawned the workers.
            "scheduler": {"workers": 1},
            "storage": {"path": str(tmp_path / "hc.db")},
            "exporter": {"listen": "127.0.0.1:0", **extra.pop("exporter", {})},
            "regions": {
                "us": {"endpoints": [{"name": "api", "url": f"{target_url}/ok"}]},
                "eu": {"endpoints": [{"name": "api", "url": f"{target_url}/fail"}]},
            },
            **extra,
        }
        config = parse_config(json.dumps(document), "test", {"API_TOKEN": "s3cret-token-value"})
        daemon = Daemon(config, open_writer(config.storage), front=HttpFront)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        started.append((daemon, stop, task))
        deadline = asyncio.get_running_loop().time() + 10
        while daemon.listening is None or daemon.storage.stats.written < 6:
            assert not task.done(), task.exception() if task.done() else None
            assert asyncio.get_running_loop().time() < deadline, "daemon did not get going"
            await asyncio.sleep(0.05)
        await daemon.uptime.refresh()
        return f"http://127.0.0.1:{daemon.listening[1]}"

    yield start
    for _daemon, stop, _task in started:
        stop.set()
    for _daemon, _stop, task in started:
        await task


@pytest.fixture
async def api(start_daemon):
    base = await start_daemon()
    async with aiohttp.ClientSession(base) as session:
        yield session
    await asyncio.sleep(0)


async def get_json(session: aiohttp.ClientSession, path: str, status: int = 200, **kw):
    async with session.get(path, **kw) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def test_health_and_readiness(api) -> None:
    assert (await get_json(api, "/healthz"))["status"] == "alive"
    assert (await get_json(api, "/readyz"))["status"] == "ready"


async def test_status_reports_live_state_and_stored_uptime(api) -> None:
    body = await get_json(api, "/api/v1/status")
    assert body["status"] == "unhealthy"
    regions = {region["name"]: region for region in body["regions"]}
    us, eu = regions["us"]["endpoints"][0], regions["eu"]["endpoints"][0]
    assert (us["status"], eu["status"]) == ("healthy", "unhealthy")
    assert eu["error"] == "http_status" and "503" in eu["error_detail"]
    assert us["uptime"]["24h"] == 1.0 and eu["uptime"]["24h"] == 0.0
    assert regions["eu"]["regional_failure"] is True
    assert len(us["history"]) == 90
    assert us["history"][-1]["uptime"] == 1.0 and us["history"][-1]["checks"] > 0
    assert us["history"][0] == {"day": us["history"][0]["day"], "uptime": None, "checks": 0}
    assert 0 < body["uptime"]["1h"] < 1


async def test_sla_status(api) -> None:
    body = await get_json(api, "/api/v1/sla/status")
    assert body["window"] == "30d" and body["target"] == 0.999
    by_region = {row["region"]: row for row in body["regions"]}
    assert by_region["us"]["met"] is True and by_region["us"]["error_budget_remaining"] == 1.0
    # Every eu check failed against 99.9 %: the budget is spent 1,000 times over, -999 (not
    # the float's -998.9999999999991).
    assert by_region["eu"]["met"] is False and by_region["eu"]["error_budget_remaining"] == -999
    assert body["overall"]["met"] is False
    one = await get_json(api, "/api/v1/sla/status?region=us&window=24h")
    assert [row["region"] for row in one["regions"]] == ["us"] and "overall" not in one


async def test_results_are_paginated_newest_first(api) -> None:
    first = await get_json(api, "/api/v1/results?endpoint=us/api&limit=2")
    assert len(first["results"]) == 2 and first["next_cursor"] is not None
    assert {row["endpoint"] for row in first["results"]} == {"api"}
    assert {row["region"] for row in first["results"]} == {"us"}
    second = await get_json(
        api, f"/api/v1/results?endpoint=us/api&limit=2&cursor={first['next_cursor']}"
    )
    assert max(r["id"] for r in second["results"]) < min(r["id"] for r in first["results"])
    recent = await get_json(api, "/api/v1/results?region=eu&since=1h")
    # all failed; on a loaded machine one may have timed out (90 ms) instead of seeing the 503
    assert recent["results"] and all(not r["ok"] for r in recent["results"])
    assert {r["region"] for r in recent["results"]} == {"eu"}
    assert "http_status" in {r["error"] for r in recent["results"]}
    future = await get_json(api, "/api/v1/results?since=2999-01-01T00:00:00Z")
    assert future == {"results": [], "next_cursor": None}


async def test_alerts_reads_alert_state(api, tmp_path) -> None:
    assert await get_json(api, "/api/v1/alerts") == {"alerts": []}
    with sqlite3.connect(tmp_path / "hc.db") as db:
        db.execute(
            "INSERT INTO alert_state (rule, target, state, severity, since, last_change,"
            " summary, labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                "endpoint_down",
                "eu/api",
                "firing",
                "critical",
                1,
                2,
                "down",
                '{"region": "eu", "notified": true, "labels": {"team": "payments"}}',
            ],
        )
    firing = await get_json(api, "/api/v1/alerts?state=firing&severity=critical")
    (alert,) = firing["alerts"]
    assert alert["target"] == "eu/api" and alert["labels"] == {"team": "payments"}
    assert alert["region"] == "eu" and alert["suppressed_by"] is None and "notified" not in alert
    assert await get_json(api, "/api/v1/alerts?state=resolved") == {"alerts": []}


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/api/v1/status?verbose=1", "unknown query parameter 'verbose'"),
        ("/api/v1/sla/status?window=1y", "window must be one of"),
        ("/api/v1/sla/status?region=mars", "unknown region 'mars'"),
        ("/api/v1/alerts?state=burning", "state must be one of"),
        ("/api/v1/alerts?severity=meh", "severity must be one of"),
        ("/api/v1/results?limit=0", "limit must be a whole number"),
        ("/api/v1/results?limit=abc", "limit must be a whole number"),
        ("/api/v1/results?limit=5000", "limit must be a whole number from 1 to 1000"),
        ("/api/v1/results?limit=-1", "limit must be"),
        ("/api/v1/results?cursor=x", "cursor must be"),
        ("/api/v1/results?since=yesterday", "since must be an ISO 8601 time"),
        ("/api/v1/results?endpoint=us/nope", "unknown endpoint 'nope'"),
        ("/api/v1/results?region=mars", "unknown region 'mars'"),
        ("/api/v1/results?endpoint=%00%ff", "unknown endpoint"),
        ("/api/v1/results?url=http://evil.example/", "unknown query parameter 'url'"),
    ],
)
async def test_bad_query_parameters_get_400_with_a_json_error(api, path, fragment) -> None:
    body = await get_json(api, path, status=400)
    assert fragment in body["error"]


async def test_metrics_text_and_openmetrics(api) -> None:
    async with api.get("/metrics") as response:
        text = await response.text()
        assert response.headers["Content-Type"].startswith("text/plain")
    assert 'healthcheck_probe_success{endpoint="api",kind="http",region="us"} 1.0' in text
    assert 'healthcheck_probe_success{endpoint="api",kind="http",region="eu"} 0.0' in text
    assert (
        'healthcheck_endpoint_status{endpoint="api",kind="http",region="eu",status="unhealthy"} 1.0'
        in text
    )
    assert 'healthcheck_region_regional_failure{region="eu"} 1.0' in text
    assert (
        'healthcheck_probe_http_status_code{endpoint="api",kind="http",region="eu"} 503.0' in text
    )
    assert (
        'healthcheck_check_errors_total{endpoint="api",error="http_status",kind="http",region="eu"}'
        in text
    )
    assert (
        'healthcheck_uptime_ratio{endpoint="api",kind="http",region="us",window="24h"} 1.0' in text
    )
    assert "healthcheck_schedule_lag_seconds_bucket" in text
    assert "healthcheck_storage_writable 1.0" in text
    assert 'healthcheck_build_info{python="' in text
    async with api.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    ) as response:
        body = await response.text()
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


async def test_metrics_are_gzipped_only_when_the_scraper_asks(api) -> None:
    """Prometheus asks for gzip: at 10,000 endpoints 23 MB of text is ~1 MB on the wire."""
    async with api.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    ) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        packed = await response.read()
    async with api.get("/metrics", headers={"Accept-Encoding": "identity"}) as response:
        assert "Content-Encoding" not in response.headers
        plain = await response.read()
    unpacked = gzip.decompress(packed)
    assert len(packed) < len(plain) and b"healthcheck_probe_success{" in unpacked
    # the same series (values move between the two scrapes)
    assert [line.split(b" ")[0] for line in unpacked.splitlines()] == [
        line.split(b" ")[0] for line in plain.splitlines()
    ]


async def test_self_reports_the_daemons_own_numbers(api) -> None:
    """What an operator (or bench/) reads to see whether the daemon keeps up, and at what cost."""
    async with api.get("/api/v1/self") as response:
        assert response.status == 200
        report = await response.json()
    scheduler, process = report["scheduler"], report["process"]
    assert report["endpoints"] == 2
    assert scheduler["running"] is True
    assert scheduler["completed"] >= 6 and scheduler["dispatched"] >= scheduler["completed"]
    assert scheduler["skipped_overrun"] >= 0
    lag = scheduler["lag_seconds"]
    assert 0 <= lag["p50"] <= lag["p99"] <= lag["max"] < 5
    assert process["rss_bytes"] > 10 * 2**20 and process["open_fds"] > 3
    assert process["asyncio_tasks"] >= 3 and process["cpu_seconds"] > 0
    assert report["storage"]["written"] >= 6 and report["storage"]["writable"] is True
    async with api.get("/api/v1/self", params={"verbose": "1"}) as response:
        assert response.status == 400
    async with api.get("/metrics") as response:
        text = await response.text()
    for name in (
        "healthcheck_checks_dispatched_total",
        "healthcheck_checks_missed_total",
        "healthcheck_asyncio_tasks",
        "process_resident_memory_bytes",
        "process_open_fds",
    ):
        assert f"\n{name} " in text, name


async def test_bearer_auth_guards_the_api_but_not_health_or_metrics(start_daemon) -> None:
    base = await start_daemon(exporter={"auth": {"bearer_token": "${API_TOKEN}"}})
    async with aiohttp.ClientSession(base) as session:
        async with session.get("/api/v1/status") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with session.get("/", headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        headers = {"Authorization": "Bearer s3cret-token-value"}
        assert (await get_json(session, "/api/v1/status", headers=headers))["regions"]
        async with session.get("/metrics") as response:
            assert response.status == 200
            assert "s3cret" not in await response.text()
        assert (await get_json(session, "/healthz"))["status"] == "alive"


async def test_basic_auth_can_protect_metrics_too(start_daemon) -> None:
    base = await start_daemon(
        exporter={"auth": {"username": "ops", "password": "${API_TOKEN}"}, "protect_metrics": True}
    )
    good = "Basic " + base64.b64encode(b"ops:s3cret-token-value").decode()
    bad = "Basic " + base64.b64encode(b"ops:nope").decode()
    async with aiohttp.ClientSession(base) as session:
        for headers, expected in (
            ({}, 401),
            ({"Authorization": bad}, 401),
            ({"Authorization": "Basic !!"}, 401),
            ({"Authorization": good}, 200),
        ):
            async with session.get("/metrics", headers=headers) as response:
                assert response.status == expected
        assert (await get_json(session, "/readyz"))["status"] == "ready"


async def test_unknown_api_paths_and_methods_get_a_json_error(api) -> None:
    body = await get_json(api, "/api/v1/statuss", status=404)
    assert body["error"] == "no such API path: GET /api/v1/statuss"
    assert "/api/v1/status" in body["paths"]
    async with api.post("/api/v1/status") as response:
        assert response.status == 405
        assert "(only GET)" in (await response.json())["error"]
    async with api.get("/nope") as response:  # outside the API: the plain 404
        assert response.status == 404


async def test_a_secret_never_appears_in_any_page_api_or_metric(start_daemon, target_url) -> None:
    """The token is in a URL, a header and an Apprise channel URL; nothing served shows it."""
    base = await start_daemon(
        regions={
            "us": {
                "endpoints": [
                    {
                        "name": "api",
                        "url": f"{target_url}/ok?key=${{API_TOKEN}}",
                        "headers": {"Authorization": "Bearer ${API_TOKEN}"},
                    }
                ]
            },
            "eu": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:1/?k=${API_TOKEN}"}]},
        },
        alerting={"channels": {"slack": "json://127.0.0.1:1/${API_TOKEN}"}},
    )
    pages = [
        "/",
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v1/status",
        "/api/v1/sla/status",
        "/api/v1/alerts",
        "/api/v1/results?limit=1000",
        "/api/v1/nope",
        "/endpoints/us/api",
        "/api/v1/endpoints/us/api",
        "/api/v1/endpoints/us/api/latency",
        "/api/v1/endpoints/us/api/events",
        "/api/v1/endpoints/eu/api",
        "/api/v1/endpoints/eu/api/latency?window=30d",
        "/api/v1/endpoints/eu/api/events",
        "/api/v1/regions/eu",
        "/api/v1/regions/eu/events",
    ]
    async with aiohttp.ClientSession(base) as session:
        for page in pages:
            async with session.get(page) as response:
                text = await response.text()
            assert response.status < 500, page
            assert "s3cret-token-value" not in text, page
