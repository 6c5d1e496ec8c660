"""A real `healthcheck run` subprocess on a free port, its log lines kept for assertions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class LiveDaemon:
    url: str
    log: list[str] = field(default_factory=list)  # every stderr line, JSON log events
    process: asyncio.subprocess.Process | None = None  # to signal (SIGHUP: reload)


@contextlib.asynccontextmanager
async def live_daemon(
    tmp_path: Path, document: dict, env: dict[str, str] | None = None
) -> AsyncIterator[LiveDaemon]:
    """`document` (listening on a free port, storing in tmp_path/hc.db) run as a daemon."""
    config = tmp_path / "regions.yaml"
    document = {
        "exporter": {"listen": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "hc.db")},
        **document,
    }
    config.write_text(yaml.safe_dump(document))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healthcheck",
        "run",
        "--config",
        str(config),
        "--log-format",
        "json",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    lines: list[str] = []
    port = None
    try:
        async with asyncio.timeout(30):
            while port is None:
                line = (await process.stderr.readline()).decode()
                assert line, "the daemon exited before listening:\n" + "".join(lines)
                lines.append(line)
                if json.loads(line).get("event") == "listening":
                    port = json.loads(line)["port"]

        async def keep() -> None:
            assert process.stderr is not None
            while line := await process.stderr.readline():
                lines.append(line.decode())

        reading = asyncio.create_task(keep())
        yield LiveDaemon(f"http://127.0.0.1:{port}", lines, process)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
    await reading
