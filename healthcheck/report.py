"""`--once` output: a table for people, one JSON document for scripts (see DESIGN.md)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from healthcheck.result import ProbeResult, Status
from healthcheck.status import (
    EXIT_CODES,
    RegionStatus,
    classify,
    latency_note,
    summarize_region,
    worst,
)
from healthcheck.targets import Config

_COLOURS = {Status.HEALTHY: "32", Status.DEGRADED: "33", Status.UNHEALTHY: "31"}
# An endpoint or region with no result yet, as `healthcheck status` and the API show it.
UNKNOWN = "unknown"
NOT_CHECKED = "not checked yet"


class Report:
    """The results of one round of checks with their statuses and region aggregates; the
    demo's tables also come from here while some endpoints have no result yet (`unknown`)."""

    def __init__(self, config: Config, results: Sequence[ProbeResult]) -> None:
        self.config = config
        endpoints = {endpoint.id: endpoint for endpoint in config.endpoints()}
        order = {endpoint_id: index for index, endpoint_id in enumerate(endpoints)}
        self.rows = []
        for result in sorted(results, key=lambda r: order[r.target_id]):
            endpoint = endpoints[result.target_id]
            self.rows.append((result, classify(result, endpoint), endpoint))
        checked = {endpoint.id for _, _, endpoint in self.rows}
        self.unchecked = [e for e in endpoints.values() if e.id not in checked]
        self.regions: list[RegionStatus] = []
        for region in config.regions:
            checks = [(r.ok, s) for r, s, e in self.rows if e.region == region.name]
            if checks:
                self.regions.append(summarize_region(region.name, checks))
        self.status = worst(status for _, status, _ in self.rows)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def as_json(self) -> dict[str, Any]:
        summaries = {region.name: region for region in self.regions}
        return {
            "results": [_result_json(r, s, latency_note(r, e)) for r, s, e in self.rows],
            # Every region with an endpoint, in order; one none of whose endpoints is checked
            # yet (only in the demo's tables) is unknown.
            "regions": {
                region.name: _region_json(summaries.get(region.name))
                for region in self.config.regions
                if region.endpoints
            },
            "status": self.status.value,
            "exit_code": self.exit_code,
        }

    def render_json(self) -> str:
        return json.dumps(self.as_json(), indent=2)

    def render_table(self, colour: bool = False) -> str:
        """Every configured endpoint in configuration order, one not checked yet as `unknown`
        (as `healthcheck status` shows one), and a line for every region with an endpoint."""
        header = ("REGION", "ENDPOINT", "KIND", "STATUS", "LATENCY", "HTTP", "DETAIL")
        lines = [header]
        checked = {endpoint.id: (result, status) for result, status, endpoint in self.rows}
        for endpoint in self.config.endpoints():
            if endpoint.id not in checked:
                lines.append(
                    (endpoint.region, endpoint.name, endpoint.kind, UNKNOWN, "-", "-", NOT_CHECKED)
                )
                continue
            result, status = checked[endpoint.id]
            detail = result.error_text or latency_note(result, endpoint) or ""
            if result.error:
                detail = f"{result.error.value}: {detail}"
            if result.attempts > 1:
                detail = f"{detail} [{result.attempts} attempts]".strip()
            lines.append(
                (
                    result.region,
                    result.endpoint,
                    result.kind,
                    status.value,
                    f"{result.latency * 1000:.0f}ms",
                    str(result.http_status or "-"),
                    detail,
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        out = []
        for index, line in enumerate(lines):
            cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
            if colour and index and line[3] != UNKNOWN:
                cells[3] = _paint(Status(line[3]), cells[3])
            out.append("  ".join([*cells, line[-1]]).rstrip())
        out.append("")
        summaries = {region.name: region for region in self.regions}
        waiting = Counter(endpoint.region for endpoint in self.unchecked)
        for configured in self.config.regions:
            region, unseen = summaries.get(configured.name), waiting[configured.name]
            later = f", {unseen} {NOT_CHECKED}" if unseen else ""
            if region is None:  # none checked yet; a region with every endpoint off: no line
                if unseen:
                    out.append(f"region {configured.name}: {UNKNOWN} ({NOT_CHECKED})")
                continue
            note = "  REGIONAL FAILURE" if region.regional_failure else ""
            label = _paint(region.status, region.status.value) if colour else region.status.value
            out.append(
                f"region {region.name}: {label} "
                f"({region.healthy}/{region.total} healthy{later}){note}"
            )
        later = f" ({len(self.unchecked)} {NOT_CHECKED})" if self.unchecked else ""
        out.append(f"overall: {self.status.value}{later}")
        return "\n".join(out)


def _paint(status: Status, text: str) -> str:
    return f"\033[{_COLOURS[status]}m{text}\033[0m"


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _result_json(result: ProbeResult, status: Status, note: str | None) -> dict[str, Any]:
    phases = result.phases
    return {
        "region": result.region,
        "endpoint": result.endpoint,
        "kind": result.kind,
        "status": status.value,
        "ok": result.ok,
        "latency_ms": _ms(result.latency),
        "http_status": result.http_status,
        "error": result.error.value if result.error else None,
        "error_detail": result.error_text or note,
        "attempts": result.attempts,
        "conditions": [
            {"condition": c.condition, "passed": c.passed, "detail": c.detail}
            for c in result.conditions
        ],
        "phases_ms": None
        if phases is None
        else {
            "dns": _ms(phases.dns),
            "connect": _ms(phases.connect),
            "tls": _ms(phases.tls),
            "first_byte": _ms(phases.first_byte),
            "total": _ms(phases.total),
        },
        "cert_expiry": _iso(result.cert_expiry),
        "details": dict(result.details),
        "timestamp": _iso(result.timestamp),
    }


def _region_json(region: RegionStatus | None) -> dict[str, Any]:
    if region is None:
        counts = dict.fromkeys(("endpoints", "healthy", "degraded", "unhealthy"), 0)
        return {"status": UNKNOWN, "regional_failure": False, **counts}
    return {
        "status": region.status.value,
        "regional_failure": region.regional_failure,
        "endpoints": region.total,
        "healthy": region.healthy,
        "degraded": region.degraded,
        "unhealthy": region.unhealthy,
    }
