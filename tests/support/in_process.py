"""The daemon run inside the test's own event loop, for tests that read its objects."""

from __future__ import annotations

import asyncio

from healthcheck.daemon import Daemon, open_writer
from healthcheck.front import HttpFront
from healthcheck.targets import Config


class Running:
    """`Daemon.run` as a task on this loop, with its storage writer, until close()."""

    def __init__(self, config: Config) -> None:
        self.daemon = Daemon(config, open_writer(config.storage), front=HttpFront)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.daemon.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        await self.task
