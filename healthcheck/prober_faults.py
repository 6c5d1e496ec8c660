"""Checks the prober could not make for its own trouble: counted and told, never a verdict.

A check that failed on a local resource (out of file descriptors, buffers or memory, a canary
worker the daemon stopped itself) says nothing about its target. The daemon hands such results
here instead of to the status board, storage and the alert rules: the target keeps its last
status, its uptime and its alerts, and the daemon's own health alert rises instead.

So is a timeout the prober could not see through: one during which it could not run (its loop
late, or its thread waiting for a CPU: `loop_lag.lost_of`) for STARVED of its deadline or more.
The answer may well have come in time and sat unread; the target gets no verdict for it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace

from healthcheck.loop_lag import lost_of
from healthcheck.result import ErrorClass, ProbeResult

log = logging.getLogger("healthcheck.prober")

# A fault counts towards the daemon's health alert for this long; the log says so at most once
# per window, with how many there were.
WINDOW = 60.0


# A share of a timeout's deadline the prober spent unable to run that voids the timeout. Less is
# a wait a healthy answer would have outlasted (a loopback answer takes well under a millisecond;
# a remote one near its timeout was at risk anyway, and its check is made again: Prober.check).
STARVED = 0.25


def is_prober_fault(result: ProbeResult) -> bool:
    return result.error is ErrorClass.PROBER


def starved(result: ProbeResult, timeout: float) -> bool:
    """A timeout during which the prober could not run for STARVED of its deadline or more."""
    if result.error is not ErrorClass.TIMEOUT or not result.details:
        return False
    return lost_of(result) >= STARVED * timeout * max(1, result.attempts)


def starved_fault(result: ProbeResult, timeout: float) -> ProbeResult:
    """A `starved` timeout told as what it was: the prober's trouble, no verdict."""
    attempts = max(1, result.attempts)
    of = f"a {timeout * 1000:g} ms timeout"
    if attempts > 1:
        of = f"{attempts} attempts of {timeout * 1000:g} ms timeout"
    return replace(
        result,
        error=ErrorClass.PROBER,
        error_text=f"the prober was starved of CPU for {lost_of(result) * 1000:.0f} ms of {of}"
        f" ({result.error_text or 'timeout'})",
    )


class ProberFaults:
    """How many checks failed for the prober's own trouble: in all, and lately."""

    def __init__(self) -> None:
        self.total = 0
        self.last: str | None = None
        self._recent: deque[float] = deque()
        self._logged_at: float | None = None
        self._unlogged = 0

    def note(self, result: ProbeResult, now: float) -> None:
        self.total += 1
        self.last = f"{result.target_id}: {result.error_text}"
        self._recent.append(now)
        self._unlogged += 1
        if self._logged_at is None or not 0 <= now - self._logged_at < WINDOW:
            log.warning(
                "%d check(s) could not be made for the prober's own trouble, latest %s; "
                "no verdict about those targets",
                self._unlogged,
                self.last,
                extra={
                    "event": "prober_fault",
                    "region": result.region,
                    "endpoint": result.endpoint,
                    "faults": self._unlogged,
                },
            )
            self._logged_at, self._unlogged = now, 0

    def recent(self, now: float) -> int:
        """Faults in the last WINDOW seconds (all kept ones, if the clock stepped back)."""
        while self._recent and now - self._recent[0] > WINDOW:
            self._recent.popleft()
        return len(self._recent)
