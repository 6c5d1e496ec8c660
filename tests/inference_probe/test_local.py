"""The local ONNX canary on the CPU (CI has no GPU): real onnxruntime in a real worker process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from timeouts import timeout_text

from healthcheck.config import parse_config
from healthcheck.errors import ConfigError
from healthcheck.prober import Prober
from healthcheck.result import ErrorClass, Status
from healthcheck.status import classify
from inference_probe import build_models
from inference_probe.canary_plugin import GPU_UNAVAILABLE, WRONG_OUTPUT
from inference_probe.gpu import throttle_reasons
from inference_probe.local import MODELS


def endpoints(tmp_path: Path, *entries: dict, timeout: str = "10s", retries: int = 1):
    """Endpoints through the real config loader; paths relative to tmp_path, as in a file."""
    text = yaml.safe_dump(
        {
            "defaults": {"interval": "30s", "timeout": timeout, "retries": retries},
            "regions": {"gpu": {"endpoints": list(entries)}},
        }
    )
    (tmp_path / "regions.yaml").write_text(text)
    return list(parse_config(text, str(tmp_path / "regions.yaml"), {}).endpoints())


def details(result) -> dict:
    return dict(result.details)


async def test_the_shipped_canaries_match_their_golden_outputs(tmp_path) -> None:
    gemm, conv = endpoints(
        tmp_path,
        {"name": "gemm", "kind": "onnx", "model": "builtin:gemm"},
        {"name": "conv", "kind": "onnx", "model": "builtin:conv", "burst": 5},
    )
    async with Prober() as prober:
        first = await prober.check(gemm)
        argv = Path(f"/proc/{details(first)['worker_pid']}/cmdline").read_bytes()
        second = await prober.check(gemm)
        conv_result = await prober.check(conv)
    for result in (first, second, conv_result):
        assert result.ok, result.error_text
        assert classify(result, gemm) is Status.HEALTHY
        found = details(result)
        assert found["provider"] == "CPUExecutionProvider"
        assert found["max_abs_error"] <= 1e-4
        assert found["throughput_per_s"] > 0
        assert found["gpu"] == "unavailable" and found["gpu_reason"]
    assert "load_s" in details(first) and "load_s" not in details(second)  # first use only
    assert details(first)["worker_pid"] == details(second)["worker_pid"]  # the session stays
    assert details(first)["worker_pid"] != os.getpid()  # inference is not in the daemon
    # A plain interpreter, not multiprocessing's spawn with its resource tracker (a process of
    # its own, ~13 MB): spawn's children are told the tracker's descriptor in their argv.
    assert b"inference_probe.worker" in argv and b"tracker_fd" not in argv, argv


async def test_require_gpu_on_a_cpu_only_machine_is_unhealthy_or_degraded(tmp_path) -> None:
    strict, lenient = endpoints(
        tmp_path,
        {"name": "strict", "kind": "onnx", "model": "builtin:conv", "require_gpu": True},
        {
            "name": "lenient",
            "kind": "onnx",
            "model": "builtin:conv",
            "require_gpu": True,
            "on_cpu": "degraded",
        },
    )
    # No second look for a failure made while the prober ran late (a busy core): the retry
    # policy of the kind is what is under test.
    async with Prober(recheck_lagged=False) as prober:
        hard = await prober.check(strict)
        soft = await prober.check(lenient)
    assert not hard.ok and hard.error is GPU_UNAVAILABLE
    assert hard.attempts == 1  # deterministic: the default retry would only double the time
    assert "require_gpu: ran on CPUExecutionProvider" in hard.error_text
    assert classify(hard, strict) is Status.UNHEALTHY
    assert soft.ok and soft.degraded and "CPUExecutionProvider" in soft.degraded
    assert classify(soft, lenient) is Status.DEGRADED


async def test_a_tampered_golden_output_is_a_wrong_output(tmp_path) -> None:
    golden = dict(np.load(MODELS / "gemm.golden.npz"))
    golden["output:Y"] = golden["output:Y"].copy()
    golden["output:Y"][3, 7] += 0.25  # one value off: silent data corruption looks like this
    np.savez(tmp_path / "tampered.npz", **golden)
    (tampered,) = endpoints(
        tmp_path,
        {"name": "gemm", "kind": "onnx", "model": "builtin:gemm", "golden": "tampered.npz"},
    )
    async with Prober() as prober:
        result = await prober.check(tampered)
    assert result.error is WRONG_OUTPUT
    assert "output 'Y' differs from the golden output: max abs error 0.25" in result.error_text
    assert details(result)["max_abs_error"] == pytest.approx(0.25, abs=1e-4)


async def test_a_corrupted_golden_file_is_reported_not_crashed_on(tmp_path) -> None:
    data = bytearray((MODELS / "conv.golden.npz").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    (tmp_path / "corrupt.npz").write_bytes(bytes(data))
    (corrupt,) = endpoints(
        tmp_path,
        {"name": "conv", "kind": "onnx", "model": "builtin:conv", "golden": "corrupt.npz"},
    )
    async with Prober() as prober:
        result = await prober.check(corrupt)
    assert result.error is WRONG_OUTPUT
    assert "corrupt.npz" in result.error_text


async def test_a_model_that_computes_something_else_is_a_wrong_output(tmp_path) -> None:
    other = build_models.conv_model(np.random.default_rng(7))  # same shape, other weights
    onnx.save(other, tmp_path / "other.onnx")
    shutil.copy(MODELS / "conv.golden.npz", tmp_path / "conv.golden.npz")
    (endpoint,) = endpoints(
        tmp_path,
        {"name": "c", "kind": "onnx", "model": "other.onnx", "golden": "conv.golden.npz"},
    )
    async with Prober() as prober:
        result = await prober.check(endpoint)
    assert result.error is WRONG_OUTPUT
    assert details(result)["max_abs_error"] > 0.01


def slow_model(tmp_path: Path) -> None:
    """A real model that takes seconds on one CPU thread: a hung inference, as seen from outside."""
    onnx.save(build_models.gemm_model(1024, 16), tmp_path / "slow.onnx")
    x = np.ones((4096, 1024), np.float32)
    np.savez(tmp_path / "slow.golden.npz", **{"input:X": x, "output:Y": np.zeros((4096, 16))})


async def test_a_hung_inference_is_killed_reported_and_replaced(tmp_path) -> None:
    slow_model(tmp_path)
    (slow,) = endpoints(
        tmp_path,
        {"name": "slow", "kind": "onnx", "model": "slow.onnx", "burst": 0},
        timeout="300ms",
    )
    async with Prober() as prober:
        first = await prober.check(slow)  # loads (outside the budget), then hangs past it
        second = await prober.check(slow)  # a fresh worker, loaded again, hangs again
    for result in (first, second):
        # On a busy core the model's load starves the prober: then a prober fault says so.
        assert "worker killed, restarting" in timeout_text(result, 0.3)
        assert result.latency < 2.0  # cut at the timeout, not when the inference would end


async def test_a_crashed_worker_is_reported_once_then_replaced(tmp_path) -> None:
    (conv,) = endpoints(tmp_path, {"name": "conv", "kind": "onnx", "model": "builtin:conv"})
    # The prober's second look for a failure during which this process lagged off: on a busy
    # core it checked again with a fresh worker, and the crash was not this check's result.
    async with Prober(recheck_lagged=False) as prober:
        first = await prober.check(conv)
        os.kill(details(first)["worker_pid"], signal.SIGKILL)  # as the OOM killer would
        await asyncio.sleep(0.2)
        crashed = await prober.check(conv)
        after = await prober.check(conv)
    assert first.ok
    assert crashed.error is ErrorClass.INTERNAL
    assert "canary worker crashed (the worker was killed by SIGKILL)" in crashed.error_text
    assert after.ok
    assert details(after)["worker_pid"] != details(first)["worker_pid"]
    assert details(after)["worker_starts"] == 2


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ({"model": "builtin:resnet"}, "model", "unknown builtin model 'builtin:resnet'"),
        ({"model": "missing.onnx"}, "model", "no such file"),
        ({"model": "builtin:gemm", "golden": "nope.npz"}, "golden", "no golden outputs"),
        ({"model": "builtin:gemm", "on_cpu": "ignore"}, "on_cpu", "expected one of"),
        ({"model": "builtin:gemm", "providers": ["CUDA"]}, "providers", "not an onnxruntime"),
        ({"model": "builtin:gemm", "tolerance": {"atol": -1}}, "tolerance.atol", ">= 0"),
    ],
)
def test_bad_canary_settings_name_the_key(tmp_path, entry, path, message) -> None:
    with pytest.raises(ConfigError) as caught:
        endpoints(tmp_path, {"name": "c", "kind": "onnx", **entry})
    assert caught.value.path == f"regions.gpu.endpoints[0].{path}"
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("mask", "reasons"),
    [
        (0x0, []),
        (0x1, []),  # idle: clocks are low because there is no work, not a problem
        (0x2 | 0x100, []),  # application clocks setting, display clocks: configuration
        (0x20, ["thermal"]),
        (0x40 | 0x20, ["thermal"]),
        (0x4, ["power"]),
        (0x80 | 0x8, ["hw_slowdown", "power"]),
    ],
)
def test_only_harmful_nvml_throttle_reasons_count(mask: int, reasons: list[str]) -> None:
    assert throttle_reasons(mask) == reasons


async def test_a_long_burst_is_cut_short_not_mistaken_for_a_hang(tmp_path) -> None:
    (gemm,) = endpoints(
        tmp_path,
        {"name": "gemm", "kind": "onnx", "model": "builtin:gemm", "burst": 10_000},
        timeout="1500ms",
    )
    async with Prober() as prober:
        await prober.check(gemm)  # loads the model
        result = await prober.check(gemm)
    assert result.ok, result.error_text
    assert details(result)["throughput_per_s"] > 0
