"""Which event loop the daemon, its probe workers and `--once` run on: uvloop where it is
installed (`HEALTHCHECK_EVENT_LOOP` unset or `auto`), asyncio's own where it is not or with
`HEALTHCHECK_EVENT_LOOP=asyncio`; `uvloop` insists on it (a ConfigError where it is missing).
The daemon, its workers and `--once` all run the same choice.

uvloop's loop, transports and timers are C (libuv): per check it saves the Python of asyncio's
selector loop (`_run_once`, handles, the socket transports), which measured as most of a probe
worker's CPU besides aiohttp itself (bench/README.md). Everything here uses only the public
loop API, so both loops run the same code; the tests run on either (see tests/conftest.py).
Nothing forks under a running loop of either kind (a loop must not cross a fork): the CLI forks
the zygote before it makes the daemon's loop (worker_zygote.Zygote.fork_here), and each worker
the zygote forks makes its own.

The loop we run on uvloop is `_uvloop_loop()`'s subclass, for one reason that kept uvloop
opt-in until found: uvloop's `sock_connect` (which aiohttp's connector calls, through
aiohappyeyeballs, for every new connection) asks `self.getaddrinfo(host, port, family=...)`
with socket type 0, and uvloop resolves without a thread only for SOCK_STREAM or SOCK_DGRAM,
so every connect, to an IP address too, went through libuv's thread pool: a futex wake of a
pool thread, getaddrinfo there, an eventfd back to the loop. asyncio's `sock_connect` takes an
IP address as resolved. Unstarved that costs little; starved of CPU (nice 19 beside a busy loop
on the core, tests/e2e/test_starved_prober.py) each hand-over waits for the scheduler to run a
nice-19 thread, twice, and the checks timed out before their request left: the daemon on
uvloop made 1.1 requests/s where asyncio's made 10.7 (bench/starved_bench.py), and `strace -f`
showed the pool threads' futexes and the loop's eventfd reads after each `socket()` (the "4x
the futex calls" found before). The subclass answers a numeric host itself (libc getaddrinfo
with AI_NUMERICHOST | AI_NUMERICSERV, which never leaves the process), the same answer the pool
gave; a name still goes to the pool. With that, uvloop made 8.5 requests/s against asyncio's
10.3 in the same starved set-up.

The second difference: uvloop (libuv) runs the timers that fell due before the callbacks the
last poll made ready, so an answer read (or a connect completed) just before the process is
held up loses to a timeout that fell due meanwhile; asyncio's loop lets the woken task run
first (bench/uvloop_timer_order.py). Alone it did not explain the slowdown (a probe timeout
that let ready callbacks run first did not fix it while the thread pool was in the way); with
the pool gone it was the rest of the gap: all on one core under load, asyncio 2.5 requests/s,
uvloop with the pool fix 2.6, with the subclass's `call_later` (a due timer's callback queued
behind the ready ones, as asyncio does) 5.6. Figures provisional (shared VM), from
bench/starved_bench.py; bench/README.md has the commands.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from healthcheck.errors import ConfigError

ENV = "HEALTHCHECK_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop", "auto")
DEFAULT = "auto"
T = TypeVar("T")
# What getaddrinfo answers (uvloop's stub for it).
_AddrInfo = tuple[
    socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int] | tuple[str, int, int, int]
]


def choice() -> str:
    """The setting from the environment: auto (the default), uvloop or asyncio. A ConfigError
    (exit 3) naming the variable and its value for anything else."""
    value = os.environ.get(ENV, DEFAULT).strip().lower() or DEFAULT
    if value not in CHOICES:
        raise ConfigError(f"{ENV}={value!r}: must be one of {', '.join(CHOICES)}")
    return value


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop (the subclass below), or None for asyncio's default. `auto` (the default)
    falls back to asyncio quietly when uvloop is not installed (a platform it has no wheel
    for); `uvloop` asked for explicitly and missing is a ConfigError."""
    wanted = choice()
    if wanted == "asyncio":
        return None
    try:
        import uvloop  # noqa: F401 (whether it imports)
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError(f"{ENV}=uvloop but uvloop is not installed") from None
        return None
    return _uvloop_loop()


@functools.cache
def _uvloop_loop() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's Loop with the two changes the module's docstring explains: a numeric host given
    to getaddrinfo with no socket type (as its own sock_connect asks for every connection) is
    answered in the process, not by libuv's thread pool (the same answer, without two thread
    hand-overs; a name still goes to the pool), and a timer that falls due runs after the
    callbacks already ready, as on asyncio's loop."""
    import uvloop

    class Loop(uvloop.Loop):
        async def getaddrinfo(  # type: ignore[override]  # uvloop's stub's type, not typeshed's
            self,
            host: str | bytes | None,
            port: str | bytes | int | None,
            *,
            family: int = 0,
            type: int = 0,
            proto: int = 0,
            flags: int = 0,
        ) -> list[_AddrInfo]:
            if type == 0 and isinstance(host, str) and isinstance(port, int | str):
                numeric = flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
                try:
                    found = socket.getaddrinfo(host, port, family, type, proto, numeric)
                    return cast(list[_AddrInfo], found)
                except (socket.gaierror, UnicodeError):
                    pass  # a name or a service name: the pool resolves it
            return await super().getaddrinfo(
                host, port, family=family, type=type, proto=proto, flags=flags
            )

        def call_later(
            self,
            delay: float,
            callback: Callable[..., object],
            *args: object,
            context: contextvars.Context | None = None,
        ) -> asyncio.TimerHandle:
            # A timer that falls due queues its callback behind the callbacks already ready,
            # as asyncio's loop does, instead of running it first (libuv's order): an answer
            # read before a starved process was held up is taken before its timeout fires.
            # call_at comes here too. Cancelled between falling due and running: not run.
            def due() -> None:
                self.call_soon(run, context=context)

            def run() -> None:
                if not timer.cancelled():
                    callback(*args)

            timer = super().call_later(delay, due, context=context)
            return timer

    return cast(Callable[[], asyncio.AbstractEventLoop], Loop)


def name(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop` or `asyncio`, for /api/v1/self and the start-up log (uvloop's subclass here
    included; a process that never imported uvloop runs asyncio's)."""
    uvloop = sys.modules.get("uvloop")
    return "uvloop" if uvloop is not None and isinstance(loop, uvloop.Loop) else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the chosen loop; a choice that cannot be had is a ConfigError,
    and `main` is closed unrun (no "never awaited" warning after the error)."""
    try:
        factory = loop_factory()
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
