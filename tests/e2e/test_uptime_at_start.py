"""A restarted daemon shows the uptime it has stored from its first answer: no gap in Grafana
while the first read of the database is under way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from live_daemon import live_daemon
from prometheus_client.parser import text_string_to_metric_families

from healthcheck.result import ErrorClass, ProbeResult, Status
from storage.writer import StorageWriter


@pytest.fixture
async def listening_port() -> AsyncIterator[int]:
    """A loopback port that accepts connections: the endpoint's checks all pass."""
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


def seed(path: str) -> None:
    """400 checks in the last hour, 3 in 4 of them passing, written by the storage layer."""
    writer = StorageWriter(path)
    writer.start()
    now = time.time()
    for step in range(400):
        ok = step % 4 != 0
        result = ProbeResult(
            "eu",
            "db",
            "tcp",
            ok,
            0.005,
            now - 120 - step * 5,
            error=None if ok else ErrorClass.CONNECTION_REFUSED,
            error_text=None if ok else "connection refused",
        )
        writer.submit(result, Status.HEALTHY if ok else Status.UNHEALTHY)
    writer.close()


async def test_first_scrape_and_api_read_carry_the_stored_uptime(tmp_path, listening_port) -> None:
    seed(str(tmp_path / "hc.db"))
    document = {
        # One check an hour, spread over it: at most one passing check joins the 400 stored.
        "defaults": {"interval": "1h", "timeout": "1s", "retries": 0},
        "regions": {
            "eu": {
                "endpoints": [
                    {"name": "db", "kind": "tcp", "address": f"127.0.0.1:{listening_port}"}
                ]
            }
        },
    }
    async with live_daemon(tmp_path, document) as daemon, aiohttp.ClientSession() as session:
        scrape, api = await asyncio.gather(
            session.get(f"{daemon.url}/metrics"), session.get(f"{daemon.url}/api/v1/status")
        )
        async with scrape, api:
            assert scrape.status == 200 and api.status == 200
            text, status = await scrape.text(), await api.json()

    found = {
        (sample.name, sample.labels.get("window")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("healthcheck_uptime_ratio", "healthcheck_region_uptime_ratio")
    }
    for window in ("1h", "24h", "7d", "30d"):
        for name in ("healthcheck_uptime_ratio", "healthcheck_region_uptime_ratio"):
            assert (name, window) in found, f"{name}{{window={window}}} missing:\n{text}"
            assert found[(name, window)] == pytest.approx(0.75, abs=0.002)
    region = status["regions"][0]
    assert region["uptime"]["24h"] == pytest.approx(0.75, abs=0.002)
    assert region["endpoints"][0]["uptime"]["1h"] == pytest.approx(0.75, abs=0.002)
