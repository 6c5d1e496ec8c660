"""The daemon as a scrape target and a page: promtool, a real Prometheus, real Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import yaml
from browser import RenderedPage, dump_dom, find_chromium
from prometheus_client.parser import text_string_to_metric_families
from tools import require


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def running_daemon(start_daemon, tmp_path, document: dict) -> AsyncIterator[str]:
    """A real `healthcheck run` of `document` (listening on a free port): its base URL."""
    config = tmp_path / "regions.yaml"
    document = {
        "exporter": {"listen": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "hc.db")},
        **document,
    }
    config.write_text(yaml.safe_dump(document))
    process = await start_daemon(config)
    port = None
    try:
        async with asyncio.timeout(15):
            while port is None:
                line = await process.stderr.readline()
                assert line, "the daemon exited before listening"
                event = json.loads(line)
                if event.get("event") == "listening":
                    port = event["port"]
        drain = asyncio.create_task(process.stderr.read())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
    drain.cancel()


@pytest.fixture
async def daemon_url(start_daemon, fleet, tmp_path, closed_port):
    """A real `healthcheck run` with one healthy, one failing and one refused endpoint."""
    document = {
        # A timeout a busy machine cannot hit on loopback: the tests assert the error classes.
        "defaults": {"interval": "1s", "timeout": "1s", "retries": 0},
        "regions": {
            "us-west": {"endpoints": [{"name": "api", "url": f"{fleet.http}/ok"}]},
            "eu-west": {
                "endpoints": [
                    {"name": "api", "url": f"{fleet.http}/fail"},
                    {"name": "db", "kind": "tcp", "address": f"127.0.0.1:{closed_port}"},
                ]
            },
        },
    }
    async with running_daemon(start_daemon, tmp_path, document) as url:
        yield url


class Prometheus:
    """A real Prometheus scraping one daemon, and its query API."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.api = f"http://127.0.0.1:{port}/api/v1/query"

    async def query(self, expr: str) -> list:
        async with self.session.get(self.api, params={"query": expr}) as response:
            body = await response.json()
            assert body["status"] == "success", body
            return body["data"]["result"]

    async def until_answered(self, expr: str, timeout: float = 30) -> list:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                found = await self.query(expr)
                if found:
                    return found
            except aiohttp.ClientError:
                pass  # Prometheus still starting
            assert asyncio.get_running_loop().time() < deadline, f"no answer for {expr}"
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def scraping(daemon_url: str, tmp_path, interval: str = "1s") -> AsyncIterator[Prometheus]:
    prometheus = require("prometheus", package="prometheus")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": interval, "evaluation_interval": interval},
                "scrape_configs": [
                    {
                        "job_name": "healthcheck",
                        "static_configs": [{"targets": [daemon_url.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            yield Prometheus(session, port)
    finally:
        process.terminate()
        await process.wait()


async def scrape(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.read()


def pairs(labels: dict[str, str], **more: str) -> frozenset:
    return frozenset({**labels, **more}.items())


def parsed(body: bytes) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def test_counters_are_there_at_zero_right_after_start(
    start_daemon, fleet, tmp_path, webhook
) -> None:
    """Every error class of every endpoint and every configured channel's notification
    counts are in the first scrape, at 0: the first failure is then an increase."""
    document = {
        "defaults": {"interval": "1h"},
        "regions": {
            "us": {
                "endpoints": [
                    {"name": "api", "url": f"{fleet.http}/ok"},
                    {"name": "db", "kind": "tcp", "address": fleet.http.removeprefix("http://")},
                ]
            }
        },
        "alerting": {"channels": {"hook": f"json://127.0.0.1:{webhook.port}/hook"}},
    }
    async with running_daemon(start_daemon, tmp_path, document) as url:
        found = parsed(await scrape(url))
    errors = {
        (labels["endpoint"], labels["error"]): count
        for (name, pairs), count in found.items()
        if name == "healthcheck_check_errors_total"
        for labels in [dict(pairs)]
    }
    assert set(errors.values()) == {0}
    assert {error for endpoint, error in errors if endpoint == "db"} >= {
        "timeout",
        "connection_refused",
        "condition_failed",
    }
    assert ("api", "http_status") in errors and ("db", "http_status") not in errors
    assert ("api", "prober") not in errors
    notifications = {
        dict(pairs)["result"]: count
        for (name, pairs), count in found.items()
        if name == "healthcheck_notifications_total" and ("channel", "hook") in pairs
    }
    assert notifications == {"sent": 0, "failed": 0, "timeout": 0}


async def test_a_real_prometheus_sees_the_first_error_as_an_increase(
    start_daemon, fleet, tmp_path
) -> None:
    """One short failure: Prometheus's increase() counts it (a counter born at its first
    error has no earlier sample, and increase() read 0)."""
    document = {
        "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
        "regions": {"us": {"endpoints": [{"name": "api", "url": f"{fleet.http}/switch/api"}]}},
    }
    errors = 'healthcheck_check_errors_total{endpoint="api",error="http_status"}'
    api = {"region": "us", "endpoint": "api", "kind": "http"}
    failed_key = ("healthcheck_check_errors_total", pairs(api, error="http_status"))
    success_key = ("healthcheck_checks_total", pairs(api, result="success"))

    async def daemon_sees_past(key: tuple[str, frozenset], than: float) -> dict:
        deadline = asyncio.get_running_loop().time() + 30
        while (found := parsed(await scrape(url))).get(key, 0) <= than:
            assert asyncio.get_running_loop().time() < deadline, f"{key} stayed at {than}"
            await asyncio.sleep(0.05)
        return found

    async with (
        running_daemon(start_daemon, tmp_path, document) as url,
        scraping(url, tmp_path, interval="250ms") as prometheus,
    ):
        await prometheus.until_answered(f"count_over_time({errors}[5m]) >= 2")  # 0 seen twice
        fleet.down.add("api")
        failed = (await daemon_sees_past(failed_key, 0))[failed_key]
        fleet.down.discard("api")
        # A check under way at the switch may still fail: wait for one that succeeds after it.
        succeeded = parsed(await scrape(url))[success_key]
        final = (await daemon_sees_past(success_key, succeeded))[failed_key]
        await prometheus.until_answered(f"{errors} == {final}")
        increase = await prometheus.query(f"increase({errors}[5m])")
        assert float(increase[0]["value"][1]) >= final >= failed > 0  # every one of them


async def promtool_check_metrics(body: bytes) -> None:
    promtool = require("promtool", package="prometheus")
    check = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await check.communicate(body)
    assert check.returncode == 0, out.decode()


async def test_blackbox_names_carry_over_dashboards_made_for_blackbox_exporter(
    start_daemon, fleet, tmp_path, closed_port
) -> None:
    """exporter.blackbox_names: probe_success, probe_duration_seconds, probe_http_status_code
    and probe_ssl_earliest_cert_expiry, with blackbox_exporter's meanings, per endpoint."""
    document = {
        # A timeout no busy machine reaches by accident: "web" must read up, not slow.
        "defaults": {"interval": "5s", "timeout": "5s", "retries": 0},
        "exporter": {"listen": "127.0.0.1:0", "blackbox_names": True},
        "regions": {
            "us": {
                "endpoints": [
                    {
                        "name": "web",
                        "url": f"{fleet.https_valid}/ok",
                        "tls": {"ca_file": fleet.ca_file},
                    },
                    {"name": "down", "url": f"http://127.0.0.1:{closed_port}/"},
                    {"name": "db", "kind": "tcp", "address": f"127.0.0.1:{closed_port}"},
                ]
            }
        },
    }
    async with running_daemon(start_daemon, tmp_path, document) as url:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            body = await scrape(url)
            found = parsed(body)
            checked = {dict(pairs)["endpoint"] for name, pairs in found if name == "probe_success"}
            if checked == {"web", "down", "db"}:
                break
            assert asyncio.get_running_loop().time() < deadline, f"only {checked} checked"
            await asyncio.sleep(0.05)
    await promtool_check_metrics(body)

    def seen(name: str, endpoint: str, kind: str = "http") -> float:
        return found[name, pairs({"region": "us", "endpoint": endpoint, "kind": kind})]

    assert (seen("probe_success", "web"), seen("probe_success", "down")) == (1, 0)
    assert seen("probe_success", "db", "tcp") == 0
    assert seen("probe_http_status_code", "web") == 200
    assert seen("probe_http_status_code", "down") == 0  # no answer, as blackbox says
    assert 0 < seen("probe_duration_seconds", "web") < 30
    assert seen("probe_ssl_earliest_cert_expiry", "web") > time.time()
    assert {name for name, labels in found if ("endpoint", "db") in labels} >= {
        "probe_success",
        "probe_duration_seconds",
    }


async def test_promtool_accepts_the_exposition(daemon_url) -> None:
    promtool = require("promtool", package="prometheus")
    # Every endpoint checked, so the families its checks fill have series, and the scheduler's
    # heartbeat read: however long a busy machine takes to get there.
    everyone = {("us-west", "api"), ("eu-west", "api"), ("eu-west", "db")}
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        body = await scrape(daemon_url)
        found = parsed(body)
        checked = {
            (labels["region"], labels["endpoint"])
            for name, labelled in found
            if name == "healthcheck_probe_duration_seconds_count"
            for labels in [dict(labelled)]
        }
        beating = ("healthcheck_scheduler_heartbeat_age_seconds", frozenset()) in found
        if checked == everyone and beating:
            break
        assert asyncio.get_running_loop().time() < deadline, (checked, beating)
        await asyncio.sleep(0.1)
    assert b"healthcheck_probe_success" in body
    check = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await check.communicate(body)
    assert check.returncode == 0, out.decode()


async def test_a_real_prometheus_scrapes_and_answers_queries(daemon_url, tmp_path) -> None:
    async with scraping(daemon_url, tmp_path) as prometheus:
        success = await prometheus.until_answered("healthcheck_probe_success")
        seen = {(s["metric"]["region"], s["metric"]["endpoint"]): s["value"][1] for s in success}
        assert seen == {
            ("us-west", "api"): "1",
            ("eu-west", "api"): "0",
            ("eu-west", "db"): "0",
        }
        up = await prometheus.until_answered('up{job="healthcheck"}')
        assert up[0]["value"][1] == "1"
        failure = await prometheus.until_answered("healthcheck_region_regional_failure == 1")
        assert [s["metric"]["region"] for s in failure] == ["eu-west"]
        errors = await prometheus.until_answered(
            "sum by (error) (healthcheck_check_errors_total) > 0"
        )
        assert {s["metric"]["error"] for s in errors} == {"http_status", "connection_refused"}
        rate = await prometheus.until_answered(
            'rate(healthcheck_probe_duration_seconds_count{region="us-west"}[5s]) > 0'
        )
        assert rate


async def until_all_checked(url: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{url}/api/v1/status") as response:
                regions = (await response.json())["regions"]
            rows = [row for region in regions for row in region["endpoints"]]
            if rows and all(row["status"] != "unknown" for row in rows):
                return
            assert asyncio.get_running_loop().time() < deadline, rows
            await asyncio.sleep(0.1)


async def test_the_status_page_renders_the_running_daemon(daemon_url, tmp_path) -> None:
    chromium = find_chromium()
    # Every endpoint checked once, however long the probe workers take to start.
    await until_all_checked(daemon_url)
    dom = await dump_dom(chromium, tmp_path / "profile", f"{daemon_url}/")
    page = RenderedPage(dom)
    assert sorted(page.regions) == ["eu-west", "us-west"]  # the page puts the worst first
    text = page.visible
    assert "REGIONAL FAILURE" in text
    for word in ("Healthy", "Unhealthy"):
        assert word in text
    assert "HTTP 503" in text or "HTTP 500" in text
    assert page.bars["us-west/api"] == 90 and page.bars["eu-west/db"] == 90
