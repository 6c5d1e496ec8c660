"""Checks a starved daemon gets done, per event loop: tests/e2e/test_starved_prober.py's set-up
as a measurement (healthcheck/event_loop.py, README "Event loop").

    .venv/bin/python bench/starved_bench.py --loop asyncio --loop uvloop --rounds 3

The daemon (5 endpoints every 200 ms, timeout 150 ms, `workers` as given) runs pinned to the
first core of this process's affinity, in a process group of its own; once it stores, the group
goes to nice 19 and a busy loop at nice 0 takes the same core. This process serves the
endpoints on another core if it has one, and counts the requests that arrive in `--seconds`.
`--env NAME=VALUE` adds to the daemon's environment (the loop's own: HEALTHCHECK_EVENT_LOOP).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from aiohttp import web

ENDPOINTS = 5


def _rows(db: Path) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def _pinned(core: int, own_group: bool = False):  # type: ignore[no-untyped-def]
    def setup() -> None:
        if own_group:
            os.setpgid(0, 0)
        os.sched_setaffinity(0, {core})

    return setup


async def one_round(
    loop: str, workers: int, seconds: float, env: dict[str, str], core: int
) -> float:
    hits = 0

    async def ok(_request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "healthcheck.db"
        config = Path(tmp) / "regions.yaml"
        endpoints = [
            {"name": f"ok{i}", "url": f"http://127.0.0.1:{port}/ok"} for i in range(ENDPOINTS)
        ]
        config.write_text(
            yaml.safe_dump(
                {
                    "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
                    "storage": {"path": str(db)},
                    "scheduler": {"workers": workers},
                    "exporter": {"listen": "127.0.0.1:0"},
                    "regions": {"r": {"endpoints": endpoints}},
                }
            )
        )
        daemon = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "healthcheck", "run", "--config", str(config)),
            env={**os.environ, "HEALTHCHECK_EVENT_LOOP": loop, **env},
            stderr=subprocess.DEVNULL,
            preexec_fn=_pinned(core, own_group=True),
        )
        busy: asyncio.subprocess.Process | None = None
        try:
            deadline = time.monotonic() + 120
            while _rows(db) < 2 * ENDPOINTS:
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon stored nothing in 120 s")
                await asyncio.sleep(0.2)
            os.setpriority(os.PRIO_PGRP, daemon.pid, 19)
            busy = await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", "while True: pass"), preexec_fn=_pinned(core)
            )
            await asyncio.sleep(2)  # the busy loop has the core
            start = hits
            await asyncio.sleep(seconds)
            return (hits - start) / seconds
        finally:
            if busy is not None:
                busy.kill()
                await busy.wait()
            with contextlib.suppress(ProcessLookupError):
                daemon.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.wait(), 30)
            await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", action="append", default=[], help="asyncio, uvloop, auto")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the daemon")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:  # the endpoints' server off the starved core
        os.sched_setaffinity(0, set(cores[1:]))
    results: dict[str, list[float]] = {loop: [] for loop in args.loop or ["asyncio", "uvloop"]}
    for _ in range(args.rounds):
        for loop in results:  # alternating, so the machine's load falls on both alike
            rate = await one_round(loop, args.workers, args.seconds, env, cores[0])
            results[loop].append(rate)
            print(f"{loop}: {rate:.1f} requests/s", flush=True)
    for loop, rates in results.items():
        print(f"{loop}: median {statistics.median(rates):.1f} requests/s of {ENDPOINTS / 0.2:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
