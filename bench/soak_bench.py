"""Soak benchmark: 1,000 endpoints for 10+ minutes, a share misbehaving; does anything grow?

    .venv/bin/python bench/soak_bench.py --minutes 12 --json bench/soak.json
    .venv/bin/python bench/soak_bench.py --minutes 1 --endpoints 100 --sample-every 5
    .venv/bin/python bench/soak_bench.py --minutes 15 --trace-memory     # what grows, and where

The healthy endpoints on the scale bench's farm (nginx, else aiohttp); the misbehaving share on
a farm process of its own: hangs, resets, garbage, slow-loris bodies, huge bodies, flapping, and
names that do not resolve. The real `healthcheck run` probes them all with storage, metrics
(scraped like Prometheus would) and alerting to a loopback webhook. RSS, open fds, threads and
asyncio tasks are sampled over time and judged flat or not; schedule lag is bounded; every check
is accounted for, live from /api/v1/self and /metrics, and at the end from the database.
Exit status: 0 when every verdict passes, 1 when one fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from scale_bench import (
    SCRAPE_EVERY,
    Receiver,
    daemon_config,
    family,
    free_port,
    get_json,
    histogram_quantile,
    lag_histogram,
    pss_bytes,
    raise_nofile,
    scrape,
    started,
    target_farm,
    wait_http,
)

from healthcheck.shared_renders import FRESH_FOR

# -- what misbehaves, and how it should read in results ------------------------------------------
FARM_KINDS = ("hang", "reset", "garbage", "slowloris", "huge", "flapping")
MISBEHAVIOURS = (*FARM_KINDS, "dns")
KINDS = ("healthy", *MISBEHAVIOURS)
# The error classes each kind may produce (None: a successful check).
EXPECTED: dict[str, set[str | None]] = {
    "healthy": {None},
    "hang": {"timeout"},
    "reset": {"connection_reset"},
    "garbage": {"invalid_response"},
    "slowloris": {"timeout"},
    "huge": {"body_too_large"},
    "flapping": {None, "http_status"},
    "dns": {"dns"},
}
TRICKLE_EVERY = 1.0  # slow-loris: one body byte a second, under any per-read timeout
HUGE_MB = (50, 200)  # huge bodies, far over the probe's 1 MiB max_body
FLAP_CHECKS = 4  # flapping endpoints: this many intervals up, then as many down (HTTP 503)
CHUNK = b"x" * 65536

# -- what is judged ------------------------------------------------------------------------------
# The daemon's alert windows hold 5 minutes of checks per endpoint (error rate, latency): its
# memory fills for that long, by design. Growth after that is what a leak looks like.
WARMUP = 300.0
POLL_EVERY = 5.0  # /api/v1/self between samples: its lag max covers the last 1,000 dispatches
# A /metrics scrape within FRESH_FOR of the last one's render gets that render's body, older
# than the /api/v1/self read before it: a scrape waits out that long after the last one ended
# (whose render ended before it did), so the counters it brings are of its own moment.
SCRAPE_GAP = FRESH_FOR + 0.1
# Leak: the mean of the last third of the samples after warm-up against the middle third's;
# growth allowed = max(absolute, relative x middle). fds and tasks move with the checks in
# flight (a hang holds a socket and a task for its whole timeout), hence their slack.
LIMITS: dict[str, tuple[float, float]] = {
    "rss_mb": (0.05, 2.0),
    "open_fds": (0.10, 5.0),
    "asyncio_tasks": (0.10, 5.0),
    "threads": (0.0, 1.0),
    "children_pss_mb": (0.05, 2.0),
}
LAG_P99_BOUND = 0.25  # seconds: the project's own p99 goal (bench/README.md)
LAG_MAX_BOUND = 1.0  # seconds: the dispatcher's heartbeat; later than that it looks wedged


# Diagnosis only (--trace-memory): the daemon under tracemalloc, with a thread that writes,
# each minute after warm-up, what grew since the warm-up ended: by allocation site and by the
# type of live objects the collector tracks (after a full collection; the frozen start-up
# objects left out). Snapshots hold the GIL for seconds at 1,000 endpoints: lag figures of
# such a run mean nothing.
TRACE_WRAPPER = """
import collections, gc, json, sys, threading, time, tracemalloc
out, warmup, every, argv = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
tracemalloc.start()
mine = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<string>")]
def types():
    gc.collect()  # live objects only: young garbage waits for 50,000 allocations otherwise
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())
def watch():
    began = time.monotonic()
    time.sleep(warmup)
    gc.collect()
    base = tracemalloc.take_snapshot().filter_traces(mine)
    base_types = types()  # with `base` alive, as at each count below: its tuples cancel out
    while True:
        now_types = types()
        traced = tracemalloc.get_traced_memory()[0]  # before this round's snapshot exists
        snap = tracemalloc.take_snapshot().filter_traces(mine)
        grown = sorted(snap.compare_to(base, "lineno"), key=lambda g: -g.size_diff)[:15]
        counts = (now_types - base_types).most_common(15)
        entry = {
            "t_s": round(time.monotonic() - began, 1),
            "traced_mb": round(traced / 2**20, 2),
            "gc_objects": sum(now_types.values()),
            "sites": [[str(g.traceback[0]), round(g.size_diff / 1024, 1), g.count_diff]
                      for g in grown],
            "types": counts,
        }
        with open(out, "a") as f:
            f.write(json.dumps(entry) + "\\n")
        del snap, grown
        time.sleep(every)
