"""A clock that moves only when the test says: alert ticks and schedules without sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

# However busy the machine, a woken task that has not gone back to sleep within this many
# real seconds is stuck on something the manual clock cannot move.
SETTLE_TIMEOUT = 30.0


class ManualClock:
    """A wall clock (call it) and a healthcheck.clock.Timeline (`time`, `sleep`) in one.

    Time stands still until `advance`, which wakes each sleeper in due order and lets the
    woken tasks run until they sleep again or end (and `settle()`, when given, is true), so
    what a period of time does has happened by the time `advance` returns.
    """

    def __init__(self, settle: Callable[[], object] | None = None) -> None:
        self.now = 0.0  # monotonic seconds
        self.epoch = time.time()  # the wall clock reads epoch + now
        self.settle = settle
        self._sleepers: list[tuple[float, int, asyncio.Future[None], asyncio.Task[object]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.epoch + self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        task = asyncio.current_task()
        assert task is not None
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), woken, task))
        await woken

    def sleeping(self) -> int:
        """How many tasks wait on this clock."""
        return sum(not woken.done() for _, _, woken, _ in self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, one due sleeper at a time."""
        end = self.now + seconds
        while self._sleepers and self._sleepers[0][0] <= end:
            self.now = max(self.now, self._sleepers[0][0])
            woken = []
            while self._sleepers and self._sleepers[0][0] <= self.now:
                _, _, future, task = heapq.heappop(self._sleepers)
                if not future.done():  # else cancelled while asleep
                    future.set_result(None)
                    woken.append(task)
            await self._settled(woken)
        self.now = end
        await self._settled([])

    async def advance_until(
        self, condition: Callable[[], object], step: float, within: float
    ) -> float:
        """Advance `step` at a time until `condition()`; fail past `within` seconds of this
        clock. Returns the time it took."""
        began = self.now
        while not condition():
            assert self.now - began < within, f"not true within {within} s of the manual clock"
            await self.advance(step)
        return self.now - began

    async def _settled(self, woken: list[asyncio.Task[object]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT
        for spin in itertools.count():
            asleep = {task for _, _, future, task in self._sleepers if not future.done()}
            if all(task.done() or task in asleep for task in woken):
                # Tasks they created take their first step a turn or two later.
                for _ in range(3):
                    await asyncio.sleep(0)
                if self.settle is None or self.settle():
                    return
            assert loop.time() < deadline, f"woken tasks never slept again: {woken}"
            # The first turns cost nothing; past them the tasks wait on I/O or a thread.
            await asyncio.sleep(0 if spin < 20 else 0.002)
