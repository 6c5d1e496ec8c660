"""Latency accuracy: what the daemon reports for a target that answers after exactly D ms,
beside blackbox_exporter probing the same target in the same run; then the same while 50
clients read the daemon's API.

    .venv/bin/python bench/accuracy_bench.py --json accuracy.json      # 1,000 + 50, 4-9 minutes
    .venv/bin/python bench/accuracy_bench.py --endpoints 500 --interval 1
    .venv/bin/python bench/accuracy_bench.py --endpoints 5 --delayed 2 --interval 1 \\
        --warmup 2 --window 3 --clients 2 --no-blackbox                  # a look, ~20 s
    .venv/bin/python bench/accuracy_bench.py --endpoints 20000 --interval 10 \
        --blackbox-delayed-only --clients 0                                # ours at 20,000

One run, all on loopback, built from bench/scale_bench.py's farm and process helpers: N load
endpoints on the target farm (nginx when installed), and K "delayed" endpoints on a server of
the bench's own (its own process, a thread per connection) that answers each request exactly
D ms after it has read it, and records how long it really held each one. The real
`healthcheck run` (storage, metrics scraped every 15 s, alert evaluation to a loopback webhook)
probes all of them; blackbox_exporter, scheduled by a real Prometheus at the same interval,
probes the same N + K. After a warm-up (`--warmup` seconds, and until Prometheus holds a probe
of every target: blackbox's figures begin with the first window too), three windows of the same
length:

- quiet: nothing else asks the daemon anything;
- api_load: C client tasks (a process of their own) read `/api/v1/results` then `/metrics`,
  again and again, as fast as the daemon answers (10 s at most, as Prometheus waits); the
  window begins once every client has had its first answer;
- after_load: the clients are gone; does the daemon come back?

Per window: the error (measured - D) of every check of a delayed endpoint, p50/p99/max, ours
from the daemon's SQLite file (read after it stopped and flushed), blackbox's from Prometheus
(`probe_duration_seconds`, and its `processing` phase); how many checks of these all-healthy
endpoints came out degraded or unhealthy (false verdicts), and, for both, how many took longer
than the warning threshold; CPU of every process of ours (the daemon's whole process tree from
/proc, children that exited included) per check, beside blackbox_exporter's and Prometheus's;
how busy the whole machine was (other people's work on a shared machine is in every figure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import socketserver
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from scale_bench import (
    CLK_TCK,
    SCRAPE_EVERY,
    Receiver,
    blackbox_configs,
    daemon_config,
    free_port,
    get_json,
    histogram_quantile,
    lag_histogram,
    pss_bytes,
    scrape,
    started,
    target_farm,
    target_urls,
    wait_http,
)

DELAYED_REGION = "delayed"


# -- the machine ---------------------------------------------------------------------------------
def machine() -> dict:
    """What the figures were measured on: CPU model, cores, Python, kernel, load average."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "host": platform.node(),
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- a process tree's CPU ------------------------------------------------------------------------
def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def process_tree(root: int) -> list[int]:
    """The root and every descendant of it alive now (probe workers, helpers, canaries)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parents.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, ()))
    return tree


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    return "?"


@dataclass
class TreeCpu:
    """CPU seconds of a process tree at one moment: per live process, its own and that of its
    reaped children (cutime + cstime), so a child that exits and is reaped between two looks
    moves from its own entry into its parent's and the difference still counts it."""

    seconds: dict[int, float]
    names: dict[int, str]

    @classmethod
    def read(cls, root: int) -> TreeCpu:
        seconds, names = {}, {}
        for pid in process_tree(root):
            with contextlib.suppress(OSError):
                fields = _stat(pid)
                seconds[pid] = sum(int(x) for x in fields[11:15]) / CLK_TCK
                names[pid] = _cmdline(pid)
        return cls(seconds, names)

    def since(self, before: TreeCpu) -> tuple[float, list[dict]]:
        """Total CPU seconds between two looks, and each process's share."""
        pids = self.seconds.keys() | before.seconds.keys()
        shares = [
            {
                "pid": pid,
                "process": self.names.get(pid) or before.names.get(pid, "?"),
                "cpu_s": round(self.seconds.get(pid, 0.0) - before.seconds.get(pid, 0.0), 2),
            }
            for pid in sorted(pids)
        ]
        return sum(self.seconds.values()) - sum(before.seconds.values()), shares


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def tree_pss(root: int) -> int:
    """Memory of the tree, a page its processes share counted once (scale_bench.pss_bytes)."""
    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            total += pss_bytes(pid)
    return total