threading.Thread(target=watch, daemon=True, name="memory watch").start()
from healthcheck.cli import main
sys.exit(main(argv))
"""


# -- the misbehaving farm (its own process) ------------------------------------------------------
def _index(path: str) -> int:
    """The endpoint's number from its path (/e123 -> 123)."""
    digits = re.search(r"\d+", path)
    return int(digits.group()) if digits else 0


async def _request_path(reader: asyncio.StreamReader) -> str:
    head = await reader.readuntil(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) > 1 else "/"


async def _until_hung_up(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> None:
    """Accept, read the request, never answer: until the prober hangs up."""
    await _until_hung_up(reader)


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> None:
    """Read the request, then a TCP RST instead of an answer (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> None:
    """16 B to 4 KiB of random bytes instead of HTTP, then close."""
    writer.write(os.urandom(random.randint(16, 4096)))
    await writer.drain()


async def _slowloris(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> None:
    """Good headers, then the body one byte every TRICKLE_EVERY seconds."""
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
    )
    for _ in range(4096):
        writer.write(b" ")
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TRICKLE_EVERY):
                await _until_hung_up(reader)
                return


async def _huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> None:
    """50-200 MB streamed; even endpoints announce it (Content-Length), odd ones chunk it."""
    size = random.randint(*HUGE_MB) * 2**20
    chunked = _index(path) % 2 == 1
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{length}\r\n\r\n".encode())
    frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK
    for _ in range(size // len(CHUNK)):
        writer.write(frame)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, str], Awaitable[None]]
BEHAVIOURS: dict[str, Behaviour] = {
    "hang": _hang,
    "reset": _reset,
    "garbage": _garbage,
    "slowloris": _slowloris,
    "huge": _huge,
}


async def _farm(
    ports: dict[str, int], counts: Any, ready: Any, flap_half: float, seed: int
) -> None:
    """Every misbehaviour on its own port; counts[k] connections served, counts[n+k] open."""
    n = len(FARM_KINDS)

    def serve(slot: int, behaviour: Behaviour) -> Callable[..., Awaitable[None]]:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            counts[slot] += 1
            counts[n + slot] += 1
            try:
                # The prober hanging up or resetting first is what these endpoints are for.
                with contextlib.suppress(
                    ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
                ):
                    await behaviour(reader, writer, await _request_path(reader))
            finally:
                counts[n + slot] -= 1
                writer.close()

        return connection

    servers = [
        await asyncio.start_server(
            serve(FARM_KINDS.index(kind), behaviour), "127.0.0.1", ports[kind], backlog=4096
        )
        for kind, behaviour in BEHAVIOURS.items()
    ]
    flapping = FARM_KINDS.index("flapping")

    async def flap(request: web.Request) -> web.Response:
        counts[flapping] += 1
        i = _index(request.path)
        phase = random.Random(seed * 1_000_003 + i).uniform(0, 2 * flap_half)
        if (time.time() + phase) // flap_half % 2:
            return web.json_response({"status": "DOWN"}, status=503)
        return web.json_response({"status": "UP"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", flap)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ports["flapping"], backlog=4096).start()
    ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()
        await runner.cleanup()


def _farm_process(
    ports: dict[str, int], counts: Any, ready: Any, flap_half: float, seed: int
) -> None:
    raise_nofile()
    random.seed(seed)
    asyncio.run(_farm(ports, counts, ready, flap_half, seed))


@dataclass
class MisbehavingFarm:
    ports: dict[str, int]
    counts: Any  # a shared array: connections served per kind, then open per kind
    process: multiprocessing.process.BaseProcess

    def served(self) -> dict[str, int]:
        return {kind: self.counts[k] for k, kind in enumerate(FARM_KINDS)}

    def open_now(self) -> int:
        return sum(self.counts[len(FARM_KINDS) :])


@contextlib.contextmanager
def misbehaving_farm(flap_half: float, seed: int) -> Iterator[MisbehavingFarm]:
    """The misbehaving endpoints, in a process of their own, for the duration of the block."""
    context = multiprocessing.get_context("spawn")
    ports = {kind: free_port() for kind in FARM_KINDS}
    counts = context.RawArray("q", 2 * len(FARM_KINDS))
    ready = context.Event()
    process = context.Process(
        target=_farm_process,
        args=(ports, counts, ready, flap_half, seed),
        name="soak farm",
        daemon=True,
    )
    process.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the misbehaving farm did not start within 30 s")
        yield MisbehavingFarm(ports, counts, process)
    finally:
        process.terminate()
        process.join(5)


# -- the fleet -----------------------------------------------------------------------------------
def assign_kinds(endpoints: int, bad_share: float, seed: int) -> list[str]:
    """How each endpoint behaves: a seeded random share misbehaves, the kinds in equal parts."""
    rng = random.Random(seed)
    kinds = ["healthy"] * endpoints
    for n, i in enumerate(rng.sample(range(endpoints), round(endpoints * bad_share))):
        kinds[i] = MISBEHAVIOURS[n % len(MISBEHAVIOURS)]
    return kinds


def endpoint_urls(
    kinds: list[str], healthy_ports: list[int], farm_ports: dict[str, int]
) -> list[str]:
    """One URL per endpoint e{i}; DNS failures are names under .invalid (RFC 6761)."""
    urls = []
    for i, kind in enumerate(kinds):
        if kind == "healthy":
            urls.append(f"http://127.0.0.1:{healthy_ports[i % len(healthy_ports)]}/e{i}")
        elif kind == "dns":
            urls.append(f"http://e{i}.soak.invalid/e{i}")
        else:
            urls.append(f"http://127.0.0.1:{farm_ports[kind]}/e{i}")
    return urls


# -- reading the daemon --------------------------------------------------------------------------
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def families(text: str, *names: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The named metric families of a /metrics body: (labels, value) for each series."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in names}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        if name in found:
            found[name].append((dict(_LABEL.findall(labels)), float(value)))
    return found


def by_label(series: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    totals: Counter[str] = Counter()
    for labels, value in series:
        totals[labels.get(label, "")] += value
    return dict(totals)


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


@dataclass
class Sample:
    """One look at the daemon: /api/v1/self, /proc, a /metrics scrape, the farm, the webhook."""

    t_s: float
    rss_mb: float
    open_fds: int
    asyncio_tasks: int
    threads: int
    in_flight: int
    # every process under the daemon (the helper, the probe workers' zygote and the workers, the
    # resource tracker), a page they share counted once
    children_pss_mb: float
    dispatched: int
    completed: int
    missed: int
    written: int
    queue_depth: int
    dropped: int
    cpu_s: float
    checks_metric: float  # sum of healthcheck_checks_total at the scrape
    # healthcheck_prober_faults_total at the scrape: checks completed with no verdict (the prober
    # starved of CPU through a timeout, out of fds, ...), in no results metric and never stored
    prober_faults_metric: float
    lag_dispatches_metric: float  # healthcheck_schedule_lag_seconds_count at the scrape
    lag_p99_ms: float | None  # /api/v1/self: the last 1,000 dispatches
    lag_max_ms: float | None
    farm_open: int  # connections the misbehaving farm holds open now
    notifications: int  # received at the webhook so far
    firing: float


@dataclass
class Flatness:
    metric: str
    middle: float
    last: float
    growth: float
    allowed: float
    slope_per_hour: float
    passed: bool


def flatness(metric: str, times: list[float], values: list[float]) -> Flatness:
    """Last third's mean against the middle third's, with LIMITS[metric]; slope for reading."""
    relative, absolute = LIMITS[metric]
    n = len(values)
    middle = statistics.fmean(values[n // 3 : 2 * n // 3])
    last = statistics.fmean(values[2 * n // 3 :])
    allowed = max(absolute, relative * middle)
    slope = statistics.linear_regression(times, values).slope * 3600 if len(set(times)) > 1 else 0.0
    return Flatness(
        metric,
        round(middle, 2),
        round(last, 2),
        round(last - middle, 2),
        round(allowed, 2),
        round(slope, 2),
        last - middle <= allowed,
    )


@dataclass
class Snapshots:
    """Every /api/v1/self read: the live accounting invariant and the lag maxima."""

    t0: float
    warmup: float
    reads: int = 0
    unbalanced: list[dict] = field(default_factory=list)  # dispatched != completed + in flight
    lag_max: list[tuple[float, float]] = field(default_factory=list)  # (t, max) after warm-up
    storage_gap: list[int] = field(default_factory=list)  # completed - written - queued - dropped

    async def read(self, base: str) -> dict:
        report = await asyncio.to_thread(get_json, f"{base}/api/v1/self")
        scheduler = report["scheduler"]
        self.reads += 1
        if scheduler["dispatched"] != scheduler["completed"] + scheduler["in_flight"]:
            self.unbalanced.append(scheduler)
        t = time.monotonic() - self.t0
        if t >= self.warmup and scheduler["lag_seconds"]["max"] is not None:
            self.lag_max.append((round(t, 1), scheduler["lag_seconds"]["max"]))
        storage = report["storage"]
        self.storage_gap.append(
            scheduler["completed"]
            - storage["written"]
            - storage["queue_depth"]
            - storage["dropped"]
        )
        return report


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


def sample(
    t: float, before: dict, text: str, pid: int, farm: MisbehavingFarm, receiver: Receiver
) -> Sample:
    scheduler, process, storage = before["scheduler"], before["process"], before["storage"]
    found = families(
        text,
        "healthcheck_checks_total",
        "healthcheck_prober_faults_total",
        "healthcheck_schedule_lag_seconds_count",
        "healthcheck_alerts_firing",
    )
    kids = 0
    for child in family(pid)[1:]:  # the helper, the zygote and the workers it forked, ...
        with contextlib.suppress(OSError):  # gone since it was listed
            kids += pss_bytes(child)
    return Sample(
        t_s=round(t, 1),
        rss_mb=round(process["rss_bytes"] / 2**20, 1),
        open_fds=process["open_fds"],
        asyncio_tasks=process["asyncio_tasks"],
        threads=threads(pid),
        in_flight=scheduler["in_flight"],
        children_pss_mb=round(kids / 2**20, 1),
        dispatched=scheduler["dispatched"],
        completed=scheduler["completed"],
        missed=scheduler["skipped_overrun"],
        written=storage["written"],
        queue_depth=storage["queue_depth"],
        dropped=storage["dropped"],
        cpu_s=process["cpu_seconds"],
        checks_metric=sum(v for _, v in found["healthcheck_checks_total"]),
        prober_faults_metric=sum(v for _, v in found["healthcheck_prober_faults_total"]),
        lag_dispatches_metric=sum(v for _, v in found["healthcheck_schedule_lag_seconds_count"]),
        lag_p99_ms=_ms(scheduler["lag_seconds"]["p99"]),
        lag_max_ms=_ms(scheduler["lag_seconds"]["max"]),
        farm_open=farm.open_now(),
        notifications=len(receiver.received),
        firing=sum(v for _, v in found["healthcheck_alerts_firing"]),
    )


def log_events(path: Path) -> dict:
    """Warnings and errors of the daemon's JSON log by event, and its closing 'stopped' line."""
    events: Counter[str] = Counter()
    other, stopped = 0, None
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            other += 1  # not a log line: a traceback or a library's print
            continue
        if entry.get("event") == "stopped":
            stopped = entry
        if entry.get("level") in ("warning", "error", "critical"):
            events[f"{entry['level']}:{entry.get('event') or entry.get('msg', '')[:60]}"] += 1
    return {"warnings_errors": dict(events), "other_lines": other, "stopped": stopped}


def _quantile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))], 1) if ordered else None


