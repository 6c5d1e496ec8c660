"""Many clients on /api/v1/status at once, against the real daemon with its checks on the same
loop (scheduler.workers: 1): every answer is whole, consistent JSON or a 503 with Retry-After,
and the daemon goes on checking meanwhile.

The status JSON was once built on the event loop for each request: at 1,000 endpoints one took
seconds, during which no check ran and no other request was answered."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from typing import Any

import aiohttp
import yaml
from polling import until

ENDPOINTS = 12
CLIENTS = 50  # per round: status readers, and a few results readers beside them
RESULTS_EVERY = 5  # one client in this many reads /api/v1/results instead


async def read(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """One whole JSON answer, or None for a 503 that says when to come back."""
    async with asyncio.timeout(60), session.get(url) as response:
        if response.status == 503:
            assert response.headers["Retry-After"] == "1"
            assert "busy" in (await response.json())["error"]
            return None
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        body: dict[str, Any] = await response.json()
        return body


def check_status(body: dict[str, Any]) -> float:
    """A status answer that holds together; the oldest endpoint's last check in it."""
    assert body["status"] == "healthy"
    [region] = body["regions"]
    assert region["name"] == "r" and region["status"] == "healthy"
    assert region["regional_failure"] is False
    rows = region["endpoints"]
    assert [row["endpoint"] for row in rows] == [f"e{i}" for i in range(ENDPOINTS)]
    for row in rows:
        assert row["status"] == "healthy" and row["error"] is None, row
        assert row["last_check"] is not None and row["latency_ms"] is not None
        assert set(row["uptime"]) == set(row["p95_ms"]) == set(body["uptime"])
        assert len(row["history"]) == 90
    return min(datetime.fromisoformat(row["last_check"]).timestamp() for row in rows)


async def flood(base: str) -> tuple[int, int, list[float]]:
    """Rounds of CLIENTS readers at once until every endpoint has been checked again since the
    first round's answers: (whole status answers, 503s, oldest last check per round)."""
    status_url, results_url = f"{base}/api/v1/status", f"{base}/api/v1/results?limit=5"
    whole = busy = 0
    oldest: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while True:
            answers = await asyncio.gather(
                *(
                    read(session, results_url if i % RESULTS_EVERY == 0 else status_url)
                    for i in range(CLIENTS)
                )
            )
            statuses = []
            for i, answer in enumerate(answers):
                if answer is None:
                    busy += 1
                elif i % RESULTS_EVERY == 0:
                    assert len(answer["results"]) == 5 and answer["next_cursor"] is not None
                    assert all(row["ok"] is True for row in answer["results"])
                else:
                    statuses.append(answer)
            whole += len(statuses)
            if statuses:
                oldest.append(min(check_status(body) for body in statuses))
            if len(oldest) >= 2 and oldest[-1] > oldest[0]:
                return whole, busy, oldest
            assert loop.time() < deadline, f"checks did not advance under load: {oldest}"


async def test_status_flood_gets_whole_answers_while_checks_go_on(
    fleet, tmp_path, follow_log, start_daemon
) -> None:
    database = tmp_path / "hc.db"
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # Limits a busy one-core machine does not cross by accident: what is asserted
                # is that an API flood does not push checks over them.
                "defaults": {
                    "interval": "2s",
                    "timeout": "2s",
                    "retries": 0,
                    "latency": {"warning": "1s", "critical": "2s"},
                },
                "scheduler": {"workers": 1},  # the checks share the loop that serves the API
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
        # Enough stored for a page of results before the flood reads them.
        await until(lambda: fleet.hits.count("/ok") >= 2 * ENDPOINTS, timeout=60)
        base = f"http://127.0.0.1:{log.port}"
        hits_before = fleet.hits.count("/ok")
        # The clients run on an event loop of their own, in a thread: the fleet's loop (this
        # one) must answer the daemon's checks promptly, or the target itself would be slow.
        whole, _busy, oldest = await asyncio.to_thread(asyncio.run, flood(base))
        assert whole > 0
        assert oldest[-1] > oldest[0]  # every endpoint checked again while the flood went on
        await until(lambda: fleet.hits.count("/ok") >= hits_before + ENDPOINTS, timeout=60)
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
