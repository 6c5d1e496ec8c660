"""Stored uptime for the API, the status page and /metrics, refreshed off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from healthcheck.errors import StorageError
from storage.uptime import Day, StorageReader, UptimeReport, daily_history

log = logging.getLogger("healthcheck.uptime")
HISTORY_DAYS = 90


@dataclass(frozen=True, slots=True)
class UptimeSnapshot:
    at: float
    report: UptimeReport
    history: dict[int, list[Day]]


class UptimeCache:
    """One snapshot at a time; a stale one is refreshed by one task while others wait for it."""

    def __init__(
        self, path: str, raw_retention: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.raw_retention = raw_retention
        self.clock = clock
        self.snapshot: UptimeSnapshot | None = None
        self._lock = asyncio.Lock()

    async def get(self, max_age: float = 10.0) -> UptimeSnapshot | None:
        """The latest snapshot, refreshed first when older than `max_age` seconds."""
        if self.snapshot is None or self.clock() - self.snapshot.at > max_age:
            async with self._lock:
                if self.snapshot is None or self.clock() - self.snapshot.at > max_age:
                    await self.refresh()
        return self.snapshot

    async def refresh(self) -> None:
        try:
            self.snapshot = await asyncio.to_thread(self._read, self.clock())
        except StorageError as exc:  # no database yet, or it is unreadable: keep the last one
            log.debug("uptime not refreshed: %s", exc)

    def _read(self, now: float) -> UptimeSnapshot:
        reader = StorageReader(self.path, self.raw_retention)
        try:
            return UptimeSnapshot(now, reader.uptime(now), daily_history(reader, HISTORY_DAYS, now))
        except Exception as exc:
            raise StorageError(f"cannot read uptime from {self.path}: {exc}") from exc
        finally:
            reader.close()

    async def run(self, every: float = 15.0) -> None:
        """Keep the snapshot fresh for scrapes, which must not wait on SQLite."""
        while True:
            await self.refresh()
            await asyncio.sleep(every)