def cpu_of(pid: int) -> float:
    return sum(int(x) for x in _stat(pid)[11:15]) / CLK_TCK


# -- the delayed target --------------------------------------------------------------------------
_BODY = b'{"status":"UP"}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


def _delay_server(port: int, delay_s: float, ready: multiprocessing.synchronize.Event) -> None:
    """Answers every request exactly `delay_s` after reading its headers; GET /held returns,
    per prober (User-Agent), when each request came (epoch) and how long it was really held."""
    held: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = self.rfile.readline(8192)
            agent = ""
            while (line := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
                if line.lower().startswith(b"user-agent:"):
                    agent = line.split(b":", 1)[1].strip().decode(errors="replace")
            arrived, wall = time.perf_counter(), time.time()
            if request.startswith(b"GET /held "):
                with lock:
                    body = json.dumps(held).encode()
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                return
            # time.sleep is a nanosleep: ~0.1 ms late on an idle core, where an event loop's
            # epoll timeout rounds up to the next whole millisecond.
            time.sleep(max(0.0, delay_s - (time.perf_counter() - arrived)))
            self.wfile.write(_RESPONSE)
            self.wfile.flush()
            with lock:
                held.append((agent, wall, time.perf_counter() - arrived))

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 1024

    with Server(("127.0.0.1", port), Handler) as server:
        ready.set()
        server.serve_forever(poll_interval=0.5)


@contextlib.contextmanager
def delayed_target(delay_s: float):
    """The delayed server in a process of its own: its port, and a way to read what it held."""
    port = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=_delay_server, args=(port, delay_s, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the delayed server did not start")

        def held() -> list[tuple[str, float, float]]:
            return get_json(f"http://127.0.0.1:{port}/held")

        yield port, process, held
    finally:
        process.terminate()
        process.join(5)


# -- the API clients -----------------------------------------------------------------------------
def _api_clients(
    base: str,
    clients: int,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    out,
) -> None:
    """`clients` tasks, each reading /api/v1/results then /metrics until `stop` (requests in
    flight then are dropped, not waited for); `ready` is set once every client has had its
    first answer (or failure). Sends back per path: failures (an error status, or no answer
    within Prometheus's default scrape timeout of 10 s) and every answer's seconds."""

    async def run() -> dict:
        took: dict[str, list[float]] = {"/api/v1/results": [], "/metrics": []}
        failed: Counter[str] = Counter()
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=clients)
        answered = 0  # clients that have had a first answer (or failure)

        def first_answer() -> None:
            nonlocal answered
            answered += 1
            if answered == clients:
                ready.set()

        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def client() -> None:
                waiting = True
                while True:
                    for path in took:
                        began = time.perf_counter()
                        try:
                            async with session.get(base + path) as response:
                                await response.read()
                                if response.status != 200:
                                    failed[path] += 1
                                    continue
                        except (aiohttp.ClientError, TimeoutError):
                            failed[path] += 1
                            continue
                        finally:
                            if waiting:
                                waiting = False
                                first_answer()
                        took[path].append(time.perf_counter() - began)

            tasks = [asyncio.create_task(client()) for _ in range(clients)]
            await asyncio.to_thread(stop.wait)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {"took": took, "failed": dict(failed)}

    out.send(asyncio.run(run()))
    out.close()


# -- figures -------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: list[float]) -> dict:
    """n, p50, p99, max and min of a list of ms, rounded for reading."""

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "n": len(values),
        "p50": r(percentile(values, 0.5)),
        "p99": r(percentile(values, 0.99)),
        "max": r(max(values, default=None)),
        "min": r(min(values, default=None)),
    }


@dataclass
class Window:
    """One measured stretch of the run: wall-clock bounds and what each side did in it."""

    name: str
    start: float = 0.0  # epoch seconds
    end: float = 0.0
    ours: dict = field(default_factory=dict)
    blackbox: dict = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    api_clients: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)


@dataclass
class Run:
    machine: dict
    settings: dict
    farm: str = ""
    windows: list[Window] = field(default_factory=list)


