"""What a notification says, and where label routes send it: configuration and results in,
notifications out (no clock, no network)."""

from __future__ import annotations

import json

import pytest

from alerting.evaluator import ENDPOINT_DOWN, REGIONAL_FAILURE, Change, Evaluator
from alerting.message import TITLE_LIMIT
from alerting.router import HEADLINES, route
from alerting.state import AlertState, Event, Phase, Severity
from healthcheck.config import parse_config
from healthcheck.result import ConditionOutcome, EndpointId, ErrorClass, ProbeResult, Status

T0 = 1_800_000_000.0
LONG = "r" * 30 + "-" + "z" * 32  # 63 characters, the longest name accepted


def config(routes=None, regions=None, **exporter):
    document = {
        "exporter": exporter,
        "alerting": {
            "channels": {
                name: f"json://127.0.0.1:1/{name}"
                for name in ("pagerduty", "email", "slack", "payments", "audit")
            },
            "rules": {"failure_threshold": 2, "regional_failure_for": "1s"},
            **({"routes": routes} if routes is not None else {}),
        },
        "regions": regions
        or {
            "eu": {
                "defaults": {"labels": {"team": "payments", "tier": 1}},
                "endpoints": [
                    {
                        "name": "api",
                        "url": "http://x/",
                        "labels": {"tier": "0"},
                        "conditions": ["[STATUS] == 200"],
                    },
                    {"name": "web", "url": "http://x/"},
                ],
            },
            "us": {"endpoints": [{"name": "api", "url": "http://x/"}]},
        },
    }
    return parse_config(json.dumps(document), "test", {})


def run(cfg, *rounds, rule: str | None = ENDPOINT_DOWN):
    """Feed rounds of (target, ok) results a minute apart; the changes of `rule` (None: all)
    with an event. An endpoint alone in its region fails it too: its alert is left out."""
    evaluator = Evaluator({e.id: e for e in cfg.endpoints()}, cfg.alerting)
    changes: list[Change] = []
    for index, results in enumerate(rounds):
        now = T0 + 60 * index
        for target, ok in results:
            region, endpoint = target.split("/")
            failed = () if ok else (ConditionOutcome("[STATUS] == 200", False, "503"),)
            evaluator.observe(
                ProbeResult(
                    region,
                    endpoint,
                    "http",
                    ok,
                    0.01,
                    now,
                    error=None if ok else ErrorClass.HTTP_STATUS,
                    error_text=None if ok else "HTTP 503",
                    http_status=200 if ok else 503,
                    conditions=failed,
                ),
                Status.HEALTHY if ok else Status.UNHEALTHY,
            )
        changes += [c for c in evaluator.evaluate(now) if c.event is not None]
    return [c for c in changes if rule is None or c.state.rule == rule]


def sent(cfg, changes, now=T0 + 600):
    alerts = {(c.state.rule, c.state.target): c.state for c in changes}
    told = dict.fromkeys(alerts, True)  # people heard of each firing: resolves and reminders go
    routed = route(changes, alerts, told, cfg.alerting, {"pagerduty", "payments"}, now)
    return routed.notifications


def test_a_page_says_where_what_since_when_against_what_and_links() -> None:
    cfg = config(public_url="https://status.example.com/")
    down = run(cfg, [("eu/api", False)], [("eu/api", False)])
    (page,) = [n for n in sent(cfg, down, now=T0 + 360) if n.channel == "pagerduty"]
    assert page.title == "[FIRING:critical] endpoint_down eu/api"
    assert page.body.splitlines() == [
        "eu/api is down: HTTP 503",
        "Region: eu · Endpoint: api",
        "Error: http_status: HTTP 503",
        "Failed condition: [STATUS] == 200 (seen: 503)",
        "Value: 2 failed checks in a row (threshold: 2)",
        "Since: 2027-01-15 08:01:00 UTC (5m)",  # down from the 2nd failure
        "Status page: https://status.example.com/endpoints/eu/api",
        "Labels: team=payments, tier=0",
    ]
    assert ["team", "payments"] in page.labels and ["tier", "0"] in page.labels


def test_an_alerts_age_is_rounded_for_people() -> None:
    cfg = config()
    down = run(cfg, [("eu/api", False)], [("eu/api", False)])
    # 30.0652 s after it went down (08:01): whole seconds, not the float's noise.
    (page,) = [n for n in sent(cfg, down, now=T0 + 90.0652) if n.channel == "pagerduty"]
    assert "Since: 2027-01-15 08:01:00 UTC (30s)" in page.body.splitlines()


