"""The uvloop loop the daemon runs (healthcheck/event_loop.py) behaves as asyncio's where a
starved prober needs it to: a connect to an IP address needs no thread, and an answer read
before the process was held up beats a timeout that fell due meanwhile. Each case runs in a
fresh interpreter, so no earlier test has started libuv's thread pool."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("uvloop")

CONNECT = """
import asyncio, os, socket
from healthcheck import event_loop

async def main():
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0), backlog=8) as server:  # the kernel accepts
        for _ in range(3):
            with socket.socket() as sock:
                sock.setblocking(False)
                await loop.sock_connect(sock, server.getsockname())
    tasks = os.listdir("/proc/self/task")
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks]
    print(event_loop.name(loop), sorted(set(names)))

event_loop.run(main())
"""

ORDER = """
import asyncio, socket, time
from healthcheck import event_loop

async def main():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    loop = asyncio.get_running_loop()
    answer = loop.create_future()

    def readable():  # the answer is read, then the process is held up past the deadline
        loop.remove_reader(ours)
        answer.set_result(ours.recv(16))
        time.sleep(0.3)

    loop.add_reader(ours, readable)
    loop.call_later(0.05, theirs.send, b"pong")
    try:
        async with asyncio.timeout(0.2):
            print(event_loop.name(loop), (await answer).decode())
    except TimeoutError:
        print(event_loop.name(loop), "timed out although the answer was in")

event_loop.run(main())
"""


def run(script: str, loop: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={"HEALTHCHECK_EVENT_LOOP": loop, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_connect_to_an_ip_address_starts_no_resolver_thread(loop) -> None:
    """Stock uvloop resolves the address of every sock_connect in libuv's thread pool
    (threads named libuv-worker), a hand-over a starved daemon waited on for each check."""
    name, threads = run(CONNECT, loop).split(" ", 1)
    assert name == loop
    assert "libuv-worker" not in threads


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_an_answer_read_before_a_stall_beats_the_timeout_that_fell_due(loop) -> None:
    """libuv runs timers that fell due before the callbacks the last poll made ready; the
    daemon's uvloop queues them behind, as asyncio's loop does (bench/uvloop_timer_order.py
    shows stock uvloop timing out)."""
    assert run(ORDER, loop) == f"{loop} pong"
