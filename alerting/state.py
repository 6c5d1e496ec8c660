"""The alert state machine per (rule, target): inactive → pending → firing → resolved.

Pure: it takes whether the rule's condition holds now and the time, and says what changed.
Persisting the states (so a restart neither re-pages nor forgets) is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Phase(StrEnum):
    PENDING = "pending"  # the condition holds, not yet for the rule's `for` duration
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


class Event(StrEnum):
    """What a step asks to be told to people."""

    FIRED = "fired"
    ESCALATED = "escalated"  # still firing, now at a higher severity
    REMINDER = "reminder"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertState:
    rule: str
    target: str
    phase: Phase
    severity: Severity
    since: float  # when the condition started holding
    last_change: float
    summary: str
    last_sent: float | None = None  # when people were last told (fired, reminder)

    @property
    def key(self) -> str:
        """A stable identity for deduplication downstream (PagerDuty, Alertmanager)."""
        return f"{self.rule}:{self.target}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A rule's judgement of one target now: does its condition hold, and how badly."""

    active: bool
    severity: Severity = Severity.CRITICAL
    summary: str = ""
    # What was measured and the threshold it was held to, for the notification
    # ("p95 612ms", "critical 500ms"); None where the rule has no number to show.
    value: str | None = None
    threshold: str | None = None


def step(
    state: AlertState | None,
    verdict: Verdict,
    now: float,
    *,
    rule: str,
    target: str,
    hold: float = 0.0,
    repeat: float | None = None,
) -> tuple[AlertState | None, Event | None]:
    """The next state and the event to send, if any. `hold` is the rule's `for` duration.

    Times are wall-clock (they are stored and shown); one in the future means the clock
    stepped back, and counts from now: a hold or a reminder is not put off by the step."""
    if state is not None and (state.since > now or (state.last_sent or 0.0) > now):
        state = replace(
            state,
            since=min(state.since, now),
            last_sent=None if state.last_sent is None else min(state.last_sent, now),
        )
    if not verdict.active:
        if state is None or state.phase is Phase.RESOLVED:
            return state, None
        if state.phase is Phase.PENDING:
            return None, None  # never fired: forget it quietly
        resolved = replace(
            state, phase=Phase.RESOLVED, last_change=now, summary=verdict.summary or state.summary
        )
        return resolved, Event.RESOLVED

    if state is None or state.phase is Phase.RESOLVED:
        state = AlertState(rule, target, Phase.PENDING, verdict.severity, now, now, verdict.summary)
        if hold > 0:
            return state, None
    if state.phase is Phase.PENDING:
        if now - state.since < hold:
            return replace(state, severity=verdict.severity, summary=verdict.summary), None
        fired = replace(
            state,
            phase=Phase.FIRING,
            severity=verdict.severity,
            summary=verdict.summary,
            last_change=now,
            last_sent=now,
        )
        return fired, Event.FIRED
    # firing
    if verdict.severity.rank > state.severity.rank:
        escalated = replace(
            state,
            severity=verdict.severity,
            summary=verdict.summary,
            last_change=now,
            last_sent=now,
        )
        return escalated, Event.ESCALATED
    current = replace(state, severity=verdict.severity, summary=verdict.summary)
    if repeat is not None and state.last_sent is not None and now - state.last_sent >= repeat:
        return replace(current, last_sent=now), Event.REMINDER
    return current, None
