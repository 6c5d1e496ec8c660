"""Rolling uptime and latency percentiles per endpoint, region and overall, from rollups.

A window [start, now] is split into whole days (daily rollups), whole hours before the first
whole day (hourly rollups) and the part before the first whole hour (raw rows, or a pro-rated
share of that hour's rollup once raw rows are past retention). The cost per endpoint is at
most 30 + 24 rollup rows whatever the window, so a 30-day figure stays cheap at any size.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from sys import intern
from typing import TYPE_CHECKING, Any

from healthcheck.result import EndpointId, Status
from storage.packed import WIDTH, PackedTallies, WindowPacker
from storage.rollup import Tally, bucket_of
from storage.schema import BUCKET_COLUMNS, LATENCY_BOUNDS_MS, connect

if TYPE_CHECKING:
    import sqlite_utils  # its types; storage.schema imports it (without numpy)

WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
HOUR, DAY = 3600, 86400
_ROLLUP_COLUMNS = (
    "target_id, checks, successes, degraded, latency_sum_ms, latency_min_ms, latency_max_ms, "
    + ", ".join(BUCKET_COLUMNS)
)


# The raw edge of a window, aggregated by SQLite into rollup-shaped rows: a histogram bucket
# holds the checks at or under its bound, less those counted in the bucket before it.
_CUMULATIVE = ", ".join(f"SUM(latency_ms <= {bound})" for bound in LATENCY_BOUNDS_MS)
_RAW_EDGE = (
    "SELECT target_id, COUNT(*), SUM(ok), SUM(status = 'degraded'), SUM(latency_ms), "  # noqa: S608 - fixed text
    f"MIN(latency_ms), MAX(latency_ms), {_CUMULATIVE} "
    "FROM results WHERE ts >= ? AND ts < ? GROUP BY target_id"
)


def _edge_histogram(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Turn the cumulative counts of a _RAW_EDGE row into per-bucket counts (+Inf last)."""
    cumulative = row[7:]
    buckets = [cumulative[0], *(b - a for a, b in itertools.pairwise(cumulative))]
    return (*row[:7], *buckets, row[1] - cumulative[-1])


def _name(value: Any) -> Any:
    """The interned string for a name many rows repeat; anything else (a NULL) as it is."""
    return intern(value) if type(value) is str else value


def _ceil(ts: float, width: int) -> int:
    return math.ceil(ts / width) * width


@dataclass(frozen=True, slots=True)
class Target:
    """An endpoint as storage knows it: `id` is its row in the targets table."""

    id: int
    region: str
    endpoint: str
    kind: str

    @property
    def endpoint_id(self) -> EndpointId:
        return EndpointId(self.region, self.endpoint)


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
    endpoints: Mapping[int, Mapping[str, Tally]] = field(default_factory=dict)
    regions: dict[str, dict[str, Tally]] = field(default_factory=dict)
    overall: dict[str, Tally] = field(default_factory=dict)

    def ids(self) -> dict[EndpointId, int]:
        """Each stored endpoint's row id, to look a configured endpoint up by."""
        return {target.endpoint_id: row for row, target in self.targets.items()}

    def packed(self) -> UptimeReport:
        """The same report, the endpoints' tallies packed (storage/packed.py): what the daemon
        keeps, a few MB instead of ~45 at 20,000 endpoints."""
        return UptimeReport(self.targets, PackedTallies(self.endpoints), self.regions, self.overall)


