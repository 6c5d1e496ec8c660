"""Real receivers on loopback for delivery tests: SMTP (aiosmtpd); the webhook is shared."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from webhook import free_port


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
