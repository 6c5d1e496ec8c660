"""A probe kind is a whole plug-in: `kind: echo`, defined under tests/ and registered only by
a `healthcheck.probe_kinds` entry point, gets its config keys validated with key paths, its
placeholder in conditions, its metric families in /metrics and its alert rule fired, through
the real CLI and daemon, with no edit in the core."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from polling import until
from prometheus_client.parser import text_string_to_metric_families

KINDS = Path(__file__).resolve().parents[1] / "healthcheck" / "probes" / "kinds"


@pytest.fixture
def plugin_env(tmp_path) -> dict[str, str]:
    """The environment of a host where a distribution offering the echo kind is installed."""
    site = tmp_path / "site"
    info = site / "healthcheck_echo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: healthcheck-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[healthcheck.probe_kinds]\necho = echo_kind:EchoProbe\n"
    )
    path = os.pathsep.join(p for p in (str(KINDS), str(site), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_COLOR": "1"}


async def _serve(answer) -> AsyncIterator[str]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(answer(line))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    """A faithful echo server's host:port."""
    async for address in _serve(lambda line: line):
        yield address


@pytest.fixture
async def garbling_server() -> AsyncIterator[str]:
    """An echo server that answers in capitals."""
    async for address in _serve(lambda line: line.upper()):
        yield address


def write(tmp_path: Path, endpoints: list[dict], **top) -> Path:
    path = tmp_path / "regions.yaml"
    document = {
        "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
        **top,
        "regions": {"r": {"endpoints": endpoints}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ({"lines": 0}, "regions.r.endpoints[0].lines: must be at least 1, got 0"),
        ({"lines": "many"}, "regions.r.endpoints[0].lines: "),
        ({"message": "a\nb"}, "regions.r.endpoints[0].message: expected one line of text"),
        (
            {"mesage": "hi"},
            "regions.r.endpoints[0].mesage: unknown key 'mesage' for an echo endpoint; "
            "did you mean 'message'?",
        ),
        (
            {"conditions": ["[ECHO] == hi", "[ECH] == hi"]},
            "regions.r.endpoints[0].conditions[1]: unknown placeholder [ECH]; did you mean [ECHO]?",
        ),
        (
            {"conditions": ["[STATUS] == 200"]},
            "regions.r.endpoints[0].conditions[0]: [STATUS] is not available for echo endpoints "
            "(they offer [CONNECTED], [ECHO], [RESPONSE_TIME])",
        ),
        ({"address": None}, "regions.r.endpoints[0].address: "),
    ],
)
async def test_its_config_keys_are_checked_with_key_paths(
    run_cli, plugin_env, tmp_path, endpoint, message
) -> None:
    written = {"name": "e", "kind": "echo", "address": "127.0.0.1:9", **endpoint}
    config = write(tmp_path, [{k: v for k, v in written.items() if v is not None}])
    done = await run_cli("check-config", "--config", str(config), env=plugin_env)
    assert done.code == 3
    assert message in done.stderr


async def test_its_placeholder_is_for_it_alone(run_cli, plugin_env, tmp_path) -> None:
    config = write(
        tmp_path, [{"name": "web", "url": "http://a.example/", "conditions": ["[ECHO] == x"]}]
    )
    done = await run_cli("check-config", "--config", str(config), env=plugin_env)
    assert done.code == 3
    assert "regions.r.endpoints[0].conditions[0]: unknown placeholder [ECHO]" in done.stderr


async def test_without_its_registration_the_kind_is_unknown(run_cli, tmp_path) -> None:
    config = write(tmp_path, [{"name": "e", "kind": "echo", "address": "127.0.0.1:9"}])
    done = await run_cli("check-config", "--config", str(config))
    assert done.code == 3
    assert "regions.r.endpoints[0].kind: unknown kind 'echo'" in done.stderr


async def test_once_checks_it_and_judges_its_placeholder(
    run_cli, plugin_env, tmp_path, echo_server, garbling_server
) -> None:
    config = write(
        tmp_path,
        [
            {"name": "good", "kind": "echo", "address": echo_server, "message": "hi"},
            {
                "name": "asked",
                "kind": "echo",
                "address": echo_server,
                "lines": 3,
                "conditions": ["[ECHO] == hi", "[CONNECTED] == true"],
            },
            {
                "name": "wrong",
                "kind": "echo",
                "address": echo_server,
                "conditions": ["[ECHO] == pong"],
            },
            {"name": "garbled", "kind": "echo", "address": garbling_server, "message": "hi"},
        ],
        # its keys are defaults too, once an entry point offers the kind
        defaults={"interval": "10s", "timeout": "5s", "retries": 0, "message": "hi"},
    )
    done = await run_cli("--once", "--format", "json", "--config", str(config), env=plugin_env)
    assert done.code == 2, done.stderr
    results = {r["endpoint"]: r for r in json.loads(done.stdout)["results"]}
    assert {name: (r["kind"], r["status"], r["error"]) for name, r in results.items()} == {
        "good": ("echo", "healthy", None),
        "asked": ("echo", "healthy", None),
        "wrong": ("echo", "unhealthy", "condition_failed"),
        "garbled": ("echo", "unhealthy", "invalid_response"),
    }
    assert [c["passed"] for c in results["asked"]["conditions"]] == [True, True]
    assert results["wrong"]["conditions"][0]["passed"] is False


async def test_the_daemon_exports_its_families_and_fires_its_rule(
    start_daemon, follow_log, plugin_env, tmp_path, echo_server, garbling_server, webhook
) -> None:
    await webhook.up()
    config = write(
        tmp_path,
        [
            {"name": "good", "kind": "echo", "address": echo_server, "message": "hello"},
            {"name": "garbled", "kind": "echo", "address": garbling_server, "message": "hi"},
        ],
        storage={"path": str(tmp_path / "hc.db")},
        exporter={"listen": "127.0.0.1:0"},
        alerting={
            "channels": {"slack": f"json://127.0.0.1:{webhook.port}/slack"},
            "rules": {"failure_threshold": 1000, "error_rate_min_checks": 100_000},
        },
    )
    process = await start_daemon(config, env=plugin_env)
    log = follow_log(process)
    try:
        await until(lambda: log.events("listening"))
        base = f"http://127.0.0.1:{log.port}"
        async with aiohttp.ClientSession() as session:

            async def firing() -> list[tuple[str, str, str]]:
                async with session.get(f"{base}/api/v1/alerts?state=firing") as response:
                    if response.status != 200:  # storage not open yet
                        return []
                    alerts = (await response.json())["alerts"]
                return [(a["rule"], a["target"], a["severity"]) for a in alerts]

            deadline = asyncio.get_running_loop().time() + 20
            while not (found := await firing()):
                assert asyncio.get_running_loop().time() < deadline, "the rule never fired"
                await asyncio.sleep(0.1)
            assert found == [("echo_garbled", "r/garbled", "warning")]
            await until(lambda: webhook.received)
            assert "echo_garbled" in webhook.received[0]["body"]["title"]

            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, endpoint: str, **labels: str) -> float:
        key = {"region": "r", "endpoint": endpoint, "kind": "echo", **labels}
        return samples[name, tuple(sorted(key.items()))]

    assert value("healthcheck_echo_answer_bytes", "good") == len("hello")
    assert value("healthcheck_echo_answer_bytes", "garbled") == len("HI")
    assert value("healthcheck_echo_round_trip_seconds_count", "good") >= 1
    assert value("healthcheck_check_errors_total", "garbled", error="invalid_response") >= 1
    # every class the kind declares is there from the start
    assert value("healthcheck_check_errors_total", "good", error="invalid_response") == 0
    assert log.other == []
