"""From alert events to notifications: routes (by labels and facts, else by severity),
inhibition, grouping.

- A firing regional failure absorbs the endpoint-down alerts of its region: they are recorded,
  listed in the regional alert, and not sent on their own.
- A flapping endpoint's down/up flips are not sent; the flapping alert is, once.
- Events of one evaluation for one region go out as one message per channel, except to
  channels that track each alert on their own (PagerDuty, Alertmanager): one per alert.
- A silenced alert is recorded but not sent; if it still fires when the silence ends, its next
  reminder goes out as a firing. A resolve is sent only where the firing was sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from alerting.evaluator import (
    DAEMON_HEALTH,
    ENDPOINT_DOWN,
    ERROR_RATE,
    FLAPPING,
    HIGH_LATENCY,
    REGIONAL_FAILURE,
    TLS_EXPIRY,
    UPTIME,
    Change,
    Key,
)
from alerting.message import TITLE_LIMIT, AlertMessage, endpoint_link, shorten
from alerting.outbox import Notification
from alerting.settings import AlertingSettings
from alerting.silences import Silence, silenced
from alerting.state import AlertState, Event, Phase, Severity
from healthcheck.probes.registry import every_alert_rule, find_kind

NOTIFY_TYPES = {Severity.CRITICAL: "failure", Severity.WARNING: "warning", Severity.INFO: "info"}
# The `alertname` each rule goes to Alertmanager as: the name of the Prometheus alert in
# deploy/prometheus/healthcheck.rules.yml for the same condition, so one group or inhibition
# in Alertmanager joins the daemon's alert and Prometheus's. The last three have no twin there.
ALERTNAMES = {
    ENDPOINT_DOWN: "HealthcheckEndpointDown",
    REGIONAL_FAILURE: "HealthcheckRegionalFailure",
    HIGH_LATENCY: "HealthcheckHighLatencyP95",
    UPTIME: "HealthcheckUptimeCritical",
    TLS_EXPIRY: "HealthcheckTLSCertExpiringSoon",
    ERROR_RATE: "HealthcheckErrorRate",
    FLAPPING: "HealthcheckFlapping",
    DAEMON_HEALTH: "HealthcheckDaemonHealth",
}
# A probe kind names its own rules' alertnames, and its endpoint_down's where Prometheus
# splits a failing check by kind (Probe.alert_rules, Probe.down_alertname).
HEADLINES = {
    Event.FIRED: "FIRING",
    Event.ESCALATED: "ESCALATED",
    Event.REMINDER: "STILL FIRING",
    Event.RESOLVED: "RESOLVED",
}


@dataclass(frozen=True, slots=True)
class Routed:
    notifications: list[Notification]
    notified: dict[Key, bool]  # per alert: was its firing told to anyone


def _absorbed(change: Change, alerts: Mapping[Key, AlertState]) -> bool:
    """Whether an endpoint alert is covered by a firing regional failure or flapping alert."""
    if change.state.rule != ENDPOINT_DOWN:
        return False
    region = alerts.get((REGIONAL_FAILURE, change.region))
    flapping = alerts.get((FLAPPING, change.state.target))
    return any(a is not None and a.phase is Phase.FIRING for a in (region, flapping))


def facts(change: Change) -> dict[str, str]:
    """What a route's `match` sees of an alert: its labels, then severity, region, endpoint,
    rule and kind (empty where it has none)."""
    state = change.state
    found = dict(change.labels)
    found.update(
        severity=state.severity.value,
        region=change.region,
        endpoint=change.endpoint.name if change.endpoint is not None else "",
        rule=state.rule,
        kind=change.kind or "",
    )
    return found


def message(change: Change, settings: AlertingSettings, now: float) -> AlertMessage:
    """The notification's content for one alert change."""
    state = change.state
    assert change.event is not None  # route() drops the changes without an event
    resolved = change.event is Event.RESOLVED
    endpoint = change.endpoint.name if change.endpoint is not None else None
    verdict = change.verdict
    return AlertMessage(
        headline=HEADLINES[change.event],
        severity=state.severity.value,
        rule=state.rule,
        target=state.target,
        summary=state.summary,
        region=change.region,
        endpoint=endpoint,
        since=state.since,
        now=now,
        resolved=resolved,
        lasted=state.last_change - state.since if resolved else None,
        value=verdict.value if verdict is not None else None,
        threshold=verdict.threshold if verdict is not None else None,
        latest=change.latest,
        vantage=settings.vantage,
        link=endpoint_link(settings.public_url, change.region, endpoint) if change.region else None,
        runbook=runbook_url(state.rule, settings),
        labels=change.labels,
        held_dependants=change.held_dependants,
    )


def runbook_url(rule: str, settings: AlertingSettings) -> str | None:
    """<alerting.runbook_base>/<rule>, e.g. https://wiki.example.com/runbooks/endpoint_down."""
    base = settings.runbook_base
    return f"{base.rstrip('/')}/{rule}" if base else None