def our_results(db: Path, window: Window, delay_ms: float, warning_ms: float) -> dict:
    """Our figures for one window from the daemon's SQLite file (check start time in it)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT t.region, r.ok, r.status, r.latency_ms, r.error FROM results r "
            "JOIN targets t ON t.id = r.target_id WHERE r.ts >= ? AND r.ts < ?",
            (window.start, window.end),
        ).fetchall()
    delayed = [row for row in rows if row[0] == DELAYED_REGION]
    statuses = Counter(status for _, _, status, _, _ in rows)
    return {
        "checks": len(rows),
        "statuses": dict(statuses),
        "false_verdicts": len(rows) - statuses.get("healthy", 0),
        "errors": dict(Counter(error for _, ok, _, _, error in rows if not ok)),
        "over_warning": sum(ms is not None and ms > warning_ms for *_, ms, _ in rows),
        "delayed_error_ms": spread(
            [latency - delay_ms for _, ok, _, latency, _ in delayed if ok and latency is not None]
        ),
        "delayed_failed": sum(not ok for _, ok, *_ in delayed),
        "delayed_statuses": dict(Counter(status for _, _, status, _, _ in delayed)),
    }


def prometheus_probed(prom: str, targets: int, limit: float = 60.0) -> None:
    """Wait until Prometheus holds a probe_success sample of each of `targets` targets."""
    query = urllib.parse.urlencode({"query": "count(probe_success)"})
    deadline = time.monotonic() + limit
    while True:
        result = get_json(f"{prom}/api/v1/query?{query}")["data"]["result"]
        probed = int(float(result[0]["value"][1])) if result else 0
        if probed >= targets:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus probed {probed} of {targets} targets in {limit:g}s")
        time.sleep(0.2)


def _prometheus_samples(prom: str, metric: str, window: Window) -> list[dict]:
    """Every raw sample of `metric` scraped in the window: a range vector at its end."""
    query = f"{metric}[{max(1, int(1000 * (window.end - window.start)))}ms]"
    answer = get_json(
        f"{prom}/api/v1/query?"
        + urllib.parse.urlencode({"query": query, "time": f"{window.end:.3f}"})
    )
    return answer["data"]["result"]


def blackbox_results(
    prom: str, window: Window, delayed_prefix: str, delay_ms: float, warning_ms: float
) -> dict:
    """blackbox_exporter's figures for one window, from what Prometheus stored."""
    durations = _prometheus_samples(prom, "probe_duration_seconds", window)
    success = _prometheus_samples(prom, "probe_success", window)
    phases = _prometheus_samples(prom, 'probe_http_duration_seconds{phase="processing"}', window)

    def values(series: dict) -> list[float]:
        return [1000 * float(v) for t, v in series["values"] if t >= window.start]

    def is_delayed(series: dict) -> bool:
        return series["metric"]["instance"].startswith(delayed_prefix)

    all_ms = [ms for series in durations for ms in values(series)]
    delayed = [ms - delay_ms for s in durations if is_delayed(s) for ms in values(s)]
    processing = [ms - delay_ms for s in phases if is_delayed(s) for ms in values(s)]
    outcomes = [v for series in success for v in values(series)]
    return {
        "probes": len(outcomes),
        "failed": sum(v == 0 for v in outcomes),
        "over_warning": sum(ms > warning_ms for ms in all_ms),
        "delayed_error_ms": spread(delayed),
        "delayed_processing_error_ms": spread(processing),
    }


def server_figures(held: list, window: Window, delay_ms: float) -> dict:
    """How long the delayed server really held each request, minus D, per prober."""
    by_agent: dict[str, list[float]] = {}
    for agent, wall, seconds in held:
        if window.start <= wall < window.end:
            who = "blackbox" if "blackbox" in agent.lower() else "healthcheck"
            by_agent.setdefault(who, []).append(1000 * seconds - delay_ms)
    return {who: spread(ms) for who, ms in sorted(by_agent.items())}


def client_figures(report: dict, seconds: float) -> dict:
    took, failed = report["took"], report["failed"]
    return {
        path: {
            "requests": len(values) + failed.get(path, 0),
            "per_s": round((len(values) + failed.get(path, 0)) / seconds, 1),
            "failed": failed.get(path, 0),
            "answer_ms": spread([1000 * v for v in values]),
        }
        for path, values in took.items()
    }


