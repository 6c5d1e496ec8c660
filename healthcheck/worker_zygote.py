"""The zygote: one process with the probe worker's modules imported, that forks the workers.

Started as its own interpreter, each worker paid ~0.55 s of CPU for its imports (Python,
asyncio, aiohttp's client, the probe kinds): on a 2-core host, 1.1 s every time a daemon
started, and again on every restart. The zygote pays it once, and a fork costs milliseconds.
Under the CLI it is forked from the daemon itself before any thread or event loop exists, so
it pays nothing at all; otherwise (a daemon run inside another program) it is started as
`python -c`, from a thread-safe fork+exec.

The zygote is the daemon's child and each worker the zygote's: every process is still under
the daemon. Each holds PR_SET_PDEATHSIG, so a daemon that dies takes the zygote with it, and
the zygote its workers. A worker's socket reaches it as a file descriptor passed over the
zygote's own socketpair (SCM_RIGHTS), never in argv or the environment. The zygote reaps its
workers and reports each one's pid and exit status back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import selectors
import signal
import socket
import struct
import sys
import threading
from collections import deque
from pathlib import Path

# What the zygote imports before its first fork: the worker and the probe kinds a worker
# imports for its endpoints. Not the canaries: CUDA state must not cross a fork (the ONNX
# kind starts its own `spawn` process from the worker that has it).
PRELOAD = (
    "healthcheck.probe_worker",
    "healthcheck.probes.http",
    "healthcheck.probes.tcp",
    "healthcheck.probes.tls",
    "healthcheck.probes.dns",
)

# One record from the zygote: kind, pid, and the exit code (or errno of a failed fork).
_RECORD = struct.Struct("!cqq")
_FORKED, _EXITED, _FAILED = b"F", b"X", b"E"
_FORK = b"f"  # the one request: fork a worker on the file descriptor sent with it
_PR_SET_PDEATHSIG = 1

# The zygote's entry point when started as its own interpreter: sys.path gets this package's
# root at the end, so whatever the daemon was started with (a venv, a source tree) finds the
# same code and nothing is shadowed.
_BOOT = (
    "import sys; sys.path.append(sys.argv[2]); "
    "from healthcheck.worker_zygote import main; "
    "sys.exit(main(int(sys.argv[1]), int(sys.argv[3]), int(sys.argv[4])))"
)
_ROOT = str(Path(__file__).resolve().parent.parent)


class Forked:
    """A worker the zygote forked, as the pool sees it: pid, returncode and wait(), as an
    asyncio subprocess offers them. The exit status is the zygote's to read: it is the
    parent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = asyncio.Event()

    def ended(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._ended.set()

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode


class Zygote:
    """The daemon's side of the zygote: fork() a worker on a socket; close() when the workers
    are gone. A zygote that died is started again, as its own interpreter, on the next fork."""

    def __init__(self) -> None:
        self._control: socket.socket | None = None
        self._pid: int | None = None
        self._process: asyncio.subprocess.Process | None = None  # started as an interpreter
        self._reader: asyncio.Task[None] | None = None
        self._waiting: deque[asyncio.Future[Forked]] = deque()
        self._workers: dict[int, Forked] = {}
        self._starting = asyncio.Lock()
        # The workers' nice: the daemon's before it yields to them (tuning.yield_to_workers).
        self._nice = os.getpriority(os.PRIO_PROCESS, 0)

    @property
    def pid(self) -> int | None:
        return self._pid

    @classmethod
    def fork_here(cls) -> Zygote:
        """A zygote forked from this process, which has imported what a worker needs: only
        while no other thread exists (a fork copies locks another thread may hold) and no
        event loop runs. Otherwise the returned zygote starts as an interpreter when needed."""
        zygote = cls()
        if threading.active_count() != 1 or _loop_running():
            return zygote
        ours, theirs = socket.socketpair()
        daemon = os.getpid()
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 1
            try:
                ours.close()
                code = main(theirs.detach(), daemon)
            except BaseException:
                sys.excepthook(*sys.exc_info())
            finally:
                _exit(code)
        theirs.close()
        zygote._control, zygote._pid = ours, pid
        return zygote

    async def fork(self, sock: socket.socket) -> Forked:
        """A new worker process with `sock` as its end of the daemon's socketpair; OSError
        if none could be started."""
        async with self._starting:
            if self._control is None:
                await self._start()
            control = self._control
            assert control is not None
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(control), name="zygote")
            forked: asyncio.Future[Forked] = asyncio.get_running_loop().create_future()
            self._waiting.append(forked)
            try:
                socket.send_fds(control, [_FORK], [sock.fileno()])
            except OSError:
                self._waiting.remove(forked)
                raise
        return await forked

    def discard(self) -> None:
        """End a zygote forked here that no worker will need, before any event loop runs: it
        reads the end of its socket and exits at once."""
        control, self._control = self._control, None
        if control is not None:
            control.close()
        if self._pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = None

    async def close(self) -> None:
        """Tell the zygote to end (its workers should have ended first: they die with it)."""
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_WR)
        if self._reader is not None:
            await self._reader
        elif control is not None:  # never used: nobody reads it
            control.close()
            await self._reap()

    async def _start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _BOOT,
                str(theirs.fileno()),
                _ROOT,
                str(os.getpid()),
                str(self._nice),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._control, self._pid = ours, self._process.pid

    async def _read(self, control: socket.socket) -> None:
        """Take the zygote's records until it ends; then every worker is gone with it."""
        loop = asyncio.get_running_loop()
        control.setblocking(False)
        buffer = b""
        try:
            while chunk := await loop.sock_recv(control, 4096):
                buffer += chunk
                while len(buffer) >= _RECORD.size:
                    self._record(*_RECORD.unpack_from(buffer))
                    buffer = buffer[_RECORD.size :]
        except OSError:
            pass
        finally:
            control.close()
            if self._control is control:
                self._control = None
            self._reader = None
            gone = OSError("the probe worker zygote ended")
            while self._waiting:
                self._waiting.popleft().set_exception(gone)
            for worker in self._workers.values():  # PR_SET_PDEATHSIG: killed with it
                worker.ended(-signal.SIGKILL)
            self._workers.clear()
            await self._reap()

    def _record(self, kind: bytes, pid: int, value: int) -> None:
        if kind == _FORKED:
            forked = self._workers[pid] = Forked(pid)
            self._waiting.popleft().set_result(forked)
        elif kind == _FAILED:
            self._waiting.popleft().set_exception(OSError(value, os.strerror(value)))
        elif kind == _EXITED and (worker := self._workers.pop(pid, None)) is not None:
            worker.ended(value)

    async def _reap(self) -> None:
        process, pid, self._process, self._pid = self._process, self._pid, None, None
        if process is not None:
            await process.wait()
        elif pid is not None:  # forked by fork_here: our own child to reap
            await asyncio.to_thread(_wait_for, pid)


