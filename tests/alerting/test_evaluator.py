"""The evaluator fed results directly: per-endpoint overrides, holds, reminders, flapping."""

from __future__ import annotations

import json

import pytest

from alerting.evaluator import (
    ENDPOINT_DOWN,
    ERROR_RATE,
    FLAPPING,
    HIGH_LATENCY,
    REGIONAL_FAILURE,
    UPTIME,
    Evaluator,
    _Recent,
)
from alerting.state import Event, Phase
from healthcheck.config import parse_config
from healthcheck.result import EndpointId, ErrorClass, ProbeResult, Status
from inference_probe.canary_plugin import CANARY, WRONG_OUTPUT

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
        error=WRONG_OUTPUT,
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


def feed_timed(ev: Evaluator, now: float, target: str, ok: bool, latency: float) -> list:
    """One check; the alerts that fired (reminders left out) as (rule, severity, event)."""
    region, endpoint = target.split("/")
    error = None if ok else ErrorClass.HTTP_STATUS
    ev.observe(ProbeResult(region, endpoint, "http", ok, latency, now, error=error), Status.HEALTHY)
    return fired(ev, now)


def fired(ev: Evaluator, now: float) -> list:
    changes = [c for c in ev.evaluate(now) if c.event is Event.FIRED]
    return [(c.state.rule, c.state.severity.value, c.event) for c in changes]


def error_rate_events(ev: Evaluator, checks: int, failing: set[int]) -> list:
    """One check of us/api a second (all inside the 5-minute window); `failing` are indexes."""
    events = []
    for i in range(checks):
        events += feed_timed(ev, T0 + i, "us/api", i not in failing, 0.01)
    return [(severity, event) for rule, severity, event in events if rule == ERROR_RATE]


@pytest.mark.parametrize(
    ("checks", "failing", "expected"),
    [
        (20, {10}, []),  # the incident: one 503 among 20 checks paged "error rate 5.00%"
        (150, {75}, []),  # enough checks, but one failure is a blip
        (150, {40, 80}, []),  # two are still too few to call a rate
        (150, {40, 80, 120}, [("critical", Event.FIRED)]),  # 3 of 121 checks: 2.5 %
        (60, {10, 20, 30, 40, 50}, []),  # a real rate, but too few checks to measure one
    ],
    ids=["one-in-20", "one-in-150", "two-in-150", "three-in-150", "five-in-60"],
)
def test_one_failure_never_pages_an_error_rate(checks, failing, expected) -> None:
    assert error_rate_events(evaluator(), checks, failing) == expected


def test_error_rate_guards_are_settings_and_old_configs_still_load() -> None:
    # error_rate_min_checks: 20 loaded before the guards; with min_failures 1 it pages as it did.
    rules = {"error_rate_min_checks": 20, "error_rate_min_failures": 1}
    ev = evaluator(alerting={"rules": rules})
    assert error_rate_events(ev, 20, {10}) == [("critical", Event.FIRED)]


def latency_events(ev: Evaluator, latencies: list[float]) -> list:
    """One check of us/api every 30 s (the shipped interval), then quiet ticks past the hold."""
    events = []
    for i, latency in enumerate(latencies):
        events += feed_timed(ev, T0 + 30 * i, "us/api", True, latency)
    end = T0 + 30 * len(latencies)
    for now in range(int(end), int(end) + 150, 10):
        events += fired(ev, now)
    return [(severity, event) for rule, severity, event in events if rule == HIGH_LATENCY]


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        # The incident: the first check after start-up read 121 ms; p95 of 10 checks is it.
        ([0.121] + [0.01] * 9, []),
        ([0.01] * 4 + [0.7] + [0.01] * 5, []),  # one slow check, critical-slow even
        ([0.01] * 4 + [0.2, 0.3, 0.2] + [0.01] * 3, [("warning", Event.FIRED)]),
        ([0.01] * 3 + [0.6] * 7, [("critical", Event.FIRED)]),
    ],
    ids=["slow-first-check", "one-slow-check", "three-slow-checks", "slow-endpoint"],
)
def test_one_slow_check_never_raises_high_latency(latencies, expected) -> None:
    assert latency_events(evaluator(), latencies) == expected


def test_latency_guards_are_settings() -> None:
    ev = evaluator(alerting={"rules": {"latency_min_checks": 5, "latency_min_slow_checks": 1}})
    assert latency_events(ev, [0.121] + [0.01] * 9) == [("warning", Event.FIRED)]


@pytest.mark.parametrize(
    ("ratio", "checks", "expected"),
    [
        (10 / 11, 11, []),  # fresh database, one failure in 11 checks: too few to judge
        (119 / 120, 120, []),  # enough checks: one failure is 0.8 %
        (0.85, 500, [(UPTIME, "critical", Event.FIRED)]),
    ],
    ids=["one-in-11", "one-in-120", "outage"],
)
def test_one_failure_never_fires_the_uptime_rule(ratio, checks, expected) -> None:
    config = evaluator()
    uptime = {EndpointId("us", "api"): (ratio, checks)}
    ev = Evaluator(config.endpoints, config.settings, lambda: uptime)
    assert [e for e in fired(ev, T0) if e[0] == UPTIME] == expected


def test_an_endpoints_window_slides_with_exact_counts() -> None:
    recent = _Recent()
    recent.count_slow(0.5)
    for i in range(200):
        recent.add((T0 + i, i % 3 != 0, (i * 37 % 10) / 10))
        recent.drop_before(T0 + i - 25)  # keeps the checks at or after the horizon
        assert [ts for ts, _, _ in recent.checks] == [T0 + j for j in range(max(0, i - 25), i + 1)]
        assert recent.failed == sum(1 for _, ok, _ in recent.checks if not ok)
        assert recent.slow == sum(1 for _, ok, ms in recent.checks if ok and ms > 0.5)
    recent.drop_before(T0 + 1000)
    assert (recent.checks, recent.failed, recent.slow) == ([], 0, 0)


def test_flapping_counts_only_the_changes_inside_its_window() -> None:
    ev = evaluator(alerting={"rules": {"flapping_changes": 4, "flapping_window": "10s"}})
    for i in range(6):  # 5 changes within 10 s
        feed(ev, T0 + i, ("eu/api", i % 2 == 0))
    assert ev._recent[EndpointId("eu", "api")].changes == [T0 + i for i in range(1, 6)]
    feed(ev, T0 + 13, ("eu/api", True))  # a change; those before T0 + 3 are out of the window
    assert ev._recent[EndpointId("eu", "api")].changes == [T0 + 3, T0 + 4, T0 + 5, T0 + 13]
    feed(ev, T0 + 30, ("eu/api", True))  # no change: none left inside the window
    assert ev._recent[EndpointId("eu", "api")].changes == []
