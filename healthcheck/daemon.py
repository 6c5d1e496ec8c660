"""The long-running daemon: probes on schedule; each result to the board, storage, metrics.

It also serves /metrics, the JSON API and the status page from the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from alerting.delivery import Sender
from alerting.engine import ALERT_TICK, SENDER_GRACE, SILENCES_EVERY, AlertEngine
from alerting.evaluator import Evaluator
from healthcheck.api import ApiState, build_app
from healthcheck.connections import ConnectionGuard
from healthcheck.errors import StorageError
from healthcheck.exporter import DaemonGauges, Metrics
from healthcheck.fanout import Fanout, ResultSink
from healthcheck.offload import Offload
from healthcheck.prober import Prober
from healthcheck.prober_faults import ProberFaults, is_prober_fault
from healthcheck.probes.base import Clock
from healthcheck.reload import ConfigReload
from healthcheck.result import ProbeResult
from healthcheck.secrets import Redactor
from healthcheck.self_health import STALL_AFTER, STATUS_EVERY, SelfHealth
from healthcheck.serving import Server, serve
from healthcheck.status import StatusBoard
from healthcheck.systemd_notify import Notifier
from healthcheck.targets import Config, Shard, StorageSettings
from healthcheck.tuning import (
    GC_THRESHOLDS,
    MALLOC_ARENAS,
    SWITCH_INTERVAL,
    freeze_startup_heap,
    tune_process,
)
from healthcheck.uptime_cache import UptimeCache
from healthcheck.workers import Dispatcher, dispatcher, dispatching
from storage.schema import connect
from storage.writer import Retention, StorageWriter, default_path

log = logging.getLogger("healthcheck.daemon")

# How long a stopping daemon lets in-flight checks finish before cancelling them.
DRAIN_GRACE = 5.0
# How long it waits for storage to flush on the way out.
FLUSH_TIMEOUT = 10.0

__all__ = [
    "ALERT_TICK",
    "DRAIN_GRACE",
    "FLUSH_TIMEOUT",
    "GC_THRESHOLDS",
    "MALLOC_ARENAS",
    "SENDER_GRACE",
    "SILENCES_EVERY",
    "STALL_AFTER",
    "STATUS_EVERY",
    "SWITCH_INTERVAL",
    "Daemon",
    "ResultSink",
    "open_writer",
    "storage_path",
    "tune_process",
]


def storage_path(settings: StorageSettings) -> str:
    return settings.path or default_path()


def open_writer(settings: StorageSettings) -> StorageWriter:
    retention = Retention(
        settings.retention_raw, settings.retention_raw_rows, settings.retention_rollups
    )
    return StorageWriter(storage_path(settings), retention, max_queue=settings.max_queue)


class Daemon:
    """Owns one configuration's prober, scheduler, board, storage, metrics and HTTP server."""

    def __init__(
        self,
        config: Config,
        storage: StorageWriter | None = None,
        extra_sinks: Sequence[ResultSink] = (),
        clock: Clock = time.time,
        serve_http: bool = True,
        config_path: str | None = None,
        regions: set[str] | None = None,
        notifier: Notifier | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.shard = shard
        self.notifier = notifier or Notifier()
        self.prober: Prober | None = None
        self.api: ApiState | None = None
        self.board = StatusBoard(config.endpoints())
        self.prober_faults = ProberFaults()
        self.connections = ConnectionGuard(config.exporter.max_connections, time.monotonic)
        self.storage = storage
        self._clock = clock
        self.scheduler: Dispatcher | None = None
        # Uptime reads and /metrics renders run in a helper process: at 10,000 endpoints each
        # is seconds of Python that would take the GIL from the probing loop.
        self.helper = Offload("healthcheck helper")
        self.uptime = UptimeCache(
            storage.path if storage else storage_path(config.storage),
            config.storage.retention_raw,
            clock,
            offload=self.helper,
        )
        self.alerts: AlertEngine | None = None
        if config.alerting.enabled:
            self.alerts = AlertEngine(
                config.endpoints(),
                config.alerting,
                self.uptime.path,
                clock,
                page_url=f"http://{config.exporter.host}:{config.exporter.port}/",
                uptime_24h=self._uptime_24h,
                self_check=lambda now: self.health.self_check(now),
                database_created=lambda: storage.stats.replaced if storage else 0,
            )
        self.metrics = Metrics(config, self.board, self._gauges(), offload=self.helper)
        sinks: list[ResultSink] = [self.metrics.observe, *extra_sinks]
        if storage is not None:
            sinks.insert(0, storage.submit)
        if self.alerts is not None:
            sinks.append(self.alerts.observe)
        self.fanout = Fanout(sinks)
        self.reloads = ConfigReload(
            config,
            config_path,
            self.board,
            self.metrics,
            self.alerts,
            self.notifier,
            self.status_line,
            clock,
            regions,
            shard,
        )
        self.health = SelfHealth(
            self.board,
            storage,
            self.alerts,
            config.alerting,
            self.prober_faults,
            self.reloads,
            self.notifier,
        )
        self._serve_http = serve_http
        self.listening: tuple[str, int] | None = None

    @property
    def config(self) -> Config:
        """The running configuration; a reload replaces it."""
        return self.reloads.config

    @property
    def reload_state(self) -> tuple[bool, float]:
        """Whether the last reload applied, and when the running configuration was loaded."""
        return self.reloads.state

    @property
    def evaluator(self) -> Evaluator | None:
        return self.alerts.evaluator if self.alerts else None

    @property
    def sender(self) -> Sender | None:
        return self.alerts.sender if self.alerts else None

    def _uptime_24h(self) -> dict[str, tuple[float | None, float]]:
        """(24h uptime, checks) per endpoint id, from the last stored-uptime snapshot."""
        snapshot = self.uptime.snapshot
        if snapshot is None:
            return {}
        report = snapshot.report
        found = {}
        for target_id, target in report.targets.items():
            tally = report.endpoints.get(target_id, {}).get("24h")
            if tally is not None:
                found[f"{target.region}/{target.endpoint}"] = (tally.ratio, tally.checks)
        return found

    def self_report(self) -> dict[str, Any]:
        """The daemon's own numbers for /api/v1/self (see SelfHealth.self_report)."""
        return self.health.self_report()

    def status_line(self) -> str:
        """The one-line summary systemd shows (STATUS=)."""
        return self.health.status_line()

    def not_ready(self) -> list[str]:
        """Why the daemon cannot be relied on right now; empty when it can."""
        return self.health.not_ready()

    async def reload(self) -> bool:
        """SIGHUP: re-read the config file (see ConfigReload.request)."""
        return await self.reloads.request()

    async def _open_storage(self) -> None:
        """Open (create, migrate) the database before saying READY; if it cannot be opened
        the daemon still runs (probing, metrics) and the writer keeps retrying."""
        storage = self.storage
        if storage is None:
            return
        try:
            await asyncio.to_thread(lambda: connect(storage.path).conn.close())
        except (StorageError, OSError, sqlite3.Error) as exc:  # read-only, missing, corrupt
            log.error(
                "storage not available at start; probing anyway and retrying: %s",
                exc,
                extra={"event": "storage_open_failed", "path": storage.path},
            )

    def _gauges(self) -> DaemonGauges:
        writer = self.storage
        return DaemonGauges(
            in_flight=lambda: self.scheduler.in_flight if self.scheduler else 0,
            storage_queue_depth=(lambda: writer.queue_depth) if writer else None,
            storage_writable=(lambda: writer.stats.writable) if writer else None,
            storage_dropped=(lambda: writer.stats.dropped) if writer else None,
            storage_written=(lambda: writer.stats.written) if writer else None,
            storage_replaced=(lambda: writer.stats.replaced) if writer else None,
            uptime=lambda: self.uptime.snapshot.report if self.uptime.snapshot else None,
            alerts_firing=lambda: self.alerts.firing() if self.alerts else {},
            reload=lambda: self.reload_state,
            not_ready=self.not_ready,
            heartbeat_age=lambda: self.health.heartbeat_age(),
            dispatched=lambda: self.scheduler.stats.dispatched if self.scheduler else 0,
            missed=lambda: self.scheduler.stats.skipped_overrun if self.scheduler else 0,
            asyncio_tasks=lambda: self.health.task_count(),
            prober_faults=lambda: self.prober_faults.total,
            connections=lambda: self.connections.open,
            connections_dropped=lambda: self.connections.evicted + self.connections.refused,
            notifications=lambda: self.alerts.notification_counts() if self.alerts else {},
        )

    def on_result(self, result: ProbeResult) -> None:
        """Classify once, then fan out; nothing here may block the event loop. A check that
        failed for the prober's own trouble goes to none of them: it is no verdict."""
        if is_prober_fault(result):
            self.prober_faults.note(result, self._clock())
            return
        status = self.board.record(result)
        if status is None:
            return
        self.fanout(result, status)

    async def _start_http(self) -> Server:
        self.api = ApiState(
            self.config,
            self.board,
            self.metrics,
            self.uptime,
            self.uptime.path,
            self.health.not_ready,
            self.health.self_report,
        )
        self.reloads.api = self.api
        server = await serve(
            build_app(self.api),
            self.config.exporter,
            self.connections,
            self.config.scheduler.max_concurrency,
        )
        self.listening = server.listening
        return server

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until `stop` is set; then finish in-flight checks (bounded) and flush storage."""
        endpoints = list(self.config.endpoints())
        self.health.loop = asyncio.get_running_loop()
        tune_process()
        http = await self._start_http() if self._serve_http else None
        if self.storage is not None:
            self.storage.start()
        background: list[asyncio.Task[None]] = []
        await self._open_storage()
        async with Prober(Redactor(self.config.secrets), self._clock) as prober:
            self.prober = prober
            self.reloads.prober = prober
            # Probe worker processes, or with `scheduler.workers: 1` this loop (workers.py).
            self.scheduler = dispatcher(
                endpoints,
                prober.check,
                [self.on_result],
                self.config.scheduler,
                lambda: self.config.secrets,
                on_lag=self.metrics.observe_lag,
                clock=self._clock,
            )
            self.reloads.scheduler = self.scheduler
            self.health.scheduler = self.scheduler
            log.info(
                "started: %d endpoints in %d regions%s",
                len(endpoints),
                len(self.config.regions),
                f" (shard {self.shard})" if self.shard else "",
                extra={
                    "event": "started",
                    "endpoints": len(endpoints),
                    "shard": str(self.shard) if self.shard else None,
                },
            )
            for warning in self.config.alerting.unrouted():
                log.warning(warning, extra={"event": "channel_unrouted"})
            background.append(asyncio.create_task(self.scheduler.run(), name="dispatcher"))
            background.append(asyncio.create_task(self.health.supervise(), name="supervisor"))
            if self.storage is not None:
                background.append(asyncio.create_task(self.uptime.run(), name="uptime"))
            sending = None
            if self.alerts is not None:
                background.append(asyncio.create_task(self.alerts.run(), name="alerting"))
                sending = asyncio.create_task(self.alerts.sender.run(), name="sender")
            await dispatching(self.scheduler, stop)  # checks under way before saying ready
            freeze_startup_heap()
            self.notifier.send(ready=1, status=self.status_line())
            try:
                await stop.wait()
            finally:
                self.notifier.send(
                    stopping=1, status="stopping: finishing checks, flushing storage"
                )
                for task in background:
                    task.cancel()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self.scheduler.drain(DRAIN_GRACE)
                if self.alerts is not None and sending is not None:
                    await self.alerts.close(sending)
                if self.storage is not None:
                    await asyncio.to_thread(self.storage.close, FLUSH_TIMEOUT)
                if http is not None:
                    await http.close()
                self.helper.close()
                stats = self.scheduler.stats
                log.info(
                    "stopped: %d checks dispatched, %d completed, %d results stored",
                    stats.dispatched,
                    stats.completed,
                    self.storage.stats.written if self.storage else 0,
                    extra={
                        "event": "stopped",
                        "dispatched": stats.dispatched,
                        "completed": stats.completed,
                        "stored": self.storage.stats.written if self.storage else None,
                        "dropped": self.storage.stats.dropped if self.storage else None,
                    },
                )
