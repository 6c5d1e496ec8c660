"""A helper process for work that would hold the daemon's GIL for seconds.

At 10,000 endpoints, reading uptime from SQLite and rendering /metrics are each seconds of
pure Python. In a thread they take the GIL from the event loop, and checks start late; in a
process of their own they cost the loop only the pickling of what they need.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from healthcheck.tuning import fix_mmap_threshold, release_free_memory

T = TypeVar("T")
_SPAWN = multiprocessing.get_context("spawn")


class OffloadError(Exception):
    """The helper process died, or the function it ran raised (the message says which)."""


class Offload:
    """Runs module-level functions in one spawned process, one call at a time.

    `call` blocks: call it from a worker thread (`asyncio.to_thread`). A dead process is
    replaced on the next call; the daemon gone, the process reads EOF and ends.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one exchange at a time on the one pipe

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def call(self, function: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._start()
            assert self._conn is not None
            try:
                self._conn.send((function, args))
                ok, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._stop()
                raise OffloadError(f"the {self.name} process died: {exc!r}") from exc
        if not ok:
            raise OffloadError(value)
        returned: T = value  # what `function` returned, back across the pipe
        return returned

    def _start(self) -> None:
        self._stop()
        parent, child = _SPAWN.Pipe(duplex=True)
        process = _SPAWN.Process(target=serve, args=(child,), name=self.name)
        process.daemon = True
        process.start()
        child.close()  # only the helper holds this end: the daemon gone, it reads EOF and ends
        self._process, self._conn = process, parent

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(1.0)
            if self._process.is_alive():
                self._process.kill()
            self._process = None

    def close(self) -> None:
        """Stop the process, if one was started; a call in progress fails at once."""
        if self._lock.acquire(blocking=False):
            try:
                self._stop()
            finally:
                self._lock.release()
        elif (process := self._process) is not None:
            process.kill()  # the caller's recv reads EOF and cleans up


def serve(conn: Connection) -> None:
    """The helper process: answer (function, args) with (ok, value) until the daemon hangs up."""
    fix_mmap_threshold()
    while True:
        try:
            function, args = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            answer: tuple[bool, Any] = (True, function(*args))
        except Exception as exc:  # never die on one bad call: the daemon reports it
            answer = (False, f"{type(exc).__name__}: {exc}")
        try:
            conn.send(answer)
        except (EOFError, OSError):
            return
        del function, args, answer
        release_free_memory()  # what the call freed, before the next one (seconds away)
