"""Time as components read it, passed in so that tests move it by hand instead of sleeping.

Two kinds: the wall clock (`Clock`), for stamps that are stored and shown, and a `Timeline`,
monotonic time and a sleep on it, for intervals, ticks and due times. A test hands both in as
one manual clock; the daemon runs on `time.time` and the event loop's own clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

# Wall-clock seconds since the epoch.
Clock = Callable[[], float]


class Timeline(Protocol):
    """Monotonic seconds, and a sleep measured on them."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopTimeline:
    """The running event loop's clock: the default everywhere."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


LOOP = LoopTimeline()
