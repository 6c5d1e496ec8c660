"""The durable outbox: every notification is stored before any delivery is tried.

A restart resumes it; a channel that was down for an hour gets each alert's *current* state
once when it is back: older unsent states of the same alert on that channel are superseded.
Used from a worker thread (sqlite3 connections stay on the thread that opened them).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from healthcheck.errors import StorageError

if TYPE_CHECKING:
    import sqlite_utils  # its types; storage.schema imports it (without numpy)

SUPERSEDED = "superseded by a newer state of the same alert"


class DatabaseFile(Protocol):
    """The storage database the outbox table lives in; storage/ (a layer alerting does not
    import) opens, creates and migrates it, and the wiring hands it in."""

    @property
    def path(self) -> str: ...

    def open(self, *, create: bool = True) -> sqlite_utils.Database:
        """Connect, creating and migrating the file when `create`."""
        ...

    def identity(self) -> Hashable | None:
        """The file now at the path; None when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one channel. `notify_type`: failure, warning, info or success."""

    channel: str
    dedup_key: str  # the alert's identity; PagerDuty and Alertmanager deduplicate on it
    title: str
    body: str
    notify_type: str
    severity: str
    event: str  # fired, escalated, reminder, resolved, grouped, test
    labels: list[list[str]] | None = None  # [name, value] pairs, for Alertmanager
    starts_at: float | None = None
    ends_at: float | None = None  # set when resolved
    runbook_url: str | None = None  # alerting.runbook_base/<rule>, when set
    held: list[str] | None = None  # alerts (rule:target) held behind this one, not sent alone


@dataclass(frozen=True, slots=True)
class Pending:
    id: int
    notification: Notification
    attempts: int


class Outbox:
    def __init__(self, database: DatabaseFile, *, create: bool = True) -> None:
        self.database = database
        self.path = database.path
        self.db: sqlite_utils.Database = database.open(create=create)
        self.identity = database.identity()

    def close(self) -> None:
        self.db.conn.close()

    def moved(self) -> bool:
        """The file at the path is not the one open here (removed, replaced, set aside)."""
        return self.database.identity() != self.identity

    def reopened(self) -> tuple[Outbox, int]:
        """The outbox on the file now at the path, with this one's undelivered notifications
        carried over; this one is closed. Only the storage writer creates a lost file (it
        clears the old file's -wal and -shm first): until it has, this raises StorageError."""
        if self.database.identity() is None:
            raise StorageError(f"{self.path} was removed; waiting for it to be created anew")
        try:
            rows = self.db.execute(
                "SELECT created, channel, dedup_key, payload, attempts, next_attempt, last_error"
                " FROM outbox WHERE sent IS NULL ORDER BY id"
            ).fetchall()
        except sqlite3.DatabaseError:  # overwritten: nothing left to carry (counted as -1)
            rows = None
        new = Outbox(self.database, create=False)
        try:
            with new.db.conn:
                new.db.execute("BEGIN IMMEDIATE")
                new.db.conn.executemany(
                    "INSERT INTO outbox (created, channel, dedup_key, payload, attempts,"
                    " next_attempt, last_error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows or [],
                )
        except Exception:
            new.close()
            raise
        self.close()
        return new, -1 if rows is None else len(rows)

    def put(self, notifications: Iterable[Notification], now: float) -> int:
        """Store notifications in one transaction; returns how many."""
        rows = [(now, n.channel, n.dedup_key, json.dumps(asdict(n)), 0, now) for n in notifications]
        with self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.conn.executemany(
                "INSERT INTO outbox (created, channel, dedup_key, payload, attempts, next_attempt)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def due(
        self, channel: str, now: float, limit: int = 100, max_backoff: float = 300.0
    ) -> list[Pending]:
        """Unsent notifications for a channel whose time has come, newest state per alert."""
        with self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            # Older unsent states of an alert that has a newer one queued are not worth sending.
            self.db.execute(
                "UPDATE outbox SET sent = ?, last_error = ? WHERE channel = ? AND sent IS NULL "
                "AND id < (SELECT MAX(id) FROM outbox newer WHERE newer.channel = outbox.channel "
                "AND newer.dedup_key = outbox.dedup_key)",
                [now, SUPERSEDED, channel],
            )
            # A retry time further ahead than any backoff was set before the wall clock
            # stepped back: due now, not after the step.
            rows = self.db.execute(
                "SELECT id, payload, attempts FROM outbox WHERE channel = ? AND sent IS NULL "
                "AND (next_attempt <= ? OR next_attempt > ?) ORDER BY id LIMIT ?",
                [channel, now, now + max_backoff, limit],
            ).fetchall()
        return [Pending(row[0], Notification(**json.loads(row[1])), row[2]) for row in rows]

    def mark_sent(self, pending_id: int, now: float) -> None:
        with self.db.conn:
            self.db.execute(
                "UPDATE outbox SET sent = ?, attempts = attempts + 1, last_error = NULL "
                "WHERE id = ?",
                [now, pending_id],
            )

    def mark_sending(self, pending_id: int, retry_at: float) -> None:
        """Before a send: should no answer ever come (a hang, a crash), retry at `retry_at`."""
        with self.db.conn:
            self.db.execute(
                "UPDATE outbox SET next_attempt = ? WHERE id = ?", [retry_at, pending_id]
            )

    def mark_failed(self, pending_id: int, error: str, retry_at: float) -> None:
        with self.db.conn:
            self.db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt = ? "
                "WHERE id = ?",
                [error, retry_at, pending_id],
            )

    def pending(self) -> dict[str, int]:
        """Unsent notifications per channel."""
        return dict(
            self.db.execute(
                "SELECT channel, COUNT(*) FROM outbox WHERE sent IS NULL GROUP BY channel"
            ).fetchall()
        )