def stored_results(db: Path, kinds: list[str]) -> dict:
    """What the database holds, per kind of endpoint: checks, error classes, latency."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT t.endpoint, r.ok, r.error, r.latency_ms, r.error_text"
            " FROM results r JOIN targets t ON t.id = r.target_id"
        ).fetchall()
    per_kind: dict[str, dict] = {
        kind: {
            "endpoints": kinds.count(kind),
            "checks": 0,
            "ok": 0,
            "errors": Counter(),
            "latency": [],
            "examples": {},
            "unexpected": Counter(),
        }
        for kind in KINDS
    }
    per_endpoint: Counter[str] = Counter()
    for endpoint, ok, error, latency_ms, error_text in rows:
        kind = per_kind[kinds[_index(endpoint)]]
        per_endpoint[endpoint] += 1
        kind["checks"] += 1
        kind["ok"] += bool(ok)
        kind["errors"][error or "ok"] += 1
        kind["latency"].append(latency_ms)
        if error and error not in kind["examples"]:
            kind["examples"][error] = error_text
        if error not in EXPECTED[kinds[_index(endpoint)]]:
            kind["unexpected"][error or "ok"] += 1
    for kind in per_kind.values():
        latency = kind.pop("latency")
        kind["latency_p50_ms"] = _quantile(latency, 0.5)
        kind["latency_max_ms"] = _quantile(latency, 1.0)
        kind["errors"] = dict(kind["errors"])
        kind["unexpected"] = dict(kind["unexpected"])
    counts = list(per_endpoint.values())
    return {
        "rows": len(rows),
        "endpoints_with_results": len(per_endpoint),
        "checks_per_endpoint": [min(counts, default=0), max(counts, default=0)],
        "kinds": {kind: value for kind, value in per_kind.items() if value["endpoints"]},
    }


def code_state() -> str:
    """The commit measured, '+dirty' when the product's packages differ from it."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "healthcheck", "alerting", "storage")
    return commit + ("+dirty" if dirty else "")


