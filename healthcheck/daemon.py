"""The long-running daemon: probes on schedule, results to the status board (and later sinks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from healthcheck.probes import Prober
from healthcheck.probes.base import Clock
from healthcheck.scheduler import Scheduler, Sink
from healthcheck.secrets import Redactor
from healthcheck.status import StatusBoard
from healthcheck.targets import Config

log = logging.getLogger("healthcheck.daemon")

# How long a stopping daemon lets in-flight checks finish before cancelling them.
DRAIN_GRACE = 5.0


class Daemon:
    """Owns one configuration's prober, scheduler and status board for its lifetime."""

    def __init__(
        self, config: Config, extra_sinks: Sequence[Sink] = (), clock: Clock = time.time
    ) -> None:
        self.config = config
        self.board = StatusBoard(config.endpoints())
        self._extra_sinks = list(extra_sinks)
        self._clock = clock
        self.scheduler: Scheduler | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until `stop` is set, then let in-flight checks finish (bounded) and return."""
        endpoints = list(self.config.endpoints())
        async with Prober(Redactor(self.config.secrets), self._clock) as prober:
            self.scheduler = Scheduler(
                endpoints,
                prober.check,
                [self.board.record, *self._extra_sinks],
                self.config.scheduler,
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
                log.info("stopped", extra={"event": "stopped"})
