"""The `alerting:` section of regions.yaml, validated into frozen settings.

Defaults route exactly as the product promises: critical → PagerDuty + email + Slack,
warning → email + Slack, info → Slack (channels that are not configured are skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from alerting.silences import Silence, read_silences
from healthcheck import schema
from healthcheck.durations import format_duration
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
ALIVE_RESENDS = 4


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    name: str
    url: Secret
    kind: str = "apprise"  # or alertmanager: posts to its v2 API
    timeout: float = DEFAULT_DELIVERY_TIMEOUT  # seconds to wait for the channel's answer
    resend: float | None = None  # alertmanager: seconds between posts of each firing alert


@dataclass(frozen=True, slots=True)
class RuleSettings:
    failure_threshold: int = 3
    success_threshold: int = 2
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
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ROUTES))
    repeat: Mapping[str, float | None] = field(default_factory=lambda: dict(DEFAULT_REPEAT))
    rules: RuleSettings = field(default_factory=RuleSettings)
    silences: tuple[Silence, ...] = ()
    vantage: str | None = None
    timeout: float = DEFAULT_DELIVERY_TIMEOUT  # for channels that do not set their own
    runbook_base: str | None = None  # each notification links <runbook_base>/<rule>

    @property
    def enabled(self) -> bool:
        return bool(self.channels)

    def unrouted(self) -> list[str]:
        """A warning per channel that no route names: nothing would ever be sent to it."""
        used = {name for names in self.routes.values() for name in names}
        return [
            f"alerting.channels.{name}: no route uses this channel, so nothing is ever sent "
            f"to it; name it under alerting.routes (the default routes name only pagerduty, "
            f"email and slack), e.g. routes: {{critical: [{name}], warning: [{name}]}}"
            for name in self.channels
            if name not in used
        ]


def delivery_timeout(value: Any) -> float:
    """A duration above zero and at most MAX_DELIVERY_TIMEOUT."""
    seconds = schema.duration(value)
    if seconds > MAX_DELIVERY_TIMEOUT:
        limit = format_duration(MAX_DELIVERY_TIMEOUT)
        raise ValueError(f"must be at most {limit}, got {value!r}")
    return seconds


def resend_period(value: Any) -> float:
    """A duration above zero and at most MAX_RESEND."""
    seconds = schema.duration(value)
    if seconds > MAX_RESEND:
        raise ValueError(f"must be at most {format_duration(MAX_RESEND)}, got {value!r}")
    return seconds


def _channel(name: str, timeout: float) -> Callable[[Any], ChannelSettings]:
    def read(value: Any) -> ChannelSettings:
        if isinstance(value, str | Secret):
            value = {"url": value}
        fields = schema.sub_mapping(
            value,
            {
                "url": schema.secret,
                "kind": schema.choice(*CHANNEL_KINDS),
                "timeout": delivery_timeout,
                "resend": resend_period,
            },
        )
        if "url" not in fields:
            raise schema.FieldError("url", "missing: an Apprise URL (or Alertmanager base URL)")
        kind = fields.get("kind", "apprise")
        url = fields["url"].reveal()
        if kind == "apprise" and not _apprise_accepts(url):
            # Never echo the URL: it usually holds a token.
            raise schema.FieldError("url", "not a URL Apprise understands (see its services list)")
        if kind == "alertmanager" and not url.startswith(("http://", "https://")):
            raise schema.FieldError("url", "an Alertmanager base URL, like http://127.0.0.1:9093")
        if kind != "alertmanager" and "resend" in fields:
            raise schema.FieldError("resend", "only for kind: alertmanager (it keeps alerts alive)")
        resend = fields.get("resend", DEFAULT_RESEND) if kind == "alertmanager" else None
        return ChannelSettings(name, fields["url"], kind, fields.get("timeout", timeout), resend)

    return read


def _names(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(schema.text(item) for item in items)


_RULE_READERS: dict[str, schema.Reader] = {
    "failure_threshold": schema.integer(1, 1000),
    "success_threshold": schema.integer(1, 1000),
    "regional_failure_for": schema.duration,
    "tls_warning_days": schema.integer(1, 365),
    "tls_critical_days": schema.integer(0, 365),
    "uptime_warning": schema.ratio,
    "uptime_critical": schema.ratio,
    "uptime_min_checks": schema.integer(1, 10_000_000),
    "error_rate_window": schema.duration,
    "error_rate_warning": schema.ratio,
    "error_rate_critical": schema.ratio,
    "error_rate_min_checks": schema.integer(1, 100_000),
    "error_rate_min_failures": schema.integer(1, 100_000),
    "latency_window": schema.duration,
    "latency_for": schema.duration,
    "latency_min_checks": schema.integer(1, 100_000),
    "latency_min_slow_checks": schema.integer(1, 100_000),
    "flapping_window": schema.duration,
    "flapping_changes": schema.integer(2, 1000),
    "self_lag_p99": schema.duration,
    "self_storage_down": schema.duration,
}


# Rule settings an endpoint (or a region's or the global `defaults`) may override under `alerts:`.
OVERRIDABLE = (
    "failure_threshold",
    "success_threshold",
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
    changes: tuple[tuple[str, Any], ...] = ()

    def apply(self, rules: RuleSettings) -> RuleSettings:
        return replace(rules, **dict(self.changes)) if self.changes else rules


def read_overrides(value: Any) -> dict[str, Any]:
    """The `alerts:` mapping of a defaults block or an endpoint (merged down like latency)."""
    readers: dict[str, schema.Reader] = {"enabled": schema.boolean}
    readers.update({key: _RULE_READERS[key] for key in OVERRIDABLE})
    return schema.sub_mapping(value, readers)


def overrides(values: Mapping[str, Any]) -> AlertOverrides:
    changes = tuple(sorted((k, v) for k, v in values.items() if k != "enabled"))
    return AlertOverrides(values.get("enabled", True), changes)


def read_alerting(raw: Mapping[str, Any]) -> AlertingSettings:
    """Validate the section; raises schema.FieldError/ValueError with the sub-key path."""
    values = schema.sub_mapping(
        raw,
        {
            "channels": lambda v: v,
            "routes": lambda v: schema.sub_mapping(v, dict.fromkeys(DEFAULT_ROUTES, _names)),
            "repeat": lambda v: schema.sub_mapping(
                v, dict.fromkeys(DEFAULT_ROUTES, schema.optional(schema.duration))
            ),
            "rules": lambda v: schema.sub_mapping(v, _RULE_READERS),
            "silences": read_silences,
            "vantage": schema.text,
            "timeout": delivery_timeout,
            "runbook_base": schema.http_url,
        },
    )
    timeout = values.get("timeout", DEFAULT_DELIVERY_TIMEOUT)
    channels_raw = values.get("channels") or {}
    if not isinstance(channels_raw, Mapping):
        raise schema.FieldError("channels", "expected a mapping of channel names to Apprise URLs")
    channels = {}
    for name, item in channels_raw.items():
        try:
            channels[name] = _channel(name, timeout)(item)
        except schema.FieldError as exc:
            raise schema.FieldError(f"channels.{name}.{exc.key}", exc.message) from None
        except ValueError as exc:
            raise schema.FieldError(f"channels.{name}", str(exc)) from None
    routes = {**DEFAULT_ROUTES, **values.get("routes", {})}
    explicit = values.get("routes", {})
    for severity, names in explicit.items():
        for name in names:
            if name not in channels:
                raise schema.FieldError(
                    f"routes.{severity}",
                    f"channel {name!r} is not defined under alerting.channels "
                    f"(defined: {', '.join(channels) or 'none'})",
                )
    rules = RuleSettings(**values.get("rules", {}))
    if rules.tls_critical_days >= rules.tls_warning_days:
        raise schema.FieldError("rules.tls_critical_days", "must be below tls_warning_days")
    if rules.uptime_critical >= rules.uptime_warning:
        raise schema.FieldError("rules.uptime_critical", "must be below uptime_warning")
    if rules.error_rate_warning >= rules.error_rate_critical:
        raise schema.FieldError("rules.error_rate_warning", "must be below error_rate_critical")
    return AlertingSettings(
        channels=channels,
        routes={k: tuple(n for n in v if n in channels) for k, v in routes.items()},
        repeat={**DEFAULT_REPEAT, **values.get("repeat", {})},
        rules=rules,
        silences=values.get("silences", ()),
        vantage=values.get("vantage"),
        timeout=timeout,
        runbook_base=values.get("runbook_base"),
    )


def _apprise_accepts(url: str) -> bool:
    """Whether Apprise knows the URL's service and can read it. Imported here, not above: only
    a configuration with channels pays for Apprise (0.1 s and its plug-ins)."""
    import apprise

    return bool(apprise.Apprise().add(url))
