"""The exporter's connections: a cap within a file-descriptor budget, idle ones evicted first.

A flood of slow connections to the exporter once took every file descriptor, and every probe
then failed with "Too many open files": false alerts about every target. So the server may hold
only what the open-file limit leaves after the probes; at the cap, a new connection evicts the
oldest one not inside a request that has had EVICT_AFTER to send one (slow-loris peers are
that), and only when there is none is the newcomer refused with a 503 (Retry-After: 1). The
grace keeps a flood from evicting a real client between its connect and its request: on uvloop
a flood's connections are accepted in one go, and the oldest-first rule alone aborted a
/healthz request a few hundred newer peers had pushed to the front. aiohttp itself bounds how
long a request's headers and body may take (`keepalive_timeout` and `lingering_time`, set from
`read_timeout`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

log = logging.getLogger("healthcheck.api")

# File descriptors kept back besides one per probe in flight: the database and its journal,
# the helper process's pipes, canary workers, the listening socket, logs.
FD_RESERVE = 64
MIN_CONNECTIONS = 4  # /healthz and a scrape must get through even on a tiny limit
# The listen backlog, which is also how many connections asyncio accepts in one go. A socket
# it accepts reaches the cap (connection_made) two loop iterations later, and one it evicts is
# closed one after that, so on a loop late enough for the accept queue to stay full, about
# four batches are open beyond the cap at once: the budget keeps room for ACCEPTED_AHEAD
# (a flood of 400 slow peers on a starved daemon with 256 descriptors reached "Too many open
# files" with room for one batch of 100).
BACKLOG = 32
ACCEPTED_AHEAD = 4 * BACKLOG
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
    b"Connection: close\r\n\r\n"
)
_LOG_EVERY = 60.0  # seconds between log lines about the cap while it lasts
# A connection not in a request is evicted at the cap only once it had this long to send one.
EVICT_AFTER = 0.25


def open_file_limit() -> int | None:
    """The soft RLIMIT_NOFILE (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_budget(configured: int, probes: int, limit: int | None) -> int:
    """How many connections the server may hold: what the open-file `limit` leaves after one
    descriptor per probe in flight, FD_RESERVE and the sockets accepted ahead of the cap, at
    most `configured`."""
    if limit is None:
        return configured
    return max(MIN_CONNECTIONS, min(configured, limit - probes - FD_RESERVE - ACCEPTED_AHEAD))


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, admitted (or not) by the guard."""

    __slots__ = ("admitted", "guard", "inner", "transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not an asyncio.Transport subclass on uvloop, so no isinstance.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.admitted = self.guard.admit(transport)
        if self.admitted:
            self.inner.connection_made(transport)
        else:
            transport.write(_BUSY)
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.guard.forget(self.transport)
        if self.admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


class ConnectionGuard:
    """Counts the server's connections and keeps them under `limit`."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._clock = clock
        self._open: dict[asyncio.Transport, float] = {}  # oldest first, when each came
        self._busy: dict[asyncio.Transport, int] = {}  # requests being handled on each
        self.evicted = 0
        self.refused = 0
        self._logged_at: float | None = None

    @property
    def open(self) -> int:
        return len(self._open)

    def protocol_factory(
        self, make: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (AppRunner.server) for loop.create_server."""
        return lambda: _Connection(self, make())

    def admit(self, transport: asyncio.Transport) -> bool:
        now = self._clock()
        if len(self._open) >= self.limit:
            idle = None
            for held, came in self._open.items():  # oldest first: the first too young ends it
                if now - came < EVICT_AFTER:
                    break
                if held not in self._busy:
                    idle = held
                    break
            self._note_cap()
            if idle is None:
                self.refused += 1
                return False
            self.evicted += 1
            del self._open[idle]
            idle.abort()
        self._open[transport] = now
        return True

    def forget(self, transport: asyncio.Transport) -> None:
        self._open.pop(transport, None)
        self._busy.pop(transport, None)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks a connection busy while a request on it is handled: it is not evicted."""
        transport = request.transport
        if transport is None:
            return await handler(request)
        self._busy[transport] = self._busy.get(transport, 0) + 1
        try:
            return await handler(request)
        finally:
            left = self._busy.get(transport, 1) - 1
            if left > 0:
                self._busy[transport] = left
            else:
                self._busy.pop(transport, None)

    def _note_cap(self) -> None:
        now = self._clock()
        if self._logged_at is not None and 0 <= now - self._logged_at < _LOG_EVERY:
            return
        self._logged_at = now
        log.warning(
            "the exporter is at its cap of %d connections: evicting idle ones, refusing more "
            "(%d evicted, %d refused so far); probes keep their file descriptors",
            self.limit,
            self.evicted,
            self.refused,
            extra={"event": "connection_cap", "limit": self.limit},
        )