def _wait_for(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# -- the zygote process --------------------------------------------------------------------------
def main(fd: int, daemon: int, nice: int | None = None) -> int:
    """Fork a worker for each socket the daemon sends; report pids and exits; end when the
    daemon closes its end (or dies: then the kernel ends this process). Started as its own
    interpreter by a daemon that has since yielded to its workers (tuning.yield_to_workers),
    it goes back to the workers' `nice` where the OS lets it (a privileged daemon)."""
    if nice is not None and os.getpriority(os.PRIO_PROCESS, 0) != nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    control = socket.socket(fileno=fd)
    control.setblocking(True)
    _die_with_parent(daemon)
    for name in PRELOAD:
        __import__(name)
    from healthcheck.probe_worker import main as worker_main
    from healthcheck.probes.tls import system_context
    from healthcheck.tuning import release_free_memory

    system_context()  # the CA store, loaded once here rather than in each worker's loop

    gc.collect()
    gc.freeze()  # what every worker shares stays out of their collectors' (copying) sight
    release_free_memory()  # what the imports left free: not in this RSS, nor in each worker's
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    me = os.getpid()
    with selectors.DefaultSelector() as selector:
        selector.register(control, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is not control:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    _reap(control)
                    continue
                message, fds, _, _ = socket.recv_fds(control, 1, 1)
                if not message:
                    return 0
                for child_fd in fds:
                    try:
                        pid = os.fork()
                    except OSError as exc:
                        os.close(child_fd)
                        control.sendall(_RECORD.pack(_FAILED, 0, exc.errno or 0))
                        continue
                    if pid == 0:  # a worker
                        code = 1
                        try:
                            signal.set_wakeup_fd(-1)
                            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                            selector.close()
                            control.close()
                            os.close(wake_r)
                            os.close(wake_w)
                            _die_with_parent(me)
                            code = worker_main([str(child_fd)])
                        except BaseException:
                            sys.excepthook(*sys.exc_info())
                        finally:
                            _exit(code)
                    os.close(child_fd)
                    control.sendall(_RECORD.pack(_FORKED, pid, 0))


def _exit(code: int) -> None:
    """End a forked process without the exit handlers it inherited (the daemon's: they are
    the daemon's to run), its output flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _reap(control: socket.socket) -> None:
    """Each worker that ended, with its exit code (negative: the signal that killed it)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        control.sendall(_RECORD.pack(_EXITED, pid, os.waitstatus_to_exitcode(status)))


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent ends (Linux); if the parent already ended before
    this was set, end now. Signals for the daemon's process group are the daemon's to act on:
    it drains and stops its workers."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)
