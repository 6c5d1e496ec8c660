"""Probe workers: checks run in child processes whose event loops do nothing but probe.

The daemon's own loop serves the HTTP API and /metrics, evaluates alerts and feeds storage;
with the checks on it, whatever else it did showed up as the targets' latency, and one core
was the ceiling. `scheduler.workers` processes (default one per core; 1 keeps the checks
in-process) each own the endpoints the `--shard` hash gives them, run a Scheduler and a
Prober of their own, and send results up in batches that reach the same sinks as before.
They are forked by a zygote that imported their code once (worker_zygote.py).

A worker that dies or wedges is restarted with its endpoints; the checks it had in flight
become prober faults, never verdicts about their targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from healthcheck import worker_wire as wire
from healthcheck.clock import LOOP, Timeline
from healthcheck.logs import JsonFormatter, TextFormatter
from healthcheck.probe_worker import Init
from healthcheck.probes.registry import probe_kind
from healthcheck.result import EndpointId, ErrorClass, ProbeResult
from healthcheck.scheduler import HEARTBEAT, Check, Scheduler, SchedulerStats, Sink, deliver
from healthcheck.targets import Endpoint, SchedulerSettings, shard_hash
from healthcheck.worker_zygote import Forked, Zygote

log = logging.getLogger("healthcheck.workers")

# A worker that has not sent its first batch this long after it was started is killed and
# started again (a zygote started as an interpreter imports for ~0.5 s of CPU; a busy one-core
# host can take many times that). A started one is wedged after `scheduler.wedged_after`.
START_GRACE = 60.0
# Restarts of a worker that keeps dying come this long apart, doubling up to the maximum;
# one that ran STABLE_AFTER seconds is restarted at the shortest delay again.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 60.0
# How long past the drain grace a stopping worker has to send its last results and exit.
STOP_MARGIN = 3.0
# Why a worker was restarted (the `reason` label of healthcheck_probe_worker_restarts_total):
# it exited on its own, was killed by a signal the pool did not send (the OOM killer), stopped
# waking (`scheduler.wedged_after`), never sent its first batch (START_GRACE), could not be started.
RESTART_REASONS = ("exited", "killed", "wedged", "start_timeout", "start_failed")

# The daemon reads each worker's socket at most this often: the frames that came meanwhile
# (a worker sends one every probe_worker.FLUSH_AFTER while it has events) are taken in one
# wake of its loop, not one wake each; each wake cost ~0.2 ms of CPU (a quarter of the
# daemon's own CPU at 1,000 endpoints every 5 s). A result reaches storage, /metrics and
# alerting this much later at most; its latency and timestamp were taken in the worker.
READ_EVERY = 0.1
# The most bytes taken from the socket in one read.
READ_SIZE = 4 << 20

# The most workers `auto` starts. Each is ~38 MB of RSS before its endpoints (measured:
# 2 workers took the daemon's processes from 145 to 220 MB): 16 would be 600 MB of the unit's
# MemoryMax=1G, where one loop made the 1,000 checks/s of 10,000 endpoints every 10 s in
# bench/scale_bench.py. Set `workers` for more.
MAX_AUTO_WORKERS = 8


def default_workers() -> int:
    """One per core this process may run on, up to MAX_AUTO_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO_WORKERS))


def worker_count(settings: SchedulerSettings) -> int:
    return settings.workers or default_workers()


def owner(endpoint: Endpoint, count: int) -> int:
    """The worker (0-based) that checks this endpoint, by the `--shard` hash of its id: its
    upper half, as `--shard K/N` takes the whole, so one shard's endpoints still spread over
    every worker (with the same bits, shard 2 of 4 would all land on worker 2 of 2). A kind
    that declares `one_process` (the ONNX canary) goes to the first, so one process holds the
    GPU canary's worker and model."""
    if probe_kind(endpoint.kind).one_process:
        return 0
    return (shard_hash(endpoint.id) >> 32) % count


@dataclass(slots=True)
class Worker:
    """One worker process as the pool sees it."""

    index: int
    endpoints: list[Endpoint] = field(default_factory=list)
    process: Forked | None = None  # forked by the pool's zygote (worker_zygote.py)
    writer: asyncio.StreamWriter | None = None
    in_flight: set[str] = field(default_factory=set)  # `region/name` of checks started, not ended
    started_at: float = 0.0  # time.monotonic() when the process was started
    heartbeat: float | None = None  # its dispatcher's last wake, time.monotonic()
    ready: bool = False  # it has sent a batch
    wedged: bool = False  # the pool killed it for not waking
    killed_for: str = "wedged"  # why the pool killed it: wedged, or start_timeout
    restarts: int = 0
    keeper: asyncio.Task[None] | None = None


