"""Renders shared by the requests that ask at once, so API load costs bounded work.

/metrics and the JSON API's big views (/api/v1/status, /api/v1/results) alike: one render per
view (for /metrics: content type and gzip) at a time, in the server's own threads. A request
arriving while one is in progress waits for it and gets its body, and one arriving within
FRESH_FOR seconds of its end gets that body at once. Past MAX_WAITING waiting requests, or
with the render threads' queue full, a request gets a 503 with Retry-After. A render whose
every requester went away before it began (aiohttp cancels the handler of a client that
disconnects) is not made.

What a render reads is taken on the event loop when it is asked for (`prepare`: a snapshot,
cheap) and turned into bytes in a thread: the loop never builds or encodes a body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial

from prometheus_client.exposition import choose_encoder

from healthcheck.server_threads import ServerBusy, ServerThreads, ServingCounts

# Prometheus scrapes every 15 s (at least 1 s apart per target), so a body 1 s old is as good
# as a new one to it; to 50 clients polling in a loop it is one render a second, not fifty.
FRESH_FOR = 1.0
MAX_WAITING = 32  # scrapes waiting on renders at once; each holds a connection, not a thread
Body = tuple[bytes, str]  # the body and its content type
Variant = tuple[str, bool]  # content type, gzipped
Prepare = Callable[[], Callable[[], Body]]  # on the loop: a snapshot, and how to render it


@dataclass(slots=True)
class _Flight:
    """One render in progress and the requests waiting for it."""

    waiting: int = 0
    stamp: object = None  # what it renders was taken under this (the configuration)
    abandoned: bool = False  # every scraper went away: skip the render if not yet begun
    task: asyncio.Task[Body | None] | None = None


class SharedRenders:
    """Requests for views, answered from as few renders as their views and timing allow."""

    def __init__(
        self,
        render: Callable[[str | None, bool], Body] | None,
        threads: ServerThreads,
        counts: ServingCounts,
        fresh_for: float = FRESH_FOR,
        max_waiting: int = MAX_WAITING,
        clock: Callable[[], float] = time.monotonic,
        what: str = "/metrics",
    ) -> None:
        """`render(accept, gzipped)` (for `scrape`) blocks: it runs in one of `threads`."""
        self._render = render
        self._threads = threads
        self.counts = counts
        self.fresh_for = fresh_for
        self.max_waiting = max_waiting
        self._clock = clock
        self._what = what
        self._flights: dict[Hashable, _Flight] = {}
        # The last body of each view: when it was made, and the stamp it was made under.
        self._done: dict[Hashable, tuple[float, object, Body]] = {}
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Requests waiting for a render now."""
        return self._waiting

    async def scrape(self, accept: str | None, gzipped: bool) -> Body:
        """The /metrics body for a scrape with this Accept header; ServerBusy when too many
        wait."""
        render = self._render
        assert render is not None, "scrape needs the SharedRenders made with a render"
        variant: Variant = (choose_encoder(accept or "")[1], gzipped)
        return await self.share(variant, lambda: partial(render, accept, gzipped))

    async def share(
        self, view: Hashable, prepare: Prepare, stamp: object = None, what: str | None = None
    ) -> Body:
        """The body of `view`: a fresh one made under the same `stamp` (compared by identity:
        a reloaded configuration is a new one), the one being made, or a new render of what
        `prepare()` (called on the loop, only for a new render) returns. ServerBusy (naming
        `what`) when too many wait."""
        what = what or self._what
        done = self._done.get(view)
        if done is not None:
            if 0 <= self._clock() - done[0] <= self.fresh_for and done[1] is stamp:
                self.counts.scrapes_shared += 1
                return done[2]
            del self._done[view]  # stale: not kept (23 MB uncompressed at 10,000 endpoints)
        if self._waiting >= self.max_waiting:
            raise ServerBusy(what)
        flight = self._flights.get(view)
        if flight is None or flight.stamp is not stamp:
            flight = _Flight(stamp=stamp)
            self._flights[view] = flight
            render = prepare()
            flight.task = task = asyncio.ensure_future(self._fly(view, flight, render, what))
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
                self._forget(view, flight)
        assert body is not None  # only an abandoned flight, which nobody awaits, has none
        return body

    async def _fly(
        self, view: Hashable, flight: _Flight, render: Callable[[], Body], what: str
    ) -> Body | None:
        try:
            body = await self._threads.run(what, self._render_unless_abandoned, flight, render)
        finally:
            self._forget(view, flight)
        if body is not None:
            self.counts.renders += 1
            now = self._clock()
            self._done = {v: d for v, d in self._done.items() if 0 <= now - d[0] <= self.fresh_for}
            if self.fresh_for > 0:  # 0: shared by the requests that ask meanwhile, not kept
                self._done[view] = (now, flight.stamp, body)
        return body

    @staticmethod
    def _render_unless_abandoned(flight: _Flight, render: Callable[[], Body]) -> Body | None:
        """In the render thread: nothing, if every requester has gone while this one waited."""
        if flight.abandoned:
            return None
        return render()

    def _forget(self, view: Hashable, flight: _Flight) -> None:
        if self._flights.get(view) is flight:
            del self._flights[view]


def _retrieve(task: asyncio.Future[Body | None]) -> None:
    """An abandoned render's failure has nobody to tell: mark it seen (no asyncio warning)."""
    if not task.cancelled():
        task.exception()
