"""How late the prober's event loop ran while a check was in flight: our lateness, not the target's.

A check's latency is read when its task runs again, so time the loop spent on other work (other
checks, a collection, a core taken by another process) reads as the target's. While any check is
in flight a timer is due every PERIOD; how late it fires, past the selector's own millisecond
rounding (SLACK), is time the loop was not serving anything. A check asks for that lateness over
its own span and carries it as `details.loop_lag_ms`; status judges latency with it taken off.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from healthcheck.result import ProbeResult

PERIOD = 0.002
# epoll waits in whole milliseconds, rounded up: an idle loop fires a timer up to 1 ms late.
SLACK = 0.001
# Less than this over a check is not worth a word; more is "late by more than a few ms".
NOTED = 0.003
DETAIL = "loop_lag_ms"
_KEPT = 4096  # late ticks remembered; a check looks back over its own span only


class LoopLag:
    """Times the running loop while checks are in flight (`begin` ... `end`), idle otherwise."""

    def __init__(self, period: float = PERIOD) -> None:
        self.period = period
        # Called with each tick's lateness in seconds (a pace for --once listens here).
        self.on_tick: Callable[[float], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._users = 0
        self._late: deque[tuple[float, float]] = deque(maxlen=_KEPT)  # (fired at, late by)

    def begin(self) -> float:
        """A check starts: tick while it runs. Returns its start on the loop's clock."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._users += 1
        if self._handle is None or self._loop is not loop:
            self._loop = loop
            self._due = now + self.period
            self._handle = loop.call_at(self._due, self._tick)
        return now

    def end(self, start: float) -> float:
        """A check begun at `start` is over: the seconds its loop ran late meanwhile."""
        assert self._loop is not None  # begin() came first
        lag = self.since(start, self._loop.time())
        self._users -= 1
        if self._users == 0:
            self.stop()
        return lag

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def since(self, start: float, now: float) -> float:
        """Lateness between `start` and `now`: each late tick's, clipped to the span, and the
        pending tick's if it is overdue already (the loop is late right now)."""
        total = 0.0
        for fired, late in reversed(self._late):
            if fired <= start:
                break
            total += min(late, fired - start)
        overdue = now - self._due - SLACK
        if self._handle is not None and overdue > 0:
            total += min(overdue, now - start)
        return total

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = now - self._due
        if late > SLACK:
            self._late.append((now, late - SLACK))
        if self.on_tick is not None:
            self.on_tick(late)
        self._due = now + self.period
        self._handle = self._loop.call_at(self._due, self._tick)


def noted(result: ProbeResult, lag: float) -> ProbeResult:
    """`result` with its loop's lateness in its details, when that is more than noise."""
    if lag <= NOTED:
        return result
    return replace(result, details=(*result.details, (DETAIL, round(lag * 1000, 1))))


def lag_of(result: ProbeResult) -> float:
    """Seconds the loop ran late during this check (0.0 when none was noted)."""
    for key, value in result.details:
        if key == DETAIL and isinstance(value, int | float):
            return float(value) / 1000
    return 0.0
