"""A few days of stored history with one staged outage, written through the storage layer
(and the alert store and outbox), ending at a real `now` so a real daemon reads it as recent."""

from __future__ import annotations

from dataclasses import dataclass

from alerting.outbox import Notification, Outbox
from alerting.state import AlertState, Event, Phase, Severity
from alerting.store import save_changes
from healthcheck.result import ErrorClass, ProbeResult, Status
from storage.database_file import DatabaseFile
from storage.rollup import bucket_of
from storage.schema import connect
from storage.writer import write_batch

HOUR = 3600
STEP = 300  # one stored check every 5 minutes
OUTAGE_ERROR = "connection refused (staged outage)"


@dataclass(frozen=True, slots=True)
class Staged:
    now: float
    outage_start: float
    outage_end: float  # the first good check after it
    checks: int  # per endpoint
    failed: int  # per endpoint, all within the outage


def stage(path: str, now: float, endpoints: list[tuple[str, str]], days: int = 3) -> Staged:
    """`days` of checks for each (region, name), every STEP s up to `now`; between 5 h and
    4.5 h ago every one of them fails (a regional failure of each region staged), and a
    critical alert on the first endpoint fires then and resolves after, delivered by email."""
    start = bucket_of(now, HOUR) - days * 24 * HOUR
    outage_start = bucket_of(now, HOUR) - 5 * HOUR
    outage_end = outage_start + 1800
    batch = []
    checks = failed = 0
    ts = float(start)
    while ts < now - 1:
        down = outage_start <= ts < outage_end
        checks += 1
        failed += down
        for region, name in endpoints:
            latency_ms = 1000.0 if down else 20.0 + (int(ts // STEP) % 7) * 5
            result = ProbeResult(
                region,
                name,
                "http",
                not down,
                latency_ms / 1000,
                ts,
                error=ErrorClass.CONNECTION_REFUSED if down else None,
                error_text=OUTAGE_ERROR if down else None,
            )
            batch.append((result, Status.UNHEALTHY if down else Status.HEALTHY))
        ts += STEP
    db = connect(path)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        write_batch(db, batch, {})
    region, name = endpoints[0]
    target = f"{region}/{name}"
    fired = AlertState(
        "endpoint_down",
        target,
        Phase.FIRING,
        Severity.CRITICAL,
        outage_start,
        outage_start + 60,
        f"{target} is down: {OUTAGE_ERROR}",
        outage_start + 60,
    )
    resolved = AlertState(
        "endpoint_down",
        target,
        Phase.RESOLVED,
        Severity.CRITICAL,
        outage_start,
        outage_end,
        f"{target} is up again",
        outage_end,
    )
    save_changes(db, [(fired, Event.FIRED, True, region, None, ())], outage_start + 60)
    save_changes(db, [(resolved, Event.RESOLVED, True, region, None, ())], outage_end)
    db.conn.close()
    outbox = Outbox(DatabaseFile(path))
    for state, event, at in (
        (fired, Event.FIRED, outage_start + 60),
        (resolved, Event.RESOLVED, outage_end),
    ):
        note = Notification(
            "email",
            state.key,
            f"{event.value} {target}",
            state.summary,
            "failure",
            "critical",
            event.value,
        )
        outbox.put([note], at)
        pending = outbox.due("email", at)
        outbox.mark_sent(pending[-1].id, at + 2)
    outbox.close()
    return Staged(now, outage_start, outage_end, checks, failed)
