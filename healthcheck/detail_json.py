"""The JSON of the detail views, from config, live results and storage rows: plain functions
over values. Secrets show as *** (a `Secret`, a known secret value, a password in a URL)."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from healthcheck.api import error_budget_left, iso
from healthcheck.probes.registry import find_kind
from healthcheck.result import ProbeResult, Status
from healthcheck.secrets import REDACTED, Secret
from healthcheck.status import latency_note
from healthcheck.targets import Endpoint, ProbeSettings
from storage.detail import AlertEvent, Change, Point
from storage.rollup import Tally
from storage.uptime import WINDOWS

_USERINFO = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")


# -- shaping -------------------------------------------------------------------------------------
def shown(value: object, redact: Callable[[str], str]) -> object:
    """A settings value as JSON people may read: secrets as ***, passwords in URLs too."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, str):
        return _USERINFO.sub(rf"\1{REDACTED}@", redact(value))
    if isinstance(value, enum.Enum):
        return shown(value.value, redact)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: shown(getattr(value, f.name), redact)
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, dict):
        return {str(k): shown(v, redact) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [shown(item, redact) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def effective_settings(endpoint: Endpoint) -> ProbeSettings:
    """The endpoint's settings with the defaults its kind works out filled in (a push
    endpoint's grace), so the view shows the value that applies rather than null."""
    probe = find_kind(endpoint.kind)
    return probe.effective(endpoint.settings, endpoint.interval) if probe else endpoint.settings


def check_summary(endpoint: Endpoint, redact: Callable[[str], str]) -> dict[str, Any]:
    return {
        "kind": endpoint.kind,
        "settings": shown(effective_settings(endpoint), redact),
        "interval_s": endpoint.interval,
        "timeout_s": endpoint.timeout,
        "retries": endpoint.retries,
        "thresholds": {
            "warning_ms": ms(endpoint.latency_warning),
            "critical_ms": ms(endpoint.latency_critical),
        },
        "conditions": [redact(condition.text) for condition in endpoint.conditions],
    }


def live_result(
    result: ProbeResult, status: Status, endpoint: Endpoint, redact: Callable[[str], str]
) -> dict[str, Any]:
    phases = result.phases
    text = result.error_text or latency_note(result, endpoint)
    return {
        "ts": iso(result.timestamp),
        "ok": result.ok,
        "status": status.value,
        "latency_ms": ms(result.latency),
        "http_status": result.http_status,
        "error": result.error.value if result.error else None,
        "error_detail": redact(text) if text else None,
        "attempts": result.attempts,
        "phases_ms": None
        if phases is None
        else {f.name: ms(getattr(phases, f.name)) for f in dataclasses.fields(phases)},
        "conditions": [
            {
                "condition": redact(outcome.condition),
                "passed": outcome.passed,
                "detail": redact(outcome.detail) if outcome.detail else None,
            }
            for outcome in result.conditions
        ],
        "cert_expiry": iso(result.cert_expiry),
        "details": {key: shown(value, redact) for key, value in result.details},
        "degraded": redact(result.degraded) if result.degraded else None,
        "source": "live",
    }


def stored_result(row: dict[str, Any], redact: Callable[[str], str]) -> dict[str, Any]:
    """The newest stored check, when the daemon has not checked the endpoint since it started:
    storage keeps no phases or condition outcomes."""
    return {
        "ts": iso(row["ts"]),
        "ok": bool(row["ok"]),
        "status": row["status"],
        "latency_ms": row["latency_ms"],
        "http_status": row["http_status"],
        "error": row["error"],
        "error_detail": redact(row["error_text"]) if row["error_text"] else None,
        "attempts": row["attempts"],
        "phases_ms": None,
        "conditions": [],
        "cert_expiry": None,
        "details": {},
        "degraded": None,
        "source": "stored",
    }


def sla_verdicts(windows: Mapping[str, Tally] | None, target: float) -> dict[str, Any]:
    """Uptime per window against the SLA target, and the share of error budget left."""
    found = {}
    for window in WINDOWS:
        tally = (windows or {}).get(window)
        uptime = tally.ratio if tally is not None else None
        budget = error_budget_left(uptime, target)
        found[window] = {
            "uptime": uptime,
            "checks": round(tally.checks) if tally is not None else 0,
            "met": None if uptime is None else uptime >= target,
            "error_budget_remaining": budget,
        }
    return found


def percentiles(windows: Mapping[str, Tally] | None) -> dict[str, Any]:
    return {
        window: {
            f"p{round(q * 100)}_ms": None
            if not windows or window not in windows
            else windows[window].percentile(q)
            for q in (0.5, 0.95, 0.99)
        }
        for window in WINDOWS
    }


def point_json(point: Point) -> dict[str, Any]:
    return {
        "start": iso(point.start),
        "checks": point.checks,
        "failures": point.failures,
        "p50_ms": point.p50_ms,
        "p95_ms": point.p95_ms,
        "p99_ms": point.p99_ms,
        "max_ms": point.max_ms,
    }


def status_periods(
    changes: Sequence[Change], now: float, redact: Callable[[str], str]
) -> list[dict[str, Any]]:
    """Each status an endpoint was in, from one change to the next (the last one lasts)."""
    periods = []
    for index, change in enumerate(changes):
        end = changes[index + 1].ts if index + 1 < len(changes) else None
        periods.append(
            {
                "type": "status",
                "ts": iso(change.ts),
                "end": iso(end),
                "ongoing": end is None,
                "duration_s": round((end if end is not None else now) - change.ts, 3),
                "status": change.status,
                "ok": change.ok,
                "error": change.error,
                "error_detail": redact(change.error_text) if change.error_text else None,
                "http_status": change.http_status,
            }
        )
    return periods


def alert_json(event: AlertEvent) -> dict[str, Any]:
    return {
        "type": "alert",
        "ts": iso(event.ts),
        "rule": event.rule,
        "target": event.target,
        "event": event.event,
        "state": event.state,
        "severity": event.severity,
        "summary": event.summary,
        "delivered": any(d.sent is not None for d in event.deliveries)
        if event.deliveries
        else None,
        "deliveries": [
            {
                "channel": d.channel,
                "delivered": d.sent is not None,
                "sent": iso(d.sent),
                "attempts": d.attempts,
                "last_error": d.last_error,
            }
            for d in event.deliveries
        ],
    }


def newest_first(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: item["ts"] or "", reverse=True)


def links(region: str, name: str | None = None) -> dict[str, str]:
    path = f"{region}/{name}" if name is not None else region
    kind = "endpoints" if name is not None else "regions"
    return {"page": f"/{kind}/{path}", "api": f"/api/v1/{kind}/{path}"}
