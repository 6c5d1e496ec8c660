"""GPU health through NVML (`nvidia-ml-py`, the `gpu` extra). Read in the canary's worker
process, never in the daemon: a driver call that hangs takes the worker with it, not the loop."""

from __future__ import annotations

from typing import Any

# NVML clock event ("throttle") reason bits; idle, application clocks and sync boost are benign.
_THROTTLE_BITS = {
    0x4: "power",  # software power cap
    0x8: "hw_slowdown",  # hardware slowdown (thermal or power brake)
    0x20: "thermal",  # software thermal slowdown
    0x40: "thermal",  # hardware thermal slowdown
    0x80: "power",  # hardware power brake
}


def throttle_reasons(mask: int) -> list[str]:
    """The harmful reasons in an NVML clocks event mask, sorted, without duplicates."""
    return sorted({name for bit, name in _THROTTLE_BITS.items() if mask & bit})


def read_gpus() -> dict[str, Any]:
    """`{"available": True, "gpus": [...]}` with one dict per GPU, or `{"available": False,
    "reason": ...}` when there is no NVML (package, driver or device). A field the GPU does
    not support (ECC on consumer cards, power on some boards) is None."""
    try:
        import pynvml
    except ImportError:
        return {
            "available": False,
            "reason": "nvidia-ml-py is not installed (pip install 'healthcheck[gpu]')",
        }
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"available": False, "reason": f"NVML: {exc}"}
    try:
        return {"available": True, "gpus": [_one(pynvml, i) for i in range(_count(pynvml))]}
    finally:
        pynvml.nvmlShutdown()


def _count(nvml: Any) -> int:
    return int(nvml.nvmlDeviceGetCount())


def _one(nvml: Any, index: int) -> dict[str, Any]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def get(call: Any, *args: Any) -> Any:
        try:
            return call(handle, *args)
        except nvml.NVMLError:
            return None

    memory = get(nvml.nvmlDeviceGetMemoryInfo)
    utilization = get(nvml.nvmlDeviceGetUtilizationRates)
    power = get(nvml.nvmlDeviceGetPowerUsage)
    reasons_call = (  # renamed in newer NVML; the old name stays for older drivers
        getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )
    mask = get(reasons_call)
    name = get(nvml.nvmlDeviceGetName)
    return {
        "index": index,
        "name": name.decode() if isinstance(name, bytes) else name,
        "temperature_c": get(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU),
        "utilization": None if utilization is None else utilization.gpu / 100.0,
        "memory_used_bytes": None if memory is None else int(memory.used),
        "memory_total_bytes": None if memory is None else int(memory.total),
        "power_w": None if power is None else power / 1000.0,
        "throttle": None if mask is None else throttle_reasons(int(mask)),
        "ecc_uncorrected": get(
            nvml.nvmlDeviceGetTotalEccErrors,
            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nvml.NVML_VOLATILE_ECC,
        ),
    }
