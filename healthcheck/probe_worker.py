"""One probe worker process: its event loop does nothing but schedule and probe.

Started by the daemon's WorkerPool as `python -m healthcheck.probe_worker FD`, FD being its
end of a socketpair. Endpoints and secrets come down that socket, never in argv or the
environment; results go up it in batches. The worker ignores the terminal's and the service
manager's signals (the daemon stops it, after draining) and ends when the daemon goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from healthcheck import event_loop
from healthcheck import worker_wire as wire
from healthcheck.logs import RedactingFilter, setup_logging
from healthcheck.prober import Prober
from healthcheck.probes.registry import probe_kind
from healthcheck.result import ProbeResult
from healthcheck.scheduler import HEARTBEAT, Scheduler
from healthcheck.secrets import Redactor
from healthcheck.targets import Endpoint, SchedulerSettings
from healthcheck.tuning import freeze_startup_heap, release_free_memory, tune_process

log = logging.getLogger("healthcheck.workers")

# Results that end within this long of each other cross to the daemon in one batch: the
# daemon reads its workers' sockets every workers.READ_EVERY (100 ms) anyway, so a batch more
# often only costs this loop a write and the daemon a frame to decode (at 1,000 endpoints every
# 5 s, 20 ms batches cost ~10 % of all our CPU per check). At 2,000 checks/s that is ~100
# results a frame; the daemon sees a result at most this much later (plus its read interval).
FLUSH_AFTER = 0.1
# When the daemon reads slower than its workers probe (its loop stalled, a flood of API
# clients), batches pile up. Up to HOLD_AFTER bytes wait in the socket's write buffer; past
# that the outbox stops writing and holds events, at most MAX_HELD of them (~300 bytes each
# encoded, ~2.5 minutes of 10,000 endpoints every 60 s in one worker). Past that the oldest
# event goes: a result so dropped is counted, reported with the next batch (the daemon's
# `healthcheck_probe_results_dropped_total`) and logged here. Probing never waits for the
# daemon: a check's timing is never the daemon's backlog.
HOLD_AFTER = 1 << 20
MAX_HELD = 50_000
DROP_LOG_EVERY = 60.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Init:
    """The first message: who this worker is, what it checks and how it logs."""

    index: int
    endpoints: list[Endpoint]
    secrets: frozenset[str]
    settings: SchedulerSettings
    log_format: str | None  # json or text, as the daemon logs; None: the daemon set none up
    log_level: int
    database: str | None = None  # the daemon's SQLite file (Probe.database)


class Outbox:
    """Collects check starts and results, and sends them up as one batch a little later; holds
    them (bounded, see MAX_HELD) while the daemon is not reading."""

    def __init__(
        self, writer: asyncio.StreamWriter, max_held: int = MAX_HELD, hold_after: int = HOLD_AFTER
    ) -> None:
        self._writer = writer
        self._max_held = max_held
        self._hold_after = hold_after
        self._events: deque[str | tuple[Any, ...]] = deque()
        self._lags: deque[float] = deque(maxlen=max_held)  # samples: the oldest may go unsaid
        self._skipped_sent = 0
        self.dropped = 0  # results shed since start
        self._dropped_sent = 0
        self._drop_logged: float | None = None
        self._flush: asyncio.TimerHandle | None = None
        self.scheduler: Scheduler | None = None

    def started(self, endpoint: Endpoint) -> None:
        self._add(f"{endpoint.region}/{endpoint.name}")  # str(endpoint.id), without the id

    def result(self, result: ProbeResult) -> None:
        self._add(wire.encode_result(result))

    def lag(self, seconds: float) -> None:
        self._lags.append(seconds)

    def _add(self, event: str | tuple[Any, ...]) -> None:
        events = self._events
        if len(events) >= self._max_held:
            self._shed()
        events.append(event)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_AFTER, self.flush)

    def _shed(self) -> None:
        """Make room for one event: the oldest goes. A start so lost only leaves the daemon not
        knowing that check was in flight; a result is counted and said."""
        if isinstance(self._events.popleft(), str):
            return
        self.dropped += 1
        now = time.monotonic()
        if self._drop_logged is None or now - self._drop_logged >= DROP_LOG_EVERY:
            self._drop_logged = now
            log.warning(
                "the daemon is not reading this worker's results: %d held, the oldest dropped "
                "(%d so far); checks go on",
                len(self._events),
                self.dropped,
                extra={"event": "probe_results_dropped", "dropped": self.dropped},
            )

    def flush(self, *, last: bool = False) -> None:
        """Send what there is, with the dispatcher's heartbeat; a closed socket sends nothing,
        and while the daemon leaves HOLD_AFTER bytes unread the events wait (bounded), except
        for the `last` batch before the worker stops."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        writer = self._writer
        if writer.is_closing():
            return
        if not last and writer.transport.get_write_buffer_size() > self._hold_after:
            if self._events:  # look again soon; a heartbeat alone need not wait in line
                self._flush = asyncio.get_running_loop().call_later(FLUSH_AFTER, self.flush)
            return
        scheduler = self.scheduler
        skipped = scheduler.stats.skipped_overrun if scheduler else 0
        heartbeat = scheduler.heartbeat if scheduler else None
        dropped = self.dropped
        batch = (
            list(self._events),
            heartbeat,
            skipped - self._skipped_sent,
            list(self._lags),
            dropped - self._dropped_sent,
        )
        self._events.clear()
        self._lags.clear()
        self._skipped_sent, self._dropped_sent = skipped, dropped
        writer.write(wire.pack_batch(batch))


