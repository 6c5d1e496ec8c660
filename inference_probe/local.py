"""The local canary (`kind: onnx`): a shipped ONNX model run on the GPU in a worker process and
compared with golden outputs computed on the CPU, plus the GPU's health from NVML."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes.base import Clock, Probe
from healthcheck.result import EndpointId, ErrorClass, ProbeResult
from healthcheck.targets import Endpoint, ProbeSettings
from inference_probe.canary import CanaryWorker, WorkerDied
from inference_probe.canary_plugin import (
    CANARY_DOWN,
    CANARY_METRICS,
    CANARY_RULE,
    GPU_ERROR,
    GPU_UNAVAILABLE,
    WRONG_OUTPUT,
)

log = logging.getLogger("inference_probe.local")

MODELS = Path(__file__).with_name("models")
BUILTIN = ("gemm", "conv")
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset(
    {"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider"}
)
Detail = tuple[str, str | float | int | bool | None]


@dataclass(frozen=True, slots=True)
class OnnxSettings(ProbeSettings):
    model: str
    golden: str | None
    require_gpu: bool
    on_cpu: str
    providers: tuple[str, ...]
    device: int
    tolerance: dict[str, float]
    burst: int
    load_timeout: float
    threads: int


def _model(value: object) -> str:
    text = schema.text(value)
    if text.startswith("builtin:") and text[8:] not in BUILTIN:
        raise ValueError(
            f"unknown builtin model {text!r}; builtin are "
            + ", ".join(f"builtin:{name}" for name in BUILTIN)
        )
    return text


def _providers(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected a list of onnxruntime execution providers, in order")
    names = tuple(schema.text(item) for item in value)
    for name in names:
        if not name.endswith("ExecutionProvider"):
            raise ValueError(
                f"{name!r} is not an onnxruntime provider (e.g. CUDAExecutionProvider)"
            )
    return names


def _tolerance(value: object) -> dict[str, float]:
    read = schema.sub_mapping(value, {"atol": _non_negative, "rtol": _non_negative})
    return {"atol": 1e-4, "rtol": 1e-3, **read}


def _non_negative(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return float(value)


class OnnxProbe(Probe):
    kind = "onnx"
    settings = OnnxSettings
    options = {
        "model": schema.Option(_model, help="builtin:gemm, builtin:conv, or an .onnx file"),
        "golden": schema.Option(
            schema.optional(schema.text), None, "golden .npz (default: <model>.golden.npz)"
        ),
        "require_gpu": schema.Option(schema.boolean, False, "a run on the CPU is a problem"),
        "on_cpu": schema.Option(
            schema.choice("unhealthy", "degraded"), "unhealthy", "what a CPU run is, if required"
        ),
        "providers": schema.Option(_providers, DEFAULT_PROVIDERS, "execution providers, in order"),
        "device": schema.Option(schema.integer(0, 63), 0, "CUDA device id"),
        "tolerance": schema.Option(_tolerance, {"atol": 1e-4, "rtol": 1e-3}, "atol, rtol"),
        "burst": schema.Option(schema.integer(0, 10_000), 20, "back-to-back runs for throughput"),
        "load_timeout": schema.Option(schema.duration, 120.0, "limit for loading the model"),
        "threads": schema.Option(schema.integer(1, 256), 1, "CPU threads for the session"),
    }
    placeholders = frozenset({"RESPONSE_TIME"})
    # No socket: a load or check that takes too long, a worker that crashed, and the verdicts.
    errors = (
        ErrorClass.TIMEOUT,
        ErrorClass.INTERNAL,
        WRONG_OUTPUT,
        GPU_ERROR,
        GPU_UNAVAILABLE,
        ErrorClass.CONDITION_FAILED,
    )
    metrics = CANARY_METRICS
    alert_rules = (CANARY_RULE,)
    down_alertname = CANARY_DOWN
    one_process = True

    def __init__(self, clock: Clock = time.time, database: str | None = None) -> None:
        super().__init__(clock, database)
        self._workers: dict[EndpointId, CanaryWorker] = {}

    @classmethod
    def resolve(cls, resolved: ProbeSettings, base_dir: Path) -> OnnxSettings:
        settings = resolved.narrow(OnnxSettings)
        if settings.model.startswith("builtin:"):
            model = MODELS / f"{settings.model[8:]}.onnx"
        else:
            model = base_dir / settings.model
            if not model.is_file():
                raise schema.FieldError("model", f"no such file: {model}")
        golden = base_dir / settings.golden if settings.golden else model.with_suffix(".golden.npz")
        if not golden.is_file():
            key = "golden" if settings.golden else "model"
            raise schema.FieldError(key, f"no golden outputs at {golden} (see build_models)")
        return replace(settings, model=str(model), golden=str(golden))

    async def close(self) -> None:
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()

    def _worker(self, target: Endpoint) -> CanaryWorker:
        s = target.settings.narrow(OnnxSettings)
        spec = {
            "model": s.model,
            "golden": s.golden,
            "providers": list(s.providers),
            "device": s.device,
            "atol": s.tolerance["atol"],
            "rtol": s.tolerance["rtol"],
            "burst": s.burst,
            "threads": s.threads,
            "burst_seconds": target.timeout / 3,
        }
        worker = self._workers.get(target.id)
        if worker is None or worker.spec != spec:  # new, or changed by a reload
            if worker is not None:
                worker.close()
            worker = self._workers[target.id] = CanaryWorker(str(target.id), spec)
        return worker

    async def run(self, target: Endpoint) -> ProbeResult:
        """Load the model first (bounded by load_timeout, not the check's timeout: CUDA start-up
        takes seconds), then check within the usual budget."""
        worker = self._worker(target)
        if not worker.loaded:
            started, timestamp = time.perf_counter(), self.clock()
            limit = target.settings.narrow(OnnxSettings).load_timeout
            try:
                async with asyncio.timeout(limit):
                    reply = await worker.call({"op": "load"})
            except TimeoutError:
                return self._failed(
                    target,
                    ErrorClass.TIMEOUT,
                    f"loading the model took over {limit:g}s; "
                    "the worker was killed and a fresh one will try again",
                    started,
                    timestamp,
                    worker,
                )
            except WorkerDied as exc:
                return self._died(target, exc, started, timestamp, worker)
            if "error" in reply:
                return self._error(target, reply, started, timestamp, worker)
        # A canary's failures are deterministic (a wrong output stays wrong, a missing GPU stays
        # missing) and a timeout already cost a worker: retrying only doubles the time.
        result = await super().run(replace(target, retries=0))
        if result.error is ErrorClass.TIMEOUT and worker.hung:
            text = f"{result.error_text}: the inference hung; worker killed, restarting"
            result = replace(result, error_text=text)
        return result

    async def attempt(self, target: Endpoint) -> ProbeResult:
        worker = self._worker(target)
        started, timestamp = time.perf_counter(), self.clock()
        try:
            reply = await worker.call({"op": "check"})
        except WorkerDied as exc:
            return self._died(target, exc, started, timestamp, worker)
        if "error" in reply:
            return self._error(target, reply, started, timestamp, worker)
        return self._judge(target, reply, started, timestamp, worker)

    # -- results -------------------------------------------------------------------------------
    def _judge(
        self,
        target: Endpoint,
        reply: dict[str, Any],
        started: float,
        timestamp: float,
        worker: CanaryWorker,
    ) -> ProbeResult:
        s = target.settings.narrow(OnnxSettings)
        providers = reply["providers"]
        provider = providers[0] if providers else "none"
        on_gpu = provider in GPU_PROVIDERS
        gpu = reply.get("gpu") or {}
        details = [
            ("model", Path(s.model).stem),
            ("provider", provider),
            ("max_abs_error", reply["max_abs"]),
            ("max_rel_error", reply["max_rel"]),
            ("inference_ms", round(reply["latency"] * 1000, 3)),
            ("throughput_per_s", _round(reply.get("throughput"))),
            ("worker_pid", worker.pid),
            ("worker_starts", worker.starts),
        ]
        if reply.get("load_s") is not None:
            details.append(("load_s", round(reply["load_s"], 3)))
        details += _gpu_details(gpu, s.device if on_gpu else None)
        if reply.get("cuda_reason") and not on_gpu:
            details.append(("cuda_unavailable", reply["cuda_reason"]))
        error: tuple[ErrorClass, str] | None = None
        degraded = None
        device = _device(gpu, s.device) if on_gpu else None
        if reply.get("mismatch"):
            error = (WRONG_OUTPUT, f"{reply['mismatch']} on {provider}")
        elif device is not None and device.get("ecc_uncorrected"):
            count = device["ecc_uncorrected"]
            error = (GPU_ERROR, f"GPU {s.device}: {count} uncorrected ECC errors")
        elif s.require_gpu and not on_gpu:
            why = reply.get("cuda_reason") or gpu.get("reason") or "no GPU provider available"
            text = f"require_gpu: ran on {provider} ({why})"
            if s.on_cpu == "unhealthy":
                error = (GPU_UNAVAILABLE, text)
            else:
                degraded = text
        elif device is not None and device.get("throttle"):
            degraded = f"GPU {s.device} throttled: {', '.join(device['throttle'])}"
        return self.judged(
            target,
            ConditionContext(),
            started,
            timestamp,
            latency=reply["latency"],  # the inference's, not the round trip to the worker
            verdict=error,
            degraded=degraded,
            details=tuple(details),
        )

    def _failed(
        self,
        target: Endpoint,
        error: ErrorClass,
        text: str,
        started: float,
        timestamp: float,
        worker: CanaryWorker,
    ) -> ProbeResult:
        details: tuple[Detail, ...] = (
            ("model", Path(target.settings.narrow(OnnxSettings).model).stem),
            ("worker_starts", worker.starts),
        )
        return self.failed(target, error, text, started, timestamp, details=details)

    def _died(
        self,
        target: Endpoint,
        exc: WorkerDied,
        started: float,
        timestamp: float,
        worker: CanaryWorker,
    ) -> ProbeResult:
        log.warning(
            "canary %s: %s; a fresh worker starts with the next check",
            target.id,
            exc,
            extra={
                "event": "canary_worker_died",
                "endpoint": str(target.id),
                "exitcode": exc.exitcode,
            },
        )
        if exc.by_daemon:  # the prober's own doing: no verdict about the canary
            text = f"{exc}; a fresh worker starts with the next check"
            return self._failed(target, ErrorClass.PROBER, text, started, timestamp, worker)
        text = f"canary worker crashed ({exc}); a fresh worker starts with the next check"
        return self._failed(target, ErrorClass.INTERNAL, text, started, timestamp, worker)

    def _error(
        self,
        target: Endpoint,
        reply: dict[str, Any],
        started: float,
        timestamp: float,
        worker: CanaryWorker,
    ) -> ProbeResult:
        error = ErrorClass(reply.get("error_class", "internal"))
        return self._failed(target, error, reply["error"], started, timestamp, worker)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _device(gpu: dict[str, Any], index: int) -> dict[str, Any] | None:
    device: dict[str, Any]
    for device in gpu.get("gpus", ()):
        if device["index"] == index:
            return device
    return None


def _gpu_details(gpu: dict[str, Any], used: int | None) -> list[Detail]:
    """Flat `gpu.<index>.<field>` details for every GPU NVML sees, and which one ran it."""
    if not gpu.get("available"):
        return [("gpu", "unavailable"), ("gpu_reason", gpu.get("reason"))]
    details: list[Detail] = [("gpu", "available"), ("gpu_device", used)]
    for device in gpu["gpus"]:
        prefix = f"gpu.{device['index']}."
        for key, value in device.items():
            if key == "index":
                continue
            if key == "throttle" and value is not None:
                value = ",".join(value) or "none"
            details.append((prefix + key, value))
    return details
