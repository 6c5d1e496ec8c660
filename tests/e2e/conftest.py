"""Run the real `healthcheck` CLI as a subprocess against real servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import ssl
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

HITS = web.AppKey("hits", list)
VISITS = web.AppKey("visits", list)
DOWN = web.AppKey("down", set)


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str


def _open_files(limit: int | None):
    """A preexec_fn that sets the child's open-file limit (soft and hard), or None."""
    if limit is None:
        return None
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


async def _run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    open_files: int | None = None,
) -> Completed:
    """`python -m healthcheck ARGS` in a subprocess, without blocking the test's event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        preexec_fn=_open_files(open_files),
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    return Completed(process.returncode, stdout.decode(), stderr.decode())


@pytest.fixture
def run_cli():
    return _run_cli


async def _start_daemon(
    config: object, env: dict[str, str] | None = None, open_files: int | None = None
) -> asyncio.subprocess.Process:
    """`healthcheck run` logging JSON lines to a pipe on stderr (under an open-file limit)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healthcheck",
        "run",
        "--config",
        str(config),
        "--log-format",
        "json",
        stderr=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=_open_files(open_files),
    )


@pytest.fixture
def start_daemon():
    return _start_daemon


class DaemonLog:
    """A daemon's stderr as it comes: its JSON log entries, and apart from them any line that
    is not one (a traceback, an asyncio complaint), so a test can insist there is none."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.entries: list[dict] = []
        self.other: list[str] = []
        self._reader = asyncio.create_task(self._read(process.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                self.entries.append(entry)
            else:
                self.other.append(line.decode(errors="replace").rstrip())

    def events(self, name: str) -> list[dict]:
        return [e for e in self.entries if e.get("event") == name]

    @property
    def port(self) -> int:
        """The port of the daemon's HTTP server, once it has logged that it listens."""
        return self.events("listening")[0]["port"]

    async def closed(self) -> None:
        """Every line in: wait for the end of the stream (the daemon has exited)."""
        await self._reader

    async def stop(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def follow_log():
    """follow_log(process): a DaemonLog reading that daemon's stderr until it exits."""
    logs: list[DaemonLog] = []

    def follow(process: asyncio.subprocess.Process) -> DaemonLog:
        logs.append(DaemonLog(process))
        return logs[-1]

    yield follow
    for log in logs:  # a test that failed early may leave a reader waiting
        await log.stop()


async def _ok(_r: web.Request) -> web.Response:
    return web.json_response({"status": "UP"})


async def _slow(_r: web.Request) -> web.Response:
    await asyncio.sleep(0.2)
    return web.json_response({"status": "UP"})


async def _fail(_r: web.Request) -> web.Response:
    return web.Response(status=500, text="boom")


async def _down(_r: web.Request) -> web.Response:
    return web.json_response({"status": "DOWN"})


async def _hang(_r: web.Request) -> web.Response:
    await asyncio.Event().wait()
    return web.Response()


async def _switch(request: web.Request) -> web.Response:
    """/switch/NAME answers 500 while NAME is in `Fleet.down`, else 200."""
    if request.match_info["name"] in request.app[DOWN]:
        return web.Response(status=500, text="switched off")
    return web.json_response({"status": "UP"})


async def _auth(request: web.Request) -> web.Response:
    request.app[HITS].append(request.path)
    return web.Response(status=401)


@web.middleware
async def _count(request: web.Request, handler):
    request.app[HITS].append(request.path)
    request.app[VISITS].append((time.monotonic(), request.path))
    return await handler(request)


@dataclass
class Fleet:
    http: str
    https_valid: str
    https_expired: str
    ca_file: str
    app: web.Application

    @property
    def hits(self) -> list[str]:
        return self.app[HITS]

    def visits(self, path: str) -> list[float]:
        """When (time.monotonic()) each request for `path` came, oldest first."""
        return [at for at, visited in self.app[VISITS] if visited == path]

    @property
    def down(self) -> set[str]:
        """Names whose /switch/NAME fails; add and remove to switch them."""
        return self.app[DOWN]


@pytest.fixture
async def fleet(ca, tmp_path):
    """One app served three ways: plain HTTP, HTTPS with a valid and with an expired cert."""
    app = web.Application(middlewares=[_count])
    app[HITS] = []
    app[VISITS] = []
    app[DOWN] = set()
    for path, handler in {
        "/ok": _ok,
        "/slow": _slow,
        "/fail": _fail,
        "/down": _down,
        "/hang": _hang,
        "/auth": _auth,
        "/switch/{name}": _switch,
    }.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    now = datetime.now(UTC)
    certs = {
        "valid": ca.issue_cert("127.0.0.1"),
        "expired": ca.issue_cert(
            "127.0.0.1", not_before=now - timedelta(days=9), not_after=now - timedelta(days=2)
        ),
    }
    urls = {}
    for name, cert in [("plain", None), *certs.items()]:
        context = None
        if cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[-1][1]
        urls[name] = f"{'https' if cert else 'http'}://127.0.0.1:{port}"
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield Fleet(urls["plain"], urls["valid"], urls["expired"], str(ca_file), app)
    await runner.cleanup()