async def serve(sock: socket.socket) -> None:
    """Probe what the daemon says until it says stop or goes away."""
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    first = await wire.read_frame(reader)
    if first is None or first[0] != wire.INIT:
        return
    init: Init = wire.unpack_control(first[1])
    del first  # its pickle (~1.3 MB at 10,000 endpoints) is not kept for the worker's life
    redacting = _logging(init)
    # Import the probe kinds before the first check: a first import (aiohttp's client, ~0.5 s
    # of CPU) in a thread beside the first checks takes the GIL from them, and a busy machine
    # then saw them time out. The daemon counts this worker started once it beats.
    for name in {endpoint.kind for endpoint in init.endpoints}:
        with contextlib.suppress(LookupError, ImportError):  # the check itself will say
            probe_kind(name)
    outbox = Outbox(writer)
    async with Prober(Redactor(init.secrets), database=init.database) as prober:

        def check(endpoint: Endpoint) -> Awaitable[ProbeResult]:
            # Prober.check's coroutine itself, not one wrapped around it: one frame less
            # for every check to go through at each of its waits
            outbox.started(endpoint)
            return prober.check(endpoint)

        scheduler = Scheduler(
            init.endpoints, check, [outbox.result], init.settings, on_lag=outbox.lag
        )
        outbox.scheduler = scheduler
        dispatcher = asyncio.create_task(scheduler.run(), name="dispatcher")
        beat = asyncio.create_task(_beat(outbox), name="heartbeat")
        await asyncio.sleep(0)
        freeze_startup_heap()
        release_free_memory()  # what unpickling the endpoints left free, back to the system
        grace = 0.0  # the daemon gone: stop at once
        while (message := await wire.read_frame(reader)) is not None:
            kind, payload = message
            if kind == wire.ENDPOINTS:
                endpoints, secrets = wire.unpack_control(payload)
                prober.use_secrets(Redactor(secrets))
                if redacting is not None:
                    redacting.redactor = Redactor(secrets)
                scheduler.update(endpoints)
            elif kind == wire.STOP:
                grace = wire.unpack_control(payload)
                break
        for task in (dispatcher, beat):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await scheduler.drain(grace)
        outbox.flush(last=True)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


async def _beat(outbox: Outbox) -> None:
    """A batch at least every HEARTBEAT, so the daemon sees a quiet worker is alive."""
    while True:
        await asyncio.sleep(HEARTBEAT)
        outbox.flush()


def _logging(init: Init) -> RedactingFilter | None:
    """Log as the daemon does, to the same stderr; the filter scrubs this worker's secrets."""
    if init.log_format is None:
        return None
    handler = setup_logging(
        logging.getLevelName(init.log_level), init.log_format, Redactor(init.secrets)
    )
    return next(f for f in handler.filters if isinstance(f, RedactingFilter))


def _detach() -> None:
    """Signals for the daemon's process group are the daemon's to act on: it drains and stops
    this worker. If the daemon dies without that, the kernel kills this worker (Linux)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main(argv: list[str]) -> int:
    _detach()
    sock = socket.socket(fileno=int(argv[0]))
    tune_process()
    started = time.monotonic()
    try:
        event_loop.run(serve(sock))
    except (ConnectionError, OSError) as exc:
        log.warning(
            "probe worker lost the daemon after %.0fs: %s",
            time.monotonic() - started,
            exc,
            extra={"event": "probe_worker_orphaned"},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
