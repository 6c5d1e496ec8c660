"""The daemon's HTTP server: /metrics, /healthz, /readyz, the JSON API and the status page.

Readers only: nothing here probes, and nothing here takes a URL from a request. Bad query
parameters get a 400 with a JSON error, never a 500.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from typing import Any, TypeVar, overload

from aiohttp import web

from healthcheck.durations import parse_duration
from healthcheck.errors import StorageError
from healthcheck.exporter import Metrics
from healthcheck.result import EndpointId, ProbeResult, Status
from healthcheck.running_config import RunningConfig
from healthcheck.server_threads import ServerBusy, ServerThreads, ServingCounts
from healthcheck.shared_renders import Body, SharedRenders
from healthcheck.status import StatusBoard, latency_note, summarize_region, worst
from healthcheck.targets import Config, ExporterSettings
from healthcheck.uptime_cache import HISTORY_DAYS, UptimeCache
from storage.rollup import Tally, bucket_of
from storage.uptime import (
    WINDOWS,
    Day,
    StorageReader,
    UptimeReport,
    alert_rows,
    result_page,
)

log = logging.getLogger("healthcheck.api")

MAX_PAGE = 1000
ALERT_STATES = ("pending", "firing", "resolved")
SEVERITIES = ("critical", "warning", "info")
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# Open without the exporter's auth: a push URL carries its own secret (healthcheck.push_api).
OPEN_PREFIXES = ("/api/v1/push/",)
BADGES_PREFIX = "/badges/"  # open with exporter.public_badges (healthcheck.badges)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


@dataclass(slots=True)
class ApiState:
    configs: RunningConfig  # read at each request: a reload publishes there
    board: StatusBoard
    metrics: Metrics
    uptime: UptimeCache
    storage_path: str
    not_ready: Callable[[], list[str]]  # reasons the daemon is not ready; empty when ready
    renders: SharedRenders  # /metrics: concurrent scrapes share one render
    reads: ServerThreads  # the server's own threads for storage reads, bounded
    # /api/v1/status: shared renders in `reads` (one bound on them and the reads), reused 1 s
    views: SharedRenders
    # /api/v1/results: the same, but not reused: a row seen stored is in the next answer
    pages: SharedRenders
    counts: ServingCounts  # what the bounds did, for /metrics
    self_report: Callable[[], dict[str, Any]] | None = None  # the daemon's own numbers

    @property
    def config(self) -> Config:
        return self.configs.config


STATE = web.AppKey("state", ApiState)


class BadRequest(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


def build_app(state: ApiState) -> web.Application:
    app = web.Application(middlewares=[_errors, _auth(state.config.exporter)])
    app[STATE] = state
    app.router.add_get("/", status_page)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_get("/api/v1/sla/status", api_sla)
    app.router.add_get("/api/v1/alerts", api_alerts)
    app.router.add_get("/api/v1/results", api_results)
    app.router.add_get("/api/v1/self", api_self)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        if not request.path.startswith("/api/"):
            raise
        # Scripts get JSON they can parse, naming what exists, not aiohttp's text page.
        message = f"no such API path: {request.method} {request.path}" + (
            "" if exc.status == 404 else " (only GET)"
        )
        paths = sorted(r.resource.canonical for r in request.app.router.routes() if r.resource)
        api = [path for path in paths if path.startswith("/api/")]
        return web.json_response({"error": message, "paths": api}, status=exc.status)
    except ServerBusy as exc:
        # Bounded work: past the bound a 503, not a place in a queue. It is sent when asking
        # again makes sense (Retry-After): sent at once, 50 clients that retry at once made
        # 170 refused scrapes a second, and serving them cost the probing loop +70 ms at p50.
        request.app[STATE].counts.busy += 1
        await asyncio.sleep(exc.retry_after)
        return web.json_response(
            {"error": str(exc)},
            status=503,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except web.HTTPException:
        raise
    except Exception:
        log.exception("API request failed", extra={"event": "api_error", "path": request.path})
        return web.json_response({"error": "internal error; see the daemon's log"}, status=500)


def _auth(settings: ExporterSettings) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Bearer token or basic auth from config; /healthz and /readyz stay open for probes."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not settings.auth_required or _open(request.path, settings):
            return await handler(request)
        if request.path == "/metrics" and not settings.protect_metrics:
            return await handler(request)
        if _authorized(request.headers.get("Authorization", ""), settings):
            return await handler(request)
        scheme = "Bearer" if settings.bearer_token is not None else "Basic"
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "authentication required"}),
            content_type="application/json",
            headers={"WWW-Authenticate": f'{scheme} realm="healthcheck"'},
        )

    return check


def _open(path: str, settings: ExporterSettings) -> bool:
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return True
    return settings.public_badges and path.startswith(BADGES_PREFIX)


def _authorized(header: str, settings: ExporterSettings) -> bool:
    scheme, _, value = header.partition(" ")
    if settings.bearer_token is not None:
        expected = settings.bearer_token.reveal().encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), expected)
    if scheme.lower() != "basic" or settings.password is None or settings.username is None:
        return False
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(user.encode(), settings.username.encode())
    password_ok = hmac.compare_digest(password.encode(), settings.password.reveal().encode())
    return user_ok and password_ok


# -- plain endpoints -----------------------------------------------------------------------------
_PAGE: bytes | None = None


async def status_page(_request: web.Request) -> web.Response:
    global _PAGE
    if _PAGE is None:
        _PAGE = resources.files("healthcheck").joinpath("static/status.html").read_bytes()
    return web.Response(body=_PAGE, content_type="text/html", charset="utf-8")


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await state.uptime.first_read()  # just (re)started: the stored uptime, not a gap
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    body, content_type = await state.renders.scrape(request.headers.get("Accept"), gzipped)
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    reasons = request.app[STATE].not_ready()
    if reasons:
        return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


async def api_self(request: web.Request) -> web.Response:
    """The daemon's own health and cost: dispatches, missed runs, lag, RSS, fds, tasks."""
    only(request)
    report = request.app[STATE].self_report
    if report is None:
        raise web.HTTPNotFound()
    return web.json_response(report())


