"""SIGHUP: re-read the config file and hand the new endpoints to the running parts.

A bad file is logged and the old configuration keeps running; endpoints that did not change
keep their timers, results and alert state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from alerting.engine import AlertEngine
from healthcheck.config import load_config
from healthcheck.errors import HealthcheckError
from healthcheck.prober import Prober
from healthcheck.probes.base import Clock
from healthcheck.secrets import Redactor
from healthcheck.status import StatusBoard
from healthcheck.systemd_notify import Notifier
from healthcheck.targets import Config, Shard
from healthcheck.workers import Dispatcher

# The daemon's events, under the logger name operators already filter on.
log = logging.getLogger("healthcheck.daemon")


class ReadsConfig(Protocol):
    """The HTTP API's state (serve layer, above this one): it reads the running config."""

    config: Config


class RendersConfig(Protocol):
    """The metrics sink (serve layer, above this one): it labels series from the config."""

    def update(self, config: Config) -> None: ...


class ConfigReload:
    """Owns the running Config and applies a re-read one to the board, metrics, alerts, API,
    prober and scheduler; the last three are set once `Daemon.run` starts them."""

    def __init__(
        self,
        config: Config,
        path: str | None,
        board: StatusBoard,
        metrics: RendersConfig,
        alerts: AlertEngine | None,
        notifier: Notifier,
        status_line: Callable[[], str],
        clock: Clock,
        regions: set[str] | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.config = config
        self.path = path  # None: nothing to reload
        self.regions = regions  # a --region filter to apply again
        self.shard = shard  # and a --shard
        self.board = board
        self.metrics = metrics
        self.alerts = alerts
        self.api: ReadsConfig | None = None
        self.prober: Prober | None = None
        self.scheduler: Dispatcher | None = None
        self.notifier = notifier
        self.status_line = status_line
        self.clock = clock
        self.state = (True, clock())  # (last reload applied, when the running config was)
        self._lock = asyncio.Lock()
        self._pending = False  # a SIGHUP came while a reload ran: read the file again
        self.requests = 0  # SIGHUPs handled
        self.reads = 0  # times the file was read for them

    @property
    def running(self) -> bool:
        return self._lock.locked()

    async def request(self) -> bool:
        """Re-read the config file, or fold into the reload already running.

        Requests that come while a reload runs fold into one more reload after it, which
        reads the file as it is then: a burst of N SIGHUPs costs at most two reloads, not N
        (10,000 endpoints take seconds of CPU to load). Returns whether this call applied a
        configuration; False for one folded into the reload already running."""
        if self.path is None:
            log.warning(
                "nothing to reload: no configuration file", extra={"event": "config_reload_skipped"}
            )
            return False
        self.requests += 1
        self._pending = True
        if self._lock.locked():
            return False
        applied = False
        async with self._lock:
            while self._pending:
                self._pending = False
                self.reads += 1
                applied = await self._read(self.path)
        return applied

    async def _read(self, path: str) -> bool:
        self.notifier.send(reloading=1, monotonic_usec=int(time.monotonic() * 1_000_000))
        try:
            new = await asyncio.to_thread(load_config, path)
            if self.regions:
                new = new.only_regions(self.regions)
            if self.shard:
                new = new.only_shard(self.shard)
        except HealthcheckError as exc:
            self.state = (False, self.state[1])
            log.error(
                "configuration reload rejected, the running one stays: %s",
                exc,
                extra={"event": "config_reload_failed", "error": str(exc)},
            )
            self.notifier.send(ready=1, status=self.status_line())
            return False
        self._apply(new)
        self.notifier.send(ready=1, status=self.status_line())
        return True

    def _apply(self, new: Config) -> None:
        old = self.config
        needs_restart = [
            name
            for name in ("storage", "exporter", "alerting")
            if getattr(new, name) != getattr(old, name)
        ]
        # Those sections belong to running parts (a file, a socket, senders): keep them.
        self.config = replace(
            new, storage=old.storage, exporter=old.exporter, alerting=old.alerting
        )
        endpoints = list(self.config.endpoints())
        self.board.update(endpoints)
        self.metrics.update(self.config)
        if self.alerts is not None:
            self.alerts.use_endpoints(endpoints)
        if self.api is not None:
            self.api.config = self.config
        if self.prober is not None:
            self.prober.use_secrets(Redactor(self.config.secrets))
        added, removed, changed = (
            self.scheduler.update(endpoints) if self.scheduler else (len(endpoints), 0, 0)
        )
        self.state = (True, self.clock())
        log.info(
            "configuration reloaded: %d added, %d removed, %d changed%s",
            added,
            removed,
            changed,
            f"; {', '.join(needs_restart)} changes take effect on restart" if needs_restart else "",
            extra={
                "event": "config_reloaded",
                "added": added,
                "removed": removed,
                "changed": changed,
                "needs_restart": needs_restart,
            },
        )
