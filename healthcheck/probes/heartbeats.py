"""The last ping of each push endpoint, kept in the daemon's SQLite file beside its results, so a
check in any probe worker, a restarted daemon and `--once` all judge the same ping.

One row per endpoint (region, endpoint): never the token, which stays a secret of the config.
A `Recorder` (the daemon's push path) and a `Reader` (each process's push checks) keep their
connection open between calls: opening one, and SQLite reading the schema on its first
statement, was most of a ping's and a check's cost (bench/README.md). Both are blocking and not
thread-safe: each is used from one thread of its own.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

BUSY_TIMEOUT = 5.0  # seconds a ping waits for the storage writer's transaction
_CREATE = (
    "CREATE TABLE IF NOT EXISTS push_heartbeats (region TEXT NOT NULL, endpoint TEXT NOT NULL,"
    " ts REAL NOT NULL, ok INTEGER NOT NULL, message TEXT, latency_ms REAL,"
    " PRIMARY KEY (region, endpoint))"
)
_RECORD = (
    "INSERT INTO push_heartbeats (region, endpoint, ts, ok, message, latency_ms)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (region, endpoint) DO UPDATE SET"
    " ts = excluded.ts, ok = excluded.ok, message = excluded.message,"
    " latency_ms = excluded.latency_ms"
)
_LAST = "SELECT ts, ok, message, latency_ms FROM push_heartbeats WHERE region = ? AND endpoint = ?"


@dataclass(frozen=True, slots=True)
class Ping:
    ts: float  # when it arrived, epoch seconds
    ok: bool  # false: the job said status=down
    message: str | None
    latency_ms: float | None  # what the job measured, if it said


@dataclass(frozen=True, slots=True)
class Stored:
    """A ping as it is kept: whose it is, by region and endpoint."""

    region: str
    endpoint: str
    ping: Ping


def _file(path: str) -> tuple[int, int] | None:
    """Which file is at `path` (device, inode); None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class _Kept:
    """A connection to the file at a path, opened anew when the file there is another (the
    storage writer sets a removed or replaced database aside and creates it anew)."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._at: tuple[str, tuple[int, int]] | None = None

    def _open(self, path: str, file: tuple[int, int]) -> sqlite3.Connection:
        raise NotImplementedError

    def connection(self, path: str) -> sqlite3.Connection | None:
        """The open connection to the file at `path`; None when there is no file."""
        file = _file(path)
        if self._conn is not None and self._at != (path, file):
            self.close()
        if file is None:
            return None
        if self._conn is None:
            self._conn = self._open(path, file)
            self._at = (path, file)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn, self._at = self._conn, None, None
            conn.close()


class NoDatabase(sqlite3.OperationalError):
    """The storage writer has not created the database file (yet)."""


class Recorder(_Kept):
    """Keeps pings as their endpoints' last, many in one transaction."""

    def _open(self, path: str, file: tuple[int, int]) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            # As the storage writer's: WAL (set when it created the file), NORMAL sync.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_CREATE)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def record(self, path: str, pings: Sequence[Stored]) -> None:
        """Keep each ping as its endpoint's last, in one transaction. The storage writer
        creates the file (mode 0600, its schema); until it has, pings are refused."""
        conn = self.connection(path)
        if conn is None:
            raise NoDatabase(f"no database at {path} yet")
        rows = [
            (s.region, s.endpoint, s.ping.ts, int(s.ping.ok), s.ping.message, s.ping.latency_ms)
            for s in pings
        ]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_RECORD, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error:
            self.close()  # opened afresh next time, whatever went wrong
            raise


class Reader(_Kept):
    """Reads endpoints' last pings, never creating or writing the file."""

    def _open(self, path: str, file: tuple[int, int]) -> sqlite3.Connection:
        uri = f"file:{quote(os.path.abspath(path))}?mode=ro"  # read-only: never creates one
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)

    def last(self, path: str, region: str, endpoint: str) -> Ping | None:
        """The endpoint's last ping; None when none was stored (or there is no database yet).
        Raises sqlite3.Error for a file that cannot be read."""
        conn = self.connection(path)
        if conn is None:
            return None  # no database file: nothing was ever stored
        try:
            rows = conn.execute(_LAST, (region, endpoint)).fetchall()  # all: the read ends
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                self.close()  # the table may come; a new connection sees the new schema
                return None
            self.close()
            raise
        except sqlite3.Error:
            self.close()
            raise
        return next((Ping(ts, bool(ok), m, ms) for ts, ok, m, ms in rows), None)


def record(path: str, region: str, endpoint: str, ping: Ping) -> None:
    """Keep `ping` as the endpoint's last, on a connection of its own (blocking)."""
    recorder = Recorder()
    try:
        recorder.record(path, [Stored(region, endpoint, ping)])
    finally:
        recorder.close()


def last(path: str, region: str, endpoint: str) -> Ping | None:
    """The endpoint's last ping, on a connection of its own (blocking)."""
    reader = Reader()
    try:
        return reader.last(path, region, endpoint)
    finally:
        reader.close()
