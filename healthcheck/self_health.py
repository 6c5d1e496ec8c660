"""The daemon's view of itself: readiness, the /api/v1/self numbers, the readings /metrics
shows, systemd's STATUS= and WATCHDOG=1."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from alerting.engine import AlertEngine
from alerting.rules import SelfCheck
from healthcheck import event_loop
from healthcheck.alert_settings import AlertingSettings
from healthcheck.prober_faults import ProberFaults
from healthcheck.process import usage
from healthcheck.readings import Readings
from healthcheck.reload import ConfigReload
from healthcheck.scheduler import HEARTBEAT, SchedulerStats
from healthcheck.status import StatusBoard
from healthcheck.systemd_notify import Notifier
from healthcheck.uptime_cache import UptimeCache
from healthcheck.workers import Dispatcher, WorkerPool, workers_report
from storage.writer import StorageWriter

# The daemon's events, under the logger name operators already filter on.
log = logging.getLogger("healthcheck.daemon")

# STATUS= lines (and the watchdog, when its interval is shorter) this often.
STATUS_EVERY = 10.0
# A dispatcher silent this long (it wakes every HEARTBEAT) is wedged: no WATCHDOG=1, not ready.
STALL_AFTER = 3 * HEARTBEAT


class SelfHealth:
    """Answers "is the daemon keeping up?" from the parts it runs; the scheduler and the loop
    are set once `Daemon.run` starts them."""

    def __init__(
        self,
        board: StatusBoard,
        storage: StorageWriter | None,
        alerts: AlertEngine | None,
        alerting: AlertingSettings,
        prober_faults: ProberFaults,
        reloads: ConfigReload,
        notifier: Notifier,
        uptime: UptimeCache,
    ) -> None:
        self.board = board
        self.storage = storage
        self.alerts = alerts
        self.alerting = alerting  # a reload keeps the running alerting section
        self.prober_faults = prober_faults
        self.reloads = reloads
        self.notifier = notifier
        self.uptime = uptime
        self.scheduler: Dispatcher | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def heartbeat_age(self) -> float | None:
        beat = self.scheduler.heartbeat if self.scheduler else None
        return None if beat is None else time.monotonic() - beat  # any thread may ask

    def task_count(self) -> int:
        """Tasks on the daemon's loop; /metrics renders in a worker thread, so name the loop."""
        return len(asyncio.all_tasks(self.loop)) if self.loop is not None else 0

    def not_ready(self) -> list[str]:
        """Why the daemon cannot be relied on right now; empty when it can."""
        reasons = []
        age = self.heartbeat_age()
        if self.scheduler is None or not self.scheduler.running:
            reasons.append("scheduler not running")
        elif age is not None and age > STALL_AFTER:
            reasons.append(f"scheduler stalled: no progress for {age:.0f}s")
        if (
            self.storage is not None
            and self.storage.stats.failures
            and not self.storage.stats.writable
        ):
            reasons.append(f"storage not writable: {self.storage.stats.last_error}")
        if self.alerts is not None:
            reasons.extend(self.alerts.not_ready())
        reasons.extend(self.alerting.unrouted())
        return reasons

    def self_check(self, now: float) -> SelfCheck:
        """p99 schedule lag of the last 200 dispatches, seconds storage has been unwritable,
        and the checks lately that failed for the prober's own trouble."""
        stats = self.scheduler.stats if self.scheduler else None
        enough = stats is not None and len(stats.lags) >= 20
        lag_p99 = stats.lag_summary(200)["p99"] if stats is not None and enough else None
        since = self.storage.stats.failing_since if self.storage else None
        return SelfCheck(
            lag_p99,
            now - since if since is not None else None,
            self.prober_faults.recent(now),
            self.prober_faults.last,
        )

    def self_report(self) -> dict[str, Any]:
        """The daemon's own numbers for /api/v1/self: is it keeping up, and at what cost."""
        stats = self.scheduler.stats if self.scheduler else SchedulerStats()
        process = usage()
        writer = self.storage
        return {
            "endpoints": len(self.board.endpoints),
            "scheduler": {
                "running": bool(self.scheduler and self.scheduler.running),
                "dispatched": stats.dispatched,
                "completed": stats.completed,
                "skipped_overrun": stats.skipped_overrun,
                "in_flight": self.scheduler.in_flight if self.scheduler else 0,
                "heartbeat_age_seconds": self.heartbeat_age(),
                "lag_seconds": stats.lag_summary(),
                "workers": workers_report(self.scheduler),
            },
            "reloads": {
                "requested": self.reloads.requests,
                "read": self.reloads.reads,
                "running": self.reloads.running,
            },
            "process": {
                "pid": os.getpid(),
                "rss_bytes": process.rss_bytes,
                "open_fds": process.open_fds,
                "cpu_seconds": round(process.cpu_seconds, 3),
                "asyncio_tasks": self.task_count(),
                "event_loop": event_loop.name(self.loop) if self.loop is not None else None,
                "nice": os.getpriority(os.PRIO_PROCESS, 0),
            },
            "storage": None
            if writer is None
            else {
                "path": writer.path,
                "written": writer.stats.written,
                "dropped": writer.stats.dropped,
                "queue_depth": writer.queue_depth,
                "writable": writer.stats.writable,
            },
            "alerts": None
            if self.alerts is None
            else {
                "evaluations": self.alerts.evaluations,
                "evaluate_every_seconds": self.alerts.settings.evaluate_every,
            },
        }

    def readings(self) -> Readings:
        """The numbers /metrics shows of the daemon's parts (a worker thread may ask)."""
        scheduler, writer, alerts = self.scheduler, self.storage, self.alerts
        snapshot = self.uptime.snapshot
        return Readings(
            in_flight=scheduler.in_flight if scheduler else 0,
            dispatched=scheduler.stats.dispatched if scheduler else 0,
            missed=scheduler.stats.skipped_overrun if scheduler else 0,
            heartbeat_age=self.heartbeat_age(),
            asyncio_tasks=self.task_count(),
            not_ready=self.not_ready(),
            reload=self.reloads.state,
            prober_faults=self.prober_faults.total,
            worker_restarts=dict(scheduler.restart_reasons)
            if isinstance(scheduler, WorkerPool)
            else None,
            worker_results_dropped=scheduler.results_dropped
            if isinstance(scheduler, WorkerPool)
            else None,
            storage_queue_depth=writer.queue_depth if writer else None,
            storage_writable=writer.stats.writable if writer else None,
            storage_dropped=writer.stats.dropped if writer else None,
            storage_written=writer.stats.written if writer else None,
            storage_replaced=writer.stats.replaced if writer else None,
            uptime=snapshot.report if snapshot else None,
            alerts_firing=alerts.firing() if alerts else {},
            alert_evaluations=alerts.evaluations if alerts else None,
            notifications=alerts.notification_counts() if alerts else {},
        )

    def status_line(self) -> str:
        """The one-line summary systemd shows (STATUS=)."""
        parts = [self.board.summary()]
        if (
            self.storage is not None
            and not self.storage.stats.writable
            and self.storage.stats.failures
        ):
            parts.append("storage DOWN")
        if self.alerts is not None:
            firing = sum(self.alerts.firing().values())
            parts.append(f"{firing} alerts firing")
        if not self.reloads.state[0]:
            parts.append("last reload rejected")
        return "; ".join(parts)

    async def supervise(self) -> None:
        """WATCHDOG=1 only while the scheduler's dispatcher wakes on time; STATUS= lines."""
        period = min(self.notifier.watchdog_interval or STATUS_EVERY, STATUS_EVERY)
        while True:
            age = self.heartbeat_age()
            alive = age is not None and age < max(STALL_AFTER, period)
            if alive and self.notifier.watchdog_interval is not None:
                self.notifier.send(watchdog=1)
            elif not alive and age is not None:  # None: not started yet (probe workers)
                log.warning(
                    "the scheduler is not making progress", extra={"event": "scheduler_stalled"}
                )
            self.notifier.send(status=self.status_line())
            await asyncio.sleep(period)
