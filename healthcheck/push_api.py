"""`GET|POST /api/v1/push/{token}[?status=up|down&msg=...&latency_ms=...]`: where the jobs of
`kind: push` endpoints ping (healthcheck.probes.push judges the pings).

Open without the exporter's auth: the token is the secret. It is looked up by its HMAC under a
key of this process's own (the lookup's timing says nothing usable about any token) and the one
found compared in constant time; never logged, never stored (a ping is kept by region and
endpoint), and a token that matches none gets the same bare 404 as any other. Pings are
rate-limited per endpoint; past the limit a 429, not a place in a queue. A ping is stored
before its answer, the pings that arrive together in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from asyncio_throttle.throttler import Throttler

from healthcheck.api import STATE
from healthcheck.probes import heartbeats
from healthcheck.probes.push import PushProbe, PushSettings
from healthcheck.result import EndpointId
from healthcheck.targets import Config, Endpoint

log = logging.getLogger("healthcheck.push")

PATH = "/api/v1/push/{token}"
# Per endpoint: a job pinging at its start and end every few seconds fits; a loop gone wrong, or
# a flood on one leaked token, costs a few SQLite writes a minute.
PINGS, PER = 12, 60.0
MAX_MESSAGE = 200
PARAMETERS = ("status", "msg", "latency_ms")
THROTTLES = web.AppKey("push_throttles", dict)


class Tokens:
    """The push endpoints of the running configuration by token, rebuilt when a reload
    publishes another: the old tokens find nothing from the first request after it."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)  # this process's own: digests mean nothing elsewhere
        self._config: Config | None = None
        self._by_digest: dict[bytes, tuple[Endpoint, ...]] = {}

    def _digest(self, token: bytes) -> bytes:
        return hmac.digest(self._key, token, hashlib.sha256)

    def matching(self, token: str, config: Config) -> list[Endpoint]:
        """The push endpoints of `config` whose token is `token`."""
        if config is not self._config:
            by_digest: dict[bytes, list[Endpoint]] = {}
            for endpoint in config.endpoints():
                if endpoint.kind == PushProbe.kind:
                    key = self._digest(_token_of(endpoint))
                    by_digest.setdefault(key, []).append(endpoint)
            self._by_digest = {key: tuple(found) for key, found in by_digest.items()}
            self._config = config
        given = token.encode("utf-8", "surrogatepass")
        return [
            endpoint
            for endpoint in self._by_digest.get(self._digest(given), ())
            if hmac.compare_digest(given, _token_of(endpoint))
        ]


def _token_of(endpoint: Endpoint) -> bytes:
    return endpoint.settings.narrow(PushSettings).token.reveal().encode()


# Seconds a ping waits for the database the storage writer creates as the daemon starts (the
# HTTP front listens first): a job that pings at once is not refused for our start-up.
WAIT_FOR_DATABASE = 10.0
_LOOK_AGAIN = 0.1


class PingStore:
    """Stores pings in the file at `path`, in a thread of its own on one kept connection; the
    pings that arrive while a transaction is being written go together in the next (one commit
    for all of them). With no database file yet, a batch waits for one up to
    `wait_for_database` seconds, then is refused."""

    def __init__(self, path: str, wait_for_database: float = WAIT_FOR_DATABASE) -> None:
        self._path = path
        self._wait_for_database = wait_for_database
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="push-pings")
        self._recorder = heartbeats.Recorder()
        self._waiting: list[tuple[heartbeats.Stored, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def store(self, pings: Sequence[heartbeats.Stored]) -> None:
        """Return once `pings` are stored; raise sqlite3.Error when they could not be."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.extend((ping, done) for ping in pings)
        if self._writing is None:
            self._writing = loop.create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                pings = [ping for ping, _ in batch]
                give_up = loop.time() + self._wait_for_database
                while True:
                    try:
                        await loop.run_in_executor(
                            self._thread, self._recorder.record, self._path, pings
                        )
                    except heartbeats.NoDatabase as exc:
                        if loop.time() < give_up:
                            await asyncio.sleep(_LOOK_AGAIN)  # being created: look again
                            continue
                        outcome: BaseException | None = exc
                    except Exception as exc:
                        outcome = exc
                    else:
                        outcome = None
                    break
                for _, done in batch:
                    if done.done():  # its request went away
                        continue
                    if outcome is None:
                        done.set_result(None)
                    else:
                        done.set_exception(outcome)
        finally:
            self._writing = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._recorder.close)
        self._thread.shutdown(wait=False)


TOKENS = web.AppKey("push_tokens", Tokens)
PINGS_STORE = web.AppKey("push_ping_store", PingStore)


def register(app: web.Application) -> None:
    """Serve the push path on `app` (whose auth middleware leaves it open)."""
    app[THROTTLES] = {}
    app[TOKENS] = Tokens()
    app[PINGS_STORE] = store = PingStore(app[STATE].storage_path)

    async def close(_app: web.Application) -> None:
        await store.close()

    app.on_cleanup.append(close)
    app.router.add_route("*", PATH, ping)


def _plain(status: int, text: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


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
    matched = request.app[TOKENS].matching(request.match_info["token"], state.config)
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
        stored = [heartbeats.Stored(e.region, e.name, found) for e in matched]
        await request.app[PINGS_STORE].store(stored)
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
