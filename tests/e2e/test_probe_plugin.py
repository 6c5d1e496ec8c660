"""A probe kind is a whole plug-in: `kind: echo`, defined under tests/ and registered only by
a `healthcheck.probe_kinds` entry point, gets its config keys validated with key paths, its
placeholder in conditions, its own error class (`garbled`) in results, /metrics, storage and
the API, its metric families in /metrics and its alert rule fired, through the real CLI and
daemon, with no edit in the core."""

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


def offering(tmp_path: Path, kinds: str) -> dict[str, str]:
    """The environment of a host where a distribution offering these kinds is installed
    (`kinds`: the lines of its entry point group)."""
    site = tmp_path / "site"
    info = site / "healthcheck_echo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: healthcheck-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[healthcheck.probe_kinds]\n{kinds}")
    path = os.pathsep.join(p for p in (str(KINDS), str(site), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "NO_COLOR": "1"}


@pytest.fixture
def plugin_env(tmp_path) -> dict[str, str]:
    """The environment of a host where a distribution offering the echo kind is installed."""
    return offering(tmp_path, "echo = echo_kind:EchoProbe\n")


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
        "garbled": ("echo", "unhealthy", "garbled"),  # the kind's own class
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
        # probe worker processes: the kind's class crosses from them to the daemon by name
        scheduler={"workers": 2},
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
            # stored and served by the API under the kind's own class
            query = "endpoint=r/garbled&limit=3"
            async with session.get(f"{base}/api/v1/results?{query}") as response:
                stored = (await response.json())["results"]
            assert stored and {r["error"] for r in stored} == {"garbled"}, stored
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
    assert value("healthcheck_check_errors_total", "garbled", error="garbled") >= 1
    # every class the kind declares is there from the start, its own too
    assert value("healthcheck_check_errors_total", "good", error="garbled") == 0
    assert value("healthcheck_check_errors_total", "good", error="timeout") == 0
    assert log.other == []


async def test_its_stored_class_reads_back_where_the_kind_is_not_installed(
    start_daemon, follow_log, run_cli, plugin_env, tmp_path, garbling_server
) -> None:
    """`healthcheck status` on a host without the plug-in (its endpoint now a tcp one) reads
    the rows the echo kind stored: the class it never declared is shown by its name."""
    database = tmp_path / "hc.db"
    config = write(
        tmp_path,
        [{"name": "garbled", "kind": "echo", "address": garbling_server, "message": "hi"}],
        storage={"path": str(database)},
    )
    process = await start_daemon(config, env=plugin_env)
    log = follow_log(process)
    try:
        await until(lambda: log.events("listening"))

        async def stored() -> bool:
            done = await run_cli(
                "status", "--format", "json", "--config", str(config), env=plugin_env
            )
            endpoint = json.loads(done.stdout)["regions"]["r"]["endpoints"][0]
            return endpoint["last_error"] is not None

        deadline = asyncio.get_running_loop().time() + 20
        while not await stored():
            assert asyncio.get_running_loop().time() < deadline, "no failure was stored"
            await asyncio.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plain = write(
        elsewhere,
        [{"name": "garbled", "kind": "tcp", "address": garbling_server}],
        storage={"path": str(database)},
    )
    done = await run_cli("status", "--format", "json", "--config", str(plain))
    assert done.code == 0, done.stderr
    endpoint = json.loads(done.stdout)["regions"]["r"]["endpoints"][0]
    assert endpoint["last_error"]["error"] == "garbled"
    assert "sent 'hi', got 'HI'" in endpoint["last_error"]["detail"]


async def test_a_class_declared_twice_with_two_meanings_is_refused(
    run_cli, tmp_path, echo_server
) -> None:
    both = offering(tmp_path, "echo = echo_kind:EchoProbe\nclash = clash_kind:ClashProbe\n")
    config = write(
        tmp_path,
        [
            {"name": "e", "kind": "echo", "address": echo_server},
            {"name": "c", "kind": "clash", "address": echo_server},
        ],
    )
    done = await run_cli("check-config", "--config", str(config), env=both)
    assert done.code == 3, done.stderr
    assert (
        "regions.r.endpoints[1].kind: kind 'clash' (clash_kind:ClashProbe): error class "
        "'garbled' of clash means 'the answer was not valid UTF-8', but echo already declared "
        "it as 'the echo server answered other text than was sent'"
    ) in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_class_nobody_declared_is_refused(run_cli, tmp_path) -> None:
    loose = offering(tmp_path, "loose = loose_kind:LooseProbe\n")
    config = write(tmp_path, [{"name": "l", "kind": "loose", "address": "127.0.0.1:9"}])
    done = await run_cli("check-config", "--config", str(config), env=loose)
    assert done.code == 3, done.stderr
    assert (
        "regions.r.endpoints[0].kind: kind 'loose' (loose_kind:LooseProbe) lists error classes "
        "nobody declared: ErrorClass('half_open')"
    ) in done.stderr
