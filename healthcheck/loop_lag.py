"""How late the prober's event loop ran as a check completed: our lateness, not the target's.

A check's latency is read when its task runs again, so time the loop spent on other work (other
checks, a collection, a core taken by another process) just as the answer came reads as the
target's. While any check is in flight a timer is due every PERIOD to LONGEST; how late it
fires, past the selector's own millisecond rounding (SLACK), is time the loop was not serving
anything. A check takes the run of late ticks it completed in (back to the last on-time tick,
within its own span) as `details.loop_lag_ms`; status judges latency with it taken off. A late
stretch the loop recovered from before the answer came is not counted: a slow target that was
still thinking through it answered no later for it (the demo's slow endpoint, served on the
prober's own loop, waits through the loading of TLS contexts and must still read degraded).

The period doubles while ticks come on time and drops back to PERIOD at a late one: a wake of an
otherwise idle loop costs CPU. A sparse daemon (20 checks/s of a 50 ms target, a loaded 2-core
VM) went from 1.8 ms of CPU per check to 4.1 ms with a steady 2 ms tick, 2.3 ms with a steady
10 ms one, and 2.2-2.5 ms with this one (4-5 ticks a check: the load made many ticks late); at
200 checks/s it was within noise. Lateness longer than LONGEST is always seen (all but up to
LONGEST of it); shorter, only where a tick fell due.

Loop lag misses a process the kernel left waiting for a CPU as a whole (a core shared with busy
processes): its ticks and its answers are late together, and a tick that fires after the check
ended says nothing to it. `RunWait` reads what the kernel counted instead: the nanoseconds this
thread spent runnable but not running (`/proc/thread-self/schedstat`, second field), before and
after each check, as `details.cpu_wait_ms`. One `pread` on a descriptor kept open costs about
2 us of CPU (5 us wall; opening the file each time, 44 us) on the 2-core VM: 4 us a check
against its ~2 ms. Where /proc has no schedstat, it reads 0 and loop lag is all there is.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from healthcheck.result import ProbeResult

PERIOD = 0.002
LONGEST = 0.05
# epoll waits in whole milliseconds, rounded up: an idle loop fires a timer up to 1 ms late.
SLACK = 0.001
# Less than this over a check is not worth a word; more is "late by more than a few ms".
NOTED = 0.003
DETAIL = "loop_lag_ms"
WAIT_DETAIL = "cpu_wait_ms"
SCHEDSTAT = "/proc/thread-self/schedstat"
_KEPT = 4096  # ticks remembered; a check looks back to the last on-time one


class LoopLag:
    """Times the running loop while checks are in flight (`begin` ... `end`), idle otherwise."""

    def __init__(self, period: float = PERIOD, longest: float = LONGEST) -> None:
        self.period = period
        self.longest = longest  # = period: a steady tick, for a pace that listens to each
        # Called with each tick's lateness in seconds and the share of the time since the last
        # tick this process was on a CPU (a pace for --once listens here).
        self.on_tick: Callable[[float, float], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._next = period  # the period now
        self._marks = (0.0, 0.0)  # loop time, process CPU time at the last tick
        self._users = 0
        # The thread's run-queue wait, read at each tick (see tail_wait); None: not read.
        self.wait: RunWait | None = None
        # (fired at, late by beyond SLACK: 0.0 for a tick on time, run-queue wait then)
        self._ticks: deque[tuple[float, float, float]] = deque(maxlen=_KEPT)

    def begin(self) -> float:
        """A check starts: tick while it runs. Returns its start on the loop's clock."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._users += 1
        if self._handle is None or self._loop is not loop:
            self._loop = loop
            self._due = now + self._next
            self._handle = loop.call_at(self._due, self._tick)
            self._marks = (now, time.process_time())
        return now

    def end(self, start: float, until: float | None = None) -> float:
        """A check begun at `start` is over: the seconds its loop ran late meanwhile, up to
        `until` (loop time) when its answer was timed before the check's task ran again (the
        lean HTTP path times it in the transport's callback): lateness after that delayed no
        figure of it."""
        assert self._loop is not None  # begin() came first
        now = self._loop.time()
        lag = self.since(start, now if until is None else min(until, now))
        self._users -= 1
        if self._users == 0:
            self.stop()
        return lag

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def since(self, start: float, now: float) -> float:
        """The lateness the loop is in at `now`, back to its last on-time tick and no further
        than `start`: the tick due then if it was overdue, and the late ticks just before.
        Ticks fired after `now` (a moment already past) tell when the one due then was due."""
        ticks = self._ticks
        index = len(ticks) - 1
        due: float | None = self._due if self._handle is not None else None
        while index >= 0 and ticks[index][0] > now:
            fired, late, _ = ticks[index]
            due = fired - late - SLACK if late else fired
            index -= 1
        total = 0.0
        if due is not None and now - due - SLACK > 0:
            total += now - due - SLACK
        while index >= 0:
            fired, late, _ = ticks[index]
            if fired <= start or not late:
                break
            total += min(late, fired - start)
            index -= 1
        return max(0.0, min(total, now - start))

    def tail_wait(
        self, start: float, waited_at_start: float, waited_now: float, until: float | None = None
    ) -> float:
        """The seconds the thread waited for a CPU between the last tick before `until` (the
        answer timed, else now) of a check begun at `start`, or its start, and the first tick
        after `until`, or now: a wait the ticks could not see, as the answer came. A wait
        before that tick was followed by the loop running again while the target still had
        the request: it did not delay the answer's reading."""
        base, top = waited_at_start, waited_now
        for fired, _, waited in reversed(self._ticks):
            if fired <= start:
                break
            if until is not None and fired > until:
                top = waited  # the first tick after the answer was timed, as we go back
                continue
            base = max(base, waited)
            break
        return max(0.0, top - base)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = now - self._due
        waited = self.wait.now() if self.wait is not None else 0.0
        if late > SLACK:
            self._ticks.append((now, late - SLACK, waited))
            self._next = self.period
        else:
            self._ticks.append((now, 0.0, waited))
            self._next = min(self.longest, self._next * 2)
        if self.on_tick is not None:
            cpu = time.process_time()
            since, cpu_then = self._marks
            self._marks = (now, cpu)
            self.on_tick(late, (cpu - cpu_then) / (now - since) if now > since else 1.0)
        self._due = now + self._next
        self._handle = self._loop.call_at(self._due, self._tick)


