"""Alert rules: each turns what the daemon observed into a Verdict per target. Pure functions.

Counting rules (endpoint down) keep a small tally per endpoint, fed one result at a time; the
rest judge from values handed in (the latest results of a region, a certificate's expiry).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from alerting.state import Severity, Verdict
from healthcheck.result import ProbeResult

DAY = 86400.0


@dataclass(slots=True)
class Streak:
    """Consecutive failures and successes of one endpoint, and whether it counts as down."""

    failures: int = 0
    successes: int = 0
    down: bool = False


def endpoint_down(
    streak: Streak, result: ProbeResult, failure_threshold: int = 3, success_threshold: int = 2
) -> Verdict:
    """Down after N failed checks in a row; up again only after M successes in a row."""
    if result.ok:
        streak.successes += 1
        streak.failures = 0
        if streak.down and streak.successes >= success_threshold:
            streak.down = False
    else:
        streak.failures += 1
        streak.successes = 0
        if streak.failures >= failure_threshold:
            streak.down = True
    reason = result.error_text or (result.error.value if result.error else "failed")
    return Verdict(
        streak.down,
        Severity.CRITICAL,
        f"{result.target_id} is down: {reason}"
        if streak.down
        else f"{result.target_id} is up again",
    )


def regional_failure(region: str, latest: Iterable[ProbeResult]) -> Verdict:
    """Every endpoint of the region failing its last check (the rule's `for` adds the 30 s)."""
    results = list(latest)
    down = [r for r in results if not r.ok]
    active = bool(results) and len(down) == len(results)
    names = ", ".join(sorted(r.endpoint for r in down))
    return Verdict(
        active,
        Severity.CRITICAL,
        f"regional failure in {region}: all {len(results)} endpoints down ({names})"
        if active
        else f"{region} is answering again",
    )


def certificate_expiry(
    target: str,
    expires: float | None,
    now: float,
    warning_days: float = 14,
    critical_days: float = 3,
) -> Verdict:
    """Expiring within `critical_days`: critical; within `warning_days`: a warning."""
    if expires is None:
        return Verdict(False, Severity.WARNING, f"{target}: no certificate seen")
    days = (expires - now) / DAY
    if days < critical_days:
        severity = Severity.CRITICAL
    elif days < warning_days:
        severity = Severity.WARNING
    else:
        return Verdict(
            False, Severity.WARNING, f"{target}: certificate valid for {days:.0f} more days"
        )
    when = f"expires in {days:.1f} days" if days >= 0 else f"expired {-days:.1f} days ago"
    return Verdict(True, severity, f"{target}: TLS certificate {when}")
