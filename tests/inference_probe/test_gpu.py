"""The canary on a real GPU with onnxruntime-gpu on CUDA; skipped (with the reason) elsewhere."""

from __future__ import annotations

import shutil

import pytest
import yaml

from healthcheck.config import parse_config
from healthcheck.prober import Prober
from healthcheck.result import Status
from healthcheck.status import classify


def gpu_missing() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU here (nvidia-smi not found)"
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime has no CUDA provider (install onnxruntime-gpu)"
    return None


pytestmark = pytest.mark.skipif(gpu_missing() is not None, reason=str(gpu_missing()))


@pytest.mark.parametrize("model", ["builtin:gemm", "builtin:conv"])
async def test_the_canary_runs_on_cuda_and_matches_the_cpu_golden_output(tmp_path, model) -> None:
    text = yaml.safe_dump(
        {
            "defaults": {"interval": "30s", "timeout": "10s", "retries": 0},
            "regions": {
                "gpu": {
                    "endpoints": [
                        {"name": "c", "kind": "onnx", "model": model, "require_gpu": True}
                    ]
                }
            },
        }
    )
    (endpoint,) = parse_config(text, str(tmp_path / "regions.yaml"), {}).endpoints()
    async with Prober() as prober:
        results = [await prober.check(endpoint) for _ in range(3)]
    for result in results:
        found = dict(result.details)
        assert result.ok, result.error_text
        assert found["provider"] == "CUDAExecutionProvider"
        assert found["max_abs_error"] <= 1e-4
        assert found["gpu"] == "available"
        assert found["gpu_device"] == 0
        assert found["gpu.0.memory_total_bytes"] > 0
        assert found["gpu.0.name"]
        assert classify(result, endpoint) in (Status.HEALTHY, Status.DEGRADED)
        print(model, {k: v for k, v in found.items() if not k.startswith("gpu.0.")})