class RunWait:
    """Seconds the calling thread has waited on a run queue (runnable, not on a CPU), as the
    kernel counts them; 0.0 for ever once /proc has no schedstat to read."""

    def __init__(self, path: str = SCHEDSTAT) -> None:
        self._path = path
        self._fd: int | None = None
        self._owner: tuple[int, int] | None = None  # (pid, thread) the open file describes
        self.available = True

    def now(self) -> float:
        if not self.available:
            return 0.0
        # A forked child, another thread: reopen. The pid is the one noted at the last fork,
        # not a getpid() system call per read (two a check).
        owner = (_pid, threading.get_ident())
        try:
            if self._fd is None or self._owner != owner:
                self.close()
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
                self._owner = owner
            return int(os.pread(self._fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            self.available = False
            self.close()
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self._owner is not None and self._owner[0] == _pid:
                os.close(fd)


# This process's id, as of its last fork (os.getpid() is a system call on glibc >= 2.25).
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def noted(result: ProbeResult, lag: float, wait: float = 0.0) -> ProbeResult:
    """`result` with its loop's lateness and its thread's wait for a CPU in its details, each
    when it is more than noise."""
    if lag <= NOTED and wait <= NOTED:
        return result  # the common case: nothing to add
    added = tuple(
        (key, round(value * 1000, 1))
        for key, value in ((DETAIL, lag), (WAIT_DETAIL, wait))
        if value > NOTED
    )
    return replace(result, details=(*result.details, *added)) if added else result


def _detail(result: ProbeResult, name: str) -> float:
    for key, value in result.details:
        if key == name and isinstance(value, int | float):
            return float(value) / 1000
    return 0.0


def lag_of(result: ProbeResult) -> float:
    """Seconds the loop ran late during this check (0.0 when none was noted)."""
    return _detail(result, DETAIL)


def wait_of(result: ProbeResult) -> float:
    """Seconds the prober waited for a CPU during this check (0.0 when none was noted)."""
    return _detail(result, WAIT_DETAIL)


def lost_of(result: ProbeResult) -> float:
    """Seconds of this check the prober itself could not run: its loop late as it ended, or its
    thread waiting for a CPU at any time of it. The two overlap (a descheduled loop is late
    too), so the larger: what a timeout forgives (prober_faults.starved). A latency is judged
    with only the lateness taken off (lag_of): a wait while the target still had the request
    made its answer no later."""
    if not result.details:
        return 0.0
    return max(lag_of(result), wait_of(result))
