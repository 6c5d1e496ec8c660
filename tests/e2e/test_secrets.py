"""Secrets through a real daemon's whole life: a bearer header, a token in a probed URL, a token
in an Apprise URL and an SMTP password, each used where it fails (so that errors are written
about it), must appear in no log line, no served page, no stored row and no CLI output."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import sqlite3
from urllib.parse import quote

import aiohttp
import yaml
from aiohttp import web
from polling import until

TOKEN = "tok-Q7x9ZK2mW4"
PASSWORD = "pw-Lm3Nb8Vc1R"
SECRETS = (TOKEN, PASSWORD)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


def said(log, text: str) -> bool:
    """Whether any log entry's message holds `text`."""
    return any(text in str(entry.get("msg")) for entry in log.entries)


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
                # Generous: a busy machine must not turn the 500 into a timeout. Not 5 s: each
                # endpoint's first check comes at its own place in the interval.
                "defaults": {
                    "interval": "2s",
                    "timeout": "2s",
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
                                # shown in the endpoint's detail view as configured
                                "conditions": ["[BODY].key == ${TOKEN}"],
                            },
                            {  # never answers: times out, however idle the machine is
                                "name": "hang",
                                "url": f"{fleet.http}/hang?key=${{TOKEN}}",
                                "timeout": "300ms",
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
        await until(lambda: said(log, "eu/api is down: HTTP 500"), timeout=30)
        await until(lambda: said(log, "eu/hang is down: no answer within 0.3s"), timeout=30)
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
                "/api/v1/regions/eu",
                *(f"/api/v1/endpoints/eu/{name}" for name in ("api", "web", "hang")),
                *(f"/api/v1/endpoints/eu/{name}/events" for name in ("api", "web", "hang")),
            ):
                async with session.get(base + path) as response:
                    served[path] = await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
        await log.closed()
    assert said(log, "eu/api is down: HTTP 500")  # failures written about
    assert said(log, "eu/hang is down: no answer within 0.3s")
    assert log.events("delivery_failed")
    assert leaks("\n".join(map(str, log.entries)) + "\n".join(log.other)) == []
    for path, text in served.items():
        assert leaks(text) == [], path
    assert "[BODY].key == ***" in served["/api/v1/endpoints/eu/web"]  # the condition, scrubbed
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


# Longer than every cut (conditions quote 80 characters, a bad response 120), with a quote,
# a backslash, a plus and letters outside ASCII, which URLs, JSON, reprs and base64 each
# write their own way. No whitespace: a URL holds it too.
KEY = 'Zq8-P\u00e4ssw\u00f6rd"k7"back\\slash+w9' + "Xr4Tn8Ly2Hc6Jb0Vd5Mq" * 5
# A URL's user info may not hold a backslash: the basic-auth password is another secret.
PASS = 'Wv3-G\u00e4rtn\u00f6r"j5"+p2' + "Ks7Bd1Qf9Zt4Mh6Rc0Yl" * 5
SHORTEST_LEAK = 6


def _runs(text: str) -> set[str]:
    lowered = text.lower()
    return {lowered[i : i + SHORTEST_LEAK] for i in range(len(lowered) - SHORTEST_LEAK + 1)}


def _base64_cores(data: bytes) -> list[str]:
    """The base64 characters only the secret decides, at each alignment (after `user:`)."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode()
        cores.append(encoded[-(-8 * offset // 6) : 8 * (offset + len(data)) // 6])
    return cores


# Every form of KEY and PASS the echo below can send back, as the runs that give them away.
KEY_RUNS = set().union(
    *(
        _runs(form)
        for secret in (KEY, PASS)
        for form in [
            secret,
            quote(secret, safe=""),
            json.dumps(secret)[1:-1],
            json.dumps(json.dumps(secret))[3:-3],
            repr(secret.encode())[2:-1],
            *_base64_cores(secret.encode()),
            *_base64_cores(secret.encode("latin-1")),
        ]
    )
)


def key_leaks(text: str) -> set[str]:
    return _runs(text) & KEY_RUNS


async def _echo(request: web.Request) -> web.Response:
    """Says back what it was sent, each piece where a condition will quote it: the cut at 80
    falls inside the key, which starts a few characters in."""
    seen = json.dumps({"key": request.headers.get("X-Api-Key", "")})
    return web.json_response(
        {
            "header": "saw " + request.headers.get("X-Api-Key", ""),
            "url": "saw " + request.raw_path,
            "auth": "saw " + request.headers.get("Authorization", ""),
            "json": "saw " + seen,
        }
    )


async def _bad_status_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers with a status line aiohttp refuses and quotes: the request, bytes and all."""
    request = await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 2OO " + request.replace(b"\r\n", b" ") + b"\r\n\r\n")
    await writer.drain()
    writer.close()


