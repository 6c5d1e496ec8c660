"""Prometheus metrics with the project's own registry.

Per result, only a few integers and a float of the endpoint's own record change: no metric
object, no lock. A scrape takes a snapshot of those records, the status board and the uptime
cache (plain data, cheap to copy and to pickle) and renders it with prometheus_client, in the
daemon's helper process when it has one: at 10,000 endpoints a render is 270,000 lines and
seconds of Python that, in a thread of the daemon, would take the GIL from the probing loop.
"""

from __future__ import annotations

import logging
import os
import platform
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

from prometheus_client import ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from healthcheck import __version__
from healthcheck.exposition import Encoded, Labels, Samples, body
from healthcheck.offload import Offload, OffloadError
from healthcheck.probes.plugin import ENDPOINT_LABELS, Gauges, KindMetrics, Reading
from healthcheck.probes.registry import find_kind
from healthcheck.readings import Readings
from healthcheck.result import EndpointId, ProbeResult, Status
from healthcheck.status import StatusBoard, summarize_region
from healthcheck.targets import Config
from storage.packed import window_ratios

if TYPE_CHECKING:  # the helper process that renders needs neither (nor aiohttp, theirs)
    from healthcheck.connections import ConnectionGuard
    from healthcheck.server_threads import ServingCounts

log = logging.getLogger("healthcheck.exporter")

# 1 ms to 30 s, fit for loopback checks and slow far-away ones alike.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STATUSES = tuple(status.value for status in Status)
PHASES = ("dns", "connect", "first_byte", "total")


