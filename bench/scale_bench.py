"""Scale benchmark: the daemon against blackbox_exporter + Prometheus, same targets, same run.

    .venv/bin/python bench/scale_bench.py                       # all runs, the README's table
    .venv/bin/python bench/scale_bench.py daemon --endpoints 10000 --interval 10 --no-blackbox
    .venv/bin/python bench/scale_bench.py workers --endpoints 10000 --interval 10
    .venv/bin/python bench/scale_bench.py once --endpoints 1000
    .venv/bin/python bench/scale_bench.py detect

A target farm on loopback in its own process (Debian's nginx when installed, else a
multi-process aiohttp farm); the real `healthcheck run` as a subprocess with storage, metrics
(scraped every 15 s like Prometheus would) and alert evaluation on, alerts going to a loopback
webhook; in the same run the same targets probed by blackbox_exporter scheduled by a real
Prometheus. CPU per probe for every process is read from /proc the same way; ours counts the
daemon and every process under it (probe workers, the helper).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiohttp import web

CLK_TCK = os.sysconf("SC_CLK_TCK")
SCRAPE_EVERY = 15.0  # how often the bench scrapes the daemon's /metrics, as Prometheus would
FARM_PORTS = 16  # spread fresh connections over ports: each 4-tuple has its own TIME_WAIT


# -- processes -----------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (threads included), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread: the event loop (the main thread) and the sum of all others."""
    main = cpu_seconds(pid)
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / CLK_TCK
            if int(tid) == pid:
                main = seconds
            total += seconds
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return {
        "loop": main,
        "threads": total - main,
        "user": int(fields[11]) / CLK_TCK,
        "system": int(fields[12]) / CLK_TCK,
    }


def family(pid: int) -> list[int]:
    """`pid` and every live process under it: the daemon, its probe workers, its helper."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def roles(daemon: int) -> dict[int, str]:
    """What each process of ours is, for a person: the daemon, the zygote that forks the probe
    workers (a fork of the daemon, same command line), each worker (the zygote's children), the
    helper that renders /metrics and reads uptime (healthcheck.offload; before, multiprocessing's
    spawn with its resource tracker); anything else by its command line's end."""
    parents: dict[int, int] = {}
    for pid in family(daemon):
        with (
            contextlib.suppress(OSError, IndexError, ValueError),
            open(f"/proc/{pid}/stat") as stat,
        ):
            parents[pid] = int(stat.read().rsplit(")", 1)[1].split()[1])
    named, workers = {}, 0
    for pid in sorted(parents):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                words = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pid == daemon:
            named[pid] = "daemon"
        elif "resource_tracker" in words:
            named[pid] = "multiprocessing tracker"
        elif "multiprocessing.spawn" in words or "healthcheck.offload" in words:
            named[pid] = "helper (render, uptime)"
        elif parents[pid] == daemon and "healthcheck" in words:
            named[pid] = "zygote"
        elif named.get(parents[pid]) == "zygote":
            workers += 1
            named[pid] = f"worker {workers}"
        else:
            named[pid] = f"{pid} " + " ".join(w.rsplit("/", 1)[-1] for w in words.split()[1:])[-60:]
    return named


def family_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each process in `pid`'s family (one that just ended is left out)."""
    seconds = {}
    for member in family(pid):
        with contextlib.suppress(OSError):
            seconds[member] = cpu_seconds(member)
    return seconds


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes, from /proc/PID/smaps_rollup. PSS (proportional set
    size) counts a page N processes share 1/N in each. The probe workers are forked from one
    zygote, itself a fork of the daemon, and share many pages with them: a sum of RSS counts
    those in every process (273 MB for 129 MB of PSS, 2 workers and 200 endpoints)."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def pss_bytes(pid: int) -> int:
    """PSS alone (see memory), for the benches that sum a tree's."""
    return memory(pid)[1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerExited(RuntimeError):
    """The server waited for exited before it answered (e.g. its port was taken meanwhile)."""


def wait_http(url: str, deadline: float = 30.0, process: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise ServerExited(f"{url}: the server exited ({process.returncode}) before answering")
        if time.monotonic() > end:
            raise RuntimeError(f"{url} did not answer within {deadline:.0f}s")
        time.sleep(0.2)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def raise_nofile() -> None:
    """Open file limit to its hard limit (a child's preexec_fn): every check holds a socket."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def started(
    argv: list[str], log: Path, stop_wait: float = 20.0, **kwargs
) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=raise_nofile, **kwargs
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(stop_wait)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the target farm -----------------------------------------------------------------------------
NGINX_CONF = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
daemon off;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_timeout 5s;
  server {{
{listens}
    location / {{ default_type application/json; return 200 '{{"status":"UP"}}'; }}
  }}
}}
"""


def _aiohttp_farm(ports: list[int]) -> None:
    """One worker of the fallback farm: every port, SO_REUSEPORT shared with its siblings."""

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"status": "UP"})

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in ports:
            await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=4096).start()
        await asyncio.Event().wait()

    asyncio.run(serve())