# -- the run -------------------------------------------------------------------------------------
def _config(
    load: list[str],
    delayed_port: int,
    delayed: int,
    interval: float,
    workdir: Path,
    listen: int,
    webhook: int,
    warning_ms: float,
    critical_ms: float,
    tick: str | None = None,
) -> tuple[Path, list[str]]:
    """scale_bench's configuration plus a region of delayed endpoints, and their URLs."""
    latency = {"latency": {"warning": f"{warning_ms:g}ms", "critical": f"{critical_ms:g}ms"}}
    path = daemon_config(load, interval, workdir, listen, webhook, defaults=latency)
    document = json.loads(path.read_text())
    urls = [f"http://127.0.0.1:{delayed_port}/d{i}" for i in range(delayed)]
    document["regions"][DELAYED_REGION] = {
        "endpoints": [{"name": f"d{i}", "url": url} for i, url in enumerate(urls)]
    }
    if tick is not None:
        document["scheduler"]["tick"] = tick
    path.write_text(json.dumps(document))
    return path, urls


async def accuracy_run(args: argparse.Namespace) -> Run:
    delay_ms = args.delay_ms
    run = Run(machine(), {k: v for k, v in vars(args).items() if k != "json"})
    workdir = Path(tempfile.mkdtemp(prefix="hc-accuracy-"))
    receiver = Receiver()
    await receiver.start()
    blackbox = not args.no_blackbox and all(
        shutil.which(tool) for tool in ("prometheus-blackbox-exporter", "prometheus")
    )
    run.settings["blackbox"] = blackbox
    try:
        with (
            target_farm(workdir, not args.aiohttp_farm) as (farm, ports, _),
            delayed_target(delay_ms / 1000) as (delayed_port, _server, held),
            contextlib.ExitStack() as stack,
        ):
            run.farm = farm
            load = target_urls(ports, args.endpoints)
            listen = free_port()
            config, delayed_urls = _config(
                load,
                delayed_port,
                args.delayed,
                args.interval,
                workdir,
                listen,
                receiver.port,
                args.warning_ms,
                args.critical_ms,
                args.tick,
            )
            daemon = stack.enter_context(
                started(
                    [sys.executable, "-m", "healthcheck", "run", "--config", str(config)],
                    workdir / "daemon.log",
                    stop_wait=60.0,  # a swamped daemon still flushes its results before it exits
                )
            )
            base = f"http://127.0.0.1:{listen}"
            others: dict[str, int] = {}
            prom = ""
            if blackbox:
                bb_port, prom_port = free_port(), free_port()
                probed = delayed_urls if args.blackbox_delayed_only else load + delayed_urls
                prom_config = blackbox_configs(probed, args.interval, workdir, bb_port)
                bb = stack.enter_context(
                    started(
                        [
                            "prometheus-blackbox-exporter",
                            f"--config.file={workdir / 'blackbox.yml'}",
                            f"--web.listen-address=127.0.0.1:{bb_port}",
                            "--log.level=warn",
                        ],
                        workdir / "blackbox.log",
                    )
                )
                prometheus = stack.enter_context(
                    started(
                        [
                            "prometheus",
                            f"--config.file={prom_config}",
                            f"--storage.tsdb.path={workdir / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{prom_port}",
                            "--log.level=warn",
                        ],
                        workdir / "prometheus.log",
                    )
                )
                prom = f"http://127.0.0.1:{prom_port}"
                await asyncio.to_thread(wait_http, f"http://127.0.0.1:{bb_port}/metrics")
                await asyncio.to_thread(wait_http, f"{prom}/-/ready")
                others = {"blackbox_exporter": bb.pid, "prometheus": prometheus.pid}
            # After blackbox and Prometheus have started: they start while the daemon does.
            await asyncio.to_thread(wait_http, f"{base}/readyz", 60)
            print(f"... warm-up, {args.warmup:g}s", file=sys.stderr, flush=True)
            await asyncio.sleep(args.warmup)
            if blackbox:
                await asyncio.to_thread(prometheus_probed, prom, len(probed))

            meter = Meter(daemon.pid, others, base, patience=max(20.0, 2 * args.window))
            print(f"... quiet window, {args.window:g}s", file=sys.stderr, flush=True)
            run.windows.append(await quiet_window(meter, args.window))
            if args.clients > 0:
                print(
                    f"... {args.clients} API clients for {args.window:g}s, then as long without",
                    file=sys.stderr,
                    flush=True,
                )
                run.windows += await load_windows(meter, args.window, args.clients)
            # Nothing ends the last window before its checks are in: wait out one timeout.
            await asyncio.sleep(min(args.interval, 2.0) + 0.5)
            held_requests = await asyncio.to_thread(held)
            for window in run.windows:
                window.server = server_figures(held_requests, window, delay_ms)
                if blackbox:
                    window.blackbox |= await asyncio.to_thread(
                        blackbox_results,
                        prom,
                        window,
                        f"http://127.0.0.1:{delayed_port}/",
                        delay_ms,
                        args.warning_ms,
                    )
                    bb_ms = window.blackbox["cpu_ms_per_probe"] = _per(
                        window.blackbox.pop("cpu_s"), window.blackbox["probes"]
                    )
                    prom_ms = window.blackbox["prometheus_cpu_ms_per_probe"] = _per(
                        window.blackbox.pop("prometheus_cpu_s"), window.blackbox["probes"]
                    )
            # ExitStack: the daemon gets SIGTERM, drains and flushes its results, then exits.
        for window in run.windows:
            window.ours |= our_results(
                workdir / "healthcheck.db", window, delay_ms, args.warning_ms
            )
            ours = window.ours["cpu_ms_per_check"] = _per(
                window.ours["cpu_s"], window.ours["checks"]
            )
            bb_ms = window.blackbox.get("cpu_ms_per_probe")
            prom_ms = window.blackbox.get("prometheus_cpu_ms_per_probe")
            # Under API load our CPU includes serving the clients: no like-for-like ratio.
            # Nor when blackbox probed only the delayed endpoints.
            like_for_like = not args.blackbox_delayed_only
            if window.name == "quiet" and like_for_like and ours and bb_ms and prom_ms:
                window.blackbox["ratio_ours_to_both"] = round(ours / (bb_ms + prom_ms), 3)
                window.blackbox["ratio_ours_to_blackbox"] = round(ours / bb_ms, 3)
        run.machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        run.machine["notifications"] = len(receiver.received)
    finally:
        await receiver.stop()
        if os.environ.get("HC_BENCH_KEEP"):
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return run


