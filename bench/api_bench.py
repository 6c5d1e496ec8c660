"""API load bench: clients on /api/v1/status, /api/v1/results and /metrics against a real daemon.

    .venv/bin/python bench/api_bench.py                    # A/B: main's HEAD vs this tree
    .venv/bin/python bench/api_bench.py --endpoints 1000 --clients 50 --window 20 --rounds 2 \\
        --base f8a823f --workers 1 --json bench/api.json
    .venv/bin/python bench/api_bench.py profile --endpoints 10000   # where a status render goes

The real `healthcheck run` as a subprocess, with storage, against bench/scale_bench.py's target
farm (N endpoints, 10 s interval) plus a few endpoints on accuracy_bench's server that answers
exactly DELAY ms late. Per run two windows: one client, then `--clients` clients, each asking
for /api/v1/status, /api/v1/results?limit=100 and /metrics in turn (from a process of their
own); meanwhile a pinger asks /healthz every 100 ms (it is answered on the daemon's main loop
and does no work: its latency is the main loop's responsiveness). Per window: request latency
p50/p99 per path and how many got 503 (busy) or no answer in 10 s, the /healthz latency, the
schedule lag (healthcheck_scheduler_lag histogram, from /metrics at the window's ends) and our
measured-minus-DELAY latency error on the delayed endpoints (from the daemon's SQLite file).

A/B: `--base REF` is run from `git archive REF` (same virtualenv), alternating with this tree,
`--rounds` times each: the machine is shared, so only figures that agree across rounds count.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from accuracy_bench import delayed_target, machine, our_results, percentile, spread
from scale_bench import (
    daemon_config,
    free_port,
    get_json,
    histogram_quantile,
    lag_histogram,
    scrape,
    started,
    target_farm,
    target_urls,
    wait_http,
)

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("/api/v1/status", "/api/v1/results?limit=100", "/metrics")
DELAYED = 5  # endpoints on the delayed server, checked every second
DELAY_MS = 50.0


# -- the clients (a process of their own) --------------------------------------------------------
def _clients(base: str, clients: int, seconds: float, out) -> None:
    async def run() -> dict:
        took: dict[str, list[float]] = {path: [] for path in (*PATHS, "/healthz")}
        codes: dict[str, Counter[str]] = {path: Counter() for path in took}
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=clients + 1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def get(path: str) -> None:
                began = time.perf_counter()
                try:
                    async with session.get(base + path) as response:
                        await response.read()
                        codes[path][str(response.status)] += 1
                        if response.status == 200:
                            took[path].append(time.perf_counter() - began)
                except (aiohttp.ClientError, TimeoutError):
                    codes[path]["no answer"] += 1

            async def client() -> None:
                while True:
                    for path in PATHS:
                        await get(path)

            async def pinger() -> None:
                while True:
                    await get("/healthz")
                    await asyncio.sleep(0.1)

            tasks = [asyncio.create_task(client()) for _ in range(clients)]
            tasks.append(asyncio.create_task(pinger()))
            await asyncio.sleep(seconds)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return {
            path: {"ms": spread([s * 1000 for s in took[path]]), "codes": dict(codes[path])}
            for path in took
        }

    out.send(asyncio.run(run()))
    out.close()


def load(base: str, clients: int, seconds: float) -> dict:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_clients, args=(base, clients, seconds, send))
    process.start()
    result = receive.recv()
    process.join(10)
    return result


# -- one daemon run ------------------------------------------------------------------------------
def source_of(ref: str, workdir: Path) -> Path:
    """The tree at `ref`, unpacked (no worktree: nothing in the repository changes)."""
    tree = workdir / f"src-{ref}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True)
    archive.check_returncode()
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def run_once(
    label: str, source: Path, args: argparse.Namespace, ports: list[int], delayed_port: int
) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="hc-api-"))
    listen = free_port()
    config = daemon_config(
        target_urls(ports, args.endpoints), args.interval, workdir, listen, None,
        workers=args.workers,
    )  # fmt: skip
    document = json.loads(config.read_text())
    document["regions"]["delayed"] = {
        "endpoints": [
            {
                "name": f"d{i}",
                "url": f"http://127.0.0.1:{delayed_port}/d{i}",
                "interval": "1s",
                "timeout": "1s",
            }
            for i in range(DELAYED)
        ]
    }
    config.write_text(json.dumps(document))
    env = os.environ | {"PYTHONPATH": str(source)}
    argv = [sys.executable, "-m", "healthcheck", "run", "--config", str(config)]
    base = f"http://127.0.0.1:{listen}"
    with started(argv, workdir / "daemon.log", cwd=source, env=env):
        wait_http(f"{base}/readyz", 120)
        deadline = time.monotonic() + 120
        while get_json(f"{base}/api/v1/self")["storage"]["written"] < args.endpoints:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: the daemon did not check every endpoint")
            time.sleep(1)
        windows = []
        for name, clients in (("1 client", 1), (f"{args.clients} clients", args.clients)):
            before, start = lag_histogram(scrape(f"{base}/metrics")), time.time()
            requests = load(base, clients, args.window)
            after, end = lag_histogram(scrape(f"{base}/metrics")), time.time()
            window = type("W", (), {"start": start, "end": end})
            ours = our_results(workdir / "healthcheck.db", window, DELAY_MS, 1000.0)
            windows.append(
                {
                    "name": name,
                    "requests": requests,
                    "schedule_lag_ms": {
                        q: round(histogram_quantile(q, before, after) * 1000, 1)
                        for q in (0.5, 0.99)
                    },
                    "checks": ours["checks"],
                    "false_verdicts": ours["false_verdicts"],
                    "delayed_error_ms": ours["delayed_error_ms"],
                }
            )
    return {"label": label, "windows": windows}


def describe(run: dict) -> str:
    lines = [f"== {run['label']}"]
    for w in run["windows"]:
        lines.append(
            f"  {w['name']}: checks {w['checks']} (not healthy {w['false_verdicts']}), "
            f"schedule lag p50/p99 {w['schedule_lag_ms'][0.5]}/{w['schedule_lag_ms'][0.99]} ms, "
            f"delayed error p50/p99 {w['delayed_error_ms']['p50']}/{w['delayed_error_ms']['p99']}"
            " ms"
        )
        for path, r in w["requests"].items():
            lines.append(
                f"    {path:28} n={r['ms']['n']:5} p50={r['ms']['p50']} p99={r['ms']['p99']} ms"
                f"  codes {r['codes']}"
            )
    return "\n".join(lines)


def ab(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="hc-api-src-"))
    sources = [(f"base {args.base}", source_of(args.base, workdir)), ("this tree", ROOT)]
    runs = []
    with (
        target_farm(workdir, not args.aiohttp_farm) as (_farm, ports, _),
        delayed_target(DELAY_MS / 1000) as (delayed_port, _process, _held),
    ):
        for round_ in range(args.rounds):
            order = sources if round_ % 2 == 0 else sources[::-1]  # alternate who goes first
            for label, source in order:
                run = run_once(f"{label}, round {round_ + 1}", source, args, ports, delayed_port)
                print(describe(run), flush=True)
                runs.append(run)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "func")}
        document = {"machine": machine(), "settings": settings, "runs": runs}
        Path(args.json).write_text(json.dumps(document, indent=1))
    return 0


# -- where a render's time goes ------------------------------------------------------------------
def profile(args: argparse.Namespace) -> int:
    """A status render at N endpoints from a view like a day-old daemon's: every endpoint with
    a result, windows and 90 daily bars. Times the snapshot (on the loop) and the render (in a
    thread), then shows the render's profile."""
    from healthcheck.api import StatusView, render_status
    from healthcheck.config import parse_config
    from healthcheck.result import ProbeResult
    from healthcheck.status import StatusBoard
    from storage.rollup import Tally
    from storage.uptime import WINDOWS, Day, Target, UptimeReport

    endpoints = [{"name": f"e{i}", "url": f"http://127.0.0.1:1/{i}"} for i in range(args.endpoints)]
    document = {"regions": {f"r{r}": {"endpoints": endpoints[r::10]} for r in range(10)}}
    config = parse_config(json.dumps(document), "bench")
    board = StatusBoard(config.endpoints())
    now = time.time()
    report = UptimeReport(targets={})
    history: dict[int, list[Day]] = {}
    first_day = int(now // 86400) * 86400 - 89 * 86400
    for row, endpoint in enumerate(config.endpoints(), start=1):
        board.record(ProbeResult(endpoint.region, endpoint.name, "http", True, 0.01, now))
        report.targets[row] = Target(row, endpoint.region, endpoint.name, "http")
        tally = Tally()
        for ms in (5.0, 10.0, 20.0):
            tally.add_check(True, False, ms)
        report.endpoints[row] = dict.fromkeys(WINDOWS, tally)
        history[row] = [Day(first_day + d * 86400, 8640, 8640) for d in range(90)]
    began = time.perf_counter()
    view = StatusView(config, board.snapshot(), report, history, now)
    snapshot_ms = (time.perf_counter() - began) * 1000
    took = []
    for _ in range(args.rounds):
        began = time.perf_counter()
        body, _type = render_status(view)
        took.append((time.perf_counter() - began) * 1000)
    print(
        f"{args.endpoints} endpoints: snapshot {snapshot_ms:.2f} ms on the loop; render "
        f"{percentile(took, 0.5):.0f} ms (median of {args.rounds}), {len(body) / 1e6:.1f} MB"
    )
    profiler = cProfile.Profile()
    profiler.runcall(render_status, view)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base", default="main", help="git ref to compare with")
    parser.add_argument("--workers", type=int, default=1, help="scheduler.workers (1: no workers)")
    parser.add_argument("--aiohttp-farm", action="store_true")
    parser.add_argument("--json")
    parser.set_defaults(func=ab)
    sub = parser.add_subparsers()
    prof = sub.add_parser("profile")
    prof.add_argument("--endpoints", type=int, default=10_000)
    prof.add_argument("--rounds", type=int, default=3)
    prof.set_defaults(func=profile)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
