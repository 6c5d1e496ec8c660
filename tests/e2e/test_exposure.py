"""What the daemon exposes to whoever can reach it: loopback only by default, and an HTTP
server that reads state but never fetches a URL handed to it."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web
from polling import until

DEFAULT_PORT = 9115


def listening(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8))
                    found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


async def test_the_http_server_listens_on_loopback_unless_configured(
    run_cli, start_daemon, fleet, tmp_path
) -> None:
    """With no exporter section the daemon means 127.0.0.1:9115 (as check-config says, without
    taking a port another exporter may hold), and it binds exactly the host it is given."""
    config = tmp_path / "regions.yaml"
    document = {
        "storage": {"path": str(tmp_path / "hc.db")},
        "regions": {"r": {"endpoints": [{"name": "a", "url": f"{fleet.http}/ok"}]}},
    }
    config.write_text(yaml.safe_dump(document))  # no exporter section: the defaults
    done = await run_cli("check-config", "--config", str(config), "--format", "json")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["listen"] == f"127.0.0.1:{DEFAULT_PORT}"
    for host, expected in (("127.0.0.1", {"127.0.0.1"}), ("0.0.0.0", {"0.0.0.0"})):
        port = _free_port()
        config.write_text(yaml.safe_dump({**document, "exporter": {"listen": f"{host}:{port}"}}))
        process = await start_daemon(config)
        try:
            await until(lambda port=port: listening(port), timeout=20)
            assert listening(port) == expected
            assert _answers(f"http://127.0.0.1:{port}/healthz")
        finally:
            process.terminate()
            await process.wait()


BAIT_PARAMS = ("target", "url", "endpoint", "region", "module", "host", "address", "callback")


async def test_no_request_makes_the_daemon_fetch_a_url(start_daemon, fleet, tmp_path) -> None:
    """blackbox_exporter's /probe?target=... fetches what it is told; ours must not, whatever
    the path, method or parameter."""
    hits: list[str] = []

    async def bait(request: web.Request) -> web.Response:
        hits.append(request.path_qs)
        return web.Response(text="fetched")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", bait)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/stolen"
    port = _free_port()
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
                "exporter": {"listen": f"127.0.0.1:{port}"},
                "storage": {"path": str(tmp_path / "hc.db")},
                "regions": {"r": {"endpoints": [{"name": "a", "url": f"{fleet.http}/ok"}]}},
            }
        )
    )
    process = await start_daemon(config)
    base = f"http://127.0.0.1:{port}"
    paths = [
        "/probe",
        "/metrics",
        "/",
        "/api/v1/status",
        "/api/v1/results",
        "/api/v1/alerts",
        "/api/v1/sla/status",
        "/api/v1/self",
        "/api/v1/probe",
        "/api/v1/check",
    ]
    try:
        async with aiohttp.ClientSession() as session:
            await until(lambda: _answers(f"{base}/healthz"), timeout=20)
            statuses = set()
            for path in paths:
                for name in BAIT_PARAMS:
                    for method in ("GET", "POST"):
                        async with session.request(
                            method, f"{base}{path}", params={name: url}, data={name: url}
                        ) as response:
                            statuses.add(response.status)
                            await response.read()
        assert statuses <= {200, 400, 404, 405}, statuses
        await asyncio.sleep(1.0)  # anything fetched late would arrive by now
        assert hits == []
    finally:
        process.terminate()
        await process.wait()
        await runner.cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