class _Histogram:
    """Counts per bucket (not cumulative; the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound counts in that bucket, as `le` says
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> tuple[tuple[int, ...], float]:
        return tuple(self.counts), self.total


def _declared_errors(kind: str) -> tuple[tuple[str, ...], dict[str, int]]:
    """The error classes a kind declares, and each one's index; one pair per kind, shared by
    its endpoints (so a scrape pickles the names once per kind, not once per endpoint)."""
    found = _DECLARED.get(kind)
    if found is None:
        probe = find_kind(kind)
        names = tuple(error.value for error in probe.errors) if probe else ()
        found = _DECLARED[kind] = (names, {name: i for i, name in enumerate(names)})
    return found


_DECLARED: dict[str, tuple[tuple[str, ...], dict[str, int]]] = {}


def _zeros(count: int) -> tuple[int, ...]:
    """One tuple of `count` zeros, shared by every endpoint with as many error classes."""
    found = _ZEROS.get(count)
    if found is None:
        found = _ZEROS[count] = (0,) * count
    return found


_ZEROS: dict[int, tuple[int, ...]] = {}


class _EndpointSeries:
    """One endpoint's counters and histograms, changed on the event loop's thread only.

    Error counts start at 0 for every class the kind declares: a counter born at its first
    error has no earlier sample, and increase() misses that error (seen on a real Prometheus:
    16 counted of 17 failures over 10 minutes, 0 after the first)."""

    __slots__ = (
        "duration",
        "error_index",
        "error_names",
        "errors",
        "failure",
        "histograms",
        "labels",
        "metrics",
        "success",
    )

    def __init__(self, labels: tuple[str, str, str], metrics: KindMetrics | None) -> None:
        self.labels = labels
        self.duration = _Histogram(DURATION_BUCKETS)
        self.metrics = metrics  # the kind's own families
        self.histograms = (
            tuple(_Histogram(h.buckets) for h in metrics.histograms) if metrics else ()
        )
        self.success = 0
        self.failure = 0
        self.error_names, self.error_index = _declared_errors(labels[2])
        # The kind's shared tuple of zeros until this endpoint's first error: most endpoints
        # never fail, and a list each was ~3 MB at 20,000 (and a copy in every scrape).
        self.errors: list[int] | tuple[int, ...] = _zeros(len(self.error_names))

    def count_error(self, error: str) -> None:
        index = self.error_index.get(error)
        errors = self.errors if type(self.errors) is list else list(self.errors)
        if index is None:  # a class the kind did not declare: counted from its first
            index = len(self.error_names)
            self.error_names = (*self.error_names, error)
            self.error_index = {**self.error_index, error: index}
            errors.append(0)
        errors[index] += 1
        self.errors = errors


# The last check of an endpoint as /metrics shows it: (ok, started at, status, HTTP status,
# cert expiry, (dns, connect, first_byte, total) or None, how long it took)
Last = tuple[bool, float, str, int | None, float | None, tuple[float | None, ...] | None, float]


# One endpoint in a scrape, a plain tuple (10,000 of them pickle in milliseconds; as objects,
# several times slower): labels, duration (counts, sum), the kind's own histograms ((counts,
# sum) each, in the order it declares them), successes, failures, ((error classes), (their
# counts)), the last check or None, and the kind's reading of the last result or None.
Row = tuple[
    tuple[str, str, str],
    tuple[tuple[int, ...], float],
    tuple[tuple[tuple[int, ...], float], ...],
    int,
    int,
    tuple[tuple[str, ...], tuple[int, ...]],
    Last | None,
    Any,
]


@dataclass(slots=True)
class Scrape:
    """Everything one /metrics render needs, as plain data: it may cross to another process."""

    pid: int
    rows: list[Row]
    lag: tuple[tuple[int, ...], float]
    endpoint_uptime: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    region_uptime: list[tuple[str, str, float]] = field(default_factory=list)
    sla_target: float = 0.0
    gauges: list[tuple[str, str, float]] = field(default_factory=list)  # name, help, value
    counters: list[tuple[str, str, float]] = field(default_factory=list)
    alerts_firing: dict[str, int] | None = None
    notifications: dict[str, tuple[int, int, int, int]] | None = None
    worker_restarts: dict[str, int] | None = None  # reason -> count
    blackbox_names: bool = False
    kinds: dict[str, KindMetrics] = field(default_factory=dict)  # the kinds' own families
    metric_labels: tuple[str, ...] = ()  # exporter.metric_labels
    # (region, endpoint) -> the values of metric_labels ("" where the endpoint has none)
    operator_labels: dict[tuple[str, str], list[str]] = field(default_factory=dict)


class Metrics:
    """Every healthcheck_* series; `observe` is the result sink, `render` the scrape."""

    def __init__(
        self,
        config: Config,
        board: StatusBoard,
        readings: Callable[[], Readings] | None = None,
        connections: ConnectionGuard | None = None,
        offload: Offload | None = None,
        serving: ServingCounts | None = None,
    ) -> None:
        """`readings()` gives the daemon's own numbers at scrape time; `connections` and
        `serving`, the HTTP server's (None: not running, and their series are left out)."""
        self.config = config
        self.board = board
        self.readings = readings
        self.connections = connections
        self.offload = offload
        self.serving = serving
        self.lag = _Histogram(LAG_BUCKETS)
        self._series: dict[EndpointId, _EndpointSeries] = {}
        self._uptime: tuple[object, Config, list[Any], list[Any]] | None = None
        self.update(config)

    def update(self, config: Config) -> None:
        """A (re)loaded configuration: series for new endpoints, none left for removed ones;
        the counters of an endpoint that stays go on."""
        self.config = config
        series = {}
        names = config.exporter.metric_labels
        self._operator_labels = {
            (e.region, e.name): [dict(e.labels).get(name, "") for name in names]
            for e in config.endpoints()
            if names
        }
        for endpoint in config.endpoints():
            labels = (endpoint.region, endpoint.name, endpoint.kind)
            kept = self._series.get(endpoint.id)
            if kept is None or kept.labels != labels:
                kept = _EndpointSeries(labels, _kind_metrics(endpoint.kind))
            series[endpoint.id] = kept
        self._series = series

    def observe(self, result: ProbeResult, status: Status) -> None:
        """The result sink: a few integer updates."""
        series = self._series.get(result.target_id)
        if series is None:
            return
        series.duration.observe(result.latency)
        if series.metrics is not None:
            for histogram, declared in zip(
                series.histograms, series.metrics.histograms, strict=True
            ):
                value = declared.value(result)
                if value is not None:
                    histogram.observe(value)
        if result.ok:
            series.success += 1
        else:
            series.failure += 1
            if result.error is not None:
                series.count_error(result.error.value)

    def observe_lag(self, seconds: float) -> None:
        """How late a check started after its due time."""
        self.lag.observe(seconds)

    def render(self, accept: str | None, gzipped: bool = False) -> tuple[bytes, str]:
        """The exposition body and content type (OpenMetrics when the scraper asks for it),
        gzip-compressed if asked. Blocking: call it in a worker thread. Renders in the helper
        process if there is one: the daemon then never holds the whole text (23 MB at
        10,000 endpoints), only its gzip (~1 MB), as Prometheus asks for."""
        scrape = self.snapshot()
        if self.offload is not None:
            try:
                return self.offload.call(render, scrape, accept, gzipped)
            except OffloadError as exc:
                log.warning("rendering /metrics here instead: %s", exc)
        return render(scrape, accept, gzipped)

    def snapshot(self) -> Scrape:
        """The records, the board's last results and the daemon's readings, copied now."""
        latest = self.board.latest
        rows = []
        kinds: dict[str, KindMetrics] = {}
        for endpoint_id, series in list(self._series.items()):
            seen = latest.get(endpoint_id)
            last: Last | None = None
            reading = None
            metrics = series.metrics
            if metrics is not None:
                kinds[series.labels[2]] = metrics
            if seen is not None:
                result, status = seen
                phases = result.phases
                last = (
                    result.ok,
                    result.timestamp,
                    status.value,
                    result.http_status,
                    result.cert_expiry,
                    None if phases is None else tuple(getattr(phases, p) for p in PHASES),
                    result.latency,
                )
                if metrics is not None and metrics.reading is not None:
                    reading = metrics.reading(result)
            rows.append(
                (
                    series.labels,
                    series.duration.copy(),
                    tuple(histogram.copy() for histogram in series.histograms),
                    series.success,
                    series.failure,
                    (series.error_names, tuple(series.errors)),
                    last,
                    reading,
                )
            )
        scrape = Scrape(
            os.getpid(),
            rows,
            self.lag.copy(),
            sla_target=self.config.sla_target,
            blackbox_names=self.config.exporter.blackbox_names,
            kinds=kinds,
            metric_labels=self.config.exporter.metric_labels,
            operator_labels=self._operator_labels,
        )
        readings = self.readings() if self.readings is not None else Readings()
        self._add_uptime(scrape, readings)
        self._add_readings(scrape, readings)
        return scrape

    def _add_uptime(self, scrape: Scrape, readings: Readings) -> None:
        """Stored uptime of the configured endpoints and regions: the database keeps those a
        reload removed, whose series go with them."""
        report = readings.uptime
        if report is None:
            return
        config = self.config
        cached = self._uptime
        if cached is None or cached[0] is not report or cached[1] is not config:  # once per read
            configured = {series.labels[:2] for series in list(self._series.values())}
            regions_configured = {region.name for region in config.regions}
            endpoints = []
            for target_id, windows in report.endpoints.items():
                target = report.targets[target_id]
                if (target.region, target.endpoint) not in configured:
                    continue
                for window, ratio, _ in window_ratios(windows):
                    if ratio is not None:
                        row = (target.region, target.endpoint, target.kind, window, ratio)
                        endpoints.append(row)
            regions = [
                (region, window, tally.ratio)
                for region, windows in report.regions.items()
                if region in regions_configured
                for window, tally in windows.items()
                if tally.ratio is not None
            ]
            cached = self._uptime = (report, config, endpoints, regions)
        scrape.endpoint_uptime, scrape.region_uptime = cached[2], cached[3]

    def _add_readings(self, scrape: Scrape, daemon: Readings) -> None:
        """The daemon's own gauges and counters; a part that is not running has none."""
        connections, serving = self.connections, self.serving
        found = scrape.gauges
        found.append(
            (
                "healthcheck_endpoints_configured",
                "Endpoints in the running configuration",
                len(self.board.endpoints),
            )
        )
        if daemon.not_ready is not None:
            found.append(
                (
                    "healthcheck_up",
                    "1 if the daemon is ready (scheduler progressing, storage writable), "
                    "as /readyz",
                    0.0 if daemon.not_ready else 1.0,
                )
            )
        age = daemon.heartbeat_age
        if age is not None:
            found.append(
                (
                    "healthcheck_scheduler_heartbeat_age_seconds",
                    "Seconds since the scheduler's dispatcher last woke (it wakes each second)",
                    age,
                )
            )
        gauges = (
            ("healthcheck_probes_in_flight", "Checks running now", daemon.in_flight),
            ("healthcheck_asyncio_tasks", "Tasks on the daemon's event loop", daemon.asyncio_tasks),
            (
                "healthcheck_storage_queue_depth",
                "Results waiting for the database",
                daemon.storage_queue_depth,
            ),
            (
                "healthcheck_storage_writable",
                "1 if the last database write succeeded",
                daemon.storage_writable,
            ),
            (
                "healthcheck_exporter_connections",
                "Connections open to this HTTP server",
                connections.open if connections else None,
            ),
        )
        found.extend((name, text, float(read)) for name, text, read in gauges if read is not None)
        if daemon.reload is not None:
            ok, when = daemon.reload
            found.append(
                (
                    "healthcheck_config_last_reload_successful",
                    "1 if the last configuration (re)load was applied, 0 if it was rejected",
                    1.0 if ok else 0.0,
                )
            )
            found.append(
                (
                    "healthcheck_config_last_reload_success_timestamp_seconds",
                    "When a configuration was last loaded successfully",
                    when,
                )
            )
        counters = (
            (
                "healthcheck_storage_dropped_results",
                "Results dropped: storage queue full",
                daemon.storage_dropped,
            ),
            (
                "healthcheck_storage_written_results",
                "Results written to the database",
                daemon.storage_written,
            ),
            (
                "healthcheck_storage_file_replaced",
                "Times the database file was found removed, replaced or overwritten and made anew",
                daemon.storage_replaced,
            ),
            ("healthcheck_checks_dispatched", "Checks started by the scheduler", daemon.dispatched),
            (
                "healthcheck_checks_missed",
                "Scheduled runs skipped because the endpoint's previous check was still running",
                daemon.missed,
            ),
            (
                "healthcheck_alert_evaluations",
                "Alert evaluations made (one every alerting.evaluate_every while alerting is on)",
                daemon.alert_evaluations,
            ),
            (
                "healthcheck_prober_faults",
                "Checks that could not be made for the prober's own trouble (file descriptors, "
                "memory): no verdict about their targets",
                daemon.prober_faults,
            ),
            (
                "healthcheck_probe_results_dropped",
                "Results a probe worker dropped because the daemon did not read them in time "
                "(its loop stalled): no verdict was made from them",
                daemon.worker_results_dropped,
            ),
            (
                "healthcheck_exporter_connections_dropped",
                "Connections to this HTTP server evicted or refused at its cap (a flood)",
                connections.evicted + connections.refused if connections else None,
            ),
            (
                "healthcheck_exporter_renders",
                "/metrics renders made; concurrent scrapes share one",
                serving.renders if serving else None,
            ),
            (
                "healthcheck_exporter_scrapes_shared",
                "Scrapes of /metrics answered with a render made for another, in progress or "
                "finished within the last second",
                serving.scrapes_shared if serving else None,
            ),
            (
                "healthcheck_exporter_busy_responses",
                "Requests answered 503 with Retry-After: the server's renders or storage reads "
                "were at their bound",
                serving.busy if serving else None,
            ),
        )
        scrape.counters.extend(
            (name, text, float(read)) for name, text, read in counters if read is not None
        )
        if daemon.alerts_firing is not None:
            scrape.alerts_firing = dict(daemon.alerts_firing)
        if daemon.notifications is not None:
            scrape.notifications = dict(daemon.notifications)
        if daemon.worker_restarts is not None:
            scrape.worker_restarts = dict(daemon.worker_restarts)


