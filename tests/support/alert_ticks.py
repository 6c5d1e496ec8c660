"""Waiting on a live daemon's alert evaluations (`alerts.evaluations` of /api/v1/self, what
healthcheck_alert_evaluations_total shows) instead of on seconds: "nothing more was paged"
holds after a number of evaluations, however fast the daemon's `alerting.evaluate_every` and
however slow the machine. /api/v1/self, not /metrics: it is answered on the daemon's loop, where
a /metrics render starts a helper process, seconds on a busy core."""

from __future__ import annotations

import asyncio

import aiohttp
from polling import until

# A test daemon's cadence: five evaluations in the second a 1 s tick made one in.
EVALUATE_EVERY = "200ms"


async def alert_evaluations(port: int) -> int:
    """The daemon's alert evaluations so far."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/api/v1/self") as response,
    ):
        assert response.status == 200, await response.text()
        alerts = (await response.json())["alerts"]
    assert alerts is not None, "alerting is off: no evaluations to wait for"
    return int(alerts["evaluations"])


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
