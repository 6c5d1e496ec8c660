"""`healthcheck demo`: a small simulated multi-region fleet on loopback to run the daemon on.

Every status shows up within seconds with no network: healthy endpoints, a slow one
(degraded), a failing one, a condition that fails, and one region wholly down.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from healthcheck.config import parse_config
from healthcheck.targets import Config

# Over the 200ms warning, under the 1s critical: degraded. The margins are wide so that a busy
# machine (the fleet shares the prober's process) cannot make a healthy endpoint read degraded.
SLOW_DELAY = 0.35


async def _ok(_request: web.Request) -> web.Response:
    return web.json_response({"status": "UP"})


async def _slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(SLOW_DELAY)
    return web.json_response({"status": "UP"})


async def _failing(_request: web.Request) -> web.Response:
    return web.json_response({"status": "DOWN", "error": "database unreachable"}, status=500)


async def _down_in_body(_request: web.Request) -> web.Response:
    return web.json_response({"status": "DOWN"})


def _fleet_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ok", _ok)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/failing", _failing)
    app.router.add_get("/down-in-body", _down_in_body)
    return app


def _closed_port() -> int:
    """A loopback port nothing listens on, for the region that is wholly down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listen_port(preferred: int = 9115) -> int:
    """The usual exporter port when it is free (a real daemon may hold it), else any."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


def demo_config_text(port: int, dead_port: int, interval: str = "3s", listen_port: int = 0) -> str:
    base = f"http://127.0.0.1:{port}"
    dead = f"http://127.0.0.1:{dead_port}"
    regions = {
        "us-west": [
            {"name": "api", "url": f"{base}/ok", "conditions": ["[BODY].status == UP"]},
            {"name": "db", "kind": "tcp", "address": f"127.0.0.1:{port}"},
        ],
        "us-east": [
            {"name": "api", "url": f"{base}/slow"},
            {"name": "web", "url": f"{base}/ok"},
        ],
        "eu-west": [
            {"name": "api", "url": f"{base}/failing"},
            {"name": "web", "url": f"{base}/ok"},
        ],
        "ap": [
            {"name": "api", "url": f"{dead}/ok"},
            {"name": "db", "kind": "tcp", "address": f"127.0.0.1:{dead_port}"},
        ],
        "edge": [
            {"name": "api", "url": f"{base}/down-in-body", "conditions": ["[BODY].status == UP"]},
        ],
        "global": [
            {"name": "api", "url": f"{base}/ok", "conditions": ["[STATUS] == 200"]},
            {"name": "resolver", "kind": "dns", "hostname": "localhost"},
        ],
    }
    document = {
        "defaults": {
            "interval": interval,
            "timeout": "1s",
            "retries": 0,
            "latency": {"warning": "200ms", "critical": "1s"},
        },
        "exporter": {"listen": f"127.0.0.1:{listen_port}"},
        "regions": {name: {"endpoints": endpoints} for name, endpoints in regions.items()},
    }
    return json.dumps(document, indent=2)  # JSON is YAML: the same loader validates it


@asynccontextmanager
async def demo_fleet(interval: str = "3s") -> AsyncIterator[Config]:
    """Serve the simulated fleet on a random loopback port and yield a config probing it."""
    runner = web.AppRunner(_fleet_app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        text = demo_config_text(port, _closed_port(), interval, _listen_port())
        yield parse_config(text, "<demo fleet>")
    finally:
        await runner.cleanup()
