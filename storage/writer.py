"""The one writer: results queue up from the event loop and a thread commits them in batches.

The event loop only ever calls `submit` (a non-blocking put). The thread owns the write
connection; when the database cannot be written (read-only, full, locked, gone) it keeps the
batch, logs once, retries with backoff and catches up; past the queue bound it drops and counts.
Before and after each batch it checks that the file at the path is still the one it has open:
a file removed, replaced or overwritten is logged once, set aside and created anew, and the
batch goes into the new file.
"""

from __future__ import annotations

import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from healthcheck.errors import StorageError
from healthcheck.result import ProbeResult, Status
from storage.database_file import Identity, clear_the_way, gone, identity, overwritten
from storage.rollup import bucket_of, latency_bucket
from storage.schema import BUCKET_COLUMNS, ROLLUP_TABLES, connect

if TYPE_CHECKING:
    import sqlite_utils  # its types; storage.schema imports it (without numpy)

log = logging.getLogger("storage.writer")

_STOP = object()
HOURLY_KEPT = 35 * 86400  # hourly rollups: enough for the edges of a 30-day window


@dataclass(frozen=True, slots=True)
class Retention:
    raw: float = 48 * 3600.0
    raw_rows: int | None = None  # most raw rows kept per endpoint, besides the age limit
    rollups: float = 400 * 86400.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """How the writer retries a database it cannot write: it waits `first` s, doubling up to
    `most` s; when closing, it gives up on the held batch once the next wait would pass
    `at_exit` s (with the defaults: four tries over 7.5 s, then the exit line)."""

    first: float = 0.5
    most: float = 30.0
    at_exit: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.at_exit < self.most:
            raise ValueError(f"a writer backoff needs 0 < first <= at_exit < most: {self}")


@dataclass(slots=True)
class WriterStats:
    written: int = 0
    dropped: int = 0
    failures: int = 0
    pruned: int = 0
    writable: bool = False
    last_error: str | None = None
    last_commit: float | None = None
    failing_since: float | None = None  # when writes started failing (None: they work)
    replaced: int = 0  # times the file was found removed, replaced or overwritten, and recreated


