"""One way uvloop and asyncio's loop differ (healthcheck/event_loop.py): an answer that came in
just before the process was held up, against a timeout that fell due meanwhile.

    .venv/bin/python bench/uvloop_timer_order.py

asyncio's loop resumes the task that was waiting for the answer before it runs the timers that
fell due, so the answer stands; uvloop (libuv) runs the due timers first, and the timeout
cancels a check whose answer was already read. On 0.23.0: `asyncio: answered`, `uvloop: timed
out although the answer was in`.
"""

from __future__ import annotations

import asyncio
import socket
import time

import uvloop


async def answered_in_time() -> str:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:  # the answer is read (poll phase), then the process is held up
        loop.remove_reader(ours)
        answer.set_result(ours.recv(16))
        time.sleep(0.3)

    loop.add_reader(ours, readable)
    loop.call_later(0.05, theirs.send, b"pong")  # the answer after 50 ms of a 200 ms deadline
    try:
        async with asyncio.timeout(0.2):
            await answer
        return "answered"
    except TimeoutError:
        return "timed out although the answer was in"
    finally:
        ours.close()
        theirs.close()


def main() -> None:
    for name, factory in (("asyncio", None), ("uvloop", uvloop.new_event_loop)):
        with asyncio.Runner(loop_factory=factory) as runner:
            print(f"{name}: {runner.run(answered_in_time())}")


if __name__ == "__main__":
    main()
