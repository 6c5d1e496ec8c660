"""The rule for a timeout the prober was starved through, and the run-queue reading behind it.
The daemon under real starvation is in tests/e2e/test_starved_prober.py."""

from __future__ import annotations

import os

import pytest

from healthcheck.config import parse_config
from healthcheck.loop_lag import SCHEDSTAT, RunWait, lost_of, noted
from healthcheck.prober_faults import starved, starved_fault
from healthcheck.result import ErrorClass, ProbeResult, Status
from healthcheck.status import classify


def failed(error: ErrorClass, lag: float = 0.0, wait: float = 0.0, attempts: int = 1):
    result = ProbeResult(
        "r",
        "api",
        "http",
        ok=False,
        latency=0.2,
        timestamp=0.0,
        error=error,
        error_text="no answer within 0.15s",
        attempts=attempts,
    )
    return noted(result, lag, wait)


def test_a_timeout_starved_for_a_quarter_of_its_deadline_is_the_probers() -> None:
    assert starved(failed(ErrorClass.TIMEOUT, wait=0.120), timeout=0.15)
    assert starved(failed(ErrorClass.TIMEOUT, lag=0.040), timeout=0.15)  # loop lag counts too
    assert not starved(failed(ErrorClass.TIMEOUT, wait=0.020), timeout=0.15)
    assert not starved(failed(ErrorClass.TIMEOUT), timeout=0.15)
    # two attempts: a quarter of both deadlines
    assert not starved(failed(ErrorClass.TIMEOUT, wait=0.050, attempts=2), timeout=0.15)
    assert starved(failed(ErrorClass.TIMEOUT, wait=0.080, attempts=2), timeout=0.15)


@pytest.mark.parametrize(
    "error", [ErrorClass.CONNECTION_REFUSED, ErrorClass.HTTP_STATUS, ErrorClass.TLS]
)
def test_other_failures_stand_however_starved(error: ErrorClass) -> None:
    assert not starved(failed(error, wait=1.0), timeout=0.15)


def test_a_starved_timeout_is_told_as_the_probers_fault() -> None:
    result = starved_fault(failed(ErrorClass.TIMEOUT, lag=0.1, wait=0.18), timeout=0.2)
    assert result.error is ErrorClass.PROBER and not result.ok
    assert result.error_text == (
        "the prober was starved of CPU for 180 ms of a 200 ms timeout (no answer within 0.15s)"
    )
    assert lost_of(result) == pytest.approx(0.18)


def test_a_success_is_judged_without_the_time_the_prober_waited_for_a_cpu() -> None:
    text = """
defaults: {interval: 1s, timeout: 500ms, latency: {warning: 100ms, critical: 300ms}}
regions: {r: {endpoints: [{name: api, url: "http://127.0.0.1:1/"}]}}
"""
    (target,) = parse_config(text, "regions.yaml", {}).endpoints()
    slow = ProbeResult("r", "api", "http", ok=True, latency=0.35, timestamp=0.0)
    assert classify(slow, target) is Status.UNHEALTHY
    assert classify(noted(slow, 0.0, 0.3), target) is Status.HEALTHY


def test_no_schedstat_reads_no_wait_and_stops_trying(tmp_path) -> None:
    wait = RunWait(str(tmp_path / "absent"))
    assert wait.now() == 0.0
    assert not wait.available
    assert wait.now() == 0.0


@pytest.mark.skipif(not os.path.exists(SCHEDSTAT), reason="no schedstat on this kernel")
def test_the_wait_read_is_this_threads_and_never_goes_back() -> None:
    wait = RunWait()
    first = wait.now()
    sum(range(200_000))
    second = wait.now()
    assert wait.available and 0.0 <= first <= second
    wait.close()
