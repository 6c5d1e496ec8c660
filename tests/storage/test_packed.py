"""The packed uptime report reads back exactly the tallies it was built from, pickled or not."""

from __future__ import annotations

import math
import pickle

import pytest
from storage_timeline import DAY, HOUR, NOW, D, check

from healthcheck.result import EndpointId
from healthcheck.uptime_cache import UptimeCache, read_uptime
from storage.packed import PackedTallies, PackedWindows, WindowPacker, window_ratios
from storage.rollup import Tally
from storage.uptime import StorageReader


def _fields(tally: Tally) -> list[tuple[type, float]]:
    """Every number of a tally with its type: 1 == 1.0, but JSON writes them differently."""
    numbers = [
        tally.checks,
        tally.successes,
        tally.degraded,
        tally.latency_sum_ms,
        tally.latency_min_ms,
        tally.latency_max_ms,
        *tally.histogram,
    ]
    return [(type(n), n) for n in numbers]


def _same(a: Tally, b: Tally) -> bool:
    """Bit for bit, types too: -0.0 is not 0.0 here, and NaN is itself."""
    return [(t, repr(n)) for t, n in _fields(a)] == [(t, repr(n)) for t, n in _fields(b)]


def _tally(seed: float) -> Tally:
    tally = Tally()
    for index, latency in enumerate((seed, seed * 3.7, 1234.5678 + seed, 0.1)):
        tally.add_check(ok=index % 2 == 0, degraded=index == 1, latency_ms=latency)
    tally.add(Tally(2.0, 1.0, 0.0, 7.25, 3.0, 4.25, [0.5] * 17), weight=1 / 3)
    return tally


def _odd_tally() -> Tally:
    """Floats a round trip through text or float32 would change."""
    histogram = [0.1, -0.0, math.nan, 1e-300, 2.0**53 + 2, *([0.0] * 12)]
    return Tally(3.0, 2.0, 0.0, 1 / 3, -0.0, math.inf, histogram)


@pytest.fixture
def tallies() -> dict[int, dict[str, Tally]]:
    return {
        7: {"1h": _tally(1.5), "24h": _tally(2.25), "7d": _tally(9.0), "30d": _odd_tally()},
        3: {"24h": _tally(0.001), "30d": _tally(77.0)},  # fewer windows, another order
        12: {"30d": _tally(5.0), "1h": _tally(6.0)},
        4: {"1h": Tally()},  # an empty tally: whole-number ints, kept as they are
        9: {"24h": Tally(1, 1, 0, None, None, None, [0] * 17)},
    }


@pytest.mark.parametrize("pickled", [False, True])
def test_every_number_reads_back_identical(tallies, pickled) -> None:
    packed = PackedTallies(tallies)
    if pickled:
        packed = pickle.loads(pickle.dumps(packed, pickle.HIGHEST_PROTOCOL))
    assert list(packed) == list(tallies)  # same endpoints, same order
    assert len(packed) == len(tallies)
    for key, windows in tallies.items():
        assert key in packed
        assert list(packed[key]) == list(windows)  # same windows, same order
        assert len(packed[key]) == len(windows)
        for window, tally in windows.items():
            assert window in packed[key]
            assert _same(packed[key][window], tally), (key, window)
            assert _same(packed[key].get(window), tally)
    assert 99 not in packed
    assert packed.get(99) is None
    assert "7d" not in packed[3]
    assert packed[3].get("7d") is None
    with pytest.raises(KeyError):
        packed[3]["7d"]


def test_only_all_float_tallies_are_packed(tallies) -> None:
    packed = PackedTallies(tallies)
    assert isinstance(packed[7], PackedWindows)
    assert isinstance(packed[12], PackedWindows)
    assert not isinstance(packed[4], PackedWindows)  # ints in it: kept as given
    assert packed[4]["1h"].checks == 0 and type(packed[4]["1h"].checks) is int
    assert packed[9]["24h"].latency_sum_ms is None


