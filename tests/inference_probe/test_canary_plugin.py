"""Canaries as endpoints like any other: metrics on a real scrape, --once output and exit code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tools import require

from healthcheck.config import parse_config
from healthcheck.daemon import Daemon, open_writer
from healthcheck.front import HttpFront
from healthcheck.result import ProbeResult, Status

CANARIES = [
    {"name": "conv", "kind": "onnx", "model": "builtin:conv", "burst": 5},
    {"name": "need-gpu", "kind": "onnx", "model": "builtin:conv", "require_gpu": True},
]


def config_text(tmp_path) -> str:
    return yaml.safe_dump(
        {
            "defaults": {"interval": "300ms", "timeout": "250ms", "retries": 0},
            "exporter": {"listen": "127.0.0.1:0"},
            "storage": {"path": str(tmp_path / "hc.db")},
            "regions": {"gpu": {"endpoints": CANARIES}},
        }
    )


async def test_canary_metrics_on_a_real_scrape(tmp_path) -> None:
    config = parse_config(config_text(tmp_path), str(tmp_path / "regions.yaml"), {})
    seen: list[tuple[ProbeResult, Status]] = []
    daemon = Daemon(
        config,
        open_writer(config.storage),
        extra_sinks=[lambda r, s: seen.append((r, s))],
        front=HttpFront,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        while len({r.endpoint for r, _ in seen}) < 2 or len(seen) < 6:
            await asyncio.sleep(0.1)
        host, port = daemon.listening
        url = f"http://{host}:{port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            body = await response.text()
    finally:
        stop.set()
        await task
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    conv = {"region": "gpu", "endpoint": "conv", "kind": "onnx"}
    assert (
        value("healthcheck_inference_provider_info", **conv, provider="CPUExecutionProvider") == 1
    )
    # Judged by the canary's own tolerance, never exact: the last bits differ between CPUs
    # (another EPYC generation reads 5.96e-08 here, on every run).
    endpoint = next(e for e in config.endpoints() if e.name == "conv")
    golden = np.load(endpoint.settings.golden)
    largest = max(float(np.abs(golden[k]).max()) for k in golden.files if k.startswith("output:"))
    allowed = endpoint.settings.tolerance["atol"] + endpoint.settings.tolerance["rtol"] * largest
    assert 0.0 <= value("healthcheck_inference_max_abs_error", **conv) <= allowed
    assert value("healthcheck_inference_duration_seconds_count", **conv) >= 2
    assert value("healthcheck_inference_throughput_per_second", **conv) > 0
    need_gpu = {"region": "gpu", "endpoint": "need-gpu", "kind": "onnx"}
    assert value("healthcheck_check_errors_total", **need_gpu, error="gpu_unavailable") >= 1
    assert not any(name.startswith("healthcheck_gpu_") for name, _ in samples)  # no GPU here
    promtool = require("promtool", package="prometheus")
    check = subprocess.run([promtool, "check", "metrics"], input=body.encode(), capture_output=True)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    statuses = {r.endpoint: s for r, s in seen}
    assert statuses == {"conv": Status.HEALTHY, "need-gpu": Status.UNHEALTHY}


def test_once_reports_canaries_with_their_details_and_exit_code(tmp_path) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text(config_text(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "healthcheck", "--once", "--config", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr  # require_gpu on a CPU-only machine: unhealthy
    assert "libcublas" not in done.stderr  # onnxruntime's CUDA noise stays out of our output
    report = json.loads(done.stdout)
    by_name = {r["endpoint"]: r for r in report["results"]}
    assert by_name["conv"]["status"] == "healthy"
    assert by_name["conv"]["details"]["provider"] == "CPUExecutionProvider"
    assert by_name["need-gpu"]["error"] == "gpu_unavailable"
    assert by_name["need-gpu"]["error_detail"].startswith(
        "require_gpu: ran on CPUExecutionProvider"
    )
