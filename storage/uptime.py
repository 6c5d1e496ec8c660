"""Rolling uptime and latency percentiles per endpoint, region and overall, from rollups.

A window [start, now] is split into whole days (daily rollups), whole hours before the first
whole day (hourly rollups) and the part before the first whole hour (raw rows, or a pro-rated
share of that hour's rollup once raw rows are past retention). The cost per endpoint is at
most 30 + 24 rollup rows whatever the window, so a 30-day figure stays cheap at any size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sqlite_utils

from healthcheck.result import Status
from storage.rollup import Tally, bucket_of
from storage.schema import BUCKET_COLUMNS, connect

WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
HOUR, DAY = 3600, 86400
_ROLLUP_COLUMNS = (
    "target_id, checks, successes, degraded, latency_sum_ms, latency_min_ms, latency_max_ms, "
    + ", ".join(BUCKET_COLUMNS)
)


def _ceil(ts: float, width: int) -> int:
    return math.ceil(ts / width) * width


@dataclass(frozen=True, slots=True)
class Target:
    id: int
    region: str
    endpoint: str
    kind: str


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest stored check of an endpoint and its last failure."""

    ts: float
    status: Status
    ok: bool
    latency_ms: float
    error: str | None
    error_text: str | None
    last_error_ts: float | None = None
    last_error: str | None = None
    last_error_text: str | None = None


@dataclass(slots=True)
class UptimeReport:
    """Tallies per window for each endpoint, each region and everything together."""

    targets: dict[int, Target]
    endpoints: dict[int, dict[str, Tally]] = field(default_factory=dict)
    regions: dict[str, dict[str, Tally]] = field(default_factory=dict)
    overall: dict[str, Tally] = field(default_factory=dict)


class StorageReader:
    """Read-side queries over its own connection (never the writer's)."""

    def __init__(self, path: str, raw_retention: float = 48 * 3600.0) -> None:
        self.db: sqlite_utils.Database = connect(path, create=False)
        self.raw_retention = raw_retention

    def close(self) -> None:
        self.db.conn.close()

    def targets(self) -> dict[int, Target]:
        rows = self.db.execute("SELECT id, region, endpoint, kind FROM targets")
        return {row[0]: Target(*row) for row in rows}

    def window(self, start: float, now: float) -> dict[int, Tally]:
        """Tallies per endpoint id of the checks in [start, now]."""
        day_start = _ceil(start, DAY)
        hour_start = min(_ceil(start, HOUR), day_start)
        tallies: dict[int, Tally] = {}

        def add_rows(rows: Iterable[tuple], weight: float = 1.0) -> None:
            for row in rows:
                part = Tally(*row[1:7], [float(c) for c in row[7:]])
                tallies.setdefault(row[0], Tally()).add(part, weight)

        add_rows(
            self.db.execute(
                f"SELECT {_ROLLUP_COLUMNS} FROM rollup_day WHERE bucket >= ?",  # noqa: S608
                [day_start],
            )
        )
        add_rows(
            self.db.execute(
                f"SELECT {_ROLLUP_COLUMNS} FROM rollup_hour "  # noqa: S608
                "WHERE bucket >= ? AND bucket < ?",
                [hour_start, day_start],
            )
        )
        if start >= hour_start:
            return tallies
        if start >= now - self.raw_retention:
            rows = self.db.execute(
                "SELECT target_id, ok, status, latency_ms FROM results WHERE ts >= ? AND ts < ?",
                [start, hour_start],
            )
            for target_id, ok, status, latency_ms in rows:
                tally = tallies.setdefault(target_id, Tally())
                tally.add_check(bool(ok), status == Status.DEGRADED.value, latency_ms)
        else:  # raw rows are gone: take the overlapping share of that hour
            add_rows(
                self.db.execute(
                    f"SELECT {_ROLLUP_COLUMNS} FROM rollup_hour WHERE bucket = ?",  # noqa: S608
                    [bucket_of(start, HOUR)],
                ),
                weight=(hour_start - start) / HOUR,
            )
        return tallies

    def uptime(self, now: float, windows: Mapping[str, float] = WINDOWS) -> UptimeReport:
        """Every endpoint's, region's and the overall tallies for each window."""
        report = UptimeReport(self.targets())
        for name, width in windows.items():
            overall = report.overall.setdefault(name, Tally())
            for target_id, tally in self.window(now - width, now).items():
                target = report.targets.get(target_id)
                if target is None:
                    continue
                report.endpoints.setdefault(target_id, {})[name] = tally
                report.regions.setdefault(target.region, {}).setdefault(name, Tally()).add(tally)
                overall.add(tally)
        return report

    def latest(self) -> dict[int, Latest]:
        """Newest check and newest failure of every endpoint that has raw rows."""
        newest = self.db.execute(
            "SELECT r.target_id, r.ts, r.status, r.ok, r.latency_ms, r.error, r.error_text "
            "FROM results r JOIN (SELECT target_id, MAX(ts) AS ts FROM results "
            "GROUP BY target_id) m ON r.target_id = m.target_id AND r.ts = m.ts"
        ).fetchall()
        failures = {
            row[0]: row[1:]
            for row in self.db.execute(
                "SELECT r.target_id, r.ts, r.error, r.error_text FROM results r JOIN "
                "(SELECT target_id, MAX(ts) AS ts FROM results WHERE ok = 0 GROUP BY target_id) m "
                "ON r.target_id = m.target_id AND r.ts = m.ts"
            )
        }
        latest = {}
        for target_id, ts, status, ok, latency_ms, error, error_text in newest:
            failure = failures.get(target_id, (None, None, None))
            latest[target_id] = Latest(
                ts, Status(status), bool(ok), latency_ms, error, error_text, *failure
            )
        return latest
