"""Labels and label routes through a running daemon: real webhook, SMTP and Alertmanager
receivers on loopback; each alert reaches the channels its route names and no other."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing

import aiohttp
import pytest
from aiohttp import web
from alertmanager import alerts, running_alertmanager
from clock import ManualClock
from in_process import Running
from polling import until
from prometheus_client.parser import text_string_to_metric_families

from alerting.message import TITLE_LIMIT
from healthcheck.config import parse_config

FAILING = web.AppKey("failing", set)
CHANNELS = ("audit", "pd_payments", "slack_payments", "pagerduty", "slack", "email", "am")


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


@pytest.fixture
async def alertmanager(tmp_path):
    config = "route: {receiver: blackhole, group_wait: 1s}\nreceivers: [{name: blackhole}]\n"
    async with running_alertmanager(tmp_path / "am", config) as url:
        yield url


def config_for(base: str, webhook, smtp_port: int, alertmanager: str, db: str):
    hook = f"json://127.0.0.1:{webhook.port}"
    return parse_config(
        json.dumps(
            {
                "defaults": {
                    "interval": "100ms",
                    "timeout": "90ms",
                    "retries": 0,
                    "labels": {"tier": 2},
                },
                "scheduler": {"workers": 1},
                "storage": {"path": db},
                "exporter": {
                    "listen": "127.0.0.1:0",
                    "metric_labels": ["team"],
                    "public_url": "https://status.example.com/",
                },
                "alerting": {
                    "channels": {
                        "audit": f"{hook}/audit",
                        "pd_payments": f"{hook}/pd_payments",
                        "slack_payments": f"{hook}/slack_payments",
                        "pagerduty": f"{hook}/pagerduty",
                        "slack": f"{hook}/slack",
                        "email": f"mailto://127.0.0.1:{smtp_port}?from=hc@example.com&to=ops@example.com&mode=insecure",
                        "am": {"url": alertmanager, "kind": "alertmanager"},
                    },
                    "routes": [
                        {"match": {"endpoint": "~ap.*"}, "continue": True, "channels": ["audit"]},
                        {
                            "match": {"team": "payments", "severity": "critical"},
                            "channels": ["pd_payments", "slack_payments", "am"],
                        },
                        {
                            "match": {"severity": "critical"},
                            "channels": ["pagerduty", "email", "slack", "am"],
                        },
                    ],
                    "rules": {
                        "failure_threshold": 3,
                        "success_threshold": 2,
                        "error_rate_min_checks": 100_000,
                        "regional_failure_for": "1h",
                    },
                },
                "regions": {
                    "eu": {
                        "defaults": {"labels": {"team": "payments"}},
                        "endpoints": [
                            {"name": "api", "url": f"{base}/eu-api", "labels": {"tier": "1"}},
                            {"name": "web", "url": f"{base}/eu-web"},
                        ],
                    },
                    "us": {
                        "defaults": {"labels": {"team": "platform"}},
                        "endpoints": [{"name": "api", "url": f"{base}/us-api"}],
                    },
                },
            }
        ),
        "test",
        {},
    )


def routed(db: str) -> dict[str, list[str]]:
    """Titles routed to each channel, sent or not: all any receiver gets, and ever will."""
    with closing(sqlite3.connect(db)) as connection:
        rows = connection.execute("SELECT channel, payload FROM outbox ORDER BY id").fetchall()
    found: dict[str, list[str]] = {}
    for channel, payload in rows:
        found.setdefault(channel, []).append(json.loads(payload)["title"])
    return found


def received(webhook, path: str) -> list[dict]:
    return [r["body"] for r in webhook.received if r["path"] == path]


async def until_async(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """As polling.until, for a condition that has to ask a server."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def firing(running: Running) -> int:
    return running.daemon.evaluator.firing()["critical"]


def mail_text(raw: str) -> str:
    message = email.message_from_string(raw, policy=email.policy.default)
    part = message.get_body(("plain", "html"))
    return part.get_content() if part is not None else raw


