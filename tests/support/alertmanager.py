"""A real Alertmanager on loopback (Debian package prometheus-alertmanager), and its v2 API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from tools import require
from webhook import free_port


@contextlib.asynccontextmanager
async def running_alertmanager(directory: Path, config: str) -> AsyncIterator[str]:
    """Alertmanager with `config` (YAML text), ready; yields its base URL."""
    binary = require("prometheus-alertmanager", "alertmanager", package="prometheus-alertmanager")
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "alertmanager.yml"
    config_file.write_text(config)
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config_file}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                assert process.returncode is None, "Alertmanager exited (bad config?)"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/ready") as response:
                        if response.status == 200:
                            break
                assert time.monotonic() < deadline, "Alertmanager did not become ready"
                await asyncio.sleep(0.2)
        yield url
    finally:
        process.terminate()
        await process.wait()


async def alerts(url: str) -> list[dict]:
    """What Alertmanager holds now (resolved alerts are not listed)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v2/alerts") as response:
        assert response.status == 200
        return await response.json()