def render(
    scrape: Scrape, accept: str | None, gzipped: bool = False, encoded: bool = True
) -> tuple[bytes, str]:
    """A scrape as the exposition format (module level: it runs in the helper process).
    `encoded`: the per-endpoint families' label sets encoded once and kept for the next
    render (healthcheck/exposition.py); False, every sample through prometheus_client's
    encoder (the reference the tests hold the other to)."""
    encoder, content_type = choose_encoder(accept or "")
    labels = Labels(encoder, content_type) if encoded else None
    # Families as they come, each let go once written (exposition.py: the body in chunks).
    families: Iterable[Metric | Encoded] = chain(
        _ScrapeCollector(scrape, labels).collect(),
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds: the
        # standard names every Prometheus dashboard knows, of the daemon's process.
        ProcessCollector(pid=lambda: scrape.pid, registry=None).collect(),
    )
    return body(families, encoder, labels, gzipped), content_type


def _le(bounds: tuple[float, ...]) -> list[str]:
    return [*(floatToGoString(bound) for bound in bounds), "+Inf"]


_DURATION_LE = _le(DURATION_BUCKETS)
_LAG_LE = _le(LAG_BUCKETS)


def _buckets(le: list[str], counts: Iterable[int]) -> list[tuple[str, float]]:
    cumulative = 0
    found = []
    for bound, count in zip(le, counts, strict=True):
        cumulative += count
        found.append((bound, float(cumulative)))
    return found


