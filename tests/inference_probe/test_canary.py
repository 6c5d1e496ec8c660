"""A canary that hangs or crashes must not stall the daemon: HTTP checks stay on time."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import onnx
import yaml
from aiohttp import web
from polling import until

from healthcheck.config import parse_config
from healthcheck.daemon import Daemon
from healthcheck.front import HttpFront
from inference_probe import build_models


async def test_http_checks_stay_on_time_while_the_canary_hangs_and_crashes(tmp_path) -> None:
    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/"

    onnx.save(build_models.gemm_model(1024, 16), tmp_path / "slow.onnx")
    np.savez(
        tmp_path / "slow.golden.npz",
        **{"input:X": np.ones((4096, 1024), np.float32), "output:Y": np.zeros((4096, 16))},
    )
    text = yaml.safe_dump(
        {
            "defaults": {"interval": "100ms", "timeout": "90ms", "retries": 0},
            # The canary and the HTTP checks on one loop, the daemon's: isolation from a canary
            # in the same process is what is tested (test_workers tests the processes apart).
            "scheduler": {"workers": 1},
            "exporter": {"listen": "127.0.0.1:0"},
            "regions": {
                "r": {
                    "endpoints": [
                        {"name": "web", "url": base},
                        {
                            "name": "hung",
                            "kind": "onnx",
                            "model": "slow.onnx",
                            "interval": "1s",
                            "timeout": "300ms",
                            "burst": 0,
                        },
                        {
                            "name": "conv",
                            "kind": "onnx",
                            "model": "builtin:conv",
                            "interval": "200ms",
                        },
                    ]
                }
            },
        }
    )
    (tmp_path / "regions.yaml").write_text(text)
    config = parse_config(text, str(tmp_path / "regions.yaml"), {})
    results: list = []
    daemon = Daemon(
        config, None, extra_sinks=[lambda result, status: results.append(result)], front=HttpFront
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await asyncio.sleep(2.0)  # the slow model loads, then its checks hang and get killed
        # However long the probe workers take to start on a busy machine.
        await until(lambda: [r for r in results if r.endpoint == "conv" and r.ok], 60)
        conv = [r for r in results if r.endpoint == "conv" and r.ok]
        assert conv, "the conv canary never answered"
        os.kill(dict(conv[-1].details)["worker_pid"], signal.SIGKILL)  # a crash, mid-run
        started = len(results)
        await asyncio.sleep(4.0)
        window = results[started:]
    finally:
        stop.set()
        await task
        await runner.cleanup()

    web_results = [r for r in window if r.endpoint == "web"]
    hung = [r for r in window if r.endpoint == "hung"]
    conv = [r for r in window if r.endpoint == "conv"]
    assert len(web_results) >= 30  # every 100 ms for 4 s: no stall while workers die
    assert all(r.ok for r in web_results)
    assert hung and all(r.error and r.error.value == "timeout" for r in hung)
    assert any(r.error and "crashed" in (r.error_text or "") for r in conv)
    assert conv[-1].ok  # replaced
    lags = daemon.scheduler.stats.lags
    assert max(lags) < 0.25, f"a dispatch started {max(lags):.3f}s late"
