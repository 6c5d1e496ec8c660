"""The long-running daemon: probes on schedule; each result to the board, storage, alerts and
its front (healthcheck.front: /metrics, the JSON API and the status page, a layer above).

Wiring only: it builds the runtime parts, subscribes them to the running configuration, and
starts and stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from alerting.delivery import Sender
from alerting.engine import ALERT_TICK, SENDER_GRACE, SILENCES_EVERY, AlertEngine
from alerting.evaluator import Evaluator
from healthcheck import event_loop
from healthcheck.clock import LOOP, Clock, Timeline
from healthcheck.errors import StorageError
from healthcheck.fanout import Fanout, ResultSink
from healthcheck.offload import Offload
from healthcheck.prober import Prober
from healthcheck.prober_faults import ProberFaults, is_prober_fault
from healthcheck.reload import ConfigReload
from healthcheck.result import ProbeResult, Status
from healthcheck.running_config import RunningConfig
from healthcheck.secrets import Redactor
from healthcheck.self_health import STALL_AFTER, STATUS_EVERY, SelfHealth
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
from healthcheck.worker_zygote import Zygote
from healthcheck.workers import Dispatcher, dispatcher, dispatching
from storage.database_file import DatabaseFile
from storage.paths import default_path
from storage.schema import connect
from storage.writer import Retention, StorageWriter

log = logging.getLogger("healthcheck.daemon")

# How long it waits for storage to flush on the way out.
FLUSH_TIMEOUT = 10.0

__all__ = [
    "ALERT_TICK",
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
    return StorageWriter(
        storage_path(settings),
        retention,
        max_queue=settings.max_queue,
        busy_timeout=settings.busy_timeout,
    )


class Front(Protocol):
    """The serve layer's side of a daemon (healthcheck.front.HttpFront): it counts each result
    for /metrics and serves HTTP. Built from the daemon's parts, so handed in as a factory."""

    def observe(self, result: ProbeResult, status: Status) -> None: ...

    def observe_lag(self, seconds: float) -> None: ...

    async def start(self) -> tuple[str, int]:
        """Listen; returns where."""
        ...

    async def close(self) -> None: ...


class Daemon:
    """Owns one configuration's prober, scheduler, board, storage and alerts, and its front."""

    def __init__(
        self,
        config: Config,
        storage: StorageWriter | None = None,
        extra_sinks: Sequence[ResultSink] = (),
        clock: Clock = time.time,
        front: Callable[[Daemon], Front] | None = None,
        config_path: str | None = None,
        regions: set[str] | None = None,
        notifier: Notifier | None = None,
        shard: Shard | None = None,
        timeline: Timeline = LOOP,
        zygote: Zygote | None = None,
    ) -> None:
        """`clock` stamps results and alert state; the scheduler and the alert tick wait on
        `timeline` (the event loop's clock): a test passes one manual clock as both. `zygote`
        forks the probe workers (the CLI forks it from itself before the event loop starts)."""
        config.require_environment()  # it probes and sends: every ${VAR} must be set
        self.shard = shard
        self._zygote = zygote
        self._timeline = timeline
        self.notifier = notifier or Notifier()
        self.configs = RunningConfig(config)
        self.board = StatusBoard(config.endpoints())
        self.configs.subscribe(lambda new: self.board.update(new.endpoints()))
        self.prober_faults = ProberFaults()
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
                DatabaseFile(self.uptime.path, config.storage.busy_timeout),
                clock,
                timeline=timeline,
                page_url=f"http://{config.exporter.host}:{config.exporter.port}/",
                uptime_24h=self.uptime.uptime_24h,
                self_check=lambda now: self.health.self_check(now),
                database_created=lambda: storage.stats.replaced if storage else 0,
            )
            alerts = self.alerts
            self.configs.subscribe(lambda new: alerts.use_endpoints(new.endpoints()))
        self.reloads = ConfigReload(
            self.configs,
            config_path,
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
            self.uptime,
        )
        self.front = front(self) if front is not None else None
        sinks: list[ResultSink] = []
        if storage is not None:
            sinks.append(storage.submit)
        if self.front is not None:
            sinks.append(self.front.observe)
        sinks.extend(extra_sinks)
        if self.alerts is not None:
            sinks.append(self.alerts.observe)
        self.fanout = Fanout(sinks)
        self.listening: tuple[str, int] | None = None

    @property
    def config(self) -> Config:
        """The running configuration; a reload replaces it."""
        return self.configs.config

    @property
    def evaluator(self) -> Evaluator | None:
        return self.alerts.evaluator if self.alerts else None

    @property
    def sender(self) -> Sender | None:
        return self.alerts.sender if self.alerts else None

    def status_line(self) -> str:
        """The one-line summary systemd shows (STATUS=)."""
        return self.health.status_line()

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

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until `stop` is set; then finish in-flight checks (bounded) and flush storage."""
        endpoints = list(self.config.endpoints())
        self.health.loop = asyncio.get_running_loop()
        tune_process()
        if self.front is not None:
            self.listening = await self.front.start()
        if self.storage is not None:
            # Begun before the loop serves the front's first request: that request waits for it
            # (UptimeCache.first_read); after the bind, so a port in use exits at once.
            self.uptime.start()
        if self.storage is not None:
            self.storage.start()
        background: list[asyncio.Task[None]] = []
        await self._open_storage()
        database = self.uptime.path
        async with Prober(Redactor(self.config.secrets), self._clock, database=database) as prober:
            # Probe worker processes, or with `scheduler.workers: 1` this loop (workers.py).
            self.scheduler = scheduler = dispatcher(
                endpoints,
                prober.check,
                [self.on_result],
                self.config.scheduler,
                lambda: self.config.secrets,
                on_lag=self.front.observe_lag if self.front is not None else None,
                clock=self._clock,
                timeline=self._timeline,
                database=database,
                zygote=self._zygote,
            )
            self.health.scheduler = scheduler

            def follow(new: Config) -> None:
                prober.use_secrets(Redactor(new.secrets))
                scheduler.update(new.endpoints())

            self.configs.subscribe(follow)
            loop_name = event_loop.name(asyncio.get_running_loop())
            log.info(
                "started: %d endpoint%s in %d region%s%s, on %s",
                len(endpoints),
                "" if len(endpoints) == 1 else "s",
                len(self.config.regions),
                "" if len(self.config.regions) == 1 else "s",
                f" (shard {self.shard})" if self.shard else "",
                loop_name,
                extra={
                    "event": "started",
                    "endpoints": len(endpoints),
                    "shard": str(self.shard) if self.shard else None,
                    "event_loop": loop_name,
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
                await self.scheduler.drain(self.config.scheduler.stop_grace)
                if self.alerts is not None and sending is not None:
                    await self.alerts.close(sending)
                if self.storage is not None:
                    await asyncio.to_thread(self.storage.close, FLUSH_TIMEOUT)
                self.configs.unsubscribe(follow)
                if self.front is not None:
                    await self.front.close()
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
                        # completed, never stored: no verdict (prober_faults.py)
                        "prober_faults": self.prober_faults.total,
                    },
                )
