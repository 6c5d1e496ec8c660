"""The daemon's side of a canary worker: start it, ask it, and kill it when it hangs or dies.

Inference never runs in the daemon's event loop or threads: a CUDA call that hangs or a provider
that crashes takes down only the worker, which is replaced on the next check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
from multiprocessing.connection import Connection
from typing import Any

from healthcheck.children import start_child, wait_exit

log = logging.getLogger("inference_probe.canary")
# A fresh interpreter (fork+exec), not a fork: it shares no threads, locks or CUDA state with
# the probe worker. Not multiprocessing's `spawn` either: each start of one also started
# multiprocessing's resource tracker (an interpreter of its own, ~13 MB of RSS) for named
# semaphores and shared memory the canary never uses (healthcheck.children.start_child).
_BOOT = (
    "import sys; sys.path.append(sys.argv[2]); "
    "from inference_probe.worker import serve_fd; serve_fd(int(sys.argv[1]))"
)


class WorkerDied(Exception):
    """The worker process ended while a request was in hand."""

    def __init__(self, exitcode: int | None, by_daemon: bool = False) -> None:
        self.exitcode = exitcode
        self.by_daemon = by_daemon  # stopped by us meanwhile (reload, shutdown), not a crash
        stopped = "the daemon stopped the worker (reload or shutdown)"
        super().__init__(stopped if by_daemon else describe_exit(exitcode))


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "the worker closed its pipe"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the worker was killed by {name}"
    return f"the worker exited with status {exitcode}"


class CanaryWorker:
    """One worker process for one canary endpoint; requests one at a time."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self.loaded = False
        self.starts = 0
        self.killed = 0
        self.hung = False  # the last request was abandoned and the worker killed

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _start(self) -> None:
        # numpy and onnxruntime: imported by the child, never by the daemon or its worker; its
        # probe worker gone, it reads EOF
        process, conn = start_child(_BOOT)
        with contextlib.suppress(OSError):  # it died at once: the first request says so
            conn.send(self.spec)
        self.process, self._conn = process, conn
        self.loaded = False
        self.starts += 1

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for the reply, however long: the caller bounds it (a
        cancelled call kills the worker). Raises WorkerDied if the process ends meanwhile."""
        if self.process is not None and self.process.poll() is not None:
            # It died between checks (OOM killer, a crash in a driver thread): say so once;
            # the next call starts a fresh one.
            raise WorkerDied(await self._reap())
        if self.process is None:
            await asyncio.to_thread(self._start)
        self.hung = False
        conn = self._conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        try:
            conn.send(request)
        except (BrokenPipeError, OSError):
            raise WorkerDied(await self._reap()) from None
        readable = loop.create_future()
        fd = conn.fileno()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, wake)
        try:
            try:
                await readable
            finally:
                loop.remove_reader(fd)
        except asyncio.CancelledError:
            # Timed out (or the daemon stops): its answer would come late and answer the next
            # request, and whatever it is stuck in may never end. Kill it; the next call starts
            # a fresh one.
            self.hung = True
            self.kill()
            raise
        try:
            reply: dict[str, Any] = conn.recv()
        except (EOFError, OSError):
            if self._conn is not conn:  # kill() ran while we waited: our doing, not the worker's
                raise WorkerDied(None, by_daemon=True) from None
            raise WorkerDied(await self._reap()) from None
        if request.get("op") in ("load", "check") and "error" not in reply:
            self.loaded = True
        return reply

    async def _reap(self) -> int | None:
        process = self.process
        if process is not None:
            await asyncio.to_thread(_join, process, 2.0)
        code = process.returncode if process is not None else None
        self.kill()
        return code

    def kill(self) -> None:
        """Stop the worker now (SIGKILL); the next call starts a fresh one."""
        process, conn = self.process, self._conn
        self.process, self._conn, self.loaded = None, None, False
        if conn is not None:
            conn.close()
        if process is not None:
            if process.poll() is None:
                process.kill()
                self.killed += 1
            # SIGKILL is sent at once, but the process ends only once the kernel runs it: on a
            # busy core that took 0.2 s, a stall of the event loop when joined on it. Reap the
            # zombie in a thread when a loop runs here.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                _join(process, 1.0)
            else:
                loop.run_in_executor(None, _join, process, 1.0)

    def close(self) -> None:
        self.kill()


def _join(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Reap the process if it ends within `timeout` seconds."""
    wait_exit(process, timeout)
