"""Secrets through a real daemon's whole life: a bearer header, a token in a probed URL, a token
in an Apprise URL and an SMTP password, each used where it fails (so that errors are written
about it), must appear in no log line, no served page, no stored row and no CLI output."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3

import aiohttp
import yaml
from polling import until

TOKEN = "tok-Q7x9ZK2mW4"
PASSWORD = "pw-Lm3Nb8Vc1R"
SECRETS = (TOKEN, PASSWORD)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [secret for secret in SECRETS if secret.lower() in lowered]


async def test_no_secret_in_logs_pages_storage_or_cli(
    start_daemon, follow_log, run_cli, fleet, tmp_path
) -> None:
    nowhere = closed_port()
    config = tmp_path / "regions.yaml"
    db = tmp_path / "hc.db"
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {
                    "interval": "200ms",
                    "timeout": "150ms",
                    "retries": 0,
                    "alerts": {"failure_threshold": 1},
                },
                "exporter": {"listen": "127.0.0.1:0"},
                "storage": {"path": str(db)},
                "regions": {
                    "eu": {
                        "endpoints": [
                            {  # fails with 500: its request carried the bearer token
                                "name": "api",
                                "url": f"{fleet.http}/fail",
                                "headers": {"Authorization": "Bearer ${TOKEN}"},
                            },
                            {  # refused: the error names the URL, token and all
                                "name": "web",
                                "url": f"http://127.0.0.1:{nowhere}/x?key=${{TOKEN}}",
                            },
                        ]
                    }
                },
                "alerting": {
                    "channels": {  # both down: delivery errors are logged, and retried
                        "slack": f"json://127.0.0.1:{nowhere}/${{TOKEN}}",
                        "email": f"mailto://ops:${{PASSWORD}}@127.0.0.1:{nowhere}"
                        "?from=hc@example.com&to=ops@example.com&mode=insecure",
                    },
                },
            }
        )
    )
    env = {**os.environ, "TOKEN": TOKEN, "PASSWORD": PASSWORD}
    process = await start_daemon(config, env=env)
    log = follow_log(process)
    served: dict[str, str] = {}
    try:
        await until(lambda: log.events("listening"), timeout=20)
        await until(lambda: len(log.events("delivery_failed")) >= 2, timeout=30)
        base = f"http://127.0.0.1:{log.port}"
        async with aiohttp.ClientSession() as session:
            for path in (
                "/",
                "/metrics",
                "/api/v1/status",
                "/api/v1/results?limit=1000",
                "/api/v1/alerts",
                "/api/v1/self",
                "/api/v1/sla/status",
            ):
                async with session.get(base + path) as response:
                    served[path] = await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
        await log.closed()
    messages = [str(e.get("msg")) for e in log.entries]
    assert any("eu/api is down: HTTP 500" in m for m in messages)  # failures written about
    assert log.events("delivery_failed")
    assert leaks("\n".join(map(str, log.entries)) + "\n".join(log.other)) == []
    for path, text in served.items():
        assert leaks(text) == [], path
    with sqlite3.connect(db) as connection:
        dump = "\n".join(connection.iterdump())
    assert "http_status" in dump and leaks(dump) == []
    for args in (
        ("status", "--config", str(config), "--format", "json"),
        ("check-config", "--config", str(config)),
        ("--once", "--config", str(config), "--format", "json"),
    ):
        done = await run_cli(*args, env=env)
        assert done.stdout or done.stderr, args
        assert leaks(done.stdout + done.stderr) == [], args
