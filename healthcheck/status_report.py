"""`healthcheck status`: what the database says, per region and endpoint. It never probes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from healthcheck.status import summarize_region
from healthcheck.targets import Config
from storage.rollup import Tally
from storage.uptime import WINDOWS, Latest, StorageReader, UptimeReport

SHOWN_WINDOWS = ("24h", "7d", "30d")


def _ratio(tally: Tally | None) -> float | None:
    return None if tally is None or tally.ratio is None else round(tally.ratio, 6)


def _percent(tally: Tally | None) -> str:
    ratio = _ratio(tally)
    return "-" if ratio is None else f"{ratio * 100:.2f}%"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class StoredStatus:
    """Joins the configured endpoints with what storage knows about each of them."""

    def __init__(self, config: Config, reader: StorageReader, now: float) -> None:
        self.config = config
        self.now = now
        self.uptime: UptimeReport = reader.uptime(now, WINDOWS)
        latest = reader.latest(now)
        ids = self.uptime.ids()
        self.rows: list[tuple[str, str, str, Mapping[str, Tally], Latest | None]] = []
        for endpoint in config.endpoints():
            target_id = ids.get(endpoint.id)
            windows = self.uptime.endpoints.get(target_id, {}) if target_id is not None else {}
            newest = latest.get(target_id) if target_id is not None else None
            self.rows.append((endpoint.region, endpoint.name, endpoint.kind, windows, newest))

    def as_json(self) -> dict[str, Any]:
        regions: dict[str, Any] = {}
        for region in self.config.regions:
            known = [(r[4].ok, r[4].status) for r in self.rows if r[0] == region.name and r[4]]
            summary = summarize_region(region.name, known) if known else None
            regions[region.name] = {
                "status": summary.status.value if summary else "unknown",
                "regional_failure": summary.regional_failure if summary else False,
                "uptime": {
                    w: _ratio(self.uptime.regions.get(region.name, {}).get(w)) for w in WINDOWS
                },
                "endpoints": [
                    self._endpoint_json(row) for row in self.rows if row[0] == region.name
                ],
            }
        return {
            "generated_at": _iso(self.now),
            "regions": regions,
            "overall": {"uptime": {w: _ratio(self.uptime.overall.get(w)) for w in WINDOWS}},
        }

    def _endpoint_json(
        self, row: tuple[str, str, str, Mapping[str, Tally], Latest | None]
    ) -> dict[str, Any]:
        region, name, kind, windows, newest = row
        return {
            "region": region,
            "endpoint": name,
            "kind": kind,
            "status": newest.status.value if newest else "unknown",
            "last_check": _iso(newest.ts) if newest else None,
            "latency_ms": round(newest.latency_ms, 2) if newest else None,
            "uptime": {w: _ratio(windows.get(w)) for w in WINDOWS},
            "checks": {w: round(windows[w].checks) if w in windows else 0 for w in WINDOWS},
            "p95_ms": {
                w: (None if w not in windows else _round(windows[w].percentile(0.95)))
                for w in WINDOWS
            },
            "last_error": None
            if newest is None or newest.last_error_ts is None
            else {
                "at": _iso(newest.last_error_ts),
                "error": newest.last_error,
                "detail": newest.last_error_text,
            },
        }

    def render_json(self) -> str:
        return json.dumps(self.as_json(), indent=2)

    def render_table(self) -> str:
        header = (
            "REGION",
            "ENDPOINT",
            "STATUS",
            *(f"UP {w}" for w in SHOWN_WINDOWS),
            "P95 24h",
            "LAST ERROR",
        )
        lines = [header]
        for region, name, _kind, windows, newest in self.rows:
            p95 = windows["24h"].percentile(0.95) if "24h" in windows else None
            error = "-"
            if newest is not None and newest.last_error_ts is not None:
                error = f"{newest.last_error} at {_iso(newest.last_error_ts)}"
            lines.append(
                (
                    region,
                    name,
                    newest.status.value if newest else "unknown",
                    *(_percent(windows.get(w)) for w in SHOWN_WINDOWS),
                    "-" if p95 is None else f"{p95:.0f}ms",
                    error,
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        out = [
            "  ".join(
                [*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[-1]]
            ).rstrip()
            for line in lines
        ]
        out.append("")
        for configured in self.config.regions:
            tallies = self.uptime.regions.get(configured.name, {})
            uptimes = ", ".join(f"{w} {_percent(tallies.get(w))}" for w in SHOWN_WINDOWS)
            out.append(f"region {configured.name}: uptime {uptimes}")
        overall = ", ".join(f"{w} {_percent(self.uptime.overall.get(w))}" for w in SHOWN_WINDOWS)
        out.append(f"overall: uptime {overall}")
        return "\n".join(out)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
