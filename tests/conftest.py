"""Shared real things for tests: a trustme CA, free loopback ports, a webhook receiver."""

from __future__ import annotations

import socket

import pytest
import trustme
from webhook import Webhook


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def webhook():
    """A webhook receiver on loopback, not yet up (`await webhook.up()`)."""
    hook = Webhook()
    yield hook
    await hook.down()
