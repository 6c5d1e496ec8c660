"""Which event loop the daemon, its probe workers and `--once` run on: asyncio's own, or
uvloop with `HEALTHCHECK_EVENT_LOOP=uvloop` (or `auto`: uvloop where it is installed).

uvloop's loop, transports and timers are C (libuv): per check it saves the Python of asyncio's
selector loop (`_run_once`, handles, `sock_connect`, the socket transports), which measured as
most of a probe worker's CPU besides aiohttp itself (~15 % of a check's CPU, bench/README.md).
Everything here uses only the public loop API, so both loops run the same code; the tests run
on either (see tests/conftest.py). Nothing forks under a running loop of either kind (a loop
must not cross a fork): the CLI forks the zygote before it makes the daemon's loop
(worker_zygote.Zygote.fork_here), and each worker the zygote forks makes its own.

Not the default, for one measured reason: tests/e2e/test_starved_prober.py with `workers: 1`
fails on uvloop. Starved of CPU (nice 19 beside a busy loop on its core), the daemon on uvloop
made its checks far more slowly: under 100 requests in the test's 60 s in 2 runs of 3, ~44 s in
the third; asyncio's loop took ~15 s (2 of 2 passed). It is the daemon's loop, not the test's:
test on asyncio and daemon on uvloop, 100 requests in 41 s; the other way, 11 s. The daemon on
uvloop at nice 19 got 2.5 checks/s done where asyncio got 9 at the same nice, and unstarved
both used the same CPU (20 s, 5 endpoints every 200 ms). Cause not found; a lead: `strace -c
-f` on the starved daemon for 15 s counted 996 futex calls on uvloop against 264 on asyncio
(threads handing over the GIL, each handover a wait for the CPU when starved). One difference
found on the way: uvloop (libuv) runs the timers that fell due before the callbacks the last
poll made ready, so an answer read just before the process is held up loses to a timeout that
fell due meanwhile; asyncio's loop lets the woken task run first (bench/uvloop_timer_order.py).
A probe timeout that let ready callbacks run first fixed that script but not the starved test
(2 of 2 still failed), so that is not the cause, or not all of it.

The earlier reason, the killed-worker e2e test timing out first checks on uvloop (5 runs of 6),
was not the loop: at that commit (15d5c75, workers started as fresh interpreters that loaded
the CA store on their first check) it failed on asyncio too under the same load (1 of 3;
uvloop 2 of 3; load ~5, `taskset -c 0`), with the same first-check timeouts. Since workers are
forked from a zygote that loaded the CA store once, it passed 8 of 8 on uvloop under that load,
and tests/e2e/test_workers.py 6 of 6 (3 on one core).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from healthcheck.errors import ConfigError

ENV = "HEALTHCHECK_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop", "auto")
DEFAULT = "asyncio"
T = TypeVar("T")


def choice() -> str:
    """The setting from the environment: asyncio (the default), uvloop or auto. A ConfigError
    (exit 3) naming the variable and its value for anything else."""
    value = os.environ.get(ENV, DEFAULT).strip().lower() or DEFAULT
    if value not in CHOICES:
        raise ConfigError(f"{ENV}={value!r}: must be one of {', '.join(CHOICES)}")
    return value


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's new_event_loop, or None for asyncio's default. `auto` falls back to asyncio
    quietly when uvloop is not installed (a platform it has no wheel for); `uvloop` asked for
    explicitly and missing is a ConfigError."""
    wanted = choice()
    if wanted == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if wanted == "uvloop":
            raise ConfigError(f"{ENV}=uvloop but uvloop is not installed") from None
        return None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def name(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop` or `asyncio`, for /api/v1/self and the start-up log."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
