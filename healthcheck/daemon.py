"""The long-running daemon: probes on schedule; each result to the board, storage and sinks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from healthcheck.probes import Prober
from healthcheck.probes.base import Clock
from healthcheck.result import ProbeResult, Status
from healthcheck.scheduler import Scheduler
from healthcheck.secrets import Redactor
from healthcheck.status import StatusBoard
from healthcheck.targets import Config, StorageSettings
from storage.writer import Retention, StorageWriter, default_path

log = logging.getLogger("healthcheck.daemon")

# Takes each classified result: metrics, alerting. Must not block.
ResultSink = Callable[[ProbeResult, Status], None]

# How long a stopping daemon lets in-flight checks finish before cancelling them.
DRAIN_GRACE = 5.0
# How long it waits for storage to flush on the way out.
FLUSH_TIMEOUT = 10.0


def storage_path(settings: StorageSettings) -> str:
    return settings.path or default_path()


def open_writer(settings: StorageSettings) -> StorageWriter:
    retention = Retention(
        settings.retention_raw, settings.retention_raw_rows, settings.retention_rollups
    )
    return StorageWriter(storage_path(settings), retention, max_queue=settings.max_queue)


class Daemon:
    """Owns one configuration's prober, scheduler, status board and storage writer."""

    def __init__(
        self,
        config: Config,
        storage: StorageWriter | None = None,
        extra_sinks: Sequence[ResultSink] = (),
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.board = StatusBoard(config.endpoints())
        self.storage = storage
        self._extra_sinks = list(extra_sinks)
        self._clock = clock
        self.scheduler: Scheduler | None = None

    def on_result(self, result: ProbeResult) -> None:
        """Classify once, then fan out; nothing here may block the event loop."""
        status = self.board.record(result)
        if status is None:
            return
        if self.storage is not None:
            self.storage.submit(result, status)
        for sink in self._extra_sinks:
            sink(result, status)

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until `stop` is set; then finish in-flight checks (bounded) and flush storage."""
        endpoints = list(self.config.endpoints())
        if self.storage is not None:
            self.storage.start()
        async with Prober(Redactor(self.config.secrets), self._clock) as prober:
            self.scheduler = Scheduler(
                endpoints, prober.check, [self.on_result], self.config.scheduler
            )
            log.info(
                "started: %d endpoints in %d regions",
                len(endpoints),
                len(self.config.regions),
                extra={"event": "started", "endpoints": len(endpoints)},
            )
            dispatcher = asyncio.create_task(self.scheduler.run(), name="dispatcher")
            try:
                await stop.wait()
            finally:
                dispatcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatcher
                await self.scheduler.drain(DRAIN_GRACE)
                if self.storage is not None:
                    await asyncio.to_thread(self.storage.close, FLUSH_TIMEOUT)
                log.info("stopped", extra={"event": "stopped"})