def route(
    changes: Iterable[Change],
    alerts: Mapping[Key, AlertState],
    notified: Mapping[Key, bool],
    settings: AlertingSettings,
    per_alert_channels: set[str],
    now: float,
    silences: Iterable[Silence] = (),
) -> Routed:
    told = dict(notified)
    silences = list(silences)
    groups: dict[tuple[str, str], list[Change]] = {}
    single: list[tuple[str, Change]] = []
    for change in changes:
        if change.event is None:
            continue
        key = (change.state.rule, change.state.target)
        if change.event is Event.RESOLVED:
            if not told.get(key, False):
                continue  # nobody was told it fired
        elif _absorbed(change, alerts) or silenced(
            silences, change.state.rule, change.endpoint, change.region, now
        ):
            told.setdefault(key, False)  # recorded in the history, not sent
            continue
        else:
            if not told.get(key, False) and change.event is Event.REMINDER:
                # Held back until now (silenced, absorbed): people hear it as a new firing.
                change = replace(change, event=Event.FIRED)
            told[key] = True
        for channel in settings.routing(facts(change)).channels:
            if channel in per_alert_channels:
                single.append((channel, change))
            else:
                groups.setdefault((change.region, channel), []).append(change)

    notifications = [_one(channel, change, settings, now) for channel, change in single]
    for (region, channel), members in groups.items():
        notifications.append(
            _one(channel, members[0], settings, now)
            if len(members) == 1
            else _grouped(channel, region, members, now, settings)
        )
    return Routed(notifications, told)


def alertname(rule: str, kind: str | None) -> str:
    """The Alertmanager alertname of a rule's alert (an unknown rule keeps its own name)."""
    probe = find_kind(kind) if kind is not None else None
    if probe is not None and rule == ENDPOINT_DOWN and probe.down_alertname is not None:
        return probe.down_alertname
    if rule in ALERTNAMES:
        return ALERTNAMES[rule]
    # A kind's own rule; without the endpoint's kind (gone from the config), any kind's.
    declared = probe.alert_rules if probe is not None else every_alert_rule()
    return next((r.alertname for r in declared if r.name == rule), rule)


def still_firing(
    firing: Iterable[Change], settings: AlertingSettings, channel: str, now: float
) -> list[Notification]:
    """The firing alerts routed to `channel`, to post again and keep alive there: the same
    labels and start as their firing, nothing new for people (no event, not in the outbox)."""
    return [
        replace(
            _one(channel, replace(c, event=Event.FIRED), settings, now),
            event="resend",
        )
        for c in firing
        if channel in settings.routing(facts(c)).channels
    ]


def _labels(change: Change, settings: AlertingSettings) -> list[list[str]]:
    """The labels Prometheus's alert for the same condition has (but `job` and `instance`):
    alertname, severity, region, endpoint, kind, vantage, and the operator's labels (whose
    names never clash with these). (alertname, region, endpoint) is one alert of this
    daemon, so Alertmanager keeps each apart."""
    state = change.state
    labels = [
        ["alertname", alertname(state.rule, change.kind)],
        ["severity", state.severity.value],
    ]
    if change.region:
        labels.append(["region", change.region])
    if change.endpoint is not None:
        labels.append(["endpoint", change.endpoint.name])
    if change.kind:
        labels.append(["kind", change.kind])
    if settings.vantage:
        labels.append(["vantage", settings.vantage])
    labels.extend([name, value] for name, value in change.labels)
    return labels


def _one(channel: str, change: Change, settings: AlertingSettings, now: float) -> Notification:
    state = change.state
    assert change.event is not None  # route() drops the changes without an event
    resolved = change.event is Event.RESOLVED
    runbook = runbook_url(state.rule, settings)
    told = message(change, settings, now)
    return Notification(
        channel=channel,
        dedup_key=state.key,
        title=told.title(),
        body=told.body(),
        notify_type="success" if resolved else NOTIFY_TYPES[state.severity],
        severity=state.severity.value,
        event=change.event.value,
        labels=_labels(change, settings),
        starts_at=state.since,
        ends_at=now if resolved else None,
        runbook_url=runbook,
    )


def _grouped(
    channel: str, region: str, members: list[Change], now: float, settings: AlertingSettings
) -> Notification:
    worst = max(
        (c.state.severity for c in members if c.event is not Event.RESOLVED),
        key=lambda s: s.rank,
        default=None,
    )
    firing = sum(1 for c in members if c.event is not Event.RESOLVED)
    resolved = len(members) - firing
    parts = [f"{firing} firing" if firing else "", f"{resolved} resolved" if resolved else ""]
    # One block per alert, each whole (its title line, then its body), a blank line apart.
    told = [message(c, settings, now) for c in members]
    return Notification(
        channel=channel,
        dedup_key=f"group:{region}:{now:.3f}",
        title=shorten(f"[healthcheck] {region}: {', '.join(p for p in parts if p)}", TITLE_LIMIT),
        body="\n\n".join(f"{m.title()}\n{m.body()}" for m in told),
        notify_type="success" if worst is None else NOTIFY_TYPES[worst],
        severity=(worst or Severity.INFO).value,
        event="grouped",
        starts_at=min(c.state.since for c in members),
    )