class StorageReader:
    """Read-side queries over its own connection (never the writer's)."""

    def __init__(self, path: str, raw_retention: float = 48 * 3600.0) -> None:
        self.db: sqlite_utils.Database = connect(path, create=False)
        self.raw_retention = raw_retention

    def close(self) -> None:
        self.db.conn.close()

    def targets(self) -> dict[int, Target]:
        rows = self.db.execute("SELECT id, region, endpoint, kind FROM targets")
        # One string per region and kind name, not one per row: pickled once, shared by all.
        return {row[0]: Target(row[0], _name(row[1]), row[2], _name(row[3])) for row in rows}

    def window(self, start: float, now: float) -> dict[int, Tally]:
        """Tallies per endpoint id of the checks in [start, now]."""
        return dict(self._tallies(start, now))

    def _tallies(self, start: float, now: float) -> Iterator[tuple[int, Tally]]:
        """(endpoint id, tally) of the checks in [start, now], each made when it is taken.

        The rows are summed into one array, as `Tally.add` sums them into a `Tally` each (the
        same operations in the same order on the same numbers: the same floats; the least
        and most latency kept as the objects SQLite gave; an endpoint without checks gets
        `Tally()`, ints): at 20,000 endpoints a window's `Tally` objects were ~23 MB of the
        helper process, the array is 4."""
        day_start = _ceil(start, DAY)
        hour_start = min(_ceil(start, HOUR), day_start)
        sums: array[float] = array("d")  # per endpoint: checks, successes, degraded, sum, ...
        slots: dict[int, int] = {}  # endpoint id -> its place, in the order first seen
        lows: list[Any] = []
        highs: list[Any] = []
        added = bytearray()  # 1 once a row with checks was added
        blank = bytes(8 * WIDTH)

        def add_rows(
            rows: Iterable[tuple[Any, ...]], weight: float = 1.0, raw: bool = False
        ) -> None:
            for row in rows:
                row = _edge_histogram(row) if raw else row
                target_id, checks, successes, degraded, total_ms, low_ms, high_ms, *buckets = row
                histogram = [float(c) for c in buckets]
                slot = slots.get(target_id)
                if slot is None:
                    slot = slots[target_id] = len(lows)
                    sums.frombytes(blank)
                    lows.append(math.inf)
                    highs.append(0.0)
                    added.append(0)
                if not checks:  # as Tally.add: a part without checks adds nothing
                    continue
                at = slot * WIDTH
                sums[at] += checks * weight
                sums[at + 1] += successes * weight
                sums[at + 2] += degraded * weight
                sums[at + 3] += total_ms * weight
                lows[slot] = min(lows[slot], low_ms)
                highs[slot] = max(highs[slot], high_ms)
                for index, count in enumerate(histogram, at + 6):
                    sums[index] += count * weight
                added[slot] = 1

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
        if start < hour_start and start >= now - self.raw_retention:
            add_rows(self.db.execute(_RAW_EDGE, [start, hour_start]), raw=True)
        elif start < hour_start:  # raw rows are gone: take the overlapping share of that hour
            add_rows(
                self.db.execute(
                    f"SELECT {_ROLLUP_COLUMNS} FROM rollup_hour WHERE bucket = ?",  # noqa: S608
                    [bucket_of(start, HOUR)],
                ),
                weight=(hour_start - start) / HOUR,
            )
        for target_id, slot in slots.items():
            if not added[slot]:
                yield target_id, Tally()
                continue
            at = slot * WIDTH
            v = sums[at : at + WIDTH]
            yield target_id, Tally(v[0], v[1], v[2], v[3], lows[slot], highs[slot], v[6:].tolist())

    def uptime(
        self, now: float, windows: Mapping[str, float] = WINDOWS, packed: bool = False
    ) -> UptimeReport:
        """Every endpoint's, region's and the overall tallies for each window. `packed`: the
        endpoints' tallies as `PackedTallies` (what `UptimeReport.packed` makes, the same
        numbers), each window packed as soon as it is read: at 20,000 endpoints the 80,000
        `Tally` objects of all four windows at once were ~60 MB, then packed into another
        ~15; one window's are a quarter, packed into the one array as they come."""
        endpoints: dict[int, dict[str, Tally]] = {}
        report = UptimeReport(self.targets(), endpoints)
        packing = WindowPacker(len(windows)) if packed else None
        for name, width in windows.items():
            overall = report.overall.setdefault(name, Tally())
            for target_id, tally in self._tallies(now - width, now):
                target = report.targets.get(target_id)
                if target is None:
                    continue
                if packing is None:
                    endpoints.setdefault(target_id, {})[name] = tally
                else:
                    packing.add(target_id, name, tally)
                report.regions.setdefault(target.region, {}).setdefault(name, Tally()).add(tally)
                overall.add(tally)
        if packing is not None:
            report.endpoints = packing.packed()
        return report

    def latest(self, now: float) -> dict[int, Latest]:
        """Newest check and newest failure of every endpoint that has raw rows, as of `now`.

        Rows stamped after `now` were written before the wall clock stepped back: for as long
        as the step, they would pass for the newest, with the status of before the step."""
        # One index seek per endpoint (the partial index serves the failures).
        newest = self.db.execute(
            "SELECT r.target_id, r.ts, r.status, r.ok, r.latency_ms, r.error, r.error_text "
            "FROM targets t JOIN results r ON r.id = (SELECT id FROM results "
            "WHERE target_id = t.id AND ts <= ? ORDER BY ts DESC LIMIT 1)",
            [now],
        ).fetchall()
        failures = {
            row[0]: row[1:]
            for row in self.db.execute(
                "SELECT r.target_id, r.ts, r.error, r.error_text FROM targets t JOIN results r "
                "ON r.id = (SELECT id FROM results WHERE target_id = t.id AND ok = 0 "
                "AND ts <= ? ORDER BY ts DESC LIMIT 1)",
                [now],
            )
        }
        latest = {}
        for target_id, ts, status, ok, latency_ms, error, error_text in newest:
            failure = failures.get(target_id, (None, None, None))
            latest[target_id] = Latest(
                ts, Status(status), bool(ok), latency_ms, error, error_text, *failure
            )
        return latest


