"""`GET|POST /api/v1/push/{token}[?status=up|down&msg=...&latency_ms=...]`: where the jobs of
`kind: push` endpoints ping (healthcheck.probes.push judges the pings).

Open without the exporter's auth: the token is the secret. It is compared in constant time with
every push endpoint's, never logged, never stored (a ping is kept by region and endpoint), and
a token that matches none gets the same bare 404 as any other. Pings are rate-limited per
endpoint; past the limit a 429, not a place in a queue.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import sqlite3

from aiohttp import web
from asyncio_throttle.throttler import Throttler

from healthcheck.api import STATE
from healthcheck.probes import heartbeats
from healthcheck.probes.push import PushProbe, PushSettings
from healthcheck.result import EndpointId
from healthcheck.targets import Endpoint

log = logging.getLogger("healthcheck.push")

PATH = "/api/v1/push/{token}"
# Per endpoint: a job pinging at its start and end every few seconds fits; a loop gone wrong, or
# a flood on one leaked token, costs a few SQLite writes a minute.
PINGS, PER = 12, 60.0
MAX_MESSAGE = 200
PARAMETERS = ("status", "msg", "latency_ms")
THROTTLES = web.AppKey("push_throttles", dict)


def register(app: web.Application) -> None:
    """Serve the push path on `app` (whose auth middleware leaves it open)."""
    app[THROTTLES] = {}
    app.router.add_route("*", PATH, ping)


def _plain(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


def _matching(token: str, endpoints: list[Endpoint]) -> list[Endpoint]:
    """The push endpoints whose token is `token`, every one compared in constant time."""
    given = token.encode()
    return [
        endpoint
        for endpoint in endpoints
        if hmac.compare_digest(
            given, endpoint.settings.narrow(PushSettings).token.reveal().encode()
        )
    ]


def _ping(request: web.Request, now: float) -> heartbeats.Ping | str:
    """The ping the query describes, or why it is refused."""
    unknown = sorted(set(request.query) - set(PARAMETERS))
    if unknown:
        return f"unknown query parameter {unknown[0]!r} (accepted: {', '.join(PARAMETERS)})"
    status = request.query.get("status", "up")
    if status not in ("up", "down"):
        return f"status must be up or down, got {status[:20]!r}"
    latency_ms = None
    if (text := request.query.get("latency_ms")) is not None:
        try:
            latency_ms = float(text)
        except ValueError:
            latency_ms = math.nan
        if not 0 <= latency_ms <= 86_400_000:
            return f"latency_ms must be a number of milliseconds, got {text[:20]!r}"
    message = request.query.get("msg")
    if message is not None:
        flat = " ".join("".join(c if c.isprintable() else " " for c in message).split())
        message = flat[: MAX_MESSAGE - 1] + "…" if len(flat) > MAX_MESSAGE else flat
    return heartbeats.Ping(now, status == "up", message or None, latency_ms)


async def ping(request: web.Request) -> web.Response:
    try:
        return await _ping_once(request)
    except Exception:
        # Handled here, not by the API's error middleware, which logs the path: it holds the token.
        log.exception("push ping failed", extra={"event": "push_error"})
        return web.json_response({"error": "internal error; see the daemon's log"}, status=500)


async def _ping_once(request: web.Request) -> web.Response:
    state = request.app[STATE]
    pushed = [e for e in state.config.endpoints() if e.kind == PushProbe.kind]
    matched = _matching(request.match_info["token"], pushed)
    if not matched:
        return _plain(404, "not found")
    if request.method not in ("GET", "POST"):
        return _plain(405, "GET or POST", Allow="GET, POST")
    found = _ping(request, state.uptime.clock())
    if isinstance(found, str):
        return web.json_response({"error": found}, status=400)
    throttles: dict[EndpointId, Throttler] = request.app[THROTTLES]
    throttle = throttles.setdefault(matched[0].id, Throttler(rate_limit=PINGS, period=PER))
    try:
        async with asyncio.timeout(0.05):  # a free slot is taken at once; none: refused
            await throttle.acquire()
    except TimeoutError:
        retry = str(math.ceil(PER / PINGS))
        return _plain(429, f"at most {PINGS} pings a minute", **{"Retry-After": retry})
    try:
        for endpoint in matched:
            await asyncio.to_thread(
                heartbeats.record, state.storage_path, endpoint.region, endpoint.name, found
            )
    except sqlite3.Error as exc:
        # Logged by endpoint: the path holds the token.
        log.error(
            "push ping for %s not stored: %s",
            matched[0].id,
            exc,
            extra={"event": "push_not_stored", "endpoint": str(matched[0].id)},
        )
        return web.json_response({"error": "storage unavailable; ping again"}, status=503)
    log.debug(
        "push ping for %s: %s",
        matched[0].id,
        "up" if found.ok else "down",
        extra={"event": "push_ping", "endpoint": str(matched[0].id), "ok": found.ok},
    )
    return _plain(200, "OK")
