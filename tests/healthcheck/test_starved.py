"""The rule for a timeout the prober was starved through, and the run-queue reading behind it.
The daemon under real starvation is in tests/e2e/test_starved_prober.py."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web

from healthcheck.config import parse_config
from healthcheck.loop_lag import LONGEST, SCHEDSTAT, LoopLag, RunWait, lost_of, noted
from healthcheck.prober import Prober
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
    # The prober's lateness as the check ended is taken off (a wait for a CPU no tick saw is
    # in it: Prober._late); a wait while the target still had the request is not: it made
    # the answer no later.
    assert classify(noted(slow, 0.3, 0.3), target) is Status.HEALTHY
    assert classify(noted(slow, 0.0, 0.3), target) is Status.UNHEALTHY


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


def schedstat(path, waited: float) -> None:
    """A schedstat file whose run-queue wait (second field) reads `waited` seconds."""
    path.write_text(f"1000 {int(waited * 1e9)} 5\n")


async def test_a_wait_no_tick_saw_is_lateness_and_an_earlier_one_is_not(tmp_path) -> None:
    """The tail of a check: what the thread waited since the loop's last tick counts as the
    loop's lateness; a wait before that tick (the loop ran again after it) does not."""
    path = tmp_path / "schedstat"
    schedstat(path, 1.0)
    wait = RunWait(str(path))
    lag = LoopLag()
    lag.wait = wait
    start = lag.begin()
    before = wait.now()
    schedstat(path, 1.4)  # 0.4 s waited early in the check
    await asyncio.sleep(LONGEST * 3)  # ticks fire meanwhile, reading it
    schedstat(path, 1.65)  # 0.25 s more after the last tick, no await since: no tick between
    assert lag.tail_wait(start, before, wait.now()) == pytest.approx(0.25)
    lag.end(start)


async def test_a_slow_target_stays_slow_however_long_the_prober_waited_meanwhile(
    tmp_path,
) -> None:
    """The newcomer's case: a target that takes 1 s of its own while the prober's thread waits
    0.9 s for a CPU early on (as a busy core does) is still over a 0.5 s warning: that wait
    made the answer no later. (The schedstat is a file the target writes: the kernel's
    reading, told.)"""
    path = tmp_path / "schedstat"
    schedstat(path, 0.0)

    async def slow(_request: web.Request) -> web.Response:
        schedstat(path, 0.9)  # waited while the target had the request
        await asyncio.sleep(1.0)  # the target's own time; the prober's ticks go on
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    text = f"""
defaults: {{interval: 10s, timeout: 5s, retries: 0, latency: {{warning: 500ms, critical: 60s}}}}
regions: {{r: {{endpoints: [{{name: api, url: "http://127.0.0.1:{port}/"}}]}}}}
"""
    (target,) = parse_config(text, "regions.yaml", {}).endpoints()
    try:
        async with Prober(wait=RunWait(str(path))) as prober:
            result = await prober.check(target)
    finally:
        await runner.cleanup()
    assert result.ok and result.latency >= 1.0, result
    assert dict(result.details)["cpu_wait_ms"] == pytest.approx(900)
    assert lost_of(result) == pytest.approx(0.9)  # all of it, for a timeout's rule
    assert classify(result, target) is Status.DEGRADED
