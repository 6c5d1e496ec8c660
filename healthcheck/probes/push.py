"""`kind: push`: heartbeats from jobs that run elsewhere (backups, cron jobs, batch pipelines).

The job pings `/api/v1/push/{token}` (healthcheck.push_api stores the ping); a check of the
endpoint judges the last stored ping: none within `interval` + `grace` is `no_heartbeat`, a
ping with `status=down` is `reported_down` with the job's message. Nothing is probed.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.durations import format_duration
from healthcheck.probes import heartbeats
from healthcheck.probes.base import Clock, Probe
from healthcheck.probes.plugin import error_class
from healthcheck.result import EndpointId, ErrorClass, ProbeResult
from healthcheck.secrets import Secret
from healthcheck.targets import Endpoint, ProbeSettings

# Grace when none is set: a tenth of the interval, and never under this (cron's minute, a
# job's start-up).
MIN_DEFAULT_GRACE = 30.0
# A missed ping is noticed within this, however long the interval (a daily job's is a day).
LONGEST_CADENCE = 60.0
MIN_TOKEN = 16
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")

NO_HEARTBEAT = error_class("no_heartbeat", "the job did not ping within interval and grace", "push")
REPORTED_DOWN = error_class("reported_down", "the job pinged with status=down", "push")


def _token(value: object) -> Secret:
    """A secret of at least MIN_TOKEN URL-safe characters; errors never quote it."""
    token = schema.secret(value)
    revealed = token.reveal()
    if len(revealed) < MIN_TOKEN or not _TOKEN.fullmatch(revealed):
        raise ValueError(
            f"expected a token of at least {MIN_TOKEN} letters, digits, '-', '_', '.' or '~' "
            f"(e.g. `openssl rand -hex 16`), got {len(revealed)} characters"
            + ("" if _TOKEN.fullmatch(revealed) else " with others among them")
        )
    return token


@dataclass(frozen=True, slots=True)
class PushSettings(ProbeSettings):
    token: Secret
    grace: float | None


def grace_of(target: Endpoint) -> float:
    return _grace(target.settings, target.interval)


def _grace(settings: ProbeSettings, interval: float) -> float:
    """The grace set, else the default: 10% of the interval, at least MIN_DEFAULT_GRACE."""
    grace = settings.narrow(PushSettings).grace
    return grace if grace is not None else max(interval / 10, MIN_DEFAULT_GRACE)


class PushProbe(Probe):
    kind = "push"
    settings = PushSettings
    options = {
        "token": schema.Option(_token, help="the secret in the ping URL; from ${ENV}"),
        "grace": schema.Option(
            schema.optional(schema.duration_up_to(schema.DAY)),
            None,
            "how late a ping may be (default: 10% of the interval, at least 30s)",
        ),
    }
    placeholders = frozenset({"RESPONSE_TIME", "BODY"})
    errors = (
        NO_HEARTBEAT,
        REPORTED_DOWN,
        ErrorClass.CONDITION_FAILED,
    )

    def __init__(self, clock: Clock = time.time, database: str | None = None) -> None:
        super().__init__(clock, database)
        # When this process began watching each endpoint: before any ping is stored, it has
        # until interval + grace from then.
        self._watching: dict[EndpointId, float] = {}
        # The pings are read on one kept connection, in a thread of its own.
        self._reader = heartbeats.Reader()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="push-reads")

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._reader.close)
        self._thread.shutdown(wait=False)

    @classmethod
    def cadence(cls, settings: ProbeSettings, interval: float) -> float | None:
        return min(interval, _grace(settings, interval), LONGEST_CADENCE)

    @classmethod
    def effective(cls, settings: ProbeSettings, interval: float) -> ProbeSettings:
        return replace(settings.narrow(PushSettings), grace=_grace(settings, interval))

    async def run(self, target: Endpoint) -> ProbeResult:
        """One look at the stored ping: nothing to retry."""
        return await self._bounded_attempt(target, target.timeout)

    async def attempt(self, target: Endpoint) -> ProbeResult:
        started = time.perf_counter()
        now = self.clock()
        since = self._watching.setdefault(target.id, now)
        if self.database is None:
            return self.failed(target, ErrorClass.PROBER, "no database to read pings from", started)
        try:
            ping = await asyncio.get_running_loop().run_in_executor(
                self._thread, self._reader.last, self.database, target.region, target.name
            )
        except sqlite3.Error as exc:  # our own file: no verdict about the job
            return self.failed(target, ErrorClass.PROBER, f"cannot read pings: {exc}", started)
        due = target.interval + grace_of(target)
        expected = f"expected every {format_duration(target.interval)}"
        if ping is None:
            if now - since <= due:
                waiting = f"no ping yet; {expected} (+{format_duration(grace_of(target))} grace)"
                return self.judged(
                    target, ConditionContext(), started, now, latency=0.0, degraded=waiting
                )
            text = f"no ping since watching began {_ago(now - since)}; {expected}"
            return self.failed(target, NO_HEARTBEAT, text, started, now)
        latency = (ping.latency_ms or 0.0) / 1000
        if now - ping.ts > due:
            text = f"last ping {_ago(now - ping.ts)}; {expected}"
            return self.failed(target, NO_HEARTBEAT, text, started, now)
        context = ConditionContext(body=(ping.message or "").encode())
        verdict = None
        if not ping.ok:
            said = f": {ping.message}" if ping.message else ""
            verdict = (
                REPORTED_DOWN,
                f"the job reported down {_ago(now - ping.ts)}{said}",
            )
        return self.judged(target, context, started, now, latency=latency, verdict=verdict)


def _ago(seconds: float) -> str:
    return f"{format_duration(max(1.0, round(seconds)))} ago"
