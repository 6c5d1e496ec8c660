"""The grpc, websocket and udp kinds through the real CLI: `--once` against real servers of each
kind on loopback, and `check-config` refusing their bad keys by key path."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
from pathlib import Path

import aiohttp
import grpc
import pytest
import yaml
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from polling import until
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "wsTok-P4s8Kq2Zx"


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


async def _greet(request: web.Request) -> web.WebSocketResponse:
    socket_ = web.WebSocketResponse()
    await socket_.prepare(request)
    await socket_.send_json({"status": "UP"})
    await socket_.receive()
    return socket_


async def _echo(request: web.Request) -> web.WebSocketResponse:
    socket_ = web.WebSocketResponse()
    await socket_.prepare(request)
    async for message in socket_:
        await socket_.send_str(f"echo:{message.data}")
    return socket_


@pytest.fixture
async def servers(ca, tmp_path):
    """A gRPC health server (plaintext and TLS), a WebSocket server and a UDP echo server."""
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set("shop.Pay", health_pb2.HealthCheckResponse.NOT_SERVING)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    plain = server.add_insecure_port("127.0.0.1:0")
    cert = ca.issue_cert("127.0.0.1")
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    secure = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), chain)])
    )
    await server.start()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))  # found next to the config file

    app = web.Application()
    app.router.add_get("/greet", _greet)
    app.router.add_get("/echo", _echo)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()

    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        closed_udp = held.getsockname()[1]
    try:
        yield {
            "grpc": f"127.0.0.1:{plain}",
            "grpcs": f"127.0.0.1:{secure}",
            "ws": f"ws://127.0.0.1:{runner.addresses[0][1]}",
            "udp": f"127.0.0.1:{udp.get_extra_info('sockname')[1]}",
            "udp_closed": f"127.0.0.1:{closed_udp}",
        }
    finally:
        udp.close()
        await runner.cleanup()
        await server.stop(None)


def write(tmp_path: Path, endpoints: list[dict], **top) -> Path:
    path = tmp_path / "regions.yaml"
    document = {
        # generous: a busy machine must not turn an answer into a timeout or a latency verdict
        "defaults": {"interval": "10s", "timeout": "5s", "retries": 0},
        **top,
        "regions": {"r": {"endpoints": endpoints}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def endpoints(servers: dict[str, str]) -> list[dict]:
    return [
        {"name": "grpc-up", "kind": "grpc", "address": servers["grpc"]},
        {
            "name": "grpc-tls",
            "kind": "grpc",
            "address": servers["grpcs"],
            "tls": {"ca_file": "ca.pem"},
            "conditions": ["[GRPC_STATUS] == SERVING"],
        },
        {"name": "grpc-pay", "kind": "grpc", "address": servers["grpc"], "service": "shop.Pay"},
        {"name": "grpc-gone", "kind": "grpc", "address": servers["grpc"], "service": "shop.Gone"},
        {
            "name": "ws-up",
            "kind": "websocket",
            "url": f"{servers['ws']}/greet",
            "conditions": ["[BODY].status == UP"],
        },
        {
            "name": "ws-token",
            "kind": "websocket",
            "url": f"{servers['ws']}/echo",
            "send": "${WS_TOKEN}",
            "headers": {"X-Api-Key": "${WS_TOKEN}"},
            "conditions": ["[BODY] == echo:something-else"],
        },
        {"name": "udp-up", "kind": "udp", "address": servers["udp"], "send": "ping"},
        {
            "name": "udp-hex",
            "kind": "udp",
            "address": servers["udp"],
            "send": "hex:50 4f 4e 47",
            "expect": "^PONG$",
        },
        {"name": "udp-closed", "kind": "udp", "address": servers["udp_closed"], "send": "ping"},
    ]


async def test_once_checks_each_kind_against_its_server(run_cli, servers, tmp_path) -> None:
    config = write(tmp_path, endpoints(servers))

    done = await run_cli(
        "--once", "--format", "json", "--config", str(config), env={"WS_TOKEN": TOKEN}
    )

    assert done.code == 2, done.stderr
    results = {r["endpoint"]: r for r in json.loads(done.stdout)["results"]}
    assert {name: (r["kind"], r["status"], r["error"]) for name, r in results.items()} == {
        "grpc-up": ("grpc", "healthy", None),
        "grpc-tls": ("grpc", "healthy", None),
        "grpc-pay": ("grpc", "unhealthy", "not_ready"),
        "grpc-gone": ("grpc", "unhealthy", "service_unknown"),
        "ws-up": ("websocket", "healthy", None),
        "ws-token": ("websocket", "unhealthy", "condition_failed"),
        "udp-up": ("udp", "healthy", None),
        "udp-hex": ("udp", "healthy", None),
        "udp-closed": ("udp", "unhealthy", "connection_refused"),
    }
    assert results["grpc-pay"]["error_detail"] == "service 'shop.Pay' is NOT_SERVING"
    assert results["grpc-tls"]["details"]["grpc_status"] == "SERVING"
    assert results["ws-token"]["conditions"][0]["passed"] is False
    # the token went out (the server echoed it back into a failing condition's detail) ...
    assert "echo:" in results["ws-token"]["conditions"][0]["detail"]
    # ... and comes back in no output
    assert TOKEN not in done.stdout and TOKEN not in done.stderr
    assert "PONG" not in done.stderr

    table = await run_cli("--once", "--config", str(config), env={"WS_TOKEN": TOKEN})
    assert table.code == 2
    assert "service_unknown" in table.stdout and TOKEN not in table.stdout


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        (
            {"kind": "grpc", "address": "127.0.0.1:9", "tls": {"verify": False}},
            "regions.r.endpoints[0].tls.verify: grpc endpoints always verify",
        ),
        ({"kind": "grpc", "address": "nowhere"}, "regions.r.endpoints[0].address: expected"),
        (
            {"kind": "grpc", "address": "127.0.0.1:9", "tls": {"ca_file": "none.pem"}},
            "regions.r.endpoints[0].tls.ca_file: no such file",
        ),
        (
            {"kind": "grpc", "address": "127.0.0.1:9", "service": "a b"},
            "regions.r.endpoints[0].service: expected a service name",
        ),
        (
            {"kind": "websocket", "url": "http://127.0.0.1:9/"},
            "regions.r.endpoints[0].url: not a valid URL: it must start with ws:// or wss://",
        ),
        (
            {"kind": "websocket", "url": "ws://127.0.0.1:9/", "sned": "hi"},
            "regions.r.endpoints[0].sned: unknown key 'sned' for a websocket endpoint; "
            "did you mean 'send'?",
        ),
        (
            {"kind": "udp", "address": "127.0.0.1:9", "send": "hex:zz"},
            "regions.r.endpoints[0].send: expected hex digits after 'hex:', got 'zz'",
        ),
        (
            {"kind": "udp", "address": "127.0.0.1:9", "send": "x", "expect": "("},
            "regions.r.endpoints[0].expect: not a valid regular expression",
        ),
        (
            {"kind": "udp", "address": "127.0.0.1:9"},
            "regions.r.endpoints[0].send: missing: a udp endpoint needs 'send'",
        ),
        (
            {
                "kind": "udp",
                "address": "127.0.0.1:9",
                "send": "x",
                "conditions": ["[GRPC_STATUS] == SERVING"],
            },
            "regions.r.endpoints[0].conditions[0]: unknown placeholder [GRPC_STATUS]",
        ),
    ],
)
async def test_check_config_names_the_key_path(run_cli, tmp_path, endpoint, message) -> None:
    config = write(tmp_path, [{"name": "e", **endpoint}])

    done = await run_cli("check-config", "--config", str(config))

    assert done.code == 3
    assert message in done.stderr, done.stderr


async def test_the_daemon_counts_stores_and_serves_them(
    start_daemon, follow_log, servers, tmp_path
) -> None:
    config = write(
        tmp_path,
        endpoints(servers),
        storage={"path": str(tmp_path / "hc.db")},
        exporter={"listen": "127.0.0.1:0"},
    )
    process = await start_daemon(config, env={**os.environ, "WS_TOKEN": TOKEN})
    log = follow_log(process)
    try:
        await until(lambda: log.events("listening"))
        base = f"http://127.0.0.1:{log.port}"
        async with aiohttp.ClientSession() as session:

            async def checked() -> dict:
                async with session.get(f"{base}/api/v1/status") as response:
                    if response.status != 200:
                        return {}
                    listed = (await response.json())["regions"][0]["endpoints"]
                return {e["endpoint"]: e for e in listed if e["last_check"]}

            deadline = asyncio.get_running_loop().time() + 30
            while len(found := await checked()) < 9:
                assert asyncio.get_running_loop().time() < deadline, found
                await asyncio.sleep(0.1)

            async def stored() -> list:
                query = "endpoint=r/grpc-gone&limit=5"
                async with session.get(f"{base}/api/v1/results?{query}") as response:
                    return (await response.json())["results"] if response.status == 200 else []

            while not (rows := await stored()):
                assert asyncio.get_running_loop().time() < deadline, "no stored row"
                await asyncio.sleep(0.1)
            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
    assert rows[0]["error"] == "service_unknown"
    assert (found["grpc-gone"]["kind"], found["grpc-gone"]["error"]) == ("grpc", "service_unknown")
    assert found["udp-hex"]["status"] == "healthy"
    assert found["grpc-gone"]["status"] == "unhealthy"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def errors(endpoint: str, kind: str, error: str) -> float:
        labels = {"region": "r", "endpoint": endpoint, "kind": kind, "error": error}
        return samples["healthcheck_check_errors_total", tuple(sorted(labels.items()))]

    assert errors("grpc-gone", "grpc", "service_unknown") >= 1
    assert errors("grpc-up", "grpc", "rpc_status") == 0  # declared, so there from the start
    assert errors("udp-closed", "udp", "connection_refused") >= 1
    assert errors("ws-up", "websocket", "http_status") == 0
    assert TOKEN not in text
    assert log.other == []


async def test_the_examples_in_regions_yaml_are_valid_uncommented(run_cli, tmp_path) -> None:
    """regions.yaml shows each kind commented out (they need real hosts): uncommented, they
    pass check-config as they are written."""
    shipped = (Path(__file__).resolve().parents[2] / "regions.yaml").read_text()
    example = re.compile(r"^      # (- \{name: (orders|feed|beacon)\b|   (service|send): )")
    lines = [example.sub(r"      \1", line) for line in shipped.splitlines()]
    (tmp_path / "regions.yaml").write_text("\n".join(lines))
    (tmp_path / "internal-ca.pem").write_text("")  # its ca_file must exist

    done = await run_cli("check-config", "--config", str(tmp_path / "regions.yaml"))

    assert done.code == 0, done.stderr
    assert "grpc 1" in done.stdout and "udp 1" in done.stdout and "websocket 1" in done.stdout


async def test_once_runs_the_inference_canary_over_grpc(run_cli, tmp_path) -> None:
    from oip_server import CANARY_INPUT, CANARY_OUTPUT, OipServer

    async with OipServer() as server:
        endpoint = {
            "name": "triton",
            "kind": "inference",
            "protocol": "grpc",
            "url": server.grpc_url,
            "model_name": "canary",
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": CANARY_INPUT}],
            "expected": [{"name": "Y", "shape": [1, 2], "data": CANARY_OUTPUT}],
        }
        drifted = {**endpoint, "name": "drifted", "expected": [{"name": "Y", "data": [1, 1]}]}
        config = write(tmp_path, [endpoint, drifted])
        done = await run_cli("--once", "--format", "json", "--config", str(config))

    assert done.code == 2, done.stderr
    results = {r["endpoint"]: r for r in json.loads(done.stdout)["results"]}
    assert (results["triton"]["ok"], results["triton"]["details"]["model"]) == (True, "canary")
    assert results["drifted"]["error"] == "wrong_output"