async def test_an_echoing_target_gets_no_part_of_a_secret_out(
    start_daemon, follow_log, run_cli, tmp_path
) -> None:
    """A target that reflects the request (header, URL, basic auth, JSON of it) into what the
    checks quote, cut inside the secret: no 6 characters of the secret in any form reach the
    daemon's log, its API and page, its database, or `--once --format json`."""
    echo_runner = web.AppRunner(web.Application(), access_log=None, shutdown_timeout=0.1)
    echo_runner.app.router.add_get("/echo", _echo)
    await echo_runner.setup()
    site = web.TCPSite(echo_runner, "127.0.0.1", 0)
    await site.start()
    echo_port = echo_runner.addresses[0][1]
    bad = await asyncio.start_server(_bad_status_echo, "127.0.0.1", 0)
    bad_port = bad.sockets[0].getsockname()[1]
    config = tmp_path / "regions.yaml"
    db = tmp_path / "hc.db"
    reflected = ["[BODY].header == UP", "[BODY].url == UP", "[BODY].auth == UP"]
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "5s", "timeout": "5s", "retries": 0},
                "exporter": {"listen": "127.0.0.1:0"},
                "storage": {"path": str(db)},
                "regions": {
                    "eu": {
                        "endpoints": [
                            {
                                "name": "echo",
                                "url": f"http://user:${{PASS}}@127.0.0.1:{echo_port}/echo"
                                "?key=${KEY}",
                                "headers": {"X-Api-Key": "${KEY}"},
                                "conditions": [*reflected, "[BODY].json == UP"],
                            },
                            {
                                "name": "bad",
                                "url": f"http://127.0.0.1:{bad_port}/x?key=${{KEY}}",
                                "headers": {"X-Api-Key": "${KEY}"},
                            },
                        ]
                    }
                },
            }
        )
    )
    env = {**os.environ, "KEY": KEY, "PASS": PASS}
    once = await run_cli("--once", "--config", str(config), "--format", "json", env=env)
    results = {r["endpoint"]: r for r in json.loads(once.stdout)["results"]}
    assert results["echo"]["error"] == "condition_failed", once.stdout
    assert len([c for c in results["echo"]["conditions"] if not c["passed"]]) == 4
    assert results["bad"]["error"] == "invalid_response", once.stdout
    assert "***" in once.stdout  # what was quoted is there, without the secret
    assert key_leaks(once.stdout + once.stderr) == set()

    process = await start_daemon(config, env=env)
    log = follow_log(process)
    served: dict[str, str] = {}
    try:
        await until(lambda: log.events("listening"), timeout=20)
        base = f"http://127.0.0.1:{log.port}"
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> str:
                async with session.get(base + path) as response:
                    served[path] = await response.text()
                return served[path]

            async def both_checked() -> bool:
                status = json.loads(await get("/api/v1/status"))
                return "condition_failed" in str(status) and "invalid_response" in str(status)

            deadline = asyncio.get_running_loop().time() + 30
            while not await both_checked():
                assert asyncio.get_running_loop().time() < deadline, served
                await asyncio.sleep(0.05)
            for path in ("/", "/metrics", "/api/v1/results?limit=1000", "/api/v1/alerts"):
                await get(path)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
        await log.closed()
        bad.close()
        await echo_runner.cleanup()
    assert key_leaks("\n".join(map(str, log.entries)) + "\n".join(log.other)) == set()
    for path, text in served.items():
        assert key_leaks(text) == set(), path
    with sqlite3.connect(db) as connection:
        dump = "\n".join(connection.iterdump())
    assert "invalid_response" in dump and key_leaks(dump) == set()


