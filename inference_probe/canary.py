"""The daemon's side of a canary worker: start it, ask it, and kill it when it hangs or dies.

Inference never runs in the daemon's event loop or threads: a CUDA call that hangs or a provider
that crashes takes down only the worker, which is replaced on the next check."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("inference_probe.canary")
# spawn, not fork: a fresh interpreter shares no threads, locks or CUDA state with the daemon.
_CONTEXT = multiprocessing.get_context("spawn")


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
        self.process: BaseProcess | None = None
        self._conn: Connection | None = None
        self.loaded = False
        self.starts = 0
        self.killed = 0
        self.hung = False  # the last request was abandoned and the worker killed

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _start(self) -> None:
        from inference_probe import worker  # numpy and onnxruntime: the child's, not the CLI's

        parent, child = _CONTEXT.Pipe(duplex=True)
        process = _CONTEXT.Process(
            target=worker.main, args=(child, self.spec), name=f"canary {self.name}", daemon=True
        )
        process.start()
        child.close()
        self.process, self._conn = process, parent
        self.loaded = False
        self.starts += 1

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for the reply, however long: the caller bounds it (a
        cancelled call kills the worker). Raises WorkerDied if the process ends meanwhile."""
        if self.process is not None and not self.process.is_alive():
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
            await asyncio.to_thread(process.join, 2.0)
        code = process.exitcode if process is not None else None
        self.kill()
        return code

    def kill(self) -> None:
        """Stop the worker now (SIGKILL); the next call starts a fresh one."""
        process, conn = self.process, self._conn
        self.process, self._conn, self.loaded = None, None, False
        if conn is not None:
            conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
                self.killed += 1
            # SIGKILL is sent at once, but the process ends only once the kernel runs it: on a
            # busy core that took 0.2 s, a stall of the event loop when joined on it. Reap the
            # zombie in a thread when a loop runs here.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                process.join(1.0)
            else:
                loop.run_in_executor(None, process.join, 1.0)

    def close(self) -> None:
        self.kill()
