"""The evaluator fed results directly: per-endpoint overrides, holds, reminders, flapping."""

from __future__ import annotations

import json

from alerting.evaluator import CANARY, ENDPOINT_DOWN, FLAPPING, REGIONAL_FAILURE, Evaluator
from alerting.state import Event, Phase
from healthcheck.config import parse_config
from healthcheck.result import ErrorClass, ProbeResult, Status

T0 = 1_800_000_000.0


def evaluator(**extra):
    document = {
        "alerting": {"repeat": {"critical": "1m"}, "rules": {"regional_failure_for": "30s"}},
        "defaults": {"alerts": {"failure_threshold": 3}},
        "regions": {
            "eu": {
                "defaults": {"alerts": {"failure_threshold": 2}},
                "endpoints": [
                    {"name": "api", "url": "http://x/"},
                    {"name": "batch", "url": "http://x/", "alerts": {"enabled": False}},
                ],
            },
            "us": {
                "endpoints": [
                    {"name": "api", "url": "http://x/", "alerts": {"failure_threshold": 4}}
                ]
            },
        },
        **extra,
    }
    config = parse_config(json.dumps(document), "test", {})
    return Evaluator({e.id: e for e in config.endpoints()}, config.alerting)


def feed(ev: Evaluator, now: float, *results: tuple[str, bool]) -> list[tuple[str, str, Event]]:
    for target, ok in results:
        region, endpoint = target.split("/")
        result = ProbeResult(
            region, endpoint, "http", ok, 0.01, now, error=None if ok else ErrorClass.TIMEOUT
        )
        ev.observe(result, Status.HEALTHY if ok else Status.UNHEALTHY)
    return [(c.state.rule, c.state.target, c.event) for c in ev.evaluate(now) if c.event]


def test_thresholds_follow_region_and_endpoint_overrides() -> None:
    ev = evaluator()
    events = []
    for i in range(4):
        events += [(i, e) for e in feed(ev, T0 + i, ("eu/api", False), ("us/api", False))]
    fired = {
        (target, i)
        for i, (rule, target, event) in events
        if rule == ENDPOINT_DOWN and event is Event.FIRED
    }
    assert fired == {("eu/api", 1), ("us/api", 3)}  # region default 2; endpoint override 4


def test_a_muted_endpoint_never_alerts_but_counts_for_its_region() -> None:
    ev = evaluator()
    for i in range(5):
        events = feed(ev, T0 + i, ("eu/batch", False))
        assert not [e for e in events if e[1] == "eu/batch"]
    feed(ev, T0 + 5, ("eu/api", False))
    assert ev.alerts[(REGIONAL_FAILURE, "eu")].phase is Phase.PENDING  # both endpoints down


def test_a_hold_completes_and_reminders_fall_due_without_new_results() -> None:
    ev = evaluator()
    feed(ev, T0, ("us/api", False))
    assert ev.alerts[(REGIONAL_FAILURE, "us")].phase is Phase.PENDING
    assert feed(ev, T0 + 29) == []
    assert feed(ev, T0 + 30) == [(REGIONAL_FAILURE, "us", Event.FIRED)]
    assert feed(ev, T0 + 60) == []
    assert feed(ev, T0 + 90) == [(REGIONAL_FAILURE, "us", Event.REMINDER)]  # repeat: 1m
    assert feed(ev, T0 + 91, ("us/api", True)) == [(REGIONAL_FAILURE, "us", Event.RESOLVED)]


def test_flapping_is_reported_once() -> None:
    ev = evaluator(alerting={"rules": {"flapping_changes": 4, "flapping_window": "10m"}})
    flaps = []
    for i in range(12):
        flaps += [e for e in feed(ev, T0 + i, ("eu/api", i % 2 == 0)) if e[0] == FLAPPING]
    assert flaps == [(FLAPPING, "eu/api", Event.FIRED)]


def test_restored_firing_alert_does_not_resolve_on_an_empty_streak() -> None:
    ev = evaluator()
    for i in range(3):
        feed(ev, T0 + i, ("eu/api", False))
    stored = {key: (state, True) for key, state in ev.alerts.items()}
    restarted = evaluator()
    restarted.restore(stored)
    assert feed(restarted, T0 + 10, ("eu/api", False)) == []  # still down: no resolve, no re-page
    assert feed(restarted, T0 + 11, ("eu/api", True)) == []  # one success is not recovery
    assert (ENDPOINT_DOWN, "eu/api", Event.RESOLVED) in feed(restarted, T0 + 12, ("eu/api", True))


def test_a_canary_with_wrong_output_pages_at_once_and_degraded_warns() -> None:
    ev = evaluator(regions={"gpu": {"endpoints": [{"name": "canary", "url": "http://x/"}]}})
    wrong = ProbeResult(
        "gpu",
        "canary",
        "onnx",
        False,
        0.01,
        T0,
        error=ErrorClass.WRONG_OUTPUT,
        error_text="max abs error 0.3",
    )
    ev.observe(wrong, Status.UNHEALTHY)
    changes = [(c.state.rule, c.state.severity.value, c.event) for c in ev.evaluate(T0) if c.event]
    assert (CANARY, "critical", Event.FIRED) in changes  # no streak needed
    ok = ProbeResult("gpu", "canary", "onnx", True, 0.01, T0 + 1)
    ev.observe(ok, Status.DEGRADED)
    changes = [
        (c.state.rule, c.state.severity.value, c.event) for c in ev.evaluate(T0 + 1) if c.event
    ]
    assert (
        CANARY,
        "warning",
        Event.FIRED,
    ) not in changes  # still firing: now a warning, no new page
    assert ev.alerts[(CANARY, "gpu/canary")].severity.value == "warning"
