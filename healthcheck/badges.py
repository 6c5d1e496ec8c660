"""Status, uptime and latency badges for READMEs and wikis: flat "label | value" SVGs, and the
same facts as shields.io "endpoint" JSON (https://shields.io/badges/endpoint-badge).

`/badges/{region}[/{endpoint}]/status.svg`, `.../uptime/{1h|24h|7d|30d}.svg`,
`.../latency/24h.svg`; `.json` instead of `.svg` for shields.io. Readers only, like the API:
they read the status board and the uptime snapshot, never storage directly.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape

from aiohttp import web

from healthcheck.api import STATE, ApiState
from healthcheck.result import EndpointId, Status
from healthcheck.status import summarize_region
from healthcheck.targets import Endpoint, Region
from storage.rollup import Tally
from storage.uptime import WINDOWS

PREFIX = "/badges/"
# Short: a README's image follows a change within a minute, and GitHub's camo proxy and
# shields.io cache no longer than this.
CACHE_CONTROL = "max-age=60, s-maxage=60"
LATENCY_WINDOWS = ("24h",)
LATENCY_QUANTILE = 0.95

# shields.io's named colours and the hex its flat badges draw them with.
COLOURS = {
    "brightgreen": "#4c1",
    "green": "#97ca00",
    "yellow": "#dfb317",
    "orange": "#fe7d37",
    "red": "#e05d44",
    "lightgrey": "#9f9f9f",
}
STATUS_COLOURS = {
    Status.HEALTHY: "brightgreen",
    Status.DEGRADED: "yellow",
    Status.UNHEALTHY: "red",
}
# Uptime below the SLA target: yellow down to the warning level, orange to critical, then red.
UPTIME_WARNING, UPTIME_CRITICAL = 0.95, 0.90


@dataclass(frozen=True, slots=True)
class Badge:
    label: str
    message: str
    colour: str  # a key of COLOURS
    modified: float | None = None  # when what it shows last changed (epoch seconds)


def register(app: web.Application) -> None:
    """Serve the badges on `app` (whose auth middleware opens them with public_badges)."""
    app.router.add_get(PREFIX + "{path:.+}", badge)


async def badge(request: web.Request) -> web.Response:
    state = request.app[STATE]
    path = request.match_info["path"]
    stem, dot, suffix = path.rpartition(".")
    found = await _badge(state, stem.split("/")) if dot and suffix in ("svg", "json") else None
    if found is None:
        # The same answer for a badge that does not exist and an id that is not configured.
        return web.Response(status=404, text="no such badge\n")
    label = request.query.get("label")
    if label is not None:
        found = Badge(label[:64], found.message, found.colour, found.modified)
    if suffix == "svg":
        body, content_type = render_svg(found).encode(), "image/svg+xml"
    else:
        body, content_type = shields_json(found).encode(), "application/json"
    etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if found.modified is not None:
        headers["Last-Modified"] = format_datetime(
            datetime.fromtimestamp(found.modified, UTC), usegmt=True
        )
    wanted = request.headers.get("If-None-Match", "")
    if etag in (tag.strip() for tag in wanted.split(",")) or wanted.strip() == "*":
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": content_type})


async def _badge(state: ApiState, parts: list[str]) -> Badge | None:
    """The badge a path names (without its suffix), or None for one that does not exist."""
    if parts[-1] == "status" and len(parts) in (2, 3):
        target, what, window = parts[:-1], "status", None
    elif len(parts) in (3, 4) and parts[-2] in ("uptime", "latency"):
        target, what, window = parts[:-2], parts[-2], parts[-1]
    else:
        return None
    if what == "uptime" and window not in WINDOWS:
        return None
    if what == "latency" and window not in LATENCY_WINDOWS:
        return None
    region = next((r for r in state.config.regions if r.name == target[0]), None)
    if region is None:
        return None
    endpoint = None
    if len(target) == 2:
        endpoint = next((e for e in region.endpoints if e.name == target[1]), None)
        if endpoint is None:
            return None
    if what == "status":
        return _status(state, region, endpoint)
    assert window is not None
    snapshot = await state.uptime.get()
    report = snapshot.report if snapshot else None
    tally: Tally | None = None
    if report is not None and endpoint is not None:
        row = report.ids().get(endpoint.id)
        tally = report.endpoints.get(row, {}).get(window) if row is not None else None
    elif report is not None:
        tally = report.regions.get(region.name, {}).get(window)
    at = snapshot.at if snapshot else None
    if what == "uptime":
        return uptime_badge(f"uptime {window}", tally, state.config.sla_target, at)
    watched = [endpoint] if endpoint is not None else list(region.endpoints)
    return latency_badge(f"p95 {window}", tally, watched, at)


def _status(state: ApiState, region: Region, endpoint: Endpoint | None) -> Badge:
    if endpoint is not None:
        latest = state.board.latest.get(endpoint.id)
        label = str(EndpointId(region.name, endpoint.name))
        if latest is None:
            return Badge(label, "unknown", "lightgrey")
        result, status = latest
        return Badge(label, status.value, STATUS_COLOURS[status], result.timestamp)
    known = [state.board.latest.get(e.id) for e in region.endpoints]
    checked = [latest for latest in known if latest is not None]
    if not checked:
        return Badge(region.name, "unknown", "lightgrey")
    summary = summarize_region(region.name, [(result.ok, status) for result, status in checked])
    newest = max(result.timestamp for result, _status in checked)
    return Badge(region.name, summary.status.value, STATUS_COLOURS[summary.status], newest)


def uptime_badge(label: str, tally: Tally | None, target: float, at: float | None) -> Badge:
    ratio = tally.ratio if tally is not None else None
    if ratio is None:
        return Badge(label, "no data", "lightgrey", at)
    # Rounded down: 99.996 % is not shown as the 100 % it fell short of.
    percent = math.floor(ratio * 10000) / 100
    message = f"{percent:.2f}".rstrip("0").rstrip(".") + "%"
    if ratio >= target:
        colour = "brightgreen"
    elif ratio >= UPTIME_WARNING:
        colour = "yellow"
    elif ratio >= UPTIME_CRITICAL:
        colour = "orange"
    else:
        colour = "red"
    return Badge(label, message, colour, at)


def latency_badge(
    label: str, tally: Tally | None, endpoints: list[Endpoint], at: float | None
) -> Badge:
    """p95 latency, coloured by the endpoints' own thresholds (a region's: the tightest)."""
    milliseconds = tally.percentile(LATENCY_QUANTILE) if tally is not None else None
    if milliseconds is None:
        return Badge(label, "no data", "lightgrey", at)
    seconds = milliseconds / 1000
    warnings = [e.latency_warning for e in endpoints if e.latency_warning is not None]
    criticals = [e.latency_critical for e in endpoints if e.latency_critical is not None]
    if criticals and seconds > min(criticals):
        colour = "red"
    elif warnings and seconds > min(warnings):
        colour = "yellow"
    else:
        colour = "brightgreen"
    message = f"{milliseconds:.0f} ms" if milliseconds >= 10 else f"{milliseconds:.1f} ms"
    return Badge(label, message, colour, at)


def shields_json(found: Badge) -> str:
    return json.dumps(
        {
            "schemaVersion": 1,
            "label": found.label,
            "message": found.message,
            "color": found.colour,
            "cacheSeconds": 60,
        }
    )


# Widths (px) of Verdana 11px, the flat style's font, by character class: close enough for a
# badge that neither clips nor pads its text.
_NARROW, _WIDE = set("fijlrt.,:;|!'I ()[]/"), set("mwMW%@")


def text_width(text: str) -> int:
    width = 0.0
    for char in text:
        if char in _NARROW:
            width += 4
        elif char in _WIDE:
            width += 10.5
        elif char.isupper() or char.isdigit():
            width += 7.5
        else:
            width += 6.5
    return math.ceil(width)


def render_svg(found: Badge) -> str:
    """The shields.io "flat" look: grey label, coloured value, rounded, with a text shadow."""
    label, message = escape(found.label), escape(found.message)
    fill = COLOURS[found.colour]
    left = text_width(found.label) + 10
    right = text_width(found.message) + 10
    total = left + right
    title = escape(f"{found.label}: {found.message}", {'"': "&quot;"})
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{fill}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2:g}" y="15" fill="#010101" fill-opacity=".3">{label}</text>'
        f'<text x="{left / 2:g}" y="14">{label}</text>'
        f'<text x="{left + right / 2:g}" y="15" fill="#010101" fill-opacity=".3">{message}</text>'
        f'<text x="{left + right / 2:g}" y="14">{message}</text></g></svg>'
    )
