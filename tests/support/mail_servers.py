"""Small real IMAP and POP3 servers for STARTTLS checks: they speak just enough of each
protocol (greeting, CAPABILITY / CAPA, STARTTLS / STLS) and then a real TLS handshake with the
certificate they are given, on 127.0.0.1. SMTP uses aiosmtpd itself (`smtp_starttls`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class MailServer:
    """How a test server behaves: its greeting, and whether it offers the upgrade."""

    greeting: str | None = None  # None: the protocol's usual one
    offers_tls: bool = True
    hang_up_first: int = 0  # connections closed before the greeting, as a server restarting


async def _imap(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext, how: MailServer
) -> None:
    writer.write((how.greeting or "* OK IMAP4rev1 test server ready").encode() + b"\r\n")
    while line := await reader.readline():
        tag, _, command = line.decode().strip().partition(" ")
        command = command.upper()
        if command == "CAPABILITY":
            offered = " STARTTLS" if how.offers_tls else ""
            writer.write(f"* CAPABILITY IMAP4rev1{offered} LOGINDISABLED\r\n".encode())
            writer.write(f"{tag} OK CAPABILITY completed\r\n".encode())
        elif command == "STARTTLS" and how.offers_tls:
            writer.write(f"{tag} OK Begin TLS negotiation now\r\n".encode())
            await writer.drain()
            await writer.start_tls(tls)
        elif command == "LOGOUT":
            writer.write(f"* BYE\r\n{tag} OK LOGOUT completed\r\n".encode())
            break
        else:
            writer.write(f"{tag} BAD unknown command\r\n".encode())
        await writer.drain()


async def _pop3(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext, how: MailServer
) -> None:
    writer.write((how.greeting or "+OK POP3 test server ready").encode() + b"\r\n")
    while line := await reader.readline():
        command = line.decode().strip().upper()
        if command == "CAPA":
            offered = "STLS\r\n" if how.offers_tls else ""
            writer.write(f"+OK Capability list follows\r\nUSER\r\n{offered}UIDL\r\n.\r\n".encode())
        elif command == "STLS" and how.offers_tls:
            writer.write(b"+OK Begin TLS negotiation\r\n")
            await writer.drain()
            await writer.start_tls(tls)
        elif command == "QUIT":
            writer.write(b"+OK bye\r\n")
            break
        else:
            writer.write(b"-ERR unknown command\r\n")
        await writer.drain()


PROTOCOLS = {"imap": _imap, "pop3": _pop3}


@contextlib.asynccontextmanager
async def mail_server(
    protocol: str, tls: ssl.SSLContext, how: MailServer = MailServer()
) -> AsyncIterator[int]:
    """An IMAP or POP3 server on 127.0.0.1 upgrading with `tls`; yields its port."""
    speak = PROTOCOLS[protocol]
    hung_up = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hung_up
        if hung_up < how.hang_up_first:
            hung_up += 1
            writer.close()
            return
        # A client that hangs up (or fails the handshake) ends only its own session.
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await speak(reader, writer, tls, how)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


class _Sink:
    async def handle_DATA(self, _server: object, _session: object, _envelope: object) -> str:
        return "250 OK"


class BoundController(Controller):
    """aiosmtpd's Controller on a socket this test bound first (port 0, the kernel's choice).

    Given a port number, aiosmtpd binds it only once its thread runs: a number picked free and
    released can be taken meanwhile (a server of another test process, an outgoing connection),
    and the start fails. Bound here, the port is ours from the start."""

    def __init__(self, handler: object, **kwargs: object) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port = self._sock.getsockname()[1]
        # aiosmtpd waits 5 s for its thread's loop to serve: a busy one-core machine may need
        # more (a test's own timeout bounds it anyway).
        kwargs.setdefault("ready_timeout", 60.0)
        super().__init__(handler, hostname="127.0.0.1", port=port, **kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)

    def stop(self, *args: object, **kwargs: object) -> None:
        try:
            super().stop(*args, **kwargs)
        finally:
            self._sock.close()  # never served if start failed; closed twice is harmless


@contextlib.contextmanager
def smtp_starttls(tls: ssl.SSLContext | None) -> Iterator[int]:
    """A real aiosmtpd server on 127.0.0.1 offering STARTTLS with `tls` (None: an SMTP server
    without it); yields its port."""
    controller = BoundController(_Sink(), tls_context=tls)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()
