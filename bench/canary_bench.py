"""Canary figures: provider, model load time, per-inference latency and throughput.

    python bench/canary_bench.py              # builtin:gemm and builtin:conv, 20 checks each
    python bench/canary_bench.py --model /tmp/big/gemm.onnx --checks 50

Runs the real probe (worker process included) the way the daemon does and prints one JSON line
per model. Numbers come from the worker's own timers: `inference_ms` is one run of the fixed
input, `throughput_per_s` a burst of back-to-back runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path

import yaml

from healthcheck.config import parse_config
from healthcheck.prober import Prober


async def bench(model: str, checks: int, burst: int) -> dict:
    text = yaml.safe_dump(
        {
            "defaults": {"interval": "30s", "timeout": "30s", "retries": 0},
            "regions": {
                "bench": {
                    "endpoints": [{"name": "c", "kind": "onnx", "model": model, "burst": burst}]
                }
            },
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        (endpoint,) = parse_config(text, str(Path(folder) / "regions.yaml"), {}).endpoints()
        async with Prober() as prober:
            results = [await prober.check(endpoint) for _ in range(checks)]
    found = [dict(r.details) for r in results]
    latencies = sorted(d["inference_ms"] for d in found if "inference_ms" in d)
    rates = [d["throughput_per_s"] for d in found if d.get("throughput_per_s")]
    return {
        "model": model,
        "ok": sum(r.ok for r in results),
        "checks": checks,
        "provider": found[-1].get("provider"),
        "gpu": found[-1].get("gpu.0.name"),
        "load_s": found[0].get("load_s"),
        "inference_ms_p50": statistics.median(latencies) if latencies else None,
        "inference_ms_p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "throughput_per_s_median": statistics.median(rates) if rates else None,
        "max_abs_error": max(d.get("max_abs_error", 0.0) for d in found),
        "errors": sorted({r.error_text for r in results if r.error_text})[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="default: builtin:gemm, builtin:conv")
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    for model in args.model or ["builtin:gemm", "builtin:conv"]:
        print(json.dumps(asyncio.run(bench(model, args.checks, args.burst))), flush=True)


if __name__ == "__main__":
    main()
