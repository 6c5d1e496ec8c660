"""The detail views' queries over a fixed timeline: buckets, failures, status changes, spans."""

from __future__ import annotations

import pytest
from storage_timeline import DAY, HOUR, NOW, D, check

from storage.detail import (
    Run,
    all_down_spans,
    failed_checks,
    failure_runs,
    latency_series,
    status_changes,
)
from storage.uptime import StorageReader

# NOW is 10:30 today (D). eu has api and web; web fails 08:00-08:20, api 08:10-08:30:
# the region is wholly down 08:10-08:20.
TIMELINE = [
    *(check(D + 8 * HOUR + m * 60, ok=not 0 <= m < 20, endpoint="web") for m in range(0, 60, 5)),
    *(check(D + 8 * HOUR + m * 60, ok=not 10 <= m < 30, endpoint="api") for m in range(0, 60, 5)),
    check(D + 9 * HOUR, latency_ms=100.0),
    check(D + 9 * HOUR + 60, latency_ms=300.0),
    check(D - 3 * DAY, latency_ms=50.0),
    check(NOW - 10, latency_ms=7.0),
    check(NOW + 2 * HOUR, ok=False),  # after now (a clock stepped back): not read
]


@pytest.fixture
def reader(store, db_path):
    store(*TIMELINE)
    opened = StorageReader(db_path, raw_retention=30 * DAY)
    yield opened
    opened.close()


def _ids(reader: StorageReader) -> dict[str, int]:
    return {target.endpoint: row for row, target in reader.targets().items()}


@pytest.mark.parametrize(
    ("window", "count", "width"), [("24h", 24, HOUR), ("7d", 7, DAY), ("30d", 30, DAY)]
)
def test_one_point_per_bucket_ending_with_the_current_one(reader, window, count, width) -> None:
    points = latency_series(reader, [_ids(reader)["api"]], window, NOW)
    assert len(points) == count
    assert points[-1].start == (NOW // width) * width
    assert [p.start - points[0].start for p in points] == [i * width for i in range(count)]


def test_hourly_buckets_hold_their_checks_and_percentiles(reader) -> None:
    points = {p.start: p for p in latency_series(reader, [_ids(reader)["api"]], "24h", NOW)}
    eight, nine, ten = points[D + 8 * HOUR], points[D + 9 * HOUR], points[D + 10 * HOUR]
    assert (eight.checks, eight.failures) == (12, 4)
    assert (nine.checks, nine.failures) == (2, 0)
    # 100 ms and 300 ms: the histogram buckets (50, 100] and (200, 300]
    assert nine.p50_ms == 100.0 and nine.p99_ms is not None and 200 < nine.p99_ms <= 300
    assert ten.checks == 1 and ten.p50_ms is not None and 5 < ten.p50_ms <= 10
    empty = points[D + 7 * HOUR]
    assert (empty.checks, empty.p50_ms, empty.max_ms) == (0, None, None)
    both = latency_series(reader, list(_ids(reader).values()), "24h", NOW)
    assert sum(p.failures for p in both) == 8


def test_failed_checks_are_capped_to_the_newest(reader, monkeypatch) -> None:
    ids = list(_ids(reader).values())
    failures, cut = failed_checks(reader, ids, D, NOW)
    assert len(failures) == 8 and not cut
    assert [f.ts for f in failures] == sorted(f.ts for f in failures)
    monkeypatch.setattr("storage.detail.MAX_FAILURES", 3)
    newest, cut = failed_checks(reader, ids, D, NOW)
    assert cut and [f.ts for f in newest] == [f.ts for f in failures[-3:]]


def test_status_changes_of_an_endpoint(reader) -> None:
    ids = _ids(reader)
    api = status_changes(reader, [ids["api"]], D, NOW)
    assert [(c.ts - D, c.ok) for c in api] == [
        (8 * HOUR, True),
        (8 * HOUR + 600, False),
        (8 * HOUR + 1800, True),
    ]
    assert api[1].error == "timeout" and api[1].error_text == "no answer within 5s"
    newest = status_changes(reader, [ids["api"]], D, NOW, newest=2)
    assert newest == api[1:]


def test_runs_of_failures_and_the_regional_failure_where_they_overlap(reader) -> None:
    ids = _ids(reader)
    runs = failure_runs(reader, [ids["api"], ids["web"]], D, NOW)
    found = {
        (run.target_id, run.start - D, None if run.end is None else run.end - D) for run in runs
    }
    assert found == {
        (ids["web"], 8 * HOUR, 8 * HOUR + 1200),
        (ids["api"], 8 * HOUR + 600, 8 * HOUR + 1800),
    }
    assert {run.errors for run in runs} == {frozenset({"timeout"})}
    assert all_down_spans(runs, 2) == [(D + 8 * HOUR + 600, D + 8 * HOUR + 1200)]
    assert all_down_spans(runs, 3) == []  # a third endpoint that never failed
    # as of 08:15 both are still failing (checks after "now" are not read): open runs, and
    # the regional failure lasts
    early = D + 8 * HOUR + 900
    still = failure_runs(reader, [ids["api"], ids["web"]], D, early)
    assert sorted((run.start - D, run.end) for run in still) == [
        (8 * HOUR, None),
        (8 * HOUR + 600, None),
    ]
    assert all_down_spans(still, 2) == [(D + 8 * HOUR + 600, None)]


def test_a_recovery_and_a_failure_at_one_instant_are_no_regional_failure() -> None:
    runs = [Run(1, 100.0, 200.0, frozenset()), Run(2, 200.0, 300.0, frozenset())]
    assert all_down_spans(runs, 2) == []
    assert all_down_spans(
        [Run(1, 100.0, None, frozenset()), Run(2, 150.0, None, frozenset())], 2
    ) == [(150.0, None)]


def test_a_buckets_percentiles_stay_within_its_checks(store, db_path) -> None:
    # The (50, 100] ms bucket holds the three slowest; interpolating in it said p95 90 ms.
    twelve = [8.1, 9.4, 11.0, 12.5, 14.2, 18.0, 22.3, 31.7, 44.0, 51.3, 53.8, 56.2]
    store(*(check(NOW - 600 + i, latency_ms=ms, endpoint="solo") for i, ms in enumerate(twelve)))
    reader = StorageReader(db_path, raw_retention=30 * DAY)
    point = latency_series(reader, [_ids(reader)["solo"]], "24h", NOW)[-1]
    reader.close()
    assert point.checks == 12 and point.max_ms == 56.2
    assert 8.1 <= point.p50_ms <= point.p95_ms <= point.p99_ms <= 56.2
    assert point.p99_ms == pytest.approx(56.2)
