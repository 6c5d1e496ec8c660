"""The detail views of one endpoint and one region: their pages and the JSON behind them.

    /endpoints/{region}/{name}                       the status page, opened on that endpoint
    /regions/{region}                                the status page, opened on that region
    /api/v1/endpoints/{region}/{name}                check config, last result, uptime vs SLA
    /api/v1/endpoints/{region}/{name}/latency        p50/p95/p99 per bucket (?window=24h|7d|30d)
    /api/v1/endpoints/{region}/{name}/events         status changes and alerts, newest first
    /api/v1/regions/{region}[/latency|/events]       the same for a region

Registered on the app `build_app` made, so the same auth and error handling apply. An unknown
region or endpoint is a 404 that names neither; storage reads run in the server's read threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from aiohttp import web

from healthcheck.api import STATE, ApiState, BadRequest, iso, only, read_stored
from healthcheck.detail_json import (
    alert_json,
    check_summary,
    links,
    live_result,
    ms,
    newest_first,
    percentiles,
    point_json,
    sla_verdicts,
    status_periods,
    stored_result,
)
from healthcheck.result import EndpointId
from healthcheck.secrets import Redactor
from healthcheck.status import summarize_region
from healthcheck.targets import Endpoint, Region
from storage.detail import (
    MAX_EVENTS,
    SERIES,
    AlertEvent,
    Change,
    Point,
    Run,
    alert_events,
    all_down_spans,
    failed_checks,
    failure_runs,
    latency_series,
    latest_rows,
    status_changes,
)
from storage.uptime import WINDOWS, StorageReader

EVENT_DAYS = 30  # alert history shown; status changes go as far back as raw rows are kept


def add_detail_routes(app: web.Application) -> None:
    app.router.add_get("/endpoints/{region}/{name}", endpoint_page)
    app.router.add_get("/regions/{region}", region_page)
    app.router.add_get("/api/v1/endpoints/{region}/{name}", api_endpoint)
    app.router.add_get("/api/v1/endpoints/{region}/{name}/latency", api_endpoint_latency)
    app.router.add_get("/api/v1/endpoints/{region}/{name}/events", api_endpoint_events)
    app.router.add_get("/api/v1/regions/{region}", api_region)
    app.router.add_get("/api/v1/regions/{region}/latency", api_region_latency)
    app.router.add_get("/api/v1/regions/{region}/events", api_region_events)


class _NotFound(web.HTTPClientError):
    """404 naming nothing: an unknown region is not told apart from an unknown endpoint, and
    (unlike an unknown path) no list of paths comes with it."""

    status_code = 404

    def __init__(self) -> None:
        super().__init__(text='{"error": "not found"}', content_type="application/json")


# -- pages ---------------------------------------------------------------------------------------
_PAGES: dict[str, bytes] = {}


def _page(base: str) -> bytes:
    """The status page with a <base> that puts its relative API paths back at the root."""
    if base not in _PAGES:
        page = resources.files("healthcheck").joinpath("static/status.html").read_bytes()
        _PAGES[base] = page.replace(b"<head>", f'<head>\n<base href="{base}">'.encode(), 1)
    return _PAGES[base]


async def endpoint_page(request: web.Request) -> web.Response:
    _endpoint(request)
    return web.Response(body=_page("../../"), content_type="text/html", charset="utf-8")


async def region_page(request: web.Request) -> web.Response:
    _region(request)
    return web.Response(body=_page("../"), content_type="text/html", charset="utf-8")


# -- lookups -------------------------------------------------------------------------------------
def _region(request: web.Request) -> Region:
    wanted = request.match_info["region"]
    for region in request.app[STATE].config.regions:
        if region.name == wanted:
            return region
    if request.path.startswith("/api/"):
        raise _NotFound()
    raise web.HTTPNotFound(text="not found")


def _endpoint(request: web.Request) -> Endpoint:
    region, name = request.match_info["region"], request.match_info["name"]
    for endpoint in request.app[STATE].config.endpoints():
        if endpoint.region == region and endpoint.name == name:
            return endpoint
    if request.path.startswith("/api/"):
        raise _NotFound()
    raise web.HTTPNotFound(text="not found")


def _window(request: web.Request) -> str:
    only(request, "window")
    window = request.query.get("window", "24h")
    if window not in SERIES:
        raise BadRequest(f"window must be one of {', '.join(SERIES)}, got {window!r}")
    return window


def _stored_ids(reader: StorageReader, ids: Sequence[EndpointId]) -> dict[EndpointId, int]:
    rows = reader.db.execute("SELECT id, region, endpoint FROM targets").fetchall()
    wanted = set(ids)
    return {
        EndpointId(region, name): row
        for row, region, name in rows
        if EndpointId(region, name) in wanted
    }


# -- endpoint ------------------------------------------------------------------------------------
async def api_endpoint(request: web.Request) -> web.Response:
    only(request)
    endpoint = _endpoint(request)
    state = request.app[STATE]
    redact = Redactor(state.config.secrets)
    now = state.uptime.clock()
    snapshot = await state.uptime.get()
    report = snapshot.report if snapshot else None
    target_id = report.ids().get(endpoint.id) if report else None
    windows = report.endpoints.get(target_id) if report and target_id is not None else None
    latest = state.board.latest.get(endpoint.id)
    last: dict[str, Any] | None
    if latest is not None:
        last = live_result(latest[0], latest[1], endpoint, redact)
    else:

        def stored(reader: StorageReader) -> dict[str, Any] | None:
            found = _stored_ids(reader, [endpoint.id]).get(endpoint.id)
            return None if found is None else latest_rows(reader, found, now)

        row = await read_stored(request, stored)
        last = stored_result(row, redact) if row else None
    return web.json_response(
        {
            "region": endpoint.region,
            "endpoint": endpoint.name,
            "kind": endpoint.kind,
            "status": last["status"] if last else "unknown",
            "links": links(endpoint.region, endpoint.name),
            "check": check_summary(endpoint, redact),
            "last_result": last,
            "sla_target": state.config.sla_target,
            "uptime": sla_verdicts(windows, state.config.sla_target),
            "latency": percentiles(windows),
        }
    )


async def _latency(
    request: web.Request, state: ApiState, ids: Sequence[EndpointId], window: str
) -> dict[str, Any]:
    now = state.uptime.clock()
    width = SERIES[window][0]

    def read(reader: StorageReader) -> tuple[list[Point], list[Any], bool]:
        stored = list(_stored_ids(reader, ids).values())
        points = latency_series(reader, stored, window, now)
        failures, cut = failed_checks(reader, stored, points[0].start, now)
        return points, failures, cut

    points, failures, cut = await read_stored(request, read)
    redact = Redactor(state.config.secrets)
    return {
        "window": window,
        "bucket_s": width,
        "from": iso(points[0].start),
        "to": iso(now),
        "points": [point_json(point) for point in points],
        "failures": [
            {
                "ts": iso(f.ts),
                "latency_ms": f.latency_ms,
                "error": f.error,
                "error_detail": redact(f.error_text) if f.error_text else None,
            }
            for f in failures
        ],
        "failures_truncated": cut,
    }


async def api_endpoint_latency(request: web.Request) -> web.Response:
    endpoint = _endpoint(request)
    window = _window(request)
    state = request.app[STATE]
    body = await _latency(request, state, [endpoint.id], window)
    body["thresholds"] = check_summary(endpoint, str)["thresholds"]
    return web.json_response({"region": endpoint.region, "endpoint": endpoint.name, **body})


def _event_start(state: ApiState, now: float) -> float:
    return now - min(state.config.storage.retention_raw, EVENT_DAYS * 86400.0)


async def api_endpoint_events(request: web.Request) -> web.Response:
    only(request)
    endpoint = _endpoint(request)
    state = request.app[STATE]
    redact = Redactor(state.config.secrets)
    now = state.uptime.clock()
    since = _event_start(state, now)

    def read(reader: StorageReader) -> tuple[list[Change], list[AlertEvent]]:
        stored = list(_stored_ids(reader, [endpoint.id]).values())
        alerts = alert_events(reader, [str(endpoint.id)], now - EVENT_DAYS * 86400.0, now)
        return status_changes(reader, stored, since, now, MAX_EVENTS), alerts

    changes, alerts = await read_stored(request, read)
    events = status_periods(changes, now, redact) + [alert_json(event) for event in alerts]
    return web.json_response(
        {
            "region": endpoint.region,
            "endpoint": endpoint.name,
            "since": iso(since),
            "events": newest_first(events),
        }
    )


# -- region --------------------------------------------------------------------------------------
async def api_region(request: web.Request) -> web.Response:
    only(request)
    region = _region(request)
    state = request.app[STATE]
    snapshot = await state.uptime.get()
    report = snapshot.report if snapshot else None
    ids = report.ids() if report else {}
    target = state.config.sla_target
    rows, known = [], []
    for endpoint in region.endpoints:
        latest = state.board.latest.get(endpoint.id)
        if latest is not None:
            known.append((latest[0].ok, latest[1]))
        target_id = ids.get(endpoint.id)
        windows = report.endpoints.get(target_id) if report and target_id is not None else None
        verdicts = sla_verdicts(windows, target)
        rows.append(
            {
                "endpoint": endpoint.name,
                "kind": endpoint.kind,
                "status": latest[1].value if latest else "unknown",
                "latency_ms": ms(latest[0].latency) if latest else None,
                "last_check": iso(latest[0].timestamp) if latest else None,
                "uptime": {window: verdicts[window]["uptime"] for window in WINDOWS},
                "latency": percentiles(windows),
                "links": links(region.name, endpoint.name),
            }
        )
    summary = summarize_region(region.name, known) if known else None
    windows = report.regions.get(region.name) if report else None
    return web.json_response(
        {
            "region": region.name,
            "status": summary.status.value if summary else "unknown",
            "regional_failure": summary.regional_failure if summary else False,
            "links": links(region.name),
            "sla_target": target,
            "uptime": sla_verdicts(windows, target),
            "latency": percentiles(windows),
            "endpoints": rows,
        }
    )


async def api_region_latency(request: web.Request) -> web.Response:
    region = _region(request)
    window = _window(request)
    state = request.app[STATE]
    body = await _latency(request, state, [e.id for e in region.endpoints], window)
    body["thresholds"] = {"warning_ms": None, "critical_ms": None}
    return web.json_response({"region": region.name, **body})


async def api_region_events(request: web.Request) -> web.Response:
    """Regional failures (every endpoint failing at once, from the stored checks) and the
    region's own alerts (the regional-failure rule's), newest first."""
    only(request)
    region = _region(request)
    state = request.app[STATE]
    now = state.uptime.clock()
    since = _event_start(state, now)
    ids = [endpoint.id for endpoint in region.endpoints]

    def read(reader: StorageReader) -> tuple[list[Run], list[AlertEvent], dict[int, str]]:
        stored = _stored_ids(reader, ids)
        names = {row: endpoint_id.name for endpoint_id, row in stored.items()}
        alerts = alert_events(reader, [region.name], now - EVENT_DAYS * 86400.0, now)
        return failure_runs(reader, list(names), since, now), alerts, names

    runs, alerts, names = await read_stored(request, read)
    events: list[dict[str, Any]] = []
    for start, end in all_down_spans(runs, len(names)):
        until = end if end is not None else now
        errors = {
            f"{names[run.target_id]}: {error}"
            for run in runs
            if run.start < until and (run.end is None or run.end > start)
            for error in run.errors
        }
        events.append(
            {
                "type": "regional_failure",
                "ts": iso(start),
                "end": iso(end),
                "ongoing": end is None,
                "duration_s": round(until - start, 3),
                "endpoints": sorted(names.values()),
                "errors": sorted(errors),
            }
        )
    events += [alert_json(event) for event in alerts]
    return web.json_response(
        {"region": region.name, "since": iso(since), "events": newest_first(events)}
    )
