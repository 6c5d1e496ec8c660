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
    log = directory / "alertmanager.log"
    # It binds a port number it is given: one picked free can be taken before it starts (another
    # process's server, an outgoing connection), and then it exits. Another number, then.
    for _attempt in range(5):
        port = free_port()
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                binary,
                f"--config.file={config_file}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=output,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            if await _ready(process, url):
                yield url
                return
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
        said = log.read_text(errors="replace")
        assert "address already in use" in said, f"Alertmanager exited (bad config?):\n{said}"
    raise AssertionError(f"Alertmanager found no free port:\n{log.read_text(errors='replace')}")


async def _ready(process: asyncio.subprocess.Process, url: str) -> bool:
    """Wait until Alertmanager answers /-/ready (True) or has exited (False)."""
    # Each request bounded: whatever else holds the port may take the connection and never
    # answer it.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        deadline = time.monotonic() + 30
        while process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return True
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            await asyncio.sleep(0.2)
    return False


async def alerts(url: str) -> list[dict]:
    """What Alertmanager holds now (resolved alerts are not listed)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v2/alerts") as response:
        assert response.status == 200
        return await response.json()
