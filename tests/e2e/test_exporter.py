"""The daemon as a scrape target and a page: promtool, a real Prometheus, real Chromium."""

from __future__ import annotations

import asyncio
import json
import signal
import socket

import aiohttp
import pytest
import yaml
from browser import RenderedPage, dump_dom, find_chromium
from tools import require


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def daemon_url(start_daemon, fleet, tmp_path, closed_port):
    """A real `healthcheck run` with one healthy, one failing and one refused endpoint."""
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "250ms", "timeout": "200ms", "retries": 0},
                "exporter": {"listen": "127.0.0.1:0"},
                "storage": {"path": str(tmp_path / "hc.db")},
                "regions": {
                    "us-west": {"endpoints": [{"name": "api", "url": f"{fleet.http}/ok"}]},
                    "eu-west": {
                        "endpoints": [
                            {"name": "api", "url": f"{fleet.http}/fail"},
                            {"name": "db", "kind": "tcp", "address": f"127.0.0.1:{closed_port}"},
                        ]
                    },
                },
            }
        )
    )
    process = await start_daemon(config)
    port = None
    try:
        async with asyncio.timeout(15):
            while port is None:
                line = await process.stderr.readline()
                assert line, "the daemon exited before listening"
                event = json.loads(line)
                if event.get("event") == "listening":
                    port = event["port"]
        drain = asyncio.create_task(process.stderr.read())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
    drain.cancel()


async def test_promtool_accepts_the_exposition(daemon_url) -> None:
    promtool = require("promtool", package="prometheus")
    async with aiohttp.ClientSession() as session:
        await asyncio.sleep(1.0)  # a few rounds of checks, so every family has series
        async with session.get(f"{daemon_url}/metrics") as response:
            body = await response.read()
    assert b"healthcheck_probe_success" in body
    check = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await check.communicate(body)
    assert check.returncode == 0, out.decode()


async def test_a_real_prometheus_scrapes_and_answers_queries(daemon_url, tmp_path) -> None:
    prometheus = require("prometheus", package="prometheus")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "healthcheck",
                        "static_configs": [{"targets": [daemon_url.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{port}/api/v1/query"
    try:
        async with aiohttp.ClientSession() as session:

            async def query(expr: str) -> list:
                async with session.get(api, params={"query": expr}) as response:
                    body = await response.json()
                    assert body["status"] == "success", body
                    return body["data"]["result"]

            async def until_answered(expr: str) -> list:
                deadline = asyncio.get_running_loop().time() + 30
                while True:
                    try:
                        found = await query(expr)
                        if found:
                            return found
                    except aiohttp.ClientError:
                        pass  # Prometheus still starting
                    assert asyncio.get_running_loop().time() < deadline, f"no answer for {expr}"
                    await asyncio.sleep(0.5)

            success = await until_answered("healthcheck_probe_success")
            seen = {
                (s["metric"]["region"], s["metric"]["endpoint"]): s["value"][1] for s in success
            }
            assert seen == {
                ("us-west", "api"): "1",
                ("eu-west", "api"): "0",
                ("eu-west", "db"): "0",
            }
            up = await until_answered('up{job="healthcheck"}')
            assert up[0]["value"][1] == "1"
            failure = await until_answered("healthcheck_region_regional_failure == 1")
            assert [s["metric"]["region"] for s in failure] == ["eu-west"]
            errors = await until_answered("sum by (error) (healthcheck_check_errors_total)")
            assert {s["metric"]["error"] for s in errors} == {"http_status", "connection_refused"}
            rate = await until_answered(
                'rate(healthcheck_probe_duration_seconds_count{region="us-west"}[5s]) > 0'
            )
            assert rate
    finally:
        process.terminate()
        await process.wait()


async def test_the_status_page_renders_the_running_daemon(daemon_url, tmp_path) -> None:
    chromium = find_chromium()
    await asyncio.sleep(1.0)
    dom = await dump_dom(chromium, tmp_path / "profile", f"{daemon_url}/")
    page = RenderedPage(dom)
    assert sorted(page.regions) == ["eu-west", "us-west"]  # the page puts the worst first
    text = page.visible
    assert "REGIONAL FAILURE" in text
    for word in ("Healthy", "Unhealthy"):
        assert word in text
    assert "HTTP 503" in text or "HTTP 500" in text
    assert page.bars["us-west/api"] == 90 and page.bars["eu-west/db"] == 90
