"""The pace of a --once round: more checks at a time while the loop keeps time, half as many
when our own work makes it late, unchanged when another process had the core."""

from __future__ import annotations

import pytest

from healthcheck.once import START, Pace

ON_TIME, LATE = 0.0005, 0.010


async def test_on_time_ticks_grow_the_pace_up_to_the_cap_and_no_further() -> None:
    pace = Pace(cap=500)
    assert pace.limit == START
    for _ in range(200):
        pace.tick(ON_TIME, busy=0.3)
    assert pace.limit == pace.peak == 500


@pytest.mark.parametrize(
    ("late", "busy", "expected"),
    [
        (LATE, 0.9, 8),  # our own work made the loop late: half as many
        (LATE, 0.2, 16),  # mostly off the CPU: the machine's doing, fewer would not help
        (0.0015, 0.9, 16),  # between the selector's rounding and late: hold
        (ON_TIME, 0.9, 18),  # on time: an eighth more
    ],
)
async def test_one_tick_moves_the_pace(late: float, busy: float, expected: int) -> None:
    pace = Pace(cap=500, start=16)
    pace.tick(late, busy)
    assert pace.limit == expected


async def test_the_pace_never_drops_below_one() -> None:
    pace = Pace(cap=500, start=2)
    for _ in range(5):
        pace.tick(LATE, busy=1.0)
    assert pace.limit == 1
