"""Stored uptime for the API, the status page and /metrics, refreshed off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from healthcheck.errors import StorageError
from healthcheck.offload import Offload, OffloadError
from healthcheck.result import EndpointId
from storage.packed import window_ratios
from storage.uptime import Day, StorageReader, UptimeReport, daily_history

log = logging.getLogger("healthcheck.uptime")
HISTORY_DAYS = 90
T = TypeVar("T")


# Daily bars change once a day; read them when a page asks, at most this often.
HISTORY_MAX_AGE = 60.0
# How long a scrape waits for the first read after a (re)start before it goes out without
# stored uptime: under Prometheus's default scrape timeout (10 s), with time left to render.
FIRST_READ_WAIT = 8.0


@dataclass(frozen=True, slots=True)
class UptimeSnapshot:
    at: float
    report: UptimeReport


@dataclass(frozen=True, slots=True)
class HistorySnapshot:
    at: float
    days: dict[int, list[Day]]


class UptimeCache:
    """One snapshot at a time; a stale one is refreshed by one task while others wait for it.

    The rolling windows (metrics, alerting) refresh in the background; the 90 daily bars of the
    status page only when asked: at 1,000 endpoints they are 90,000 objects, and building them
    every 15 s made the garbage collector stop the event loop for ~100 ms at a time.
    """

    def __init__(
        self,
        path: str,
        raw_retention: float,
        clock: Callable[[], float] = time.time,
        offload: Offload | None = None,
    ) -> None:
        self.path = path
        # The daemon reads uptime in its helper process: at 10,000 endpoints one read is
        # seconds of Python that, in a thread, would take the GIL from the probing loop.
        self.offload = offload
        self.raw_retention = raw_retention
        self.clock = clock
        self.snapshot: UptimeSnapshot | None = None
        self._history: HistorySnapshot | None = None
        # One read of each at a time, shared by whoever asks while it runs. A task, not a
        # lock: the HTTP server cancels a request whose client hung up, and a read cancelled
        # with it would leave its thread reading on while the next request started another.
        self._refreshing: asyncio.Task[None] | None = None
        self._reading_history: asyncio.Task[None] | None = None

    def uptime_24h(self) -> dict[EndpointId, tuple[float | None, float]]:
        """(24h uptime, checks) per endpoint id, from the last snapshot, for alert rules."""
        if self.snapshot is None:
            return {}
        report = self.snapshot.report
        found = {}
        for target_id, target in report.targets.items():
            windows = report.endpoints.get(target_id)
            for window, ratio, checks in window_ratios(windows) if windows else ():
                if window == "24h":
                    found[target.endpoint_id] = (ratio, checks)
        return found

    async def get(self, max_age: float = 10.0) -> UptimeSnapshot | None:
        """The latest snapshot, refreshed first when older than `max_age` seconds."""
        if self._stale(self.snapshot, max_age):
            await asyncio.shield(self._refresh_shared())
        return self.snapshot

    def _refresh_shared(self) -> asyncio.Task[None]:
        """The read under way, or a new one."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self.refresh())
        return self._refreshing

    def start(self) -> None:
        """Begin the first read now, at start, before the HTTP front answers: the first scrape
        then shows what is stored instead of no uptime series (a gap in every graph)."""
        self._refresh_shared()

    async def first_read(self, wait: float = FIRST_READ_WAIT) -> None:
        """Before any read has finished, wait for the one under way, at most `wait` seconds; a
        database too big to read in that time is shown from the next scrape on, as before."""
        task = self._refreshing
        if self.snapshot is not None or task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            log.info("first uptime read still under way after %.0fs; scrape served without", wait)

    def _stale(self, snapshot: UptimeSnapshot | HistorySnapshot | None, max_age: float) -> bool:
        """Missing, too old, or from the future: the wall clock stepped back."""
        return snapshot is None or not 0 <= self.clock() - snapshot.at <= max_age

    async def refresh(self) -> None:
        try:
            self.snapshot = await self._off_loop(read_uptime, self.clock())
        except StorageError as exc:  # no database yet, or it is unreadable: keep the last one
            log.debug("uptime not refreshed: %s", exc)

    async def _off_loop(self, read: Callable[[str, float, float], T], now: float) -> T:
        """Run a read in the helper process (or a thread)."""
        if self.offload is None:
            return await asyncio.to_thread(read, self.path, self.raw_retention, now)
        try:
            return await asyncio.to_thread(
                self.offload.call, read, self.path, self.raw_retention, now
            )
        except OffloadError as exc:
            raise StorageError(str(exc)) from exc

    async def history(self) -> dict[int, list[Day]]:
        """Per endpoint id, the last HISTORY_DAYS daily bars ({} while unreadable)."""
        if self._stale(self._history, HISTORY_MAX_AGE):
            if self._reading_history is None or self._reading_history.done():
                self._reading_history = asyncio.ensure_future(self._read_history())
            await asyncio.shield(self._reading_history)
        cached = self._history
        return cached.days if cached else {}

    async def _read_history(self) -> None:
        now = self.clock()
        try:
            self._history = HistorySnapshot(now, await self._off_loop(read_days, now))
        except StorageError as exc:
            log.debug("daily history not read: %s", exc)

    async def run(self, every: float = 15.0, share: float = 0.05) -> None:
        """Keep the snapshot fresh for scrapes, which must not wait on SQLite. A refresh that
        takes long waits longer for the next (it holds the GIL the event loop needs): at most
        `share` of the time goes to it. 1,000 endpoints: ~1 s, every 20 s."""
        while True:
            began = time.monotonic()
            await asyncio.shield(self._refresh_shared())  # at start: the one start() began
            await asyncio.sleep(max(every, (time.monotonic() - began) / share))


def read_uptime(path: str, raw_retention: float, now: float) -> UptimeSnapshot:
    """The rolling windows now (module level: it runs in the helper process)."""
    report = _with_reader(path, raw_retention, lambda r: r.uptime(now, packed=True))
    return UptimeSnapshot(now, report)  # what the daemon keeps: packed


def read_days(path: str, raw_retention: float, now: float) -> dict[int, list[Day]]:
    return _with_reader(path, raw_retention, lambda r: daily_history(r, HISTORY_DAYS, now))


def _with_reader(path: str, raw_retention: float, read: Callable[[StorageReader], T]) -> T:
    reader = StorageReader(path, raw_retention)
    try:
        return read(reader)
    except Exception as exc:
        raise StorageError(f"cannot read uptime from {path}: {exc}") from exc
    finally:
        reader.close()
