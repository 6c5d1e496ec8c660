"""Alert rules: each turns what the daemon observed into a Verdict per target. Pure functions.

Counting rules (endpoint down) keep a small tally per endpoint, fed one result at a time; the
rest judge from values handed in (the latest results of a region, a certificate's expiry).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice, takewhile

from alerting.state import Severity, Verdict
from healthcheck.result import ProbeResult
from healthcheck.result import regional_failure as all_down

DAY = 86400.0


@dataclass(slots=True)
class Streak:
    """One endpoint's latest check outcomes (True: failed), newest last, and whether it
    counts as down."""

    # A list, not a deque: a deque holds a 64-slot block from birth (~760 bytes), and there is
    # one of these per endpoint (20,000 endpoints: 14 MB); it keeps a few outcomes.
    recent: list[bool] = field(default_factory=list)
    down: bool = False

    def failed_of_last(self, n: int) -> int:
        return sum(islice(reversed(self.recent), n))

    def passed_of_last(self, n: int) -> int:
        return min(n, len(self.recent)) - self.failed_of_last(n)

    def encode(self) -> str:
        """The outcomes as text, oldest first (F failed, S passed): stored, so a restart
        carries the window on."""
        return "".join("F" if failed else "S" for failed in self.recent)

    @classmethod
    def decode(cls, text: str, down: bool) -> Streak:
        return cls([c == "F" for c in text], down)


def endpoint_down(
    streak: Streak,
    result: ProbeResult,
    failure_threshold: int = 3,
    success_threshold: int = 2,
    failure_window: int | None = None,
    success_window: int | None = None,
) -> Verdict:
    """Down once `failure_threshold` of the last `failure_window` checks failed; up again only
    once `success_threshold` of the last `success_window` passed. A window of None is its
    threshold: that many in a row."""
    advance(streak, result.ok, failure_threshold, success_threshold, failure_window, success_window)
    return down_verdict(
        streak, result, failure_threshold, success_threshold, failure_window, success_window
    )


def advance(
    streak: Streak,
    ok: bool,
    failure_threshold: int = 3,
    success_threshold: int = 2,
    failure_window: int | None = None,
    success_window: int | None = None,
) -> bool:
    """The streak after one more check (endpoint_down's count, without its verdict): whether
    the endpoint now counts as down."""
    recent = streak.recent
    recent.append(not ok)
    keep = max(failure_window or failure_threshold, success_window or success_threshold)
    if len(recent) > keep:
        del recent[: len(recent) - keep]
    if ok:
        window = success_window or success_threshold
        if streak.down and streak.passed_of_last(window) >= success_threshold:
            streak.down = False
    else:
        window = failure_window or failure_threshold
        if streak.failed_of_last(window) >= failure_threshold:
            streak.down = True
    return streak.down


def down_verdict(
    streak: Streak,
    result: ProbeResult,
    failure_threshold: int = 3,
    success_threshold: int = 2,
    failure_window: int | None = None,
    success_window: int | None = None,
) -> Verdict:
    """endpoint_down's verdict on a streak `advance` has taken `result` into."""
    reason = result.error_text or (result.error.value if result.error else "failed")
    if result.ok:
        window = success_window or success_threshold
        value = _counted(streak, False, window, success_threshold, "good")
        threshold = f"{success_threshold} to clear"
    else:
        window = failure_window or failure_threshold
        value = _counted(streak, True, window, failure_threshold, "failed")
        threshold = str(failure_threshold)
    return Verdict(
        streak.down,
        Severity.CRITICAL,
        f"{result.target_id} is down: {reason}"
        if streak.down
        else f"{result.target_id} is up again",
        value,
        threshold,
    )


def regional_failure(region: str, latest: Iterable[ProbeResult]) -> Verdict:
    """Every endpoint of the region failing its last check (the rule's `for` adds the 30 s)."""
    results = list(latest)
    down = [r for r in results if not r.ok]
    active = all_down(r.ok for r in results)
    names = ", ".join(sorted(r.endpoint for r in down))
    return Verdict(
        active,
        Severity.CRITICAL,
        f"regional failure in {region}: all {len(results)} endpoints down ({names})"
        if active
        else f"{region} is answering again",
        f"{len(down)} of {len(results)} endpoints down",
        "all of them",
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
    limit = critical_days if severity is Severity.CRITICAL else warning_days
    return Verdict(
        True,
        severity,
        f"{target}: TLS certificate {when}",
        f"{days:.1f} days left",
        f"{severity.value} under {limit:g} days",
    )


def latency_p95(
    target: str,
    latencies: list[float],
    warning: float | None,
    critical: float | None,
    min_checks: int = 5,
    min_slow: int = 3,
) -> Verdict | None:
    """p95 of successful checks in the window over the endpoint's thresholds, with at least
    `min_slow` checks over that threshold; None if too few checks to say."""
    if len(latencies) < min_checks or (warning is None and critical is None):
        return None
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    text = f"{target}: p95 latency {p95 * 1000:.0f}ms"

    def over(threshold: float) -> bool:
        # At 30 s and a 5 min window the p95 of 10 checks is their slowest: one slow check
        # (121 ms, the first after a restart) would hold it up for the whole window.
        if p95 <= threshold:
            return False
        return len(ordered) - bisect_right(ordered, threshold) >= min_slow

    value = f"p95 {p95 * 1000:.0f}ms"
    if critical is not None and over(critical):
        limit = f"critical {critical * 1000:g}ms"
        return Verdict(True, Severity.CRITICAL, f"{text} over {limit}", value, limit)
    if warning is not None and over(warning):
        limit = f"warning {warning * 1000:g}ms"
        return Verdict(True, Severity.WARNING, f"{text} over {limit}", value, limit)
    return Verdict(False, Severity.WARNING, f"{text}, back under its thresholds", value)


def error_rate(
    target: str,
    outcomes: list[bool],
    warning: float,
    critical: float,
    min_checks: int,
    min_failures: int = 3,
) -> Verdict | None:
    """Share of failed checks in the window; None while there are too few checks to say, and
    never active on fewer than `min_failures` failures: one failure in 20 checks is 5 %."""
    if len(outcomes) < min_checks:
        return None
    failures = outcomes.count(False)
    rate = failures / len(outcomes)
    text = f"{target}: error rate {rate:.2%} over {len(outcomes)} checks"
    value = f"{rate:.2%} ({failures} of {len(outcomes)} checks failed)"
    if failures >= min_failures and rate >= critical:
        return Verdict(True, Severity.CRITICAL, text, value, f"critical {critical:.2%}")
    if failures >= min_failures and rate >= warning:
        return Verdict(True, Severity.WARNING, text, value, f"warning {warning:.2%}")
    return Verdict(False, Severity.WARNING, text, value)


def uptime_below(
    target: str,
    ratio: float | None,
    checks: float,
    warning: float,
    critical: float,
    min_checks: int = 120,
) -> Verdict | None:
    """Rolling 24h uptime under the warning or critical floor; None on too little data."""
    if ratio is None or checks < min_checks:
        return None
    text = f"{target}: 24h uptime {ratio:.2%}"
    value = f"24h uptime {ratio:.2%}"
    if ratio < critical:
        floor = f"critical under {critical:.0%}"
        return Verdict(True, Severity.CRITICAL, f"{text}, under {critical:.0%}", value, floor)
    if ratio < warning:
        floor = f"warning under {warning:.0%}"
        return Verdict(True, Severity.WARNING, f"{text}, under {warning:.0%}", value, floor)
    return Verdict(False, Severity.WARNING, text, value)


def flapping(target: str, changes: int, threshold: int, window: float) -> Verdict:
    """Too many status changes in the window: reported once instead of a page per change."""
    minutes = window / 60
    return Verdict(
        changes >= threshold,
        Severity.WARNING,
        f"{target} is flapping: {changes} status changes in {minutes:g} minutes",
        f"{changes} status changes in {minutes:g} minutes",
        f"{threshold}",
    )


@dataclass(frozen=True, slots=True)
class SelfCheck:
    """What the daemon knows of its own health at one evaluation."""

    lag_p99: float | None = None  # p99 schedule lag of recent checks, seconds
    storage_down_for: float | None = None  # seconds results have not reached the database
    prober_faults: int = 0  # checks lately that failed for the prober's own trouble
    prober_fault: str | None = None  # the latest of them, for the notification


def daemon_health(check: SelfCheck, lag_limit: float, storage_limit: float) -> Verdict:
    """The daemon's own health: checks starting late, results not reaching the database, or
    checks it could not make for lack of its own resources (file descriptors, memory)."""
    problems = []
    if check.lag_p99 is not None and check.lag_p99 > lag_limit:
        problems.append(
            f"checks start {check.lag_p99 * 1000:.0f}ms late (p99; limit {lag_limit * 1000:g}ms)"
        )
    if check.storage_down_for is not None and check.storage_down_for >= storage_limit:
        problems.append(f"storage unwritable for {check.storage_down_for:.0f}s")
    if check.prober_faults:
        problems.append(
            f"{check.prober_faults} check(s) in the last minute could not be made for the "
            f"prober's own trouble (latest {check.prober_fault}); their targets were not judged"
        )
    return Verdict(
        bool(problems),
        Severity.WARNING,
        "healthcheck itself: " + ("; ".join(problems) if problems else "healthy again"),
    )


def _counted(streak: Streak, failed: bool, window: int, threshold: int, what: str) -> str:
    """A streak's measure as a message shows it: "3 failed checks in a row" or, with a
    window wider than its threshold, "3 failed of the last 5 checks"."""
    if window == threshold:
        in_a_row = len(list(takewhile(lambda outcome: outcome is failed, reversed(streak.recent))))
        return f"{in_a_row} {what} checks in a row"
    counted = streak.failed_of_last(window) if failed else streak.passed_of_last(window)
    return f"{counted} {what} of the last {window} checks"
