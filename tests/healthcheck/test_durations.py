"""Durations as users write them."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthcheck.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("250ms", 0.25),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1.5s", 1.5),
        ("1w", 604800),
        (" 10s ", 10),
        ("0s", 0),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "5 minutes", "-5s", "1h-30m", "10x", "ms5"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 30s"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (30, "30s"),
        (90, "1m30s"),
        (7200, "2h"),
        (1.5, "1.5s"),
        (0, "0ms"),
        # An alert's age as a notification shows it: never the float's noise.
        (30.0652, "30s"),
        (0.0301234, "30ms"),
        (0.0004, "0.4ms"),
        (0.9996, "1s"),
        (2.34567, "2.35s"),
        (9.999, "10s"),
        (59.6, "1m"),
        (3725.4, "1h2m5s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.text(max_size=40))
def test_parse_only_raises_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert parse_duration(text) >= 0
