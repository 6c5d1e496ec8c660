"""The remote inference canary over the Open Inference Protocol's gRPC binding (`protocol:
grpc`), against a real server of it on 127.0.0.1 running the canary model in ONNX Runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import yaml
from oip_server import CANARY_INPUT, CANARY_OUTPUT, DRIFTED_BIAS, Model, OipServer, session

from healthcheck.config import parse_config
from healthcheck.errors import ConfigError
from healthcheck.prober import Prober
from healthcheck.probes.grpc_health import NOT_READY, RPC_STATUS
from healthcheck.result import ErrorClass
from healthcheck.targets import Endpoint
from inference_probe.canary_plugin import WRONG_OUTPUT

TOKEN = "s3cret-grpc-token"


def canary(url: str, **overrides: Any) -> dict[str, Any]:
    endpoint = {
        "name": "triton",
        "kind": "inference",
        "protocol": "grpc",
        "url": url,
        "model_name": "canary",
        "timeout": "5s",
        "retries": 0,
        "latency": {"warning": "2s", "critical": "4s"},
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": CANARY_INPUT}],
        "expected": [{"name": "Y", "shape": [1, 2], "data": CANARY_OUTPUT}],
    }
    return {**endpoint, **overrides}


def config(endpoint: dict[str, Any], environ: dict[str, str] | None = None) -> Endpoint:
    text = yaml.safe_dump({"regions": {"r": {"endpoints": [endpoint]}}})
    return next(parse_config(text, "test.yaml", environ or {}).endpoints())


@pytest.fixture
async def server() -> AsyncIterator[OipServer]:
    async with OipServer() as running:
        yield running


@pytest.fixture
async def check() -> AsyncIterator[Callable[..., Any]]:
    async with Prober() as prober:

        async def run(endpoint: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
            return await prober.check(config(endpoint, environ))

        yield run


@pytest.mark.parametrize("raw", [True, False], ids=["raw-bytes", "typed-contents"])
async def test_the_golden_output_over_grpc_is_healthy(
    server: OipServer, check: Callable[..., Any], raw: bool
) -> None:
    server.raw_outputs = raw
    endpoint = canary(
        server.grpc_url, conditions=["[BODY].outputs[0].name == Y", "[CONNECTED] == true"]
    )

    result = await check(endpoint)

    assert result.ok, result.error_text
    seen = dict(result.details)
    assert seen["max_abs_error"] == pytest.approx(0, abs=1e-6)
    assert seen["inference_ms"] > 0
    assert [(s.method, s.path) for s in server.seen] == [
        ("GRPC", "ServerReady"),
        ("GRPC", "ModelReady"),
        ("GRPC", "ModelInfer"),
    ]
    sent = server.seen[-1].body
    assert (sent.model_name, [i.name for i in sent.inputs], [o.name for o in sent.outputs]) == (
        "canary",
        ["X"],
        ["Y"],
    )
    assert list(sent.inputs[0].contents.fp32_contents) == CANARY_INPUT


async def test_a_server_not_ready_is_asked_nothing_more(
    server: OipServer, check: Callable[..., Any]
) -> None:
    server.ready = False

    result = await check(canary(server.grpc_url))

    assert (result.error, result.error_text) == (
        NOT_READY,
        "server not ready: ServerReady answered ready: false",
    )
    assert {s.path for s in server.seen} == {"ServerReady"}


@pytest.mark.parametrize(
    ("change", "error", "text"),
    [
        (
            {"ready": False},
            NOT_READY,
            "model 'canary' not ready: ModelReady answered ready: false",
        ),
        (
            {"model_version": "7"},
            NOT_READY,
            "NOT_FOUND from ModelReady: model 'canary' has no version '7'",
        ),
        (
            {"model_name": "nope"},
            NOT_READY,
            "NOT_FOUND from ModelReady: unknown model 'nope'",
        ),
    ],
)
async def test_a_model_not_ready_or_unknown_is_not_ready(
    server: OipServer, check: Callable[..., Any], change, error, text
) -> None:
    endpoint = canary(server.grpc_url)
    if "ready" in change:
        server.models["canary"].ready = False
    else:
        endpoint.update(change)

    result = await check(endpoint)

    assert (result.error, result.error_text) == (error, text)


async def test_a_drifted_model_is_wrong_output(
    server: OipServer, check: Callable[..., Any]
) -> None:
    server.models["canary"] = Model(session(bias=DRIFTED_BIAS))

    result = await check(canary(server.grpc_url))

    assert result.error is WRONG_OUTPUT
    assert dict(result.details)["max_abs_error"] == pytest.approx(0.31, abs=1e-3)


async def test_an_infer_error_status_is_rpc_status(
    server: OipServer, check: Callable[..., Any]
) -> None:
    server.infer_error = "CUDA out of memory"

    result = await check(canary(server.grpc_url))

    assert (result.error, result.error_text) == (
        RPC_STATUS,
        "INTERNAL from ModelInfer: CUDA out of memory",
    )


async def test_headers_from_the_environment_go_as_metadata(
    server: OipServer, check: Callable[..., Any]
) -> None:
    server.token = TOKEN
    with_token = canary(server.grpc_url, headers={"Authorization": "Bearer ${OIP_TOKEN}"})

    ok = await check(with_token, {"OIP_TOKEN": TOKEN})
    refused = await check(canary(server.grpc_url))

    assert ok.ok, ok.error_text
    assert (refused.error, refused.error_text) == (
        RPC_STATUS,
        "UNAUTHENTICATED from ServerReady: missing or wrong token",
    )
    assert TOKEN not in str(ok) + str(refused)


async def test_a_closed_port_is_connection_refused(
    check: Callable[..., Any], closed_port: int
) -> None:
    result = await check(canary(f"http://127.0.0.1:{closed_port}"))

    assert (result.error, result.error_text) == (
        ErrorClass.CONNECTION_REFUSED,
        "connection refused",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"protocol": "soap"}, "regions.r.endpoints[0].protocol: "),
        (
            {"url": "https://127.0.0.1:1", "tls": {"verify": False}},
            "regions.r.endpoints[0].tls.verify: over grpc the server's certificate is always",
        ),
    ],
)
def test_its_config_errors_name_the_key(change, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config({**canary("http://127.0.0.1:1"), **change})
