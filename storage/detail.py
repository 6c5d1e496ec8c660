"""What the endpoint and region detail views read: latency per bucket, status changes, alerts.

Every query is bounded: a latency series is at most 30 rollup rows per endpoint, status changes
come from the raw rows through one window-function scan of the (target_id, ts) index, and
failures and alert rows are capped. They run in the server's read threads, never on the loop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from storage.rollup import Tally, bucket_of
from storage.schema import BUCKET_COLUMNS
from storage.uptime import DAY, HOUR, StorageReader

# window -> (bucket width s, buckets, rollup table)
SERIES: dict[str, tuple[int, int, str]] = {
    "24h": (HOUR, 24, "rollup_hour"),
    "7d": (DAY, 7, "rollup_day"),
    "30d": (DAY, 30, "rollup_day"),
}
MAX_FAILURES = 10_000  # failed checks marked on a chart; the page bins them per pixel
MAX_EVENTS = 500
_TALLY_COLUMNS = (
    "checks, successes, degraded, latency_sum_ms, latency_min_ms, latency_max_ms, "
    + ", ".join(BUCKET_COLUMNS)
)


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket of a latency chart: its start (epoch s), checks, failures, percentiles."""

    start: int
    checks: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True, slots=True)
class Failure:
    ts: float
    latency_ms: float
    error: str | None
    error_text: str | None


@dataclass(frozen=True, slots=True)
class Change:
    """A stored check whose status differs from the one before it (of the same endpoint)."""

    target_id: int
    ts: float
    status: str
    ok: bool
    error: str | None
    error_text: str | None
    http_status: int | None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    rule: str
    target: str
    ts: float
    event: str  # fired, escalated, reminder, resolved
    state: str
    severity: str
    summary: str | None
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    channel: str
    sent: float | None
    attempts: int
    last_error: str | None


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def latency_series(
    reader: StorageReader, target_ids: Sequence[int], window: str, now: float
) -> list[Point]:
    """The window's buckets oldest first (the current one last), all the endpoints' checks
    added up per bucket; a bucket without checks has None percentiles."""
    width, count, table = SERIES[window]
    first = bucket_of(now, width) - (count - 1) * width
    tallies: dict[int, Tally] = {}
    if target_ids:
        rows = reader.db.execute(
            f"SELECT bucket, {_TALLY_COLUMNS} FROM {table} "  # noqa: S608 - names are ours
            f"WHERE target_id IN ({_placeholders(len(target_ids))}) AND bucket >= ?",
            [*target_ids, first],
        )
        for bucket, checks, successes, degraded, total, low, high, *histogram in rows:
            part = Tally(
                checks, successes, degraded, total, low, high, [float(c) for c in histogram]
            )
            tallies.setdefault(bucket, Tally()).add(part)
    points = []
    for index in range(count):
        start = first + index * width
        tally = tallies.get(start, Tally())
        points.append(
            Point(
                start,
                round(tally.checks),
                round(tally.checks - tally.successes),
                tally.percentile(0.50),
                tally.percentile(0.95),
                tally.percentile(0.99),
                tally.latency_max_ms if tally.checks else None,
            )
        )
    return points


def failed_checks(
    reader: StorageReader, target_ids: Sequence[int], start: float, now: float
) -> tuple[list[Failure], bool]:
    """Failed checks in [start, now] oldest first, at most MAX_FAILURES (the newest);
    whether some were left out."""
    if not target_ids:
        return [], False
    rows = reader.db.execute(
        "SELECT ts, latency_ms, error, error_text FROM results "  # noqa: S608 - placeholders only
        f"WHERE target_id IN ({_placeholders(len(target_ids))}) AND ok = 0 AND ts >= ? "
        "AND ts <= ? ORDER BY ts DESC LIMIT ?",
        [*target_ids, start, now, MAX_FAILURES + 1],
    ).fetchall()
    cut = len(rows) > MAX_FAILURES
    return [Failure(*row) for row in reversed(rows[:MAX_FAILURES])], cut


def status_changes(
    reader: StorageReader,
    target_ids: Sequence[int],
    start: float,
    now: float,
    newest: int | None = None,
) -> list[Change]:
    """Per endpoint, its first stored check in [start, now] and every check whose status or
    verdict differs from the one before; oldest first (only the `newest` ones when given)."""
    if not target_ids:
        return []
    rows = reader.db.execute(
        "SELECT target_id, ts, status, ok, error, error_text, http_status FROM ("  # noqa: S608
        "SELECT target_id, ts, status, ok, error, error_text, http_status, "
        "LAG(status) OVER w AS was, LAG(ok) OVER w AS was_ok, LAG(error) OVER w AS was_error "
        "FROM results "
        f"WHERE target_id IN ({_placeholders(len(target_ids))}) AND ts >= ? AND ts <= ? "
        "WINDOW w AS (PARTITION BY target_id ORDER BY ts)) "
        "WHERE was IS NULL OR was != status OR was_ok != ok "
        "OR COALESCE(was_error, '') != COALESCE(error, '') ORDER BY ts DESC LIMIT ?",
        [*target_ids, start, now, -1 if newest is None else newest],
    ).fetchall()
    return [
        Change(target_id, ts, status, bool(ok), error, error_text, http_status)
        for target_id, ts, status, ok, error, error_text, http_status in reversed(rows)
    ]


