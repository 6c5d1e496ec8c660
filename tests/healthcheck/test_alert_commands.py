"""`healthcheck test-alert` and `healthcheck silence` as a user runs them, with real receivers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys

import yaml
from aiohttp import web
from clock import ManualClock
from in_process import Running

from healthcheck.config import load_config


async def cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def write(tmp_path, channels: dict, endpoints_url: str = "http://127.0.0.1:1/") -> str:
    path = tmp_path / "regions.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "100ms", "timeout": "90ms", "retries": 0},
                "storage": {"path": str(tmp_path / "hc.db")},
                "exporter": {"listen": "127.0.0.1:0"},
                "alerting": {"channels": channels},
                "regions": {"eu": {"endpoints": [{"name": "api", "url": endpoints_url}]}},
            }
        )
    )
    return str(path)


async def test_test_alert_goes_through_the_route_and_prints_answers(
    webhook, smtp, tmp_path
) -> None:
    await webhook.up()
    port, mailbox = smtp
    config = write(
        tmp_path,
        {
            "slack": f"json://127.0.0.1:{webhook.port}/slack",
            "email": f"mailto://127.0.0.1:{port}?from=hc@example.com&to=ops@example.com&mode=insecure",
        },
    )
    code, out, err = await cli("test-alert", "--config", config, "--severity", "warning")
    assert code == 0, err
    assert "slack: accepted" in out and "email: accepted" in out
    assert webhook.received[0]["body"]["title"] == "[TEST:warning] healthcheck test alert"
    assert "Subject: [TEST:warning] healthcheck test alert" in mailbox.messages[0]


async def test_test_alert_reports_a_channel_that_refuses(tmp_path) -> None:
    config = write(tmp_path, {"slack": "json://127.0.0.1:1/never"})
    code, out, _ = await cli("test-alert", "--config", config, "--severity", "info")
    assert code == 4
    assert "slack: FAILED" in out


async def test_a_cli_silence_holds_back_a_running_daemons_alert(webhook, tmp_path) -> None:
    await webhook.up()

    async def broken(_r: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    config_path = write(
        tmp_path,
        {"slack": f"json://127.0.0.1:{webhook.port}/slack"},
        f"http://127.0.0.1:{runner.addresses[0][1]}/",
    )
    code, out, err = await cli(
        "silence",
        "add",
        "--config",
        config_path,
        "--region",
        "eu",
        "--for",
        "1h",
        "--reason",
        "planned work",
    )
    assert code == 0, err
    assert "silence 1 added" in out
    code, out, _ = await cli("silence", "list", "--config", config_path, "--format", "json")
    listed = json.loads(out)
    assert [(s["id"], s["region"], s["active"], s["reason"]) for s in listed] == [
        (1, "eu", True, "planned work")
    ]

    clock = ManualClock()  # after the silence was added: the daemon's clock reads later
    running = Running(load_config(config_path), clock)
    try:
        await running.started()
        evaluator = running.daemon.evaluator
        await clock.advance_until(lambda: evaluator.firing()["critical"] >= 1, step=0.5, within=30)
        await clock.advance(3.0)  # three evaluations pass: the silence holds it back
        assert webhook.received == []
    finally:
        await running.close()
        await runner.cleanup()
    with sqlite3.connect(tmp_path / "hc.db") as db:
        history = db.execute("SELECT rule, target, to_state FROM alert_history").fetchall()
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)  # none to send
    assert ("endpoint_down", "eu/api", "firing") in history  # recorded, not sent
    code, out, _ = await cli("silence", "remove", "--config", config_path, "1")
    assert code == 0 and "silence 1 removed" in out
    code, _, err = await cli("silence", "remove", "--config", config_path, "1")
    assert code == 3 and "no stored silence #1" in err
