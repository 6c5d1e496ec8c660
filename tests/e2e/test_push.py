"""`kind: push` through the real daemon and CLI: pings keep an endpoint healthy, a missed one is
`no_heartbeat`, `status=down` is `reported_down` with the job's message; the push path is open
without the exporter's auth, refuses unknown tokens with a bare 404 and floods with 429; `--once`
judges the stored ping; the token appears in no log line, API answer, metric or output."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest
import yaml
from live_daemon import LiveDaemon, live_daemon
from polling import until
from prometheus_client.parser import text_string_to_metric_families

from healthcheck.probes import heartbeats
from storage.schema import connect

TOKEN = "job-token-5f0c2a9e41d7b3c8"
OTHER = "other-token-77aa01b2c3d4e5f6"
NEW = "rotated-token-0d9e8f7a6b5c4d3e"
API_TOKEN = "exporter-api-token-1234"
ENV = {
    "BACKUP_PUSH_TOKEN": TOKEN,
    "OTHER_PUSH_TOKEN": OTHER,
    "NEW_PUSH_TOKEN": NEW,
    "HC_TOKEN": API_TOKEN,
}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def document(tmp_path, interval: str = "6s", grace: str = "3s") -> dict:
    return {
        "defaults": {"interval": interval, "timeout": "1s", "retries": 0},
        "regions": {
            "jobs": {
                "endpoints": [
                    {
                        "name": "backup",
                        "kind": "push",
                        "token": "${BACKUP_PUSH_TOKEN}",
                        "grace": grace,
                    },
                    {
                        "name": "report",
                        "kind": "push",
                        "token": "${OTHER_PUSH_TOKEN}",
                        "interval": "1h",
                        "grace": "5s",  # looked at every 5 s
                    },
                ]
            }
        },
        "exporter": {"listen": "127.0.0.1:0", "auth": {"bearer_token": "${HC_TOKEN}"}},
        "storage": {"path": str(tmp_path / "hc.db")},
        # Checks in probe worker processes: each reads the pings the daemon's server stored.
        "scheduler": {"workers": 2},
    }


async def last_check(session: aiohttp.ClientSession, daemon: LiveDaemon, name: str) -> float:
    async with session.get(f"{daemon.url}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "healthcheck_probe_last_check_timestamp_seconds"
                and sample.labels["endpoint"] == name
            ):
                return sample.value
    return 0.0


async def endpoint(session: aiohttp.ClientSession, daemon: LiveDaemon, name: str) -> dict:
    async with session.get(f"{daemon.url}/api/v1/status", headers=AUTH) as response:
        assert response.status == 200
        body = await response.json()
    return next(e for e in body["regions"][0]["endpoints"] if e["endpoint"] == name)


async def checked_after(
    session: aiohttp.ClientSession, daemon: LiveDaemon, name: str, moment: float
) -> dict:
    """The endpoint as its first check after `moment` (wall clock) left it."""
    deadline = time.monotonic() + 60
    while await last_check(session, daemon, name) <= moment:
        assert time.monotonic() < deadline, f"no check of {name} after {moment}"
        await asyncio.sleep(0.1)
    return await endpoint(session, daemon, name)


async def push(session: aiohttp.ClientSession, daemon: LiveDaemon, token: str, **query) -> int:
    async with session.get(f"{daemon.url}/api/v1/push/{token}", params=query) as response:
        await response.read()
        return response.status


async def test_pings_keep_it_healthy_and_a_missed_one_is_no_heartbeat(tmp_path) -> None:
    async with (
        live_daemon(tmp_path, document(tmp_path), ENV) as daemon,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(3):
            assert await push(session, daemon, TOKEN, latency_ms="42") == 200  # no auth needed
            pinged = time.time()  # stored before the answer: a check begun after it reads it
            seen = await checked_after(session, daemon, "backup", pinged)
            assert (seen["status"], seen["error"]) == ("healthy", None)
            assert seen["latency_ms"] == 42.0

        # No more pings: after interval + grace (9 s) the job is overdue.
        deadline = time.monotonic() + 60
        while (seen := await endpoint(session, daemon, "backup"))["error"] != "no_heartbeat":
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.2)
        assert seen["status"] == "unhealthy"
        assert "last ping" in seen["error_detail"] and "expected every 6s" in seen["error_detail"]

        query = {"status": "down", "msg": "disk full on /backup"}
        assert await push(session, daemon, TOKEN, **query) == 200
        pinged = time.time()
        seen = await checked_after(session, daemon, "backup", pinged)
        assert (seen["status"], seen["error"]) == ("unhealthy", "reported_down")
        assert seen["error_detail"].endswith(": disk full on /backup")

        assert await push(session, daemon, TOKEN, status="up") == 200
        pinged = time.time()
        seen = await checked_after(session, daemon, "backup", pinged)
        assert (seen["status"], seen["error"]) == ("healthy", None)

        # The other endpoint, never pinged, waits for its first ping (interval 1h + grace 5s).
        report = await checked_after(session, daemon, "report", 0.0)
        assert report["status"] == "degraded" and report["error_detail"].startswith("no ping yet")

        outputs = [json.dumps(await endpoint(session, daemon, "backup"))]
        for path in ("/metrics", "/api/v1/results?limit=1000", "/api/v1/self", "/"):
            async with session.get(daemon.url + path, headers=AUTH) as response:
                outputs.append(await response.text())
    outputs.extend(daemon.log)
    for output in outputs:
        assert TOKEN not in output and OTHER not in output


async def test_the_detail_view_shows_the_grace_that_applies(tmp_path) -> None:
    config = document(tmp_path, interval="10m")
    del config["regions"]["jobs"]["endpoints"][0]["grace"]  # the default: 10% of 10m
    async with (
        live_daemon(tmp_path, config, ENV) as daemon,
        aiohttp.ClientSession() as session,
    ):
        shown = {}
        for name in ("backup", "report"):
            url = f"{daemon.url}/api/v1/endpoints/jobs/{name}"
            async with session.get(url, headers=AUTH) as response:
                assert response.status == 200
                shown[name] = (await response.json())["check"]["settings"]
    assert shown["backup"] == {"token": "***", "grace": 60.0}
    assert shown["report"]["grace"] == 5.0  # set: shown as set


async def test_unknown_tokens_bad_queries_and_floods(tmp_path) -> None:
    async with (
        live_daemon(tmp_path, document(tmp_path, interval="1h", grace="1m"), ENV) as daemon,
        aiohttp.ClientSession() as session,
    ):
        answers = []
        for token in ("nope", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "a" * 400):
            async with session.post(f"{daemon.url}/api/v1/push/{token}") as response:
                answers.append((response.status, await response.text()))
        assert answers == [(404, "not found\n")] * 5

        async with session.get(
            f"{daemon.url}/api/v1/push/{TOKEN}", params={"status": "sideways"}
        ) as response:
            assert response.status == 400
            assert "status must be up or down" in (await response.json())["error"]
        async with session.get(f"{daemon.url}/api/v1/push/{TOKEN}", params={"x": "1"}) as response:
            assert response.status == 400
        async with session.put(f"{daemon.url}/api/v1/push/{TOKEN}") as response:
            assert response.status == 405

        statuses = [await push(session, daemon, TOKEN) for _ in range(20)]
        assert statuses[:12] == [200] * 12  # 12 a minute
        assert statuses[12:] == [429] * 8
        async with session.get(f"{daemon.url}/api/v1/push/{TOKEN}") as response:
            assert response.status == 429 and int(response.headers["Retry-After"]) > 0
        # The limit is per token: the other job still gets through.
        assert await push(session, daemon, OTHER, status="up") == 200
    for line in daemon.log:
        assert TOKEN not in line


async def test_a_reload_that_swaps_a_token_refuses_the_old_one_at_once(tmp_path) -> None:
    config = document(tmp_path)  # backup looked at every 3 s
    async with (
        live_daemon(tmp_path, config, ENV) as daemon,
        aiohttp.ClientSession() as session,
    ):
        assert await push(session, daemon, TOKEN, msg="before") == 200
        assert await push(session, daemon, NEW) == 404

        config["regions"]["jobs"]["endpoints"][0]["token"] = "${NEW_PUSH_TOKEN}"
        (tmp_path / "regions.yaml").write_text(yaml.safe_dump(config))
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        await until(lambda: any("config_reloaded" in line for line in daemon.log), 60)

        assert await push(session, daemon, TOKEN) == 404  # the first request after it
        assert await push(session, daemon, NEW, status="down", msg="rotated") == 200
        pinged = time.time()
        assert await push(session, daemon, OTHER) == 200  # the unchanged one still pings
        seen = await checked_after(session, daemon, "backup", pinged)
        assert (seen["status"], seen["error"]) == ("unhealthy", "reported_down")
        assert seen["error_detail"].endswith(": rotated")
    for line in daemon.log:
        assert TOKEN not in line and NEW not in line and OTHER not in line


@pytest.mark.parametrize(
    ("age", "ok", "status", "error", "code"),
    [
        (60, True, "healthy", None, 0),
        (60, False, "unhealthy", "reported_down", 2),
        (2 * 3600, True, "unhealthy", "no_heartbeat", 2),
    ],
)
async def test_once_judges_the_stored_ping(run_cli, tmp_path, age, ok, status, error, code) -> None:
    config = tmp_path / "regions.yaml"
    document_ = document(tmp_path, interval="1h", grace="5m")
    document_["regions"]["jobs"]["endpoints"].pop()  # only the backup job
    config.write_text(json.dumps(document_))
    connect(str(tmp_path / "hc.db")).conn.close()  # the database, as the daemon makes it
    ping = heartbeats.Ping(time.time() - age, ok, None if ok else "tape jammed", 12.5)
    heartbeats.record(str(tmp_path / "hc.db"), "jobs", "backup", ping)
    done = await run_cli("--once", "--config", str(config), "--format", "json", env=ENV)
    assert done.code == code, done.stderr
    result = json.loads(done.stdout)["results"][0]
    assert (result["kind"], result["status"], result["error"]) == ("push", status, error)
    if not ok:
        assert result["error_detail"].endswith(": tape jammed")
    assert TOKEN not in done.stdout + done.stderr
