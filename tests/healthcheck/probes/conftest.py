"""Real things for probe tests: endpoints built like the config builds them, loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from healthcheck.conditions import parse_condition
from healthcheck.targets import Endpoint

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def endpoint() -> Callable[..., Endpoint]:
    """Build an Endpoint of any kind: no retries unless asked, conditions parsed from text."""

    def make(
        kind: str,
        settings: Any,
        *,
        conditions: tuple[str, ...] = (),
        timeout: float = 5.0,
        retries: int = 0,
    ) -> Endpoint:
        return Endpoint(
            region="test",
            name=f"{kind}-check",
            kind=kind,
            interval=60.0,
            timeout=timeout,
            retries=retries,
            latency_warning=None,
            latency_critical=None,
            conditions=tuple(parse_condition(text) for text in conditions),
            settings=settings,
        )

    return make


async def hold_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Say nothing; keep the connection until the client goes away."""
    with contextlib.suppress(ConnectionError):  # a client may reset instead of closing
        await reader.read()
    writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """Start asyncio servers on 127.0.0.1 (TLS when given a context); return their ports."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler = hold_open, tls: ssl.SSLContext | None = None) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    try:
        yield start
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
