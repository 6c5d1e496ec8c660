"""The `alerting:` section of regions.yaml (channels, routes, rules, silences) and the
`alerts:` overrides of an endpoint, validated into the frozen `healthcheck.alert_settings`.

Defaults route exactly as the product promises: critical → PagerDuty + email + Slack,
warning → email + Slack, info → Slack (channels that are not configured are skipped).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from healthcheck import schema
from healthcheck.alert_settings import (
    ALERT_FACTS,
    CHANNEL_KINDS,
    DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_EVALUATE_EVERY,
    DEFAULT_REPEAT,
    DEFAULT_RESEND,
    DEFAULT_ROUTES,
    MAX_DELIVERY_TIMEOUT,
    MAX_EVALUATE_EVERY,
    MAX_RESEND,
    MIN_EVALUATE_EVERY,
    OVERRIDABLE,
    AlertingSettings,
    AlertOverrides,
    ChannelSettings,
    Matcher,
    Route,
    RuleSettings,
    Silence,
    Weekly,
)
from healthcheck.durations import format_duration
from healthcheck.labels import label_name, label_value
from healthcheck.secrets import Secret, UnsetSecret

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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


def evaluate_every(value: Any) -> float:
    """A duration from MIN_EVALUATE_EVERY to MAX_EVALUATE_EVERY."""
    seconds: float = schema.duration_up_to(MAX_EVALUATE_EVERY)(value)
    if seconds < MIN_EVALUATE_EVERY:
        limit = format_duration(MIN_EVALUATE_EVERY)
        raise ValueError(f"must be at least {limit}, got {value!r}")
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
        unknown = isinstance(fields["url"], UnsetSecret)  # its ${VAR} is not set (`status`)
        url = fields["url"].reveal()
        if kind == "apprise" and not unknown and not _apprise_accepts(url):
            # Never echo the URL: it usually holds a token.
            raise schema.FieldError("url", "not a URL Apprise understands (see its services list)")
        if kind == "alertmanager" and not unknown and not url.startswith(("http://", "https://")):
            raise schema.FieldError("url", "an Alertmanager base URL, like http://127.0.0.1:9093")
        if kind != "alertmanager" and "resend" in fields:
            raise schema.FieldError("resend", "only for kind: alertmanager (it keeps alerts alive)")
        resend = fields.get("resend", DEFAULT_RESEND) if kind == "alertmanager" else None
        return ChannelSettings(name, fields["url"], kind, fields.get("timeout", timeout), resend)

    return read


def _names(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    return tuple(schema.text(item) for item in items)


def _routes(value: Any) -> dict[str, tuple[str, ...]] | tuple[Route, ...]:
    """`routes:` as a mapping of severity to channels (the short form) or as a list of
    `{match, channels, continue}` tried in order."""
    if isinstance(value, Mapping):
        return schema.sub_mapping(value, dict.fromkeys(DEFAULT_ROUTES, _names))
    if not isinstance(value, list):
        raise ValueError(
            "expected {critical: [...], warning: [...], info: [...]} or a list of "
            "{match: {...}, channels: [...]}"
        )
    found = []
    for index, item in enumerate(value):
        try:
            found.append(_route(item, index))
        except schema.FieldError as exc:
            raise schema.FieldError(f"[{index}].{exc.key}", exc.message) from None
        except ValueError as exc:
            raise schema.FieldError(f"[{index}]", str(exc)) from None
    return tuple(found)


def _route(value: Any, index: int) -> Route:
    fields = schema.sub_mapping(
        value, {"match": _match, "channels": _names, "continue": schema.boolean}
    )
    if "channels" not in fields:
        raise schema.FieldError("channels", "missing: the channels the matched alerts go to")
    return Route(fields.get("match", ()), fields["channels"], fields.get("continue", False), index)


def _match(value: Any) -> tuple[Matcher, ...]:
    """`{team: payments, severity: critical, endpoint: "~api-.*"}`: labels and alert facts."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping of labels (or {', '.join(ALERT_FACTS)}) to values")
    found = []
    for key, item in value.items():
        try:
            if key not in ALERT_FACTS:
                label_name(key)
            wanted = label_value(item)
            pattern = None
            if wanted.startswith("~"):
                wanted = wanted[1:]
                try:
                    pattern = re.compile(wanted)
                except re.error as exc:
                    raise ValueError(f"not a valid regular expression {wanted!r}: {exc}") from None
            elif key == "severity" and wanted not in DEFAULT_ROUTES:
                raise ValueError(f"a severity is one of {', '.join(DEFAULT_ROUTES)}, got {item!r}")
        except ValueError as exc:
            raise schema.FieldError(str(key), str(exc)) from None
        found.append(Matcher(str(key), wanted, pattern))
    return tuple(found)


