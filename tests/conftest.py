"""Shared real things for tests: a trustme CA, free loopback ports, a webhook receiver and an
SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import trustme
from mail_servers import BoundController
from webhook import Webhook

from healthcheck import event_loop


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """In-process tests run on the loop the daemon would pick (event_loop.loop_factory):
    uvloop's where it is installed, asyncio's own with HEALTHCHECK_EVENT_LOOP=asyncio (the
    daemons the tests start as subprocesses inherit the variable), so both loops can be
    tested. (pytest-asyncio 1.x warns that this fixture will give way to its loop-factories
    hook; it works on every version pyproject allows.)"""
    factory = event_loop.loop_factory()
    if factory is None:
        return asyncio.DefaultEventLoopPolicy()

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            assert factory is not None
            return factory()

    return Policy()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port with nothing listening: bound and never listening, so a connection to it
    is refused, and held for the whole test (released, it could be taken by any server that
    starts meanwhile, ours or another process's, and then answer)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
async def webhook():
    """A webhook receiver on loopback, not yet up (`await webhook.up()`)."""
    hook = Webhook()
    yield hook
    await hook.down()
    hook.release()


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
    controller = BoundController(mailbox)
    controller.start()
    yield controller.port, mailbox
    controller.stop()
