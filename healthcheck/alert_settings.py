"""The alert settings a `Config` carries: channels, routes, rule thresholds, per-endpoint
overrides and silences, as frozen values. Core types: the `alerting:` section is read into them
by `healthcheck.alerting_section`, and the `alerting` package acts on them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time
from zoneinfo import ZoneInfo

from healthcheck.result import EndpointId
from healthcheck.secrets import Secret

DEFAULT_ROUTES = {
    "critical": ("pagerduty", "email", "slack"),
    "warning": ("email", "slack"),
    "info": ("slack",),
}
DEFAULT_REPEAT = {"critical": 3600.0, "warning": 4 * 3600.0, "info": None}
CHANNEL_KINDS = ("apprise", "alertmanager")
# How long one delivery may wait for the channel's answer. Generous: a slow answer is better
# than a second page, because a delivery that timed out may have arrived.
DEFAULT_DELIVERY_TIMEOUT = 30.0
MAX_DELIVERY_TIMEOUT = 300.0
# An Alertmanager channel posts every firing alert again this often, each time valid for
# ALIVE_RESENDS periods (Prometheus: resend_delay 1m, endsAt 4 evaluations ahead): a firing
# alert outlives Alertmanager's resolve_timeout, and expires on its own if the daemon dies.
DEFAULT_RESEND = 60.0
MAX_RESEND = 3600.0
# How often alert rules are evaluated (`alerting.evaluate_every`): the delay from a verdict to
# its page, and the window of one grouped message. Every period of the rules, holds, reminders,
# resends and grouping is in seconds, never in evaluations, so this changes none of them.
DEFAULT_EVALUATE_EVERY = 1.0
MIN_EVALUATE_EVERY = 0.1
MAX_EVALUATE_EVERY = 60.0
ALIVE_RESENDS = 4


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    name: str
    url: Secret
    kind: str = "apprise"  # or alertmanager: posts to its v2 API
    timeout: float = DEFAULT_DELIVERY_TIMEOUT  # seconds to wait for the channel's answer
    resend: float | None = None  # alertmanager: seconds between posts of each firing alert


# What a route's `match` may name besides the operator's labels: the facts of every alert.
ALERT_FACTS = ("severity", "region", "endpoint", "rule", "kind")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One `key: value` of a route's match: the value exactly, or `~regex` (whole value)."""

    key: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, facts: Mapping[str, str]) -> bool:
        seen = facts.get(self.key, "")  # an absent label is empty, as in Alertmanager
        if self.pattern is not None:
            return self.pattern.fullmatch(seen) is not None
        return seen == self.value


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of `alerting.routes` in its list form: where the alerts it matches go."""

    match: tuple[Matcher, ...]
    channels: tuple[str, ...]
    proceed: bool = False  # `continue: true`: later routes are tried too
    index: int = 0  # its place in the list, as `routes test` names it

    def matches(self, facts: Mapping[str, str]) -> bool:
        return all(matcher.matches(facts) for matcher in self.match)

    def describe(self) -> str:
        shown = ", ".join(
            f"{m.key}: {'~' + m.value if m.pattern is not None else m.value}" for m in self.match
        )
        return f"routes[{self.index}] match {{{shown}}}" + (" continue" if self.proceed else "")


@dataclass(frozen=True, slots=True)
class Routing:
    """Where one alert goes: the routes that matched (none: the severity tiers) and the
    channels, each once, in the order the routes name them."""

    matched: tuple[Route, ...]
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleSettings:
    failure_threshold: int = 3
    success_threshold: int = 2
    # Down when `failure_threshold` of the last `failure_window` checks failed, up again when
    # `success_threshold` of the last `success_window` passed; None: the threshold itself, so
    # the checks must come in a row.
    failure_window: int | None = None
    success_window: int | None = None
    regional_failure_for: float = 30.0
    tls_warning_days: float = 14.0
    tls_critical_days: float = 3.0
    uptime_warning: float = 0.95
    uptime_critical: float = 0.90
    uptime_min_checks: int = 120  # an hour at 30 s: a few checks say nothing of 24h uptime
    error_rate_window: float = 300.0
    error_rate_warning: float = 0.005
    error_rate_critical: float = 0.01
    # A rate needs checks enough for one failure to be noise, and a few failures: with 20
    # checks one 503 read as 5 % and paged critical.
    error_rate_min_checks: int = 100
    error_rate_min_failures: int = 3
    latency_window: float = 300.0
    latency_for: float = 120.0
    latency_min_checks: int = 5  # successful checks in the window before p95 says anything
    latency_min_slow_checks: int = 3  # checks over the threshold: one slow check is a blip
    flapping_window: float = 600.0
    flapping_changes: int = 6
    self_lag_p99: float = 1.0  # the daemon's own schedule lag worth a warning
    self_storage_down: float = 60.0  # storage unwritable this long is worth a warning


@dataclass(frozen=True, slots=True)
class AlertingSettings:
    channels: Mapping[str, ChannelSettings] = field(default_factory=dict)
    # The severity tiers: the short form of `routes`, or the defaults. They take the alerts no
    # route of the list form matches.
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ROUTES))
    route_list: tuple[Route, ...] = ()  # `routes` in its list form, in order
    repeat: Mapping[str, float | None] = field(default_factory=lambda: dict(DEFAULT_REPEAT))
    rules: RuleSettings = field(default_factory=RuleSettings)
    silences: tuple[Silence, ...] = ()
    vantage: str | None = None
    timeout: float = DEFAULT_DELIVERY_TIMEOUT  # for channels that do not set their own
    runbook_base: str | None = None  # each notification links <runbook_base>/<rule>
    public_url: str | None = None  # exporter.public_url: notifications link the endpoint's page
    evaluate_every: float = DEFAULT_EVALUATE_EVERY  # seconds between evaluations

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    def routing(self, facts: Mapping[str, str]) -> Routing:
        """Where an alert with these facts (severity, region, endpoint, rule, kind and its
        labels) goes: the list's routes in order, the first match ending the walk unless it
        says `continue`; an alert no route matches takes its severity's tier."""
        matched: list[Route] = []
        for route in self.route_list:
            if route.matches(facts):
                matched.append(route)
                if not route.proceed:
                    break
        if not matched:
            return Routing((), self.routes.get(facts.get("severity", ""), ()))
        channels = dict.fromkeys(name for route in matched for name in route.channels)
        return Routing(tuple(matched), tuple(channels))

    def unrouted(self) -> list[str]:
        """A warning per channel that no route names: nothing would ever be sent to it."""
        used = {name for names in self.routes.values() for name in names}
        used.update(name for route in self.route_list for name in route.channels)
        return [
            f"alerting.channels.{name}: no route uses this channel, so nothing is ever sent "
            f"to it; name it under alerting.routes (the default routes name only pagerduty, "
            f"email and slack), e.g. routes: {{critical: [{name}], warning: [{name}]}}"
            for name in self.channels
            if name not in used
        ]


