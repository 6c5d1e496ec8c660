"""What one alert notification tells people: a title that fits a phone's lock screen and a body
someone can act on without opening anything else.

The body says where (region, endpoint, vantage), what is wrong (the error class and text, or the
failed conditions), the value against its threshold, since when (or, on a resolve, how long it
lasted), and links to the endpoint's page and the runbook. Built from values; rendered the same
for Slack, email, PagerDuty and Alertmanager's annotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from healthcheck.durations import format_duration
from healthcheck.labels import Labels
from healthcheck.result import ProbeResult

# A lock screen shows about 60 characters of a notification's title before it cuts.
TITLE_LIMIT = 60
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class AlertMessage:
    headline: str  # FIRING, ESCALATED, STILL FIRING, RESOLVED
    severity: str
    rule: str
    target: str  # region/endpoint, a region, or the daemon
    summary: str  # the rule's own sentence
    region: str
    endpoint: str | None  # None for a region's or the daemon's alert
    since: float  # when the condition started holding
    now: float
    resolved: bool = False
    lasted: float | None = None  # on a resolve: from the start to the resolve
    value: str | None = None  # what was measured ...
    threshold: str | None = None  # ... and what it was held to
    latest: ProbeResult | None = None  # the endpoint's last check
    vantage: str | None = None
    link: str | None = None  # the endpoint's page on the status page
    runbook: str | None = None
    labels: Labels = ()
    # Alerts held back because this one fires (alert dependencies): listed, never sent alone.
    held_dependants: tuple[str, ...] = ()

    def title(self) -> str:
        """`[FIRING:critical] endpoint_down eu-west/api`, at most TITLE_LIMIT characters: a
        long target is cut in the middle, keeping its start and its end."""
        head = f"[{self.headline}:{self.severity}] {self.rule} "
        return shorten(head + shorten(self.target, TITLE_LIMIT - len(head)), TITLE_LIMIT)

    def body(self) -> str:
        lines = [self.summary]
        where = f"Region: {self.region}" if self.region else "Region: -"
        if self.endpoint is not None:
            where += f" · Endpoint: {self.endpoint}"
        lines.append(where)
        latest = self.latest
        if latest is not None and not latest.ok and not self.resolved:
            error = latest.error.value if latest.error is not None else "failed"
            text = f": {latest.error_text}" if latest.error_text else ""
            lines.append(f"Error: {error}{text}")
            failed = [c for c in latest.conditions if not c.passed]
            for outcome in failed:
                seen = f" (seen: {outcome.detail})" if outcome.detail else ""
                lines.append(f"Failed condition: {outcome.condition}{seen}")
        if self.value is not None:
            against = f" (threshold: {self.threshold})" if self.threshold else ""
            lines.append(f"Value: {self.value}{against}")
        started = _moment(self.since)
        if self.resolved:
            lasted = self.lasted if self.lasted is not None else self.now - self.since
            lines.append(f"Lasted: {format_duration(max(lasted, 0.0))} (since {started})")
        else:
            lines.append(f"Since: {started} ({format_duration(max(self.now - self.since, 0.0))})")
        if self.link:
            lines.append(f"Status page: {self.link}")
        if self.runbook:
            lines.append(f"Runbook: {self.runbook}")
        if self.labels:
            lines.append("Labels: " + ", ".join(f"{k}={v}" for k, v in self.labels))
        if self.held_dependants:
            lines.append(
                f"Held dependants ({len(self.held_dependants)}, not sent on their own): "
                + ", ".join(self.held_dependants)
            )
        if self.vantage:
            lines.append(f"(seen from vantage {self.vantage})")
        return "\n".join(lines)


def endpoint_link(public_url: str | None, region: str, endpoint: str | None) -> str | None:
    """{public_url}/endpoints/{region}/{name}: the endpoint's page; the status page itself
    for a region's alert."""
    if not public_url:
        return None
    base = public_url.rstrip("/")
    return f"{base}/endpoints/{region}/{endpoint}" if endpoint is not None else f"{base}/"


def shorten(text: str, room: int) -> str:
    """`text` in at most `room` characters, cut in the middle."""
    if len(text) <= room:
        return text
    if room <= 1:
        return ELLIPSIS[: max(room, 0)]
    keep = room - 1
    front = (keep + 1) // 2
    return text[:front] + ELLIPSIS + text[len(text) - (keep - front) :]


def _moment(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
