"""The remote inference canary against a real Open Inference Protocol server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import yaml
from oip_server import CANARY_INPUT, CANARY_OUTPUT, DRIFTED_BIAS, Model, OipServer, session
from timeouts import timeout_text

from healthcheck.config import parse_config
from healthcheck.errors import ConfigError
from healthcheck.prober import Prober
from healthcheck.probes.grpc_health import NOT_READY
from healthcheck.result import ErrorClass, ProbeResult, Status
from healthcheck.status import classify
from healthcheck.targets import Endpoint
from inference_probe.canary_plugin import WRONG_OUTPUT

TOKEN = "s3cret-token"


def canary(url: str, **overrides: Any) -> dict[str, Any]:
    """The endpoint a user would write for the canary model, with keys replaced or added."""
    endpoint = {
        "name": "triton",
        "kind": "inference",
        "url": url,
        "model_name": "canary",
        "timeout": "2s",
        "retries": 0,
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
    """Check an endpoint once through the Prober, the daemon's own entry point."""
    async with Prober() as prober:

        async def run(endpoint: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
            return await prober.check(config(endpoint, environ))

        yield run


def details(result: ProbeResult) -> dict[str, Any]:
    """The kind's own details; `loop_lag_ms` and `cpu_wait_ms` are the prober's, added when it
    ran late or waited for a CPU (loop_lag.py)."""
    ours = {"loop_lag_ms", "cpu_wait_ms"}
    return {key: value for key, value in result.details if key not in ours}


@pytest.mark.parametrize("version", [None, "1", 1])
async def test_ready_model_with_the_golden_output_is_healthy(
    server: OipServer, check: Callable[..., Any], version: str | int | None
) -> None:
    extra = {} if version is None else {"model_version": version}
    # Thresholds well above a loopback check: this test is about the answer, not the speed.
    endpoint = canary(server.url, latency={"warning": "1s", "critical": "2s"}, **extra)
    result = await check(endpoint)

    assert result.ok, result.error_text
    assert result.error is None
    assert classify(result, config(endpoint)) is Status.HEALTHY
    assert result.http_status == 200
    seen = details(result)
    assert seen["model"] == "canary"
    assert seen["max_abs_error"] == pytest.approx(0, abs=1e-6)
    assert seen["max_rel_error"] == pytest.approx(0, abs=1e-6)
    assert 0 < seen["inference_ms"] <= result.latency * 1000
    model = "/v2/models/canary" + ("" if version is None else "/versions/1")
    assert server.paths() == [
        "GET /v2/health/ready",
        f"GET {model}/ready",
        f"POST {model}/infer",
    ]
    assert server.seen[-1].body == {
        "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": CANARY_INPUT}],
        "outputs": [{"name": "Y"}],
    }


@pytest.mark.parametrize(
    ("as_json", "answer"), [(False, "HTTP 503"), (True, "HTTP 200 with ready: false")]
)
async def test_server_not_ready(
    server: OipServer, check: Callable[..., Any], as_json: bool, answer: str
) -> None:
    server.ready, server.ready_as_json = False, as_json

    result = await check(canary(server.url))

    assert not result.ok
    assert result.error is NOT_READY
    assert result.error_text == f"server not ready: GET /v2/health/ready answered {answer}"
    assert details(result) == {"model": "canary"}
    # Nothing but readiness is asked of a server not ready (asked twice when our own loop ran
    # late during the first: a failure made while lagged is made once more, loop_lag.py).
    assert set(server.paths()) == {"GET /v2/health/ready"}
    assert len(server.paths()) == result.attempts


async def test_model_not_ready_names_the_model(
    server: OipServer, check: Callable[..., Any]
) -> None:
    server.models["canary"].ready = False

    result = await check(canary(server.url))

    assert result.error is NOT_READY
    assert result.http_status == 503
    assert result.error_text == (
        "model 'canary' not ready: GET /v2/models/canary/ready answered HTTP 503"
    )


