"""Prometheus metrics with the project's own registry.

Per result, only a histogram observation and two counters are touched (children created once
per endpoint); gauges are read from the status board and the uptime cache at scrape time, so
the probe loop pays almost nothing for metrics whatever the fleet size.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from healthcheck import __version__
from healthcheck.result import CANARY_KINDS, ErrorClass, ProbeResult, Status
from healthcheck.status import StatusBoard, summarize_region
from healthcheck.targets import Config

# One inference: from a fraction of a millisecond (a small net on a GPU) to seconds.
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# 1 ms to 30 s, fit for loopback checks and slow far-away ones alike.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STATUSES = tuple(status.value for status in Status)
ENDPOINT_LABELS = ("region", "endpoint", "kind")


@dataclass(slots=True)
class _EndpointSeries:
    labels: tuple[str, str, str]
    duration: Any
    inference: Any
    success: Any
    failure: Any
    errors: Callable[[str], Any]


@dataclass(slots=True)
class DaemonGauges:
    """Readings of the daemon's own parts, supplied at scrape time (None: not running)."""

    in_flight: Callable[[], int] | None = None
    storage_queue_depth: Callable[[], int] | None = None
    storage_writable: Callable[[], bool] | None = None
    storage_dropped: Callable[[], int] | None = None
    storage_written: Callable[[], int] | None = None
    uptime: Callable[[], Any] | None = None  # -> UptimeReport or None
    alerts_firing: Callable[[], dict[str, int]] | None = None  # severity -> count
    # channel -> (sent, failed, pending)
    notifications: Callable[[], dict[str, tuple[int, int, int]]] | None = None
    reload: Callable[[], tuple[bool, float]] | None = None  # last reload ok, when (epoch s)
    not_ready: Callable[[], list[str]] | None = None  # why /readyz says 503; empty: ready
    heartbeat_age: Callable[[], float | None] | None = None  # s since the dispatcher woke
    dispatched: Callable[[], int] | None = None  # checks started
    missed: Callable[[], int] | None = None  # runs skipped: the previous check still running
    asyncio_tasks: Callable[[], int] | None = None


