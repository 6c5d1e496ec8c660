"""A fixed timeline for storage tests: a "now" at 10:30 UTC and checks at chosen instants."""

from __future__ import annotations

from healthcheck.result import ErrorClass, ProbeResult, Status

DAY = 86400
HOUR = 3600
D = 20_000 * DAY  # midnight UTC of "today"
NOW = D + 10 * HOUR + 1800  # 10:30 today: every window edge falls mid-hour


def check(
    ts: float, ok: bool = True, latency_ms: float = 10.0, endpoint: str = "api", region: str = "eu"
) -> tuple[ProbeResult, Status]:
    """One stored check as the daemon would hand it to the writer."""
    result = ProbeResult(
        region,
        endpoint,
        "http",
        ok,
        latency_ms / 1000,
        ts,
        error=None if ok else ErrorClass.TIMEOUT,
        error_text=None if ok else "no answer within 5s",
    )
    return result, Status.HEALTHY if ok else Status.UNHEALTHY
