"""STARTTLS check: greet a mail server in plain text, ask it to upgrade, then judge its
certificate exactly as `kind: tls` does (expiry, verification, server_name, ca_file)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from healthcheck import schema
from healthcheck.probes import rdap
from healthcheck.probes.base import NETWORK_ERRORS, Clock, Probe
from healthcheck.probes.rdap import RdapOptions
from healthcheck.probes.tls import TlsProbe
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import TlsOptions
from healthcheck.targets import Endpoint, ProbeSettings

LONGEST_LINE = 8192  # a protocol line longer than this is not one a mail server sends
_SHOWN = 60


class Refused(Exception):
    """The server's plain-text dialogue went wrong: a bad greeting, no STARTTLS offered."""


@dataclass(frozen=True, slots=True)
class StartTlsSettings(ProbeSettings):
    address: tuple[str, int]
    protocol: str
    tls: TlsOptions = field(default_factory=TlsOptions)
    rdap: RdapOptions = field(default_factory=RdapOptions)  # for [DOMAIN_EXPIRATION]


class _Dialogue:
    """Lines to and from the server before TLS, with the words a failure is reported in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str):
        self.reader, self.writer, self.name = reader, writer, name

    async def line(self, waiting_for: str) -> str:
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            said = f" after {_show(exc.partial.decode('latin-1'))}" if exc.partial else ""
            raise Refused(
                f"{self.name} server closed the connection{said}, {waiting_for}"
            ) from None
        except asyncio.LimitOverrunError:
            text = f"{self.name} server sent a line too long, {waiting_for}"
            raise Refused(text) from None
        return raw.decode("latin-1").rstrip("\r\n")

    async def send(self, command: str) -> None:
        self.writer.write(command.encode("ascii") + b"\r\n")
        await self.writer.drain()


async def _smtp(talk: _Dialogue) -> None:
    """RFC 3207: 220 greeting, EHLO, 250 lines naming STARTTLS, STARTTLS, 220."""
    greeting = await _smtp_reply(talk, "waiting for its greeting")
    if not greeting[0].startswith("220"):
        raise Refused(f"bad SMTP greeting {_show(greeting[0])}, expected 220")
    await talk.send("EHLO healthcheck.invalid")
    extensions = await _smtp_reply(talk, "waiting for its EHLO reply")
    if not extensions[0].startswith("250"):
        raise Refused(f"SMTP server refused EHLO: {_show(extensions[0])}")
    if not any(line[4:].upper().split()[:1] == ["STARTTLS"] for line in extensions):
        raise Refused("SMTP server does not offer STARTTLS (not among its EHLO extensions)")
    await talk.send("STARTTLS")
    answer = await _smtp_reply(talk, "waiting for its STARTTLS reply")
    if not answer[0].startswith("220"):
        raise Refused(f"SMTP server refused STARTTLS: {_show(answer[-1])}")


async def _smtp_reply(talk: _Dialogue, waiting_for: str) -> list[str]:
    """One SMTP reply, every line of it ("250-..." continues, "250 ..." ends it)."""
    lines = [await talk.line(waiting_for)]
    while len(lines[-1]) > 3 and lines[-1][3] == "-" and len(lines) < 100:
        lines.append(await talk.line(waiting_for))
    return lines


async def _imap(talk: _Dialogue) -> None:
    """RFC 3501 6.2.1: * OK greeting, CAPABILITY listing STARTTLS, STARTTLS, tagged OK."""
    greeting = await talk.line("waiting for its greeting")
    if not greeting.upper().startswith("* OK"):
        raise Refused(f"bad IMAP greeting {_show(greeting)}, expected '* OK'")
    await talk.send("hc1 CAPABILITY")
    capabilities: list[str] = []
    while not (line := await talk.line("waiting for its CAPABILITY reply")).startswith("hc1 "):
        if line.upper().startswith("* CAPABILITY"):
            capabilities += line.upper().split()[2:]
    if line.upper().split()[1:2] != ["OK"]:
        raise Refused(f"IMAP server refused CAPABILITY: {_show(line)}")
    if "STARTTLS" not in capabilities:
        raise Refused("IMAP server does not offer STARTTLS (not among its CAPABILITY)")
    await talk.send("hc2 STARTTLS")
    while not (line := await talk.line("waiting for its STARTTLS reply")).startswith("hc2 "):
        pass
    if line.upper().split()[1:2] != ["OK"]:
        raise Refused(f"IMAP server refused STARTTLS: {_show(line)}")


async def _pop3(talk: _Dialogue) -> None:
    """RFC 2595 4: +OK greeting, CAPA listing STLS, STLS, +OK."""
    greeting = await talk.line("waiting for its greeting")
    if not greeting.startswith("+OK"):
        raise Refused(f"bad POP3 greeting {_show(greeting)}, expected '+OK'")
    await talk.send("CAPA")
    first = await talk.line("waiting for its CAPA reply")
    if not first.startswith("+OK"):
        raise Refused(f"POP3 server refused CAPA: {_show(first)}")
    capabilities = []
    while (line := await talk.line("waiting for the end of its CAPA list")) != ".":
        capabilities.append(line.upper().split()[:1])
    if ["STLS"] not in capabilities:
        raise Refused("POP3 server does not offer STLS (not among its CAPA)")
    await talk.send("STLS")
    answer = await talk.line("waiting for its STLS reply")
    if not answer.startswith("+OK"):
        raise Refused(f"POP3 server refused STLS: {_show(answer)}")


PROTOCOLS: dict[str, Callable[[_Dialogue], Awaitable[None]]] = {
    "smtp": _smtp,
    "imap": _imap,
    "pop3": _pop3,
}


class StartTlsProbe(Probe):
    """Upgrade a plain SMTP, IMAP or POP3 connection with STARTTLS and judge the certificate;
    everything after the handshake is `kind: tls`'s."""

    kind = "starttls"
    settings = StartTlsSettings
    options = {
        "address": schema.Option(schema.address, help="host:port of the mail server"),
        "protocol": schema.Option(
            schema.choice(*PROTOCOLS), help="what it speaks before TLS: smtp, imap, pop3"
        ),
        "tls": schema.Option(
            schema.tls_options, TlsOptions(), help="verify, ca_file, server_name (SNI)"
        ),
        "rdap": rdap.OPTION,
    }
    placeholders = TlsProbe.placeholders
    errors = (*NETWORK_ERRORS, ErrorClass.INVALID_RESPONSE, ErrorClass.CONDITION_FAILED)

    def __init__(self, clock: Clock = time.time, database: str | None = None) -> None:
        super().__init__(clock, database)
        self.certificates = TlsProbe(clock)  # its contexts and its judging of the handshake

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings = target.settings.narrow(StartTlsSettings)
        host, port = settings.address
        started = time.perf_counter()
        timestamp = self.clock()
        context = self.certificates.context_for(target, settings.tls, started, timestamp)
        if isinstance(context, ProbeResult):
            return context
        reader, writer = await asyncio.open_connection(host, port, limit=LONGEST_LINE)
        try:
            try:
                await PROTOCOLS[settings.protocol](
                    _Dialogue(reader, writer, settings.protocol.upper())
                )
            except Refused as refused:
                text = str(refused)
                return self.failed(target, ErrorClass.INVALID_RESPONSE, text, started, timestamp)
            await writer.start_tls(context, server_hostname=settings.tls.server_name or host)
            return self.certificates.judge_certificate(target, writer, started, timestamp)
        finally:
            writer.close()


def _show(line: str) -> str:
    return repr(line if len(line) <= _SHOWN else line[: _SHOWN - 3] + "...")
