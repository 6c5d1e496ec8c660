"""The scheduler with real probes against loopback servers: isolation, spread, cap and rate.

Timing is on a manual clock (tests/support/clock.py): the scheduler's due times and waits and
the results' timestamps move only as the test advances it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import NamedTuple

import pytest
from aiohttp import web
from clock import ManualClock
from polling import until
from timeouts import timeout_text

from healthcheck.config import parse_config
from healthcheck.prober import Prober
from healthcheck.probes.base import CROWDED, TURN, timed_at_socket
from healthcheck.result import ProbeResult
from healthcheck.scheduler import Scheduler, check_once, spread_offset
from healthcheck.targets import SchedulerSettings

IN_FLIGHT = web.AppKey("in_flight", list)


async def fast(_r: web.Request) -> web.Response:
    return web.Response(text="ok")


async def hang(_r: web.Request) -> web.Response:
    await asyncio.Event().wait()
    return web.Response()


async def counted(request: web.Request) -> web.Response:
    state = request.app[IN_FLIGHT]
    state[0] += 1
    state[1] = max(state[1], state[0])
    try:
        await asyncio.sleep(0.05)
        return web.Response(text="ok")
    finally:
        state[0] -= 1


@pytest.fixture
async def server():
    app = web.Application()
    app[IN_FLIGHT] = [0, 0]  # now, most at once
    app.router.add_get("/fast", fast)
    app.router.add_get("/hang", hang)
    app.router.add_get("/counted", counted)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", app
    await runner.cleanup()


def fleet(endpoints: dict[str, str | dict], interval: str, timeout: str, **scheduler: int):
    """Endpoints by name: a URL, or a URL with keys of its own."""
    document = {
        "defaults": {"interval": interval, "timeout": timeout, "retries": 0},
        "scheduler": scheduler,
        "regions": {
            "r": {
                "endpoints": [
                    {"name": name, **({"url": url} if isinstance(url, str) else url)}
                    for name, url in endpoints.items()
                ]
            }
        },
    }
    return parse_config(json.dumps(document), "test", {})


class Run(NamedTuple):
    results: list[ProbeResult]
    scheduler: Scheduler
    beside: set[tuple[str, str]]  # (endpoint, another whose check was running as it began)


async def run_for(config, seconds: float, hung: frozenset[str] = frozenset()) -> Run:
    """Run the scheduler for `seconds` of a manual clock, which also stamps the results.

    Each step of the clock waits for the checks it started (but those of `hung` endpoints)
    to end, so a busy machine slows the test down and never changes what it sees.
    """
    clock = ManualClock()
    results: list[ProbeResult] = []
    checking: set[str] = set()
    beside: set[tuple[str, str]] = set()
    async with Prober(clock=clock) as prober:

        async def check(endpoint):
            beside.update((endpoint.name, other) for other in checking)
            checking.add(endpoint.name)
            try:
                return await prober.check(endpoint)
            finally:
                checking.discard(endpoint.name)

        scheduler = Scheduler(
            list(config.endpoints()), check, [results.append], config.scheduler, timeline=clock
        )
        clock.settle = lambda: checking <= hung
        task = asyncio.create_task(scheduler.run())
        await until(clock.sleeping)
        await clock.advance(seconds)
        task.cancel()
        await scheduler.drain(5.0)  # a hung check ends at its timeout
    return Run(results, scheduler, beside)


async def test_a_hung_endpoint_does_not_delay_another(server) -> None:
    url, _ = server
    # Seconds of the manual clock, so a check's own (real) timeout can be generous: a busy
    # machine's slow first check is no timeout. The hung one still ends, at 300 ms.
    stuck_keys = {"url": f"{url}/hang", "timeout": "300ms"}
    config = fleet({"stuck": stuck_keys, "fine": f"{url}/fast"}, "2s", "2s")
    results, scheduler, beside = await run_for(config, 20.0, hung=frozenset({"stuck"}))
    fine = sorted(r.timestamp for r in results if r.endpoint == "fine")
    stuck = [r for r in results if r.endpoint == "stuck"]
    assert stuck
    for r in stuck:  # timeouts (a prober starved through one says so instead: timeouts.py)
        assert timeout_text(r, 0.3).startswith("no answer within 0.3s"), r
    # Every 2s for 20s, whatever the hung endpoint is doing: ~10 checks, evenly spaced.
    assert len(fine) >= 7
    gaps = [b - a for a, b in itertools.pairwise(fine)]
    assert max(gaps) < 4.0, gaps
    assert all(r.ok for r in results if r.endpoint == "fine")
    assert scheduler.stats.sink_errors == 0
    assert ("fine", "stuck") in beside  # checked while a hung check was still running


def test_spread_offsets_cover_the_interval_and_are_stable() -> None:
    endpoints = {f"e{i}": f"http://h{i}.example/" for i in range(200)}
    config = fleet(endpoints, "10s", "1s")
    offsets = [spread_offset(endpoint) for endpoint in config.endpoints()]
    assert all(0 <= offset < 10 for offset in offsets)
    deciles = {int(offset) for offset in offsets}
    assert deciles == set(range(10))  # no part of the interval left empty, none crowded
    assert offsets == [spread_offset(endpoint) for endpoint in config.endpoints()]


async def test_start_up_is_spread_not_a_burst(server) -> None:
    url, _ = server
    endpoints = {f"e{i}": f"{url}/fast" for i in range(20)}
    config = fleet(endpoints, "1s", "500ms")
    results, _, _ = await run_for(config, 1.1)
    first = {}
    for result in sorted(results, key=lambda r: r.timestamp):
        first.setdefault(result.endpoint, result.timestamp)
    times = sorted(first.values())
    assert len(times) >= 15
    assert times[-1] - times[0] > 0.5  # spread over the interval, not all at once


async def test_once_respects_the_concurrency_cap(server) -> None:
    url, app = server
    config = fleet({f"e{i}": f"{url}/counted" for i in range(12)}, "10s", "2s", max_concurrency=3)
    async with Prober() as prober:
        results = await check_once(list(config.endpoints()), prober.check, config.scheduler)
    assert [r.endpoint for r in results] == [f"e{i}" for i in range(12)]
    assert all(r.ok for r in results)
    assert app[IN_FLIGHT][1] == 3


async def test_once_respects_the_rate_limit(server) -> None:
    url, _ = server
    config = fleet({f"e{i}": f"{url}/fast" for i in range(12)}, "10s", "2s", rate_limit=5)
    began = time.time()
    async with Prober() as prober:
        results = await check_once(list(config.endpoints()), prober.check, config.scheduler)
    starts = sorted(r.timestamp for r in results)
    # 5 starts a second: the k-th check starts no sooner than k // 5 seconds in. A busy machine
    # can only start checks later (and so bunch them), never sooner.
    for k, start in enumerate(starts):
        assert start - began >= k // 5 - 0.05, (k, start - began)


def test_scheduler_settings_defaults_are_production_sized() -> None:
    settings = SchedulerSettings()
    assert settings.max_concurrency >= 100 and settings.rate_limit >= 1000


@pytest.mark.parametrize("tick", [0.0, 0.2])
async def test_checks_due_within_a_tick_start_together(server, tick) -> None:
    """A tick batches starts into fewer loop wakes; no start is more than half a tick late."""
    url, _ = server
    endpoints = {f"e{i}": f"{url}/fast" for i in range(40)}
    document = json.loads(json.dumps({"tick": f"{int(tick * 1000)}ms"}))
    config = fleet(endpoints, "1s", "1s", **document)
    assert config.scheduler.tick == tick
    results, scheduler, _ = await run_for(config, 2.2)
    assert len(results) >= 60 and all(r.ok for r in results)
    # Results of one batch carry the same wall-clock start to within a few ms.
    wakes = len({round(r.timestamp / 0.02) for r in results})
    if tick:
        assert wakes <= 2.2 / tick + 4, wakes  # ~11 batches in 2.2 s, not ~80 starts
    else:
        assert wakes > 30, wakes  # every check on its own due time
    assert max(scheduler.stats.lags) <= tick / 2 + 0.1, max(scheduler.stats.lags)


@pytest.mark.parametrize("count", [5, 40])
async def test_a_crowded_turns_checks_are_timed_at_the_socket(server, count) -> None:
    """The checks one turn of the dispatcher starts share its count (probes.base TURN), final
    before any of them runs: 40 started together are timed at the socket (the loop is busy
    starting them as their answers come), 5 are not (the loop reads each as it comes)."""
    url, _ = server
    config = fleet({f"e{i}": f"{url}/fast" for i in range(count)}, "500ms", "400ms", tick="1s")
    clock = ManualClock()
    seen: list[tuple[int, bool]] = []
    started = asyncio.Event()
    async with Prober(clock=clock) as prober:

        async def check(endpoint):
            turn = TURN.get()
            assert turn is not None
            seen.append((turn.started, timed_at_socket()))
            if len(seen) == count:
                started.set()
            return await prober.check(endpoint)

        scheduler = Scheduler(list(config.endpoints()), check, [], config.scheduler, timeline=clock)
        task = asyncio.create_task(scheduler.run())
        await until(clock.sleeping)
        await clock.advance(0.1)  # every start offset is within half a tick: one turn
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        await scheduler.drain(5.0)
    assert seen == [(count, count >= CROWDED)] * count
    assert timed_at_socket()  # no scheduler turn here: a check is timed at the socket