# -- the run -------------------------------------------------------------------------------------
async def soak(
    endpoints: int,
    interval: float,
    minutes: float,
    bad_share: float,
    seed: int,
    warmup: float,
    sample_every: float,
    retries: int,
    prefer_nginx: bool = True,
    python: str = sys.executable,
    trace_memory: bool = False,
) -> dict:
    """One soak run; every figure and verdict as a JSON-ready dict."""
    workdir = Path(tempfile.mkdtemp(prefix="hc-soak-"))
    code = code_state()  # before the daemon imports it: others may be editing the tree
    kinds = assign_kinds(endpoints, bad_share, seed)
    receiver = Receiver()
    await receiver.start()
    samples: list[Sample] = []
    scrapes: list[tuple[dict, str, dict]] = []  # (self before, /metrics, self after)
    try:
        with (
            target_farm(workdir, prefer_nginx) as (healthy_farm, healthy_ports, _),
            misbehaving_farm(FLAP_CHECKS * interval, seed) as farm,
        ):
            urls = endpoint_urls(kinds, healthy_ports, farm.ports)
            listen = free_port()
            config = daemon_config(
                urls, interval, workdir, listen, receiver.port, defaults={"retries": retries}
            )
            argv = [python, "-m", "healthcheck", "run", "--config", str(config)]
            if trace_memory:
                trace = [str(workdir / "memory.jsonl"), str(warmup), "60"]
                argv = [python, "-c", TRACE_WRAPPER, *trace, *argv[3:]]
            with started([*argv, "--log-format", "json"], workdir / "daemon.log") as daemon:
                base = f"http://127.0.0.1:{listen}"
                await asyncio.to_thread(wait_http, f"{base}/readyz", 60)
                t0 = time.monotonic()
                snapshots = Snapshots(t0, warmup)
                rounds = int(minutes * 60 // sample_every)
                print(_row_header(), flush=True)
                scraped = -SCRAPE_GAP  # when the last scrape ended
                for k in range(rounds + 1):
                    # On time, or as soon after a late one as gives a render of its own.
                    due = max(t0 + k * sample_every, scraped + SCRAPE_GAP)
                    while (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(min(wait, POLL_EVERY))
                        if due - time.monotonic() > 0.5:
                            await snapshots.read(base)
                    before = await snapshots.read(base)
                    text = await asyncio.to_thread(scrape, f"{base}/metrics")
                    scraped = time.monotonic()
                    after = await snapshots.read(base)
                    scrapes.append((before, text, after))
                    t = time.monotonic() - t0
                    samples.append(sample(t, before, text, daemon.pid, farm, receiver))
                    print(_row(samples[-1]), flush=True)
                final_metrics = scrapes[-1][1]
                daemon.send_signal(signal.SIGTERM)
                await asyncio.to_thread(daemon.wait, 60)
            served = farm.served()
        database = stored_results(workdir / "healthcheck.db", kinds)
        log = log_events(workdir / "daemon.log")
        traced = workdir / "memory.jsonl"
        memory = (
            [json.loads(line) for line in traced.read_text().splitlines()]
            if traced.exists()
            else []
        )
    finally:
        await receiver.stop()
        if os.environ.get("HC_BENCH_KEEP"):
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = judge(samples, scrapes, snapshots, database, log, warmup)
    found = families(
        final_metrics, "healthcheck_notifications_total", "healthcheck_notifications_pending"
    )
    report["alerts"] = {
        "notifications_received": len(receiver.received),
        "sent_failed": by_label(found["healthcheck_notifications_total"], "result"),
        "pending_at_end": sum(v for _, v in found["healthcheck_notifications_pending"]),
        "firing_max": max(s.firing for s in samples),
    }
    report["settings"] = {
        "code": code,
        "endpoints": endpoints,
        "interval_s": interval,
        "minutes": minutes,
        "warmup_s": warmup,
        "sample_every_s": sample_every,
        "bad_share": bad_share,
        "retries": retries,
        "timeout_s": min(interval, 2.0),
        "seed": seed,
        "healthy_farm": healthy_farm,
        "kinds": dict(Counter(kinds)),
    }
    report["farm_connections_served"] = served
    report["results"] = database
    report["log"] = {k: v for k, v in log.items() if k != "stopped"}
    if trace_memory:
        report["memory_trace"] = memory
    report["samples"] = [asdict(s) for s in samples]
    report["verdicts"]["every result classified as expected"] = not any(
        kind["unexpected"] for kind in database["kinds"].values()
    )
    report["verdict"] = "PASS" if all(report["verdicts"].values()) else "FAIL"
    return report


def judge(
    samples: list[Sample],
    scrapes: list[tuple[dict, str, dict]],
    snapshots: Snapshots,
    database: dict,
    log: dict,
    warmup: float,
) -> dict:
    """Flatness, lag and accounting from what the run saw."""
    steady = [(s, scrapes[i]) for i, s in enumerate(samples) if s.t_s >= warmup]
    if len(steady) < 3:
        raise RuntimeError(f"only {len(steady)} samples after warm-up: run longer")
    times = [s.t_s for s, _ in steady]
    flat = [
        flatness(metric, times, [float(getattr(s, metric)) for s, _ in steady]) for metric in LIMITS
    ]
    (first, (_, text_a, _)), (last, (_, text_b, _)) = steady[0], steady[-1]
    hist_a, hist_b = lag_histogram(text_a), lag_histogram(text_b)
    dispatched = hist_b.get("+Inf", 0) - hist_a.get("+Inf", 0)
    lag = {
        "p50_ms": _ms(histogram_quantile(0.5, hist_a, hist_b)) if dispatched else None,
        "p99_ms": _ms(histogram_quantile(0.99, hist_a, hist_b)) if dispatched else None,
        "max_ms": _ms(max((m for _, m in snapshots.lag_max), default=0.0)),
        "share_under_250ms": round((hist_b.get("0.25", 0) - hist_a.get("0.25", 0)) / dispatched, 5)
        if dispatched
        else None,
        "p99_bound_ms": 1000 * LAG_P99_BOUND,
        "max_bound_ms": 1000 * LAG_MAX_BOUND,
    }
    # Counters only grow, so a scrape's count lies between the /api/v1/self read before it and
    # the one after it, unless a check was lost on the way from the scheduler to the metric. A
    # prober fault is a completed check with no result: its own counter has it.
    off_metric = [
        i
        for i, (a, _, b) in enumerate(scrapes)
        if not a["scheduler"]["completed"]
        <= samples[i].checks_metric + samples[i].prober_faults_metric
        <= b["scheduler"]["completed"]
    ]
    off_lag = [
        i
        for i, (a, _, b) in enumerate(scrapes)
        if not a["scheduler"]["dispatched"]
        <= samples[i].lag_dispatches_metric
        <= b["scheduler"]["dispatched"]
    ]
    stopped = log["stopped"] or {}
    stop_faults = stopped.get("prober_faults")
    window = last.t_s - first.t_s
    (a0, _, b0), (a1, _, b1) = steady[0][1], steady[-1][1]
    bracket = [
        a1["scheduler"]["completed"] - b0["scheduler"]["completed"],
        b1["scheduler"]["completed"] - a0["scheduler"]["completed"],
    ]
    # Completed, not yet written: queued, or in the batch the writer thread is collecting.
    backlog = [s.completed - s.written for s, _ in steady]
    completed = last.completed - first.completed
    accounting = {
        "window_s": round(window, 1),
        "dispatched": last.dispatched - first.dispatched,
        "completed": completed,
        "in_flight_at_ends": [first.in_flight, last.in_flight],
        "checks_per_s": round(completed / window, 1) if window else None,
        "results_metric": round(last.checks_metric - first.checks_metric),
        "results_metric_bracket": bracket,
        "stored": last.written - first.written,
        "writer_backlog_at_ends": [backlog[0], backlog[-1]],
        "writer_backlog_max": max(backlog),
        "queue_depth_max": max(s.queue_depth for s, _ in steady),
        "missed": last.missed,
        "dropped": last.dropped,
        "prober_faults": round(last.prober_faults_metric - first.prober_faults_metric),
        "cpu_ms_per_check": round(1000 * (last.cpu_s - first.cpu_s) / completed, 3)
        if completed
        else None,
        "self_reads": snapshots.reads,
        "self_reads_unbalanced": len(snapshots.unbalanced),
        "scrapes": len(scrapes),
        "scrapes_metric_off": off_metric,
        "scrapes_lag_count_off": off_lag,
        "storage_gap_min_max": [min(snapshots.storage_gap), max(snapshots.storage_gap)],
        "at_stop": {
            "dispatched": stopped.get("dispatched"),
            "completed": stopped.get("completed"),
            "stored": stopped.get("stored"),
            "dropped": stopped.get("dropped"),
            "prober_faults": stopped.get("prober_faults"),
            "rows_in_database": database["rows"],
        },
    }
    verdicts = {f"{f.metric} flat": f.passed for f in flat}
    verdicts |= {
        "lag p99 bounded": lag["p99_ms"] is not None and lag["p99_ms"] <= lag["p99_bound_ms"],
        "lag max bounded": lag["max_ms"] is not None and lag["max_ms"] <= lag["max_bound_ms"],
        "dispatched == completed + in flight at every read": not snapshots.unbalanced,
        "missed == 0": last.missed == 0,
        "storage dropped == 0": last.dropped == 0 and not stopped.get("dropped"),
        "results metric + prober faults == completed at every scrape": not off_metric,
        "lag histogram count == dispatched at every scrape": not off_lag,
        "database rows == stored == completed - prober faults at stop": stop_faults is not None
        and stopped.get("completed") is not None
        and database["rows"] == stopped["stored"] == stopped["completed"] - stop_faults,
    }
    return {
        "flatness": [asdict(f) for f in flat],
        "lag": lag,
        "accounting": accounting,
        "verdicts": verdicts,
    }


# -- output --------------------------------------------------------------------------------------
_COLUMNS = (
    ("t_s", "t s", 6),
    ("rss_mb", "RSS MB", 7),
    ("open_fds", "fds", 5),
    ("asyncio_tasks", "tasks", 6),
    ("threads", "thr", 4),
    ("in_flight", "in fl", 6),
    ("children_pss_mb", "kids MB", 7),
    ("completed", "checks", 8),
    ("lag_p99_ms", "p99 ms", 7),
    ("lag_max_ms", "max ms", 7),
    ("farm_open", "farm", 5),
    ("notifications", "notif", 6),
)


def _row_header() -> str:
    return " ".join(f"{title:>{width}}" for _, title, width in _COLUMNS)


def _row(s: Sample) -> str:
    values = asdict(s)
    return " ".join(
        f"{'-' if values[name] is None else values[name]:>{width}}" for name, _, width in _COLUMNS
    )


def describe(report: dict) -> str:
    settings, lag, acc = report["settings"], report["lag"], report["accounting"]
    lines = [
        f"soak: {settings['endpoints']} endpoints every {settings['interval_s']:g}s for "
        f"{settings['minutes']:g} min (warm-up {settings['warmup_s']:g}s), code "
        f"{settings['code']}, healthy farm "
        f"{settings['healthy_farm']}, kinds {settings['kinds']}",
        "flat after warm-up (mean of the last third vs the middle third):",
    ]
    for f in report["flatness"]:
        lines.append(
            f"  {f['metric']:<14} {f['middle']:>9} -> {f['last']:>9}  growth {f['growth']:+}"
            f" (allowed {f['allowed']}), slope {f['slope_per_hour']:+}/h  "
            f"{'PASS' if f['passed'] else 'FAIL'}"
        )
    lines += [
        f"lag over the window: p50 {lag['p50_ms']} ms, p99 {lag['p99_ms']} ms "
        f"(bound {lag['p99_bound_ms']:g}), max {lag['max_ms']} ms (bound {lag['max_bound_ms']:g}),"
        f" under 250 ms {lag['share_under_250ms']}",
        f"window {acc['window_s']}s: dispatched {acc['dispatched']}, completed {acc['completed']}"
        f" ({acc['checks_per_s']}/s), results metric {acc['results_metric']} (between the"
        f" /api/v1/self reads around the scrapes: {acc['results_metric_bracket']}), stored "
        f"{acc['stored']} (writer backlog at the ends {acc['writer_backlog_at_ends']}, max "
        f"{acc['writer_backlog_max']}; queue_depth max {acc['queue_depth_max']}), missed "
        f"{acc['missed']}, dropped {acc['dropped']}, prober faults {acc['prober_faults']}, CPU "
        f"{acc['cpu_ms_per_check']} ms/check",
        f"at stop: {acc['at_stop']}; checks per endpoint "
        f"{report['results']['checks_per_endpoint']}",
        f"alerts: {report['alerts']}",
        f"daemon log warnings/errors: {report['log']['warnings_errors']}, "
        f"other lines {report['log']['other_lines']}",
        "results per kind (error classes from the database):",
    ]
    for kind, value in report["results"]["kinds"].items():
        lines.append(
            f"  {kind:<10} {value['endpoints']:>4} endpoints {value['checks']:>7} checks "
            f"{value['errors']} p50 {value['latency_p50_ms']} ms max {value['latency_max_ms']} ms"
            + (f"  UNEXPECTED {value['unexpected']}" if value["unexpected"] else "")
        )
        for error, text in value["examples"].items():
            lines.append(f"  {'':<10}   {error}: {text}")
    lines.append(f"farm connections served: {report['farm_connections_served']}")
    if report.get("memory_trace"):
        trace = report["memory_trace"]
        lines.append(
            "traced Python memory MB over time: "
            + ", ".join(f"{e['t_s']:g}s {e['traced_mb']}" for e in trace)
        )
        lines.append(f"grown since warm-up, by site (KiB, blocks), at {trace[-1]['t_s']}s:")
        lines += [f"  {kib:>9} {count:>7}  {site}" for site, kib, count in trace[-1]["sites"]]
        lines.append("grown since warm-up, objects the collector tracks, by type:")
        lines += [f"  {count:>9}  {name}" for name, count in trace[-1]["types"]]
    lines += [f"  {'PASS' if ok else 'FAIL'}  {name}" for name, ok in report["verdicts"].items()]
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the daemon runs")
    parser.add_argument("--bad-share", type=float, default=0.2, help="share that misbehaves")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds left out of the judgement (default: 300, or half a shorter run)",
    )
    parser.add_argument(
        "--sample-every", type=float, default=SCRAPE_EVERY, help="seconds; a /metrics scrape each"
    )
    parser.add_argument("--retries", type=int, default=1, help="extra attempts per check")
    parser.add_argument("--aiohttp-farm", action="store_true", help="even when nginx is there")
    parser.add_argument("--json", help="also write every figure and sample to this JSON file")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="diagnosis: the daemon under tracemalloc; what grew, each minute (lag meaningless)",
    )
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(WARMUP, args.minutes * 60 / 2)
    print(
        f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    report = asyncio.run(
        soak(
            args.endpoints,
            args.interval,
            args.minutes,
            args.bad_share,
            args.seed,
            warmup,
            args.sample_every,
            args.retries,
            prefer_nginx=not args.aiohttp_farm,
            trace_memory=args.trace_memory,
        )
    )
    print(describe(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