def _needs_secrets(tmp_path, fleet, interval: str = "1h") -> str:
    """A config whose header, push token, channel URL and Apprise URL parts are all ${VAR}s."""
    config = tmp_path / "mine.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"path": str(tmp_path / "hc.db")},
                "regions": {
                    "local": {
                        "endpoints": [
                            {
                                "name": "api",
                                "url": f"{fleet.http}/ok",
                                "headers": {"Authorization": "Bearer ${NC_API_TOKEN}"},
                            },
                            {
                                "name": "backup",
                                "kind": "push",
                                "token": "${NC_PUSH_TOKEN}",
                                "interval": interval,
                            },
                        ]
                    }
                },
                "alerting": {
                    "channels": {  # a test alert to either would reach the fleet
                        "hook": "${NC_HOOK_URL}",
                        "json": f"json://{fleet.http.removeprefix('http://')}/hook/${{NC_HOOK}}",
                    },
                    "routes": {"critical": ["hook", "json"], "warning": ["json"]},
                },
            }
        )
    )
    return str(config)


SET = {
    "NC_API_TOKEN": TOKEN,
    "NC_PUSH_TOKEN": "push-" + PASSWORD,
    "NC_HOOK_URL": f"json://127.0.0.1:{closed_port()}/{TOKEN}",
    "NC_HOOK": PASSWORD,
}


async def test_commands_that_never_use_a_secret_run_without_it_and_the_others_refuse(
    run_cli, fleet, tmp_path
) -> None:
    config = _needs_secrets(tmp_path, fleet)
    recorded = await run_cli("--once", "--record", "--config", config, env=SET)
    assert recorded.code == 1, recorded.stderr  # api healthy; backup not pinged yet: degraded
    fleet.hits.clear()
    assert not set(SET) & set(os.environ)  # from here on, none of them is set

    status = await run_cli("status", "--config", config, "--format", "json")
    assert status.code == 0, status.stderr
    endpoints = json.loads(status.stdout)["regions"]["local"]["endpoints"]
    assert [(e["endpoint"], e["status"]) for e in endpoints] == [
        ("api", "healthy"),
        ("backup", "degraded"),
    ]
    routes = await run_cli(
        "routes", "test", "--region", "local", "--severity", "critical", "--config", config
    )
    assert routes.code == 0, routes.stderr
    assert "channels: hook, json" in routes.stdout
    added = await run_cli(
        "silence", "add", "--region", "local", "--for", "1h", "--reason", "deploy", "-c", config
    )
    assert added.code == 0, added.stderr
    listed = await run_cli("silence", "list", "--config", config)
    assert listed.code == 0 and "deploy" in listed.stdout, listed.stderr

    # These use the values, or (check-config) say what is wrong: each names the first unset one.
    for args in (
        ("check-config", config),
        ("--once", "--config", config),
        ("--once", "--record", "--config", config),
        ("test-alert", "--severity", "critical", "--config", config),
        ("run", "--config", config),
    ):
        done = await run_cli(*args)
        assert done.code == 3, (args, done.stderr)
        # (safe_dump writes `alerting` first)
        first = "alerting.channels.hook: environment variable NC_HOOK_URL is not set"
        assert first in done.stderr, args
    assert fleet.hits == []  # nothing was probed, nothing sent, with a value or without one


async def test_a_key_that_needs_an_unset_variables_value_is_still_refused(
    run_cli, fleet, tmp_path
) -> None:
    config = _needs_secrets(tmp_path, fleet, interval="${NC_INTERVAL}")
    done = await run_cli("status", "--config", config, env=SET)
    assert done.code == 3
    assert (
        "regions.local.endpoints[1].interval: environment variable NC_INTERVAL is not set"
    ) in done.stderr
