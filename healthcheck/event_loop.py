"""Which event loop the daemon, its probe workers and `--once` run on: uvloop where it is
installed (the default, `auto`), asyncio's own with `HEALTHCHECK_EVENT_LOOP=asyncio` or where
uvloop has no wheel; `uvloop` insists on it.

uvloop's loop, transports and timers are C (libuv): per check it saves the Python of asyncio's
selector loop (`_run_once`, handles, `sock_connect`, the socket transports), which measured as
most of a probe worker's CPU besides aiohttp itself (~15 % of a check's CPU, bench/README.md).
Everything here uses only the public loop API, so both loops run the same code; the tests run
on either (see tests/conftest.py). Nothing forks under a running loop of either kind (a
forked uvloop is unusable): the CLI forks the zygote before it makes the daemon's loop
(worker_zygote.Zygote.fork_here), and each worker the zygote forks makes its own.

uvloop was kept opt-in for a while because tests/e2e/test_workers.py's killed-worker test saw
a worker's first checks time out on a loaded VM (5 runs of 6 on uvloop, 0 of 3 on asyncio).
That was not the loop: at that commit (15d5c75, workers started as fresh interpreters that
loaded the CA store on their first check) the test failed on asyncio too under the same load
(1 of 3 asyncio, 2 of 3 uvloop, load ~5, `taskset -c 0`), with the same first-check timeouts.
Since workers are forked from a zygote that loaded the CA store once, it passed every run on
uvloop under that load (8 of 8, with the e2e worker tests 3 times over, also on one core).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from healthcheck.errors import ConfigError

ENV = "HEALTHCHECK_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop", "auto")
DEFAULT = "auto"
T = TypeVar("T")


def choice() -> str:
    """The setting from the environment: auto (the default), uvloop or asyncio. A ConfigError
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
