"""Every endpoint's uptime tallies as plain doubles in one array, for the daemon to keep.

At 20,000 endpoints the uptime report holds 80,000 tallies (four windows each) of 23 numbers.
As `Tally` objects, unpickled in the daemon from the helper process every 15 s, they were
~45 MB, twice while the next report arrived as the last one still served. Packed, they are
one `array('d')` (8 bytes a number, ~15 MB), pickled and unpickled as one block of bytes.

A packed report reads as the dicts it replaces: `packed[target_id][window]` is a `Tally` with
the very numbers it was built from (doubles in, the same doubles out). A tally holding
anything but floats (an int, a None from SQLite) is kept as it was, so nothing changes type.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping

from storage.rollup import Tally
from storage.schema import BUCKET_COLUMNS

# checks, successes, degraded, latency sum, min, max, then the histogram's buckets
WIDTH = 6 + len(BUCKET_COLUMNS)


def _numbers(tally: Tally) -> list[float]:
    return [
        tally.checks,
        tally.successes,
        tally.degraded,
        tally.latency_sum_ms,
        tally.latency_min_ms,
        tally.latency_max_ms,
        *tally.histogram,
    ]


def _packable(numbers: list[float]) -> bool:
    return len(numbers) == WIDTH and all(type(number) is float for number in numbers)


class PackedWindows(Mapping[str, Tally]):
    """One endpoint's tallies per window, read out of the shared array on demand."""

    __slots__ = ("_names", "_start", "_values")

    def __init__(self, values: array[float], names: tuple[str, ...], start: int) -> None:
        self._values = values
        self._names = names
        self._start = start

    def __getitem__(self, name: str) -> Tally:
        try:
            index = self._names.index(name)
        except ValueError:
            raise KeyError(name) from None
        return _tally(self._values, self._start + index * WIDTH)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def ratios(self) -> Iterator[tuple[str, float | None, float]]:
        """(window, ratio, checks) of each tally, without building the tallies."""
        values = self._values
        for index, name in enumerate(self._names):
            at = self._start + index * WIDTH
            checks = values[at]
            yield name, values[at + 1] / checks if checks else None, checks


class PackedTallies(Mapping[int, Mapping[str, Tally]]):
    """Tallies per window per key (a target's row id), in the order they were given."""

    __slots__ = ("_rows", "_values")

    def __init__(self, tallies: Mapping[int, Mapping[str, Tally]]) -> None:
        values: array[float] = array("d")
        # Per key: (window names, start in `values`), or the tallies as given when one of
        # them holds something other than floats. The few distinct name tuples are shared.
        rows: dict[int, tuple[tuple[str, ...], int] | dict[str, Tally]] = {}
        names_seen: dict[tuple[str, ...], tuple[str, ...]] = {}
        for key, windows in tallies.items():
            parts = [_numbers(tally) for tally in windows.values()]
            if all(_packable(numbers) for numbers in parts):
                names = tuple(windows)
                rows[key] = (names_seen.setdefault(names, names), len(values))
                for numbers in parts:
                    values.extend(numbers)
            else:
                rows[key] = dict(windows)
        self._values = values
        self._rows = rows

    def __getitem__(self, key: int) -> Mapping[str, Tally]:
        row = self._rows[key]
        if isinstance(row, dict):
            return row
        return PackedWindows(self._values, *row)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return _unpickle, (self._values, self._rows)


def _unpickle(
    values: array[float], rows: dict[int, tuple[tuple[str, ...], int] | dict[str, Tally]]
) -> PackedTallies:
    packed = PackedTallies({})
    packed._values, packed._rows = values, rows
    return packed


class WindowPacker:
    """Builds the `PackedTallies` of tallies given one window at a time (all the endpoints'
    tallies of a window, then the next window's), each packed as it comes into the one array:
    the same array and rows `PackedTallies` makes from the whole nested mapping, without every
    `Tally` of every window at once. Each key gets room for `windows` tallies when first seen;
    what a key did not fill is closed up at the end, in place."""

    __slots__ = ("_kept", "_names", "_room", "_starts", "_values")

    def __init__(self, windows: int) -> None:
        self._room = windows * WIDTH
        self._values: array[float] = array("d")
        self._starts: dict[int, int] = {}  # per key, where its room begins
        self._names: dict[int, list[str]] = {}  # per key, its windows in the order given
        self._kept: dict[int, dict[str, Tally]] = {}  # tallies holding more than floats

    def add(self, key: int, window: str, tally: Tally) -> None:
        names = self._names.get(key)
        if names is None:
            names = self._names[key] = []
            self._starts[key] = len(self._values)
            self._values.frombytes(bytes(8 * self._room))
        if len(names) * WIDTH >= self._room:
            raise ValueError(f"more windows than the {self._room // WIDTH} given for {key}")
        numbers = _numbers(tally)
        if _packable(numbers):
            at = self._starts[key] + len(names) * WIDTH
            self._values[at : at + WIDTH] = array("d", numbers)
        else:
            self._kept.setdefault(key, {})[window] = tally
        names.append(window)

    def packed(self) -> PackedTallies:
        values = self._values
        rows: dict[int, tuple[tuple[str, ...], int] | dict[str, Tally]] = {}
        names_seen: dict[tuple[str, ...], tuple[str, ...]] = {}
        end = 0  # of the packed numbers so far; a key's room never begins before it
        for key, windows in self._names.items():  # in the order their rooms were given
            start = self._starts[key]
            kept = self._kept.get(key)
            if kept is None:
                size = len(windows) * WIDTH
                if start != end:
                    values[end : end + size] = values[start : start + size]
                names = tuple(windows)
                rows[key] = (names_seen.setdefault(names, names), end)
                end += size
            else:  # as PackedTallies: the key's tallies as given (the packed ones rebuilt)
                rows[key] = {
                    window: kept[window] if window in kept else _tally(values, start + i * WIDTH)
                    for i, window in enumerate(windows)
                }
        del values[end:]
        self._values, self._starts, self._names, self._kept = array("d"), {}, {}, {}
        return _unpickle(values, rows)


def _tally(values: array[float], at: int) -> Tally:
    v = values[at : at + WIDTH]
    return Tally(v[0], v[1], v[2], v[3], v[4], v[5], v[6:].tolist())


def window_ratios(windows: Mapping[str, Tally]) -> Iterator[tuple[str, float | None, float]]:
    """(window, ratio, checks) of each of an endpoint's tallies; for a packed report without
    building a `Tally` each (the exporter reads all 80,000 of 20,000 endpoints at once)."""
    if isinstance(windows, PackedWindows):
        return windows.ratios()
    return ((name, tally.ratio, tally.checks) for name, tally in windows.items())
