"""The alert state machine and the first rules, as plain functions over values."""

from __future__ import annotations

import pytest

from alerting.rules import Streak, certificate_expiry, endpoint_down, regional_failure
from alerting.state import Event, Phase, Severity, Verdict, step
from healthcheck.result import ErrorClass, ProbeResult

UP = Verdict(False, summary="fine")
DOWN = Verdict(True, Severity.CRITICAL, "down")


def run(verdicts, hold=0.0, repeat=None, start=0.0, every=10.0):
    """Feed (verdict) per tick; return the events with their times and the final state."""
    state, events = None, []
    for i, verdict in enumerate(verdicts):
        now = start + i * every
        state, event = step(state, verdict, now, rule="r", target="t", hold=hold, repeat=repeat)
        if event:
            events.append((now, event))
    return state, events


def test_fires_at_once_without_hold_and_resolves() -> None:
    state, events = run([UP, DOWN, DOWN, UP, UP])
    assert events == [(10.0, Event.FIRED), (30.0, Event.RESOLVED)]
    assert state.phase is Phase.RESOLVED


def test_hold_keeps_it_pending_and_a_blip_never_fires() -> None:
    _, events = run([DOWN, DOWN, UP, UP], hold=30)
    assert events == []
    _, events = run([DOWN, DOWN, DOWN, DOWN, UP], hold=30)
    assert events == [(30.0, Event.FIRED), (40.0, Event.RESOLVED)]


def test_reminders_while_firing_and_escalation() -> None:
    warning = Verdict(True, Severity.WARNING, "slow")
    _, events = run([warning] * 8 + [DOWN], repeat=30)
    assert events == [
        (0.0, Event.FIRED),
        (30.0, Event.REMINDER),
        (60.0, Event.REMINDER),
        (80.0, Event.ESCALATED),
    ]


def test_a_clock_stepped_back_puts_off_neither_a_hold_nor_a_reminder() -> None:
    state, event = step(None, DOWN, 1000.0, rule="r", target="t", hold=30)
    assert event is None and state.phase is Phase.PENDING
    state, event = step(state, DOWN, 1000.0 - 3600, rule="r", target="t", hold=30)  # back 1 h
    assert event is None and state.since == 1000.0 - 3600
    state, event = step(state, DOWN, 1000.0 - 3600 + 30, rule="r", target="t", hold=30)
    assert event is Event.FIRED  # 30 s after the step, not an hour and 30 s
    later = 1000.0 - 3600 + 30
    state, event = step(state, DOWN, later - 3600, rule="r", target="t", repeat=60)
    assert event is None and state.last_sent == later - 3600
    state, event = step(state, DOWN, later - 3600 + 60, rule="r", target="t", repeat=60)
    assert event is Event.REMINDER


def test_fires_again_after_resolving() -> None:
    _, events = run([DOWN, UP, DOWN])
    assert [e for _, e in events] == [Event.FIRED, Event.RESOLVED, Event.FIRED]


def result(ok: bool, error: ErrorClass | None = None) -> ProbeResult:
    return ProbeResult(
        "eu", "api", "http", ok, 0.01, 0.0, error=error, error_text="timed out" if error else None
    )


@pytest.mark.parametrize(
    ("outcomes", "down_after_each"),
    [
        ("FFF", [False, False, True]),
        ("FFSFF", [False, False, False, False, False]),  # a success breaks the streak
        ("FFFSFS", [False, False, True, True, True, True]),  # one success is not recovery
        ("FFFSS", [False, False, True, True, False]),  # two in a row are
    ],
)
def test_endpoint_down_hysteresis(outcomes: str, down_after_each: list[bool]) -> None:
    streak = Streak()
    seen = [
        endpoint_down(streak, result(c == "S", None if c == "S" else ErrorClass.TIMEOUT)).active
        for c in outcomes
    ]
    assert seen == down_after_each


def test_endpoint_down_summary_names_the_reason() -> None:
    streak = Streak()
    for _ in range(3):
        verdict = endpoint_down(streak, result(False, ErrorClass.TIMEOUT))
    assert verdict.summary == "eu/api is down: timed out"


def test_regional_failure_needs_every_endpoint_down() -> None:
    a = ProbeResult("eu", "a", "http", False, 0.1, 0.0)
    b = ProbeResult("eu", "b", "tcp", False, 0.1, 0.0)
    c = ProbeResult("eu", "c", "dns", True, 0.1, 0.0)
    assert regional_failure("eu", [a, b]).active
    assert "all 2 endpoints down (a, b)" in regional_failure("eu", [a, b]).summary
    assert not regional_failure("eu", [a, b, c]).active
    assert not regional_failure("eu", []).active


@pytest.mark.parametrize(
    ("days_left", "active", "severity"),
    [
        (30, False, None),
        (10, True, Severity.WARNING),
        (2, True, Severity.CRITICAL),
        (-1, True, Severity.CRITICAL),
    ],
)
def test_certificate_expiry(days_left, active, severity) -> None:
    verdict = certificate_expiry("eu/cert", days_left * 86400.0, 0.0)
    assert verdict.active is active
    if active:
        assert verdict.severity is severity
    assert certificate_expiry("eu/cert", None, 0.0).active is False
