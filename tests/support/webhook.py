"""A real HTTP receiver on loopback for alert deliveries (Apprise's json:// posts to it)."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reserved_port() -> socket.socket:
    """A loopback port bound (SO_REUSEPORT) and never listening: a connection to it is refused,
    no other process can bind it, and a server of ours with SO_REUSEPORT can, at any time."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Webhook:
    """An HTTP receiver on a fixed port that can be taken down and brought back.

    The port stays reserved while it is down (a number picked free and bound later could be
    taken meanwhile, by another process's server or an outgoing connection): down, it refuses
    connections as a receiver that is down does."""

    def __init__(self) -> None:
        self._reservation = _reserved_port()
        self.port = self._reservation.getsockname()[1]
        self.received: list[dict] = []
        self._runner: web.AppRunner | None = None
        # A receiver that is slow rather than down: requests whose message (or path) is listed
        # here are recorded, then left unanswered until `answer()` (or `down()`).
        self.hang_on: set[str] = set()
        self._answer = asyncio.Event()

    def answer(self) -> None:
        """Answer the held requests and every later one at once."""
        self.hang_on.clear()
        self._answer.set()

    async def up(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            body = await request.json()
            self.received.append({"path": request.path, "body": body})
            message = body.get("message") if isinstance(body, dict) else None
            if message in self.hang_on or request.path in self.hang_on:
                await self._answer.wait()
            return web.json_response({"status": "success"}, status=202)

        app = web.Application()
        app.router.add_post("/{tail:.*}", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_port=True).start()

    async def down(self) -> None:
        self._answer.set()  # a held request would keep the server from closing
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def release(self) -> None:
        """Give the port back (after `down()`, at the end of the test)."""
        self._reservation.close()