def _per(cpu_s: float, count: int) -> float | None:
    return round(1000 * cpu_s / count, 3) if count else None


def timed_scrape(url: str) -> float | None:
    """Seconds one Prometheus-style scrape of /metrics took; None when it failed."""
    began = time.perf_counter()
    try:
        scrape(url)
    except OSError:
        return None
    return time.perf_counter() - began


def patient_scrape(url: str, limit: float) -> tuple[str | None, float]:
    """/metrics once the daemon answers (it may still be busy with the clients' backlog):
    the body (None if not within `limit` seconds), and how long that took."""
    began = time.monotonic()
    while True:
        try:
            return scrape(url), time.monotonic() - began
        except OSError:
            if time.monotonic() - began > limit:
                return None, time.monotonic() - began


class Meter:
    """Measures the daemon window after window: CPU of its whole process tree and of
    blackbox_exporter and Prometheus, RSS, the schedule lag from the daemon's histogram
    (between the /metrics scrapes that bound the window), and /metrics scraped every 15 s
    as Prometheus would, each scrape timed."""

    def __init__(self, daemon: int, others: dict[str, int], base: str, patience: float) -> None:
        self.daemon, self.others, self.base, self.patience = daemon, others, base, patience
        self.hist: dict[str, float] | None = None
        self.tree: TreeCpu | None = None
        self.cpu: dict[str, float] = {}
        self.ticks = (0, 0)

    async def histogram(self) -> float:
        """Scrape /metrics for the lag histogram, waiting for the daemon; seconds waited."""
        body, waited = await asyncio.to_thread(
            patient_scrape, f"{self.base}/metrics", self.patience
        )
        self.hist = None if body is None else lag_histogram(body)
        return waited

    def begin(self, window: Window) -> None:
        self.tree = TreeCpu.read(self.daemon)
        self.cpu = {name: cpu_of(pid) for name, pid in self.others.items()}
        self.ticks = machine_ticks()
        window.start = time.time()

    async def run(self, window: Window, seconds: float) -> list[asyncio.Task]:
        """Sample for `seconds`; the scrapes started (still running ones included)."""
        began = time.monotonic()
        next_scrape = began + SCRAPE_EVERY
        scrapes = []
        pss_max = 0
        loads = []
        while (now := time.monotonic()) < began + seconds:
            await asyncio.sleep(min(1.0, began + seconds - now))
            pss_max = max(pss_max, await asyncio.to_thread(tree_pss, self.daemon))
            loads.append(os.getloadavg()[0])
            if time.monotonic() >= next_scrape:  # the daemon pays for it, as in production
                url = f"{self.base}/metrics"
                scrapes.append(asyncio.create_task(asyncio.to_thread(timed_scrape, url)))
                next_scrape += SCRAPE_EVERY
        window.end = time.time()
        tree = TreeCpu.read(self.daemon)
        cpu = {name: cpu_of(pid) for name, pid in self.others.items()}
        ticks = machine_ticks()
        busy, total = ticks[0] - self.ticks[0], ticks[1] - self.ticks[1]
        # How busy the whole (shared) machine was: other people's work shows up here.
        window.machine = {
            "cpu_busy": round(busy / total, 3) if total else None,
            "loadavg_1m_min_max": [round(min(loads), 2), round(max(loads), 2)] if loads else [],
        }
        assert self.tree is not None
        total, shares = tree.since(self.tree)
        window.ours = {
            "cpu_s": round(total, 2),
            "processes": shares,
            "pss_mb_max_all_processes": round(pss_max / 2**20, 1),
        }
        if self.others:
            window.blackbox = {
                "cpu_s": cpu["blackbox_exporter"] - self.cpu["blackbox_exporter"],
                "prometheus_cpu_s": cpu["prometheus"] - self.cpu["prometheus"],
            }
        self.tree, self.cpu, self.ticks = tree, cpu, ticks
        return scrapes

    async def end(self, window: Window, scrapes: list[asyncio.Task], hist0: dict | None) -> None:
        """The window's scrapes and lag, once the next histogram has been read."""
        took = [await task for task in scrapes]
        window.ours["scrapes"] = {
            "n": len(took),
            "failed": sum(t is None for t in took),
            "over_10s": sum(t is not None and t > 10 for t in took),
            "seconds": [None if t is None else round(t, 2) for t in took],
        }
        hist1 = self.hist
        if hist0 and hist1 and hist1.get("+Inf", 0) > hist0.get("+Inf", 0):
            window.ours["lag_p50_ms"] = round(1000 * histogram_quantile(0.5, hist0, hist1), 2)
            window.ours["lag_p99_ms"] = round(1000 * histogram_quantile(0.99, hist0, hist1), 2)


