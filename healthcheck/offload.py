"""A helper process for work that would hold the daemon's GIL for seconds.

At 10,000 endpoints, reading uptime from SQLite and rendering /metrics are each seconds of
pure Python. In a thread they take the GIL from the event loop, and checks start late; in a
process of their own they cost the loop only the pickling of what they need.

The helper is a fresh interpreter (a thread-safe fork+exec: the daemon has threads by then)
that talks over a socketpair with multiprocessing's Connection (pickles, length-framed).
Not multiprocessing's `spawn` context: its every start also started multiprocessing's
resource tracker, a third interpreter (13 MB of RSS) that only cleans up named semaphores
and shared memory, of which the helper uses none; and its child imported the daemon's
`__main__` (the CLI) again before its first call.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from healthcheck.children import start_child, wait_exit
from healthcheck.tuning import fix_mmap_threshold, release_free_memory

T = TypeVar("T")
# The helper's entry point (healthcheck.children.start_child runs it).
_BOOT = (
    "import sys; sys.path.append(sys.argv[2]); "
    "from healthcheck.offload import main; main(int(sys.argv[1]))"
)
# How long a helper whose pipe was closed gets to end on its own before it is killed.
_STOP_WAIT = 1.0


class OffloadError(Exception):
    """The helper process died, or the function it ran raised (the message says which)."""


class Offload:
    """Runs module-level functions in one helper process, one call at a time.

    `call` blocks: call it from a worker thread (`asyncio.to_thread`). A dead process is
    replaced on the next call; the daemon gone, the process reads EOF and ends.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one exchange at a time on the one pipe

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def call(self, function: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
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
        self._process, self._conn = start_child(_BOOT)  # the daemon gone, it reads EOF

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if wait_exit(self._process, _STOP_WAIT) is None:
                self._process.kill()
                self._process.wait()
            self._process = None

    def close(self) -> None:
        """Stop the process, if one was started; a call in progress fails at once."""
        if self._lock.acquire(blocking=False):
            try:
                self._stop()
            finally:
                self._lock.release()
        elif (process := self._process) is not None:
            with contextlib.suppress(OSError):
                process.kill()  # the caller's recv reads EOF and cleans up (reaps it)


def main(fd: int) -> None:
    """The helper process's entry point: serve on the socket `fd`. The terminal's Ctrl-C is
    the daemon's to act on (it drains and closes this pipe), not a reason to die mid-call."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(Connection(fd))


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
