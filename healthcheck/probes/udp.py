"""UDP check: send one datagram to host:port and judge the first datagram that comes back."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes.base import NETWORK_ERRORS, Probe
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import Option
from healthcheck.secrets import Secret, reveal
from healthcheck.targets import Endpoint, ProbeSettings

MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4


@dataclass(frozen=True, slots=True)
class UdpSettings(ProbeSettings):
    address: tuple[str, int]
    send: bytes | Secret  # a Secret (from ${ENV}) holds text, sent as UTF-8
    expect: str | None = None  # a regular expression the answer must match


def payload(value: Any) -> bytes | Secret:
    """Text sent as UTF-8, or `hex:` and the bytes in hex (`hex:0a ff 00`)."""
    if isinstance(value, Secret):
        return value
    text = schema.text(value)
    if text.startswith("hex:"):
        digits = text[4:]
        try:
            data = bytes.fromhex(digits)
        except ValueError:
            raise ValueError(f"expected hex digits after 'hex:', got {digits!r}") from None
    else:
        data = text.encode()
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"a datagram holds at most {MAX_DATAGRAM} bytes, got {len(data)}")
    return data


def pattern(value: Any) -> str:
    text = schema.text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc})") from None
    return text


class _FirstAnswer(asyncio.DatagramProtocol):
    """Resolves `answer` with the first datagram, or the error the socket reports (an ICMP
    port unreachable arrives as ConnectionRefusedError on a connected UDP socket)."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[tuple[bytes, Any]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answer.done():
            self.answer.set_result((data, addr))

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc or ConnectionResetError("socket closed"))


class UdpProbe(Probe):
    kind = "udp"
    settings = UdpSettings
    options = {
        "address": Option(schema.address, help="host:port to send the datagram to"),
        "send": Option(payload, help="text, or hex: and bytes in hex"),
        "expect": Option(schema.optional(pattern), None, help="regex the answer must match"),
    }
    placeholders = frozenset({"BODY", "CONNECTED", "RESPONSE_TIME", "IP"})
    errors = (*NETWORK_ERRORS, ErrorClass.INVALID_RESPONSE, ErrorClass.CONDITION_FAILED)

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings = target.settings.narrow(UdpSettings)
        started = time.perf_counter()
        timestamp = self.clock()
        loop = asyncio.get_running_loop()
        # Connected (remote_addr): only the peer's answers arrive, and ICMP errors are reported.
        transport, protocol = await loop.create_datagram_endpoint(
            _FirstAnswer, remote_addr=settings.address
        )
        try:
            sent = settings.send
            transport.sendto(reveal(sent).encode() if isinstance(sent, Secret) else sent)
            try:
                answer, peer = await protocol.answer
            except ConnectionRefusedError:
                text = "port unreachable (ICMP): nothing listens there"
                return self.failed(target, ErrorClass.CONNECTION_REFUSED, text, started, timestamp)
        finally:
            transport.close()
        verdict = None
        shown = answer.decode("utf-8", errors="replace")
        if settings.expect is not None and not re.search(settings.expect, shown):
            quoted = shown if len(shown) <= 80 else shown[:80] + "…"
            verdict = (
                ErrorClass.INVALID_RESPONSE,
                f"answer {quoted!r} does not match expect {settings.expect!r}",
            )
        context = ConditionContext(body=answer, connected=True, ip=str(peer[0]) if peer else None)
        details = (("answer_bytes", len(answer)),)
        return self.judged(target, context, started, timestamp, verdict=verdict, details=details)