class WorkerPool:
    """Runs the checks of `endpoints` in worker processes; the same face as a Scheduler (run,
    update, drain, stats, in_flight, heartbeat), so the daemon and its health see no change."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        sinks: Sequence[Sink],
        settings: SchedulerSettings,
        count: int,
        secrets: Callable[[], frozenset[str]],
        on_lag: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
        database: str | None = None,
        zygote: Zygote | None = None,
    ) -> None:
        self._database = database
        self._sinks = list(sinks)
        self.zygote = zygote if zygote is not None else Zygote()
        self._secrets = secrets
        self._on_lag = on_lag
        self._clock = clock
        self.count = count
        # The caps are across all endpoints: each worker takes its share of them.
        self._settings = replace(
            settings,
            max_concurrency=math.ceil(settings.max_concurrency / count),
            rate_limit=math.ceil(settings.rate_limit / count),
            workers=1,
        )
        self.workers = [Worker(index) for index in range(count)]
        self._endpoints: dict[EndpointId, Endpoint] = {}
        self.stats = SchedulerStats()
        self.running = False
        self.restarts = 0
        # Restarts by reason (RESTART_REASONS), for healthcheck_probe_worker_restarts_total.
        self.restart_reasons: dict[str, int] = dict.fromkeys(RESTART_REASONS, 0)
        # Results the workers dropped because this process read them too slowly (see
        # probe_worker.MAX_HELD), for healthcheck_probe_results_dropped_total.
        self.results_dropped = 0
        self._drop_logged: float | None = None
        self._beat: float | None = None  # the pool's own last wake, before any worker beats
        self._stopping = asyncio.Event()
        self._active = False  # run() is running
        self.ready = asyncio.Event()  # every worker has started once: checks are dispatched
        self.update(endpoints)

    @property
    def in_flight(self) -> int:
        return sum(len(worker.in_flight) for worker in self.workers)

    @property
    def heartbeat(self) -> float | None:
        """The oldest of the pool's own watch loop's and its running workers' heartbeats: both
        wake every HEARTBEAT. None until every worker has started once (no WATCHDOG=1 before
        READY=1); after that a worker being restarted is the pool's business (START_GRACE), not
        a stall."""
        if self._beat is None or not self.ready.is_set():
            return None
        beats = [w.heartbeat for w in self.workers if w.ready and w.heartbeat is not None]
        return min([self._beat, *beats])

    def update(self, endpoints: Iterable[Endpoint]) -> tuple[int, int, int]:
        """Hand each worker its share of a reloaded set; each worker's Scheduler keeps the
        timers of what did not change. Returns (added, removed, changed)."""
        new = {endpoint.id: endpoint for endpoint in endpoints}
        old = self._endpoints
        added = sum(1 for i in new if i not in old)
        removed = sum(1 for i in old if i not in new)
        changed = sum(1 for i, e in new.items() if i in old and old[i] != e)
        self._endpoints = new
        shares: list[list[Endpoint]] = [[] for _ in self.workers]
        for endpoint in new.values():
            shares[owner(endpoint, self.count)].append(endpoint)
        secrets = self._secrets()
        for worker, share in zip(self.workers, shares, strict=True):
            worker.endpoints = share
            if worker.writer is not None:
                worker.writer.write(wire.pack_control(wire.ENDPOINTS, (share, secrets)))
        return added, removed, changed

    async def run(self) -> None:
        """Start the workers and watch them until cancelled; `drain` stops them. `running`
        turns true once every worker has started (its first batch), not before: until then
        no check of theirs is dispatched, and /readyz says so."""
        self._active = True
        try:
            for worker in self.workers:
                if worker.keeper is None:
                    worker.keeper = asyncio.create_task(
                        self._keep(worker), name=f"probe worker {worker.index + 1}"
                    )
            while True:
                now = time.monotonic()
                late = self._beat is not None and now - self._beat > 2 * HEARTBEAT
                self._beat = now
                if not late:  # after a stall of our own, the workers' batches are still unread
                    self._watch(now)
                await asyncio.sleep(HEARTBEAT)
        finally:
            self._active = self.running = False

    def _watch(self, now: float) -> None:
        """Kill a worker that stopped waking, or never started; its keeper restarts it."""
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None or worker.wedged:
                continue
            if worker.ready and worker.heartbeat is not None:
                silent, limit = now - worker.heartbeat, self._settings.wedged_after
            else:
                silent, limit = now - worker.started_at, START_GRACE
            if silent > limit:
                log.warning(
                    "probe worker %d (pid %d) made no progress for %.0fs: restarting it",
                    worker.index + 1,
                    process.pid,
                    silent,
                    extra={"event": "probe_worker_wedged", "worker": worker.index + 1},
                )
                worker.wedged = True
                worker.killed_for = "wedged" if worker.ready else "start_timeout"
                _kill(process)

    async def _keep(self, worker: Worker) -> None:
        """Run the worker; when it dies, report what it lost and start it again."""
        delay = RESTART_DELAY
        while not self._stopping.is_set():
            started = time.monotonic()
            reason, why = await self._serve(worker)
            if self._stopping.is_set():
                break
            lost = self._lose(worker, why)
            worker.restarts += 1
            self.restarts += 1
            self.restart_reasons[reason] += 1
            delay = RESTART_DELAY if time.monotonic() - started > STABLE_AFTER else delay
            log.warning(
                "probe worker %d %s; %d check(s) in flight lost (no verdict about their "
                "targets); restarting it in %.1fs",
                worker.index + 1,
                why,
                lost,
                delay,
                extra={
                    "event": "probe_worker_died",
                    "worker": worker.index + 1,
                    "lost": lost,
                    "restarts": worker.restarts,
                    "reason": reason,
                },
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, MAX_RESTART_DELAY)

    async def _serve(self, worker: Worker) -> tuple[str, str]:
        """Start the process, feed it, read its batches until it ends; say how it ended: one
        of RESTART_REASONS, and in words."""
        parent, child = socket.socketpair()
        try:
            process = await self.zygote.fork(child)
        except OSError as exc:
            parent.close()
            return "start_failed", f"could not be started ({exc})"
        finally:
            child.close()
        worker.process, worker.started_at = process, time.monotonic()
        worker.heartbeat, worker.ready, worker.wedged = None, False, False
        reader, writer = await asyncio.open_connection(sock=parent, limit=1 << 20)
        fmt, level = _log_setup()
        init = Init(
            worker.index,
            worker.endpoints,
            self._secrets(),
            self._settings,
            fmt,
            level,
            self._database,
        )
        writer.write(wire.pack_control(wire.INIT, init))
        worker.writer = writer
        if self._stopping.is_set():  # drain came while this one was starting
            writer.write(wire.pack_control(wire.STOP, 0.0))
        try:
            frames = wire.Frames()
            while data := await reader.read(READ_SIZE):
                for kind, payload in frames.feed(data):
                    if kind == wire.BATCH:
                        self._take(worker, wire.unpack_batch(payload))
                await _rest(writer.transport)
        except (ConnectionError, ValueError, EOFError) as exc:
            log.warning(
                "probe worker %d: bad stream (%s); stopping it",
                worker.index + 1,
                exc,
                extra={"event": "probe_worker_stream", "worker": worker.index + 1},
            )
        finally:
            worker.writer = None
            writer.close()
        try:
            async with asyncio.timeout(STOP_MARGIN):
                await process.wait()
        except TimeoutError:  # it closed its socket but lives on
            _kill(process)
            await process.wait()
        worker.ready = False
        if worker.wedged:
            how = "was wedged" if worker.killed_for == "wedged" else "did not start in time"
            return worker.killed_for, f"(pid {process.pid}) {how} and was killed"
        code = process.returncode
        reason = "killed" if code is not None and code < 0 else "exited"
        return reason, f"(pid {process.pid}) {_describe_exit(code)}"

    def _take(self, worker: Worker, batch: wire.Batch) -> None:
        events, heartbeat, skipped, lags, dropped = batch
        if not worker.ready:
            worker.ready = True
            if not self.ready.is_set() and all(w.ready for w in self.workers):
                self.ready.set()
                self.running = self._active
        if heartbeat is not None:
            worker.heartbeat = heartbeat
        stats = self.stats
        stats.skipped_overrun += skipped
        for lag in lags:
            stats.record_lag(lag)
            if self._on_lag is not None:
                self._on_lag(lag)
        if dropped:
            self._dropped(worker, dropped)
        in_flight, decode, ended_id, deliver = (
            worker.in_flight,
            wire.decode_result,
            wire.ended_id,
            self.deliver,
        )
        for event in events:
            if isinstance(event, str):
                in_flight.add(event)
                stats.dispatched += 1
                continue
            in_flight.discard(ended_id(event))
            stats.completed += 1
            deliver(decode(event))

    def _dropped(self, worker: Worker, count: int) -> None:
        """A worker shed results this process did not read in time: count, and say so (at
        most once a minute; the counter has every one)."""
        self.results_dropped += count
        now = time.monotonic()
        if self._drop_logged is None or now - self._drop_logged >= 60.0:
            self._drop_logged = now
            log.warning(
                "probe worker %d dropped %d result(s): this process did not read them in "
                "time (%d dropped in all); no verdict was made from them",
                worker.index + 1,
                count,
                self.results_dropped,
                extra={
                    "event": "probe_results_dropped",
                    "worker": worker.index + 1,
                    "dropped": count,
                },
            )

    def _lose(self, worker: Worker, why: str) -> int:
        """The dead worker's checks in flight, each as a prober fault: no verdict."""
        lost = sorted(worker.in_flight)
        worker.in_flight.clear()
        worker.heartbeat = None
        now = self._clock()
        for endpoint_id in lost:
            endpoint = self._endpoints.get(EndpointId.parse(endpoint_id))
            if endpoint is None:  # removed by a reload meanwhile
                continue
            self.stats.completed += 1
            self.deliver(
                ProbeResult(
                    endpoint.region,
                    endpoint.name,
                    endpoint.kind,
                    ok=False,
                    latency=0.0,
                    timestamp=now,
                    error=ErrorClass.PROBER,
                    error_text=f"probe worker {worker.index + 1} {why} during this check",
                )
            )
        return len(lost)

    def deliver(self, result: ProbeResult) -> None:
        deliver(self._sinks, result, self.stats)

    async def drain(self, grace: float) -> None:
        """Tell every worker to finish its checks within `grace` and send the results; kill
        any that has not exited STOP_MARGIN later."""
        self._stopping.set()
        for worker in self.workers:
            if worker.writer is not None:
                worker.writer.write(wire.pack_control(wire.STOP, grace))
        keepers = [worker.keeper for worker in self.workers if worker.keeper is not None]
        if keepers:
            _, pending = await asyncio.wait(keepers, timeout=grace + STOP_MARGIN)
            for worker in self.workers:
                if worker.keeper in pending and worker.process is not None:
                    _kill(worker.process)
            if pending:
                await asyncio.wait(pending)
        await self.zygote.close()  # after its workers: they die with it

    def report(self) -> list[dict[str, Any]]:
        """Each worker for /api/v1/self: pid, endpoints, checks in flight, restarts."""
        now = time.monotonic()
        return [
            {
                "worker": worker.index + 1,
                "pid": worker.process.pid
                if worker.process is not None and worker.process.returncode is None
                else None,
                "endpoints": len(worker.endpoints),
                "in_flight": len(worker.in_flight),
                "heartbeat_age_seconds": None
                if worker.heartbeat is None
                else round(now - worker.heartbeat, 3),
                "restarts": worker.restarts,
            }
            for worker in self.workers
        ]


