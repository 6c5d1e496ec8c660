"""/metrics renders shared by the scrapes that ask at once, so API load costs bounded work.

One render per variant (content type, gzip) at a time: a scrape arriving while one is in
progress waits for it and gets its body, and one arriving within FRESH_FOR seconds of its end
gets that body at once. Past MAX_WAITING waiting scrapes, or with the render thread's queue
full, a scrape gets a 503 with Retry-After. A render whose every scraper went away before it
began (aiohttp cancels the handler of a client that disconnects) is not made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.exposition import choose_encoder

from healthcheck.server_threads import ServerBusy, ServerThreads, ServingCounts

# Prometheus scrapes every 15 s (at least 1 s apart per target), so a body 1 s old is as good
# as a new one to it; to 50 clients polling in a loop it is one render a second, not fifty.
FRESH_FOR = 1.0
MAX_WAITING = 32  # scrapes waiting on renders at once; each holds a connection, not a thread
Body = tuple[bytes, str]  # the exposition and its content type
Variant = tuple[str, bool]  # content type, gzipped


@dataclass(slots=True)
class _Flight:
    """One render in progress and the scrapes waiting for it."""

    waiting: int = 0
    abandoned: bool = False  # every scraper went away: skip the render if not yet begun
    task: asyncio.Task[Body | None] | None = None


class SharedRenders:
    """Scrapes of /metrics, answered from as few renders as their variants and timing allow."""

    def __init__(
        self,
        render: Callable[[str | None, bool], Body],
        threads: ServerThreads,
        counts: ServingCounts,
        fresh_for: float = FRESH_FOR,
        max_waiting: int = MAX_WAITING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`render(accept, gzipped)` blocks: it runs in one of `threads`."""
        self._render = render
        self._threads = threads
        self.counts = counts
        self.fresh_for = fresh_for
        self.max_waiting = max_waiting
        self._clock = clock
        self._flights: dict[Variant, _Flight] = {}
        self._done: dict[Variant, tuple[float, Body]] = {}  # the last body, when it was made
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Scrapes waiting for a render now."""
        return self._waiting

    async def scrape(self, accept: str | None, gzipped: bool) -> Body:
        """The body for a scrape with this Accept header; ServerBusy when too many wait."""
        variant = (choose_encoder(accept or "")[1], gzipped)
        done = self._done.get(variant)
        if done is not None:
            if 0 <= self._clock() - done[0] <= self.fresh_for:
                self.counts.scrapes_shared += 1
                return done[1]
            del self._done[variant]  # stale: not kept (23 MB uncompressed at 10,000 endpoints)
        if self._waiting >= self.max_waiting:
            raise ServerBusy("/metrics")
        flight = self._flights.get(variant)
        if flight is None:
            flight = self._flights[variant] = _Flight()
            flight.task = task = asyncio.ensure_future(self._fly(variant, flight, accept, gzipped))
            task.add_done_callback(_retrieve)
        else:
            self.counts.scrapes_shared += 1
            assert flight.task is not None
            task = flight.task
        flight.waiting += 1
        self._waiting += 1
        try:
            body = await asyncio.shield(task)
        finally:
            flight.waiting -= 1
            self._waiting -= 1
            if flight.waiting == 0 and not task.done():
                flight.abandoned = True  # render it only if its thread has already begun
                self._forget(variant, flight)
        assert body is not None  # only an abandoned flight, which nobody awaits, has none
        return body

    async def _fly(
        self, variant: Variant, flight: _Flight, accept: str | None, gzipped: bool
    ) -> Body | None:
        try:
            body = await self._threads.run(
                "/metrics", self._render_unless_abandoned, flight, accept, gzipped
            )
        finally:
            self._forget(variant, flight)
        if body is not None:
            self.counts.renders += 1
            now = self._clock()
            self._done = {v: d for v, d in self._done.items() if 0 <= now - d[0] <= self.fresh_for}
            self._done[variant] = (now, body)
        return body

    def _render_unless_abandoned(
        self, flight: _Flight, accept: str | None, gzipped: bool
    ) -> Body | None:
        """In the render thread: nothing, if every scraper has gone while this one waited."""
        if flight.abandoned:
            return None
        return self._render(accept, gzipped)

    def _forget(self, variant: Variant, flight: _Flight) -> None:
        if self._flights.get(variant) is flight:
            del self._flights[variant]


def _retrieve(task: asyncio.Future[Body | None]) -> None:
    """An abandoned render's failure has nobody to tell: mark it seen (no asyncio warning)."""
    if not task.cancelled():
        task.exception()
