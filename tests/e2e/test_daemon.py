"""`healthcheck run` as a real subprocess: logs state changes once, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal

import yaml

TOKEN = "tok-secret-0123456789"


async def read_json_lines(stream: asyncio.StreamReader, into: list[dict], until) -> None:
    while not until(into):
        line = await stream.readline()
        if not line:
            return
        into.append(json.loads(line))


async def test_daemon_logs_changes_once_and_stops_on_sigterm(
    start_daemon, fleet, tmp_path, closed_port
) -> None:
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # A timeout a busy one-core machine cannot hit by accident: a 150 ms one once
                # logged "up" as unhealthy first. "down" is refused at once regardless.
                "defaults": {
                    "interval": "1s",
                    "timeout": "1s",
                    "retries": 0,
                    "latency": {"warning": "900ms", "critical": "1s"},
                },
                "exporter": {"listen": "127.0.0.1:0"},
                "storage": {"path": str(tmp_path / "healthcheck.db")},
                "regions": {
                    "r": {
                        "endpoints": [
                            {
                                "name": "up",
                                "url": f"{fleet.http}/ok",
                                "headers": {"X-Token": "${TOKEN}"},
                            },
                            {
                                "name": "down",
                                "url": f"http://127.0.0.1:{closed_port}/?t=${{TOKEN}}",
                            },
                        ]
                    }
                },
            }
        )
    )
    process = await start_daemon(config, env={"TOKEN": TOKEN, "PATH": "/usr/bin:/bin"})
    events: list[dict] = []
    try:

        def both_seen(lines: list[dict]) -> bool:
            return {e.get("endpoint") for e in lines if e.get("event") == "status_change"} >= {
                "up",
                "down",
            }

        await asyncio.wait_for(read_json_lines(process.stderr, events, both_seen), 10)
        # Let several more rounds run: they must not log anything new at INFO.
        deadline = asyncio.get_running_loop().time() + 20
        while fleet.hits.count("/ok") < 4:
            assert asyncio.get_running_loop().time() < deadline, "the daemon stopped checking"
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 10)
        rest = await process.stderr.read()
    finally:
        if process.returncode is None:
            process.kill()
    events += [json.loads(line) for line in rest.decode().splitlines()]
    assert code == 0
    changes = [e for e in events if e.get("event") == "status_change"]
    assert sorted((e["endpoint"], e["previous"], e["status"]) for e in changes) == [
        ("down", "unknown", "unhealthy"),
        ("up", "unknown", "healthy"),
    ]
    down = next(e for e in changes if e["endpoint"] == "down")
    assert down["error"] == "connection_refused" and down["region"] == "r"
    assert {"started", "stopping", "stopped"} <= {e.get("event") for e in events}
    assert all({"ts", "level", "msg"} <= set(e) for e in events)
    assert TOKEN not in json.dumps(events)
