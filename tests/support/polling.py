"""Waiting for something to become true, with a deadline, instead of sleeping for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Return once `condition()` is true; fail the test if it is not within `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