class _ScrapeCollector:
    """The families of one scrape; the per-endpoint ones filled through `Samples`."""

    def __init__(self, scrape: Scrape, labels: Labels | None = None) -> None:
        self.scrape = scrape
        self.labels = labels
        # The per-endpoint series' labels: region, endpoint, kind, then exporter.metric_labels.
        self.columns = (*ENDPOINT_LABELS, *scrape.metric_labels)
        self._operator = scrape.operator_labels
        self._blank = ("",) * len(scrape.metric_labels)  # an endpoint without the label

    def values(self, names: tuple[str, str, str]) -> tuple[str, ...]:
        """An endpoint's label values for `columns`."""
        if not self._blank:
            return names
        return (*names, *self._operator.get((names[0], names[1]), self._blank))

    def samples(
        self,
        family: GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily,
        extra: str | None = None,
    ) -> Samples:
        """A per-endpoint family to fill (its labels: `columns`, then `extra` if given)."""
        return Samples(family, self.columns, extra, self.labels)

    def describe(self) -> list[Metric]:
        return []  # unchecked: the set of series follows the configuration

    def collect(self) -> Iterator[Metric | Encoded]:
        yield from self._counted()
        yield from self._last_checks()
        if self.scrape.blackbox_names:
            yield from self._blackbox()
        yield from _kinds_gauges(self.scrape)
        yield from self._regions()
        yield from self._uptime()
        yield from self._daemon()

    def _counted(self) -> Iterator[Metric | Encoded]:
        scrape = self.scrape
        duration = self.samples(
            HistogramMetricFamily(
                "healthcheck_probe_duration_seconds",
                "How long each check took, retries included",
                labels=self.columns,
            ),
            "le",
        )
        checks = self.samples(
            CounterMetricFamily(
                "healthcheck_checks", "Checks run", labels=(*self.columns, "result")
            ),
            "result",
        )
        errors = self.samples(
            CounterMetricFamily(
                "healthcheck_check_errors",
                "Failed checks by error class",
                labels=(*self.columns, "error"),
            ),
            "error",
        )
        # The kinds' own histograms, one family per name (kinds may share one)
        kind_histograms: dict[str, Samples] = {}
        les: dict[tuple[float, ...], list[str]] = {}
        for metrics in scrape.kinds.values():
            for declared in metrics.histograms:
                if declared.name not in kind_histograms:
                    kind_histograms[declared.name] = self.samples(
                        HistogramMetricFamily(declared.name, declared.help, labels=self.columns),
                        "le",
                    )
                les.setdefault(declared.buckets, _le(declared.buckets))
        # Each family written in a pass of its own as the body takes it (exposition.py)
        yield duration.stream(self._durations(duration))
        yield checks.stream(self._checks(checks))
        yield errors.stream(self._errors(errors))
        for name, histogram in kind_histograms.items():
            yield histogram.stream(self._kind_histograms(name, histogram, les))
        lag = HistogramMetricFamily(
            "healthcheck_schedule_lag_seconds", "How late each check started after its due time"
        )
        counts, total = scrape.lag
        lag.add_metric([], _buckets(_LAG_LE, counts), total)
        yield lag
        build = GaugeMetricFamily(
            "healthcheck_build_info", "Version of the running daemon", labels=("version", "python")
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build

    def _last_checks(self) -> Iterator[Metric | Encoded]:
        success = self.samples(
            GaugeMetricFamily(
                "healthcheck_probe_success", "1 if the last check succeeded", labels=self.columns
            )
        )
        http_status = self.samples(
            GaugeMetricFamily(
                "healthcheck_probe_http_status_code",
                "HTTP status of the last check",
                labels=self.columns,
            )
        )
        cert = self.samples(
            GaugeMetricFamily(
                "healthcheck_tls_cert_expiry_timestamp_seconds",
                "When the peer certificate seen by the last check expires",
                labels=self.columns,
            )
        )
        phases = self.samples(
            GaugeMetricFamily(
                "healthcheck_probe_phase_duration_seconds",
                "Time per phase of the last HTTP check",
                labels=(*self.columns, "phase"),
            ),
            "phase",
        )
        last_check = self.samples(
            GaugeMetricFamily(
                "healthcheck_probe_last_check_timestamp_seconds",
                "When the last check of the endpoint started: a stale value means it stalled",
                labels=self.columns,
            )
        )
        endpoint_status = self.samples(
            GaugeMetricFamily(
                "healthcheck_endpoint_status",
                "1 for the endpoint's current status, 0 for the others",
                labels=(*self.columns, "status"),
            ),
            "status",
        )
        yield success.stream(self._last(success, _succeeded))
        yield last_check.stream(self._last(last_check, _started))
        yield http_status.stream(self._last(http_status, _http_status))
        yield cert.stream(self._last(cert, _cert_expiry))
        yield phases.stream(self._phases(phases))
        yield endpoint_status.stream(self._statuses(endpoint_status))

    def _blackbox(self) -> Iterator[Metric | Encoded]:
        """blackbox_exporter's names and meanings, per endpoint, for what was built on them:
        the last check's success, duration (a gauge), HTTP status (0 without an answer, on
        http checks) and the peer certificate's expiry (its earliest: we see the leaf)."""
        columns = self.columns
        success = self.samples(
            GaugeMetricFamily(
                "probe_success",
                "As blackbox_exporter: 1 if the last check succeeded",
                labels=columns,
            )
        )
        duration = self.samples(
            GaugeMetricFamily(
                "probe_duration_seconds",
                "As blackbox_exporter: how long the last check took, retries included",
                labels=columns,
            )
        )
        http_status = self.samples(
            GaugeMetricFamily(
                "probe_http_status_code",
                "As blackbox_exporter: HTTP status of the last check, 0 if no answer",
                labels=columns,
            )
        )
        expiry = self.samples(
            GaugeMetricFamily(
                "probe_ssl_earliest_cert_expiry",
                "As blackbox_exporter: when the peer certificate seen by the last check expires",
                labels=columns,
            )
        )
        yield success.stream(self._last(success, _succeeded))
        yield duration.stream(self._last(duration, _took))
        yield http_status.stream(self._blackbox_http_status(http_status))
        yield expiry.stream(self._last(expiry, _cert_expiry))

    def _blackbox_http_status(self, http_status: Samples) -> Iterator[None]:
        """0 without an answer, on http checks; other kinds' only where they have one."""
        for labels, last in self._lasts():
            if last[3] is not None or labels[2] == "http":
                http_status.add(labels, last[3] or 0)
            yield

    def _durations(self, duration: Samples) -> Iterator[None]:
        values = self.values
        for names, (counts, total), *_ in self.scrape.rows:
            duration.histogram(values(names), _DURATION_LE, counts, total)
            yield

    def _checks(self, checks: Samples) -> Iterator[None]:
        values = self.values
        for names, _, _, ok, failed, *_ in self.scrape.rows:
            labels = values(names)
            checks.add(labels, ok, "success")
            checks.add(labels, failed, "failure")
            yield

    def _errors(self, errors: Samples) -> Iterator[None]:
        values = self.values
        for names, _, _, _, _, (classes, seen), *_ in self.scrape.rows:
            labels = values(names)
            for error, count in zip(classes, seen, strict=True):
                errors.add(labels, count, error)
            yield

    def _kind_histograms(
        self, name: str, histogram: Samples, les: dict[tuple[float, ...], list[str]]
    ) -> Iterator[None]:
        """The samples of the kinds' histogram family `name`, endpoint by endpoint."""
        kinds = self.scrape.kinds
        for names, _, own, *_ in self.scrape.rows:
            if not own:
                continue
            labels = self.values(names)
            for declared, (counts, total) in zip(kinds[names[2]].histograms, own, strict=True):
                if declared.name == name:
                    histogram.histogram(labels, les[declared.buckets], counts, total)
            yield

    def _last(self, samples: Samples, value: Callable[[Last], float | None]) -> Iterator[None]:
        """One sample per endpoint checked, `value` of its last check (None: no sample)."""
        for labels, last in self._lasts():
            found = value(last)
            if found is not None:
                samples.add(labels, found)
            yield

    def _lasts(self) -> Iterator[tuple[tuple[str, ...], Last]]:
        """(label values, last check) of each endpoint checked since the start."""
        values = self.values
        for row in self.scrape.rows:
            last = row[6]
            if last is not None:
                yield values(row[0]), last

    def _phases(self, phases: Samples) -> Iterator[None]:
        for labels, last in self._lasts():
            seconds = last[5]
            if seconds is not None:
                for phase, phase_seconds in zip(PHASES, seconds, strict=True):
                    if phase_seconds is not None:
                        phases.add(labels, phase_seconds, phase)
            yield

    def _statuses(self, endpoint_status: Samples) -> Iterator[None]:
        for labels, last in self._lasts():
            status = last[2]
            for value in STATUSES:
                endpoint_status.add(labels, 1 if status == value else 0, value)
            yield

    def _regions(self) -> Iterator[Metric]:
        by_region: dict[str, list[tuple[bool, Status]]] = {}
        for row in self.scrape.rows:
            names, last = row[0], row[6]
            if last is not None:
                by_region.setdefault(names[0], []).append((last[0], Status(last[2])))
        region_status = GaugeMetricFamily(
            "healthcheck_region_status",
            "1 for the region's current status, 0 for the others",
            labels=("region", "status"),
        )
        failure = GaugeMetricFamily(
            "healthcheck_region_regional_failure",
            "1 while every endpoint of the region is down",
            labels=("region",),
        )
        for region, checks in by_region.items():
            summary = summarize_region(region, checks)
            for value in STATUSES:
                region_status.add_metric([region, value], 1.0 if summary.status == value else 0.0)
            failure.add_metric([region], 1.0 if summary.regional_failure else 0.0)
        yield region_status
        yield failure

    def _uptime(self) -> Iterator[Metric | Encoded]:
        scrape = self.scrape
        endpoint_uptime = self.samples(
            GaugeMetricFamily(
                "healthcheck_uptime_ratio",
                "Successful checks / checks over the window (degraded counts as up)",
                labels=(*self.columns, "window"),
            ),
            "window",
        )
        region_uptime = GaugeMetricFamily(
            "healthcheck_region_uptime_ratio",
            "Successful checks / checks of all the region's endpoints over the window",
            labels=("region", "window"),
        )
        yield endpoint_uptime.stream(self._endpoint_uptime(endpoint_uptime))
        for region, window, ratio in scrape.region_uptime:
            region_uptime.add_metric([region, window], ratio)
        yield region_uptime
        yield GaugeMetricFamily(
            "healthcheck_sla_target_ratio",
            "The configured SLA uptime target",
            value=scrape.sla_target,
        )

    def _endpoint_uptime(self, endpoint_uptime: Samples) -> Iterator[None]:
        values = self.values
        for region, endpoint, kind, window, ratio in self.scrape.endpoint_uptime:
            endpoint_uptime.add(values((region, endpoint, kind)), ratio, window)
            yield

    def _daemon(self) -> Iterator[Metric]:
        scrape = self.scrape
        for name, text, value in scrape.gauges:
            yield GaugeMetricFamily(name, text, value=value)
        for name, text, value in scrape.counters:
            yield CounterMetricFamily(name, text, value=value)
        if scrape.alerts_firing is not None:
            firing = GaugeMetricFamily(
                "healthcheck_alerts_firing", "Alerts firing now", labels=("severity",)
            )
            for severity, count in scrape.alerts_firing.items():
                firing.add_metric([severity], count)
            yield firing
        if scrape.worker_restarts is not None:
            restarts = CounterMetricFamily(
                "healthcheck_probe_worker_restarts",
                "Probe worker processes restarted, by why: exited, killed (by a signal the "
                "daemon did not send), wedged, start_timeout, start_failed",
                labels=("reason",),
            )
            for reason, count in scrape.worker_restarts.items():
                restarts.add_metric([reason], count)
            yield restarts
        if scrape.notifications is not None:
            sent = CounterMetricFamily(
                "healthcheck_notifications",
                "Notifications per channel: sent (accepted), failed (attempts refused) or "
                "timeout (no answer in time: it may have arrived)",
                labels=("channel", "result"),
            )
            pending = GaugeMetricFamily(
                "healthcheck_notifications_pending",
                "Notifications in the outbox not yet accepted by the channel",
                labels=("channel",),
            )
            for channel, (ok, failed, timed_out, waiting) in scrape.notifications.items():
                sent.add_metric([channel, "sent"], ok)
                sent.add_metric([channel, "failed"], failed)
                sent.add_metric([channel, "timeout"], timed_out)
                pending.add_metric([channel], waiting)
            yield sent
            yield pending


def _succeeded(last: Last) -> float:
    return 1 if last[0] else 0


def _started(last: Last) -> float:
    return last[1]


def _http_status(last: Last) -> float | None:
    return last[3]


def _cert_expiry(last: Last) -> float | None:
    return last[4]


def _took(last: Last) -> float:
    return last[6]


def _kinds_gauges(scrape: Scrape) -> Iterator[Metric]:
    """The gauge families the kinds render from their endpoints' readings: each gauges
    function once, over the endpoints of every kind that declares it; families of one name
    from several functions as one."""
    readings: dict[Callable[[list[Reading]], Iterable[Gauges]], list[Reading]] = {}
    for declared in scrape.kinds.values():
        if declared.gauges is not None:
            readings.setdefault(declared.gauges, [])
    for row in scrape.rows:
        names, last, reading = row[0], row[6], row[7]
        metrics = scrape.kinds.get(names[2])
        if metrics is None or metrics.gauges is None or last is None or reading is None:
            continue
        readings[metrics.gauges].append((names, last[1], reading))
    families: dict[str, GaugeMetricFamily] = {}
    for gauges, rows in readings.items():
        for found in gauges(rows):
            family = families.get(found.name)
            if family is None:
                family = families[found.name] = GaugeMetricFamily(
                    found.name, found.help, labels=found.labels
                )
            for labels, value in found.samples:
                family.add_metric(labels, value)
    yield from families.values()


def _kind_metrics(kind: str) -> KindMetrics | None:
    probe = find_kind(kind)
    return probe.metrics if probe is not None else None