def latest_rows(reader: StorageReader, target_id: int, now: float) -> dict[str, object] | None:
    """The newest stored check of one endpoint as of `now`, for when none ran since a start."""
    cursor = reader.db.execute(
        "SELECT ts, ok, status, latency_ms, http_status, error, error_text, attempts "
        "FROM results WHERE target_id = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
        [target_id, now],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([c[0] for c in cursor.description], row, strict=True))


def alert_events(
    reader: StorageReader, targets: Sequence[str], start: float, now: float
) -> list[AlertEvent]:
    """Alert history of the given alert targets (`region/name`, or a region) since `start`,
    newest first, each with the notifications queued for it and whether they went out."""
    if not targets:
        return []
    rows = reader.db.execute(
        "SELECT rule, target, ts, from_state, to_state, severity, summary FROM alert_history "  # noqa: S608
        f"WHERE target IN ({_placeholders(len(targets))}) AND ts >= ? AND ts <= ? "
        "ORDER BY ts DESC LIMIT ?",
        [*targets, start, now, MAX_EVENTS],
    ).fetchall()
    events = []
    for rule, target, ts, event, state, severity, summary in rows:
        # The router queues an event's notifications in the cycle that records it.
        deliveries = tuple(
            Delivery(channel, sent, attempts or 0, last_error)
            for channel, sent, attempts, last_error, payload in reader.db.execute(
                "SELECT channel, sent, attempts, last_error, payload FROM outbox "
                "WHERE dedup_key = ? AND created >= ? AND created <= ? ORDER BY id",
                [f"{rule}:{target}", ts - 1.0, ts + 60.0],
            )
            if _event_of(payload) in (event, None)
        )
        events.append(AlertEvent(rule, target, ts, event, state, severity, summary, deliveries))
    return events


def _event_of(payload: str | None) -> str | None:
    try:
        found = json.loads(payload or "{}").get("event")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive failed checks of one endpoint: from the first to the next good check (None
    while it lasts), with the error classes seen."""

    target_id: int
    start: float
    end: float | None
    errors: frozenset[str]


def failure_runs(
    reader: StorageReader, target_ids: Sequence[int], start: float, now: float
) -> list[Run]:
    """Each endpoint's runs of failed checks in [start, now], read from its failures only (the
    partial index) and, per failure, the check after it: 100 endpoints with 48 h of checks every
    30 s, 1 % failing, took 0.12 s, where a window-function scan of every check took 4.6-9.9 s
    (a busy 2-core VM). The cost grows with the failures: a region down for all 48 h reads all."""
    if not target_ids:
        return []
    rows = reader.db.execute(
        "SELECT f.target_id, f.ts, f.error, n.ts, n.ok FROM results f "  # noqa: S608
        "LEFT JOIN results n ON n.id = (SELECT id FROM results WHERE target_id = f.target_id "
        "AND ts > f.ts AND ts <= ? ORDER BY ts LIMIT 1) "
        f"WHERE f.target_id IN ({_placeholders(len(target_ids))}) AND f.ok = 0 "
        "AND f.ts >= ? AND f.ts <= ? ORDER BY f.target_id, f.ts",
        [now, *target_ids, start, now],
    )
    runs: list[Run] = []
    began: float | None = None
    errors: set[str] = set()
    for target_id, ts, error, next_ts, next_ok in rows:
        if began is None:
            began, errors = ts, set()
        if error:
            errors.add(error)
        if next_ts is None or next_ok:  # the last check, or the next one passed: the run ends
            runs.append(Run(target_id, began, next_ts, frozenset(errors)))
            began = None
    return runs


def all_down_spans(runs: Sequence[Run], members: int) -> list[tuple[float, float | None]]:
    """Spans (start, end or None while it lasts) in which all `members` endpoints were in a
    run of failures at once: a regional failure, as the status board defines it."""
    edges = sorted(
        [(run.start, 1) for run in runs] + [(run.end, -1) for run in runs if run.end is not None],
        key=lambda edge: (edge[0], edge[1]),  # at one instant, an end before a start
    )
    spans: list[tuple[float, float | None]] = []
    down = 0
    began: float | None = None
    for ts, step in edges:
        down += step
        if down == members and began is None:
            began = ts
        elif down < members and began is not None:
            spans.append((began, ts))
            began = None
    if began is not None:
        spans.append((began, None))
    return spans
