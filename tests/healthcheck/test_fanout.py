"""A result sink that raises costs the others nothing: storage, metrics, alerting still get it."""

from __future__ import annotations

import json
import logging

import aiohttp
from clock import ManualClock
from in_process import Running
from polling import until
from prometheus_client.parser import text_string_to_metric_families

from healthcheck.config import parse_config
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
    caplog.set_level(logging.ERROR, logger="healthcheck.fanout")
    clock = ManualClock()
    running = Running(config, clock, extra_sinks=[broken_sink, lambda r, s: seen.append((r, s))])
    daemon = running.daemon
    try:
        await running.started()
        # Alerting comes after the broken sink, and still fires.
        firing = daemon.evaluator.firing
        await clock.advance_until(lambda: firing()["critical"] and len(seen) >= 5, 0.5, 30)
        await until(lambda: any("FIRING" in r["body"]["title"] for r in webhook.received))
        await until(lambda: daemon.storage.stats.written >= 5)
        host, port = daemon.listening
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{host}:{port}/metrics") as response,
        ):
            body = await response.text()
    finally:
        await running.close()
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
