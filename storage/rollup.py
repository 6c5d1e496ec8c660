"""Pure arithmetic of rollups: which bucket a check falls in, and a histogram of its latency."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from storage.schema import BUCKET_COLUMNS, LATENCY_BOUNDS_MS


def bucket_of(ts: float, width: int) -> int:
    """The start (epoch s, UTC) of the `width`-second bucket holding `ts`."""
    return int(ts // width) * width


def latency_bucket(latency_ms: float) -> int:
    """Index of the histogram bucket for a latency: the first bound it does not exceed."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency_ms)


@dataclass(slots=True)
class Tally:
    """Counts and latency histogram of some checks; adds up across buckets and endpoints."""

    checks: float = 0
    successes: float = 0
    degraded: float = 0
    latency_sum_ms: float = 0.0
    latency_min_ms: float = math.inf
    latency_max_ms: float = 0.0
    histogram: list[float] = field(default_factory=lambda: [0] * len(BUCKET_COLUMNS))

    def add_check(self, ok: bool, degraded: bool, latency_ms: float) -> None:
        self.checks += 1
        self.successes += ok
        self.degraded += degraded
        self.latency_sum_ms += latency_ms
        self.latency_min_ms = min(self.latency_min_ms, latency_ms)
        self.latency_max_ms = max(self.latency_max_ms, latency_ms)
        self.histogram[latency_bucket(latency_ms)] += 1

    def add(self, other: Tally, weight: float = 1.0) -> None:
        """Add another tally, scaled by `weight` (a share of a bucket at a window's edge)."""
        if not other.checks:
            return
        self.checks += other.checks * weight
        self.successes += other.successes * weight
        self.degraded += other.degraded * weight
        self.latency_sum_ms += other.latency_sum_ms * weight
        self.latency_min_ms = min(self.latency_min_ms, other.latency_min_ms)
        self.latency_max_ms = max(self.latency_max_ms, other.latency_max_ms)
        for index, count in enumerate(other.histogram):
            self.histogram[index] += count * weight

    @property
    def ratio(self) -> float | None:
        """Successful checks / checks; None when there were no checks."""
        return self.successes / self.checks if self.checks else None

    def percentile(self, q: float) -> float | None:
        """Latency (ms) at quantile q, interpolated inside its histogram bucket and never
        outside the fastest and slowest check the tally holds."""
        if not self.checks:
            return None
        return histogram_quantile(q, self.histogram, self.latency_max_ms, self.latency_min_ms)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Pickled (the uptime report crosses from the helper process to the daemon) so that
        the unpickled tally shares its small whole counts (see _unpickle_tally)."""
        return _unpickle_tally, (
            self.checks,
            self.successes,
            self.degraded,
            self.latency_sum_ms,
            self.latency_min_ms,
            self.latency_max_ms,
            *self.histogram,
        )


# One float object per small whole count, for every unpickled tally to share. A tally is 23
# numbers, its histogram buckets and counts mostly the same few (0.0, 1.0, 60.0, ...): at 20,000
# endpoints the four windows' 80,000 tallies made one uptime snapshot ~115 MB in the daemon, 24
# bytes a float, and the next one, unpickled while the last still served, twice that.
_SHARED_UP_TO = 4096
_shared_floats: dict[float, float] = {}


def _shared(value: float) -> float:
    """The shared object for a small whole float; anything else (an int: 1 == 1.0; -0.0:
    == 0.0; a fraction) as it is."""
    if type(value) is not float or not value.is_integer() or not 0 <= value <= _SHARED_UP_TO:
        return value
    if value == 0 and math.copysign(1.0, value) < 0:
        return value
    return _shared_floats.setdefault(value, value)


def _unpickle_tally(*values: float) -> Tally:
    checks, successes, degraded, total, low, high, *histogram = map(_shared, values)
    return Tally(checks, successes, degraded, total, low, high, histogram)


def histogram_quantile(
    q: float, histogram: Sequence[float], observed_max: float, observed_min: float = 0.0
) -> float:
    """As Prometheus does: linear within the bucket; the +Inf bucket ends at the observed max.
    Clamped to [observed_min, observed_max]: interpolating inside a wide bucket must not report
    a latency slower than the slowest check (or faster than the fastest) it summarises."""
    low = min(observed_min, observed_max)
    return min(max(_interpolate(q, histogram, observed_max), low), observed_max)


def _interpolate(q: float, histogram: Sequence[float], observed_max: float) -> float:
    total = sum(histogram)
    rank = q * total
    cumulative = 0.0
    for index, count in enumerate(histogram):
        if count and cumulative + count >= rank:
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            upper = LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else observed_max
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return observed_max


def tally_rows(rows: Iterable[Sequence[float]]) -> Tally:
    """A Tally from rollup rows shaped (checks, successes, degraded, sum, min, max, *buckets)."""
    tally = Tally()
    for row in rows:
        part = Tally(row[0], row[1], row[2], row[3], row[4], row[5], [float(c) for c in row[6:]])
        tally.add(part)
    return tally
