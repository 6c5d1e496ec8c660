"""The Prober: checks any endpoint with the probe of its kind, started on the kind's first check."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from types import TracebackType
from typing import Any

from healthcheck.loop_lag import LoopLag, RunWait, lag_of, noted
from healthcheck.prober_faults import starved, starved_fault
from healthcheck.probes.base import AT_SOCKET, Clock, Probe
from healthcheck.probes.registry import probe_kind
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.secrets import Redactor, cut
from healthcheck.targets import Endpoint

log = logging.getLogger("healthcheck.prober")


class Prober:
    """Owns one instance of each probe kind it has been asked to check, and checks any endpoint
    with the right one."""

    def __init__(
        self,
        redactor: Redactor | None = None,
        clock: Clock = time.time,
        recheck_lagged: bool = True,
        database: str | None = None,
        wait: RunWait | None = None,
    ) -> None:
        self._clock = clock
        self._database = database  # handed to each probe (Probe.database)
        self.lag = LoopLag()
        self.wait = wait or RunWait()
        self.lag.wait = self.wait
        # A check that failed while its loop ran late (or starved) is made once more, at once;
        # --once instead makes its lagged checks again after the round, fewer at a time.
        self._recheck_lagged = recheck_lagged
        self._probes: dict[str, Probe] = {}
        self._starting: dict[str, asyncio.Future[Probe]] = {}
        self._redact = redactor or Redactor()
        self._condition_texts: dict[str, str] = {}  # a condition's text -> scrubbed, see scrub

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        self.lag.stop()
        self.wait.close()
        for probe in self._probes.values():
            await probe.close()

    async def _probe(self, kind: str) -> Probe:
        """The started probe of `kind`; concurrent first checks of a kind share one start."""
        starting = self._starting.get(kind)
        if starting is None:
            starting = self._starting[kind] = asyncio.ensure_future(self._start(kind))
        return await asyncio.shield(starting)

    async def _start(self, kind: str) -> Probe:
        # Imported in a thread: a canary kind's first import (numpy, ~0.2 s) would otherwise
        # stall every other check on the loop, and their latencies with it.
        probe = (await asyncio.to_thread(probe_kind, kind))(self._clock, self._database)
        await probe.start()
        self._probes[kind] = probe
        return probe

    def use_secrets(self, redactor: Redactor) -> None:
        """A reloaded configuration may bring new secrets to scrub."""
        self._redact = redactor
        self._condition_texts = {}

    async def check(self, target: Endpoint) -> ProbeResult:
        """One check of one endpoint; secrets are scrubbed at the source from every text the
        result carries (error, condition texts and what they saw, string details). The loop's
        lateness during the check goes with it (`details.loop_lag_ms`), and so does the time
        its thread waited for a CPU (`details.cpu_wait_ms`). A timeout the prober was starved
        through (prober_faults.starved) that a second look cannot settle is a prober fault."""
        probe = self._probes.get(target.kind)
        if probe is None:
            try:
                probe = await self._probe(target.kind)
            except Exception as exc:  # our own trouble (a kind that cannot start): no verdict
                self._starting.pop(target.kind, None)  # the next check tries again
                log.exception("could not start the %s probe", target.kind)
                return self.scrub(
                    ProbeResult(
                        target.region,
                        target.name,
                        target.kind,
                        ok=False,
                        latency=0.0,
                        timestamp=self._clock(),
                        error=ErrorClass.PROBER,
                        error_text=f"the prober could not start its {target.kind} checks: "
                        f"{type(exc).__name__}: {exc}",
                    )
                )
        # The first look is _timed's, written out here: a coroutine less that each wait of
        # every check resumes through
        start = self.lag.begin()
        waited = self.wait.now()
        try:
            result = await probe.run(target)
        except BaseException:  # cancelled: the check is over all the same
            self.lag.end(start)
            raise
        result = self._noted(result, start, waited, self._at_socket(result))
        starving = starved(result, target.timeout)
        if (
            self._recheck_lagged
            and not result.ok
            and result.details
            and (starving or lag_of(result))
            and result.latency + target.budget <= target.interval  # never past its next slot
        ):
            first = result
            result = await self._timed(probe, target)  # once: its verdict stands, lag or not
            if starved(result, target.timeout):
                result = starved_fault(result, target.timeout)
            # Both looks are attempts of this one check, as its retries are
            result = replace(result, attempts=first.attempts + result.attempts)
        elif starving:  # no room for a second look: the next check in its schedule will tell
            result = starved_fault(result, target.timeout)
        return self.scrub(result)

    async def _timed(self, probe: Probe, target: Endpoint) -> ProbeResult:
        start = self.lag.begin()
        waited = self.wait.now()
        try:
            result = await probe.run(target)
        except BaseException:
            self.lag.end(start)
            raise
        return self._noted(result, start, waited, self._at_socket(result))

    @staticmethod
    def _at_socket(result: ProbeResult) -> bool:
        """Whether the probe timed this answer at the socket (AT_SOCKET: its last attempt
        had an answer, healthy or not), cleared for the next check the task may run."""
        if not AT_SOCKET.get():
            return False
        AT_SOCKET.set(False)
        return result.error is not ErrorClass.TIMEOUT

    def _noted(
        self, result: ProbeResult, start: float, waited_at_start: float, at_socket: bool = False
    ) -> ProbeResult:
        """The result with the prober's lateness as its answer came (`loop_lag_ms`: the loop's
        late ticks back to its last on-time one, or the thread's wait since its last tick if
        more, a wait no tick saw) and the whole check's run-queue wait (`cpu_wait_ms`). The
        answer came at its latency from the start: a kind that times it in the transport's
        callback (the lean HTTP path) is not charged for lateness after it, and one timed at
        the socket (`at_socket`: the kernel's receive time, the request's wait on the loop
        taken off) has none of the loop's lateness in it, so none is noted: status would take
        it off a second time, and a failed answer would be looked at again for nothing."""
        waited_now = self.wait.now()
        if at_socket:
            self.lag.end(start)
            return noted(result, 0.0, waited_now - waited_at_start)
        answered = start + result.latency
        lag = max(
            self.lag.end(start, answered),
            self.lag.tail_wait(start, waited_at_start, waited_now, answered),
        )
        return noted(result, lag, waited_now - waited_at_start)

    def scrub(self, result: ProbeResult) -> ProbeResult:
        if not (result.error_text or result.conditions or result.details or result.degraded):
            return result  # no text to scrub: most healthy checks
        redact = self._redact
        changes: dict[str, Any] = {}
        if result.error_text and (text := one_line(redact(result.error_text))) != result.error_text:
            changes["error_text"] = text
        if result.conditions:
            # A new outcome only where scrubbing changed something (rare), and a condition's
            # text (the configuration's, the same at every check) scanned once per secret set
            conditions, texts, changed = [], self._condition_texts, False
            for outcome in result.conditions:
                condition = texts.get(outcome.condition)
                if condition is None:
                    if len(texts) >= MAX_CONDITION_TEXTS:
                        texts.clear()
                    condition = texts[outcome.condition] = redact(outcome.condition)
                detail = outcome.detail
                if detail:
                    detail = one_line(redact(detail))
                if condition != outcome.condition or detail != outcome.detail:
                    outcome = replace(outcome, condition=condition, detail=detail)
                    changed = True
                conditions.append(outcome)
            if changed:
                changes["conditions"] = tuple(conditions)
        if result.details and any(
            isinstance(value, str) and redact(value) != value for _, value in result.details
        ):
            changes["details"] = tuple(
                (key, redact(value) if isinstance(value, str) else value)
                for key, value in result.details
            )
        if result.degraded and redact(result.degraded) != result.degraded:
            changes["degraded"] = redact(result.degraded)
        return replace(result, **changes) if changes else result


# Condition texts remembered scrubbed: the configuration's, so a few; a bound all the same.
MAX_CONDITION_TEXTS = 10_000


# Error texts and what conditions saw can quote the peer (aiohttp quotes the bytes of a bad
# status line): they go to logs, alerts and pages as one line of printable text, capped.
MAX_TEXT = 300


def one_line(text: str) -> str:
    """`text` with whitespace runs as one space, other control characters as `?`, capped."""
    if text.isprintable() and len(text) <= MAX_TEXT:
        return text  # the common case, untouched
    flat = "".join(ch if ch.isprintable() else "?" for ch in " ".join(text.split()))
    return cut(flat, MAX_TEXT)