async def quiet_window(meter: Meter, seconds: float) -> Window:
    window = Window("quiet")
    await meter.histogram()
    hist0 = meter.hist
    meter.begin(window)
    scrapes = await meter.run(window, seconds)
    await meter.histogram()
    await meter.end(window, scrapes, hist0)
    return window


async def load_windows(meter: Meter, seconds: float, clients: int) -> list[Window]:
    """API load for `seconds`, then as long again after the clients left: how long the
    daemon took to answer /metrics again, and whether its verdicts came back."""
    loaded, after = Window("api_load"), Window("after_load")
    await meter.histogram()
    hist0 = meter.hist
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_api_clients, args=(meter.base, clients, ready, stop, writer), daemon=True
    )
    process.start()
    writer.close()
    # Started, imported, every client answered once: the load is on. A daemon too swamped to
    # answer them all within a scrape timeout is measured as it is.
    await asyncio.to_thread(ready.wait, 30.0)
    client_cpu0 = cpu_of(process.pid)
    meter.begin(loaded)
    scrapes = await meter.run(loaded, seconds)
    client_cpu = cpu_of(process.pid) - client_cpu0
    stop.set()
    meter.begin(after)
    # The lag histogram of the load window is read as soon as /metrics answers again.
    drained = asyncio.create_task(meter.histogram())
    report = await asyncio.to_thread(reader.recv)
    await asyncio.to_thread(process.join, 10)
    loaded.api_clients = {
        "clients": clients,
        "cpu_s": round(client_cpu, 2),
        **client_figures(report, loaded.end - loaded.start),
    }
    after_scrapes = await meter.run(after, seconds)
    waited = await drained
    loaded.ours["metrics_answered_again_after_s"] = (
        round(waited, 2) if meter.hist is not None else None
    )
    await meter.end(loaded, scrapes, hist0)
    hist_drained = meter.hist
    await meter.histogram()
    await meter.end(after, after_scrapes, hist_drained)
    return [loaded, after]