def test_a_resolve_says_how_long_it_lasted_and_not_the_old_error() -> None:
    cfg = config()
    changes = run(
        cfg,
        [("eu/api", False)],
        [("eu/api", False)],
        [("eu/api", True)],
        [("eu/api", True)],
    )
    resolve = [c for c in changes if c.event is Event.RESOLVED]
    (page,) = [n for n in sent(cfg, resolve, now=T0 + 180) if n.channel == "pagerduty"]
    assert page.title == "[RESOLVED:critical] endpoint_down eu/api"
    assert "Lasted: 2m (since 2027-01-15 08:01:00 UTC)" in page.body
    assert "Error:" not in page.body and "Status page" not in page.body  # no public_url


def test_a_regional_alert_carries_the_labels_its_endpoints_share() -> None:
    cfg = config(public_url="https://status.example.com")
    both = [("eu/api", False), ("eu/web", False)]
    changes = run(cfg, both, both, rule=None)
    regional = next(c for c in changes if c.state.rule == REGIONAL_FAILURE)
    assert regional.labels == (("team", "payments"),)  # tier differs between them
    (page,) = [n for n in sent(cfg, [regional]) if n.channel == "pagerduty"]
    assert "Region: eu\n" in page.body
    assert "Status page: https://status.example.com/" in page.body
    assert "Value: 2 of 2 endpoints down (threshold: all of them)" in page.body


@pytest.mark.parametrize("event", list(HEADLINES))
@pytest.mark.parametrize("rule", [ENDPOINT_DOWN, "tls_expiry", "some_kinds_own_long_rule_name"])
def test_titles_fit_a_lock_screen_whatever_the_names(event, rule) -> None:
    state = AlertState(rule, f"{LONG}/{LONG}", Phase.FIRING, Severity.WARNING, T0, T0, "x", T0)
    change = Change(state, event, LONG, "http", EndpointId(LONG, LONG))
    cfg = config()
    for notification in sent(cfg, [change]):
        assert len(notification.title) <= TITLE_LIMIT
        assert notification.title.startswith(f"[{HEADLINES[event]}:warning] {rule} r")
        assert notification.title.endswith("zzz")  # the target's end is kept: which endpoint
        assert f"Region: {LONG} · Endpoint: {LONG}" in notification.body  # whole in the body


def test_held_dependants_are_listed_only_when_there_are_some() -> None:
    state = AlertState(ENDPOINT_DOWN, "eu/db", Phase.FIRING, Severity.CRITICAL, T0, T0, "x", T0)
    plain = Change(state, Event.FIRED, "eu", "tcp", EndpointId("eu", "db"))
    holding = Change(
        state, Event.FIRED, "eu", "tcp", EndpointId("eu", "db"), held=("endpoint_down:eu/api",)
    )
    cfg = config()
    (alone,) = [n for n in sent(cfg, [plain]) if n.channel == "pagerduty"]
    (parent,) = [n for n in sent(cfg, [holding]) if n.channel == "pagerduty"]
    assert "held behind" not in alone.body
    assert "Also firing, held behind this alert: 1 (endpoint_down eu/api)" in parent.body


ROUTES = [
    {"match": {"tier": "~[01]"}, "continue": True, "channels": ["audit"]},
    {"match": {"team": "payments", "severity": "critical"}, "channels": ["payments"]},
    {"match": {"region": "us", "rule": "endpoint_down"}, "channels": ["pagerduty", "slack"]},
]


@pytest.mark.parametrize(
    ("target", "channels"),
    [
        ("eu/api", {"audit", "payments"}),  # tier 0 matches the audit route, which goes on
        ("us/api", {"pagerduty", "slack"}),  # no labels: the third route
    ],
)
def test_label_routes_in_order(target, channels) -> None:
    cfg = config(routes=ROUTES)
    changes = run(cfg, [(target, False)], [(target, False)])
    assert {n.channel for n in sent(cfg, changes)} == channels


def test_an_alert_no_route_matches_takes_its_severity_tier() -> None:
    cfg = config(routes=[{"match": {"team": "nobody"}, "channels": ["audit"]}])
    changes = run(cfg, [("us/api", False)], [("us/api", False)])
    assert {n.channel for n in sent(cfg, changes)} == {"pagerduty", "email", "slack"}


def test_the_short_form_keeps_its_meaning() -> None:
    cfg = config(routes={"critical": ["payments"]})
    assert cfg.alerting.route_list == ()
    changes = run(cfg, [("eu/api", False)], [("eu/api", False)])
    assert {n.channel for n in sent(cfg, changes)} == {"payments"}
    assert cfg.alerting.routing({"severity": "warning"}).channels == ("email", "slack")
