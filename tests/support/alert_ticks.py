"""Waiting on a live daemon's alert evaluations (healthcheck_alert_evaluations_total) instead of
on seconds: "nothing more was paged" holds after a number of evaluations, however fast the
daemon's `alerting.evaluate_every` and however slow the machine."""

from __future__ import annotations

import asyncio

import aiohttp
from polling import until
from prometheus_client.parser import text_string_to_metric_families

# A test daemon's cadence: five evaluations in the second a 1 s tick made one in.
EVALUATE_EVERY = "200ms"


async def alert_evaluations(port: int) -> int:
    """The daemon's alert evaluations so far, from its /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200, await response.text()
        text = await response.text()
    for family in text_string_to_metric_families(text):
        if family.name == "healthcheck_alert_evaluations":
            return int(family.samples[0].value)
    raise AssertionError("no healthcheck_alert_evaluations_total on /metrics: alerting is off")


async def evaluations(port: int, count: int, timeout: float = 30.0) -> None:
    """Return once the daemon has made `count` more alert evaluations from now: each one has
    stored its changes and put its notifications in the outbox."""
    target = await alert_evaluations(port) + count
    deadline = asyncio.get_running_loop().time() + timeout
    while await alert_evaluations(port) < target:
        assert asyncio.get_running_loop().time() < deadline, f"{count} evaluations not made"
        await asyncio.sleep(0.05)


async def quiet_for(port: int, count: int, outbox_drained, timeout: float = 30.0) -> None:
    """`count` more evaluations, then every notification they put in the outbox delivered
    (`outbox_drained()`): a page any of them decided on has reached the receiver by now."""
    await evaluations(port, count, timeout)
    await until(outbox_drained, timeout)
