"""An uptime report crosses from the helper process to the daemon pickled: its tallies come
back equal, numbers of the same types, whole counts shared between tallies."""

from __future__ import annotations

import math
import pickle

from storage.rollup import Tally
from storage.schema import BUCKET_COLUMNS


def test_a_tally_comes_back_with_the_same_values_and_types() -> None:
    tally = Tally(
        3.0, 2.5, 0, 233.544, 40.003, 139.66, [float(i % 3) for i in range(len(BUCKET_COLUMNS))]
    )
    tally.histogram[0] = -0.0
    tally.histogram[1] = 7  # an int, as a fresh Tally's buckets are
    tally.histogram[2] = 1e9  # a whole count too big to share
    back = pickle.loads(pickle.dumps(tally))
    assert back == tally
    assert [type(v) for v in back.histogram] == [type(v) for v in tally.histogram]
    assert type(back.degraded) is int and type(back.checks) is float
    assert math.copysign(1.0, back.histogram[0]) == -1.0
    assert back.percentile(0.5) == tally.percentile(0.5)


def test_whole_counts_are_one_object_across_tallies() -> None:
    first, second = pickle.loads(
        pickle.dumps([Tally(4.0, 4.0, histogram=[4.0] * len(BUCKET_COLUMNS)) for _ in range(2)])
    )
    assert first.checks is second.checks is first.histogram[0] is second.histogram[-1]
    fresh = pickle.loads(pickle.dumps(Tally()))
    assert fresh == Tally() and fresh.latency_min_ms == math.inf
