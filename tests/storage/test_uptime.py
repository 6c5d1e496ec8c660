"""Rolling uptime from rollups plus the raw edge, checked against hand-computed values."""

from __future__ import annotations

import pytest
from storage_timeline import DAY, HOUR, NOW, D, check

from storage.rollup import Tally, histogram_quantile
from storage.uptime import StorageReader

# Today is D; NOW is 10:30. Yesterday is D - DAY.
TIMELINE = [
    check(D - 8 * DAY, ok=False),  # outside every window
    check(D - 7 * DAY + 10 * HOUR + 900, ok=False),  # 10:15, 7 days ago: before the 7d start
    check(D - 7 * DAY + 10 * HOUR + 2700),  # 10:45, 7 days ago: inside 7d (raw edge / share)
    check(D - 7 * DAY + 11 * HOUR),  # inside 7d, hourly part
    check(D - 6 * DAY + 12 * HOUR, ok=False),  # inside 7d, daily part
    check(D - DAY + 10 * HOUR + 900, ok=False),  # yesterday 10:15: just before the 24h start
    check(D - DAY + 10 * HOUR + 2700),  # yesterday 10:45: inside 24h via the raw edge
    check(D - DAY + 11 * HOUR),  # yesterday 11:00: hourly part of 24h
    check(D + 9 * HOUR + 900, ok=False),  # 09:15: inside 24h, before the 1h start
    check(D + 9 * HOUR + 2700),  # 09:45: 1h raw edge
    check(D + 9 * HOUR + 3599, ok=False),  # 09:59:59: 1h raw edge, at the hour boundary
    check(D + 10 * HOUR),  # 10:00: the current hour's rollup
    check(D + 10 * HOUR + 1740),  # 10:29
]


@pytest.fixture
def reader(store, db_path):
    store(*TIMELINE[:7])  # two batches: rollups must add up across commits
    store(*TIMELINE[7:])
    opened = StorageReader(db_path, raw_retention=30 * DAY)
    yield opened
    opened.close()


@pytest.mark.parametrize(
    ("window", "checks", "successes"),
    [
        ("1h", 4, 3),  # 09:45 ok, 09:59:59 fail, 10:00 ok, 10:29 ok
        ("24h", 7, 5),  # + 09:15 fail, yesterday 10:45 ok, yesterday 11:00 ok
        # + yesterday 10:15 fail, 7d-ago 10:45 ok and 11:00 ok, 6d-ago 12:00 fail;
        #   not 7d-ago 10:15, which is 15 minutes before the window starts
        ("7d", 11, 7),
        ("30d", 13, 7),  # every check on the timeline
    ],
)
def test_uptime_windows_against_hand_counts(reader, window, checks, successes) -> None:
    report = reader.uptime(NOW)
    tally = report.overall[window]
    assert (tally.checks, tally.successes) == (checks, successes)
    assert report.regions["eu"][window].checks == checks
    assert report.endpoints[1][window].ratio == pytest.approx(successes / checks)


def test_past_raw_retention_the_edge_hour_is_prorated(store, db_path) -> None:
    store(*TIMELINE)
    reader = StorageReader(db_path, raw_retention=HOUR)  # raw edge of 24h counts as gone
    tally = reader.window(NOW - DAY, NOW)
    reader.close()
    # Yesterday's 10:00 hour holds 10:15 (fail) and 10:45 (ok); half of it (10:30-11:00) is
    # inside the window: 0.5 + 0.5 = 1 check, 0.5 success, in place of the exact 10:45 ok.
    assert tally[1].checks == pytest.approx(7)
    assert tally[1].successes == pytest.approx(4.5)


def test_endpoints_and_regions_are_kept_apart(store, db_path) -> None:
    store(
        check(NOW - 60, endpoint="a", region="us"),
        check(NOW - 50, ok=False, endpoint="b", region="us"),
        check(NOW - 40, ok=False, endpoint="a", region="eu"),
    )
    reader = StorageReader(db_path)
    report = reader.uptime(NOW)
    reader.close()
    assert report.regions["us"]["1h"].ratio == 0.5
    assert report.regions["eu"]["1h"].ratio == 0.0
    assert report.overall["1h"].checks == 3
    by_name = {(t.region, t.endpoint): report.endpoints[i]["1h"] for i, t in report.targets.items()}
    assert by_name[("us", "a")].ratio == 1.0 and by_name[("us", "b")].ratio == 0.0


