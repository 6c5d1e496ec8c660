"""The daemon run inside the test's own event loop, for tests that read its objects."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from clock import ManualClock
from polling import until

from healthcheck.daemon import Daemon, open_writer
from healthcheck.front import HttpFront
from healthcheck.targets import Config


class Running:
    """`Daemon.run` as a task on this loop, with its storage writer, until close().

    Given a manual clock, the daemon stamps with it and its scheduler and alert tick wait on
    it: each step of the clock lets the checks it started finish. The checks then run on this
    loop (`scheduler.workers: 1`): probe worker processes keep their own, real, time.
    """

    def __init__(self, config: Config, clock: ManualClock | None = None, **daemon: Any) -> None:
        """`daemon`: more arguments for Daemon."""
        if clock is not None:
            config = replace(config, scheduler=replace(config.scheduler, workers=1))
            daemon.update(clock=clock, timeline=clock)
            clock.settle = self.checks_done
        daemon.setdefault("front", HttpFront)
        self.daemon = Daemon(config, open_writer(config.storage), **daemon)
        self.clock = clock
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.daemon.run(self.stop))

    def checks_done(self) -> bool:
        scheduler = self.daemon.scheduler
        return scheduler is None or scheduler.in_flight == 0

    async def started(self) -> None:
        """Wait for the scheduler and the alert engine to wait on the manual clock."""
        assert self.clock is not None
        waiting = 1 + (self.daemon.alerts is not None)
        await until(lambda: self.clock.sleeping() >= waiting or self.task.done())
        assert not self.task.done(), self.task

    async def close(self) -> None:
        self.stop.set()
        await self.task