# -- JSON API ------------------------------------------------------------------------------------
def only(request: web.Request, *allowed: str) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise BadRequest(f"unknown query parameter {unknown[0]!r} (accepted: {accepted})")


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _empty_days(now: float) -> list[Day]:
    """HISTORY_DAYS days with no checks, so the strip is always whole."""
    first = bucket_of(now, 86400) - (HISTORY_DAYS - 1) * 86400
    return [Day(first + i * 86400, 0, 0) for i in range(HISTORY_DAYS)]


def _ratios(windows: Mapping[str, Tally] | None) -> dict[str, float | None]:
    windows = windows or {}
    return {w: (None if w not in windows else windows[w].ratio) for w in WINDOWS}


JSON = "application/json; charset=utf-8"  # what web.json_response sends


def _json(body: Any) -> Body:
    return json.dumps(body).encode(), JSON


def _respond(body: Body) -> web.Response:
    return web.Response(body=body[0], headers={"Content-Type": body[1]})


@dataclass(frozen=True, slots=True)
class StatusView:
    """What /api/v1/status shows, taken on the event loop in one go (copies of references,
    no building): everything in it is immutable or replaced, never changed, by its owner."""

    config: Config
    latest: dict[EndpointId, tuple[ProbeResult, Status]]
    report: UptimeReport | None
    history: dict[int, list[Day]]
    now: float