@contextlib.contextmanager
def target_farm(workdir: Path, prefer_nginx: bool = True) -> Iterator[tuple[str, list[int], list]]:
    """(what serves, its ports, its processes) for the duration of the block."""
    ports = [free_port() for _ in range(FARM_PORTS)]
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if prefer_nginx and nginx:
        # A free port is only free until someone else binds it: nginx then exits at start, and
        # the farm starts again on other ports.
        for attempt in range(3):
            if attempt:
                ports = [free_port() for _ in range(FARM_PORTS)]
            listens = "\n".join(f"    listen 127.0.0.1:{p} backlog=4096;" for p in ports)
            conf = workdir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=workdir, listens=listens))
            log = str(workdir / "nginx-error.log")
            argv = [nginx, "-p", str(workdir), "-c", str(conf), "-e", log]
            with started(argv, workdir / "nginx.out") as process:
                try:
                    for port in ports:
                        wait_http(f"http://127.0.0.1:{port}/", process=process)
                except ServerExited as exited:
                    if attempt == 2:
                        errors = Path(log).read_text() if Path(log).exists() else ""
                        raise ServerExited(f"{exited}; nginx said: {errors[-800:]}") from None
                    continue
                yield "nginx", ports, [process]
                return
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_aiohttp_farm, args=(ports,), daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/")
        yield "aiohttp x2", ports, workers
    finally:
        for worker in workers:
            worker.terminate()
            worker.join(5)


def target_urls(ports: list[int], count: int) -> list[str]:
    return [f"http://127.0.0.1:{ports[i % len(ports)]}/e{i}" for i in range(count)]