class Metrics:
    """Every healthcheck_* series; `observe` is the result sink, `render` the scrape."""

    def __init__(self, config: Config, board: StatusBoard, gauges: DaemonGauges | None = None):
        # A process-wide client setting: *_created series double the series count for nothing
        # the rules or dashboard use.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.config = config
        self.board = board
        self.gauges = gauges or DaemonGauges()
        r = self.registry
        self.duration = Histogram(
            "healthcheck_probe_duration_seconds",
            "How long each check took, retries included",
            ENDPOINT_LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.checks = Counter(
            "healthcheck_checks", "Checks run", (*ENDPOINT_LABELS, "result"), registry=r
        )
        self.errors = Counter(
            "healthcheck_check_errors",
            "Failed checks by error class",
            (*ENDPOINT_LABELS, "error"),
            registry=r,
        )
        self.inference = Histogram(
            "healthcheck_inference_duration_seconds",
            "One canary inference of the fixed input (remote: the infer call)",
            ENDPOINT_LABELS,
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.schedule_lag = Histogram(
            "healthcheck_schedule_lag_seconds",
            "How late each check started after its due time",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        Gauge(
            "healthcheck_build_info",
            "Version of the running daemon",
            ("version", "python"),
            registry=r,
        ).labels(__version__, platform.python_version()).set(1)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds: the
        # standard names every Prometheus dashboard knows.
        ProcessCollector(registry=r)
        self._series = {endpoint.id: self._children(endpoint) for endpoint in config.endpoints()}
        r.register(_ScrapeTimeCollector(self))

    def update(self, config: Config) -> None:
        """A reloaded configuration: series for new endpoints, none left for removed ones."""
        self.config = config
        current = {endpoint.id: endpoint for endpoint in config.endpoints()}
        for endpoint_id in [i for i in self._series if i not in current]:
            labels = self._series.pop(endpoint_id).labels
            removals = [
                (self.duration, labels),
                (self.inference, labels),
                *((self.checks, (*labels, r)) for r in ("success", "failure")),
            ]
            removals += [(self.errors, (*labels, error.value)) for error in ErrorClass]
            for family, values in removals:
                with contextlib.suppress(KeyError):
                    family.remove(*values)
        for endpoint_id, endpoint in current.items():
            if endpoint_id not in self._series:
                self._series[endpoint_id] = self._children(endpoint)

    def _children(self, endpoint: Any) -> _EndpointSeries:
        labels = (endpoint.region, endpoint.name, endpoint.kind)
        return _EndpointSeries(
            labels=labels,
            duration=self.duration.labels(*labels),
            inference=self.inference.labels(*labels) if endpoint.kind in CANARY_KINDS else None,
            success=self.checks.labels(*labels, "success"),
            failure=self.checks.labels(*labels, "failure"),
            errors=lambda error, labels=labels: self.errors.labels(*labels, error),
        )

    def observe(self, result: ProbeResult, status: Status) -> None:
        """The result sink: three cheap updates."""
        series = self._series.get(result.target_id)
        if series is None:
            return
        series.duration.observe(result.latency)
        if series.inference is not None:
            milliseconds = dict(result.details).get("inference_ms")
            if isinstance(milliseconds, int | float):
                series.inference.observe(milliseconds / 1000)
        if result.ok:
            series.success.inc()
        else:
            series.failure.inc()
            if result.error is not None:
                series.errors(result.error.value).inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and content type: OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _ScrapeTimeCollector:
    """Gauges computed when Prometheus scrapes, from state other parts already keep."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # unchecked: the set of series follows the configuration

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        latest = list(metrics.board.latest.items())  # atomic copy: scrapes may run in a thread
        endpoints = metrics.board.endpoints
        success = GaugeMetricFamily(
            "healthcheck_probe_success", "1 if the last check succeeded", labels=ENDPOINT_LABELS
        )
        http_status = GaugeMetricFamily(
            "healthcheck_probe_http_status_code",
            "HTTP status of the last check",
            labels=("region", "endpoint"),
        )
        cert = GaugeMetricFamily(
            "healthcheck_tls_cert_expiry_timestamp_seconds",
            "When the peer certificate seen by the last check expires",
            labels=("region", "endpoint"),
        )
        phases = GaugeMetricFamily(
            "healthcheck_probe_phase_duration_seconds",
            "Time per phase of the last HTTP check",
            labels=("region", "endpoint", "phase"),
        )
        last_check = GaugeMetricFamily(
            "healthcheck_probe_last_check_timestamp_seconds",
            "When the last check of the endpoint started: a stale value means it stalled",
            labels=ENDPOINT_LABELS,
        )
        endpoint_status = GaugeMetricFamily(
            "healthcheck_endpoint_status",
            "1 for the endpoint's current status, 0 for the others",
            labels=(*ENDPOINT_LABELS, "status"),
        )
        by_region: dict[str, list[tuple[bool, Status]]] = {}
        for endpoint_id, (result, status) in latest:
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None:
                continue
            labels = [endpoint.region, endpoint.name, endpoint.kind]
            success.add_metric(labels, 1.0 if result.ok else 0.0)
            last_check.add_metric(labels, result.timestamp)
            for value in STATUSES:
                endpoint_status.add_metric([*labels, value], 1.0 if status == value else 0.0)
            if result.http_status is not None:
                http_status.add_metric(labels[:2], result.http_status)
            if result.cert_expiry is not None:
                cert.add_metric(labels[:2], result.cert_expiry)
            if result.phases is not None:
                for phase in ("dns", "connect", "first_byte", "total"):
                    seconds = getattr(result.phases, phase)
                    if seconds is not None:
                        phases.add_metric([*labels[:2], phase], seconds)
            by_region.setdefault(endpoint.region, []).append((result.ok, status))
        yield from (success, last_check, http_status, cert, phases, endpoint_status)
        yield from _canaries(latest, endpoints)
        yield from self._regions(by_region)
        yield from self._uptime()
        yield from self._daemon()

    def _regions(self, by_region: dict[str, list[tuple[bool, Status]]]) -> Iterator[Metric]:
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

    def _uptime(self) -> Iterator[Metric]:
        source = self.metrics.gauges.uptime
        report = source() if source else None
        endpoint_uptime = GaugeMetricFamily(
            "healthcheck_uptime_ratio",
            "Successful checks / checks over the window (degraded counts as up)",
            labels=("region", "endpoint", "window"),
        )
        region_uptime = GaugeMetricFamily(
            "healthcheck_region_uptime_ratio",
            "Successful checks / checks of all the region's endpoints over the window",
            labels=("region", "window"),
        )
        if report is not None:
            for target_id, windows in report.endpoints.items():
                target = report.targets[target_id]
                for window, tally in windows.items():
                    if tally.ratio is not None:
                        endpoint_uptime.add_metric(
                            [target.region, target.endpoint, window], tally.ratio
                        )
            for region, windows in report.regions.items():
                for window, tally in windows.items():
                    if tally.ratio is not None:
                        region_uptime.add_metric([region, window], tally.ratio)
        yield endpoint_uptime
        yield region_uptime
        yield GaugeMetricFamily(
            "healthcheck_sla_target_ratio",
            "The configured SLA uptime target",
            value=self.metrics.config.sla_target,
        )

    def _daemon(self) -> Iterator[Metric]:
        gauges = self.metrics.gauges
        yield GaugeMetricFamily(
            "healthcheck_endpoints_configured",
            "Endpoints in the running configuration",
            value=len(self.metrics.board.endpoints),
        )
        if gauges.not_ready is not None:
            yield GaugeMetricFamily(
                "healthcheck_up",
                "1 if the daemon is ready (scheduler progressing, storage writable), as /readyz",
                value=0.0 if gauges.not_ready() else 1.0,
            )
        age = gauges.heartbeat_age() if gauges.heartbeat_age is not None else None
        if age is not None:
            yield GaugeMetricFamily(
                "healthcheck_scheduler_heartbeat_age_seconds",
                "Seconds since the scheduler's dispatcher last woke (it wakes each second)",
                value=age,
            )
        readings = (
            ("healthcheck_probes_in_flight", "Checks running now", gauges.in_flight),
            ("healthcheck_asyncio_tasks", "Tasks on the daemon's event loop", gauges.asyncio_tasks),
            (
                "healthcheck_storage_queue_depth",
                "Results waiting for the database",
                gauges.storage_queue_depth,
            ),
            (
                "healthcheck_storage_writable",
                "1 if the last database write succeeded",
                gauges.storage_writable,
            ),
        )
        for name, text, read in readings:
            if read is not None:
                yield GaugeMetricFamily(name, text, value=float(read()))
        counters = (
            (
                "healthcheck_storage_dropped_results",
                "Results dropped: storage queue full",
                gauges.storage_dropped,
            ),
            (
                "healthcheck_storage_written_results",
                "Results written to the database",
                gauges.storage_written,
            ),
            ("healthcheck_checks_dispatched", "Checks started by the scheduler", gauges.dispatched),
            (
                "healthcheck_checks_missed",
                "Scheduled runs skipped because the endpoint's previous check was still running",
                gauges.missed,
            ),
        )
        for name, text, read in counters:
            if read is not None:
                family = CounterMetricFamily(name, text, value=float(read()))
                yield family
        if gauges.reload is not None:
            ok, when = gauges.reload()
            yield GaugeMetricFamily(
                "healthcheck_config_last_reload_successful",
                "1 if the last configuration (re)load was applied, 0 if it was rejected",
                value=1.0 if ok else 0.0,
            )
            yield GaugeMetricFamily(
                "healthcheck_config_last_reload_success_timestamp_seconds",
                "When a configuration was last loaded successfully",
                value=when,
            )
        if gauges.alerts_firing is not None:
            firing = GaugeMetricFamily(
                "healthcheck_alerts_firing", "Alerts firing now", labels=("severity",)
            )
            for severity, count in gauges.alerts_firing().items():
                firing.add_metric([severity], count)
            yield firing
        if gauges.notifications is not None:
            sent = CounterMetricFamily(
                "healthcheck_notifications",
                "Notifications per channel: sent (accepted) or failed (attempts refused)",
                labels=("channel", "result"),
            )
            pending = GaugeMetricFamily(
                "healthcheck_notifications_pending",
                "Notifications in the outbox not yet accepted by the channel",
                labels=("channel",),
            )
            for channel, (ok, failed, waiting) in gauges.notifications().items():
                sent.add_metric([channel, "sent"], ok)
                sent.add_metric([channel, "failed"], failed)
                pending.add_metric([channel], waiting)
            yield sent
            yield pending


_GPU_GAUGES = (
    ("temperature_c", "healthcheck_gpu_temperature_celsius", "GPU core temperature"),
    ("utilization", "healthcheck_gpu_utilization_ratio", "GPU busy share (0-1)"),
    ("memory_used_bytes", "healthcheck_gpu_memory_used_bytes", "GPU memory in use"),
    ("memory_total_bytes", "healthcheck_gpu_memory_total_bytes", "GPU memory in all"),
    ("power_w", "healthcheck_gpu_power_watts", "GPU power draw"),
    (
        "ecc_uncorrected",
        "healthcheck_gpu_ecc_uncorrected_errors",
        "Volatile uncorrected ECC errors since the driver loaded",
    ),
)


def _canaries(
    latest: list[tuple[str, tuple[ProbeResult, Status]]], endpoints: Any
) -> Iterator[Metric]:
    """Canary gauges from each canary's last result, and GPU gauges from the newest NVML
    reading any local canary brought (several canaries on one host see the same GPUs)."""
    max_error = GaugeMetricFamily(
        "healthcheck_inference_max_abs_error",
        "Largest difference between the canary's output and the expected (golden) output",
        labels=ENDPOINT_LABELS,
    )
    provider = GaugeMetricFamily(
        "healthcheck_inference_provider_info",
        "1 for the execution provider the local canary actually ran on",
        labels=(*ENDPOINT_LABELS, "provider"),
    )
    throughput = GaugeMetricFamily(
        "healthcheck_inference_throughput_per_second",
        "Inferences per second in the canary's back-to-back burst",
        labels=ENDPOINT_LABELS,
    )
    device = GaugeMetricFamily(
        "healthcheck_inference_gpu_device_info",
        "1 for the GPU index the local canary ran on",
        labels=(*ENDPOINT_LABELS, "gpu"),
    )
    gpus: dict[str, tuple[float, str, dict[str, Any]]] = {}
    for endpoint_id, (result, _) in latest:
        endpoint = endpoints.get(endpoint_id)
        if endpoint is None or endpoint.kind not in CANARY_KINDS:
            continue
        labels = [endpoint.region, endpoint.name, endpoint.kind]
        found = dict(result.details)
        error = found.get("max_abs_error")
        if isinstance(error, int | float) and error != float("inf"):
            max_error.add_metric(labels, error)
        if isinstance(found.get("provider"), str):
            provider.add_metric([*labels, found["provider"]], 1.0)
        if isinstance(found.get("throughput_per_s"), int | float):
            throughput.add_metric(labels, found["throughput_per_s"])
        if isinstance(found.get("gpu_device"), int):
            device.add_metric([*labels, str(found["gpu_device"])], 1.0)
        for key, value in found.items():
            if not key.startswith("gpu.") or key.count(".") != 2:
                continue
            index, field = key[4:].split(".")
            seen = gpus.get(index)
            if seen is None or seen[0] < result.timestamp:
                name = found.get(f"gpu.{index}.name")
                seen = gpus[index] = (result.timestamp, str(name or ""), {})
            if seen[0] == result.timestamp:
                seen[2][field] = value
    yield from (max_error, provider, throughput, device)
    throttled = GaugeMetricFamily(
        "healthcheck_gpu_throttled",
        "1 per harmful clock-throttle reason active on the GPU (thermal, power, hw_slowdown)",
        labels=("gpu", "name", "reason"),
    )
    families = {
        field: GaugeMetricFamily(name, text, labels=("gpu", "name"))
        for field, name, text in _GPU_GAUGES
    }
    for index, (_, name, fields) in sorted(gpus.items()):
        for field, family in families.items():
            value = fields.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                family.add_metric([index, name], float(value))
        reasons = fields.get("throttle")
        if isinstance(reasons, str) and reasons not in ("", "none"):
            for reason in reasons.split(","):
                throttled.add_metric([index, name, reason], 1.0)
    yield from families.values()
    yield throttled