def render_status(view: StatusView) -> Body:
    """The /api/v1/status body, in a server thread.

    Byte for byte `json.dumps` of the document, but written in pieces: the 90 daily bars of
    every endpoint are most of it (52 MB at 10,000 endpoints), and the same few bars recur
    across endpoints, so each distinct bar is encoded once (4.0 s -> 1.4 s at 10,000)."""
    report, history, now = view.report, view.history, view.now
    ids = report.ids() if report else {}
    bars: dict[tuple[int, int, int], str] = {}  # (day, checks, successes) -> its JSON

    def bar(day: Day) -> str:
        key = (day.day, day.checks, day.successes)
        text = bars.get(key)
        if text is None:
            text = bars[key] = json.dumps(
                {
                    "day": datetime.fromtimestamp(day.day, UTC).date().isoformat(),
                    "uptime": day.successes / day.checks if day.checks else None,
                    "checks": day.checks,
                }
            )
        return text

    no_days = "[" + ", ".join(bar(day) for day in _empty_days(now)) + "]"
    no_ratios = json.dumps(_ratios(None))
    regions = []
    statuses = []
    for region in view.config.regions:
        rows, known = [], []
        for endpoint in region.endpoints:
            target_id = ids.get(endpoint.id)
            latest = view.latest.get(endpoint.id)
            result, status = latest if latest else (None, None)
            if latest:
                known.append((latest[0].ok, latest[1]))
                statuses.append(latest[1])
            windows = report.endpoints.get(target_id) if report and target_id else None
            days = history.get(target_id) if target_id else None
            row = json.dumps(
                {
                    "endpoint": endpoint.name,
                    "kind": endpoint.kind,
                    "status": status.value if status else "unknown",
                    "latency_ms": round(result.latency * 1000, 2) if result else None,
                    "last_check": iso(result.timestamp) if result else None,
                    "error": result.error.value if result and result.error else None,
                    "error_detail": (result.error_text or latency_note(result, endpoint))
                    if result
                    else None,
                }
            )
            if windows:
                uptime = json.dumps(_ratios(windows))
                p95 = json.dumps(
                    {
                        w: (None if w not in windows else windows[w].percentile(0.95))
                        for w in WINDOWS
                    }
                )
            else:
                uptime = p95 = no_ratios
            strip = "[" + ", ".join(bar(day) for day in days) + "]" if days else no_days
            rows.append(f'{row[:-1]}, "uptime": {uptime}, "p95_ms": {p95}, "history": {strip}}}')
        summary = summarize_region(region.name, known) if known else None
        head = json.dumps(
            {
                "name": region.name,
                "status": summary.status.value if summary else "unknown",
                "regional_failure": summary.regional_failure if summary else False,
                "uptime": _ratios(report.regions.get(region.name) if report else None),
            }
        )
        regions.append(f'{head[:-1]}, "endpoints": [{", ".join(rows)}]}}')
    overall = worst(statuses).value if statuses else "unknown"
    head = json.dumps(
        {
            "generated_at": iso(now),
            "status": overall,
            "uptime": _ratios(report.overall if report else None),
        }
    )
    return f'{head[:-1]}, "regions": [{", ".join(regions)}]}}'.encode(), JSON


async def api_status(request: web.Request) -> web.Response:
    """Built from a snapshot in a server thread, shared by the requests that ask meanwhile
    and reused for FRESH_FOR (1 s) while the configuration is the same (shared_renders)."""
    only(request)
    state = request.app[STATE]
    snapshot = await state.uptime.get()
    history = await state.uptime.history()
    config = state.config

    def prepare() -> Callable[[], Body]:
        view = StatusView(
            config,
            state.board.snapshot(),
            snapshot.report if snapshot else None,
            history,
            state.uptime.clock(),
        )
        return partial(render_status, view)

    return _respond(await state.views.share("status", prepare, stamp=config, what=request.path))


async def api_sla(request: web.Request) -> web.Response:
    only(request, "region", "window")
    state = request.app[STATE]
    window = request.query.get("window", "30d")
    if window not in WINDOWS:
        raise BadRequest(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    names = [region.name for region in state.config.regions]
    region_filter = request.query.get("region")
    if region_filter is not None and region_filter not in names:
        raise BadRequest(f"unknown region {region_filter!r} (regions: {', '.join(names)})")
    snapshot = await state.uptime.get()
    report = snapshot.report if snapshot else None
    target = state.config.sla_target

    def verdict(tally: Tally | None) -> dict[str, Any]:
        uptime = tally.ratio if tally is not None else None
        budget = error_budget_left(uptime, target)
        return {
            "uptime": uptime,
            "checks": round(tally.checks) if tally is not None else 0,
            "met": None if uptime is None else uptime >= target,
            "error_budget_remaining": budget,
        }

    regions = [
        {"region": name, **verdict(report.regions.get(name, {}).get(window) if report else None)}
        for name in names
        if region_filter in (None, name)
    ]
    body = {"window": window, "target": target, "regions": regions}
    if region_filter is None:
        body["overall"] = verdict(report.overall.get(window) if report else None)
    return web.json_response(body)


BUDGET_DECIMALS = 4  # the share of the error budget left, to a hundredth of a percent


def error_budget_left(uptime: float | None, target: float) -> float | None:
    """The share of the error budget left: 1 untouched, 0 spent, below 0 overspent (-999: a
    thousand times over). Rounded: the float's noise (-998.9999999999991) means nothing."""
    if uptime is None or target >= 1:
        return None
    return round(1 - (1 - uptime) / (1 - target), BUDGET_DECIMALS) + 0.0  # no -0.0


async def read_stored(request: web.Request, query: Callable[[StorageReader], Any]) -> Any:
    """A storage read in the server's own threads; 503 when they are at their bound."""
    state, request_path = request.app[STATE], request.path
    with _storage_unavailable():
        return await state.reads.run(request_path, partial(_read, state, query))


def _read(state: ApiState, query: Callable[[StorageReader], T]) -> T:
    """In a server thread: one query on a reader of its own."""
    reader = StorageReader(state.storage_path, state.config.storage.retention_raw)
    try:
        return query(reader)
    finally:
        reader.close()


@contextmanager
def _storage_unavailable() -> Iterator[None]:
    try:
        yield
    except StorageError as exc:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": f"storage unavailable: {exc}"}),
            content_type="application/json",
        ) from None


