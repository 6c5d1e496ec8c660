"""The database schema, versioned by `PRAGMA user_version` and migrated forward on open."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from healthcheck.errors import StorageError

# sqlite_utils imports numpy and pandas where they are installed (numpy is: onnxruntime needs
# it), to map their scalar types to column types. We never insert those, and numpy alone cost
# ~11 MB of RSS and ~0.1 s in each process that opens the database (the daemon and its render
# helper). So sqlite_utils is imported here, once, with them hidden (None in sys.modules makes
# an import fail), and they are unhidden at once: a canary kind's `import numpy` later in the
# process works as before. Every other module imports sqlite_utils for its types only.
_HIDDEN = [name for name in ("numpy", "pandas") if name not in sys.modules]
for _name in _HIDDEN:
    sys.modules[_name] = None  # type: ignore[assignment]
try:
    import sqlite_utils
finally:
    for _name in _HIDDEN:
        if _name in sys.modules and sys.modules[_name] is None:
            del sys.modules[_name]

# Upper bounds (ms) of the latency histogram kept in every rollup row; the last is +Inf.
LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 2000, 5000, 10000, 30000)
BUCKET_COLUMNS = (*tuple(f"le_{bound}" for bound in LATENCY_BOUNDS_MS), "le_inf")
ROLLUP_TABLES = {"rollup_hour": 3600, "rollup_day": 86400}


def _v1(db: sqlite_utils.Database) -> None:
    db.table("targets").create(
        {"id": int, "region": str, "endpoint": str, "kind": str},
        pk="id",
        not_null={"region", "endpoint"},
    )
    db.table("targets").create_index(["region", "endpoint"], unique=True)
    db.table("results").create(
        {
            "id": int,
            "target_id": int,
            "ts": float,
            "ok": int,
            "status": str,
            "latency_ms": float,
            "http_status": int,
            "error": str,
            "error_text": str,
            "attempts": int,
        },
        pk="id",
        foreign_keys=[("target_id", "targets", "id")],
    )
    db.table("results").create_index(["target_id", "ts"])  # history, latest per target
    db.table("results").create_index(["ts"])  # retention
    for table in ROLLUP_TABLES:
        columns: dict[str, type] = {
            "target_id": int,
            "bucket": int,
            "checks": int,
            "successes": int,
            "degraded": int,
            "latency_sum_ms": float,
            "latency_min_ms": float,
            "latency_max_ms": float,
        }
        columns.update(dict.fromkeys(BUCKET_COLUMNS, int))
        db.table(table).create(columns, pk=("target_id", "bucket"), not_null=set(columns))
        db.table(table).create_index(["bucket"])  # region/global windows, retention
    db.table("alert_state").create(
        {
            "rule": str,
            "target": str,
            "state": str,
            "severity": str,
            "since": float,
            "last_change": float,
            "last_sent": float,
            "summary": str,
            "labels": str,
        },
        pk=("rule", "target"),
    )
    db.table("alert_history").create(
        {
            "id": int,
            "rule": str,
            "target": str,
            "ts": float,
            "from_state": str,
            "to_state": str,
            "severity": str,
            "summary": str,
        },
        pk="id",
    )
    db.table("alert_history").create_index(["ts"])
    db.table("alert_history").create_index(["rule", "target", "ts"])
    db.table("outbox").create(
        {
            "id": int,
            "created": float,
            "channel": str,
            "dedup_key": str,
            "payload": str,
            "attempts": int,
            "next_attempt": float,
            "sent": float,
            "last_error": str,
        },
        pk="id",
    )
    db.table("outbox").create_index(["sent", "next_attempt"])


def _v2(db: sqlite_utils.Database) -> None:
    """The outbox finds the newest unsent state of an alert per channel."""
    db.table("outbox").create_index(["channel", "dedup_key", "id"])
    db.table("outbox").create_index(["channel", "sent", "next_attempt"])


def _v3(db: sqlite_utils.Database) -> None:
    """`healthcheck status` and the API ask for each endpoint's newest failure: a partial
    index makes that a seek (measured: 28 s to 21 ms at 1,000 endpoints, 48 h of rows)."""
    db.execute("CREATE INDEX idx_results_failures ON results (target_id, ts) WHERE ok = 0")


def _v4(db: sqlite_utils.Database) -> None:
    """Silences added from the CLI (`healthcheck silence add`)."""
    db.table("silences").create(
        {
            "id": int,
            "created": float,
            "region": str,
            "endpoint": str,
            "rule": str,
            "starts": float,
            "ends": float,
            "reason": str,
        },
        pk="id",
    )
    db.table("silences").create_index(["ends"])


def _v5(db: sqlite_utils.Database) -> None:
    """Each endpoint's latest check outcomes for its down alert (alerts.failure_window), so
    a restart goes on counting 3 of the last 5 where it was."""
    db.table("alert_window").create(
        {"target": str, "outcomes": str, "down": int, "updated": float}, pk="target"
    )


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_v1, _v2, _v3, _v4, _v5)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(
    path: str | os.PathLike[str], *, create: bool = True, busy_timeout: float = 5.0
) -> sqlite_utils.Database:
    """Open (creating with mode 0600 when allowed) and migrate; WAL, NORMAL sync, and
    `busy_timeout` s to wait on another connection's lock."""
    path = Path(path)
    if not create and not path.exists():
        raise StorageError(f"no database at {path}: has the daemon run with this configuration?")
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    try:
        connection = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=True
        )
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        connection.execute("PRAGMA foreign_keys = ON")
        db = sqlite_utils.Database(connection)
        if create:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            migrate(db)
        else:
            check_version(db)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the database {path}: {exc}") from exc
    return db


def check_version(db: sqlite_utils.Database) -> int:
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the database schema is version {version}, newer than this healthcheck knows "
            f"({SCHEMA_VERSION}); upgrade healthcheck, or point storage.path at another file"
        )
    return version


def migrate(db: sqlite_utils.Database) -> None:
    """Apply every migration past the file's version, each in its own transaction. The version
    is read under the write lock: the writer and the outbox may open a new file at once."""
    while True:
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            version = check_version(db)
            if version >= SCHEMA_VERSION:
                return
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
