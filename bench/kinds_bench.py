"""CPU per check of each probe kind, next to blackbox_exporter's CPU per probe in the same run.

    .venv/bin/python bench/kinds_bench.py --json bench/kinds.json     # 1,000 endpoints each
    .venv/bin/python bench/kinds_bench.py --quick                      # 100 endpoints, ~2.5 min
    .venv/bin/python bench/kinds_bench.py --kinds grpc,icmp --endpoints 1000 --interval 10

For each kind, one after another: `--endpoints` endpoints of that kind every `--interval`
seconds against real loopback servers of that kind, run by a separate process (a grpc.aio
health server, an aiohttp WebSocket server that greets, a UDP echo server, a TCP listener that
accepts, aiosmtpd offering STARTTLS with a certificate from a trustme CA of the run's own; many
endpoints share a few ports) or the kernel's own ICMP echo (every endpoint its own address in
127.0.0.0/8). The real `healthcheck run` is a subprocess with storage on (no alerting, no
/metrics scrapes); its CPU is that of every process of ours (the daemon, its probe workers, its
helper), read from /proc over the window, divided by the checks it completed.

`push` probes nothing: a job process of its own pings every endpoint's
`/api/v1/push/{token}` at the interval (never faster than the daemon's per-endpoint rate
limit), and ours is also given per heartbeat taken (received, stored, judged by the checks);
the job's CPU is counted apart, as the job's cost.

Where blackbox_exporter has a prober for the kind (tcp_connect, grpc, icmp, and tcp's
query_response with `starttls: true` for SMTP), it probes the same targets at the same interval
in the same run, scheduled by a real Prometheus (one scrape of `/probe` per target and
interval, as deployed); its CPU and Prometheus's are counted apart, each divided by the probes
Prometheus recorded (`count_over_time(probe_success[...])`).
`grpc-keepalive` is grpc with `keepalive: true`. A kind this build does not have is reported as
skipped; one not listed in KINDS or VARIANTS is refused.
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
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scale_bench import (
    _go_duration,
    cpu_seconds,
    family_cpu,
    free_port,
    get_json,
    started,
    wait_http,
)

from healthcheck.probes.registry import is_kind
from healthcheck.push_api import PER, PINGS

PORTS_PER_SERVER = 4  # the endpoints of a kind share these many ports of its server
# aiosmtpd servers, a port each, one per this many STARTTLS endpoints (at most 4): one Python
# process is slower than 1,000 checks every 10 s (and blackbox's as many probes)
SMTP_ENDPOINTS_PER_PROCESS, SMTP_PROCESSES = 250, 4
KINDS = ("tcp", "grpc", "websocket", "udp", "icmp", "starttls", "push")
# A kind with options of its own, benched apart: name -> (kind, options)
VARIANTS: dict[str, tuple[str, dict]] = {
    # One kept connection per address: the bench's 1,000 endpoints share 4 (a fleet of as
    # many servers would keep 1,000); each check is a call on an open HTTP/2 connection.
    "grpc-keepalive": ("grpc", {"keepalive": True}),
}
BENCHED = KINDS + tuple(VARIANTS)
BLACKBOX_MODULES = {  # our kind -> blackbox_exporter's prober for it
    "tcp": "tcp",
    "grpc": "grpc",
    "icmp": "icmp",
    "grpc-keepalive": "grpc",  # which opens a connection per probe
    "starttls": "tcp",  # its query_response dialogue with `starttls: true` (SMTP_STARTTLS)
}
# blackbox_exporter's SMTP STARTTLS, as its example config has it: the same dialogue as ours
# (greeting, EHLO, STARTTLS offered, STARTTLS, 220) and then a verified TLS handshake.
SMTP_STARTTLS = [
    {"expect": "^220"},
    {"send": "EHLO prober\r"},
    {"expect": "^250[ -]STARTTLS"},
    {"send": "STARTTLS\r"},
    {"expect": "^220"},
    {"starttls": True},
]


# -- the servers, in a process of their own (their CPU is nobody's) -----------------------------
def _serve(ports: multiprocessing.Queue) -> None:
    import grpc
    from aiohttp import web
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    async def greet(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"status": "UP"})
        await ws.receive()  # the check closes
        return ws

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def main() -> None:
        found: dict[str, list[int]] = {}
        health = HealthServicer()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        found["grpc"] = [server.add_insecure_port("127.0.0.1:0") for _ in range(PORTS_PER_SERVER)]
        await server.start()

        app = web.Application()
        app.router.add_get("/{tail:.*}", greet)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        for _ in range(PORTS_PER_SERVER):
            await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
        found["websocket"] = [address[1] for address in runner.addresses]

        loop = asyncio.get_running_loop()
        found["udp"] = []
        for _ in range(PORTS_PER_SERVER):
            transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
            found["udp"].append(transport.get_extra_info("sockname")[1])

        found["tcp"] = []
        for _ in range(PORTS_PER_SERVER):
            tcp = await asyncio.start_server(accept, "127.0.0.1", 0, backlog=4096)
            found["tcp"].append(tcp.sockets[0].getsockname()[1])

        ports.put(found)
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_smtp(ports: multiprocessing.Queue, folder: str, count: int) -> None:
    """A real SMTP server (aiosmtpd) offering STARTTLS on `count` ports, with the certificate
    for 127.0.0.1 in `folder`."""
    import logging
    import ssl

    from aiosmtpd.handlers import Sink
    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # every check hangs up at once
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(Path(folder) / "server.pem")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        found = []
        for _ in range(count):
            smtp = await loop.create_server(
                lambda: SMTP(Sink(), hostname="mail.bench.invalid", tls_context=tls),
                "127.0.0.1",
                0,
                backlog=4096,
            )
            found.append(smtp.sockets[0].getsockname()[1])
        ports.put(found)
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass(frozen=True)
class Servers:
    ports: dict[str, list[int]]  # of each kind's servers
    ca_file: str  # the CA the STARTTLS server's certificate is from


@contextlib.contextmanager
def servers(endpoints: int = 1000) -> Iterator[Servers]:
    """Each kind's servers, which run in a process of their own."""
    import trustme

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory(prefix="hc-kinds-ca-") as folder:
        # A CA of the run's own, which the STARTTLS checks trust by ca_file. ECDSA: a Python
        # SMTP server signing an RSA handshake 200 times a second (ours and blackbox's) was
        # the bottleneck on the 2-core VM, and the checks' verdicts went degraded with it.
        ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        ca_file = str(Path(folder) / "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(Path(folder) / "server.pem")
        )
        processes = [context.Process(target=_serve, args=(queue,), daemon=True)]
        processes += [
            context.Process(target=_serve_smtp, args=(queue, folder, 1), daemon=True)
            for _ in range(min(SMTP_PROCESSES, -(-endpoints // SMTP_ENDPOINTS_PER_PROCESS)))
        ]
        for process in processes:
            process.start()
        try:
            ports: dict[str, list[int]] = {"starttls": []}
            for _ in processes:
                found = queue.get(timeout=60)
                if isinstance(found, dict):
                    ports.update(found)
                else:
                    ports["starttls"] += found
            yield Servers(ports, ca_file)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(5)


# -- the job that pings push endpoints, in a process of its own (its CPU is the job's) -----------
def _pinger(base: str, tokens: list[str], every: float, pings: Any, refused: Any) -> None:
    """Ping each token's push URL every `every` seconds, the tokens spread over the period;
    count the pings the daemon took (200) and those it did not."""
    import aiohttp

    async def main() -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def job(i: int, token: str) -> None:
                due = began + every * i / len(tokens)
                while True:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    due += every
                    try:
                        async with session.get(f"{base}/api/v1/push/{token}") as response:
                            await response.read()
                            took = response.status == 200
                    except aiohttp.ClientError:
                        took = False
                    counter = pings if took else refused
                    with counter.get_lock():
                        counter.value += 1

            await asyncio.gather(*(job(i, t) for i, t in enumerate(tokens)))

    asyncio.run(main())


@contextlib.contextmanager
def pinger(base: str, count: int, every: float) -> Iterator[tuple[int, Any, Any]]:
    """(pid, pings taken, pings refused) of a job process pinging `count` push tokens."""
    context = multiprocessing.get_context("spawn")
    pings, refused = context.Value("q", 0), context.Value("q", 0)
    tokens = [push_token(i) for i in range(count)]
    process = context.Process(
        target=_pinger, args=(base, tokens, every, pings, refused), daemon=True
    )
    process.start()
    try:
        yield process.pid or 0, pings, refused
    finally:
        process.terminate()
        process.join(5)


# -- endpoints of each kind ---------------------------------------------------------------------
def loopback_address(i: int) -> str:
    """The kernel answers pings on every address of 127.0.0.0/8: endpoint i gets its own, from
    127.0.1.1 on (blackbox_exporter's targets must differ anyway)."""
    n = i + 257
    return f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def push_token(i: int) -> str:
    return f"bench-push-token-{i:06d}"


def kind_of(name: str) -> str:
    """The probe kind of a benched name (a kind, or one of VARIANTS)."""
    return VARIANTS[name][0] if name in VARIANTS else name


def endpoint(name: str, i: int, farm: Servers) -> tuple[dict, str]:
    """(our endpoint, blackbox_exporter's target) for the i-th endpoint of `name` (a kind or a
    variant)."""
    if name in VARIANTS:
        kind, options = VARIANTS[name]
        ours, theirs = endpoint(kind, i, farm)
        return {**ours, **options}, theirs
    kind = name
    if kind == "icmp":
        host = loopback_address(i)
        return {"kind": "icmp", "host": host, "count": 1}, host  # one echo, as blackbox sends
    if kind == "push":
        return {"kind": "push", "token": push_token(i)}, ""
    ports = farm.ports
    address = f"127.0.0.1:{ports[kind][i % len(ports[kind])]}"
    if kind == "starttls":
        tls = {"ca_file": farm.ca_file}
        return {"kind": "starttls", "address": address, "protocol": "smtp", "tls": tls}, address
    if kind == "websocket":
        return {"kind": "websocket", "url": f"ws://{address}/e{i}"}, ""
    if kind == "udp":
        return {"kind": "udp", "address": address, "send": f"ping {i}", "expect": "^ping"}, ""
    return {"kind": kind, "address": address}, address  # tcp, grpc


def daemon_config(
    kind: str, count: int, interval: float, farm: Servers, workdir: Path, listen: int
) -> tuple[Path, list[str]]:
    regions: dict[str, dict] = {}
    targets = []
    per_region = max(1, count // 10)
    for i in range(count):
        ours, theirs = endpoint(kind, i, farm)
        regions.setdefault(f"r{i // per_region}", {"endpoints": []})["endpoints"].append(
            {"name": f"e{i}", **ours}
        )
        targets.append(theirs)
    document = {
        "defaults": {
            "interval": f"{interval}s",
            "timeout": f"{min(interval, 5.0)}s",
            "retries": 0,
            "latency": {"warning": "2s", "critical": "4s"},
        },
        "scheduler": {"max_concurrency": 2000, "rate_limit": 20000, "jitter": 0.1},
        "storage": {"path": str(workdir / "healthcheck.db")},
        "exporter": {"listen": f"127.0.0.1:{listen}"},
        "regions": regions,
    }
    path = workdir / "regions.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path, targets


def blackbox_config(
    kind: str, targets: list[str], interval: float, workdir: Path, bb_port: int, ca_file: str
) -> Path:
    prober = BLACKBOX_MODULES[kind]
    timeout = _go_duration(min(interval, 5.0))
    module: dict = {"prober": prober, "timeout": timeout}
    module[prober] = {"preferred_ip_protocol": "ip4"}
    if kind == "starttls":
        module[prober] |= {"query_response": SMTP_STARTTLS, "tls_config": {"ca_file": ca_file}}
    (workdir / "blackbox.yml").write_text(json.dumps({"modules": {"m": module}}))
    # One group per target with a label of its own: Prometheus would merge equal targets (the
    # endpoints that share a port) into one.
    groups = [{"targets": [t], "labels": {"endpoint": f"e{i}"}} for i, t in enumerate(targets)]
    (workdir / "targets.json").write_text(json.dumps(groups))
    config = {
        "global": {"scrape_interval": _go_duration(interval), "scrape_timeout": timeout},
        "scrape_configs": [
            {
                "job_name": "blackbox",
                "metrics_path": "/probe",
                "params": {"module": ["m"]},
                "file_sd_configs": [{"files": [str(workdir / "targets.json")]}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"target_label": "__address__", "replacement": f"127.0.0.1:{bb_port}"},
                ],
            }
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config))
    return path


# -- one kind -----------------------------------------------------------------------------------
@dataclass
class KindRun:
    kind: str
    endpoints: int
    interval: float
    window_s: float = 0.0
    processes: int = 0  # of ours, all counted
    checks: int = 0
    checks_per_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)  # the last verdict of each endpoint
    cpu_s: float = 0.0
    cpu_ms_per_check: float | None = None
    blackbox_module: str | None = None
    blackbox_probes: int | None = None
    blackbox_success_share: float | None = None
    blackbox_cpu_ms_per_probe: float | None = None
    prometheus_cpu_ms_per_probe: float | None = None
    ratio_vs_blackbox: float | None = None
    ratio_vs_both: float | None = None
    # push: the heartbeats a job process sent in the window, each received, stored and judged
    heartbeat_every_s: float | None = None
    heartbeats: int | None = None
    heartbeats_refused: int | None = None
    cpu_ms_per_heartbeat: float | None = None  # ours: receiving, storing and judging
    job_cpu_ms_per_heartbeat: float | None = None  # the pinging job's, not ours


def slow_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=300) as response:
        return json.load(response)


def _prometheus_value(port: int, query: str, at: float) -> float:
    answer = get_json(
        f"http://127.0.0.1:{port}/api/v1/query?"
        + urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    )
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


async def kind_run(
    kind: str,
    count: int,
    interval: float,
    warmup: float,
    window: float,
    farm: Servers,
    blackbox: bool,
    python: str = sys.executable,
) -> KindRun:
    workdir = Path(tempfile.mkdtemp(prefix=f"hc-kinds-{kind}-"))
    run = KindRun(kind, count, interval)
    try:
        listen = free_port()
        config, targets = daemon_config(kind, count, interval, farm, workdir, listen)
        with contextlib.ExitStack() as stack:
            daemon = stack.enter_context(
                started(
                    [python, "-m", "healthcheck", "run", "--config", str(config)],
                    workdir / "daemon.log",
                )
            )
            base = f"http://127.0.0.1:{listen}"
            await asyncio.to_thread(wait_http, f"{base}/readyz", 60, daemon)
            job_pid = pings = refused = None
            if kind == "push":
                # As often as the endpoint's interval, but never past the daemon's rate limit.
                run.heartbeat_every_s = max(interval, PER / PINGS)
                job_pid, pings, refused = stack.enter_context(
                    pinger(base, count, run.heartbeat_every_s)
                )
                # The warm-up starts once the job pings (its start-up is seconds on a busy VM).
                end = time.monotonic() + 60
                while pings.value + refused.value == 0:
                    if time.monotonic() > end:
                        raise RuntimeError("the push job sent no ping within 60 s")
                    await asyncio.sleep(0.1)
            prober = BLACKBOX_MODULES.get(kind) if blackbox else None
            bb_pid = prom_pid = prom_port = None
            if prober:
                run.blackbox_module = prober
                bb_port, prom_port = free_port(), free_port()
                prom_config = blackbox_config(
                    kind, targets, interval, workdir, bb_port, farm.ca_file
                )
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
                await asyncio.to_thread(wait_http, f"http://127.0.0.1:{bb_port}/metrics", 30, bb)
                await asyncio.to_thread(
                    wait_http, f"http://127.0.0.1:{prom_port}/-/ready", 30, prom
                )
                bb_pid, prom_pid = bb.pid, prom.pid
                # The warm-up starts once Prometheus probes: it hands discovered targets to its
                # scrapers at most every 5 s, seconds after it is ready on a busy machine.
                end = time.monotonic() + 60
                while not await asyncio.to_thread(
                    _prometheus_value, prom_port, "count(probe_success)", time.time()
                ):
                    if time.monotonic() > end:
                        raise RuntimeError("Prometheus recorded no probe within 60 s")
                    await asyncio.sleep(0.2)
            await asyncio.sleep(warmup)

            first = await asyncio.to_thread(get_json, f"{base}/api/v1/self")
            ours0 = family_cpu(daemon.pid)
            others0 = [cpu_seconds(p) for p in (bb_pid, prom_pid) if p]
            job0 = (cpu_seconds(job_pid), pings.value, refused.value) if job_pid else None
            began, wall0 = time.monotonic(), time.time()
            await asyncio.sleep(window)
            ours1 = family_cpu(daemon.pid)
            others1 = [cpu_seconds(p) for p in (bb_pid, prom_pid) if p]
            job1 = (cpu_seconds(job_pid), pings.value, refused.value) if job_pid else None
            elapsed = time.monotonic() - began
            wall1 = time.time()
            last = await asyncio.to_thread(get_json, f"{base}/api/v1/self")

            run.window_s = round(elapsed, 1)
            run.processes = len(ours1)
            run.cpu_s = round(sum(ours1[p] - ours0.get(p, 0.0) for p in ours1), 2)
            run.checks = last["scheduler"]["completed"] - first["scheduler"]["completed"]
            run.checks_per_s = round(run.checks / elapsed, 1)
            if run.checks:
                run.cpu_ms_per_check = round(1000 * run.cpu_s / run.checks, 3)
            if job0 and job1:
                run.heartbeats = job1[1] - job0[1]
                run.heartbeats_refused = job1[2] - job0[2]
                if run.heartbeats:
                    run.cpu_ms_per_heartbeat = round(1000 * run.cpu_s / run.heartbeats, 3)
                    job_ms = 1000 * (job1[0] - job0[0]) / run.heartbeats
                    run.job_cpu_ms_per_heartbeat = round(job_ms, 3)
            # After the window: /api/v1/status reads uptime from the database, seconds on a
            # busy machine, and must not count in the figures.
            status = await asyncio.to_thread(slow_json, f"{base}/api/v1/status")
            run.statuses = dict(
                Counter(e["status"] for r in status["regions"] for e in r["endpoints"])
            )
            if prom_port is not None:
                # The probes whose results landed in the same window as the CPU was counted over.
                span = f"[{round(1000 * (wall1 - wall0))}ms]"
                probes = await asyncio.to_thread(
                    _prometheus_value,
                    prom_port,
                    f"sum(count_over_time(probe_success{span}))",
                    wall1,
                )
                good = await asyncio.to_thread(
                    _prometheus_value, prom_port, f"sum(sum_over_time(probe_success{span}))", wall1
                )
                run.blackbox_probes = int(probes)
                if probes:
                    run.blackbox_success_share = round(good / probes, 4)
                    bb_ms = 1000 * (others1[0] - others0[0]) / probes
                    prom_ms = 1000 * (others1[1] - others0[1]) / probes
                    run.blackbox_cpu_ms_per_probe = round(bb_ms, 3)
                    run.prometheus_cpu_ms_per_probe = round(prom_ms, 3)
                    if run.cpu_ms_per_check and bb_ms:
                        run.ratio_vs_blackbox = round(run.cpu_ms_per_check / bb_ms, 2)
                        run.ratio_vs_both = round(run.cpu_ms_per_check / (bb_ms + prom_ms), 2)
    finally:
        if os.environ.get("HC_BENCH_KEEP"):
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return run


def describe(run: KindRun) -> str:
    line = (
        f"{run.kind:9} {run.endpoints} endpoints every {run.interval:g}s: "
        f"{run.checks_per_s} checks/s, ours {run.cpu_ms_per_check} ms CPU per check "
        f"({run.processes} processes), last verdicts {run.statuses}"
    )
    if run.heartbeats is not None:
        line += (
            f" | {run.heartbeats} heartbeats every {run.heartbeat_every_s:g}s "
            f"({run.heartbeats_refused} refused), ours {run.cpu_ms_per_heartbeat} ms CPU per "
            f"heartbeat received and judged, the job's {run.job_cpu_ms_per_heartbeat} ms"
        )
    if run.blackbox_module:
        line += (
            f" | blackbox_exporter ({run.blackbox_module}) {run.blackbox_cpu_ms_per_probe} ms "
            f"+ prometheus {run.prometheus_cpu_ms_per_probe} ms per probe, "
            f"{run.blackbox_probes} probes, success {run.blackbox_success_share} | "
            f"ours / blackbox {run.ratio_vs_blackbox}, / both {run.ratio_vs_both}"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--kinds", default=",".join(BENCHED), help="comma-separated, in order (kinds, variants)"
    )
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=45.0)
    parser.add_argument("--quick", action="store_true", help="100 endpoints, 5 s, short windows")
    parser.add_argument("--no-blackbox", action="store_true")
    parser.add_argument(
        "--together",
        action="store_true",
        help="every kind at once, for a smoke run: they then share the CPU, and the figures are\n"
        "not for comparing (each kind's CPU is still its own processes')",
    )
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.endpoints, args.interval, args.warmup, args.window = 100, 5.0, 8.0, 15.0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in BENCHED]
    if unknown:
        known = ", ".join(BENCHED)
        parser.error(f"--kinds: {', '.join(unknown)} not benched here (known: {known})")
    blackbox = (
        not args.no_blackbox
        and bool(shutil.which("prometheus-blackbox-exporter"))
        and bool(shutil.which("prometheus"))
    )
    load = os.getloadavg()
    print(
        f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load[0]:.1f}",
        flush=True,
    )
    figures: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_at_start": round(load[0], 2),
        },
        "blackbox": blackbox,
        "kinds": {},
        "skipped": {},
    }
    for kind in kinds:
        if not is_kind(kind_of(kind)):
            figures["skipped"][kind] = "not a kind of this build"
            print(f"{kind:9} skipped: not a kind of this build", flush=True)
    built = [kind for kind in kinds if kind not in figures["skipped"]]
    with servers(args.endpoints) as farm:

        def one(kind: str) -> Coroutine[Any, Any, KindRun]:
            return kind_run(
                kind, args.endpoints, args.interval, args.warmup, args.window, farm, blackbox
            )

        if args.together:

            async def every() -> list[KindRun]:
                return await asyncio.gather(*(one(kind) for kind in built))

            runs = asyncio.run(every())
        else:
            runs = []
            for kind in built:
                runs.append(asyncio.run(one(kind)))
                print(describe(runs[-1]), flush=True)
        for run in runs:
            figures["kinds"][run.kind] = asdict(run)
            if args.together:
                print(describe(run), flush=True)
    figures["machine"]["load_at_end"] = round(os.getloadavg()[0], 2)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