async def api_alerts(request: web.Request) -> web.Response:
    only(request, "state", "severity")
    wanted_state = _choice(request, "state", ALERT_STATES)
    severity = _choice(request, "severity", SEVERITIES)
    rows = await read_stored(request, lambda reader: alert_rows(reader, wanted_state, severity))
    for row in rows:
        row["since"] = iso(row["since"])
        row["last_change"] = iso(row["last_change"])
        # The column holds the alert's stored facts; only the operator's labels are "labels".
        facts = json.loads(row["labels"]) if row["labels"] else {}
        row["labels"] = facts.get("labels", {})
        row["region"] = facts.get("region") or None
        # The firing alert (rule:target) this one is held behind, not sent on its own.
        row["suppressed_by"] = facts.get("suppressed_by")
    return web.json_response({"alerts": rows})


def _since(text: str, now: float) -> float:
    """An ISO 8601 time, epoch seconds, or a duration meaning that long ago (`1h`)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        pass
    try:
        return now - parse_duration(text)
    except ValueError:
        raise BadRequest(
            f"since must be an ISO 8601 time, epoch seconds or a duration like 1h, got {text!r}"
        ) from None


@overload
def _positive_int(request: web.Request, name: str, default: int, most: int) -> int: ...
@overload
def _positive_int(request: web.Request, name: str, default: None, most: int) -> int | None: ...
def _positive_int(request: web.Request, name: str, default: int | None, most: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise BadRequest(f"{name} must be a whole number from 1 to {most}, got {text!r}")
    return int(text)


async def api_results(request: web.Request) -> web.Response:
    only(request, "endpoint", "region", "since", "limit", "cursor")
    state = request.app[STATE]
    region = request.query.get("region")
    endpoint = request.query.get("endpoint")
    if endpoint is not None and "/" in endpoint:
        wanted = EndpointId.parse(endpoint)
        region, endpoint = wanted.region, wanted.name
    known = {(e.region, e.name) for e in state.config.endpoints()}
    if region is not None and region not in {r for r, _ in known}:
        raise BadRequest(f"unknown region {region!r}")
    if endpoint is not None and not any(
        name == endpoint and region in (None, r) for r, name in known
    ):
        raise BadRequest(f"unknown endpoint {endpoint!r}; use region/endpoint, e.g. us-west/api")
    since = request.query.get("since")
    since_ts = _since(since, state.uptime.clock()) if since is not None else None
    limit = _positive_int(request, "limit", 100, MAX_PAGE)
    cursor = _positive_int(request, "cursor", None, 2**62)
    # The same page asked for at once (a dashboard's many viewers) is read once; reading and
    # encoding are in a server thread, never on the loop. Not reused once answered: a client
    # that saw a row stored (or a check logged) must find it in the next page it asks for.
    page = (region, endpoint, since, limit, cursor)

    def prepare() -> Callable[[], Body]:
        query = partial(
            result_page,
            region=region,
            endpoint=endpoint,
            since=since_ts,
            before_id=cursor,
            limit=limit,
        )
        return partial(_render_results, state, query, limit)

    with _storage_unavailable():
        body = await state.pages.share(
            ("results", page), prepare, stamp=state.config, what=request.path
        )
    return _respond(body)


def _render_results(
    state: ApiState, query: Callable[[StorageReader], list[dict[str, Any]]], limit: int
) -> Body:
    """The /api/v1/results body, in a server thread."""
    rows = _read(state, query)
    for row in rows:
        row["ts"] = iso(row["ts"])
        row["ok"] = bool(row["ok"])
    next_cursor = rows[-1]["id"] if len(rows) == limit else None
    return _json({"results": rows, "next_cursor": next_cursor})
