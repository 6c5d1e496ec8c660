"""The last ping of each push endpoint, kept in the daemon's SQLite file beside its results, so a
check in any probe worker, a restarted daemon and `--once` all judge the same ping.

One row per endpoint (region, endpoint): never the token, which stays a secret of the config.
Pings are rare (a job's run; rate-limited per token), so each is one short transaction.
"""

from __future__ import annotations

import os
import sqlite3
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


def record(path: str, region: str, endpoint: str, ping: Ping) -> None:
    """Keep `ping` as the endpoint's last (blocking: call it in a thread). The storage writer
    creates the file (mode 0600, its schema); until it has, a ping is refused."""
    if not os.path.exists(path):
        raise sqlite3.OperationalError(f"no database at {path} yet")
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
    try:
        with conn:
            conn.execute(_CREATE)
            conn.execute(
                _RECORD,
                (region, endpoint, ping.ts, int(ping.ok), ping.message, ping.latency_ms),
            )
    finally:
        conn.close()


def last(path: str, region: str, endpoint: str) -> Ping | None:
    """The endpoint's last ping; None when none was stored (or there is no database yet).
    Blocking: call it in a thread. Raises sqlite3.Error for a file that cannot be read."""
    if not os.path.exists(path):
        return None  # no database file: nothing was ever stored
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"  # read-only: never creates one
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT)
    try:
        row = conn.execute(_LAST, (region, endpoint)).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    finally:
        conn.close()
    return None if row is None else Ping(row[0], bool(row[1]), row[2], row[3])
