"""One round of every check for `--once`: as many at a time as the loop keeps time with.

Firing the configured `max_concurrency` (500) checks at once over fast targets measured our own
queue: 1,000 loopback endpoints answering in under 1 ms read p50 274 ms, all degraded. The loop
is the bottleneck there, not the network, so more checks at a time only lengthen each one. The
pace starts small and grows while the loop's timer fires on time (slow, remote targets leave it
idle: the pace climbs to the cap), and halves when it runs late. Checks over a latency threshold,
failed while the loop was late, or failed for the prober's own trouble, are made once more,
fewer at a time, before anything is judged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from asyncio_throttle.throttler import Throttler

from healthcheck.loop_lag import SLACK, LoopLag, lag_of
from healthcheck.prober import Prober
from healthcheck.prober_faults import is_prober_fault
from healthcheck.result import ProbeResult
from healthcheck.targets import Endpoint, SchedulerSettings

log = logging.getLogger("healthcheck.once")

START = 4  # checks at a time before the loop has said anything
# A tick later than this, on a process busy on its CPU, halves the pace; one within SLACK (the
# selector's rounding) grows it. Late but mostly off the CPU is the machine's doing (another
# process had the core): fewer checks would not make it sooner, so the pace holds.
LATE = 0.002
BUSY = 0.5


class Pace:
    """How many checks may run at once: up by an eighth per on-time tick, half per late one."""

    def __init__(self, cap: int, start: int = START) -> None:
        self.cap = cap
        self.limit = max(1, min(start, cap))
        self.peak = self.limit
        self.room = asyncio.Event()  # set when a check ends or the limit grows

    def tick(self, late: float, busy: float) -> None:
        if late > LATE:
            if busy > BUSY:
                self.limit = max(1, self.limit // 2)
        elif late <= SLACK and self.limit < self.cap:
            self.limit = min(self.cap, self.limit + max(1, self.limit // 8))
            self.peak = max(self.peak, self.limit)
            self.room.set()


async def check_all(
    endpoints: Sequence[Endpoint], prober: Prober, settings: SchedulerSettings
) -> list[ProbeResult]:
    """Every endpoint once, results in input order; checks spoiled by the prober's own trouble
    or lateness made again once, at most a quarter as many at a time as the round reached."""
    prober.lag.longest = prober.lag.period  # the pace listens to every tick: keep them coming
    pace = Pace(settings.max_concurrency)
    results = await _round(endpoints, prober, pace, settings.rate_limit)
    again = [i for i, result in enumerate(results) if _spoiled(result, endpoints[i])]
    log.debug(
        "once: %d checks, up to %d at a time; %d made again",
        len(endpoints),
        pace.peak,
        len(again),
        extra={"event": "once_round", "peak": pace.peak, "again": len(again)},
    )
    if again:
        fewer = Pace(max(1, min(len(again), pace.peak) // 4), start=1)
        retried = await _round([endpoints[i] for i in again], prober, fewer, settings.rate_limit)
        for i, result in zip(again, retried, strict=True):
            results[i] = result
    return results


def _spoiled(result: ProbeResult, endpoint: Endpoint) -> bool:
    """Worth a second look before judging: the prober's own fault, a failure while the loop
    ran late, or any latency over a threshold. Lateness the loop recovered from before the
    answer came is not in `loop_lag_ms` yet may have delayed a step (a connect that was ready):
    under load average 10 on 2 cores, 9 of 5,000 instant answers read degraded for it. A slow
    target is slow again at a quarter of the pace, and that second figure is the one kept."""
    if is_prober_fault(result):
        return True
    if not result.ok:
        return bool(result.details) and lag_of(result) > 0
    limits = (endpoint.latency_warning, endpoint.latency_critical)
    return any(limit is not None and result.latency > limit for limit in limits)


async def _round(
    endpoints: Sequence[Endpoint], prober: Prober, pace: Pace, rate_limit: int
) -> list[ProbeResult]:
    lag: LoopLag = prober.lag
    throttler = Throttler(rate_limit=rate_limit, period=1.0)
    results: list[ProbeResult | None] = [None] * len(endpoints)
    running = 0

    async def one(index: int, endpoint: Endpoint) -> None:
        nonlocal running
        try:
            results[index] = await prober.check(endpoint)
        finally:
            running -= 1
            pace.room.set()

    tasks = []
    lag.on_tick = pace.tick
    try:
        for index, endpoint in enumerate(endpoints):
            while running >= pace.limit:
                pace.room.clear()
                await pace.room.wait()
            await throttler.acquire()
            running += 1
            tasks.append(asyncio.create_task(one(index, endpoint)))
        await asyncio.gather(*tasks)
    finally:
        lag.on_tick = None
    assert all(result is not None for result in results)  # every task ran to its end
    return [result for result in results if result is not None]