def test_latest_and_last_error(store, db_path) -> None:
    store(check(NOW - 100, ok=False), check(NOW - 50), check(NOW - 10))
    reader = StorageReader(db_path)
    latest = reader.latest(NOW)[1]
    reader.close()
    assert (latest.ts, latest.ok, latest.status) == (NOW - 10, True, "healthy")
    assert (latest.last_error_ts, latest.last_error) == (NOW - 100, "timeout")
    assert latest.last_error_text == "no answer within 5s"


def test_latest_is_not_a_row_stamped_before_the_clock_stepped_back(store, db_path) -> None:
    """Checks stamped an hour ahead, then the wall clock stepped back: the newest check is the
    failure since, not the success stamped in what is now the future."""
    store(check(NOW + HOUR - 20, ok=False), check(NOW + HOUR - 10), check(NOW - 5, ok=False))
    reader = StorageReader(db_path)
    latest = reader.latest(NOW)[1]
    reader.close()
    assert (latest.ts, latest.ok, latest.last_error_ts) == (NOW - 5, False, NOW - 5)


def test_percentiles_from_the_histogram(store, db_path) -> None:
    latencies = [5.0] * 50 + [80.0] * 45 + [400.0] * 4 + [45000.0]
    store(*(check(NOW - 1000 + i, latency_ms=ms) for i, ms in enumerate(latencies)))
    reader = StorageReader(db_path)
    tally = reader.window(NOW - HOUR, NOW)[1]
    reader.close()
    assert tally.percentile(0.50) == pytest.approx(5.0)  # 50th of 100 is the last in (2, 5]
    assert 50 < tally.percentile(0.95) <= 100  # inside the (50, 100] bucket
    assert 300 < tally.percentile(0.99) <= 500
    assert tally.percentile(1.0) == pytest.approx(45000.0)  # +Inf bucket ends at the max seen
    assert tally.latency_max_ms == 45000.0 and tally.latency_min_ms == 5.0


def test_histogram_quantile_interpolates_linearly() -> None:
    histogram = [0.0] * 17
    histogram[4] = 10  # ten checks in (10, 20] ms
    assert histogram_quantile(0.5, histogram, 20.0) == pytest.approx(15.0)
    assert histogram_quantile(1.0, histogram, 20.0) == pytest.approx(20.0)
    assert Tally().percentile(0.5) is None and Tally().ratio is None


async def test_a_cached_uptime_from_the_future_is_read_again(store, db_path) -> None:
    """The daemon's uptime cache: a snapshot stamped after now (the wall clock stepped back)
    is stale, not fresh for the length of the step."""
    from healthcheck.uptime_cache import UptimeCache

    store(check(NOW - 50), check(NOW - 10))
    clock = [NOW]
    cache = UptimeCache(db_path, 7 * DAY, clock=lambda: clock[0])
    first = await cache.get(max_age=10)
    assert first is not None and first.at == NOW
    clock[0] = NOW + 5
    assert await cache.get(max_age=10) is first  # fresh enough
    clock[0] = NOW - HOUR
    again = await cache.get(max_age=10)
    assert again is not first and again.at == NOW - HOUR


# The newcomer's endpoint: 12 checks, the slowest 56.2 ms. The (50, 100] ms bucket holds the
# slow ones; interpolating inside it reported p95 70 ms and p99 94 ms, slower than any check.
TWELVE = [8.1, 9.4, 11.0, 12.5, 14.2, 18.0, 22.3, 31.7, 44.0, 51.3, 53.8, 56.2]


def test_percentiles_never_leave_the_observed_latencies(store, db_path) -> None:
    store(*(check(NOW - 1000 + i, latency_ms=ms) for i, ms in enumerate(TWELVE)))
    reader = StorageReader(db_path, raw_retention=30 * DAY)
    raw_edge = reader.window(NOW - HOUR, NOW)[1]  # from the raw rows of the window's edge
    rollups = reader.uptime(NOW).endpoints[1]["7d"]  # from the hourly/daily rollups
    reader.close()
    for tally in (raw_edge, rollups):
        for q in (0.5, 0.95, 0.99, 1.0):
            assert min(TWELVE) <= tally.percentile(q) <= max(TWELVE), (q, tally.percentile(q))
        assert tally.percentile(0.99) == pytest.approx(max(TWELVE))


def test_a_percentile_below_the_fastest_check_is_clamped_up() -> None:
    histogram = [0.0] * 17
    histogram[6] = 10  # ten checks in (50, 100] ms, all of them 90-95 ms
    assert histogram_quantile(0.5, histogram, 95.0, 90.0) == pytest.approx(90.0)
    assert histogram_quantile(0.99, histogram, 95.0, 90.0) == pytest.approx(95.0)