# -- output --------------------------------------------------------------------------------------
def describe(run: Run) -> str:
    def e(figures: dict | None) -> str:
        if not figures or not figures.get("n"):
            return "-"
        return (
            f"{figures['p50']:+.1f} / {figures['p99']:+.1f} / {figures['max']:+.1f} ms "
            f"(n {figures['n']})"
        )

    s = run.settings
    m = run.machine
    lines = [
        f"# {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['date']}, "
        f"load average {m['loadavg_start']} -> {m.get('loadavg_end')}",
        f"{s['endpoints']} load endpoints ({run.farm}) + {s['delayed']} answering after "
        f"{s['delay_ms']:g} ms, every {s['interval']:g}s; window {s['window']:g}s; "
        f"warning {s['warning_ms']:g} ms",
    ]
    for w in run.windows:
        o, b = w.ours, w.blackbox
        lines.append(
            f"[{w.name}] machine CPU busy {w.machine.get('cpu_busy')}, load average (1 min) "
            f"{w.machine.get('loadavg_1m_min_max')}; error (measured - D) p50 / p99 / max:"
        )
        lines.append(f"  healthcheck       {e(o.get('delayed_error_ms'))}")
        if b:
            lines.append(f"  blackbox_exporter {e(b.get('delayed_error_ms'))}")
            lines.append(f"    its processing phase {e(b.get('delayed_processing_error_ms'))}")
        for who, figures in w.server.items():
            lines.append(f"  server's own hold for {who}: {e(figures)}")
        lines.append(
            f"  healthcheck: {o.get('checks')} checks, statuses {o.get('statuses')}, "
            f"false verdicts {o.get('false_verdicts')}, over warning {o.get('over_warning')}, "
            f"lag p50/p99 {o.get('lag_p50_ms')}/{o.get('lag_p99_ms')} ms"
        )
        lines.append(
            f"  healthcheck CPU {o.get('cpu_ms_per_check')} ms per check, all "
            f"{len(o.get('processes', []))} processes ({o.get('cpu_s')} s), "
            f"PSS all processes max {o.get('pss_mb_max_all_processes')} MB; "
            f"our scrapes of /metrics took {o.get('scrapes', {}).get('seconds')} s"
        )
        if "metrics_answered_again_after_s" in o:
            lines.append(
                "  after the clients left, /metrics answered again after "
                f"{o['metrics_answered_again_after_s']} s (None: not within the patience)"
            )
        if b:
            lines.append(
                f"  blackbox_exporter: {b.get('probes')} probes, failed {b.get('failed')}, over "
                f"warning {b.get('over_warning')}; CPU {b.get('cpu_ms_per_probe')} ms + "
                f"prometheus {b.get('prometheus_cpu_ms_per_probe')} ms per probe; "
                f"ours / both {b.get('ratio_ours_to_both', '-')}, "
                f"ours / blackbox {b.get('ratio_ours_to_blackbox', '-')}"
            )
        if w.api_clients:
            c = w.api_clients
            for path in ("/api/v1/results", "/metrics"):
                lines.append(
                    f"  clients {path}: {c[path]['per_s']}/s, failed {c[path]['failed']}, "
                    f"answer p50/p99 {c[path]['answer_ms']['p50']}/{c[path]['answer_ms']['p99']}"
                    " ms"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--aiohttp-farm", action="store_true", help="even when nginx is there")
    parser.add_argument("--endpoints", type=int, default=1000, help="load endpoints")
    parser.add_argument("--delayed", type=int, default=50, help="delayed endpoints (one server)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="D")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds, every endpoint")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds")
    parser.add_argument("--window", type=float, default=60.0, help="seconds, each of two windows")
    parser.add_argument("--clients", type=int, default=50, help="API clients; 0: no API window")
    parser.add_argument("--warning-ms", type=float, default=200.0)
    parser.add_argument("--critical-ms", type=float, default=1000.0)
    parser.add_argument("--no-blackbox", action="store_true")
    parser.add_argument("--tick", help="scheduler.tick for the daemon (default: its own)")
    parser.add_argument(
        "--blackbox-delayed-only",
        action="store_true",
        help="blackbox probes only the delayed endpoints: the accuracy of ours at a load "
        "(20,000 endpoints) two cores cannot also probe twice, beside a reference on the "
        "same busy machine; no CPU ratio",
    )
    args = parser.parse_args(argv)
    run = asyncio.run(accuracy_run(args))
    print(describe(run), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(run), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