def test_window_ratios_are_the_tallies_ratios(tallies) -> None:
    packed = PackedTallies(tallies)
    for key, windows in tallies.items():
        expected = [(w, t.ratio, t.checks) for w, t in windows.items()]
        assert list(window_ratios(packed[key])) == expected
        assert list(window_ratios(windows)) == expected
    # 2 of 4 checks, and a third of 1 of 2: (2 + 1/3) / (4 + 2/3)
    assert next(iter(window_ratios(packed[7])))[1] == pytest.approx(0.5)


def test_a_stored_report_packs_and_pickles_to_the_same_figures(store, db_path) -> None:
    checks = []
    instants = (D - 6 * DAY + HOUR, D - DAY + 11 * HOUR, D + 9 * HOUR + 2700, D + 10 * HOUR)
    for n, endpoint in enumerate(("api", "web", "db")):
        for region in ("eu", "us"):
            for at in instants:
                latency = 3.0 + n * 41.7 + at % 997 / 7
                ok = at % 3 != 0
                checks.append(check(at, ok, latency, endpoint=endpoint, region=region))
    store(*checks)
    reader = StorageReader(db_path, raw_retention=30 * DAY)
    try:
        plain = reader.uptime(NOW)
    finally:
        reader.close()
    snapshot = pickle.loads(pickle.dumps(read_uptime(db_path, 30 * DAY, NOW)))
    report = snapshot.report
    assert isinstance(report.endpoints, PackedTallies)
    assert report.targets == plain.targets
    assert report.regions == plain.regions and report.overall == plain.overall
    assert list(report.endpoints) == list(plain.endpoints) and len(plain.endpoints) == 6
    for key, windows in plain.endpoints.items():
        assert isinstance(report.endpoints[key], PackedWindows)  # SQLite gave floats
        assert list(report.endpoints[key]) == list(windows)
        for window, tally in windows.items():
            assert _same(report.endpoints[key][window], tally)
            for q in (0.5, 0.95, 0.99):
                assert report.endpoints[key][window].percentile(q) == tally.percentile(q)
    # one string per region name, shared by every target of the region
    eu = [t.region for t in report.targets.values() if t.region == "eu"]
    assert len(eu) == 3 and all(name is eu[0] for name in eu)


async def test_alert_rules_get_each_endpoints_24h_figures_from_the_packed_snapshot(
    store, db_path
) -> None:
    instants = (D - DAY + 11 * HOUR, D + 9 * HOUR, D + 10 * HOUR, D - 3 * DAY)
    store(*(check(at, ok=at != D + 9 * HOUR, endpoint="api") for at in instants))
    store(check(D - 3 * DAY, endpoint="old"))  # nothing in the last 24h: no figure
    cache = UptimeCache(db_path, 30 * DAY, clock=lambda: NOW)
    assert cache.uptime_24h() == {}  # nothing read yet
    await cache.refresh()
    assert cache.snapshot is not None
    assert isinstance(cache.snapshot.report.endpoints, PackedTallies)
    assert cache.uptime_24h() == {EndpointId("eu", "api"): (2 / 3, 3.0)}


def test_packed_window_by_window_is_the_same_as_packed_at_once(tallies) -> None:
    """What the uptime read makes as it goes (one window's tallies at a time) pickles to the
    very bytes of the whole report packed at the end: same order, numbers, kept tallies."""
    nested: dict[int, dict[str, Tally]] = {}
    packer = WindowPacker(4)
    for window in ("1h", "24h", "7d", "30d"):  # 3 and 9 first seen later; 4 and 9 kept
        for key, windows in tallies.items():
            if window in windows:
                nested.setdefault(key, {})[window] = windows[window]
                packer.add(key, window, windows[window])
    packed = packer.packed()
    assert pickle.dumps(packed) == pickle.dumps(PackedTallies(nested))
    assert list(packed) == [7, 12, 4, 3, 9]
    assert [list(packed[key]) for key in (3, 12)] == [["24h", "30d"], ["1h", "30d"]]
    assert _same(packed[7]["30d"], tallies[7]["30d"]) and packed[4]["1h"] is tallies[4]["1h"]
    with pytest.raises(ValueError, match="more windows"):
        packer = WindowPacker(1)
        packer.add(7, "1h", tallies[7]["1h"])
        packer.add(7, "24h", tallies[7]["24h"])
