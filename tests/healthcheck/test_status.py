"""Status classification and region aggregation, pure functions over values."""

from __future__ import annotations

import pytest

from healthcheck.result import ErrorClass, ProbeResult, Status
from healthcheck.status import classify, summarize_region, worst
from healthcheck.targets import Endpoint


def endpoint(warning: float | None = 0.1, critical: float | None = 0.5) -> Endpoint:
    return Endpoint("r", "e", "http", 30, 5, 0, warning, critical, (), None)


def result(ok: bool, latency: float) -> ProbeResult:
    error = None if ok else ErrorClass.TIMEOUT
    return ProbeResult("r", "e", "http", ok, latency, 0.0, error=error)


@pytest.mark.parametrize(
    ("ok", "latency", "warning", "critical", "expected"),
    [
        (True, 0.05, 0.1, 0.5, Status.HEALTHY),
        (True, 0.1, 0.1, 0.5, Status.HEALTHY),  # at the threshold is not over it
        (True, 0.2, 0.1, 0.5, Status.DEGRADED),
        (True, 0.6, 0.1, 0.5, Status.UNHEALTHY),
        (False, 0.01, 0.1, 0.5, Status.UNHEALTHY),
        (True, 9.0, None, None, Status.HEALTHY),  # no thresholds: any success is healthy
        (True, 0.2, None, 0.5, Status.HEALTHY),
    ],
)
def test_classify(ok, latency, warning, critical, expected) -> None:
    assert classify(result(ok, latency), endpoint(warning, critical)) is expected


@pytest.mark.parametrize(
    ("checks", "status", "regional_failure"),
    [
        ([(True, Status.HEALTHY), (True, Status.HEALTHY)], Status.HEALTHY, False),
        ([(True, Status.HEALTHY), (True, Status.DEGRADED)], Status.DEGRADED, False),
        ([(True, Status.HEALTHY), (False, Status.UNHEALTHY)], Status.DEGRADED, False),
        ([(False, Status.UNHEALTHY), (False, Status.UNHEALTHY)], Status.UNHEALTHY, True),
        # all unhealthy but some only by latency: unhealthy, yet not a regional failure
        ([(True, Status.UNHEALTHY), (False, Status.UNHEALTHY)], Status.UNHEALTHY, False),
        ([(False, Status.UNHEALTHY)], Status.UNHEALTHY, True),
    ],
)
def test_summarize_region(checks, status, regional_failure) -> None:
    summary = summarize_region("r", checks)
    assert (summary.status, summary.regional_failure) == (status, regional_failure)
    assert summary.total == len(checks)


def test_worst() -> None:
    assert worst([]) is Status.HEALTHY
    assert worst([Status.DEGRADED, Status.HEALTHY]) is Status.DEGRADED
    assert worst([Status.DEGRADED, Status.UNHEALTHY, Status.HEALTHY]) is Status.UNHEALTHY
