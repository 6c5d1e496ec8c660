"""A flood of /metrics scrapes, half of them abandoned at once, against the real daemon: the
work it costs is bounded, every answer is whole or a 503, and probing goes on unharmed.

Once each request took a thread and queued for the one render pipe, and aiohttp rendered for
clients long gone: 50 clients left 148 of 150 scrapes unanswered and probing starved."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import aiohttp
import yaml
from polling import until
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

ENDPOINTS = 10
ROUNDS = 4
CLIENTS = 50  # of each kind per round: scrapers that hang up, scrapers that read the answer
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def counter(text: str, name: str) -> float:
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def hang_up(port: int) -> None:
    """Ask for /metrics and hang up without waiting for the answer."""
    with contextlib.suppress(OSError):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()


async def scrape(session: aiohttp.ClientSession, url: str, openmetrics: bool) -> bool:
    """One whole scrape: a complete exposition (True), or a 503 with Retry-After (False)."""
    headers = {"Accept": OPENMETRICS} if openmetrics else {}
    async with asyncio.timeout(60), session.get(url, headers=headers) as response:
        if response.status == 503:
            assert response.headers["Retry-After"] == "1"
            return False
        assert response.status == 200, await response.text()
        text = await response.text()
    if openmetrics:
        assert text.endswith("# EOF\n")
        families = list(openmetrics_families(text))
    else:
        families = list(text_string_to_metric_families(text))
    success = next(f for f in families if f.name == "healthcheck_probe_success")
    assert len(success.samples) == ENDPOINTS
    return True


async def still_answers(session: aiohttp.ClientSession, base: str) -> None:
    """/healthz and a storage read answer while the scrapes pile in."""
    async with asyncio.timeout(60):
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/api/v1/results?limit=5") as response:
            assert response.status == 200, await response.text()
            assert len((await response.json())["results"]) == 5


async def flood(base: str, port: int) -> tuple[int, float, float]:
    """ROUNDS rounds of CLIENTS hang-ups and CLIENTS whole scrapes at once, with /healthz and
    a storage read beside them: (whole expositions, renders made, scrapes shared)."""
    url = f"{base}/metrics"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with session.get(url) as response:
            before = await response.text()
        whole = 0
        for _ in range(ROUNDS):
            outcomes = await asyncio.gather(
                *(hang_up(port) for _ in range(CLIENTS)),
                *(scrape(session, url, openmetrics=i % 2 == 1) for i in range(CLIENTS)),
                still_answers(session, base),
            )
            whole += sum(1 for outcome in outcomes if outcome is True)
        async with session.get(url) as response:
            after = await response.text()
    renders, shared = (
        counter(after, name) - counter(before, name)
        for name in (
            "healthcheck_exporter_renders_total",
            "healthcheck_exporter_scrapes_shared_total",
        )
    )
    return whole, renders, shared


async def test_a_scrape_flood_costs_bounded_renders_and_no_verdict(
    fleet, tmp_path, follow_log, start_daemon
) -> None:
    database = tmp_path / "hc.db"
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # Limits a busy one-core machine does not cross by accident: what is asserted
                # is that a scrape flood does not push checks over them.
                "defaults": {
                    "interval": "2s",
                    "timeout": "2s",
                    "retries": 0,
                    "latency": {"warning": "1s", "critical": "2s"},
                },
                "exporter": {"listen": "127.0.0.1:0"},
                "storage": {"path": str(database)},
                "regions": {
                    "r": {
                        "endpoints": [
                            {"name": f"e{i}", "url": f"{fleet.http}/ok"} for i in range(ENDPOINTS)
                        ]
                    }
                },
            }
        )
    )
    process = await start_daemon(config)
    log = follow_log(process)
    try:
        await until(
            lambda: log.events("listening") and len(log.events("status_change")) == ENDPOINTS,
            timeout=60,
        )
        base = f"http://127.0.0.1:{log.port}"
        hits_before = fleet.hits.count("/ok")
        # The clients run on an event loop of their own, in a thread: the fleet's loop (this
        # one) must answer the daemon's checks promptly, or the target itself would be slow.
        whole, renders, shared = await asyncio.to_thread(asyncio.run, flood(base, log.port))
        asked = ROUNDS * CLIENTS * 2
        assert whole > 0
        assert renders < asked / 10, (renders, asked)  # shared, not one each
        assert shared > 0
        # Probing went on through the flood: every endpoint checked again, several times.
        await until(lambda: fleet.hits.count("/ok") >= hits_before + 3 * ENDPOINTS, timeout=60)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 20)
        await log.closed()
    changes = log.events("status_change")
    assert [e["status"] for e in changes] == ["healthy"] * ENDPOINTS, [
        e for e in changes if e["status"] != "healthy"
    ]
    assert not log.other  # no tracebacks, no "Task exception was never retrieved"
    with sqlite3.connect(database) as db:
        checks, failed = db.execute("SELECT count(*), sum(ok = 0) FROM results").fetchone()
    assert checks > 0 and failed == 0
