"""What the two canary kinds (`onnx`, `inference`) add to the daemon: the inference metric
families, the GPU gauges of the local canary's NVML reading, and the canary alert rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from healthcheck.probes.plugin import (
    ENDPOINT_LABELS,
    AlertRule,
    Finding,
    Gauges,
    Histogram,
    KindMetrics,
    Reading,
    error_class,
)
from healthcheck.result import ProbeResult

# One inference: from a fraction of a millisecond (a small net on a GPU) to seconds.
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The canaries' own error classes (a canary also ends with grpc's not_ready and rpc_status).
_CANARIES = "onnx, inference"
WRONG_OUTPUT = error_class(
    "wrong_output", "the model's output is not the expected (golden) output", _CANARIES
)
GPU_UNAVAILABLE = error_class(
    "gpu_unavailable", "the canary could not run on the GPU it asked for", _CANARIES
)
GPU_ERROR = error_class(
    "gpu_error", "the GPU itself reports a fault (uncorrected ECC errors)", _CANARIES
)

CANARY = "canary"  # the rule's name
# Prometheus splits a failing check by kind: a canary that fails is HealthcheckCanaryFailing.
CANARY_DOWN = "HealthcheckCanaryFailing"


def inference_seconds(result: ProbeResult) -> float | None:
    """The time of the one inference a check made (remote: the infer call), if it got there."""
    milliseconds = dict(result.details).get("inference_ms")
    return milliseconds / 1000 if isinstance(milliseconds, int | float) else None


def details(result: ProbeResult) -> dict[str, Any]:
    """What a scrape keeps of a canary's last check: its details."""
    return dict(result.details)


_GPU_GAUGES = (
    ("temperature_c", "healthcheck_gpu_temperature_celsius", "GPU core temperature"),
    ("utilization", "healthcheck_gpu_utilization_ratio", "GPU busy share (0-1)"),
    ("memory_used_bytes", "healthcheck_gpu_memory_used_bytes", "GPU memory in use"),
    ("memory_total_bytes", "healthcheck_gpu_memory_total_bytes", "GPU memory in all"),
    ("power_w", "healthcheck_gpu_power_watts", "GPU power draw"),
    (
        "ecc_uncorrected",
        "healthcheck_gpu_ecc_uncorrected_errors",
        "Volatile uncorrected ECC errors since the driver loaded",
    ),
)


def canary_gauges(rows: list[Reading]) -> Iterator[Gauges]:
    """Canary gauges from each canary's last result, and GPU gauges from the newest NVML
    reading any local canary brought (several canaries on one host see the same GPUs)."""
    max_error = Gauges(
        "healthcheck_inference_max_abs_error",
        "Largest difference between the canary's output and the expected (golden) output",
    )
    provider = Gauges(
        "healthcheck_inference_provider_info",
        "1 for the execution provider the local canary actually ran on",
        (*ENDPOINT_LABELS, "provider"),
    )
    throughput = Gauges(
        "healthcheck_inference_throughput_per_second",
        "Inferences per second in the canary's back-to-back burst",
    )
    device = Gauges(
        "healthcheck_inference_gpu_device_info",
        "1 for the GPU index the local canary ran on",
        (*ENDPOINT_LABELS, "gpu"),
    )
    gpus: dict[str, tuple[float, str, dict[str, Any]]] = {}
    for names, timestamp, found in rows:
        labels = list(names)
        error = found.get("max_abs_error")
        if isinstance(error, int | float) and error != float("inf"):
            max_error.add(labels, error)
        if isinstance(found.get("provider"), str):
            provider.add([*labels, found["provider"]], 1.0)
        if isinstance(found.get("throughput_per_s"), int | float):
            throughput.add(labels, found["throughput_per_s"])
        if isinstance(found.get("gpu_device"), int):
            device.add([*labels, str(found["gpu_device"])], 1.0)
        for key, value in found.items():
            # The local canary's flat `gpu.<index>.<field>` details (inference_probe.local)
            if not key.startswith("gpu.") or key.count(".") != 2:
                continue
            index, field = key[4:].split(".")
            seen = gpus.get(index)
            if seen is None or seen[0] < timestamp:
                name = found.get(f"gpu.{index}.name")
                seen = gpus[index] = (timestamp, str(name or ""), {})
            if seen[0] == timestamp:
                seen[2][field] = value
    yield from (max_error, provider, throughput, device)
    throttled = Gauges(
        "healthcheck_gpu_throttled",
        "1 per harmful clock-throttle reason active on the GPU (thermal, power, hw_slowdown)",
        ("gpu", "name", "reason"),
    )
    families = {field: Gauges(name, text, ("gpu", "name")) for field, name, text in _GPU_GAUGES}
    for index, (_, name, fields) in sorted(gpus.items()):
        for field, family in families.items():
            value = fields.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                family.add([index, name], float(value))
        reasons = fields.get("throttle")
        if isinstance(reasons, str) and reasons not in ("", "none"):
            for reason in reasons.split(","):
                throttled.add([index, name, reason], 1.0)
    yield from families.values()
    yield throttled


CANARY_METRICS = KindMetrics(
    histograms=(
        Histogram(
            "healthcheck_inference_duration_seconds",
            "One canary inference of the fixed input (remote: the infer call)",
            INFERENCE_BUCKETS,
            inference_seconds,
        ),
    ),
    reading=details,
    gauges=canary_gauges,
)

_CANARY_CRITICAL = frozenset({"wrong_output", "gpu_unavailable", "gpu_error"})


def judge_canary(result: ProbeResult, degraded: bool) -> Finding:
    """An inference canary: wrong output (silent corruption) or no GPU pages at once, without
    waiting for a streak; a degraded canary (CPU fallback, slow) is a warning."""
    target = result.target_id
    if result.error is not None and result.error.value in _CANARY_CRITICAL:
        return Finding(
            True, "critical", f"{target}: canary {result.error.value}: {result.error_text}"
        )
    if degraded:
        return Finding(True, "warning", f"{target}: canary degraded")
    return Finding(False, "warning", f"{target}: canary healthy")


CANARY_RULE = AlertRule(CANARY, "HealthcheckCanaryWrongOutput", judge_canary)