async def test_label_routes_reach_their_channels_and_no_other(
    fleet, webhook, smtp, alertmanager, tmp_path
) -> None:
    base, failing = fleet
    port, mailbox = smtp
    db = str(tmp_path / "hc.db")
    await webhook.up()
    clock = ManualClock()
    running = Running(config_for(base, webhook, port, alertmanager, db), clock)
    try:
        await running.started()

        # eu/api (team payments): the audit route goes on (continue), the payments route ends
        # the walk; the catch-all critical route never sees it.
        failing.add("/eu-api")
        await clock.advance_until(lambda: firing(running) == 1, step=0.5, within=30)
        title = "[FIRING:critical] endpoint_down eu/api"
        # The firing's notifications are stored in one transaction, a moment after it fires.
        await until(lambda: "pd_payments" in routed(db))
        assert routed(db) == {c: [title] for c in ("audit", "pd_payments", "slack_payments", "am")}
        await until(lambda: all(received(webhook, f"/{c}") for c in ("audit", "pd_payments")))
        await until(lambda: received(webhook, "/slack_payments"))
        page = received(webhook, "/pd_payments")[0]
        assert page["title"] == title
        body = page["message"]
        assert "eu/api is down: HTTP 500" in body
        assert "Region: eu · Endpoint: api" in body
        assert "Error: http_status: HTTP 500" in body
        assert "Value: 3 failed checks in a row (threshold: 3)" in body
        assert "Since: " in body
        assert "Status page: https://status.example.com/endpoints/eu/api" in body
        assert "Labels: team=payments, tier=1" in body
        held: list[dict] = []

        async def in_alertmanager() -> bool:
            held[:] = await alerts(alertmanager)
            return bool(held)

        await until_async(in_alertmanager)
        assert [a["labels"] for a in held] == [
            {
                "alertname": "HealthcheckEndpointDown",
                "severity": "critical",
                "region": "eu",
                "endpoint": "api",
                "kind": "http",
                "team": "payments",
                "tier": "1",
            }
        ]
        assert "Labels: team=payments, tier=1" in held[0]["annotations"]["summary"]

        # us/api (team platform): audit, then the catch-all critical route, with email.
        failing.add("/us-api")
        await clock.advance_until(lambda: firing(running) == 2, step=0.5, within=30)
        us = "[FIRING:critical] endpoint_down us/api"
        await until(lambda: "pagerduty" in routed(db))
        now = routed(db)
        assert {c: now.get(c, []) for c in CHANNELS} == {
            "audit": [title, us],
            "pd_payments": [title],
            "slack_payments": [title],
            "pagerduty": [us],
            "slack": [us],
            "email": [us],
            "am": [title, us],
        }
        await until(lambda: mailbox.messages)
        mail = mail_text(mailbox.messages[0])
        assert "Labels: team=platform, tier=2" in mail
        assert "Region: us · Endpoint: api" in mail
        await until(lambda: received(webhook, "/slack"))
        assert "Labels: team=platform, tier=2" in received(webhook, "/slack")[0]["message"]

        # Only exporter.metric_labels (team) goes on the series, not tier.
        url = f"http://127.0.0.1:{running.daemon.listening[1]}"
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
            text = await response.text()
        series = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        eu_api = {"region": "eu", "endpoint": "api", "kind": "http", "team": "payments"}
        assert series["healthcheck_probe_success", frozenset(eu_api.items())] == 0.0
        us_api = {"region": "us", "endpoint": "api", "kind": "http", "team": "platform"}
        failures = frozenset({**us_api, "result": "failure"}.items())
        assert series["healthcheck_checks_total", failures] > 0
        assert "tier=" not in text

        # The resolve says how long it lasted, on the channels the firing went to.
        failing.discard("/eu-api")
        await clock.advance_until(lambda: firing(running) == 1, step=0.5, within=30)
        resolved = "[RESOLVED:critical] endpoint_down eu/api"
        await until(lambda: len(routed(db)["pd_payments"]) == 2)
        assert routed(db)["pd_payments"] == [title, resolved]
        await until(lambda: len(received(webhook, "/pd_payments")) == 2)
        end = received(webhook, "/pd_payments")[1]["message"]
        assert "Lasted: " in end and "Error:" not in end
        assert all(len(t) <= TITLE_LIMIT for titles in routed(db).values() for t in titles)
    finally:
        await running.close()
