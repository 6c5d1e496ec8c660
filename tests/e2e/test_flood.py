"""A connection flood on the exporter, and a prober out of file descriptors: neither is a
verdict about any target. The real daemon runs under a small open-file limit (RLIMIT_NOFILE),
so what once took 1,100 connections takes a few hundred here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3

import aiohttp
import pytest
import yaml
from aiohttp import web
from polling import until

NOFILE = 256  # the daemon's open-file limit, soft and hard
SLOW_PEERS = 400  # more slow-loris connections than the daemon has descriptors


@pytest.fixture
async def slow_target():
    """The URL of a page that answers after 1.5 s: each check holds a socket that long."""
    app = web.Application()

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="ok")

    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/slow"
    await runner.cleanup()


def slow_fleet(url: str, database, endpoints: int = 60, **extra) -> dict:
    """`endpoints` endpoints on the slow page, with latency limits it stays within."""
    return {
        "defaults": {
            "interval": "2s",
            "timeout": "2s",
            "retries": 0,
            "latency": {"warning": "1900ms", "critical": "2s"},
        },
        "exporter": {"listen": "127.0.0.1:0"},
        "storage": {"path": str(database)},
        "regions": {"r": {"endpoints": [{"name": f"e{i}", "url": url} for i in range(endpoints)]}},
        **extra,
    }


async def slow_loris(port: int, stop: asyncio.Event, closed: list[float]) -> None:
    """Open a request and send one more header line every 0.3 s, never finishing it; note when
    the server closes the connection."""
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed.append(loop.time())  # refused outright: the server kept its descriptors
        return
    try:
        writer.write(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
        line = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    if await reader.read(1024) == b"":
                        closed.append(loop.time())
                        return
            line += 1
            writer.write(f"X-Slow-{line}: {'a' * 20}\r\n".encode())
            await writer.drain()
    except OSError:
        closed.append(loop.time())
    finally:
        writer.close()


async def test_a_slow_loris_flood_blinds_no_probe_and_healthz_answers(
    fleet, tmp_path, follow_log, start_daemon
) -> None:
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # Latency limits a busy machine cannot cross by accident: this test is about
                # file descriptors, not the prober's speed.
                "defaults": {
                    "interval": "2s",
                    "timeout": "2s",
                    "retries": 0,
                    "latency": {"warning": "1s", "critical": "2s"},
                },
                "scheduler": {"max_concurrency": 20},
                "exporter": {"listen": "127.0.0.1:0", "read_timeout": "1s"},
                "storage": {"path": str(tmp_path / "hc.db")},
                "regions": {
                    "r": {
                        "endpoints": [
                            {"name": f"e{i}", "url": f"{fleet.http}/ok"} for i in range(10)
                        ]
                    }
                },
            }
        )
    )
    process = await start_daemon(config, open_files=NOFILE)
    log = follow_log(process)
    stop = asyncio.Event()
    closed: list[float] = []
    peers: list[asyncio.Task[None]] = []
    try:
        await until(lambda: log.events("listening") and len(log.events("status_change")) == 10)
        assert {e["status"] for e in log.events("status_change")} == {"healthy"}
        cap = log.events("listening")[0]["max_connections"]
        assert cap < NOFILE - 20  # room kept for 20 probes in flight
        port = log.port
        peers = [asyncio.create_task(slow_loris(port, stop, closed)) for _ in range(SLOW_PEERS)]
        hits_before = fleet.hits.count("/ok")
        answered = 0
        # A fresh connection per look, as a health checker makes: a kept-alive one idles
        # between looks, and an idle connection is what the exporter evicts under a flood
        # (the client then writes to a connection the server has closed).
        fresh = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=fresh) as session:
            busy = 0
            while answered < 5:  # /healthz answers all through the flood
                async with (
                    asyncio.timeout(10),
                    session.get(f"http://127.0.0.1:{port}/healthz") as r,
                ):
                    # At the cap while the flood's peers are younger than the grace, a
                    # newcomer is told to come back (never reset, never left hanging).
                    assert r.status in (200, 503), r.status
                    if r.status == 503:
                        assert r.headers["Retry-After"] == "1"
                        busy += 1
                        assert busy < 20, "refused for ever"
                    else:
                        answered += 1
                await asyncio.sleep(0.3)
        # Probes kept running and stayed healthy: 10 endpoints, three rounds each.
        await until(lambda: fleet.hits.count("/ok") >= hits_before + 30)
        # Slow peers are closed after read_timeout, not held for ever.
        await until(lambda: len(closed) >= SLOW_PEERS // 2)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as r,
        ):
            metrics = await r.text()
    finally:
        stop.set()
        for peer in peers:
            peer.cancel()
        await asyncio.gather(*peers, return_exceptions=True)
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 20)
        await log.closed()
    changes = log.events("status_change")
    assert [e["status"] for e in changes] == ["healthy"] * 10, changes
    assert not [e for e in log.entries if "Too many open files" in str(e)]
    assert not log.other  # no tracebacks outside the JSON log
    assert len(log.entries) < 100  # a flood is told in a few lines, not one per connection
    dropped = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("healthcheck_exporter_connections_dropped_total")
    )
    assert dropped > 0


async def test_checks_the_prober_cannot_make_are_no_verdict(
    tmp_path, follow_log, slow_target, start_daemon
) -> None:
    """~150 checks held open at once by a slow target, in two probe workers under 64 file
    descriptors each (the limit is per process): some cannot get a socket. Those are the
    prober's fault: no endpoint turns unhealthy, no failure is stored, and the daemon says it
    is short of descriptors."""
    config = tmp_path / "regions.yaml"
    database = tmp_path / "hc.db"
    fleet = slow_fleet(slow_target, database, 200, scheduler={"workers": 2})
    config.write_text(yaml.safe_dump(fleet))
    process = await start_daemon(config, open_files=64)
    log = follow_log(process)
    try:
        await until(lambda: log.events("prober_fault"), timeout=30)
        await until(lambda: log.events("status_change"), timeout=30)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 20)
        await log.closed()
    fault = log.events("prober_fault")[0]
    assert "Too many open files" in fault["msg"] and "no verdict" in fault["msg"]
    assert {e["status"] for e in log.events("status_change")} == {"healthy"}
    with sqlite3.connect(database) as db:
        stored = db.execute("SELECT count(*), sum(ok = 0) FROM results").fetchone()
    assert stored[0] > 0 and stored[1] == 0  # real results kept; no failure blamed on a target


async def test_once_makes_again_the_checks_the_prober_could_not(
    tmp_path, slow_target, run_cli
) -> None:
    """`--once` over 60 slow endpoints under 64 file descriptors: the checks that got no
    socket are made again with fewer at a time, and every endpoint is reported healthy."""
    config = tmp_path / "regions.yaml"
    config.write_text(yaml.safe_dump(slow_fleet(slow_target, tmp_path / "hc.db")))
    done = await run_cli("--once", "--config", str(config), "--format", "json", open_files=64)
    report = json.loads(done.stdout)
    assert {r["status"] for r in report["results"]} == {"healthy"}, done.stderr
    assert len(report["results"]) == 60 and done.code == 0
