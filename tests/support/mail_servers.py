"""Small real IMAP and POP3 servers for STARTTLS checks: they speak just enough of each
protocol (greeting, CAPABILITY / CAPA, STARTTLS / STLS) and then a real TLS handshake with the
certificate they are given, on 127.0.0.1. SMTP uses aiosmtpd itself (`smtp_starttls`)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
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


@contextlib.contextmanager
def smtp_starttls(tls: ssl.SSLContext | None, port: int) -> Iterator[None]:
    """A real aiosmtpd server on 127.0.0.1:`port` offering STARTTLS with `tls` (None: an SMTP
    server without it)."""
    controller = Controller(_Sink(), hostname="127.0.0.1", port=port, tls_context=tls)
    controller.start()
    try:
        yield
    finally:
        controller.stop()
