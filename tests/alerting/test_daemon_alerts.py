"""Alerting through a running daemon: real SMTP and webhook receivers, restarts, inhibition.

Most run the daemon on a manual clock: its checks, alert ticks and holds happen as the test
moves time on, and only delivery to the receivers is waited for in real time.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from clock import ManualClock
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


def config_for(base: str, webhook, smtp_port: int, db: str, defaults: dict | None = None, **rules):
    return parse_config(
        json.dumps(
            {
                "defaults": defaults or {"interval": "100ms", "timeout": "90ms", "retries": 0},
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
                            {
                                "name": "api",
                                "url": f"{base}/eu-api",
                                "labels": {"team": "payments", "tier": "1"},
                            },
                            {
                                "name": "web",
                                "url": f"{base}/eu-web",
                                "labels": {"team": "payments", "tier": "2"},
                            },
                        ]
                    },
                    "us": {
                        "endpoints": [
                            {"name": "api", "url": f"{base}/us-api", "labels": {"team": "checkout"}}
                        ]
                    },
                },
            }
        ),
        "test",
        {},
    )


def titles(webhook) -> list[str]:
    return [r["body"]["title"] for r in webhook.received]


def routed(db, channel: str = "slack") -> list[str]:
    """Titles of every notification routed to `channel`, sent or not, oldest first: what the
    receiver gets, and all it ever will."""
    with closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(
            "SELECT payload FROM outbox WHERE channel = ? ORDER BY id", [channel]
        ).fetchall()
    return [json.loads(payload)["title"] for (payload,) in rows]


def critical(running: Running) -> int:
    return running.daemon.evaluator.firing()["critical"]


async def test_down_fires_to_slack_and_email_then_resolves(fleet, webhook, smtp, tmp_path) -> None:
    base, failing = fleet
    port, mailbox = smtp
    await webhook.up()
    clock = ManualClock()
    running = Running(config_for(base, webhook, port, str(tmp_path / "hc.db")), clock)
    try:
        await running.started()
        failing.add("/us-api")
        await clock.advance_until(lambda: critical(running) == 1, step=0.5, within=30)
        await until(lambda: any("FIRING" in t for t in titles(webhook)))
        await until(lambda: mailbox.messages)
        assert titles(webhook)[0] == "[FIRING:critical] endpoint_down us/api"
        assert "us/api is down: HTTP 500" in webhook.received[0]["body"]["message"]
        assert "Subject: [FIRING:critical] endpoint_down us/api" in mailbox.messages[0]
        failing.clear()
        await clock.advance_until(lambda: critical(running) == 0, step=0.5, within=30)
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
    db = tmp_path / "hc.db"
    config = config_for(base, webhook, port, str(db))
    failing.add("/us-api")
    clock = ManualClock()
    first = Running(config, clock)
    await first.started()
    await clock.advance_until(lambda: critical(first) == 1, step=0.5, within=30)
    await until(lambda: titles(webhook) == ["[FIRING:critical] endpoint_down us/api"])
    await first.close()
    second = Running(config, clock)
    try:
        await second.started()
        await clock.advance(3.0)  # still failing, over three evaluations
        assert routed(db) == ["[FIRING:critical] endpoint_down us/api"]  # no page again
        assert titles(webhook) == ["[FIRING:critical] endpoint_down us/api"]
        assert critical(second) == 1
        failing.clear()
        await clock.advance_until(lambda: critical(second) == 0, step=0.5, within=30)
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
    db = tmp_path / "hc.db"
    config = config_for(
        base,
        webhook,
        port,
        str(db),
        failure_threshold=8,
        regional_failure_for="200ms",
    )
    clock = ManualClock()
    running = Running(config, clock)
    try:
        await running.started()
        await clock.advance(0.5)
        failing.update({"/eu-api", "/eu-web"})
        # region + 2 endpoints
        await clock.advance_until(lambda: critical(running) == 3, step=0.5, within=30)
        await clock.advance(2.0)  # two evaluations more
        assert routed(db) == ["[FIRING:critical] regional_failure eu"]
        await until(lambda: titles(webhook))
        sent = titles(webhook)
        assert sent == ["[FIRING:critical] regional_failure eu"], sent
        body = webhook.received[0]["body"]["message"]
        assert "all 2 endpoints down (api, web)" in body
        # The API's labels are the operator's: the region's shared ones for its own alert.
        url = f"http://127.0.0.1:{running.daemon.listening[1]}/api/v1/alerts?state=firing"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            listed = {a["target"]: a for a in (await response.json())["alerts"]}
        assert listed["eu"]["labels"] == {"team": "payments"}
        assert listed["eu/api"]["labels"] == {"team": "payments", "tier": "1"}
        assert listed["eu/web"]["suppressed_by"] == "regional_failure:eu"
        assert {a["region"] for a in listed.values()} == {"eu"}
        assert all("notified" not in a and "notified" not in a["labels"] for a in listed.values())
        failing.clear()
        await clock.advance_until(lambda: critical(running) == 0, step=0.5, within=30)
        await clock.advance(2.0)
        assert routed(db)[1:] == ["[RESOLVED:critical] regional_failure eu"]
        await until(lambda: len(titles(webhook)) >= 2)
        assert titles(webhook)[1:] == ["[RESOLVED:critical] regional_failure eu"]
    finally:
        await running.close()


async def test_alerts_and_notifications_reach_metrics_and_the_api(
    fleet, webhook, smtp, tmp_path
) -> None:

    base, failing = fleet
    port, _ = smtp
    await webhook.up()
    clock = ManualClock()
    running = Running(config_for(base, webhook, port, str(tmp_path / "hc.db")), clock)
    try:
        await running.started()
        failing.add("/us-api")
        await clock.advance_until(lambda: critical(running) == 1, step=0.5, within=30)
        await until(lambda: titles(webhook))
        await until(
            lambda: (
                running.daemon.sender.stats.get("slack")
                and running.daemon.sender.stats["slack"].sent
            )
        )
        # The pending count is refreshed on the sender's next pass, a while after the send.
        counts = running.daemon.alerts.notification_counts
        await until(lambda: counts()["slack"] == (1, 0, 0, 0))  # sent, failed, timed out, pending
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
        assert alerts[0]["labels"] == {"team": "checkout"} and alerts[0]["region"] == "us"
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
    # The daemon's own health must fire for the storage, not for a busy machine: checks with
    # room for a starved prober (a 90 ms timeout was starved through at a load of 15), and
    # no warning for a late start.
    defaults = {"interval": "1s", "timeout": "900ms", "retries": 0}
    config = config_for(
        base, webhook, port, str(db), defaults, self_storage_down="1s", self_lag_p99="1m"
    )
    # A write waits 250 ms on the lock, not 5 s, before it counts as failed.
    config = replace(config, storage=replace(config.storage, busy_timeout=0.25))
    running = Running(config)
    locker = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        await until(lambda: running.daemon.storage.stats.written > 0)
        locker.execute("BEGIN EXCLUSIVE")
        firing = ("daemon_health", "healthcheck")
        # Real time, not a manual clock: what takes long is SQLite's busy timeout, waited out
        # by each outbox call queued on the alerting's one database thread. With the default
        # 5 s that took 13-26 s on a loaded two-core machine (load 13).
        await until(lambda: firing in running.daemon.evaluator.alerts, timeout=90)
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
