"""What the daemon says of its own parts on /metrics: one plain value, read at scrape time.

The runtime layer makes it (SelfHealth.readings); the exporter, a layer above, only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # storage (and sqlite_utils) only for the type
    from storage.uptime import UptimeReport


@dataclass(frozen=True, slots=True)
class Readings:
    """The daemon's own numbers at one moment, read by the exporter at scrape time; None: that
    part is not running (no storage, no daemon at all), and /metrics leaves its series out."""

    in_flight: int | None = None  # checks running now
    dispatched: int | None = None  # checks started
    missed: int | None = None  # runs skipped: the previous check still running
    heartbeat_age: float | None = None  # s since the dispatcher woke
    asyncio_tasks: int | None = None
    not_ready: list[str] | None = None  # why /readyz says 503; empty: ready
    reload: tuple[bool, float] | None = None  # last reload ok, when (epoch s)
    prober_faults: int | None = None  # checks failed for the prober's own trouble
    storage_queue_depth: int | None = None
    storage_writable: bool | None = None
    storage_dropped: int | None = None
    storage_written: int | None = None
    storage_replaced: int | None = None
    uptime: UptimeReport | None = None  # the last stored-uptime read
    alerts_firing: dict[str, int] | None = None  # severity -> count
    alert_evaluations: int | None = None  # alert evaluations made (None: alerting is off)
    # probe workers (None: checks run on the daemon's own loop): restarts by reason, and
    # results a worker dropped because the daemon read them too slowly
    worker_restarts: dict[str, int] | None = None
    worker_results_dropped: int | None = None
    # channel -> (sent, failed, timed out, pending)
    notifications: dict[str, tuple[int, int, int, int]] | None = None