# Rule settings an endpoint (or a region's or the global `defaults`) may override under `alerts:`.
OVERRIDABLE = (
    "failure_threshold",
    "success_threshold",
    "failure_window",
    "success_window",
    "tls_warning_days",
    "tls_critical_days",
    "uptime_warning",
    "uptime_critical",
    "error_rate_warning",
    "error_rate_critical",
)


@dataclass(frozen=True, slots=True)
class AlertOverrides:
    """Per-endpoint changes to the rule settings; `enabled: false` mutes the endpoint."""

    enabled: bool = True
    changes: tuple[tuple[str, float], ...] = ()  # OVERRIDABLE rule settings, all numbers

    def apply(self, rules: RuleSettings) -> RuleSettings:
        # By name: each value was read by its own key's reader (an int where the field is).
        return replace(rules, **dict(self.changes)) if self.changes else rules  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Weekly:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time  # may be before start: the window runs past midnight
    zone: str

    def covers(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, ZoneInfo(self.zone))
        clock = local.time()
        if self.start <= self.end:
            return local.weekday() in self.days and self.start <= clock < self.end
        if clock >= self.start:  # the evening part, on a listed day
            return local.weekday() in self.days
        return (local.weekday() - 1) % 7 in self.days and clock < self.end  # after midnight


@dataclass(frozen=True, slots=True)
class Silence:
    reason: str
    region: str | None = None
    endpoint: str | None = None
    rule: str | None = None
    starts: float | None = None
    ends: float | None = None
    weekly: Weekly | None = None
    id: int | None = None  # set for silences stored by the CLI

    def active(self, now: float) -> bool:
        if self.starts is not None and now < self.starts:
            return False
        if self.ends is not None and now >= self.ends:
            return False
        return self.weekly is None or self.weekly.covers(now)

    def matches(self, rule: str, endpoint: EndpointId | None, region: str) -> bool:
        """`endpoint`: the endpoint an alert is about; None for a region's or the daemon's."""
        return (
            (self.region is None or self.region == region)
            and (self.endpoint is None or (endpoint is not None and self.endpoint == endpoint.name))
            and (self.rule is None or self.rule == rule)
        )

    def describe(self) -> str:
        scope = "/".join(p for p in (self.region or "*", self.endpoint or "*") if p)
        return f"{scope} rule={self.rule or '*'}: {self.reason}"
