"""Stored uptime for the API, the status page and /metrics, refreshed off the event loop."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.process
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from healthcheck.errors import StorageError
from storage.uptime import Day, StorageReader, UptimeReport, daily_history

log = logging.getLogger("healthcheck.uptime")
HISTORY_DAYS = 90
T = TypeVar("T")


# Daily bars change once a day; read them when a page asks, at most this often.
HISTORY_MAX_AGE = 60.0
_SPAWN = multiprocessing.get_context("spawn")


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
        separate_process: bool = False,
    ) -> None:
        self.path = path
        # The daemon reads uptime in a process of its own: at 10,000 endpoints one read is
        # seconds of Python that, in a thread, would take the GIL from the probing loop.
        self._separate = separate_process
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._process_lock = asyncio.Lock()
        self.raw_retention = raw_retention
        self.clock = clock
        self.snapshot: UptimeSnapshot | None = None
        self._history: HistorySnapshot | None = None
        self._lock = asyncio.Lock()
        self._history_lock = asyncio.Lock()

    async def get(self, max_age: float = 10.0) -> UptimeSnapshot | None:
        """The latest snapshot, refreshed first when older than `max_age` seconds."""
        if self.snapshot is None or self.clock() - self.snapshot.at > max_age:
            async with self._lock:
                if self.snapshot is None or self.clock() - self.snapshot.at > max_age:
                    await self.refresh()
        return self.snapshot

    async def refresh(self) -> None:
        try:
            self.snapshot = await self._off_loop(read_uptime, self.clock())
        except StorageError as exc:  # no database yet, or it is unreadable: keep the last one
            log.debug("uptime not refreshed: %s", exc)

    async def _off_loop(self, read: Callable[[str, float, float], T], now: float) -> T:
        """Run a read in the reader process (or a thread); a dead process is replaced."""
        if not self._separate:
            return await asyncio.to_thread(read, self.path, self.raw_retention, now)
        async with self._process_lock:  # one read at a time on the one pipe
            return await asyncio.to_thread(self._ask, read, now)

    def _ask(self, read: Callable[[str, float, float], T], now: float) -> T:
        if self._process is None or not self._process.is_alive():
            self._start()
        assert self._conn is not None
        try:
            self._conn.send((read, self.path, self.raw_retention, now))
            ok, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise StorageError(f"the uptime reader process died: {exc!r}") from exc
        if not ok:
            raise StorageError(value)
        return value

    def _start(self) -> None:
        self.close()
        parent, child = _SPAWN.Pipe(duplex=True)
        process = _SPAWN.Process(target=serve_reads, args=(child,), name="uptime reader")
        process.daemon = True
        process.start()
        child.close()  # only the reader holds this end: the daemon gone, it reads EOF and ends
        self._process, self._conn = process, parent

    def close(self) -> None:
        """Stop the reader process, if one was started."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(1.0)
            if self._process.is_alive():
                self._process.kill()
            self._process = None

    async def history(self) -> dict[int, list[Day]]:
        """Per endpoint id, the last HISTORY_DAYS daily bars ({} while unreadable)."""
        async with self._history_lock:
            cached = self._history
            if cached is None or self.clock() - cached.at > HISTORY_MAX_AGE:
                now = self.clock()
                try:
                    days = await self._off_loop(read_days, now)
                    self._history = cached = HistorySnapshot(now, days)
                except StorageError as exc:
                    log.debug("daily history not read: %s", exc)
        return cached.days if cached else {}

    async def run(self, every: float = 15.0, share: float = 0.05) -> None:
        """Keep the snapshot fresh for scrapes, which must not wait on SQLite. A refresh that
        takes long waits longer for the next (it holds the GIL the event loop needs): at most
        `share` of the time goes to it. 1,000 endpoints: ~1 s, every 20 s."""
        while True:
            began = time.monotonic()
            await self.refresh()
            await asyncio.sleep(max(every, (time.monotonic() - began) / share))


def serve_reads(conn: Connection) -> None:
    """The reader process: answer (read, path, retention, now) until the daemon hangs up."""
    while True:
        try:
            read, path, raw_retention, now = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            answer: tuple[bool, Any] = (True, read(path, raw_retention, now))
        except StorageError as exc:
            answer = (False, str(exc))
        except Exception as exc:  # never die on a bad read: the daemon logs it
            answer = (False, f"uptime read failed: {type(exc).__name__}: {exc}")
        try:
            conn.send(answer)
        except (EOFError, OSError):
            return


def read_uptime(path: str, raw_retention: float, now: float) -> UptimeSnapshot:
    """The rolling windows now (module level: it runs in the reader process)."""
    return UptimeSnapshot(now, _with_reader(path, raw_retention, lambda r: r.uptime(now)))


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
