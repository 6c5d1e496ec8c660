"""A result sink that raises costs the others nothing: storage, metrics, alerting still get it."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from polling import until
from prometheus_client.parser import text_string_to_metric_families

from healthcheck.config import parse_config
from healthcheck.daemon import Daemon, open_writer
from healthcheck.front import HttpFront
from healthcheck.result import ProbeResult, Status


def broken_sink(result: ProbeResult, status: Status) -> None:
    raise RuntimeError("this sink is broken")


async def test_a_raising_sink_skips_no_other(tmp_path, closed_port, webhook, caplog) -> None:
    await webhook.up()
    config = parse_config(
        json.dumps(
            {
                "defaults": {"interval": "100ms", "timeout": "90ms", "retries": 0},
                "storage": {"path": str(tmp_path / "hc.db")},
                "exporter": {"listen": "127.0.0.1:0"},
                "alerting": {
                    "channels": {"slack": f"json://127.0.0.1:{webhook.port}/slack"},
                    "rules": {"failure_threshold": 3, "error_rate_min_checks": 100_000},
                },
                "regions": {
                    "eu": {
                        "endpoints": [
                            {"name": "db", "kind": "tcp", "address": f"127.0.0.1:{closed_port}"}
                        ]
                    }
                },
            }
        ),
        "test",
        {},
    )
    seen: list[tuple[ProbeResult, Status]] = []
    daemon = Daemon(
        config,
        open_writer(config.storage),
        extra_sinks=[broken_sink, lambda r, s: seen.append((r, s))],
        front=HttpFront,
    )
    stop = asyncio.Event()
    caplog.set_level(logging.ERROR, logger="healthcheck.fanout")
    task = asyncio.create_task(daemon.run(stop))
    try:
        # Alerting comes after the broken sink, and still fires.
        await until(lambda: any("FIRING" in r["body"]["title"] for r in webhook.received))
        await until(lambda: len(seen) >= 5 and daemon.storage.stats.written >= 5)
        host, port = daemon.listening
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{host}:{port}/metrics") as response,
        ):
            body = await response.text()
    finally:
        stop.set()
        await task
    assert all(status is Status.UNHEALTHY for _, status in seen)
    success = {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "healthcheck_probe_success"
    }
    assert success == {(("endpoint", "db"), ("kind", "tcp"), ("region", "eu")): 0.0}
    # Failing on every result, it is logged once (with its traceback), not once per result.
    failures = [r for r in caplog.records if getattr(r, "event", None) == "sink_failed"]
    assert len(failures) == 1
    assert "broken_sink" in failures[0].getMessage()
    assert failures[0].exc_info is not None
