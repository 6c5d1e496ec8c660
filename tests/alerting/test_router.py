"""Routing, inhibition, grouping, silences and the windowed rules, as values in and out."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from alerting.evaluator import ENDPOINT_DOWN, FLAPPING, REGIONAL_FAILURE, Change
from alerting.router import route
from alerting.rules import error_rate, flapping, latency_p95, uptime_below
from alerting.settings import AlertingSettings, ChannelSettings
from alerting.silences import Silence, Weekly, read_silence
from alerting.state import AlertState, Event, Phase, Severity
from healthcheck import schema
from healthcheck.result import EndpointId
from healthcheck.secrets import Secret

SETTINGS = AlertingSettings(
    channels={
        name: ChannelSettings(name, Secret("json://127.0.0.1:1/"))
        for name in ("pagerduty", "email", "slack")
    }
)
NOW = 1_800_000_000.0


def alert(rule: str, target: str, severity=Severity.CRITICAL, phase=Phase.FIRING) -> AlertState:
    return AlertState(rule, target, phase, severity, NOW - 60, NOW, f"{target} {rule}", NOW)


def change(state: AlertState, event: Event, region: str = "eu") -> Change:
    return Change(state, event, region)


def run(changes, alerts=None, notified=None, silences=()):
    alerts = alerts or {(c.state.rule, c.state.target): c.state for c in changes}
    return route(changes, alerts, notified or {}, SETTINGS, {"pagerduty"}, NOW, silences)


def by_channel(routed) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for n in routed.notifications:
        found.setdefault(n.channel, []).append(n.title)
    return found


def test_severity_routes_by_default() -> None:
    critical = run([change(alert(ENDPOINT_DOWN, "eu/api"), Event.FIRED)])
    assert set(by_channel(critical)) == {"pagerduty", "email", "slack"}
    warning = run([change(alert("high_latency", "eu/api", Severity.WARNING), Event.FIRED)])
    assert set(by_channel(warning)) == {"email", "slack"}
    info = run([change(alert("x", "eu/api", Severity.INFO), Event.FIRED)])
    assert set(by_channel(info)) == {"slack"}


def test_a_regional_failure_absorbs_its_endpoint_alerts() -> None:
    region = alert(REGIONAL_FAILURE, "eu")
    api = alert(ENDPOINT_DOWN, "eu/api")
    other = alert(ENDPOINT_DOWN, "us/api")
    changes = [
        change(region, Event.FIRED),
        change(api, Event.FIRED),
        change(other, Event.FIRED, "us"),
    ]
    routed = run(changes)
    titles = by_channel(routed)["pagerduty"]
    assert titles == [
        "[FIRING:critical] regional_failure eu",
        "[FIRING:critical] endpoint_down us/api",
    ]
    assert routed.notified[(ENDPOINT_DOWN, "eu/api")] is False  # recorded, never sent
    # ...so its resolve is not sent either.
    resolved = run(
        [change(alert(ENDPOINT_DOWN, "eu/api", phase=Phase.RESOLVED), Event.RESOLVED)],
        notified=routed.notified,
    )
    assert resolved.notifications == []


def test_flapping_absorbs_the_flips() -> None:
    flap = alert(FLAPPING, "eu/api", Severity.WARNING)
    down = alert(ENDPOINT_DOWN, "eu/api")
    routed = run(
        [change(down, Event.FIRED)],
        alerts={(FLAPPING, "eu/api"): flap, (ENDPOINT_DOWN, "eu/api"): down},
    )
    assert routed.notifications == []


def test_one_evaluation_for_one_region_is_one_message_per_grouping_channel() -> None:
    changes = [change(alert(ENDPOINT_DOWN, f"eu/e{i}"), Event.FIRED) for i in range(3)]
    routed = run(changes)
    channels = by_channel(routed)
    assert len(channels["pagerduty"]) == 3  # PagerDuty tracks each alert on its own
    assert channels["slack"] == ["[healthcheck] eu: 3 firing"]
    slack = next(n for n in routed.notifications if n.channel == "slack")
    assert slack.body.count("\n\n") == 2 and "eu/e1" in slack.body  # a block per alert


def test_a_resolve_goes_only_where_the_firing_went() -> None:
    resolved = change(alert(ENDPOINT_DOWN, "eu/api", phase=Phase.RESOLVED), Event.RESOLVED)
    assert run([resolved]).notifications == []
    told = run([resolved], notified={(ENDPOINT_DOWN, "eu/api"): True})
    assert {n.notify_type for n in told.notifications} == {"success"}
    pd = next(n for n in told.notifications if n.channel == "pagerduty")
    assert pd.dedup_key == "endpoint_down:eu/api" and pd.ends_at == NOW


def test_silenced_alerts_are_held_then_fire_when_the_silence_ends() -> None:
    silence = Silence("migration", region="eu", starts=NOW - 10, ends=NOW + 10)
    down = alert(ENDPOINT_DOWN, "eu/api")
    held = run([change(down, Event.FIRED)], silences=[silence])
    assert held.notifications == [] and held.notified[(ENDPOINT_DOWN, "eu/api")] is False
    later = route(
        [change(down, Event.REMINDER)],
        {(ENDPOINT_DOWN, "eu/api"): down},
        held.notified,
        SETTINGS,
        {"pagerduty"},
        NOW + 20,
        [silence],
    )
    assert "[FIRING:critical] endpoint_down eu/api" in by_channel(later)["pagerduty"]


def test_silences_match_by_region_endpoint_and_rule() -> None:
    s = Silence("x", region="eu", endpoint="api", rule=ENDPOINT_DOWN)
    assert s.matches(ENDPOINT_DOWN, EndpointId("eu", "api"), "eu")
    assert not s.matches(ENDPOINT_DOWN, EndpointId("eu", "web"), "eu")
    assert not s.matches("tls_expiry", EndpointId("eu", "api"), "eu")
    assert not s.matches(ENDPOINT_DOWN, EndpointId("us", "api"), "us")


def at(text: str, zone: str = "Europe/Berlin") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


@pytest.mark.parametrize(
    ("moment", "active"),
    [
        ("2026-11-28 23:30", True),  # Saturday night, inside 23:00-02:00
        ("2026-11-29 01:59", True),  # past midnight: Sunday morning, still Saturday's window
        ("2026-11-29 02:00", False),
        ("2026-11-29 23:30", False),  # Sunday night is not listed
        ("2026-11-28 22:59", False),
    ],
)
def test_weekly_window_across_midnight_in_its_time_zone(moment: str, active: bool) -> None:
    silence = read_silence(
        {
            "reason": "backups",
            "schedule": {
                "days": ["sat"],
                "start": "23:00",
                "end": "02:00",
                "timezone": "Europe/Berlin",
            },
        }
    )
    assert isinstance(silence.weekly, Weekly)
    assert silence.active(at(moment)) is active


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ({"schedule": {"start": "02:00", "end": "03:00", "timezone": "UTC"}}, "reason", "say why"),
        (
            {"reason": "x", "schedule": {"start": "25:00", "end": "03:00", "timezone": "UTC"}},
            "schedule.start",
            "time of day",
        ),
        (
            {
                "reason": "x",
                "schedule": {"start": "01:00", "end": "03:00", "timezone": "Mars/Olympus"},
            },
            "schedule.timezone",
            "unknown time zone",
        ),
        (
            {
                "reason": "x",
                "schedule": {
                    "days": ["someday"],
                    "start": "01:00",
                    "end": "03:00",
                    "timezone": "UTC",
                },
            },
            "schedule.days",
            "days like",
        ),
        ({"reason": "x", "starts": "2026-01-02T00:00:00"}, "starts", "UTC offset"),
        (
            {"reason": "x", "starts": "2026-01-02T00:00:00Z", "ends": "2026-01-01T00:00:00Z"},
            "ends",
            "after starts",
        ),
    ],
)
def test_silence_config_errors_name_the_key(raw, key, fragment) -> None:
    with pytest.raises(schema.FieldError) as caught:
        read_silence(raw)
    assert caught.value.key == key and fragment in caught.value.message


def test_windowed_rules() -> None:
    assert latency_p95("t", [0.01] * 4, 0.1, 0.5) is None  # too few checks to say
    assert latency_p95("t", [0.01] * 20, 0.1, 0.5).active is False
    slow = latency_p95("t", [0.2] * 20, 0.1, 0.5)
    assert slow.active and slow.severity is Severity.WARNING
    assert latency_p95("t", [0.6] * 20, 0.1, 0.5).severity is Severity.CRITICAL
    assert error_rate("t", [True] * 10, 0.005, 0.01, 20) is None
    warning = error_rate("t", [True] * 597 + [False] * 3, 0.005, 0.01, 20)
    assert warning.active and warning.severity is Severity.WARNING
    assert error_rate("t", [True] * 199 + [False], 0.005, 0.01, 20).active is False  # one blip
    assert error_rate("t", [True] * 97 + [False] * 3, 0.005, 0.01, 20).severity is Severity.CRITICAL
    assert error_rate("t", [True] * 1000, 0.005, 0.01, 20).active is False
    assert uptime_below("t", 0.5, 10, 0.95, 0.9) is None  # too few checks for a 24h figure
    assert uptime_below("t", 0.93, 500, 0.95, 0.9).severity is Severity.WARNING
    assert uptime_below("t", 0.85, 500, 0.95, 0.9).severity is Severity.CRITICAL
    assert flapping("t", 6, 6, 600).active and not flapping("t", 5, 6, 600).active


def test_a_vantage_is_named_in_every_message_and_label() -> None:
    """Daemons probing the same fleet from different places say where they stand."""
    settings = AlertingSettings(channels=SETTINGS.channels, vantage="eu-west-1a")
    down = [
        change(alert(ENDPOINT_DOWN, "eu/api"), Event.FIRED),
        change(alert(ENDPOINT_DOWN, "eu/web"), Event.FIRED),
    ]
    alerts = {(c.state.rule, c.state.target): c.state for c in down}
    routed = route(down, alerts, {}, settings, {"pagerduty"}, NOW)
    assert routed.notifications
    for notification in routed.notifications:  # per-alert and grouped alike
        assert notification.body.endswith("(seen from vantage eu-west-1a)")
    paged = next(n for n in routed.notifications if n.channel == "pagerduty")
    assert ["vantage", "eu-west-1a"] in paged.labels
    plain = route(down, alerts, {}, SETTINGS, {"pagerduty"}, NOW)
    assert not any("vantage" in n.body for n in plain.notifications)


@pytest.mark.parametrize(
    ("rule", "target", "region", "kind", "expected"),
    [
        (
            ENDPOINT_DOWN,
            "eu/api",
            "eu",
            "http",
            {
                "alertname": "HealthcheckEndpointDown",
                "region": "eu",
                "endpoint": "api",
                "kind": "http",
            },
        ),
        (
            ENDPOINT_DOWN,
            "eu/gpu",
            "eu",
            "onnx",
            {
                "alertname": "HealthcheckCanaryFailing",
                "region": "eu",
                "endpoint": "gpu",
                "kind": "onnx",
            },
        ),
        (
            REGIONAL_FAILURE,
            "eu",
            "eu",
            None,
            {"alertname": "HealthcheckRegionalFailure", "region": "eu"},
        ),
        ("daemon_health", "healthcheck", "", None, {"alertname": "HealthcheckDaemonHealth"}),
    ],
)
def test_alertmanager_labels_are_those_of_prometheus_alert_for_the_same_condition(
    rule, target, region, kind, expected
) -> None:
    """deploy/prometheus's alerts carry alertname, region, endpoint, kind, severity, vantage:
    so do the daemon's, so Alertmanager groups and inhibits across both paths."""
    settings = AlertingSettings(channels=SETTINGS.channels, vantage="eu-west-1a")
    state = alert(rule, target)
    endpoint = EndpointId.parse(target) if "/" in target else None
    change = Change(state, Event.FIRED, region, kind, endpoint)
    routed = route([change], {}, {}, settings, {"pagerduty"}, NOW)
    paged = next(n for n in routed.notifications if n.channel == "pagerduty")
    assert dict(paged.labels) == {**expected, "severity": "critical", "vantage": "eu-west-1a"}


def test_runbook_base_links_each_notification_to_its_rules_runbook() -> None:
    settings = replace(SETTINGS, runbook_base="https://wiki.example.com/runbooks/")
    down = change(alert(ENDPOINT_DOWN, "eu/api"), Event.FIRED)
    slow = change(alert("high_latency", "eu/db", Severity.CRITICAL), Event.FIRED)
    routed = route([down, slow], {}, {}, settings, {"pagerduty"}, NOW)
    single = [n for n in routed.notifications if n.channel == "pagerduty"]
    grouped = [n for n in routed.notifications if n.channel == "slack"]

    assert {n.runbook_url for n in single} == {
        "https://wiki.example.com/runbooks/endpoint_down",
        "https://wiki.example.com/runbooks/high_latency",
    }
    assert all(f"Runbook: {n.runbook_url}" in n.body for n in single)
    assert "Runbook: https://wiki.example.com/runbooks/high_latency" in grouped[0].body
    unset = run([down])
    assert all(n.runbook_url is None and "unbook" not in n.body for n in unset.notifications)
