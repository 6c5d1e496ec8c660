"""What a check that timed out says, on any machine.

A timeout the prober was starved of CPU through (a busy one-core machine; a canary's inference
or a worker's start on the same core) is no verdict about its target: the prober tells it as a
prober fault, its own text in parentheses (healthcheck/prober_faults.py). A test that expects a
timeout accepts that form only where the result's own details show the starvation (at least
STARVED of one attempt's deadline: after a second look, `attempts` counts both looks but the
details are the last one's), so on an idle machine it still insists on the timeout itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from healthcheck.loop_lag import DETAIL, WAIT_DETAIL, lost_of
from healthcheck.prober_faults import STARVED
from healthcheck.result import ErrorClass, ProbeResult

_PREFIX = "the prober was starved of CPU for "


def _unwrapped(text: str) -> str:
    assert text.startswith(_PREFIX) and text.endswith(")"), text
    return text.split(" (", 1)[1][:-1]


def timeout_text(result: ProbeResult, timeout: float) -> str:
    """The text of `result`, a timeout of a check with this `timeout` (s): as told, or as the
    prober fault a starved prober rightly made of it."""
    text = result.error_text or ""
    if result.error is ErrorClass.PROBER:
        assert lost_of(result) >= STARVED * timeout, result
        return _unwrapped(text)
    assert result.error is ErrorClass.TIMEOUT, result
    return text


def timeout_row_text(row: Mapping[str, object], timeout: float) -> str:
    """timeout_text for a result as `--format json` prints it."""
    if row["error"] == "prober":
        details = row["details"]
        assert isinstance(details, Mapping), row
        lost_ms = max(float(details.get(DETAIL, 0.0)), float(details.get(WAIT_DETAIL, 0.0)))
        assert lost_ms >= STARVED * timeout * 1000, row
        return _unwrapped(str(row["error_detail"]))
    assert row["error"] == "timeout", row
    return str(row["error_detail"])
