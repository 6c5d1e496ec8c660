"""A real Alertmanager on loopback receives our alerts and dedups two daemons' copies."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest
from aiohttp import web
from alertmanager import alerts, running_alertmanager
from in_process import Running
from polling import until

from alerting.delivery import AlertmanagerChannel
from alerting.outbox import Notification
from healthcheck.config import parse_config
from healthcheck.secrets import Secret


@pytest.fixture
async def alertmanager(tmp_path):
    config = "route: {receiver: blackhole, group_wait: 1s}\nreceivers: [{name: blackhole}]\n"
    async with running_alertmanager(tmp_path / "am", config) as url:
        yield url


def firing(ends_at: float | None = None) -> Notification:
    return Notification(
        channel="am",
        dedup_key="endpoint_down:eu-west/api",
        title="[FIRING:critical] endpoint_down eu-west/api",
        body="eu-west/api is down: timeout",
        notify_type="success" if ends_at else "failure",
        severity="critical",
        event="resolved" if ends_at else "fired",
        labels=[
            ["alertname", "endpoint_down"],
            ["severity", "critical"],
            ["region", "eu-west"],
            ["endpoint", "api"],
        ],
        starts_at=time.time() - 60,
        ends_at=ends_at,
    )


async def active_alerts(url: str) -> list[dict]:
    return await alerts(url)


async def test_two_daemons_copies_become_one_alert_and_a_resolve_ends_it(alertmanager) -> None:
    first = AlertmanagerChannel("am", Secret(alertmanager), "http://127.0.0.1:9115/")
    second = AlertmanagerChannel("am", Secret(alertmanager), "http://127.0.0.1:9116/")
    await first.deliver(firing())
    await second.deliver(firing())
    alerts = await active_alerts(alertmanager)
    assert len(alerts) == 1
    assert alerts[0]["labels"] == {
        "alertname": "endpoint_down",
        "severity": "critical",
        "region": "eu-west",
        "endpoint": "api",
    }
    assert alerts[0]["annotations"]["summary"] == "eu-west/api is down: timeout"
    assert alerts[0]["status"]["state"] == "active"
    await first.deliver(firing(ends_at=time.time() - 1))
    assert await active_alerts(alertmanager) == []


async def test_an_unreachable_alertmanager_is_a_delivery_error() -> None:
    from healthcheck.errors import DeliveryError

    channel = AlertmanagerChannel("am", Secret("http://127.0.0.1:1"))
    with pytest.raises(DeliveryError, match="channel 'am'"):
        await channel.deliver(firing())


@pytest.fixture
async def switch():
    """An endpoint on loopback that fails while `down` holds True; yields (url, down)."""
    down = {"now": False}

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=500 if down["now"] else 200, text="switched")

    app = web.Application()
    app.router.add_get("/api", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/api", down
    await runner.cleanup()


RESOLVE_TIMEOUT = 1.0  # Alertmanager's: an alert not posted again within it is resolved
RESEND = 1.25  # ours: each post is valid 4 x 1.25 s = 5 s, so one late resend is no gap
# Each daemon is watched for six resolve_timeouts, past a post's own endsAt (5 s).
WATCH = 6 * RESOLVE_TIMEOUT


def keepalive_config(url: str, alertmanager: str, db: str):
    return parse_config(
        json.dumps(
            {
                "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
                "storage": {"path": db},
                "exporter": {"listen": "127.0.0.1:0"},
                "alerting": {
                    "channels": {
                        "am": {
                            "url": alertmanager,
                            "kind": "alertmanager",
                            "resend": f"{RESEND:g}s",
                        }
                    },
                    "routes": {"critical": ["am"], "warning": ["am"]},
                    "rules": {
                        "failure_threshold": 2,
                        "success_threshold": 1,
                        "error_rate_min_checks": 100_000,
                        "regional_failure_for": "1h",
                    },
                },
                "regions": {"lab": {"endpoints": [{"name": "dead", "url": url}]}},
            }
        ),
        "test",
        {},
    )


async def stays_active(url: str, alertname: str, window: float) -> int:
    """Poll Alertmanager over `window` seconds; the alert must be active at every poll."""
    loop = asyncio.get_running_loop()
    end = loop.time() + window
    polls = 0
    while loop.time() < end:
        found = [(a["labels"]["alertname"], a["status"]["state"]) for a in await alerts(url)]
        assert found == [(alertname, "active")], f"poll {polls}: {found}"
        polls += 1
        await asyncio.sleep(0.1)
    return polls


async def test_a_firing_alert_outlives_resolve_timeout_and_a_restart_then_resolves(
    tmp_path, switch
) -> None:
    """Alertmanager resolves an alert not posted again within resolve_timeout: the daemon
    posts it again every `resend` (also after a restart), and posts the resolve itself."""
    endpoint, down = switch
    config_text = (
        f"global: {{resolve_timeout: {RESOLVE_TIMEOUT:g}s}}\n"
        "route: {receiver: blackhole, group_wait: 1s}\nreceivers: [{name: blackhole}]\n"
    )
    async with running_alertmanager(tmp_path / "am", config_text) as am:
        config = keepalive_config(endpoint, am, str(tmp_path / "hc.db"))
        down["now"] = True
        first = Running(config)
        try:
            await until(lambda: first.daemon.evaluator.firing()["critical"] == 1)
            await until_async(lambda: alerts(am), timeout=20)
            [alert] = await alerts(am)
            assert alert["labels"]["alertname"] == "HealthcheckEndpointDown"
            assert alert["labels"]["endpoint"] == "dead"
            assert await stays_active(am, "HealthcheckEndpointDown", WATCH) > 10
        finally:
            await first.close()
        second = Running(config)  # the stored firing alert is posted again after a restart
        try:
            await stays_active(am, "HealthcheckEndpointDown", WATCH)
            assert second.daemon.sender.stats["am"].resent > 0
            assert second.daemon.sender.stats["am"].sent == 0  # nothing new through the outbox
            down["now"] = False
            await until_async(lambda: _none(am), timeout=3 * RESOLVE_TIMEOUT)
        finally:
            await second.close()


async def _none(url: str) -> bool:
    return not await alerts(url)


async def until_async(condition, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_the_runbook_url_reaches_alertmanager_as_its_usual_annotation(alertmanager) -> None:
    channel = AlertmanagerChannel("am", Secret(alertmanager), "http://127.0.0.1:9115/")
    runbook = "https://wiki.example.com/runbooks/endpoint_down"
    await channel.deliver(replace(firing(), runbook_url=runbook))
    (alert,) = await active_alerts(alertmanager)
    assert alert["annotations"]["runbook_url"] == runbook