Dispatcher = Scheduler | WorkerPool


def dispatcher(
    endpoints: Iterable[Endpoint],
    check: Check,
    sinks: Sequence[Sink],
    settings: SchedulerSettings,
    secrets: Callable[[], frozenset[str]],
    on_lag: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.time,
    timeline: Timeline = LOOP,
    database: str | None = None,
    zygote: Zygote | None = None,
) -> Dispatcher:
    """The daemon's dispatcher: a pool of `scheduler.workers` processes, forked by `zygote`
    (by default one started when the first worker is), or with one worker a Scheduler on the
    daemon's own loop calling `check`."""
    count = worker_count(settings)
    if count == 1:
        return Scheduler(endpoints, check, sinks, settings, on_lag=on_lag, timeline=timeline)
    return WorkerPool(endpoints, sinks, settings, count, secrets, on_lag, clock, database, zygote)


async def dispatching(running: Dispatcher, stop: asyncio.Event) -> None:
    """Until checks are dispatched (every worker started), `stop` is set, or START_GRACE:
    the daemon says READY=1 after this."""
    if isinstance(running, Scheduler):
        await asyncio.sleep(0)  # let the dispatcher start
        return
    waits = [asyncio.ensure_future(running.ready.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, timeout=START_GRACE, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def workers_report(running: Dispatcher | None) -> list[dict[str, Any]] | None:
    """The workers for /api/v1/self; None when checks run in the daemon's own process."""
    return running.report() if isinstance(running, WorkerPool) else None


def _log_setup() -> tuple[str | None, int]:
    """How the daemon logs (json or text, and the level), for its workers to do the same."""
    logger = logging.getLogger("healthcheck")
    for handler in logger.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return "json", logger.getEffectiveLevel()
        if isinstance(handler.formatter, TextFormatter):
            return "text", logger.getEffectiveLevel()
    return None, logger.getEffectiveLevel()


async def _rest(transport: asyncio.BaseTransport) -> None:
    """Until the next multiple of READ_EVERY without reading the worker's socket: what it
    sends meanwhile waits in the socket, and the loop is not woken for it. Every worker's
    reader wakes at the same multiples, so one turn of the loop serves them all."""
    if not isinstance(transport, asyncio.ReadTransport):
        return
    transport.pause_reading()
    try:
        await asyncio.sleep(READ_EVERY - asyncio.get_running_loop().time() % READ_EVERY)
    finally:
        transport.resume_reading()


def _kill(process: Forked) -> None:
    """SIGKILL by pid: the zygote, its parent, reaps it and reports how it ended."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
