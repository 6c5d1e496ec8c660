"""What every probe kind shares: the registry contract, the attempt budget, error classes."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_random_exponential

from healthcheck.clock import Clock as Clock  # re-exported: every probe kind takes one
from healthcheck.conditions import ConditionContext
from healthcheck.probes import rdap
from healthcheck.probes.plugin import AlertRule, KindMetrics
from healthcheck.result import ConditionOutcome, ErrorClass, ProbeResult
from healthcheck.schema import Option
from healthcheck.targets import Endpoint, ProbeSettings

# The shortest attempt worth starting: below this a retry could only time out.
MIN_ATTEMPT = 0.05


@dataclass(slots=True)
class Progress:
    """How far the running attempt got, so that its timeout says so: a probe that has had the
    status line of a response notes it here, and a body that never ends reads as such."""

    http_status: int | None = None
    awaiting: str | None = None  # what the attempt still waits for ("no message"), if it says


# The running attempt's Progress; set around each attempt, as PEER_TLS is around a request.
PROGRESS: ContextVar[Progress | None] = ContextVar("PROGRESS", default=None)
# The checked name's registration expiry (epoch s) or why it is unknown, for a check whose
# conditions read [DOMAIN_EXPIRATION]; set around its attempts by `run`, read by `judged`.
DOMAIN_EXPIRY: ContextVar[float | str | None] = ContextVar("DOMAIN_EXPIRY", default=None)
# True once the last attempt's answer was timed as it reached the socket (the kernel's receive
# time, the request's delay on a busy loop taken off: http_lean's _TimedSocket): the prober's
# lateness is not in its latency, nor could it have made the answer what it was, so none is
# noted against it. Cleared as each attempt begins, set by the probe, read and cleared by the
# Prober after each check.
AT_SOCKET: ContextVar[bool] = ContextVar("AT_SOCKET", default=False)


@dataclass(slots=True)
class Turn:
    """The checks one turn of a scheduler's loop started together: `started` of them, the count
    final before any of them runs (their tasks start on the next turn)."""

    started: int = 0


# The scheduler turn that started the running check (its tasks inherit it); None: a check not
# started by a scheduler (`--once`, a test).
TURN: ContextVar[Turn | None] = ContextVar("TURN", default=None)
# Checks started in one turn from which a kind that can time its answers at the socket does so
# (http_lean's _TimedSocket: 35-70 us more CPU a check than the loop's own transport). A loop
# that starts this many spends ~3 ms doing it, while the first connections are made and the
# answers come; fewer, and it reads each as it comes. A check not started by a scheduler is
# timed at the socket.
CROWDED = 16


def timed_at_socket() -> bool:
    """Whether the running check should have its answer timed at the socket (see CROWDED)."""
    turn = TURN.get()
    return turn is None or turn.started >= CROWDED


# What any check over a socket can fail with: the classes `classify_exception` gives (but
# `prober`, which is no verdict and never counted against an endpoint) and the attempt timeout.
NETWORK_ERRORS = (
    ErrorClass.TIMEOUT,
    ErrorClass.CONNECTION_REFUSED,
    ErrorClass.CONNECTION_RESET,
    ErrorClass.DNS,
    ErrorClass.TLS,
    ErrorClass.NETWORK,
    ErrorClass.INTERNAL,
)


class Probe(ABC):
    """A probe kind, whole: subclasses set `kind`, `settings`, `options` (its config keys),
    `placeholders`, `errors` and `attempt`; and, if the kind has its own, `metrics`,
    `alert_rules`, `down_alertname` (healthcheck.probes.plugin) and `one_process`."""

    kind: ClassVar[str]
    settings: ClassVar[type[ProbeSettings]]  # frozen dataclass built from `options`
    options: ClassVar[Mapping[str, Option]]
    placeholders: ClassVar[frozenset[str]]  # condition placeholders this kind can fill
    # Every error class a check of this kind can end with, so /metrics shows each at 0 from
    # the start and increase() sees the first error of every series.
    errors: ClassVar[tuple[ErrorClass, ...]] = (*NETWORK_ERRORS, ErrorClass.CONDITION_FAILED)
    # The kind's own metric families and alert rules, beyond every kind's.
    metrics: ClassVar[KindMetrics | None] = None
    alert_rules: ClassVar[tuple[AlertRule, ...]] = ()
    # The Alertmanager alertname of this kind's endpoint_down alert where Prometheus's rules
    # name a failing check of the kind apart; None: HealthcheckEndpointDown.
    down_alertname: ClassVar[str | None] = None
    # Every check of this kind runs in one probe worker process (the first), for a kind whose
    # checks share a costly resource there (the ONNX canary's worker, model and GPU).
    one_process: ClassVar[bool] = False

    def __init__(self, clock: Clock = time.time, database: str | None = None) -> None:
        self.clock = clock
        # The daemon's SQLite file, for a kind that judges what was stored there (push: the
        # last ping); None where there is none.
        self.database = database

    @classmethod
    def cadence(cls, settings: ProbeSettings, interval: float) -> float | None:
        """How often to check an endpoint of this kind, if not every `interval`."""
        return None

    @classmethod
    def effective(cls, settings: ProbeSettings, interval: float) -> ProbeSettings:
        """The settings as they apply, for people to read: a default that depends on the
        endpoint (left None in the config) filled in with its value."""
        return settings

    @classmethod
    def resolve(cls, settings: ProbeSettings, base_dir: Path) -> ProbeSettings:
        """Settings with files found relative to the config's folder; raise schema.FieldError
        (naming the key) for a file that is missing or unreadable."""
        return settings

    async def start(self) -> None:
        """Open shared resources (client sessions); called once before the first check."""

    async def close(self) -> None:
        """Release shared resources."""

    @abstractmethod
    async def attempt(self, target: Endpoint) -> ProbeResult:
        """One try against the target; the caller bounds it with a timeout."""

    def run(self, target: Endpoint) -> Awaitable[ProbeResult]:
        """Check the target: retries with backoff inside its budget; never raises. (A plain
        function giving the coroutine to await: one coroutine less for every check to go
        through at each of its waits; a kind's override may be `async def`.)"""
        conditions = target.conditions
        if conditions and any(rdap.PLACEHOLDER in c.placeholders for c in conditions):
            return self._with_domain_expiry(target)
        return self._run(target)

    async def _with_domain_expiry(self, target: Endpoint) -> ProbeResult:
        # Read before the attempts and apart from them: its time is no part of the latency,
        # and its failure only fails the conditions that read it.
        noting = DOMAIN_EXPIRY.set(await _domain_expiry(target))
        try:
            return await self._run(target)
        finally:
            DOMAIN_EXPIRY.reset(noting)

    async def _run(self, target: Endpoint) -> ProbeResult:
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + target.budget
        # The first attempt straight away: the common case builds none of the retry machinery
        # below (~10% of a check's CPU) and no closures for it.
        allowed = min(target.timeout, target.budget)  # all of the budget is still ahead
        first = await self._bounded_attempt(target, max(allowed, MIN_ATTEMPT))
        if first.ok or target.retries == 0 or deadline - loop.time() < MIN_ATTEMPT:
            return first
        attempts = 1

        async def one_attempt() -> ProbeResult:
            nonlocal attempts
            attempts += 1
            allowed = min(target.timeout, deadline - loop.time())
            return await self._bounded_attempt(target, max(allowed, MIN_ATTEMPT))

        def out_of_budget(state: RetryCallState) -> bool:
            used_up = state.attempt_number > target.retries
            return used_up or deadline - loop.time() < MIN_ATTEMPT

        unseen = [first]  # tenacity's first attempt is the one already made

        async def first_then_more() -> ProbeResult:
            return unseen.pop() if unseen else await one_attempt()

        def last_result(state: RetryCallState) -> ProbeResult:
            assert state.outcome is not None  # tenacity calls this only after an attempt
            result: ProbeResult = state.outcome.result()
            return result

        retrying = AsyncRetrying(
            stop=out_of_budget,
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            retry=retry_if_result(lambda result: not result.ok),
            retry_error_callback=last_result,
        )
        result: ProbeResult = await retrying(first_then_more)
        if attempts == 1:
            return result
        # The check's latency is all of it, as blackbox_exporter's probe_duration_seconds:
        # every attempt and the backoff between them (the phases are the last attempt's).
        return replace(result, attempts=attempts, latency=loop.time() - began)

    async def _bounded_attempt(self, target: Endpoint, allowed: float) -> ProbeResult:
        started = time.perf_counter()
        timestamp = self.clock()
        progress = Progress()
        noting = PROGRESS.set(progress)
        AT_SOCKET.set(False)  # this attempt's answer, not an earlier attempt's
        try:
            async with asyncio.timeout(allowed):
                return await self.attempt(target)
        except TimeoutError:
            if (status := progress.http_status) is not None:
                text = f"HTTP {status}, body not complete within {allowed:.3g}s"
                return self.failed(
                    target, ErrorClass.TIMEOUT, text, started, timestamp, http_status=status
                )
            awaiting = progress.awaiting or "no answer"
            return self.failed(
                target, ErrorClass.TIMEOUT, f"{awaiting} within {allowed:.3g}s", started, timestamp
            )
        except Exception as exc:  # a probe must never raise to the scheduler
            error, message = classify_exception(exc)
            host = _target_host(target)
            if isinstance(exc, socket.gaierror) and host:
                message = resolve_failure(host, exc)
            return self.failed(target, error, message, started, timestamp)
        finally:
            PROGRESS.reset(noting)

    def failed(
        self,
        target: Endpoint,
        error: ErrorClass,
        text: str,
        started: float,
        timestamp: float | None = None,
        **fields: Any,
    ) -> ProbeResult:
        """A failed result for this target, timed from `started` (a perf_counter value)."""
        return ProbeResult(
            region=target.region,
            endpoint=target.name,
            kind=target.kind,
            ok=False,
            latency=time.perf_counter() - started,
            timestamp=self.clock() if timestamp is None else timestamp,
            error=error,
            error_text=text,
            **fields,
        )

    def judged(
        self,
        target: Endpoint,
        context: ConditionContext,
        started: float,
        timestamp: float,
        *,
        latency: float | None = None,
        verdict: tuple[ErrorClass, str] | None = None,
        degraded: str | None = None,
        **fields: Any,
    ) -> ProbeResult:
        """A result decided by the target's conditions (ok when there are none), unless the
        kind's own `verdict` (error class, text) failed it first; `latency` is from `started`
        unless the kind measured it itself; `degraded` holds only for a result that is ok."""
        if latency is None:
            latency = time.perf_counter() - started
        context.response_time_ms = latency * 1000
        if isinstance(domain := DOMAIN_EXPIRY.get(), str):
            context.reasons[rdap.PLACEHOLDER] = domain
        elif domain is not None:
            context.values[rdap.PLACEHOLDER] = domain - timestamp
        outcomes: tuple[ConditionOutcome, ...] = ()
        if target.conditions:
            outcomes = tuple(condition.evaluate(context) for condition in target.conditions)
            failed = [outcome for outcome in outcomes if not outcome.passed]
            if verdict is None and failed:
                verdict = (ErrorClass.CONDITION_FAILED, describe_failed(failed))
        return ProbeResult(
            region=target.region,
            endpoint=target.name,
            kind=target.kind,
            ok=verdict is None,
            latency=latency,
            timestamp=timestamp,
            error=verdict[0] if verdict else None,
            error_text=verdict[1] if verdict else None,
            conditions=outcomes,
            degraded=degraded if verdict is None else None,
            **fields,
        )


async def _domain_expiry(target: Endpoint) -> float | str:
    """When the checked name's registration expires, or why that is unknown."""
    host = rdap.host_of(target.settings)
    options = getattr(target.settings, "rdap", None) or rdap.RdapOptions()
    if host is None:
        return "this check names no host"
    try:
        return await rdap.registration_expiry(host, options, target.timeout)
    except rdap.RdapError as exc:
        return str(exc)
    except Exception as exc:  # never raise to the scheduler
        return f"RDAP lookup failed: {type(exc).__name__}"


def describe_failed(failed: list[ConditionOutcome]) -> str:
    first = failed[0]
    text = f"condition {first.condition!r} failed"
    if first.detail:
        text += f" ({first.detail})"
    if len(failed) > 1:
        text += f", and {len(failed) - 1} more"
    return text


# getaddrinfo's codes in the words a user reads; others keep the resolver's own text.
_RESOLVER_REASONS = {
    socket.EAI_NONAME: "no such host",
    socket.EAI_AGAIN: "temporary resolver failure",
    **{
        getattr(socket, code): "no address of the requested family"
        for code in ("EAI_NODATA", "EAI_ADDRFAMILY")  # glibc only
        if hasattr(socket, code)
    },
}


def resolve_failure(host: str, exc: OSError) -> str:
    """One wording for a failed lookup whatever the probe kind: it always names the host."""
    reason = _RESOLVER_REASONS.get(exc.errno or 0, exc.strerror or str(exc) or "failed")
    return f"could not resolve {host}: {reason}"


def _target_host(target: Endpoint) -> str | None:
    address = getattr(target.settings, "address", None)
    return address[0] if address else getattr(target.settings, "hostname", None)


# errnos that say this machine, not the target, ran short: the check could not be made.
PROBER_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def classify_exception(exc: BaseException) -> tuple[ErrorClass, str]:
    """Map a socket-level exception to an error class and a short, URL-free message."""
    if isinstance(exc, MemoryError):
        return ErrorClass.PROBER, "out of memory in the prober"
    if isinstance(exc, OSError) and exc.errno in PROBER_ERRNOS:
        return ErrorClass.PROBER, f"{exc.strerror or type(exc).__name__} (in the prober)"
    if isinstance(exc, TimeoutError):
        return ErrorClass.TIMEOUT, "timed out"
    if isinstance(exc, socket.gaierror):
        return ErrorClass.DNS, f"name resolution failed: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ErrorClass.TLS, f"certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return ErrorClass.TLS, f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return ErrorClass.CONNECTION_REFUSED, "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ErrorClass.CONNECTION_RESET, "connection reset by peer"
    if isinstance(exc, OSError):
        if exc.errno == errno.ECONNREFUSED:
            return ErrorClass.CONNECTION_REFUSED, "connection refused"
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return ErrorClass.CONNECTION_RESET, "connection reset by peer"
        if exc.errno in (errno.ETIMEDOUT,):
            return ErrorClass.TIMEOUT, "connect timed out"
        return ErrorClass.NETWORK, exc.strerror or type(exc).__name__
    return ErrorClass.INTERNAL, f"{type(exc).__name__}: {exc}"