class StorageWriter:
    """Batches results into SQLite from a worker thread; see the module docstring."""

    def __init__(
        self,
        path: str,
        retention: Retention | None = None,
        *,
        max_queue: int = 50_000,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        prune_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        backoff: Backoff = Backoff(),
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = path
        self.retention = retention or Retention()
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.prune_interval = prune_interval
        self.clock = clock
        self.backoff = backoff
        self.busy_timeout = busy_timeout  # s a write waits on another process's lock
        self.stats = WriterStats()
        # C's SimpleQueue, bounded by submit: queue.Queue's lock and conditions, in Python, cost
        # 4.7 us a result put and taken, SimpleQueue 0.1 us (timeit, 2-core VM).
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._max_queue = max_queue
        self._held = 0  # results taken off the queue into the batch being written
        self._thread = threading.Thread(target=self._run, name="storage-writer", daemon=True)
        self._db: sqlite_utils.Database | None = None
        self._identity: Identity | None = None  # the file opened last (None: none yet)
        self._target_ids: dict[tuple[str, str], int] = {}
        self._next_prune = 0.0
        self._closing = threading.Event()
        # The writer thread sleeps until its batch is due (flush_interval) or full, not waking
        # for each result: `submit` sets `_enough` once `_want` results are queued.
        self._enough = threading.Event()
        self._want = batch_size

    # -- event loop side -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, result: ProbeResult, status: Status) -> bool:
        """Queue one result without blocking; False (and counted) when the queue is full."""
        queued = self._queue.qsize()
        if queued >= self._max_queue:
            if self.stats.dropped == 0 or self.stats.dropped % 1000 == 0:
                log.warning(
                    "storage queue full: dropping results (%d so far)",
                    self.stats.dropped + 1,
                    extra={"event": "storage_dropped", "dropped": self.stats.dropped + 1},
                )
            self.stats.dropped += 1
            return False
        self._queue.put_nowait((result, status))
        if queued + 1 >= self._want:
            self._enough.set()
        return True

    @property
    def queue_depth(self) -> int:
        """Results not yet in the database: queued, plus the batch the writer holds (during
        an outage that batch is retried, and counts as waiting too)."""
        return self._queue.qsize() + self._held

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop; waits at most `timeout` seconds (blocking)."""
        self._closing.set()
        self._queue.put(_STOP)  # past the bound if need be: it only ever adds this one
        self._enough.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "storage did not flush within %.0fs; %d results unsaved",
                timeout,
                self.queue_depth,
                extra={"event": "storage_unflushed", "unsaved": self.queue_depth},
            )

    # -- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[tuple[ProbeResult, Status]] = []
        stopping = False
        backoff = self.backoff.first
        while True:
            if not stopping and len(pending) < self.batch_size:
                stopping = self._collect(pending)
            self._held = len(pending)
            if pending:
                if self._write(pending):
                    pending.clear()
                    self._held = 0
                    backoff = self.backoff.first
                elif stopping and self._closing.is_set() and backoff > self.backoff.at_exit:
                    # `pending` is the batch held: the queue depth counts it already.
                    log.error(
                        "storage unavailable at exit: %d results unsaved",
                        self.queue_depth,
                        extra={"event": "storage_unflushed", "unsaved": self.queue_depth},
                    )
                    return
                else:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff.most)
                    continue
            if stopping and self._queue.empty():
                self._close_db()
                return
            self._maybe_prune()

    def _collect(self, pending: list[tuple[ProbeResult, Status]]) -> bool:
        """Move queued results into `pending`: wait for the first, take what is there, then
        sleep until the batch is full, `flush_interval` has passed, or the writer is stopped;
        True when stopped. Not a wake per result (a blocking get each): at 200 results a
        second those wakes cost the daemon more CPU than the inserts."""
        deadline = time.monotonic() + self.flush_interval
        while len(pending) < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if pending:
                    self._wait(remaining, self.batch_size - len(pending))
                    continue
                try:  # the first of a batch: woken by it
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return False
            if item is _STOP:
                while len(pending) < 10 * self.batch_size:  # drain the rest, then stop
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if rest is not _STOP:
                        pending.append(rest)  # type: ignore[arg-type]
                return True
            pending.append(item)  # type: ignore[arg-type]
            self._held = len(pending)  # still unwritten: the queue depth counts it
        return False

    def _wait(self, timeout: float, want: int) -> None:
        """Until `want` results are queued, the writer is closed, or `timeout` s."""
        self._want = want
        self._enough.clear()
        if self._queue.qsize() >= want or self._closing.is_set():
            return
        self._enough.wait(timeout)

    def _database(self) -> sqlite_utils.Database:
        if self._db is None:
            self._db = connect(self.path, busy_timeout=self.busy_timeout)
            self._identity = identity(self.path)
            self._target_ids.clear()
        return self._db

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def _check_file(self) -> None:
        """Raise _FileGone when the file opened last is no longer the database at the path (a
        file never opened is not judged: a wrong path at start must not be moved aside)."""
        if self._identity is not None:
            reason = gone(self.path, self._identity)
            if reason is not None:
                raise _FileGone(reason)

    def _write(self, batch: Sequence[tuple[ProbeResult, Status]]) -> bool:
        try:
            self._check_file()
            db = self._database()
            with db.conn:
                db.execute("BEGIN IMMEDIATE")
                write_batch(db, batch, self._target_ids)
            self._check_file()  # gone while committing: the batch went into the old file
        except _FileGone as exc:
            self._file_gone(str(exc), len(batch), broken=False)
            return False
        except Exception as exc:
            reason = overwritten(exc) if self._identity is not None else None
            if reason is not None:  # it was a database when opened
                self._file_gone(reason, len(batch), broken=True)
                return False
            if not isinstance(exc, sqlite3.Error | StorageError | OSError):
                # A bug, not an outage: retrying would loop forever. Count and move on.
                log.exception("storage cannot write this batch", extra={"event": "storage_bug"})
                self.stats.dropped += len(batch)
                return True
            self._target_ids.clear()
            self._close_db()
            self.stats.failures += 1
            text = str(exc)
            if self.stats.writable or self.stats.last_error != text:
                log.error(
                    "storage write failed (%s); keeping %d results and retrying: %s",
                    self.path,
                    len(batch),
                    text,
                    extra={"event": "storage_failed", "path": self.path, "error": text},
                )
            self.stats.writable = False
            self.stats.last_error = text
            if self.stats.failing_since is None:
                self.stats.failing_since = self.clock()
            return False
        if not self.stats.writable and self.stats.failures:
            log.info(
                "storage writable again (%s)",
                self.path,
                extra={"event": "storage_recovered", "path": self.path},
            )
        self.stats.writable = True
        self.stats.last_error = None
        self.stats.failing_since = None
        self.stats.written += len(batch)
        self.stats.last_commit = self.clock()
        return True

    def _file_gone(self, reason: str, held: int, *, broken: bool) -> None:
        """Close the old file, clear the way for a new one (created on the next try, after the
        usual backoff, so the outage shows on /readyz) and log it once."""
        self._close_db()
        self._target_ids.clear()
        self._identity = None
        self.stats.failures += 1
        self.stats.writable = False
        self.stats.last_error = reason
        if self.stats.failing_since is None:
            self.stats.failing_since = self.clock()
        try:
            moved = clear_the_way(self.path, self.clock(), broken)
        except OSError as exc:  # the next try reports why the file cannot be created
            moved = None
            log.warning("cannot set the old database file aside: %s", exc)
        self.stats.replaced += 1
        log.error(
            "storage %s: %s%s; creating it anew and writing %d held results into it",
            self.path,
            reason,
            f" (moved to {moved})" if moved else "",
            held,
            extra={
                "event": "storage_replaced",
                "path": self.path,
                "error": reason,
                "moved_to": moved,
                "held": held,
            },
        )

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune or self._db is None:
            return
        try:
            removed = prune(self._db, self.retention, self.clock())
        except sqlite3.Error as exc:
            log.warning("pruning failed: %s", exc, extra={"event": "storage_prune_failed"})
            removed = 0
        self.stats.pruned += removed
        # Keep going soon while there is a backlog to prune, else wait a full interval.
        self._next_prune = now + (1.0 if removed else self.prune_interval)


class _FileGone(Exception):
    """The file the writer has open is no longer the database at its path."""


def write_batch(
    db: sqlite_utils.Database,
    batch: Sequence[tuple[ProbeResult, Status]],
    target_ids: dict[tuple[str, str], int],
) -> None:
    """Insert raw rows and add the batch to the hourly and daily rollups (one transaction).
    Each rollup row is added up in place as the upsert's parameters (target_id, bucket, then
    Tally's fields and histogram, as Tally.add_check counts them): at 1,000 endpoints every
    5 s nearly every key of a batch is new, and a Tally and its row per key per table were
    most of this function's Python."""
    rows = []
    widths = tuple(ROLLUP_TABLES.values())
    rollups: tuple[dict[tuple[int, int], list[float]], ...] = tuple({} for _ in widths)
    empty = [0] * len(BUCKET_COLUMNS)
    degraded = Status.DEGRADED
    for result, status in batch:
        target_id = target_ids.get((result.region, result.endpoint))
        if target_id is None:
            target_id = _target_id(db, result, target_ids)
        latency_ms = result.latency * 1000
        error = result.error
        ts = result.timestamp
        ok = result.ok
        rows.append(
            (
                target_id,
                ts,
                int(ok),
                status.value,
                latency_ms,
                result.http_status,
                error.value if error else None,
                result.error_text,
                result.attempts,
            )
        )
        is_degraded = status is degraded
        column = _HISTOGRAM_AT + latency_bucket(latency_ms)
        for width, by_bucket in zip(widths, rollups, strict=True):
            key = (target_id, bucket_of(ts, width))
            row = by_bucket.get(key)
            if row is None:  # a new Tally() with this one check added
                row = by_bucket[key] = [
                    *key,
                    1,
                    0 + ok,
                    0 + is_degraded,
                    0.0 + latency_ms,
                    min(math.inf, latency_ms),
                    max(0.0, latency_ms),
                    *empty,
                ]
                row[column] = 1
            else:  # Tally.add_check
                row[2] += 1
                row[3] += ok
                row[4] += is_degraded
                row[5] += latency_ms
                row[6] = min(row[6], latency_ms)
                row[7] = max(row[7], latency_ms)
                row[column] += 1
    db.conn.executemany(
        "INSERT INTO results (target_id, ts, ok, status, latency_ms, http_status, error,"
        " error_text, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    for table, by_bucket in zip(ROLLUP_TABLES, rollups, strict=True):
        db.conn.executemany(_UPSERT[table], by_bucket.values())


# Where the histogram starts in a rollup row: after target_id, bucket and Tally's six counts.
_HISTOGRAM_AT = 8


def _upsert_sql(table: str) -> str:
    columns = (
        "target_id",
        "bucket",
        "checks",
        "successes",
        "degraded",
        "latency_sum_ms",
        "latency_min_ms",
        "latency_max_ms",
        *BUCKET_COLUMNS,
    )
    added = [c for c in columns[2:] if c not in ("latency_min_ms", "latency_max_ms")]
    updates = [f"{c} = {c} + excluded.{c}" for c in added]
    updates.append("latency_min_ms = min(latency_min_ms, excluded.latency_min_ms)")
    updates.append("latency_max_ms = max(latency_max_ms, excluded.latency_max_ms)")
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - names are ours
        f"VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT (target_id, bucket) DO UPDATE SET {', '.join(updates)}"
    )


_UPSERT = {table: _upsert_sql(table) for table in ROLLUP_TABLES}


def _target_id(
    db: sqlite_utils.Database, result: ProbeResult, cache: dict[tuple[str, str], int]
) -> int:
    """The endpoint's row in `targets`, made if new; cached by (region, name), which hash
    faster than an EndpointId."""
    key = (result.region, result.endpoint)
    found = cache.get(key)
    if found is None:
        db.execute(
            "INSERT OR IGNORE INTO targets (region, endpoint, kind) VALUES (?, ?, ?)",
            [result.region, result.endpoint, result.kind],
        )
        found = db.execute(
            "SELECT id FROM targets WHERE region = ? AND endpoint = ?", [*key]
        ).fetchone()[0]
        cache[key] = found
    return found


PRUNE_CHUNK = 5000


def prune(db: sqlite_utils.Database, retention: Retention, now: float) -> int:
    """Delete at most one chunk per table past retention; returns rows removed (0: caught up)."""
    removed = 0
    limits = [
        ("results", "ts", now - retention.raw),
        ("rollup_hour", "bucket", now - min(HOURLY_KEPT, retention.rollups)),
        ("rollup_day", "bucket", now - retention.rollups),
    ]
    for table, column, cutoff in limits:
        with db.conn:
            cursor = db.execute(
                f"DELETE FROM {table} WHERE rowid IN "  # noqa: S608 - names are ours
                f"(SELECT rowid FROM {table} WHERE {column} < ? LIMIT {PRUNE_CHUNK})",
                [cutoff],
            )
            removed += cursor.rowcount
    if retention.raw_rows:
        removed += _prune_rows_per_target(db, retention.raw_rows)
    return removed


def _prune_rows_per_target(db: sqlite_utils.Database, keep: int) -> int:
    removed = 0
    target_ids = [row[0] for row in db.execute("SELECT id FROM targets")]
    for target_id in target_ids:
        with db.conn:
            cursor = db.execute(
                "DELETE FROM results WHERE target_id = ? AND id <= (SELECT id FROM results "
                "WHERE target_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                [target_id, target_id, keep],
            )
            removed += cursor.rowcount
    return removed
