"""Alerting through a running daemon: real SMTP and webhook receivers, restarts, inhibition."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from aiohttp import web
from in_process import Running
from polling import until

from healthcheck.config import parse_config

FAILING = web.AppKey("failing", set)


async def toggled(request: web.Request) -> web.Response:
    if request.path in request.app[FAILING]:
        return web.Response(status=500)
    return web.Response(text="ok")


@pytest.fixture
async def fleet():
    app = web.Application()
    app[FAILING] = set()
    app.router.add_get("/{name}", toggled)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", app[FAILING]
    await runner.cleanup()


def config_for(base: str, webhook, smtp_port: int, db: str, **rules):
    return parse_config(
        json.dumps(
            {
                "defaults": {"interval": "100ms", "timeout": "90ms", "retries": 0},
                "scheduler": {"workers": 1},
                "storage": {"path": db},
                "exporter": {"listen": "127.0.0.1:0"},
                "alerting": {
                    "channels": {
                        "slack": f"json://127.0.0.1:{webhook.port}/slack",
                        "email": f"mailto://127.0.0.1:{smtp_port}?from=hc@example.com&to=ops@example.com&mode=insecure",
                    },
                    "rules": {
                        "failure_threshold": 3,
                        "success_threshold": 2,
                        "error_rate_min_checks": 100_000,  # its own test; noise here
                        **rules,
                    },
                },
                "regions": {
                    "eu": {
                        "endpoints": [
                            {"name": "api", "url": f"{base}/eu-api"},
                            {"name": "web", "url": f"{base}/eu-web"},
                        ]
                    },
                    "us": {"endpoints": [{"name": "api", "url": f"{base}/us-api"}]},
                },
            }
        ),
        "test",
        {},
    )


def titles(webhook) -> list[str]:
    return [r["body"]["title"] for r in webhook.received]


async def test_down_fires_to_slack_and_email_then_resolves(fleet, webhook, smtp, tmp_path) -> None:
    base, failing = fleet
    port, mailbox = smtp
    await webhook.up()
    running = Running(config_for(base, webhook, port, str(tmp_path / "hc.db")))
    try:
        failing.add("/us-api")
        await until(lambda: any("FIRING" in t for t in titles(webhook)))
        await until(lambda: mailbox.messages)
        assert titles(webhook)[0] == "[FIRING:critical] endpoint_down us/api"
        assert "us/api is down: HTTP 500" in webhook.received[0]["body"]["message"]
        assert "Subject: [FIRING:critical] endpoint_down us/api" in mailbox.messages[0]
        failing.clear()
        await until(lambda: any("RESOLVED" in t for t in titles(webhook)))
        assert titles(webhook) == [
            "[FIRING:critical] endpoint_down us/api",
            "[RESOLVED:critical] endpoint_down us/api",
        ]
        assert webhook.received[1]["body"]["type"] == "success"
        assert running.daemon.evaluator.firing() == {"critical": 0, "warning": 0, "info": 0}
    finally:
        await running.close()


async def test_restart_mid_incident_neither_repages_nor_loses_the_resolve(
    fleet, webhook, smtp, tmp_path
) -> None:
    base, failing = fleet
    port, _ = smtp
    await webhook.up()
    config = config_for(base, webhook, port, str(tmp_path / "hc.db"))
    failing.add("/us-api")
    first = Running(config)
    await until(lambda: titles(webhook) == ["[FIRING:critical] endpoint_down us/api"])
    await first.close()
    second = Running(config)
    try:
        await asyncio.sleep(1.5)  # still failing, over several evaluations
        assert titles(webhook) == ["[FIRING:critical] endpoint_down us/api"]
        assert second.daemon.evaluator.firing()["critical"] == 1
        failing.clear()
        await until(lambda: len(titles(webhook)) == 2)
        assert titles(webhook)[1] == "[RESOLVED:critical] endpoint_down us/api"
    finally:
        await second.close()


async def test_regional_failure_absorbs_its_endpoints_into_one_message(
    fleet, webhook, smtp, tmp_path
) -> None:
    base, failing = fleet
    port, _ = smtp
    await webhook.up()
    config = config_for(
        base,
        webhook,
        port,
        str(tmp_path / "hc.db"),
        failure_threshold=8,
        regional_failure_for="200ms",
    )
    running = Running(config)
    try:
        # Every endpoint checked (healthy) first, however long the probe workers take to start.
        await until(lambda: len(running.daemon.board.latest) == 3, 60)
        failing.update({"/eu-api", "/eu-web"})
        await until(
            lambda: running.daemon.evaluator.firing()["critical"] == 3
        )  # region + 2 endpoints
        await asyncio.sleep(1.2)
        sent = titles(webhook)
        assert sent == ["[FIRING:critical] regional_failure eu"], sent
        body = webhook.received[0]["body"]["message"]
        assert "all 2 endpoints down (api, web)" in body
        failing.clear()
        await until(lambda: len(titles(webhook)) >= 2)
        await asyncio.sleep(1.2)
        assert titles(webhook)[1:] == ["[RESOLVED:critical] regional_failure eu"]
    finally:
        await running.close()


async def test_alerts_and_notifications_reach_metrics_and_the_api(
    fleet, webhook, smtp, tmp_path
) -> None:
    import aiohttp

    base, failing = fleet
    port, _ = smtp
    await webhook.up()
    running = Running(config_for(base, webhook, port, str(tmp_path / "hc.db")))
    try:
        failing.add("/us-api")
        await until(lambda: titles(webhook))
        await until(
            lambda: (
                running.daemon.sender.stats.get("slack")
                and running.daemon.sender.stats["slack"].sent
            )
        )
        url = f"http://127.0.0.1:{running.daemon.listening[1]}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            async with session.get(f"{url}/api/v1/alerts?state=firing") as response:
                alerts = (await response.json())["alerts"]
        assert 'healthcheck_alerts_firing{severity="critical"} 1.0' in text
        assert 'healthcheck_notifications_total{channel="slack",result="sent"} 1.0' in text
        assert 'healthcheck_notifications_pending{channel="slack"} 0.0' in text
        assert [(a["rule"], a["target"], a["severity"]) for a in alerts] == [
            ("endpoint_down", "us/api", "critical")
        ]
    finally:
        await running.close()


async def test_storage_locked_raises_the_self_check_and_loses_no_alert(
    fleet, webhook, smtp, tmp_path
) -> None:
    """Another process holds the database's write lock: results wait in memory, the daemon's
    own health alert fires, and once the lock goes both the alert and every result land."""
    base, _ = fleet
    port, _ = smtp
    await webhook.up()
    db = tmp_path / "hc.db"
    config = config_for(base, webhook, port, str(db), self_storage_down="1s")
    running = Running(config)
    locker = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        await until(lambda: running.daemon.storage.stats.written > 0)
        locker.execute("BEGIN EXCLUSIVE")
        firing = ("daemon_health", "healthcheck")
        await until(lambda: firing in running.daemon.evaluator.alerts, timeout=20)
        assert "storage unwritable" in running.daemon.evaluator.alerts[firing].summary
        assert titles(webhook) == []  # the outbox shares the locked file: nothing sent yet
        locker.execute("COMMIT")
        await until(lambda: "[FIRING:warning] daemon_health healthcheck" in titles(webhook))
        await until(lambda: "[RESOLVED:warning] daemon_health healthcheck" in titles(webhook))
    finally:
        locker.close()
        await running.close()
    stats = running.daemon.storage.stats
    assert stats.dropped == 0
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM results").fetchone()[0] == stats.written
    assert stats.written == running.daemon.scheduler.stats.completed