# -- a loopback webhook receiver (Apprise json://) ----------------------------------------------
class Receiver:
    """Records every notification with its arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.received.append((time.monotonic(), await request.json()))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{tail:.*}", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Switchable:
    """One endpoint the bench turns off (closes its listener) to time detection."""

    def __init__(self) -> None:
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def ok(_request: web.Request) -> web.Response:
            return web.json_response({"status": "UP"})

        app = web.Application()
        app.router.add_get("/{tail:.*}", ok)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def turn_off(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# -- configurations ------------------------------------------------------------------------------
def daemon_config(
    urls: list[str],
    interval: float,
    workdir: Path,
    listen_port: int,
    webhook_port: int | None,
    extra: dict | None = None,
    defaults: dict | None = None,
    workers: int | None = None,
) -> Path:
    """The daemon's regions.yaml (JSON is YAML) for these URLs; `defaults` overrides keys of
    its `defaults` section (retries, timeout, ...)."""
    regions: dict[str, dict] = {}
    per_region = max(1, len(urls) // 10)
    for i, url in enumerate(urls):
        regions.setdefault(f"r{i // per_region}", {"endpoints": []})["endpoints"].append(
            {"name": f"e{i}", "url": url}
        )
    if extra:
        regions["switch"] = {"endpoints": [extra]}
    document: dict = {
        "defaults": {
            "interval": f"{interval}s",
            "timeout": f"{min(interval, 2.0)}s",
            "retries": 0,
            "latency": {"warning": "1s", "critical": "2s"},
        }
        | (defaults or {}),
        "scheduler": {"max_concurrency": 2000, "rate_limit": 20000, "jitter": 0.1}
        | ({"workers": workers} if workers else {}),
        "storage": {"path": str(workdir / "healthcheck.db")},
        "exporter": {"listen": f"127.0.0.1:{listen_port}"},
        "regions": regions,
    }
    if webhook_port is not None:
        document["alerting"] = {"channels": {"slack": f"json://127.0.0.1:{webhook_port}/hook"}}
    path = workdir / "regions.yaml"
    path.write_text(json.dumps(document))
    return path


def _go_duration(seconds: float) -> str:
    """Go (Prometheus, blackbox_exporter) takes 5s or 500ms, never 5.0s."""
    return f"{round(seconds * 1000)}ms"


def blackbox_configs(urls: list[str], interval: float, workdir: Path, bb_port: int) -> Path:
    (workdir / "blackbox.yml").write_text(
        json.dumps(
            {
                "modules": {
                    "http_2xx": {
                        "prober": "http",
                        "timeout": _go_duration(min(interval, 2.0)),
                        "http": {"preferred_ip_protocol": "ip4"},
                    }
                }
            }
        )
    )
    (workdir / "targets.json").write_text(json.dumps([{"targets": urls}]))
    config = {
        "global": {
            "scrape_interval": _go_duration(interval),
            "scrape_timeout": _go_duration(min(interval, 2.0)),
        },
        "scrape_configs": [
            {
                "job_name": "blackbox",
                "metrics_path": "/probe",
                "params": {"module": ["http_2xx"]},
                "file_sd_configs": [{"files": [str(workdir / "targets.json")]}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": f"127.0.0.1:{bb_port}"},
                ],
            }
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config))
    return path


# -- the daemon run ------------------------------------------------------------------------------
@dataclass
class Usage:
    name: str
    pid: int
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss_max: int = 0
    probes: int = 0

    @property
    def cpu(self) -> float:
        return self.cpu_end - self.cpu_start

    @property
    def cpu_ms_per_probe(self) -> float | None:
        return 1000 * self.cpu / self.probes if self.probes else None


@dataclass
class DaemonRun:
    farm: str
    endpoints: int
    interval: float
    window_s: float
    planned_per_s: float
    workers: int | None = None  # scheduler.workers; None: the default, one per core
    processes: int = 0  # of ours: the daemon, its probe workers, its helper
    done_per_s: float = 0.0
    missed: int = 0
    dispatched: int = 0
    cpu_ms_per_probe: float | None = None
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    cpu_split: dict[str, float] = field(default_factory=dict)  # event loop vs other threads
    # ms of CPU per check of each process of ours, by what it runs (its command line)
    cpu_by_process: list[tuple[str, float]] = field(default_factory=list)
    lag_worst_p99_5s_ms: float | None = None  # the worst p99 of any ~1,000 dispatches in a row
    lag_share_under_250ms: float | None = None
    pss_mb: list[float] = field(default_factory=list)  # all our processes, shared pages once
    rss_mb: list[float] = field(default_factory=list)  # all our processes, shared pages in each
    # the most of each process of ours over the window: (what it is, RSS MB, PSS MB)
    memory_by_process: list[tuple[str, float, float]] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    tasks: list[int] = field(default_factory=list)
    db_growth_mb: float = 0.0
    stored: int = 0
    blackbox_cpu_ms_per_probe: float | None = None
    prometheus_cpu_ms_per_probe: float | None = None
    blackbox_probes_per_s: float | None = None
    ratio_vs_both: float | None = None
    ratio_vs_blackbox: float | None = None
    detection_s: float | None = None
    detection_bound_s: float | None = None


def lag_histogram(metrics: str) -> dict[str, float]:
    """The schedule lag histogram's cumulative buckets from a /metrics body: le -> count."""
    buckets = {}
    for line in metrics.splitlines():
        if line.startswith("healthcheck_schedule_lag_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantile(q: float, before: dict[str, float], after: dict[str, float]) -> float:
    """Prometheus's histogram_quantile over the window between two scrapes (seconds)."""
    edges = sorted(
        ((float(le), after[le] - before.get(le, 0.0)) for le in after), key=lambda e: e[0]
    )
    total = edges[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in edges:
        if count >= rank:
            if upper == float("inf"):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = upper, count
    return lower


# What Prometheus 2.x asks for (scrape_protocols' default): it gets OpenMetrics from us.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def scrape(url: str) -> str:
    """One /metrics body, fetched as Prometheus does: OpenMetrics and gzip asked for."""
    request = urllib.request.Request(
        url, headers={"Accept-Encoding": "gzip", "Accept": PROMETHEUS_ACCEPT}
    )
    # generous: on the busy VM a first scrape of the code before this work (OpenMetrics
    # rendered sample by sample) once took over 30 s
    with urllib.request.urlopen(request, timeout=180) as response:
        body = response.read()
        if response.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body.decode()


def _db_bytes(workdir: Path) -> int:
    return sum(p.stat().st_size for p in workdir.glob("healthcheck.db*"))


async def daemon_run(
    endpoints: int,
    interval: float,
    warmup: float,
    window: float,
    blackbox: bool,
    detect: bool,
    prefer_nginx: bool = True,
    python: str = sys.executable,
    profile: str | None = None,
    alerting: bool = True,
    scrape_every: float = SCRAPE_EVERY,
    workers: int | None = None,
) -> DaemonRun:
    workdir = Path(tempfile.mkdtemp(prefix="hc-scale-"))
    receiver = Receiver()
    switch = Switchable()
    await receiver.start()
    await switch.start()
    try:
        with target_farm(workdir, prefer_nginx) as (farm, ports, _):
            urls = target_urls(ports, endpoints)
            listen = free_port()
            extra = (
                {"name": "switch", "url": f"http://127.0.0.1:{switch.port}/health"}
                if detect
                else None
            )
            webhook = receiver.port if alerting else None
            config = daemon_config(urls, interval, workdir, listen, webhook, extra, workers=workers)
            run = DaemonRun(farm, endpoints, interval, window, endpoints / interval, workers)
            with contextlib.ExitStack() as stack:
                # pyinstrument samples the daemon's event loop thread from start to stop.
                profiler = (
                    ["-m", "pyinstrument", "-r", "session", "-o", profile, "-i", "0.0005"]
                    if profile
                    else []
                )
                daemon = stack.enter_context(
                    started(
                        [python, *profiler, "-m", "healthcheck", "run", "--config", str(config)],
                        workdir / "daemon.log",
                        stop_wait=300.0 if profile else 20.0,
                    )
                )
                base = f"http://127.0.0.1:{listen}"
                await asyncio.to_thread(wait_http, f"{base}/readyz", 60)
                others: list[Usage] = []
                prom_port = None
                if blackbox:
                    bb_port, prom_port = free_port(), free_port()
                    prom_config = blackbox_configs(urls, interval, workdir, bb_port)
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
                    prom = stack.enter_context(
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
                    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{bb_port}/metrics")
                    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{prom_port}/-/ready")
                    others = [Usage("blackbox_exporter", bb.pid), Usage("prometheus", prom.pid)]
                await asyncio.sleep(warmup)

                me = Usage("healthcheck", daemon.pid)
                # The lag histogram's scrape first: at 10,000 endpoints a scrape takes seconds,
                # and the counters below must start with the window, not before it.
                hist0 = lag_histogram(await asyncio.to_thread(scrape, f"{base}/metrics"))
                first = await asyncio.to_thread(get_json, f"{base}/api/v1/self")
                db0 = _db_bytes(workdir)
                for usage in others:
                    usage.cpu_start = cpu_seconds(usage.pid)
                ours0 = family_cpu(daemon.pid)  # every process of ours, workers and helper too
                split0 = thread_cpu(daemon.pid)
                started_at = time.monotonic()
                wall0 = time.time()
                next_scrape = started_at + (scrape_every or float("inf"))
                p99s, maxes = [], []
                most_memory: dict[str, tuple[int, int]] = {}
                while (now := time.monotonic()) < started_at + window:
                    await asyncio.sleep(1.0)
                    report = await asyncio.to_thread(get_json, f"{base}/api/v1/self")
                    lag = report["scheduler"]["lag_seconds"]
                    if lag["p99"] is not None:
                        p99s.append(lag["p99"])
                        maxes.append(lag["max"])
                    rss_sum = pss_sum = 0
                    for pid, name in roles(daemon.pid).items():
                        with contextlib.suppress(OSError):
                            rss, pss = memory(pid)
                            rss_sum, pss_sum = rss_sum + rss, pss_sum + pss
                            most = most_memory.get(name, (0, 0))
                            most_memory[name] = (max(most[0], rss), max(most[1], pss))
                    run.rss_mb.append(round(rss_sum / 2**20, 1))
                    run.pss_mb.append(round(pss_sum / 2**20, 1))
                    run.fds.append(open_fds(daemon.pid))
                    run.tasks.append(report["process"]["asyncio_tasks"])
                    for usage in others:
                        usage.rss_max = max(usage.rss_max, rss_bytes(usage.pid))
                    if now >= next_scrape:  # the daemon pays for a scrape, as in production
                        await asyncio.to_thread(scrape, f"{base}/metrics")
                        next_scrape += scrape_every
                last = await asyncio.to_thread(get_json, f"{base}/api/v1/self")
                for usage in others:
                    usage.cpu_end = cpu_seconds(usage.pid)
                ours1 = family_cpu(daemon.pid)
                me.cpu_end = sum(ours1[p] - ours0.get(p, 0.0) for p in ours1)
                by_process = {p: ours1[p] - ours0.get(p, 0.0) for p in ours1}
                run.processes = len(ours1)
                run.memory_by_process = [
                    (name, round(rss / 2**20, 1), round(pss / 2**20, 1))
                    for name, (rss, pss) in most_memory.items()
                ]
                named = roles(daemon.pid)
                split1 = thread_cpu(daemon.pid)
                run.cpu_split = {k: round(split1[k] - split0[k], 2) for k in split1}
                elapsed = time.monotonic() - started_at
                hist1 = lag_histogram(await asyncio.to_thread(scrape, f"{base}/metrics"))
                run.window_s = round(elapsed, 1)
                done = last["scheduler"]["completed"] - first["scheduler"]["completed"]
                me.probes = done
                run.dispatched = last["scheduler"]["dispatched"] - first["scheduler"]["dispatched"]
                run.missed = (
                    last["scheduler"]["skipped_overrun"] - first["scheduler"]["skipped_overrun"]
                )
                run.done_per_s = round(done / elapsed, 1)
                run.cpu_ms_per_probe = me.cpu_ms_per_probe
                if done:
                    run.cpu_by_process = sorted(
                        (
                            (named.get(p, str(p)), round(1000 * seconds / done, 3))
                            for p, seconds in by_process.items()
                        ),
                        key=lambda item: -item[1],
                    )
                run.stored = (last["storage"] or {}).get("written", 0) - (
                    first["storage"] or {}
                ).get("written", 0)
                run.db_growth_mb = round((_db_bytes(workdir) - db0) / 2**20, 1)
                total = hist1.get("+Inf", 0) - hist0.get("+Inf", 0)
                if total:
                    # Over the whole window, as Prometheus would compute them from the histogram.
                    run.lag_p50_ms = round(1000 * histogram_quantile(0.5, hist0, hist1), 2)
                    run.lag_p99_ms = round(1000 * histogram_quantile(0.99, hist0, hist1), 2)
                    under = hist1.get("0.25", 0) - hist0.get("0.25", 0)
                    run.lag_share_under_250ms = round(under / total, 5)
                if maxes:
                    run.lag_max_ms = round(1000 * max(maxes), 2)
                    run.lag_worst_p99_5s_ms = round(1000 * max(p99s), 2)
                if blackbox and prom_port is not None:
                    seconds = int(time.time() - wall0)
                    query = f"sum(count_over_time(probe_success[{seconds}s]))"
                    answer = await asyncio.to_thread(
                        get_json,
                        f"http://127.0.0.1:{prom_port}/api/v1/query?"
                        + urllib.parse.urlencode({"query": query}),
                    )
                    probes = int(float(answer["data"]["result"][0]["value"][1]))
                    for usage in others:
                        usage.probes = probes
                    bb_ms, prom_ms = others[0].cpu_ms_per_probe, others[1].cpu_ms_per_probe
                    run.blackbox_probes_per_s = round(probes / seconds, 1)
                    run.blackbox_cpu_ms_per_probe = bb_ms
                    run.prometheus_cpu_ms_per_probe = prom_ms
                    if run.cpu_ms_per_probe and bb_ms and prom_ms:
                        run.ratio_vs_both = round(run.cpu_ms_per_probe / (bb_ms + prom_ms), 3)
                        run.ratio_vs_blackbox = round(run.cpu_ms_per_probe / bb_ms, 3)
                if detect and alerting:
                    run.detection_bound_s = interval * 3 + 2
                    run.detection_s = await _detect(switch, receiver, run.detection_bound_s + 30)
    finally:
        await switch.turn_off()
        await receiver.stop()
        if os.environ.get("HC_BENCH_KEEP"):
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return run


async def _detect(switch: Switchable, receiver: Receiver, limit: float) -> float | None:
    """Turn the switch endpoint off; seconds until a notification naming it arrives."""
    seen = len(receiver.received)
    off = time.monotonic()
    await switch.turn_off()
    while time.monotonic() - off < limit:
        for when, body in receiver.received[seen:]:
            if "switch" in json.dumps(body):
                return round(when - off, 2)
        await asyncio.sleep(0.05)
    return None


# -- --once --------------------------------------------------------------------------------------
def once_run(endpoints: int, prefer_nginx: bool = True, python: str = sys.executable) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="hc-once-"))
    try:
        with target_farm(workdir, prefer_nginx) as (farm, ports, _):
            urls = target_urls(ports, endpoints)
            config = daemon_config(urls, 10, workdir, free_port(), None)
            walls, statuses = [], []
            for _ in range(3):
                began = time.perf_counter()
                done = subprocess.run(
                    [
                        python,
                        "-m",
                        "healthcheck",
                        "--once",
                        "--config",
                        str(config),
                        "--format",
                        "json",
                    ],
                    capture_output=True,
                    preexec_fn=raise_nofile,
                )
                walls.append(time.perf_counter() - began)
                if done.returncode not in (0, 1):  # 1: some degraded (slow), still reported
                    raise RuntimeError(f"--once exited {done.returncode}: {done.stderr[-2000:]!r}")
                results = json.loads(done.stdout)["results"]
                statuses.append(dict(Counter(r["status"] for r in results)))
                failed = sum(not r["ok"] for r in results)
                if failed or len(results) != endpoints:
                    raise RuntimeError(f"{failed} of {len(results)} checks failed")
            return {
                "farm": farm,
                "endpoints": endpoints,
                "wall_s": [round(w, 2) for w in walls],
                "best_s": round(min(walls), 2),
                "statuses": statuses,
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- output --------------------------------------------------------------------------------------
def describe(run: DaemonRun) -> str:
    def f(value, unit="") -> str:
        return (
            "-"
            if value is None
            else f"{value:.3g}{unit}"
            if isinstance(value, float)
            else f"{value}{unit}"
        )

    lines = [
        f"daemon: {run.endpoints} endpoints every {run.interval:g}s, farm {run.farm}, "
        f"window {run.window_s}s, workers {run.workers or 'default'}, "
        f"{run.processes} processes of ours (CPU and PSS are of all of them)",
        f"  probes/s planned {run.planned_per_s:.1f}, done {run.done_per_s}, "
        f"missed {run.missed}, stored {run.stored}",
        f"  CPU per probe: healthcheck {f(run.cpu_ms_per_probe, ' ms')} {run.cpu_split}"
        f" by process {run.cpu_by_process}"
        + (
            f" | blackbox_exporter {f(run.blackbox_cpu_ms_per_probe, ' ms')} + prometheus "
            f"{f(run.prometheus_cpu_ms_per_probe, ' ms')} ({f(run.blackbox_probes_per_s)} probes/s)"
            f" | ratio vs both {f(run.ratio_vs_both)}, vs blackbox alone {f(run.ratio_vs_blackbox)}"
            if run.blackbox_cpu_ms_per_probe is not None
            else ""
        ),
        f"  schedule lag p50 {f(run.lag_p50_ms, ' ms')}, p99 {f(run.lag_p99_ms, ' ms')}, "
        f"max {f(run.lag_max_ms, ' ms')}, share under 250 ms {f(run.lag_share_under_250ms)}, "
        f"worst p99 of 1,000 in a row {f(run.lag_worst_p99_5s_ms, ' ms')}",
        f"  memory of all our processes, MB min/max: RSS {min(run.rss_mb, default=0)}/"
        f"{max(run.rss_mb, default=0)}, PSS {min(run.pss_mb, default=0)}/"
        f"{max(run.pss_mb, default=0)}; each process's most, RSS/PSS: "
        + ", ".join(f"{name} {rss:g}/{pss:g}" for name, rss, pss in run.memory_by_process),
        f"  fds {min(run.fds, default=0)}-{max(run.fds, default=0)}, "
        f"asyncio tasks {min(run.tasks, default=0)}-{max(run.tasks, default=0)}, "
        f"database +{run.db_growth_mb} MB",
    ]
    if run.detection_bound_s is not None:
        lines.append(
            f"  detection: first notification {f(run.detection_s, ' s')} after the endpoint "
            f"went down (bound {run.detection_bound_s:g} s)"
        )
    return "\n".join(lines)


def workers_table(runs: list[DaemonRun]) -> str:
    """Throughput against cores, one row per `scheduler.workers`: a Markdown table for
    bench/README.md. Cores busy: the CPU seconds of all our processes per second of window."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rows = [
        "| workers | checks/s planned / done | missed | lag p50 / p99 / max (ms) "
        "| CPU per check, all processes | cores busy | RSS / PSS, all processes |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        cpu = run.cpu_ms_per_probe
        cores = "-" if cpu is None else f"{cpu * run.done_per_s / 1000:.2f}"
        rows.append(
            f"| {run.workers} | {run.planned_per_s:,.0f} / {run.done_per_s:,.1f} | {run.missed} "
            f"| {ms(run.lag_p50_ms)} / {ms(run.lag_p99_ms)} / {ms(run.lag_max_ms)} "
            f"| {'-' if cpu is None else f'{cpu:.2f} ms'} | {cores} "
            f"| {max(run.rss_mb, default=0):.0f} / {max(run.pss_mb, default=0):.0f} MB |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--aiohttp-farm", action="store_true", help="even when nginx is there")
    sub = parser.add_subparsers(dest="what")
    d = sub.add_parser("daemon", help="one daemon run")
    d.add_argument("--endpoints", type=int, default=1000)
    d.add_argument("--interval", type=float, default=5.0)
    d.add_argument("--warmup", type=float, default=15.0)
    d.add_argument("--window", type=float, default=60.0)
    d.add_argument("--no-blackbox", action="store_true")
    d.add_argument("--workers", type=int, help="scheduler.workers (default: one per core)")
    d.add_argument("--no-alerting", action="store_true", help="to see what alerting costs")
    d.add_argument(
        "--scrape-every", type=float, default=SCRAPE_EVERY, help="seconds; 0: never scrape"
    )
    d.add_argument(
        "--profile",
        help="run the daemon under pyinstrument; its session here (pyinstrument --load FILE)",
    )
    w = sub.add_parser("workers", help="throughput against cores: the same run, workers 1 vs 2")
    w.add_argument("--endpoints", type=int, default=10000)
    w.add_argument("--interval", type=float, default=10.0)
    w.add_argument("--warmup", type=float, default=30.0)
    w.add_argument("--window", type=float, default=60.0)
    o = sub.add_parser("once", help="--once wall time")
    o.add_argument("--endpoints", type=int, default=1000)
    sub.add_parser("detect", help="detection latency alone")
    args = parser.parse_args(argv)
    nginx = not args.aiohttp_farm
    print(
        f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    figures: dict = {}
    if args.what == "daemon":
        blackbox = not args.no_blackbox and bool(shutil.which("prometheus-blackbox-exporter"))
        run = asyncio.run(
            daemon_run(
                args.endpoints,
                args.interval,
                args.warmup,
                args.window,
                blackbox,
                True,
                nginx,
                profile=args.profile and str(Path(args.profile).resolve()),
                alerting=not args.no_alerting,
                scrape_every=args.scrape_every,
                workers=args.workers,
            )
        )
        print(describe(run))
        figures["daemon"] = asdict(run)
    elif args.what == "workers":
        runs = []
        for count in (1, 2):
            run = asyncio.run(
                daemon_run(
                    args.endpoints,
                    args.interval,
                    args.warmup,
                    args.window,
                    False,
                    False,
                    nginx,
                    workers=count,
                )
            )
            print(describe(run), flush=True)
            figures[f"workers_{count}"] = asdict(run)
            runs.append(run)
        print(workers_table(runs))
    elif args.what == "once":
        figures["once"] = once_run(args.endpoints, nginx)
        print(figures["once"])
    elif args.what == "detect":
        run = asyncio.run(daemon_run(20, 5.0, 10.0, 5.0, False, True, nginx))
        print(describe(run))
        figures["detect"] = asdict(run)
    else:
        blackbox = bool(shutil.which("prometheus-blackbox-exporter"))
        figures["compare"] = asdict(
            run := asyncio.run(daemon_run(1000, 5.0, 15.0, 60.0, blackbox, True, nginx))
        )
        print(describe(run), flush=True)
        figures["scale"] = asdict(
            run := asyncio.run(daemon_run(10000, 10.0, 60.0, 60.0, False, True, nginx))
        )
        print(describe(run), flush=True)
        for workers in (1, 2):  # throughput against cores
            figures[f"workers_{workers}"] = asdict(
                run := asyncio.run(
                    daemon_run(10000, 10.0, 30.0, 60.0, False, False, nginx, workers=workers)
                )
            )
            print(describe(run), flush=True)
        for count in (1000, 10000):
            figures[f"once_{count}"] = once_run(count, nginx)
            print(f"--once {count}: {figures[f'once_{count}']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
