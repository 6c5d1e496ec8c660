"""The long-running daemon: probes on schedule; each result to the board, storage, metrics.

It also serves /metrics, the JSON API and the status page from the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from aiohttp import web

from alerting.delivery import Sender, build_channels, per_alert
from alerting.evaluator import Evaluator
from alerting.outbox import Outbox
from alerting.router import route
from alerting.silences import Silence, stored
from alerting.store import forget, load_states, save_changes
from healthcheck.api import ApiState, build_app
from healthcheck.errors import HealthcheckError
from healthcheck.exporter import DaemonGauges, Metrics
from healthcheck.probes import Prober
from healthcheck.probes.base import Clock
from healthcheck.result import ProbeResult, Status
from healthcheck.scheduler import Scheduler
from healthcheck.secrets import Redactor
from healthcheck.status import StatusBoard
from healthcheck.targets import Config, StorageSettings
from healthcheck.uptime_cache import UptimeCache
from storage.writer import Retention, StorageWriter, default_path

log = logging.getLogger("healthcheck.daemon")

# How long a stopping daemon lets in-flight checks finish before cancelling them.
DRAIN_GRACE = 5.0
# How long it waits for storage to flush on the way out.
FLUSH_TIMEOUT = 10.0
# Alerts are evaluated (and grouped) once per tick.
ALERT_TICK = 1.0
# How long a stopping daemon lets channels finish the delivery in hand.
SENDER_GRACE = 15.0
# How often silences added from the CLI are read back from the database.
SILENCES_EVERY = 5.0

# Takes each classified result: metrics, alerting. Must not block.
ResultSink = Callable[[ProbeResult, Status], None]


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
    ) -> None:
        self.config = config
        self.board = StatusBoard(config.endpoints())
        self.storage = storage
        self._clock = clock
        self.scheduler: Scheduler | None = None
        self.uptime = UptimeCache(
            storage.path if storage else storage_path(config.storage),
            config.storage.retention_raw,
            clock,
        )
        self.metrics = Metrics(config, self.board, self._gauges())
        self._sinks: list[ResultSink] = [self.metrics.observe, *extra_sinks]
        self._serve_http = serve_http
        self.listening: tuple[str, int] | None = None
        self.evaluator: Evaluator | None = None
        self.sender: Sender | None = None
        self._stored_silences: list[Silence] = []
        self._silences_read = 0.0
        if config.alerting.enabled:
            page = f"http://{config.exporter.host}:{config.exporter.port}/"
            self.channels = build_channels(config.alerting.channels, generator_url=page)
            self.sender = Sender(self.uptime.path, self.channels, clock=clock)
            endpoints = {endpoint.id: endpoint for endpoint in config.endpoints()}
            self.evaluator = Evaluator(endpoints, config.alerting, self._uptime_24h)
            self._sinks.append(self.evaluator.observe)

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

    async def evaluate_alerts(self) -> None:
        """One evaluation: rules → state changes → stored → routed into the outbox."""
        evaluator, sender = self.evaluator, self.sender
        if evaluator is None or sender is None:
            return
        now = self._clock()
        changes = evaluator.evaluate(now)
        if not changes:
            return
        if now - self._silences_read > SILENCES_EVERY:
            self._stored_silences = await sender.database(lambda outbox: stored(outbox.db, now))
            self._silences_read = now
        routed = route(
            changes,
            evaluator.alerts,
            evaluator.notified,
            self.config.alerting,
            per_alert(self.channels),
            now,
            (*self.config.alerting.silences, *self._stored_silences),
        )
        evaluator.notified.update(routed.notified)
        kept = [
            (
                c.state,
                c.event,
                evaluator.notified.get((c.state.rule, c.state.target), False),
                c.region,
            )
            for c in changes
            if (c.state.rule, c.state.target) in evaluator.alerts
        ]
        dropped = [
            (c.state.rule, c.state.target)
            for c in changes
            if (c.state.rule, c.state.target) not in evaluator.alerts
        ]

        def persist(outbox: Outbox) -> None:
            save_changes(outbox.db, kept, now)
            forget(outbox.db, dropped)
            outbox.put(routed.notifications, now)

        await sender.database(persist)
        sender.wake()
        for change in changes:
            if change.event is not None:
                log.info(
                    "alert %s %s %s: %s",
                    change.state.rule,
                    change.state.target,
                    change.event.value,
                    change.state.summary,
                    extra={
                        "event": f"alert_{change.event.value}",
                        "rule": change.state.rule,
                        "target": change.state.target,
                        "severity": change.state.severity.value,
                        "region": change.region,
                    },
                )

    async def _alerting(self) -> None:
        if self.sender is None or self.evaluator is None:
            return
        stored = await self.sender.database(lambda outbox: load_states(outbox.db))
        self.evaluator.restore(stored)
        while True:
            await asyncio.sleep(ALERT_TICK)
            try:
                await self.evaluate_alerts()
            except Exception:  # keep alerting alive; the next tick tries again
                log.exception("alert evaluation failed", extra={"event": "alerting_error"})

    async def _stop_sender(self, sending: asyncio.Task[None]) -> None:
        """Let each channel finish and record its delivery in hand; cancel past the bound."""
        if self.sender is not None:
            self.sender.stop()
        try:
            await asyncio.wait_for(sending, SENDER_GRACE)
        except TimeoutError:
            log.warning("notification sender did not stop in time", extra={"event": "sender_slow"})
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("notification sender failed", extra={"event": "sender_failed"})

    def _gauges(self) -> DaemonGauges:
        writer = self.storage
        return DaemonGauges(
            in_flight=lambda: self.scheduler.in_flight if self.scheduler else 0,
            storage_queue_depth=(lambda: writer.queue_depth) if writer else None,
            storage_writable=(lambda: writer.stats.writable) if writer else None,
            storage_dropped=(lambda: writer.stats.dropped) if writer else None,
            storage_written=(lambda: writer.stats.written) if writer else None,
            uptime=lambda: self.uptime.snapshot.report if self.uptime.snapshot else None,
            alerts_firing=lambda: self.evaluator.firing() if self.evaluator else {},
            notifications=lambda: {
                name: (stats.sent, stats.failed, self.sender.pending.get(name, 0))
                for name, stats in (self.sender.stats.items() if self.sender else ())
            },
        )

    def on_result(self, result: ProbeResult) -> None:
        """Classify once, then fan out; nothing here may block the event loop."""
        status = self.board.record(result)
        if status is None:
            return
        if self.storage is not None:
            self.storage.submit(result, status)
        for sink in self._sinks:
            sink(result, status)

    def not_ready(self) -> list[str]:
        """Why the daemon cannot be relied on right now; empty when it can."""
        reasons = []
        if self.scheduler is None or not self.scheduler.running:
            reasons.append("scheduler not running")
        if (
            self.storage is not None
            and self.storage.stats.failures
            and not self.storage.stats.writable
        ):
            reasons.append(f"storage not writable: {self.storage.stats.last_error}")
        return reasons

    async def _start_http(self) -> web.AppRunner:
        settings = self.config.exporter
        state = ApiState(
            self.config, self.board, self.metrics, self.uptime, self.uptime.path, self.not_ready
        )
        runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise HealthcheckError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        self.listening = runner.addresses[0][:2]
        log.info(
            "serving metrics, API and status page on http://%s:%d/",
            *self.listening,
            extra={"event": "listening", "host": self.listening[0], "port": self.listening[1]},
        )
        return runner

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until `stop` is set; then finish in-flight checks (bounded) and flush storage."""
        endpoints = list(self.config.endpoints())
        runner = await self._start_http() if self._serve_http else None
        if self.storage is not None:
            self.storage.start()
        background: list[asyncio.Task[None]] = []
        async with Prober(Redactor(self.config.secrets), self._clock) as prober:
            self.scheduler = Scheduler(
                endpoints,
                prober.check,
                [self.on_result],
                self.config.scheduler,
                on_lag=self.metrics.schedule_lag.observe,
            )
            log.info(
                "started: %d endpoints in %d regions",
                len(endpoints),
                len(self.config.regions),
                extra={"event": "started", "endpoints": len(endpoints)},
            )
            background.append(asyncio.create_task(self.scheduler.run(), name="dispatcher"))
            if self.storage is not None:
                background.append(asyncio.create_task(self.uptime.run(), name="uptime"))
            sending = None
            if self.evaluator is not None and self.sender is not None:
                background.append(asyncio.create_task(self._alerting(), name="alerting"))
                sending = asyncio.create_task(self.sender.run(), name="sender")
            try:
                await stop.wait()
            finally:
                for task in background:
                    task.cancel()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await self.scheduler.drain(DRAIN_GRACE)
                if sending is not None:
                    await self._stop_sender(sending)
                if self.storage is not None:
                    await asyncio.to_thread(self.storage.close, FLUSH_TIMEOUT)
                if runner is not None:
                    await runner.cleanup()
                log.info("stopped", extra={"event": "stopped"})
