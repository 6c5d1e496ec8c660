"""The HTTP server's own few threads for its blocking work, with a bound on what may wait.

`/metrics` renders and `/api/v1/results` reads once ran on the default executor, shared with
everything else, and queued without end: 50 clients left 148 of 150 scrapes unanswered
after 10 s, and abandoned requests were still rendered a minute after their clients had gone.
Here the server's work has threads of its own, and past the bound a request gets a 503 with
Retry-After at once instead of joining a queue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from healthcheck.errors import HealthcheckError

T = TypeVar("T")


class ServerBusy(HealthcheckError):
    """The server's blocking work is at its bound: answer 503, come back in `retry_after` s."""

    def __init__(self, what: str, retry_after: int = 1) -> None:
        super().__init__(f"{what}: the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(slots=True)
class ServingCounts:
    """What the server's bounded work did, for /metrics (counted on the event loop)."""

    renders: int = 0  # /metrics renders made
    scrapes_shared: int = 0  # scrapes answered with a render made for another
    busy: int = 0  # requests answered 503 (ServerBusy): the work was at its bound


class ServerThreads:
    """`threads` threads and at most `waiting` more calls queued for them; more is ServerBusy.

    A call counts until its function has returned, not until its caller stops waiting: a
    caller that went away (its client disconnected) frees a place only once the thread does,
    so the bound holds on the work itself. A call not yet started when its caller went away is
    dropped unrun.
    """

    def __init__(self, threads: int, waiting: int, name: str) -> None:
        self.limit = threads + waiting
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._admitted = 0
        self._lock = threading.Lock()  # released from the worker threads

    @property
    def admitted(self) -> int:
        """Calls running or queued now."""
        return self._admitted

    async def run(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in one of the threads; ServerBusy (naming `what`) at the bound."""
        with self._lock:
            if self._admitted >= self.limit:
                raise ServerBusy(what)
            self._admitted += 1
        try:
            future = self._executor.submit(function, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._admitted -= 1

    def close(self) -> None:
        """No new calls; the queued ones are dropped, a running one finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
