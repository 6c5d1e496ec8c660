"""A channel that no route names receives nothing: check-config, the daemon's log and /readyz
say so, through the real CLI and a daemon subprocess."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import pytest
import yaml
from polling import until

UNROUTED = "alerting.channels.am: no route uses this channel"


def write_config(tmp_path, fleet, routes: dict | None) -> str:
    alerting: dict = {"channels": {"am": {"url": "http://127.0.0.1:1", "kind": "alertmanager"}}}
    if routes is not None:
        alerting["routes"] = routes
    document = {
        "defaults": {"interval": "1s", "timeout": "500ms"},
        "storage": {"path": str(tmp_path / "hc.db")},
        "exporter": {"listen": "127.0.0.1:0"},
        "alerting": alerting,
        "regions": {"r": {"endpoints": [{"name": "a", "url": f"{fleet.http}/ok"}]}},
    }
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.parametrize(
    ("routes", "warned"),
    [(None, True), ({"critical": ["am"]}, False)],
    ids=["default-routes", "routed"],
)
async def test_check_config_warns_about_a_channel_no_route_uses(
    run_cli, fleet, tmp_path, routes, warned
) -> None:
    config = write_config(tmp_path, fleet, routes)
    done = await run_cli("check-config", "--config", config)
    assert done.code == 0  # valid: only surely not what was meant
    assert (f"warning: {UNROUTED}" in done.stderr) is warned, done.stderr
    done = await run_cli("check-config", "--config", config, "--format", "json")
    warnings = json.loads(done.stdout)["warnings"]
    assert [w.startswith(UNROUTED) for w in warnings] == ([True] if warned else [])


async def test_the_daemon_logs_it_at_start_and_readyz_lists_it(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    process = await start_daemon(write_config(tmp_path, fleet, None))
    log = follow_log(process)
    try:
        await until(lambda: log.events("channel_unrouted") and log.events("listening"))
        [entry] = log.events("channel_unrouted")
        assert entry["level"] == "warning" and entry["msg"].startswith(UNROUTED)
        url = f"http://127.0.0.1:{log.port}/readyz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 503
            reasons = (await response.json())["reasons"]
        assert any(reason.startswith(UNROUTED) for reason in reasons), reasons
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