async def test_unknown_model_version_is_not_ready(
    server: OipServer, check: Callable[..., Any]
) -> None:
    result = await check(canary(server.url, model_version="7"))

    assert result.error is NOT_READY
    assert "model 'canary' version 7 not ready" in result.error_text
    assert details(result) == {"model": "canary", "model_version": "7"}


async def test_drifted_output_is_wrong_output_with_the_error_size(
    server: OipServer, check: Callable[..., Any]
) -> None:
    server.models["canary"] = Model(session(bias=DRIFTED_BIAS))

    result = await check(canary(server.url))

    assert result.error is WRONG_OUTPUT
    assert result.error_text.startswith(
        "output 'Y' differs from expected: max abs error 0.31, max rel error 0.062"
    )
    assert result.error_text.endswith("(atol 0.001, rtol 0.001)")
    assert details(result)["max_abs_error"] == pytest.approx(0.31, abs=1e-5)
    assert details(result)["max_rel_error"] == pytest.approx(0.062, abs=1e-5)


async def test_a_nan_output_is_wrong_output(server: OipServer, check: Callable[..., Any]) -> None:
    server.infer_body = b'{"outputs": [{"name": "Y", "shape": [1, 2], "data": [5.5, NaN]}]}'

    result = await check(canary(server.url))

    assert result.error is WRONG_OUTPUT
    assert result.error_text == (
        "output 'Y' differs from expected: 1 values are NaN or infinite (atol 0.001, rtol 0.001)"
    )
    assert details(result)["max_abs_error"] is None  # never NaN in JSON output


async def test_a_wider_tolerance_accepts_the_drift(
    server: OipServer, check: Callable[..., Any]
) -> None:
    server.models["canary"] = Model(session(bias=DRIFTED_BIAS))

    result = await check(canary(server.url, tolerance={"atol": "5e-1", "rtol": 0}))

    assert result.ok, result.error_text
    assert details(result)["max_abs_error"] == pytest.approx(0.31, abs=1e-5)


async def test_slow_infer_times_out(server: OipServer, check: Callable[..., Any]) -> None:
    server.infer_delay = 30

    result = await check(canary(server.url, timeout="300ms"))

    assert timeout_text(result, 0.3)  # or the fault a prober starved through it makes of it
    assert details(result) == {"model": "canary"}
    assert result.latency < 1


async def test_server_error_is_http_status_with_its_text(
    server: OipServer, check: Callable[..., Any]
) -> None:
    server.infer_error = "CUDA error: an illegal memory access was encountered"

    result = await check(canary(server.url))

    assert result.error is ErrorClass.HTTP_STATUS
    assert result.http_status == 500
    assert result.error_text == (
        "HTTP 500 from POST /v2/models/canary/infer: "
        "CUDA error: an illegal memory access was encountered"
    )
    assert "inference_ms" in details(result)


async def test_the_bearer_token_reaches_the_server(check: Callable[..., Any]) -> None:
    async with OipServer(token=TOKEN) as server:
        with_token = canary(server.url, headers={"Authorization": "Bearer ${TOKEN}"})
        accepted = await check(with_token, {"TOKEN": TOKEN})
        refused = await check(canary(server.url))

    assert accepted.ok, accepted.error_text
    assert {seen.authorization for seen in server.seen[:3]} == {f"Bearer {TOKEN}"}
    assert refused.error is ErrorClass.HTTP_STATUS
    assert refused.http_status == 401
    assert refused.error_text == (
        "HTTP 401 from GET /v2/health/ready: missing or wrong bearer token"
    )


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        (b"<html>oops</html>", "the infer answer is not valid JSON"),
        (b'{"model_name": "canary"}', "the infer answer has no 'outputs' list"),
        (b'{"outputs": [{"name": "Z"}]}', "the infer answer has no output 'Y' (got 'Z')"),
        (
            b'{"outputs": [{"name": "Y", "shape": [1, 3], "data": [1, 2, 3]}]}',
            "output 'Y' has shape [1, 3], expected [1, 2]",
        ),
        (
            b'{"outputs": [{"name": "Y", "shape": [1, 2], "data": [1]}]}',
            "output 'Y' has shape [1, 2] but 1 values",
        ),
        (
            b'{"outputs": [{"name": "Y", "shape": [1, 2], "data": ["a", "b"]}]}',
            "output 'Y' holds values that are not numbers",
        ),
    ],
)
async def test_malformed_answers_are_invalid_response(
    server: OipServer, check: Callable[..., Any], answer: bytes, text: str
) -> None:
    server.infer_body = answer

    result = await check(canary(server.url))

    assert result.error is ErrorClass.INVALID_RESPONSE
    assert result.error_text == text
    assert result.http_status == 200


