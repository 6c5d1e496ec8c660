"""Real receivers on loopback for delivery tests: SMTP (aiosmtpd) and an HTTP webhook sink."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mailbox:
    messages: list[str] = field(default_factory=list)

    async def handle_DATA(self, _server, _session, envelope) -> str:
        self.messages.append(envelope.content.decode())
        return "250 OK"


@pytest.fixture
def smtp():
    """A real SMTP server on 127.0.0.1; yields (port, mailbox)."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, mailbox
    controller.stop()


RECEIVED = web.AppKey("received", list)


class Webhook:
    """An HTTP receiver on a fixed port that can be taken down and brought back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[dict] = []
        self._runner: web.AppRunner | None = None

    async def up(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.received.append({"path": request.path, "body": await request.json()})
            return web.json_response({"status": "success"}, status=202)

        app = web.Application()
        app.router.add_post("/{tail:.*}", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def webhook():
    hook = Webhook()
    yield hook
    await hook.down()