_RULE_READERS: dict[str, schema.Reader] = {
    "failure_threshold": schema.integer(1, 1000),
    "success_threshold": schema.integer(1, 1000),
    "failure_window": schema.integer(1, 1000),
    "success_window": schema.integer(1, 1000),
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


def read_overrides(value: Any) -> dict[str, Any]:
    """The `alerts:` mapping of a defaults block or an endpoint (merged down like latency)."""
    readers: dict[str, schema.Reader] = {"enabled": schema.boolean}
    readers.update({key: _RULE_READERS[key] for key in OVERRIDABLE})
    values = schema.sub_mapping(value, readers)
    check_windows(values)
    return values


def check_windows(values: Mapping[str, Any], rules: RuleSettings | None = None) -> None:
    """Refuse a failure or success window smaller than its threshold: of the keys written
    together in `values`, or (given `rules`) of `values` over `rules`, as one endpoint gets."""

    def get(key: str) -> Any:
        return values.get(key, getattr(rules, key) if rules is not None else None)

    for name in ("failure", "success"):
        threshold, window = get(f"{name}_threshold"), get(f"{name}_window")
        if threshold is not None and window is not None and window < threshold:
            raise schema.FieldError(
                f"{name}_window",
                f"{window} is smaller than {name}_threshold ({threshold}): {threshold} of the "
                f"last {window} checks can never happen; make the window at least {threshold}",
            )


def overrides(values: Mapping[str, Any]) -> AlertOverrides:
    changes = tuple(sorted((k, v) for k, v in values.items() if k != "enabled"))
    return AlertOverrides(values.get("enabled", True), changes)


def read_alerting(raw: Mapping[str, Any]) -> AlertingSettings:
    """Validate the section; raises schema.FieldError/ValueError with the sub-key path."""
    values = schema.sub_mapping(
        raw,
        {
            "channels": lambda v: v,
            "routes": _routes,
            "repeat": lambda v: schema.sub_mapping(
                v, dict.fromkeys(DEFAULT_ROUTES, schema.optional(schema.duration))
            ),
            "rules": lambda v: schema.sub_mapping(v, _RULE_READERS),
            "silences": read_silences,
            "vantage": schema.text,
            "timeout": delivery_timeout,
            "runbook_base": schema.http_url,
            "evaluate_every": evaluate_every,
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
    route_list: tuple[Route, ...] = ()
    explicit = values.get("routes", {})
    if isinstance(explicit, tuple):  # the list form; the severity tiers stay the defaults
        route_list, explicit = explicit, {}
    routes = {**DEFAULT_ROUTES, **explicit}
    named = [(f"routes.{severity}", names) for severity, names in explicit.items()]
    named += [(f"routes[{r.index}].channels", r.channels) for r in route_list]
    for path, names in named:
        for name in names:
            if name not in channels:
                raise schema.FieldError(
                    path,
                    f"channel {name!r} is not defined under alerting.channels "
                    f"(defined: {', '.join(channels) or 'none'})",
                )
    rules = RuleSettings(**values.get("rules", {}))
    try:
        check_windows(values.get("rules", {}), RuleSettings())
    except schema.FieldError as exc:
        raise schema.FieldError(f"rules.{exc.key}", exc.message) from None
    if rules.tls_critical_days >= rules.tls_warning_days:
        raise schema.FieldError("rules.tls_critical_days", "must be below tls_warning_days")
    if rules.uptime_critical >= rules.uptime_warning:
        raise schema.FieldError("rules.uptime_critical", "must be below uptime_warning")
    if rules.error_rate_warning >= rules.error_rate_critical:
        raise schema.FieldError("rules.error_rate_warning", "must be below error_rate_critical")
    return AlertingSettings(
        channels=channels,
        routes={k: tuple(n for n in v if n in channels) for k, v in routes.items()},
        route_list=route_list,
        repeat={**DEFAULT_REPEAT, **values.get("repeat", {})},
        rules=rules,
        silences=values.get("silences", ()),
        vantage=values.get("vantage"),
        timeout=timeout,
        runbook_base=values.get("runbook_base"),
        evaluate_every=values.get("evaluate_every", DEFAULT_EVALUATE_EVERY),
    )


# -- silences ------------------------------------------------------------------------------------
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _clock(value: Any) -> time:
    match = _CLOCK.fullmatch(schema.text(value).strip())
    if not match:
        raise ValueError(f"expected a time of day like 02:00, got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


def _days(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else [value]
    days = set()
    for item in items:
        name = schema.text(item).strip().lower()[:3]
        if name not in DAYS:
            raise ValueError(f"expected days like [mon, tue, sat], got {item!r}")
        days.add(DAYS.index(name))
    return frozenset(days)


def _zone(value: Any) -> str:
    name = schema.text(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)"
        ) from None
    return name


def _moment(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        moment = datetime.fromisoformat(schema.text(value))
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 time like 2026-12-24T22:00:00+01:00, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} needs a UTC offset or Z, so it means one moment")
    return moment.timestamp()


def _weekly(value: Any) -> Weekly:
    fields = schema.sub_mapping(
        value, {"days": _days, "start": _clock, "end": _clock, "timezone": _zone}
    )
    missing = [key for key in ("start", "end", "timezone") if key not in fields]
    if missing:
        raise schema.FieldError(missing[0], "missing: a weekly window needs start, end, timezone")
    return Weekly(
        fields.get("days", frozenset(range(7))), fields["start"], fields["end"], fields["timezone"]
    )


def read_silence(value: Any) -> Silence:
    fields = schema.sub_mapping(
        value,
        {
            "reason": schema.text,
            "region": schema.text,
            "endpoint": schema.text,
            "rule": schema.text,
            "starts": _moment,
            "ends": _moment,
            "schedule": _weekly,
        },
    )
    if "reason" not in fields:
        raise schema.FieldError("reason", "missing: say why, so the next person knows")
    if "starts" in fields and "ends" in fields and fields["ends"] <= fields["starts"]:
        raise schema.FieldError("ends", "must be after starts")
    return Silence(
        reason=fields["reason"],
        region=fields.get("region"),
        endpoint=fields.get("endpoint"),
        rule=fields.get("rule"),
        starts=fields.get("starts"),
        ends=fields.get("ends"),
        weekly=fields.get("schedule"),
    )


def read_silences(value: Any) -> tuple[Silence, ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of silences")
    found = []
    for index, item in enumerate(value):
        try:
            found.append(read_silence(item))
        except schema.FieldError as exc:
            raise schema.FieldError(
                f"[{index}].{exc.key}".replace(".[", "["), exc.message
            ) from None
        except ValueError as exc:
            raise schema.FieldError(f"[{index}]", str(exc)) from None
    return tuple(found)


def _apprise_accepts(url: str) -> bool:
    """Whether Apprise knows the URL's service and can read it. Imported here, not above: only
    a configuration with channels pays for Apprise (0.1 s and its plug-ins)."""
    import apprise

    return bool(apprise.Apprise().add(url))
