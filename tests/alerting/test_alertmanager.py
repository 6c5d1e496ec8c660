"""A real Alertmanager on loopback receives our alerts and dedups two daemons' copies."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace

import aiohttp
import pytest
from tools import require

from alerting.delivery import AlertmanagerChannel
from alerting.outbox import Notification
from healthcheck.secrets import Secret


@pytest.fixture
async def alertmanager(tmp_path):
    binary = require("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route: {receiver: blackhole, group_wait: 1s}\nreceivers: [{name: blackhole}]\n"
    )
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with session.get(f"{url}/-/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "Alertmanager did not become ready"
                await asyncio.sleep(0.2)
        yield url
    finally:
        process.terminate()
        await process.wait()


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
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v2/alerts") as response:
        assert response.status == 200
        return await response.json()


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


async def test_the_runbook_url_reaches_alertmanager_as_its_usual_annotation(alertmanager) -> None:
    channel = AlertmanagerChannel("am", Secret(alertmanager), "http://127.0.0.1:9115/")
    runbook = "https://wiki.example.com/runbooks/endpoint_down"
    await channel.deliver(replace(firing(), runbook_url=runbook))
    (alert,) = await active_alerts(alertmanager)
    assert alert["annotations"]["runbook_url"] == runbook