async def test_conditions_judge_a_correct_answer(
    server: OipServer, check: Callable[..., Any]
) -> None:
    endpoint = canary(server.url, conditions=["[STATUS] == 200", "[BODY].model_version == 2"])

    result = await check(endpoint)

    assert result.error is ErrorClass.CONDITION_FAILED
    assert [outcome.passed for outcome in result.conditions] == [True, False]


async def test_connection_refused(check: Callable[..., Any], closed_port: int) -> None:
    result = await check(canary(f"http://127.0.0.1:{closed_port}"))

    assert result.error is ErrorClass.CONNECTION_REFUSED
    assert details(result) == {"model": "canary"}


def _input(**overrides: Any) -> list[dict[str, Any]]:
    return [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": CANARY_INPUT, **overrides}]


BAD_CONFIGS = [
    ({"inputs": _input(shape=[1, 3])}, "inputs[0].shape", "holds 3 values but data has 4"),
    ({"inputs": _input(shape=[1, -4])}, "inputs[0].shape", "expected a list of whole numbers"),
    ({"inputs": _input(datatype="FLOAT32")}, "inputs[0].datatype", "expected one of BOOL"),
    ({"inputs": _input(datatype="INT8", data=[1, 2, 3, 400])}, "inputs[0].data", "at most 127"),
    ({"inputs": _input(data=[1, 2, "x", 4])}, "inputs[0].data", "value 2 for FP32"),
    ({"inputs": [{"name": "X", "shape": [1]}]}, "inputs[0].datatype", "missing"),
    ({"inputs": []}, "inputs", "at least one input"),
    ({"expected": []}, "expected", "at least one output"),
    ({"expected": [{"name": "Y"}]}, "expected[0].data", "missing"),
    (
        {"expected": [{"name": "Y", "data": [1]}, {"name": "Y", "data": [2]}]},
        "expected[1].name",
        "output 'Y' is listed twice",
    ),
    (
        {"expected": [{"name": "Y", "data": [1, 2], "shape": [3]}]},
        "expected[0].shape",
        "holds 3 values but data has 2",
    ),
    ({"tolerance": {"atol": -1}}, "tolerance.atol", "at least 0"),
    ({"tolerance": {"rtol": "lots"}}, "tolerance.rtol", "expected a number"),
    ({"tolerance": {"margin": 1}}, "tolerance.margin", "unknown key"),
    ({"model_name": "a/b"}, "model_name", "without '/'"),
]


@pytest.mark.parametrize(("overrides", "key", "message"), BAD_CONFIGS)
def test_bad_config_names_the_key(overrides: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(canary("http://127.0.0.1:8000", **overrides))

    assert caught.value.path == f"regions.r.endpoints[0].{key}"
    assert message in caught.value.message


def test_missing_expected_is_refused() -> None:
    endpoint = canary("http://127.0.0.1:8000")
    del endpoint["expected"]

    with pytest.raises(ConfigError) as caught:
        config(endpoint)

    assert caught.value.path == "regions.r.endpoints[0].expected"
    assert "missing" in caught.value.message


def test_tolerance_as_one_number_sets_both() -> None:
    settings = config(canary("http://127.0.0.1:8000", tolerance="1e-2")).settings

    assert (settings.tolerance.atol, settings.tolerance.rtol) == (0.01, 0.01)