@dataclass(frozen=True, slots=True)
class Day:
    day: int  # epoch s of 00:00 UTC
    checks: int
    successes: int


RESULT_COLUMNS = (
    "id",
    "region",
    "endpoint",
    "kind",
    "ts",
    "ok",
    "status",
    "latency_ms",
    "http_status",
    "error",
    "error_text",
    "attempts",
)


def daily_history(reader: StorageReader, days: int, now: float) -> dict[int, list[Day]]:
    """Per endpoint id, the last `days` UTC days (oldest first) from the daily rollups."""
    first = bucket_of(now, DAY) - (days - 1) * DAY
    found: dict[int, dict[int, Day]] = {}
    for target_id, bucket, checks, successes in reader.db.execute(
        "SELECT target_id, bucket, checks, successes FROM rollup_day WHERE bucket >= ?", [first]
    ):
        found.setdefault(target_id, {})[bucket] = Day(bucket, checks, successes)
    return {
        target_id: [by_day.get(first + i * DAY, Day(first + i * DAY, 0, 0)) for i in range(days)]
        for target_id, by_day in found.items()
    }


def _where(filters: Mapping[str, object]) -> tuple[str, list[object]]:
    """A WHERE clause from fixed condition fragments whose value is not None, and its args."""
    used = {fragment: value for fragment, value in filters.items() if value is not None}
    return (f"WHERE {' AND '.join(used)}" if used else ""), list(used.values())


def result_page(
    reader: StorageReader,
    *,
    region: str | None,
    endpoint: str | None,
    since: float | None,
    before_id: int | None,
    limit: int,
) -> list[dict[str, object]]:
    """Raw results newest first, keyset-paginated by id (stable while rows are added)."""
    clause, args = _where(
        {
            "t.region = ?": region,
            "t.endpoint = ?": endpoint,
            "r.ts >= ?": since,
            "r.id < ?": before_id,
        }
    )
    rows = reader.db.execute(
        "SELECT r.id, t.region, t.endpoint, t.kind, r.ts, r.ok, r.status, r.latency_ms, "  # noqa: S608 - the clause is built from fixed fragments
        "r.http_status, r.error, r.error_text, r.attempts FROM results r "
        f"JOIN targets t ON t.id = r.target_id {clause} ORDER BY r.id DESC LIMIT ?",
        [*args, limit],
    )
    return [dict(zip(RESULT_COLUMNS, row, strict=True)) for row in rows]


def alert_rows(
    reader: StorageReader, state: str | None, severity: str | None
) -> list[dict[str, object]]:
    """Alert state rows (filled by alerting), optionally filtered."""
    clause, args = _where({"state = ?": state, "severity = ?": severity})
    cursor = reader.db.execute(
        "SELECT rule, target, state, severity, since, last_change, summary, labels "  # noqa: S608
        f"FROM alert_state {clause} ORDER BY since DESC",
        args,
    )
    columns = [c[0] for c in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]
